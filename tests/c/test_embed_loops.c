/* Engines and loops: two engines sharing a host's loop and running at the
 * same time; two engines with loops of their own, stepped in turn; an
 * engine freed from its own callback; the host's loop never closed by an
 * engine. */
#include "test_embed.h"

struct done {
  int calls, status;
  long long value;
};

static void done_cb(ar_engine_t *E, int status, int nresults, void *data) {
  struct done *d = data;
  d->calls++;
  d->status = status;
  d->value =
      nresults > 0 ? (long long)lua_tointeger(ar_engine_lua(E), -nresults) : -1;
}

/* Each engine logs its ticks into a shared host buffer, so interleaving
 * is visible. */
static char log_buf[256];

static int l_mark(lua_State *L) {
  size_t len = strlen(log_buf);
  const char *s = luaL_checkstring(L, 1);
  if (len + strlen(s) + 1 < sizeof log_buf) strcat(log_buf, s);
  return 0;
}

static ar_engine_t *engine_on(uv_loop_t *loop) {
  ar_config_t *cfg = ar_config_new();
  CHECK_RC(NULL, ar_config_set_loop(cfg, loop), 0);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK(E != NULL);
  CHECK(ar_engine_loop(E) == loop);
  CHECK_RC(E, ar_engine_register_function(E, "mark", l_mark), 0);
  return E;
}

static void test_shared_loop(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_engine_t *A = engine_on(&loop), *B = engine_on(&loop);
  struct done da = {0}, db = {0};
  log_buf[0] = '\0';
  CHECK_RC(A, ar_engine_run_string(A, "name = 'a'", NULL), 0);
  CHECK_RC(B, ar_engine_run_string(B, "name = 'b'", NULL), 0);
  /* Globals are per engine. */
  CHECK_RC(A, ar_engine_run_string(A, "assert(name == 'a')", NULL), 0);
  CHECK_RC(A,
           ar_engine_start_string(
               A,
               "local async = require 'async'\n"
               "for i = 1, 3 do mark(name) async.sleep(0.01) end\n"
               "return 1",
               "=a", done_cb, &da),
           0);
  CHECK_RC(B,
           ar_engine_start_string(
               B,
               "local async = require 'async'\n"
               "for i = 1, 3 do mark(name) async.sleep(0.01) end\n"
               "return 2",
               "=b", done_cb, &db),
           0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(da.calls, 1);
  CHECK_INT(db.calls, 1);
  CHECK_INT(da.value, 1);
  CHECK_INT(db.value, 2);
  /* They ran at the same time: both started before either finished. */
  CHECK(strncmp(log_buf, "ab", 2) == 0 || strncmp(log_buf, "ba", 2) == 0);
  CHECK_INT(strlen(log_buf), 6);
  /* A blocking run on a borrowed loop runs the host's loop. */
  CHECK_RC(A, ar_engine_run_string(A, "require('async').sleep(0.001)", NULL),
           0);
  free_on_loop(A, &loop);
  free_on_loop(B, &loop);
  /* The engines never closed the host's loop: it is still usable. */
  uv_timer_t t;
  CHECK_INT(uv_timer_init(&loop, &t), 0);
  uv_close((uv_handle_t *)&t, NULL);
  close_loop(&loop);
}

static void test_owned_loops_stepped(void) {
  ar_engine_t *A = ar_engine_new(NULL), *B = ar_engine_new(NULL);
  CHECK(ar_engine_loop(A) != ar_engine_loop(B));
  ar_engine_register_function(A, "mark", l_mark);
  ar_engine_register_function(B, "mark", l_mark);
  struct done da = {0}, db = {0};
  log_buf[0] = '\0';
  CHECK_RC(A,
           ar_engine_start_string(
               A,
               "local async = require 'async'\n"
               "for i = 1, 3 do mark('a') async.sleep(0.005) end\n"
               "return 10",
               NULL, done_cb, &da),
           0);
  CHECK_RC(B,
           ar_engine_start_string(
               B,
               "local async = require 'async'\n"
               "for i = 1, 3 do mark('b') async.sleep(0.005) end\n"
               "return 20",
               NULL, done_cb, &db),
           0);
  /* A host's own main loop, stepping both engines without blocking. */
  uint64_t t0 = uv_hrtime();
  while (da.calls == 0 || db.calls == 0) {
    uv_run(ar_engine_loop(A), UV_RUN_NOWAIT);
    uv_run(ar_engine_loop(B), UV_RUN_NOWAIT);
    CHECK(uv_hrtime() - t0 < 10ull * 1000000000ull);
  }
  CHECK_INT(da.value, 10);
  CHECK_INT(db.value, 20);
  CHECK(strncmp(log_buf, "ab", 2) == 0);
  CHECK_INT(strlen(log_buf), 6);
  ar_engine_free(A);
  ar_engine_free(B);
}

/* A borrowed loop's engine may be freed from its own done callback. */
static void free_in_done_cb(ar_engine_t *E, int status, int nresults,
                            void *data) {
  (void)nresults;
  *(int *)data = status == 0 ? 1 : -1;
  ar_engine_free(E);
}

static void test_free_in_callback(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_engine_t *E = engine_on(&loop);
  int called = 0;
  CHECK_RC(
      E,
      ar_engine_start_string(E,
                             "local async = require 'async'\n"
                             "async.spawn(async.sleep, 10)\n" /* a leftover */
                             "async.sleep(0.001)",
                             NULL, free_in_done_cb, &called),
      0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(called, 1);
  close_loop(&loop);
}

/* The callback starts the next run. */
static int chain_left = 3;
static void chain_cb(ar_engine_t *E, int status, int nresults, void *data) {
  (void)nresults;
  CHECK_RC(E, status, 0);
  (*(int *)data)++;
  if (--chain_left > 0)
    CHECK_RC(E,
             ar_engine_start_string(E, "require('async').sleep(0.001)", NULL,
                                    chain_cb, data),
             0);
}

static void test_chained_runs(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  int runs = 0;
  CHECK_RC(E, ar_engine_start_string(E, "return 1", NULL, chain_cb, &runs), 0);
  uv_run(ar_engine_loop(E), UV_RUN_DEFAULT);
  CHECK_INT(runs, 3);
  ar_engine_free(E);
}

/* Many engines at once on one loop, created and freed in any order. */
static void test_many(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  enum { N = 16 };
  ar_engine_t *E[N];
  struct done d[N];
  memset(d, 0, sizeof d);
  for (int i = 0; i < N; i++) {
    E[i] = engine_on(&loop);
    CHECK_RC(E[i],
             ar_engine_run_string(E[i],
                                  "function f(i) require('async').sleep(0.002 "
                                  "* (i % 4)) return i * i end",
                                  NULL),
             0);
  }
  for (int i = 0; i < N; i++) {
    lua_pushinteger(ar_engine_lua(E[i]), i);
    CHECK_RC(E[i], ar_engine_start_call(E[i], "f", 1, done_cb, &d[i]), 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    CHECK_INT(d[i].calls, 1);
    CHECK_INT(d[i].value, i * i);
  }
  for (int i = N - 1; i >= 0; i -= 2)
    ar_engine_free(E[i]);
  for (int i = 0; i < N; i += 2)
    ar_engine_free(E[i]);
  close_loop(&loop);
}

int main(void) {
  test_shared_loop();
  test_owned_loops_stepped();
  test_free_in_callback();
  test_chained_runs();
  test_many();
  printf("ok\n");
  return 0;
}
