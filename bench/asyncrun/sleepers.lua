-- sleepers: N tasks, task i sleeping (i*7919) % 1000 ms; gather them.
-- Usage: asyncrun sleepers.lua [N]   (default 100000). Prints sum=N(N+1)/2.
-- The runner reads wall time (ideal: 1.0 s) and peak RSS.
local async = require "async"

local n = tonumber(arg[1]) or 100000

local function sleeper(i)
  async.sleep((i * 7919) % 1000 / 1000)
  return i
end

local tasks = {}
for i = 1, n do tasks[i] = async.spawn(sleeper, i) end
local results = async.gather(tasks)
local sum = 0
for i = 1, n do sum = sum + results[i] end
print("sum=" .. sum)
