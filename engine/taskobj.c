/* The task handle as scripts see it: await, cancel, results, the report
 * of failures nobody retrieved. The lifecycle is in task.c. */
#include <stdio.h>
#include <string.h>

#include <lualib.h>

#include "internal.h"

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

/* ---- results ----------------------------------------------------------- */

void ar__task_mark_retrieved(ar__task_t *t) {
  t->flags |= AR__TF_RETRIEVED;
  if (t->state == AR__TASK_DONE) ar__list_remove(&t->live);
}

/* "task 3 (fetch) was cancelled: shutting down" */
void ar__task_push_cancelled(lua_State *L, ar__task_t *t) {
  ar_engine_t *E = t->E;
  luaL_checkstack(L, 6, NULL);
  int top = lua_gettop(L), handle = 0;
  const char *name = NULL, *msg = NULL;
  /* An ended task has no anchor: the caller has its handle at hand. */
  for (int i = top; i >= 1 && handle == 0 && t->ref == LUA_NOREF; i--)
    if (lua_touserdata(L, i) == t) handle = i;
  if (t->ref != LUA_NOREF || handle != 0) {
    if (handle != 0)
      lua_pushvalue(L, handle);
    else
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_getiuservalue(L, -1, 2);
    name = lua_tostring(L, -1);
    if (t->flags & AR__TF_MSG) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, E->cancel_msgs_ref);
      lua_pushvalue(L, top + 1);
      lua_rawget(L, -2);
      msg = lua_tostring(L, -1);
    }
  }
  if (name != NULL)
    lua_pushfstring(L, "task %I (%s) was cancelled", t->id, name);
  else
    lua_pushfstring(L, "task %I was cancelled", t->id);
  if (msg != NULL) {
    lua_pushfstring(L, "%s: %s", lua_tostring(L, -1), msg);
    lua_remove(L, -2);
  }
  ar__error_push(L, "cancelled", "%s", lua_tostring(L, -1));
  lua_pushinteger(L, t->id);
  lua_setfield(L, -2, "task");
  if (msg != NULL) {
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "reason");
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* A task cancelled before it started has no error object: make one. */
static int push_never_started(lua_State *L, ar__task_t *t) {
  if (t->outcome != AR__OUT_CANCELLED || t->nvals != 0) return 0;
  ar__task_push_cancelled(L, t);
  return 1;
}

/* Raises the error of t (on top of L), remembering where it came from so
 * that the message handler of the task it is raised in can chain the
 * tracebacks. */
static int raise_from(lua_State *L, ar__task_t *t, int handle) {
  ar_engine_t *E = t->E;
  if (t->outcome == AR__OUT_ERROR && handle != 0) {
    lua_pushvalue(L, handle);
    lua_rawseti(L, LUA_REGISTRYINDEX, E->reraise_ref);
  }
  return lua_error(L);
}

int ar__task_push_results(lua_State *L, ar__task_t *t) {
  lua_State *co = t->co;
  int handle = 0;
  if (push_never_started(L, t)) return lua_error(L);
  int n = t->outcome == AR__OUT_OK ? t->nvals : 1;
  luaL_checkstack(L, n + 1, "too many results");
  if (!lua_checkstack(co, 1)) luaL_error(L, "not enough memory");
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(co, i);
    lua_xmove(co, L, 1);
  }
  if (t->outcome == AR__OUT_OK) return n;
  ar__task_mark_retrieved(t);
  /* The handle, if the caller has it on its stack, for the chaining. */
  for (int i = 1; i <= lua_gettop(L) - 1 && handle == 0; i++)
    if (lua_touserdata(L, i) == t) handle = i;
  return raise_from(L, t, handle);
}

int ar__task_reraise(lua_State *L, ar__task_t *t) {
  int top = lua_gettop(L);
  if (ar__task_push_first(L, t) == AR__OUT_OK)
    return luaL_error(L, "task %I did not fail", t->id);
  int handle = 0;
  for (int i = 1; i <= top && handle == 0; i++)
    if (lua_touserdata(L, i) == t) handle = i;
  return raise_from(L, t, handle);
}

