/* Entry points of the built-in Lua modules (bindings/l*.c). */
#ifndef AR_MODULES_H
#define AR_MODULES_H

#include <lua.h>

int luaopen_async(lua_State *L);

#endif
