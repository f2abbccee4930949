/* async.redis: a Redis client on hiredis's asynchronous API, driven by the
 * engine's own loop (docs/redis.md).
 *
 * hiredis parses and formats RESP; this file wires its sockets to libuv
 * and its callbacks to the engine's suspensions. Three records:
 *
 * - client_t, in C memory, pointed at by the Lua userdata. It owns one
 *   shared connection, on which the calls of every task are pipelined,
 *   and up to opts.pool connections for blocking commands (BLPOP,
 *   XREADGROUP ... BLOCK), each lent to one call at a time.
 * - conn_t: one redisAsyncContext at a time (NULL while down) and the
 *   handshake (AUTH, SELECT) queued ahead of any command.
 * - call_t, in C memory: one command or one pipeline. Two sides hold it:
 *   the task (until its continuation has read it, or it was cancelled)
 *   and hiredis (until every reply callback has run; a lost connection
 *   runs them with a NULL reply). The last side to let go frees it. A
 *   cancelled or timed-out call thus stays queued in hiredis and its reply
 *   is read and dropped: the connection stays in step for the others.
 *
 * hiredis's callbacks run from libuv callbacks, so they never touch Lua:
 * they keep the reply in the call record and wake the task; the
 * continuation turns it into Lua values (rule 3). hiredis 0.14 frees a
 * reply as soon as its callback returns; a callback that keeps one names
 * it in `stolen`, which the reader's freeObject (ours) then skips.
 *
 * Why not hiredis/adapters/libuv.h: it mallocs its uv_poll_t where the
 * engine cannot count it (rule 4), leaks it when uv_poll_init fails, and
 * drops a poll error on the floor (the watcher stops, the connection
 * hangs). evt_t below has the same shape with those three fixed.
 *
 * The engine is reached through engine/module.h only; per-engine state
 * (the open clients) comes from ar__module_open, closed by its hook. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "module.h"
#include "modules.h"

#define CLIENT_MT "asyncrun.redis"
#define PIPE_MT "asyncrun.redis.pipeline"

#define BACKOFF_MIN 0.05 /* seconds before the first reconnection */
#define BACKOFF_MAX 2.0
#define ARGV_STACK 16

/* ---- records ----------------------------------------------------------- */

typedef struct client_s client_t;
typedef struct conn_s conn_t;
typedef struct call_s call_t;

enum { ERR_NONE, ERR_CONN, ERR_TIMEOUT, ERR_CLOSED };

/* Our hiredis event adapter: one per redisAsyncContext. Freed in its
 * handle's close callback, which may come after the context is gone. */
typedef struct {
  uv_poll_t poll;
  ar_engine_t *E;
  redisAsyncContext *ac; /* NULL once hiredis has let go of it */
  conn_t *conn;
  int events;
} evt_t;

struct conn_s {
  client_t *c;
  redisAsyncContext *ac; /* NULL while down */
  ar__list_t node;       /* blocking ones: in c->idle, or alone while lent */
  int blocking;
  int dropping;      /* we are freeing the context ourselves */
  ar__timer_t timer; /* the connect timeout */
  char err[200];     /* why it went down last */
  redisReplyObjectFunctions fns;
};

struct call_s {
  ar__list_t node; /* in c->calls while the task side holds it */
  client_t *c;
  conn_t *conn;     /* a lent blocking connection, or NULL */
  ar__task_t *task; /* NULL once the task side let go */
  int n, got;       /* replies expected, arrived */
  int pending;      /* reply callbacks hiredis still owes */
  int err, woken;
  char msg[200];
  ar__timer_t timer; /* opts.timeout */
  redisReply *r[];   /* n replies, kept for the continuation */
};

typedef struct {
  ar__list_t clients; /* every open client of the engine */
} state_t;

struct client_s {
  ar_engine_t *E;
  state_t *st; /* NULL once closed */
  ar__list_t snode;
  char *host, *path, *user, *pass;
  int port, db;
  double connect_timeout, timeout; /* 0: none */
  int pool, nblocking;
  conn_t main;
  ar__list_t idle;         /* idle blocking connections */
  ar__list_t lent;         /* blocking connections lent to a call */
  ar__list_t pool_waiters; /* tasks waiting for a blocking connection */
  ar__list_t calls;
  double backoff;    /* seconds; 0 after a good handshake */
  uint64_t next_try; /* uv_now() before which we do not reconnect */
  int closed;
};

/* The reply a callback keeps: the reader's freeObject skips it once. */
static _Thread_local void *stolen;

static void free_object(void *reply) {
  if (reply == stolen) {
    stolen = NULL;
    return;
  }
  freeReplyObject(reply);
}

/* ---- the event adapter ------------------------------------------------- */

