/* Rate limiters: at most `limit` acquisitions in any sliding window of
 * `period` seconds, per limiter object.
 *
 * The limiter keeps the times of its last `limit` acquisitions in a ring
 * (uv_hrtime() nanoseconds). A new acquisition is allowed when fewer than
 * `limit` are recorded, or when the oldest of them is at least `period`
 * old: then any window of length `period` ending now holds at most
 * limit - 1 earlier ones. Tasks that must wait queue FIFO; one engine
 * timer, embedded in the limiter, fires when the oldest recorded time
 * leaves the window and grants as many waiters as the window then allows.
 * A grant is a non-droppable wake, so a granted slot is always used by its
 * acquire (a cancel arriving late is raised at the next suspension). */
#include "module.h"
#include "toolkit.h"

#define LIMITER_MT "asyncrun.rate_limiter"

typedef struct {
  ar_engine_t *E;
  ar__list_t waiters;
  ar__timer_t timer; /* armed while somebody waits */
  uint64_t period;   /* nanoseconds */
  double period_s;
  lua_Integer limit;
  lua_Integer nwait;            /* tasks in waiters */
  lua_Integer head, count, cap; /* the ring of times */
  uint64_t *stamps;             /* user value 1 owns this memory */
} limiter_t;

static limiter_t *check_limiter(lua_State *L, int idx) {
  return ar__check_self(L, idx);
}

/* Records an acquisition at `now` if the window allows it. The ring has
 * room: acquire grows it before anyone waits. */
static int try_record(limiter_t *rl, uint64_t now) {
  if (rl->count == rl->limit) {
    if (now - rl->stamps[rl->head] < rl->period) return 0;
    if (++rl->head == rl->cap) rl->head = 0;
    rl->count--;
  }
  lua_Integer pos = rl->head + rl->count;
  if (pos >= rl->cap) pos -= rl->cap;
  rl->stamps[pos] = now;
  rl->count++;
  return 1;
}

static void timer_cb(ar__timer_t *tm);

/* Arms the timer for the moment the oldest recorded time leaves the
 * window. Returns 0 or AR_ENOMEM. */
static int arm(limiter_t *rl, uint64_t now) {
  uint64_t due = rl->stamps[rl->head] + rl->period;
  double s = due > now ? (double)(due - now) / 1e9 : 0;
  return ar__timer_start(rl->E, &rl->timer, s, timer_cb);
}

static void timer_cb(ar__timer_t *tm) {
  limiter_t *rl = ar__container_of(tm, limiter_t, timer);
  uint64_t now = uv_hrtime();
  while (!ar__list_empty(&rl->waiters) && try_record(rl, now)) {
    rl->nwait--;
    ar__task_wake_kept(ar__waiters_shift(&rl->waiters), 0);
  }
  /* The timer just left the heap, so re-arming it needs no memory. */
  if (!ar__list_empty(&rl->waiters)) (void)arm(rl, now);
}

static int acquire_cancel(ar__task_t *t, void *data) {
  limiter_t *rl = data;
  ar__waiters_cancel(t, NULL);
  rl->nwait--;
  if (ar__list_empty(&rl->waiters)) ar__timer_stop(rl->E, &rl->timer);
  return AR__CANCEL_DONE;
}

/* Makes the ring large enough for every acquisition that can be recorded
 * before the next call: those recorded, those waiting, and this one (never
 * more than limit). Raises on memory errors, nothing changed. */
static void reserve(lua_State *L, limiter_t *rl, int idx) {
  lua_Integer need = rl->count + rl->nwait + 1;
  if (need > rl->limit) need = rl->limit;
  if (need <= rl->cap) return;
  lua_Integer cap = rl->cap * 2;
  if (cap < need) cap = need;
  if (cap > rl->limit) cap = rl->limit;
  uint64_t *ring = lua_newuserdatauv(L, (size_t)cap * sizeof *ring, 0);
  for (lua_Integer i = 0, pos = rl->head; i < rl->count; i++) {
    ring[i] = rl->stamps[pos];
    if (++pos == rl->cap) pos = 0;
  }
  lua_setiuservalue(L, idx, 1);
  rl->stamps = ring;
  rl->head = 0;
  rl->cap = cap;
}

