-- http.serve: the script serves itself and fetches through async.http and
-- curl. Routes, params, query, headers, JSON, 204/404/405/413/431/500, and
-- a server that keeps serving after a handler fails.
local async = require "async"
local http = require "async.http"
local cjson = require "cjson"
local check = require "check"
local outside = require "outside"

-- A server with a few routes; the test closes it.
local function api(opts)
  opts = opts or {}
  opts.handler = opts.handler or function(req, res)
    if req.path == "/boom" then error("handler exploded") end
    if req.path == "/nothing" then return end
    if req.path == "/json-caught" then
      local ok, e = pcall(req.json, req)
      return res:status(422):send("caught " .. tostring(e.kind))
    end
    res:status(200):header("Content-Type", "text/plain"):send("fallback " .. req.path)
  end
  local srv = http.serve(opts)
  srv:route("GET", "/users/:id/posts/:post", function(req, res)
    res:json({ id = req.params.id, post = req.params.post, method = req.method })
  end)
  srv:route("POST", "/echo", function(req, res)
    local v = req:json()
    res:status(201):json({ got = v, ctype = req.headers["content-type"] })
  end)
  srv:route("GET", "/echo", function(req, res) res:send("get echo") end)
  srv:route("GET", "/query", function(req, res)
    res:json({ q = req.query, ua = req.headers["user-agent"], x = req.headers["x-two"] })
  end)
  srv:route("DELETE", "/only-delete", function(req, res) res:send("deleted") end)
  srv:route("GET", "/files/*", function(req, res) res:send(req.params["*"]) end)
  return srv
end

check.test("serve binds port 0 and returns at once; url and port", function()
  local srv = http.serve({ port = 0, handler = function(req, res) res:send("hi") end })
  check.truthy(srv.port > 0 and srv.port < 65536, "port")
  check.eq(srv.url, "http://127.0.0.1:" .. srv.port)
  local r = http.get(srv.url .. "/")
  check.eq(r.status, 200)
  check.eq(r.body, "hi")
  check.eq(r.headers["content-length"], "2")
  srv:close()
  check.raises("connect", http.get, srv.url .. "/", { timeout = 5 })
end)

check.test("binding a port in use raises kind server", function()
  local a = http.serve({ handler = function() end })
  local e = check.raises("server", http.serve, { port = a.port, handler = function() end })
  check.matches(e.message, "127%.0%.0%.1:" .. a.port)
  a:close()
end)

check.test("bad arguments raise at the call", function()
  check.matches(select(2, pcall(http.serve, 42)), "bad argument #1 to 'serve'")
  check.matches(select(2, pcall(http.serve, { prot = 1 })), "unknown option 'prot'")
  check.matches(select(2, pcall(http.serve, { host = "localhost" })), "numeric")
  check.matches(select(2, pcall(http.serve, { grace = -1 })), "option 'grace': seconds >= 0")
  check.matches(select(2, pcall(http.serve, { timeout = 0 })), "option 'timeout': seconds > 0")
  check.matches(select(2, pcall(http.serve, { port = 65536 })), "option 'port': a whole number 0%-65535")
  check.matches(select(2, pcall(http.serve, { timeout = 1e6 })), "option 'timeout': .*at most a day")
  check.matches(select(2, pcall(http.serve, { max_connections = 0.5 })), "option 'max_connections'")
  local srv = http.serve({})
  check.matches(select(2, pcall(srv.route, srv, "GET", "nope", print)), "bad argument #2 to 'route'")
  srv:close()
end)

check.test("routes with path parameters, then the handler", function()
  local srv = api()
  local r = http.get(srv.url .. "/users/42/posts/hello%20world")
  check.eq(r.status, 200)
  check.eq(r.headers["content-type"], "application/json")
  local v = r:json()
  check.eq(v.id, "42")
  check.eq(v.post, "hello world")
  check.eq(v.method, "GET")
  r = http.get(srv.url .. "/files/a/b/c.txt")
  check.eq(r.body, "a/b/c.txt")
  r = http.get(srv.url .. "/elsewhere")
  check.eq(r.body, "fallback /elsewhere")
  check.eq(r.headers["content-type"], "text/plain")
  srv:close()
end)

