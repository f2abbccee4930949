-- scripts/lib/httpbin_local.lua: the handlers of the local httpbin, called
-- with request and response objects shaped as issue 14's server contract
-- gives them (req.params, req.query, req.headers, req.path; res:status,
-- res:json, res:send), so that they are right before the server lands. Once
-- http.serve exists, tests/cli/test_scripts_web.sh serves them for real.
local async = require "async"
local cjson = require "cjson"
local check = require "check"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../../scripts/lib/?.lua;" .. package.path
local local_httpbin = require "httpbin_local"

local routes = {}
for _, r in ipairs(local_httpbin.routes) do routes[r[1] .. " " .. r[2]] = r[3] end

-- Calls the handler of `route` and returns what it answered.
local function call(route, req)
  req.headers = req.headers or { ["user-agent"] = "asyncrun-test", accept = "*/*" }
  req.query = req.query or {}
  req.params = req.params or {}
  local answer = { status = 200 }
  local res = {}
  function res:status(n) answer.status = n end
  function res:json(v) answer.body = cjson.decode(cjson.encode(v)) end
  function res:send(b) answer.raw = b end
  local t0 = async.now()
  assert(routes[route], route)(req, res, "http://127.0.0.1:4242")
  answer.took = async.now() - t0
  return answer
end

check.test("the lab's endpoints are all routed", function()
  for _, r in ipairs({ "GET /delay/:n", "GET /json", "GET /uuid", "GET /headers", "GET /get", "GET /status/:code" }) do
    check.truthy(routes[r], r)
  end
end)

check.test("/delay/:n waits n seconds and answers like httpbin", function()
  local a = call("GET /delay/:n", { path = "/delay/0.2", params = { n = "0.2" }, query = { x = "1" } })
  check.eq(a.status, 200)
  check.between(a.took, 0.2, 0.5, "waited")
  check.eq(a.body.url, "http://127.0.0.1:4242/delay/0.2")
  check.eq(a.body.args.x, "1")
  check.eq(a.body.headers["User-Agent"], "asyncrun-test", "header names as httpbin shows them")
  check.eq(a.body.headers.Accept, "*/*")
  local bad = call("GET /delay/:n", { path = "/delay/soon", params = { n = "soon" } })
  check.eq(bad.status, 400)
  local neg = call("GET /delay/:n", { path = "/delay/-3", params = { n = "-3" } })
  check.between(neg.took, 0, 0.1, "a negative delay does not wait")
end)

check.test("/uuid answers a version-4 UUID", function()
  local a = call("GET /uuid", { path = "/uuid" })
  check.matches(a.body.uuid, "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$")
  check.truthy(call("GET /uuid", { path = "/uuid" }).body.uuid ~= a.body.uuid, "a new one each time")
end)

check.test("/headers and /json", function()
  check.eq(call("GET /headers", { path = "/headers" }).body.headers["User-Agent"], "asyncrun-test")
  local j = call("GET /json", { path = "/json" })
  check.eq(j.status, 200)
  check.eq(j.body.report.steps[2].name, "compile")
end)

check.test("/status/:code answers that status", function()
  check.eq(call("GET /status/:code", { path = "/status/503", params = { code = "503" } }).status, 503)
  check.eq(call("GET /status/:code", { path = "/status/42", params = { code = "42" } }).status, 400)
  check.eq(call("GET /status/:code", { path = "/status/x", params = { code = "x" } }).status, 400)
end)

check.test("start() says what is missing while asyncrun has no server", function()
  local http = require "async.http"
  if type(http.serve) == "function" then
    local srv = assert(local_httpbin.start())
    check.matches(srv.url, "^http://127%.0%.0%.1:%d+")
    local r = http.get(srv.url:gsub("/+$", "") .. "/uuid")
    check.eq(r.status, 200)
    srv:close()
  else
    local srv, why = local_httpbin.start()
    check.eq(srv, nil)
    check.matches(why, "pass %-%-base%-url")
  end
end)

check.done()
