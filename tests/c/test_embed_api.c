/* The embedding API: versions, runs, errors as codes and messages, calls
 * with arguments and results, registration, started runs and their
 * callbacks. */
#include "test_embed.h"

static void test_version(void) {
  CHECK_STR(ar_version(), AR_VERSION_STRING);
  CHECK_INT(ar_version_num(), AR_VERSION_NUM);
  CHECK_STR(ar_strerror(AR_ESYNTAX), "syntax error");
  CHECK_STR(ar_strerror(12345), "unknown error");
}

static void test_run_string(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK(E != NULL);
  CHECK_RC(E, ar_engine_run_string(E, "x = 40 + 2", "=setup"), 0);
  CHECK_STR(ar_engine_error(E), "");
  /* Globals persist from one run to the next. */
  CHECK_RC(E, ar_engine_run_string(E, "assert(x == 42)", NULL), 0);
  /* Tasks and sleeps work in a plain string run. */
  CHECK_RC(
      E,
      ar_engine_run_string(
          E,
          "local async = require 'async'\n"
          "local t = async.spawn(function() async.sleep(0.01) return 7 end)\n"
          "assert(t:await() == 7)",
          "=tasks"),
      0);
  ar_engine_free(E);
}

static void test_errors(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  /* A syntax error comes back as a code and a message. */
  CHECK_RC(E, ar_engine_run_string(E, "local = 1", "=bad"), AR_ESYNTAX);
  CHECK_HAS(ar_engine_error(E), "bad:1:");
  CHECK_HAS(ar_engine_error(E), "<name> expected");
  /* A runtime error: message and traceback. */
  CHECK_RC(E,
           ar_engine_run_string(E,
                                "local function inner() error('boom') end\n"
                                "local function outer() inner() end\n"
                                "outer()",
                                "=trace"),
           AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E), "trace:1: boom");
  CHECK_HAS(ar_engine_error(E), "stack traceback:");
  CHECK_HAS(ar_engine_error(E), "in upvalue 'inner'");
  /* An engine error object: one line from its __tostring. */
  CHECK_RC(
      E,
      ar_engine_run_string(
          E, "error(require('async').error('io', 'disk on fire'))", "=obj"),
      AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E), "io: disk on fire");
  /* A missing file. */
  CHECK_RC(E, ar_engine_run_file(E, "/nonexistent/script.lua", 0, NULL),
           AR_EFILE);
  CHECK_HAS(ar_engine_error(E), "/nonexistent/script.lua");
  /* A deadlock is reported, not hung on. */
  CHECK_RC(E,
           ar_engine_run_string(
               E,
               "local async = require 'async'\n"
               "local a, b\n"
               "a = async.spawn(function() async.sleep(0) b:await() end)\n"
               "b = async.spawn(function() async.sleep(0) a:await() end)\n"
               "a:await()",
               "=deadlock"),
           AR_EDEADLOCK);
  CHECK_HAS(ar_engine_error(E), "deadlock");
  CHECK_INT(ar_engine_tasks(E), 0);
  /* Bad arguments. */
  CHECK_RC(E, ar_engine_run_string(E, NULL, NULL), AR_EINVAL);
  CHECK_RC(E, ar_engine_run_file(E, "x.lua", 1, NULL), AR_EINVAL);
  CHECK_RC(NULL, ar_engine_run_string(NULL, "", NULL), AR_EINVAL);
  /* After all that the engine still works. */
  CHECK_RC(E, ar_engine_run_string(E, "return 1", NULL), 0);
  ar_engine_free(E);
}

/* A file with arguments, from a temporary file. */
static void test_run_file(void) {
  char path[] = "/tmp/ar_embed_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("local a, b = ...\nassert(a == 'one' and b == 'two', tostring(a))\n",
        f);
  fclose(f);
  ar_engine_t *E = ar_engine_new(NULL);
  const char *args[] = {"one", "two"};
  CHECK_RC(E, ar_engine_run_file(E, path, 2, args), 0);
  ar_engine_free(E);
  remove(path);
}

