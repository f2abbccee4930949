-- Cancelling async.fs operations at random points leaks nothing: no
-- descriptor, no task, no temporary file, no half-written target.
local async = require "async"
local fs = require "async.fs"
local check = require "check"

local sh = check.sh
local dir = sh("mktemp -d /tmp/asyncrun-fscancel-XXXXXX")
local function p(name) return dir .. "/" .. name end

local function fd_count()
  return #fs.scandir("/proc/self/fd")
end

-- Orphaned requests finish on the thread pool and close what they opened
-- a moment after their task gave up: wait for the count to settle.
local function settle(want)
  local n
  for _ = 1, 200 do
    collectgarbage()
    n = fd_count()
    if n == want then return n end
    async.sleep(0.01)
  end
  return n
end

local rnd = 42
local function rand(n)
  rnd = (rnd * 1103515245 + 12345) % 2147483648
  return rnd % n
end

-- Lets the loop run k times (sleep(0) yields; a tiny sleep polls I/O).
local function wait_a_bit(k)
  for _ = 1, k do
    if rand(2) == 0 then async.sleep(0) else async.sleep(0.0001) end
  end
end

local text = {}
for i = 1, 30000 do text[i] = ("line %d of the cancellation test"):format(i) end
text = table.concat(text, "\n") .. "\n"

check.test("1,000 opens and reads cancelled at random points", function()
  fs.write_file(p("text"), text)
  collectgarbage()
  local before, mem0 = settle(fd_count()), async.stats().memory
  local finished = 0
  for i = 1, 1000 do
    local t = async.spawn(function()
      local f <close> = fs.open(p("text"))
      if i % 3 == 0 then
        for _ in f:lines() do end
      elseif i % 3 == 1 then
        for _ in f:chunks(4096) do end
      else
        while f:read(10000) do end
      end
      finished = finished + 1
    end)
    wait_a_bit(rand(12))
    t:cancel()
    pcall(t.await, t)
  end
  check.truthy(finished < 1000, "some were cancelled mid-way (" .. finished .. " finished)")
  check.eq(settle(before), before, "descriptors after 1,000 cancelled opens/reads")
  check.eq(async.stats().tasks, 2, "tasks left (main and this test)")
  collectgarbage(); collectgarbage()
  check.between(async.stats().memory - mem0, -1e6, 1e6, "Lua memory back")
end)

check.test("every operation cancelled at random points", function()
  fs.write_file(p("target"), "old content")
  local before = settle(fd_count())
  local ops = {
    function() return fs.stat(p("text")) end,
    function() return fs.scandir(dir) end,
    function() return fs.read_file(p("text")) end,
    function() fs.write_file(p("target"), text) end,
    function() fs.mkdir(p("d/e/f"), { parents = true }) end,
    function() pcall(fs.remove, p("d/e/f")) end,
    function() pcall(fs.rename, p("r1"), p("r2")) end,
    function()
      local f = fs.open(p("w"), "w")
      f:write(text)
      f:seek("end")
      f:close()
    end,
  }
  for i = 1, 800 do
    local op = ops[i % #ops + 1]
    local t = async.spawn(op)
    wait_a_bit(rand(10))
    t:cancel()
    pcall(t.await, t)
  end
  check.eq(settle(before), before, "descriptors")
  -- write_file was cancelled or finished: the target is whole, old or new.
  local got = fs.read_file(p("target"))
  check.truthy(got == "old content" or got == text, "target whole")
  -- Orphaned write_files remove their temporary file.
  local left
  for _ = 1, 100 do
    left = 0
    for _, e in ipairs(fs.scandir(dir)) do
      if e.name:find("%.tmp$") then left = left + 1 end
    end
    if left == 0 then break end
    async.sleep(0.01)
  end
  check.eq(left, 0, "temporary files left")
end)

check.test("cancelled while another task waits for the same file", function()
  local f <close> = fs.open(p("text"))
  local a = async.spawn(function() local n = 0; for _ in f:lines() do n = n + 1 end; return n end)
  local b = async.spawn(function() local n = 0; for _ in f:lines() do n = n + 1 end; return n end)
  async.sleep(0)
  a:cancel()
  local n = b:await()
  check.truthy(n > 0 and n <= 30000, "the other reader goes on: " .. n)
end)

check.test("a write cancelled mid-way leaves the file usable", function()
  local f <close> = fs.open(p("w2"), "w+")
  local big = ("x"):rep(16 * 1048576)
  local t = async.spawn(function() f:write(big) end)
  async.sleep(0.001)
  t:cancel()
  pcall(t.await, t)
  local pos = f:seek()
  check.truthy(pos % (4 * 1048576) == 0, "position at a piece boundary: " .. pos)
  f:write("END")
  f:seek("set", pos)
  check.eq(f:read(3), "END", "written after the cancelled write")
end)

os.execute("rm -rf " .. dir)
check.done()