check.test("query (decoded) and headers (lower-case names)", function()
  local srv = api()
  local r = http.get(srv.url .. "/query?a=1&b=two+words&c=%C3%A9%26&flag",
                     { headers = { ["User-Agent"] = "tester/1", ["X-Two"] = "v" } })
  local v = r:json()
  check.eq(v.q.a, "1")
  check.eq(v.q.b, "two words")
  check.eq(v.q.c, "\xC3\xA9&")
  check.eq(v.q.flag, "")
  check.eq(v.ua, "tester/1")
  check.eq(v.x, "v")
  srv:close()
end)

check.test("JSON echo, and bad JSON answered 400 unless caught", function()
  local srv = api()
  local doc = { name = "ada", tags = { "x", "y" }, n = 3 }
  local r = http.post(srv.url .. "/echo", { json = doc })
  check.eq(r.status, 201)
  local v = r:json()
  check.eq(v.got.name, "ada")
  check.eq(v.got.tags[2], "y")
  check.eq(v.got.n, 3)
  check.eq(v.ctype, "application/json")
  -- integers stay exact through req:json() and res:json() (async.json)
  r = http.post(srv.url .. "/echo", { body = '{"big":9007199254740993}' })
  check.matches(r.body, '"big":9007199254740993')
  r = http.post(srv.url .. "/echo", { body = "{not json" })
  check.eq(r.status, 400)
  check.matches(r.body, "^bad request: invalid JSON")
  r = http.post(srv.url .. "/json-caught", { body = "[1," })
  check.eq(r.status, 422)
  check.eq(r.body, "caught json")
  srv:close()
end)

check.test("404 without handler; 405 with Allow", function()
  local srv = api({ handler = nil })
  srv._handler = nil
  local r = http.get(srv.url .. "/missing")
  check.eq(r.status, 404)
  r = http.request({ method = "PUT", url = srv.url .. "/echo", body = "x" })
  check.eq(r.status, 405)
  check.eq(r.headers["allow"], "POST, GET")
  r = http.get(srv.url .. "/only-delete")
  check.eq(r.status, 405)
  check.eq(r.headers["allow"], "DELETE")
  r = http.request({ method = "DELETE", url = srv.url .. "/only-delete" })
  check.eq(r.body, "deleted")
  srv:close()
end)

check.test("a handler that answers nothing gets 204", function()
  local srv = api()
  local r = http.get(srv.url .. "/nothing")
  check.eq(r.status, 204)
  check.eq(r.body, "")
  check.eq(r.headers["content-length"], nil)
  srv:close()
end)

check.test("a raising handler: 500 without traceback; the next request succeeds", function()
  local srv = api()
  for _ = 1, 3 do
    local r = http.get(srv.url .. "/boom")
    check.eq(r.status, 500)
    check.eq(r.body, "internal server error\n")
    check.truthy(not r.body:find("exploded"), "no error text sent")
    r = http.get(srv.url .. "/users/1/posts/2")
    check.eq(r.status, 200)
  end
  srv:close()
end)

check.test("curl: 413 for a large body, 431 for large headers, keep-alive", function()
  local srv = api({ max_body = 1000, max_header = 1024 })
  local out = outside.run(string.format(
    "head -c 5000 /dev/zero | curl -s -o /dev/null -w '%%{http_code}' --data-binary @- %s/echo", srv.url))
  check.eq(out, "413")
  out = outside.curl(string.format("-o /dev/null -w '%%{http_code}' -H 'X-Big: %s' %s/echo",
                                   string.rep("a", 2000), srv.url))
  check.eq(out, "431")
  -- a body just under the limit still gets through
  out = outside.curl(string.format("-w ' %%{http_code}' -H 'Content-Type: application/json' --data-binary '[%s1]' %s/echo",
                                   string.rep("1,", 400), srv.url))
  check.matches(out, " 201$")
  -- two requests on one connection
  local _, code = outside.run(string.format(
    "curl -sv %s/echo %s/echo 2>&1 >/dev/null | grep -q 'Re-using existing connection'", srv.url, srv.url))
  check.eq(code, 0, "connection reused")
  srv:close()
end)