static void evt_close_cb(uv_handle_t *h) {
  evt_t *e = h->data;
  ar_engine_t *E = e->E;
  free(e);
  ar__handle_closed(E);
}

static void evt_poll_cb(uv_poll_t *h, int status, int events) {
  evt_t *e = h->data;
  /* On an error the watcher is stopped: let hiredis read or write and
   * find the socket's error itself, so it fails the calls it holds. */
  if (status < 0) events = e->events;
  if (e->ac != NULL && (events & UV_READABLE)) redisAsyncHandleRead(e->ac);
  if (e->ac != NULL && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);
}

static void evt_update(evt_t *e, int events) {
  e->events = events;
  if (events)
    uv_poll_start(&e->poll, events, evt_poll_cb);
  else
    uv_poll_stop(&e->poll);
}
static void evt_add_read(void *p) {
  evt_update(p, ((evt_t *)p)->events | UV_READABLE);
}
static void evt_del_read(void *p) {
  evt_update(p, ((evt_t *)p)->events & ~UV_READABLE);
}
static void evt_add_write(void *p) {
  evt_update(p, ((evt_t *)p)->events | UV_WRITABLE);
}
static void evt_del_write(void *p) {
  evt_update(p, ((evt_t *)p)->events & ~UV_WRITABLE);
}

static void conn_lost(conn_t *k, redisAsyncContext *ac);

/* hiredis is done with the context (closed by us, by an error, or by a
 * failed connect): every pending callback has already run. */
static void evt_cleanup(void *p) {
  evt_t *e = p;
  if (e->conn != NULL) conn_lost(e->conn, e->ac);
  e->ac = NULL;
  e->conn = NULL;
  uv_close((uv_handle_t *)&e->poll, evt_close_cb);
}

/* Returns 0, or -1 with nothing attached (the caller frees ac). */
static int evt_attach(ar_engine_t *E, redisAsyncContext *ac, conn_t *k) {
  evt_t *e = calloc(1, sizeof *e);
  if (e == NULL) return -1;
  if (uv_poll_init(ar_engine_loop(E), &e->poll, ac->c.fd) != 0) {
    free(e);
    return -1;
  }
  ar__handle_opened(E);
  e->poll.data = e;
  e->E = E;
  e->ac = ac;
  e->conn = k;
  ac->ev.data = e;
  ac->ev.addRead = evt_add_read;
  ac->ev.delRead = evt_del_read;
  ac->ev.addWrite = evt_add_write;
  ac->ev.delWrite = evt_del_write;
  ac->ev.cleanup = evt_cleanup;
  return 0;
}

/* ---- calls ------------------------------------------------------------- */

static void call_free(call_t *call) {
  for (int i = 0; i < call->n; i++)
    if (call->r[i] != NULL) freeReplyObject(call->r[i]);
  free(call);
}

static void call_wake(call_t *call) {
  if (call->task == NULL || call->woken) return;
  call->woken = 1;
  ar__timer_stop(call->c->E, &call->timer);
  ar__task_wake_kept(call->task, 0);
}

/* Records the call's first error (without waking: for the running task). */
static void call_set_error(call_t *call, int err, const char *msg) {
  if (call->err == ERR_NONE) {
    call->err = err;
    snprintf(call->msg, sizeof call->msg, "%s", msg);
  }
}

static void call_fail(call_t *call, int err, const char *msg) {
  call_set_error(call, err, msg);
  call_wake(call);
}

/* The task side lets go: the record is freed now or by the last reply. */
static void call_release(call_t *call) {
  ar__timer_stop(call->c->E, &call->timer);
  ar__list_remove(&call->node);
  call->task = NULL;
  if (call->pending == 0) call_free(call);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *data) {
  call_t *call = data;
  conn_t *k = ac->data;
  int i = call->got++;
  call->pending--;
  if (reply == NULL) {
    const char *why = ac->err                  ? ac->errstr
                      : k != NULL && k->err[0] ? k->err
                                               : "connection closed";
    call_fail(call, ERR_CONN, why);
  } else if (call->task != NULL && !call->woken) {
    call->r[i] = reply;
    stolen = reply;
    if (call->got == call->n) call_wake(call);
  }
  if (call->task == NULL && call->pending == 0) call_free(call);
}

static void call_timer_cb(ar__timer_t *tm) {
  call_t *call = ar__container_of(tm, call_t, timer);
  call_fail(call, ERR_TIMEOUT, "timed out");
}

/* ---- connections ------------------------------------------------------- */

static void conn_timer_cb(ar__timer_t *tm);

static void conn_init(conn_t *k, client_t *c, int blocking) {
  memset(k, 0, sizeof *k);
  k->c = c;
  k->blocking = blocking;
  ar__list_init(&k->node);
  ar__timer_init(&k->timer);
}

