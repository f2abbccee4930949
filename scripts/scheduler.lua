-- A task scheduler: runs a graph of tasks (a DAG) described in a Lua or
-- JSON file. Each task starts as soon as every task it comes after has
-- succeeded, with at most --parallel running at once; a task that fails
-- makes every task that depends on it, directly or not, be skipped. A
-- dependency cycle is rejected before anything runs, with the cycle named.
--   asyncrun scripts/scheduler.lua FILE [--parallel N] [--dry-run] [--seed N] [--quiet]
--   asyncrun scripts/scheduler.lua FILE --redis URL --role coordinator|worker [--name NAME]
--
-- The description (docs/scenarios.md has the details):
--   return { parallel = 2, tasks = {
--     { name = "fetch", run = function(inputs) ... return value end },
--     { name = "build", after = { "fetch" }, lua = "local inputs = ...; return inputs.fetch", timeout = 5, retries = 1 },
--     { name = "pack", after = { "build" }, command = "tar czf out.tgz src" },
--   } }
-- or the same as JSON (then tasks are `lua` chunks or commands; `run` needs
-- a Lua file). A command runs through async.process: a string with /bin/sh,
-- a list as the program and its arguments, no shell.
-- Exit status: 0 every task succeeded, 1 one failed (its dependants were
-- skipped), 2 a bad command line or description (a cycle, say).
--
-- With --redis, the work is spread over processes: one coordinator decides
-- as above what runs when, and puts each ready task's name and inputs on a
-- distributed queue (NAME:tasks); any number of workers, each with the same
-- FILE, take them, run them (--parallel at once each) and put the outcome
-- on a second queue (NAME:results) that the coordinator reads.

local async = require "async"
local kit = require "lib.scriptkit"

local format, concat = string.format, table.concat
local math_type, tointeger = math.type, math.tointeger
local json_encode = require("cjson").encode

-- Command tasks need async.process; an asyncrun without it rejects them.
local has_process, process = pcall(require, "async.process")
if not has_process then process = nil end

local script = {
  name = "scheduler",
  title = "Scheduler",
  summary = "Runs a DAG of tasks from a Lua or JSON description, each as soon as its dependencies succeed.",
  description = "A task is { name =, after = { names }, run = function(inputs) | lua = \"chunk\",\n"
    .. "timeout = seconds, retries = n }; `inputs` maps each dependency's name to its\n"
    .. "result. A command task (command = \"shell line\" or { \"prog\", \"arg\", ... }) runs\n"
    .. "as a child process: it succeeds when it exits 0, its result is its output\n"
    .. "(trimmed), and its dependencies' results are in its environment as\n"
    .. "IN_<NAME> (the name in upper case, other characters as _).\n"
    .. "Exit status: 0 all succeeded, 1 a task failed, 2 a bad command line or description.\n"
    .. "With --redis URL, --role coordinator decides what runs and --role worker (as\n"
    .. "many as you like, same FILE and --name) runs it; a NAME serves one run.",
  args = "FILE",
  min_args = 1,
  max_args = 1,
  options = {
    { "parallel", "N", "tasks running at once (default: the file's, else 4)", "integer", min = 1 },
    { "dry-run", nil, "check the description and show the order, run nothing" },
    { "redis", "URL", "spread the tasks over processes through this Redis server" },
    { "role", "ROLE", "with --redis: coordinator or worker" },
    { "name", "NAME", "with --redis: the run's name, prefix of its queues (default scheduler)" },
  },
}

-- Reports a description that cannot run, one line per problem, and exits 2.
local function reject(file, problems)
  for _, p in ipairs(problems) do io.stderr:write("scheduler.lua: ", file, ": ", p, "\n") end
  io.stderr:flush()
  io.stdout:flush()
  os.exit(2, true)
end

-- Reads FILE: JSON when it ends in .json or starts with '{', else a Lua
-- chunk returning the description. Returns the table, or nil and a message.
local function load_description(file)
  local f, err = io.open(file, "r")
  if not f then return nil, "cannot read: " .. err end
  local text = f:read("a")
  f:close()
  if file:match("%.json$") or text:match("^%s*{") then
    local value, jerr = require("cjson.safe").decode(text)
    if value == nil then return nil, "not valid JSON: " .. tostring(jerr) end
    return value
  end
  local chunk, lerr = load(text, "@" .. file, "t")
  if not chunk then return nil, lerr end
  local ok, value = pcall(chunk)
  if not ok then return nil, "the description raised: " .. tostring(value) end
  return value
end

