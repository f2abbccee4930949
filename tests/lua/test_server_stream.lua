-- http.serve under load and over time: 200 concurrent slow handlers,
-- Server-Sent Events, a 100 MB streamed body with back-pressure, and
-- graceful close with requests in flight.
local async = require "async"
local http = require "async.http"
local net = require "async.net"
local check = require "check"
local outside = require "outside"
local child = require "child"

check.test("200 concurrent /delay/1 handlers finish in about 1 s", function()
  local srv = http.serve({})
  local running, peak = 0, 0
  srv:route("GET", "/delay/:n", function(req, res)
    running = running + 1
    if running > peak then peak = running end
    async.sleep(tonumber(req.params.n))
    running = running - 1
    res:send("slept " .. req.params.n)
  end)
  local s = http.session({ max_connections = 200 })
  local fns = {}
  for i = 1, 200 do
    fns[i] = function() return s:get(srv.url .. "/delay/1").body end
  end
  local t0 = async.now()
  local bodies = async.gather(fns)
  local elapsed = async.now() - t0
  for i = 1, 200 do check.eq(bodies[i], "slept 1", "body " .. i) end
  check.eq(peak, 200, "handlers running at once")
  check.between(elapsed, 1.0, 3.0, "elapsed")
  srv:close()
end)

