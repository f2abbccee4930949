/* async.map(fn, items, opts): fn over a list with bounded concurrency.
 *
 * Rather than a task per item (a million items would be a million tasks,
 * and gathering them a million hooks), map spawns min(concurrency, #items)
 * worker tasks. Each worker claims the next index, calls fn(item) under
 * lua_pcallk and stores the first result at the item's index, until the
 * list is exhausted. So at most `concurrency` calls are in flight, and
 * memory beyond the results table is bounded by concurrency. The caller
 * waits through one ar__done_t hook per worker, as gather does.
 *
 * Without return_exceptions, the first failure stops the map: the other
 * workers are cancelled, and the caller raises that error once every
 * worker has ended. With it, a failed item's error object is its result.
 * Cancelling the caller cancels the workers and waits for them: an item
 * that fn was handed as the cancellation came (a queue item) and returned
 * is not lost. If every item is done by then, map returns the results
 * (the cancellation is raised at the next wait); otherwise it raises
 * "cancelled" with the results so far attached (err.results). */
#include "module.h"
#include "toolkit.h"

#define MAP_MT "asyncrun.map"

typedef struct map_s map_t;

typedef struct {
  ar__done_t done;
  map_t *m;
  ar__task_t *task; /* NULL once ended (or never hooked) */
} worker_t;

struct map_s {
  ar__join_t join; /* the workers, for cycle checks */
  ar__task_t *caller;
  lua_Integer n;      /* items */
  lua_Integer next;   /* last index claimed */
  lua_Integer failed; /* index whose error is raised, 0 if none */
  int failed_worker;  /* 1 + worker that died unexpectedly, 0 if none */
  int nworkers, live;
  uint8_t return_exceptions;
  uint8_t stop;       /* claim nothing more */
  uint8_t waiting;    /* the caller is suspended on the workers */
  uint8_t cancelling; /* the caller was cancelled: waiting for the rest */
  worker_t workers[];
};

/* User values of a map: 1 fn, 2 items, 3 results, 4 worker handles. */

static void cancel_workers(map_t *m, ar__task_t *except) {
  for (int i = 0; i < m->nworkers; i++) {
    ar__task_t *t = m->workers[i].task;
    if (t != NULL && t != except) ar__task_cancel(t);
  }
}

/* ---- the worker -------------------------------------------------------- */

/* Worker stack: 1 map, 2 fn, 3 items, 4 results, then the call. */

static int worker_k(lua_State *L, int status, lua_KContext ctx);

/* Stores what fn(items[i]) left on top: its result, or its error. Raises
 * (ending the worker as cancelled) when the map is stopping and this is
 * our own cancellation. */
static void store(lua_State *L, map_t *m, int status, lua_Integer i) {
  if (status != LUA_OK && status != LUA_YIELD) {
    if (m->stop && ar__error_is(L, -1, "cancelled")) lua_error(L);
    if (!m->return_exceptions && !m->stop) {
      m->stop = 1;
      m->failed = i;
      cancel_workers(m, ar__task_current(L));
    }
    /* A failure while stopping is not raised: the first one is. */
  }
  lua_rawseti(L, 4, i);
}

/* Runs items until none is left or the map stops. A call that does not
 * yield is stored right here, so the loop never recurses. */
static int worker_loop(lua_State *L, map_t *m) {
  while (!m->stop && m->next < m->n) {
    lua_Integer i = ++m->next;
    lua_pushvalue(L, 2);
    lua_rawgeti(L, 3, i);
    store(L, m, lua_pcallk(L, 1, 1, 0, (lua_KContext)i, worker_k), i);
  }
  return 0;
}

/* fn(items[i]) yielded, then returned or raised. */
static int worker_k(lua_State *L, int status, lua_KContext ctx) {
  map_t *m = lua_touserdata(L, 1);
  store(L, m, status, (lua_Integer)ctx);
  return worker_loop(L, m);
}

static int worker_main(lua_State *L) {
  map_t *m = lua_touserdata(L, 1);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_getiuservalue(L, 1, 2);
  lua_getiuservalue(L, 1, 3);
  return worker_loop(L, m);
}

/* ---- the caller -------------------------------------------------------- */

static void worker_done_cb(ar__done_t *d, ar__task_t *finished) {
  worker_t *w = ar__container_of(d, worker_t, done);
  map_t *m = w->m;
  w->task = NULL;
  m->live--;
  if (ar__task_outcome(finished) == AR__OUT_ERROR && m->failed == 0 &&
      m->failed_worker == 0) {
    /* Out of memory inside the worker itself, say. */
    m->failed_worker = (int)(w - m->workers) + 1;
    m->stop = 1;
    cancel_workers(m, NULL);
  }
  if (m->live == 0 && m->waiting) {
    m->waiting = 0;
    ar__task_wake(m->caller, 0);
  }
}

static int map_each(ar__join_t *j, int (*fn)(ar__task_t *, void *), void *ud) {
  map_t *m = (map_t *)j;
  for (int i = 0; i < m->nworkers; i++)
    if (m->workers[i].task != NULL && fn(m->workers[i].task, ud)) return 1;
  return 0;
}

static void unwatch(map_t *m, worker_t *w) {
  ar__task_remove_done(&w->done);
  w->task = NULL;
  m->live--;
}

