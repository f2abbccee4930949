-- Randomized cancellation (fixed seed): consumers take items from a queue
-- through every kind of wait that owns an inner task (wait_for, gather,
-- map, a group), and a chaos task cancels consumers, and the inner tasks,
-- at random instants. Whatever the instant, every item put reaches a
-- consumer exactly once (returned by the outer call, or in err.results)
-- or stays in the queue: nothing is lost, nothing duplicated, and no task
-- or timer is left behind.
local async = require "async"
local check = require "check"

local function kind(e) return type(e) == "table" and e.kind or tostring(e) end

-- How a consumer takes one item. Each returns the item (nil once the
-- queue is closed and drained), or raises; on
-- "cancelled" it may carry the item in err.results (gather, map) or leave
-- it in a child task it hands back through `children`.
local WAYS = {
  function(q) return q:get() end,
  function(q) return async.wait_for(function() return q:get() end, nil) end,
  function(q) return async.wait_for(function() return q:get() end, 0.002) end,
  function(q) return async.gather({ function() return q:get() end })[1] end,
  function(q) return async.map(function() return q:get() end, { 1 })[1] end,
  function(q, children)
    return async.group(function(g)
      local c = g:spawn(function() return q:get() end)
      children[#children + 1] = c
      return c:await()
    end)
  end,
}

local function round(seed)
  math.randomseed(seed)
  local N = 300
  local q = async.queue()
  local got = {}
  local consumers, inner = {}, {}
  local function take(v)
    if v == nil then return end
    got[v] = (got[v] or 0) + 1
  end
  local function consumer()
    while true do
      local way = WAYS[tonumber(os.getenv("WAY") or "0") > 0 and tonumber(os.getenv("WAY")) or math.random(#WAYS)]
      local children = {}
      local ok, r = pcall(way, q, children)
      if ok then
        if r == nil then return end -- nil, "closed": closed and drained
        take(r)
      else
        if type(r) == "table" and r.results then take(r.results[1]) end
        for _, c in ipairs(children) do
          local cok, v = pcall(c.await, c)
          if cok then take(v) end
        end
        -- cancelled: this consumer was (chaos restarts it)
        if kind(r) == "cancelled" then return end
        if kind(r) ~= "timeout" then error(r) end
      end
    end
  end
  for i = 1, 4 do consumers[i] = async.spawn(consumer) end
  local producer = async.spawn(function()
    for i = 1, N do
      q:put(i)
      if math.random() < 0.3 then async.sleep(0) end
    end
  end)
  -- Chaos: cancel a consumer (restarting it), at random turns, often in
  -- the same turn as a put hands an item over.
  local chaos = async.spawn(function()
    while not producer:done() do
      for _ = 1, math.random(0, 3) do async.sleep(0) end
      local i = math.random(#consumers)
      consumers[i]:cancel()
      pcall(consumers[i].await, consumers[i])
      consumers[i] = async.spawn(consumer)
    end
  end)
  producer:await()
  chaos:await()
  q:close()
  for i = 1, #consumers do pcall(consumers[i].await, consumers[i]) end
  local left = q:size()
  while q:size() > 0 do take(q:get_nowait()) end
  local lost, dup = {}, {}
  for i = 1, N do
    if got[i] == nil then lost[#lost + 1] = i
    elseif got[i] > 1 then dup[#dup + 1] = i end
  end
  check.eq(#lost, 0, "seed " .. seed .. ": items lost (" .. table.concat(lost, " ", 1, math.min(#lost, 10)) .. ")")
  check.eq(#dup, 0, "seed " .. seed .. ": items duplicated")
  return left
end

check.test("random cancellations lose and duplicate no item (50 seeded rounds)", function()
  for seed = 1, tonumber(os.getenv("SEEDS") or "50") do if os.getenv("SEEDLOG") then io.stderr:write("seed ", seed, "\n") end round(seed) end
end)

check.done()
