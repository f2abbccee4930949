-- Events: set wakes every waiter in order, clear re-arms, waits cancel.
local async = require "async"
local check = require "check"

local function spin(n) for _ = 1, n or 3 do async.sleep(0) end end

check.test("set wakes every waiter, in the order they came", function()
  local e = async.event()
  check.eq(e:is_set(), false)
  local order = {}
  local ts = {}
  for i = 1, 4 do
    ts[i] = async.spawn(function() local r = e:wait(); order[#order + 1] = i; return r end)
  end
  spin()
  check.eq(e:waiting(), 4)
  check.eq(#order, 0, "nobody passes before set")
  e:set()
  check.eq(e:is_set(), true)
  local r = async.gather(ts)
  check.list(order, { 1, 2, 3, 4 }, "order")
  check.eq(r[1], true, "wait returns true")
  check.eq(e:waiting(), 0)
end)

check.test("wait on a set event returns at once; clear re-arms it", function()
  local e = async.event()
  e:set()
  e:set() -- twice is fine
  check.eq(e:wait(), true)
  check.matches(tostring(e), "^event %(set%)$")
  e:clear()
  check.eq(e:is_set(), false)
  check.matches(tostring(e), "^event %(clear%)$")
  local passed = false
  local t = async.spawn(function() e:wait(); passed = true end)
  spin()
  check.eq(passed, false, "cleared event blocks")
  e:set()
  t:await()
  check.eq(passed, true)
end)

check.test("a cancelled waiter leaves no waiter behind", function()
  local e = async.event()
  local t = async.spawn(function() e:wait() end)
  spin()
  check.eq(e:waiting(), 1)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(e:waiting(), 0)
  e:set() -- nobody to wake: no stale waiter is touched
end)

check.test("wait works under wait_for", function()
  local e = async.event()
  check.raises("timeout", async.wait_for, function() return e:wait() end, 0.03)
  check.eq(e:waiting(), 0)
  async.spawn(function() async.sleep(0.01); e:set() end)
  check.eq(async.wait_for(function() return e:wait() end, 5), true)
end)

check.test("misuse raises clear errors", function()
  local e = async.event()
  local err = check.raises(nil, e.wait, {})
  check.matches(err, "asyncrun.event expected, got table")
  err = check.raises(nil, function() return e.set() end)
  check.matches(err, "asyncrun.event expected, got no value")
  err = check.raises(nil, coroutine.wrap(function() e:wait() end))
  check.matches(err, "must be called from an asyncrun task")
  check.eq(e:waiting(), 0)
end)

check.done()