static int map_cancel(ar__task_t *caller, void *data) {
  map_t *m = data;
  m->stop = 1;
  if (m->cancelling) { /* again, closing by force: let go of everything */
    for (int i = 0; i < m->nworkers; i++)
      if (m->workers[i].task != NULL) unwatch(m, &m->workers[i]);
    m->waiting = 0;
    return AR__CANCEL_DONE;
  }
  m->cancelling = 1;
  for (int i = 0; i < m->nworkers; i++) {
    worker_t *w = &m->workers[i];
    if (w->task == NULL) continue;
    if (ar__join_would_cycle(caller, w->task))
      unwatch(m, w);
    else
      ar__task_cancel(w->task);
  }
  if (m->live > 0) return AR__CANCEL_WAIT;
  m->waiting = 0;
  return AR__CANCEL_DONE;
}

/* Caller stack: 1 fn, 2 items, 3 opts, 4 map. */
static int map_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  map_t *m = lua_touserdata(L, 4);
  lua_getiuservalue(L, 4, 3);
  if (m->failed) {
    lua_rawgeti(L, -1, m->failed);
    return lua_error(L);
  }
  if (m->failed_worker) {
    lua_getiuservalue(L, 4, 4);
    lua_rawgeti(L, -1, m->failed_worker);
    return ar__task_reraise(L, lua_touserdata(L, -1));
  }
  lua_pushinteger(L, m->n);
  lua_setfield(L, -2, "n");
  if (ar__task_cancelling(L)) {
    int complete = m->next >= m->n;
    for (int i = 0; i < m->nworkers && complete; i++) {
      lua_getiuservalue(L, 4, 4);
      lua_rawgeti(L, -1, i + 1);
      ar__task_t *t = lua_touserdata(L, -1);
      complete = ar__task_is_done(t) && ar__task_outcome(t) == AR__OUT_OK;
      lua_pop(L, 2);
    }
    if (!complete) {
      ar__task_push_cancelled_error(L);
      lua_pushvalue(L, -2);
      lua_setfield(L, -2, "results");
      return ar__error_throw(L);
    }
  }
  return 1;
}

static lua_Integer opt_concurrency(lua_State *L) {
  lua_Integer c = 5;
  if (lua_getfield(L, 3, "concurrency") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || (c = lua_tointeger(L, -1)) < 1)
      luaL_argerror(L, 3, "concurrency must be an integer >= 1");
  }
  lua_pop(L, 1);
  return c;
}

/* async.map(fn, items, opts) -> { fn(items[1]), ..., n = #items }
 * opts: concurrency (default 5), return_exceptions. items.n, when set,
 * counts the items (so they may contain nils). */
static int l_map(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
  } else {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  lua_Integer conc = opt_concurrency(L);
  lua_getfield(L, 3, "return_exceptions");
  int return_exceptions = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_Integer n;
  if (lua_getfield(L, 2, "n") == LUA_TNUMBER && lua_isinteger(L, -1))
    n = lua_tointeger(L, -1);
  else
    n = luaL_len(L, 2);
  lua_pop(L, 1);
  if (n < 0 || n > INT32_MAX) return luaL_argerror(L, 2, "bad item count");
  if (n == 0) {
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
    return 1;
  }
  ar__task_t *self = ar__task_check_suspendable(L, "async.map");
  int nworkers = (int)(conc < n ? conc : n);
  map_t *m =
      lua_newuserdatauv(L, sizeof *m + (size_t)nworkers * sizeof(worker_t), 4);
  m->join.each = map_each;
  m->caller = self;
  m->n = n;
  m->next = m->failed = 0;
  m->failed_worker = 0;
  m->nworkers = nworkers;
  m->live = 0;
  m->return_exceptions = (uint8_t)return_exceptions;
  /* Until every worker is spawned and hooked, a worker that starts (after
   * a spawn failed halfway) finds the map stopped and ends at once. */
  m->stop = 1;
  m->waiting = m->cancelling = 0;
  for (int i = 0; i < nworkers; i++) {
    m->workers[i].m = m;
    m->workers[i].task = NULL;
    ar__list_init(&m->workers[i].done.node);
  }
  luaL_setmetatable(L, MAP_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 4, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 4, 2);
  lua_createtable(L, (int)n, 1);
  lua_setiuservalue(L, 4, 3);
  lua_createtable(L, nworkers, 0);
  lua_setiuservalue(L, 4, 4);
  lua_getiuservalue(L, 4, 4); /* 5: worker handles */
  for (int i = 0; i < nworkers; i++) {
    lua_pushcfunction(L, worker_main);
    lua_pushvalue(L, 4);
    ar__task_spawn(L, 1);
    lua_rawseti(L, 5, i + 1);
  }
  /* Nothing below can fail. */
  for (int i = 0; i < nworkers; i++) {
    lua_rawgeti(L, 5, i + 1);
    ar__task_t *t = lua_touserdata(L, -1);
    lua_pop(L, 1);
    m->workers[i].task = t;
    ar__task_add_done(t, &m->workers[i].done, worker_done_cb);
  }
  m->live = nworkers;
  m->stop = 0;
  m->waiting = 1;
  lua_settop(L, 4);
  return ar__task_suspend_join(L, self, map_cancel, &m->join, map_k, 0);
}

void ar__map_open(lua_State *L) {
  luaL_newmetatable(L, MAP_MT);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_map);
  lua_setfield(L, -2, "map");
}
