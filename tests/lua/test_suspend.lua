-- Edge cases of the engine's one suspension point (ar__task_suspend), as
-- the toolkit's primitives meet them. (test_cancel_pending.lua has gather,
-- wait_for, sleep and HTTP with a pending cancel.)
local async = require "async"
local check = require "check"

check.test("a pending cancel leaves no waiter in the toolkit's primitives", function()
  local s = async.semaphore(1); s:acquire()
  local q = async.queue(1)
  local e = async.event()
  local rl = async.rate_limiter(1, 10); rl:acquire()
  for _, wait in ipairs({
    function() s:acquire() end, function() q:get() end,
    function() e:wait() end, function() rl:acquire() end,
  }) do
    async.current():cancel()
    check.raises("cancelled", wait)
  end
  check.eq(s:waiting(), 0); check.eq(e:waiting(), 0); check.eq(rl:waiting(), 0)
  q:put(1)
  check.eq(q:size(), 1, "no stale getter took the item")
end)

-- A wait where the task cannot yield (under table.sort, say) must raise
-- and undo its links: a waiter, timer or ready entry left behind used to
-- wake the task later, in the middle of something else.
check.test("a wait that cannot yield raises and leaves nothing behind", function()
  local s = async.semaphore(1); s:acquire()
  local q = async.queue(1)
  local rl = async.rate_limiter(1, 10); rl:acquire()
  local other = async.spawn(function() async.sleep(10) end)
  async.sleep(0)
  local waits = {
    function() s:acquire() end, function() q:get() end,
    function() async.sleep(0.01) end, function() async.sleep(0) end,
    function() rl:acquire() end, function() other:await() end,
  }
  for i, wait in ipairs(waits) do
    local e = check.raises(nil, table.sort, { 3, 2, 1 }, function(a, b) wait(); return a < b end)
    check.matches(e, "attempt to wait across a C%-call boundary", "wait " .. i)
    local st = async.stats()
    check.eq(st.timers, 1, "no timer left by wait " .. i .. " (only other's)")
    check.eq(st.ready, 0, "no ready entry left by wait " .. i)
  end
  check.eq(s:waiting(), 0); check.eq(rl:waiting(), 0)
  q:put(1)
  check.eq(q:size(), 1, "no stale getter")
  async.sleep(0.02) -- a stale timer would have woken us by now, wrongly
  s:release()
  check.eq(s:value(), 1)
  other:cancel()
  check.raises("cancelled", other.await, other)
  -- gather and wait_for refuse before they link or spawn anything: the
  -- task they were given goes on untouched
  for _, wait in ipairs({ async.gather, async.wait_for }) do
    local target = async.spawn(function() async.sleep(10) end)
    async.sleep(0)
    local e = check.raises(nil, table.sort, { 2, 1 }, function(a, b)
      wait(wait == async.gather and { target } or target, nil); return a < b
    end)
    check.matches(e, "attempt to wait across a C%-call boundary")
    check.eq(target.state, "waiting", "the target runs on")
    target:cancel()
    check.raises("cancelled", target.await, target)
  end
end)

check.done()
