-- Concurrency, the lab's demo as a test: six requests to /delay/1..3 take
-- about as long as the slowest when run together, about the sum one after
-- another. And session limits make requests wait their turn.
local async = require "async"
local http = require "async.http"
local check = require "check"
local servers = require "servers"

local hb = servers.httpbin(120)
local delays = { 1, 2, 3, 1, 2, 3 }

check.test("six delayed requests at once take about the longest", function()
  local t0 = async.now()
  local tasks = {}
  for i, d in ipairs(delays) do
    tasks[i] = async.spawn(function() return http.get(hb:url("/delay/" .. d)) end)
  end
  local results = async.gather(tasks)
  local took = async.now() - t0
  for i = 1, #delays do check.eq(results[i].status, 200) end
  check.between(took, 2.9, 4.5, "concurrent time")
end)

check.test("the same six one after another take about the sum", function()
  local t0 = async.now()
  for _, d in ipairs(delays) do check.eq(http.get(hb:url("/delay/" .. d)).status, 200) end
  check.between(async.now() - t0, 11.9, 15, "sequential time")
end)

check.test("max_connections makes the rest wait", function()
  local s = http.session({ max_connections = 2 })
  local t0 = async.now()
  local tasks = {}
  for i = 1, 4 do tasks[i] = async.spawn(function() return s:get(hb:url("/delay/0.5")) end) end
  async.sleep(0.1)
  check.eq(s.active, 2); check.eq(s.waiting, 2)
  async.gather(tasks)
  check.between(async.now() - t0, 0.95, 2.0, "two rounds of 0.5 s")
end)

check.test("max_per_host limits each host, not the others", function()
  local s = http.session({ max_per_host = 1 })
  local a = "http://127.0.0.1:" .. hb.port
  local b = "http://localhost:" .. hb.port
  local t0 = async.now()
  local tasks = {}
  for i = 1, 2 do
    tasks[#tasks + 1] = async.spawn(function() return s:get(a .. "/delay/0.5") end)
    tasks[#tasks + 1] = async.spawn(function() return s:get(b .. "/delay/0.5") end)
  end
  async.sleep(0.1)
  check.eq(s.active, 2, "one per host"); check.eq(s.waiting, 2)
  async.gather(tasks)
  check.between(async.now() - t0, 0.95, 2.0, "two rounds, hosts in parallel")
end)

hb:stop()
check.done()
