/* Stopping an engine from the host with 10,000 tasks pending: sleeping,
 * waiting on host operations, waiting on each other. Every task is
 * cancelled and cleaned up, every host operation gets its cancel
 * callback once, and the run returns. */
#include "test_embed.h"

enum { N = 10000 };

/* One host timer stands for a device that never answers; the operations
 * wait in a list. */
struct pending {
  ar_op_t *op;
  int cancelled;
};

static struct pending ops[N];
static int nops, cancels, double_cancels;
static uv_timer_t device; /* keeps the loop alive like a real device would */

static void cancel_cb(ar_op_t *op, void *data) {
  struct pending *p = data;
  (void)op;
  if (p->cancelled++) double_cancels++;
  cancels++;
  p->op = NULL;
}

static int l_wait_device(lua_State *L) {
  CHECK(nops < N);
  struct pending *p = &ops[nops++];
  p->cancelled = 0;
  p->op = ar_op_new(L, cancel_cb, p);
  CHECK(p->op != NULL);
  return ar_op_suspend(L, p->op);
}

static void never_cb(uv_timer_t *t) { (void)t; }

/* A third of the tasks sleep, a third wait on the device, a third await
 * a task that sleeps; some catch the cancellation and clean up with one
 * more (cancellable) wait. */
static const char script[] =
    "local async = require 'async'\n"
    "local n = ...\n"
    "local sleeper = async.spawn(async.sleep, 1000)\n"
    "cleaned = 0\n"
    "for i = 1, n - 2 do\n"
    "  local k = i % 3\n"
    "  if k == 0 then async.spawn(async.sleep, 1000 + i)\n"
    "  elseif k == 1 then async.spawn(wait_device)\n"
    "  else async.spawn(function()\n"
    "    local ok = pcall(sleeper.await, sleeper)\n"
    "    if not ok then cleaned = cleaned + 1 async.sleep(0) end\n"
    "  end) end\n"
    "end\n"
    "async.sleep(0)\n"
    "ready = async.stats().tasks\n"
    "wait_device()\n";

static uint64_t stopped_at;

/* Polls until every task is there and waiting, then stops the engine. */
static void stop_cb(uv_timer_t *t) {
  ar_engine_t *E = t->data;
  if (ar_engine_tasks(E) < N || nops < (N - 2) / 3 + 2) return;
  uv_timer_stop(t);
  stopped_at = uv_hrtime();
  ar_engine_stop(E);
}

static ar_engine_t *engine(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK_RC(E, ar_engine_register_function(E, "wait_device", l_wait_device), 0);
  uv_timer_init(ar_engine_loop(E), &device);
  uv_timer_start(&device, never_cb, 1000000, 0);
  nops = cancels = double_cancels = 0;
  return E;
}

static void check_cleaned(ar_engine_t *E) {
  CHECK_INT(ar_engine_tasks(E), 0);
  CHECK_INT(cancels, nops);
  CHECK_INT(double_cancels, 0);
  CHECK_INT(nops, (N - 2) / 3 + 2);
  CHECK_RC(E,
           ar_engine_run_string(
               E,
               "local async = require 'async'\n"
               "assert(ready == 10000, ready)\n"
               "assert(cleaned == 3333, cleaned)\n"
               "local st = async.stats()\n"
               "assert(st.tasks == 1 and st.timers == 0 and st.ready == 0)",
               "=after"),
           0);
}

/* A blocking run, stopped from a host timer. */
static void test_blocking(void) {
  ar_engine_t *E = engine();
  uv_timer_t stopper;
  uv_timer_init(ar_engine_loop(E), &stopper);
  stopper.data = E;
  uv_timer_start(&stopper, stop_cb, 5, 5);
  CHECK_RC(E,
           ar_engine_run_string(
               E, "function main(n) return load(script)(n) end", NULL),
           0);
  lua_State *L = ar_engine_lua(E);
  lua_pushstring(L, script);
  lua_setglobal(L, "script");
  lua_pushinteger(L, N);
  CHECK_RC(E, ar_engine_call(E, "main", 1), AR_ECANCELLED);
  printf("blocking run: %d tasks stopped and cleaned up in %.1f ms\n", N,
         (double)(uv_hrtime() - stopped_at) / 1e6);
  check_cleaned(E);
  uv_close((uv_handle_t *)&stopper, NULL);
  uv_close((uv_handle_t *)&device, NULL);
  ar_engine_free(E);
}

/* A started run, stopped between two steps of the loop. */
struct done {
  int calls, status;
};

static void done_cb(ar_engine_t *E, int status, int nresults, void *data) {
  struct done *d = data;
  (void)E;
  (void)nresults;
  d->calls++;
  d->status = status;
}

static void test_started(void) {
  ar_engine_t *E = engine();
  lua_State *L = ar_engine_lua(E);
  lua_pushstring(L, script);
  lua_setglobal(L, "script");
  CHECK_RC(E,
           ar_engine_run_string(
               E, "function main(n) return load(script)(n) end", NULL),
           0);
  struct done d = {0};
  lua_pushinteger(L, N);
  CHECK_RC(E, ar_engine_start_call(E, "main", 1, done_cb, &d), 0);
  while (ar_engine_tasks(E) < N || nops < (N - 2) / 3 + 2)
    uv_run(ar_engine_loop(E), UV_RUN_NOWAIT);
  CHECK_INT(d.calls, 0);
  ar_engine_stop(E);
  while (d.calls == 0)
    uv_run(ar_engine_loop(E), UV_RUN_ONCE);
  CHECK_RC(E, d.status, AR_ECANCELLED);
  check_cleaned(E);
  uv_close((uv_handle_t *)&device, NULL);
  ar_engine_free(E);
}

/* Freed with everything pending (borrowed loop): no run of the loop, all
 * cancelled at once. */
static void test_free(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_config_t *cfg = ar_config_new();
  ar_config_set_loop(cfg, &loop);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK_RC(E, ar_engine_register_function(E, "wait_device", l_wait_device), 0);
  nops = cancels = double_cancels = 0;
  lua_State *L = ar_engine_lua(E);
  lua_pushstring(L, script);
  lua_setglobal(L, "script");
  CHECK_RC(E,
           ar_engine_run_string(
               E, "function main(n) return load(script)(n) end", NULL),
           0);
  lua_pushinteger(L, N);
  CHECK_RC(E, ar_engine_start_call(E, "main", 1, NULL, NULL), 0);
  while (ar_engine_tasks(E) < N)
    uv_run(&loop, UV_RUN_NOWAIT);
  ar_engine_free(E);
  CHECK_INT(cancels, nops);
  CHECK_INT(double_cancels, 0);
  close_loop(&loop);
}

int main(void) {
  test_blocking();
  test_started();
  test_free();
  printf("ok\n");
  return 0;
}