static void test_call(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  lua_State *L = ar_engine_lua(E);
  CHECK_RC(E,
           ar_engine_run_string(
               E,
               "local async = require 'async'\n"
               "function add(a, b) async.sleep(0.001) return a + b, 'sum' end\n"
               "function fail(msg) error(msg) end\n"
               "function none() end\n"
               "function concat(...) return table.concat({...}, ',') end\n"
               "callable = setmetatable({}, {__call = function(_, x) return x "
               "* 2 end})\n"
               "not_a_function = 3",
               "=defs"),
           0);
  int top = lua_gettop(L);
  lua_pushinteger(L, 40);
  lua_pushinteger(L, 2);
  int n = ar_engine_call(E, "add", 2);
  CHECK_RC(E, n, 2);
  CHECK_INT(lua_gettop(L), top + 2);
  CHECK_INT(lua_tointeger(L, -2), 42);
  CHECK_STR(lua_tostring(L, -1), "sum");
  lua_pop(L, 2);

  lua_pushstring(L, "a");
  lua_pushstring(L, "b");
  lua_pushstring(L, "c");
  CHECK_RC(E, ar_engine_call(E, "concat", 3), 1);
  CHECK_STR(lua_tostring(L, -1), "a,b,c");
  lua_pop(L, 1);

  CHECK_RC(E, ar_engine_call(E, "none", 0), 0);
  CHECK_INT(lua_gettop(L), top);

  lua_pushinteger(L, 21);
  CHECK_RC(E, ar_engine_call(E, "callable", 1), 1);
  CHECK_INT(lua_tointeger(L, -1), 42);
  lua_pop(L, 1);

  /* Errors: arguments popped, nothing pushed, message with traceback. */
  lua_pushstring(L, "bad input");
  CHECK_RC(E, ar_engine_call(E, "fail", 1), AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E), "bad input");
  CHECK_HAS(ar_engine_error(E), "stack traceback:");
  CHECK_INT(lua_gettop(L), top);

  lua_pushinteger(L, 1);
  CHECK_RC(E, ar_engine_call(E, "missing", 1), AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E),
            "global 'missing' is not a function (a nil value)");
  CHECK_INT(lua_gettop(L), top);
  CHECK_RC(E, ar_engine_call(E, "not_a_function", 0), AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E), "a number value");

  /* Bad arguments touch nothing. */
  CHECK_RC(E, ar_engine_call(E, "add", 5), AR_EINVAL);
  CHECK_RC(E, ar_engine_call(E, NULL, 0), AR_EINVAL);
  CHECK_INT(lua_gettop(L), top);
  ar_engine_free(E);
}

/* ---- registration ----------------------------------------------------------
 */

static int l_twice(lua_State *L) {
  lua_pushinteger(L, 2 * luaL_checkinteger(L, 1));
  return 1;
}

static int l_engine_is(lua_State *L) {
  ar_engine_t *E = ar_engine_of(L);
  lua_pushboolean(L, E != NULL && ar_engine_data(E) == (void *)&l_engine_is);
  return 1;
}

static int open_mymod(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, "mine");
  lua_setfield(L, -2, "name");
  return 1;
}

static const luaL_Reg lib_funcs[] = {
    {"twice", l_twice}, {"engine_is", l_engine_is}, {NULL, NULL}};

static void test_register(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK(ar_engine_data(E) == NULL);
  ar_engine_set_data(E, (void *)&l_engine_is);
  CHECK_RC(E, ar_engine_register_function(E, "twice", l_twice), 0);
  CHECK_RC(E, ar_engine_register_module(E, "mymod", open_mymod), 0);
  CHECK_RC(E, ar_engine_register_library(E, "mylib", lib_funcs), 0);
  CHECK_RC(E, ar_engine_register_function(E, "x", NULL), AR_EINVAL);
  CHECK_RC(E, ar_engine_register_library(E, NULL, lib_funcs), AR_EINVAL);
  CHECK_RC(E,
           ar_engine_run_string(E,
                                "assert(twice(21) == 42)\n"
                                "assert(require('mymod').name == 'mine')\n"
                                "local lib = require 'mylib'\n"
                                "assert(lib.twice(5) == 10)\n"
                                "assert(lib.engine_is())\n"
                                "local async = require 'async'\n"
                                "assert(async.spawn(lib.engine_is):await())\n"
                                "local ok, err = pcall(lib.twice, 'x')\n"
                                "assert(not ok and err:find(\"bad argument #1 "
                                "to '[%w.]*twice'\"), err)",
                                "=reg"),
           0);
  ar_engine_free(E);
}

/* ---- started runs
 * ------------------------------------------------------------ */

struct done {
  int calls, status, nresults;
  long long first;
  char msg[256];
};

static void done_cb(ar_engine_t *E, int status, int nresults, void *data) {
  struct done *d = data;
  lua_State *L = ar_engine_lua(E);
  d->calls++;
  d->status = status;
  d->nresults = nresults;
  d->first = nresults > 0 ? (long long)lua_tointeger(L, -nresults) : -1;
  snprintf(d->msg, sizeof d->msg, "%s", ar_engine_error(E));
}

