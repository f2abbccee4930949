-- Issue 10, defect 5: cancelling the task that waits in wait_for, gather,
-- map or a group, just after the inner task was handed a queue item, a lock
-- or a completed put, must lose nothing: the outer cancel waits for the
-- inner task to finish (as wait_for's timeout path already does), and what
-- the inner task got is either returned by the outer call or observable.
local async = require "async"
local check = require "check"

local function kind(e) return type(e) == "table" and e.kind or tostring(e) end

-- Runs `outer_call(inner_fn)` in task O; inner_fn waits in q:get(). The
-- main task hands an item to the inner task and cancels O in the same
-- turn. Returns the log and O's pcall results.
local function handoff(outer_call)
  local q = async.queue()
  local log = {}
  local inner_fn = function()
    local v = q:get()
    log[#log + 1] = "inner got " .. tostring(v)
    return v
  end
  local res
  local o = async.spawn(function()
    res = table.pack(pcall(outer_call, inner_fn))
    log[#log + 1] = "outer resumed"
  end)
  async.sleep(0.01) -- O and the inner task are waiting
  q:put("item")     -- handed to the inner task (it is now ready)
  o:cancel()        -- at that instant
  pcall(o.await, o)
  async.sleep(0.01)
  return log, res, q
end

local function no_loss(log, res, q, first_of)
  check.eq(log[1], "inner got item", "the inner task got the item")
  check.eq(log[2], "outer resumed", "the outer call waited for the inner task to finish")
  local returned = res[1] and first_of(res[2])
  check.truthy(returned == "item" or q:size() == 1,
    "the item is lost: outer call " .. (res[1] and "returned" or "raised " .. kind(res[2])) ..
    " and the queue is empty")
end

check.test("wait_for(fn): cancel after the inner get was handed an item", function()
  local log, res, q = handoff(function(fn) return async.wait_for(fn, 10) end)
  no_loss(log, res, q, function(v) return v end)
end)

check.test("wait_for(fn) without deadline: same, the item is not lost", function()
  local log, res, q = handoff(function(fn) return async.wait_for(fn, nil) end)
  no_loss(log, res, q, function(v) return v end)
end)

check.test("gather({fn}): cancel after the inner get was handed an item", function()
  local log, res, q = handoff(function(fn) return async.gather({ fn }) end)
  no_loss(log, res, q, function(v) return v[1] end)
end)

check.test("map: cancel after the worker's get was handed an item", function()
  local log, res, q = handoff(function(fn) return async.map(function() return fn() end, { 1 }) end)
  no_loss(log, res, q, function(v) return v[1] end)
end)

check.test("wait_for(lock acquire): a lock handed to the inner task is released", function()
  local lock = async.lock()
  lock:acquire()
  local got
  local o = async.spawn(function()
    -- The asyncio idiom: take the lock with a deadline, release if taken.
    local ok = pcall(async.wait_for, function() return lock:acquire() end, 10)
    got = ok
    if ok then lock:release() end
  end)
  async.sleep(0.01)
  lock:release() -- handed to the inner task
  o:cancel()
  pcall(o.await, o)
  async.sleep(0.01)
  check.eq(lock:locked(), false, "the lock is held forever (outer saw " .. tostring(got) .. ")")
end)

check.test("gather(lock acquire): a lock handed to the inner task is released", function()
  local lock = async.lock()
  lock:acquire()
  local o = async.spawn(function()
    local ok = pcall(async.gather, { function() return lock:acquire() end })
    if ok then lock:release() end
  end)
  async.sleep(0.01)
  lock:release()
  o:cancel()
  pcall(o.await, o)
  async.sleep(0.01)
  check.eq(lock:locked(), false, "the lock is held forever")
end)

check.test("wait_for(put): a completed put is not reported as cancelled", function()
  local q = async.queue(1)
  q:put("first") -- full
  local outcome
  local o = async.spawn(function()
    local ok, err = pcall(async.wait_for, function() return q:put("second") end, 10)
    outcome = ok and "put" or kind(err)
  end)
  async.sleep(0.01)
  check.eq(q:get(), "first", "first item") -- the put completes now
  o:cancel()
  pcall(o.await, o)
  async.sleep(0.01)
  local in_queue = q:size() == 1 and q:get_nowait() == "second"
  check.truthy(in_queue, "the put happened")
  check.eq(outcome, "put", "the outer call's report of a put that happened")
end)

check.done()
