-- async.net: echo client and server in one script, refused ports, unknown
-- hosts, resets, timeouts, a peer that stops reading, UDP.
local async = require "async"
local net = require "async.net"
local process = require "async.process"
local check = require "check"
local procfs = require "procfs"

-- The misbehaving peers of tests/helpers/net_server.py, started with
-- async.process itself.
local helpers = assert(os.getenv("AR_TEST_HELPERS"), "AR_TEST_HELPERS is not set")
local peers = process.spawn({ "/usr/bin/python3", helpers .. "/net_server.py", "120" })
local RESET_PORT, STALL_PORT = peers.stdout:read_line():match("^(%d+) (%d+)")
RESET_PORT, STALL_PORT = tonumber(RESET_PORT), tonumber(STALL_PORT)

local function echo_server()
  return net.listen({ port = 0, handler = function(s)
    for line in s:lines() do s:write(line, "\n") end
  end })
end

check.test("echo: lines and bytes, client and server in one script", function()
  local srv <close> = echo_server()
  check.truthy(srv.port > 0, "port")
  local s <close> = net.connect("127.0.0.1", srv.port)
  for i = 1, 100 do
    s:write("line ", i, "\n")
    check.eq(s:read_line(), "line " .. i)
  end
  -- a megabyte of lines, written while another task reads them back
  local reader = async.spawn(function()
    local n = 0
    for i = 1, 20000 do
      local l = s:read_line()
      if l ~= string.rep(string.char(65 + i % 26), 50) then return "bad line " .. i end
      n = n + 1
    end
    return n
  end)
  for i = 1, 20000 do s:write(string.rep(string.char(65 + i % 26), 50), "\n") end
  check.eq(reader:await(), 20000)
end)

