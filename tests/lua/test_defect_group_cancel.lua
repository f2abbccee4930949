-- Issue 10, defect 11: a group must not clear its owner's pending cancel:
-- a cancel from outside that arrives at the same moment as a child's
-- failure must not be swallowed (the owner ends cancelled).
local async = require "async"
local check = require "check"

local function kind(e) return type(e) == "table" and e.kind or tostring(e) end

-- The child fails and the owner is cancelled from outside in the same
-- turn, while the group's body was handed an item (so both cancels are
-- pending when the body returns).
local function race(order)
  local items, go = async.queue(), async.queue()
  local log = {}
  local owner = async.spawn(function()
    local ok, err = pcall(async.group, function(g)
      g:spawn(function() go:get(); error("child failed", 0) end)
      return items:get()
    end)
    log[#log + 1] = "group:" .. (ok and tostring(err) or kind(err))
    -- The outside cancel must be raised here at the latest.
    local ok2, err2 = pcall(async.sleep, 0.01)
    log[#log + 1] = "sleep:" .. (ok2 and "ok" or kind(err2))
    return "survived"
  end)
  async.sleep(0.01) -- body and child are waiting
  order(items, go, owner)
  local ok, err = pcall(owner.await, owner)
  return owner, ok, err, log
end

-- The owner (which catches everything here) must see "cancelled" once:
-- raised by the group, or at its next wait.
local function saw_cancel(log)
  local s = table.concat(log, ",")
  check.eq(#log, 2, "owner's log " .. s)
  local n = select(2, s:gsub("cancelled", ""))
  check.eq(n, 1, "the outside cancel was seen once (log: " .. s .. ")")
end

check.test("child fails, then outside cancel: the owner sees the cancel", function()
  local owner, ok, err, log = race(function(items, go, o)
    go:put("go")       -- the child will fail first
    items:put("item")  -- the body gets its item
    o:cancel()         -- and the owner is cancelled from outside
  end)
  saw_cancel(log)
end)

check.test("outside cancel, then the child fails: the owner sees the cancel", function()
  local owner, ok, err, log = race(function(items, go, o)
    items:put("item")
    o:cancel()
    go:put("go")
  end)
  saw_cancel(log)
end)

check.test("a cancellation caught long before does not make the group's own cancel outlive it", function()
  local log = {}
  local o = async.spawn(function()
    local ok = pcall(async.sleep, 10) -- cancelled from outside, and caught
    log[#log + 1] = ok and "slept" or "caught"
    local q = async.queue()
    local ok2, e = pcall(async.group, function(g)
      g:spawn(function() q:put("item"); error("boom") end)
      return q:get() -- handed the item as the child fails: it returns
    end)
    log[#log + 1] = ok2 and "group ok" or ("group " .. (type(e) == "table" and e.kind or tostring(e)))
    local ok3, e3 = pcall(async.sleep, 0.01) -- nothing is due any more
    log[#log + 1] = ok3 and "sleep ok" or ("sleep " .. (type(e3) == "table" and e3.kind or tostring(e3)))
  end)
  async.sleep(0.01)
  o:cancel()
  o:await()
  check.eq(log[1], "caught", "the outside cancel was caught")
  check.matches(log[2], "^group .*boom$", "the group raised the child's error")
  check.eq(log[3], "sleep ok", "no stale cancellation after the group")
end)

check.done()