int ar__task_push_first(lua_State *L, ar__task_t *t) {
  if (!lua_checkstack(t->co, 1)) luaL_error(L, "not enough memory");
  if (push_never_started(L, t)) return t->outcome;
  if (t->outcome == AR__OUT_OK && t->nvals == 0) {
    lua_pushnil(L);
  } else {
    lua_pushvalue(t->co, 1);
    lua_xmove(t->co, L, 1);
  }
  if (t->outcome == AR__OUT_ERROR) ar__task_mark_retrieved(t);
  return t->outcome;
}

/* ---- reporting unseen failures ----------------------------------------- */

static int tolstring_p(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Pushes the text of the error at idx. Its __tostring may raise: the
 * failure is then described rather than lost. */
void ar__error_push_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, tolstring_p);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *why = lua_tostring(L, -1);
    lua_pushfstring(L, "(a %s error whose __tostring failed: %s)",
                    luaL_typename(L, idx), why ? why : "?");
    lua_remove(L, -2);
  }
}

/* Protected: it allocates. */
static int report_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  lua_State *co = t->co;
  if (t->nvals < 3) {
    fprintf(stderr,
            "asyncrun: task %lld failed (its error was lost: out of "
            "memory)\n",
            (long long)t->id);
    return 0;
  }
  if (!lua_checkstack(co, 3)) return 0;
  lua_pushvalue(co, 1);
  lua_pushvalue(co, 2);
  lua_pushvalue(co, 3);
  lua_xmove(co, L, 3); /* error, traceback, name */
  ar__error_push_text(L, 2);
  const char *msg = lua_tostring(L, -1);
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
  ar__task_mark_retrieved(t);
  t->E->failures_reported++;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return;
  lua_pushcfunction(L, report_p);
  lua_pushlightuserdata(L, t);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    fprintf(stderr, "asyncrun: task %lld failed (its error cannot be shown)\n",
            (long long)t->id);
  lua_settop(L, top);
}

int ar__task_report_all(ar_engine_t *E) {
  int n = 0;
  while (!ar__list_empty(&E->unretrieved)) {
    ar__task_t *t = ar__container_of(E->unretrieved.next, ar__task_t, live);
    ar__task_report(E->L, t);
    n++;
  }
  return n;
}

/* "task 4 (consumer) waiting in method 'get' at pipeline.lua:31" */
void ar__task_describe(ar__task_t *t, char *buf, size_t len) {
  lua_State *L = t->E->L, *co = t->co;
  lua_Debug ar;
  const char *name = NULL, *fn = "?", *what = "";
  char where[160] = "";
  int top = lua_gettop(L);
  if (t->ref != LUA_NOREF && lua_checkstack(L, 2)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_getiuservalue(L, -1, 2);
    name = lua_tostring(L, -1);
  }
  char on[120] = "";
  if (lua_getstack(co, 0, &ar)) {
    if (lua_getinfo(co, "n", &ar) && ar.name) {
      fn = ar.name;
      what = ar.namewhat;
    }
    /* What it waits on: the waiting call's first argument (the queue, the
     * event, the task awaited). */
    if (t->state == AR__TASK_WAITING && lua_checkstack(co, 1) &&
        lua_getlocal(co, &ar, 1) != NULL) {
      int ty = lua_type(co, -1);
      lua_xmove(co, L, 1);
      if (ty == LUA_TTABLE || ty == LUA_TUSERDATA) {
        ar__error_push_text(L, -1);
        snprintf(on, sizeof on, " on %s", lua_tostring(L, -1));
      }
    }
  }
  for (int level = 1; lua_getstack(co, level, &ar); level++) {
    if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
      snprintf(where, sizeof where, " at %s:%d", ar.short_src, ar.currentline);
      break;
    }
  }
  const char *state = t->state == AR__TASK_WAITING ? "waiting in"
                      : t->state == AR__TASK_NEW   ? "not started"
                                                   : "ready after";
  if (t->state == AR__TASK_NEW)
    snprintf(buf, len, "task %lld%s%s%s %s", (long long)t->id, name ? " (" : "",
             name ? name : "", name ? ")" : "", state);
  else
    snprintf(buf, len, "task %lld%s%s%s %s %s%s'%s'%s%s", (long long)t->id,
             name ? " (" : "", name ? name : "", name ? ")" : "", state, what,
             *what ? " " : "", fn, on, where);
  lua_settop(L, top);
}

