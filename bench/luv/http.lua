-- http: N GETs, at most 64 in flight, keep-alive, each body decoded with
-- lua-cjson. luv has no HTTP client, so this is the small HTTP/1.1 one a
-- luv program would write for a known server: 64 workers, each owning one
-- uv TCP connection it reuses, requests written whole, responses framed by
-- Content-Length (enough for nginx serving static files). URL i is
-- BASE + (i % 100) .. ".json"; prints the sum of the "n" fields.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local uv = require "luv"
local cjson = require "cjson"
local sched = require "sched"

local n = tonumber(arg[1]) or 20000
local base = assert(arg[2], "usage: http.lua N BASE_URL")
local CONCURRENCY = 64

local host, port, path0 = base:match("^http://([^:/]+):(%d+)(/.*)$")
assert(host, "BASE_URL must be http://host:port/path")
port = tonumber(port)

-- One connection: data arriving wakes the worker waiting for it.
local Conn = {}
Conn.__index = Conn

local function connect()
  local c = setmetatable({ tcp = uv.new_tcp(), buf = "", eof = false }, Conn)
  local co = coroutine.running()
  c.tcp:connect(host, port, function(err)
    sched.wake_with(co, err)
  end)
  local err = coroutine.yield()
  if err then error("connect: " .. err) end
  c.tcp:nodelay(true)
  c.tcp:read_start(function(rerr, data)
    if rerr then error("read: " .. rerr) end
    if data then c.buf = c.buf .. data else c.eof = true end
    local w = c.waiter
    if w then
      c.waiter = nil
      sched.wake(w)
    end
  end)
  return c
end

function Conn:wait()
  self.waiter = coroutine.running()
  coroutine.yield()
end

-- Returns status, body; nil when the server closed the connection.
function Conn:request(path)
  self.tcp:write("GET " .. path .. " HTTP/1.1\r\nHost: " .. host ..
                 "\r\nConnection: keep-alive\r\n\r\n")
  local hend
  while true do
    hend = self.buf:find("\r\n\r\n", 1, true)
    if hend then break end
    if self.eof then return nil end
    self:wait()
  end
  local head = self.buf:sub(1, hend - 1)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local len = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)"))
  assert(status and len, "unsupported response framing")
  while #self.buf < hend + 3 + len do
    if self.eof then return nil end
    self:wait()
  end
  local body = self.buf:sub(hend + 4, hend + 3 + len)
  self.buf = self.buf:sub(hend + 4 + len)
  if head:lower():find("\r\nconnection:%s*close") then self.eof = true end
  return status, body
end

function Conn:close()
  if not self.tcp:is_closing() then self.tcp:close() end
end

sched.run(function()
  local next_i, total = 1, 0
  local function worker()
    local c = connect()
    while next_i <= n do
      local i = next_i
      next_i = i + 1
      local status, body = c:request(path0 .. (i % 100) .. ".json")
      while status == nil do -- the server closed: reconnect and retry
        c:close()
        c = connect()
        status, body = c:request(path0 .. (i % 100) .. ".json")
      end
      if status ~= 200 then error("status " .. status) end
      total = total + math.tointeger(cjson.decode(body).n)
    end
    c:close()
  end
  local workers = {}
  for w = 1, CONCURRENCY do workers[w] = sched.spawn(worker) end
  sched.gather(workers)
  print("sum=" .. total)
end)
