/* The memory cap: a script that allocates without bound fails with "not
 * enough memory" and the host goes on. A sweep of caps makes allocations
 * fail at many different points of the engine (spawning, waking, host
 * operations, error reporting), and every run must come back as a code:
 * never a panic, never an abort, and the engine stays usable. */
#include "test_embed.h"

static void test_unbounded(void) {
  ar_config_t *cfg = ar_config_new();
  ar_config_set_memory_limit(cfg, 8u << 20);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK(E != NULL);
  CHECK_RC(E,
           ar_engine_run_string(
               E,
               "local t = {}\n"
               "for i = 1, math.huge do t[i] = string.rep('x', 1000) .. i end",
               "=hog"),
           AR_ERUNTIME);
  CHECK_HAS(ar_engine_error(E), "not enough memory");
  CHECK(ar_engine_memory(E) <= (8u << 20));

  /* In a task, caught by the script: the others go on. */
  CHECK_RC(E,
           ar_engine_run_string(
               E,
               "local async = require 'async'\n"
               "local ticks = 0\n"
               "local ticker = async.spawn(function()\n"
               "  for i = 1, 5 do async.sleep(0.001) ticks = ticks + 1 end\n"
               "end)\n"
               "local hog = async.spawn(function()\n"
               "  local t = {}\n"
               "  for i = 1, math.huge do t[i] = {i, tostring(i)} if i % 1000 "
               "== 0 then async.sleep(0) end end\n"
               "end)\n"
               "local ok, err = pcall(hog.await, hog)\n"
               "assert(not ok and tostring(err):find('not enough memory'), "
               "tostring(err))\n"
               "ticker:await()\n"
               "assert(ticks == 5)",
               "=task"),
           0);

  /* The cap can move: lowered below what is in use, nothing new fits. */
  ar_engine_set_memory_limit(E, 1);
  CHECK_RC(E, ar_engine_run_string(E, "return 1", NULL), AR_ENOMEM);
  /* Pushing arguments is the host's business and is never refused. */
  lua_State *L = ar_engine_lua(E);
  lua_pushstring(L, "a string pushed by the host over the cap");
  CHECK_RC(E, ar_engine_call(E, "print", 1), AR_ENOMEM);
  CHECK_INT(lua_gettop(L), 0);
  ar_engine_set_memory_limit(E, 0);
  CHECK_RC(E, ar_engine_run_string(E, "function len(s) return #s end", NULL),
           0);
  lua_pushstring(L, "abc");
  CHECK_RC(E, ar_engine_call(E, "len", 1), 1);
  CHECK_INT(lua_tointeger(L, -1), 3);
  lua_pop(L, 1);
  ar_engine_free(E);
}

/* ---- the sweep
 * ----------------------------------------------------------------- */

struct op {
  uv_timer_t timer;
  ar_op_t *op;
  int mode;
};

static int ops_pending, cancels;

static void op_close_cb(uv_handle_t *h) {
  ops_pending--;
  free(h->data);
}

