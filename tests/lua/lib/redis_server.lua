-- A private redis-server for a test: a free loopback port, a temporary
-- directory, no persistence, and a hard time limit (`timeout`), so that a
-- test that crashes leaves nothing running for long. Blocking helpers:
-- call them from the main chunk, around the test's tasks.
--   local server = require("redis_server").start{ password = "pw" }
--   ... server.url ...
--   server:stop()
-- servers.stop_all() at the end of the file stops every server started
-- (also those a failed case left running).
local M = {}
M.__index = M
local started = {}

local function sh(cmd)
  return os.execute(cmd .. " >/dev/null 2>&1")
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Starts redis-server on `port` in `dir`; returns true when it answers.
local function launch(self)
  local args = string.format(
    "--port %d --bind 127.0.0.1 --dir %s --save '' --appendonly no " ..
    "--daemonize no --logfile %s/redis.log --unixsocket %s/redis.sock",
    self.port, self.dir, self.dir, self.dir)
  if self.password then args = args .. " --requirepass " .. self.password end
  os.remove(self.dir .. "/redis.log") -- judge this start by its own log
  -- `timeout` ends it even if the test dies without stopping it.
  sh(string.format("(timeout -s KILL %d redis-server %s & echo $! > %s/pid) ",
                   self.limit, args, self.dir))
  for _ = 1, 100 do
    if self:cli("PING") == "PONG" then return true end
    if read(self.dir .. "/redis.log") and
       read(self.dir .. "/redis.log"):find("Address already in use", 1, true) then
      return false
    end
    sh("sleep 0.05")
  end
  return false
end

-- Runs redis-cli against the server; returns its output, trimmed.
function M:cli(...)
  local parts = {}
  for i, a in ipairs({ ... }) do parts[i] = "'" .. tostring(a) .. "'" end
  local auth = self.password and ("-a " .. self.password .. " --no-auth-warning ") or ""
  local p = io.popen(string.format("timeout 5 redis-cli -p %d %s%s 2>/dev/null",
                                   self.port, auth, table.concat(parts, " ")))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

function M.start(opts)
  opts = opts or {}
  local p = io.popen("mktemp -d /tmp/asyncrun-redis-XXXXXX")
  local dir = p:read("l")
  p:close()
  local self = setmetatable({ dir = dir, password = opts.password,
                              limit = opts.limit or 300 }, M)
  math.randomseed(os.time() + tonumber(tostring(self):match("0x(%x+)"), 16))
  for _ = 1, 20 do
    self.port = math.random(20000, 60000)
    if launch(self) then
      self.url = string.format("redis://%s127.0.0.1:%d/0",
                               opts.password and (":" .. opts.password .. "@") or "",
                               self.port)
      self.socket = dir .. "/redis.sock"
      started[#started + 1] = self
      return self
    end
    self:kill()
  end
  error("could not start redis-server")
end

-- Stops the server abruptly (SIGKILL), as a crash would.
-- Returns once the process (and its `timeout`) is gone, so that its port is
-- free for a restart.
function M:kill()
  local pid = (read(self.dir .. "/pid") or ""):match("%d+")
  if not pid then return end
  sh("pkill -KILL -P " .. pid)
  sh("kill -KILL " .. pid)
  for _ = 1, 100 do
    if not sh("kill -0 " .. pid) and not sh("pgrep -P " .. pid) then break end
    sh("sleep 0.05")
  end
end

-- Starts it again on the same port (after kill).
function M:restart()
  for _ = 1, 3 do
    if launch(self) then return end
    self:kill()
    sh("sleep 0.2")
  end
  local log = read(self.dir .. "/redis.log") or ""
  error("redis-server did not restart: " .. log:sub(-300))
end

function M:stop()
  if self.stopped then return end
  self.stopped = true
  self:cli("SHUTDOWN", "NOSAVE")
  self:kill()
  sh("rm -rf " .. self.dir)
end

function M.stop_all()
  for _, server in ipairs(started) do server:stop() end
end

return M
