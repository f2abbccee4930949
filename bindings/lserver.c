/* The HTTP server's C core: h2o (libuv flavour) on the engine's loop.
 *
 * h2o parses HTTP/1.1 and HTTP/2, keeps connections alive, handles
 * pipelining, chunked encoding, TLS and ALPN. This file owns the listener
 * and connections, turns each request h2o hands over into a C record
 * (sreq_t) queued for the server's dispatcher task, which spawns one
 * handler task per request, and answers through h2o's generator API. The
 * Lua side (lserver.lua, embedded) is what each handler task runs: it
 * routes, builds the req/res objects and calls the script's handler.
 *
 * Ownership. A server_t is C memory: its listener, its connections, its
 * h2o context (whose eight timers are uv handles) and its queued requests
 * point at it, and the "asyncrun.server" userdata does too. It is freed
 * when all of those are gone (server_check). An sreq_t has two owners:
 * h2o's request (its memory pool holds an anchor whose dispose callback
 * clears sreq->req) and its handler task, from the spawn until the task
 * ends (handler_done); it is freed when both have let go (sreq_check).
 * The task's "asyncrun.server.request" userdata keeps the task's handle
 * and looks at the sreq_t only while the task is not done.
 *
 * libuv and h2o callbacks never call Lua: they record, and wake the one
 * task waiting (the dispatcher in core.dispatch, a writer in R:write). The
 * engine contact is engine/module.h only: suspend/wake, handle counting,
 * and per-engine state whose stop hook (Ctrl-C) stops every server from
 * accepting and holds the engine's stop while requests are in flight, for
 * at most the servers' grace period, and whose close hook shuts the rest
 * down before lua_close. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2o.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lserver_lua.h" /* generated from lserver.lua */
#include "lserver_sock.h"
#include "lstream.h" /* ar__ignore_sigpipe */
#include "module.h"
#include "modules.h"

#define SERVER_MT "asyncrun.server"
#define REQUEST_MT "asyncrun.server.request"

typedef struct server_s server_t;

/* One accepted TCP connection. h2o owns the socket; we own the uv_tcp_t
 * memory and learn of its end in conn_closed_cb. */
typedef struct {
  uv_tcp_t tcp; /* first: the close callback gets the handle */
  server_t *srv;
  ar__list_t node; /* in srv->conns */
  h2o_socket_t *sock;
  int inflight;     /* requests of ours h2o has not disposed of */
  uint64_t since;   /* uv_now when it last had none in flight */
  int ended;        /* the sweep has shut it down */
  int stuck;        /* sweeps that found it waiting for a lost write */
  ar__list_t wnode; /* in srv->wdone: a write went out at once */
  int wpending;     /* in srv->wdone */
} conn_t;

/* The handler h2o calls for every request, pointing back at its server. */
typedef struct {
  h2o_handler_t super;
  server_t *srv;
} handler_t;

enum { R_NEW, R_STREAMING, R_DONE };

typedef struct {
  server_t *srv;
  h2o_req_t *req; /* NULL once h2o has disposed of the request */
  h2o_generator_t gen;
  conn_t *conn;    /* NULL for TLS connections, and once disposed of */
  ar__list_t node; /* in srv->incoming until dispatched (queued), then in
                    * srv->active until its task ends */
  uint8_t queued;
  uint8_t state;          /* R_* */
  uint8_t busy;           /* a chunk is with h2o; proceed not yet called */
  uint8_t closing;        /* its handler task is closing the server */
  uint8_t finish_pending; /* at proceed: 1 send the final chunk, 2 abort */
  char *buf;              /* the chunk in flight, while busy */
  size_t cap;
  ar__list_t waiters; /* tasks waiting in write/finish for proceed (the
                       * handler, or tasks it gave res to) */
  ar__task_t *task;   /* its handler task, until that has ended and the
                       * request is let go (release) */
  ar__done_t done;    /* on that task: handler_done */
} sreq_t;

struct server_s {
  ar_engine_t *E;
  h2o_globalconf_t conf;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept;
  SSL_CTX *ssl;
  uv_tcp_t listener;
  uv_timer_t sweep; /* the request timeout (see sweep_cb) */
  uint64_t timeout; /* milliseconds */
  uint64_t grace;   /* milliseconds: requests in flight get on Ctrl-C */
  uint8_t sweep_live;
  uint8_t conf_live;  /* conf initialized, not disposed */
  uint8_t listening;  /* listener not yet through its close callback */
  uint8_t ctx_live;   /* h2o context initialized, not disposed */
  uint8_t stopped;    /* no longer accepting */
  uint8_t lua;        /* the server userdata points at it */
  uint8_t dispatched; /* the dispatcher has seen the end (dispatch returned) */
  int closing;        /* context timers not yet through their close cb */
  int nconns, max_conns;
  size_t max_header;
  size_t nreqs; /* sreq_t alive */
  ar__list_t conns;
  ar__list_t incoming;
  ar__list_t active; /* sreq_t whose handler task runs */
  size_t nactive;
  size_t nclosing;         /* of those, handlers in srv:close() (l_closing) */
  ar__list_t idle_waiters; /* tasks in core.idle */
  ar__list_t wdone;        /* conn_t with a write callback due */
  conn_t *reading;         /* h2o is parsing what it read from it */
  ar__task_t *dispatcher;  /* waiting in core.dispatch */
  ar__list_t live;         /* in the module state's list, while in_mod */
  struct srvmod_s *mod;    /* that state (it outlives every server) */
  uint8_t in_mod;
};

/* Per-engine state: the servers, for the stop and close hooks, and the
 * grace period the stop hook holds the engine's stop for. */
typedef struct srvmod_s {
  ar__list_t servers;
  uv_timer_t grace;   /* its data is the engine */
  uint8_t grace_live; /* the timer is initialized and not closed */
  uint8_t holding;    /* ar__engine_hold taken */
} srvmod_t;

typedef struct {
  server_t *srv;
} server_box_t;

