/* The "async.net" module: TCP connections and listeners, name lookups;
 * datagrams are in ludp.c.
 *
 * A lookup is unabortable work (rule 5): a dns_t behind an ar__work_t. A
 * cancelled or timed-out task resumes at once and the record becomes an
 * orphan that dns_cb frees, with its result. A connection attempt is a
 * conn_t request on a stream that the waiting call already holds in a box
 * on its stack; giving up closes that stream, which makes libuv end the
 * request (UV_ECANCELED) and conn_cb free it. Each waiting record carries
 * its own deadline (opts.timeout covers lookup and connection together).
 *
 * A listener is a C record (srv_t) with a queue of accepted connections.
 * The connection callback accepts into that queue, C only; a task of the
 * server's own, the acceptor, turns each into a stream box and spawns the
 * handler as a new task. Closing the server stops accepting; connections
 * already handed to handlers go on until their handlers end. */
#include <stdlib.h>
#include <string.h>

#include "lstream.h"
#include "modules.h"

#define SERVER_MT "asyncrun.net.server"
#define ADDRS_MT "asyncrun.net.addrinfo"
#define WOKE_TIMEOUT 60000 /* a wake code no libuv status gives */
#define ACCEPT_QUEUE 64

int ar__udp_open(lua_State *L); /* ludp.c: adds net.udp */

/* ---- per-engine state: the listeners ------------------------------------ */

typedef struct srv_s srv_t;
struct srv_s {
  uv_tcp_t h;
  ar_engine_t *E;
  ar__list_t node; /* in the module's list until closed */
  srv_t **box;
  ar__task_t *acceptor; /* the acceptor, while it waits */
  ar__stream_t *queue[ACCEPT_QUEUE];
  int head, count;
  int backlogged; /* a connection waits for uv_accept */
  int closing;
  int port;
};

typedef struct {
  ar__list_t servers;
} state_t;

static void srv_close(srv_t *srv);

static void state_stop(ar_engine_t *E, void *data) {
  (void)E;
  state_t *st = data;
  while (!ar__list_empty(&st->servers))
    srv_close(ar__container_of(st->servers.next, srv_t, node));
}

static const ar__module_t net_module = {"async.net", sizeof(state_t),
                                        state_stop, state_stop, NULL};

static state_t *state_of(lua_State *L) {
  ar_engine_t *E = ar__engine_of(L);
  state_t *st = ar__module_state(E, &net_module);
  if (st == NULL) {
    if ((st = ar__module_open(E, &net_module)) == NULL)
      luaL_error(L, "not enough memory");
    ar__list_init(&st->servers);
  }
  return st;
}

/* ---- options ------------------------------------------------------------ */

static double opt_timeout(lua_State *L, int opts) {
  if (opts == 0) return 0;
  double v = 0;
  if (lua_getfield(L, opts, "timeout") != LUA_TNIL) {
    int isnum;
    v = (double)lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v > 0))
      luaL_error(L, "bad option 'timeout' (a number of seconds > 0 expected)");
  }
  lua_pop(L, 1);
  return v;
}

static int check_port(lua_State *L, int arg, int allow_zero) {
  lua_Integer port = luaL_checkinteger(L, arg);
  if (port < (allow_zero ? 0 : 1) || port > 65535)
    luaL_argerror(L, arg, "a port number 1-65535 expected");
  return (int)port;
}

/* Seconds left before the deadline at stack index idx (0: none), or -1
 * when it has passed. */
static double time_left(lua_State *L, int idx) {
  double deadline = lua_tonumber(L, idx);
  if (deadline == 0) return 0;
  double left = deadline - (double)uv_hrtime() / 1e9;
  return left > 0 ? left : -1;
}

/* ---- addresses ---------------------------------------------------------- */

/* A lookup's result, owned by a userdata on the waiting call's stack, so
 * whatever way the call ends, the collector frees it. */
