-- A multi-stage pipeline: read -> transform -> aggregate, the stages joined
-- by bounded queues. When a later stage falls behind, its queue fills and
-- the stage before it waits in put (back-pressure), so memory stays bounded
-- however large the input. Prints what each stage did and how fast.
--   asyncrun scripts/pipeline.lua [FILE] [--records N] [--workers N]
--                                 [--queue-size N] [--work-ms MS] [--seed N] [--quiet]
--                                 [--redis URL [--role STAGES] [--name NAME]]
--
-- The data are access-log lines, "METHOD PATH STATUS MILLISECONDS", read
-- from FILE or generated (--records of them, from the seed). Lines that do
-- not parse are counted as malformed.
--
-- With --redis the two queues are distributed queues on that server
-- (docs/distributed.md), named NAME:raw and NAME:parsed, and --role picks
-- the stages this process runs (read, transform, aggregate, a comma list of
-- them, or all): the same run spread over processes, e.g. one reader, two
-- transformers and one aggregator. Delivery is at least once, so the reader
-- numbers its lines and the aggregator counts each number once.

local async = require "async"
local kit = require "lib.scriptkit"

local format, floor, concat = string.format, math.floor, table.concat

local script = {
  name = "pipeline",
  title = "Pipeline",
  summary = "A read -> transform -> aggregate pipeline over access-log lines, joined by bounded queues.",
  description = "FILE holds lines \"METHOD PATH STATUS MILLISECONDS\"; without it, --records lines\n"
    .. "are generated from the seed. The transform stage runs --workers tasks, each\n"
    .. "spending --work-ms per record in a simulated lookup (a sleep). Exit status: 0\n"
    .. "done, 1 a stage failed, 2 a bad command line or an unreadable FILE.\n"
    .. "With --redis URL, the queues live on that Redis server (NAME:raw and\n"
    .. "NAME:parsed) and --role picks this process's stages: start the stages in\n"
    .. "any order, as many transform processes as you like, with the same --name\n"
    .. "and --seed. A NAME serves one run: use a new one for the next.",
  args = "[FILE]",
  max_args = 1,
  options = {
    { "records", "N", "lines to generate when no FILE is given (default 5000)", "integer", min = 0 },
    { "workers", "N", "transform tasks (default 8)", "integer", min = 1 },
    { "queue-size", "N", "capacity of each queue between stages (default 100)", "integer", min = 1 },
    { "work-ms", "MS", "milliseconds of simulated lookup per record (default 1)", "number", min = 0 },
    { "redis", "URL", "put the queues on this Redis server (redis://host:port/db)" },
    { "role", "STAGES", "with --redis: read, transform, aggregate, a comma list, or all (default)" },
    { "name", "NAME", "with --redis: the run's name, prefix of its queues (default pipeline)" },
  },
}

local METHODS = { "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE" }
local PATHS = { "/", "/login", "/api/users", "/api/orders", "/api/orders/42", "/static/app.js",
  "/static/style.css", "/health" }
local STATUSES = { 200, 200, 200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 404, 500, 503 }

