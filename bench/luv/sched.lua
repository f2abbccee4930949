-- A minimal coroutine scheduler on luv, the way luv programs build one:
-- luv gives the loop and its handles, coroutines give the tasks.
--   spawn(fn, ...)  start fn as a task on the next loop turn; returns it
--   yield()         let every other ready task run once (asyncio's sleep(0))
--   sleep(ms)       one uv timer per sleep, resuming the task from its
--                   callback (as luvit's timer.sleep does)
--   gather(tasks)   wait for all, return their first results in order
--   run(fn, ...)    run fn as the main task until the loop is empty
--   wake(co), wake_with(co, v)  make a suspended coroutine ready
-- Ready tasks sit in a Lua array drained from a single idle handle, so a
-- yield costs no handle of its own: the cheapest way to do it on luv.
local uv = require "luv"

local M = {}

local ready, vals, head, tail = {}, {}, 1, 0
local idle = uv.new_idle()
local idle_on = false

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then
    io.stderr:write(debug.traceback(co, tostring(err)), "\n")
    os.exit(1)
  end
end

-- Each pass runs the tasks that were ready when it began; whatever they
-- make ready runs on the next loop iteration, as in asyncio.
local function idle_cb()
  local last = tail
  while head <= last do
    local co, v = ready[head], vals[head]
    ready[head], vals[head] = nil, nil
    head = head + 1
    resume(co, v)
  end
  if head > tail then
    idle:stop()
    idle_on = false
  end
end

local function push(co)
  tail = tail + 1
  ready[tail] = co
  if not idle_on then
    idle_on = true
    idle:start(idle_cb)
  end
end
M.wake = push

-- Wakes co with one value, returned by its coroutine.yield().
function M.wake_with(co, v)
  push(co)
  vals[tail] = v
end

function M.spawn(fn, ...)
  local args = table.pack(...)
  local task = { done = false }
  task.co = coroutine.create(function()
    task.result = fn(table.unpack(args, 1, args.n))
    task.done = true
    if task.on_done then task.on_done(task) end
  end)
  push(task.co)
  return task
end

function M.yield()
  push(coroutine.running())
  coroutine.yield()
end

function M.sleep(ms)
  if ms <= 0 then return M.yield() end
  local co = coroutine.running()
  local timer = uv.new_timer()
  timer:start(ms, 0, function()
    timer:close()
    resume(co)
  end)
  coroutine.yield()
end

function M.gather(tasks)
  local co = coroutine.running()
  local remaining = 0
  local function on_done()
    remaining = remaining - 1
    if remaining == 0 then push(co) end
  end
  for _, t in ipairs(tasks) do
    if not t.done then
      remaining = remaining + 1
      t.on_done = on_done
    end
  end
  if remaining > 0 then coroutine.yield() end
  local results = {}
  for i, t in ipairs(tasks) do results[i] = t.result end
  return results
end

function M.run(fn, ...)
  M.spawn(fn, ...)
  uv.run()
  idle:close()
  uv.run()
end

return M