typedef struct {
  struct addrinfo *res; /* getaddrinfo's list, or `one` */
  struct addrinfo *next;
  int from_dns;
  struct addrinfo one;
  struct sockaddr_storage one_addr;
} addrs_t;

static int addrs_gc(lua_State *L) {
  addrs_t *a = lua_touserdata(L, 1);
  if (a->from_dns && a->res != NULL) uv_freeaddrinfo(a->res);
  a->res = a->next = NULL;
  return 0;
}

static addrs_t *new_addrs(lua_State *L) {
  addrs_t *a = lua_newuserdatauv(L, sizeof *a, 0);
  memset(a, 0, sizeof *a);
  luaL_setmetatable(L, ADDRS_MT);
  return a;
}

/* Fills a from an IP literal; returns 0 if host is not one. */
static int literal(addrs_t *a, const char *host, int port) {
  struct sockaddr_in *in4 = (struct sockaddr_in *)&a->one_addr;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->one_addr;
  if (uv_ip4_addr(host, port, in4) == 0)
    a->one.ai_addrlen = sizeof *in4;
  else if (uv_ip6_addr(host, port, in6) == 0)
    a->one.ai_addrlen = sizeof *in6;
  else
    return 0;
  a->one.ai_family = a->one_addr.ss_family;
  a->one.ai_socktype = SOCK_STREAM;
  a->one.ai_addr = (struct sockaddr *)&a->one_addr;
  a->res = a->next = &a->one;
  return 1;
}

/* Pushes "ip" and returns the port of a socket address. */
static int push_addr(lua_State *L, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
    uv_ip4_name(in4, ip, sizeof ip);
    port = ntohs(in4->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, ip, sizeof ip);
    port = ntohs(in6->sin6_port);
  }
  lua_pushstring(L, ip);
  return port;
}

/* ---- lookups ------------------------------------------------------------ */

typedef struct {
  ar__work_t work;
  uv_getaddrinfo_t req;
  ar__timer_t timer;
  int status;
  struct addrinfo *res;
} dns_t;

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dns_t *d = ar__container_of(req, dns_t, req);
  ar_engine_t *E = d->work.E;
  ar__task_t *t = ar__work_finish(&d->work);
  if (t == NULL) { /* the task gave up (and E may be gone) */
    if (res != NULL) uv_freeaddrinfo(res);
    free(d);
    return;
  }
  ar__timer_stop(E, &d->timer);
  d->status = status;
  d->res = res;
  /* kept: the continuation owns d and the list from here on. */
  ar__task_wake_kept(t, 0);
}

static void dns_timer_cb(ar__timer_t *tm) {
  dns_t *d = ar__container_of(tm, dns_t, timer);
  ar__task_t *t = d->work.task;
  ar__work_orphan(&d->work); /* dns_cb frees d */
  ar__task_wake(t, WOKE_TIMEOUT);
}

static int dns_cancel(ar__task_t *t, void *data) {
  (void)t;
  dns_t *d = data;
  ar__timer_stop(d->work.E, &d->timer);
  ar__work_orphan(&d->work);
  return AR__CANCEL_DONE;
}

/* Starts a lookup of host (port: 0 for none) and suspends, with the
 * record in the stack slot `slot`; k then calls dns_result. family:
 * AF_UNSPEC, AF_INET or AF_INET6. */
