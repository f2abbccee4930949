-- Timers: concurrency, ordering, never early. Tolerances are generous on
-- the late side (a loaded CI machine) and strict on the early side.
local async = require "async"
local check = require "check"

check.test("5 tasks sleeping 0.5-3 s take about the longest, not the sum", function()
  local t0 = async.now()
  local r = async.gather({
    function() async.sleep(0.5); return 1 end,
    function() async.sleep(1.0); return 2 end,
    function() async.sleep(3.0); return 3 end,
    function() async.sleep(1.5); return 4 end,
    function() async.sleep(2.0); return 5 end,
  })
  local took = async.now() - t0
  check.list(r, { 1, 2, 3, 4, 5 })
  check.between(took, 3.0, 3.5, "wall time (sum would be 8 s)")
end)

check.test("a sleep never ends early", function()
  for _, s in ipairs({ 0.001, 0.0105, 0.05, 0.2 }) do
    local t0 = async.now()
    async.sleep(s)
    local took = async.now() - t0
    check.truthy(took >= s, string.format("sleep(%g) took %.6f", s, took))
    check.truthy(took < s + 0.2, string.format("sleep(%g) took %.6f", s, took))
  end
end)

check.test("timers fire in deadline order, ties in start order", function()
  local log = {}
  local ts = {}
  local delays = { 0.05, 0.01, 0.03, 0.01, 0.02, 0.05 }
  for i, d in ipairs(delays) do
    ts[i] = async.spawn(function() async.sleep(d); log[#log + 1] = i end)
  end
  async.gather(ts)
  check.list(log, { 2, 4, 5, 3, 1, 6 })
end)

check.test("sleep(0) arms no timer", function()
  local t = async.spawn(function() for _ = 1, 10 do async.sleep(0) end end)
  async.sleep(0)
  check.eq(async.stats().timers, 0, "timers")
  t:await()
end)

check.test("10,000 concurrent sleepers finish near their deadlines", function()
  local t0 = async.now()
  local ts = {}
  for i = 1, 10000 do ts[i] = async.spawn(async.sleep, (i % 100) / 200) end
  async.gather(ts)
  check.between(async.now() - t0, 0.495, 1.5, "wall time")
end)

check.test("now() is monotonic and timestamp() is formatted", function()
  local a = async.now(); local b = async.now()
  check.truthy(b >= a, "monotonic")
  check.matches(async.timestamp(), "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d$", "timestamp")
end)

check.done()
