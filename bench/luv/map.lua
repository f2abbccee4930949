-- map: N items, at most 100 in flight, each yields once and returns
-- item*2; results in order. A fixed pool of worker tasks sharing an index.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local sched = require "sched"

local n = tonumber(arg[1]) or 100000
local CONCURRENCY = 100

local function double(x)
  sched.yield()
  return x * 2
end

local function map(fn, items, concurrency)
  local results, next_i = {}, 1
  local function worker()
    while next_i <= #items do
      local i = next_i
      next_i = i + 1
      results[i] = fn(items[i])
    end
  end
  local workers = {}
  for w = 1, concurrency do workers[w] = sched.spawn(worker) end
  sched.gather(workers)
  return results
end

sched.run(function()
  local items = {}
  for i = 1, n do items[i] = i end
  local results = map(double, items, CONCURRENCY)
  local sum = 0
  for i = 1, n do sum = sum + results[i] end
  print("sum=" .. sum)
end)
