-- Assertions for asyncrun's Lua tests. Each test file calls check.test()
-- for its cases and check.done() at the end, which prints
-- "N passed, N failed" and exits non-zero when anything failed.
local async = require "async"

local check = { passed = 0, failed = 0 }

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function fail(msg, level)
  error(msg, (level or 1) + 1)
end

function check.eq(got, want, what)
  if got ~= want then
    fail(string.format("%s: got %s, want %s", what or "value", fmt(got), fmt(want)), 2)
  end
end

function check.truthy(v, what)
  if not v then fail((what or "condition") .. " is false", 2) end
end

-- Lists compared element by element, up to n (or #want).
function check.list(got, want, what, n)
  n = n or #want
  for i = 1, n do
    if got[i] ~= want[i] then
      fail(string.format("%s[%d]: got %s, want %s", what or "list", i, fmt(got[i]), fmt(want[i])), 2)
    end
  end
  if #got ~= #want and n == #want then
    fail(string.format("%s: length %d, want %d", what or "list", #got, #want), 2)
  end
end

-- |got - want| <= tol
function check.near(got, want, tol, what)
  if type(got) ~= "number" or math.abs(got - want) > tol then
    fail(string.format("%s: got %s, want %s +- %s", what or "value", fmt(got), fmt(want), fmt(tol)), 2)
  end
end

function check.between(got, lo, hi, what)
  if type(got) ~= "number" or got < lo or got > hi then
    fail(string.format("%s: got %s, want within [%s, %s]", what or "value", fmt(got), fmt(lo), fmt(hi)), 2)
  end
end

-- Calls fn(...) and expects an error; with kind, an engine error of that
-- kind. Returns the error.
function check.raises(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then fail("expected an error" .. (kind and (" of kind " .. kind) or ""), 2) end
  if kind and (type(err) ~= "table" or err.kind ~= kind) then
    fail(string.format("expected error kind %s, got %s", kind, fmt(err)), 2)
  end
  return err
end

-- Raises when err (a string or an error's message) lacks the pattern.
function check.matches(s, pattern, what)
  s = tostring(s)
  if not s:find(pattern) then
    fail(string.format("%s: %q does not match %q", what or "text", s, pattern), 2)
  end
end

-- Runs one case as its own task, so a failure is reported and the file
-- goes on with the next case.
function check.test(name, fn)
  local t = async.spawn(fn)
  t.name = name
  local ok, err = pcall(t.await, t)
  if ok then
    local st = async.stats()
    if st.tasks ~= 1 or st.timers ~= 0 then
      -- Give cancelled leftovers one turn to end before judging.
      async.sleep(0.05)
      st = async.stats()
    end
    if st.tasks ~= 1 or st.timers ~= 0 then
      ok, err = false, string.format("left %d tasks and %d timers behind", st.tasks - 1, st.timers)
    end
  end
  if ok then
    check.passed = check.passed + 1
    io.write("ok   ", name, "\n")
  else
    check.failed = check.failed + 1
    io.write("FAIL ", name, ": ", tostring(err), "\n")
  end
  io.flush()
end

-- The first line a shell command prints (a blocking popen: for set-up,
-- not while the loop must run).
function check.sh(cmd)
  local h = io.popen(cmd)
  local out = h:read("l")
  h:close()
  return out
end

function check.done()
  io.write(string.format("%d passed, %d failed\n", check.passed, check.failed))
  io.flush()
  -- An error, not os.exit: the engine still shuts down cleanly, which the
  -- sanitizer builds check.
  if check.failed > 0 then error(check.failed .. " test(s) failed", 0) end
end

return check
