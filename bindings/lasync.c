/* The "async" module: sleep, spawn, gather, wait_for, clocks. Everything
 * here suspends through ar__task_suspend, so every wait is cancellable. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "module.h"
#include "modules.h"
#include "toolkit.h"

/* ---- sleep ------------------------------------------------------------- */

static void sleep_timer_cb(ar__timer_t *tm) {
  ar__task_wake(ar__task_of_timer(tm), 0);
}

static int sleep_cancel(ar__task_t *t, void *data) {
  (void)data;
  ar__timer_stop(ar__task_engine(t), ar__task_timer(t));
  return AR__CANCEL_DONE;
}

static lua_Number check_seconds(lua_State *L, int arg) {
  lua_Number s = luaL_checknumber(L, arg);
  if (!(s >= 0)) /* also catches NaN */
    luaL_argerror(L, arg, "seconds must be a number >= 0");
  return s;
}

/* async.sleep(seconds): 0 yields once without a timer. */
static int l_sleep(lua_State *L) {
  lua_Number s = check_seconds(L, 1);
  ar__task_t *t = ar__task_check_current(L, "async.sleep");
  if (s == 0) return ar__task_yield(L, t);
  if (ar__timer_start(ar__task_engine(t), ar__task_timer(t), s,
                      sleep_timer_cb) != 0)
    return luaL_error(L, "not enough memory");
  return ar__task_suspend(L, t, sleep_cancel, NULL, NULL, 0);
}

/* ---- spawn / current --------------------------------------------------- */

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ar__task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

static int l_current(lua_State *L) {
  ar__task_t *t = ar__task_current(L);
  if (t == NULL)
    lua_pushnil(L);
  else
    ar__task_push_handle(L, t);
  return 1;
}

/* ---- gather ------------------------------------------------------------ */

/* Cancelling the task that waits in gather cancels the gathered tasks and
 * waits for them: one that was handed something (a queue item) and
 * returns it is not lost. If all of them then succeeded, gather returns
 * their results and the cancellation is raised at the task's next wait;
 * otherwise it raises "cancelled" with the partial results attached
 * (err.results, as with return_exceptions). */

typedef struct gather_s gather_t;
typedef struct {
  ar__done_t done;
  gather_t *g;
  ar__task_t *task; /* NULL once ended, or when it was done already */
} gather_slot_t;

struct gather_s {
  ar__join_t join;
  ar__task_t *self;
  int n;
  int remaining;
  int return_exceptions;
  int failed;     /* index of the first failure, when it is to be raised */
  int cancelling; /* the caller was cancelled: waiting for the rest */
  gather_slot_t slots[];
};

static void gather_detach(gather_t *g, int cancel) {
  for (int i = 0; i < g->n; i++) {
    gather_slot_t *s = &g->slots[i];
    if (s->task == NULL) continue;
    ar__task_remove_done(&s->done);
    if (cancel) ar__task_cancel(s->task);
    s->task = NULL;
  }
}

static void gather_done_cb(ar__done_t *d, ar__task_t *finished) {
  gather_slot_t *s = ar__container_of(d, gather_slot_t, done);
  gather_t *g = s->g;
  s->task = NULL;
  g->remaining--;
  if (!g->cancelling && ar__task_outcome(finished) != AR__OUT_OK &&
      !g->return_exceptions) {
    g->failed = (int)(s - g->slots) + 1;
    gather_detach(g, 1);
    ar__task_wake(g->self, 0);
  } else if (g->remaining == 0) {
    ar__task_wake(g->self, 0);
  }
}

static int gather_each(ar__join_t *j, int (*fn)(ar__task_t *, void *),
                       void *ud) {
  gather_t *g = (gather_t *)j;
  for (int i = 0; i < g->n; i++)
    if (g->slots[i].task != NULL && fn(g->slots[i].task, ud)) return 1;
  return 0;
}

static int gather_cancel(ar__task_t *self, void *data) {
  gather_t *g = data;
  if (g->cancelling) { /* again, closing by force: let go of everything */
    gather_detach(g, 0);
    return AR__CANCEL_DONE;
  }
  g->cancelling = 1;
  for (int i = 0; i < g->n; i++) {
    gather_slot_t *s = &g->slots[i];
    if (s->task == NULL) continue;
    if (ar__join_would_cycle(self, s->task)) {
      /* It waits, through other cancelled waits, for this very task:
       * waiting for it would wait forever. */
      ar__task_remove_done(&s->done);
      s->task = NULL;
      g->remaining--;
      continue;
    }
    ar__task_cancel(s->task);
  }
  return g->remaining == 0 ? AR__CANCEL_DONE : AR__CANCEL_WAIT;
}

/* Stack: list, opts, results (task handles until replaced). With
 * `all`, every entry is stored (a failure as its error), else the first
 * failure is raised. */
