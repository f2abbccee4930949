-- redis: 100 tasks share one client; call c (1..N, N/100 per task) is
-- GET bench:<c mod 100>, whose value is c mod 100. Prints sum=<total>.
--   asyncrun bench/asyncrun/redis.lua N URL
local async = require "async"
local redis = require "async.redis"

local N = tonumber(arg[1]) or 100000
local c = redis.connect(arg[2] or "redis://127.0.0.1:6379/0")
c:pipeline(function(p)
  for k = 0, 99 do p:call("SET", "bench:" .. k, k) end
end)

local TASKS = 100
local per = N // TASKS
local tasks = {}
for t = 0, TASKS - 1 do
  tasks[t + 1] = async.spawn(function()
    local sum = 0
    for c_ = t * per + 1, (t + 1) * per do
      sum = sum + tonumber(c:call("GET", "bench:" .. c_ % 100))
    end
    return sum
  end)
end
local total = 0
for _, s in ipairs(async.gather(tasks)) do total = total + s end
c:close()
print("sum=" .. total)
