-- A multi-stage pipeline: read -> transform -> aggregate, the stages joined
-- by bounded queues. When a later stage falls behind, its queue fills and
-- the stage before it waits in put (back-pressure), so memory stays bounded
-- however large the input. Prints what each stage did and how fast.
--   asyncrun scripts/pipeline.lua [FILE] [--records N] [--workers N]
--                                 [--queue-size N] [--work-ms MS] [--seed N] [--quiet]
--
-- The data are access-log lines, "METHOD PATH STATUS MILLISECONDS", read
-- from FILE or generated (--records of them, from the seed). Lines that do
-- not parse are counted as malformed.

local async = require "async"
local kit = require "lib.scriptkit"

local format, floor = string.format, math.floor

local script = {
  name = "pipeline",
  title = "Pipeline",
  summary = "A read -> transform -> aggregate pipeline over access-log lines, joined by bounded queues.",
  description = "FILE holds lines \"METHOD PATH STATUS MILLISECONDS\"; without it, --records lines\n"
    .. "are generated from the seed. The transform stage runs --workers tasks, each\n"
    .. "spending --work-ms per record in a simulated lookup (a sleep). Exit status: 0\n"
    .. "done, 1 a stage failed, 2 a bad command line or an unreadable FILE.",
  args = "[FILE]",
  max_args = 1,
  options = {
    { "records", "N", "lines to generate when no FILE is given (default 5000)", "integer", min = 0 },
    { "workers", "N", "transform tasks (default 8)", "integer", min = 1 },
    { "queue-size", "N", "capacity of each queue between stages (default 100)", "integer", min = 1 },
    { "work-ms", "MS", "milliseconds of simulated lookup per record (default 1)", "number", min = 0 },
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
local function timed_put(q, item, st)
  local t0 = async.now()
  q:put(item)
  st.wait_out = st.wait_out + (async.now() - t0)
  local n = q:size()
  if n > st.peak then st.peak = n end
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

function script.run(o)
  kit.heading(o, script.title)
  local file = o.args[1]
  local records, workers = o.records or 5000, o.workers or 8
  local qsize, work = o.queue_size or 100, (o.work_ms or 1) / 1000

  local lines
  if file then
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

  local raw, parsed = async.queue(qsize), async.queue(qsize)
  local st_read, st_transform, st_agg = stage_stats("read"), stage_stats("transform"), stage_stats("aggregate")
  local result
  local started = async.now()

  async.group(function(g)
    -- read: lines into the first queue; waits whenever it is full.
    g:spawn(function()
      st_read.first = async.now()
      for line in lines do
        st_read.items = st_read.items + 1
        timed_put(raw, line, st_read)
      end
      raw:close()
      st_read.last = async.now()
      o.log("%.3fs read: done, %d lines", async.now() - started, st_read.items)
    end)

    -- transform: parse each line and look it up (simulated); several tasks
    -- share the work. The last one to finish closes the next queue.
    local live = workers
    st_transform.first = async.now()
    for _ = 1, workers do
      g:spawn(function()
        while true do
          local line = timed_get(raw, st_transform)
          if line == nil then break end
          local method, path, status, ms = line:match("^(%u+) (%S+) (%d%d%d) (%d+)%s*$")
          local rec
          if method then
            if work > 0 then async.sleep(work) end
            rec = { method = method, path = path, status = tonumber(status), ms = tonumber(ms) }
          else
            rec = { malformed = line }
          end
          st_transform.items = st_transform.items + 1
          timed_put(parsed, rec, st_transform)
        end
        live = live - 1
        if live == 0 then
          parsed:close()
          st_transform.last = async.now()
          o.log("%.3fs transform: done, %d records", async.now() - started, st_transform.items)
        end
      end)
    end

    -- aggregate: counts and latencies.
    g:spawn(function()
      st_agg.first = async.now()
      local r = { classes = {}, paths = {}, ms = {}, malformed = 0, total = 0 }
      while true do
        local rec = timed_get(parsed, st_agg)
        if rec == nil then break end
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
      end
      st_agg.last = async.now()
      result = r
      o.log("%.3fs aggregate: done", async.now() - started)
    end)
  end)
  local elapsed = async.now() - started

  -- What each stage did.
  o.show("")
  o.show("%-10s %8s %8s %10s %14s %18s", "stage", "items", "time", "items/s", "waited: input", "waited: full queue")
  for _, st in ipairs({ st_read, st_transform, st_agg }) do
    local t = (st.last or st.first) - st.first
    o.show("%-10s %8d %7.2fs %10.0f %13s %18s", st.name, st.items, t, st.items / math.max(t, 1e-9),
      st == st_read and "-" or format("%.2fs", st.wait_in),
      st == st_agg and "-" or format("%.2fs", st.wait_out))
  end
  o.show("(transform times are summed over its %d tasks)", workers)
  o.show("peak queue depth: read->transform %d/%d, transform->aggregate %d/%d",
    st_read.peak, qsize, st_transform.peak, qsize)

  -- What the data said.
  local r = result
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
