/* net.udp: datagram sockets. A C record (udp_t) holds the uv_udp_t and a
 * bounded queue of received datagrams; u:recv() takes the oldest or
 * suspends until one arrives. Receiving stops while the queue is full and
 * nobody waits (the kernel's buffer then fills and drops, as UDP does),
 * so a flood cannot grow memory. A send the kernel does not take at once
 * is copied into a request and the task waits for it. */
#include <stdlib.h>
#include <string.h>

#include "lstream.h"
#include "toolkit.h"

#define UDP_MT "asyncrun.net.udp"
#define QUEUE_MAX 64
#define DGRAM_MAX 65536

typedef struct {
  size_t len;
  struct sockaddr_storage from;
  char data[];
} dgram_t;

typedef struct udp_s udp_t;
struct udp_s {
  uv_udp_t h;
  ar_engine_t *E;
  ar__list_t node; /* in the module's list until closed */
  udp_t **box;
  char *rbuf; /* one datagram's room, for libuv to read into */
  dgram_t *queue[QUEUE_MAX];
  int head, count;
  ar__task_t *receiver;
  int rerr;
  int receiving, closing;
  int nreqs;
};

typedef struct {
  ar__list_t all;
} state_t;

static void udp_close(udp_t *u);

static void state_close(ar_engine_t *E, void *data) {
  (void)E;
  state_t *st = data;
  while (!ar__list_empty(&st->all))
    udp_close(ar__container_of(st->all.next, udp_t, node));
}

static const ar__module_t udp_module = {"async.net.udp", sizeof(state_t), NULL,
                                        state_close, NULL};

static void close_cb(uv_handle_t *h) {
  udp_t *u = h->data;
  ar_engine_t *E = u->E;
  while (u->count > 0) {
    free(u->queue[u->head]);
    u->head = (u->head + 1) % QUEUE_MAX;
    u->count--;
  }
  free(u->rbuf);
  free(u);
  ar__handle_closed(E);
}

static void wake_receiver(udp_t *u) {
  ar__task_t *t = u->receiver;
  if (t == NULL) return;
  u->receiver = NULL;
  ar__task_wake(t, 0);
}

static void udp_close(udp_t *u) {
  if (u->closing) return;
  u->closing = 1;
  if (u->box != NULL) *u->box = NULL;
  u->box = NULL;
  ar__list_remove(&u->node);
  wake_receiver(u);
  uv_close((uv_handle_t *)&u->h, close_cb);
}

/* ---- receiving ---------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  udp_t *u = h->data;
  if (u->rbuf == NULL) u->rbuf = malloc(DGRAM_MAX);
  *buf = uv_buf_init(u->rbuf, u->rbuf ? DGRAM_MAX : 0);
}

static void stop_receiving(udp_t *u) {
  if (!u->receiving) return;
  u->receiving = 0;
  uv_udp_recv_stop(&u->h);
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  (void)flags;
  udp_t *u = h->data;
  if (nread < 0) {
    u->rerr = (int)nread;
    stop_receiving(u);
    wake_receiver(u);
    return;
  }
  if (addr == NULL) return;          /* nothing more to read now */
  if (u->count == QUEUE_MAX) return; /* full: dropped, as the kernel would */
  dgram_t *d = malloc(sizeof *d + (size_t)nread);
  if (d == NULL) return;
  d->len = (size_t)nread;
  memcpy(d->data, buf->base, (size_t)nread);
  memset(&d->from, 0, sizeof d->from);
  memcpy(&d->from, addr,
         addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
  u->queue[(u->head + u->count) % QUEUE_MAX] = d;
  u->count++;
  wake_receiver(u);
  if (u->count == QUEUE_MAX) stop_receiving(u);
}

static int start_receiving(udp_t *u) {
  if (u->receiving || u->closing) return 0;
  int rc = uv_udp_recv_start(&u->h, alloc_cb, recv_cb);
  if (rc == 0) u->receiving = 1;
  return rc;
}

