/* Tasks: a Lua thread plus the record the scheduler needs, living inside
 * the task's handle userdata. Lifecycle (docs/design.md):
 *
 *   NEW --run--> RUNNING --suspend--> WAITING --wake--> READY --run--> ...
 *                   \--body returns or raises--> DONE
 *
 * Every task body runs inside a trampoline (task_body): a C function at
 * the base of the thread that calls the body under lua_pcallk with a
 * message handler. So a task always ends by returning: <close> handlers
 * and pcall cleanup run while the thread can still yield (they may wait,
 * even during cancellation), and the traceback of a failure is taken
 * where it was raised. The handle's methods, results and reports are in
 * taskobj.c. */
#include <assert.h>
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

ar__task_t *ar__task_current(lua_State *L) { return ar__task_of(L); }

ar__task_t *ar__task_check_current(lua_State *L, const char *what) {
  ar__task_t *t = ar__task_of(L);
  if (t == NULL)
    luaL_error(L,
               "%s must be called from an asyncrun task (not from the main "
               "thread or a plain coroutine)",
               what);
  return t;
}

ar_engine_t *ar__task_engine(const ar__task_t *t) { return t->E; }
lua_Integer ar__task_id(const ar__task_t *t) { return t->id; }
int ar__task_is_done(const ar__task_t *t) { return t->state == AR__TASK_DONE; }
int ar__task_outcome(const ar__task_t *t) { return t->outcome; }
ar__timer_t *ar__task_timer(ar__task_t *t) { return &t->timer; }
ar__task_t *ar__task_of_timer(ar__timer_t *tm) {
  return ar__container_of(tm, ar__task_t, timer);
}

void ar__task_push_handle(lua_State *L, ar__task_t *t) {
  assert(t->ref != LUA_NOREF);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
}

/* ---- the trampoline ----------------------------------------------------- */

/* Where a failing task's traceback waits for task_body_k: the registry,
 * keyed by the task record. */
static void stash_traceback(lua_State *co, ar__task_t *t) {
  ar_engine_t *E = t->E;
  luaL_Buffer b;
  /* An error re-raised from another task (await, gather, a group, map)
   * carries that task's frames first, then where it was awaited. */
  lua_rawgeti(co, LUA_REGISTRYINDEX, E->reraise_ref);
  ar__task_t *from = ar__task_test(co, -1);
  int chained = 0;
  if (from != NULL && from->state == AR__TASK_DONE &&
      from->outcome == AR__OUT_ERROR && from->nvals >= 3 &&
      lua_checkstack(from->co, 1)) {
    lua_pushvalue(from->co, 1);
    lua_xmove(from->co, co, 1);
    chained = lua_rawequal(co, -1, 1);
    lua_pop(co, 1);
  }
  luaL_buffinit(co, &b);
  if (chained) {
    lua_getiuservalue(co, -2, 2); /* its name */
    if (lua_isstring(co, -1))
      lua_pushfstring(co, "in task %I (%s): ", from->id, lua_tostring(co, -1));
    else
      lua_pushfstring(co, "in task %I: ", from->id);
    lua_remove(co, -2);
    luaL_addvalue(&b);
    lua_pushvalue(from->co, 2);
    lua_xmove(from->co, co, 1);
    luaL_addvalue(&b);
    luaL_addstring(&b, "\nre-raised ");
  }
  luaL_traceback(co, co, NULL, 1);
  /* Drop the trampoline's own frame, the last line. */
  size_t len;
  const char *tb = lua_tolstring(co, -1, &len);
  const char *last = strrchr(tb, '\n');
  if (last != NULL && strcmp(last, "\n\t[C]: in ?") == 0) {
    lua_pushlstring(co, tb, (size_t)(last - tb));
    lua_remove(co, -2);
  }
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_rawsetp(co, LUA_REGISTRYINDEX, t);
  lua_pop(co, 1); /* the re-raise anchor */
  /* Consulted once: the failed task's results need not outlive it. */
  lua_pushboolean(co, 0);
  lua_rawseti(co, LUA_REGISTRYINDEX, E->reraise_ref);
}

