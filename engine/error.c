/* Engine error objects: tables {kind=, message=, where=} sharing the
 * metatable "asyncrun.error", whose __tostring gives one line. Plain Lua
 * errors (strings, other tables) are never wrapped. */
#include <string.h>

#include "internal.h"

static void push_errorv(lua_State *L, const char *kind, const char *fmt,
                        va_list ap) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, AR__ERROR_MT);
}

void ar__error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
}

int ar__error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  ar__error_locate(L, 1);
  return lua_error(L);
}

int ar__error_throw(lua_State *L) {
  ar__error_locate(L, 1);
  return lua_error(L);
}

int ar__error_is(lua_State *L, int idx, const char *kind) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, AR__ERROR_MT);
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!is || kind == NULL) return is;
  lua_getfield(L, idx, "kind");
  const char *k = lua_tostring(L, -1);
  is = k != NULL && strcmp(k, kind) == 0;
  lua_pop(L, 1);
  return is;
}

void ar__error_locate(lua_State *L, int level) {
  if (!ar__error_is(L, -1, NULL)) return;
  if (lua_getfield(L, -1, "where") == LUA_TNIL) {
    lua_pop(L, 1);
    luaL_where(L, level);
    lua_setfield(L, -2, "where");
  } else {
    lua_pop(L, 1);
  }
}

/* "file.lua:12: timeout: wait_for timed out after 1 s" */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "where");
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s%s: %s", luaL_optstring(L, 2, ""),
                  luaL_optstring(L, 3, "error"), luaL_optstring(L, 4, "?"));
  return 1;
}

/* async.error(kind, message): an engine error made by a script, so Lua
 * helpers raise the same objects C does. */
int ar__error_new_lua(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  ar__error_push(L, kind, "%s", msg);
  if (lua_istable(L, 3)) { /* extra fields */
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  return 1;
}

void ar__error_open(lua_State *L) {
  luaL_newmetatable(L, AR__ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "asyncrun.error");
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}
