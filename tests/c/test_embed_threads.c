/* Engines on several threads at once, each with its own loop, host
 * operations and tasks: engines share nothing, so they need no locks. */
#include <pthread.h>

#include "test_embed.h"

enum { THREADS = 4, ROUNDS = 20 };

/* Every engine exists before any of them runs. */
static pthread_barrier_t all_created;

struct op {
  uv_timer_t timer;
  ar_op_t *op;
  int value;
};

static void op_close_cb(uv_handle_t *h) { free(h->data); }

static void op_timer_cb(uv_timer_t *t) {
  struct op *o = t->data;
  ar_op_resolve_values(o->op, "i", o->value * 2);
  uv_close((uv_handle_t *)&o->timer, op_close_cb);
}

static void op_cancel_cb(ar_op_t *op, void *data) {
  struct op *o = data;
  (void)op;
  uv_close((uv_handle_t *)&o->timer, op_close_cb);
}

/* double(n) -> 2n, after a millisecond, from the thread's own loop */
static int l_double(lua_State *L) {
  struct op *o = malloc(sizeof *o);
  if (o == NULL) return luaL_error(L, "not enough memory");
  o->value = (int)luaL_checkinteger(L, 1);
  o->op = ar_op_new(L, op_cancel_cb, o);
  if (o->op == NULL) {
    free(o);
    return luaL_error(L, "double needs a task");
  }
  uv_timer_init(ar_engine_loop(ar_engine_of(L)), &o->timer);
  o->timer.data = o;
  uv_timer_start(&o->timer, op_timer_cb, 1, 0);
  return ar_op_suspend(L, o->op);
}

struct job {
  int id;
  long long sum;
  int failures;
  char msg[256];
};

static void *thread_main(void *arg) {
  struct job *j = arg;
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_config_t *cfg = ar_config_new();
  ar_config_set_loop(cfg, &loop);
  ar_config_set_memory_limit(cfg, 16u << 20);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  ar_engine_register_function(E, "double", l_double);
  pthread_barrier_wait(&all_created);
  lua_State *L = ar_engine_lua(E);
  if (ar_engine_run_string(
          E,
          "local async = require 'async'\n"
          "function work(id, round)\n"
          "  local fns = {}\n"
          "  for i = 1, 20 do fns[i] = function() async.sleep(0) return "
          "double(id * 1000 + i) end end\n"
          "  local sum = 0\n"
          "  for _, v in ipairs(async.gather(fns)) do sum = sum + v end\n"
          "  return sum + round\n"
          "end",
          "=thread") != 0) {
    j->failures++;
    snprintf(j->msg, sizeof j->msg, "%s", ar_engine_error(E));
  }
  for (int round = 0; round < ROUNDS; round++) {
    lua_pushinteger(L, j->id);
    lua_pushinteger(L, round);
    int n = ar_engine_call(E, "work", 2);
    if (n != 1) {
      j->failures++;
      snprintf(j->msg, sizeof j->msg, "%s", ar_engine_error(E));
      continue;
    }
    j->sum += lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  ar_engine_free(E);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) j->failures++;
  return NULL;
}

int main(void) {
  pthread_t th[THREADS];
  struct job jobs[THREADS];
  memset(jobs, 0, sizeof jobs);
  CHECK_INT(pthread_barrier_init(&all_created, NULL, THREADS), 0);
  for (int i = 0; i < THREADS; i++) {
    jobs[i].id = i + 1;
    CHECK_INT(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    CHECK_INT(pthread_join(th[i], NULL), 0);
  pthread_barrier_destroy(&all_created);
  for (int i = 0; i < THREADS; i++) {
    if (jobs[i].failures)
      FAIL_AT("thread %d: %d failures: %s", i, jobs[i].failures, jobs[i].msg);
    /* sum over rounds of (sum_i 2 * (id * 1000 + i) + round) */
    long long per_round = 2LL * (20LL * jobs[i].id * 1000 + 210);
    long long want = ROUNDS * per_round + (ROUNDS - 1) * ROUNDS / 2;
    CHECK_INT(jobs[i].sum, want);
  }
  printf("ok\n");
  return 0;
}
