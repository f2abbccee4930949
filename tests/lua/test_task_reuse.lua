-- Threads of ended tasks reused by new ones (docs/api.md, "Diagnostics"):
-- only threads nobody else can hold, and a reused thread behaves as a new
-- one.
local async = require "async"
local check = require "check"

local function spare() return async.stats().spare_threads end

-- Lets ended tasks finish and their threads settle in the pool.
local function settle() async.sleep(0) async.sleep(0) end

check.test("a task that returns nothing leaves its thread; the next spawn takes it", function()
  settle()
  local before = spare()
  local t = async.spawn(function() async.sleep(0) end)
  t:await()
  check.eq(spare(), before + 1, "kept after the task ended")
  check.eq(select("#", t:result()), 0, "the ended task still has no results")
  check.eq(t:done(), true, "done")
  local u = async.spawn(function() return 7 end)
  check.eq(spare(), before, "taken by the next spawn")
  check.eq(u:await(), 7, "the new task runs on it")
  check.eq(select("#", t:await()), 0, "the first task's await still gives nothing")
end)

check.test("threads with results, failures, cancellations are not reused", function()
  settle()
  local before = spare()
  local a = async.spawn(function() return 1, 2 end)
  local b = async.spawn(function() error("boom") end)
  local c = async.spawn(function() async.sleep(10) end)
  local d = async.spawn(function() end)
  d:cancel() -- never started
  async.sleep(0)
  c:cancel()
  check.list({ a:await() }, { 1, 2 }, "results kept")
  check.raises(nil, b.await, b)
  check.raises("cancelled", c.await, c)
  check.raises("cancelled", d.await, d)
  settle()
  check.eq(spare(), before, "none kept")
  check.list({ a:result() }, { 1, 2 }, "results still there later")
end)

check.test("a thread handed out by coroutine.running() is never reused", function()
  settle()
  local before = spare()
  local held
  local t = async.spawn(function()
    local co, main = coroutine.running()
    check.eq(main, false, "not the main thread")
    held = co
  end)
  t:await()
  settle()
  check.eq(spare(), before, "not kept")
  check.eq(coroutine.status(held), "dead", "the held thread stays dead")
  -- Many new tasks: none of them runs on the held thread.
  local seen = {}
  local ts = {}
  for i = 1, 300 do
    ts[i] = async.spawn(function()
      local co = coroutine.running()
      seen[#seen + 1] = co == held
    end)
  end
  async.gather(ts)
  for i = 1, #seen do check.eq(seen[i], false, "task " .. i .. " on the held thread") end
  check.eq(coroutine.status(held), "dead", "still dead")
  check.eq(coroutine.close(held), true, "a dead coroutine closes fine")
end)

check.test("a hook set inside a task does not follow its thread", function()
  settle()
  local fired = 0
  async.spawn(function()
    debug.sethook(function() fired = fired + 1 end, "l")
    local x = 1
    x = x + 1
    debug.sethook()
    debug.sethook(function() fired = fired + 1 end, "l") -- left set on purpose
  end):await()
  settle()
  check.truthy(spare() > 0, "its thread was kept")
  local base = fired
  async.spawn(function()
    local y = 0
    for i = 1, 10 do y = y + i end
    return y
  end):await()
  check.eq(fired, base, "line hook fired in a later task")
end)

check.test("closures and <close> of a reused thread keep their own values", function()
  settle()
  local getters = {}
  local closed = {}
  local ts = {}
  for i = 1, 50 do
    ts[i] = async.spawn(function()
      local mine <close> = setmetatable({}, { __close = function() closed[#closed + 1] = i end })
      local value = "v" .. i
      async.sleep(0)
      getters[i] = function() return value end
    end)
  end
  async.gather(ts)
  -- Later tasks reuse these threads and fill their stacks.
  local ts2 = {}
  for i = 1, 50 do
    ts2[i] = async.spawn(function()
      local a, b, c, d, e = "x" .. i, "y", "z", {}, {}
      async.sleep(0)
      return a .. b .. c .. #d .. #e
    end)
  end
  local r = async.gather(ts2)
  for i = 1, 50 do
    check.eq(getters[i](), "v" .. i, "upvalue of task " .. i)
    check.eq(r[i], "x" .. i .. "yz00", "result of task " .. i)
  end
  check.eq(#closed, 50, "every <close> ran once")
end)

check.test("a failure on a reused thread reports its own frames", function()
  settle()
  local function first_task_body() async.sleep(0) end
  async.spawn(first_task_body):await()
  check.truthy(spare() > 0, "a thread is waiting")
  local function second_body() async.sleep(0); error("second failed") end
  local t = async.spawn(second_body)
  local ok, e = pcall(t.await, t)
  check.eq(ok, false, "failed")
  local text = tostring(e)
  check.truthy(text:find("second failed", 1, true), "message: " .. text)
  check.truthy(not text:find("first_task_body", 1, true), "old frames in: " .. text)
end)

check.test("cancelling a task on a reused thread, at its waits", function()
  settle()
  for round = 1, 200 do
    local t = async.spawn(function()
      async.sleep(0.001 * (round % 3))
      async.sleep(0)
    end)
    if round % 2 == 0 then async.sleep(0) end
    t:cancel()
    local ok, e = pcall(t.await, t)
    check.truthy(ok or (type(e) == "table" and e.kind == "cancelled"), "round " .. round)
  end
  settle()
  check.eq(async.stats().tasks, 2, "only the script and this test are left")
end)

check.test("the pool is bounded, and the collector empties it", function()
  local function round()
    local ts = {}
    for i = 1, 2000 do ts[i] = async.spawn(function() async.sleep(0) end) end
    async.gather(ts)
    settle()
    local kept = spare()
    collectgarbage()
    collectgarbage()
    return kept, async.stats().memory
  end
  local kept, m0 = round()
  check.eq(kept, 256, "at most 256 kept")
  check.eq(spare(), 0, "none kept after a full collection")
  local kept1, m1 = round()
  check.eq(kept1, 256, "256 again")
  check.truthy(m1 - m0 < 16 * 1024, "memory grew by " .. (m1 - m0) .. " bytes in a second round")
end)

-- Threads that grew deep once are not held: the pool's values are weak.
for _, mode in ipairs({ "incremental", "generational" }) do
  check.test("deep threads are given back to the collector (" .. mode .. ")", function()
    collectgarbage(mode)
    collectgarbage()
    collectgarbage()
    local base = collectgarbage("count")
    local function deep(n) if n == 0 then return 0 end return 1 + deep(n - 1) end
    local ts = {}
    for i = 1, 64 do ts[i] = async.spawn(function() deep(20000) end) end
    async.gather(ts)
    ts = nil
    settle()
    for _ = 1, 3 do
      local more = {}
      for i = 1, 100 do more[i] = async.spawn(function() async.sleep(0) end) end
      async.gather(more)
    end
    collectgarbage()
    collectgarbage()
    local grown = (collectgarbage("count") - base) * 1024
    collectgarbage("incremental")
    check.truthy(grown < 256 * 1024, "held " .. math.floor(grown) .. " bytes after a full collection")
  end)
end

check.done()
