-- What /proc says about this process and others, for the process and net
-- tests: descriptors left open, children left behind, memory.
local async = require "async"
local process = require "async.process"

local M = {}

local function read_first_line(path)
  local f = io.open(path)
  if not f then return nil end
  local line = f:read("l")
  f:close()
  return line
end

M.pid = tonumber(read_first_line("/proc/self/stat"):match("^(%d+)"))

-- Open descriptors of this process, as a count. Listed by ls (a child of
-- ours), so the pipes of that very exec are counted alike every time.
function M.fds()
  local r = process.exec({ "ls", "/proc/" .. M.pid .. "/fd" })
  assert(r.code == 0, r.stderr)
  local n = 0
  for _ in r.stdout:gmatch("[^\n]+") do n = n + 1 end
  return n
end

-- True while /proc/<pid> exists: a zombie still has it, so false means
-- the process is gone and reaped.
function M.exists(pid)
  return read_first_line("/proc/" .. pid .. "/stat") ~= nil
end

-- Waits up to `seconds` for pid to be gone; returns true if it went.
function M.wait_gone(pid, seconds)
  local deadline = async.now() + seconds
  while M.exists(pid) do
    if async.now() > deadline then return false end
    async.sleep(0.02)
  end
  return true
end

-- Resident set size in bytes.
function M.rss()
  local statm = read_first_line("/proc/self/statm")
  return tonumber(statm:match("^%d+%s+(%d+)")) * 4096
end

return M
