-- async.map overhead: 100,000 items, 100 in flight, each sleep(0) and
-- return item * 2. Prints the checked result and the cost per item.
--   asyncrun bench/asyncrun/map.lua [items] [concurrency]
local async = require "async"

local N = tonumber(arg and arg[1]) or 100000
local CONCURRENCY = tonumber(arg and arg[2]) or 100

local items = {}
for i = 1, N do items[i] = i end

local t0 = async.now()
local results = async.map(function(x)
  async.sleep(0)
  return x * 2
end, items, { concurrency = CONCURRENCY })
local elapsed = async.now() - t0

local sum = 0
for i = 1, N do
  assert(results[i] == items[i] * 2, "wrong result at " .. i)
  sum = sum + results[i]
end
assert(results.n == N and sum == N * (N + 1), "wrong sum")
print(string.format("map: %d items, concurrency %d: sum %d ok", N, CONCURRENCY, sum))
print(string.format("elapsed %.3f s, %.2f us per item", elapsed, elapsed / N * 1e6))