check.test("curl sees the status, headers and body a handler set", function()
  local srv = http.serve({ handler = function(req, res)
    res:status(203):header("X-Multi", "a"):header("X-Multi", "b"):send(req.method .. " " .. req:body())
  end })
  local out = outside.curl("-i -X PATCH --data-binary 'payload' " .. srv.url .. "/p")
  check.matches(out, "^HTTP/1%.1 203 ")
  check.matches(out, "\r\n[Xx]%-[Mm]ulti: a\r\n[Xx]%-[Mm]ulti: b\r\n")
  check.matches(out, "\r\n\r\nPATCH payload$")
  srv:close()
end)

check.test("no Server header unless the handler sets one", function()
  local srv = http.serve({ handler = function(req, res)
    if req.path == "/named" then res:header("Server", "mock-api/1") end
    res:send("ok")
  end })
  local plain = outside.curl("-i " .. srv.url .. "/")
  check.matches(plain, "^HTTP/1%.1 200 ")
  check.eq(plain:lower():find("\r\nserver:", 1, true), nil)
  local named = outside.curl("-i " .. srv.url .. "/named")
  check.matches(named:lower(), "\r\nserver: mock%-api/1\r\n")
  srv:close()
end)

check.test("tls: HTTPS with HTTP/2 through ALPN; a bad certificate raises kind tls", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir .. " && openssl req -x509 -newkey rsa:2048 -nodes -days 2" ..
                    " -subj /CN=127.0.0.1 -keyout " .. dir .. "/key.pem -out " .. dir ..
                    "/cert.pem >/dev/null 2>&1"))
  local srv = http.serve({ tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" },
                           timeout = 0.5,
                           handler = function(req, res)
                             if req.path == "/slow" then async.sleep(1.2) end
                             res:send("secure " .. req.path)
                           end })
  check.eq(srv.url, "https://127.0.0.1:" .. srv.port)
  local out = outside.curl("-k --http2 -w ' %{http_version}' " .. srv.url .. "/x")
  check.eq(out, "secure /x 2")
  local r = http.get(srv.url .. "/y", { verify_tls = false })
  check.eq(r.body, "secure /y")
  -- a handler slower than the request timeout is not cut short
  out = outside.curl("-k --http2 " .. srv.url .. "/slow")
  check.eq(out, "secure /slow")
  r = http.get(srv.url .. "/slow", { verify_tls = false })
  check.eq(r.body, "secure /slow")
  srv:close()
  local e = check.raises("tls", http.serve, { tls = { cert = dir .. "/nope.pem", key = dir .. "/key.pem" } })
  check.matches(e.message, "nope%.pem")
  os.execute("rm -rf " .. dir)
end)

