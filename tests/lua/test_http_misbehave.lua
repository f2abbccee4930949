-- async.http against servers that close and reset connections, send no
-- HTTP at all, or die under a request (tests/helpers/fault_server.py):
-- requests the curl tool completes complete here too, and every failure
-- is an error of the right kind (never "cancelled", never a bare string).
-- AR_HTTP_REPS=20 runs the load cases 20 times (the default is 2).
local async = require "async"
local http = require "async.http"
local check = require "check"
local servers = require "servers"

local fs = servers.faults(300)
local function url(path) return fs:url(path) end
local REPS = tonumber(os.getenv("AR_HTTP_REPS") or "") or 2

-- 20 tasks x 50 GETs on one session; returns the failures.
local function load(path)
  local s = http.session()
  local fails, first = 0, nil
  local tasks = {}
  for t = 1, 20 do
    tasks[t] = async.spawn(function()
      for _ = 1, 50 do
        local ok, err = pcall(function() return s:get(url(path)):json().ok end)
        if not ok or err ~= true then
          fails = fails + 1
          first = first or err
        end
      end
    end)
  end
  async.gather(tasks)
  return fails, first
end

local function invariant()
  local st = http.stats()
  check.eq(st.stale, 0, "owned polls whose descriptor is not their socket")
  check.eq(st.multi_errors, 0, "curl_multi_socket_action failures")
  return st
end

check.test("closed without Connection: close, 20 tasks x 50 GETs: no failure", function()
  for rep = 1, REPS do
    local fails, first = load("/close")
    check.eq(fails, 0, "failures in run " .. rep .. " (first: " .. tostring(first) .. ")")
  end
  invariant()
end)

check.test("reset right after the response, 20 tasks x 50 GETs: no failure", function()
  for rep = 1, REPS do
    local fails, first = load("/reset")
    check.eq(fails, 0, "failures in run " .. rep .. " (first: " .. tostring(first) .. ")")
  end
  invariant()
end)

check.test("20 sequential GETs on closing and resetting servers, 30 runs", function()
  local bad = 0
  for _ = 1, 30 * REPS // 2 do
    local s = http.session()
    for i = 1, 20 do
      local ok = pcall(s.get, s, url(i % 2 == 0 and "/close" or "/reset"))
      if not ok then bad = bad + 1 end
    end
  end
  check.eq(bad, 0, "failed requests")
  invariant()
end)

check.test("reset before any answer: kind protocol, URL in the error", function()
  local e = check.raises("protocol", http.get, url("/resetfirst"))
  check.matches(e.message, "reset", "curl's words")
  check.eq(e.url, url("/resetfirst"))
  check.truthy(e.curl_code == 56 or e.curl_code == 55, "curl code " .. tostring(e.curl_code))
end)

check.test("a POST is not sent twice: a reset before the answer fails it", function()
  local e = check.raises("protocol", http.post, url("/resetfirst"), { body = "x" })
  check.eq(e.url, url("/resetfirst"))
end)

check.test("a garbage status line and HTTP/0.9: kind protocol", function()
  for _, p in ipairs({ "/garbage", "/http09" }) do
    local e = check.raises("protocol", http.get, url(p))
    check.matches(e.message, "HTTP/0%.9", "curl's words")
    check.eq(e.url, url(p))
  end
end)

check.test("a header line over 100 KB: kind too_large with the URL", function()
  local e = check.raises("too_large", http.get, url("/hugeheader"))
  check.matches(e.message, "header", "says it is a header")
  check.matches(e.message, "/hugeheader", "names the URL")
  check.eq(e.url, url("/hugeheader"))
  -- and the client goes on
  check.eq(http.get(url("/json")):json().ok, true)
end)

check.test("a server killed under 10 requests: transport kinds, never cancelled", function()
  local victim = servers.faults(60)
  local s = http.session()
  -- a kept-alive connection or two first
  check.eq(s:get(victim:url("/json")).status, 200)
  local tasks = {}
  for i = 1, 10 do
    tasks[i] = async.spawn(function()
      local ok, err = pcall(s.get, s, victim:url("/slow"))
      return ok and "ok" or err.kind
    end)
  end
  async.sleep(0.3)
  victim:stop()
  local kinds = async.gather(tasks)
  for i = 1, 10 do
    check.truthy(kinds[i] == "protocol" or kinds[i] == "connect",
                 "kind of request " .. i .. ": " .. tostring(kinds[i]))
  end
  -- the other server, and the same session, still work
  check.eq(s:get(url("/json")):json().ok, true)
  check.raises("connect", s.get, s, victim:url("/json"))
  invariant()
end)

check.test("not JSON: the error names the status and the content type", function()
  local r = http.get(url("/html404"))
  check.eq(r.status, 404)
  local e = check.raises("json", r.json, r)
  check.matches(e.message, "404", "status")
  check.matches(e.message, "text/html", "content type")
  check.eq(e.status, 404)
  check.eq(e.url, url("/html404"))
end)

check.test("no globals needed: query= after table = nil", function()
  local saved = table
  table = nil -- luacheck: ignore
  local ok, r = pcall(http.get, url("/json"), { query = { b = "2", a = { "x", "y" } } })
  table = saved -- luacheck: ignore
  check.truthy(ok, "request without the global table: " .. tostring(r))
  check.eq(r.status, 200)
end)

check.test("sockets: every owned poll is its socket, and all close", function()
  local st = invariant()
  check.eq(st.sockets, 0, "sockets watched")
  check.truthy(st.owned >= 0, "owned count")
end)

fs:stop()
check.done()