/* The message handler: takes the traceback where the error was raised
 * (not for cancellations, which are routine) and leaves the error as is,
 * so <close> handlers and the report see the script's own value. */
static int task_msgh(lua_State *co) {
  ar__task_t *t = ar__task_of(co);
  if (t != NULL && !ar__error_is(co, 1, "cancelled")) {
    lua_settop(co, 1);
    stash_traceback(co, t);
  }
  lua_settop(co, 1);
  return 1;
}

/* The body ended. Success: its results, above the handler. Failure: the
 * thread returns error, traceback, name; the outcome says which. */
static int task_body_k(lua_State *co, int status, lua_KContext ctx) {
  (void)ctx;
  ar__task_t *t = ar__task_of(co);
  t->cancelling = 0;
  if (status == LUA_OK || status == LUA_YIELD) {
    t->outcome = AR__OUT_OK;
    return lua_gettop(co) - 1;
  }
  int err = lua_gettop(co);
  int cancelled = ar__error_is(co, err, "cancelled");
  luaL_checkstack(co, 4, NULL);
  lua_rawgetp(co, LUA_REGISTRYINDEX, t);
  if (!lua_isstring(co, -1)) {
    lua_pop(co, 1);
    lua_pushliteral(co, "");
  } else {
    lua_pushnil(co);
    lua_rawsetp(co, LUA_REGISTRYINDEX, t);
  }
  lua_rawgeti(co, LUA_REGISTRYINDEX, t->ref); /* the handle */
  lua_getiuservalue(co, -1, 2);               /* its name */
  if (!cancelled) {
    /* Arm the report of an unseen failure (see ar__task_test). */
    lua_rawgeti(co, LUA_REGISTRYINDEX, t->E->task_failed_ref);
    lua_setmetatable(co, -3);
  }
  lua_remove(co, -2);
  t->outcome = cancelled ? AR__OUT_CANCELLED : AR__OUT_ERROR;
  return 3;
}

/* The function at the base of every task's thread: body and arguments
 * above it. */
static int task_body(lua_State *co) {
  int nargs = lua_gettop(co) - 1;
  lua_pushcfunction(co, task_msgh);
  lua_insert(co, 1);
  return task_body_k(co, lua_pcallk(co, nargs, LUA_MULTRET, 1, 0, task_body_k),
                     0);
}

/* Pushes a thread from the pool, set up as lua_newthread would set up a
 * new one (it takes L's hook); or pushes nothing and returns NULL when
 * the collector has emptied the pool. Needs 3 slots on L. */
static lua_State *reuse_thread(lua_State *L, ar_engine_t *E) {
  lua_State *co = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->co_pool_ref);
  while (co == NULL && E->co_pool_n > 0) {
    lua_rawgeti(L, -1, E->co_pool_n);
    lua_pushnil(L);
    lua_rawseti(L, -3, E->co_pool_n--);
    co = lua_tothread(L, -1);
    if (co == NULL) lua_pop(L, 1); /* a hole the collector left */
  }
  if (co == NULL) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_remove(L, -2);
  assert(lua_gettop(co) == 0);
  lua_sethook(co, lua_gethook(L), lua_gethookmask(L), lua_gethookcount(L));
  return co;
}