check.test("handler tasks are counted while they run; a request kept past its task is let go", function()
  local gate = async.event()
  local kept = {}
  local srv = http.serve({ port = 0, handler = function(req, res)
    kept[#kept + 1] = req
    gate:wait()
    res:send("ok " .. req.path)
  end })
  local ts = {}
  for i = 1, 3 do ts[i] = async.spawn(http.get, srv.url .. "/r" .. i) end
  local deadline = async.now() + 5
  while srv:stats().active < 3 and async.now() < deadline do async.sleep(0.01) end
  check.eq(srv:stats().active, 3, "running handlers")
  gate:set()
  local rs = async.gather(ts)
  for i = 1, 3 do
    check.eq(rs[i].status, 200, "status " .. i)
    check.eq(rs[i].body, "ok /r" .. i, "body " .. i)
  end
  check.eq(srv:stats().active, 0, "handlers after their answers")
  check.eq(#kept, 3, "requests kept")
  -- The request's C side ended with its task: using it raises.
  check.matches(select(2, pcall(kept[1].body, kept[1])), "request is released")
  -- A handler task cancelled by close (grace over) is counted out too.
  local started = async.event()
  srv:route("GET", "/stuck", function(req, res) started:set(); async.sleep(30) end)
  local t = async.spawn(http.get, srv.url .. "/stuck")
  started:wait()
  check.eq(srv:stats().active, 1, "the stuck handler")
  srv:close({ grace = 0.05 })
  check.eq(srv:stats().active, 0, "after close")
  check.eq(t:await().status, 503, "the stuck request's answer")
end)

check.test("a handler may close its own server: close waits for the others, not itself", function()
  local srv
  local closed_in
  srv = http.serve({ port = 0, handler = function(req, res)
    if req.path == "/slow" then
      async.sleep(0.3)
      return res:send("slow done")
    end
    res:send("bye")
    local t0 = async.now()
    srv:close({ grace = 5 })
    closed_in = async.now() - t0
  end })
  local t0 = async.now()
  local slow = async.spawn(http.get, srv.url .. "/slow")
  async.sleep(0.05)
  local r = http.get(srv.url .. "/shutdown")
  check.eq(r.status, 200, "the closing request")
  check.eq(r.body, "bye")
  srv:wait()
  local took = async.now() - t0
  check.eq(slow:await().status, 200, "the request in flight finished")
  check.truthy(closed_in ~= nil, "close returned inside the handler")
  check.truthy(closed_in >= 0.15 and closed_in < 1.5, "close waited for the slow handler only: " .. tostring(closed_in))
  check.truthy(took < 2, "srv:wait() returned after " .. took .. " s")
  check.eq(srv:stats().active, 0, "no handler left")
end)

check.test("a close that is cancelled still releases srv:wait() and the next close", function()
  local started = async.event()
  local srv = http.serve({ port = 0, handler = function(req, res)
    started:set()
    async.sleep(30)
  end })
  local client = async.spawn(http.get, srv.url .. "/stuck")
  started:wait()
  local waiter = async.spawn(function() srv:wait() return "released" end)
  local closer = async.spawn(function() srv:close({ grace = 20 }) end)
  async.sleep(0.1)
  closer:cancel()
  check.raises("cancelled", closer.await, closer)
  check.eq(async.wait_for(function() return waiter:await() end, 2), "released", "srv:wait()")
  check.eq(async.wait_for(function() return client:await().status end, 2), 503, "the stuck request")
  local t0 = async.now()
  srv:close()
  check.truthy(async.now() - t0 < 0.5, "a later close returns at once")
end)

check.test("several closers: handlers closing at once, and a handler closing during the script's close", function()
  -- Two handlers close the server at the same time.
  local srv
  local returned = 0
  srv = http.serve({ port = 0, handler = function(req, res)
    res:send("bye")
    srv:close({ grace = 5 })
    returned = returned + 1
  end })
  local t0 = async.now()
  local a = async.spawn(http.get, srv.url .. "/one")
  local b = async.spawn(http.get, srv.url .. "/two")
  check.eq(a:await().status, 200)
  check.eq(b:await().status, 200)
  srv:wait()
  local deadline = async.now() + 2
  while returned < 2 and async.now() < deadline do async.sleep(0.01) end
  check.eq(returned, 2, "both closes returned in their handlers")
  check.truthy(async.now() - t0 < 2, "not after the grace period: " .. (async.now() - t0))
  -- The script closes while a handler runs; the handler then closes too.
  local started = async.event()
  local done = false
  srv = http.serve({ port = 0, handler = function(req, res)
    started:set()
    async.sleep(0.2)
    res:send("bye")
    srv:close()
    done = true
  end })
  local c = async.spawn(http.get, srv.url .. "/shutdown")
  started:wait()
  t0 = async.now()
  srv:close({ grace = 5 })
  local took = async.now() - t0
  check.truthy(took >= 0.1 and took < 2, "the script's close took " .. took .. " s")
  check.eq(c:await().status, 200, "the handler's answer")
  deadline = async.now() + 2
  while not done and async.now() < deadline do async.sleep(0.01) end
  check.truthy(done, "the handler's close returned")
  check.eq(srv:stats().active, 0)
end)

check.test("header names and values that could split the response are refused", function()
  local errs = {}
  local srv = http.serve({ port = 0, handler = function(req, res)
    local ok, e = pcall(res.header, res, "x-echo", req.query.v)
    errs[#errs + 1] = not ok and e or "accepted"
    ok, e = pcall(res.header, res, "bad name", "v")
    errs[#errs + 1] = not ok and e or "accepted"
    res:header("x-fine", "a b\tc"):send("ok")
  end })
  local r = http.get(srv.url .. "/h?v=a%0d%0aset-cookie:%20session=evil")
  check.eq(r.status, 200)
  check.eq(r.headers["set-cookie"], nil, "no injected header")
  check.eq(r.headers["x-echo"], nil, "no echoed header")
  check.eq(r.headers["x-fine"], "a b\tc", "a value with a tab")
  check.matches(errs[1], "header value with CR, LF or NUL", "value error")
  check.matches(errs[2], "is not a header name", "name error")
  srv:close()
end)

check.done()
