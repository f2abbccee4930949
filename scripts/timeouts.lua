-- Timeouts and cancellation: async.wait_for gives up on a 5 s task after
-- 2 s; a task is cancelled by hand after 3 s; three workers are shut down
-- together. A cancelled task gets an error of kind "cancelled" at the call
-- where it waits, so its cleanup code runs (pcall handlers, <close>
-- variables) before it ends.
--   asyncrun scripts/timeouts.lua [--seed N] [--quiet]

local async = require "async"
local kit = require "lib.scriptkit"

local script = {
  name = "timeouts",
  title = "Timeouts and cancellation",
  summary = "wait_for timing out a 5 s task after 2 s, a manual cancel after 3 s, a graceful shutdown of three workers.",
}

function script.run(o)
  kit.heading(o, script.title)

  -- Works in steps of 0.5 s for `duration` seconds. If it is cancelled, the
  -- <close> variable runs its cleanup with the error, and the error goes on
  -- up, so whoever awaits the task learns that it was cancelled.
  local function long_running_task(name, duration)
    local steps = math.floor(duration * 2 + 0.5)
    local done = 0
    local cleanup <close> = setmetatable({}, {
      __close = function(_, err)
        if err and err.kind == "cancelled" then
          o.show("%s %s cancelled after %d of %d steps: cleaning up", o.stamp(), name, done, steps)
        end
      end,
    })
    o.log("%s %s starts, will run %.2f s", o.stamp(), name, duration)
    for i = 1, steps do
      async.sleep(0.5)
      done = i
      o.log("%s %s progress: %d%%", o.stamp(), name, math.floor(i / steps * 100 + 0.5))
    end
    o.log("%s %s completed", o.stamp(), name)
    return name .. " result"
  end

  o.show("")
  o.show("1. async.wait_for: a 5 s task, given 2 s")
  o.mark()
  local ok, err = pcall(async.wait_for, function() return long_running_task("task 1", 5) end, 2)
  if ok then
    o.show("task 1 returned %q", err)
  else
    o.show("%s task 1 timed out (%s: %s)", o.stamp(), err.kind, err.message)
  end

  o.show("")
  o.show("2. Manual cancellation: a 10 s task, cancelled after 3 s")
  o.mark()
  local t = async.spawn(long_running_task, "task 2", 10)
  async.sleep(3)
  o.log("%s cancelling task 2", o.stamp())
  t:cancel()
  ok, err = pcall(t.await, t)
  if not ok and err.kind == "cancelled" then
    o.show("%s task 2 was cancelled (awaiting it raised %q)", o.stamp(), err.kind)
  else
    o.show("task 2 ended otherwise: %s", tostring(err))
  end

  o.show("")
  o.show("3. Graceful shutdown: three workers of 3-8 s, all cancelled after 2 s")
  o.mark()
  local workers = {}
  for i = 3, 5 do
    workers[#workers + 1] = async.spawn(long_running_task, "task " .. i, 3 + math.random() * 5)
  end
  async.sleep(2)
  o.log("%s shutting down: cancelling every worker, then waiting for their cleanup", o.stamp())
  for _, w in ipairs(workers) do w:cancel() end
  local results = async.gather(workers, { return_exceptions = true })
  for i = 1, results.n do
    local r = results[i]
    if type(r) == "table" and r.kind == "cancelled" then
      o.show("task %d: cancelled", i + 2)
    elseif type(r) == "table" then
      o.show("task %d: failed: %s", i + 2, tostring(r))
    else
      o.show("task %d: completed: %s", i + 2, r)
    end
  end
  o.show("%s shutdown complete", o.stamp())
  return 0
end

return kit.main(script, ...)