int ar__task_spare_threads(ar_engine_t *E) {
  lua_State *L = E->L;
  int n = 0;
  if (!lua_checkstack(L, 2)) return E->co_pool_n;
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->co_pool_ref);
  for (int i = 1; i <= E->co_pool_n; i++) { /* close the holes */
    if (lua_rawgeti(L, -1, i) == LUA_TTHREAD)
      lua_rawseti(L, -2, ++n);
    else
      lua_pop(L, 1);
  }
  for (int i = n + 1; i <= E->co_pool_n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pop(L, 1);
  return E->co_pool_n = n;
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
  ar__list_init(&t->live);
  ar__list_init(&t->waiters);
  ar__list_init(&t->done.node);
  ar__timer_init(&t->timer);
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->task_mt_ref);
  lua_setmetatable(L, -2);
  lua_State *co =
      E->co_pool_n > 0 && lua_checkstack(L, 3) ? reuse_thread(L, E) : NULL;
  if (co == NULL) co = lua_newthread(L);
  if (!lua_checkstack(co, nargs + 2))
    luaL_error(L, "too many arguments to spawn");
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* From here on nothing can fail. */
  lua_insert(L, -(nargs + 2));
  lua_pushcfunction(co, task_body);
  lua_xmove(L, co, nargs + 1);
  *(ar__task_t **)lua_getextraspace(co) = t;
  t->E = E;
  t->co = co;
  t->id = ++E->next_id;
  t->state = AR__TASK_NEW;
  t->nvals = nargs + 1;
  ar__list_insert_tail(&E->tasks, &t->live);
  E->ntasks++;
  ar__sched_push(E, t);
  return t;
}

/* ---- suspension and wake-up -------------------------------------------- */

void ar__task_push_cancelled_error(lua_State *L) {
  ar__task_t *t = ar__task_of(L);
  assert(t != NULL);
  t->cancel_due = 0;
  t->cancelling = 0;
  ar__task_push_cancelled(L, t);
}

int ar__task_raise_cancelled(lua_State *L) {
  ar__task_push_cancelled_error(L);
  ar__error_locate(L, 1);
  return lua_error(L);
}

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  ar__task_t *t = ar__task_of(L);
  if (t->resume == AR__RESUME_CANCEL) {
    t->resume = AR__RESUME_VALUES;
    t->k = NULL;
    return ar__task_raise_cancelled(L);
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
 * replacement, a __tostring run by tostring, a __gc). The wait's links
 * are undone first, or a stale waiter, timer or ready entry would wake
 * the task later, in the middle of something else. */
static int raise_unyieldable(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                             void *data) {
  if (cancel != NULL) {
    int r = cancel(t, data);
    assert(r == AR__CANCEL_DONE); /* joins check ar__task_check_suspendable */
    (void)r;
  }
  return luaL_error(L, "attempt to wait across a C-call boundary (inside a "
                       "function called by C code that cannot yield, such "
                       "as table.sort or string.gsub)");
}

ar__task_t *ar__task_check_suspendable(lua_State *L, const char *what) {
  ar__task_t *t = ar__task_check_current(L, what);
  if (!lua_isyieldable(L)) raise_unyieldable(L, t, NULL, NULL);
  return t;
}

static int suspend(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                   void *data, lua_KFunction k, lua_KContext ctx, int join) {
  /* A thread closed by force runs its <close> handlers unyieldably, in
   * whatever state it was left: that case raises before the checks. */
  if (!lua_isyieldable(L)) return raise_unyieldable(L, t, cancel, data);
  assert(t == ar__task_of(L) && t->state == AR__TASK_RUNNING);
  t->cancelling = 0;
  t->flags = (uint8_t)((t->flags & ~AR__TF_JOIN) | (join ? AR__TF_JOIN : 0));
  t->wait_data = data;
  if (t->cancel_due) {
    if (cancel == NULL || cancel(t, data) == AR__CANCEL_DONE) {
      t->wait_data = NULL;
      return ar__task_raise_cancelled(L);
    }
    t->cancelling = 1; /* cancelled already: wait for what it started */
  }
  t->cancel = cancel;
  t->k = k;
  t->resume = AR__RESUME_VALUES;
  t->state = AR__TASK_WAITING;
  return lua_yieldk(L, 0, k != NULL ? ctx : (lua_KContext)lua_gettop(L),
                    resume_k);
}

