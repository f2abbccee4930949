/* The scheduler's C side: the deadline heap, run outcomes, stop, and two
 * engines side by side. Every test closes what it opens. */
#include <stdlib.h>

#include "check.h"
#include "internal.h"

/* ---- the deadline heap fires in (due, start) order, never early -------- */

#define NTIMERS 500

struct ttimer {
  ar__timer_t t;
  uint64_t armed_at;
  double seconds;
  int index;
};

static int fired[NTIMERS], nfired, early;
static struct ttimer timers[NTIMERS];

static void ttimer_cb(ar__timer_t *t) {
  struct ttimer *tt = ar__container_of(t, struct ttimer, t);
  uint64_t now = uv_hrtime();
  if (now < tt->armed_at + (uint64_t)(tt->seconds * 1e9)) early++;
  fired[nfired++] = tt->index;
}

static void test_heap_order(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK(E != NULL);
  srand(7);
  for (int i = 0; i < NTIMERS; i++) {
    timers[i].index = i;
    timers[i].seconds = (rand() % 40) / 1000.0; /* many ties */
    timers[i].armed_at = uv_hrtime();
    ar__timer_init(&timers[i].t);
    CHECK_INT(ar__timer_start(E, &timers[i].t, timers[i].seconds, ttimer_cb),
              0);
  }
  /* Stop every fifth: stopped timers must never fire. */
  for (int i = 0; i < NTIMERS; i += 5)
    ar__timer_stop(E, &timers[i].t);
  uv_run(ar_engine_loop(E), UV_RUN_DEFAULT);
  CHECK_INT(nfired, NTIMERS - NTIMERS / 5);
  CHECK_INT(early, 0);
  for (int i = 1; i < nfired; i++) {
    struct ttimer *a = &timers[fired[i - 1]], *b = &timers[fired[i]];
    CHECK(a->index % 5 != 0 && b->index % 5 != 0);
    /* Ordered by due time; equal seconds keep start order. */
    if (a->seconds == b->seconds) CHECK(a->index < b->index);
  }
  CHECK_INT(E->heap_len, 0);
  ar_engine_free(E);
}

/* ---- run outcomes -------------------------------------------------------- */

static void test_outcomes(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK_INT(
      ar_engine_run_string(E, "local a = require 'async' a.sleep(0.01)", "=ok"),
      0);
  CHECK_INT(ar_engine_run_string(E, "error('bad thing')", "=t"), AR_ERUNTIME);
  CHECK_STR_CONTAINS(ar_engine_error(E), "t:1: bad thing");
  CHECK_STR_CONTAINS(ar_engine_error(E), "stack traceback");
  CHECK_INT(ar_engine_run_string(E, "x = = 1", "=syn"), AR_ESYNTAX);
  CHECK_STR_CONTAINS(ar_engine_error(E), "syn:1:");
  CHECK_INT(ar_engine_run_file(E, "/nonexistent/x.lua", 0, NULL), AR_EFILE);
  CHECK_STR_CONTAINS(ar_engine_error(E), "cannot open /nonexistent/x.lua");
  CHECK_INT(
      ar_engine_run_string(E,
                           "local a = require 'async' local me = a.current() "
                           "a.spawn(function() me:await() end):await()",
                           "=dl"),
      AR_EDEADLOCK);
  /* The engine is still usable after each failure. */
  CHECK_INT(ar_engine_run_string(
                E, "assert(require('async').stats().tasks == 1)", "=again"),
            0);
  CHECK_INT(ar_engine_run_string(NULL, "x", "=n"), AR_EINVAL);
  ar_engine_free(E);
}

/* ---- stop from a loop callback ----------------------------------------- */

static void stop_cb(uv_timer_t *h) { ar_engine_stop(h->data); }

static void test_stop(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  uv_timer_t timer;
  uv_timer_init(ar_engine_loop(E), &timer);
  timer.data = E;
  uv_timer_start(&timer, stop_cb, 20, 0);
  uint64_t t0 = uv_hrtime();
  int rc = ar_engine_run_string(E,
                                "local a = require 'async' "
                                "for i = 1, 10000 do a.spawn(a.sleep, 60) end "
                                "a.sleep(60)",
                                "=stop");
  CHECK_INT(rc, AR_ECANCELLED);
  CHECK((uv_hrtime() - t0) < 5000000000ull);
  CHECK_INT(E->ntasks, 0);
  CHECK_INT(E->heap_len, 0);
  uv_close((uv_handle_t *)&timer, NULL);
  ar_engine_free(E);
}

/* ---- two engines on one host loop -------------------------------------- */

static void test_two_engines_one_loop(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ar_config_t *cfg = ar_config_new();
  ar_config_set_loop(cfg, &loop);
  ar_engine_t *a = ar_engine_new(cfg), *b = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK(a != NULL && b != NULL);
  CHECK_INT(ar_engine_run_string(a, "X = 1 require('async').sleep(0.01)", "=a"),
            0);
  CHECK_INT(ar_engine_run_string(
                b, "assert(X == nil) require('async').sleep(0.01)", "=b"),
            0);
  ar_engine_free(a);
  ar_engine_free(b);
  uv_run(&loop, UV_RUN_DEFAULT); /* the engines' handles close */
  CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  test_heap_order();
  test_outcomes();
  test_stop();
  test_two_engines_one_loop();
  return check_summary("test_sched");
}