static int gather_fill(lua_State *L, int n, int all) {
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    ar__task_t *t = lua_touserdata(L, -1);
    if (!ar__task_is_done(t)) { /* not waited for (a cycle): cancelled */
      lua_pop(L, 1);
      ar__error_push(L, "cancelled", "task %I was still running",
                     ar__task_id(t));
      lua_rawseti(L, 3, i);
      continue;
    }
    int out = ar__task_push_first(L, t);
    if (out != AR__OUT_OK && !all) {
      lua_pop(L, 1);
      return ar__task_reraise(L, t);
    }
    lua_rawseti(L, 3, i);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, 3, "n");
  lua_settop(L, 3);
  return 1;
}

static int gather_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  gather_t *g = lua_touserdata(L, 4);
  if (ar__task_cancelling(L)) {
    int all_ok = 1;
    for (int i = 1; i <= g->n && all_ok; i++) {
      lua_rawgeti(L, 3, i);
      ar__task_t *t = lua_touserdata(L, -1);
      all_ok = ar__task_is_done(t) && ar__task_outcome(t) == AR__OUT_OK;
      lua_pop(L, 1);
    }
    gather_fill(L, g->n, 1);
    if (all_ok) return 1; /* cancellation raised at the next wait */
    ar__task_push_cancelled_error(L);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "results");
    return ar__error_throw(L);
  }
  if (g->failed) {
    lua_rawgeti(L, 3, g->failed);
    return ar__task_reraise(L, lua_touserdata(L, -1));
  }
  return gather_fill(L, g->n, g->return_exceptions);
}

/* async.gather(list, opts) -> { first result of each, n = #list } */
static int l_gather(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int return_exceptions = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "return_exceptions");
    return_exceptions = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  lua_Integer n64 = luaL_len(L, 1);
  if (n64 > INT32_MAX / 2) return luaL_argerror(L, 1, "too many entries");
  int n = (int)n64, pending = 0, fns = 0;
  ar__task_t *self = ar__task_current(L);
  /* Check everything before spawning anything. */
  for (int i = 1; i <= n; i++) {
    int ty = lua_rawgeti(L, 1, i);
    ar__task_t *t = NULL;
    if (ty == LUA_TFUNCTION) {
      fns++;
    } else if ((t = ar__task_test(L, -1)) == NULL) {
      return luaL_error(L,
                        "bad argument #1 to 'gather' (entry %d is a %s, "
                        "expected a task or a function)",
                        i, luaL_typename(L, -1));
    } else if (!ar__task_is_done(t)) {
      if (t == self) return luaL_error(L, "a task cannot gather itself");
      pending++;
    }
    lua_pop(L, 1);
  }
  if (fns + pending > 0) self = ar__task_check_suspendable(L, "async.gather");
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) == LUA_TFUNCTION) ar__task_spawn(L, 0);
    lua_rawseti(L, 3, i);
  }
  if (fns + pending == 0) return gather_fill(L, n, return_exceptions);
  gather_t *g =
      lua_newuserdatauv(L, sizeof *g + (size_t)n * sizeof g->slots[0], 0);
  g->join.each = gather_each;
  g->self = self;
  g->n = n;
  g->remaining = fns + pending;
  g->return_exceptions = return_exceptions;
  g->failed = 0;
  g->cancelling = 0;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 3, i + 1);
    ar__task_t *t = lua_touserdata(L, -1);
    lua_pop(L, 1);
    gather_slot_t *s = &g->slots[i];
    s->g = g;
    s->task = NULL;
    ar__list_init(&s->done.node);
    if (ar__task_is_done(t)) continue;
    s->task = t;
    ar__task_add_done(t, &s->done, gather_done_cb);
  }
  return ar__task_suspend_join(L, self, gather_cancel, &g->join, gather_k, 0);
}

/* ---- wait_for ---------------------------------------------------------- */

/* The deadline cancels the inner task and keeps waiting until it has
 * cleaned up: if it ended cancelled, wait_for raises "timeout"; if it
 * finished anyway, its results are returned (nothing it was handed is
 * lost). Cancelling the waiting task does the same, then returns the
 * results (the cancellation is raised at the next wait) or raises
 * "cancelled". */
typedef struct {
  ar__join_t join;
  ar__done_t done;
  ar__timer_t timer;
  ar__task_t *self, *target; /* target NULL once ended */
  uint8_t timed_out, cancelling;
} wait_for_t;

static void wf_done_cb(ar__done_t *d, ar__task_t *finished) {
  (void)finished;
  wait_for_t *w = ar__container_of(d, wait_for_t, done);
  w->target = NULL;
  ar__timer_stop(ar__task_engine(w->self), &w->timer);
  ar__task_wake(w->self, 0);
}

static void wf_timer_cb(ar__timer_t *tm) {
  wait_for_t *w = ar__container_of(tm, wait_for_t, timer);
  w->timed_out = 1;
  ar__task_cancel(w->target);
}

