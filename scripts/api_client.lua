-- An API client that copes with a flaky service: every request is retried
-- on 429, 503, a timeout or a lost connection, with exponential backoff and
-- jitter, except that a 429's Retry-After is honoured (the client waits what
-- the server asked). A rate limiter spaces the attempts (--rate per second)
-- and at most --concurrency requests are in flight. The summary says how
-- many succeeded, how many retries each cause took, and the p50/p95
-- latency of a request (its retries and waits included).
--
-- Without --base-url the script serves the flaky API itself on loopback:
-- GET /items/ID answers 429 (Retry-After: 1), 503, slowly (2 s) or 200,
-- each attempt's fate fixed by the seed, the item and the attempt number,
-- so a seed repeats a run exactly whatever the timing. `--serve` runs only
-- that server, for another client to use.
--   asyncrun scripts/api_client.lua [--base-url URL] [--requests N] [--concurrency N]
--            [--rate N] [--retries N] [--timeout S] [--failure-rate F] [--seed N] [--quiet]
--   asyncrun scripts/api_client.lua --serve [--port N] [--failure-rate F] [--seed N]
--
-- Exit status: 0 every request succeeded, 1 some gave up, 2 a bad command
-- line (or no HTTP server in this asyncrun for the local API).

local async = require "async"
local http = require "async.http"
local kit = require "lib.scriptkit"

local format, concat, sort, byte = string.format, table.concat, table.sort, string.byte
local ceil, max, min, random = math.ceil, math.max, math.min, math.random
local tonumber = tonumber

local script = {
  name = "api_client",
  title = "API client",
  summary = "Calls a flaky API with retries, backoff, a rate limit and a concurrency limit.",
  description = "Without --base-url, a flaky API is served on 127.0.0.1: GET /items/ID answers\n"
    .. "429 with Retry-After: 1, 503, slowly (2 s), or 200 with the item as JSON.\n"
    .. "Exit status: 0 every request succeeded, 1 some gave up, 2 a bad command line.",
  options = {
    { "base-url", "URL", "the API to call (default: a local flaky one)" },
    { "requests", "N", "items to fetch, /items/1 to /items/N (default 40)", "integer", min = 1 },
    { "concurrency", "N", "requests in flight at most (default 4)", "integer", min = 1 },
    { "rate", "N", "attempts per second at most (default 10)", "number", min = 0.01 },
    { "retries", "N", "retries per request after the first attempt (default 3)", "integer", min = 0 },
    { "timeout", "S", "seconds allowed per attempt (default 1)", "number", min = 0.001 },
    { "backoff", "S", "first backoff wait; doubled each retry, plus up to 25% jitter (default 0.1)",
      "number", min = 0 },
    { "failure-rate", "F", "local API: share of attempts that fail, 0 to 1 (default 0.3)", "number", min = 0 },
    { "serve", nil, "only serve the local flaky API, until interrupted" },
    { "port", "N", "with --serve: the port (default: a free one)", "integer", min = 0 },
  },
}

-- The flaky API ----------------------------------------------------------

-- FNV-1a (32 bits) of a string, then MurmurHash3's finalizer (FNV alone
-- leaves the high bits of near-identical strings alike): the dice of the
-- fault plan.
local function fnv1a(s)
  local h = 0x811c9dc5
  for i = 1, #s do h = ((h ~ byte(s, i)) * 0x01000193) & 0xffffffff end
  h = ((h ~ (h >> 16)) * 0x85ebca6b) & 0xffffffff
  h = ((h ~ (h >> 13)) * 0xc2b2ae35) & 0xffffffff
  return h ~ (h >> 16)
end

-- What attempt n at item id gets: "429", "503", "slow" or "ok", and the
-- milliseconds an ordinary answer takes. One item in 20 is down for good.
local function fate(seed, rate, id, n)
  local doomed = fnv1a(format("%d/%d/down", seed, id)) % 20 == 0
  local r = fnv1a(format("%d/%d/%d", seed, id, n)) / 4294967296.0
  local ms = 5 + fnv1a(format("%d/%d/%d/ms", seed, id, n)) % 60
  if doomed and rate > 0 then return "503", ms end
  if r < rate / 3 then return "429", ms end
  if r < 2 * rate / 3 then return "503", ms end
  if r < rate then return "slow", ms end
  return "ok", ms