-- The generated input: `n` lines, one at a time.
local function generate(n)
  local i = 0
  local random = math.random
  return function()
    i = i + 1
    if i > n then return nil end
    -- latency: mostly fast, a long tail
    local ms = floor(2 + random() * 20 + (random() < 0.1 and random() * 400 or 0))
    return format("%s %s %d %d", METHODS[random(#METHODS)], PATHS[random(#PATHS)],
      STATUSES[random(#STATUSES)], ms)
  end
end

-- Statistics of one stage: items handled, time spent waiting for input and
-- waiting for room in the next queue (back-pressure), from start to end.
local function stage_stats(name)
  return { name = name, items = 0, wait_in = 0, wait_out = 0, first = nil, last = nil, peak = 0 }
end

-- put that records how long it waited and the queue's peak depth.
-- A distributed queue has no capacity: put waits while the queue holds
-- `bound` items or more (undelivered), looking again every 10 ms.
local function timed_put(q, item, st, bound)
  local t0 = async.now()
  q:put(item)
  local n = q:size()
  if n > st.peak then st.peak = n end
  if bound then
    while n >= bound do
      async.sleep(0.01)
      n = q:size()
    end
  end
  st.wait_out = st.wait_out + (async.now() - t0)
end

local function timed_get(q, st)
  local t0 = async.now()
  local item = q:get()
  st.wait_in = st.wait_in + (async.now() - t0)
  return item
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

-- The stages --role names: a set, or a usage error.
local function parse_role(o)
  if (o.role or o.name) and not o.redis then kit.usage_error(script, "--role and --name need --redis") end
  local role = {}
  for r in (o.role or "all"):gmatch("[^,]+") do
    if r == "all" then
      role.read, role.transform, role.aggregate = true, true, true
    elseif r == "read" or r == "transform" or r == "aggregate" then
      role[r] = true
    else
      kit.usage_error(script, "--role wants read, transform, aggregate or all, got '%s'", r)
    end
  end
  if next(role) == nil then kit.usage_error(script, "--role names no stage") end
  return role
end

function script.run(o)
  local role = parse_role(o)
  kit.heading(o, script.title)
  local file = o.args[1]
  local records, workers = o.records or 5000, o.workers or 8
  local qsize, work = o.queue_size or 100, (o.work_ms or 1) / 1000
  local distributed = o.redis ~= nil
  local bound = distributed and qsize or nil

  local lines
  if not role.read then
    if role.transform then o.show("%d transform workers, %.1f ms of work per record", workers, work * 1000) end
  elseif file then
    -- io.lines blocks the loop while it reads (async.fs will replace it);
    -- one line at a time from a local file, that is a short wait.
    local f, err = io.open(file, "r")
    if not f then
      io.stderr:write("pipeline.lua: cannot read ", err, "\n")
      io.stderr:flush()
      os.exit(2, true)
    end
    f:close()
    lines = io.lines(file)
    o.show("input: %s; %d transform workers, queues of %d, %.1f ms of work per record",
      file, workers, qsize, work * 1000)
  else
    lines = generate(records)
    o.show("input: %d generated lines; %d transform workers, queues of %d, %.1f ms of work per record",
      records, workers, qsize, work * 1000)
  end

  local raw, parsed
  if distributed then
    local name = o.name or "pipeline"
    raw = async.queue{ url = o.redis, name = name .. ":raw" }
    parsed = async.queue{ url = o.redis, name = name .. ":parsed" }
    if role.read and raw:is_closed() then
      io.stderr:write("pipeline.lua: the queues of run '", name, "' were used by an earlier run: ",
        "give this one another --name\n")
      io.stderr:flush()
      os.exit(2, true)
    end
    local roles = {}
    for _, r in ipairs({ "read", "transform", "aggregate" }) do if role[r] then roles[#roles + 1] = r end end
    o.show("distributed: run '%s' on %s, this process: %s", name, o.redis, concat(roles, ", "))
  else
    raw, parsed = async.queue(qsize), async.queue(qsize)
  end
  local st_read, st_transform, st_agg = stage_stats("read"), stage_stats("transform"), stage_stats("aggregate")
  local result, duplicates = nil, 0
  local started = async.now()

  async.group(function(g)
    -- read: lines into the first queue; waits whenever it is full.
    if role.read then g:spawn(function()
      st_read.first = async.now()
      for line in lines do
        st_read.items = st_read.items + 1
        -- Distributed, a line carries its number (see the aggregate).
        timed_put(raw, distributed and { st_read.items, line } or line, st_read, bound)
      end
      raw:close()
      st_read.last = async.now()
      o.log("%.3fs read: done, %d lines", async.now() - started, st_read.items)
    end) end

    -- transform: parse each line and look it up (simulated); several tasks
    -- share the work. The last one to finish closes the next queue.
    -- Distributed, the first task to find the first queue closed and
    -- drained closes the next: drained means every line was acknowledged,
    -- and a line is acknowledged after its record was put.
    local live, closed_next = workers, false
    st_transform.first = async.now()
    for _ = 1, role.transform and workers or 0 do
      g:spawn(function()
        while true do
          local line = timed_get(raw, st_transform)
          if line == nil then break end
          local seq
          if distributed then seq, line = line[1], line[2] end
          local method, path, status, ms = line:match("^(%u+) (%S+) (%d%d%d) (%d+)%s*$")
          local rec
          if method then
            if work > 0 then async.sleep(work) end
            rec = { method = method, path = path, status = tonumber(status), ms = tonumber(ms) }
          else
            rec = { malformed = line }
          end
          rec.seq = seq
          st_transform.items = st_transform.items + 1
          timed_put(parsed, rec, st_transform, bound)
          raw:task_done()
        end
        live = live - 1
        if not closed_next and (live == 0 or distributed) then
          closed_next = true
          parsed:close()
          st_transform.last = async.now()
          o.log("%.3fs transform: done, %d records", async.now() - started, st_transform.items)
        end
      end)
    end

    -- aggregate: counts and latencies.
    if role.aggregate then g:spawn(function()
      st_agg.first = async.now()
      local r = { classes = {}, paths = {}, ms = {}, malformed = 0, total = 0 }
      local seen = {}
      while true do
        local rec = timed_get(parsed, st_agg)
        if rec == nil then break end
        parsed:task_done()
        -- At least once: a record delivered again is counted once.
        if rec.seq then
          if seen[rec.seq] then
            duplicates = duplicates + 1
            goto continue
          end
          seen[rec.seq] = true
        end
        st_agg.items = st_agg.items + 1
        r.total = r.total + 1
        if rec.malformed then
          r.malformed = r.malformed + 1
        else
          local class = floor(rec.status / 100) .. "xx"
          r.classes[class] = (r.classes[class] or 0) + 1
          r.paths[rec.path] = (r.paths[rec.path] or 0) + 1
          r.ms[#r.ms + 1] = rec.ms
        end
        ::continue::
      end
      st_agg.last = async.now()
      result = r
      o.log("%.3fs aggregate: done", async.now() - started)
    end) end
  end)
  local elapsed = async.now() - started
  if distributed then
    raw:disconnect()
    parsed:disconnect()
  end

  -- What each stage did.
  o.show("")
  o.show("%-10s %8s %8s %10s %14s %18s", "stage", "items", "time", "items/s", "waited: input", "waited: full queue")
  for _, st in ipairs({ st_read, st_transform, st_agg }) do
    if not role[st.name] then goto next_stage end
    local t = (st.last or st.first) - st.first
    o.show("%-10s %8d %7.2fs %10.0f %13s %18s", st.name, st.items, t, st.items / math.max(t, 1e-9),
      st == st_read and "-" or format("%.2fs", st.wait_in),
      st == st_agg and "-" or format("%.2fs", st.wait_out))
    ::next_stage::
  end
  if role.transform then o.show("(transform times are summed over its %d tasks)", workers) end
  if role.read and role.transform then
    o.show("peak queue depth: read->transform %d/%d, transform->aggregate %d/%d",
      st_read.peak, qsize, st_transform.peak, qsize)
  elseif role.read or role.transform then
    local st = role.read and st_read or st_transform
    o.show("peak queue depth: %s %d/%d", role.read and "read->transform" or "transform->aggregate", st.peak, qsize)
  end
  if not role.aggregate then return 0 end

  -- What the data said.
  local r = result
  if distributed then o.show("duplicate deliveries dropped: %d", duplicates) end
  table.sort(r.ms)
  o.show("")
  o.show("records: %d (%d malformed) in %.2f s", r.total, r.malformed, elapsed)
  local classes = {}
  for _, c in ipairs({ "1xx", "2xx", "3xx", "4xx", "5xx" }) do
    if r.classes[c] then classes[#classes + 1] = format("%s %d", c, r.classes[c]) end
  end
  o.show("status: %s", table.concat(classes, ", "))
  local top = {}
  for p, n in pairs(r.paths) do top[#top + 1] = { p, n } end
  table.sort(top, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  local shown = {}
  for i = 1, math.min(3, #top) do shown[i] = format("%s %d", top[i][1], top[i][2]) end
  o.show("busiest paths: %s", table.concat(shown, ", "))
  o.show("latency: p50 %d ms, p95 %d ms, max %d ms", percentile(r.ms, 0.5), percentile(r.ms, 0.95),
    r.ms[#r.ms] or 0)
  return 0
end

return kit.main(script, ...)
