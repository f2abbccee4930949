-- Runs a Lua script in a child asyncrun process, bounded by a timeout: for
-- cases that crash, hang or end the process on purpose, which would take
-- the whole test file down if run in place.
--   local r = child.run(src [, { timeout = 20, args = "...", default_sigpipe = true }])
--   default_sigpipe: the child starts with SIGPIPE's default action (which
--   kills), whatever this process and its shell ignore.
--   r.status: exit status (128 + n when killed by signal n; 124 on timeout)
--   r.out, r.err: its stdout and stderr; r.secs: wall time
local async = require "async"

local child = {}

-- The running CLI (arg[-1] when asyncrun runs a script file).
child.bin = arg and arg[-1]
assert(child.bin, "child.lua: cannot find the asyncrun binary in arg[-1]")

local function shquote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
child.shquote = shquote

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

function child.run(src, opts)
  opts = opts or {}
  local base = os.tmpname()
  local script, out, err = base .. ".lua", base .. ".out", base .. ".err"
  local f = assert(io.open(script, "wb"))
  f:write(src)
  f:close()
  -- AR_CHILD_WRAP (say, "valgrind -q --error-exitcode=1") runs the child
  -- under a checker; its findings land in r.err and r.status.
  local wrap = os.getenv("AR_CHILD_WRAP") or ""
  local scale = wrap ~= "" and 5 or 1
  if opts.default_sigpipe then wrap = "env --default-signal=PIPE " .. wrap end
  local cmd = string.format("ulimit -c 0; exec timeout -k 2 %d %s %s %s %s >%s 2>%s",
    (opts.timeout or 20) * scale, wrap, shquote(child.bin),
    shquote(script), opts.args or "", shquote(out), shquote(err))
  local t0 = async.now()
  local _, how, code = os.execute(cmd)
  local r = { secs = async.now() - t0 }
  r.status = how == "signal" and 128 + code or code
  r.out, r.err = slurp(out), slurp(err)
  r.script = script
  os.remove(base); os.remove(script); os.remove(out); os.remove(err)
  return r
end

-- A one-line summary of a child run, for failure messages.
function child.describe(r)
  local what = (r.status == 124 or r.status == 137) and "timed out (hang; killed by timeout)"
    or r.status > 128 and ("killed by signal " .. (r.status - 128) .. " (crash)")
    or ("exit " .. r.status)
  return string.format("%s; stdout %q; stderr %q", what, r.out:sub(1, 300), r.err:sub(1, 600))
end

-- Runs src and expects a clean exit 0 with stdout matching pattern.
function child.expect_ok(src, pattern, opts)
  local r = child.run(src, opts)
  if r.status ~= 0 or (pattern and not r.out:find(pattern)) then
    error(string.format("child: want exit 0 and stdout /%s/; got %s", pattern or "", child.describe(r)), 2)
  end
  return r
end

return child
