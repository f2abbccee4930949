/* Queues: a FIFO of Lua values with an optional bound, in the manner of
 * asyncio.Queue, plus close() so consumers can stop without sentinels.
 *
 * Items live in a ring kept in the array part of a Lua table (user value 1
 * of the queue), indexed from C; the ring grows by doubling up to maxsize.
 * Waiting getters and putters are FIFO lists of tasks (linked through
 * done.node), so a put or get allocates nothing once the ring has grown.
 *
 * Invariants: getters wait only while the ring is empty, and putters only
 * while it is full. So a put with a getter waiting hands its item straight
 * to that getter (moved onto its stack, never through the ring), and a get
 * from a full ring refills it from the longest waiting putter. Both are
 * non-droppable wakes: the item (or the completed put) is delivered even if
 * the task is cancelled before it runs, and the cancellation is raised at
 * its next suspension instead. A cancelled waiter that was not yet served
 * only leaves its list. Hence a cancelled get or put loses no item and
 * duplicates none. */
#include "module.h"
#include "toolkit.h"

#define QUEUE_MT "asyncrun.queue"

/* What a woken getter or putter is woken with (ar__task_woken). */
#define Q_GOT 1    /* an item was moved onto the getter's stack */
#define Q_CLOSED 2 /* the queue was closed while it waited */

#define Q_INITIAL_CAP 16

typedef struct {
  ar__list_t getters, putters, joiners;
  lua_Integer maxsize;    /* 0: unbounded */
  lua_Integer unfinished; /* items put and not yet task_done()'d */
  lua_Integer head;       /* ring slot of the oldest item, 0-based */
  lua_Integer count;      /* items in the ring */
  lua_Integer cap;        /* slots in the ring table */
  int closed;
} queue_t;

static queue_t *check_queue(lua_State *L) { return ar__check_self(L, 1); }

static int raise_closed(lua_State *L) {
  return ar__error_raise(L, "closed", "queue is closed");
}

/* Replaces the ring (at tidx) by one twice as large (at most maxsize),
 * with the items moved to slots 1..count. Raises on memory errors before
 * anything changes. */
static void ring_grow(lua_State *L, queue_t *q, int tidx) {
  lua_Integer cap = q->cap * 2;
  if (q->maxsize > 0 && cap > q->maxsize) cap = q->maxsize;
  if (cap > INT32_MAX) luaL_error(L, "queue too large");
  lua_createtable(L, (int)cap, 0);
  for (lua_Integer i = 0, pos = q->head; i < q->count; i++) {
    lua_rawgeti(L, tidx, pos + 1);
    lua_rawseti(L, -2, i + 1);
    if (++pos == q->cap) pos = 0;
  }
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 1);
  lua_replace(L, tidx);
  q->head = 0;
  q->cap = cap;
}

/* Appends the value on top of the stack to the ring at tidx (popping it).
 * The caller has checked that the queue is not full. */
static void ring_push(lua_State *L, queue_t *q, int tidx) {
  if (q->count == q->cap) ring_grow(L, q, tidx);
  lua_Integer pos = q->head + q->count;
  if (pos >= q->cap) pos -= q->cap;
  lua_rawseti(L, tidx, pos + 1);
  q->count++;
}

/* Pushes the oldest item of the ring at tidx and clears its slot, so the
 * ring does not keep it from the collector. */
static void ring_shift(lua_State *L, queue_t *q, int tidx) {
  lua_rawgeti(L, tidx, q->head + 1);
  lua_pushnil(L);
  lua_rawseti(L, tidx, q->head + 1);
  if (++q->head == q->cap) q->head = 0;
  q->count--;
}

/* Takes the item on top of the stack (index 2, above the queue) into the
 * queue without waiting: to the longest waiting getter, else into the
 * ring. Returns 1 when taken, 0 when the queue is full (nothing changed). */
