/* Tasks: a Lua thread plus the record the scheduler needs, living inside
 * the task's handle userdata. Lifecycle (docs/design.md):
 *
 *   NEW --run--> RUNNING --suspend--> WAITING --wake--> READY --run--> ...
 *                   \--return/raise--> DONE
 *
 * The handle is anchored in the registry from spawn until the task ends;
 * after that only the script's own references keep it (and its results). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char engine_key = 'E';

ar_engine_t *ar__engine_of(lua_State *L) {
  ar__task_t *t = *(ar__task_t **)lua_getextraspace(L);
  if (t != NULL) return t->E;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &engine_key);
  ar_engine_t *E = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return E;
}

void ar__engine_bind(lua_State *L, ar_engine_t *E) {
  lua_pushlightuserdata(L, E);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &engine_key);
}

ar__task_t *ar__task_check_current(lua_State *L, const char *what) {
  ar__task_t *t = ar__task_current(L);
  if (t == NULL)
    luaL_error(L,
               "%s must be called from an asyncrun task (not from the main "
               "thread or a plain coroutine)",
               what);
  return t;
}

/* A handle has one of two metatables: AR__TASK_MT, or, once the task has
 * failed and nobody has seen the error, AR__TASK_FAILED_MT, the same plus a
 * __gc that reports the failure. Only those few handles carry a finalizer:
 * finalizers make Lua's collector keep every such object one extra cycle
 * and call into C for each, which costs a task-heavy script dearly. */
ar__task_t *ar__task_test(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  ar_engine_t *E = ar__engine_of(L);
  return mt == E->task_mt || mt == E->task_failed_mt ? p : NULL;
}

ar__task_t *ar__task_check(lua_State *L, int idx) {
  ar__task_t *t = ar__task_test(L, idx);
  if (t == NULL) luaL_typeerror(L, idx, AR__TASK_MT);
  return t;
}

ar__task_t *ar__task_spawn(lua_State *L, int nargs) {
  ar_engine_t *E = ar__engine_of(L);
  if (ar__sched_reserve(E, E->ntasks + 1) != 0)
    luaL_error(L, "not enough memory");
  ar__task_t *t = lua_newuserdatauv(L, sizeof *t, 2);
  memset(t, 0, sizeof *t);
  t->ref = LUA_NOREF;
  /* The links before anything can fail: a handle dropped half-made must
   * still be consistent for whatever meets it (a finalizer did once). */
  ar__list_init(&t->waiters);
  ar__list_init(&t->done.node);
  ar__timer_init(&t->timer);
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->task_mt_ref);
  lua_setmetatable(L, -2);
  lua_State *co = lua_newthread(L);
  if (!lua_checkstack(co, nargs + 1))
    luaL_error(L, "too many arguments to spawn");
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* From here on nothing can fail. */
  lua_insert(L, -(nargs + 2));
  lua_xmove(L, co, nargs + 1);
  *(ar__task_t **)lua_getextraspace(co) = t;
  t->E = E;
  t->co = co;
  t->id = ++E->next_id;
  t->state = AR__TASK_NEW;
  t->nargs = nargs;
  ar__list_insert_tail(&E->tasks, &t->live);
  E->ntasks++;
  ar__sched_push(E, t);
  return t;
}

/* ---- suspension and wake-up -------------------------------------------- */

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  ar__task_t *t = ar__task_current(L);
  int raise = t->raise;
  t->raise = AR__RAISE_NONE;
  switch (raise) {
  case AR__RAISE_VALUE: return lua_error(L);
  case AR__RAISE_CANCELLED:
    t->k = NULL;
    return ar__error_raise(L, "cancelled", "task %I was cancelled", t->id);
  default: break;
  }
  if (t->k != NULL) {
    lua_KFunction k = t->k;
    t->k = NULL;
    return k(L, status, ctx);
  }
  return lua_gettop(L) - (int)ctx;
}

