-- Issue 10, defect 8: in a cancelled or failed task, a <close> handler may
-- wait (async.sleep works: the sleep happens), and an error raised by a
-- <close> handler is reported, not dropped, as plain Lua reports it.
local async = require "async"
local check = require "check"
local child = require "child"

local function kind(e) return type(e) == "table" and e.kind or tostring(e) end

-- A handler that sleeps and records what happened.
local function sleeper(log, secs)
  return setmetatable({}, { __close = function(_, err)
    local t0 = async.now()
    local ok, e = pcall(async.sleep, secs)
    log[#log + 1] = { err = kind(err), ok = ok, e = e and kind(e), slept = async.now() - t0 }
  end })
end

check.test("a cancelled task's <close> handler can sleep", function()
  local log = {}
  local t = async.spawn(function()
    local c <close> = sleeper(log, 0.05)
    async.sleep(10)
  end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(#log, 1, "the handler ran once")
  check.eq(log[1].err, "cancelled", "the handler saw the cancellation")
  check.eq(log[1].ok, true, "async.sleep inside the handler: " .. tostring(log[1].e))
  check.between(log[1].slept, 0.045, 5, "the sleep happened")
  check.truthy(t:cancelled(), "the task still ends cancelled")
end)

check.test("a failed task's <close> handler can sleep", function()
  local log = {}
  local t = async.spawn(function()
    local c <close> = sleeper(log, 0.05)
    async.sleep(0.01)
    error("body failed", 0)
  end)
  local ok, err = pcall(t.await, t)
  check.eq(ok, false, "await raised")
  check.eq(err, "body failed", "the task's own error")
  check.eq(#log, 1, "the handler ran once")
  check.eq(log[1].err, "body failed", "the handler saw the error")
  check.eq(log[1].ok, true, "async.sleep inside the handler: " .. tostring(log[1].e))
  check.between(log[1].slept, 0.045, 5, "the sleep happened")
end)

check.test("a <close> handler can wait for another task during cancellation", function()
  local flushed = false
  local flusher
  local t = async.spawn(function()
    local c <close> = setmetatable({}, { __close = function()
      flusher = async.spawn(function() async.sleep(0.02); flushed = true; return "flushed" end)
      flusher:await()
    end })
    async.sleep(10)
  end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(flushed, true, "the handler waited for the flush before the task ended")
end)

check.test("an error raised by a <close> handler of a cancelled task is not dropped", function()
  local t = async.spawn(function()
    local c <close> = setmetatable({}, { __close = function() error("close failed", 0) end })
    async.sleep(10)
  end)
  async.sleep(0.01)
  t:cancel()
  local ok, err = pcall(t.await, t)
  -- As plain Lua: the handler's error replaces the one being propagated.
  check.eq(ok, false, "await raised")
  check.eq(err, "close failed", "the handler's error is what the task raised")
end)

check.test("an error raised by a <close> handler of a failed task is not dropped", function()
  local t = async.spawn(function()
    local c <close> = setmetatable({}, { __close = function() error("close failed", 0) end })
    async.sleep(0.01)
    error("body failed", 0)
  end)
  local ok, err = pcall(t.await, t)
  check.eq(ok, false, "await raised")
  check.eq(err, "close failed", "the handler's error (plain Lua reports it)")
end)

check.test("an unawaited task whose <close> handler failed is reported on stderr", function()
  local r = child.run([[
local async = require "async"
local t = async.spawn(function()
  local c <close> = setmetatable({}, { __close = function() error("close handler exploded", 0) end })
  async.sleep(10)
end)
t.name = "closer"
async.sleep(0.01)
t:cancel()
async.sleep(0.01)
print("main ends")
]], { timeout = 10 })
  check.matches(r.out, "^main ends\n", "main ended; " .. child.describe(r))
  check.matches(r.err, "task %d+ %(closer%) failed: close handler exploded", "the handler's error is reported")
end)

check.done()
