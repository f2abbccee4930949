-- async.map: input order, bounded concurrency (counted), errors,
-- cancellation, and a worker pool instead of a task per item.
local async = require "async"
local check = require "check"

local function range(n) local t = {} for i = 1, n do t[i] = i end return t end

check.test("results come in input order whatever order they finish in", function()
  local r = async.map(function(x)
    async.sleep(0.001 * (10 - x))
    return x * x, "only the first result is kept"
  end, range(9), { concurrency = 9 })
  check.eq(r.n, 9)
  for i = 1, 9 do check.eq(r[i], i * i, "result " .. i) end
end)

check.test("concurrency is never exceeded, and is reached", function()
  for _, conc in ipairs({ 1, 3, 5, 20 }) do
    local active, peak = 0, 0
    async.map(function(x)
      active = active + 1
      peak = math.max(peak, active)
      async.sleep(x % 3 == 0 and 0.002 or 0)
      active = active - 1
    end, range(60), { concurrency = conc })
    check.eq(peak, conc, "peak at concurrency " .. conc)
    check.eq(active, 0)
  end
  -- default 5
  local active, peak = 0, 0
  async.map(function()
    active = active + 1; peak = math.max(peak, active)
    async.sleep(0.001)
    active = active - 1
  end, range(30))
  check.eq(peak, 5, "default concurrency")
  -- fewer items than the limit
  active, peak = 0, 0
  async.map(function()
    active = active + 1; peak = math.max(peak, active)
    async.sleep(0.001)
    active = active - 1
  end, range(3), { concurrency = 10 })
  check.eq(peak, 3)
end)

check.test("items are not all spawned up front: memory is bounded", function()
  local N = 200000
  local items = range(N)
  collectgarbage(); collectgarbage()
  local base = async.stats()
  local most, peak_mem = 0, 0
  local r = async.map(function(x)
    if x % 1000 == 0 then
      local st = async.stats()
      most = math.max(most, st.tasks - base.tasks)
      peak_mem = math.max(peak_mem, st.memory - base.memory)
      async.sleep(0)
    end
    return x + 1
  end, items, { concurrency = 8 })
  check.eq(r[N], N + 1)
  check.between(most, 1, 8, "live tasks besides the caller")
  -- the results table (16 bytes a slot) and little else; a task per item
  -- would cost hundreds of bytes each
  check.between(peak_mem, 0, N * 16 + 1e6, "memory while mapping")
end)

check.test("a failure cancels the rest and is raised", function()
  local started, cancelled = 0, 0
  local err = check.raises(nil, async.map, function(x)
    started = started + 1
    if x == 3 then async.sleep(0.005); error("item 3 broke") end
    local ok, e = pcall(async.sleep, 0.05)
    if not ok then cancelled = cancelled + 1; error(e) end
    return x
  end, range(50), { concurrency = 4 })
  check.matches(err, "item 3 broke$")
  check.eq(started, 4, "no item starts after the failure")
  check.eq(cancelled, 3, "the others in flight were cancelled")
  -- a table error passes through unchanged
  local obj = {}
  local ok, e = pcall(async.map, function() error(obj) end, { 1 })
  check.eq(ok, false); check.eq(e, obj)
end)

check.test("return_exceptions keeps going and puts errors in place", function()
  local r = async.map(function(x)
    async.sleep(0)
    if x % 2 == 0 then error({ item = x }) end
    return x
  end, range(6), { concurrency = 2, return_exceptions = true })
  check.eq(r.n, 6)
  for i = 1, 6 do
    if i % 2 == 0 then check.eq(r[i].item, i, "error " .. i) else check.eq(r[i], i) end
  end
end)

check.test("cancelling the caller cancels the work in flight", function()
  local started, finished, cancelled = 0, 0, 0
  local t = async.spawn(function()
    return async.map(function()
      started = started + 1
      local ok, e = pcall(async.sleep, 10)
      if not ok then cancelled = cancelled + 1; error(e) end
      finished = finished + 1
    end, range(100), { concurrency = 4 })
  end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  async.sleep(0)
  check.eq(started, 4); check.eq(cancelled, 4); check.eq(finished, 0)
end)

check.test("map works under wait_for", function()
  local started = 0
  check.raises("timeout", async.wait_for, function()
    return async.map(function() started = started + 1; async.sleep(10) end, range(20))
  end, 0.02)
  async.sleep(0)
  check.eq(started, 5)
end)

check.test("empty lists, items.n and nil items", function()
  local r = async.map(function() error("never called") end, {})
  check.eq(r.n, 0); check.eq(#r, 0)
  r = async.map(function(x) return x == nil end, { 1, nil, 3, n = 3 })
  check.eq(r.n, 3)
  check.eq(r[1], false); check.eq(r[2], true); check.eq(r[3], false)
end)

check.test("run_tasks with a limit is map over thunks", function()
  local thunks = {}
  for i = 1, 10 do
    thunks[i] = function()
      async.sleep(0.001)
      if i == 7 then error("task 7 failed") end
      return "result " .. i
    end
  end
  local r = async.map(function(th) return th() end, thunks,
                      { concurrency = 3, return_exceptions = true })
  check.eq(r[1], "result 1"); check.eq(r[10], "result 10")
  check.matches(r[7], "task 7 failed$")
end)

check.test("misuse raises clear errors", function()
  local f = function(x) return x end
  local e = check.raises(nil, async.map, 42, {})
  check.matches(e, "bad argument #1 to 'async.map' %(function expected, got number%)")
  e = check.raises(nil, async.map, f, "items")
  check.matches(e, "bad argument #2 to 'async.map' %(table expected, got string%)")
  e = check.raises(nil, async.map, f, {}, 5)
  check.matches(e, "bad argument #3 to 'async.map' %(table expected, got number%)")
  for _, bad in ipairs({ 0, -1, 2.5, "many" }) do
    e = check.raises(nil, async.map, f, { 1 }, { concurrency = bad })
    check.matches(e, "bad argument #3 to 'async.map' %(concurrency must be an integer >= 1%)")
  end
  e = check.raises(nil, async.map, f, { n = -1 })
  check.matches(e, "bad item count")
  e = check.raises(nil, coroutine.wrap(function() async.map(f, { 1 }) end))
  check.matches(e, "must be called from an asyncrun task")
end)

check.done()