static int offer(lua_State *L, queue_t *q) {
  if (!ar__list_empty(&q->getters)) {
    /* A yielded C function's frame keeps LUA_MINSTACK free slots, so this
     * does not allocate; if it ever had to and could not, it raises here
     * with nothing changed. Handing over unlinks the getter. */
    ar__task_hand(L, ar__waiters_first(&q->getters), 1, Q_GOT);
    q->unfinished++;
    return 1;
  }
  if (q->maxsize > 0 && q->count >= q->maxsize) return 0;
  lua_getiuservalue(L, 1, 1);
  lua_insert(L, -2);
  ring_push(L, q, lua_gettop(L) - 1);
  lua_pop(L, 1);
  q->unfinished++;
  return 1;
}

/* Pushes the oldest item, which the caller knows is there; then, as room
 * was made, moves the longest waiting putter's item into the ring and lets
 * that putter go. Stack on entry: the queue alone. */
static int take(lua_State *L, queue_t *q) {
  lua_getiuservalue(L, 1, 1); /* 2: ring */
  ring_shift(L, q, 2);        /* 3: item */
  ar__task_t *w = ar__waiters_shift(&q->putters);
  if (w != NULL) {
    ar__task_take(L, w, 1); /* its item: on top of its stack as it waits */
    ring_push(L, q, 2);     /* room was just made: cannot grow */
    q->unfinished++;
    ar__task_wake_kept(w, 0);
  }
  return 1;
}

static void check_item(lua_State *L) {
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2)) luaL_argerror(L, 2, "queue items cannot be nil");
  lua_settop(L, 2);
}

static int put_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  if (ar__task_woken(L) & Q_CLOSED) return raise_closed(L);
  return 0;
}

/* q:put(item): waits while the queue is full; raises "closed" once it is
 * closed (also for a put that was waiting then). */
static int q_put(lua_State *L) {
  queue_t *q = check_queue(L);
  check_item(L);
  if (q->closed) return raise_closed(L);
  if (offer(L, q)) return 0;
  ar__task_t *t = ar__task_check_current(L, "put");
  ar__waiters_push(&q->putters, t); /* the item stays on top of our stack */
  return ar__task_suspend(L, t, ar__waiters_cancel, q, put_k, 0);
}

/* q:put_nowait(item): raises "full" instead of waiting. */
static int q_put_nowait(lua_State *L) {
  queue_t *q = check_queue(L);
  check_item(L);
  if (q->closed) return raise_closed(L);
  if (offer(L, q)) return 0;
  return ar__error_raise(L, "full", "queue is full (%I items)", q->count);
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static int get_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  if (ar__task_woken(L) & Q_GOT) return 1; /* moved on by put */
  return push_closed(L);
}

/* q:get() -> item; waits while the queue is empty. Once the queue is closed
 * and drained it returns nil, "closed". */
static int q_get(lua_State *L) {
  queue_t *q = check_queue(L);
  lua_settop(L, 1);
  if (q->count > 0) return take(L, q);
  if (q->closed) return push_closed(L);
  ar__task_t *t = ar__task_check_current(L, "get");
  ar__waiters_push(&q->getters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, q, get_k, 0);
}

/* q:get_nowait() -> item; raises "empty" instead of waiting. */
static int q_get_nowait(lua_State *L) {
  queue_t *q = check_queue(L);
  lua_settop(L, 1);
  if (q->count > 0) return take(L, q);
  if (q->closed) return push_closed(L);
  return ar__error_raise(L, "empty", "queue is empty");
}

/* q:close(): no more puts. Waiting getters get nil, "closed" (they wait
 * only when the queue is empty); waiting putters raise "closed", their
 * items not taken. Closing twice does nothing. */
static int q_close(lua_State *L) {
  queue_t *q = check_queue(L);
  ar__task_t *w;
  q->closed = 1;
  while ((w = ar__waiters_shift(&q->getters)) != NULL) {
    ar__task_wake(w, Q_CLOSED);
  }
  while ((w = ar__waiters_shift(&q->putters)) != NULL) {
    ar__task_wake(w, Q_CLOSED);
  }
  return 0;
}

