/* Host asynchronous operations: completion with values, push callbacks
 * and errors; completion before suspension; cancellation from every
 * direction calling the host's cancel callback exactly once. */
#include "test_embed.h"

/* An operation completed by a host timer after `ms`, with a mode. */
enum {
  RESOLVE_FMT,
  RESOLVE_PUSH,
  REJECT,
  PUSH_RAISES,
  NEVER,
  RESOLVE_THEN_STOP
};

struct op {
  uv_timer_t timer;
  ar_op_t *op;
  int mode;
  int id;
  struct counters *c;
};

struct counters {
  int started, completed, cancelled, closed;
  int resolve_rc_in_cancel;
};

static struct counters C;

static void close_cb(uv_handle_t *h) {
  C.closed++;
  free(h->data);
}

static int push_table(lua_State *L, void *data) {
  struct op *o = data;
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, o->id);
  lua_setfield(L, -2, "id");
  lua_pushliteral(L, "pushed");
  lua_setfield(L, -2, "how");
  lua_pushboolean(L, 1);
  return 2;
}

static int push_raises(lua_State *L, void *data) {
  (void)data;
  lua_pushliteral(L, "custom failure");
  return lua_error(L);
}

static void complete(struct op *o) {
  int rc = 0;
  C.completed++;
  switch (o->mode) {
  case RESOLVE_FMT:
    rc = ar_op_resolve_values(o->op, "IdsSbn", (lua_Integer)o->id, 0.5, "text",
                              "a\0b", (size_t)3, 1);
    break;
  case RESOLVE_PUSH: rc = ar_op_resolve(o->op, push_table, o); break;
  case REJECT:
    rc = ar_op_reject(o->op, "device", "the device is on fire");
    break;
  case PUSH_RAISES:
    rc = ar_op_resolve(o->op, push_raises, o);
    CHECK_RC(NULL, rc, AR_ERUNTIME);
    rc = 0;
    break;
  case RESOLVE_THEN_STOP: {
    /* Completed, then cancelled before its task runs again. */
    ar_engine_t *E = ar_op_engine(o->op);
    rc = ar_op_resolve_values(o->op, "s", "dropped");
    ar_engine_stop(E);
    break;
  }
  }
  CHECK_RC(NULL, rc, 0);
}

static void timer_cb(uv_timer_t *t) {
  struct op *o = t->data;
  complete(o);
  uv_close((uv_handle_t *)&o->timer, close_cb);
}

static void cancel_cb(ar_op_t *op, void *data) {
  struct op *o = data;
  CHECK(op == o->op);
  CHECK(ar_op_data(op) == o);
  C.cancelled++;
  /* Completing from here is refused and changes nothing. */
  C.resolve_rc_in_cancel = ar_op_resolve_values(op, "i", 1);
  uv_timer_stop(&o->timer);
  uv_close((uv_handle_t *)&o->timer, close_cb);
}

/* op(mode, ms, id) */
static int l_op(lua_State *L) {
  int mode = (int)luaL_checkinteger(L, 1);
  int ms = (int)luaL_checkinteger(L, 2);
  struct op *o = malloc(sizeof *o);
  CHECK(o != NULL);
  o->mode = mode;
  o->id = (int)luaL_optinteger(L, 3, 0);
  o->op = ar_op_new(L, cancel_cb, o);
  if (o->op == NULL) {
    free(o);
    return luaL_error(L, "op: not in a task");
  }
  CHECK(ar_op_engine(o->op) == ar_engine_of(L));
  C.started++;
  uv_timer_init(ar_engine_loop(ar_engine_of(L)), &o->timer);
  o->timer.data = o;
  if (mode != NEVER)
    uv_timer_start(&o->timer, timer_cb, (uint64_t)ms, 0);
  else
    uv_timer_start(&o->timer, timer_cb, 1000000, 0); /* keeps the loop alive */
  return ar_op_suspend(L, o->op);
}

/* now_op(mode, id): completed before it is suspended on. */
static int l_now_op(lua_State *L) {
  int mode = (int)luaL_checkinteger(L, 1);
  struct op o = {.mode = mode, .id = (int)luaL_optinteger(L, 2, 0)};
  o.op = ar_op_new(L, cancel_cb, &o);
  CHECK(o.op != NULL);
  lua_pushliteral(L, "below"); /* the C function's own stack stays put */
  C.started++;
  complete(&o);
  return ar_op_suspend(L, o.op);
}

