-- Issue 10, defect 4: after a bare coroutine.yield() in a task, t:cancel()
-- must end the task cancelled; a loop of bare yields must be cancellable.
local async = require "async"
local check = require "check"
local child = require "child"

check.test("cancel after one bare yield: the body does not run on", function()
  local reached = false
  local t = async.spawn(function()
    coroutine.yield()
    async.sleep(0) -- the next wait at the latest must raise
    reached = true
  end)
  async.sleep(0) -- t runs up to its bare yield
  check.eq(t.state, "ready", "t is queued after its bare yield")
  check.eq(t:cancel(), true, "cancel() on a live task")
  local err = check.raises("cancelled", t.await, t)
  check.eq(reached, false, "the body ran past the cancellation")
  check.truthy(t:cancelled(), "cancelled()")
  check.matches(tostring(err), "cancelled")
end)

check.test("a loop of bare yields is cancellable", function()
  -- In a child: today the loop never ends and would hang this file.
  local r = child.run([[
local async = require "async"
local n = 0
local t = async.spawn(function() while true do coroutine.yield(); n = n + 1 end end)
async.sleep(0.02)
print("cancel", t:cancel())
local ok, err = pcall(t.await, t)
print("await", ok, type(err) == "table" and err.kind or tostring(err), t:cancelled())
local before = n
async.sleep(0.02)
print("stopped", n == before)
]], { timeout = 10 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "cancel\ttrue\n", "cancel() returned true")
  check.matches(r.out, "\nawait\tfalse\tcancelled\ttrue\n", "the task ended cancelled")
  check.matches(r.out, "\nstopped\ttrue\n", "the loop stopped")
end)

check.test("a bare-yield loop in the main chunk does not outlive a cancel of its task", function()
  -- A child task spinning on bare yields must not keep the run alive when
  -- the main chunk ends (it is cancelled then, like any leftover).
  local r = child.run([[
local async = require "async"
async.spawn(function() while true do coroutine.yield() end end)
async.sleep(0.02)
print("main ends")
]], { timeout = 10 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "^main ends\n", "main ended")
  check.between(r.secs, 0, 5, "the run ended promptly")
end)

check.done()