-- Runs a command task: the child gets the dependencies' results in its
-- environment (IN_<NAME>); it succeeds when it exits 0. Returns its output,
-- trimmed; raises "exit N: <last line of stderr>" otherwise. Cancelling the
-- task (a timeout, Ctrl-C) stops the child: async.process sees to that.
local function run_command(name, argv, inputs)
  local env = {}
  for dep, v in pairs(inputs) do
    env["IN_" .. dep:upper():gsub("[^%w]", "_")] = type(v) == "table" and "(a table)" or tostring(v)
  end
  local r = process.exec(argv, { env = env, inherit_env = true })
  if r.code ~= 0 then
    local last = (r.stderr or ""):match("([^\n]+)\n*$") or ""
    local how = r.code and format("exit %d", r.code) or "killed by " .. tostring(r.signal)
    error(last ~= "" and how .. ": " .. last or how, 0)
  end
  local out = (r.stdout or ""):match("^%s*(.-)%s*$")
  if out == "" then return nil end
  return math.tointeger(tonumber(out)) or tonumber(out) or out
end

-- Checks the description; returns the task list (each with its index, its
-- dependencies and its dependants resolved) or raises nothing and rejects.
local function validate(file, desc)
  local problems = {}
  local function problem(fmt, ...) problems[#problems + 1] = format(fmt, ...) end
  if type(desc) ~= "table" or type(desc.tasks) ~= "table" then
    reject(file, { "the description must be a table with a list `tasks`" })
  end
  local tasks, by_name = {}, {}
  for i, spec in ipairs(desc.tasks) do
    local name = type(spec) == "table" and spec.name
    if type(name) ~= "string" or name == "" then
      problem("task #%d has no name", i)
      name = "#" .. i
    elseif by_name[name] then
      problem("two tasks are named '%s'", name)
    end
    local t = { index = i, name = name, spec = spec, deps = {}, dependants = {} }
    tasks[i] = t
    by_name[name] = by_name[name] or t
    if type(spec) == "table" then
      local kinds = (spec.run ~= nil and 1 or 0) + (spec.lua ~= nil and 1 or 0) + (spec.command ~= nil and 1 or 0)
      if kinds ~= 1 then
        problem("task '%s' needs exactly one of run (a function), lua (a chunk of Lua) or command", name)
      elseif spec.command ~= nil and not process then
        problem("task '%s': command tasks need async.process, which this asyncrun does not have "
          .. "(use a Lua task: run = function or lua = \"chunk\")", name)
      elseif spec.command ~= nil then
        local argv = spec.command
        if type(argv) == "string" then
          argv = { "/bin/sh", "-c", argv }
        elseif type(argv) ~= "table" or #argv == 0 then
          problem("task '%s': command must be a shell line or a non-empty list of strings", name)
          argv = nil
        else
          for k, a in ipairs(argv) do
            if type(a) ~= "string" and type(a) ~= "number" then
              problem("task '%s': command element #%d is not a string", name, k)
              argv = nil
              break
            end
          end
        end
        if argv then t.fn = function(inputs) return run_command(name, argv, inputs) end end
      elseif spec.run ~= nil and type(spec.run) ~= "function" then
        problem("task '%s': run must be a function", name)
      elseif spec.lua ~= nil then
        if type(spec.lua) ~= "string" then
          problem("task '%s': lua must be a string of Lua code", name)
        else
          local env = setmetatable({ async = async }, { __index = _G })
          local fn, err = load(spec.lua, "=" .. name, "t", env)
          if fn then t.fn = fn else problem("task '%s': %s", name, err) end
        end
      end
      if spec.run ~= nil and type(spec.run) == "function" then t.fn = spec.run end
      if spec.timeout ~= nil and (type(spec.timeout) ~= "number" or spec.timeout <= 0) then
        problem("task '%s': timeout must be a number of seconds > 0", name)
      end
      -- JSON numbers come as floats: 1.0 counts as the integer 1.
      if spec.retries ~= nil then
        local n = math.tointeger(spec.retries)
        if n == nil or n < 0 then problem("task '%s': retries must be an integer >= 0", name) end
        t.retries = n
      end
      if spec.after ~= nil and type(spec.after) ~= "table" then
        problem("task '%s': after must be a list of task names", name)
      end
    else
      problem("task #%d is not a table", i)
    end
  end
  -- Resolve dependencies once every name is known.
  for _, t in ipairs(tasks) do
    local after = type(t.spec) == "table" and type(t.spec.after) == "table" and t.spec.after or {}
    for _, dep in ipairs(after) do
      local d = by_name[dep]
      if not d then
        problem("task '%s' comes after '%s', which is not a task", t.name, tostring(dep))
      elseif d == t then
        problem("task '%s' comes after itself (cycle: %s -> %s)", t.name, t.name, t.name)
      else
        t.deps[#t.deps + 1] = d
        d.dependants[#d.dependants + 1] = t
      end
    end
  end
  if #problems > 0 then reject(file, problems) end

  -- A depth-first search finds a cycle if there is one: an edge back to a
  -- task still on the path. The cycle is that part of the path.
  local state, path = {}, {}
  local function visit(t)
    state[t] = "open"
    path[#path + 1] = t
    for _, d in ipairs(t.deps) do
      if state[d] == "open" then
        local names, from = {}, nil
        for k, p in ipairs(path) do if p == d then from = k end end
        for k = from, #path do names[#names + 1] = path[k].name end
        names[#names + 1] = d.name
        return names
      elseif state[d] == nil then
        local c = visit(d)
        if c then return c end
      end
    end
    path[#path] = nil
    state[t] = "closed"
  end
  for _, t in ipairs(tasks) do
    if state[t] == nil then
      local cycle = visit(t)
      if cycle then
        -- The search follows "comes after" edges; print in running order.
        local rev = {}
        for k = #cycle, 1, -1 do rev[#rev + 1] = cycle[k] end
        reject(file, { "dependency cycle: " .. concat(rev, " -> ") })
      end
    end
  end
  return tasks
end

-- Runs one task's function with its timeout and retries; raises its error.
local function execute(t, inputs)
  local spec = t.spec
  local function once()
    if spec.timeout then return async.wait_for(function() return t.fn(inputs) end, spec.timeout) end
    return t.fn(inputs)
  end
  if (t.retries or 0) > 0 then
    return async.retry(once, { retries = t.retries, delay = 0.1 })
  end
  return once()
end

-- One line for a result or an error: an engine error as "kind: message".
local function brief(v, width)
  local s
  if type(v) == "table" and v.kind and v.message then
    s = v.kind .. ": " .. tostring(v.message)
  elseif type(v) == "table" then
    s = getmetatable(v) and tostring(v) or "a table"
  else
    s = tostring(v)
  end
  s = s:gsub("%s+", " ")
  return #s > width and s:sub(1, width - 3) .. "..." or s
end

-- What crosses a distributed queue must be JSON: a value that is not (a
-- function, say) travels as its one-line description.
local function portable(v)
  if v == nil or type(v) == "string" or type(v) == "number" or type(v) == "boolean" then return v end
  if type(v) == "table" and not getmetatable(v) and pcall(json_encode, v) then return v end
  return brief(v, 200)
end

-- JSON numbers come back as floats: integral ones become integers again,
-- inside tables too (20, not 20.0, as when the task ran here).
local function integral(v)
  if math_type(v) == "float" then return tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integral(x) end
  end
  return v
end

-- The two queues of a distributed run; refuses a NAME an earlier run closed.
local function open_queues(o, check)
  local name = o.name or "scheduler"
  local tasks = async.queue{ url = o.redis, name = name .. ":tasks" }
  local results = async.queue{ url = o.redis, name = name .. ":results" }
  if check and tasks:is_closed() then
    io.stderr:write("scheduler.lua: the queues of run '", name, "' were used by an earlier run: ",
      "give this one another --name\n")
    io.stderr:flush()
    os.exit(2, true)
  end
  o.show("distributed: run '%s' on %s, this process: %s", name, o.redis, o.role)
  return tasks, results
end

-- A worker of a distributed run: takes task names until the coordinator
-- closes the queue, runs them, puts back their outcomes.
local function work(o, tasks_by_name, parallel)
  local todo, results = open_queues(o, false)
  local counts = { ok = 0, failed = 0 }
  local t0 = async.now()
  async.group(function(g)
    for _ = 1, parallel do
      g:spawn(function()
        while true do
          local m = todo:get()
          if m == nil then return end
          local t = tasks_by_name[m.name]
          local started = async.now()
          local ok, value = false, "no task named '" .. tostring(m.name) .. "' in this worker's file"
          if t then ok, value = pcall(execute, t, integral(m.inputs or {})) end
          o.log("[+%.3fs] %s %s", async.now() - t0, ok and "ok  " or "FAIL", m.name)
          counts[ok and "ok" or "failed"] = counts[ok and "ok" or "failed"] + 1
          results:put({ name = m.name, ok = ok, value = portable(value), took = async.now() - started })
          todo:task_done()
        end
      end)
    end
  end)
  o.show("worker: %d ok, %d failed in %.2f s", counts.ok, counts.failed, async.now() - t0)
  todo:disconnect()
  results:disconnect()
  return 0
end

function script.run(o)
  local file = o.args[1]
  if (o.role or o.name) and not o.redis then kit.usage_error(script, "--role and --name need --redis") end
  if o.redis and o.role ~= "coordinator" and o.role ~= "worker" then
    kit.usage_error(script, "--redis needs --role coordinator or --role worker")
  end
  local desc, err = load_description(file)
  if desc == nil then reject(file, { err }) end
  local tasks = validate(file, desc)
  local parallel = o.parallel or 4
  if not o.parallel and desc.parallel ~= nil then
    parallel = math.tointeger(desc.parallel)
    if parallel == nil or parallel < 1 then reject(file, { "parallel must be an integer >= 1" }) end
  end

  kit.heading(o, script.title)
  o.show("%d tasks from %s, at most %d at once", #tasks, file, parallel)
  if o.redis and o.role == "worker" and not o.dry_run then
    local by_name = {}
    for _, t in ipairs(tasks) do by_name[t.name] = t end
    return work(o, by_name, parallel)
  end

  if o.dry_run then
    -- Levels: a task's level is one more than its highest dependency's.
    local level, by_level, top = {}, {}, 0
    local function lvl(t)
      if level[t] then return level[t] end
      local l = 0
      for _, d in ipairs(t.deps) do l = math.max(l, lvl(d) + 1) end
      level[t] = l
      return l
    end
    for _, t in ipairs(tasks) do
      local l = lvl(t)
      by_level[l] = by_level[l] or {}
      by_level[l][#by_level[l] + 1] = t.name
      top = math.max(top, l)
    end
    for l = 0, top do o.show("level %d: %s", l, concat(by_level[l], ", ")) end
    return 0
  end

  local pending, result, status = {}, {}, {}
  for _, t in ipairs(tasks) do pending[t] = #t.deps end
  local ready = {}
  for _, t in ipairs(tasks) do if pending[t] == 0 then ready[#ready + 1] = t end end

  local counts = { ok = 0, failed = 0, skipped = 0 }
  local running, peak, decided = 0, 0, 0
  local done, todo = async.queue(), nil
  if o.redis then todo, done = open_queues(o, true) end
  local by_name = {}
  for _, t in ipairs(tasks) do by_name[t.name] = t end
  local t0 = async.now()
  local function at() return format("[+%.3fs]", async.now() - t0) end

  -- Marks every task that depends on t, directly or not, as skipped.
  local function skip_dependants(t, why)
    for _, d in ipairs(t.dependants) do
      if status[d] == nil then
        status[d] = "skipped"
        counts.skipped = counts.skipped + 1
        decided = decided + 1
        o.show("%s skip  %s (%s)", at(), d.name, why)
        skip_dependants(d, why)
      end
    end
  end

  async.group(function(g)
    while decided < #tasks do
      -- Start what is ready, in the order of the file, up to the limit.
      table.sort(ready, function(a, b) return a.index < b.index end)
      while running < parallel and #ready > 0 do
        local t = table.remove(ready, 1)
        if status[t] == nil then
          status[t] = "running"
          running = running + 1
          peak = math.max(peak, running)
          local inputs = {}
          for _, d in ipairs(t.deps) do inputs[d.name] = result[d] end
          o.log("%s start %s", at(), t.name)
          local started = async.now()
          if todo then
            -- Distributed: a worker runs it and puts its outcome on `done`.
            todo:put({ name = t.name, inputs = inputs })
          else g:spawn(function()
            -- Whatever happens is the task's outcome, a cancellation too:
            -- if the scheduler itself is cancelled (Ctrl-C), the group
            -- cancels this task, the put below does not wait (the queue is
            -- unbounded), and the group then raises "cancelled".
            local ok, value = pcall(execute, t, inputs)
            done:put({ t = t, ok = ok, value = value, took = async.now() - started })
          end) end
        end
      end
      if running == 0 then break end
      local m = done:get()
      if todo then
        done:task_done()
        m.t, m.value = by_name[m.name], integral(m.value)
      end
      local t = m.t
      -- At least once: an outcome delivered again is not counted again.
      if status[t] ~= "running" then goto next_outcome end
      running = running - 1
      decided = decided + 1
      if m.ok then
        status[t], result[t] = "ok", m.value
        counts.ok = counts.ok + 1
        o.show("%s ok    %s (%.2f s)%s", at(), t.name, m.took, m.value ~= nil and " -> " .. brief(m.value, 60) or "")
        for _, d in ipairs(t.dependants) do
          pending[d] = pending[d] - 1
          if pending[d] == 0 and status[d] == nil then ready[#ready + 1] = d end
        end
      else
        status[t] = "failed"
        counts.failed = counts.failed + 1
        o.show("%s FAIL  %s (%.2f s): %s", at(), t.name, m.took, brief(m.value, 200))
        skip_dependants(t, t.name .. " failed")
      end
      ::next_outcome::
    end
  end)
  if todo then
    todo:close()
    todo:disconnect()
    done:disconnect()
  end

  o.show("%d ok, %d failed, %d skipped in %.2f s (at most %d at once)",
    counts.ok, counts.failed, counts.skipped, async.now() - t0, peak)
  return counts.failed > 0 and 1 or 0
end

return kit.main(script, ...)
