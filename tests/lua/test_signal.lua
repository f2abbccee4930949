-- async.signal: waiting for a signal, counting those nobody waited for,
-- cancelling a wait, closing.
local async = require "async"
local fs = require "async.fs"
local check = require "check"

local pid = fs.read_file("/proc/self/stat"):match("^%d+")

-- A child sends the signal; os.execute returns once it has been sent.
local function send(name)
  check.truthy(os.execute(("kill -%s %s"):format(name, pid)), "kill ran")
end

check.test("wait returns when the signal arrives", function()
  local s <close> = async.signal("SIGUSR1")
  check.eq(tostring(s), "signal SIGUSR1", "tostring")
  check.eq(s:name(), "SIGUSR1", "name")
  local t = async.spawn(function() return s:wait() end)
  async.sleep(0.01)
  check.eq(t:done(), false, "waiting")
  send("USR1")
  check.eq(async.wait_for(t, 5), true, "wait returned")
end)

check.test("signals that arrive while nobody waits are counted", function()
  local s <close> = async.signal("USR2") -- the SIG prefix is optional
  send("USR2")
  async.sleep(0.02)
  send("USR2")
  async.sleep(0.02)
  check.eq(s:wait(), true, "first, at once")
  check.eq(s:wait(), true, "second, at once")
  local t = async.spawn(function() return s:wait() end)
  async.sleep(0.02)
  check.eq(t:done(), false, "a third one waits")
  t:cancel()
  check.raises("cancelled", t.await, t)
end)

check.test("every waiter wakes, and every object of the signal", function()
  local a <close> = async.signal("SIGHUP")
  local b <close> = async.signal("SIGHUP")
  local ts = {}
  for i = 1, 3 do ts[i] = async.spawn(function() return a:wait() end) end
  ts[4] = async.spawn(function() return b:wait() end)
  async.sleep(0.01)
  send("HUP")
  local r = async.wait_for(function() return async.gather(ts) end, 5)
  check.list(r, { true, true, true, true }, "all woke")
end)

check.test("a cancelled wait leaves nothing behind; wait_for times out", function()
  local s <close> = async.signal("SIGUSR1")
  local t = async.spawn(function() return s:wait() end)
  async.sleep(0.01)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.raises("timeout", async.wait_for, function() return s:wait() end, 0.05)
  -- The object still works after both.
  local w = async.spawn(function() return s:wait() end)
  async.sleep(0.01)
  send("USR1")
  check.eq(async.wait_for(w, 5), true, "still delivers")
end)

check.test("close wakes waiters with kind closed; closing twice is fine", function()
  local s = async.signal("SIGUSR1")
  local t = async.spawn(function() return s:wait() end)
  async.sleep(0.01)
  s:close()
  local err = check.raises("closed", t.await, t)
  check.matches(err.message, "SIGUSR1")
  check.raises("closed", s.wait, s)
  s:close()
  check.matches(tostring(s), "closed")
end)

check.test("collected objects close their handle", function()
  for _ = 1, 100 do async.signal("SIGUSR2") end
  collectgarbage(); collectgarbage()
  async.sleep(0.01)
  -- One left open still gets the signal.
  local s <close> = async.signal("SIGUSR2")
  send("USR2")
  check.eq(async.wait_for(function() return s:wait() end, 5), true, "delivered")
end)

check.test("bad names are argument errors", function()
  check.matches(check.raises(nil, async.signal, "SIGFOO"), "unknown signal name 'SIGFOO'")
  check.matches(check.raises(nil, async.signal, "KILL"), "SIGKILL cannot be caught")
  check.matches(check.raises(nil, async.signal), "bad argument #1")
  local s <close> = async.signal("SIGUSR1")
  check.matches(check.raises(nil, s.wait, {}), "asyncrun.signal expected")
end)

-- Runs a script in a child asyncrun; returns how it ended and its output.
local function child(code)
  local script = os.tmpname()
  local f = io.open(script, "w")
  f:write('local async = require "async"\n',
          'local pid = io.open("/proc/self/stat"):read("n")\n',
          -- io.popen, not os.execute: system() ignores SIGINT meanwhile.
          'local function kill(sig) io.popen("kill -" .. sig .. " " .. pid):close() end\n',
          code)
  f:close()
  local out = os.tmpname()
  local _, how, status = os.execute(("%s %s >%s 2>&1"):format(arg[-1], script, out))
  local text = io.open(out):read("a")
  os.remove(script)
  os.remove(out)
  return how, status, text
end

check.test("a script waiting on SIGINT gets Ctrl-C; closed, the command's is back", function()
  local how, status, out = child([[
local s = async.signal("SIGINT")
async.spawn(function() async.sleep(0.05); kill("INT") end)
s:wait()
print("script got SIGINT")
s:close()
kill("INT") -- now the command's: the run stops, status 130
async.sleep(5)
print("not interrupted")
]])
  check.matches(out, "script got SIGINT")
  check.truthy(not out:find("not interrupted"), "interrupted: " .. out)
  check.eq(how, "exit", "ended by exit, not killed by the signal")
  check.eq(status, 130, "status")
  -- Opened and closed without waiting: the same.
  how, status = child([[
async.signal("SIGINT"):close()
async.signal("SIGTERM"):close()
kill("TERM")
async.sleep(5)
]])
  check.eq(how, "exit", "SIGTERM after close: exit")
  check.eq(status, 143, "SIGTERM status")
end)

check.test("an open signal nobody waits for does not hide a deadlock", function()
  local script = os.tmpname()
  local f = io.open(script, "w")
  f:write('local async = require "async"\n',
          'local s = async.signal("SIGUSR1")\n',
          'async.queue():get()\n')
  f:close()
  local h = io.popen(("%s %s 2>&1; echo status=$?"):format(arg[-1], script))
  local out = h:read("a")
  h:close()
  os.remove(script)
  check.matches(out, "deadlock")
  check.matches(out, "status=1")
end)

check.done()
