-- What every script in scripts/ shares: the command line (--seed N, --quiet,
-- --help and each script's own options), the output helpers, and the way a
-- script is either run on its own or loaded by lab.lua as a module.
--
-- A script ends with `return kit.main(script, ...)`. Run by asyncrun, `...`
-- holds its arguments: kit.main parses them and calls script.run(o). Loaded
-- by lab.lua with `loadfile(path)(kit.AS_MODULE)`, it returns the script
-- table instead, and lab.lua calls script.run(o) itself.
local async = require "async"

local format, concat = string.format, table.concat
local stdout, stderr = io.stdout, io.stderr
local exit, tointeger, tonumber = os.exit, math.tointeger, tonumber
local randomseed, random = math.randomseed, math.random

local M = {}

-- A unique value: only lab.lua (through this module) can pass it.
M.AS_MODULE = setmetatable({}, { __name = "scriptkit.AS_MODULE" })

-- The options every script has, after its own in --help.
local COMMON = {
  { "seed", "N", "seed the random choices, to repeat a run exactly", "integer" },
  { "quiet", nil, "print only the headings and the results" },
  { "help", nil, "show this help and exit" },
}

local function progname(script)
  return "asyncrun scripts/" .. script.name .. ".lua"
end

local function usage_line(script)
  local parts = { "usage: " .. progname(script) }
  for _, o in ipairs(script.options or {}) do
    parts[#parts + 1] = o[2] and format("[--%s %s]", o[1], o[2]) or format("[--%s]", o[1])
  end
  parts[#parts + 1] = "[--seed N] [--quiet] [--help]"
  if script.args then parts[#parts + 1] = script.args end
  return concat(parts, " ")
end

function M.help(script)
  local lines = { usage_line(script), "", script.summary, "" }
  if script.description then lines[#lines + 1] = script.description .. "\n" end
  lines[#lines + 1] = "options:"
  local all = {}
  for _, o in ipairs(script.options or {}) do all[#all + 1] = o end
  for _, o in ipairs(COMMON) do all[#all + 1] = o end
  for _, o in ipairs(all) do
    local left = "--" .. o[1] .. (o[2] and " " .. o[2] or "")
    if o[1] == "quiet" or o[1] == "help" then left = left .. ", -" .. o[1]:sub(1, 1) end
    lines[#lines + 1] = format("  %-20s %s", left, o[3])
  end
  return concat(lines, "\n") .. "\n"
end

-- Prints a usage error on stderr and exits with status 2. Every exit here
-- closes the Lua state first (os.exit's second argument): the engine's
-- handles and memory are then released, as at a normal end, and the
-- sanitizer build finds no leak.
function M.usage_error(script, fmt, ...)
  stderr:write(script.name, ".lua: ", format(fmt, ...), "\n", usage_line(script), "\n",
    "(--help lists the options)\n")
  stderr:flush()
  stdout:flush()
  exit(2, true)
end

-- Parses argv (a list of strings) against script.options and COMMON.
-- Returns a table: option values by name ("base-url" as base_url), and the
-- positional arguments in `args`. Option values are strings unless the
-- option's fourth field is "number" or "integer". Raises nothing: a bad
-- command line is reported by usage_error (exit status 2).
function M.parse(script, argv)
  local known = {}
  for _, o in ipairs(script.options or {}) do known[o[1]] = o end
  for _, o in ipairs(COMMON) do known[o[1]] = o end
  local o = { args = {} }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do o.args[#o.args + 1] = argv[j] end
      break
    elseif a == "-h" then
      o.help = true
    elseif a == "-q" then
      o.quiet = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local spec = known[name]
      if not spec then M.usage_error(script, "unknown option '--%s'", name) end
      if spec[2] then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then M.usage_error(script, "option '--%s' needs a value (%s)", name, spec[2]) end
        end
        if spec[4] == "number" or spec[4] == "integer" then
          local n = tonumber(value)
          if spec[4] == "integer" then n = n and tointeger(n) end
          if n == nil then
            M.usage_error(script, "option '--%s' wants %s, got '%s'",
              name, spec[4] == "integer" and "an integer" or "a number", value)
          end
          if spec.min and n < spec.min then
            M.usage_error(script, "option '--%s' must be at least %s, got %s", name, spec.min, value)
          end
          value = n
        end
        o[name:gsub("%-", "_")] = value
      else
        if value ~= nil then M.usage_error(script, "option '--%s' takes no value", name) end
        o[name:gsub("%-", "_")] = true
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      M.usage_error(script, "unknown option '%s'", a)
    else
      o.args[#o.args + 1] = a
    end
    i = i + 1
  end
  local nargs = #o.args
  if o.help then return o end
  if nargs < (script.min_args or 0) then
    M.usage_error(script, "missing argument %s", script.args or "")
  elseif nargs > (script.max_args or 0) then
    M.usage_error(script, "unexpected argument '%s'", o.args[(script.max_args or 0) + 1])
  end
  return o
end

-- Adds the output helpers and the seed to a parsed option table. Seeds
-- math.random: with --seed the run repeats exactly (but for timings);
-- without, a seed is drawn and shown so that the run can be repeated.
function M.prepare(o)
  if o.seed == nil then
    randomseed()
    o.seed = random(1, 999999)
  end
  randomseed(o.seed)
  o.t0 = async.now()
  -- log: the running commentary, silenced by --quiet; show: always.
  function o.log(fmt, ...)
    if not o.quiet then stdout:write(format(fmt, ...), "\n") end
  end
  function o.show(fmt, ...) stdout:write(format(fmt, ...), "\n") end
  -- "HH:MM:SS.mmm +1.234s": the wall clock (the lab's get_timestamp, which
  -- is async.timestamp) and the seconds since o.mark() was last called.
  function o.mark() o.t0 = async.now() end
  function o.stamp()
    return format("%s +%.3fs", async.timestamp():sub(12), async.now() - o.t0)
  end
  return o
end

function M.heading(o, title)
  o.show("")
  o.show("=== %s (seed %d) ===", title, o.seed)
end

-- The entry point of every script (see the top of this file). Returns the
-- script table when loaded by lab.lua; otherwise runs it and exits with the
-- status script.run returns (0 when it returns nothing).
function M.main(script, ...)
  if (...) == M.AS_MODULE then return script end
  local o = M.parse(script, { ... })
  if o.help then
    stdout:write(M.help(script))
    return
  end
  local status = script.run(M.prepare(o))
  stdout:flush()
  if status and status ~= 0 then exit(status, true) end
end

-- Seconds as "1.23 s".
function M.secs(s) return format("%.2f s", s) end

return M
