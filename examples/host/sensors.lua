-- Run by host_example: reads several channels of the host's device at
-- once. device.read is a host operation; each call looks blocking, but
-- only its own task waits.
local async = require "async"
local device = require "device"

print("script: io is " .. (io and "available" or "left out by the host"))

local channels = { 3, 1, 4, 2 } -- a read takes 20 ms per channel number
local t0 = async.now()
local tasks = {}
for i, ch in ipairs(channels) do
  tasks[i] = async.spawn(function()
    local value, unit = device.read(ch)
    return string.format("%.1f %s", value, unit)
  end)
end

-- Channel 40 takes 800 ms: give up after 100 ms. The timeout cancels the
-- task, and the host hears of it through its cancel callback.
local ok, err = pcall(async.wait_for, function() return device.read(40) end, 0.1)
print("script: slow read " .. (ok and "finished" or err.kind))

local results = async.gather(tasks)
for i, ch in ipairs(channels) do
  print(string.format("script: channel %d -> %s", ch, results[i]))
end
-- One after the other the reads would take 300 ms.
print("script: the reads overlapped: " .. (async.now() - t0 < 0.3 and "yes" or "no"))
return #channels
