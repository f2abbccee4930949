-- Issue 10's goal: chains of 1,000,000 awaiting tasks cancel cleanly,
-- from the bottom (the cancellation travels up through every await) and
-- from the top (the rest is cancelled at the end of the run). These pass on
-- today's engine in a plain build; they guard the task trampoline that
-- fixes defect 7. Each runs in a child process; slow under ASan (see the
-- TIMEOUT in tests/CMakeLists.txt).
local async = require "async"
local check = require "check"
local child = require "child"
-- AR_DEEP_SCALE divides the depth (the sanitizer build sets 10).
local DEPTH = 1000000 // tonumber(os.getenv("AR_DEEP_SCALE") or "1")

check.test("a 1,000,000-deep chain of awaiting tasks cancels cleanly from the bottom", function()
  local r = child.run((([[
local async = require "async"
local DEPTH = @DEPTH@
local bottom, ends = nil, 0
local function link(d)
  if d == 0 then bottom = async.current(); async.sleep(1000) end
  local ok, e = pcall(function() return async.spawn(link, d - 1):await() end)
  ends = ends + 1
  error(e, 0)
end
local top = async.spawn(link, DEPTH)
local t0 = async.now()
while not bottom and async.now() - t0 < 100 do async.sleep(0.01) end
print("built", bottom ~= nil, async.stats().tasks)
bottom:cancel()
local ok, e = pcall(top.await, top)
print("top", ok, type(e) == "table" and e.kind or tostring(e), top:cancelled())
print("ends", ends, "left", async.stats().tasks)
]]):gsub("@DEPTH@", tostring(DEPTH))), { timeout = 400 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "\ntop\tfalse\tcancelled\ttrue\n", "the top ended cancelled")
  check.matches(r.out, "\nends\t" .. DEPTH .. "\tleft\t1\n", "every level ended, nothing left")
  check.eq(r.err, "", "stderr")
end)

check.test("a 1,000,000-deep chain of awaiting tasks cancelled from the top, then left at the end", function()
  local r = child.run((([[
local async = require "async"
local DEPTH = @DEPTH@
local started = false
local function link(d)
  if d == 0 then started = true; async.sleep(1000) end
  return async.spawn(link, d - 1):await()
end
local top = async.spawn(link, DEPTH)
local t0 = async.now()
while not started and async.now() - t0 < 100 do async.sleep(0.01) end
top:cancel()
print("top", pcall(top.await, top) == false, top:cancelled())
print("main ends")
-- The 999,999 tasks still waiting are cancelled at the end of the run.
]]):gsub("@DEPTH@", tostring(DEPTH))), { timeout = 400 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "^top\ttrue\ttrue\nmain ends\n$", "stdout")
  check.eq(r.err, "", "stderr")
end)

check.done()
