/* Semaphores, locks and events: a counter or a flag plus a FIFO of waiting
 * tasks linked through their done.node. Nothing is allocated per wait.
 *
 * A release hands its permit straight to the longest waiter instead of
 * bumping the counter, so a task arriving later cannot overtake a waiter
 * (first come, first served). The hand-over is a non-droppable wake: if
 * the waiter is cancelled after it was handed the permit but before it
 * runs, its acquire still returns (it holds the permit) and the
 * cancellation is raised at its next suspension, where a `with` block
 * releases it. A permit is never lost that way. */
#include "module.h"
#include "toolkit.h"

#define SEM_MT "asyncrun.semaphore"
#define LOCK_MT "asyncrun.lock"
#define EVENT_MT "asyncrun.event"

/* ---- semaphore and lock ------------------------------------------------ */

typedef struct {
  ar__list_t waiters;
  lua_Integer value; /* permits free; > 0 only while nobody waits */
  lua_Integer bound; /* the initial value: releasing past it is an error */
  int is_lock;
} semaphore_t;

static semaphore_t *check_sem(lua_State *L, int idx) {
  return ar__check_self(L, idx);
}

/* Takes a free permit if there is one. */
static int try_acquire(semaphore_t *s) {
  if (s->value <= 0) return 0;
  s->value--;
  return 1;
}

/* Gives one permit back: to the longest waiter, else to the counter.
 * Returns 0, or -1 (nothing changed) when no permit is out. */
static int release_one(semaphore_t *s) {
  ar__task_t *w = ar__waiters_shift(&s->waiters);
  if (w != NULL) {
    ar__task_wake_kept(w, 0);
    return 0;
  }
  if (s->value >= s->bound) return -1;
  s->value++;
  return 0;
}

static int raise_over_release(lua_State *L, semaphore_t *s) {
  return ar__error_raise(L, "invalid_state",
                         "%s released more times than it was acquired",
                         s->is_lock ? "lock" : "semaphore");
}

static int acquire_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushboolean(L, 1);
  return 1;
}

/* s:acquire() -> true, once a permit is ours. */
static int sem_acquire(lua_State *L) {
  semaphore_t *s = check_sem(L, 1);
  if (try_acquire(s)) return acquire_k(L, LUA_OK, 0);
  ar__task_t *t = ar__task_check_current(L, "acquire");
  ar__waiters_push(&s->waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, s, acquire_k, 0);
}

/* s:try_acquire() -> true when a permit was free (and is now ours). */
static int sem_try_acquire(lua_State *L) {
  lua_pushboolean(L, try_acquire(check_sem(L, 1)));
  return 1;
}

static int sem_release(lua_State *L) {
  semaphore_t *s = check_sem(L, 1);
  if (release_one(s) != 0) return raise_over_release(L, s);
  return 0;
}

/* Stack: s, fn, args..., then fn's results or its error. */
static int with_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  semaphore_t *s = lua_touserdata(L, 1);
  int failed = status != LUA_OK && status != LUA_YIELD;
  /* fn's own error wins over an over-release it caused. */
  if (release_one(s) != 0 && !failed) return raise_over_release(L, s);
  if (failed) return lua_error(L);
  return lua_gettop(L) - 1;
}

static int with_run(lua_State *L) {
  int nargs = lua_gettop(L) - 2;
  return with_done_k(L, lua_pcallk(L, nargs, LUA_MULTRET, 0, 0, with_done_k),
                     0);
}

static int with_acquired_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return with_run(L);
}

/* s:with(fn, ...) -> fn(...)'s results. The permit is released however fn
 * ends: returning, raising, or cancelled while it waits. */