/* ---- the handle's methods ---------------------------------------------- */

static void await_done_cb(ar__done_t *d, ar__task_t *finished) {
  (void)finished;
  ar__task_wake(ar__container_of(d, ar__task_t, done), 0);
}

/* Awaiting a task does not own it: a cancelled await leaves the task
 * running (use wait_for to cancel what you wait for). */
static int await_cancel(ar__task_t *self, void *data) {
  (void)data;
  ar__task_remove_done(&self->done);
  return AR__CANCEL_DONE;
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return ar__task_push_results(L, ar__task_check(L, 1));
}

/* t:await() -> the task's results, or raises its error. */
static int task_await(lua_State *L) {
  ar__task_t *target = ar__task_check(L, 1);
  lua_settop(L, 1);
  if (target->state == AR__TASK_DONE) return ar__task_push_results(L, target);
  ar__task_t *self = ar__task_check_current(L, "await");
  if (self == target) return luaL_error(L, "a task cannot await itself");
  ar__task_add_done(target, &self->done, await_done_cb);
  return ar__task_suspend(L, self, await_cancel, target, await_k, 0);
}

/* t:cancel([msg]) -> whether the task was still running. */
static int task_cancel(lua_State *L) {
  ar__task_t *t = ar__task_check(L, 1);
  int live = t->state != AR__TASK_DONE;
  if (live && !lua_isnoneornil(L, 2)) {
    luaL_checkstring(L, 2);
    if (!(t->flags & AR__TF_MSG)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->E->cancel_msgs_ref);
      lua_pushvalue(L, 1);
      lua_pushvalue(L, 2);
      lua_rawset(L, -3);
      t->flags |= AR__TF_MSG;
    }
  }
  ar__task_cancel(t);
  lua_pushboolean(L, live);
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
  lua_settop(L, 1);
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
  return ar__index_method(L);
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

/* Pushes a new table whose keys or values (mode "k" or "v") are weak. */
static void push_weak_table(lua_State *L, int narr, const char *mode) {
  lua_createtable(L, narr, 0);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
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
  luaL_getmetatable(L, AR__TASK_FAILED_MT);
  E->task_failed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  E->reraise_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_weak_table(L, AR__CO_POOL_MAX, "v");
  E->co_pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  E->co_pool_n = 0;
  E->co_empty = lua_newthread(L);
  E->co_empty_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* t:cancel(msg)'s messages, dropped with their tasks. */
  push_weak_table(L, 0, "k");
  E->cancel_msgs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- coroutine.resume and coroutine.close on a task's thread ---------- */

/* coroutine.running() inside a task hands out its thread; resuming or
 * closing it from elsewhere would tear the task out of the scheduler. */
static int guarded_co_call(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  if (co != NULL) {
    ar__task_t *t = *(ar__task_t **)lua_getextraspace(co);
    if (t != NULL && t->co == co) {
      const char *what = lua_tostring(L, lua_upvalueindex(2));
      lua_pushfstring(L,
                      "cannot %s the thread of task %I: it belongs to the "
                      "scheduler (use t:await() or t:cancel())",
                      what, t->id);
      if (strcmp(what, "close") == 0) return lua_error(L);
      lua_pushboolean(L, 0); /* as resume reports a dead coroutine */
      lua_insert(L, -2);
      return 2;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* coroutine.running(), which also marks a task whose thread the script
 * now holds: that thread is never reused for another task. */
static int guarded_co_running(lua_State *L) {
  ar__task_t *t = *(ar__task_t **)lua_getextraspace(L);
  if (t != NULL && t->co == L) t->flags |= AR__TF_SHARED;
  lua_pushboolean(L, lua_pushthread(L));
  return 2;
}

void ar__task_guard_coroutines(lua_State *L) {
  static const char *const names[] = {"resume", "close"};
  if (lua_getglobal(L, LUA_COLIBNAME) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  for (int i = 0; i < 2; i++) {
    if (lua_getfield(L, -1, names[i]) != LUA_TFUNCTION) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushstring(L, names[i]);
    lua_pushcclosure(L, guarded_co_call, 2);
    lua_setfield(L, -2, names[i]);
  }
  lua_pushcfunction(L, guarded_co_running);
  lua_setfield(L, -2, "running");
  lua_pop(L, 1);
}