/* Raised where a task cannot yield: inside a function called by a C
 * function that has no continuation (table.sort's comparator, a gsub
 * replacement, a __tostring run by tostring, a __gc). The wait's
 * links are undone first, or a stale waiter, timer or ready entry would
 * wake the task later, in the middle of something else. */
static int raise_unyieldable(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                             void *data) {
  if (cancel != NULL) {
    t->wait_data = data;
    cancel(t);
    t->wait_data = NULL;
  }
  return luaL_error(L, "attempt to wait across a C-call boundary (inside a "
                       "function called by C code that cannot yield, such "
                       "as table.sort or string.gsub)");
}

int ar__task_suspend(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                     void *data, lua_KFunction k, lua_KContext ctx) {
  if (!lua_isyieldable(L)) return raise_unyieldable(L, t, cancel, data);
  if (t->cancel_pending) {
    t->cancel_pending = 0;
    /* cancel reads its record from wait_data, as when called later. */
    t->wait_data = data;
    if (cancel != NULL) cancel(t);
    t->wait_data = NULL;
    return ar__error_raise(L, "cancelled", "task %I was cancelled", t->id);
  }
  t->cancel = cancel;
  t->wait_data = data;
  t->k = k;
  t->state = AR__TASK_WAITING;
  return lua_yieldk(L, 0, k != NULL ? ctx : (lua_KContext)lua_gettop(L),
                    resume_k);
}

int ar__task_yield(lua_State *L, ar__task_t *t) {
  if (!lua_isyieldable(L)) return raise_unyieldable(L, t, NULL, NULL);
  if (t->cancel_pending) {
    t->cancel_pending = 0;
    return ar__error_raise(L, "cancelled", "task %I was cancelled", t->id);
  }
  t->k = NULL;
  t->nargs = 0;
  t->raise = AR__RAISE_NONE;
  t->droppable = 1;
  t->state = AR__TASK_READY;
  ar__sched_push(t->E, t);
  return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), resume_k);
}

static void wake(ar__task_t *t, int nargs, int raise, int droppable) {
  t->cancel = NULL;
  t->wait_data = NULL;
  t->nargs = nargs;
  t->raise = (uint8_t)raise;
  t->droppable = (uint8_t)droppable;
  t->state = AR__TASK_READY;
  ar__sched_push(t->E, t);
}

void ar__task_wake(ar__task_t *t, int nvals, int droppable) {
  wake(t, nvals, AR__RAISE_NONE, droppable);
}

void ar__task_wake_raise(ar__task_t *t, ar__raise_t how) {
  wake(t, how == AR__RAISE_VALUE ? 1 : 0, how, 1);
}

void ar__task_cancel(ar__task_t *t) {
  switch (t->state) {
  case AR__TASK_NEW:
  case AR__TASK_RUNNING: t->cancel_pending = 1; break;
  case AR__TASK_WAITING: {
    ar__cancel_fn fn = t->cancel;
    t->cancel = NULL;
    if (fn != NULL) fn(t);
    wake(t, 0, AR__RAISE_CANCELLED, 1);
    break;
  }
  case AR__TASK_READY:
    /* Values already handed over (a queue item, say) must not be lost:
     * deliver them and raise at the next suspension instead. */
    if (t->droppable) {
      lua_pop(t->co, t->nargs);
      t->nargs = 0;
      t->raise = AR__RAISE_CANCELLED;
    } else {
      t->cancel_pending = 1;
    }
    break;
  default: break;
  }
}

void ar__task_add_done(ar__task_t *t, ar__done_t *d,
                       void (*cb)(ar__done_t *, ar__task_t *)) {
  d->cb = cb;
  ar__list_insert_tail(&t->waiters, &d->node);
}

/* ---- ending ------------------------------------------------------------ */

