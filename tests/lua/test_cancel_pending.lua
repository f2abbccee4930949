-- A task cancelled while it runs carries the cancel to its next
-- suspension. The wait it was about to start must be undone with its own
-- record: gather and wait_for used to find a stale one there and crash.
local async = require "async"
local check = require "check"

check.test("a pending cancel undoes gather's wait", function()
  local other = async.spawn(function() async.sleep(10) end)
  async.current():cancel() -- running: the cancel is pending
  check.raises("cancelled", async.gather, { other })
  async.sleep(0)
  check.eq(other:cancelled(), true, "gathered task cancelled with it")
end)

check.test("a pending cancel undoes wait_for's wait", function()
  local inner = async.spawn(function() async.sleep(10) end)
  async.current():cancel()
  check.raises("cancelled", async.wait_for, inner, 5)
  async.sleep(0)
  check.eq(inner:cancelled(), true, "inner task cancelled")
end)

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

check.done()
