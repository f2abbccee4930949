-- map: items 1..N, at most 100 in flight, each yields once and returns
-- item*2; results in input order. Prints sum=<total>.
--   asyncrun bench/asyncrun/map.lua [N=100000]
local async = require "async"

local N = tonumber(arg[1]) or 100000
local items = {}
for i = 1, N do items[i] = i end

local results = async.map(function(x)
  async.sleep(0)
  return x * 2
end, items, { concurrency = 100 })

local sum = 0
for i = 1, N do sum = sum + results[i] end
print("sum=" .. sum)
