-- Cancellation in every state a task can be in, and the cleanup it runs.
local async = require "async"
local check = require "check"

local function closer(log, name)
  return setmetatable({}, { __close = function(_, err)
    log[#log + 1] = name .. ":" .. (err and err.kind or "ok")
  end })
end

check.test("cancel before start: the body never runs", function()
  local ran = false
  local t = async.spawn(function() ran = true end)
  t:cancel()
  local err = check.raises("cancelled", t.await, t)
  check.eq(ran, false, "body ran")
  check.truthy(t:cancelled(), "cancelled()")
  check.matches(tostring(err), "cancelled: task %d+ was cancelled")
end)

check.test("cancel while sleeping raises at the sleep and runs <close>", function()
  local log = {}
  local t = async.spawn(function()
    local c <close> = closer(log, "c")
    local ok, err = pcall(async.sleep, 10)
    log[#log + 1] = "caught:" .. err.kind
    error(err) -- re-raise: the task ends cancelled
  end)
  async.sleep(0.01)
  local t0 = async.now()
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.between(async.now() - t0, 0, 0.5, "cancel is prompt")
  check.list(log, { "caught:cancelled", "c:cancelled" }, "cleanup order")
  check.truthy(t:cancelled(), "cancelled()")
end)

check.test("cancel while awaiting another task leaves that task running", function()
  local inner = async.spawn(function() async.sleep(0.05); return "inner" end)
  local outer = async.spawn(function() return inner:await() end)
  async.sleep(0.01)
  outer:cancel()
  check.raises("cancelled", outer.await, outer)
  check.eq(inner:await(), "inner", "inner unaffected")
end)

check.test("cancel while ready (woken, not yet resumed) raises at that sleep", function()
  local reached = false
  local t = async.spawn(function()
    async.sleep(0) -- queued to resume
    reached = true
  end)
  async.sleep(0) -- t starts and yields in sleep(0): it is now queued
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(reached, false, "resumed past the sleep")
end)

check.test("a task that cancels itself raises at its next suspension", function()
  local after = false
  local t = async.spawn(function()
    async.current():cancel()
    after = true -- still runs: cancellation is delivered at a suspension
    async.sleep(1)
    error("not reached")
  end)
  check.raises("cancelled", t.await, t)
  check.truthy(after, "ran until its next suspension")
end)

check.test("a cancelled awaiter propagates 'cancelled' to its awaiter", function()
  local a = async.spawn(function() async.sleep(10) end)
  local b = async.spawn(function() return a:await() end)
  async.sleep(0.01)
  a:cancel()
  check.raises("cancelled", b.await, b)
  check.truthy(b:cancelled(), "b ends cancelled too")
end)

check.test("a task may swallow cancellation and return normally", function()
  local t = async.spawn(function()
    local ok, err = pcall(async.sleep, 10)
    return ok, err.kind
  end)
  async.sleep(0)
  t:cancel()
  local ok, kind = t:await()
  check.eq(ok, false); check.eq(kind, "cancelled")
  check.eq(t:cancelled(), false, "not cancelled: it handled it")
end)

check.test("cancelling a finished task does nothing", function()
  local t = async.spawn(function() return 1 end)
  check.eq(t:await(), 1)
  check.eq(t:cancel(), false, "cancel() reports nothing to cancel")
  check.eq(t:await(), 1)
  check.eq(t:cancelled(), false)
end)

check.test("cancel while gathering cancels the gathered tasks", function()
  local log = {}
  local kids = {}
  for i = 1, 3 do
    kids[i] = async.spawn(function()
      local c <close> = closer(log, "k" .. i)
      async.sleep(10)
    end)
  end
  local g = async.spawn(function() return async.gather(kids) end)
  async.sleep(0.01)
  g:cancel()
  check.raises("cancelled", g.await, g)
  async.sleep(0)
  for i = 1, 3 do check.truthy(kids[i]:cancelled(), "kid " .. i .. " cancelled") end
  table.sort(log)
  check.list(log, { "k1:cancelled", "k2:cancelled", "k3:cancelled" })
end)

check.test("cancel while in wait_for cancels the inner task", function()
  local inner_log = {}
  local inner = async.spawn(function()
    local c <close> = closer(inner_log, "inner")
    async.sleep(10)
  end)
  local w = async.spawn(function() return async.wait_for(inner, 5) end)
  async.sleep(0.01)
  w:cancel()
  check.raises("cancelled", w.await, w)
  async.sleep(0)
  check.truthy(inner:cancelled(), "inner cancelled")
  check.list(inner_log, { "inner:cancelled" })
end)

check.test("pending timers are released by cancellation", function()
  local ts = {}
  for i = 1, 1000 do ts[i] = async.spawn(async.sleep, 30 + i) end
  async.sleep(0)
  check.eq(async.stats().timers, 1000, "armed timers")
  for i = 1, 1000 do ts[i]:cancel() end
  async.gather(ts, { return_exceptions = true })
  check.eq(async.stats().timers, 0, "timers after cancel")
end)

check.done()
