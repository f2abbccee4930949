-- A file processor: reads a file of any size in chunks and reports its
-- lines, words, most frequent words and CRC-32, holding only a few chunks in
-- memory. One task reads (async.fs, on libuv's thread pool, so the disk and
-- the counting overlap), one counts, joined by a bounded queue; a third
-- draws a progress bar on stderr when stderr is a terminal.
--   asyncrun scripts/file_processor.lua FILE [--chunk-size BYTES] [--top N]
--                                       [--progress | --no-progress] [--seed N] [--quiet]
--
-- Words are runs of letters, digits and apostrophes ([%w']+ in Lua's C
-- locale), compared in lower case. A line is a "\n"-terminated run, plus a
-- last line without one. The checksum is CRC-32 (IEEE 802.3, the one of
-- zlib, gzip and PNG), in pure Lua.
-- Exit status: 0 done, 1 a read failed midway, 2 a bad command line or an
-- unreadable FILE.

local async = require "async"
local kit = require "lib.scriptkit"

local format, byte, rep, lower = string.format, string.byte, string.rep, string.lower
local find, gmatch, sub = string.find, string.gmatch, string.sub
local concat, sort = table.concat, table.sort
local floor, min = math.floor, math.min
local stderr = io.stderr

-- async.fs reads without blocking the engine; an asyncrun without it falls
-- back to io (blocking reads, one chunk at a time, the loop turning between).
local has_fs, fs = pcall(require, "async.fs")
if not has_fs then fs = nil end

local script = {
  name = "file_processor",
  title = "File processor",
  summary = "Counts the lines, words and most frequent words of a file, and its CRC-32, in chunks.",
  description = "Words are runs of letters, digits and apostrophes, in lower case. The checksum is\n"
    .. "CRC-32 (IEEE, as zlib and gzip compute it). A progress bar goes to stderr when it\n"
    .. "is a terminal (--progress forces it, --no-progress hides it).\n"
    .. "Exit status: 0 done, 1 a read failed, 2 a bad command line or an unreadable FILE.",
  args = "FILE",
  min_args = 1,
  max_args = 1,
  options = {
    { "chunk-size", "BYTES", "bytes read at a time (default 65536)", "integer", min = 1 },
    { "top", "N", "most frequent words to show (default 10)", "integer", min = 0 },
    { "progress", nil, "draw the progress bar even if stderr is not a terminal" },
    { "no-progress", nil, "never draw the progress bar" },
  },
}

-- CRC-32 (reflected, polynomial 0xEDB88320), one table lookup per byte.
local CRC = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if c & 1 == 1 then c = 0xEDB88320 ~ (c >> 1) else c = c >> 1 end
  end
  CRC[i] = c
end

-- Folds the bytes of s into crc (the running value, already inverted).
-- string.byte takes 16 bytes per call: fewer calls, same result.
local function crc_update(crc, s)
  local n, i = #s, 1
  while i + 15 <= n do
    local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = byte(s, i, i + 15)
    crc = (crc >> 8) ~ CRC[(crc ~ b1) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b2) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b3) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b4) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b5) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b6) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b7) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b8) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b9) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b10) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b11) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b12) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b13) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b14) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b15) & 0xff]
    crc = (crc >> 8) ~ CRC[(crc ~ b16) & 0xff]
    i = i + 16
  end
  for k = i, n do crc = (crc >> 8) ~ CRC[(crc ~ byte(s, k)) & 0xff] end
  return crc
end

-- Opens FILE for chunked reading. Returns a chunk iterator and its size in
-- bytes, or nil and a message.
local function open_chunks(path, size)
  if fs then
    local ok, st = pcall(fs.stat, path, { follow = true })
    if not ok then return nil, format("cannot read %s: %s", path, st.message or tostring(st)) end
    if st.type == "directory" then return nil, format("cannot read %s: it is a directory", path) end
    local f
    ok, f = pcall(fs.open, path, "r")
    if not ok then return nil, format("cannot read %s: %s", path, f.message or tostring(f)) end
    return f:chunks(size), st.size, f
  end
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read " .. err end
  local probe, perr = f:read(0)
  if probe == nil and perr then
    f:close()
    return nil, format("cannot read %s: %s", path, perr == "Is a directory" and "it is a directory" or perr)
  end
  local total = f:seek("end")
  f:seek("set")
  return function()
    async.sleep(0) -- let the other tasks (the progress bar) run
    return f:read(size)
  end, total, f
end

local function human(n)
  if n >= 1 << 30 then return format("%.1f GiB", n / (1 << 30)) end
  if n >= 1 << 20 then return format("%.1f MiB", n / (1 << 20)) end
  if n >= 1 << 10 then return format("%.1f KiB", n / (1 << 10)) end
  return format("%d B", n)
