-- A cancel that arrives while a task runs is raised at its next
-- suspension; the primitive it suspends in must still be able to undo
-- itself (gather and wait_for find their records through wait_data).
local async = require "async"
local check = require "check"

check.test("self-cancel, then gather: children cancelled, task cancelled", function()
  local child
  local t = async.spawn(function()
    async.current():cancel()
    child = async.spawn(function() async.sleep(10) end)
    async.gather({ child })
  end)
  check.raises("cancelled", t.await, t)
  async.sleep(0)
  check.truthy(child:done(), "child ended")
  check.eq(child:cancelled(), true, "child cancelled")
end)

check.test("self-cancel, then wait_for: inner task cancelled", function()
  local inner
  local t = async.spawn(function()
    async.current():cancel()
    inner = async.spawn(function() async.sleep(10) end)
    async.wait_for(inner, 5)
  end)
  check.raises("cancelled", t.await, t)
  async.sleep(0)
  check.truthy(inner:done(), "inner ended")
end)

check.test("self-cancel, then await", function()
  local other = async.spawn(function() async.sleep(0.01); return 1 end)
  local t = async.spawn(function()
    async.current():cancel()
    other:await()
  end)
  check.raises("cancelled", t.await, t)
  check.eq(other:await(), 1, "the awaited task is not cancelled")
end)

check.done()
