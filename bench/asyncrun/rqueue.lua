-- rqueue: the distributed queue (async.queue{url=}), 1 producer and 3
-- worker processes. This process is the producer: it starts the workers
-- (this script with a queue name), puts 1..N from 16 tasks, closes the
-- queue, and sums the sums the workers print. Prints sum=<total>.
--   asyncrun bench/asyncrun/rqueue.lua N URL
local async = require "async"

local N, URL, NAME = tonumber(arg[1]) or 100000, arg[2], arg[3]
local WORKERS, CONCURRENCY = 3, 16

if NAME then -- a worker
  local q = async.queue{ url = URL, name = NAME, consumer = "w" .. arg[4] }
  local sums = {}
  for i = 1, CONCURRENCY do
    sums[i] = async.spawn(function()
      local sum = 0
      while true do
        local v = q:get()
        if v == nil then return sum end
        sum = sum + v
        q:task_done()
      end
    end)
  end
  local total = 0
  for _, s in ipairs(async.gather(sums)) do total = total + s end
  print(total)
  return
end

NAME = string.format("bench:rq:%d:%d", os.time(), math.random(1 << 30))
local q = async.queue{ url = URL, name = NAME }
local outs = {}
for w = 1, WORKERS do
  outs[w] = os.tmpname()
  os.execute(string.format("%s %s %d %s %s %d > %s &", arg[-1], arg[0], N, URL,
                           NAME, w, outs[w]))
end
local next_item = 1
local producers = {}
for i = 1, 16 do
  producers[i] = async.spawn(function()
    while next_item <= N do
      local v = next_item
      next_item = v + 1
      q:put(v)
    end
  end)
end
async.gather(producers)
q:close()
local total = 0
for w = 1, WORKERS do
  local s
  while true do -- a worker prints its sum as it exits
    local f = io.open(outs[w])
    s = f and tonumber(f:read("a"))
    if f then f:close() end
    if s then break end
    async.sleep(0.01)
  end
  os.remove(outs[w])
  total = total + s
end
q.client:call("DEL", NAME, NAME .. ":closed", NAME .. ":dead")
q:disconnect()
print("sum=" .. total)