static void test_started(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  uv_loop_t *loop = ar_engine_loop(E);
  lua_State *L = ar_engine_lua(E);
  struct done d = {0};

  /* Stepping an owned loop with UV_RUN_NOWAIT. */
  CHECK_RC(E,
           ar_engine_start_string(E,
                                  "local async = require 'async'\n"
                                  "local n = 0\n"
                                  "for i = 1, 3 do async.spawn(function() "
                                  "async.sleep(0.005 * i) n = n + i end) end\n"
                                  "async.sleep(0.03)\n"
                                  "return n, 'x'",
                                  "=started", done_cb, &d),
           0);
  /* One run at a time. */
  CHECK_RC(E, ar_engine_run_string(E, "return 1", NULL), AR_EBUSY);
  CHECK_RC(E, ar_engine_start_string(E, "return 1", NULL, NULL, NULL),
           AR_EBUSY);
  int steps = 0;
  while (d.calls == 0) {
    uv_run(loop, UV_RUN_NOWAIT);
    steps++;
  }
  CHECK(steps > 1);
  CHECK_INT(d.calls, 1);
  CHECK_RC(E, d.status, 0);
  CHECK_INT(d.nresults, 2);
  CHECK_INT(d.first, 6);
  CHECK_INT(lua_gettop(L), 0); /* results popped after the callback */

  /* A failure reaches the callback with its message. */
  memset(&d, 0, sizeof d);
  CHECK_RC(
      E,
      ar_engine_start_string(E, "error('started failure')", "=sf", done_cb, &d),
      0);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(d.calls, 1);
  CHECK_RC(E, d.status, AR_ERUNTIME);
  CHECK_HAS(d.msg, "sf:1: started failure");

  /* A load failure is returned at once, and the callback never runs. */
  memset(&d, 0, sizeof d);
  CHECK_RC(E, ar_engine_start_string(E, "(", "=syn", done_cb, &d), AR_ESYNTAX);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(d.calls, 0);

  /* A started call, with arguments. */
  CHECK_RC(E,
           ar_engine_run_string(E, "function mul(a, b) return a * b end", NULL),
           0);
  memset(&d, 0, sizeof d);
  lua_pushinteger(L, 6);
  lua_pushinteger(L, 7);
  CHECK_RC(E, ar_engine_start_call(E, "mul", 2, done_cb, &d), 0);
  CHECK_INT(lua_gettop(L), 0);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(d.calls, 1);
  CHECK_INT(d.first, 42);

  /* Stopped: the run ends cancelled. */
  memset(&d, 0, sizeof d);
  CHECK_RC(E,
           ar_engine_start_string(E, "require('async').sleep(100)", NULL,
                                  done_cb, &d),
           0);
  uv_run(loop, UV_RUN_NOWAIT);
  CHECK_INT(ar_engine_tasks(E), 1);
  ar_engine_stop(E);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(d.calls, 1);
  CHECK_RC(E, d.status, AR_ECANCELLED);

  /* Freed while a run is in progress: the tasks end, no callback. */
  memset(&d, 0, sizeof d);
  CHECK_RC(E,
           ar_engine_start_string(
               E,
               "local async = require 'async'\n"
               "for i = 1, 10 do async.spawn(async.sleep, 100) end\n"
               "async.sleep(100)",
               NULL, done_cb, &d),
           0);
  uv_run(loop, UV_RUN_NOWAIT);
  CHECK_INT(ar_engine_tasks(E), 11);
  ar_engine_free(E);
  CHECK_INT(d.calls, 0);
}

/* A leftover task's failure that nobody awaited does not change the
 * outcome (it is reported on stderr), and leftovers are cancelled. */
static void test_leftovers(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK_RC(
      E,
      ar_engine_run_string(E,
                           "local async = require 'async'\n"
                           "cleaned = false\n"
                           "async.spawn(function()\n"
                           "  local ok, err = pcall(async.sleep, 100)\n"
                           "  cleaned = not ok and err.kind == 'cancelled'\n"
                           "  error(err)\n"
                           "end)\n"
                           "async.sleep(0)",
                           "=left"),
      0);
  CHECK_RC(E, ar_engine_run_string(E, "assert(cleaned)", NULL), 0);
  ar_engine_free(E);
}

/* Leftovers that swallow every cancellation and then wait on each other
 * are closed by force; a <close> handler that tries to wait then fails
 * cleanly and leaves no timer behind. */
static void test_force_close(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK_RC(
      E,
      ar_engine_run_string(
          E,
          "local async = require 'async'\n"
          "closed = 0\n"
          "local a, b\n"
          "local function stubborn(get)\n"
          "  local guard <close> = setmetatable({}, {__close = function()\n"
          "    closed = closed + 1\n"
          "    local ok, err = pcall(async.sleep, 1)\n"
          "    close_err = tostring(err)\n"
          "  end})\n"
          "  while true do pcall(function() get():await() end) end\n"
          "end\n"
          "a = async.spawn(stubborn, function() return b end)\n"
          "b = async.spawn(stubborn, function() return a end)\n"
          "async.sleep(0.01)",
          "=force"),
      0);
  CHECK_INT(ar_engine_tasks(E), 0);
  CHECK_RC(E,
           ar_engine_run_string(E,
                                "local st = require('async').stats()\n"
                                "assert(closed == 2, closed)\n"
                                "assert(close_err:find('yield'), close_err)\n"
                                "assert(st.timers == 0 and st.tasks == 1)",
                                "=after"),
           0);
  ar_engine_free(E);
}

int main(void) {
  test_version();
  test_run_string();
  test_errors();
  test_run_file();
  test_call();
  test_register();
  test_started();
  test_leftovers();
  test_force_close();
  printf("ok\n");
  return 0;
}