static int dns_start(lua_State *L, const char *host, int port, int family,
                     double timeout, int slot, lua_KFunction k,
                     lua_KContext ctx) {
  ar__task_t *t = ar__task_check_current(L, "async.net");
  ar_engine_t *E = ar__engine_of(L);
  dns_t *d = calloc(1, sizeof *d);
  if (d == NULL) return luaL_error(L, "not enough memory");
  ar__timer_init(&d->timer);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  char service[8];
  snprintf(service, sizeof service, "%d", port);
  if (timeout > 0 &&
      ar__timer_start(E, &d->timer, timeout, dns_timer_cb) != 0) {
    free(d);
    return luaL_error(L, "not enough memory");
  }
  int rc = uv_getaddrinfo(ar_engine_loop(E), &d->req, dns_cb, host,
                          port ? service : NULL, &hints);
  if (rc != 0) {
    ar__timer_stop(E, &d->timer);
    free(d);
    ar__error_push(L, "dns", "cannot resolve '%s': %s (%s)", host,
                   uv_err_name(rc), uv_strerror(rc));
    return ar__error_throw(L);
  }
  ar__work_start(&d->work, t); /* counts the request */
  lua_pushlightuserdata(L, d);
  lua_replace(L, slot);
  return ar__task_suspend(L, t, dns_cancel, d, k, ctx);
}

/* ---- net.resolve -------------------------------------------------------- */

/* The lookup's record travels in a stack slot (a light userdata, set
 * before suspending): the task owns it once dns_cb has woken it. */
static dns_t *take_record(lua_State *L, int slot) {
  dns_t *d = lua_touserdata(L, slot);
  lua_pushnil(L);
  lua_replace(L, slot);
  return d;
}

static int dns_result(lua_State *L, int slot, addrs_t *a, const char *host,
                      double timeout) {
  if (ar__task_woken(L) == WOKE_TIMEOUT) {
    lua_pushnil(L);
    lua_replace(L, slot); /* the orphan is dns_cb's to free */
    ar__error_push(L, "timeout", "looking up '%s' timed out after %f s", host,
                   timeout);
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    return ar__error_throw(L);
  }
  dns_t *d = take_record(L, slot);
  int status = d->status;
  a->res = a->next = d->res;
  a->from_dns = 1;
  free(d);
  if (status != 0) {
    ar__error_push(L, "dns", "cannot resolve '%s': %s (%s)", host,
                   uv_err_name(status), uv_strerror(status));
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    lua_pushstring(L, uv_err_name(status));
    lua_setfield(L, -2, "errno");
    return ar__error_throw(L);
  }
  return 0;
}

static int family_of(lua_State *L, int opts) {
  if (opts == 0) return AF_UNSPEC;
  int family = AF_UNSPEC;
  if (lua_getfield(L, opts, "family") != LUA_TNIL) {
    const char *f = lua_tostring(L, -1);
    if (f != NULL && strcmp(f, "inet") == 0)
      family = AF_INET;
    else if (f != NULL && strcmp(f, "inet6") == 0)
      family = AF_INET6;
    else
      luaL_error(L, "bad option 'family' (\"inet\" or \"inet6\" expected)");
  }
  lua_pop(L, 1);
  return family;
}

