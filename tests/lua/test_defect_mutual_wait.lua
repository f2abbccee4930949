-- Issue 10, defect 1: two tasks waiting on each other through wait_for or
-- gather; cancelling one (or the deadline firing) must not queue the other
-- twice nor resume it after it finished. Each case runs in a child process,
-- since today it crashes the process.
local async = require "async"
local check = require "check"
local child = require "child"

-- The child prints one line per task end and a final summary; b records
-- what its wait saw, and must see it exactly once.
local function mutual(a_wait, b_wait, trigger)
  return (([[
local async = require "async"
local seen, ends = {}, 0
local a, b
a = async.spawn(function()
  local ok, e = pcall(function() return A_WAIT end)
  seen[#seen + 1] = "a:" .. (ok and tostring(e) or (type(e) == "table" and e.kind or tostring(e)))
  ends = ends + 1
  if not ok then error(e, 0) end
  return "a"
end)
b = async.spawn(function()
  local ok, e = pcall(function() return B_WAIT end)
  seen[#seen + 1] = "b:" .. (ok and tostring(e) or (type(e) == "table" and e.kind or tostring(e)))
  ends = ends + 1
  if not ok then error(e, 0) end
  return "b"
end)
async.sleep(0.02)
TRIGGER
for _ = 1, 50 do if a:done() and b:done() then break end async.sleep(0.01) end
async.sleep(0.05) -- a second wake-up would show here
print("done", a:done(), b:done(), "ends", ends, "seen", table.concat(seen, ","))
print("a", a.state, "b", b.state)
]]):gsub("A_WAIT", a_wait):gsub("B_WAIT", b_wait):gsub("TRIGGER", trigger))
end

local function run_mutual(a_wait, b_wait, trigger)
  local r = child.run(mutual(a_wait, b_wait, trigger))
  if r.status ~= 0 then error("child: " .. child.describe(r), 2) end
  local ad, bd, ends, seen = r.out:match("done\t(%a+)\t(%a+)\tends\t(%d+)\tseen\t([^\n]*)")
  check.eq(ad, "true", "a ended; " .. child.describe(r))
  check.eq(bd, "true", "b ended")
  -- Each task's wait returned or raised exactly once: two entries, one each.
  check.eq(ends, "2", "wait outcomes seen (each task exactly once): " .. seen)
  check.truthy(seen:find("a:", 1, true) and seen:find("b:", 1, true), "both tasks saw their wait end once: " .. seen)
  -- Nothing here raises anything but "cancelled": neither task may end failed.
  local ast, bst = r.out:match("\na\t(%a+)\tb\t(%a+)")
  check.truthy(ast == "cancelled" or ast == "done", "a's state: " .. tostring(ast))
  check.truthy(bst == "cancelled" or bst == "done", "b's state: " .. tostring(bst))
  return r, seen
end

check.test("wait_for <-> wait_for, cancel one: no crash, each sees one outcome", function()
  local r, seen = run_mutual("async.wait_for(b, nil)", "async.wait_for(a, nil)", "a:cancel()")
  -- a was cancelled: its wait raised "cancelled" (or returned b's result,
  -- if b ended first with its own outcome).
  check.truthy(seen:find("a:cancelled", 1, true) or seen:find("a:b", 1, true), "a's outcome: " .. seen)
  check.truthy(seen:find("b:cancelled", 1, true), "b saw cancelled: " .. seen)
  check.eq(r.err, "", "stderr")
end)

check.test("wait_for with a deadline <-> wait_for: the deadline fires, no crash", function()
  local r, seen = run_mutual("async.wait_for(b, 0.05)", "async.wait_for(a, nil)", "async.sleep(0.1)")
  check.truthy(seen:find("b:", 1, true), "b ended once: " .. seen)
  check.eq(select(2, seen:gsub("a:", "")), 1, "a's wait_for ended exactly once: " .. seen)
  check.eq(r.err, "", "stderr")
end)

check.test("gather <-> gather, cancel one: no crash, each sees one outcome", function()
  local r, seen = run_mutual("async.gather({ b })", "async.gather({ a })", "a:cancel()")
  check.truthy(seen:find("b:cancelled", 1, true), "b saw cancelled: " .. seen)
  check.eq(r.err, "", "stderr")
end)

check.test("gather <-> wait_for, cancel the gatherer: no crash", function()
  run_mutual("async.gather({ b })", "async.wait_for(a, nil)", "a:cancel()")
end)

check.done()
