-- A small httpbin-like service on loopback, for web_requests.lua when no
-- --base-url is given: the endpoints the lab fetches, answered the way
-- httpbin answers them.
--
-- It is written against the server contract of issue 14 (`http.serve`,
-- `srv:route`, the req/res objects). Until an asyncrun with that server is
-- built, start() returns nil and a message saying so.
local async = require "async"
local http = require "async.http"

local format, upper, concat = string.format, string.upper, table.concat
local random, floor, tonumber = math.random, math.floor, tonumber

local M = {}

-- "user-agent" -> "User-Agent", as httpbin shows header names.
local function header_case(name)
  return (name:gsub("^%l", upper):gsub("%-%l", upper))
end

local function headers_of(req)
  local h = {}
  for k, v in pairs(req.headers or {}) do h[header_case(k)] = v end
  return h
end

-- A random (version 4) UUID, from math.random so that --seed repeats it.
local function uuid4()
  local b = {}
  for i = 1, 16 do b[i] = random(0, 255) end
  b[7] = 0x40 | (b[7] & 0x0f)
  b[9] = 0x80 | (b[9] & 0x3f)
  local hex = {}
  for i = 1, 16 do hex[i] = format("%02x", b[i]) end
  return format("%s-%s-%s-%s-%s", concat(hex, "", 1, 4), concat(hex, "", 5, 6),
    concat(hex, "", 7, 8), concat(hex, "", 9, 10), concat(hex, "", 11, 16))
end

-- The sample document of /json (our own, in the shape of httpbin's).
local SAMPLE = {
  report = {
    title = "Nightly build",
    author = "asyncrun lab",
    steps = {
      { name = "configure", seconds = 2, ok = true },
      { name = "compile", seconds = 41, ok = true },
      { name = "test", seconds = 17, ok = false, failures = { "test_timing" } },
    },
  },
}

-- The routes: { method, pattern, handler(req, res, base_url) }.
M.routes = {
  { "GET", "/delay/:n", function(req, res, base)
    -- httpbin waits at most 10 s.
    local n = tonumber(req.params.n)
    if n == nil then
      res:status(400)
      return res:json({ error = "the delay must be a number of seconds" })
    end
    n = n < 0 and 0 or n > 10 and 10 or n
    async.sleep(n)
    res:json({ args = req.query or {}, headers = headers_of(req), origin = "127.0.0.1",
      url = base .. req.path })
  end },
  { "GET", "/json", function(_, res) res:json(SAMPLE) end },
  { "GET", "/uuid", function(_, res) res:json({ uuid = uuid4() }) end },
  { "GET", "/headers", function(req, res) res:json({ headers = headers_of(req) }) end },
  { "GET", "/get", function(req, res, base)
    res:json({ args = req.query or {}, headers = headers_of(req), origin = "127.0.0.1",
      url = base .. req.path })
  end },
  { "GET", "/status/:code", function(req, res)
    local code = tonumber(req.params.code)
    code = code and floor(code) or 400
    if code < 100 or code > 599 then code = 400 end
    res:status(code)
    res:send("")
  end },
}

-- True when this asyncrun has the HTTP server.
function M.available() return type(http.serve) == "function" end

-- Starts the service on 127.0.0.1, on a free port. Returns the server
-- (srv.url is its address; srv:close() stops it), or nil and a message.
function M.start()
  if not M.available() then
    return nil, "this asyncrun has no HTTP server yet (http.serve), so it cannot serve a "
      .. "local httpbin: pass --base-url URL of an httpbin"
  end
  local srv = http.serve({ host = "127.0.0.1", port = 0 })
  local base = (srv.url:gsub("/+$", ""))
  for _, r in ipairs(M.routes) do
    local fn = r[3]
    srv:route(r[1], r[2], function(req, res) return fn(req, res, base) end)
  end
  return srv
end

return M