/* Stack: 1 name, 2 opts, 3 addrs, 4 record slot. */
static int resolve_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  addrs_t *a = lua_touserdata(L, 3);
  const char *host = lua_tostring(L, 1);
  dns_result(L, 4, a, host, opt_timeout(L, lua_istable(L, 2) ? 2 : 0));
  lua_newtable(L);
  int n = 0;
  for (struct addrinfo *ai = a->res; ai != NULL; ai = ai->ai_next) {
    push_addr(L, ai->ai_addr);
    int dup = 0;
    for (int i = 1; i <= n && !dup; i++) {
      lua_rawgeti(L, -2, i);
      dup = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    if (dup)
      lua_pop(L, 1);
    else
      lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* net.resolve(name [, {family=, timeout=}]) -> {"93.184.216.34", ...} */
static int l_resolve(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int opts = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    opts = 2;
  }
  lua_settop(L, 2);
  int family = family_of(L, opts);
  double timeout = opt_timeout(L, opts);
  new_addrs(L);
  lua_pushnil(L); /* 4: the record, once suspended */
  return dns_start(L, host, 0, family, timeout, 4, resolve_k, 0);
}

/* ---- net.connect -------------------------------------------------------- */

typedef struct {
  ar__work_t work;
  uv_connect_t req;
  ar__timer_t timer;
  ar__stream_t *s;
} conn_t;

static void conn_cb(uv_connect_t *req, int status) {
  conn_t *c = ar__container_of(req, conn_t, req);
  if (ar__timer_active(&c->timer)) ar__timer_stop(c->work.E, &c->timer);
  ar__work_t work = c->work;
  free(c);
  ar__task_t *t = ar__work_finish(&work); /* last: may release the engine */
  /* The stream is in the task's box: nothing is lost if a cancellation
   * overtakes this wake (the box is collected, the stream closed). */
  if (t != NULL) ar__task_wake(t, ar__stream_code(status));
}

static void conn_timer_cb(ar__timer_t *tm) {
  conn_t *c = ar__container_of(tm, conn_t, timer);
  ar__task_t *t = c->work.task;
  ar__work_orphan(&c->work);
  ar__stream_close(c->s); /* conn_cb follows with UV_ECANCELED */
  ar__task_wake(t, WOKE_TIMEOUT);
}

static int conn_cancel(ar__task_t *t, void *data) {
  (void)t;
  conn_t *c = data;
  ar__timer_stop(c->work.E, &c->timer);
  ar__work_orphan(&c->work);
  ar__stream_close(c->s);
  return AR__CANCEL_DONE;
}

/* Stack of connect: 1 host, 2 port, 3 opts, 4 addrs, 5 record slot,
 * 6 deadline, 7 stream box, 8 last error (integer). */
enum { C_HOST = 1, C_PORT, C_OPTS, C_ADDRS, C_SLOT, C_DEADLINE, C_BOX, C_ERR };

static int raise_timeout(lua_State *L) {
  const char *host = lua_tostring(L, C_HOST);
  int port = (int)lua_tointeger(L, C_PORT);
  ar__error_push(L, "timeout", "connecting to %s:%d timed out after %f s", host,
                 port, opt_timeout(L, lua_istable(L, 3) ? 3 : 0));
  lua_pushstring(L, host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  return ar__error_throw(L);
}

static int connect_k(lua_State *L, int status, lua_KContext ctx);

/* Tries the next address, or raises the last failure. */
static int connect_next(lua_State *L) {
  addrs_t *a = lua_touserdata(L, C_ADDRS);
  ar__stream_t **box = lua_touserdata(L, C_BOX);
  ar_engine_t *E = ar__engine_of(L);
  ar__task_t *t = ar__task_check_current(L, "net.connect");
  while (a->next != NULL) {
    struct addrinfo *ai = a->next;
    a->next = ai->ai_next;
    double left = time_left(L, C_DEADLINE);
    if (left < 0) return raise_timeout(L);
    ar__stream_t *s = ar__stream_new(E, AR__STREAM_TCP);
    conn_t *c = s != NULL ? calloc(1, sizeof *c) : NULL;
    if (c == NULL) {
      if (s != NULL) ar__stream_close(s);
      return luaL_error(L, "not enough memory");
    }
    ar__stream_bind(box, s);
    c->s = s;
    ar__timer_init(&c->timer);
    int rc = uv_tcp_connect(&c->req, &s->u.tcp, ai->ai_addr, conn_cb);
    if (rc != 0) { /* no request in flight */
      ar__stream_close(s);
      free(c);
      lua_pushinteger(L, rc);
      lua_replace(L, C_ERR);
      continue;
    }
    ar__work_start(&c->work, t); /* counts the request */
    if (left > 0 && ar__timer_start(E, &c->timer, left, conn_timer_cb) != 0) {
      conn_cancel(t, c); /* conn_cb follows and frees c */
      return luaL_error(L, "not enough memory");
    }
    return ar__task_suspend(L, t, conn_cancel, c, connect_k, 1);
  }
  int err = (int)lua_tointeger(L, C_ERR);
  const char *host = lua_tostring(L, C_HOST);
  int port = (int)lua_tointeger(L, C_PORT);
  ar__error_push(L, "connect", "cannot connect to %s:%d: %s (%s)", host, port,
                 uv_err_name(err), uv_strerror(err));
  lua_pushstring(L, host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "errno");
  return ar__error_throw(L);
}

/* ctx 0: after the lookup; 1: after a connection attempt. */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  addrs_t *a = lua_touserdata(L, C_ADDRS);
  if (ctx == 0) {
    double timeout = opt_timeout(L, lua_istable(L, C_OPTS) ? C_OPTS : 0);
    if (ar__task_woken(L) == WOKE_TIMEOUT) {
      lua_pushnil(L);
      lua_replace(L, C_SLOT);
      return raise_timeout(L);
    }
    dns_result(L, C_SLOT, a, lua_tostring(L, C_HOST), timeout);
    return connect_next(L);
  }
  if (ar__task_woken(L) == WOKE_TIMEOUT) return raise_timeout(L);
  int rc = ar__stream_status(L);
  ar__stream_t **box = lua_touserdata(L, C_BOX);
  if (rc == 0 && *box != NULL) {
    ar__stream_t *s = *box;
    uv_tcp_nodelay(&s->u.tcp, 1);
    rc = ar__stream_start(s);
    if (rc == 0) {
      lua_settop(L, C_BOX);
      return 1;
    }
  }
  if (*box != NULL) ar__stream_close(*box);
  lua_pushinteger(L, rc);
  lua_replace(L, C_ERR);
  return connect_next(L);
}

/* net.connect(host, port [, {timeout=}]) -> stream */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = check_port(L, 2, 0);
  int opts = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    opts = 3;
  }
  lua_settop(L, 3);
  double timeout = opt_timeout(L, opts);
  ar__task_check_current(L, "net.connect");
  addrs_t *a = new_addrs(L); /* C_ADDRS */
  lua_pushnil(L);            /* C_SLOT */
  lua_pushnumber(L, timeout > 0 ? (double)uv_hrtime() / 1e9 + timeout
                                : 0);   /* C_DEADLINE */
  ar__stream_newbox(L);                 /* C_BOX */
  lua_pushinteger(L, UV_EADDRNOTAVAIL); /* C_ERR */
  if (literal(a, host, port)) return connect_next(L);
  return dns_start(L, host, port, AF_UNSPEC, timeout, C_SLOT, connect_k, 0);
}

