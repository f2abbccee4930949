/* async.retry(fn, opts): calls fn until it returns without raising.
 *
 * In C rather than embedded Lua so that it needs no standard library (a
 * sandboxed engine may deny math or table) and waits the way sleep does:
 * on the task's own timer, through ar__task_suspend, hence cancellable.
 * Each step that may yield (fn, retry_if, on_retry, the wait) goes through
 * a continuation; a step that did not yield calls its continuation itself,
 * and every attempt after the first starts after a wait, so the C stack
 * does not grow with the number of attempts.
 *
 * Stack while it runs: 1 fn, 2 opts, 3 state, 4 retry_if, 5 on_retry,
 * then fn's results, or its error at 6. */
#include <math.h>

#include "module.h"
#include "toolkit.h"

#define BASE 5 /* slots below fn's results or error */

typedef struct {
  lua_Integer retries;
  lua_Integer attempt; /* calls made */
  double base;         /* the next wait before jitter */
  double backoff, jitter, max_delay;
  double wait;  /* the wait being announced to on_retry */
  uint64_t rng; /* xorshift64* state, for the jitter */
} retry_t;

/* Uniform in [0, 1). The jitter needs no more than this. */
static double next_random(retry_t *r) {
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  return (double)((r->rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static int attempt(lua_State *L, retry_t *r);

static void wake_timer_cb(ar__timer_t *tm) {
  ar__task_wake(ar__task_of_timer(tm), 0);
}

static int wait_cancel(ar__task_t *t, void *data) {
  (void)data;
  ar__timer_stop(ar__task_engine(t), ar__task_timer(t));
  return AR__CANCEL_DONE;
}

static int waited_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return attempt(L, lua_touserdata(L, 3));
}

/* Waits `seconds` on the task's timer, then makes the next attempt. */
static int wait_then_retry(lua_State *L, double seconds) {
  ar__task_t *t = ar__task_check_current(L, "async.retry");
  lua_settop(L, BASE);
  if (ar__timer_start(ar__task_engine(t), ar__task_timer(t), seconds,
                      wake_timer_cb) != 0)
    return luaL_error(L, "not enough memory");
  return ar__task_suspend(L, t, wait_cancel, NULL, waited_k, 0);
}

/* Raises the last error (at BASE + 1) with the number of calls on it: a
 * table gets the field `attempts`; anything else is wrapped in a "failed"
 * error whose `cause` it is. */
static int give_up(lua_State *L, retry_t *r) {
  lua_settop(L, BASE + 1);
  if (lua_type(L, BASE + 1) == LUA_TTABLE) {
    lua_pushliteral(L, "attempts");
    lua_pushinteger(L, r->attempt);
    lua_rawset(L, BASE + 1); /* no metamethod can fail us here */
    return lua_error(L);
  }
  const char *msg = luaL_tolstring(L, BASE + 1, NULL);
  ar__error_push(L, "failed", "%s (gave up after %I attempt%s)", msg,
                 r->attempt, r->attempt > 1 ? "s" : "");
  lua_pushinteger(L, r->attempt);
  lua_setfield(L, -2, "attempts");
  lua_pushvalue(L, BASE + 1);
  lua_setfield(L, -2, "cause");
  return lua_error(L);
}

static int on_retry_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  retry_t *r = lua_touserdata(L, 3);
  return wait_then_retry(L, r->wait);
}

/* fn failed with a retriable error (at BASE + 1): wait, then try again. */
static int schedule(lua_State *L, retry_t *r) {
  double wait = r->base * (1 + next_random(r) * r->jitter);
  if (wait > r->max_delay) wait = r->max_delay;
  r->base *= r->backoff;
  r->wait = wait;
  if (lua_isnil(L, 5)) return wait_then_retry(L, wait);
  lua_pushvalue(L, 5);
  lua_pushinteger(L, r->attempt);
  lua_pushvalue(L, BASE + 1);
  lua_pushnumber(L, wait);
  lua_callk(L, 3, 0, 0, on_retry_k);
  return on_retry_k(L, LUA_OK, 0);
}

static int retry_if_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  retry_t *r = lua_touserdata(L, 3);
  int again = lua_toboolean(L, -1);
  lua_settop(L, BASE + 1);
  return again ? schedule(L, r) : give_up(L, r);
}