int ar__task_suspend(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                     void *data, lua_KFunction k, lua_KContext ctx) {
  return suspend(L, t, cancel, data, k, ctx, 0);
}

int ar__task_suspend_join(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                          ar__join_t *join, lua_KFunction k, lua_KContext ctx) {
  return suspend(L, t, cancel, join, k, ctx, 1);
}

int ar__task_yield(lua_State *L, ar__task_t *t) {
  if (!lua_isyieldable(L)) return raise_unyieldable(L, t, NULL, NULL);
  assert(t == ar__task_of(L) && t->state == AR__TASK_RUNNING);
  if (t->cancel_due) return ar__task_raise_cancelled(L);
  t->k = NULL;
  t->nvals = 0;
  t->kept = 0;
  t->resume = AR__RESUME_VALUES;
  t->state = AR__TASK_READY;
  ar__sched_push(t->E, t);
  return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), resume_k);
}

static void wake(ar__task_t *t, int code, int kept) {
  assert(t->state == AR__TASK_WAITING);
  /* Whatever list it waited in, it waits there no more. */
  ar__list_remove(&t->done.node);
  t->cancel = NULL;
  t->wait_data = NULL;
  t->code = code;
  /* A wait that was being cancelled ends with what it waited for: its
   * continuation must see it. So does a wait for other tasks woken before
   * a cancellation could be delivered: their results are values too. */
  t->kept = (uint8_t)(kept || t->cancelling || (t->flags & AR__TF_JOIN));
  t->resume = AR__RESUME_VALUES;
  t->state = AR__TASK_READY;
  ar__sched_push(t->E, t);
}

void ar__task_wake(ar__task_t *t, int code) { wake(t, code, 0); }
void ar__task_wake_kept(ar__task_t *t, int code) { wake(t, code, 1); }

void ar__task_hand(lua_State *L, ar__task_t *t, int n, int code) {
  if (!lua_checkstack(t->co, n)) luaL_error(L, "not enough memory");
  lua_xmove(L, t->co, n);
  t->nvals = n;
  wake(t, code, 1);
}

void ar__task_take(lua_State *L, ar__task_t *t, int n) {
  assert(t->state == AR__TASK_WAITING);
  luaL_checkstack(L, n, NULL);
  lua_xmove(t->co, L, n);
}

int ar__task_woken(lua_State *L) { return ar__task_of(L)->code; }
int ar__task_cancelling(lua_State *L) { return ar__task_of(L)->cancelling; }

/* ---- waiter lists -------------------------------------------------------- */

void ar__waiters_push(ar__list_t *l, ar__task_t *t) {
  ar__list_insert_tail(l, &t->done.node);
}

ar__task_t *ar__waiters_first(ar__list_t *l) {
  if (ar__list_empty(l)) return NULL;
  return ar__container_of(l->next, ar__task_t, done.node);
}

ar__task_t *ar__waiters_shift(ar__list_t *l) {
  ar__task_t *t = ar__waiters_first(l);
  if (t != NULL) ar__list_remove(&t->done.node);
  return t;
}

int ar__waiters_cancel(ar__task_t *t, void *data) {
  (void)data;
  ar__list_remove(&t->done.node);
  return AR__CANCEL_DONE;
}

void ar__task_add_done(ar__task_t *t, ar__done_t *d,
                       void (*cb)(ar__done_t *, ar__task_t *)) {
  assert(t->state != AR__TASK_DONE);
  d->cb = cb;
  ar__list_insert_tail(&t->waiters, &d->node);
}

void ar__task_remove_done(ar__done_t *d) { ar__list_remove(&d->node); }

/* ---- cancellation ------------------------------------------------------ */

/* Counts the request and makes a cancellation due. A waiting task is
 * queued so the driver delivers it; one that is queued or running meets
 * it when it next runs or suspends. Never recurses into another task. */