/* ---- net.listen --------------------------------------------------------- */

static void srv_close_cb(uv_handle_t *h) {
  srv_t *srv = h->data;
  ar_engine_t *E = srv->E;
  free(srv);
  ar__handle_closed(E);
}

static void srv_close(srv_t *srv) {
  if (srv->closing) return;
  srv->closing = 1;
  if (srv->box != NULL) *srv->box = NULL;
  srv->box = NULL;
  ar__list_remove(&srv->node);
  while (srv->count > 0) {
    ar__stream_close(srv->queue[srv->head]);
    srv->head = (srv->head + 1) % ACCEPT_QUEUE;
    srv->count--;
  }
  if (srv->acceptor != NULL) { /* it finds the box empty and ends */
    ar__task_wake(srv->acceptor, 0);
    srv->acceptor = NULL;
  }
  uv_close((uv_handle_t *)&srv->h, srv_close_cb);
}

/* Accepts the connection libuv holds into the queue. Returns 0, or -1 if
 * it must wait (queue full, or out of memory). */
static int accept_one(srv_t *srv) {
  if (srv->count == ACCEPT_QUEUE) return -1;
  ar__stream_t *s = ar__stream_new(srv->E, AR__STREAM_TCP);
  if (s == NULL) return -1;
  if (uv_accept((uv_stream_t *)&srv->h, &s->u.stream) != 0 ||
      ar__stream_start(s) != 0) {
    ar__stream_close(s);
    return 0; /* that connection is gone; keep accepting */
  }
  uv_tcp_nodelay(&s->u.tcp, 1);
  srv->queue[(srv->head + srv->count) % ACCEPT_QUEUE] = s;
  srv->count++;
  return 0;
}

