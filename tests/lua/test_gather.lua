-- gather and wait_for.
local async = require "async"
local check = require "check"

local function after(s, v) return function() async.sleep(s); return v end end

check.test("gather keeps input order, not completion order", function()
  local r = async.gather({ after(0.03, "a"), after(0.01, "b"), after(0.02, "c") })
  check.list(r, { "a", "b", "c" }); check.eq(r.n, 3)
end)

check.test("gather takes tasks and functions, and done tasks", function()
  local done = async.spawn(function() return 1 end)
  done:await()
  local r = async.gather({ done, function() return 2 end, async.spawn(after(0.01, 3)) })
  check.list(r, { 1, 2, 3 })
end)

check.test("gather of nothing returns an empty list at once", function()
  local r = async.gather({})
  check.eq(#r, 0); check.eq(r.n, 0)
end)

check.test("gather keeps nil results as holes, counted by n", function()
  local r = async.gather({ function() return nil end, function() return 2 end })
  check.eq(r[1], nil); check.eq(r[2], 2); check.eq(r.n, 2)
end)

check.test("first error (in time) is raised and the others cancelled", function()
  local slow = async.spawn(after(10, "slow"))
  local t0 = async.now()
  local err = check.raises(nil, async.gather, {
    slow,
    function() async.sleep(0.05); error("second") end,
    function() async.sleep(0.01); error(async.error("boom", "first")) end,
  })
  check.eq(err.kind, "boom", "the earliest failure wins")
  check.between(async.now() - t0, 0, 1, "raised without waiting for the slow one")
  async.sleep(0)
  check.truthy(slow:cancelled(), "slow task cancelled")
end)

check.test("return_exceptions with failures and cancellations", function()
  local victim = async.spawn(after(10, "never"))
  async.spawn(function() async.sleep(0.01); victim:cancel() end)
  local r = async.gather({
    function() return "ok" end,
    function() error({ code = 1 }) end,
    victim,
  }, { return_exceptions = true })
  check.eq(r[1], "ok")
  check.eq(r[2].code, 1, "error object in place")
  check.eq(r[3].kind, "cancelled", "cancelled entry holds the error")
end)

check.test("bad entries are reported by position", function()
  local e = check.raises(nil, async.gather, { function() end, 42 })
  check.matches(e, "entry 2 is a number, expected a task or a function")
  check.raises(nil, async.gather, "nope")
end)

check.test("wait_for returns results before the deadline", function()
  local a, b = async.wait_for(function() async.sleep(0.01); return 1, 2 end, 1)
  check.eq(a, 1); check.eq(b, 2)
end)

check.test("wait_for times out, cancels the inner work and lets it clean up", function()
  local cleaned = false
  local t0 = async.now()
  local err = check.raises("timeout", async.wait_for, function()
    local c <close> = setmetatable({}, { __close = function() cleaned = true end })
    async.sleep(5)
  end, 0.1)
  local took = async.now() - t0
  check.between(took, 0.1, 1, "time to the timeout")
  check.truthy(cleaned, "inner cleanup ran before wait_for raised")
  check.matches(err.message, "timed out after 0.1 s")
end)

check.test("wait_for on a task passes its error through", function()
  local t = async.spawn(function() async.sleep(0.01); error("inner failure") end)
  local err = check.raises(nil, async.wait_for, t, 1)
  check.matches(err, "inner failure")
end)

check.test("wait_for with nil seconds waits without a deadline", function()
  check.eq(async.wait_for(after(0.01, "x")), "x")
end)

check.test("wait_for inside wait_for: the inner deadline fires first", function()
  local err = check.raises("timeout", async.wait_for, function()
    return async.wait_for(function() async.sleep(5) end, 0.05)
  end, 2)
  check.matches(err.message, "0.05")
end)

check.done()
