/* The distributed queue (bindings/rqueue.lua, embedded) and the hook that
 * sends async.queue{url = ...} to it.
 *
 * The hook wraps the "async" module's loader: luaopen_async builds the
 * module as before, then its `queue` field is replaced by a dispatcher
 * that calls the distributed queue for a table with `url` and the local
 * queue (bindings/lqueue.c, untouched) otherwise. */
#include <stdio.h>
#include <unistd.h>

#include "modules.h"

#include <lauxlib.h>
#include <lualib.h>

extern const char ar__lua_rqueue[];
extern const size_t ar__lua_rqueue_len;

/* Pushes the module `name` as require would, but from package.preload
 * only: a module the engine's configuration leaves out raises its "not
 * available" error, whatever the script did to require or package.path. */
static void require_builtin(lua_State *L, const char *name) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, name) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (lua_getfield(L, -1, name) != LUA_TFUNCTION)
    luaL_error(L, "module '%s' is not available in this engine", name);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  lua_remove(L, -2); /* preload */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  lua_remove(L, -2); /* loaded */
}

/* A private copy of a standard library: the queue needs table, math and
 * coroutine functions even in an engine whose scripts may not have them,
 * and giving it its own copies opens nothing to the scripts. */
static void push_private_lib(lua_State *L, lua_CFunction open) {
  lua_pushcfunction(L, open);
  lua_call(L, 0, 1);
}

/* require "async.redis.queue": the chunk, called with async, async.redis,
 * cjson and private table and math libraries, returns
 * {new = function(opts)}. */
int luaopen_async_redis_queue(lua_State *L) {
  if (luaL_loadbufferx(L, ar__lua_rqueue, ar__lua_rqueue_len,
                       "=async.redis.queue", "t") != LUA_OK)
    return lua_error(L);
  require_builtin(L, "async");
  require_builtin(L, "async.redis");
  require_builtin(L, "cjson");
  push_private_lib(L, luaopen_table);
  push_private_lib(L, luaopen_math);
  lua_call(L, 5, 1);
  return 1;
}

static int new_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 1;
}

/* Calls the local queue's constructor (upvalue 1) with maxsize at idx.
 * The argument is checked here, as lqueue.c checks it, so that a misuse
 * is reported against async.queue (the function the script called) rather
 * than an anonymous one. */
static int local_queue(lua_State *L, int idx, int arg) {
  int given = !lua_isnoneornil(L, idx);
  if (given) {
    if (!lua_isinteger(L, idx)) {
      if (idx == arg) luaL_checknumber(L, arg); /* its message, first */
      return luaL_argerror(L, arg, "maxsize must be an integer >= 0");
    }
    if (lua_tointeger(L, idx) < 0)
      return luaL_argerror(L, arg, "maxsize must be an integer >= 0");
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  if (given) lua_pushvalue(L, idx);
  lua_call(L, given, 1);
  return 1;
}

/* async.queue(maxsize) or async.queue{url = ..., ...}. Upvalue 1 is the
 * local queue's constructor. */
static int queue_dispatch(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE) return local_queue(L, 1, 1);
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "url") == LUA_TNIL) {
    /* A table without url: the local queue, with its maxsize. */
    lua_getfield(L, 1, "maxsize");
    return local_queue(L, 3, 1);
  }
  lua_pop(L, 1);
  require_builtin(L, "async.redis.queue");
  lua_getfield(L, -1, "new");
  lua_pushvalue(L, 1);
  lua_callk(L, 1, 1, 0, new_k); /* new() connects: it yields */
  return 1;
}

int luaopen_async_with_redis(lua_State *L) {
  luaopen_async(L);
  lua_getfield(L, -1, "queue");
  lua_pushcclosure(L, queue_dispatch, 1);
  lua_setfield(L, -2, "queue");
  return 1;
}
