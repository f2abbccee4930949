/* Task groups: structured concurrency in the manner of asyncio's TaskGroup
 * and Trio's nursery.
 *
 *   async.group(function(g) g:spawn(fn, ...) ... end) -> body's results
 *
 * The call returns only when the body and every child have ended. The
 * first failure (a child's or the body's) cancels the other children and
 * the body, and is raised once everything has ended, with later failures
 * attached as `others`. Cancelling the task that runs the group cancels
 * the children, waits for them, then raises "cancelled".
 *
 * Children are watched through ar__done_t hooks kept in one small userdata
 * per child (a record), stored in the group's children table (user value
 * 1) so the collector keeps it, and the child's handle (the record's user
 * value), until reaped. A hook runs as the child ends, inside the scheduler,
 * where Lua must not be touched: it only moves the record from the live list to
 * the ended list (mark), and code running in a task later reaps it (takes
 * the error of a failed child, drops the record).
 *
 * The group waits for its children in group_wait_c. Cancelling the owner
 * there cancels the children and goes on waiting for them (the cancel
 * function answers AR__CANCEL_WAIT), then raises "cancelled". The group
 * cancels its owner's body when a child fails, and withdraws that request
 * when it ends (ar__task_uncancel, as asyncio's TaskGroup does), so a
 * cancellation that came from outside meanwhile is never swallowed. */
#include "module.h"
#include "toolkit.h"

#define GROUP_MT "asyncrun.group"

enum { PHASE_BODY, PHASE_WAIT, PHASE_CLOSED };

typedef struct group_s group_t;

typedef struct {
  ar__done_t done;
  ar__list_t link; /* in g->live, then g->ended */
  group_t *g;
  ar__task_t *task;
  lua_Integer slot; /* key in the children table */
} child_t;

struct group_s {
  ar__join_t join; /* the live children, for cycle checks */
  ar__task_t *owner;
  ar__list_t live;  /* children running */
  ar__list_t ended; /* children ended, not yet reaped (oldest first) */
  lua_Integer nlive;
  lua_Integer next_slot;
  uint8_t phase;
  uint8_t failing;         /* something failed: the rest is cancelled */
  uint8_t cancelled;       /* the owner was cancelled from outside */
  uint8_t waiting;         /* the owner is suspended in group_wait_c */
  uint8_t cancelled_owner; /* we cancelled the owner's body */
  uint8_t aborting;        /* the children have been cancelled */
  uint8_t uncancelled;     /* our cancel of the body was withdrawn */
  int cancels_base;        /* the owner's requests when the group began */
  uint8_t cancelling;      /* the owner's wait is being cancelled */
};

/* User values of a group: 1 children {slot = record}, 2 errors list. */

/* Cancels the live children, once: as asyncio's TaskGroup does, a child
 * that caught its cancellation may then clean up, even waiting, without
 * being cancelled again. Children spawned afterwards are cancelled as they
 * are spawned. */
static void cancel_children(group_t *g) {
  ar__list_t *n, *next;
  if (g->aborting) return;
  g->aborting = 1;
  for (n = g->live.next; n != &g->live; n = next) {
    next =
        n->next; /* cancelling never ends a task synchronously, but be safe */
    ar__task_cancel(ar__container_of(n, child_t, link)->task);
  }
}

/* A child ended: mark its record for reaping; on the first failure cancel
 * everything else; wake the owner once the last child is gone. */
static void child_done_cb(ar__done_t *d, ar__task_t *finished) {
  child_t *c = ar__container_of(d, child_t, done);
  group_t *g = c->g;
  ar__list_remove(&c->link);
  ar__list_insert_tail(&g->ended, &c->link);
  g->nlive--;
  if (ar__task_outcome(finished) == AR__OUT_ERROR && !g->failing) {
    g->failing = 1;
    cancel_children(g);
    if (g->phase == PHASE_BODY) {
      g->cancelled_owner = 1;
      ar__task_cancel(g->owner);
    }
  }
  if (g->nlive == 0 && g->waiting) {
    g->waiting = 0;
    ar__task_wake(g->owner, 0);
  }
}

/* Appends the value on top of the stack to the errors list of the group at
 * gidx (popping it). */
