-- async.http against servers that misbehave (tests/helpers/fault_server.py),
-- unknown hosts and forbidden schemes: every failure is an error object of
-- the right kind, never a crash or a hang.
local async = require "async"
local http = require "async.http"
local check = require "check"
local servers = require "servers"

local fs = servers.faults(120)
local function url(path) return fs:url(path) end

local function server_stats()
  return http.get(url("/stats")):json()
end

check.test("connection refused: kind connect", function()
  local u = string.format("http://127.0.0.1:%d/", fs.refused_port)
  local e = check.raises("connect", http.get, u)
  check.matches(e.message, "127%.0%.0%.1:" .. fs.refused_port, "URL in the message")
  check.matches(e.message, "[Cc]onnect", "curl's words")
  check.eq(e.url, u)
end)

check.test("a server that never answers: kind timeout", function()
  local t0 = async.now()
  check.raises("timeout", http.get, url("/hang"), { timeout = 0.5 })
  check.between(async.now() - t0, 0.45, 1.5, "elapsed")
end)

check.test("a server that closes mid-body: kind protocol", function()
  local e = check.raises("protocol", http.get, url("/midbody"))
  check.matches(e.message, "/midbody")
  -- and the next request on a fresh connection works
  check.eq(http.get(url("/json")):json().ok, true)
end)

check.test("a body that is not JSON: kind json naming URL and position", function()
  local r = http.get(url("/badjson"))
  check.eq(r.status, 200)
  local e = check.raises("json", r.json, r)
  check.matches(e.message, "/badjson")
  check.eq(e.position, 21, "position of the stray comma")
  check.matches(tostring(e), "^.*json: ", "one line")
end)

check.test("an unknown host: kind dns", function()
  local e = check.raises("dns", http.get, "http://no-such-host.invalid/x", { timeout = 30 })
  check.matches(e.message, "no%-such%-host%.invalid")
end)

check.test("only http and https", function()
  for _, u in ipairs({ "file:///etc/passwd", "gopher://127.0.0.1/", "dict://127.0.0.1/",
                       "ftp://127.0.0.1/", "ldap://127.0.0.1/", "FILE:///etc/passwd" }) do
    local e = check.raises("invalid_url", http.get, u)
    check.matches(e.message, "only http and https")
  end
end)

check.test("idle connections the server closes are dropped and replaced", function()
  local s = http.session()
  local function burst()
    local tasks = {}
    for i = 1, 8 do
      tasks[i] = async.spawn(function() return s:get(url("/brief")):json().ok end)
    end
    local results = async.gather(tasks)
    for i = 1, 8 do check.eq(results[i], true) end
  end
  burst()
  local total = server_stats().total
  -- The server closes the idle connections after 0.1 s. Their sockets stay
  -- known to the client (for reuse) but must not keep waking it up.
  local cpu = os.clock()
  async.sleep(0.4)
  check.between(os.clock() - cpu, 0, 0.15, "CPU seconds while the connections close")
  check.eq(http.stats().sockets, 0, "no socket watched")
  burst()
  check.truthy(server_stats().total >= total + 8, "new connections replace the closed ones")
end)

check.test("the fault server saw every connection closed", function()
  local deadline = async.now() + 5
  local st = server_stats()
  while st.open > 0 and async.now() < deadline do
    async.sleep(0.05)
    st = server_stats()
  end
  check.eq(st.open, 0, "connections left open")
end)

fs:stop()
check.done()