static udp_t **check_udp(lua_State *L) { return luaL_checkudata(L, 1, UDP_MT); }

static int raise_closed(lua_State *L, const char *what) {
  return ar__error_raise(L, "closed", "%s: the socket is closed", what);
}

static void push_from(lua_State *L, const struct sockaddr_storage *ss) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(in6, ip, sizeof ip);
    port = ntohs(in6->sin6_port);
  } else {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
    uv_ip4_name(in4, ip, sizeof ip);
    port = ntohs(in4->sin_port);
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
}

static int recv_cancel(ar__task_t *t, void *data) {
  udp_t *u = data;
  if (u->receiver == t) u->receiver = NULL;
  return AR__CANCEL_DONE;
}

static int recv_k(lua_State *L, int status, lua_KContext ctx);

/* u:recv() -> data, host, port (suspends until a datagram arrives). */
static int u_recv(lua_State *L) {
  udp_t *u = *check_udp(L);
  lua_settop(L, 1);
  if (u == NULL) return raise_closed(L, "udp:recv");
  if (u->count > 0) {
    dgram_t *d = u->queue[u->head];
    lua_pushlstring(L, d->data, d->len);
    push_from(L, &d->from);
    u->head = (u->head + 1) % QUEUE_MAX;
    u->count--;
    free(d);
    start_receiving(u);
    return 3;
  }
  if (u->rerr != 0) return ar__stream_raise(L, "io", u->rerr, "udp:recv");
  ar__task_t *t = ar__task_check_current(L, "udp:recv");
  if (u->receiver != NULL)
    return luaL_error(L, "udp:recv: another task is already receiving");
  int rc = start_receiving(u);
  if (rc != 0) return ar__stream_raise(L, "io", rc, "udp:recv");
  u->receiver = t;
  return ar__task_suspend(L, t, recv_cancel, u, recv_k, 0);
}

static int recv_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return u_recv(L);
}

/* ---- sending ------------------------------------------------------------ */

typedef struct {
  ar__work_t work;
  uv_udp_send_t req;
  udp_t *u;
  char data[];
} sreq_t;

static void send_cb(uv_udp_send_t *req, int status) {
  sreq_t *r = ar__container_of(req, sreq_t, req);
  ar__work_t work = r->work;
  r->u->nreqs--;
  free(r);
  ar__task_t *t = ar__work_finish(&work); /* last: may release the engine */
  if (t != NULL) ar__task_wake_kept(t, ar__stream_code(status));
}

static int send_cancel(ar__task_t *t, void *data) {
  (void)t;
  ar__work_orphan(&((sreq_t *)data)->work);
  return AR__CANCEL_DONE;
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  int rc = ar__stream_status(L);
  if (rc < 0) return ar__stream_raise(L, "io", rc, "udp:send");
  return 0;
}

/* u:send(data, host, port): host is an IP address (net.resolve finds
 * one for a name). */
static int u_send(lua_State *L) {
  udp_t *u = *check_udp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *host = luaL_checkstring(L, 3);
  lua_Integer port = luaL_checkinteger(L, 4);
  if (port < 1 || port > 65535)
    return luaL_argerror(L, 4, "a port number 1-65535 expected");
  if (len > DGRAM_MAX) return luaL_argerror(L, 2, "datagram too large");
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0)
    return luaL_argerror(L, 3, "an IP address expected");
  if (u == NULL) return raise_closed(L, "udp:send");
  uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
  int rc = uv_udp_try_send(&u->h, &b, 1, (struct sockaddr *)&ss);
  if (rc >= 0) return 0;
  if (rc != UV_EAGAIN) return ar__stream_raise(L, "io", rc, "udp:send");
  ar__task_t *t = ar__task_check_current(L, "udp:send");
  sreq_t *r = malloc(sizeof *r + len);
  if (r == NULL) return luaL_error(L, "not enough memory");
  memcpy(r->data, data, len);
  r->u = u;
  b = uv_buf_init(r->data, (unsigned int)len);
  rc = uv_udp_send(&r->req, &u->h, &b, 1, (struct sockaddr *)&ss, send_cb);
  if (rc != 0) {
    free(r);
    return ar__stream_raise(L, "io", rc, "udp:send");
  }
  u->nreqs++;
  ar__work_start(&r->work, t); /* counts the request */
  return ar__task_suspend(L, t, send_cancel, r, send_k, 0);
}