/* A request's userdata. Its user value is the handle of its handler task,
 * which keeps task valid: s is alive until that task is done. */
typedef struct {
  sreq_t *s;
  ar__task_t *task;
} request_box_t;

static void server_check(server_t *srv);
static void grace_check(struct srvmod_s *m);
static const ar__module_t server_module;

/* ---- h2o context teardown ----------------------------------------------
 *
 * h2o_context_dispose ends with a nested uv_run(UV_RUN_NOWAIT) to let its
 * timers' close callbacks run. Nested inside the engine's uv_run (we are
 * always in a callback when a server ends) that would re-enter the
 * scheduler, so this does the same work without it, closing the context's
 * timers with a counted callback instead. It follows h2o 2.2.5's
 * h2o_context_dispose field by field (Debian 12 ships exactly that). */

static h2o_timeout_t *ctx_timeout(h2o_context_t *ctx, int i) {
  switch (i) {
  case 0: return &ctx->zero_timeout;
  case 1: return &ctx->one_sec_timeout;
  case 2: return &ctx->hundred_ms_timeout;
  case 3: return &ctx->handshake_timeout;
  case 4: return &ctx->http1.req_timeout;
  case 5: return &ctx->http2.idle_timeout;
  case 6: return &ctx->http2.graceful_shutdown_timeout;
  case 7: return &ctx->proxy.io_timeout;
  default: return NULL;
  }
}
#define CTX_TIMEOUTS 8

static void ctx_timer_closed_cb(uv_handle_t *h) {
  server_t *srv = h->data;
  ar__handle_closed(srv->E);
  if (--srv->closing == 0) server_check(srv);
}

static void ctx_dispose(server_t *srv) {
  h2o_context_t *ctx = &srv->ctx;
  h2o_globalconf_t *conf = ctx->globalconf;
  for (size_t i = 0; conf->hosts[i] != NULL; ++i) {
    h2o_hostconf_t *host = conf->hosts[i];
    for (size_t j = 0; j != host->paths.size; ++j)
      h2o_context_dispose_pathconf_context(ctx, host->paths.entries + j);
    h2o_context_dispose_pathconf_context(ctx, &host->fallback_path);
  }
  free(ctx->_pathconfs_inited.entries);
  free(ctx->_module_configs);
  if (srv->sweep_live) {
    srv->sweep_live = 0;
    srv->closing++;
    uv_close((uv_handle_t *)&srv->sweep, ctx_timer_closed_cb);
  }
  for (int i = 0; i < CTX_TIMEOUTS; i++) {
    uv_timer_t *tm = &ctx_timeout(ctx, i)->_backend.timer;
    tm->data = srv;
    srv->closing++;
    uv_close((uv_handle_t *)tm, ctx_timer_closed_cb);
  }
  h2o_filecache_destroy(ctx->filecache);
  ctx->filecache = NULL;
  for (size_t i = 0; i != ctx->storage.size; ++i)
    if (ctx->storage.entries[i].dispose != NULL)
      ctx->storage.entries[i].dispose(ctx->storage.entries[i].data);
  free(ctx->storage.entries);
  h2o_multithread_unregister_receiver(ctx->queue,
                                      &ctx->receivers.hostinfo_getaddr);
  /* Closes its uv_async_t with free as the close callback. */
  h2o_multithread_destroy_queue(ctx->queue);
  if (ctx->_timestamp_cache.value != NULL)
    h2o_mem_release_shared(ctx->_timestamp_cache.value);
  srv->ctx_live = 0;
}

/* Frees what is left once nothing points at srv; disposes of the context
 * once the server is stopped and every connection is closed. */
static void server_check(server_t *srv) {
  if (srv->ctx_live && srv->stopped && !srv->listening && srv->nconns == 0)
    ctx_dispose(srv);
  if (srv->ctx_live || srv->closing > 0 || srv->listening || srv->lua ||
      srv->nreqs > 0 || srv->nconns > 0)
    return;
  if (srv->in_mod) ar__list_remove(&srv->live);
  if (srv->conf_live) h2o_config_dispose(&srv->conf);
  if (srv->ssl != NULL) SSL_CTX_free(srv->ssl);
  free(srv);
}

/* ---- requests ---------------------------------------------------------- */

static void sreq_check(sreq_t *s) {
  if (s->req != NULL || s->task != NULL || s->queued) return;
  assert(ar__list_empty(&s->waiters));
  server_t *srv = s->srv;
  free(s->buf);
  free(s);
  srv->nreqs--;
  struct srvmod_s *m = srv->mod;
  server_check(srv); /* may free srv */
  grace_check(m);
}

static void wake_all(ar__list_t *waiters) {
  ar__task_t *t;
  while ((t = ar__waiters_shift(waiters)) != NULL)
    ar__task_wake(t, 0);
}

/* Wakes every task waiting for proceed: each looks again (the first may
 * send; the others then wait again), or finds the request gone. */
static void sreq_wake(sreq_t *s) { wake_all(&s->waiters); }

/* h2o clears the request's pool: the request is over (answered, or its
 * connection died). Runs inside h2o, so it only records. */
static void anchor_dispose(void *p) {
  sreq_t *s = *(sreq_t **)p;
  if (s->conn != NULL && --s->conn->inflight == 0)
    s->conn->since = uv_now(ar_engine_loop(s->srv->E));
  s->conn = NULL;
  s->req = NULL;
  s->busy = 0;
  if (s->queued) {
    s->queued = 0;
    ar__list_remove(&s->node);
  }
  sreq_wake(s);
  sreq_check(s);
}

static void gen_proceed(h2o_generator_t *g, h2o_req_t *req) {
  sreq_t *s = ar__container_of(g, sreq_t, gen);
  s->busy = 0;
  if (s->finish_pending) {
    h2o_send_state_t st =
        s->finish_pending == 2 ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    s->finish_pending = 0;
    s->state = R_DONE;
    h2o_send(req, NULL, 0, st);
    return;
  }
  sreq_wake(s);
}

