/* The "async.json" module and the C-level JSON of the bindings (json.h).
 *
 * Decoding is simdjson's (bindings/json_simd.cc): it validates and parses
 * into its tape, which is walked here to build the Lua values, so that no
 * Lua error ever unwinds through C++. Encoding is written here: it is a
 * walk over Lua values with one rule per type, and the rules are ours
 * (integers exact, floats in the shortest form that reads back the same,
 * the array marker).
 *
 * Why simdjson, and the figures: docs/http.md and bench/README.md. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"
#include "json.h"
#include "json_simd.h"

#define PARSER_MT "asyncrun.json.parser"
#define BUFFER_MT "asyncrun.json.buffer"
#define MAX_DEPTH 1000
#define LARGE_DOCUMENT ((size_t)1 << 20)

/* Registry keys (their addresses). */
static const char parser_key = 'P';
static const char array_key = 'A';

/* ---- decoding ------------------------------------------------------------ */

static int parser_gc(lua_State *L) {
  ar__json_parser_t **box = lua_touserdata(L, 1);
  if (*box != NULL) ar__json_parser_free(*box);
  *box = NULL;
  return 0;
}

/* Takes the lua_State's parser out of the registry, creating one if there
 * is none, and pushes its box, which anchors it while it is used. Out of
 * the registry because building Lua values may run a finalizer that
 * decodes too: that nested decode then gets a parser of its own instead
 * of overwriting the tape being walked. Raises on no memory. */
static ar__json_parser_t *take_parser(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &parser_key) == LUA_TUSERDATA) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &parser_key);
    return *(ar__json_parser_t **)lua_touserdata(L, -1);
  }
  lua_pop(L, 1);
  ar__json_parser_t **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, PARSER_MT)) {
    lua_pushcfunction(L, parser_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if ((*box = ar__json_parser_new()) == NULL)
    luaL_error(L, "not enough memory");
  return *box;
}

void ar__json_push_array_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_key);
}

#define TYPE(w) ((char)((w) >> 56))
#define PAYLOAD(w) ((w)&0x00FFFFFFFFFFFFFFull)

/* Pushes the value at tape[i]; returns the index after it. mt is the
 * stack index of the array metatable. The tape is simdjson's, valid, so
 * it is trusted (containers end, strings lie within the buffer). */
static size_t walk(lua_State *L, const uint64_t *tape, const uint8_t *strings,
                   size_t i, int mt) {
  uint64_t w = tape[i];
  switch (TYPE(w)) {
  case '"': {
    uint32_t len;
    const uint8_t *s = strings + PAYLOAD(w);
    memcpy(&len, s, sizeof len);
    lua_pushlstring(L, (const char *)s + sizeof len, len);
    return i + 1;
  }
  case 'l': {
    int64_t v;
    memcpy(&v, &tape[i + 1], sizeof v);
    lua_pushinteger(L, (lua_Integer)v);
    return i + 2;
  }
  case 'u': { /* above INT64_MAX: the nearest float, as Lua reads it */
    uint64_t v;
    memcpy(&v, &tape[i + 1], sizeof v);
    lua_pushnumber(L, (lua_Number)v);
    return i + 2;
  }
  case 'd': {
    double v;
    memcpy(&v, &tape[i + 1], sizeof v);
    lua_pushnumber(L, (lua_Number)v);
    return i + 2;
  }
  case 't': lua_pushboolean(L, 1); return i + 1;
  case 'f': lua_pushboolean(L, 0); return i + 1;
  case 'n': lua_pushlightuserdata(L, ar__json_null); return i + 1;
  case '[': {
    int n = (int)((PAYLOAD(w) >> 32) & 0xFFFFFF);
    luaL_checkstack(L, 3, "JSON nested too deeply");
    lua_createtable(L, n, 0);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    lua_Integer k = 0;
    for (i++; TYPE(tape[i]) != ']';) {
      i = walk(L, tape, strings, i, mt);
      lua_rawseti(L, -2, ++k);
    }
    return i + 1;
  }
  case '{': {
    int n = (int)((PAYLOAD(w) >> 32) & 0xFFFFFF);
    luaL_checkstack(L, 3, "JSON nested too deeply");
    lua_createtable(L, 0, n);
    for (i++; TYPE(tape[i]) != '}';) {
      i = walk(L, tape, strings, i, mt); /* the key */
      i = walk(L, tape, strings, i, mt); /* its value */
      lua_rawset(L, -3);
    }
    return i + 1;
  }
  default: /* not in a valid tape */
    lua_pushlightuserdata(L, ar__json_null);
    return i + 1;
  }
}