/* ---- the rest ----------------------------------------------------------- */

static int u_close(lua_State *L) {
  udp_t *u = *check_udp(L);
  if (u != NULL) udp_close(u);
  return 0;
}

static int u_index(lua_State *L) {
  udp_t *u = *check_udp(L);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && (strcmp(k, "port") == 0 || strcmp(k, "host") == 0)) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (u == NULL ||
        uv_udp_getsockname(&u->h, (struct sockaddr *)&ss, &len) != 0) {
      lua_pushnil(L);
      return 1;
    }
    push_from(L, &ss);
    if (k[0] == 'h') lua_pop(L, 1);
    return 1;
  }
  return ar__index_method(L);
}

static int u_tostring(lua_State *L) {
  udp_t *u = *check_udp(L);
  lua_pushstring(L, u == NULL ? "udp (closed)" : "udp");
  return 1;
}

/* net.udp{host=, port=} -> socket, bound (port 0: any free one). */
static int l_udp(lua_State *L) {
  int opts = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    opts = 1;
  }
  lua_settop(L, 1);
  const char *host = "127.0.0.1";
  lua_Integer port = 0;
  if (opts) {
    if (lua_getfield(L, 1, "host") != LUA_TNIL) {
      host = lua_tostring(L, -1);
      if (host == NULL)
        return luaL_error(L, "bad option 'host' (string expected)");
    }
    if (lua_getfield(L, 1, "port") != LUA_TNIL) {
      int isint;
      port = lua_tointegerx(L, -1, &isint);
      if (!isint || port < 0 || port > 65535)
        return luaL_error(L, "bad option 'port' (an integer 0-65535 expected)");
    }
  }
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0)
    return luaL_error(L, "bad option 'host' (an IP address expected, got '%s')",
                      host);
  ar_engine_t *E = ar__engine_of(L);
  state_t *st = ar__module_state(E, &udp_module);
  if (st == NULL) {
    if ((st = ar__module_open(E, &udp_module)) == NULL)
      return luaL_error(L, "not enough memory");
    ar__list_init(&st->all);
  }
  udp_t **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, UDP_MT);
  udp_t *u = calloc(1, sizeof *u);
  if (u == NULL) return luaL_error(L, "not enough memory");
  int rc = uv_udp_init(ar_engine_loop(E), &u->h);
  if (rc != 0) {
    free(u);
    return luaL_error(L, "net.udp: %s", uv_strerror(rc));
  }
  ar__handle_opened(E);
  u->h.data = u;
  u->E = E;
  ar__list_insert_tail(&st->all, &u->node);
  u->box = box;
  *box = u;
  rc = uv_udp_bind(&u->h, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = start_receiving(u);
  if (rc != 0) {
    udp_close(u);
    ar__error_push(L, "listen", "cannot bind %s:%d: %s (%s)", host, (int)port,
                   uv_err_name(rc), uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    lua_setfield(L, -2, "errno");
    return ar__error_throw(L);
  }
  return 1;
}

int ar__udp_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"send", u_send}, {"recv", u_recv}, {"close", u_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__index", u_index},
                                  {"__close", u_close},
                                  {"__gc", u_close},
                                  {"__tostring", u_tostring},
                                  {NULL, NULL}};
  ar__class_new(L, UDP_MT, methods, meta);
  lua_pushcfunction(L, l_udp);
  lua_setfield(L, -2, "udp");
  return 0;
}