static void gen_stop(h2o_generator_t *g, h2o_req_t *req) {
  (void)req;
  sreq_t *s = ar__container_of(g, sreq_t, gen);
  s->busy = 0; /* the pool goes next: anchor_dispose does the rest */
}

static size_t header_bytes(h2o_req_t *req) {
  size_t n = req->method.len + req->path.len + 12;
  for (size_t i = 0; i != req->headers.size; ++i)
    n += req->headers.entries[i].name->len + req->headers.entries[i].value.len +
         4;
  return n;
}

static void dispatcher_wake(server_t *srv) {
  if (srv->dispatcher != NULL) {
    ar__task_t *t = srv->dispatcher;
    srv->dispatcher = NULL;
    ar__task_wake(t, 0);
  }
}

/* The connection a request came on, for plain HTTP/1 (h2o's connection
 * object is the socket's data; TLS ones are left to h2o's own timeout). */
static conn_t *conn_of(server_t *srv, h2o_req_t *req) {
  if (srv->ssl != NULL) return NULL;
  conn_t *r = srv->reading;
  if (r != NULL && r->sock->data == (void *)req->conn) return r;
  for (ar__list_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
    conn_t *c = ar__container_of(n, conn_t, node);
    if (c->sock->data == (void *)req->conn) return c;
  }
  return NULL;
}

