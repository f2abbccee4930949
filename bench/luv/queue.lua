-- queue: 1 producer, 4 consumers, N integers through a bounded queue of
-- 1000. luv has no queue; this is the plain coroutine one (FIFO waiters,
-- woken through the ready queue). The producer ends each consumer with a
-- sentinel.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local sched = require "sched"

local n = tonumber(arg[1]) or 1000000
local CONSUMERS = 4
local STOP = {}

local Queue = {}
Queue.__index = Queue

local function new_queue(maxsize)
  return setmetatable({ maxsize = maxsize, items = {}, head = 1, tail = 0,
                        getters = {}, putters = {} }, Queue)
end

local function wake_one(waiters)
  local co = table.remove(waiters, 1)
  if co then sched.wake(co) end
end

function Queue:put(v)
  while self.tail - self.head + 1 >= self.maxsize do
    self.putters[#self.putters + 1] = coroutine.running()
    coroutine.yield()
  end
  self.tail = self.tail + 1
  self.items[self.tail] = v
  wake_one(self.getters)
end

function Queue:get()
  while self.tail < self.head do
    self.getters[#self.getters + 1] = coroutine.running()
    coroutine.yield()
  end
  local v = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  wake_one(self.putters)
  return v
end

local function consumer(q)
  local total = 0
  while true do
    local item = q:get()
    if item == STOP then return total end
    total = total + item
  end
end

sched.run(function()
  local q = new_queue(1000)
  local consumers = {}
  for c = 1, CONSUMERS do consumers[c] = sched.spawn(consumer, q) end
  for i = 1, n do q:put(i) end
  for _ = 1, CONSUMERS do q:put(STOP) end
  local sum = 0
  for _, t in ipairs(sched.gather(consumers)) do sum = sum + t end
  print("sum=" .. sum)
end)
