/* Which libraries, modules and functions an engine opens (allow/deny
 * rules), and where require looks. */
#include <unistd.h>

#include "test_embed.h"

static ar_engine_t *engine_with(const char *const *rules) {
  ar_config_t *cfg = ar_config_new();
  CHECK(cfg != NULL);
  for (; *rules != NULL; rules++) {
    const char *r = *rules;
    int rc =
        r[0] == '+' ? ar_config_allow(cfg, r + 1) : ar_config_deny(cfg, r + 1);
    CHECK_RC(NULL, rc, 0);
  }
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK(E != NULL);
  return E;
}

static void run_ok(ar_engine_t *E, const char *code) {
  int rc = ar_engine_run_string(E, code, "=sandbox");
  if (rc != 0) FAIL_AT("%s\n-> %s", code, ar_engine_error(E));
}

static void test_default_opens_everything(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  run_ok(E, "assert(io and os and debug and string and table and math and utf8 "
            "and coroutine)\n"
            "assert(os.exit and dofile and package.loadlib)\n"
            "assert(require('async').sleep)");
  ar_engine_free(E);
}

static void test_deny_libraries(void) {
  const char *rules[] = {"-io", "-os", "-debug", NULL};
  ar_engine_t *E = engine_with(rules);
  run_ok(E, "assert(io == nil and os == nil and debug == nil)\n"
            "assert(string and table and math)\n"
            "local ok, err = pcall(require, 'io')\n"
            "assert(not ok and err:find(\"module 'io' is not available in this "
            "engine\"), err)\n"
            "assert(require('async').spawn)");
  ar_engine_free(E);
}

/* Built-in modules go by name too, "name.*" covers the modules under a
 * name, and names nothing answers to yet are accepted (async.fs, say). */
static void test_deny_modules(void) {
  const char *rules[] = {"-async.*", "-async.fs", "-async.process", NULL};
  ar_engine_t *E = engine_with(rules);
  run_ok(E, "assert(require('async').sleep)\n"
            "local ok, err = pcall(require, 'async.http')\n"
            "assert(not ok and err:find(\"module 'async.http' is not "
            "available\"), err)\n"
            "assert(require('cjson').encode({1}) == '[1]')");
  ar_engine_free(E);

  const char *rules1[] = {"-*", "+async", NULL};
  E = engine_with(rules1);
  run_ok(E, "assert(require('async').spawn)\n"
            "assert(not pcall(require, 'async.http'))\n"
            "assert(not pcall(require, 'cjson'))");
  ar_engine_free(E);

  /* async.http does not need cjson (its JSON is async.json's C side),
   * nor the table library (issue 12: a sandbox without `table`). */
  const char *rules2[] = {"-cjson", "-cjson.safe", "-table", NULL};
  E = engine_with(rules2);
  run_ok(E, "assert(not pcall(require, 'cjson'))\n"
            "assert(table == nil)\n"
            "assert(require('async.http').get)\n"
            "assert(not pcall(require, 'cjson'))\n"
            "assert(require('async.json').decode('[2]')[1] == 2)\n"
            "local http = require('async.http')\n"
            "local ok, e = pcall(http.get, 'http://127.0.0.1:9/', "
            "{query = {b = '1', a = {'x', 'y'}}, connect_timeout = 5})\n"
            "assert(not ok and e.kind == 'connect', tostring(e))\n"
            "assert(e.url == 'http://127.0.0.1:9/?a=x&a=y&b=1', e.url)");
  ar_engine_free(E);

  const char *rules3[] = {"-async", NULL};
  E = engine_with(rules3);
  run_ok(
      E,
      "local ok, err = pcall(require, 'async')\n"
      "assert(not ok and err:find(\"module 'async' is not available\"), err)");
  ar_engine_free(E);
}

/* "*" then allow: an allow-list. The base library and package always
 * open, and "*" does not reach functions inside an allowed library. */
static void test_allow_list(void) {
  const char *rules[] = {"-*", "+string", "+table", "+async", "+os", NULL};
  ar_engine_t *E = engine_with(rules);
  run_ok(E, "assert(string and table and os and os.time and os.exit)\n"
            "assert(io == nil and debug == nil and math == nil and utf8 == nil "
            "and coroutine == nil)\n"
            "assert(print and require and package)\n"
            "assert(require('async').now)");
  ar_engine_free(E);
}

static void test_deny_functions(void) {
  const char *rules[] = {
      "-os.exit",         "-os.execute", "-_G.dofile",     "-_G.loadfile",
      "-package.loadlib", "-string.*",   "+string.format", NULL};
  ar_engine_t *E = engine_with(rules);
  run_ok(E,
         "assert(os.exit == nil and os.execute == nil and os.time)\n"
         "assert(dofile == nil and loadfile == nil and load)\n"
         "assert(package.loadlib == nil)\n"
         "assert(string.format and string.rep == nil and string.sub == nil)\n"
         "assert(require('string') == string)");
  ar_engine_free(E);
}

static void test_bad_rules(void) {
  ar_config_t *cfg = ar_config_new();
  const char *bad[] = {"",    "io lib", ".io", "io.", "a..b",
                       "*.x", "a.*.b",  "io*", "x-y"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (ar_config_deny(cfg, bad[i]) != AR_EINVAL)
      FAIL_AT("accepted rule \"%s\"", bad[i]);
  CHECK_RC(NULL, ar_config_deny(cfg, NULL), AR_EINVAL);
  CHECK_RC(NULL, ar_config_deny(NULL, "io"), AR_EINVAL);
  CHECK_RC(NULL, ar_config_allow(cfg, "_G.print"), 0);
  CHECK_RC(NULL, ar_config_allow(cfg, "async.http.*"), 0);
  CHECK_RC(NULL, ar_config_set_memory_limit(NULL, 1), AR_EINVAL);
  ar_config_free(cfg);
  ar_config_free(NULL);
}

static void test_paths(void) {
  char dir[] = "/tmp/ar_sandbox_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char file[512];
  snprintf(file, sizeof file, "%s/greet.lua", dir);
  FILE *f = fopen(file, "w");
  CHECK(f != NULL);
  fputs("return { hello = function() return 'hi' end }\n", f);
  fclose(f);

  char path[512];
  snprintf(path, sizeof path, "%s/?.lua", dir);
  ar_config_t *cfg = ar_config_new();
  CHECK_RC(NULL, ar_config_set_path(cfg, path), 0);
  CHECK_RC(NULL, ar_config_set_cpath(cfg, ""), 0);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  run_ok(E, "assert(require('greet').hello() == 'hi')\n"
            "assert(package.cpath == '')");
  ar_engine_free(E);

  /* An empty path finds nothing, whatever LUA_PATH says. */
  setenv("LUA_PATH_5_4", path, 1);
  cfg = ar_config_new();
  CHECK_RC(NULL, ar_config_set_path(cfg, ""), 0);
  E = ar_engine_new(cfg);
  ar_config_free(cfg);
  run_ok(E, "local ok, err = pcall(require, 'greet')\n"
            "assert(not ok and err:find(\"module 'greet' not found\"), err)");
  ar_engine_free(E);
  unsetenv("LUA_PATH_5_4");

  remove(file);
  rmdir(dir);
}

int main(void) {
  test_default_opens_everything();
  test_deny_libraries();
  test_deny_modules();
  test_allow_list();
  test_deny_functions();
  test_bad_rules();
  test_paths();
  printf("ok\n");
  return 0;
}
