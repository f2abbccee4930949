-- Tasks: spawn, await, results, errors, names, ordering, the ready queue.
local async = require "async"
local check = require "check"

check.test("spawn and await return every result", function()
  local t = async.spawn(function(a, b) return a + b, "x", nil, true end, 2, 3)
  local a, b, c, d = t:await()
  check.eq(a, 5); check.eq(b, "x"); check.eq(c, nil); check.eq(d, true)
  check.truthy(t:done(), "done"); check.eq(t:cancelled(), false, "cancelled")
  -- a finished task can be awaited again, with the same results
  check.eq((t:await()), 5, "second await")
end)

check.test("tasks start in spawn order after the spawner yields", function()
  local order = {}
  for i = 1, 5 do async.spawn(function() order[#order + 1] = i end) end
  check.eq(#order, 0, "nothing runs before the spawner yields")
  async.sleep(0)
  check.list(order, { 1, 2, 3, 4, 5 }, "order")
end)

check.test("sleep(0) round-robins ready tasks", function()
  local log = {}
  local function w(name)
    for i = 1, 3 do log[#log + 1] = name .. i; async.sleep(0) end
  end
  async.gather({ function() w("a") end, function() w("b") end })
  check.list(log, { "a1", "b1", "a2", "b2", "a3", "b3" }, "interleaving")
end)

check.test("await re-raises the task's error unchanged", function()
  local t = async.spawn(function() error({ code = 7 }) end)
  local ok, err = pcall(t.await, t)
  check.eq(ok, false); check.eq(err.code, 7, "table error passes through")
  local t2 = async.spawn(function() error("plain") end)
  local ok2, err2 = pcall(t2.await, t2)
  check.eq(ok2, false); check.matches(err2, "test_tasks.lua:%d+: plain$", "string error keeps file:line")
end)

check.test("ids, names, state and tostring", function()
  local t = async.spawn(function() async.sleep(0) end)
  check.eq(math.type(t.id), "integer", "id")
  check.eq(t.name, nil, "no name yet")
  t.name = "worker"
  check.eq(t.name, "worker", "name")
  check.eq(t.state, "pending", "state before start")
  check.matches(tostring(t), "^task %d+ %(worker, pending%)$", "tostring")
  t:await()
  check.eq(t.state, "done", "state after")
  check.raises(nil, function() t.id = 3 end)
  check.raises(nil, function() t.name = 5 end)
end)

check.test("async.current names the running task", function()
  local inner
  local t = async.spawn(function() inner = async.current() end)
  t:await()
  check.eq(inner, t)
end)

check.test("misuse raises clear errors", function()
  local e = check.raises(nil, async.spawn, 42)
  check.matches(e, "bad argument #1 to 'async.spawn' %(function expected, got number%)")
  e = check.raises(nil, async.sleep, -1)
  check.matches(e, "bad argument #1 to 'async.sleep' %(seconds must be a number >= 0%)")
  e = check.raises(nil, async.sleep, 0 / 0)
  check.matches(e, "seconds must be")
  e = check.raises(nil, async.sleep, "soon")
  check.matches(e, "number expected, got string")
  local me = async.current()
  e = check.raises(nil, me.await, me)
  check.matches(e, "cannot await itself")
  e = check.raises(nil, function() return async.current().await(42) end)
  check.matches(e, "asyncrun.task expected")
  local co = coroutine.wrap(function() async.sleep(0) end)
  e = check.raises(nil, co)
  check.matches(e, "must be called from an asyncrun task")
end)

check.test("bare coroutine.yield in a task acts as sleep(0)", function()
  local log = {}
  async.gather({
    function() log[#log + 1] = 1; coroutine.yield(); log[#log + 1] = 3 end,
    function() log[#log + 1] = 2 end,
  })
  check.list(log, { 1, 2, 3 })
end)

check.test("C stack stays flat across a long wake chain", function()
  -- 20,000 tasks each awaiting the previous one: a nested resume would
  -- overflow the C stack long before the end.
  local prev = async.spawn(function() return 0 end)
  for i = 1, 20000 do
    local p = prev
    prev = async.spawn(function() return p:await() + 1 end)
  end
  check.eq(prev:await(), 20000)
end)

check.test("a million tasks leave nothing behind", function()
  collectgarbage(); collectgarbage()
  local before = async.stats()
  for round = 1, 20 do
    local ts = {}
    for i = 1, 50000 do ts[i] = async.spawn(function() async.sleep(0); return i end) end
    local r = async.gather(ts)
    check.eq(r[50000], 50000)
  end
  collectgarbage(); collectgarbage()
  local after = async.stats()
  check.eq(after.tasks, before.tasks, "live tasks")
  check.between(after.memory - before.memory, -10e6, 2e6, "memory growth after 1,000,000 tasks")
end)

check.done()
