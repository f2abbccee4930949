-- Issue 10, defect 10: a call refused with "bad argument" must not have
-- run (nor spawned) its function: arguments are checked before spawning.
local async = require "async"
local check = require "check"

-- Calls f(fn) where fn sets a flag; expects "bad argument" and no run.
local function refused(label, call)
  local ran = false
  local fn = function() ran = true; return "ran" end
  local tasks = async.stats().tasks
  local ok, err = call(fn)
  check.eq(ok, false, label .. " raised")
  check.matches(tostring(err), "bad argument", label .. " error")
  check.eq(async.stats().tasks, tasks, label .. " left no spawned task")
  async.sleep(0.02) -- a spawned task would have run by now
  check.eq(ran, false, label .. ": fn ran though the call was refused")
end

check.test("wait_for(fn, -1) refuses and fn never runs", function()
  refused("wait_for(fn, -1)", function(fn) return pcall(async.wait_for, fn, -1) end)
end)

check.test("wait_for(fn, 'soon') refuses and fn never runs", function()
  refused("wait_for(fn, 'soon')", function(fn) return pcall(async.wait_for, fn, "soon") end)
end)

check.test("wait_for(fn, 0/0) refuses and fn never runs", function()
  refused("wait_for(fn, nan)", function(fn) return pcall(async.wait_for, fn, 0 / 0) end)
end)

check.test("gather({fn, 42}) refuses and fn never runs", function()
  refused("gather({fn, 42})", function(fn) return pcall(async.gather, { fn, 42 }) end)
end)

check.test("gather from a plain coroutine refuses and fn never runs", function()
  local ran = false
  local tasks = async.stats().tasks
  local co = coroutine.create(function()
    return async.gather({ function() ran = true end })
  end)
  local ok, err = coroutine.resume(co)
  check.eq(ok, false, "gather from a plain coroutine raised")
  -- Refused as any wait outside a task is (docs/api.md).
  check.matches(tostring(err), "must be called from an asyncrun task", "error")
  check.eq(async.stats().tasks, tasks, "no spawned task")
  async.sleep(0.02)
  check.eq(ran, false, "fn ran though gather was refused")
end)

check.test("wait_for from a plain coroutine refuses and fn never runs", function()
  local ran = false
  local co = coroutine.create(function()
    return async.wait_for(function() ran = true end, 1)
  end)
  local tasks = async.stats().tasks
  local ok, err = coroutine.resume(co)
  check.eq(ok, false, "wait_for from a plain coroutine raised")
  check.matches(tostring(err), "must be called from an asyncrun task", "error")
  check.eq(async.stats().tasks, tasks, "no spawned task")
  async.sleep(0.02)
  check.eq(ran, false, "fn ran though wait_for was refused")
end)

check.done()
