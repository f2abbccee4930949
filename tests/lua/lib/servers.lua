-- Loopback servers for the HTTP tests, started and stopped by the tests
-- themselves (tests/helpers/). Each prints its port on one line; it stops
-- when killed, when this process exits, or after `lifetime` seconds.
local M = {}

local helpers = assert(os.getenv("AR_TEST_HELPERS"), "AR_TEST_HELPERS is not set")

local Server = {}
Server.__index = Server

function Server:url(path)
  return string.format("http://127.0.0.1:%d%s", self.port, path or "/")
end

function Server:stop()
  if self.pipe then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    self.pipe:close()
    self.pipe = nil
  end
end

-- Starts tests/helpers/<script> and reads its line of numbers.
local function start(script, lifetime)
  local cmd = string.format("exec /usr/bin/python3 %s/%s %d", helpers, script, lifetime or 300)
  local pipe = assert(io.popen(cmd, "r"))
  local line = pipe:read("l")
  if not line then
    pipe:close()
    error("cannot start " .. script)
  end
  local nums = {}
  for n in line:gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
  return setmetatable({ pipe = pipe, nums = nums, pid = nums[#nums], port = nums[1] }, Server)
end

-- httpbin on werkzeug's threaded server.
function M.httpbin(lifetime)
  return start("httpbin_server.py", lifetime)
end

-- The fault server; .refused_port has nothing listening.
function M.faults(lifetime)
  local s = start("fault_server.py", lifetime)
  s.refused_port = s.nums[2]
  return s
end

-- A private nginx serving HTTPS and HTTP/2 with a self-signed certificate.
function M.nginx_tls(lifetime)
  local s = start("nginx_tls.py", lifetime)
  function s:url(path)
    return string.format("https://127.0.0.1:%d%s", self.port, path or "/")
  end
  return s
end

return M
