-- Outside clients for the server tests: shell commands (curl, the raw-socket
-- client in tests/helpers/raw_client.py) run in the background while the
-- test's own server keeps serving on the engine's loop. A blocking popen
-- would stall that loop, so each command writes its output to a file and
-- the test polls for its exit status with async.sleep.
local async = require "async"
local cjson = require "cjson"

local M = {}
local helpers = assert(os.getenv("AR_TEST_HELPERS"), "AR_TEST_HELPERS is not set")

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs cmd (a shell command line) in the background; waits for it at most
-- `timeout` seconds (default 60). Returns its stdout and exit status.
function M.run(cmd, timeout)
  local out = os.tmpname()
  local rc = out .. ".rc"
  os.execute(string.format("( ( %s ) > %s 2>%s.err; echo $? > %s.tmp; mv %s.tmp %s ) &",
                           cmd, out, out, rc, rc, rc))
  local deadline = async.now() + (timeout or 60)
  local code
  while true do
    code = slurp(rc)
    if code then break end
    if async.now() > deadline then
      error("outside command timed out: " .. cmd)
    end
    async.sleep(0.02)
  end
  local s = slurp(out)
  os.remove(out)
  os.remove(out .. ".err")
  os.remove(rc)
  return s, tonumber(code)
end

-- curl with the given arguments (a string); -s is added.
function M.curl(args, timeout)
  return M.run("curl -s " .. args, timeout)
end

-- The raw-socket client: one scenario, its JSON result decoded.
function M.raw(scenario, port, ...)
  local args = table.concat({ ... }, " ")
  local out, code = M.run(string.format("/usr/bin/python3 %s/raw_client.py %s %d %s",
                                        helpers, scenario, port, args), 90)
  assert(code == 0, "raw_client " .. scenario .. " failed: " .. tostring(out))
  return cjson.decode(out)
end

return M
