-- The main job, for now: five workers sleeping concurrently.
local async = require "async"

local function worker(i, seconds)
  async.sleep(seconds)
  return string.format("worker %d slept %.1f s", i, seconds)
end

local t0 = async.now()
local tasks = {}
for i = 1, 5 do tasks[i] = async.spawn(worker, i, i * 0.2) end
for _, line in ipairs(async.gather(tasks)) do print(line) end
print(string.format("all done in %.2f s (the longest, not the sum)", async.now() - t0))