static ar_engine_t *engine(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK(E != NULL);
  CHECK_RC(E, ar_engine_register_function(E, "op", l_op), 0);
  CHECK_RC(E, ar_engine_register_function(E, "now_op", l_now_op), 0);
  CHECK_RC(
      E,
      ar_engine_run_string(E,
                           "async = require 'async'\n"
                           "FMT, PUSH, REJECT, RAISES, NEVER = 0, 1, 2, 3, 4",
                           "=setup"),
      0);
  return E;
}

static void run_ok(ar_engine_t *E, const char *code) {
  int rc = ar_engine_run_string(E, code, "=ops");
  if (rc != 0) FAIL_AT("%s\n-> %s", code, ar_engine_error(E));
}

static void check_all_closed(void) {
  CHECK_INT(C.started, C.completed + C.cancelled);
}

static void test_values(void) {
  ar_engine_t *E = engine();
  memset(&C, 0, sizeof C);
  run_ok(E, "local i, d, s, b, t, n = op(FMT, 5, 7)\n"
            "assert(i == 7 and math.type(i) == 'integer')\n"
            "assert(d == 0.5 and s == 'text' and b == 'a\\0b' and t == true "
            "and n == nil)\n"
            "assert(select('#', op(FMT, 1, 1)) == 6)\n"
            "local tab, yes = op(PUSH, 5, 9)\n"
            "assert(tab.id == 9 and tab.how == 'pushed' and yes == true)\n"
            "local ok, err = pcall(function()\n"
            "  return op(REJECT, 5)\n" /* line 8: where the error is raised */
            "end)\n"
            "assert(not ok and err.kind == 'device' and err.message == 'the "
            "device is on fire')\n"
            "assert(tostring(err):find('^ops:8: device: the device is on "
            "fire'), tostring(err))\n"
            "ok, err = pcall(op, RAISES, 5)\n"
            "assert(not ok and err == 'custom failure', tostring(err))");
  CHECK_INT(C.started, 5);
  CHECK_INT(C.completed, 5);
  CHECK_INT(C.cancelled, 0);
  ar_engine_free(E);
  CHECK_INT(C.closed, 5);
}

static void test_early(void) {
  ar_engine_t *E = engine();
  memset(&C, 0, sizeof C);
  run_ok(E, "local a, b = now_op(FMT, 3)\n"
            "assert(a == 3 and b == 0.5)\n"
            "local t, y = now_op(PUSH, 4)\n"
            "assert(t.id == 4 and y == true)\n"
            "local ok, err = pcall(function() return now_op(REJECT) end)\n"
            "assert(not ok and err.kind == 'device', tostring(err))\n"
            "assert(err.where == 'ops:5: ', tostring(err.where))");
  CHECK_INT(C.cancelled, 0);
  ar_engine_free(E);
}

/* Many tasks waiting on host operations at once. */
static void test_concurrent(void) {
  ar_engine_t *E = engine();
  memset(&C, 0, sizeof C);
  run_ok(E, "local fns = {}\n"
            "for i = 1, 200 do fns[i] = function() return (op(FMT, i % 20, i)) "
            "end end\n"
            "local t0 = async.now()\n"
            "local r = async.gather(fns)\n"
            "for i = 1, 200 do assert(r[i] == i) end\n"
            "assert(async.now() - t0 < 2, 'ops ran concurrently')");
  CHECK_INT(C.completed, 200);
  ar_engine_free(E);
  CHECK_INT(C.closed, 200);
}