end

-- Starts the flaky API on 127.0.0.1. Returns the server or nil and a message.
local function serve_api(seed, rate, port)
  if type(http.serve) ~= "function" then
    return nil, "this asyncrun has no HTTP server (http.serve), so it cannot serve the local API: "
      .. "pass --base-url URL"
  end
  local srv = http.serve({ host = "127.0.0.1", port = port or 0 })
  local attempts = {}
  srv:route("GET", "/items/:id", function(req, res)
    local id = tonumber(req.params.id)
    if not id or id ~= math.floor(id) then
      return res:status(404):json({ error = "no such item" })
    end
    local n = (attempts[id] or 0) + 1
    attempts[id] = n
    local what, ms = fate(seed, rate, id, n)
    -- The client may give up on a slow answer and hang up: writing to it
    -- then raises "closed", which is no fault of the server.
    local ok, err = pcall(function()
      if what == "429" then
        res:status(429):header("Retry-After", "1"):json({ error = "too many requests" })
      elseif what == "503" then
        async.sleep(ms / 1000)
        res:status(503):json({ error = "service unavailable" })
      else
        async.sleep(what == "slow" and 2 or ms / 1000)
        res:json({ id = id, name = format("item %d", id), attempt = n })
      end
    end)
    if not ok and not (type(err) == "table" and err.kind == "closed") then error(err, 0) end
  end)
  return srv
end

-- The client ---------------------------------------------------------------

