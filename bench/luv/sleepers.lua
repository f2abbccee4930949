-- sleepers: N tasks, task i sleeping (i*7919) % 1000 ms; gather.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local sched = require "sched"

local n = tonumber(arg[1]) or 100000

local function sleeper(i)
  sched.sleep((i * 7919) % 1000)
  return i
end

sched.run(function()
  local tasks = {}
  for i = 1, n do tasks[i] = sched.spawn(sleeper, i) end
  local results = sched.gather(tasks)
  local sum = 0
  for i = 1, n do sum = sum + results[i] end
  print("sum=" .. sum)
end)
