-- async.fs: the contract of docs/fs.md, file by file and error by error.
local async = require "async"
local fs = require "async.fs"
local check = require "check"

local sh = check.sh
local dir = sh("mktemp -d /tmp/asyncrun-fs-XXXXXX")
local function p(name) return dir .. "/" .. name end

-- Plain Lua reference for what lines() must give: "\n" and "\r\n" end
-- lines; a last line without either keeps all its bytes.
local function split_lines(s)
  local out, i = {}, 1
  while i <= #s do
    local j = s:find("\n", i, true)
    if not j then out[#out + 1] = s:sub(i); break end
    local line = s:sub(i, j - 1)
    out[#out + 1] = line:sub(-1) == "\r" and line:sub(1, -2) or line
    i = j + 1
  end
  return out
end

local function lines_of(path)
  local f <close> = fs.open(path)
  local got = {}
  for line in f:lines() do got[#got + 1] = line end
  return got
end

local function fd_count()
  return #fs.scandir("/proc/self/fd")
end

-- The descriptor count once it is `want`, or after 2 s: a close may finish
-- on the thread pool, which a loaded machine runs late.
local function fd_count_settled(want)
  for _ = 1, 200 do
    if fd_count() == want then break end
    async.sleep(0.01)
  end
  return fd_count()
end

-- The descriptor count once earlier tests' files are collected and their
-- closes (on the thread pool) have finished: steady for 50 ms, or 2 s.
local function fd_count_quiet()
  collectgarbage()
  collectgarbage()
  local last, same_since = fd_count(), async.now()
  local deadline = async.now() + 2
  while async.now() < deadline and async.now() - same_since < 0.05 do
    async.sleep(0.01)
    local n = fd_count()
    if n ~= last then last, same_since = n, async.now() end
  end
  return last
end

check.test("open, write, seek, read, close", function()
  local f = fs.open(p("a.txt"), "w+")
  check.eq(f:write("hello, "), f, "write returns the file")
  f:write("world\n"):write(12345)
  check.eq(f:seek(), 18, "position after writes")
  check.eq(f:seek("set", 0), 0, "seek set")
  check.eq(f:read(5), "hello", "read 5")
  check.eq(f:seek("cur", 2), 7, "seek cur")
  check.eq(f:read(100), "world\n12345", "short read at the end")
  check.eq(f:read(1), nil, "nil at end of file")
  check.eq(f:seek("end", -2), 16, "seek end")
  check.eq(f:read(2), "45", "read after seek end")
  check.eq(f:read(0), "", "read(0)")
  check.eq(f:close(), true, "close")
  check.eq(f:close(), true, "closing twice does nothing")
  check.matches(tostring(f), "closed")
  local err = check.raises(nil, f.read, f, 1)
  check.matches(err, "closed file")
  check.eq(fs.read_file(p("a.txt")), "hello, world\n12345", "content")
end)

check.test("modes: r refuses writes, a appends, x refuses to overwrite", function()
  fs.write_file(p("m.txt"), "one\n")
  local f <close> = fs.open(p("m.txt"), "a")
  f:write("two\n")
  check.eq(f:seek(), 8, "append position is the end")
  f:close()
  check.eq(fs.read_file(p("m.txt")), "one\ntwo\n", "appended")
  local r <close> = fs.open(p("m.txt"), "r")
  local err = check.raises("fs", r.write, r, "x")
  check.eq(err.errno, "EBADF", "write to a file opened for reading")
  check.eq(err.op, "write", "op")
  err = check.raises("fs", fs.open, p("m.txt"), "wx")
  check.eq(err.errno, "EEXIST", "x mode")
  local e2 = check.raises(nil, fs.open, p("m.txt"), "rw")
  check.matches(e2, "bad argument #2 to '[%w.]*open' %(invalid mode%)")
  local rp <close> = fs.open(p("m.txt"), "r+")
  rp:seek("set", 4)
  rp:write("TWO")
  rp:seek("set", 0)
  check.eq(rp:read(100), "one\nTWO\n", "r+ overwrites in place")
end)

check.test("lines: CRLF, no final newline, empty file, empty lines", function()
  local cases = {
    "", "\n", "a", "a\n", "a\nb", "a\r\nb\r\n", "\r\n\r\n", "x\n\ny\n\n",
    "only\r", "mixed\r\nends\nhere",
  }
  for i, s in ipairs(cases) do
    fs.write_file(p("l" .. i), s)
    check.list(lines_of(p("l" .. i)), split_lines(s), ("case %d %q"):format(i, s))
  end
end)

check.test("lines across buffer boundaries and longer than a buffer", function()
  -- lines() and chunks() read 2 MiB at a time; read(n) starts at 64 KiB
  -- and doubles. Put line ends, and a "\r" whose "\n" is in the next
  -- buffer, on those edges, and a line longer than a buffer.
  local MiB = 1048576
  local parts, size = {}, 0
  local function add(s) parts[#parts + 1] = s; size = size + #s end
  local rnd = 12345
  local function rand(n) rnd = (rnd * 1103515245 + 12345) % 2147483648; return rnd % n end
  local function fill_to(limit) -- random lines up to limit - 1, then "\r\n"
    while size < limit - 1 do
      local n = math.min(rand(200), limit - 1 - size)
      add(("a"):rep(n))
      if size < limit - 1 then add("\n") end
    end
    add("\r\n") -- "\r" at limit - 1, "\n" at limit
  end
  fill_to(65536)
  fill_to(65536 + 131072)
  fill_to(2 * MiB)
  add(("L"):rep(3 * MiB) .. "\r\n") -- longer than a buffer
  fill_to(6 * MiB)
  for i = 1, 20000 do add(("line %d with some text\r\n"):format(i)) end
  add("no newline at the end")
  local s = table.concat(parts)
  fs.write_file(p("big.txt"), s)
  local got, want = lines_of(p("big.txt")), split_lines(s)
  check.eq(#got, #want, "line count")
  check.list(got, want, "lines")
  -- The same through chunks of an odd size, and read(n).
  local f <close> = fs.open(p("big.txt"))
  local acc = {}
  for c in f:chunks(77777) do
    if #c ~= 77777 then check.eq(#acc * 77777 + #c, #s, "only the last chunk is short") end
    acc[#acc + 1] = c
  end
  check.eq(table.concat(acc), s, "chunks")
  f:seek("set", 0)
  acc = {}
  while true do
    local c = f:read(10007)
    if not c then break end
    acc[#acc + 1] = c
  end
  check.eq(table.concat(acc), s, "read(n) to the end")
  f:seek("set", 65530)
  check.eq(f:read(10), s:sub(65531, 65540), "read across a boundary after seek")
end)

check.test("after the end, a read looks again: the file may have grown", function()
  fs.write_file(p("grow"), "start\n")
  local f <close> = fs.open(p("grow"))
  check.eq(f:read(100), "start\n", "all of it")
  check.eq(f:read(100), nil, "end")
  local w <close> = fs.open(p("grow"), "a")
  w:write("more\n")
  check.eq(f:read(100), "more\n", "what was appended")
  check.eq(f:read(100), nil, "end again")
end)

check.test("read_file, write_file: whole content, no temporary file left", function()
  local data = ("0123456789"):rep(100000) .. "\0binary\255"
  fs.write_file(p("w.bin"), data)
  check.eq(fs.read_file(p("w.bin")), data, "round trip")
  fs.write_file(p("w.bin"), "short")
  check.eq(fs.read_file(p("w.bin")), "short", "replaced")
  fs.write_file(p("empty"), "")
  check.eq(fs.read_file(p("empty")), "", "empty")
  check.eq(fs.read_file("/proc/self/stat"):match("^%d+") ~= nil, true, "a /proc file (size 0)")
  for _, e in ipairs(fs.scandir(dir)) do
    check.truthy(not e.name:find("%.tmp$"), "temporary file left: " .. e.name)
  end
end)

check.test("write_file keeps the permissions of the file it replaces", function()
  fs.write_file(p("perm"), "a")
  os.execute("chmod 640 " .. p("perm"))
  fs.write_file(p("perm"), "b")
  check.eq(fs.stat(p("perm")).mode, 416, "mode 0640 kept") -- 0640
end)

check.test("stat: size, mtime, mode, type", function()
  fs.write_file(p("s.txt"), "12345")
  local st = fs.stat(p("s.txt"))
  check.eq(st.size, 5, "size")
  check.eq(st.type, "file", "type")
  check.eq(math.type(st.mode), "integer", "mode")
  check.near(st.mtime, os.time(), 5, "mtime")
  check.eq(fs.stat(dir).type, "directory", "directory")
  os.execute(("ln -s s.txt %s"):format(p("link")))
  check.eq(fs.stat(p("link")).type, "link", "a link is described itself")
  check.eq(fs.stat(p("link"), { follow = true }).type, "file", "follow")
  check.eq(fs.stat(p("link"), { follow = true }).size, 5, "follow size")
  check.eq(fs.stat("/dev/null").type, "char", "char device")
end)

check.test("scandir: sorted by name, with types", function()
  local d = p("sd")
  fs.mkdir(d)
  for _, n in ipairs({ "b", "a", "C", "a.b", "z" }) do fs.write_file(d .. "/" .. n, n) end
  fs.mkdir(d .. "/sub")
  os.execute(("ln -s a %s/ln"):format(d))
  local names, types = {}, {}
  for i, e in ipairs(fs.scandir(d)) do names[i] = e.name; types[e.name] = e.type end
  check.list(names, { "C", "a", "a.b", "b", "ln", "sub", "z" }, "names")
  check.eq(types.sub, "directory", "dir type")
  check.eq(types.a, "file", "file type")
  check.eq(types.ln, "link", "link type")
  check.eq(#fs.scandir(d .. "/sub"), 0, "empty folder")
end)

check.test("mkdir (parents), remove, rename", function()
  fs.mkdir(p("x/y/z"), { parents = true })
  check.eq(fs.stat(p("x/y/z")).type, "directory", "made")
  fs.mkdir(p("x/y/z"), { parents = true }) -- there already: fine
  fs.mkdir(p("x//y/"), { parents = true })
  local err = check.raises("fs", fs.mkdir, p("x/y/z"))
  check.eq(err.errno, "EEXIST", "without parents")
  fs.write_file(p("x/file"), "f")
  err = check.raises("fs", fs.mkdir, p("x/file"), { parents = true })
  check.eq(err.errno, "EEXIST", "a file in the way")
  err = check.raises("fs", fs.mkdir, p("x/file/sub"), { parents = true })
  check.eq(err.errno, "ENOTDIR", "a file on the path")
  fs.rename(p("x/file"), p("x/y/moved"))
  check.eq(fs.read_file(p("x/y/moved")), "f", "renamed")
  err = check.raises("fs", fs.rename, p("x/nothing"), p("x/other"))
  check.eq(err.errno, "ENOENT", "rename missing")
  check.eq(err.target, p("x/other"), "target field")
  check.matches(err.message, "^rename '.-/x/nothing' %-> '.-/x/other': ENOENT")
  err = check.raises("fs", fs.remove, p("x/y"))
  check.eq(err.errno, "ENOTEMPTY", "remove a full folder")
  fs.remove(p("x/y/moved"))
  fs.remove(p("x/y/z"))
  fs.remove(p("x/y"))
  fs.remove(p("x"))
  err = check.raises("fs", fs.stat, p("x"))
  check.eq(err.errno, "ENOENT", "gone")
end)

check.test("errors: missing file, folder as a file, read-only target", function()
  local err = check.raises("fs", fs.open, "/x/y")
  check.eq(err.op, "open", "op")
  check.eq(err.path, "/x/y", "path")
  check.eq(err.errno, "ENOENT", "errno")
  check.eq(tostring(err), "fs: open '/x/y': ENOENT (no such file or directory)", "message")
  err = check.raises("fs", fs.open, dir)
  check.eq(err.errno, "EISDIR", "a folder opened as a file")
  err = check.raises("fs", fs.read_file, dir)
  check.eq(err.errno, "EISDIR", "read_file of a folder")
  check.eq(err.op, "read_file", "read_file op")
  err = check.raises("fs", fs.write_file, dir, "x")
  check.eq(err.errno, "EISDIR", "write_file over a folder")
  fs.write_file(p("plain"), "x")
  err = check.raises("fs", fs.open, p("plain/sub"))
  check.eq(err.errno, "ENOTDIR", "a file used as a folder")
  err = check.raises("fs", fs.read_file, p("missing"))
  check.eq(err.errno, "ENOENT", "read_file missing")
  -- Read-only: root ignores permission bits, so make it immutable when we
  -- can (root on a file system with attributes); else the bits.
  local ro = p("readonly")
  fs.write_file(ro, "old")
  local immutable = os.execute("chattr +i " .. ro .. " 2>/dev/null")
  if not immutable then os.execute("chmod 444 " .. ro) end
  local want = immutable and "EPERM" or "EACCES"
  local ok, e1 = pcall(fs.open, ro, "w")
  local ok2, e2 = pcall(fs.write_file, ro, "new")
  if immutable then os.execute("chattr -i " .. ro) end
  local root = sh("id -u") == "0"
  if immutable or not root then
    check.eq(ok, false, "open for writing refused")
    check.eq(e1.errno, want, "open errno")
    check.eq(ok2, false, "write_file refused")
    check.eq(e2.errno, want, "write_file errno")
    check.eq(e2.op, "write_file", "write_file op")
  end
  check.eq(fs.read_file(ro), "old", "content untouched")
  for _, e in ipairs(fs.scandir(dir)) do
    check.truthy(not e.name:find("%.tmp$"), "temporary file left: " .. e.name)
  end
end)

check.test("argument errors", function()
  check.matches(check.raises(nil, fs.open), "bad argument #1 to '[%w.]*open'")
  check.matches(check.raises(nil, fs.open, "a\0b"), "zero byte")
  check.matches(check.raises(nil, fs.write_file, p("q")), "bad argument #2 to '[%w.]*write_file'")
  local f <close> = fs.open(p("plain"))
  check.matches(check.raises(nil, f.read, f, -1), "count must be >= 0")
  check.matches(check.raises(nil, f.chunks, f, 0), "size must be > 0")
  check.matches(check.raises(nil, f.seek, f, "middle"), "invalid option 'middle'")
  check.matches(check.raises(nil, f.read, {}, 1), "asyncrun.fs.file expected")
end)

check.test("<close> closes, also in a cancelled task's cleanup", function()
  local before = fd_count_quiet()
  do
    local f <close> = fs.open(p("plain"))
    check.eq(fd_count(), before + 1, "open")
  end
  check.eq(fd_count_settled(before), before, "closed by <close>")
  local t = async.spawn(function()
    local f <close> = fs.open(p("plain"))
    async.sleep(10)
  end)
  check.eq(fd_count_settled(before + 1), before + 1, "open in the task")
  t:cancel()
  check.raises("cancelled", t.await, t)
  check.eq(fd_count_settled(before), before, "closed when the cancelled task unwound")
  -- pcall cleanup that closes explicitly (it may wait there).
  t = async.spawn(function()
    local f = fs.open(p("plain"))
    local ok, err = pcall(async.sleep, 10)
    f:close()
    error(err)
  end)
  async.sleep(0.05)
  t:cancel()
  check.raises("cancelled", t.await, t)
  -- The close may have been cut short by the cancellation (it is then
  -- finished on the pool): give it a moment.
  check.eq(fd_count_settled(before), before, "closed by the cleanup")
end)

check.test("a file collected unclosed has its descriptor closed", function()
  local before = fd_count_quiet()
  for _ = 1, 20 do fs.open(p("plain")) end
  check.eq(fd_count(), before + 20, "open")
  collectgarbage(); collectgarbage()
  check.eq(fd_count_settled(before), before, "closed by the collector")
end)

check.test("two tasks reading one file take turns", function()
  local parts = {}
  for i = 1, 50000 do parts[i] = tostring(i) end
  fs.write_file(p("shared"), table.concat(parts, "\n") .. "\n")
  local f <close> = fs.open(p("shared"))
  local seen = {}
  local function reader()
    local n = 0
    for line in f:lines() do
      seen[#seen + 1] = tonumber(line); n = n + 1
      if n % 1000 == 0 then async.sleep(0) end
    end
    return n
  end
  local r = async.gather({ reader, reader })
  check.eq(r[1] + r[2], 50000, "every line once")
  table.sort(seen)
  for i = 1, 50000 do if seen[i] ~= i then check.eq(seen[i], i, "line " .. i) end end
end)

check.test("a FIFO reads as a stream", function()
  local fifo = p("fifo")
  os.execute("mkfifo " .. fifo)
  -- The writer is a child so that neither end blocks the loop.
  local w = io.popen(("sh -c 'printf \"one\\ntwo\\n\" > %s' &"):format(fifo))
  local got = lines_of(fifo)
  w:close()
  check.list(got, { "one", "two" }, "lines from a fifo")
  check.eq(fs.stat(fifo).type, "fifo", "type")
  -- And written as one: a child reads what we write.
  local out = p("fifo.out")
  local r = io.popen(("sh -c 'cat %s > %s' &"):format(fifo, out))
  local f = fs.open(fifo, "w")
  f:write("three\n"):write("four\n")
  check.eq(check.raises("fs", f.seek, f, "set", 0).errno, "ESPIPE", "no seeking")
  f:close()
  r:close()
  for _ = 1, 100 do
    if fs.read_file(out) == "three\nfour\n" then break end
    async.sleep(0.01)
  end
  check.eq(fs.read_file(out), "three\nfour\n", "written through the fifo")
end)

os.execute("rm -rf " .. dir)
check.done()