/* Every request h2o has parsed. Queues it for the dispatcher task. */
static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  server_t *srv = ((handler_t *)self)->srv;
  conn_t *c = conn_of(srv, req);
  if (srv->max_header > 0 && header_bytes(req) > srv->max_header) {
    if (c != NULL) c->ended = 1; /* h2o closes it after the answer */
    h2o_send_error_generic(req, 431, "Request Header Fields Too Large",
                           "request header fields too large\n",
                           H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
    return 0;
  }
  if (srv->dispatched) { /* closed: nobody will run a handler */
    h2o_send_error_generic(req, 503, "Service Unavailable",
                           "server is closing\n",
                           H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
    return 0;
  }
  sreq_t *s = calloc(1, sizeof *s);
  sreq_t **anchor = s != NULL ? h2o_mem_alloc_shared(&req->pool, sizeof *anchor,
                                                     anchor_dispose)
                              : NULL;
  if (anchor == NULL) {
    free(s);
    h2o_send_error_generic(req, 503, "Service Unavailable", "out of memory\n",
                           H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
    return 0;
  }
  *anchor = s;
  s->srv = srv;
  s->conn = c;
  if (c != NULL) c->inflight++;
  s->req = req;
  s->gen.proceed = gen_proceed;
  s->gen.stop = gen_stop;
  ar__list_init(&s->waiters);
  s->queued = 1;
  srv->nreqs++;
  ar__list_insert_tail(&srv->incoming, &s->node);
  dispatcher_wake(srv);
  return 0;
}

/* ---- connections ------------------------------------------------------- */

static void conn_closed_cb(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  server_t *srv = c->srv;
  if (c->wpending) ar__list_remove(&c->wnode);
  ar__list_remove(&c->node);
  free(c);
  srv->nconns--;
  ar__handle_closed(srv->E);
  server_check(srv);
}

int ar__srv_is_conn(uv_close_cb close_cb) { return close_cb == conn_closed_cb; }

void ar__srv_reading(uv_stream_t *stream, int on) {
  conn_t *c = (conn_t *)stream;
  c->srv->reading = on ? c : NULL;
}

void ar__srv_write_later(uv_stream_t *stream) {
  conn_t *c = (conn_t *)stream;
  if (c->wpending) return;
  c->wpending = 1;
  ar__list_insert_tail(&c->srv->wdone, &c->wnode);
}

/* Runs the write callbacks of the writes that went out at once, as libuv
 * would have on the next turn of the loop; from the module's drained hook,
 * right after the engine has run the tasks that answered and before the
 * loop polls, so that h2o resumes reading before the client's next
 * request can find the connection paused (which costs a real stop and
 * start). */
static void write_flush(server_t *srv) {
  while (!ar__list_empty(&srv->wdone)) {
    conn_t *c = ar__container_of(srv->wdone.next, conn_t, wnode);
    ar__list_remove(&c->wnode);
    c->wpending = 0;
    h2o_socket_cb cb = c->sock->_cb.write;
    if (cb == NULL) continue; /* the socket was closed meanwhile */
    c->sock->_cb.write = NULL;
    cb(c->sock, NULL);
  }
}

static void conn_refused_cb(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  server_t *srv = c->srv;
  free(c);
  ar__handle_closed(srv->E);
  server_check(srv);
}

static void on_accept(uv_stream_t *l, int status) {
  server_t *srv = ar__container_of((uv_tcp_t *)l, server_t, listener);
  if (status != 0) return;
  conn_t *c = malloc(sizeof *c);
  if (c == NULL) return; /* left in the backlog; retried at the next one */
  uv_tcp_init(l->loop, &c->tcp);
  ar__handle_opened(srv->E);
  c->srv = srv;
  ar__list_init(&c->node);
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || srv->stopped ||
      srv->nconns >= srv->max_conns) {
    /* Over the limit: closing at once tells the client to come back. */
    uv_close((uv_handle_t *)&c->tcp, conn_refused_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  ar__list_insert_tail(&srv->conns, &c->node);
  srv->nconns++;
  c->inflight = 0;
  c->ended = 0;
  c->stuck = 0;
  c->wpending = 0;
  c->since = uv_now(l->loop);
  c->sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed_cb);
  h2o_accept(&srv->accept, c->sock);
}

/* The request timeout, for plain HTTP/1 connections. h2o 2.2 only closes a
 * connection whose request is late, silently; this answers 408 first. A
 * connection with no request in flight for longer than the timeout is
 * either idle (nothing received: closed, as keep-alive ends) or stalled
 * mid-request (bytes waiting in h2o's buffer: 408, then closed). Both are
 * ended by shutting the socket down under h2o, which then reads the end of
 * the stream and closes it in its own way. The 408 is written straight to
 * the socket: h2o has nothing to write on a connection in this state. */
/* h2o 2.2's libuv binding ignores uv_write's result. After a read error
 * (a peer that reset the connection) libuv refuses writes with UV_EPIPE and
 * no callback, so h2o, closing a TLS connection with a close_notify, would
 * wait for that callback forever and the connection would never close.
 * Seen twice in a row (a real write in flight has bytes queued or a
 * writable stream), the failure h2o waits for is delivered here. */
static int lost_write(conn_t *c) {
  if (!h2o_socket_is_writing(c->sock) ||
      uv_is_writable((uv_stream_t *)&c->tcp) || c->tcp.write_queue_size > 0) {
    c->stuck = 0;
    return 0;
  }
  if (++c->stuck >= 2) {
    h2o_socket_cb cb = c->sock->_cb.write;
    c->sock->_cb.write = NULL;
    cb(c->sock, h2o_socket_error_io); /* closes it; conn_closed_cb follows */
  }
  return 1;
}

static void sweep_cb(uv_timer_t *tm) {
  static const char resp[] = "HTTP/1.1 408 Request Timeout\r\n"
                             "Content-Type: text/plain; charset=utf-8\r\n"
                             "Connection: close\r\n"
                             "Content-Length: 16\r\n"
                             "\r\n"
                             "request timeout\n";
  server_t *srv = tm->data;
  uint64_t now = uv_now(tm->loop);
  for (ar__list_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
    conn_t *c = ar__container_of(n, conn_t, node);
    uv_os_fd_t fd;
    /* TLS connections keep h2o's own timeouts: their requests are not
     * counted in `inflight`, and raw bytes would break the session. */
    if (lost_write(c) || srv->ssl != NULL) continue;
    if (c->ended || c->inflight > 0 || now - c->since < srv->timeout ||
        h2o_socket_is_writing(c->sock) ||
        uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
      continue;
    c->ended = 1;
    if (c->sock->input->size > 0) {
      ssize_t w = send(fd, resp, sizeof resp - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w; /* a client that cannot take 100 bytes just sees the close */
      shutdown(fd, SHUT_RDWR);
    } else {
      shutdown(fd, SHUT_RD);
    }
  }
}

static void listener_closed_cb(uv_handle_t *h) {
  server_t *srv = ar__container_of((uv_tcp_t *)h, server_t, listener);
  srv->listening = 0;
  ar__handle_closed(srv->E);
  server_check(srv);
}

/* Stops accepting. Connections waiting for a request are ended by shutting
 * down their read side: h2o reads end-of-stream and closes them; one whose
 * request is being handled has stopped reading, answers, and closes
 * (h2o ends keep-alive once a shutdown is requested). TLS connections are
 * left to h2o (HTTP/2 sends GOAWAY) unless `hard`, which shuts down both
 * directions of every connection (the engine is going away). */
static void server_stop(server_t *srv, int hard) {
  if (!srv->stopped) {
    srv->stopped = 1;
    if (srv->listening)
      uv_close((uv_handle_t *)&srv->listener, listener_closed_cb);
    if (srv->ctx_live) h2o_context_request_shutdown(&srv->ctx);
    dispatcher_wake(srv);
  }
  /* Tearing down: sweep often, so a lost write is found quickly. */
  if (hard && srv->sweep_live) uv_timer_start(&srv->sweep, sweep_cb, 10, 10);
  for (ar__list_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
    conn_t *c = ar__container_of(n, conn_t, node);
    uv_os_fd_t fd;
    if ((hard || srv->ssl == NULL) &&
        uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
      shutdown(fd, hard ? SHUT_RDWR : SHUT_RD);
  }
}

/* ---- Lua: the server --------------------------------------------------- */

/* Answers every queued request 503: nothing will dispatch them. */
static void abandon(server_t *srv) {
  srv->dispatched = 1;
  while (!ar__list_empty(&srv->incoming)) {
    sreq_t *s = ar__container_of(srv->incoming.next, sreq_t, node);
    ar__list_remove(&s->node);
    s->queued = 0;
    s->state = R_DONE;
    h2o_req_t *req = s->req;
    sreq_check(s); /* freed when h2o disposes of the request */
    h2o_send_error_generic(req, 503, "Service Unavailable",
                           "server is closing\n",
                           H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
  }
}

/* Every Lua-facing function of the module is a closure over its two
 * metatables, so an argument is checked by comparing metatables rather
 * than by looking a name up in the registry (five checks per request). */
#define SERVER_MT_UV lua_upvalueindex(1)
#define REQUEST_MT_UV lua_upvalueindex(2)

static void *check_box(lua_State *L, int idx, int mt, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, mt))
    luaL_typeerror(L, idx, tname);
  lua_pop(L, 1);
  return p;
}

static server_t *check_server(lua_State *L, int idx) {
  server_box_t *b = check_box(L, idx, SERVER_MT_UV, SERVER_MT);
  if (b->srv == NULL) luaL_argerror(L, idx, "server is gone");
  return b->srv;
}

static lua_Integer opt_int(lua_State *L, int opts, const char *name,
                           lua_Integer def, lua_Integer min) {
  lua_getfield(L, opts, name);
  lua_Integer v = luaL_optinteger(L, -1, def);
  lua_pop(L, 1);
  if (v < min)
    luaL_error(L, "bad option '%s' to 'serve' (at least %d expected)", name,
               (int)min);
  return v;
}

static int tls_fail(lua_State *L, server_t *srv, const char *what,
                    const char *file) {
  unsigned long e = ERR_get_error();
  char msg[256];
  ERR_error_string_n(e, msg, sizeof msg);
  ERR_clear_error();
  ar__error_push(L, "tls", "cannot load TLS %s '%s': %s", what, file, msg);
  srv->stopped = 1; /* nothing else was started */
  server_check(srv);
  return lua_error(L);
}

/* core.listen(host, port, opts) -> server, port. opts (all optional):
 * max_body, max_header, timeout (seconds), max_connections, cert, key. */
static int l_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  lua_Integer max_body = opt_int(L, 3, "max_body", 8 << 20, 0);
  lua_Integer max_header = opt_int(L, 3, "max_header", 8192, 256);
  lua_Integer max_conns = opt_int(L, 3, "max_connections", 1024, 1);
  lua_getfield(L, 3, "timeout");
  lua_Number timeout = luaL_optnumber(L, -1, 10);
  lua_pop(L, 1);
  luaL_argcheck(L, timeout > 0 && timeout <= 86400, 3, "bad timeout");
  lua_getfield(L, 3, "grace");
  lua_Number grace = luaL_optnumber(L, -1, 5);
  lua_pop(L, 1);
  luaL_argcheck(L, grace >= 0 && grace <= 86400, 3, "bad grace");
  lua_getfield(L, 3, "cert");
  const char *cert = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 3, "key");
  const char *key = luaL_optstring(L, -1, NULL);
  luaL_argcheck(L, (cert == NULL) == (key == NULL), 3,
                "tls needs both cert and key");

  struct sockaddr_storage sa;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&sa) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&sa) != 0)
    return luaL_argerror(L, 1, "not a numeric IPv4 or IPv6 address");

  server_box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->srv = NULL;
  lua_pushvalue(L, SERVER_MT_UV);
  lua_setmetatable(L, -2);
  server_t *srv = calloc(1, sizeof *srv);
  if (srv == NULL) return luaL_error(L, "not enough memory");
  srv->E = ar__engine_of(L);
  srvmod_t *mod = ar__module_open(srv->E, &server_module);
  if (mod == NULL) {
    free(srv);
    return luaL_error(L, "not enough memory");
  }
  if (mod->servers.next == NULL) ar__list_init(&mod->servers);
  /* A client that went away must be EPIPE ("closed"), not the end of the
   * process: h2o writes with uv_write and so do we. */
  ar__ignore_sigpipe();
  srv->mod = mod;
  srv->max_conns = (int)(max_conns > 1000000 ? 1000000 : max_conns);
  srv->max_header = (size_t)max_header;
  ar__list_init(&srv->conns);
  ar__list_init(&srv->incoming);
  ar__list_init(&srv->active);
  ar__list_init(&srv->idle_waiters);
  ar__list_init(&srv->wdone);
  box->srv = srv;
  srv->lua = 1;
  ar__list_insert_tail(&mod->servers, &srv->live);
  srv->in_mod = 1;

  h2o_config_init(&srv->conf);
  srv->conf_live = 1;
  /* No Server header unless a handler sets one (as Node does): h2o would
   * format it with a sprintf per response. */
  srv->conf.server_name = h2o_iovec_init("", 0);
  srv->conf.max_request_entity_size = (size_t)max_body;
  /* h2o's own timeout is a backstop (and TLS connections' timeout): the
   * sweep ends plain connections first, with a 408. */
  srv->timeout = (uint64_t)(timeout * 1000);
  srv->grace = (uint64_t)(grace * 1000);
  srv->conf.http1.req_timeout = srv->timeout * 2 + 1000;
  srv->conf.http2.idle_timeout = (uint64_t)(timeout * 1000);
  h2o_hostconf_t *hc = h2o_config_register_host(
      &srv->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
  handler_t *h = (handler_t *)h2o_create_handler(pc, sizeof *h);
  h->super.on_req = on_req;
  h->srv = srv;

  if (cert != NULL) {
    srv->ssl = SSL_CTX_new(TLS_server_method());
    if (srv->ssl == NULL) return tls_fail(L, srv, "context", "-");
    SSL_CTX_set_min_proto_version(srv->ssl, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(srv->ssl, cert) != 1)
      return tls_fail(L, srv, "certificate", cert);
    if (SSL_CTX_use_PrivateKey_file(srv->ssl, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(srv->ssl) != 1)
      return tls_fail(L, srv, "key", key);
    h2o_ssl_register_alpn_protocols(srv->ssl, h2o_http2_alpn_protocols);
  }

  uv_loop_t *loop = ar_engine_loop(srv->E);
  uv_tcp_init(loop, &srv->listener);
  ar__handle_opened(srv->E);
  srv->listening = 1;
  int rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&sa, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_accept);
  if (rc != 0) {
    server_stop(srv, 1);
    return ar__error_raise(L, "server", "cannot listen on %s:%d: %s", host,
                           (int)port, uv_strerror(rc));
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
  int bport = ntohs(bound.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&bound)->sin6_port
                        : ((struct sockaddr_in *)&bound)->sin_port);

  h2o_context_init(&srv->ctx, loop, &srv->conf);
  srv->ctx_live = 1;
  uv_timer_init(loop, &srv->sweep);
  ar__handle_opened(srv->E);
  srv->sweep.data = srv;
  srv->sweep_live = 1;
  uint64_t period = srv->timeout / 8;
  period = period < 25 ? 25 : period > 1000 ? 1000 : period;
  uv_timer_start(&srv->sweep, sweep_cb, period, period);
  for (int i = 0; i < CTX_TIMEOUTS; i++)
    ar__handle_opened(srv->E);
  srv->accept.ctx = &srv->ctx;
  srv->accept.hosts = srv->conf.hosts;
  srv->accept.ssl_ctx = srv->ssl;
  lua_pushinteger(L, bport);
  return 2;
}

