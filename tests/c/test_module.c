/* The module contract (engine/module.h), exercised by a small module made
 * here the way docs/design.md ("Writing a module") describes: per-engine
 * state with stop and close hooks, a counted uv handle, and a thread-pool
 * request that outlives a cancelled task as an orphan. The engine must
 * wait for the orphan before it frees the loop. A third module holds the
 * engine's stop for a grace period (ar__engine_hold), as the HTTP server
 * does on Ctrl-C. */
#include <unistd.h>

#include "module.h"
#include "test_embed.h"

/* ---- the module -------------------------------------------------------- */

typedef struct {
  uv_idle_t idle; /* a handle the module owns, for the accounting */
  int opened, stopped, closed;
  int drains; /* the driver ran tasks, then called the drained hook */
} demo_state_t;

static int order[8], norder;

static void demo_stop(ar_engine_t *E, void *state) {
  (void)E;
  ((demo_state_t *)state)->stopped++;
}

static void demo_drained(ar_engine_t *E, void *state) {
  (void)E;
  ((demo_state_t *)state)->drains++;
}

static void demo_close(ar_engine_t *E, void *state) {
  (void)E;
  demo_state_t *s = state;
  s->closed++;
  order[norder++] = 1;
  uv_close((uv_handle_t *)&s->idle, ar__handle_close_cb);
}

static const ar__module_t demo_module = {"demo", sizeof(demo_state_t),
                                         demo_stop, demo_close, demo_drained};

static void other_close(ar_engine_t *E, void *state) {
  (void)E;
  (void)state;
  order[norder++] = 2;
}
static const ar__module_t other_module = {"other", 1, NULL, other_close, NULL};

/* A slow request on the thread pool: a uv_work_t that sleeps. */
typedef struct {
  ar__work_t work;
  uv_work_t req;
  int result;
} slow_t;

static int orphans_freed, results_delivered;

static void slow_work_cb(uv_work_t *req) {
  usleep(1000 * 1000);
  ((slow_t *)req->data)->result = 42;
}

static void slow_after_cb(uv_work_t *req, int status) {
  (void)status;
  slow_t *s = req->data;
  ar__task_t *t = ar__work_finish(&s->work);
  if (t == NULL) { /* the task gave up: the record is ours to free */
    orphans_freed++;
    free(s);
    return;
  }
  ar__task_wake_kept(t, 0); /* the continuation frees it */
}

static int slow_cancel(ar__task_t *t, void *data) {
  (void)t;
  ar__work_orphan(&((slow_t *)data)->work);
  return AR__CANCEL_DONE;
}

static int slow_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  slow_t *s = (slow_t *)ctx;
  lua_pushinteger(L, s->result);
  free(s);
  results_delivered++;
  return 1;
}

/* demo.slow() -> 42, after 1 s on the thread pool. */
static int l_slow(lua_State *L) {
  ar__task_t *t = ar__task_check_current(L, "demo.slow");
  ar_engine_t *E = ar__task_engine(t);
  slow_t *s = malloc(sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory");
  s->req.data = s;
  if (uv_queue_work(ar_engine_loop(E), &s->req, slow_work_cb, slow_after_cb) !=
      0) {
    free(s);
    return luaL_error(L, "cannot queue work");
  }
  ar__work_start(&s->work, t);
  return ar__task_suspend(L, t, slow_cancel, s, slow_k, (lua_KContext)s);
}

/* demo.open(): makes the module's state (and its idle handle). */
static int l_open(lua_State *L) {
  ar_engine_t *E = ar__engine_of(L);
  CHECK(ar__module_state(E, &demo_module) == NULL);
  demo_state_t *s = ar__module_open(E, &demo_module);
  CHECK(s != NULL && ar__module_open(E, &demo_module) == s);
  CHECK(ar__module_open(E, &other_module) != NULL);
  uv_idle_init(ar_engine_loop(E), &s->idle);
  s->idle.data = E;
  ar__handle_opened(E);
  s->opened = 1;
  lua_pushlightuserdata(L, s);
  return 1;
}

static int luaopen_demo(lua_State *L) {
  static const luaL_Reg f[] = {{"slow", l_slow}, {"open", l_open}, {0, 0}};
  luaL_newlib(L, f);
  return 1;
}

/* beep.after(seconds, value): docs/design.md's module on a timer. */
typedef struct {
  ar__timer_t timer;
  ar__task_t *task;
} beep_t;

static void beep_timer_cb(ar__timer_t *tm) {
  beep_t *b = ar__container_of(tm, beep_t, timer);
  ar__task_wake(b->task, 0);
}

static int beep_cancel(ar__task_t *t, void *data) {
  beep_t *b = data;
  ar__timer_stop(ar__task_engine(t), &b->timer);
  return AR__CANCEL_DONE;
}

static int beep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushvalue(L, 2);
  return 1;
}

