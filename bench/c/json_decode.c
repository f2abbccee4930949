/* JSON decoders for async.json, side by side: each turns a document into
 * Lua values (tables, integers, floats, strings), which is the work a
 * script pays for, on bench/run's 400-byte document and on a 10 MB one.
 *
 *   cjson     lua-cjson 2.1.0's decode, as `require "cjson"` has it
 *   jansson   Debian's libjansson 2.14: json_loadb, then its tree to Lua
 *   simdjson  async.json's decoder (bindings/ljson.c on simdjson 3.0)
 *
 * Built with the tree (target bench_json) and run by hand:
 *   build/bench_json [rounds]
 * Prints per decoder the median over the rounds: microseconds per small
 * document and MB/s on the large one. */
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"

int luaopen_cjson(lua_State *L);

static const char small_doc[] =
    "{\"n\": 42, \"id\": \"item-042\", \"name\": \"Widget number 42\", "
    "\"active\": true, \"price\": 52.5, \"tags\": [\"bench\", \"asyncrun\", "
    "\"group-0\"], \"owner\": {\"name\": \"Bench Owner\", \"email\": "
    "\"owner@example.invalid\"}, \"history\": [{\"at\": 1700000042, \"qty\": "
    "1}, {\"at\": 1700000084, \"qty\": 2}, {\"at\": 1700000126, \"qty\": 3}], "
    "\"note\": "
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxx\"}\n";

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* jansson's tree as Lua values, with the same rules as async.json. */
static void push_jansson(lua_State *L, const json_t *j) {
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *k;
    json_t *v;
    lua_createtable(L, 0, (int)json_object_size(j));
    json_object_foreach((json_t *)j, k, v) {
      push_jansson(L, v);
      lua_setfield(L, -2, k);
    }
    break;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(j);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      push_jansson(L, json_array_get(j, i));
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  }
  case JSON_STRING:
    lua_pushlstring(L, json_string_value(j), json_string_length(j));
    break;
  case JSON_INTEGER: lua_pushinteger(L, json_integer_value(j)); break;
  case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
  case JSON_TRUE: lua_pushboolean(L, 1); break;
  case JSON_FALSE: lua_pushboolean(L, 0); break;
  default: lua_pushlightuserdata(L, NULL);
  }
}

typedef void (*decode_fn)(lua_State *L, const char *s, size_t len);

static void dec_cjson(lua_State *L, const char *s, size_t len) {
  lua_getfield(L, LUA_REGISTRYINDEX, "bench.cjson.decode");
  lua_pushlstring(L, s, len);
  lua_call(L, 1, 1);
}

static void dec_jansson(lua_State *L, const char *s, size_t len) {
  json_error_t err;
  json_t *j = json_loadb(s, len, JSON_DECODE_ANY, &err);
  if (j == NULL) {
    fprintf(stderr, "jansson: %s\n", err.text);
    exit(1);
  }
  push_jansson(L, j);
  json_decref(j);
}

static void dec_simdjson(lua_State *L, const char *s, size_t len) {
  ar__json_error_t err;
  if (ar__json_decode(L, s, len, &err) != 0) {
    fprintf(stderr, "simdjson: %s\n", err.message);
    exit(1);
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median seconds per decode of doc over rounds of n decodes. */
static double measure(lua_State *L, decode_fn f, const char *doc, size_t len,
                      int n, int rounds) {
  double t[64];
  for (int r = 0; r < rounds; r++) {
    double t0 = now();
    for (int i = 0; i < n; i++) {
      f(L, doc, len);
      lua_pop(L, 1);
    }
    t[r] = (now() - t0) / n;
    lua_gc(L, LUA_GCCOLLECT);
  }
  qsort(t, (size_t)rounds, sizeof t[0], cmp);
  return t[rounds / 2];
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  if (rounds < 1 || rounds > 64) rounds = 5;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "cjson", luaopen_cjson, 0);
  lua_getfield(L, -1, "decode");
  lua_setfield(L, LUA_REGISTRYINDEX, "bench.cjson.decode");
  lua_pop(L, 1);

  /* The large document: the small one's shape with varied values, as an
   * array, to 10 MB. */
  size_t cap = 11u << 20, len = 0;
  char *big = malloc(cap);
  big[len++] = '[';
  for (int k = 0; len < (10u << 20); k++) {
    len += (size_t)snprintf(
        big + len, cap - len,
        "%s{\"n\": %d, \"id\": \"item-%06d\", \"name\": \"Widget number %d\", "
        "\"active\": %s, \"price\": %.2f, \"ratio\": %.17g, \"tags\": "
        "[\"bench\", \"asyncrun\", \"group-%d\"], \"owner\": {\"name\": "
        "\"Bench Owner\", \"email\": \"owner@example.invalid\"}, \"history\": "
        "[{\"at\": %d, \"qty\": 1}, {\"at\": %d, \"qty\": 2}], \"big\": "
        "%lld}",
        k ? ", " : "", k, k, k, k % 2 ? "true" : "false", k * 1.25, k / 7.0,
        k % 7, 1700000000 + k, 1700000000 + 2 * k, 1234567890123456789LL - k);
  }
  big[len++] = ']';

  static const struct {
    const char *name;
    decode_fn f;
  } decs[] = {{"cjson 2.1.0", dec_cjson},
              {"jansson " JANSSON_VERSION, dec_jansson},
              {"simdjson (async.json)", dec_simdjson}};
  printf("| decoder | 400-byte document | 10 MB document |\n");
  printf("|---|---:|---:|\n");
  for (size_t i = 0; i < sizeof decs / sizeof decs[0]; i++) {
    double small =
        measure(L, decs[i].f, small_doc, sizeof small_doc - 1, 100000, rounds);
    double large = measure(L, decs[i].f, big, len, 1, rounds);
    printf("| %s | %.2f us | %.0f MB/s (%.0f ms) |\n", decs[i].name,
           small * 1e6, (double)len / large / 1e6, large * 1e3);
    fflush(stdout);
  }
  free(big);
  lua_close(L);
  return 0;
}