/* Acquires rl (at idx) for the task on L; on success returns
 * k(L, LUA_OK, ctx), else suspends to resume in k. */
static int acquire(lua_State *L, limiter_t *rl, int idx, lua_KFunction k,
                   lua_KContext ctx) {
  reserve(L, rl, idx);
  uint64_t now = uv_hrtime();
  if (ar__list_empty(&rl->waiters) && try_record(rl, now))
    return k(L, LUA_OK, ctx);
  ar__task_t *t = ar__task_check_current(L, "acquire");
  if (!ar__timer_active(&rl->timer) && arm(rl, now) != 0)
    return luaL_error(L, "not enough memory");
  ar__waiters_push(&rl->waiters, t);
  rl->nwait++;
  return ar__task_suspend(L, t, acquire_cancel, rl, k, ctx);
}

static int none_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* rl:acquire(): waits until the window allows one more acquisition. */
static int rl_acquire(lua_State *L) {
  limiter_t *rl = check_limiter(L, 1);
  lua_settop(L, 1);
  return acquire(L, rl, 1, none_k, 0);
}

/* The function rl:wrap(fn) returns: upvalues 1 the limiter, 2 fn. */
static int wrapped_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

static int wrapped_acquired_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  int nargs = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_callk(L, nargs, LUA_MULTRET, 0, wrapped_done_k);
  return lua_gettop(L);
}

static int wrapped(lua_State *L) {
  return acquire(L, lua_touserdata(L, lua_upvalueindex(1)), lua_upvalueindex(1),
                 wrapped_acquired_k, 0);
}

/* rl:wrap(fn) -> a function that acquires, then returns fn(...). */
static int rl_wrap(lua_State *L) {
  check_limiter(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_pushcclosure(L, wrapped, 2);
  return 1;
}

static int rl_waiting(lua_State *L) {
  lua_pushinteger(L, check_limiter(L, 1)->nwait);
  return 1;
}

static int rl_tostring(lua_State *L) {
  limiter_t *rl = check_limiter(L, 1);
  lua_pushfstring(L, "rate_limiter (%I per %f s)", rl->limit, rl->period_s);
  return 1;
}

/* Waiters keep their limiter alive, so it is collected with its timer
 * stopped; this only matters when the engine is torn down mid-wait. */
static int rl_gc(lua_State *L) {
  limiter_t *rl = lua_touserdata(L, 1);
  if (rl->E != NULL) ar__timer_stop(rl->E, &rl->timer);
  return 0;
}

/* async.rate_limiter(limit, period): limit an integer >= 1, period > 0
 * seconds (default 1). */
static int l_rate_limiter(lua_State *L) {
  if (!lua_isinteger(L, 1)) {
    luaL_checknumber(L, 1);
    return luaL_argerror(L, 1, "limit must be an integer >= 1");
  }
  lua_Integer limit = lua_tointeger(L, 1);
  if (limit < 1) return luaL_argerror(L, 1, "limit must be an integer >= 1");
  lua_Number period = luaL_optnumber(L, 2, 1);
  if (!(period > 0) || period > 1e9)
    return luaL_argerror(L, 2, "period must be a number of seconds > 0");
  limiter_t *rl = lua_newuserdatauv(L, sizeof *rl, 1);
  rl->E = NULL;
  luaL_setmetatable(L, LIMITER_MT);
  ar__list_init(&rl->waiters);
  ar__timer_init(&rl->timer);
  rl->period = (uint64_t)(period * 1e9);
  if (rl->period == 0) rl->period = 1;
  rl->period_s = period;
  rl->limit = limit;
  rl->head = rl->count = rl->nwait = 0;
  rl->cap = limit < 8 ? limit : 8;
  rl->stamps = lua_newuserdatauv(L, (size_t)rl->cap * sizeof *rl->stamps, 0);
  lua_setiuservalue(L, -2, 1);
  rl->E = ar__engine_of(L);
  return 1;
}

void ar__limiter_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"acquire", rl_acquire},
                                     {"wrap", rl_wrap},
                                     {"waiting", rl_waiting},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__tostring", rl_tostring}, {"__gc", rl_gc}, {NULL, NULL}};
  ar__class_new(L, LIMITER_MT, methods, meta);
  lua_pushcfunction(L, l_rate_limiter);
  lua_setfield(L, -2, "rate_limiter");
}
