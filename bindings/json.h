/* JSON for the engine's bindings (bindings/ljson.c), so that every module
 * that reads or writes JSON (async.http today, the HTTP server later)
 * decodes and encodes exactly as `require "async.json"` does.
 *
 * Values: objects are tables; arrays are tables with the array metatable
 * (ar__json_push_array_mt), so that [] stays an array; null is
 * ar__json_null (a light userdata NULL, the same value as cjson.null);
 * integers that fit in 64 bits are Lua integers, other numbers floats. */
#ifndef AR_JSON_H
#define AR_JSON_H

#include <lauxlib.h>
#include <lua.h>

/* Why a decode failed: simdjson's message and the 1-based position of the
 * offending byte (best effort). */
typedef struct {
  const char *message; /* static storage */
  size_t position;
} ar__json_error_t;

/* Decodes len bytes of JSON at s and pushes the value (returns 0). On
 * invalid JSON pushes nothing and returns -1 with *err filled. Raises only
 * memory errors. Uses one parser per lua_State, kept in its registry. */
int ar__json_decode(lua_State *L, const char *s, size_t len,
                    ar__json_error_t *err);

/* Encodes the value at idx as compact JSON and pushes the string. Raises a
 * kind "json" error for what JSON cannot hold (a function, NaN, a cycle or
 * nesting deeper than 1000, a table key that is not a string or number). */
void ar__json_encode(lua_State *L, int idx);

/* Pushes the metatable that marks a table as a JSON array. */
void ar__json_push_array_mt(lua_State *L);

#define ar__json_null ((void *)0)

int luaopen_async_json(lua_State *L);

#endif
