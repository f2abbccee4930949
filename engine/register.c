/* Registering the host's C functions and modules, each in a protected
 * call so that running out of memory is a return code, not a panic. */
#include "internal.h"

struct reg {
  const char *name;
  lua_CFunction fn;      /* a global function, or a module's opener */
  const luaL_Reg *funcs; /* or a module made of these */
  int global;
};

/* package.preload loader of a module given as a luaL_Reg array. */
static int library_loader(lua_State *L) {
  const luaL_Reg *funcs = lua_touserdata(L, lua_upvalueindex(1));
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  return 1;
}

static int register_p(lua_State *L) {
  struct reg *r = lua_touserdata(L, 1);
  if (r->global) {
    lua_pushcfunction(L, r->fn);
    lua_setglobal(L, r->name);
    return 0;
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (r->funcs != NULL) {
    lua_pushlightuserdata(L, (void *)r->funcs);
    lua_pushcclosure(L, library_loader, 1);
  } else {
    lua_pushcfunction(L, r->fn);
  }
  lua_setfield(L, -2, r->name);
  return 0;
}

static int reg(ar_engine_t *E, struct reg *r) {
  if (E == NULL || E->L == NULL || r->name == NULL ||
      (r->fn == NULL && r->funcs == NULL))
    return AR_EINVAL;
  lua_State *L = E->L;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 2)) return AR_ENOMEM;
  lua_pushcfunction(L, register_p);
  lua_pushlightuserdata(L, r);
  int st = lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);
  return st == LUA_OK ? 0 : AR_ENOMEM;
}

int ar_engine_register_function(ar_engine_t *E, const char *name,
                                lua_CFunction fn) {
  struct reg r = {name, fn, NULL, 1};
  return reg(E, &r);
}

int ar_engine_register_module(ar_engine_t *E, const char *name,
                              lua_CFunction openf) {
  struct reg r = {name, openf, NULL, 0};
  return reg(E, &r);
}

int ar_engine_register_library(ar_engine_t *E, const char *name,
                               const luaL_Reg *funcs) {
  struct reg r = {name, NULL, funcs, 0};
  return reg(E, &r);
}