void ar__task_cancel(ar__task_t *t) {
  if (t->state == AR__TASK_DONE) return;
  if (t->ncancels < UINT16_MAX) t->ncancels++;
  if (t->cancel_due) return;
  t->cancel_due = 1;
  if (t->state == AR__TASK_WAITING && !t->cancelling) ar__sched_push(t->E, t);
}

int ar__task_cancels(const ar__task_t *t) {
  /* One still pending is not counted: whoever asked is still waiting for
   * it, and it must survive a withdrawal that is not its own. */
  return (int)t->ncancels - t->cancel_due;
}

int ar__task_uncancel(ar__task_t *t, int base) {
  if (t->ncancels > 0 && t->ncancels < UINT16_MAX) t->ncancels--;
  int others = (int)t->ncancels - base;
  if (others <= 0) {
    t->cancel_due = 0;
    return 0;
  }
  return others;
}

/* Whether `from` waits, through joins that are being cancelled, on
 * `self`. Iterative (chains can be a million deep); only tasks in a
 * cancelling join are followed, so a cancellation travelling down a
 * chain costs one step per task. */
struct dfs {
  ar_engine_t *E;
  ar__task_t *self;
  size_t len, visited;
  int nomem;
};

static int dfs_push(ar__task_t *t, void *ud) {
  struct dfs *d = ud;
  if (t == d->self) return 1;
  if (t->state != AR__TASK_WAITING || !t->cancelling ||
      !(t->flags & AR__TF_JOIN) || (t->flags & AR__TF_VISITED))
    return 0;
  ar_engine_t *E = d->E;
  if (d->visited == E->dfs_cap) {
    size_t cap = E->dfs_cap ? E->dfs_cap * 2 : 64;
    ar__task_t **p = realloc(E->dfs, cap * sizeof *p);
    if (p == NULL) {
      d->nomem = 1;
      return 1; /* assume a cycle: not waiting is the safe side */
    }
    E->dfs = p;
    E->dfs_cap = cap;
  }
  t->flags |= AR__TF_VISITED;
  E->dfs[d->visited++] = t;
  return 0;
}

int ar__join_would_cycle(ar__task_t *self, ar__task_t *inner) {
  struct dfs d = {self->E, self, 0, 0, 0};
  int found = dfs_push(inner, &d);
  /* dfs[0..visited) holds every task reached; len walks them in order. */
  while (!found && d.len < d.visited) {
    ar__task_t *t = d.E->dfs[d.len++];
    ar__join_t *j = t->wait_data;
    found = j->each(j, dfs_push, &d);
  }
  for (size_t i = 0; i < d.visited; i++)
    d.E->dfs[i]->flags &= (uint8_t)~AR__TF_VISITED;
  return found;
}

/* ---- the driver's side ------------------------------------------------- */

/* A task that returned nothing leaves its thread as a new one, with its
 * stack and call records already grown: the next spawn takes it instead
 * of making one (a server's handler tasks are such, and making a thread,
 * growing it and collecting it was a tenth of a request's cost). Not if
 * the script may hold the thread (coroutine.running() handed it out), nor
 * for the root, whose thread run.c reads. The handle keeps no link to it:
 * co_empty answers for it. Allocates nothing. */
static void task_recycle(ar__task_t *t) {
  ar_engine_t *E = t->E;
  lua_State *L = E->L, *co = t->co;
  lua_Debug ar;
  if (t->outcome != AR__OUT_OK || t->nvals != 0 || t == E->root ||
      (t->flags & AR__TF_SHARED) || E->co_pool_n >= AR__CO_POOL_MAX ||
      lua_status(co) != LUA_OK || lua_gettop(co) != 0 ||
      lua_getstack(co, 0, &ar) || !lua_checkstack(L, 3))
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->co_pool_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_rawseti(L, -2, ++E->co_pool_n);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, 1);
  lua_pop(L, 2);
  lua_sethook(co, NULL, 0, 0);
  t->co = E->co_empty;
}

