-- queue: 1 producer puts 1..N into a queue of maxsize 1000; 4 consumers sum
-- what they get until the queue is closed and drained. Prints sum=<total>.
--   asyncrun bench/asyncrun/queue.lua [N=1000000]
local async = require "async"

local N = tonumber(arg[1]) or 1000000
local q = async.queue(1000)

local producer = async.spawn(function()
  for i = 1, N do q:put(i) end
  q:close()
end)

local function consumer()
  local sum = 0
  while true do
    local v = q:get()
    if v == nil then return sum end
    sum = sum + v
  end
end

local sums = async.gather({ consumer, consumer, consumer, consumer })
producer:await()
print("sum=" .. (sums[1] + sums[2] + sums[3] + sums[4]))