static int dispatcher_cancel(ar__task_t *t, void *data) {
  (void)t;
  ((server_t *)data)->dispatcher = NULL;
  return AR__CANCEL_DONE;
}

/* Ends the Lua side of a request (its handler task has ended): an
 * unanswered request gets a 503 (its handler was cancelled or failed); a
 * stream still open is aborted (HTTP/1.1: a broken chunk, then the
 * connection is closed), so the client can tell that it was cut short. */
static void release(sreq_t *s) {
  if (s->req != NULL) {
    if (s->state == R_NEW) {
      s->state = R_DONE;
      h2o_send_error_generic(s->req, 503, "Service Unavailable",
                             "the request was cancelled\n",
                             H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
    } else if (s->state == R_STREAMING) {
      if (s->busy) {
        s->finish_pending = 2;
      } else {
        s->state = R_DONE;
        h2o_send(s->req, NULL, 0, H2O_SEND_STATE_ERROR);
      }
    }
  }
  sreq_wake(s);   /* they find the request released */
  s->task = NULL; /* last: sreq_check may free s from here on */
  sreq_check(s);
}

/* The handler task ended, however (returned, failed, cancelled before it
 * started). Its request userdata, if still alive, sees the task done and
 * no longer looks at s. */
static void handler_done(ar__done_t *d, ar__task_t *t) {
  (void)t;
  sreq_t *s = ar__container_of(d, sreq_t, done);
  server_t *srv = s->srv;
  ar__list_remove(&s->node);
  srv->nactive--;
  if (s->closing) srv->nclosing--;
  if (srv->nactive <= srv->nclosing) /* idle_k checks again */
    wake_all(&srv->idle_waiters);
  release(s); /* may free s, then srv */
}

/* Spawns run(srv, R, method, path, query) for the first queued request;
 * run and srv are at 2 and 3. */
static void spawn_handler(lua_State *L, server_t *srv) {
  sreq_t *s = ar__container_of(srv->incoming.next, sreq_t, node);
  h2o_req_t *req = s->req; /* queued requests are live */
  luaL_checkstack(L, 9, NULL);
  request_box_t *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->s = NULL;
  b->task = NULL;
  lua_pushvalue(L, REQUEST_MT_UV);
  lua_setmetatable(L, -2);
  int box = lua_gettop(L);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, box);
  lua_pushlstring(L, req->method.base, req->method.len);
  lua_pushlstring(L, req->path_normalized.base, req->path_normalized.len);
  if (req->query_at != SIZE_MAX)
    lua_pushlstring(L, req->path.base + req->query_at + 1,
                    req->path.len - req->query_at - 1);
  else
    lua_pushnil(L);
  ar__task_t *t = ar__task_spawn(L, 5);
  lua_setiuservalue(L, box, 1); /* the handle */
  lua_pop(L, 1);
  /* Nothing raises from here on. */
  ar__list_remove(&s->node);
  s->queued = 0;
  s->task = t;
  b->s = s;
  b->task = t;
  ar__list_insert_tail(&srv->active, &s->node);
  srv->nactive++;
  ar__task_add_done(t, &s->done, handler_done);
}

