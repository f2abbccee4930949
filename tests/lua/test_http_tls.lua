-- HTTPS and HTTP/2 against a private nginx with a self-signed certificate.
local async = require "async"
local http = require "async.http"
local check = require "check"
local servers = require "servers"

local ng = servers.nginx_tls(120)
local insecure = http.session({ verify_tls = false })

check.test("HTTPS with verify_tls = false speaks HTTP/2", function()
  local r = insecure:get(ng:url("/small.json"))
  check.eq(r.status, 200)
  check.eq(r.http_version, "2")
  check.eq(r:json().n, 42)
  check.eq(r.headers["content-type"], "application/json", "lower-case names over h2 too")
end)

check.test("an unverifiable certificate raises kind tls", function()
  local e = check.raises("tls", http.get, ng:url("/small.json"))
  check.matches(e.message, "127%.0%.0%.1")
  check.matches(e.message, "[Cc]ertificate")
  check.eq(http.get(ng:url("/small.json"), { verify_tls = false }).status, 200, "per-request option")
end)

check.test("concurrent requests multiplex over HTTP/2", function()
  local tasks = {}
  for i = 1, 30 do
    tasks[i] = async.spawn(function() return insecure:get(ng:url("/big.bin")) end)
  end
  async.sleep(0.01)
  local sockets = http.stats().sockets
  local results = async.gather(tasks)
  for i = 1, #tasks do
    check.eq(results[i].status, 200); check.eq(#results[i].body, 1 << 20)
    check.eq(results[i].http_version, "2")
  end
  check.truthy(sockets <= 2, "one connection carries them (" .. sockets .. " sockets)")
end)

check.test("cancelling an HTTP/2 stream leaves the connection usable", function()
  local t = async.spawn(function() return insecure:get(ng:url("/big.bin"), { max_body = 2 << 20 }) end)
  async.sleep(0)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(insecure:get(ng:url("/small.json")).status, 200)
  check.eq(http.stats().active, 0)
end)

ng:stop()
check.done()
