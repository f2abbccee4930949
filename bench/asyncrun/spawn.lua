-- spawn: N tasks that each yield once and return their index; gather them.
-- Usage: asyncrun spawn.lua [N]   (default 100000). Prints sum=N(N+1)/2.
local async = require "async"

local n = tonumber(arg[1]) or 100000

local function task(i)
  async.sleep(0)
  return i
end

local tasks = {}
for i = 1, n do tasks[i] = async.spawn(task, i) end
local results = async.gather(tasks)
local sum = 0
for i = 1, n do sum = sum + results[i] end
print("sum=" .. sum)