/* q:task_done(): one item taken from the queue has been dealt with. */
static int q_task_done(lua_State *L) {
  queue_t *q = check_queue(L);
  if (q->unfinished <= 0)
    return ar__error_raise(L, "invalid_state",
                           "task_done() called more times than items were put");
  if (--q->unfinished == 0) {
    ar__task_t *w;
    while ((w = ar__waiters_shift(&q->joiners)) != NULL)
      ar__task_wake(w, 0);
  }
  return 0;
}

/* q:join(): waits until every item put has been task_done()'d. */
static int q_join(lua_State *L) {
  queue_t *q = check_queue(L);
  if (q->unfinished == 0) return 0;
  ar__task_t *t = ar__task_check_current(L, "join");
  ar__waiters_push(&q->joiners, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, q, NULL, 0);
}

static int q_size(lua_State *L) {
  lua_pushinteger(L, check_queue(L)->count);
  return 1;
}

static int q_empty(lua_State *L) {
  lua_pushboolean(L, check_queue(L)->count == 0);
  return 1;
}

static int q_full(lua_State *L) {
  queue_t *q = check_queue(L);
  lua_pushboolean(L, q->maxsize > 0 && q->count >= q->maxsize);
  return 1;
}

static int q_is_closed(lua_State *L) {
  lua_pushboolean(L, check_queue(L)->closed);
  return 1;
}

static int q_maxsize(lua_State *L) {
  lua_pushinteger(L, check_queue(L)->maxsize);
  return 1;
}

static int q_tostring(lua_State *L) {
  queue_t *q = check_queue(L);
  if (q->maxsize > 0)
    lua_pushfstring(L, "queue (%I/%I%s)", q->count, q->maxsize,
                    q->closed ? ", closed" : "");
  else
    lua_pushfstring(L, "queue (%I%s)", q->count, q->closed ? ", closed" : "");
  return 1;
}

/* async.queue(maxsize): maxsize an integer >= 0; 0 or nil: unbounded. */
static int l_queue(lua_State *L) {
  lua_Integer maxsize = 0;
  if (!lua_isnoneornil(L, 1)) {
    if (!lua_isinteger(L, 1)) {
      luaL_checknumber(L, 1);
      return luaL_argerror(L, 1, "maxsize must be an integer >= 0");
    }
    maxsize = lua_tointeger(L, 1);
    if (maxsize < 0)
      return luaL_argerror(L, 1, "maxsize must be an integer >= 0");
  }
  lua_Integer cap = Q_INITIAL_CAP;
  if (maxsize > 0 && maxsize < cap) cap = maxsize;
  queue_t *q = lua_newuserdatauv(L, sizeof *q, 1);
  ar__list_init(&q->getters);
  ar__list_init(&q->putters);
  ar__list_init(&q->joiners);
  q->maxsize = maxsize;
  q->unfinished = q->head = q->count = 0;
  q->cap = cap;
  q->closed = 0;
  luaL_setmetatable(L, QUEUE_MT);
  lua_createtable(L, (int)cap, 0);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

void ar__queue_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"put", q_put},
                                     {"get", q_get},
                                     {"put_nowait", q_put_nowait},
                                     {"get_nowait", q_get_nowait},
                                     {"task_done", q_task_done},
                                     {"join", q_join},
                                     {"size", q_size},
                                     {"empty", q_empty},
                                     {"full", q_full},
                                     {"close", q_close},
                                     {"is_closed", q_is_closed},
                                     {"maxsize", q_maxsize},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__tostring", q_tostring}, {"__len", q_size}, {NULL, NULL}};
  ar__class_new(L, QUEUE_MT, methods, meta);
  lua_pushcfunction(L, l_queue);
  lua_setfield(L, -2, "queue");
}