int ar__json_decode(lua_State *L, const char *s, size_t len,
                    ar__json_error_t *err) {
  ar__json_tape_t t;
  ar__json_parser_t *p = take_parser(L);
  int box = lua_gettop(L);
  if (ar__json_parse(p, s, len, &t) != 0) {
    if (t.code == 1 /* simdjson::CAPACITY */ && len > 0)
      t.message = "document too large (simdjson's limit is 4 GB)";
    err->message = t.message;
    err->position = t.offset + 1;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &parser_key); /* back, for next time */
    return -1;
  }
  ar__json_push_array_mt(L);
  /* tape[0] is the root word; the value starts at 1. */
  walk(L, t.tape, t.strings, 1, box + 1);
  lua_replace(L, box + 1);
  /* Back in the registry, unless the document was large: the parser keeps
   * buffers sized for the largest document so far (some ten times its
   * size), which are better not held for the life of the engine. */
  lua_rotate(L, box, 1);
  if (len > LARGE_DOCUMENT)
    lua_pop(L, 1);
  else
    lua_rawsetp(L, LUA_REGISTRYINDEX, &parser_key);
  return 0;
}

/* ---- encoding ------------------------------------------------------------ */

/* The output, in C memory owned by a userdata on the stack, so that an
 * error anywhere frees it (through __gc) and the Lua stack is free for
 * the walk, which a luaL_Buffer would forbid. */
typedef struct {
  char *p;
  size_t len, cap;
} buf_t;

static int buffer_gc(lua_State *L) {
  buf_t *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  return 0;
}

static char *reserve(lua_State *L, buf_t *b, size_t n) {
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap - b->len < n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) luaL_error(L, "not enough memory");
    b->p = p;
    b->cap = cap;
  }
  return b->p + b->len;
}

static void put(lua_State *L, buf_t *b, const char *s, size_t n) {
  memcpy(reserve(L, b, n), s, n);
  b->len += n;
}

static void put_string(lua_State *L, buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  /* Worst case 6 bytes a byte ("\u001f"), plus the quotes. */
  char *o = reserve(L, b, n * 6 + 2), *start = o;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      *o++ = (char)c;
      continue;
    }
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    default:
      memcpy(o, "u00", 3);
      o[3] = hex[c >> 4];
      o[4] = hex[c & 15];
      o += 5;
    }
  }
  *o++ = '"';
  b->len += (size_t)(o - start);
}

static void put_integer(lua_State *L, buf_t *b, lua_Integer v) {
  char tmp[24], *e = tmp + sizeof tmp, *p = e;
  /* Through unsigned, so that the minimum integer negates correctly. */
  unsigned long long u =
      v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (v < 0) *--p = '-';
  put(L, b, p, (size_t)(e - p));
}

/* The shortest text that reads back as v, with ".0" added to an integral
 * value so that it decodes as a float again. For a normal double whose
 * shortest form has up to 15 digits, %.15g is that form (the double lies
 * far closer to it than half a unit in the 15th digit, and %g drops
 * trailing zeros); otherwise the correctly rounded 16 or 17 digits are
 * the shortest that round-trip. Subnormals, whose spacing is coarser, are
 * tried from 1 digit up. */
static int format_float(char *out, size_t size, double v) {
  int n = 0;
  int prec = v != 0 && fabs(v) < DBL_MIN ? 1 : 15;
  for (; prec <= 17; prec++) {
    n = snprintf(out, size, "%.*g", prec, v);
    if (strtod(out, NULL) == v) break;
  }
  if (strpbrk(out, ".eEni") == NULL) { /* not 1e+300, inf or nan */
    memcpy(out + n, ".0", 3);
    n += 2;
  }
  return n;
}

static void encode_error(lua_State *L, const char *fmt, const char *what) {
  ar__error_push(L, "json", fmt, what);
  ar__error_throw(L);
}

static void encode_value(lua_State *L, buf_t *b, int idx, int depth);

/* The length of the table at idx as a JSON array, or -1 for an object.
 * A table with the array metatable is an array of its 1..#t; another is
 * one when its keys are exactly 1..n (n > 0). */