static void task_finish(ar__task_t *t, int nres) {
  ar_engine_t *E = t->E;
  assert(t->state != AR__TASK_DONE && ar__list_empty(&t->done.node));
  assert(t->cancel == NULL && !ar__timer_active(&t->timer));
  t->state = AR__TASK_DONE;
  t->nvals = nres;
  t->cancel_due = t->cancelling = 0;
  t->queued = 0;
  *(ar__task_t **)lua_getextraspace(t->co) = NULL;
  ar__list_remove(&t->live);
  E->ntasks--;
  if (t->outcome == AR__OUT_ERROR && t != E->root)
    ar__list_insert_tail(&E->unretrieved, &t->live);
  while (!ar__list_empty(&t->waiters)) {
    ar__done_t *d = ar__container_of(t->waiters.next, ar__done_t, node);
    ar__list_remove(&d->node);
    d->cb(d, t);
  }
  task_recycle(t);
  /* Last: once unanchored the handle may be collected at the next
   * allocation. */
  luaL_unref(E->L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

/* Raises "cancelled" in a task that yielded with a bare coroutine.yield()
 * (or, for ar_engine_interrupt, one that computes) at its next step. */
static void cancel_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  ar__task_t *t = ar__task_of(L);
  if (t == NULL) return;
  t->flags &= (uint8_t)~AR__TF_HOOKED;
  ar_engine_t *E = t->E;
  if (E->interrupts > 0) {
    E->interrupts = 0;
    if (t->ncancels < UINT16_MAX) t->ncancels++;
    ar__error_push(L, "cancelled", "task %I was interrupted", t->id);
    lua_error(L);
  }
  if (t->cancel_due) ar__task_raise_cancelled(L);
}

#define AR__HOOK_MASK                                                          \
  (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)

void ar_engine_interrupt(ar_engine_t *E) {
  if (E == NULL) return;
  E->interrupts = 1;
  lua_State *co = E->running;
  if (co != NULL) lua_sethook(co, cancel_hook, AR__HOOK_MASK, 1);
  uv_async_send(&E->interrupt_async);
}

/* A waiting task was queued to be cancelled: release its wait. Returns
 * whether to resume it now (raising "cancelled"). */
static int deliver_cancel(ar__task_t *t) {
  ar__cancel_fn fn = t->cancel;
  if (fn != NULL && fn(t, t->wait_data) == AR__CANCEL_WAIT) {
    t->cancelling = 1; /* fn stays, for a close by force */
    return 0;
  }
  t->cancel = NULL;
  ar__list_remove(&t->done.node);
  t->wait_data = NULL;
  t->resume = AR__RESUME_CANCEL;
  return 1;
}

static void run_failed(ar__task_t *t, int status);

void ar__task_run(ar__task_t *t) {
  ar_engine_t *E = t->E;
  lua_State *L = E->L, *co = t->co;
  int nargs, nres = 0;

  assert(t->queued);
  t->queued = 0;
  switch (t->state) {
  case AR__TASK_NEW:
    if (t->cancel_due) { /* never started: its body never runs */
      lua_settop(co, 0);
      t->outcome = AR__OUT_CANCELLED;
      task_finish(t, 0);
      return;
    }
    nargs = t->nvals; /* the body and its arguments, above task_body */
    break;
  case AR__TASK_WAITING:
    assert(t->cancel_due && !t->cancelling);
    if (!deliver_cancel(t)) return;
    nargs = 0;
    break;
  case AR__TASK_READY:
    if (t->cancel_due && !t->kept && t->resume == AR__RESUME_VALUES) {
      lua_pop(co, t->nvals); /* nothing was handed over that matters */
      t->nvals = 0;
      t->resume = AR__RESUME_CANCEL;
    }
    nargs = t->nvals;
    break;
  default: assert(0); return;
  }
  if (t->resume == AR__RESUME_YIELDED && t->cancel_due) {
    lua_sethook(co, cancel_hook, AR__HOOK_MASK, 1);
    t->flags |= AR__TF_HOOKED;
  }
  t->nvals = 0;
  t->kept = 0;
  t->state = AR__TASK_RUNNING;
  E->running = co;
  int status = lua_resume(co, L, nargs, &nres);
  E->running = NULL;
  if (t->flags & AR__TF_HOOKED || E->interrupts) {
    /* A hook that did not fire must not fire later, elsewhere. */
    lua_sethook(co, NULL, 0, 0);
    t->flags &= (uint8_t)~AR__TF_HOOKED;
  }
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->state == AR__TASK_RUNNING) {
      /* A bare coroutine.yield() in the task: it runs again after the
       * others, as after sleep(0); a cancellation meets it there. */
      t->resume = AR__RESUME_YIELDED;
      t->state = AR__TASK_READY;
      ar__sched_push(E, t);
    }
    return;
  }
  if (status == LUA_OK) {
    task_finish(t, nres);
    return;
  }
  run_failed(t, status);
}

