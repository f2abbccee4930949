/* async.retry(fn, opts): a small Lua loop embedded in the binary. It waits
 * only through async.sleep, so a retry is cancellable wherever it is, and
 * a cancellation is never mistaken for a failure to retry. */
#include "internal.h"
#include "toolkit.h"

static const char retry_lua[] =
    "local async, is_cancelled = ...\n"
    "local sleep, new_error = async.sleep, async.error\n"
    "local random, type, pcall, rawset = math.random, type, pcall, rawset\n"
    "local pack, unpack, format = table.pack, table.unpack, string.format\n"
    "local huge, tointeger = math.huge, math.tointeger\n"
    "\n"
    "-- level: 3 names retry's caller when retry itself calls bad\n"
    "local function bad(n, msg, level)\n"
    "  error(format(\"bad argument #%d to 'async.retry' (%s)\", n, msg), level or 3)\n"
    "end\n"
    "\n"
    "local function number(opts, name, default, min, strict)\n"
    "  local v = opts[name]\n"
    "  if v == nil then return default end\n"
    "  if type(v) ~= 'number' or not (v > min or (not strict and v == min)) then\n"
    "    bad(2, format('%s must be a number %s %s', name, strict and '>' or '>=', min), 4)\n"
    "  end\n"
    "  return v\n"
    "end\n"
    "\n"
    "local function func(opts, name)\n"
    "  local v = opts[name]\n"
    "  if v ~= nil and type(v) ~= 'function' then\n"
    "    bad(2, name .. ' must be a function', 4)\n"
    "  end\n"
    "  return v\n"
    "end\n"
    "\n"
    "return function(fn, opts)\n"
    "  if type(fn) ~= 'function' then bad(1, 'function expected, got ' .. type(fn)) end\n"
    "  if opts == nil then opts = {}\n"
    "  elseif type(opts) ~= 'table' then bad(2, 'table expected, got ' .. type(opts)) end\n"
    "  local retries = opts.retries\n"
    "  if retries == nil then retries = 3\n"
    "  else\n"
    "    retries = type(retries) == 'number' and tointeger(retries)\n"
    "    if not retries or retries < 0 then bad(2, 'retries must be an integer >= 0') end\n"
    "  end\n"
    "  local delay = number(opts, 'delay', 1, 0)\n"
    "  local backoff = number(opts, 'backoff', 2, 0, true)\n"
    "  local jitter = number(opts, 'jitter', 0.1, 0)\n"
    "  local max_delay = number(opts, 'max_delay', huge, 0)\n"
    "  local retry_if, on_retry = func(opts, 'retry_if'), func(opts, 'on_retry')\n"
    "  local attempt, base = 0, delay\n"
    "  while true do\n"
    "    attempt = attempt + 1\n"
    "    local r = pack(pcall(fn))\n"
    "    if r[1] then return unpack(r, 2, r.n) end\n"
    "    local err = r[2]\n"
    "    if is_cancelled(err) then error(err, 0) end\n"
    "    if attempt > retries or (retry_if and not retry_if(err)) then\n"
    "      if type(err) == 'table' then\n"
    "        rawset(err, 'attempts', attempt)\n"
    "        error(err, 0)\n"
    "      end\n"
    "      error(new_error('failed', format('%s (gave up after %d attempt%s)',\n"
    "                      tostring(err), attempt, attempt > 1 and 's' or ''),\n"
    "                      { attempts = attempt, cause = err }), 0)\n"
    "    end\n"
    "    local wait = base * (1 + random() * jitter)\n"
    "    if wait > max_delay then wait = max_delay end\n"
    "    if on_retry then on_retry(attempt, err, wait) end\n"
    "    sleep(wait)\n"
    "    base = base * backoff\n"
    "  end\n"
    "end\n";

static int is_cancelled(lua_State *L) {
  lua_pushboolean(L, ar__error_is(L, 1, "cancelled"));
  return 1;
}

void ar__retry_open(lua_State *L) {
  if (luaL_loadbufferx(L, retry_lua, sizeof retry_lua - 1, "=async.retry", "t") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2); /* the module table */
  lua_pushcfunction(L, is_cancelled);
  lua_call(L, 2, 1);
  lua_setfield(L, -2, "retry");
}
