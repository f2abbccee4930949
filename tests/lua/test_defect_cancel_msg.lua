-- Issue 10, asked by a new user: t:cancel(msg) carries msg into the
-- "cancelled" error, and a cancellation error names its task. (The
-- traceback of an awaited failure is checked in tests/cli/test_defect_report.sh.)
local async = require "async"
local check = require "check"

check.test("t:cancel(msg) carries msg into the error the task sees", function()
  local seen
  local t = async.spawn(function()
    local ok, err = pcall(async.sleep, 10)
    seen = err
    error(err, 0)
  end)
  t.name = "fetcher"
  async.sleep(0.01)
  check.eq(t:cancel("shutting down"), true, "cancel() returned")
  local err = check.raises("cancelled", t.await, t)
  check.eq(type(seen), "table", "the task saw an error object")
  check.eq(seen.kind, "cancelled", "kind")
  check.matches(tostring(seen.message), "shutting down", "the message inside the task")
  check.matches(tostring(err), "shutting down", "the message awaiting it")
end)

check.test("t:cancel(msg) before the task starts carries msg too", function()
  local t = async.spawn(function() end)
  t:cancel("not needed")
  local err = check.raises("cancelled", t.await, t)
  check.matches(tostring(err), "not needed", "message")
end)

check.test("a cancellation error names its task", function()
  local t = async.spawn(function() async.sleep(10) end)
  t.name = "poller"
  async.sleep(0.01)
  t:cancel()
  local err = check.raises("cancelled", t.await, t)
  check.matches(tostring(err), "poller", "the task's name in the error")
  check.matches(tostring(err), "task " .. t.id, "the task's id in the error")
end)

check.done()
