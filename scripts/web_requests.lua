-- Web requests: the lab's six requests to an httpbin, one after another,
-- then all at once over one session, with each request's status and time
-- and the speed-up. A request suspends only the task that makes it, so
-- six tasks wait for six answers at the same time.
--   asyncrun scripts/web_requests.lua [--base-url URL] [--paths LIST] [--seed N] [--quiet]
--
-- Without --base-url the script serves an httpbin-like service itself on
-- loopback (scripts/lib/httpbin_local.lua), so it works offline.
--
-- Exit status: 0 when every request got an answer (a 404 is an answer: it is
-- shown with its status and the demo goes on), 1 when a request got none
-- (the server could not be reached, the request timed out) or when no
-- server is available, 2 for a bad command line.

local async = require "async"
local http = require "async.http"
local kit = require "lib.scriptkit"

local PATHS = { "/delay/1", "/delay/2", "/delay/3", "/json", "/uuid", "/headers" }

local script = {
  name = "web_requests",
  title = "Web requests",
  summary = "The lab's six requests to an httpbin, sequentially, then concurrently over one session.",
  description = "Without --base-url, a local httpbin-like service is started on 127.0.0.1.\n"
    .. "Exit status: 0 when every request got an answer (any status), 1 when one got\n"
    .. "none (unreachable server, timeout), 2 for a bad command line.",
  options = {
    { "base-url", "URL", "the httpbin to use, e.g. http://127.0.0.1:8080 (default: a local one)" },
    { "paths", "LIST", "comma-separated paths to fetch instead of the lab's six" },
    { "timeout", "S", "seconds allowed per request (default 15)", "number", min = 0.001 },
  },
}

-- A short description of a response body: what the lab's fetch_url would
-- have returned as data.
local function detail(r)
  local ok, doc = pcall(r.json, r)
  if not ok or type(doc) ~= "table" then return string.format("%d bytes, not JSON", #r.body) end
  if type(doc.uuid) == "string" then return "uuid " .. doc.uuid end
  if type(doc.headers) == "table" and doc.headers["User-Agent"] and doc.url == nil then
    return "server saw User-Agent: " .. tostring(doc.headers["User-Agent"])
  end
  local n = 0
  for _ in pairs(doc) do n = n + 1 end
  return string.format("JSON, %d top-level key(s)", n)
end

function script.run(o)
  kit.heading(o, script.title)

  local paths = PATHS
  if o.paths then
    paths = {}
    for p in o.paths:gmatch("[^,]+") do paths[#paths + 1] = p:sub(1, 1) == "/" and p or "/" .. p end
    if #paths == 0 then kit.usage_error(script, "--paths names no path") end
  end

  local base, srv = o.base_url, nil
  if base then
    if not base:match("^https?://[^/]") then
      kit.usage_error(script, "--base-url wants an http:// or https:// URL, got '%s'", base)
    end
  else
    local why
    srv, why = require("lib.httpbin_local").start()
    if not srv then
      io.stderr:write("web_requests.lua: ", why, "\n")
      return 1
    end
    base = srv.url
    o.log("serving a local httpbin at %s", base)
  end
  base = base:gsub("/+$", "")

  -- One session for every request: connections are kept alive and reused.
  local session = http.session({ timeout = o.timeout or 15, connect_timeout = 5 })
  local failed = 0

  -- The lab's fetch_url: never raises; returns what happened.
  local function fetch(path)
    local url = base .. path
    local t0 = async.now()
    local ok, r = pcall(session.get, session, url)
    local rec = { path = path, url = url, elapsed = async.now() - t0 }
    if ok then
      rec.status, rec.detail = r.status, r:ok() and detail(r) or nil
    elseif type(r) == "table" and r.kind then
      if r.kind == "cancelled" then error(r, 0) end
      rec.error = string.format("%s: %s", r.kind, r.message)
    else
      error(r, 0)
    end
    return rec
  end

  local function report(rec)
    if rec.error then
      failed = failed + 1
      o.show("  GET %-11s failed after %.2f s: %s", rec.path, rec.elapsed, rec.error)
    elseif rec.detail then
      o.show("  GET %-11s %d in %.2f s (%s)", rec.path, rec.status, rec.elapsed, rec.detail)
    else
      o.show("  GET %-11s %d in %.2f s (%s)", rec.path, rec.status, rec.elapsed,
        rec.status == 404 and "not found: this server has no such endpoint" or "not a success status")
    end
  end

  o.show("")
  o.show("One after another:")
  local t0 = async.now()
  for _, p in ipairs(paths) do report(fetch(p)) end
  local sequential = async.now() - t0
  o.show("sequential: %.2f s", sequential)

  o.show("")
  o.show("All at once, over the same session:")
  local jobs = {}
  for i, p in ipairs(paths) do jobs[i] = function() return fetch(p) end end
  t0 = async.now()
  local results = async.gather(jobs)
  local concurrent = async.now() - t0
  for i = 1, results.n do report(results[i]) end
  o.show("concurrent: %.2f s", concurrent)
  if failed < 2 * #paths then
    o.show("speed-up: %.2fx", sequential / math.max(concurrent, 1e-6))
  end

  if srv then srv:close() end
  if failed > 0 then
    o.show("%d of %d requests got no answer", failed, 2 * #paths)
    return 1
  end
  return 0
end

return kit.main(script, ...)