static int l_after(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_checkany(L, 2);
  ar__task_t *t = ar__task_check_current(L, "beep.after");
  lua_settop(L, 2);
  beep_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  ar__timer_init(&b->timer);
  b->task = t;
  if (ar__timer_start(ar__task_engine(t), &b->timer, s, beep_timer_cb) != 0)
    return luaL_error(L, "not enough memory");
  return ar__task_suspend(L, t, beep_cancel, b, beep_k, 0);
}

static int luaopen_beep(lua_State *L) {
  static const luaL_Reg f[] = {{"after", l_after}, {0, 0}};
  luaL_newlib(L, f);
  return 1;
}

/* hold.arm(ms): the next stop is held for ms milliseconds by a timer. */
typedef struct {
  uv_timer_t timer;
  int live, armed, held, released;
  uint64_t ms;
} hold_state_t;

static void hold_stop(ar_engine_t *E, void *state);
static void hold_close(ar_engine_t *E, void *state);
static const ar__module_t hold_module = {"hold", sizeof(hold_state_t),
                                         hold_stop, hold_close, NULL};

static void hold_timer_cb(uv_timer_t *tm) {
  ar_engine_t *E = tm->data;
  hold_state_t *h = ar__module_state(E, &hold_module);
  h->released++;
  ar__engine_release(E);
}

static void hold_stop(ar_engine_t *E, void *state) {
  hold_state_t *h = state;
  if (!h->armed) return;
  h->armed = 0;
  h->held++;
  ar__engine_hold(E);
  uv_timer_start(&h->timer, hold_timer_cb, h->ms, 0);
}

static void hold_close(ar_engine_t *E, void *state) {
  (void)E;
  hold_state_t *h = state;
  if (h->live) uv_close((uv_handle_t *)&h->timer, ar__handle_close_cb);
}

static int l_arm(lua_State *L) {
  ar_engine_t *E = ar__engine_of(L);
  hold_state_t *h = ar__module_open(E, &hold_module);
  CHECK(h != NULL);
  if (!h->live) {
    uv_timer_init(ar_engine_loop(E), &h->timer);
    h->timer.data = E;
    ar__handle_opened(E);
    h->live = 1;
  }
  h->ms = (uint64_t)luaL_checkinteger(L, 1);
  h->armed = 1;
  return 0;
}

/* hold.stop(): ar_engine_stop from a script. */
static int l_stop_engine(lua_State *L) {
  ar_engine_stop(ar__engine_of(L));
  return 0;
}

static int luaopen_hold(lua_State *L) {
  static const luaL_Reg f[] = {{"arm", l_arm}, {"stop", l_stop_engine}, {0, 0}};
  luaL_newlib(L, f);
  return 1;
}

/* ---- the tests --------------------------------------------------------- */

/* A stop while running: the tasks live on through the hold, then are
 * cancelled, the root with them. */
static const char hold_running_script[] =
    "local async, hold = require 'async', require 'hold'\n"
    "local t0 = async.now()\n"
    "local worker = async.spawn(function() async.sleep(0.2) return 'ok' end)\n"
    "hold.arm(400)\n"
    "hold.stop()\n"
    "assert(worker:await() == 'ok', 'not cancelled while held')\n"
    "local ok, e = pcall(async.sleep, 10)\n"
    "assert(not ok and e.kind == 'cancelled')\n"
    "held_for = async.now() - t0\n"
    "error(e, 0)\n";

/* The run's end: the task left behind is not cancelled while held, and
 * settling does not count its rounds (the hold outlasts one). */