static void finish(ar__task_t *t, int outcome, int nres) {
  ar_engine_t *E = t->E;
  t->state = AR__TASK_DONE;
  t->outcome = (uint8_t)outcome;
  t->nres = nres;
  t->cancel_pending = 0;
  *(ar__task_t **)lua_getextraspace(t->co) = NULL;
  ar__list_remove(&t->live);
  E->ntasks--;
  if (outcome == AR__OUT_ERROR && t != E->root)
    ar__list_insert_tail(&E->unretrieved, &t->live);
  while (!ar__list_empty(&t->waiters)) {
    ar__done_t *d = ar__container_of(t->waiters.next, ar__done_t, node);
    ar__list_remove(&d->node);
    d->cb(d, t);
  }
  /* Last: once unanchored the handle may be collected at the next
   * allocation. */
  luaL_unref(E->L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

/* Runs with the error object of t on top of L (moved off the dead thread):
 * computes the traceback, closes the thread's pending <close> variables,
 * and leaves error and traceback as t's results. Protected, because all
 * of it can allocate. */
static int finish_error_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  lua_State *co = t->co;
  int cancelled = ar__error_is(L, 2, "cancelled");
  if (cancelled)
    lua_pushliteral(L, "");
  else
    luaL_traceback(L, co, NULL, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref); /* the handle */
  if (!cancelled) {
    /* Arm the report of an unseen failure (see ar__task_test). */
    luaL_setmetatable(L, AR__TASK_FAILED_MT);
  }
  lua_getiuservalue(L, -1, 2); /* its name */
  lua_remove(L, -2);
  ar__thread_close(co, L);
  lua_settop(co, 0);
  if (!lua_checkstack(co, 3)) return luaL_error(L, "not enough memory");
  lua_xmove(L, co, 3); /* error, traceback, name */
  lua_pushboolean(L, cancelled);
  return 1;
}

void ar__task_run(ar__task_t *t) {
  ar_engine_t *E = t->E;
  lua_State *L = E->L, *co = t->co;
  int nres = 0, status;

  if (t->state == AR__TASK_NEW && t->cancel_pending) {
    lua_settop(co, 0); /* never started: its body never runs */
    finish(t, AR__OUT_CANCELLED, 0);
    return;
  }
  int nargs = t->nargs;
  t->nargs = 0;
  t->state = AR__TASK_RUNNING;
  status = lua_resume(co, L, nargs, &nres);
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->state == AR__TASK_RUNNING) {
      /* A bare coroutine.yield() inside a task: treated as sleep(0). */
      t->droppable = 1;
      t->state = AR__TASK_READY;
      ar__sched_push(E, t);
    }
    return;
  }
  if (status == LUA_OK) {
    finish(t, AR__OUT_OK, nres);
    return;
  }
  int top = lua_gettop(L);
  lua_checkstack(L, 4);
  lua_pushcfunction(L, finish_error_p);
  lua_pushlightuserdata(L, t);
  lua_xmove(co, L, 1);
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    int cancelled = lua_toboolean(L, -1);
    finish(t, cancelled ? AR__OUT_CANCELLED : AR__OUT_ERROR, 3);
  } else {
    /* Out of memory while recording the failure: keep what we can. The
     * dead thread still stands in the frame that raised, and its stack
     * indices count from there: reset it (which also closes its pending
     * <close> variables if finish_error_p did not get that far). And arm
     * the report as finish_error_p would have: the handle stays on
     * E->unretrieved, so its __gc must unlink it. Neither allocates. */
    ar__thread_close(co, L);
    lua_settop(co, 0);
    lua_xmove(L, co, 1);
    lua_pushnil(co);
    lua_pushnil(co);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    luaL_setmetatable(L, AR__TASK_FAILED_MT);
    lua_pop(L, 1);
    finish(t, AR__OUT_ERROR, 3);
  }
  lua_settop(L, top);
}

/* ---- results ----------------------------------------------------------- */