static void connection_cb(uv_stream_t *h, int status) {
  srv_t *srv = h->data;
  if (status != 0 || srv->closing) return; /* EMFILE and the like: retried */
  if (accept_one(srv) != 0) {
    srv->backlogged = 1; /* libuv stops listening until uv_accept */
    return;
  }
  if (srv->acceptor != NULL) {
    ar__task_t *t = srv->acceptor;
    srv->acceptor = NULL;
    ar__task_wake(t, 0);
  }
}

static int acceptor_cancel(ar__task_t *t, void *data) {
  (void)t;
  srv_t *srv = data;
  srv->acceptor = NULL;
  srv_close(srv); /* the server ends with its acceptor */
  return AR__CANCEL_DONE;
}

static int acceptor_k(lua_State *L, int status, lua_KContext ctx);

/* The acceptor task's body. Stack: 1 server box, 2 handler, 3 the
 * handler's wrapper (see handler_main). */
static int acceptor(lua_State *L) {
  srv_t **box = lua_touserdata(L, 1);
  for (;;) {
    srv_t *srv = *box;
    if (srv == NULL) return 0; /* closed */
    if (srv->count == 0) {
      if (srv->backlogged) {
        srv->backlogged = 0;
        if (accept_one(srv) != 0) srv->backlogged = 1;
        if (srv->count > 0) continue;
      }
      ar__task_t *t = ar__task_check_current(L, "net.listen");
      srv->acceptor = t;
      return ar__task_suspend(L, t, acceptor_cancel, srv, acceptor_k, 0);
    }
    lua_settop(L, 3);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 2);
    ar__stream_t **sbox = ar__stream_newbox(L);
    lua_createtable(L, 0, 2);
    /* Nothing below raises before the stream is bound but the peer's
     * fields, whose memory error ends the acceptor, not the stream. */
    ar__stream_t *s = srv->queue[srv->head];
    srv->head = (srv->head + 1) % ACCEPT_QUEUE;
    srv->count--;
    ar__stream_bind(sbox, s);
    struct sockaddr_storage peer;
    int len = sizeof peer;
    if (uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)&peer, &len) == 0) {
      lua_pushinteger(L, push_addr(L, (struct sockaddr *)&peer));
      lua_setfield(L, -3, "port");
      lua_setfield(L, -2, "host");
    }
    ar__task_spawn(L, 3);
  }
}

static int acceptor_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return acceptor(L);
}

/* Run as each connection's task: the stream is closed when the handler
 * ends, however it ends. */
static const char handler_main_src[] = "local handler, stream, peer = ...\n"
                                       "local s <close> = stream\n"
                                       "return handler(stream, peer)\n";

static const char handler_main_key = 'H';

static void push_handler_main(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &handler_main_key) == LUA_TFUNCTION)
    return;
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, handler_main_src, sizeof handler_main_src - 1,
                      "=net.listen") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &handler_main_key);
}

static srv_t **check_server(lua_State *L) {
  return luaL_checkudata(L, 1, SERVER_MT);
}

