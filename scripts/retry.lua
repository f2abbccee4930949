-- Retry with exponential backoff and jitter: async.retry calls a function
-- until it returns without raising, waiting longer after each failure (the
-- delay doubles) plus a random part (the jitter, so that many clients that
-- failed together do not all come back at the same instant).
--   asyncrun scripts/retry.lua [--retries N] [--delay S] [--seed N] [--quiet]

local async = require "async"
local kit = require "lib.scriptkit"

local script = {
  name = "retry",
  title = "Retry with backoff",
  summary = "Retry with exponential backoff and jitter: one service that recovers, one that stays down.",
  description = "The waits double from --delay, each up to 20% longer at random (the jitter).\n"
    .. "--seed fixes which failures happen and the jitter (async.retry's seed option).",
  options = {
    { "retries", "N", "retries after the first attempt (default 4)", "integer", min = 0 },
    { "delay", "S", "seconds before the first retry (default 0.25)", "number", min = 0 },
  },
}

-- Why a call to the simulated service fails; every one is worth retrying.
local TRANSIENT = {
  { "unavailable", "503 Service Unavailable" },
  { "timeout", "no answer within 2 s" },
  { "connection", "connection reset by peer" },
}

-- A simulated remote service: each call takes 50-150 ms. It fails its
-- first `failures` calls (all of them when failures is math.huge), then
-- answers.
local function service(name, failures)
  local calls = 0
  return function()
    calls = calls + 1
    async.sleep(0.05 + math.random() * 0.1)
    if calls <= failures then
      local f = TRANSIENT[math.random(#TRANSIENT)]
      error(async.error(f[1], f[2]))
    end
    return string.format("%s answered on call %d", name, calls)
  end
end

function script.run(o)
  kit.heading(o, script.title)
  local retries, delay = o.retries or 4, o.delay or 0.25

  -- Calls `call` through async.retry, printing each attempt, its error and
  -- the wait before the next one.
  local function attempt_loop(label, call, retry_if)
    o.show("")
    o.show("%s:", label)
    o.mark()
    local n = 0
    local ok, res = pcall(async.retry, function()
      n = n + 1
      o.log("%s attempt %d", o.stamp(), n)
      return call()
    end, {
      retries = retries, delay = delay, backoff = 2, jitter = 0.2, max_delay = 8,
      seed = o.seed, retry_if = retry_if,
      on_retry = function(attempt, err, wait)
        o.show("  attempt %d failed (%s: %s), next in %.2f s", attempt, err.kind, err.message, wait)
      end,
    })
    if ok then
      o.show("  succeeded after %d attempt(s) in %.2f s: %s", n, async.now() - o.t0, res)
    else
      o.show("  gave up after %d attempt(s) in %.2f s; last error %s: %s", res.attempts, async.now() - o.t0,
        res.kind, res.message)
    end
    return ok
  end

  -- 1. A service that is back after a few failures (how many: the seed).
  local failures = math.random(1, math.max(1, math.min(3, retries)))
  attempt_loop(string.format("1. a service that fails %d time(s), then recovers", failures),
    service("billing", failures))

  -- 2. A service that stays down: every attempt fails, retry gives up.
  attempt_loop("2. a service that stays down", service("inventory", math.huge))

  -- 3. Not every error is worth a retry: retry_if gives up at once on one
  -- that will not go away by waiting.
  attempt_loop("3. an error that waiting cannot fix (retry_if says no)", function()
    async.sleep(0.05)
    error(async.error("bad_request", "400 Bad Request: unknown field 'qty'"))
  end, function(err) return err.kind ~= "bad_request" end)
  return 0
end

return kit.main(script, ...)