/* Runs with the error object of t on top of L (moved off the dead
 * thread): closes the thread's pending <close> variables and leaves error,
 * traceback and name as t's results. Protected: it allocates. */
static int failed_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  lua_State *co = t->co;
  luaL_traceback(L, co, NULL, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_getiuservalue(L, -1, 2);
  lua_remove(L, -2);
  ar__thread_close(co, L);
  lua_settop(co, 0);
  if (!lua_checkstack(co, 3)) return luaL_error(L, "not enough memory");
  lua_xmove(L, co, 3);
  return 0;
}

/* The trampoline itself failed (out of memory recording a failure, or an
 * error in the message handler): keep what we can. */
static void run_failed(ar__task_t *t, int status) {
  ar_engine_t *E = t->E;
  lua_State *L = E->L, *co = t->co;
  (void)status;
  int top = lua_gettop(L);
  t->cancelling = 0;
  t->outcome = AR__OUT_ERROR;
  /* First arm the report, which allocates nothing: a failed task stays on
   * E->unretrieved, so its handle must keep the finalizer that unlinks it
   * whatever happens next. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, E->task_failed_ref);
  lua_setmetatable(L, -2);
  lua_settop(L, top);
  if (lua_checkstack(L, 4)) {
    lua_pushcfunction(L, failed_p);
    lua_pushlightuserdata(L, t);
    lua_xmove(co, L, 1);
    if (lua_pcall(L, 2, 0, 0) == LUA_OK) {
      lua_settop(L, top);
      task_finish(t, 3);
      return;
    }
  }
  /* Nothing can be recorded: close the thread, keep no values. Neither
   * allocates. */
  lua_settop(L, top);
  ar__thread_close(co, L);
  lua_settop(co, 0);
  task_finish(t, 0);
}

/* Ends t where it stands: its wait released, its thread closed (which
 * runs its pending <close> handlers; one that tries to wait fails, but
 * may have linked itself first: that is undone too). */
void ar__task_force_end(ar__task_t *t) {
  ar_engine_t *E = t->E;
  for (int pass = 0; pass < 2; pass++) {
    if (t->cancel != NULL) {
      ar__cancel_fn fn = t->cancel;
      t->cancel = NULL;
      (void)fn(t, t->wait_data);
    }
    ar__list_remove(&t->done.node);
    ar__timer_stop(E, &t->timer);
    if (pass == 0) ar__thread_close(t->co, E->L);
  }
  lua_settop(t->co, 0);
  t->wait_data = NULL;
  t->k = NULL;
  t->outcome = AR__OUT_CANCELLED;
  t->state = AR__TASK_WAITING; /* finish asserts it was not done */
  task_finish(t, 0);
}