/* core.dispatch(server, run, srv): the dispatcher task's life. Spawns a
 * handler task for every request, as they come; returns once the server
 * has stopped and the queue is empty. */
static int dispatch_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  server_t *srv = check_server(L, 1);
  while (!ar__list_empty(&srv->incoming))
    spawn_handler(L, srv);
  if (srv->stopped) {
    srv->dispatched = 1;
    return 0;
  }
  ar__task_t *t = ar__task_check_current(L, "server dispatch");
  assert(srv->dispatcher == NULL);
  srv->dispatcher = t;
  return ar__task_suspend(L, t, dispatcher_cancel, srv, dispatch_k, 0);
}

static int l_dispatch(lua_State *L) {
  check_server(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  return dispatch_k(L, LUA_OK, 0);
}

/* Handler tasks that called close on their own server are left out of
 * what close waits for and cancels: waiting for one of them would wait
 * for the close itself. */

/* core.closing(server, task): task is closing the server; if it is one of
 * its handlers, it is no longer waited for. */
static int l_closing(lua_State *L) {
  server_t *srv = check_server(L, 1);
  ar__task_t *t = ar__task_check(L, 2);
  for (ar__list_t *n = srv->active.next; n != &srv->active; n = n->next) {
    sreq_t *s = ar__container_of(n, sreq_t, node);
    if (s->task == t && !s->closing) {
      s->closing = 1;
      srv->nclosing++;
      wake_all(&srv->idle_waiters); /* they look again */
    }
  }
  return 0;
}

/* core.idle(server): waits until every handler task still running is
 * one that is closing the server. */
static int idle_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  server_t *srv = check_server(L, 1);
  if (srv->nactive <= srv->nclosing) return 0;
  ar__task_t *t = ar__task_check_current(L, "server close");
  ar__waiters_push(&srv->idle_waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, NULL, idle_k, 0);
}

static int l_idle(lua_State *L) { return idle_k(L, LUA_OK, 0); }

/* core.cancel(server): cancels every handler task still running but those
 * closing the server. */
static int l_cancel(lua_State *L) {
  server_t *srv = check_server(L, 1);
  for (ar__list_t *n = srv->active.next; n != &srv->active; n = n->next) {
    sreq_t *s = ar__container_of(n, sreq_t, node);
    if (!s->closing) ar__task_cancel(s->task);
  }
  return 0;
}

/* core.stop(server [, abandon]): stops accepting (see server_stop). With
 * abandon, no handler will run any more: queued requests and any that
 * still arrive are answered 503. */
static int l_stop(lua_State *L) {
  server_t *srv = check_server(L, 1);
  server_stop(srv, 0);
  if (lua_toboolean(L, 2)) abandon(srv);
  return 0;
}

/* core.info(server) -> open connections, requests alive, stopped,
 * handler tasks running. */
static int l_info(lua_State *L) {
  server_t *srv = check_server(L, 1);
  lua_pushinteger(L, srv->nconns);
  lua_pushinteger(L, (lua_Integer)srv->nreqs);
  lua_pushboolean(L, srv->stopped);
  lua_pushinteger(L, (lua_Integer)srv->nactive);
  return 4;
}

