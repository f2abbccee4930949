-- http.serve against raw sockets (tests/helpers/raw_client.py): malformed
-- requests, pipelining, a client that stalls mid-request, and 1,000
-- connections dropped mid-request, after which nothing is left behind.
local async = require "async"
local http = require "async.http"
local check = require "check"
local outside = require "outside"

local function echo_server(opts)
  opts = opts or {}
  opts.handler = function(req, res)
    if req.path == "/slow" then async.sleep(1.5) end
    res:send("echo " .. req.path)
  end
  return http.serve(opts)
end

check.test("malformed request lines and garbage get 400; the server keeps serving", function()
  local srv = echo_server()
  local r = outside.raw("malformed", srv.port)
  check.eq(r.statuses[1], "HTTP/1.1 400 Bad Request", "bad request line")
  check.eq(r.statuses[2], "HTTP/1.1 400 Bad Request", "header without colon")
  check.eq(r.statuses[3], "HTTP/1.1 400 Bad Request", "garbage bytes")
  check.eq(http.get(srv.url .. "/still").body, "echo /still")
  srv:close()
end)

check.test("pipelined requests are answered in order on one connection", function()
  local srv = echo_server()
  local r = outside.raw("pipeline", srv.port)
  check.eq(#r.responses, 3)
  for i = 1, 3 do
    check.eq(r.responses[i][1], "HTTP/1.1 200 OK")
    check.eq(r.responses[i][2], "echo /echo/" .. i)
  end
  srv:close()
end)

check.test("a client that sends half a request is timed out; others are served meanwhile", function()
  local srv = echo_server({ timeout = 1 })
  local staller = async.spawn(outside.raw, "half", srv.port, 10)
  async.sleep(0.2)
  for i = 1, 5 do
    check.eq(http.get(srv.url .. "/other/" .. i).body, "echo /other/" .. i)
  end
  -- a handler slower than the timeout is not cut short
  check.eq(http.get(srv.url .. "/slow").body, "echo /slow")
  local r = staller:await()
  check.between(r.closed_after, 0.9, 4, "closed after the timeout")
  check.eq(r.status, "HTTP/1.1 408 Request Timeout")
  srv:close()
end)

check.test("1,000 connections dropped mid-request: connections and memory come back", function()
  local srv = echo_server()
  check.eq(http.get(srv.url .. "/warm").body, "echo /warm")
  collectgarbage()
  collectgarbage()
  local mem0 = async.stats().memory
  local r = outside.raw("drop", srv.port, 1000)
  check.eq(r.dropped, 1000)
  local deadline = async.now() + 10
  while srv:stats().connections > 1 and async.now() < deadline do async.sleep(0.05) end
  -- the keep-alive connection of async.http's warm-up may still be open
  check.truthy(srv:stats().connections <= 1, "connections closed: " .. srv:stats().connections)
  check.eq(srv:stats().requests, 0, "request records")
  check.eq(srv:stats().active, 0, "handlers")
  collectgarbage()
  collectgarbage()
  local grown = async.stats().memory - mem0
  check.truthy(grown < 64 * 1024, "Lua memory back (grew " .. grown .. " bytes)")
  check.eq(http.get(srv.url .. "/after").body, "echo /after")
  srv:close()
end)

check.test("max_connections: a connection over the limit is closed at once", function()
  local srv = http.serve({ max_connections = 1 })
  srv:route("GET", "/hold", function(req, res) async.sleep(0.5) res:send("held") end)
  srv:route("GET", "/x", function(req, res) res:send("x") end)
  local holder = async.spawn(http.get, srv.url .. "/hold")
  async.sleep(0.1)
  local out, code = outside.curl("-o /dev/null -w '%{http_code}' " .. srv.url .. "/x")
  check.eq(out, "000", "no answer over the limit")
  check.truthy(code == 52 or code == 56, "curl: empty reply or reset (" .. code .. ")")
  check.eq(holder:await().body, "held")
  srv:close()
end)

check.done()