static int wf_each(ar__join_t *j, int (*fn)(ar__task_t *, void *), void *ud) {
  wait_for_t *w = (wait_for_t *)j;
  return w->target != NULL ? fn(w->target, ud) : 0;
}

static int wf_cancel(ar__task_t *self, void *data) {
  wait_for_t *w = data;
  ar__timer_stop(ar__task_engine(self), &w->timer);
  if (w->cancelling || ar__join_would_cycle(self, w->target)) {
    ar__task_remove_done(&w->done);
    w->target = NULL;
    return AR__CANCEL_DONE;
  }
  w->cancelling = 1;
  ar__task_cancel(w->target);
  return AR__CANCEL_WAIT;
}

/* Stack: target or fn, seconds, [spawned task], record. */
static int wf_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  wait_for_t *w = lua_touserdata(L, -1);
  ar__task_t *target = lua_touserdata(L, (int)ctx);
  int out = ar__task_outcome(target);
  if (ar__task_cancelling(L)) {
    if (out == AR__OUT_OK) return ar__task_push_results(L, target);
    if (out == AR__OUT_ERROR) return ar__task_reraise(L, target);
    return ar__task_raise_cancelled(L);
  }
  if (w->timed_out && out == AR__OUT_CANCELLED)
    return ar__error_raise(L, "timeout", "timed out after %f s",
                           lua_tonumber(L, 2));
  return ar__task_push_results(L, target);
}

/* async.wait_for(task_or_fn, seconds) -> results, or raises "timeout". */
static int l_wait_for(lua_State *L) {
  lua_settop(L, 2);
  int idx = 1;
  ar__task_t *target = NULL;
  int is_fn = lua_isfunction(L, 1);
  if (!is_fn && (target = ar__task_test(L, 1)) == NULL)
    return luaL_typeerror(L, 1, "task or function");
  int timed = !lua_isnil(L, 2);
  lua_Number s = timed ? check_seconds(L, 2) : 0;
  if (!is_fn && ar__task_is_done(target))
    return ar__task_push_results(L, target);
  ar__task_t *self = ar__task_check_suspendable(L, "async.wait_for");
  if (self == target) return luaL_error(L, "a task cannot wait for itself");
  wait_for_t *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->join.each = wf_each;
  ar__timer_init(&w->timer);
  ar__list_init(&w->done.node);
  if (is_fn) {
    lua_pushvalue(L, 1);
    target = ar__task_spawn(L, 0);
    lua_insert(L, 3);
    idx = 3;
  }
  if (timed &&
      ar__timer_start(ar__task_engine(self), &w->timer, s, wf_timer_cb) != 0) {
    if (is_fn) ar__task_cancel(target);
    return luaL_error(L, "not enough memory");
  }
  w->self = self;
  w->target = target;
  ar__task_add_done(target, &w->done, wf_done_cb);
  return ar__task_suspend_join(L, self, wf_cancel, &w->join, wf_k, idx);
}

/* ---- clocks ------------------------------------------------------------ */

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* "YYYY-MM-DD HH:MM:SS.mmm", local time. */
static int l_timestamp(lua_State *L) {
  uv_timeval64_t tv;
  struct tm tm;
  char buf[40];
  if (uv_gettimeofday(&tv) != 0) return luaL_error(L, "cannot read the clock");
  time_t secs = (time_t)tv.tv_sec;
  localtime_r(&secs, &tm);
  size_t len = strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(buf + len, sizeof buf - len, ".%03d", (int)(tv.tv_usec / 1000));
  lua_pushstring(L, buf);
  return 1;
}

/* async.stats() -> live tasks, queued tasks, armed timers, Lua memory,
 * open uv handles and requests, threads kept for reuse: what tests use to
 * prove nothing is left behind. */
static int l_stats(lua_State *L) {
  ar__engine_stats_t st;
  ar__engine_stats(ar__engine_of(L), &st);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)st.tasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, (lua_Integer)st.ready);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, (lua_Integer)st.timers);
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, (lua_Integer)st.memory);
  lua_setfield(L, -2, "memory");
  lua_pushinteger(L, st.handles);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, st.requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, st.spare_threads);
  lua_setfield(L, -2, "spare_threads");
  return 1;
}

int luaopen_async(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"sleep", l_sleep},     {"spawn", l_spawn},
      {"gather", l_gather},   {"wait_for", l_wait_for},
      {"now", l_now},         {"timestamp", l_timestamp},
      {"current", l_current}, {"error", ar__error_new_lua},
      {"stats", l_stats},     {NULL, NULL}};
  luaL_newlib(L, funcs);
  lua_pushliteral(L, AR_VERSION_STRING);
  lua_setfield(L, -2, "version");
  ar__toolkit_open(L); /* group, semaphore, queue, ... (bindings/l*.c) */
  return 1;
}
