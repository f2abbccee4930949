-- The main job: a health sweep of a fleet, offline, against simulated hosts.
--
-- Each "host" answers after a latency of its own; some are flaky (fail a few
-- times, then answer), one hangs, one is down. The sweep shows the lab's
-- lessons working together: a bounded map (never more than 4 checks at once),
-- retries with exponential backoff for flaky hosts, a deadline per check,
-- a queue feeding a reporter task, and a summary. Deterministic: the same
-- output every run (only the timings move a little).
--   asyncrun scripts/main.lua [concurrency]
local async = require "async"

local CONCURRENCY = tonumber(arg and arg[1]) or 4

-- name, latency (s), failures before it answers (-1: always fails), hangs
local FLEET = {
  { "web-1", 0.10, 0 }, { "web-2", 0.12, 0 }, { "web-3", 0.08, 1 },
  { "api-1", 0.15, 0 }, { "api-2", 0.20, 2 }, { "db-1", 0.25, 0 },
  { "db-2", 0.05, -1 }, { "cache-1", 0.03, 0 }, { "cache-2", 0.04, 0 },
  { "queue-1", 0.10, 0 }, { "batch-1", 10, 0, true }, { "edge-1", 0.06, 1 },
}

local attempts = {}

-- One simulated probe: sleeps its latency, then answers or raises.
local function probe(host)
  local name, latency, failures, hangs = host[1], host[2], host[3], host[4]
  attempts[name] = (attempts[name] or 0) + 1
  async.sleep(hangs and 3600 or latency)
  if failures < 0 or attempts[name] <= failures then
    error(async.error("unavailable", name .. " refused the probe"))
  end
  return { host = name, latency = latency, attempts = attempts[name] }
end

local report = async.queue(0)

local reporter = async.spawn(function()
  local up, down = 0, 0
  while true do
    local line = report:get()
    if line == nil then return up, down end
    if line.ok then up = up + 1 else down = down + 1 end
    print(string.format("%s  %-8s %-4s %s", async.timestamp(), line.host,
      line.ok and "up" or "DOWN", line.detail))
  end
end)

local function check(host)
  local started = async.now()
  local ok, res = pcall(async.wait_for, function()
    return async.retry(function() return probe(host) end, {
      retries = 3, delay = 0.05, backoff = 2, jitter = 0,
      retry_if = function(err) return err.kind == "unavailable" end,
    })
  end, 1.0)
  if ok then
    report:put({ host = host[1], ok = true,
      detail = string.format("%.0f ms, %d attempt(s)", res.latency * 1000, res.attempts) })
  else
    report:put({ host = host[1], ok = false,
      detail = string.format("%s: %s", res.kind or "error", res.message or tostring(res)) })
  end
  return async.now() - started
end

print(string.format("sweeping %d hosts, %d at a time", #FLEET, CONCURRENCY))
local t0 = async.now()
local took = async.map(check, FLEET, { concurrency = CONCURRENCY })
report:close()
local up, down = reporter:await()
local serial = 0
for _, s in ipairs(took) do serial = serial + s end
print(string.format("%d up, %d down in %.2f s (the checks one after another: %.2f s)",
  up, down, async.now() - t0, serial))
