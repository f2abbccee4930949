-- A task whose cancellation is pending when it suspends (it cancelled
-- itself) raises "cancelled" at once, and the wait it was about to start
-- is undone with its own record: children of gather and wait_for are
-- cancelled, an HTTP request never stays in flight. (Engine fix: the
-- cancel function used to run before wait_data pointed at the record.)
local async = require "async"
local check = require "check"

local function self_cancelled(fn)
  local t = async.spawn(function()
    async.current():cancel()
    return fn()
  end)
  check.raises("cancelled", t.await, t)
end

check.test("gather with a cancel pending cancels its children", function()
  local child
  self_cancelled(function()
    child = async.spawn(function() async.sleep(10) end)
    return async.gather({ child })
  end)
  async.sleep(0)
  check.eq(child:cancelled(), true, "child cancelled")
end)

check.test("wait_for with a cancel pending cancels its task", function()
  local inner
  self_cancelled(function()
    inner = async.spawn(function() async.sleep(10) end)
    return async.wait_for(inner, 5)
  end)
  async.sleep(0)
  check.eq(inner:cancelled(), true, "inner cancelled")
end)

check.test("sleep and await with a cancel pending", function()
  self_cancelled(function() async.sleep(10) end)
  local other = async.spawn(function() async.sleep(0.01) end)
  self_cancelled(function() return other:await() end)
  other:await()
end)

check.test("an HTTP request with a cancel pending is aborted before any I/O", function()
  local http = require "async.http"
  self_cancelled(function() return http.get("http://127.0.0.1:9/") end)
  check.eq(http.stats().active, 0)
end)

check.done()