static void conn_lost(conn_t *k, redisAsyncContext *ac) {
  client_t *c = k->c;
  if (k->ac != ac) return;
  k->ac = NULL;
  ar__timer_stop(c->E, &k->timer);
  if (ac->err && !k->err[0]) snprintf(k->err, sizeof k->err, "%s", ac->errstr);
  if (k->dropping) return;
  /* Lost by an error: the next call may reconnect after a pause. */
  c->backoff = c->backoff == 0 ? BACKOFF_MIN : c->backoff * 2;
  if (c->backoff > BACKOFF_MAX) c->backoff = BACKOFF_MAX;
  c->next_try = uv_now(ar_engine_loop(c->E)) + (uint64_t)(c->backoff * 1000);
}

/* Frees the context now (never from inside a hiredis callback): its
 * pending calls fail with `why`. */
static void conn_drop(conn_t *k, const char *why) {
  if (k->ac == NULL) return;
  snprintf(k->err, sizeof k->err, "%s", why);
  k->dropping = 1;
  redisAsyncFree(k->ac); /* runs the callbacks, then evt_cleanup */
  k->dropping = 0;
  k->ac = NULL;
  ar__timer_stop(k->c->E, &k->timer);
}

static void connect_cb(const redisAsyncContext *ac, int status) {
  conn_t *k = ac->data;
  if (k == NULL) return;
  if (status != REDIS_OK)
    snprintf(k->err, sizeof k->err, "%s", ac->errstr);
  else if (k->c->pass == NULL && k->c->db == 0)
    ar__timer_stop(k->c->E, &k->timer);
}

/* The handshake's replies. A refusal makes the connection useless: free
 * it (deferred by hiredis until this callback returns), which fails the
 * calls queued behind with the server's reason. */
static void handshake_cb(redisAsyncContext *ac, void *reply, void *data) {
  conn_t *k = ac->data;
  redisReply *r = reply;
  int last = data != NULL;
  if (r == NULL || k == NULL) return;
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(k->err, sizeof k->err, "%s", r->str);
    redisAsyncFree(ac);
    return;
  }
  if (last) {
    ar__timer_stop(k->c->E, &k->timer);
    k->c->backoff = 0;
  }
}

static void conn_timer_cb(ar__timer_t *tm) {
  conn_t *k = ar__container_of(tm, conn_t, timer);
  if (k->ac == NULL) return;
  snprintf(k->err, sizeof k->err, "timed out connecting");
  k->dropping = 1;
  redisAsyncFree(k->ac);
  k->dropping = 0;
  k->ac = NULL;
}

/* Starts connecting k and queues the handshake, so commands can be queued
 * at once. Returns 0, or -1 with the reason in k->err. */
static int conn_start(conn_t *k) {
  client_t *c = k->c;
  redisAsyncContext *ac = c->path != NULL ? redisAsyncConnectUnix(c->path)
                                          : redisAsyncConnect(c->host, c->port);
  k->err[0] = '\0';
  if (ac == NULL) {
    snprintf(k->err, sizeof k->err, "out of memory");
    return -1;
  }
  if (ac->err) {
    snprintf(k->err, sizeof k->err, "%s", ac->errstr);
    redisAsyncFree(ac);
    goto failed;
  }
  if (evt_attach(c->E, ac, k) != 0) {
    snprintf(k->err, sizeof k->err, "cannot watch the socket");
    redisAsyncFree(ac);
    goto failed;
  }
  ac->data = k;
  k->ac = ac;
  k->fns = *ac->c.reader->fn;
  k->fns.freeObject = free_object;
  ac->c.reader->fn = &k->fns;
  redisAsyncSetConnectCallback(ac, connect_cb);
  int steps = (c->pass != NULL) + (c->db != 0);
  if (c->pass != NULL) {
    const char *argv[3] = {"AUTH", c->user, c->pass};
    size_t lens[3] = {4, c->user ? strlen(c->user) : 0, strlen(c->pass)};
    int off = c->user == NULL;
    if (off) argv[1] = "AUTH", lens[1] = 4;
    redisAsyncCommandArgv(ac, handshake_cb, --steps == 0 ? k : NULL, 3 - off,
                          argv + off, lens + off);
  }
  if (c->db != 0) redisAsyncCommand(ac, handshake_cb, k, "SELECT %d", c->db);
  if (c->connect_timeout > 0)
    ar__timer_start(c->E, &k->timer, c->connect_timeout, conn_timer_cb);
  return 0;
failed:
  c->backoff = c->backoff == 0 ? BACKOFF_MIN : c->backoff * 2;
  if (c->backoff > BACKOFF_MAX) c->backoff = BACKOFF_MAX;
  c->next_try = uv_now(ar_engine_loop(c->E)) + (uint64_t)(c->backoff * 1000);
  return -1;
}

