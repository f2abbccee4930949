-- Errors in tasks: an error raised in a task comes out where the task is
-- awaited; async.gather can hand errors back instead of raising the first;
-- async.retry calls an unreliable operation again after a failure.
--   asyncrun scripts/error_handling.lua [--seed N] [--quiet]

local async = require "async"
local kit = require "lib.scriptkit"

local script = {
  name = "error_handling",
  title = "Error handling",
  summary = "A task's error caught, gather returning errors, retry of an unreliable operation.",
}

-- The ways an unreliable operation fails: engine-style error objects, so
-- the caller can test err.kind.
local FAILURES = {
  { "invalid_value", "the service returned a value out of range" },
  { "runtime", "the service crashed while answering" },
  { "connection", "the connection was reset by the peer" },
}

function script.run(o)
  kit.heading(o, script.title)

  -- Sleeps a random 0.1-1.0 s, then fails with the given probability.
  local function unreliable_task(id, fail_probability)
    o.log("%s task %d starts (fails with probability %.1f)", o.stamp(), id, fail_probability)
    async.sleep(0.1 + math.random() * 0.9)
    if math.random() < fail_probability then
      local f = FAILURES[math.random(#FAILURES)]
      o.log("%s task %d fails: %s", o.stamp(), id, f[1])
      error(async.error(f[1], f[2]))
    end
    o.log("%s task %d succeeds", o.stamp(), id)
    return "result of task " .. id
  end

  o.show("")
  o.show("1. An error raised in a task is raised again by await, where pcall catches it:")
  o.mark()
  local t = async.spawn(unreliable_task, 1, 0.8)
  local ok, res = pcall(t.await, t)
  if ok then
    o.show("task 1: got %q", res)
  else
    o.show("task 1: caught %s error: %s", res.kind, res.message)
  end

  o.show("")
  o.show("2. gather with return_exceptions: every task runs to its end, errors come back as values:")
  o.mark()
  local jobs = {}
  for id = 2, 4 do jobs[#jobs + 1] = function() return unreliable_task(id, 0.6) end end
  local results = async.gather(jobs, { return_exceptions = true })
  for i = 1, results.n do
    local r = results[i]
    if type(r) == "table" then
      o.show("task %d: failed, %s: %s", i + 1, r.kind, r.message)
    else
      o.show("task %d: succeeded, %q", i + 1, r)
    end
  end

  o.show("")
  o.show("3. async.retry calls the operation again after each failure, waiting longer each time:")
  o.mark()
  -- The lab's retry_async(coro, ...) was handed one coroutine object and
  -- awaited it on every attempt; a coroutine runs once, so the second
  -- attempt could never run the operation again. async.retry is handed the
  -- function instead and calls it afresh for each attempt.
  local attempts = 0
  ok, res = pcall(async.retry, function()
    attempts = attempts + 1
    return unreliable_task(5, 0.7)
  end, {
    retries = 3, delay = 0.5, backoff = 2,
    on_retry = function(attempt, err, wait)
      o.log("%s attempt %d failed (%s), retrying in %.2f s", o.stamp(), attempt, err.kind, wait)
    end,
  })
  if ok then
    o.show("task 5: %q after %d attempt(s)", res, attempts)
  else
    o.show("task 5: gave up after %d attempts, last error %s: %s", res.attempts, res.kind, res.message)
  end
  return 0
end

return kit.main(script, ...)
