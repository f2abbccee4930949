-- Cancelling transfers: a cancelled task, a wait_for timeout, a request
-- waiting for a connection; and 10,000 cancelled transfers leave nothing
-- behind (run under ASan by ./dev test, which also checks C memory).
local async = require "async"
local http = require "async.http"
local check = require "check"
local servers = require "servers"

local fs = servers.faults(180)
local function url(path) return fs:url(path) end

local function server_open()
  return http.get(url("/stats")):json().open
end

-- Waits until the server has seen the client close all but `n` connections.
local function wait_server_open(n)
  local deadline = async.now() + 10
  local open = server_open()
  while open > n and async.now() < deadline do
    async.sleep(0.02)
    open = server_open()
  end
  return open
end

check.test("cancelling a task aborts its transfer at once", function()
  local t = async.spawn(function() return http.get(url("/hang")) end)
  async.sleep(0.2)
  check.eq(http.stats().active, 1, "in flight")
  check.eq(wait_server_open(1), 1, "server has the connection")
  local t0 = async.now()
  t:cancel()
  async.sleep(0) -- the cancellation is delivered by the scheduler
  check.eq(http.stats().active, 0, "removed at the next turn")
  check.raises("cancelled", t.await, t)
  check.between(async.now() - t0, 0, 0.2, "at once")
  check.eq(wait_server_open(0), 0, "connection closed")
end)

check.test("wait_for around a request raises timeout and aborts it", function()
  local t0 = async.now()
  check.raises("timeout", async.wait_for, function() return http.get(url("/hang")) end, 0.3)
  check.between(async.now() - t0, 0.25, 1.0, "elapsed")
  check.eq(http.stats().active, 0)
  check.eq(wait_server_open(0), 0)
end)

check.test("a response racing a cancel is dropped cleanly", function()
  -- Cancel after the response is in but before the task resumed.
  for _ = 1, 20 do
    local t = async.spawn(function() return http.get(url("/json")) end)
    local deadline = async.now() + 2
    while http.stats().active == 0 and not t:done() and async.now() < deadline do async.sleep(0) end
    while http.stats().active > 0 and async.now() < deadline do async.sleep(0) end
    t:cancel()
    pcall(t.await, t)
  end
  check.eq(http.stats().active, 0)
end)

check.test("requests waiting for a connection: limits, cancel, timeout", function()
  local s = http.session({ max_connections = 1 })
  local first = async.spawn(function() return s:get(url("/hang")) end)
  local second = async.spawn(function() return s:get(url("/json")) end)
  async.sleep(0.1)
  check.eq(s.active, 1); check.eq(s.waiting, 1)
  second:cancel()
  async.sleep(0)
  check.eq(s.waiting, 0, "a cancelled waiter leaves the queue")
  check.raises("cancelled", second.await, second)
  -- a waiter's timeout counts from the call, queueing included
  local t0 = async.now()
  local e = check.raises("timeout", s.get, s, url("/json"), { timeout = 0.3 })
  check.between(async.now() - t0, 0.25, 1.0, "timed out while waiting")
  check.matches(e.message, "waiting for a free connection")
  -- freeing the slot starts the next waiter
  local third = async.spawn(function() return s:get(url("/json")) end)
  async.sleep(0.05)
  check.eq(s.waiting, 1)
  first:cancel()
  check.eq(third:await():json().ok, true)
  check.eq(s.active, 0); check.eq(s.waiting, 0)
end)

check.test("10,000 cancelled transfers leave nothing behind", function()
  local s = http.session({ max_connections = 10000 })
  local function batch(n, delay)
    local tasks = {}
    for i = 1, n do
      tasks[i] = async.spawn(function() return s:get(url("/hang")) end)
    end
    if delay > 0 then async.sleep(delay) else async.sleep(0) end
    for i = 1, n do tasks[i]:cancel() end
    for i = 1, n do
      local ok, err = pcall(tasks[i].await, tasks[i])
      if ok or err.kind ~= "cancelled" then error("transfer " .. i .. " was not cancelled: " .. tostring(err)) end
    end
  end
  -- warm up, then measure Lua memory around the bulk
  batch(100, 0.01)
  collectgarbage(); collectgarbage()
  local mem0 = collectgarbage("count")
  local total = 0
  local delays = { 0, 0.005, 0.02, 0.05 } -- before connecting, mid-connect, sent, waiting
  for i = 1, 40 do
    batch(250, delays[i % #delays + 1])
    total = total + 250
  end
  check.eq(total, 10000)
  local st = http.stats()
  check.eq(st.active, 0, "active transfers")
  check.eq(st.sockets, 0, "sockets polled")
  check.eq(st.stale, 0, "running polls on a descriptor that is not their socket")
  check.truthy(st.pooled <= 256, "easy handle pool is bounded")
  check.eq(s.active, 0); check.eq(s.waiting, 0)
  collectgarbage(); collectgarbage()
  local grown = collectgarbage("count") - mem0
  check.truthy(grown < 512, string.format("Lua memory grew by %.0f KiB", grown))
  check.eq(wait_server_open(0), 0, "server saw every connection closed")
end)

fs:stop()
check.done()
