/* The coordination toolkit of the "async" module (docs/toolkit.md): each
 * file registers its functions into the module table on top of the stack.
 * luaopen_async calls ar__toolkit_open once. */
#ifndef AR_TOOLKIT_H
#define AR_TOOLKIT_H

#include <lauxlib.h>
#include <lua.h>

void ar__toolkit_open(lua_State *L); /* all of the below */

void ar__sync_open(lua_State *L);    /* semaphore, lock, event (lsync.c) */
void ar__queue_open(lua_State *L);   /* queue (lqueue.c) */
void ar__limiter_open(lua_State *L); /* rate_limiter (llimiter.c) */
void ar__group_open(lua_State *L);   /* group (lgroup.c) */
void ar__map_open(lua_State *L);     /* map (lmap.c) */
void ar__retry_open(lua_State *L);   /* retry (lretry.c) */

/* Creates the metatable `name` (registry, as luaL_newmetatable), with
 * __index a table of `methods`, and the metamethods `meta` in it. When
 * `meta` has its own __index (a type with properties), the table of
 * methods is the metatable's `methods` field instead, for that __index to
 * end with ar__index_method. Every function gets the metatable as upvalue
 * 1, for ar__check_self. Leaves the stack as it was. */
void ar__class_new(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta);

/* Raises "<class> expected" for the value at idx (ar__check_self). */
int ar__self_error(lua_State *L, int idx);

/* The userdata at idx when its metatable is upvalue 1 of the running
 * function (one registered by ar__class_new), else raises a type error.
 * A pointer compare where luaL_checkudata looks the metatable up by name:
 * it matters for queue operations. */
static inline void *ar__check_self(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return p;
  }
  ar__self_error(L, idx);
  return NULL;
}

#endif