static void retrieved(ar__task_t *t) {
  t->retrieved = 1;
  if (t->state == AR__TASK_DONE) ar__list_remove(&t->live);
}

/* A task cancelled before it started has no error object: make one. */
static int push_never_started(lua_State *L, ar__task_t *t) {
  if (t->outcome != AR__OUT_CANCELLED || t->nres != 0) return 0;
  ar__error_push(L, "cancelled", "task %I was cancelled", t->id);
  return 1;
}

int ar__task_push_results(lua_State *L, ar__task_t *t) {
  lua_State *co = t->co;
  if (push_never_started(L, t)) return lua_error(L);
  int n = t->outcome == AR__OUT_OK ? t->nres : 1;
  luaL_checkstack(L, n, "too many results");
  if (!lua_checkstack(co, 1)) luaL_error(L, "not enough memory");
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(co, i);
    lua_xmove(co, L, 1);
  }
  if (t->outcome == AR__OUT_OK) return n;
  retrieved(t);
  return lua_error(L);
}

int ar__task_push_first(lua_State *L, ar__task_t *t) {
  if (!lua_checkstack(t->co, 1)) luaL_error(L, "not enough memory");
  if (push_never_started(L, t)) return t->outcome;
  if (t->outcome == AR__OUT_OK && t->nres == 0) {
    lua_pushnil(L);
  } else {
    lua_pushvalue(t->co, 1);
    lua_xmove(t->co, L, 1);
  }
  if (t->outcome == AR__OUT_ERROR) retrieved(t);
  return t->outcome;
}

/* ---- reporting unseen failures ----------------------------------------- */

/* Protected: tostring may call a __tostring metamethod. */
static int report_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  lua_State *co = t->co;
  if (!lua_checkstack(co, 3)) return 0;
  lua_pushvalue(co, 1);
  lua_pushvalue(co, 2);
  lua_pushvalue(co, 3);
  lua_xmove(co, L, 3); /* error, traceback, name */
  const char *msg = luaL_tolstring(L, 2, NULL);
  const char *tb = lua_tostring(L, 3);
  if (lua_isstring(L, 4))
    fprintf(stderr, "asyncrun: task %lld (%s) failed: %s\n%s\n",
            (long long)t->id, lua_tostring(L, 4), msg, tb ? tb : "");
  else
    fprintf(stderr, "asyncrun: task %lld failed: %s\n%s\n", (long long)t->id,
            msg, tb ? tb : "");
  fflush(stderr);
  return 0;
}

void ar__task_report(lua_State *L, ar__task_t *t) {
  retrieved(t);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return;
  lua_pushcfunction(L, report_p);
  lua_pushlightuserdata(L, t);
  (void)lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);
}

void ar__task_report_all(ar_engine_t *E) {
  while (!ar__list_empty(&E->unretrieved)) {
    ar__task_t *t = ar__container_of(E->unretrieved.next, ar__task_t, live);
    ar__task_report(E->L, t);
  }
}

/* ---- the handle's methods ---------------------------------------------- */

static void await_done_cb(ar__done_t *d, ar__task_t *finished) {
  (void)finished;
  ar__task_wake(ar__container_of(d, ar__task_t, done), 0, 1);
}

static void await_cancel(ar__task_t *self) {
  ar__task_remove_done(&self->done);
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return ar__task_push_results(L, ar__task_check(L, 1));
}

/* t:await() -> the task's results, or raises its error. */
static int task_await(lua_State *L) {
  ar__task_t *target = ar__task_check(L, 1);
  if (target->state == AR__TASK_DONE) return ar__task_push_results(L, target);
  ar__task_t *self = ar__task_check_current(L, "await");
  if (self == target) return luaL_error(L, "a task cannot await itself");
  ar__task_add_done(target, &self->done, await_done_cb);
  return ar__task_suspend(L, self, await_cancel, target, await_k, 0);
}