static int server_gc(lua_State *L) {
  server_box_t *b = check_box(L, 1, SERVER_MT_UV, SERVER_MT);
  server_t *srv = b->srv;
  if (srv == NULL) return 0;
  b->srv = NULL;
  srv->lua = 0;
  if (srv->dispatcher != NULL) srv->dispatcher = NULL;
  server_stop(srv, 1);
  abandon(srv);
  server_check(srv);
  return 0;
}

/* ---- the engine's stop and close hooks ---------------------------------- */

static void grace_release(ar_engine_t *E, srvmod_t *m) {
  if (!m->holding) return;
  m->holding = 0;
  uv_timer_stop(&m->grace);
  ar__engine_release(E);
}

/* The grace period is over: the engine cancels the handlers with the rest
 * of the tasks. */
static void grace_timer_cb(uv_timer_t *tm) {
  ar_engine_t *E = tm->data;
  grace_release(E, ar__module_state(E, &server_module));
}

/* A request ended: the last one in flight ends the grace period early. */
static void grace_check(srvmod_t *m) {
  if (!m->holding) return;
  for (ar__list_t *n = m->servers.next; n != &m->servers; n = n->next)
    if (ar__container_of(n, server_t, live)->nreqs > 0) return;
  grace_release(m->grace.data, m);
}

/* The engine is asked to stop (Ctrl-C, the run's end): every server stops
 * accepting, as srv:close does. While requests are in flight the engine's
 * stop is held, so their handlers may finish, for at most the longest
 * grace among the servers that have some; then the engine cancels every
 * task, handlers included (their clients get a 503 if nothing was sent). */
static void mod_stop(ar_engine_t *E, void *state) {
  srvmod_t *m = state;
  uint64_t grace = 0;
  int busy = 0;
  for (ar__list_t *n = m->servers.next; n != &m->servers; n = n->next) {
    server_t *srv = ar__container_of(n, server_t, live);
    server_stop(srv, 0);
    if (srv->nreqs > 0) {
      busy = 1;
      if (srv->grace > grace) grace = srv->grace;
    }
  }
  if (!busy || grace == 0 || m->holding) return;
  if (!m->grace_live) {
    uv_timer_init(ar_engine_loop(E), &m->grace);
    ar__handle_opened(E);
    m->grace.data = E;
    m->grace_live = 1;
  }
  m->holding = 1;
  ar__engine_hold(E);
  uv_timer_start(&m->grace, grace_timer_cb, grace, 0);
}

/* The engine is being freed, every task has ended: connections are shut
 * down hard and requests nobody will handle answered, so that they close
 * while the engine runs its loop for the last close callbacks. The
 * servers leave the state, which goes away after this. */
static void mod_close(ar_engine_t *E, void *state) {
  srvmod_t *m = state;
  grace_release(E, m);
  if (m->grace_live) {
    m->grace_live = 0;
    uv_close((uv_handle_t *)&m->grace, ar__handle_close_cb);
  }
  while (!ar__list_empty(&m->servers)) {
    server_t *srv = ar__container_of(m->servers.next, server_t, live);
    ar__list_remove(&srv->live);
    srv->in_mod = 0;
    srv->dispatcher = NULL;
    server_stop(srv, 1);
    abandon(srv);
  }
}

/* The writes of the tasks that just ran. */
static void mod_drained(ar_engine_t *E, void *state) {
  (void)E;
  srvmod_t *m = state;
  for (ar__list_t *n = m->servers.next; n != &m->servers; n = n->next) {
    server_t *srv = ar__container_of(n, server_t, live);
    if (!ar__list_empty(&srv->wdone)) write_flush(srv);
  }
}

static const ar__module_t server_module = {
    "async.http server", sizeof(srvmod_t), mod_stop, mod_close, mod_drained};

/* ---- Lua: a request and its response ----------------------------------- */

static sreq_t *check_req(lua_State *L) {
  request_box_t *b = check_box(L, 1, REQUEST_MT_UV, REQUEST_MT);
  if (b->s == NULL || ar__task_is_done(b->task))
    luaL_argerror(L, 1, "request is released");
  return b->s;
}

static h2o_req_t *live_req(lua_State *L, sreq_t *s) {
  if (s->req == NULL) ar__error_raise(L, "closed", "the client has gone away");
  return s->req;
}

/* R:headers() -> {name = value}, names in lower case; repeated headers
 * are joined with ", ". */
static int r_headers(lua_State *L) {
  sreq_t *s = check_req(L);
  h2o_req_t *req = live_req(L, s);
  lua_createtable(L, 0, (int)req->headers.size);
  luaL_Buffer b;
  for (size_t i = 0; i != req->headers.size; ++i) {
    const h2o_header_t *hd = req->headers.entries + i;
    char *p = luaL_buffinitsize(L, &b, hd->name->len);
    for (size_t j = 0; j < hd->name->len; j++) {
      char c = hd->name->base[j];
      p[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    luaL_pushresultsize(&b, hd->name->len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, hd->value.base, hd->value.len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, hd->value.base, hd->value.len);
    }
    lua_rawset(L, -3);
  }
  return 1;
}

/* R:body() -> the request body (h2o has read all of it), "" if none. */
static int r_body(lua_State *L) {
  sreq_t *s = check_req(L);
  h2o_req_t *req = live_req(L, s);
  if (req->entity.base == NULL)
    lua_pushliteral(L, "");
  else
    lua_pushlstring(L, req->entity.base, req->entity.len);
  return 1;
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Payload Too Large";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "";
  }
}

/* Sets status and headers from the arguments at 2 (status) and 3 (a list
 * {name1, value1, name2, value2, ...} or nil), copying into the request's
 * pool, and starts the response. */