static int push_table(lua_State *L, void *data) {
  (void)data;
  lua_createtable(L, 4, 4);
  for (int i = 1; i <= 8; i++) {
    lua_pushfstring(L, "value %d of a table built by the host", i);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static void op_timer_cb(uv_timer_t *t) {
  struct op *o = t->data;
  switch (o->mode) {
  case 0:
    ar_op_resolve_values(o->op, "sI",
                         "a string made by the host for the script",
                         (lua_Integer)42);
    break;
  case 1: ar_op_resolve(o->op, push_table, NULL); break;
  default:
    ar_op_reject(o->op, "device", "a failure reported by the host");
    break;
  }
  uv_close((uv_handle_t *)&o->timer, op_close_cb);
}

static void op_cancel_cb(ar_op_t *op, void *data) {
  struct op *o = data;
  (void)op;
  cancels++;
  uv_timer_stop(&o->timer);
  uv_close((uv_handle_t *)&o->timer, op_close_cb);
}

static int l_op(lua_State *L) {
  int mode = (int)luaL_checkinteger(L, 1);
  struct op *o = malloc(sizeof *o);
  if (o == NULL) return luaL_error(L, "out of host memory");
  o->mode = mode;
  o->op = ar_op_new(L, op_cancel_cb, o);
  if (o->op == NULL) {
    free(o);
    return luaL_error(L, "op needs a task");
  }
  uv_timer_init(ar_engine_loop(ar_engine_of(L)), &o->timer);
  o->timer.data = o;
  uv_timer_start(&o->timer, op_timer_cb, mode == 3 ? 10000 : 0, 0);
  ops_pending++;
  return ar_op_suspend(L, o->op);
}

/* seen(ok, err): a failure must come back as what was raised (a string
 * or a table here), never as some other value of the dead task's stack.
 * Allocates nothing. */
static int bad_errors;

static int l_seen(lua_State *L) {
  if (!lua_toboolean(L, 1) && lua_type(L, 2) != LUA_TSTRING &&
      lua_type(L, 2) != LUA_TTABLE)
    bad_errors++;
  return 0;
}

static const char sweep_script[] =
    "local async = require 'async'\n"
    "local parts = {}\n"
    "local function work(i)\n"
    "  parts[#parts + 1] = string.rep('w', 50 * i) .. i\n"
    "  async.sleep(0)\n"
    "  local s, n = op(0)\n"
    "  local t = op(1)\n"
    "  local ok, err = pcall(op, 2)\n"
    "  if i % 3 == 0 then error({ code = i, text = s .. #t }) end\n"
    "  if i % 4 == 0 then error('plain failure ' .. i) end\n"
    "  return s, n, t\n"
    "end\n"
    "local fns = {}\n"
    "for i = 1, 12 do fns[i] = function() return work(i) end end\n"
    "local r = async.gather(fns, { return_exceptions = true })\n"
    "local slow = async.spawn(op, 3)\n" /* cancelled by wait_for below */
    "pcall(async.wait_for, slow, 0.001)\n"
    "local bg = async.spawn(function() async.sleep(10) end)\n" /* left behind */
    "local ts = {}\n"
    "for i = 1, 20 do ts[i] = async.spawn(function() return tostring(i):rep(i) "
    "end) end\n"
    "async.sleep(0)\n"
    "for i = 1, 20 do seen(pcall(ts[i].await, ts[i])) end\n"
    "return #r\n";

/* Runs the sweep script under caps just above the engine's own size.
 * Returns how many runs succeeded. */
static int sweep(size_t from, size_t to, size_t step) {
  int ok = 0, failed = 0;
  for (size_t extra = from; extra <= to; extra += step) {
    ar_engine_t *E = ar_engine_new(NULL);
    CHECK(E != NULL);
    CHECK_RC(E, ar_engine_register_function(E, "op", l_op), 0);
    CHECK_RC(E, ar_engine_register_function(E, "seen", l_seen), 0);
    ar_engine_set_memory_limit(E, ar_engine_memory(E) + extra);
    int rc = ar_engine_run_string(E, sweep_script, "=sweep");
    if (rc != 0 && rc != AR_ERUNTIME && rc != AR_ENOMEM)
      FAIL_AT("cap +%zu: unexpected %s: %s", extra, ar_strerror(rc),
              ar_engine_error(E));
    if (rc == 0)
      ok++;
    else
      failed++;
    CHECK_INT(ar_engine_tasks(E), 0);
    CHECK_INT(ops_pending, 0);
    CHECK_INT(bad_errors, 0);
    /* The engine is still usable. */
    ar_engine_set_memory_limit(E, 0);
    CHECK_RC(
        E,
        ar_engine_run_string(
            E,
            "local async = require 'async'\n"
            "local t = async.spawn(function() return op(0) end)\n"
            "assert(t:await():find('host'))\n"
            "assert(async.stats().tasks == 1 and async.stats().timers == 0)",
            "=after"),
        0);
    ar_engine_free(E);
  }
  printf("sweep of caps +%zu..+%zu bytes: %d runs succeeded, %d failed\n", from,
         to, ok, failed);
  CHECK(failed > 0); /* the sweep did reach failures */
  return ok;
}

int main(void) {
  test_unbounded();
  /* Small steps up to where the script starts to succeed (about 60 KiB
   * above the engine's own size), so allocations fail all along it. */
  int ok = sweep(0, 96 * 1024, 160);
  CHECK(ok > 0);
  printf("ok (%d cancelled host operations)\n", cancels);
  return 0;
}
