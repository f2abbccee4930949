-- async.process.spawn: streaming pipes, wait, kill, cancellation that
-- leaves no child, zombie, pipe or handle behind.
local async = require "async"
local process = require "async.process"
local check = require "check"
local procfs = require "procfs"

check.test("stdout:lines() across \\n, \\r\\n and a last line without one", function()
  local p = process.spawn({ "printf", "a\\nb\\r\\n\\nlast" })
  local lines = {}
  for line in p.stdout:lines() do lines[#lines + 1] = line end
  check.list(lines, { "a", "b", "", "last" })
  local code, sig = p:wait()
  check.eq(code, 0)
  check.eq(sig, nil)
  check.eq(p.stdout:read(), nil, "read at the end")
  check.eq(p.stdout:read_line(), nil, "read_line at the end")
end)

check.test("stdin:write, stdin:close, read_all", function()
  local p <close> = process.spawn({ "cat" })
  check.truthy(p.pid > 0, "pid")
  p.stdin:write("hello ", "world", 42, "\n")
  p.stdin:close()
  check.eq(p.stdout:read_all(), "hello world42\n")
  check.eq(p:wait(), 0)
  check.eq(p.stderr:read_all(), "")
end)

check.test("read(n) returns at most n bytes as soon as some are there", function()
  local p = process.spawn({ "sh", "-c", "printf abcdef; sleep 0.2; printf gh" })
  check.eq(p.stdout:read(4), "abcd")
  check.eq(p.stdout:read(100), "ef")
  check.eq(p.stdout:read(100), "gh")
  check.eq(p.stdout:read(100), nil)
  p:wait()
end)

check.test("a line-by-line conversation", function()
  local p = process.spawn({ "/usr/bin/python3", "-u", "-c",
    "import sys\nfor l in sys.stdin:\n    print(l.strip().upper(), flush=True)" })
  for _, w in ipairs({ "one", "two", "three" }) do
    p.stdin:write(w, "\n")
    check.eq(p.stdout:read_line(), w:upper())
  end
  p.stdin:close()
  check.eq(p.stdout:read_line(), nil)
  check.eq(p:wait(), 0)
end)

check.test("kill, and wait's signal", function()
  local p = process.spawn({ "sleep", "30" }, { stdout = "ignore", stderr = "ignore" })
  check.eq(p.stdout, nil, "no pipe when ignored")
  check.eq(p:kill("SIGKILL"), true)
  local code, sig = p:wait()
  check.eq(code, nil)
  check.eq(sig, "SIGKILL")
  check.eq(p:kill(), false, "kill after exit")
  check.truthy(not procfs.exists(p.pid), "reaped")
  check.matches(select(2, pcall(p.kill, p, "SIGNOPE")), "unknown signal")
end)

check.test("several tasks wait on one process", function()
  local p = process.spawn({ "sh", "-c", "sleep 0.1; exit 7" })
  local got = async.gather({ function() return p:wait() end, function() return p:wait() end })
  check.eq(got[1], 7)
  check.eq(got[2], 7)
end)

check.test("a task cancelled in wait: SIGTERM, and the child is gone when it ends", function()
  local p = process.spawn({ "sleep", "30" })
  local pid = p.pid
  local t = async.spawn(function() return p:wait() end)
  async.sleep(0.1)
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.truthy(not procfs.exists(pid), "child gone and reaped")
  local code, sig = p:wait()
  check.eq(code, nil)
  check.eq(sig, "SIGTERM")
end)

check.test("a child that ignores SIGTERM gets SIGKILL after kill_grace", function()
  local p = process.spawn({ "/usr/bin/python3", "-c",
    "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(30)" },
    { kill_grace = 0.3 })
  check.eq(p.stdout:read_line(), "ready")
  local pid = p.pid
  local t = async.spawn(function() return p:wait() end)
  async.sleep(0.05)
  local t0 = async.now()
  t:cancel()
  async.sleep(0.1)
  check.eq(t.state, "waiting", "the cancelled task waits for the child")
  check.truthy(procfs.exists(pid), "still there during the grace period")
  check.raises("cancelled", t.await, t)
  check.between(async.now() - t0, 0.29, 5, "grace")
  check.truthy(not procfs.exists(pid), "killed and reaped")
  check.eq(select(2, p:wait()), "SIGKILL")
end)

check.test("wait_for on a process: timeout once the child is gone", function()
  local p = process.spawn({ "sleep", "30" })
  local e = check.raises("timeout", async.wait_for, function() return p:wait() end, 0.2)
  check.truthy(e, "timeout")
  check.truthy(not procfs.exists(p.pid), "child gone")
end)

check.test("exec cancelled mid-run leaves no child", function()
  local t = async.spawn(function()
    return process.exec({ "sh", "-c", "exec sleep 30" })
  end)
  async.sleep(0.2)
  local r = process.exec({ "pgrep", "-P", tostring(procfs.pid), "-x", "sleep" })
  local pid = tonumber(r.stdout:match("%d+"))
  check.truthy(pid, "found the child")
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.truthy(not procfs.exists(pid), "child gone when the task ends")
end)

check.test("a dropped process object: the child is stopped and reaped", function()
  local pid
  do
    local p = process.spawn({ "sleep", "30" })
    pid = p.pid
  end
  collectgarbage()
  collectgarbage()
  check.truthy(procfs.wait_gone(pid, 5), "child gone")
end)

check.test("<close> on a process stops a child still running", function()
  local pid
  do
    local p <close> = process.spawn({ "sleep", "30" })
    pid = p.pid
  end
  check.truthy(procfs.wait_gone(pid, 5), "child gone")
end)

check.test("reading a closed stream raises kind closed", function()
  local p = process.spawn({ "cat" })
  p.stdout:close()
  check.raises("closed", p.stdout.read, p.stdout)
  check.eq(p.stdout:closed(), true)
  p.stdin:close()
  check.eq(p:wait(), 0)
  check.raises("closed", p.stdin.write, p.stdin, "x")
end)

check.test("writing to a child that closed its input raises kind closed", function()
  local p = process.spawn({ "sh", "-c", "exec 0<&-; sleep 0.2" })
  async.sleep(0.05)
  local big = string.rep("x", 1 << 20)
  local e = check.raises("closed", function()
    for _ = 1, 64 do p.stdin:write(big) end
  end)
  check.eq(e.errno, "EPIPE")
  p:wait()
end)

check.test("a fast writer nobody reads: the child waits, memory stays flat", function()
  local p = process.spawn({ "sh", "-c", "exec cat /dev/zero" })
  async.sleep(0.3)
  local before = collectgarbage("count")
  local rss0 = procfs.rss()
  async.sleep(0.5)
  check.truthy(p.stdout:buffered() <= 200 * 1024, "buffer bounded: " .. p.stdout:buffered())
  check.truthy(procfs.rss() - rss0 < 8 << 20, "RSS flat")
  check.truthy(collectgarbage("count") - before < 1024, "Lua memory flat")
  check.eq(#p.stdout:read(10), 10)
  p:kill("SIGKILL")
  p:wait()
end)

check.test("1,000 runs leave no descriptor open", function()
  -- pipes of earlier cases' processes close when collected
  collectgarbage()
  -- Earlier tests' handles may still be closing (their close callbacks
  -- need a loop turn): let them finish before counting.
  collectgarbage()
  collectgarbage()
  async.sleep(0.1)
  local before = procfs.fds()
  local fns = {}
  for i = 1, 1000 do
    if i % 10 == 0 then
      -- spawned, then cancelled while waiting
      fns[i] = function()
        local p = process.spawn({ "sleep", "30" })
        local t = async.spawn(function() return p:wait() end)
        async.sleep(0)
        t:cancel()
        pcall(t.await, t)
        p:wait()
        return true
      end
    else
      fns[i] = function() return process.exec({ "true" }).code == 0 end
    end
  end
  local ok = async.map(function(f) return f() end, fns, { concurrency = 50 })
  for i = 1, 1000 do check.eq(ok[i], true, "run " .. i) end
  collectgarbage()
  collectgarbage()
  async.sleep(0.1)
  check.eq(procfs.fds(), before, "descriptors")
  local r = process.exec({ "pgrep", "-P", tostring(procfs.pid) })
  check.eq(r.stdout, "", "no child left")
end)

check.done()