/* A live context for k, reconnecting unless the back-off forbids it yet.
 * Returns 0, or -1 with the reason in k->err. */
static int conn_ensure(conn_t *k) {
  if (k->ac != NULL) return 0;
  client_t *c = k->c;
  uint64_t now = uv_now(ar_engine_loop(c->E));
  if (now < c->next_try) {
    char last[sizeof k->err];
    snprintf(last, sizeof last, "%s", k->err[0] ? k->err : "disconnected");
    snprintf(k->err, sizeof k->err, "%.150s (reconnecting in %d ms)", last,
             (int)(c->next_try - now));
    return -1;
  }
  return conn_start(k);
}

/* ---- the client -------------------------------------------------------- */

static int client_gc(lua_State *L);

static client_t *check_client(lua_State *L) {
  client_t **pc = luaL_checkudata(L, 1, CLIENT_MT);
  if (*pc == NULL || (*pc)->closed)
    ar__error_raise(L, "closed", "redis client is closed");
  return *pc;
}

static void blocking_free(conn_t *k) {
  conn_drop(k, "client closed");
  ar__list_remove(&k->node);
  k->c->nblocking--;
  free(k);
}

/* Fails every call and frees every connection; calls whose task still
 * holds them stay in c->calls for their continuation. */
static void client_close(client_t *c) {
  if (c->closed) return;
  c->closed = 1;
  if (c->st != NULL) ar__list_remove(&c->snode);
  c->st = NULL;
  conn_drop(&c->main, "client closed");
  while (!ar__list_empty(&c->idle))
    blocking_free(ar__container_of(c->idle.next, conn_t, node));
  while (!ar__list_empty(&c->lent))
    blocking_free(ar__container_of(c->lent.next, conn_t, node));
  ar__task_t *t;
  while ((t = ar__waiters_shift(&c->pool_waiters)) != NULL)
    ar__task_wake_kept(t, 0);
}

/* After close, and when no task can run its continuation any more (the
 * userdata is unreachable, or the engine is going away). */
static void client_free(client_t *c) {
  client_close(c);
  while (!ar__list_empty(&c->calls)) {
    call_t *call = ar__container_of(c->calls.next, call_t, node);
    call_release(call); /* pending is 0: hiredis ran every callback */
  }
  free(c->host);
  free(c->path);
  free(c->user);
  free(c->pass);
  free(c);
}

/* ---- per-engine state: the open clients, closed by the close hook when
 * the engine is freed (every task has ended; Lua is not called). Either
 * order with the clients' finalizers works: the first closes the client,
 * and only the client's own userdata frees it. */

static void state_close(ar_engine_t *E, void *data) {
  (void)E;
  state_t *st = data;
  while (!ar__list_empty(&st->clients))
    client_close(ar__container_of(st->clients.next, client_t, snode));
}

static const ar__module_t redis_module = {.name = "async.redis",
                                          .size = sizeof(state_t),
                                          .stop = NULL,
                                          .close = state_close};

static state_t *state_of(lua_State *L) {
  state_t *st = ar__module_open(ar__engine_of(L), &redis_module);
  if (st == NULL) luaL_error(L, "not enough memory");
  if (st->clients.next == NULL) ar__list_init(&st->clients); /* zeroed */
  return st;
}

/* ---- replies to Lua ---------------------------------------------------- */

/* Pushes the error object for an error reply: kind "redis", Redis's
 * message, and its code (the leading upper-case word: "ERR", "WRONGTYPE",
 * "NOSCRIPT"...) as `code`, so callers test it without string patterns. */
static void push_redis_error(lua_State *L, const redisReply *r) {
  ar__error_push(L, "redis", "%s", r->str);
  size_t n = 0;
  while (n < r->len && r->str[n] >= 'A' && r->str[n] <= 'Z')
    n++;
  if (n > 0 && (n == r->len || r->str[n] == ' ')) {
    lua_pushlstring(L, r->str, n);
    lua_setfield(L, -2, "code");
  }
}

/* Pushes r; nil elements of arrays become redis.null (upvalue-free: a
 * light userdata NULL), error elements error objects. */
static void push_reply(lua_State *L, redisReply *r, int top) {
  luaL_checkstack(L, 3, "reply too deeply nested");
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: lua_pushlstring(L, r->str, r->len); break;
  case REDIS_REPLY_INTEGER: lua_pushinteger(L, r->integer); break;
  case REDIS_REPLY_NIL:
    if (top)
      lua_pushnil(L);
    else
      lua_pushlightuserdata(L, NULL);
    break;
  case REDIS_REPLY_ERROR: push_redis_error(L, r); break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      push_reply(L, r->element[i], 0);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default: lua_pushnil(L); break;
  }
}