static h2o_req_t *response_start(lua_State *L, sreq_t *s,
                                 size_t content_length) {
  h2o_req_t *req = live_req(L, s);
  if (s->state != R_NEW)
    ar__error_raise(L, "invalid_state", "the response has already started");
  lua_Integer status = luaL_checkinteger(L, 2);
  luaL_argcheck(L, status >= 100 && status <= 999, 2, "bad status");
  req->res.status = (int)status;
  req->res.reason = reason((int)status);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 3);
    for (lua_Integer i = 1; i + 1 <= n; i += 2) {
      size_t kl, vl;
      lua_rawgeti(L, 3, i);
      lua_rawgeti(L, 3, i + 1);
      const char *k = lua_tolstring(L, -2, &kl);
      const char *v = lua_tolstring(L, -1, &vl);
      if (k == NULL || v == NULL) luaL_argerror(L, 3, "header is not a string");
      h2o_iovec_t kc = h2o_strdup(&req->pool, k, kl);
      h2o_strtolower(kc.base, kc.len);
      h2o_iovec_t vc = h2o_strdup(&req->pool, v, vl);
      h2o_add_header_by_str(&req->pool, &req->res.headers, kc.base, kc.len, 1,
                            NULL, vc.base, vc.len);
      lua_pop(L, 2);
    }
  }
  /* 204 and 304 have no body and must not announce one. */
  if (status == 204 || status == 304) content_length = SIZE_MAX;
  req->res.content_length = content_length;
  h2o_start_response(req, &s->gen);
  return req;
}

/* R:respond(status, headers, body): the whole response at once. */
static int r_respond(lua_State *L) {
  sreq_t *s = check_req(L);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 4, "", &len);
  h2o_req_t *req = response_start(L, s, len);
  h2o_iovec_t iov = {NULL, 0};
  if (req->res.content_length == SIZE_MAX) len = 0;
  if (len > 0) {
    iov.base = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(iov.base, body, len);
    iov.len = len;
  }
  s->state = R_DONE;
  h2o_send(req, &iov, len > 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
  return 0;
}

/* R:start(status, headers): starts a streamed response (chunked in
 * HTTP/1.1) and sends the head at once. */
static int r_start(lua_State *L) {
  sreq_t *s = check_req(L);
  h2o_req_t *req = response_start(L, s, SIZE_MAX);
  s->state = R_STREAMING;
  s->busy = 1;
  h2o_send(req, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
  return 0;
}

/* Waits until h2o has taken the previous chunk (proceed). Several tasks
 * may wait at once: the handler and tasks it handed res to. */
static int wait_proceed(lua_State *L, sreq_t *s, lua_KFunction k) {
  ar__task_t *t = ar__task_check_current(L, "response write");
  ar__waiters_push(&s->waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, NULL, k, 0);
}

/* R:write(chunk): hands one chunk to h2o. If the previous one is still
 * being written (the client is slow), waits first: at most one chunk per
 * response is ever held. */
static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  sreq_t *s = check_req(L);
  size_t len;
  const char *chunk = luaL_checklstring(L, 2, &len);
  h2o_req_t *req = live_req(L, s);
  if (s->state != R_STREAMING)
    return ar__error_raise(L, "invalid_state", "the response is not streaming");
  if (s->busy) return wait_proceed(L, s, write_k);
  if (len == 0) return 0;
  if (len > s->cap) {
    char *nb = realloc(s->buf, len);
    if (nb == NULL) return luaL_error(L, "not enough memory");
    s->buf = nb;
    s->cap = len;
  }
  memcpy(s->buf, chunk, len);
  h2o_iovec_t iov = {s->buf, len};
  s->busy = 1;
  h2o_send(req, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
  return 0;
}

static int r_write(lua_State *L) { return write_k(L, LUA_OK, 0); }

/* R:finish(): ends a streamed response once its last chunk is taken. */
static int finish_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  sreq_t *s = check_req(L);
  h2o_req_t *req = live_req(L, s);
  if (s->state != R_STREAMING)
    return ar__error_raise(L, "invalid_state", "the response is not streaming");
  if (s->busy) return wait_proceed(L, s, finish_k);
  s->state = R_DONE;
  h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
  return 0;
}

static int r_finish(lua_State *L) { return finish_k(L, LUA_OK, 0); }

/* R:state() -> "new" | "streaming" | "done" | "gone". */
static int r_state(lua_State *L) {
  sreq_t *s = check_req(L);
  static const char *const names[] = {"new", "streaming", "done"};
  lua_pushstring(L, s->req == NULL ? "gone" : names[s->state]);
  return 1;
}

/* ---- the module -------------------------------------------------------- */

static int load_front(lua_State *L) {
  static const luaL_Reg core[] = {
      {"listen", l_listen}, {"dispatch", l_dispatch},
      {"idle", l_idle},     {"closing", l_closing},
      {"cancel", l_cancel}, {"stop", l_stop},
      {"info", l_info},     {NULL, NULL}};
  static const luaL_Reg req_methods[] = {
      {"headers", r_headers}, {"body", r_body},   {"respond", r_respond},
      {"start", r_start},     {"write", r_write}, {"finish", r_finish},
      {"state", r_state},     {NULL, NULL}};
  luaL_newmetatable(L, SERVER_MT);
  int smt = lua_gettop(L);
  luaL_newmetatable(L, REQUEST_MT);
  int rmt = lua_gettop(L);
#define PUSH_MTS() (lua_pushvalue(L, smt), lua_pushvalue(L, rmt))
  PUSH_MTS();
  lua_pushcclosure(L, server_gc, 2);
  lua_setfield(L, smt, "__gc");
  lua_newtable(L);
  PUSH_MTS();
  luaL_setfuncs(L, req_methods, 2);
  lua_setfield(L, rmt, "__index");
  if (luaL_loadbuffer(L, (const char *)ar__lserver_lua, sizeof ar__lserver_lua,
                      "=[async.http server]") != LUA_OK)
    return lua_error(L);
  lua_newtable(L);
  PUSH_MTS();
  luaL_setfuncs(L, core, 2);
#undef PUSH_MTS
  lua_call(L, 1, 1);
  return 1;
}

/* async.http.serve(opts): loads the Lua front once (kept in the registry)
 * and calls its serve. */
int ar__http_serve(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, (void *)&load_front) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushcfunction(L, load_front);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&load_front);
  }
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}