static int task_cancel(lua_State *L) {
  ar__task_t *t = ar__task_check(L, 1);
  int was = t->state != AR__TASK_DONE;
  ar__task_cancel(t);
  lua_pushboolean(L, was);
  return 1;
}

static int task_done(lua_State *L) {
  lua_pushboolean(L, ar__task_check(L, 1)->state == AR__TASK_DONE);
  return 1;
}

static int task_cancelled(lua_State *L) {
  lua_pushboolean(L, ar__task_check(L, 1)->outcome == AR__OUT_CANCELLED);
  return 1;
}

/* t:result() -> like await for a finished task, without waiting: raises
 * an "invalid_state" error while the task runs. */
static int task_result(lua_State *L) {
  ar__task_t *t = ar__task_check(L, 1);
  if (t->state != AR__TASK_DONE)
    return ar__error_raise(L, "invalid_state", "task %I has not finished",
                           t->id);
  return ar__task_push_results(L, t);
}

static const char *state_name(const ar__task_t *t) {
  static const char *const names[] = {"pending", "running", "waiting", "ready",
                                      "done"};
  if (t->state == AR__TASK_DONE) {
    static const char *const outs[] = {"done", "done", "failed", "cancelled"};
    return outs[t->outcome];
  }
  return names[t->state];
}

static int task_index(lua_State *L) {
  ar__task_t *t = ar__task_check(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k != NULL) {
    if (strcmp(k, "id") == 0) {
      lua_pushinteger(L, t->id);
      return 1;
    }
    if (strcmp(k, "name") == 0) {
      lua_getiuservalue(L, 1, 2);
      return 1;
    }
    if (strcmp(k, "state") == 0) {
      lua_pushstring(L, state_name(t));
      return 1;
    }
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int task_newindex(lua_State *L) {
  ar__task_check(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k == NULL || strcmp(k, "name") != 0)
    return luaL_error(L,
                      "task field '%s' is read-only (only 'name' can be set)",
                      k ? k : luaL_typename(L, 2));
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TSTRING);
  lua_settop(L, 3);
  lua_setiuservalue(L, 1, 2);
  return 0;
}

static int task_tostring(lua_State *L) {
  ar__task_t *t = ar__task_check(L, 1);
  lua_getiuservalue(L, 1, 2);
  if (lua_isstring(L, -1))
    lua_pushfstring(L, "task %I (%s, %s)", t->id, lua_tostring(L, -1),
                    state_name(t));
  else
    lua_pushfstring(L, "task %I (%s)", t->id, state_name(t));
  return 1;
}

/* A failure nobody awaited is reported when its handle is collected (or
 * at the end of the run, whichever comes first), as asyncio does. */
static int task_gc(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  if (t->state == AR__TASK_DONE && !ar__list_empty(&t->live))
    ar__task_report(L, t);
  return 0;
}

static const void *new_task_metatable(lua_State *L, const char *name,
                                      int methods, int with_gc) {
  luaL_newmetatable(L, name);
  lua_pushvalue(L, methods);
  lua_setfield(L, -2, "methods");
  lua_pushcfunction(L, task_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, task_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, task_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, AR__TASK_MT);
  lua_setfield(L, -2, "__name");
  if (with_gc) {
    lua_pushcfunction(L, task_gc);
    lua_setfield(L, -2, "__gc");
  }
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt;
}

void ar__task_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"await", task_await},   {"cancel", task_cancel},
      {"done", task_done},     {"cancelled", task_cancelled},
      {"result", task_result}, {NULL, NULL}};
  ar_engine_t *E = ar__engine_of(L);
  luaL_newlib(L, methods);
  E->task_mt = new_task_metatable(L, AR__TASK_MT, lua_gettop(L), 0);
  E->task_failed_mt =
      new_task_metatable(L, AR__TASK_FAILED_MT, lua_gettop(L), 1);
  lua_pop(L, 1);
  luaL_getmetatable(L, AR__TASK_MT);
  E->task_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