/* After a call of fn: its results (from BASE + 1), or its error. */
static int called_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  retry_t *r = lua_touserdata(L, 3);
  if (status == LUA_OK || status == LUA_YIELD) return lua_gettop(L) - BASE;
  if (ar__error_is(L, -1, "cancelled")) return lua_error(L); /* never retried */
  if (r->attempt > r->retries) return give_up(L, r);
  if (lua_isnil(L, 4)) return schedule(L, r);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, BASE + 1);
  lua_callk(L, 1, 1, 0, retry_if_k);
  return retry_if_k(L, LUA_OK, 0);
}

static int attempt(lua_State *L, retry_t *r) {
  lua_settop(L, BASE);
  r->attempt++;
  lua_pushvalue(L, 1);
  return called_k(L, lua_pcallk(L, 0, LUA_MULTRET, 0, 0, called_k), 0);
}

/* opts[name]: a number >= min (> min when strict), or dflt when absent. */
static double opt_number(lua_State *L, const char *name, double dflt,
                         double min, int strict) {
  double v = dflt;
  int ty = lua_getfield(L, 2, name);
  if (ty != LUA_TNIL) {
    v = lua_tonumber(L, -1);
    if (ty != LUA_TNUMBER || !(strict ? v > min : v >= min)) {
      lua_pushfstring(L, "%s must be a number %s %d", name,
                      strict ? ">" : ">=", (int)min);
      luaL_argerror(L, 2, lua_tostring(L, -1));
    }
  }
  lua_pop(L, 1);
  return v;
}

static void opt_function(lua_State *L, const char *name) {
  int ty = lua_getfield(L, 2, name);
  if (ty != LUA_TNIL && ty != LUA_TFUNCTION) {
    lua_pushfstring(L, "%s must be a function", name);
    luaL_argerror(L, 2, lua_tostring(L, -1));
  }
}

/* async.retry(fn, opts) -> fn()'s results. opts: retries (3), delay (1),
 * backoff (2), jitter (0.1), max_delay (none), seed (none: from the
 * clock), retry_if, on_retry. */
static int l_retry(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
  }
  retry_t *r = lua_newuserdatauv(L, sizeof *r, 0); /* 3 */
  r->retries = 3;
  int isint = 0;
  int ty = lua_getfield(L, 2, "retries");
  if (ty != LUA_TNIL) {
    r->retries = lua_tointegerx(L, -1, &isint);
    if (ty != LUA_TNUMBER || !isint || r->retries < 0)
      luaL_argerror(L, 2, "retries must be an integer >= 0");
  }
  lua_pop(L, 1);
  r->base = opt_number(L, "delay", 1, 0, 0);
  r->backoff = opt_number(L, "backoff", 2, 0, 1);
  r->jitter = opt_number(L, "jitter", 0.1, 0, 0);
  r->max_delay = opt_number(L, "max_delay", HUGE_VAL, 0, 0);
  opt_function(L, "retry_if"); /* 4 */
  opt_function(L, "on_retry"); /* 5 */
  r->attempt = 0;
  /* opts.seed makes the jitter repeat from run to run. */
  ty = lua_getfield(L, 2, "seed");
  if (ty != LUA_TNIL) {
    lua_Integer seed = lua_tointegerx(L, -1, &isint);
    if (ty != LUA_TNUMBER || !isint)
      luaL_argerror(L, 2, "seed must be an integer");
    r->rng = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  } else {
    r->rng =
        uv_hrtime() ^ ((uint64_t)(uintptr_t)r << 16) ^ 0x9E3779B97F4A7C15ULL;
  }
  lua_pop(L, 1);
  if (r->rng == 0) r->rng = 1;
  return attempt(L, r);
}

void ar__retry_open(lua_State *L) {
  lua_pushcfunction(L, l_retry);
  lua_setfield(L, -2, "retry");
}
