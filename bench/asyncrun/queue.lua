-- Queue throughput: 1 producer, 4 consumers, 1,000,000 integers through a
-- queue of maxsize 1000. Prints the checked result and the rate.
--   asyncrun bench/asyncrun/queue.lua [items] [consumers] [maxsize]
local async = require "async"

local N = tonumber(arg and arg[1]) or 1000000
local CONSUMERS = tonumber(arg and arg[2]) or 4
local MAXSIZE = tonumber(arg and arg[3]) or 1000

local q = async.queue(MAXSIZE)
local t0 = async.now()

local producer = async.spawn(function()
  for i = 1, N do q:put(i) end
  q:close()
end)

local consumers = {}
for c = 1, CONSUMERS do
  consumers[c] = async.spawn(function()
    local sum, count = 0, 0
    while true do
      local v = q:get()
      if v == nil then return sum, count end
      sum = sum + v
      count = count + 1
    end
  end)
end

producer:await()
local sum, count = 0, 0
for c = 1, CONSUMERS do
  local s, n = consumers[c]:await()
  sum, count = sum + s, count + n
end
local elapsed = async.now() - t0

local want = N * (N + 1) // 2
assert(count == N and sum == want,
       string.format("wrong result: count %d sum %d, want %d %d", count, sum, N, want))
print(string.format("queue: %d items, %d consumers, maxsize %d: sum %d ok", N, CONSUMERS, MAXSIZE, sum))
print(string.format("elapsed %.3f s, %.0f items/s", elapsed, N / elapsed))