/* ---- commands ---------------------------------------------------------- */

static int upper_eq(const char *s, size_t len, const char *want) {
  size_t n = strlen(want);
  if (len != n) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch >= 'a' && ch <= 'z') ch -= 32;
    if (ch != want[i]) return 0;
  }
  return 1;
}

/* Whether the command at base..top may block the connection. */
static int is_blocking(lua_State *L, int base, int top) {
  static const char *const always[] = {
      "BLPOP",    "BRPOP",    "BRPOPLPUSH", "BLMOVE", "BLMPOP",
      "BZPOPMIN", "BZPOPMAX", "BZMPOP",     "WAIT",   NULL};
  size_t len;
  const char *cmd = lua_tolstring(L, base, &len);
  for (int i = 0; always[i] != NULL; i++)
    if (upper_eq(cmd, len, always[i])) return 1;
  if (upper_eq(cmd, len, "XREAD") || upper_eq(cmd, len, "XREADGROUP")) {
    for (int i = base + 1; i <= top; i++) {
      const char *a = lua_tolstring(L, i, &len);
      if (upper_eq(a, len, "BLOCK")) return 1;
      if (upper_eq(a, len, "STREAMS")) return 0;
    }
  }
  return 0;
}

/* Checks that base..top are strings or numbers (converted in place). */
static void check_args(lua_State *L, int base, int top, int argoff) {
  if (top < base) luaL_argerror(L, base - argoff, "command expected");
  for (int i = base; i <= top; i++) {
    int ty = lua_type(L, i);
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
      luaL_argerror(L, i - argoff,
                    lua_pushfstring(L, "string or number expected, got %s",
                                    luaL_typename(L, i)));
    lua_tolstring(L, i, NULL);
  }
  static const char *const unsupported[] = {"SUBSCRIBE", "PSUBSCRIBE",
                                            "SSUBSCRIBE", "MONITOR", NULL};
  size_t len;
  const char *cmd = lua_tolstring(L, base, &len);
  for (int i = 0; unsupported[i] != NULL; i++)
    if (upper_eq(cmd, len, unsupported[i]))
      luaL_argerror(L, base - argoff, "pub/sub and MONITOR are not supported");
}

/* Queues the command at base..top on k for call. Returns REDIS_OK/ERR. */
static int send_command(lua_State *L, conn_t *k, call_t *call, int base,
                        int top) {
  int argc = top - base + 1;
  const char *sv[ARGV_STACK];
  size_t sl[ARGV_STACK] = {0};
  const char **argv = sv;
  size_t *lens = sl;
  if (argc > ARGV_STACK) {
    argv = lua_newuserdatauv(L, (sizeof *argv + sizeof *lens) * argc, 0);
    lens = (size_t *)(argv + argc);
  }
  for (int i = 0; i < argc; i++)
    argv[i] = lua_tolstring(L, base + i, &lens[i]);
  int rc = redisAsyncCommandArgv(k->ac, reply_cb, call, argc, argv, lens);
  if (argc > ARGV_STACK) lua_pop(L, 1);
  if (rc == REDIS_OK) call->pending++;
  return rc;
}

static call_t *call_new(lua_State *L, client_t *c, ar__task_t *t, int n) {
  call_t *call = calloc(1, sizeof *call + sizeof(redisReply *) * n);
  if (call == NULL) luaL_error(L, "not enough memory");
  call->c = c;
  call->task = t;
  call->n = n;
  ar__timer_init(&call->timer);
  ar__list_insert_tail(&c->calls, &call->node);
  return call;
}

/* Lends a blocking connection: an idle one, a new one within the pool, or
 * NULL when the task must wait for one. */
static conn_t *blocking_take(lua_State *L, client_t *c) {
  conn_t *k;
  if (!ar__list_empty(&c->idle)) {
    k = ar__container_of(c->idle.next, conn_t, node);
  } else if (c->nblocking < c->pool) {
    k = malloc(sizeof *k);
    if (k == NULL) luaL_error(L, "not enough memory");
    conn_init(k, c, 1);
    c->nblocking++;
  } else {
    return NULL;
  }
  ar__list_remove(&k->node);
  ar__list_insert_tail(&c->lent, &k->node);
  return k;
}

/* Takes k back after its call; a connection that may still owe a reply
 * (an error, a cancelled or timed-out call) is closed instead. */
static void blocking_give(client_t *c, conn_t *k, int reuse) {
  ar__list_remove(&k->node);
  if (reuse && k->ac != NULL && !c->closed) {
    ar__list_insert_tail(&c->idle, &k->node);
  } else {
    conn_drop(k, "blocking call abandoned");
    c->nblocking--;
    free(k);
  }
  ar__task_t *t = ar__waiters_shift(&c->pool_waiters);
  if (t != NULL) ar__task_wake_kept(t, 0);
}

