-- exec: N runs of `true`, at most 50 at a time, each with its stdout and
-- stderr captured (process.exec always reads them); sum of i over the runs
-- that exited 0. Prints sum=<total>.
--   asyncrun bench/asyncrun/exec.lua [N=1000]
local async = require "async"
local process = require "async.process"

local N = tonumber(arg[1]) or 1000
local items = {}
for i = 1, N do items[i] = i end

local results = async.map(function(i)
  local r = process.exec({ "true" })
  return r.code == 0 and i or 0
end, items, { concurrency = 50 })

local sum = 0
for i = 1, N do sum = sum + results[i] end
print("sum=" .. sum)