end

-- "[#########.........]  45%  12.3 MiB/27.0 MiB  8.1 MiB/s", redrawn in place.
local function draw_bar(done, total, elapsed)
  local frac = total > 0 and min(done / total, 1) or 1
  local width = 30
  local full = floor(frac * width)
  stderr:write(format("\r[%s%s] %3d%%  %s/%s  %s/s ", rep("#", full), rep(".", width - full),
    floor(frac * 100), human(done), human(total), human(elapsed > 0 and done / elapsed or 0)))
  stderr:flush()
end

-- Whether stderr is a terminal: the shell's test -t on the descriptor we
-- pass on (standard Lua cannot ask).
local function stderr_is_tty()
  return os.execute("[ -t 2 ]") == true
end

function script.run(o)
  local path = o.args[1]
  local size = o.chunk_size or 65536
  local top = o.top or 10
  local next_chunk, total, handle = open_chunks(path, size)
  if not next_chunk then
    stderr:write("file_processor.lua: ", total, "\n")
    return 2
  end
  local progress = o.progress or (not o.no_progress and stderr_is_tty())
  if o.progress and o.no_progress then kit.usage_error(script, "--progress and --no-progress exclude each other") end

  kit.heading(o, script.title)
  o.log("reading %s (%s) in chunks of %d bytes with %s", path, human(total), size,
    fs and "async.fs" or "io (no async.fs in this asyncrun)")

  local lines, words, bytes, chunks = 0, 0, 0, 0
  local counts, distinct = {}, 0
  local crc = 0xffffffff
  local carry = ""      -- a word cut by the end of the previous chunk
  local last_byte = nil -- to count a last line without "\n"
  local t0 = async.now()
  local read_error

  -- Counts the words of s into counts.
  local function count_words(s)
    for w in gmatch(s, "[%w']+") do
      w = lower(w)
      local c = counts[w]
      if c then counts[w] = c + 1 else counts[w] = 1; distinct = distinct + 1 end
      words = words + 1
    end
  end

  local q = async.queue(4)
  async.group(function(g)
    -- The reader: at most 4 chunks wait for the counter (back-pressure).
    g:spawn(function()
      local ok, err = pcall(function()
        for chunk in next_chunk do q:put(chunk) end
      end)
      if not ok then
        if type(err) == "table" and err.kind == "cancelled" then error(err, 0) end
        read_error = type(err) == "table" and err.message or tostring(err)
      end
      q:close()
    end)
    local bar
    if progress then
      bar = g:spawn(function()
        while true do
          draw_bar(bytes, total, async.now() - t0)
          async.sleep(0.1)
        end
      end)
    end
    -- The counter.
    while true do
      local chunk = q:get()
      if chunk == nil then break end -- closed and drained
      chunks = chunks + 1
      bytes = bytes + #chunk
      crc = crc_update(crc, chunk)
      local _, nl = chunk:gsub("\n", "")
      lines = lines + nl
      last_byte = byte(chunk, -1)
      -- The trailing run of word characters may go on in the next chunk.
      local s = carry .. chunk
      local cut = find(s, "[%w']+$")
      if cut then
        carry = sub(s, cut)
        s = sub(s, 1, cut - 1)
      else
        carry = ""
      end
      count_words(s)
    end
    count_words(carry)
    if bar then
      bar:cancel()
      draw_bar(bytes, total, async.now() - t0)
      stderr:write("\n")
    end
  end)
  if handle then handle:close() end
  if last_byte and last_byte ~= 10 then lines = lines + 1 end
  local elapsed = async.now() - t0

  if read_error then
    stderr:write("file_processor.lua: reading ", path, " failed after ", bytes, " bytes: ", read_error, "\n")
    return 1
  end

  local list = {}
  for w, c in pairs(counts) do list[#list + 1] = { w, c } end
  sort(list, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  local best = {}
  for i = 1, min(top, #list) do best[i] = list[i][1] .. " " .. list[i][2] end

  o.show("file: %s, %d bytes in %d chunks", path, bytes, chunks)
  o.show("lines: %d", lines)
  o.show("words: %d (%d distinct)", words, distinct)
  if top > 0 then o.show("most frequent: %s", #best > 0 and concat(best, ", ") or "(no words)") end
  o.show("crc32: %08x", crc ~ 0xffffffff)
  o.show("time: %.2f s (%s/s)", elapsed, human(elapsed > 0 and bytes / elapsed or 0))
  return 0
end

return kit.main(script, ...)