static lua_Integer array_length(lua_State *L, int idx) {
  if (lua_getmetatable(L, idx)) {
    ar__json_push_array_mt(L);
    int marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (marked) return (lua_Integer)lua_rawlen(L, idx);
  }
  lua_Integer n = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    lua_Integer k;
    if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1) {
      lua_pop(L, 1);
      return -1;
    }
    if (k > max) max = k;
    n++;
  }
  return n > 0 && n == max ? n : -1;
}

static void encode_table(lua_State *L, buf_t *b, int idx, int depth) {
  if (depth > MAX_DEPTH)
    encode_error(L, "cannot encode %s: nested deeper than 1000 (a cycle?)",
                 "a table");
  luaL_checkstack(L, 4, "JSON nested too deeply");
  lua_Integer n = array_length(L, idx);
  if (n >= 0) {
    put(L, b, "[", 1);
    for (lua_Integer i = 1; i <= n; i++) {
      if (i > 1) put(L, b, ",", 1);
      lua_rawgeti(L, idx, i);
      encode_value(L, b, lua_gettop(L), depth + 1);
      lua_pop(L, 1);
    }
    put(L, b, "]", 1);
    return;
  }
  int first = 1;
  put(L, b, "{", 1);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!first) put(L, b, ",", 1);
    first = 0;
    switch (lua_type(L, -2)) {
    case LUA_TSTRING: {
      size_t len;
      const char *k = lua_tolstring(L, -2, &len);
      put_string(L, b, k, len);
      break;
    }
    case LUA_TNUMBER: {
      char tmp[40];
      int len;
      if (lua_isinteger(L, -2)) {
        len = snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, lua_tointeger(L, -2));
      } else {
        double v = (double)lua_tonumber(L, -2);
        if (!isfinite(v))
          encode_error(L, "cannot encode %s as a key", "NaN or inf");
        len = format_float(tmp, sizeof tmp, v);
      }
      put_string(L, b, tmp, (size_t)len);
      break;
    }
    default:
      encode_error(L, "cannot encode a table key of type %s",
                   luaL_typename(L, -2));
    }
    put(L, b, ":", 1);
    encode_value(L, b, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  put(L, b, "}", 1);
}

static void encode_value(lua_State *L, buf_t *b, int idx, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: put(L, b, "null", 4); return;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      put(L, b, "true", 4);
    else
      put(L, b, "false", 5);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      put_integer(L, b, lua_tointeger(L, idx));
    } else {
      char tmp[40];
      double v = (double)lua_tonumber(L, idx);
      if (!isfinite(v)) encode_error(L, "cannot encode %s", "NaN or inf");
      put(L, b, tmp, (size_t)format_float(tmp, sizeof tmp, v));
    }
    return;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    put_string(L, b, s, len);
    return;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == ar__json_null) {
      put(L, b, "null", 4);
      return;
    }
    break;
  case LUA_TTABLE: encode_table(L, b, idx, depth); return;
  }
  encode_error(L, "cannot encode a %s", luaL_typename(L, idx));
}

void ar__json_encode(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  buf_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, BUFFER_MT)) {
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  encode_value(L, b, idx, 0);
  lua_pushlstring(L, b->p, b->len);
  free(b->p);
  b->p = NULL;
  lua_remove(L, -2);
}

/* ---- the module ---------------------------------------------------------- */

/* json.decode(s) */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  ar__json_error_t err;
  if (ar__json_decode(L, s, len, &err) == 0) return 1;
  ar__error_push(L, "json", "invalid JSON at position %d: %s",
                 (int)err.position, err.message);
  lua_pushinteger(L, (lua_Integer)err.position);
  lua_setfield(L, -2, "position");
  return ar__error_throw(L);
}

/* json.encode(v) */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  ar__json_encode(L, 1);
  return 1;
}

/* json.array([t]): t (or a new table) marked as a JSON array. */
static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  ar__json_push_array_mt(L);
  if (lua_getmetatable(L, 1) && !lua_rawequal(L, -1, -2))
    return luaL_argerror(L, 1, "table already has a metatable");
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

int luaopen_async_json(lua_State *L) {
  static const luaL_Reg funcs[] = {{"decode", l_decode},
                                   {"encode", l_encode},
                                   {"array", l_array},
                                   {NULL, NULL}};
  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, ar__json_null);
  lua_setfield(L, -2, "null");
  ar__json_push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  lua_pushfstring(L, "simdjson %s", ar__json_simd_version());
  lua_setfield(L, -2, "parser");
  return 1;
}
