-- fs.write_file is atomic: a writer killed with SIGKILL while it writes
-- (after the temporary file exists, before the rename) leaves the old
-- content whole.
local async = require "async"
local fs = require "async.fs"
local check = require "check"

local sh = check.sh
local dir = sh("mktemp -d /tmp/asyncrun-fsatomic-XXXXXX")
local asyncrun = arg[-1]
local target = dir .. "/target"
local old = ("old content, line by line\n"):rep(40000)

-- The writer: a separate asyncrun replacing target with 100 MB.
fs.write_file(dir .. "/writer.lua", [[
local fs = require "async.fs"
fs.write_file(arg[1], ("NEW!"):rep(25 * 1048576))
]])

local function temp_file()
  for _, e in ipairs(fs.scandir(dir)) do
    if e.name:find("^%.target%..*%.tmp$") then return dir .. "/" .. e.name end
  end
end

local function gone(pid)
  local ok, st = pcall(fs.read_file, "/proc/" .. pid .. "/stat")
  return not ok or st:match("^%d+ %b() (%a)") == "Z"
end

for round = 1, 3 do
  check.test("writer killed during write_file, round " .. round, function()
    fs.write_file(target, old)
    local pid = sh(("%s %s/writer.lua %s >/dev/null 2>&1 & echo $!"):format(asyncrun, dir, target))
    check.truthy(tonumber(pid), "child pid")
    -- Wait until the temporary file has some data, then a little more
    -- each round, and kill.
    local tmp, size
    local deadline = async.now() + 20
    repeat
      async.sleep(0.001)
      tmp = temp_file()
      if tmp then
        local ok, st = pcall(fs.stat, tmp)
        size = ok and st.size or 0
      end
    until (tmp and size > 0) or async.now() > deadline
    check.truthy(tmp and size > 0, "the writer started writing")
    async.sleep(0.01 * (round - 1))
    os.execute("kill -9 " .. pid)
    deadline = async.now() + 10
    while not gone(pid) and async.now() < deadline do async.sleep(0.01) end
    check.truthy(gone(pid), "writer killed")
    local got = fs.read_file(target)
    check.eq(#got, #old, "target size")
    check.truthy(got == old, "the old content is whole")
    -- The crash leaves the hidden temporary file (nobody could remove it).
    tmp = temp_file()
    if tmp then fs.remove(tmp) end
  end)
end

check.test("the same writer, not killed, replaces the content whole", function()
  fs.write_file(target, old)
  check.truthy(os.execute(("%s %s/writer.lua %s"):format(asyncrun, dir, target)), "writer ran")
  local st = fs.stat(target)
  check.eq(st.size, 100 * 1048576, "new size")
  local f <close> = fs.open(target)
  check.eq(f:read(8), "NEW!NEW!", "new content")
  check.eq(temp_file(), nil, "no temporary file left")
end)

os.execute("rm -rf " .. dir)
check.done()