check.test("SSE: curl receives the events in order", function()
  local srv = http.serve({})
  srv:route("GET", "/events", function(req, res)
    local sse = res:sse()
    for i = 1, 5 do
      sse:send("tick", "n=" .. i)
      async.sleep(0.02)
    end
    sse:send("multi\nline")
    sse:close()
  end)
  local out = outside.curl("-N -i " .. srv.url .. "/events")
  check.matches(out, "^HTTP/1%.1 200")
  check.matches(out, "\r\n[Cc]ontent%-[Tt]ype: text/event%-stream\r\n")
  check.matches(out, "\r\n[Cc]ache%-[Cc]ontrol: no%-cache\r\n")
  local body = out:match("\r\n\r\n(.*)$")
  local want = {}
  for i = 1, 5 do want[#want + 1] = "event: tick\ndata: n=" .. i .. "\n\n" end
  want[#want + 1] = "data: multi\ndata: line\n\n"
  check.eq(body, table.concat(want))
  srv:close()
end)

check.test("streaming 100 MB to curl never holds the body in memory", function()
  local srv = http.serve({})
  local chunk = string.rep("0123456789abcdef", 4096) -- 64 KiB
  local n = 100 * 1024 * 1024 // #chunk
  local peak = 0
  srv:route("GET", "/big", function(req, res)
    res:header("content-type", "application/octet-stream")
    for i = 1, n do
      res:write(chunk)
      if i % 64 == 0 then
        local m = async.stats().memory
        if m > peak then peak = m end
      end
    end
    res:finish()
  end)
  collectgarbage()
  local base = async.stats().memory
  local out = outside.curl("-o /dev/null -w '%{size_download} %{http_code}' " .. srv.url .. "/big", 120)
  check.eq(out, string.format("%d 200", n * #chunk))
  check.truthy(peak - base < 16 * 1024 * 1024,
               string.format("Lua memory grew by %d bytes (< 16 MiB)", peak - base))
  srv:close()
end)

check.test("a slow reader suspends the writer (back-pressure)", function()
  local srv = http.serve({})
  local chunk = string.rep("x", 65536)
  local written = 0
  srv:route("GET", "/slow", function(req, res)
    for _ = 1, 400 do -- 25 MiB if nobody held it back
      res:write(chunk)
      written = written + 1
    end
    res:finish()
  end)
  local client = async.spawn(outside.raw, "slowread", srv.port, "/slow", 1.5)
  async.sleep(1.0) -- the client has read 64 KiB and stalls
  check.truthy(written < 200, "writer held back while the client stalls: " .. written .. " chunks")
  local r = client:await()
  check.truthy(r.bytes > 400 * 65536, "all bytes arrived")
  check.eq(written, 400)
  srv:close()
end)

check.test("a handler failing mid-stream aborts the response; the server keeps serving", function()
  local srv = http.serve({})
  srv:route("GET", "/cut", function(req, res)
    res:write("first part\n")
    async.sleep(0.05)
    error("broken mid-stream")
  end)
  srv:route("GET", "/ok", function(req, res) res:send("fine") end)
  local e = check.raises("protocol", http.get, srv.url .. "/cut")
  check.matches(e.message, "/cut")
  local out, code = outside.curl(srv.url .. "/cut")
  check.eq(out, "first part\n")
  check.truthy(code == 18 or code == 56, "curl saw a cut body (exit " .. code .. ")")
  check.eq(http.get(srv.url .. "/ok").body, "fine")
  srv:close()
end)

check.test("close{grace}: a request in flight finishes; new connections are refused", function()
  local srv = http.serve({})
  srv:route("GET", "/delay/:n", function(req, res)
    async.sleep(tonumber(req.params.n))
    res:send("done " .. req.params.n)
  end)
  local inflight = async.spawn(http.get, srv.url .. "/delay/0.3")
  async.sleep(0.1)
  local t0 = async.now()
  srv:close({ grace = 5 })
  check.between(async.now() - t0, 0.1, 2, "close waited for the handler")
  local r = inflight:await()
  check.eq(r.status, 200)
  check.eq(r.body, "done 0.3")
  check.raises("connect", http.get, srv.url .. "/delay/0", { timeout = 5 })
  check.eq(srv:stats().active, 0)
end)

check.test("close{grace}: past the grace the handler is cancelled", function()
  local srv = http.serve({})
  local cancelled = false
  srv:route("GET", "/forever", function(req, res)
    local ok, e = pcall(async.sleep, 60)
    if not ok and e.kind == "cancelled" then cancelled = true end
    error(e, 0)
  end)
  local inflight = async.spawn(http.get, srv.url .. "/forever", { timeout = 10 })
  async.sleep(0.1)
  local t0 = async.now()
  srv:close({ grace = 0.3 })
  check.between(async.now() - t0, 0.3, 2, "close took the grace, then cancelled")
  check.truthy(cancelled, "handler saw cancellation")
  local r = inflight:await()
  check.eq(r.status, 503)
end)

check.test("srv:wait returns when a handler closes the server", function()
  local srv
  srv = http.serve({ handler = function(req, res)
    res:send("bye")
    async.spawn(function() srv:close() end)
  end })
  local t = async.spawn(function() return http.get(srv.url .. "/quit").body end)
  srv:wait()
  check.eq(t:await(), "bye")
end)

check.test("a client that goes away mid-stream is 'closed' to the handler, not SIGPIPE", function()
  -- In a child that starts with SIGPIPE's default action (which kills):
  -- nothing else in it (no stream, no process) has set SIGPIPE aside.
  local r = child.run([[
local async = require "async"
local http = require "async.http"
local got
local srv = http.serve({ port = 0, handler = function(req, res)
  for i = 1, 2000 do
    local ok, e = pcall(res.write, res, string.rep("x", 65536))
    if not ok then got = e; return end
    async.sleep(0.001)
  end
  res:finish()
end })
pcall(http.get, srv.url .. "/", { timeout = 0.2 })
local deadline = async.now() + 5
while got == nil and async.now() < deadline do async.sleep(0.02) end
print("kind=" .. tostring(type(got) == "table" and got.kind or got))
print("active=" .. srv:stats().active)
srv:close()
print("alive")
]], { default_sigpipe = true, timeout = 20 })
  check.eq(r.status, 0, child.describe(r))
  check.matches(r.out, "kind=closed", "the handler's write")
  check.matches(r.out, "active=0", "no handler left")
  check.matches(r.out, "alive", "the server went on")
end)

check.test("tasks a handler hands res to may write; they are let go when it ends", function()
  local writer
  local srv = http.serve({ port = 0, handler = function(req, res)
    if req.path == "/await" then
      async.spawn(function() res:write("a") res:write("b") res:finish() end):await()
    else
      writer = async.spawn(function()
        for _ = 1, 100 do res:write(string.rep("x", 65536)) end
      end)
      async.sleep(0.01)
      error("the handler gives up") -- while the writer waits for its chunk
    end
  end })
  local r = http.get(srv.url .. "/await")
  check.eq(r.status, 200, "status")
  check.eq(r.body, "ab", "body written by another task")
  pcall(http.get, srv.url .. "/leave", { timeout = 5 }) -- a cut stream
  -- The handler ended while the writer waited for its chunk to go out:
  -- the writer is woken and fails, it does not wait for ever.
  local ok, e = pcall(async.wait_for, function() return writer:await() end, 5)
  check.eq(ok, false, "the writer's writes fail")
  check.matches(tostring(type(e) == "table" and e.message or e), "request is released", "the writer's error")
  check.truthy(writer:done(), "the writer ended")
  check.eq(srv:stats().active, 0, "no handler left")
  srv:close()
end)

check.test("a writer cancelled while it waits for its chunk to go out", function()
  local blocked = async.event()
  local writer, handler_err
  local srv = http.serve({ port = 0, handler = function(req, res)
    if req.path == "/ok" then return res:send("ok") end
    writer = async.spawn(function()
      local big = string.rep("x", 1 << 20)
      for i = 1, 256 do
        if i == 2 then blocked:set() end
        res:write(big)
      end
    end)
    local ok, e = pcall(writer.await, writer)
    handler_err = e
    if not ok then error(e, 0) end
  end })
  -- A client that asks and never reads: the writer soon waits for proceed.
  local c <close> = net.connect("127.0.0.1", srv.port)
  c:write("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
  async.wait_for(function() blocked:wait() end, 5)
  async.sleep(0.2)
  check.eq(writer:done(), false, "the writer waits")
  writer:cancel()
  check.raises("cancelled", writer.await, writer)
  local deadline = async.now() + 5
  while srv:stats().active > 0 and async.now() < deadline do async.sleep(0.01) end
  check.eq(srv:stats().active, 0, "the handler ended")
  check.eq(type(handler_err) == "table" and handler_err.kind, "cancelled", "the handler saw it")
  check.eq(http.get(srv.url .. "/ok").body, "ok", "the server keeps serving")
  srv:close({ grace = 0 })
end)

check.done()