static int call_cancel(ar__task_t *t, void *data) {
  (void)t;
  call_t *call = data;
  conn_t *k = call->conn;
  client_t *c = call->c;
  call->conn = NULL;
  call_release(call); /* kept until hiredis drops the reply */
  if (k != NULL) blocking_give(c, k, 0);
  return AR__CANCEL_DONE;
}

/* Raises the error a finished call recorded (after releasing it). */
static int raise_call_error(lua_State *L, call_t *call) {
  const char *kind = call->err == ERR_TIMEOUT  ? "timeout"
                     : call->err == ERR_CLOSED ? "closed"
                                               : "connection";
  ar__error_push(L, kind, "redis: %s", call->msg);
  call_release(call);
  return ar__error_throw(L);
}

static int call_start(lua_State *L);

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  call_t *call = (call_t *)ctx;
  client_t *c = call->c;
  conn_t *k = call->conn;
  call->conn = NULL;
  if (k != NULL) blocking_give(c, k, call->err == ERR_NONE);
  if (call->err != ERR_NONE) return raise_call_error(L, call);
  redisReply *r = call->r[0];
  if (r->type == REDIS_REPLY_ERROR) {
    push_redis_error(L, r);
    call_release(call);
    return ar__error_throw(L);
  }
  push_reply(L, r, 1);
  call_release(call);
  return 1;
}

static int pool_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return call_start(L);
}

/* c:call(cmd, ...) with the arguments checked. */
static int call_start(lua_State *L) {
  client_t *c = check_client(L);
  ar__task_t *t = ar__task_check_current(L, "redis call");
  int top = lua_gettop(L);
  conn_t *k = &c->main;
  if (is_blocking(L, 2, top)) {
    k = blocking_take(L, c);
    if (k == NULL) {
      ar__waiters_push(&c->pool_waiters, t);
      return ar__task_suspend(L, t, ar__waiters_cancel, NULL, pool_k, 0);
    }
  }
  if (conn_ensure(k) != 0) {
    lua_pushstring(L, k->err);
    if (k->blocking) blocking_give(c, k, 0);
    return ar__error_raise(L, "connection", "redis: %s", lua_tostring(L, -1));
  }
  call_t *call = call_new(L, c, t, 1);
  call->conn = k->blocking ? k : NULL;
  if (send_command(L, k, call, 2, top) != REDIS_OK) {
    call_set_error(call, ERR_CONN, k->err[0] ? k->err : "connection closing");
    call->conn = NULL;
    if (k->blocking) blocking_give(c, k, 0);
    return raise_call_error(L, call);
  }
  if (c->timeout > 0 && !k->blocking)
    ar__timer_start(c->E, &call->timer, c->timeout, call_timer_cb);
  return ar__task_suspend(L, t, call_cancel, call, call_k, (lua_KContext)call);
}

static int c_call(lua_State *L) {
  check_client(L);
  check_args(L, 2, lua_gettop(L), 0);
  return call_start(L);
}

/* ---- pipelines --------------------------------------------------------- */

/* p:call(cmd, ...): recorded, sent when the function returns. */
static int p_call(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int top = lua_gettop(L);
  check_args(L, 2, top, 0);
  if (is_blocking(L, 2, top))
    luaL_argerror(L, 2, "blocking commands cannot be pipelined");
  lua_createtable(L, top - 1, 0);
  for (int i = 2; i <= top; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i - 1);
  }
  lua_rawseti(L, 1, (lua_Integer)lua_rawlen(L, 1) + 1);
  return 0;
}

static int pipe_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  call_t *call = (call_t *)ctx;
  if (call->err != ERR_NONE) return raise_call_error(L, call);
  lua_createtable(L, call->n, 1);
  int first_error = 0;
  for (int i = 0; i < call->n; i++) {
    push_reply(L, call->r[i], 1);
    if (call->r[i]->type == REDIS_REPLY_ERROR && first_error == 0)
      first_error = i + 1;
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, call->n);
  lua_setfield(L, -2, "n");
  call_release(call);
  if (first_error) {
    lua_rawgeti(L, -1, first_error);
    lua_pushinteger(L, first_error);
    lua_setfield(L, -2, "index");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "replies");
    return ar__error_throw(L);
  }
  return 1;
}

