-- Rate limiters: a sliding window per limiter, FIFO waiters, cancellation.
local async = require "async"
local check = require "check"

local function spin(n) for _ = 1, n or 3 do async.sleep(0) end end

-- Times are read when each acquire returns, a little after the limiter
-- granted it (a loaded machine may add more), so windows get a tolerance.
local TOL = 0.1

local function assert_window(times, limit, period, what)
  table.sort(times)
  for i = 1, #times - limit do
    local gap = times[i + limit] - times[i]
    if gap < period - TOL then
      check.eq(gap, period, string.format("%s: %d calls within %.3f s (calls %d..%d)",
        what, limit + 1, gap, i, i + limit))
    end
  end
end

check.test("2 per second: 6 calls take about 2 s, never 3 in one second", function()
  local rl = async.rate_limiter(2, 1)
  local t0 = async.now()
  local times, order = {}, {}
  local call = rl:wrap(function(i)
    times[#times + 1] = async.now() - t0
    order[#order + 1] = i
    return i * 2
  end)
  local fns = {}
  for i = 1, 6 do fns[i] = function() return call(i) end end
  local r = async.gather(fns)
  local elapsed = async.now() - t0
  check.between(elapsed, 2 - 0.001, 2 + 0.6, "elapsed")
  for i = 1, 6 do check.eq(r[i], i * 2, "wrapped result") end
  check.list(order, { 1, 2, 3, 4, 5, 6 }, "first come, first served")
  check.between(times[1], 0, TOL, "first call at once")
  check.between(times[2], 0, TOL, "second call at once")
  check.between(times[3], 1 - 0.001, 1 + 0.3, "third call after a second")
  assert_window(times, 2, 1, "2 per second")
end)

check.test("acquire in a loop keeps the window", function()
  local rl = async.rate_limiter(3, 0.2)
  local t0 = async.now()
  local times = {}
  for _ = 1, 9 do
    rl:acquire()
    times[#times + 1] = async.now() - t0
  end
  check.between(times[9], 0.4 - 0.001, 0.4 + 0.3, "9 calls at 3 per 0.2 s")
  assert_window(times, 3, 0.2, "3 per 0.2 s")
end)

check.test("limiters share no state", function()
  local a, b = async.rate_limiter(1, 10), async.rate_limiter(1, 10)
  local t0 = async.now()
  a:acquire()
  b:acquire() -- a's window does not hold b back
  check.between(async.now() - t0, 0, TOL, "both at once")
  check.matches(tostring(a), "^rate_limiter %(1 per 10%.0+ s%)$")
end)

check.test("a cancelled waiter leaves no waiter and no timer", function()
  local rl = async.rate_limiter(1, 10)
  rl:acquire()
  local t = async.spawn(function() rl:acquire() end)
  spin()
  check.eq(rl:waiting(), 1)
  check.eq(async.stats().timers, 1, "the limiter's timer")
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(rl:waiting(), 0)
  check.eq(async.stats().timers, 0, "timer stopped")
end)

check.test("acquire works under wait_for, and a cancelled waiter yields its turn", function()
  local rl = async.rate_limiter(1, 0.2)
  rl:acquire()
  local t0 = async.now()
  check.raises("timeout", async.wait_for, function() rl:acquire() end, 0.05)
  check.eq(rl:waiting(), 0)
  -- the slot the timed-out waiter would have had is still there
  rl:acquire()
  check.between(async.now() - t0, 0.2 - 0.001, 0.2 + 0.3, "next slot")
end)

check.test("misuse raises clear errors", function()
  local e = check.raises(nil, async.rate_limiter, 0, 1)
  check.matches(e, "bad argument #1 to 'async.rate_limiter' %(limit must be an integer >= 1%)")
  check.raises(nil, async.rate_limiter, -2, 1)
  e = check.raises(nil, async.rate_limiter, 1.5, 1)
  check.matches(e, "limit must be an integer")
  e = check.raises(nil, async.rate_limiter, "ten", 1)
  check.matches(e, "number expected, got string")
  e = check.raises(nil, async.rate_limiter, 1, 0)
  check.matches(e, "bad argument #2 to 'async.rate_limiter' %(period must be a number of seconds > 0%)")
  check.raises(nil, async.rate_limiter, 1, -1)
  check.raises(nil, async.rate_limiter, 1, 0 / 0)
  local rl = async.rate_limiter(1)
  e = check.raises(nil, rl.wrap, rl, 42)
  check.matches(e, "function expected, got number")
  e = check.raises(nil, rl.acquire, {})
  check.matches(e, "asyncrun.rate_limiter expected, got table")
  rl:acquire()
  e = check.raises(nil, coroutine.wrap(function() rl:acquire() end))
  check.matches(e, "must be called from an asyncrun task")
  check.eq(rl:waiting(), 0)
  check.eq(async.stats().timers, 0)
end)

check.done()