-- The p-th percentile (nearest rank) of a sorted list.
local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[max(1, ceil(p * #sorted))]
end

function script.run(o)
  local rate_fail = o.failure_rate or 0.3
  if rate_fail > 1 then kit.usage_error(script, "option '--failure-rate' must be at most 1, got %s", rate_fail) end
  if o.serve and o.base_url then kit.usage_error(script, "--serve and --base-url exclude each other") end
  if o.port and not o.serve then kit.usage_error(script, "--port goes with --serve") end
  if o.base_url and not o.base_url:match("^https?://[^/]") then
    kit.usage_error(script, "--base-url wants an http:// or https:// URL, got '%s'", o.base_url)
  end

  kit.heading(o, script.title)
  local base, srv = o.base_url, nil
  if not base then
    local why
    srv, why = serve_api(o.seed, rate_fail, o.port)
    if not srv then
      io.stderr:write("api_client.lua: ", why, "\n")
      return 2
    end
    base = srv.url
    o.show("serving a flaky API at %s (failure rate %.2f: 429, 503 and slow answers)", base, rate_fail)
    if o.serve then
      io.stdout:flush()
      srv:wait()
      return 0
    end
  end
  base = base:gsub("/+$", "")

  local n = o.requests or 40
  local concurrency = o.concurrency or 4
  local rate = o.rate or 10
  local retries = o.retries or 3
  local timeout = o.timeout or 1
  local backoff = o.backoff or 0.1
  o.show("%d requests, %d at once, at most %g per second, up to %d retries, %.2f s per attempt",
    n, concurrency, rate, retries, timeout)

  local session = http.session({ timeout = timeout, connect_timeout = min(timeout, 5),
    max_connections = concurrency })
  local limiter = async.rate_limiter(max(1, math.floor(rate + 0.5)), max(1, math.floor(rate + 0.5)) / rate)
  local stats = { attempts = 0, retries = { ["429"] = 0, ["503"] = 0, timeout = 0, other = 0 },
    honoured = 0, shortest_after = nil, starts = {}, in_flight = 0, peak = 0 }
  local t0 = async.now()

  -- One attempt. Returns "ok", response | cause, wait-hint, message.
  local function attempt(url)
    limiter:acquire()
    stats.attempts = stats.attempts + 1
    stats.starts[#stats.starts + 1] = async.now()
    stats.in_flight = stats.in_flight + 1
    stats.peak = max(stats.peak, stats.in_flight)
    local ok, r = pcall(session.get, session, url)
    stats.in_flight = stats.in_flight - 1
    if not ok then
      if type(r) == "table" and r.kind == "cancelled" then error(r, 0) end
      if type(r) == "table" and r.kind == "timeout" then
        return "timeout", nil, format("timed out after %.2f s", timeout)
      end
      local kind = type(r) == "table" and r.kind or "error"
      local retryable = kind == "connect" or kind == "protocol"
      return retryable and "other" or "fatal", nil,
        type(r) == "table" and format("%s: %s", kind, tostring(r.message)) or tostring(r)
    end
    if r.status == 200 then return "ok", r end
    if r.status == 429 then
      local after = tonumber(r.headers["retry-after"] or "")
      return "429", after, "got 429" .. (after and format(" (Retry-After: %s)", r.headers["retry-after"]) or "")
    end
    if r.status == 503 or r.status == 502 or r.status == 504 then
      return "503", nil, format("got %d", r.status)
    end
    return "fatal", nil, format("got %d", r.status)
  end

  -- One request, with its retries. Returns a record.
  local function request(id)
    local url = format("%s/items/%d", base, id)
    local started = async.now()
    local wait = backoff
    for k = 1, retries + 1 do
      local cause, hint, msg = attempt(url)
      if cause == "ok" then
        local okj, doc = pcall(hint.json, hint)
        local name = okj and type(doc) == "table" and doc.name or "?"
        o.log("  item %d: ok after %d attempt(s) in %.2f s (%s)", id, k, async.now() - started, name)
        return { id = id, ok = true, attempts = k, latency = async.now() - started }
      end
      if cause == "fatal" or k > retries then
        o.show("  item %d: gave up after %d attempt(s): %s", id, k, msg)
        return { id = id, ok = false, attempts = k, latency = async.now() - started, why = msg }
      end
      local pause, why
      if cause == "429" and hint then
        pause, why = hint, "Retry-After"
      else
        pause, why = wait * (1 + 0.25 * random()), "backoff"
        wait = wait * 2
      end
      stats.retries[cause] = stats.retries[cause] + 1
      o.log("  item %d: attempt %d %s, retrying in %.2f s (%s)", id, k, msg, pause, why)
      local slept = async.now()
      async.sleep(pause)
      if why == "Retry-After" then
        slept = async.now() - slept
        stats.honoured = stats.honoured + 1
        stats.shortest_after = min(stats.shortest_after or slept, slept)
      end
    end
  end

  local ids = {}
  for i = 1, n do ids[i] = i end
  local results = async.map(request, ids, { concurrency = concurrency })
  local elapsed = async.now() - t0
  if srv then srv:close({ grace = 0.5 }) end

  local succeeded, failed, lat = 0, {}, {}
  for i = 1, results.n do
    local r = results[i]
    if r.ok then succeeded = succeeded + 1 else failed[#failed + 1] = tostring(r.id) end
    lat[#lat + 1] = r.latency
  end
  sort(lat)
  -- The most attempts that started within any one second. The limiter
  -- spaces its grants by its own timer; a task runs a little after its
  -- grant, by a varying delay, so two grants 1 s apart can be seen as
  -- 0.999 s apart: 10 ms of slack.
  local most, j = 0, 1
  for i = 1, #stats.starts do
    while stats.starts[i] - stats.starts[j] >= 0.99 do j = j + 1 end
    most = max(most, i - j + 1)
  end
  local rt = stats.retries
  o.show("succeeded: %d of %d", succeeded, n)
  if #failed > 0 then o.show("gave up: %d (items %s)", #failed, concat(failed, ", ")) end
  o.show("attempts: %d (%d retries: %d after 429, %d after 503, %d after a timeout, %d after a connection error)",
    stats.attempts, rt["429"] + rt["503"] + rt.timeout + rt.other, rt["429"], rt["503"], rt.timeout, rt.other)
  if stats.honoured > 0 then
    o.show("Retry-After honoured: %d waits, the shortest %.2f s", stats.honoured, stats.shortest_after)
  end
  o.show("latency: p50 %.3f s, p95 %.3f s, max %.3f s", percentile(lat, 0.5), percentile(lat, 0.95), lat[#lat])
  o.show("limits: at most %d requests at once, %d attempts in one second", stats.peak, most)
  o.show("time: %.2f s", elapsed)
  return #failed > 0 and 1 or 0
end

return kit.main(script, ...)