static const char hold_settling_script[] =
    "local async, hold = require 'async', require 'hold'\n"
    "finished = false\n"
    "async.spawn(function() async.sleep(1.05) finished = true end)\n"
    "hold.arm(2000)\n";

static const char beep_script[] =
    "local async, beep = require 'async', require 'beep'\n"
    "local t0 = async.now()\n"
    "assert(beep.after(0.05, 'hi') == 'hi')\n"
    "assert(async.now() - t0 >= 0.05)\n"
    "local ok, e = pcall(async.wait_for, function()\n"
    "  return beep.after(10, 'late') end, 0.05)\n"
    "assert(not ok and e.kind == 'timeout')\n"
    "local st = async.stats()\n"
    "assert(st.timers == 0 and st.tasks == 1)\n";

static const char script[] =
    "local async, demo = require 'async', require 'demo'\n"
    "state = demo.open()\n"
    "assert(demo.slow() == 42)\n"
    "local t = async.spawn(demo.slow)\n"
    "async.sleep(0.02)\n"
    "local t0 = async.now()\n"
    "t:cancel()\n"
    "local ok, err = pcall(t.await, t)\n"
    "assert(not ok and err.kind == 'cancelled')\n"
    "assert(async.now() - t0 < 0.5, 'the cancelled task resumes at once')\n"
    "local st = async.stats()\n"
    "assert(st.requests == 1, 'the orphan is still in flight')\n"
    "async.spawn(demo.slow)\n" /* left running: cancelled at the end */
    "async.sleep(0)\n";

static void test_hold(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  CHECK(E != NULL);
  CHECK_INT(ar_engine_register_module(E, "hold", luaopen_hold), 0);
  lua_State *L = ar_engine_lua(E);
  CHECK_RC(E, ar_engine_run_string(E, hold_running_script, "=hold"),
           AR_ECANCELLED);
  lua_getglobal(L, "held_for");
  CHECK(lua_tonumber(L, -1) >= 0.39 && lua_tonumber(L, -1) < 3);
  lua_pop(L, 1);
  CHECK_RC(E, ar_engine_run_string(E, hold_settling_script, "=hold"), 0);
  lua_getglobal(L, "finished");
  CHECK(lua_toboolean(L, -1));
  lua_pop(L, 1);
  hold_state_t *h = ar__module_state(E, &hold_module);
  CHECK(h != NULL && h->held == 2 && h->released == 2);

  ar_engine_free(E);
  printf("ok   a module holds the engine's stop (running and settling)\n");
}

int main(void) {
  test_hold();
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  ar_config_t *cfg = ar_config_new();
  CHECK(cfg != NULL);
  CHECK_INT(ar_config_set_loop(cfg, &loop), 0);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  CHECK(E != NULL);
  CHECK_INT(ar_engine_register_module(E, "demo", luaopen_demo), 0);
  CHECK_INT(ar_engine_register_module(E, "beep", luaopen_beep), 0);
  CHECK_RC(E, ar_engine_run_string(E, beep_script, "=beep"), 0);
  CHECK_RC(E, ar_engine_run_string(E, script, "=script"), 0);
  CHECK_INT(results_delivered, 1);

  ar_engine_stop(E);
  demo_state_t *s = ar__module_state(E, &demo_module);
  CHECK(s != NULL && s->stopped == 1);
  CHECK(s->drains >= 3); /* the script waited (and was resumed) 3 times */
  ar_engine_stop(E);     /* a module is stopped once */
  CHECK_INT(s->stopped, 1);

  /* Freeing closes the modules newest first, before Lua; the orphans are
   * still in flight, and the borrowed loop keeps the engine until they
   * and the handles are done. */
  ar_engine_free(E);
  CHECK_INT(norder, 2);
  CHECK_INT(order[0], 2);
  CHECK_INT(order[1], 1);
  CHECK(orphans_freed < 2);
  close_loop(&loop); /* runs the orphans to their end */
  CHECK_INT(orphans_freed, 2);
  CHECK_INT(results_delivered, 1);
  printf("ok   a timer module; module state, hooks, "
         "handle and request accounting, orphans\n");
  return 0;
}