/* Stack: 1 client, 2 fn, 3 the recorder p. */
static int pipe_send_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  client_t *c = check_client(L);
  ar__task_t *t = ar__task_check_current(L, "redis pipeline");
  lua_settop(L, 3);
  int n = (int)lua_rawlen(L, 3);
  if (n == 0) {
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
    return 1;
  }
  conn_t *k = &c->main;
  if (conn_ensure(k) != 0)
    return ar__error_raise(L, "connection", "redis: %s", k->err);
  call_t *call = call_new(L, c, t, n);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    int base = lua_gettop(L) + 1;
    int argc = (int)lua_rawlen(L, -1);
    luaL_checkstack(L, argc, "too many arguments");
    for (int j = 1; j <= argc; j++)
      lua_rawgeti(L, base - 1, j);
    int rc = send_command(L, k, call, base, base + argc - 1);
    lua_settop(L, 3);
    if (rc != REDIS_OK) {
      /* Those already queued fail with the connection; the rest never
       * went out. */
      call_set_error(call, ERR_CONN, k->err[0] ? k->err : "connection closing");
      return raise_call_error(L, call);
    }
  }
  if (c->timeout > 0)
    ar__timer_start(c->E, &call->timer, c->timeout, call_timer_cb);
  return ar__task_suspend(L, t, call_cancel, call, pipe_done_k,
                          (lua_KContext)call);
}

/* c:pipeline(function(p) p:call(...) ... end) -> {reply, ..., n = N} */
static int c_pipeline(lua_State *L) {
  check_client(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_newtable(L);
  luaL_setmetatable(L, PIPE_MT);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_callk(L, 1, 0, 0, pipe_send_k);
  return pipe_send_k(L, LUA_OK, 0);
}

/* ---- connect, close ---------------------------------------------------- */

static char *dup_range(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* Percent-decodes s in place (user names and passwords). */
static int pct_decode(char *s) {
  char *w = s;
  for (char *p = s; *p; p++) {
    if (*p == '%') {
      int hi, lo;
      char h[3] = {p[1], p[1] ? p[2] : 0, 0};
      if (sscanf(h, "%1x%1x", &hi, &lo) != 2) return -1;
      *w++ = (char)(hi * 16 + lo);
      p += 2;
    } else {
      *w++ = *p;
    }
  }
  *w = '\0';
  return 0;
}

/* Fills c from url. Returns NULL or what is wrong. */
static const char *parse_url(client_t *c, const char *url) {
  if (strncmp(url, "unix://", 7) == 0) {
    const char *p = url + 7;
    if (*p != '/') return "unix:// needs an absolute path";
    const char *q = strchr(p, '?');
    c->path = dup_range(p, q ? (size_t)(q - p) : strlen(p));
    if (q != NULL) {
      if (strncmp(q, "?db=", 4) != 0) return "unknown parameter";
      char *end;
      long db = strtol(q + 4, &end, 10);
      if (*end || end == q + 4 || db < 0 || db > 1000000) return "bad db";
      c->db = (int)db;
    }
    return c->path ? NULL : "out of memory";
  }
  if (strncmp(url, "redis://", 8) != 0)
    return "expected redis://host:port/db or unix:///path";
  const char *p = url + 8;
  const char *slash = strchr(p, '/');
  const char *end = slash ? slash : p + strlen(p);
  const char *at = NULL;
  for (const char *s = p; s < end; s++)
    if (*s == '@') at = s;
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL) return "credentials must be user:password or :password";
    if (colon > p) c->user = dup_range(p, (size_t)(colon - p));
    c->pass = dup_range(colon + 1, (size_t)(at - colon - 1));
    if (c->pass == NULL || (colon > p && c->user == NULL))
      return "out of memory";
    if (pct_decode(c->pass) != 0 || (c->user && pct_decode(c->user) != 0))
      return "bad percent-encoding";
    p = at + 1;
  }
  const char *colon = NULL;
  for (const char *s = p; s < end; s++)
    if (*s == ':') colon = s;
  const char *hend = colon ? colon : end;
  if (hend == p) return "host expected";
  for (const char *s = p; s < hend; s++)
    if (*s == '@' || *s == ' ' || *s == '?' || *s == '#') return "bad host";
  c->host = dup_range(p, (size_t)(hend - p));
  if (c->host == NULL) return "out of memory";
  c->port = 6379;
  if (colon != NULL) {
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (e != end || e == colon + 1 || port <= 0 || port > 65535)
      return "bad port";
    c->port = (int)port;
  }
  if (slash != NULL && slash[1] != '\0') {
    char *e;
    long db = strtol(slash + 1, &e, 10);
    if (*e || db < 0 || db > 1000000) return "bad db";
    c->db = (int)db;
  }
  return NULL;
}

