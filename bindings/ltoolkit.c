/* Registers the coordination toolkit (docs/toolkit.md) into the "async"
 * module table: one call from luaopen_async. */
#include <string.h>

#include "lsignal.h"
#include "module.h"
#include "toolkit.h"

void ar__toolkit_open(lua_State *L) {
  ar__sync_open(L);
  ar__queue_open(L);
  ar__limiter_open(L);
  ar__group_open(L);
  ar__map_open(L);
  ar__retry_open(L);
  ar__signal_open(L); /* async.signal (lsignal.c) */
}

void ar__class_new(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta) {
  int own_index = 0;
  for (const luaL_Reg *r = meta; r != NULL && r->name != NULL; r++)
    if (strcmp(r->name, "__index") == 0) own_index = 1;
  luaL_newmetatable(L, name);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, own_index ? "methods" : "__index");
  if (meta != NULL) {
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, meta, 1);
  }
  lua_pop(L, 1);
}

/* As luaL_typeerror, which cannot be used here: it names what it got only
 * after we pushed the name we want, which shifts an absent argument. */
int ar__self_error(lua_State *L, int idx) {
  const char *got;
  if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
    got = lua_tostring(L, -1);
  else if (lua_type(L, idx) == LUA_TLIGHTUSERDATA)
    got = "light userdata";
  else
    got = luaL_typename(L, idx); /* static strings, "no value" included */
  lua_getfield(L, lua_upvalueindex(1), "__name");
  const char *want = lua_tostring(L, -1);
  return luaL_argerror(
      L, idx,
      lua_pushfstring(L, "%s expected, got %s", want ? want : "object", got));
}
