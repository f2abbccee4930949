-- Coroutines and tasks: five tasks that each sleep a random 0.5-3.0 s, run
-- one after another, then all at once. One after another, the run takes the
-- sum of the sleeps; at once, only the longest, because a sleeping task
-- leaves the loop free for the others.
--   asyncrun scripts/simple_tasks.lua [--seed N] [--quiet]

local async = require "async"
local kit = require "lib.scriptkit"

local script = {
  name = "simple_tasks",
  title = "Simple tasks",
  summary = "Five tasks sleeping 0.5-3.0 s each, sequentially, then concurrently.",
}

function script.run(o)
  kit.heading(o, script.title)

  local durations = {}
  for i = 1, 5 do durations[i] = 0.5 + math.random() * 2.5 end
  local sum, longest = 0, 0
  for _, d in ipairs(durations) do
    sum = sum + d
    longest = math.max(longest, d)
  end

  -- A task is a function run as a coroutine by the engine. async.sleep
  -- suspends only the task that calls it.
  local function sleep_task(id, seconds)
    o.log("%s task %d starts, will sleep %.2f s", o.stamp(), id, seconds)
    async.sleep(seconds)
    o.log("%s task %d done", o.stamp(), id)
    return { id = id, slept = seconds }
  end

  o.show("")
  o.show("One after another (each call returns when its sleep is over):")
  o.mark()
  local t0 = async.now()
  for i, d in ipairs(durations) do sleep_task(i, d) end
  local sequential = async.now() - t0
  o.show("sequential: %.2f s (the sum of the sleeps is %.2f s)", sequential, sum)

  o.show("")
  o.show("All at once (async.gather starts a task per function, then waits for all):")
  o.mark()
  local jobs = {}
  for i, d in ipairs(durations) do jobs[i] = function() return sleep_task(i, d) end end
  t0 = async.now()
  local results = async.gather(jobs)
  local concurrent = async.now() - t0
  assert(results.n == 5 and results[5].id == 5)
  o.show("concurrent: %.2f s (the longest sleep is %.2f s)", concurrent, longest)
  o.show("speed-up: %.2fx", sequential / concurrent)
  return 0
end

return kit.main(script, ...)
