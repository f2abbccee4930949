-- Issue 10, defect 2: async.gather({other, async.current()}) links its
-- hooks on `other` before refusing the current task; the dangling hook is
-- then used after free when `other` ends (ASan flags it, a plain build may
-- crash or corrupt). Run in a child process.
local async = require "async"
local check = require "check"
local child = require "child"

check.test("gather refusing the current task leaves other awaitable", function()
  local r = child.run([[
local async = require "async"
local other = async.spawn(function() async.sleep(0.02); return "other done" end)
local function try()
  local ok, err = pcall(async.gather, { other, async.current() })
  print("refused", ok, tostring(err))
end
try()
-- The refused gather's record is garbage now: collect it and reuse its
-- memory with bytes that make a stale hook visible.
collectgarbage(); collectgarbage()
JUNK = {}
for n = 40, 400, 8 do
  for i = 1, 20 do JUNK[#JUNK + 1] = string.rep("A", n) .. string.format("%04d", i) end
end
print("await", other:await())
local t = async.spawn(function() return "later" end)
print("after", t:await())
]])
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "refused\tfalse\t[^\n]*gather itself", "a clear error")
  check.matches(r.out, "\nawait\tother done\n", "other:await() works")
  check.matches(r.out, "\nafter\tlater\n", "the engine goes on")
  check.eq(r.err, "", "stderr (ASan would report here)")
end)

check.test("gather refusing the current task spawns nothing and links nothing", function()
  -- In a child too: today the stale hook fires when `other` ends.
  local r = child.run([[
local async = require "async"
local other = async.spawn(function() async.sleep(0.02); return "x" end)
local ran = false
local before = async.stats().tasks
local ok, err = pcall(async.gather, { other, async.current(), function() ran = true end })
print("refused", ok, tostring(err))
print("spawned", async.stats().tasks - before)
print("await", other:await())
async.sleep(0.01)
print("ran", ran)
]])
  check.eq(r.status, 0, "exit status; " .. child.describe(r))
  check.matches(r.out, "^refused\tfalse\t[^\n]*itself", "a clear error")
  check.matches(r.out, "\nspawned\t0\n", "no task spawned by the refused gather")
  check.matches(r.out, "\nawait\tx\n", "other:await()")
  check.matches(r.out, "\nran\tfalse\n", "the function entry never ran")
  check.eq(r.err, "", "stderr")
end)

check.done()