static void test_cancel(void) {
  ar_engine_t *E = engine();
  memset(&C, 0, sizeof C);
  /* t:cancel() */
  run_ok(E, "local t = async.spawn(op, NEVER, 0)\n"
            "async.sleep(0.01)\n"
            "t:cancel()\n"
            "local ok, err = pcall(t.await, t)\n"
            "assert(not ok and err.kind == 'cancelled')");
  CHECK_INT(C.cancelled, 1);
  CHECK_RC(E, C.resolve_rc_in_cancel, AR_ECANCELLED);
  CHECK_INT(C.closed, 1);
  /* A timeout. */
  run_ok(E, "local ok, err = pcall(async.wait_for, function() return op(NEVER, "
            "0) end, 0.02)\n"
            "assert(not ok and err.kind == 'timeout', tostring(err))");
  CHECK_INT(C.cancelled, 2);
  /* Cancelled before it was suspended on (the task cancelled itself). */
  run_ok(E, "local ok, err = pcall(function() async.current():cancel(); return "
            "op(NEVER, 0) end)\n"
            "assert(not ok and err.kind == 'cancelled', tostring(err))");
  CHECK_INT(C.cancelled, 3);
  /* The run ends with tasks still waiting: they are cancelled. */
  run_ok(E, "for i = 1, 5 do async.spawn(op, NEVER, 0) end\n"
            "async.sleep(0.01)");
  CHECK_INT(C.cancelled, 8);
  /* A completed op's task cancelled before it resumes: the host already
   * finished, so no cancel callback; the values are dropped. */
  CHECK_RC(E,
           ar_engine_run_string(E,
                                "local ok, err = pcall(op, 5, 1)\n"
                                "result = ok and 'returned' or err.kind\n"
                                "async.sleep(0)",
                                "=late"),
           0); /* the root caught its cancellation */
  CHECK_INT(C.cancelled, 8);
  run_ok(E, "assert(result == 'cancelled', result)");
  ar_engine_free(E);
  check_all_closed();
  CHECK_INT(C.closed, C.started);
}

static void stop_cb(uv_timer_t *t) { ar_engine_stop(t->data); }

static void test_stop_and_free(void) {
  ar_engine_t *E = engine();
  memset(&C, 0, sizeof C);
  uv_timer_t stopper;
  uv_timer_init(ar_engine_loop(E), &stopper);
  stopper.data = E;
  uv_timer_start(&stopper, stop_cb, 20, 0);
  CHECK_RC(
      E,
      ar_engine_run_string(E,
                           "for i = 1, 10 do async.spawn(op, NEVER, 0) end\n"
                           "op(NEVER, 0)",
                           "=stop"),
      AR_ECANCELLED);
  CHECK_INT(C.cancelled, 11);
  CHECK_INT(ar_engine_tasks(E), 0);
  uv_close((uv_handle_t *)&stopper, NULL);

  /* Freed with ops pending (a started run on a borrowed loop). */
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_config_t *cfg = ar_config_new();
  ar_config_set_loop(cfg, &loop);
  ar_engine_t *E2 = ar_engine_new(cfg);
  ar_config_free(cfg);
  ar_engine_register_function(E2, "op", l_op);
  CHECK_RC(E2,
           ar_engine_start_string(
               E2,
               "for i = 1, 10 do require('async').spawn(op, 4, 0) end\n"
               "op(4, 0)",
               NULL, NULL, NULL),
           0);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_INT(C.started, 22);
  ar_engine_free(E2);
  CHECK_INT(C.cancelled, 22);
  close_loop(&loop);
  ar_engine_free(E);
  CHECK_INT(C.closed, 22);
}

/* Outside a task there is no op. */
static int l_try_op(lua_State *L) {
  ar_op_t *op = ar_op_new(L, cancel_cb, NULL);
  lua_pushboolean(L, op == NULL);
  return 1;
}

static void test_not_in_task(void) {
  ar_engine_t *E = engine();
  ar_engine_register_function(E, "try_op", l_try_op);
  run_ok(E, "local co = coroutine.wrap(function() return try_op() end)\n"
            "assert(co() == true, 'a plain coroutine gets no op')");
  ar_engine_free(E);
}

/* An op its function will not suspend on is dropped: nothing leaks (the
 * valgrind run checks), the cancel callback never runs. */
static int l_drop_op(lua_State *L) {
  ar_op_t *op = ar_op_new(L, cancel_cb, NULL);
  if (op == NULL) return luaL_error(L, "no op");
  if (lua_toboolean(L, 1)) ar_op_resolve_values(op, "i", 7); /* early */
  ar_op_drop(op);
  return luaL_error(L, "could not start");
}

static void test_drop(void) {
  ar_engine_t *E = engine();
  ar_engine_register_function(E, "drop_op", l_drop_op);
  C.cancelled = 0;
  run_ok(E, "for i = 1, 100 do\n"
            "  local ok, e = pcall(drop_op, i % 2 == 0)\n"
            "  assert(not ok and e:find('could not start'))\n"
            "end");
  CHECK_INT(C.cancelled, 0);
  ar_engine_free(E);
}

int main(void) {
  test_drop();
  test_values();
  test_early();
  test_concurrent();
  test_cancel();
  test_stop_and_free();
  test_not_in_task();
  printf("ok\n");
  return 0;
}
