-- Issue 10, defect 3: coroutine.resume on the thread of a task that is
-- waiting (coroutine.running() hands it out) must be refused with an error
-- naming the task, and leave the task untouched: it then completes with
-- its correct result. Today it corrupts the waiter lists; run in a child.
local async = require "async"
local check = require "check"
local child = require "child"

local function resume_case(wait_src, wake_src, want)
  local r = child.run(([[
local async = require "async"
local ev = async.event()
local q = async.queue()
local th
local t = async.spawn(function()
  th = coroutine.running()
  local v = WAIT
  return "result:" .. tostring(v)
end)
async.sleep(0.01)
print("state", t.state)
local ok, err = coroutine.resume(th, "intruder")
print("resume", ok, tostring(err))
print("status", coroutine.status(th), t.state)
WAKE
print("await", t:await())
print("end", async.stats().tasks)
]]):gsub("WAIT", wait_src):gsub("WAKE", wake_src), nil)
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "state\twaiting\n", "the task was waiting")
  check.matches(r.out, "\nresume\tfalse\t[^\n]*task", "resume refused with an error naming the task")
  check.matches(r.out, "\nstatus\tsuspended\twaiting\n", "the task is still waiting")
  check.matches(r.out, "\nawait\t" .. want:gsub("%p", "%%%0") .. "\n", "the task's own result")
  check.matches(r.out, "\nend\t1\n", "nothing left")
end

check.test("resume of a task waiting on sleep is refused", function()
  resume_case("(async.sleep(0.05) or 'slept')", "", "result:slept")
end)

check.test("resume of a task waiting on an event is refused", function()
  resume_case("(ev:wait() and 'set')", "ev:set()", "result:set")
end)

check.test("resume of a task waiting on a queue is refused", function()
  resume_case("q:get()", "q:put('item')", "result:item")
end)

check.test("resume of a task awaiting another task is refused", function()
  resume_case("async.spawn(function() async.sleep(0.03) return 'inner' end):await()", "", "result:inner")
end)

check.done()
