-- Issue 10, defect 7: cancelling a deep chain of tasks must go through the
-- scheduler, not recurse on the C stack: a 200,000-deep chain of gather,
-- 600,000 of wait_for and 200,000 nested groups all cancel cleanly. Each
-- chain runs in a child process (today each overflows the C stack). The
-- 1,000,000-deep chains of awaiting tasks are in test_defect_deep_await.lua.
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

-- AR_DEEP_SCALE divides the depths (the sanitizer build sets 10: a million
-- tasks under ASan take minutes on a 2-core machine).
local SCALE = tonumber(os.getenv("AR_DEEP_SCALE") or "1")

local function expect_chain(depth, wait, extra_tasks)
  depth = depth // SCALE
  local r = child.run(chain(depth, wait), { timeout = 280 })
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

check.done()
