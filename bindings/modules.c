/* The Lua modules built into the engine. Each is preloaded, so a script
 * pays for a module only when it requires it. */
#include "module.h"
#include "modules.h"

static const luaL_Reg modules[] = {
    {"async", luaopen_async_with_redis},
    {"async.http", luaopen_async_http},
    {"async.json", luaopen_async_json},
    {"async.fs", luaopen_async_fs},
    {"async.process", luaopen_async_process},
    {"async.net", luaopen_async_net},
    {"async.redis", luaopen_async_redis},
    {"async.redis.queue", luaopen_async_redis_queue},
    {"cjson", luaopen_cjson},
    {"cjson.safe", luaopen_cjson_safe},
    {NULL, NULL},
};

/* Registers the built-in modules in package.preload. */
static void preload_builtins(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = modules; m->name != NULL; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

/* The engine knows nothing of its modules: the library's constructor
 * hands them over. */
ar_engine_t *ar_engine_new(const ar_config_t *cfg) {
  return ar__engine_new(cfg, preload_builtins);
}
