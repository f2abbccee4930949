-- async.process.exec: exit codes, signals, missing programs, timeouts,
-- large output on both pipes at once, input, arguments, environment.
local async = require "async"
local process = require "async.process"
local check = require "check"

check.test("exec sh -c 'exit 3': a non-zero exit is a result", function()
  local r = process.exec({ "sh", "-c", "exit 3" })
  check.eq(r.code, 3)
  check.eq(r.signal, nil)
  check.eq(r.stdout, "")
  check.eq(r.stderr, "")
end)

check.test("exec true", function()
  local r = process.exec({ "true" })
  check.eq(r.code, 0)
  check.eq(r.signal, nil)
end)

check.test("stdout and stderr are kept apart", function()
  local r = process.exec({ "sh", "-c", "echo out; echo err >&2; exit 1" })
  check.eq(r.code, 1)
  check.eq(r.stdout, "out\n")
  check.eq(r.stderr, "err\n")
end)

check.test("a missing program raises kind spawn naming it and the errno", function()
  local e = check.raises("spawn", process.exec, { "no-such-program-asyncrun", "x" })
  check.eq(e.program, "no-such-program-asyncrun")
  check.eq(e.errno, "ENOENT")
  check.matches(e.message, "no%-such%-program%-asyncrun")
  check.matches(e.message, "ENOENT")
  check.matches(tostring(e), "spawn: cannot run")
  -- a directory is not a program either
  e = check.raises("spawn", process.exec, { "/tmp" })
  check.eq(e.errno, "EACCES")
  -- nor is a missing working directory a place to run one
  e = check.raises("spawn", process.exec, { "true" }, { cwd = "/no/such/dir" })
  check.eq(e.errno, "ENOENT")
  check.matches(e.message, "/no/such/dir")
end)

check.test("a timeout kills the child, then raises kind timeout", function()
  local t0 = async.now()
  local e = check.raises("timeout", process.exec, { "sleep", "30" }, { timeout = 0.3 })
  check.between(async.now() - t0, 0.29, 5, "elapsed")
  check.eq(e.program, "sleep")
  check.matches(e.message, "timed out after 0.3 s")
end)

check.test("a child killed by a signal: code nil, signal's name", function()
  local r = process.exec({ "sh", "-c", "kill -TERM $$" })
  check.eq(r.code, nil)
  check.eq(r.signal, "SIGTERM")
end)

check.test("10 MB on stdout and 10 MB on stderr at once: no deadlock, nothing lost", function()
  -- Alternating 64 KiB blocking writes: a reader that drained one pipe
  -- and not the other would leave the child stuck for ever.
  local script = [[
import os
out = b"0123456789abcdef" * 4096
err = b"fedcba9876543210" * 4096
for i in range(160):
    for fd, data in ((1, out), (2, err)):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
]]
  local t0 = async.now()
  local r = process.exec({ "/usr/bin/python3", "-c", script })
  check.eq(r.code, 0)
  check.eq(#r.stdout, 10485760, "stdout length")
  check.eq(#r.stderr, 10485760, "stderr length")
  check.truthy(r.stdout == string.rep("0123456789abcdef", 655360), "stdout bytes")
  check.truthy(r.stderr == string.rep("fedcba9876543210", 655360), "stderr bytes")
  check.between(async.now() - t0, 0, 30, "elapsed")
end)

check.test("arguments with shell metacharacters pass through untouched", function()
  local args = { "$(echo no)", "`id`", "a b  c", "'single'", '"double"', "; rm -rf /tmp/x",
                 "| cat", "&& echo", "*", "~", "$HOME", "\\n", "<>", "", "ünïcödé" }
  local argv = { "printf", "[%s]\n" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = process.exec(argv)
  check.eq(r.code, 0)
  local want = {}
  for i, a in ipairs(args) do want[i] = "[" .. a .. "]\n" end
  check.eq(r.stdout, table.concat(want))
  check.eq(#argv, #args + 2, "argv is left as it was")
end)

check.test("stdin as a string", function()
  local input = string.rep("line of input\n", 100000) -- 1.4 MB
  local r = process.exec({ "cat" }, { stdin = input })
  check.eq(r.code, 0)
  check.truthy(r.stdout == input, "echoed whole")
  -- a child that does not read its input exits normally all the same
  r = process.exec({ "true" }, { stdin = input })
  check.eq(r.code, 0)
  -- without stdin the child reads an empty input
  r = process.exec({ "cat" })
  check.eq(r.stdout, "")
end)

check.test("cwd", function()
  local r = process.exec({ "pwd" }, { cwd = "/tmp" })
  check.eq(r.stdout, "/tmp\n")
end)

check.test("env replaces the environment; inherit_env extends it", function()
  local function sorted_env(r)
    local vars = {}
    for line in r.stdout:gmatch("[^\n]+") do vars[#vars + 1] = line end
    table.sort(vars)
    return vars
  end
  local r = process.exec({ "/usr/bin/env" }, { env = { AR_A = "one", AR_B = 2 } })
  check.list(sorted_env(r), { "AR_A=one", "AR_B=2" })
  r = process.exec({ "/bin/sh", "-c", "echo \"$AR_A:${HOME:+set}\"" },
    { env = { AR_A = "x y" }, inherit_env = true })
  check.eq(r.stdout, "x y:" .. (os.getenv("HOME") and "set" or "") .. "\n")
  -- false leaves an inherited variable out
  r = process.exec({ "/usr/bin/env" }, { env = { HOME = false, AR_C = "c" }, inherit_env = true })
  local vars = sorted_env(r)
  local home, c = false, false
  for _, v in ipairs(vars) do
    if v:match("^HOME=") then home = true end
    if v == "AR_C=c" then c = true end
  end
  check.eq(home, false, "HOME left out")
  check.eq(c, true, "AR_C added")
  check.truthy(#vars > 2, "the rest inherited")
end)

check.test("stdout inherit or ignore: no field", function()
  local r = process.exec({ "true" }, { stdout = "ignore", stderr = "ignore" })
  check.eq(r.stdout, nil)
  check.eq(r.stderr, nil)
end)

check.test("misuse raises bad argument", function()
  check.matches(select(2, pcall(process.exec, "ls")), "bad argument #1")
  check.matches(select(2, pcall(process.exec, {})), "bad argument #1")
  check.matches(select(2, pcall(process.exec, { "ls" }, { timeout = -1 })), "timeout")
  check.matches(select(2, pcall(process.exec, { "ls" }, { stdout = "file" })), "stdout")
  check.matches(select(2, pcall(process.exec, { "ls", {} })), "argv%[2%]")
end)

check.test("exec concurrently: 50 at a time", function()
  local fns = {}
  for i = 1, 200 do
    fns[i] = function() return process.exec({ "sh", "-c", "echo " .. i }).stdout end
  end
  local out = async.map(function(f) return f() end, fns, { concurrency = 50 })
  for i = 1, 200 do check.eq(out[i], i .. "\n") end
end)

check.done()
