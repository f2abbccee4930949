-- Issue 10, defect 7: cancelling a deep chain of tasks must go through the
-- scheduler, not recurse on the C stack: a 200,000-deep chain of gather,
-- 600,000 of wait_for, 200,000 nested groups, and 1,000,000 awaiting tasks
-- all cancel cleanly. Each chain runs in a child process (today several
-- overflow the C stack).
local async = require "async"
local check = require "check"
local child = require "child"

-- WAIT(d) is the expression by which level d waits for level d - 1.
local function chain(depth, wait)
  return (([[
local async = require "async"
local bottom_started, ends = false, 0
local function link(d)
  if d == 0 then
    bottom_started = true
    local ok, e = pcall(async.sleep, 1000)
    ends = ends + 1
    error(e, 0)
  end
  local ok, e = pcall(function() return WAIT end)
  ends = ends + 1
  if not ok then error(e, 0) end
  return e
end
local top = async.spawn(link, DEPTH)
local t0 = async.now()
while not bottom_started and async.now() - t0 < 100 do async.sleep(0.01) end
print("built", bottom_started, async.stats().tasks)
top:cancel()
local ok, e = pcall(top.await, top)
print("top", ok, type(e) == "table" and e.kind or tostring(e))
t0 = async.now()
while ends < DEPTH + 1 and async.now() - t0 < 100 do async.sleep(0.01) end
print("ends", ends, "left", async.stats().tasks)
]]):gsub("WAIT", wait):gsub("DEPTH", tostring(depth)))
end

local function expect_chain(depth, wait, extra_tasks)
  local r = child.run(chain(depth, wait), { timeout = 110 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "^built\ttrue\t", "the chain was built")
  check.matches(r.out, "\ntop\tfalse\tcancelled\n", "the top ended cancelled")
  -- Every level's wait ended once, and only the main task is left.
  check.matches(r.out, "\nends\t" .. (depth + 1) .. "\tleft\t1\n", "every level cancelled, nothing left")
  check.eq(r.err, "", "stderr")
end

check.test("cancel a 200,000-deep chain of gather", function()
  expect_chain(200000, "async.gather({ function() return link(d - 1) end })[1]")
end)

check.test("cancel a 600,000-deep chain of wait_for", function()
  expect_chain(600000, "async.wait_for(function() return link(d - 1) end, nil)")
end)

check.test("cancel a 200,000-deep chain of nested groups", function()
  expect_chain(200000, "async.group(function(g) g:spawn(link, d - 1) end)")
end)

check.test("a 1,000,000-deep chain of awaiting tasks cancels cleanly from the bottom", function()
  local r = child.run([[
local async = require "async"
local DEPTH = 1000000
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
]], { timeout = 110 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "\ntop\tfalse\tcancelled\ttrue\n", "the top ended cancelled")
  check.matches(r.out, "\nends\t1000000\tleft\t1\n", "every level ended, nothing left")
  check.eq(r.err, "", "stderr")
end)

check.test("a 1,000,000-deep chain of awaiting tasks cancelled from the top, then left at the end", function()
  local r = child.run([[
local async = require "async"
local DEPTH = 1000000
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
]], { timeout = 110 })
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "^top\ttrue\ttrue\nmain ends\n$", "stdout")
  check.eq(r.err, "", "stderr")
end)

check.done()