static double opt_number(lua_State *L, int idx, const char *name, double dflt) {
  if (lua_isnoneornil(L, idx)) return dflt;
  lua_getfield(L, idx, name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  int ok;
  double v = lua_tonumberx(L, -1, &ok);
  if (!ok || !(v >= 0))
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a number >= 0", name));
  lua_pop(L, 1);
  return v;
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  call_t *call = (call_t *)ctx;
  client_t *c = call->c;
  if (call->err != ERR_NONE) {
    ar__error_push(L, "connection", "redis: %s",
                   call->err == ERR_TIMEOUT ? "timed out connecting"
                                            : call->msg);
    call_release(call);
    client_close(c);
    return ar__error_throw(L);
  }
  redisReply *r = call->r[0];
  if (r->type == REDIS_REPLY_ERROR) {
    ar__error_push(L, "connection", "redis: %s", r->str);
    call_release(call);
    client_close(c);
    return ar__error_throw(L);
  }
  call_release(call);
  lua_settop(L, 3);
  return 1;
}

/* redis.connect(url [, opts]) -> client, once the server has answered. */
static int l_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  double connect_timeout = opt_number(L, 2, "connect_timeout", 5);
  double timeout = opt_number(L, 2, "timeout", 0);
  double pool = opt_number(L, 2, "pool", 8);
  if (pool < 1 || pool > 1024) luaL_argerror(L, 2, "pool must be in 1..1024");
  ar__task_t *t = ar__task_check_current(L, "redis.connect");
  lua_settop(L, 2);
  client_t **pc = lua_newuserdatauv(L, sizeof *pc, 0);
  *pc = NULL;
  luaL_setmetatable(L, CLIENT_MT);
  client_t *c = calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "not enough memory");
  *pc = c;
  c->E = ar__task_engine(t);
  c->connect_timeout = connect_timeout;
  c->timeout = timeout;
  c->pool = (int)pool;
  conn_init(&c->main, c, 0);
  ar__list_init(&c->snode);
  ar__list_init(&c->idle);
  ar__list_init(&c->lent);
  ar__list_init(&c->pool_waiters);
  ar__list_init(&c->calls);
  const char *bad = parse_url(c, url);
  if (bad != NULL) {
    c->closed = 1;
    return ar__error_raise(L, "invalid_url", "redis: %s: %s", bad, url);
  }
  c->st = state_of(L);
  ar__list_insert_tail(&c->st->clients, &c->snode);
  if (conn_start(&c->main) != 0) {
    lua_pushstring(L, c->main.err);
    client_close(c);
    return ar__error_raise(L, "connection", "redis: %s", lua_tostring(L, -1));
  }
  call_t *call = call_new(L, c, t, 1);
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  if (redisAsyncCommandArgv(c->main.ac, reply_cb, call, 1, argv, lens) !=
      REDIS_OK) {
    call_set_error(call, ERR_CONN, "connection closing");
    client_close(c);
    return raise_call_error(L, call);
  }
  call->pending++;
  /* The connect timeout bounds the handshake too: a server that accepts
   * and never answers does not hang connect(). */
  if (c->connect_timeout > 0)
    ar__timer_start(c->E, &call->timer, c->connect_timeout, call_timer_cb);
  return ar__task_suspend(L, t, call_cancel, call, connect_k,
                          (lua_KContext)call);
}

static int c_close(lua_State *L) {
  client_t **pc = luaL_checkudata(L, 1, CLIENT_MT);
  if (*pc != NULL) client_close(*pc);
  return 0;
}

static int client_gc(lua_State *L) {
  client_t **pc = luaL_checkudata(L, 1, CLIENT_MT);
  if (*pc != NULL) client_free(*pc);
  *pc = NULL;
  return 0;
}

static int c_tostring(lua_State *L) {
  client_t **pc = luaL_checkudata(L, 1, CLIENT_MT);
  client_t *c = *pc;
  if (c == NULL || c->closed) {
    lua_pushliteral(L, "redis client (closed)");
  } else if (c->path != NULL) {
    lua_pushfstring(L, "redis client (unix:%s)", c->path);
  } else {
    lua_pushfstring(L, "redis client (%s:%d)", c->host, c->port);
  }
  return 1;
}

/* redis.consumer_name() -> "<host>-<pid>", the distributed queue's default
 * consumer name. */
static int l_consumer_name(lua_State *L) {
  char host[256];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "host");
  host[sizeof host - 1] = '\0';
  lua_pushfstring(L, "%s-%d", host, (int)getpid());
  return 1;
}

int luaopen_async_redis(lua_State *L) {
  static const luaL_Reg methods[] = {{"call", c_call},
                                     {"pipeline", c_pipeline},
                                     {"close", c_close},
                                     {NULL, NULL}};
  luaL_newmetatable(L, CLIENT_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, client_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, c_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, c_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, PIPE_MT);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, p_call);
  lua_setfield(L, -2, "call");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_pushcfunction(L, l_consumer_name);
  lua_setfield(L, -2, "consumer_name");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
