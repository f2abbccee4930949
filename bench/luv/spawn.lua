-- spawn: N tasks that each yield once and return their index; gather.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local sched = require "sched"

local n = tonumber(arg[1]) or 100000

local function task(i)
  sched.yield()
  return i
end

sched.run(function()
  local tasks = {}
  for i = 1, n do tasks[i] = sched.spawn(task, i) end
  local results = sched.gather(tasks)
  local sum = 0
  for i = 1, n do sum = sum + results[i] end
  print("sum=" .. sum)
end)