static void add_error(lua_State *L, int gidx) {
  lua_getiuservalue(L, gidx, 2);
  lua_insert(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

/* Drops the records of ended children, keeping the errors of failed ones
 * (in the order they ended). Runs in a task, never in a hook. */
static void reap(lua_State *L, group_t *g, int gidx) {
  if (ar__list_empty(&g->ended)) return;
  luaL_checkstack(L, 4, NULL);
  lua_getiuservalue(L, gidx, 1);
  int children = lua_gettop(L);
  while (!ar__list_empty(&g->ended)) {
    child_t *c = ar__container_of(g->ended.next, child_t, link);
    lua_rawgeti(L, children, c->slot); /* the record keeps c alive */
    if (ar__task_outcome(c->task) == AR__OUT_ERROR) {
      ar__task_push_first(L, c->task); /* marks the error as seen */
      add_error(L, gidx);
    }
    ar__list_remove(&c->link);
    lua_pushnil(L);
    lua_rawseti(L, children, c->slot);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static group_t *check_group(lua_State *L) { return ar__check_self(L, 1); }

/* g:spawn(fn, ...) -> the child task. Any task may spawn into a group
 * while it is open; a group that is failing or cancelled cancels the new
 * child at once (it never starts). */
static int g_spawn(lua_State *L) {
  group_t *g = check_group(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (g->phase == PHASE_CLOSED)
    return ar__error_raise(L, "invalid_state",
                           "group has ended: spawn inside its function");
  reap(L, g, 1);
  int nargs = lua_gettop(L) - 2;
  /* The record first: once the child exists nothing may fail. */
  child_t *c = lua_newuserdatauv(L, sizeof *c, 1);
  lua_insert(L, 2); /* g, record, fn, args... */
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_Integer slot = ++g->next_slot;
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  ar__task_t *t = ar__task_spawn(L, nargs); /* g, record, handle */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 2, 1);
  c->g = g;
  c->task = t;
  c->slot = slot;
  ar__list_insert_tail(&g->live, &c->link);
  g->nlive++;
  ar__task_add_done(t, &c->done, child_done_cb);
  if (g->aborting) ar__task_cancel(t);
  return 1;
}

/* A record whose child could not be spawned is left in the children table
 * unlinked; reaping never sees it, and the table goes with the group. */

/* Stops watching the live children (a close by force, or a cycle): they
 * go on as plain tasks. */
static void unwatch(group_t *g, child_t *c) {
  ar__task_remove_done(&c->done);
  ar__list_remove(&c->link);
  g->nlive--;
}

static int group_each(ar__join_t *j, int (*fn)(ar__task_t *, void *),
                      void *ud) {
  group_t *g = (group_t *)j;
  for (ar__list_t *n = g->live.next; n != &g->live; n = n->next)
    if (fn(ar__container_of(n, child_t, link)->task, ud)) return 1;
  return 0;
}

static int group_cancel(ar__task_t *owner, void *data) {
  group_t *g = data;
  ar__list_t *n, *next;
  if (g->cancelling) {
    while (!ar__list_empty(&g->live))
      unwatch(g, ar__container_of(g->live.next, child_t, link));
    g->waiting = 0;
    return AR__CANCEL_DONE;
  }
  g->cancelling = 1;
  g->cancelled = 1;
  cancel_children(g);
  for (n = g->live.next; n != &g->live; n = next) {
    next = n->next;
    child_t *c = ar__container_of(n, child_t, link);
    if (ar__join_would_cycle(owner, c->task)) unwatch(g, c);
  }
  if (g->nlive > 0) return AR__CANCEL_WAIT;
  g->waiting = 0;
  return AR__CANCEL_DONE;
}

/* Called through lua_pcallk with the group as its argument: suspends until
 * no child is live. */
static int group_wait_c(lua_State *L) {
  group_t *g = lua_touserdata(L, 1);
  if (g->nlive == 0) return 0;
  ar__task_t *t = ar__task_current(L);
  g->waiting = 1;
  g->cancelling = 0;
  return ar__task_suspend_join(L, t, group_cancel, &g->join, NULL, 0);
}

/* Withdraws the group's own cancel of the body, once. Returns whether a
 * cancellation from outside is still outstanding. */
static int withdraw(group_t *g) {
  if (!g->cancelled_owner || g->uncancelled) return 0;
  g->uncancelled = 1;
  return ar__task_uncancel(g->owner, g->cancels_base) > 0;
}

/* Stack of async.group while it runs: 1 body, 2 group, 3.. the body's
 * results (or its error, dropped). */
static int group_finish(lua_State *L, group_t *g) {
  g->phase = PHASE_CLOSED;
  reap(L, g, 2);
  /* Our own cancel of the body may still be pending if the body ended
   * before it was delivered: it must not outlive the group. One from
   * outside stays, and is raised at the owner's next wait. */
  withdraw(g);
  lua_getiuservalue(L, 2, 2);
  int errors = lua_gettop(L);
  lua_Integer nerr = (lua_Integer)lua_rawlen(L, errors);
  if (nerr > 0) {
    lua_rawgeti(L, errors, 1); /* errors + 1: what is raised */
    if (nerr > 1) {
      if (lua_type(L, errors + 1) != LUA_TTABLE) {
        /* A string (say) cannot carry the others: wrap it. */
        const char *msg = luaL_tolstring(L, errors + 1, NULL);
        ar__error_push(L, "failed", "%s (and %I more error%s in the group)",
                       msg, nerr - 1, nerr > 2 ? "s" : "");
        lua_pushvalue(L, errors + 1);
        lua_setfield(L, -2, "cause");
        lua_replace(L, errors + 1);
        lua_settop(L, errors + 1);
      }
      lua_pushliteral(L, "others");
      lua_createtable(L, (int)(nerr - 1), 0);
      for (lua_Integer i = 2; i <= nerr; i++) {
        lua_rawgeti(L, errors, i);
        lua_rawseti(L, -2, i - 1);
      }
      lua_rawset(L, errors + 1);
    }
    return lua_error(L);
  }
  if (g->cancelled) return ar__task_raise_cancelled(L);
  lua_pop(L, 1);
  return lua_gettop(L) - 2;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx);

/* Waits (again) until every child has ended, then finishes. */
static int wait_loop(lua_State *L, group_t *g) {
  reap(L, g, 2);
  if (g->nlive == 0) return group_finish(L, g);
  lua_pushcfunction(L, group_wait_c);
  lua_pushvalue(L, 2);
  return wait_k(L, lua_pcallk(L, 1, 0, 0, 0, wait_k), 0);
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  group_t *g = lua_touserdata(L, 2);
  g->waiting = 0;
  if (status != LUA_OK && status != LUA_YIELD) {
    if (ar__error_is(L, -1, "cancelled")) {
      g->cancelled = 1;
      cancel_children(g);
      lua_pop(L, 1);
    } else { /* out of memory, say: a failure like any other */
      add_error(L, 2);
      g->failing = 1;
      cancel_children(g);
    }
  }
  return wait_loop(L, g);
}

static int body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  group_t *g = lua_touserdata(L, 2);
  g->phase = PHASE_WAIT;
  reap(L, g, 2); /* children's errors that came first stay first */
  if (status != LUA_OK && status != LUA_YIELD) {
    if (ar__error_is(L, -1, "cancelled")) {
      /* Ours (a child failed) or from outside: either way the rest goes.
       * It counts as from outside if someone else asked too. */
      if (!g->cancelled_owner || withdraw(g)) g->cancelled = 1;
    } else {
      lua_pushvalue(L, -1);
      add_error(L, 2);
      g->failing = 1;
    }
    cancel_children(g);
    lua_settop(L, 2);
  }
  return wait_loop(L, g);
}

/* async.group(fn) -> fn(g)'s results, once fn and every child it spawned
 * have ended. */
static int l_group(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ar__task_t *self = ar__task_check_suspendable(L, "async.group");
  lua_settop(L, 1);
  group_t *g = lua_newuserdatauv(L, sizeof *g, 2);
  g->join.each = group_each;
  g->owner = self;
  ar__list_init(&g->live);
  ar__list_init(&g->ended);
  g->nlive = g->next_slot = 0;
  g->phase = PHASE_BODY;
  g->failing = g->cancelled = g->waiting = g->cancelled_owner = 0;
  g->aborting = g->uncancelled = g->cancelling = 0;
  g->cancels_base = ar__task_cancels(self);
  luaL_setmetatable(L, GROUP_MT);
  lua_newtable(L);
  lua_setiuservalue(L, 2, 1);
  lua_newtable(L);
  lua_setiuservalue(L, 2, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  return body_k(L, lua_pcallk(L, 1, LUA_MULTRET, 0, 0, body_k), 0);
}

static int g_size(lua_State *L) {
  lua_pushinteger(L, check_group(L)->nlive);
  return 1;
}

static int g_tostring(lua_State *L) {
  group_t *g = check_group(L);
  static const char *const phases[] = {"running", "waiting", "ended"};
  lua_pushfstring(L, "group (%s, %I live)", phases[g->phase], g->nlive);
  return 1;
}

/* A group normally ends with no live child. It can be dropped with some
 * only when its own bookkeeping raised (out of memory) or its owner was
 * closed at shutdown: then the children go on as plain tasks, and their
 * hooks, which live in records this group owns, must go first. The
 * records are still there: what a finalized object reaches is kept until
 * its finalizer has run. */
static int g_gc(lua_State *L) {
  group_t *g = lua_touserdata(L, 1);
  while (!ar__list_empty(&g->live)) {
    child_t *c = ar__container_of(g->live.next, child_t, link);
    ar__task_remove_done(&c->done);
    ar__list_remove(&c->link);
  }
  g->nlive = 0;
  return 0;
}

void ar__group_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"spawn", g_spawn}, {"size", g_size}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__tostring", g_tostring}, {"__gc", g_gc}, {NULL, NULL}};
  ar__class_new(L, GROUP_MT, methods, meta);
  lua_pushcfunction(L, l_group);
  lua_setfield(L, -2, "group");
}