check.test("raw bytes with read(n) and shutdown", function()
  local srv <close> = net.listen({ handler = function(s, peer)
    check.eq(peer.host, "127.0.0.1")
    check.truthy(peer.port > 0, "peer port")
    local data = s:read_all()
    s:write(#data .. ":" .. data:sub(1, 3) .. data:sub(-3))
  end })
  local s <close> = net.connect("localhost", srv.port)
  local chunk = string.rep("0123456789", 100000)
  s:write(chunk)
  s:shutdown()
  check.eq(s:read_all(), "1000000:012789")
  check.eq(s:read(10), nil, "end of stream")
end)

check.test("handler errors do not stop the server; srv:close stops accepting", function()
  local served = 0
  local srv = net.listen({ handler = function(s)
    served = served + 1
    s:write("hi\n")
  end })
  local port = srv.port
  for _ = 1, 3 do
    local s <close> = net.connect("127.0.0.1", port)
    check.eq(s:read_line(), "hi")
    check.eq(s:read_line(), nil, "closed after the handler")
  end
  check.eq(served, 3)
  -- a connection in progress outlives srv:close
  local live_srv = echo_server()
  local live = net.connect("127.0.0.1", live_srv.port)
  live_srv:close()
  live:write("still\n")
  check.eq(live:read_line(), "still")
  live:close()
  srv:close()
  srv:close()
  check.eq(srv.port, nil)
  local e = check.raises("connect", net.connect, "127.0.0.1", port)
  check.eq(e.errno, "ECONNREFUSED")
end)

check.test("a refused port: kind connect", function()
  local srv = net.listen({ handler = function() end })
  local port = srv.port
  srv:close()
  async.sleep(0.01)
  local e = check.raises("connect", net.connect, "127.0.0.1", port)
  check.eq(e.errno, "ECONNREFUSED")
  check.eq(e.port, port)
  check.matches(e.message, "127%.0%.0%.1:" .. port)
end)

check.test("an unknown host: kind dns", function()
  local e = check.raises("dns", net.connect, "no-such-host.invalid", 80)
  check.eq(e.host, "no-such-host.invalid")
  check.matches(e.message, "no%-such%-host%.invalid")
  e = check.raises("dns", net.resolve, "no-such-host.invalid")
  check.truthy(e.errno, "errno")
end)

check.test("resolve", function()
  local addrs = net.resolve("localhost")
  local found = false
  for _, a in ipairs(addrs) do if a == "127.0.0.1" or a == "::1" then found = true end end
  check.truthy(found, "localhost: " .. table.concat(addrs, ","))
  check.list(net.resolve("127.0.0.1"), { "127.0.0.1" })
  local v4 = net.resolve("localhost", { family = "inet" })
  check.eq(v4[1], "127.0.0.1")
end)

check.test("a peer that resets: kind reset", function()
  local s <close> = net.connect("127.0.0.1", RESET_PORT)
  s:write("hello\n")
  local e = check.raises("reset", function()
    while true do
      local got = s:read()
      if got == nil then error("orderly end instead of a reset") end
    end
  end)
  check.eq(e.errno, "ECONNRESET")
end)

check.test("connect timeout: kind timeout", function()
  -- Fill the stalled listener's queue, then one more attempt hangs.
  local held = {}
  local t0
  local e = check.raises("timeout", function()
    for _ = 1, 20 do
      t0 = async.now()
      held[#held + 1] = net.connect("127.0.0.1", STALL_PORT, { timeout = 0.3 })
    end
  end)
  check.between(async.now() - t0, 0.29, 3, "elapsed")
  check.eq(e.port, STALL_PORT)
  for _, s in ipairs(held) do s:close() end
end)

check.test("a peer that stops reading: the writer suspends, memory stays flat", function()
  local release = async.event()
  local srv <close> = net.listen({ handler = function(s)
    release:wait()
    s:close()
  end })
  local s <close> = net.connect("127.0.0.1", srv.port)
  local written = 0
  local chunk = string.rep("x", 256 * 1024)
  local writer = async.spawn(function()
    while true do
      s:write(chunk)
      written = written + #chunk
    end
  end)
  async.sleep(0.5)
  local w1, rss1, lua1 = written, procfs.rss(), collectgarbage("count")
  async.sleep(0.5)
  check.eq(written, w1, "the writer is suspended")
  check.truthy(writer.state == "waiting", "writer waits: " .. writer.state)
  check.truthy(written < 64 << 20, "bounded by the kernel's buffers: " .. written)
  check.truthy(procfs.rss() - rss1 < 4 << 20, "RSS flat")
  check.truthy(collectgarbage("count") - lua1 < 1024, "Lua memory flat")
  writer:cancel()
  check.raises("cancelled", writer.await, writer)
  release:set()
end)

check.test("10,000 connections opened and cancelled leave no descriptor", function()
  local srv <close> = net.listen({ backlog = 1024, handler = function(s)
    s:read_all()
  end })
  collectgarbage()
  local before = procfs.fds()
  local port = srv.port
  for batch = 1, 100 do
    local tasks = {}
    for i = 1, 100 do
      tasks[i] = async.spawn(function()
        local s <close> = net.connect("127.0.0.1", port)
        s:read() -- the server never writes: waits until cancelled
      end)
    end
    -- half are cancelled while connecting, half while reading
    async.sleep(0)
    for i = 1, 50 do tasks[i]:cancel() end
    async.sleep(batch % 10 == 0 and 0.01 or 0)
    for i = 51, 100 do tasks[i]:cancel() end
    for i = 1, 100 do
      local ok, err = pcall(tasks[i].await, tasks[i])
      check.truthy(not ok and err.kind == "cancelled", "cancelled: " .. tostring(err))
    end
  end
  -- let the server's handlers see their ends
  local deadline = async.now() + 10
  while async.stats().tasks > 2 and async.now() < deadline do async.sleep(0.05) end
  -- Closes finish on the loop's next turns; a loaded machine (or ASan)
  -- takes longer than a fixed pause. A descriptor really left open stays.
  collectgarbage()
  collectgarbage()
  deadline = async.now() + 5
  while procfs.fds() ~= before and async.now() < deadline do async.sleep(0.05) end
  check.eq(procfs.fds(), before, "descriptors")
end)

check.test("UDP: send and receive", function()
  local a <close> = net.udp({ host = "127.0.0.1", port = 0 })
  local b <close> = net.udp()
  check.truthy(a.port > 0 and b.port > 0, "ports")
  local got = async.spawn(function()
    local data, host, port = b:recv()
    return data, host, port
  end)
  async.sleep(0)
  a:send("ping", "127.0.0.1", b.port)
  local data, host, port = got:await()
  check.eq(data, "ping")
  check.eq(host, "127.0.0.1")
  check.eq(port, a.port)
  b:send("pong", host, port)
  check.eq(a:recv(), "pong")
  -- an empty datagram is one too
  a:send("", "127.0.0.1", b.port)
  check.eq(b:recv(), "")
  -- a receiver can be cancelled
  local t = async.spawn(function() return a:recv() end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  b:close()
  check.raises("closed", b.recv, b)
end)

check.test("misuse raises bad argument", function()
  check.matches(select(2, pcall(net.connect, "127.0.0.1", 0)), "bad argument #2")
  check.matches(select(2, pcall(net.connect, "127.0.0.1", 70000)), "bad argument #2")
  check.matches(select(2, pcall(net.listen, { port = 0 })), "handler")
  check.matches(select(2, pcall(net.listen, { host = "example.invalid", handler = print })), "IP address")
end)

peers:kill()
peers:wait()
check.done()
