-- Semaphores and locks: limits, FIFO hand-over, cancellation, misuse.
local async = require "async"
local check = require "check"

local function spin(n) for _ = 1, n or 3 do async.sleep(0) end end

check.test("a semaphore bounds concurrency and returns with's results", function()
  local s = async.semaphore(2)
  local active, peak = 0, 0
  local fns = {}
  for i = 1, 6 do
    fns[i] = function()
      return s:with(function(x)
        active = active + 1
        peak = math.max(peak, active)
        async.sleep(0.01)
        active = active - 1
        return x * 10, "second"
      end, i)
    end
  end
  local r = async.gather(fns)
  for i = 1, 6 do check.eq(r[i], i * 10, "result " .. i) end
  check.eq(peak, 2, "peak concurrency")
  check.eq(s:value(), 2, "permits restored")
  local a, b = s:with(function() return 1, 2 end)
  check.eq(a, 1); check.eq(b, 2, "with returns every result")
end)

check.test("acquire and release count permits", function()
  local s = async.semaphore(3)
  check.eq(s:acquire(), true, "acquire returns true")
  s:acquire()
  check.eq(s:value(), 1); check.eq(s:locked(), false)
  check.eq(s:try_acquire(), true); check.eq(s:try_acquire(), false)
  check.eq(s:locked(), true)
  s:release(); s:release(); s:release()
  check.eq(s:value(), 3)
  check.matches(tostring(s), "^semaphore %(3 of 3 free%)$")
end)

check.test("waiters are served first come, first served", function()
  local s = async.semaphore(1)
  s:acquire()
  local order = {}
  local ts = {}
  for i = 1, 5 do
    ts[i] = async.spawn(function()
      s:acquire()
      order[#order + 1] = i
      async.sleep(0)
      s:release()
    end)
  end
  spin()
  check.eq(s:waiting(), 5, "all waiting")
  s:release()
  -- The permit went to the first waiter: a late comer cannot take it.
  check.eq(s:try_acquire(), false, "no barging past waiters")
  async.gather(ts)
  check.list(order, { 1, 2, 3, 4, 5 }, "order")
  check.eq(s:value(), 1)
end)

check.test("a cancelled waiter leaves no waiter and the count is restored", function()
  local s = async.semaphore(1)
  s:acquire()
  local t = async.spawn(function() s:acquire(); error("must not get here") end)
  spin()
  check.eq(s:waiting(), 1)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(s:waiting(), 0, "waiter unlinked")
  s:release()
  check.eq(s:value(), 1, "count restored")
end)

check.test("acquire works under wait_for", function()
  local s = async.semaphore(1)
  s:acquire()
  local e = check.raises("timeout", async.wait_for, function() s:acquire() end, 0.05)
  check.matches(e, "timed out")
  check.eq(s:waiting(), 0, "waiter unlinked")
  s:release()
  check.eq(s:value(), 1)
  -- and succeeds when a permit comes in time
  s:acquire()
  async.spawn(function() async.sleep(0.01); s:release() end)
  check.eq(async.wait_for(function() return s:acquire() end, 5), true)
  s:release()
  check.eq(s:value(), 1)
end)

check.test("a permit handed over is never lost to a late cancel", function()
  local s = async.semaphore(1)
  s:acquire()
  -- Plain acquire: the task holds the permit; the cancel comes at the
  -- next suspension.
  local got = false
  local t = async.spawn(function()
    s:acquire(); got = true
    async.sleep(10)
  end)
  spin()
  s:release()   -- handed to t, which has not run yet
  t:cancel()    -- arrives before t runs
  check.raises("cancelled", t.await, t)
  check.eq(got, true, "acquire returned")
  check.eq(s:value(), 0, "t still holds its permit")
  s:release()
  -- with(): the block sees the cancel and releases.
  s:acquire()
  local ran = false
  local t2 = async.spawn(function()
    s:with(function() ran = true; async.sleep(10) end)
  end)
  spin()
  s:release()
  t2:cancel()
  check.raises("cancelled", t2.await, t2)
  check.eq(ran, true)
  check.eq(s:value(), 1, "with released on cancel")
end)

check.test("with releases on error and on cancel while the block waits", function()
  local s = async.semaphore(2)
  local e = check.raises(nil, s.with, s, function() error("inner") end)
  check.matches(e, "inner$")
  check.eq(s:value(), 2, "released after error")
  local t = async.spawn(function() s:with(function() async.sleep(10) end) end)
  spin()
  check.eq(s:value(), 1)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(s:value(), 2, "released after cancel")
  -- a table error passes through unchanged
  local obj = { code = 3 }
  local ok, err = pcall(s.with, s, function() error(obj) end)
  check.eq(ok, false); check.eq(err, obj)
end)

check.test("a lock excludes, is FIFO and refuses a release when unlocked", function()
  local l = async.lock()
  check.eq(l:locked(), false)
  local inside, overlap, log = 0, false, {}
  local fns = {}
  for i = 1, 4 do
    fns[i] = function()
      l:with(function()
        inside = inside + 1
        if inside > 1 then overlap = true end
        log[#log + 1] = i
        async.sleep(0.005)
        inside = inside - 1
      end)
    end
  end
  async.gather(fns)
  check.eq(overlap, false, "mutual exclusion")
  check.list(log, { 1, 2, 3, 4 }, "order")
  l:acquire()
  check.eq(l:locked(), true)
  check.matches(tostring(l), "^lock %(locked%)$")
  l:release()
  local e = check.raises("invalid_state", l.release, l)
  check.matches(e, "lock released more times than it was acquired")
end)

check.test("misuse raises clear errors", function()
  local e = check.raises(nil, async.semaphore, -1)
  check.matches(e, "bad argument #1 to 'async.semaphore' %(permits must be an integer >= 1%)")
  check.raises(nil, async.semaphore, 0)
  e = check.raises(nil, async.semaphore, 1.5)
  check.matches(e, "permits must be an integer")
  e = check.raises(nil, async.semaphore, "two")
  check.matches(e, "number expected, got string")
  local s = async.semaphore(1)
  e = check.raises("invalid_state", s.release, s)
  check.matches(e, "semaphore released more times than it was acquired")
  e = check.raises(nil, s.acquire, 42)
  check.matches(e, "asyncrun.semaphore expected, got number")
  e = check.raises(nil, function() return s.acquire() end)
  check.matches(e, "asyncrun.semaphore expected, got no value")
  e = check.raises(nil, s.with, s, 42)
  check.matches(e, "function expected, got number")
  -- a lock's methods do not take a semaphore
  local l = async.lock()
  e = check.raises(nil, l.acquire, s)
  check.matches(e, "asyncrun.lock expected, got asyncrun.semaphore")
  -- waiting outside a task
  s:acquire()
  e = check.raises(nil, coroutine.wrap(function() s:acquire() end))
  check.matches(e, "must be called from an asyncrun task")
  check.eq(s:waiting(), 0)
  s:release()
end)

check.test("many waiters leave nothing behind", function()
  local s = async.semaphore(3)
  local done = 0
  local ts = {}
  for i = 1, 3000 do
    ts[i] = async.spawn(function()
      s:with(function() async.sleep(0); done = done + 1 end)
    end)
  end
  -- cancel every third while they queue
  spin(1)
  for i = 3, 3000, 3 do ts[i]:cancel() end
  async.gather(ts, { return_exceptions = true })
  check.eq(done, 2000)
  check.eq(s:value(), 3); check.eq(s:waiting(), 0)
end)

check.done()
