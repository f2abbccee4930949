-- async.group: structured concurrency. The call ends when the body and all
-- children have; the first failure cancels the rest and is raised with the
-- others attached; cancelling the parent cancels the children first.
local async = require "async"
local check = require "check"

check.test("waits for every child and returns the body's results", function()
  local done = {}
  local t1
  local a, b = async.group(function(g)
    t1 = g:spawn(function(x) async.sleep(0.02); done[#done + 1] = x; return x * 2 end, 1)
    g:spawn(function() async.sleep(0.01); done[#done + 1] = 2 end)
    g:spawn(function() done[#done + 1] = 3 end)
    check.eq(g:size(), 3, "live children")
    return "body", 42
  end)
  check.eq(a, "body"); check.eq(b, 42)
  check.list(done, { 3, 2, 1 }, "every child ended before group returned")
  check.eq(t1:await(), 2, "children's handles keep their results")
  -- a group with no children
  check.eq(async.group(function() return "alone" end), "alone")
end)

check.test("a failing child cancels its siblings and the body", function()
  local sibling_cancelled, body_cancelled, cleanup_done = false, false, false
  local sib
  local err = check.raises(nil, async.group, function(g)
    g:spawn(function() async.sleep(0.01); error("child broke") end)
    sib = g:spawn(function()
      local ok, e = pcall(async.sleep, 10)
      sibling_cancelled = not ok and e.kind == "cancelled"
      async.sleep(0.01) -- cleanup that waits: the group waits for it
      cleanup_done = true
      error(e)
    end)
    local ok, e = pcall(async.sleep, 10)
    body_cancelled = not ok and e.kind == "cancelled"
    error(e)
  end)
  check.matches(err, "child broke$")
  check.eq(sibling_cancelled, true, "sibling cancelled")
  check.eq(body_cancelled, true, "body cancelled")
  check.eq(cleanup_done, true, "the group waited for the sibling's cleanup")
  check.eq(sib:cancelled(), true)
end)

check.test("later failures are attached to the first, not lost", function()
  local first = { msg = "first" }
  local err = check.raises(nil, async.group, function(g)
    g:spawn(function() async.sleep(0.005); error(first) end)
    g:spawn(function()
      pcall(async.sleep, 10)
      error({ msg = "cleanup failed" })
    end)
    g:spawn(function() pcall(async.sleep, 10); error("cleanup failed too") end)
  end)
  check.eq(err, first, "the first error itself")
  check.eq(#err.others, 2, "others")
  check.eq(err.others[1].msg, "cleanup failed")
  check.matches(err.others[2], "cleanup failed too$")
  -- a first error that is a string cannot carry them: it comes wrapped
  err = check.raises("failed", async.group, function(g)
    g:spawn(function() async.sleep(0.005); error("boom", 0) end)
    g:spawn(function() pcall(async.sleep, 10); error("bang", 0) end)
  end)
  check.eq(err.cause, "boom")
  check.eq(err.others[1], "bang")
  check.matches(tostring(err), "boom %(and 1 more error in the group%)")
end)

check.test("a failing body cancels the children and is raised", function()
  local child
  local err = check.raises(nil, async.group, function(g)
    child = g:spawn(function() async.sleep(10) end)
    async.sleep(0)
    error("body broke")
  end)
  check.matches(err, "body broke$")
  check.eq(child:cancelled(), true)
  -- a child failing after the body's error comes second
  err = check.raises(nil, async.group, function(g)
    g:spawn(function() pcall(async.sleep, 10); error("child, later") end)
    async.sleep(0)
    error({ body = true })
  end)
  check.eq(err.body, true)
  check.matches(err.others[1], "child, later$")
end)

check.test("cancelling the parent cancels the children first, then waits", function()
  local log = {}
  local kids = {}
  local parent = async.spawn(function()
    async.group(function(g)
      for i = 1, 3 do
        kids[i] = g:spawn(function()
          local ok = pcall(async.sleep, 10)
          async.sleep(0.005) -- cleanup that waits
          log[#log + 1] = "child " .. i .. (ok and " finished" or " cancelled")
        end)
      end
      async.sleep(10)
    end)
    log[#log + 1] = "not reached"
  end)
  async.sleep(0.01)
  parent:cancel()
  check.raises("cancelled", parent.await, parent)
  check.list(log, { "child 1 cancelled", "child 2 cancelled", "child 3 cancelled" })
  for i = 1, 3 do check.eq(kids[i].state, "done", "child " .. i .. " ended") end
end)

check.test("a group cancelled while it waits for children", function()
  local ended = 0
  local parent = async.spawn(function()
    return async.group(function(g)
      for _ = 1, 3 do
        g:spawn(function() pcall(async.sleep, 10); async.sleep(0.002); ended = ended + 1 end)
      end
      return "body done"
    end)
  end)
  async.sleep(0.01)
  parent:cancel()
  check.raises("cancelled", parent.await, parent)
  check.eq(ended, 3, "children ended before the group raised")
end)

check.test("group works under wait_for", function()
  local cancelled = 0
  check.raises("timeout", async.wait_for, function()
    return async.group(function(g)
      for _ = 1, 4 do
        g:spawn(function()
          local ok = pcall(async.sleep, 10)
          if not ok then cancelled = cancelled + 1 end
        end)
      end
    end)
  end, 0.02)
  check.eq(cancelled, 4)
end)

check.test("children may spawn into the group; spawning after the end fails", function()
  local log = {}
  local saved
  async.group(function(g)
    saved = g
    g:spawn(function()
      async.sleep(0.005)
      g:spawn(function() async.sleep(0.005); log[#log + 1] = "grandchild" end)
      log[#log + 1] = "child"
    end)
  end)
  check.list(log, { "child", "grandchild" }, "the group waited for the late child")
  local e = check.raises("invalid_state", saved.spawn, saved, function() end)
  check.matches(e, "group has ended")
  check.matches(tostring(saved), "^group %(ended, 0 live%)$")
end)

check.test("a child spawned into a failing group never starts", function()
  local started = false
  check.raises(nil, async.group, function(g)
    g:spawn(function() error("fail fast") end)
    local ok = pcall(async.sleep, 10)
    check.eq(ok, false)
    local late = g:spawn(function() started = true end)
    async.sleep(0)
    check.eq(late:cancelled(), true)
  end)
  check.eq(started, false)
end)

check.test("nested groups and many children", function()
  local n = 0
  local r = async.group(function(g)
    for _ = 1, 10 do
      g:spawn(function()
        async.group(function(inner)
          for _ = 1, 100 do inner:spawn(function() async.sleep(0); n = n + 1 end) end
        end)
      end)
    end
    return "outer"
  end)
  check.eq(r, "outer"); check.eq(n, 1000)
  -- a long-lived group whose children come and go keeps memory flat
  collectgarbage(); collectgarbage()
  local before = async.stats().memory
  async.group(function(g)
    for _ = 1, 20000 do g:spawn(function() end); if _ % 100 == 0 then async.sleep(0) end end
  end)
  collectgarbage(); collectgarbage()
  check.between(async.stats().memory - before, -1e6, 5e5, "memory after 20,000 children")
end)

check.test("misuse raises clear errors", function()
  local e = check.raises(nil, async.group, 42)
  check.matches(e, "bad argument #1 to 'async.group' %(function expected, got number%)")
  async.group(function(g)
    e = check.raises(nil, g.spawn, g, 42)
    check.matches(e, "function expected, got number")
    e = check.raises(nil, g.spawn, {}, function() end)
    check.matches(e, "asyncrun.group expected, got table")
  end)
  e = check.raises(nil, coroutine.wrap(function() async.group(function() end) end))
  check.matches(e, "must be called from an asyncrun task")
end)

check.done()