/* net.listen{host=, port=, handler=, backlog=} -> server */
static int l_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "handler"); /* 2 */
  if (!lua_isfunction(L, 2))
    return luaL_error(L, "bad option 'handler' (function expected, got %s)",
                      luaL_typename(L, 2));
  lua_getfield(L, 1, "host"); /* 3 */
  const char *host = lua_isnil(L, 3) ? "127.0.0.1" : lua_tostring(L, 3);
  if (host == NULL) return luaL_error(L, "bad option 'host' (string expected)");
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  lua_getfield(L, 1, "port"); /* 4 */
  lua_Integer port = lua_isnil(L, 4) ? 0 : lua_tointeger(L, 4);
  if (port < 0 || port > 65535 || (!lua_isnil(L, 4) && !lua_isinteger(L, 4)))
    return luaL_error(L, "bad option 'port' (an integer 0-65535 expected)");
  lua_getfield(L, 1, "backlog"); /* 5 */
  lua_Integer backlog = luaL_optinteger(L, 5, 511);
  if (backlog < 1 || backlog > 65535)
    return luaL_error(L, "bad option 'backlog' (an integer 1-65535 expected)");
  addrs_t a;
  memset(&a, 0, sizeof a);
  if (!literal(&a, host, (int)port))
    return luaL_error(L, "bad option 'host' (an IP address expected, got '%s')",
                      host);
  state_t *st = state_of(L);
  ar_engine_t *E = ar__engine_of(L);
  push_handler_main(L);                               /* 6 */
  srv_t **box = lua_newuserdatauv(L, sizeof *box, 1); /* 7 */
  *box = NULL;
  luaL_setmetatable(L, SERVER_MT);
  srv_t *srv = calloc(1, sizeof *srv);
  if (srv == NULL) return luaL_error(L, "not enough memory");
  int rc = uv_tcp_init(ar_engine_loop(E), &srv->h);
  if (rc != 0) {
    free(srv);
    return luaL_error(L, "net.listen: %s", uv_strerror(rc));
  }
  ar__handle_opened(E);
  srv->h.data = srv;
  srv->E = E;
  ar__list_insert_tail(&st->servers, &srv->node);
  srv->box = box;
  *box = srv;
  rc = uv_tcp_bind(&srv->h, a.one.ai_addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->h, (int)backlog, connection_cb);
  struct sockaddr_storage name;
  int len = sizeof name;
  if (rc == 0) rc = uv_tcp_getsockname(&srv->h, (struct sockaddr *)&name, &len);
  if (rc != 0) {
    srv_close(srv);
    ar__error_push(L, "listen", "cannot listen on %s:%d: %s (%s)", host,
                   (int)port, uv_err_name(rc), uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    lua_setfield(L, -2, "errno");
    return ar__error_throw(L);
  }
  srv->port = push_addr(L, (struct sockaddr *)&name);
  lua_pop(L, 1);
  /* The acceptor: its stack keeps the box, the handler and the wrapper. */
  lua_pushcfunction(L, acceptor);
  lua_pushvalue(L, 7);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 6);
  ar__task_spawn(L, 3);
  lua_setiuservalue(L, 7, 1);
  lua_settop(L, 7);
  return 1;
}

/* srv:close(): stops accepting (and frees the port). Connections being
 * handled go on until their handlers end. Idempotent; also __close. */
static int srv_l_close(lua_State *L) {
  srv_t *srv = *check_server(L);
  if (srv != NULL) srv_close(srv);
  return 0;
}

static int srv_index(lua_State *L) {
  srv_t *srv = *check_server(L);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "port") == 0) {
    if (srv != NULL)
      lua_pushinteger(L, srv->port);
    else
      lua_pushnil(L);
    return 1;
  }
  if (k != NULL && strcmp(k, "task") == 0) {
    lua_getiuservalue(L, 1, 1);
    return 1;
  }
  if (k != NULL && strcmp(k, "close") == 0) {
    lua_pushcfunction(L, srv_l_close);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

static int srv_tostring(lua_State *L) {
  srv_t *srv = *check_server(L);
  if (srv == NULL)
    lua_pushliteral(L, "server (closed)");
  else
    lua_pushfstring(L, "server (port %d)", srv->port);
  return 1;
}

int luaopen_async_net(lua_State *L) {
  static const luaL_Reg funcs[] = {{"connect", l_connect},
                                   {"listen", l_listen},
                                   {"resolve", l_resolve},
                                   {NULL, NULL}};
  ar__stream_open(L);
  if (luaL_newmetatable(L, ADDRS_MT)) {
    lua_pushcfunction(L, addrs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SERVER_MT)) {
    lua_pushcfunction(L, srv_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, srv_l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, srv_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  ar__udp_open(L);
  return 1;
}
