-- Queues: FIFO, bounds, close, task_done/join, and cancellation that
-- loses no item and duplicates none.
local async = require "async"
local check = require "check"

local function spin(n) for _ = 1, n or 3 do async.sleep(0) end end

check.test("items come out in order; size, empty, full", function()
  local q = async.queue(3)
  check.eq(q:maxsize(), 3)
  check.eq(q:empty(), true); check.eq(q:size(), 0)
  q:put("a"); q:put({ 1 }); q:put(false)
  check.eq(q:size(), 3); check.eq(#q, 3, "#q"); check.eq(q:full(), true)
  check.matches(tostring(q), "^queue %(3/3%)$")
  check.eq(q:get(), "a")
  check.eq(q:get()[1], 1)
  check.eq(q:get(), false, "false is an item like any other")
  check.eq(q:empty(), true)
end)

check.test("an unbounded queue grows and keeps order", function()
  local q = async.queue()
  check.eq(q:maxsize(), 0); check.eq(q:full(), false)
  for i = 1, 10000 do q:put(i) end
  check.eq(q:size(), 10000)
  -- interleave to wrap the ring around
  for i = 1, 5000 do check.eq(q:get(), i) end
  for i = 10001, 13000 do q:put(i) end
  for i = 5001, 13000 do
    local v = q:get()
    if v ~= i then check.eq(v, i, "item") end
  end
  check.eq(q:size(), 0)
  check.eq(async.queue(0):maxsize(), 0, "0 means unbounded")
end)

check.test("put waits while full, get waits while empty", function()
  local q = async.queue(2)
  q:put(1); q:put(2)
  local put_done = false
  local p = async.spawn(function() q:put(3); put_done = true end)
  spin()
  check.eq(put_done, false, "put blocks when full")
  check.eq(q:get(), 1)
  p:await()
  check.eq(put_done, true)
  check.eq(q:size(), 2)
  check.eq(q:get(), 2); check.eq(q:get(), 3)
  local got
  local c = async.spawn(function() got = q:get() end)
  spin()
  check.eq(got, nil, "get blocks when empty")
  q:put("x")
  c:await()
  check.eq(got, "x")
  check.eq(q:size(), 0, "handed straight to the getter")
end)

check.test("waiting getters and putters are served first come, first served", function()
  local q = async.queue(1)
  local got = {}
  local gs = {}
  for i = 1, 3 do gs[i] = async.spawn(function() got[i] = q:get() end) end
  spin()
  q:put("a"); q:put("b"); q:put("c")
  async.gather(gs)
  check.list(got, { "a", "b", "c" }, "getters")
  q:put(0)
  local ps = {}
  for i = 1, 3 do ps[i] = async.spawn(function() q:put(i) end) end
  spin()
  local out = {}
  for i = 1, 4 do out[i] = q:get() end
  async.gather(ps)
  check.list(out, { 0, 1, 2, 3 }, "putters")
end)

check.test("put_nowait and get_nowait raise full and empty", function()
  local q = async.queue(1)
  local e = check.raises("empty", q.get_nowait, q)
  check.matches(e, "queue is empty")
  q:put_nowait(1)
  e = check.raises("full", q.put_nowait, q, 2)
  check.matches(e, "queue is full")
  check.eq(q:get_nowait(), 1)
  -- put_nowait hands over to a waiting getter even on a full-size queue
  local got
  local t = async.spawn(function() got = q:get() end)
  spin()
  q:put_nowait("direct")
  t:await()
  check.eq(got, "direct")
end)

check.test("close: put raises closed, get drains then returns nil, closed", function()
  local q = async.queue(10)
  for i = 1, 3 do q:put(i) end
  q:close()
  q:close() -- twice is fine
  check.eq(q:is_closed(), true)
  check.matches(tostring(q), "closed")
  local e = check.raises("closed", q.put, q, 4)
  check.matches(e, "queue is closed")
  check.raises("closed", q.put_nowait, q, 4)
  check.eq(q:get(), 1); check.eq(q:get_nowait(), 2); check.eq(q:get(), 3)
  local v, why = q:get()
  check.eq(v, nil); check.eq(why, "closed")
  v, why = q:get_nowait()
  check.eq(v, nil); check.eq(why, "closed")
end)

check.test("close wakes waiting getters and putters", function()
  local q = async.queue(1)
  local results = {}
  local gs = {}
  for i = 1, 2 do gs[i] = async.spawn(function() results[i] = { q:get() } end) end
  spin()
  q:close()
  async.gather(gs)
  check.eq(results[1][1], nil); check.eq(results[1][2], "closed")
  check.eq(results[2][2], "closed")
  local q2 = async.queue(1)
  q2:put("kept")
  local p = async.spawn(function() q2:put("refused") end)
  spin()
  q2:close()
  check.raises("closed", p.await, p)
  check.eq(q2:get(), "kept")
  check.eq(select(2, q2:get()), "closed", "the refused item was not taken")
end)

check.test("consumers loop until closed, with no sentinels", function()
  local q = async.queue(4)
  local seen, consumers = {}, {}
  for c = 1, 3 do
    consumers[c] = async.spawn(function()
      local n = 0
      while true do
        local v = q:get()
        if v == nil then return n end
        seen[#seen + 1] = v
        n = n + 1
        if v % 7 == 0 then async.sleep(0) end
      end
    end)
  end
  for i = 1, 100 do q:put(i) end
  q:close()
  local total = 0
  for c = 1, 3 do total = total + consumers[c]:await() end
  check.eq(total, 100)
  table.sort(seen)
  for i = 1, 100 do if seen[i] ~= i then check.eq(seen[i], i, "item") end end
end)

check.test("join waits for task_done of every item", function()
  local q = async.queue()
  local joined = false
  for i = 1, 3 do q:put(i) end
  local j = async.spawn(function() q:join(); joined = true end)
  spin()
  q:get(); q:task_done()
  q:get(); q:task_done()
  spin()
  check.eq(joined, false, "one item still unfinished")
  q:get(); q:task_done()
  j:await()
  check.eq(joined, true)
  q:join() -- nothing unfinished: returns at once
  -- join under wait_for: the timed-out joiner leaves no stale waiter
  q:put("late")
  check.raises("timeout", async.wait_for, function() q:join() end, 0.02)
  local j2 = async.spawn(function() q:join(); return "joined" end)
  async.sleep(0)
  q:get(); q:task_done()
  check.eq(j2:await(), "joined")
  local e = check.raises("invalid_state", q.task_done, q)
  check.matches(e, "task_done%(%) called more times than items were put")
end)

check.test("a cancelled waiting get leaves no waiter; the next item is kept", function()
  local q = async.queue(2)
  local t = async.spawn(function() return q:get() end)
  spin()
  t:cancel()
  check.raises("cancelled", t.await, t)
  q:put("x")
  check.eq(q:size(), 1, "the item went to the queue, not to the cancelled getter")
  check.eq(q:get(), "x")
end)

check.test("a get served then cancelled before it runs still returns the item", function()
  local q = async.queue(2)
  local after = false
  local t = async.spawn(function()
    local v = q:get()
    after = true
    async.sleep(10) -- the cancellation lands here
    return v
  end)
  spin()
  q:put("precious") -- moved onto t's stack
  t:cancel()        -- before t runs
  check.raises("cancelled", t.await, t)
  check.eq(after, true, "get returned its item")
  -- A get under wait_for whose deadline races with the item: the item is
  -- either returned or still in the queue, never both and never lost.
  for round = 1, 50 do
    local q2 = async.queue(1)
    async.spawn(function() async.sleep(0.001 * (round % 3)); q2:put(round) end)
    local ok, v = pcall(async.wait_for, function() return q2:get() end, 0.001 * (round % 4))
    async.sleep(0.005)
    if ok then
      check.eq(v, round, "returned")
      check.eq(q2:size(), 0, "not also left in the queue")
    else
      check.eq(v.kind, "timeout")
      check.eq(q2:size(), 1, "timed out: the item is still queued")
      check.eq(q2:get(), round)
    end
  end
end)

check.test("a cancelled waiting put neither adds nor loses its item", function()
  local q = async.queue(1)
  q:put(1)
  local t = async.spawn(function() q:put(2) end)
  spin()
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(q:size(), 1)
  check.eq(q:get(), 1)
  check.eq(q:size(), 0, "the cancelled put's item is not queued")
  -- A put whose item was taken in, cancelled before it runs: put returns
  -- (its item is in the queue once) and the cancel lands later.
  q:put(1)
  local returned = false
  local t2 = async.spawn(function()
    q:put(2)
    returned = true
    async.sleep(10)
  end)
  spin()
  check.eq(q:get(), 1) -- moves 2 into the queue, lets t2 go
  t2:cancel()
  check.raises("cancelled", t2.await, t2)
  check.eq(returned, true, "put returned normally")
  check.eq(q:size(), 1); check.eq(q:get(), 2)
  check.eq(q:size(), 0, "exactly once")
end)

check.test("stress: cancelling getters and putters loses and duplicates nothing", function()
  -- A tiny queue, bursty producers and consumers. Each put or get runs as
  -- its own task, either under a wait_for deadline of the same order as
  -- the waits, or exposed to cancellation by the other side right after
  -- it serves it (a get cancelled just after a put handed it its item, a
  -- put cancelled just after a get took its item in).
  math.randomseed(42)
  local N = 1500
  local q = async.queue(2)
  local put_ok, seen = {}, {}
  local dup, put_fails, get_fails = 0, 0, 0
  local getters, putters = {}, {} -- inner tasks that may be cancelled
  local function cancel_one(set)
    local t = next(set)
    if t then t:cancel() end
  end
  local function run(set, fn, ...)
    if math.random() < 0.5 then
      return pcall(async.wait_for, fn, math.random(0, 3) * 0.0005, ...)
    end
    local t = async.spawn(fn, ...)
    set[t] = true
    local r = table.pack(pcall(t.await, t))
    set[t] = nil
    return table.unpack(r, 1, r.n)
  end
  local function expected(err)
    if err.kind ~= "timeout" and err.kind ~= "cancelled" then error(err) end
  end
  local producers = {}
  for p = 1, 3 do
    producers[p] = async.spawn(function()
      for i = p, N, 3 do
        -- retry until the put is known to have happened
        while true do
          local ok, err = run(putters, function() q:put(i) end)
          if ok then put_ok[i] = true; break end
          expected(err)
          put_fails = put_fails + 1
        end
        if math.random() < 0.3 then cancel_one(getters) end
        if math.random() < 0.1 then async.sleep(math.random(0, 2) * 0.001) end
      end
    end)
  end
  local consumers = {}
  for c = 1, 4 do
    consumers[c] = async.spawn(function()
      while true do
        local ok, v, why = run(getters, function() return q:get() end)
        if ok then
          if v == nil and why == "closed" then return end
          if seen[v] then dup = dup + 1 end
          seen[v] = true
          if math.random() < 0.3 then cancel_one(putters) end
          if math.random() < 0.1 then async.sleep(math.random(0, 2) * 0.001) end
        else
          expected(v)
          get_fails = get_fails + 1
        end
      end
    end)
  end
  async.gather(producers)
  q:close()
  async.gather(consumers)
  local missing = 0
  for i = 1, N do
    check.truthy(put_ok[i], "put " .. i)
    if not seen[i] then missing = missing + 1 end
  end
  check.eq(missing, 0, "lost items")
  check.eq(dup, 0, "duplicated items")
  check.truthy(put_fails > 10, "puts timed out or were cancelled (" .. put_fails .. ")")
  check.truthy(get_fails > 10, "gets timed out or were cancelled (" .. get_fails .. ")")
end)

check.test("misuse raises clear errors", function()
  local e = check.raises(nil, async.queue, -1)
  check.matches(e, "bad argument #1 to 'async.queue' %(maxsize must be an integer >= 0%)")
  e = check.raises(nil, async.queue, 2.5)
  check.matches(e, "maxsize must be an integer")
  e = check.raises(nil, async.queue, "big")
  check.matches(e, "number expected, got string")
  local q = async.queue(1)
  e = check.raises(nil, q.put, q, nil)
  check.matches(e, "queue items cannot be nil")
  e = check.raises(nil, q.put, q)
  check.matches(e, "value expected")
  e = check.raises(nil, q.get, {})
  check.matches(e, "asyncrun.queue expected, got table")
  e = check.raises(nil, function() return q.get() end)
  check.matches(e, "asyncrun.queue expected, got no value")
  e = check.raises(nil, coroutine.wrap(function() q:get() end))
  check.matches(e, "must be called from an asyncrun task")
  q:put(1)
  e = check.raises(nil, coroutine.wrap(function() q:put(2) end))
  check.matches(e, "must be called from an asyncrun task")
  check.eq(q:size(), 1)
  -- without waiting, a plain coroutine may use the queue
  check.eq(coroutine.wrap(function() return q:get() end)(), 1)
end)

check.test("a million items through a small queue keep memory flat", function()
  collectgarbage(); collectgarbage()
  local before = async.stats().memory
  local q = async.queue(100)
  local sum = 0
  local c = async.spawn(function()
    while true do
      local v = q:get()
      if v == nil then return end
      sum = sum + v
    end
  end)
  local N = 200000
  for i = 1, N do q:put(i) end
  q:close()
  c:await()
  check.eq(sum, N * (N + 1) // 2)
  collectgarbage(); collectgarbage()
  check.between(async.stats().memory - before, -1e6, 1e6, "memory growth")
end)

check.done()
