-- async.retry: attempts, backoff with jitter, retry_if, on_retry, errors,
-- and cancellation that is never retried.
local async = require "async"
local check = require "check"

local function failing(times, ...)
  local results = table.pack(...)
  local calls = 0
  return function()
    calls = calls + 1
    if calls <= times then error("fail " .. calls) end
    return table.unpack(results, 1, results.n)
  end, function() return calls end
end

check.test("returns every result once fn succeeds", function()
  local fn, calls = failing(2, "a", nil, 3)
  local a, b, c = async.retry(fn, { delay = 0.001 })
  check.eq(a, "a"); check.eq(b, nil); check.eq(c, 3)
  check.eq(calls(), 3)
  local fn2, calls2 = failing(0, "first")
  check.eq(async.retry(fn2), "first", "no failure, no wait")
  check.eq(calls2(), 1)
end)

check.test("retries defaults to 3: up to 4 calls, then the last error", function()
  local fn, calls = failing(100)
  local waits = {}
  local err = check.raises(nil, async.retry, fn, {
    delay = 0.001, on_retry = function(attempt, e, wait) waits[#waits + 1] = { attempt, e, wait } end,
  })
  check.eq(calls(), 4, "calls")
  check.eq(#waits, 3, "on_retry between attempts")
  check.eq(waits[1][1], 1); check.eq(waits[3][1], 3, "attempt numbers")
  check.matches(waits[2][2], "fail 2$", "on_retry gets the error")
  -- a string error comes wrapped, carrying the count and the original
  check.eq(err.kind, "failed")
  check.eq(err.attempts, 4)
  check.matches(err.cause, "fail 4$")
  check.matches(tostring(err), "fail 4 %(gave up after 4 attempts%)")
end)

check.test("a table error is raised as it is, with the attempt count", function()
  local obj = { code = 503 }
  local err = check.raises(nil, async.retry, function() error(obj) end, { retries = 2, delay = 0 })
  check.eq(err, obj, "same object")
  check.eq(err.attempts, 3)
  -- engine errors keep their kind
  err = check.raises("timeout", async.retry, function()
    async.wait_for(function() async.sleep(1) end, 0.001)
  end, { retries = 1, delay = 0 })
  check.eq(err.attempts, 2)
end)

check.test("delays grow by the backoff factor within the jitter bound", function()
  local fn = failing(100)
  local waits, stamps = {}, {}
  local wrapped = function() stamps[#stamps + 1] = async.now(); return fn() end
  check.raises(nil, async.retry, wrapped, {
    retries = 3, delay = 0.04, backoff = 2, jitter = 0.1,
    on_retry = function(_, _, wait) waits[#waits + 1] = wait end,
  })
  check.eq(#waits, 3)
  local base = 0.04
  for i = 1, 3 do
    check.between(waits[i], base, base * 1.1, "wait " .. i)
    local gap = stamps[i + 1] - stamps[i]
    check.between(gap, waits[i] - 0.001, waits[i] + 0.15, "time between calls " .. i)
    base = base * 2
  end
  -- no jitter: exact; max_delay caps
  waits = {}
  check.raises(nil, async.retry, failing(100), {
    retries = 3, delay = 0.001, backoff = 10, jitter = 0, max_delay = 0.02,
    on_retry = function(_, _, wait) waits[#waits + 1] = wait end,
  })
  check.eq(waits[1], 0.001); check.eq(waits[2], 0.01); check.eq(waits[3], 0.02, "capped")
end)

check.test("retry_if false gives up at once", function()
  local fn, calls = failing(100)
  local err = check.raises(nil, async.retry, fn, {
    delay = 0, retry_if = function(e) return not tostring(e):find("fail 2") end,
  })
  check.eq(calls(), 2)
  check.eq(err.attempts, 2)
  check.eq(err.kind, "failed")
end)

check.test("cancellation is never retried", function()
  local calls = 0
  local err = check.raises("cancelled", async.retry, function()
    calls = calls + 1
    error(async.error("cancelled", "from inside"))
  end, { delay = 0 })
  check.eq(calls, 1, "a cancelled error ends the retry")
  check.eq(err.attempts, nil, "raised unchanged")
  -- cancelled while fn waits
  calls = 0
  local t = async.spawn(function()
    return async.retry(function() calls = calls + 1; async.sleep(10) end, { delay = 0 })
  end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(calls, 1)
  -- cancelled while it sleeps between attempts
  calls = 0
  local t2 = async.spawn(function()
    return async.retry(function() calls = calls + 1; error("x") end, { delay = 10 })
  end)
  async.sleep(0.01)
  t2:cancel()
  check.raises("cancelled", t2.await, t2)
  check.eq(calls, 1)
end)

check.test("retry works under wait_for", function()
  local calls = 0
  check.raises("timeout", async.wait_for, function()
    return async.retry(function() calls = calls + 1; error("down") end, { delay = 1 })
  end, 0.05)
  check.eq(calls, 1)
end)

check.test("misuse raises clear errors", function()
  local f = function() end
  local e = check.raises(nil, async.retry, 42)
  check.matches(e, "bad argument #1 to 'async.retry' %(function expected, got number%)")
  e = check.raises(nil, async.retry, f, "opts")
  check.matches(e, "bad argument #2 to 'async.retry' %(table expected, got string%)")
  e = check.raises(nil, async.retry, f, { retries = -1 })
  check.matches(e, "retries must be an integer >= 0")
  check.raises(nil, async.retry, f, { retries = 1.5 })
  e = check.raises(nil, async.retry, f, { delay = -1 })
  check.matches(e, "delay must be a number >= 0")
  e = check.raises(nil, async.retry, f, { backoff = 0 })
  check.matches(e, "backoff must be a number > 0")
  check.raises(nil, async.retry, f, { jitter = "some" })
  check.raises(nil, async.retry, f, { max_delay = 0 / 0 })
  e = check.raises(nil, async.retry, f, { retry_if = true })
  check.matches(e, "retry_if must be a function")
  e = check.raises(nil, async.retry, f, { on_retry = 1 })
  check.matches(e, "on_retry must be a function")
  e = check.raises(nil, function() local r = async.retry(f, { delay = -1 }); return r end)
  check.matches(e, "test_retry%.lua:%d+: bad argument", "error points at the caller")
  e = check.raises(nil, function() local r = async.retry(f, { retries = -1 }); return r end)
  check.matches(e, "test_retry%.lua:%d+: bad argument", "error points at the caller")
end)

check.test("seed: the same seed gives the same jitter", function()
  local function waits(seed)
    local w = {}
    pcall(async.retry, function() error("down") end, {
      retries = 4, delay = 0.001, jitter = 1, seed = seed,
      on_retry = function(_, _, wait) w[#w + 1] = wait end,
    })
    return w
  end
  local a, b, c = waits(42), waits(42), waits(43)
  check.eq(#a, 4, "waits")
  for i = 1, 4 do check.eq(a[i], b[i], "wait " .. i) end
  local same = true
  for i = 1, 4 do same = same and a[i] == c[i] end
  check.truthy(not same, "another seed, other waits")
  check.raises(nil, async.retry, function() end, { seed = 1.5 })
end)

check.done()
