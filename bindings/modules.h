/* Entry points of the built-in Lua modules (bindings/l*.c). */
#ifndef AR_MODULES_H
#define AR_MODULES_H

#include <lua.h>

int luaopen_async(lua_State *L);
int luaopen_async_http(lua_State *L);
int luaopen_async_json(lua_State *L);
int luaopen_async_fs(lua_State *L);
int luaopen_async_process(lua_State *L);
int luaopen_async_net(lua_State *L);
/* async.http.serve (bindings/lserver.c). */
int ar__http_serve(lua_State *L);
int luaopen_async_redis(lua_State *L);
/* The distributed queue, and "async" with async.queue{url=} sent to it
 * (bindings/lrqueue.c). */
int luaopen_async_redis_queue(lua_State *L);
int luaopen_async_with_redis(lua_State *L);
/* lua-cjson, linked in from Debian's static liblua5.4-cjson.a. */
int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

#endif