static int sem_with(lua_State *L) {
  semaphore_t *s = check_sem(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (try_acquire(s)) return with_run(L);
  ar__task_t *t = ar__task_check_current(L, "with");
  ar__waiters_push(&s->waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, s, with_acquired_k, 0);
}

static int sem_locked(lua_State *L) {
  lua_pushboolean(L, check_sem(L, 1)->value <= 0);
  return 1;
}

static int sem_value(lua_State *L) {
  lua_pushinteger(L, check_sem(L, 1)->value);
  return 1;
}

static int count_waiters(const ar__list_t *l) {
  int n = 0;
  for (const ar__list_t *p = l->next; p != l; p = p->next)
    n++;
  return n;
}

static int sem_waiting(lua_State *L) {
  lua_pushinteger(L, count_waiters(&check_sem(L, 1)->waiters));
  return 1;
}

static int sem_tostring(lua_State *L) {
  semaphore_t *s = check_sem(L, 1);
  if (s->is_lock)
    lua_pushfstring(L, "lock (%s)", s->value > 0 ? "unlocked" : "locked");
  else
    lua_pushfstring(L, "semaphore (%I of %I free)", s->value, s->bound);
  return 1;
}

static void new_sem(lua_State *L, lua_Integer n, int is_lock) {
  semaphore_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  ar__list_init(&s->waiters);
  s->value = s->bound = n;
  s->is_lock = is_lock;
  luaL_setmetatable(L, is_lock ? LOCK_MT : SEM_MT);
}

/* async.semaphore(n): n permits, n an integer >= 1 (default 1). */
static int l_semaphore(lua_State *L) {
  lua_Integer n = 1;
  if (!lua_isnoneornil(L, 1)) {
    if (!lua_isinteger(L, 1)) {
      luaL_checknumber(L, 1); /* "number expected" for non-numbers */
      return luaL_argerror(L, 1, "permits must be an integer >= 1");
    }
    n = lua_tointeger(L, 1);
    if (n < 1) return luaL_argerror(L, 1, "permits must be an integer >= 1");
  }
  new_sem(L, n, 0);
  return 1;
}

/* async.lock(): a semaphore of one permit. */
static int l_lock(lua_State *L) {
  new_sem(L, 1, 1);
  return 1;
}

/* ---- event ------------------------------------------------------------- */

typedef struct {
  ar__list_t waiters;
  int set;
} event_t;

static int ev_true_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushboolean(L, 1);
  return 1;
}

/* e:set(): wakes every waiter, in the order they came. */
static int ev_set(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  ar__task_t *w;
  e->set = 1;
  while ((w = ar__waiters_shift(&e->waiters)) != NULL)
    ar__task_wake(w, 0);
  return 0;
}

static int ev_clear(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  e->set = 0;
  return 0;
}

static int ev_is_set(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  lua_pushboolean(L, e->set);
  return 1;
}

/* e:wait() -> true, once the event is set. */
static int ev_wait(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  if (e->set) return ev_true_k(L, LUA_OK, 0);
  ar__task_t *t = ar__task_check_current(L, "wait");
  ar__waiters_push(&e->waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, e, ev_true_k, 0);
}

static int ev_waiting(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  lua_pushinteger(L, count_waiters(&e->waiters));
  return 1;
}

static int ev_tostring(lua_State *L) {
  event_t *e = ar__check_self(L, 1);
  lua_pushstring(L, e->set ? "event (set)" : "event (clear)");
  return 1;
}

static int l_event(lua_State *L) {
  event_t *e = lua_newuserdatauv(L, sizeof *e, 0);
  ar__list_init(&e->waiters);
  e->set = 0;
  luaL_setmetatable(L, EVENT_MT);
  return 1;
}

/* ---- registration ------------------------------------------------------ */

void ar__sync_open(lua_State *L) {
  static const luaL_Reg sem_meta[] = {{"__tostring", sem_tostring},
                                      {NULL, NULL}};
  static const luaL_Reg ev_meta[] = {{"__tostring", ev_tostring}, {NULL, NULL}};
  static const luaL_Reg sem_methods[] = {
      {"acquire", sem_acquire}, {"try_acquire", sem_try_acquire},
      {"release", sem_release}, {"with", sem_with},
      {"locked", sem_locked},   {"value", sem_value},
      {"waiting", sem_waiting}, {NULL, NULL}};
  static const luaL_Reg ev_methods[] = {
      {"set", ev_set},   {"clear", ev_clear},     {"is_set", ev_is_set},
      {"wait", ev_wait}, {"waiting", ev_waiting}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"semaphore", l_semaphore},
                                   {"lock", l_lock},
                                   {"event", l_event},
                                   {NULL, NULL}};
  ar__class_new(L, SEM_MT, sem_methods, sem_meta);
  ar__class_new(L, LOCK_MT, sem_methods, sem_meta);
  ar__class_new(L, EVENT_MT, ev_methods, ev_meta);
  luaL_setfuncs(L, funcs, 0);
}
