/* The "async" module: sleep, spawn, gather, wait_for, clocks. Everything
 * here suspends through ar__task_suspend, so every wait is cancellable. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "modules.h"
#include "toolkit.h"

/* ---- sleep ------------------------------------------------------------- */

static void sleep_timer_cb(ar__timer_t *tm) {
  ar__task_wake(ar__container_of(tm, ar__task_t, timer), 0, 1);
}

static void sleep_cancel(ar__task_t *t) { ar__timer_stop(t->E, &t->timer); }

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
  if (ar__timer_start(t->E, &t->timer, s, sleep_timer_cb) != 0)
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  return 1;
}

/* ---- gather ------------------------------------------------------------ */

typedef struct gather_s gather_t;
typedef struct {
  ar__done_t done;
  gather_t *g;
  ar__task_t *task;
} gather_slot_t;

struct gather_s {
  ar__task_t *self;
  int n;
  int remaining;
  int return_exceptions;
  int failed; /* index of the first failure, when it is to be raised */
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
  if (finished->outcome != AR__OUT_OK && !g->return_exceptions) {
    g->failed = (int)(s - g->slots) + 1;
    gather_detach(g, 1);
    ar__task_wake(g->self, 0, 1);
  } else if (g->remaining == 0) {
    ar__task_wake(g->self, 0, 1);
  }
}

/* Cancelling the gather cancels what it gathers, as asyncio does. */
static void gather_cancel(ar__task_t *self) {
  gather_detach(self->wait_data, 1);
}

/* Stack: list, opts, results (task handles until replaced). */
static int gather_fill(lua_State *L, int n, int return_exceptions) {
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    ar__task_t *t = lua_touserdata(L, -1);
    int out = ar__task_push_first(L, t);
    if (out != AR__OUT_OK && !return_exceptions) return lua_error(L);
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
  if (g->failed) {
    lua_rawgeti(L, 3, g->failed);
    ar__task_push_first(L, lua_touserdata(L, -1));
    return lua_error(L);
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
  int n = (int)n64, pending = 0;
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    int ty = lua_rawgeti(L, 1, i);
    ar__task_t *t;
    if (ty == LUA_TFUNCTION) {
      t = ar__task_spawn(L, 0);
    } else if ((t = ar__task_test(L, -1)) == NULL) {
      return luaL_error(L,
                        "bad argument #1 to 'gather' (entry %d is a %s, "
                        "expected a task or a function)",
                        i, luaL_typename(L, -1));
    }
    if (t->state != AR__TASK_DONE) pending++;
    lua_rawseti(L, 3, i);
  }
  if (pending == 0) return gather_fill(L, n, return_exceptions);
  ar__task_t *self = ar__task_check_current(L, "async.gather");
  gather_t *g =
      lua_newuserdatauv(L, sizeof *g + (size_t)n * sizeof g->slots[0], 0);
  g->self = self;
  g->n = n;
  g->remaining = pending;
  g->return_exceptions = return_exceptions;
  g->failed = 0;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 3, i + 1);
    ar__task_t *t = lua_touserdata(L, -1);
    lua_pop(L, 1);
    gather_slot_t *s = &g->slots[i];
    s->g = g;
    s->task = NULL;
    ar__list_init(&s->done.node);
    if (t->state == AR__TASK_DONE) continue;
    if (t == self) return luaL_error(L, "a task cannot gather itself");
    s->task = t;
    ar__task_add_done(t, &s->done, gather_done_cb);
  }
  return ar__task_suspend(L, self, gather_cancel, g, gather_k, 0);
}

/* ---- wait_for ---------------------------------------------------------- */

#define WF_TIMED_OUT 1

static void wf_done_cb(ar__done_t *d, ar__task_t *finished) {
  (void)finished;
  ar__task_t *self = ar__container_of(d, ar__task_t, done);
  ar__timer_stop(self->E, &self->timer);
  ar__task_wake(self, 0, 1);
}

/* The deadline passed: cancel the inner task and keep waiting until it
 * has cleaned up; wf_k then turns its cancellation into "timeout". */
static void wf_timer_cb(ar__timer_t *tm) {
  ar__task_t *self = ar__container_of(tm, ar__task_t, timer);
  self->wait_flags |= WF_TIMED_OUT;
  ar__task_cancel(self->wait_data);
}

static void wf_cancel(ar__task_t *self) {
  ar__task_remove_done(&self->done);
  ar__timer_stop(self->E, &self->timer);
  ar__task_cancel(self->wait_data);
}

static int wf_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  ar__task_t *self = ar__task_current(L);
  ar__task_t *target = lua_touserdata(L, (int)ctx);
  if ((self->wait_flags & WF_TIMED_OUT) && target->outcome == AR__OUT_CANCELLED)
    return ar__error_raise(L, "timeout", "timed out after %f s",
                           lua_tonumber(L, 2));
  return ar__task_push_results(L, target);
}

/* async.wait_for(task_or_fn, seconds) -> results, or raises "timeout". */
static int l_wait_for(lua_State *L) {
  lua_settop(L, 2);
  int idx = 1;
  ar__task_t *target;
  if (lua_isfunction(L, 1)) {
    lua_pushvalue(L, 1);
    target = ar__task_spawn(L, 0);
    idx = 3;
  } else if ((target = ar__task_test(L, 1)) == NULL) {
    return luaL_typeerror(L, 1, "task or function");
  }
  int timed = !lua_isnil(L, 2);
  lua_Number s = timed ? check_seconds(L, 2) : 0;
  if (target->state == AR__TASK_DONE) return ar__task_push_results(L, target);
  ar__task_t *self = ar__task_check_current(L, "async.wait_for");
  if (self == target) return luaL_error(L, "a task cannot wait for itself");
  self->wait_flags = 0;
  if (timed && ar__timer_start(self->E, &self->timer, s, wf_timer_cb) != 0)
    return luaL_error(L, "not enough memory");
  ar__task_add_done(target, &self->done, wf_done_cb);
  return ar__task_suspend(L, self, wf_cancel, target, wf_k, idx);
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

/* async.stats() -> live tasks, queued tasks, armed timers, Lua memory:
 * what tests use to prove nothing is left behind. */
static int l_stats(lua_State *L) {
  ar_engine_t *E = ar__engine_of(L);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)E->ntasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, (lua_Integer)E->ready_len);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, (lua_Integer)E->heap_len);
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, (lua_Integer)E->mem_used);
  lua_setfield(L, -2, "memory");
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
