/* The HTTP client's transport: libcurl's multi socket interface driven by
 * the engine's libuv loop, in the shape of curl's docs/examples/multi-uv.c.
 *
 *   curl wants a socket watched  -> socket_cb: a uv_poll_t per socket
 *   curl wants a timeout         -> timer_fn: the one uv_timer_t
 *   the socket or timer fires    -> curl_multi_socket_action, then drain()
 *   drain() finds a finished one -> complete(): detach, start waiters,
 *                                   req->done_cb (which only wakes a task)
 *
 * The pitfalls curl documents, and how they are met here:
 * - timer_fn(-1) stops the timer; timer_fn(0) must not call
 *   curl_multi_socket_action from inside the callback, so it arms the uv
 *   timer for 0 ms and the call happens on the next loop turn.
 * - A socket may be closed and its number reused within one
 *   curl_multi_socket_action. Connection sockets are opened and closed
 *   through our callbacks, with their polls (see sock_t), and a stale poll
 *   is closed before a new one is opened on the same number, so libuv
 *   never watches a descriptor for the wrong handle.
 * - A poll error (POLLERR: libuv has stopped the poll) is not
 *   CURL_CSELECT_ERR, which fails the transfer: curl is told the socket is
 *   ready, reads it, and decides (poll_cb).
 * - socket_cb never returns -1, which would end every transfer of the
 *   multi: a socket that cannot be watched fails its own transfer only.
 * - An idempotent request that fails on a reused connection before any of
 *   the response arrived is sent again on a fresh one (may_resend).
 * - Easy handles are never removed from inside curl's callbacks: the write
 *   callback refuses data (too large) and the removal happens in drain(),
 *   after curl_multi_socket_action has returned. Aborts (cancellation) come
 *   from the scheduler or a timer, never from inside curl.
 *
 * libcurl itself is loaded with dlopen at the first request. Linking it
 * would cost every script, HTTP or not, about 5 ms of dynamic loading
 * (libcurl pulls in some thirty libraries), which is more than the whole
 * start-up budget. */
#include <assert.h>
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"

/* ---- loading libcurl ---------------------------------------------------- */

/* The entry points used, resolved once per process. Written only inside
 * uv_once and read-only afterwards, so engines on several threads share it
 * safely, as they share libcurl's own global state. */
static struct {
  __typeof__(curl_global_init) *global_init;
  __typeof__(curl_version_info) *version_info;
  __typeof__(curl_easy_init) *easy_init;
  __typeof__(curl_easy_cleanup) *easy_cleanup;
  __typeof__(curl_easy_reset) *easy_reset;
  __typeof__(curl_easy_setopt) *easy_setopt;
  __typeof__(curl_easy_getinfo) *easy_getinfo;
  __typeof__(curl_easy_strerror) *easy_strerror;
  __typeof__(curl_multi_init) *multi_init;
  __typeof__(curl_multi_cleanup) *multi_cleanup;
  __typeof__(curl_multi_setopt) *multi_setopt;
  __typeof__(curl_multi_add_handle) *multi_add_handle;
  __typeof__(curl_multi_remove_handle) *multi_remove_handle;
  __typeof__(curl_multi_socket_action) *multi_socket_action;
  __typeof__(curl_multi_info_read) *multi_info_read;
  __typeof__(curl_url) *url;
  __typeof__(curl_url_cleanup) *url_cleanup;
  __typeof__(curl_url_set) *url_set;
  __typeof__(curl_url_get) *url_get;
  __typeof__(curl_url_strerror) *url_strerror;
  __typeof__(curl_free) *free;
  __typeof__(curl_slist_append) *slist_append;
  __typeof__(curl_slist_free_all) *slist_free_all;
  __typeof__(curl_share_init) *share_init;
  __typeof__(curl_share_setopt) *share_setopt;
  __typeof__(curl_share_cleanup) *share_cleanup;
  const char *error; /* NULL once loaded */
  char version[48];  /* "libcurl/7.88.1" */
  char user_agent[96];
  char encodings[64]; /* "deflate, gzip, br, zstd": what curl decodes */
} api;

static uv_once_t api_once = UV_ONCE_INIT;

static void load_once(void) {
  static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4",
                                      "libcurl.so"};
  void *lib = NULL;
  for (size_t i = 0; lib == NULL && i < sizeof names / sizeof names[0]; i++)
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    api.error = "libcurl is not installed (cannot load libcurl.so.4)";
    return;
  }
#define SYM(field, name)                                                       \
  if ((*(void **)&api.field = dlsym(lib, name)) == NULL) {                     \
    api.error = "libcurl is too old (" name " is missing)";                    \
    return;                                                                    \
  }
  SYM(global_init, "curl_global_init");
  SYM(version_info, "curl_version_info");
  SYM(easy_init, "curl_easy_init");
  SYM(easy_cleanup, "curl_easy_cleanup");
  SYM(easy_reset, "curl_easy_reset");
  SYM(easy_setopt, "curl_easy_setopt");
  SYM(easy_getinfo, "curl_easy_getinfo");
  SYM(easy_strerror, "curl_easy_strerror");
  SYM(multi_init, "curl_multi_init");
  SYM(multi_cleanup, "curl_multi_cleanup");
  SYM(multi_setopt, "curl_multi_setopt");
  SYM(multi_add_handle, "curl_multi_add_handle");
  SYM(multi_remove_handle, "curl_multi_remove_handle");
  SYM(multi_socket_action, "curl_multi_socket_action");
  SYM(multi_info_read, "curl_multi_info_read");
  SYM(url, "curl_url");
  SYM(url_cleanup, "curl_url_cleanup");
  SYM(url_set, "curl_url_set");
  SYM(url_get, "curl_url_get");
  SYM(url_strerror, "curl_url_strerror");
  SYM(free, "curl_free");
  SYM(slist_append, "curl_slist_append");
  SYM(slist_free_all, "curl_slist_free_all");
  SYM(share_init, "curl_share_init");
  SYM(share_setopt, "curl_share_setopt");
  SYM(share_cleanup, "curl_share_cleanup");
#undef SYM
  const curl_version_info_data *v = api.version_info(CURLVERSION_NOW);
  /* CURLOPT_PROTOCOLS_STR, which keeps redirects to http and https,
   * appeared in 7.85.0. */
  if (v == NULL || v->version_num < 0x075500) {
    api.error = "libcurl 7.85.0 or later is needed";
    return;
  }
  if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    api.error = "curl_global_init failed";
    return;
  }
  snprintf(api.version, sizeof api.version, "libcurl/%s", v->version);
  snprintf(api.user_agent, sizeof api.user_agent, "asyncrun/%s %s",
           AR_VERSION_STRING, api.version);
  /* The list curl sends for CURLOPT_ACCEPT_ENCODING "", in its order: the
   * decoders it was built with. */
  snprintf(api.encodings, sizeof api.encodings, "%s%s%s%s%s",
           v->features & CURL_VERSION_LIBZ ? "deflate, gzip" : "",
           v->features & CURL_VERSION_LIBZ && v->features & CURL_VERSION_BROTLI
               ? ", "
               : "",
           v->features & CURL_VERSION_BROTLI ? "br" : "",
           v->features & (CURL_VERSION_LIBZ | CURL_VERSION_BROTLI) &&
                   v->features & CURL_VERSION_ZSTD
               ? ", "
               : "",
           v->features & CURL_VERSION_ZSTD ? "zstd" : "");
  if (api.encodings[0] == '\0') strcpy(api.encodings, "identity");
  api.error = NULL;
}

const char *ar__http_load(void) {
  uv_once(&api_once, load_once);
  return api.error;
}

const char *ar__http_curl_version(void) { return api.version; }
const char *ar__http_user_agent(void) { return api.user_agent; }
const char *ar__http_accept_encoding(void) { return api.encodings; }

/* curl_easy_setopt is variadic: each option must get exactly its type. */
static CURLcode opt_long(CURL *e, CURLoption o, long v) {
  return api.easy_setopt(e, o, v);
}
static CURLcode opt_ptr(CURL *e, CURLoption o, const void *v) {
  return api.easy_setopt(e, o, v);
}
static CURLcode opt_off(CURL *e, CURLoption o, curl_off_t v) {
  return api.easy_setopt(e, o, v);
}

struct curl_slist *ar__http_slist_append(struct curl_slist *l, const char *s) {
  return api.slist_append(l, s);
}

void ar__http_slist_free(struct curl_slist *l) {
  if (l != NULL) api.slist_free_all(l);
}

/* ---- the multi state ----------------------------------------------------- */

/* A socket curl told us about, with the uv_poll_t that watches it.
 *
 * Connection sockets are owned: open_cb (CURLOPT_OPENSOCKETFUNCTION)
 * creates them and their poll, and close_cb (CURLOPT_CLOSESOCKETFUNCTION),
 * through which curl closes every socket it opened that way, closes the
 * poll before the descriptor, while the number still means this socket.
 * So an owned socket's poll lives exactly as long as the socket, whatever
 * curl says through socket_cb in between, and libuv never watches a
 * descriptor number that has come to mean another socket.
 *
 * That is what makes parking sound. uv_poll_start costs two epoll_ctl
 * calls (libuv removes the descriptor, then adds it back), and a new poll
 * a third and an ioctl; with a poll closed whenever curl stops watching a
 * socket, that was paid for every request on a kept-alive connection, and
 * was a tenth of the http benchmark's time. So when curl stops watching an
 * owned socket (CURL_POLL_REMOVE: the connection went back to its cache)
 * the poll is parked, still started but unreferenced, and reusing the
 * connection costs nothing. A parked poll that fires (the server closed
 * the idle connection) is stopped and curl is not told: it is not
 * watching, and checks the connection before reusing it.
 *
 * One exception, a libcurl defect from 7.88.0 to 8.1.2 (curl pull request
 * 11439): a socket whose transfer is removed before its connect completes
 * is closed with close(2), not through close_cb. So a poll stays running
 * (parked) only for the connection's established socket
 * (CURLINFO_ACTIVESOCKET is fd at CURL_POLL_REMOVE), which curl closes
 * through close_cb; any other owned socket's poll is stopped at
 * CURL_POLL_REMOVE, so that libuv has nothing pending on the descriptor
 * if it is closed behind our back. Such a poll is closed by close_cb as
 * usual, or by open_cb when its number comes back (counted as
 * `unannounced`), or at ar__http_close.
 *
 * Sockets curl did not open through open_cb (the threaded resolver's
 * socket pair) are never parked: their poll is closed at CURL_POLL_REMOVE,
 * and a poll left on a number that open_cb gets again is closed first.
 *
 * The invariant: libuv never runs a poll on a descriptor that is not the
 * poll's socket. `dev` and `ino` identify the socket open_cb made, so a
 * test can check it: ar__http_stats counts running owned polls whose
 * descriptor is no longer their socket, and open_cb counts running polls
 * it finds stale (`violations`). Both are always 0. */
typedef struct {
  uv_poll_t poll;
  ar__http_t *H;
  curl_socket_t fd;
  dev_t dev;
  ino_t ino;
  uint8_t owned;  /* opened by open_cb, closed by close_cb */
  uint8_t wanted; /* curl watches it; 0: parked or not yet asked */
  int want;       /* UV_READABLE | UV_WRITABLE curl asked for */
  int events;     /* what the poll runs with, 0: stopped */
} sock_t;

/* Idle easy handles kept for reuse: enough for a busy fetcher without
 * holding on to thousands after a burst. */
#define POOL_MAX 256

/* The options of an easy handle that vary between requests, other than
 * the ones every request sets (URL, its buffers, its timeout). Only
 * requests without a body, proxy or headers of their own are described:
 * the others always get a handle reset and configured from scratch. */
typedef struct {
  const struct curl_slist *headers; /* curl keeps the pointer, not a copy */
  int user_agent;                   /* headers has a User-Agent line */
  size_t max_body;
  long max_redirects;
  long connect_ms;
  int head;    /* HEAD, else GET */
  int timeout; /* CURLOPT_TIMEOUT_MS is set (per request) */
  int verify_tls;
  int https;
} easy_cfg_t;

/* An easy handle with what configure() last set on it. */
struct ar__http_easy_s {
  CURL *curl;
  int used;      /* options have been set: reset before configuring anew */
  int reusable;  /* cfg holds: a request with the same cfg may skip reset */
  CURLSH *share; /* the cookie jar attached (CURLOPT_SHARE), or NULL */
  easy_cfg_t cfg;
  /* CURLOPT_ERRORBUFFER. Here rather than in each request, which copies
   * the rare message out (req_complete()). */
  char errbuf[CURL_ERROR_SIZE];
};

struct ar__http_s {
  ar_engine_t *E;
  CURLM *multi;
  uv_timer_t timer;
  ar__list_t active; /* requests in the multi */
  int nactive;
  int peak;               /* the most transfers ever in the multi at once */
  ar__http_easy_t **idle; /* pooled easy handles */
  int nidle, idle_cap;
  sock_t **socks; /* polls by descriptor, parked ones included */
  size_t socks_cap;
  int nsocks;       /* sockets curl watches (not parked) */
  int nowned;       /* sockets open_cb made that are not closed yet */
  int handles;      /* uv handles not through their close callback */
  int violations;   /* owned polls found stale while running: see sock_t */
  int unannounced;  /* owned sockets curl closed without close_cb */
  int multi_errors; /* curl_multi_* failures */
  uint64_t resent;  /* requests sent again on a fresh connection */
  int closing;
  int deferred; /* a request has nomem set: see defer_fail */
  uint64_t seq;
};

struct ar__http_host_s {
  ar__list_t node;    /* in limit->hosts */
  ar__list_t waiting; /* queued requests, oldest first */
  int active;
  char key[];
};

static void handle_closed(ar__http_t *H) {
  ar_engine_t *E = H->E;
  H->handles--;
  if (H->closing && H->handles == 0) {
    free(H->idle);
    free(H);
  }
  /* Last: with a borrowed loop this may release the engine. */
  ar__handle_closed(E);
}

static void sock_close_cb(uv_handle_t *h) {
  sock_t *s = h->data;
  ar__http_t *H = s->H;
  free(s);
  handle_closed(H);
}

static void timer_close_cb(uv_handle_t *h) { handle_closed(h->data); }

static sock_t *sock_find(ar__http_t *H, curl_socket_t fd) {
  return fd >= 0 && (size_t)fd < H->socks_cap ? H->socks[fd] : NULL;
}

static void sock_close(ar__http_t *H, sock_t *s) {
  H->socks[s->fd] = NULL;
  if (s->wanted) H->nsocks--;
  if (s->owned) H->nowned--;
  uv_close((uv_handle_t *)&s->poll, sock_close_cb);
}

static void poll_cb(uv_poll_t *p, int status, int events);

/* Makes the poll run with events (0: stopped), touching libuv only when
 * they change. */
static void sock_watch(sock_t *s, int events) {
  if (events == s->events) return;
  int rc = events != 0 ? uv_poll_start(&s->poll, events, poll_cb)
                       : uv_poll_stop(&s->poll);
  /* libuv fails neither for a descriptor it accepted in uv_poll_init. */
  assert(rc == 0);
  (void)rc;
  s->events = events;
}

/* A poll for fd, entered in the table. Returns NULL when memory runs out
 * (or libuv refuses the descriptor); nothing is changed then. */
static sock_t *sock_open(ar__http_t *H, curl_socket_t fd, int owned) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= H->socks_cap) {
    size_t cap = H->socks_cap ? H->socks_cap : 64;
    while (cap <= (size_t)fd)
      cap *= 2;
    sock_t **socks = realloc(H->socks, cap * sizeof *socks);
    if (socks == NULL) return NULL;
    memset(socks + H->socks_cap, 0, (cap - H->socks_cap) * sizeof *socks);
    H->socks = socks;
    H->socks_cap = cap;
  }
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (uv_poll_init_socket(ar_engine_loop(H->E), &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->H = H;
  s->fd = fd;
  s->owned = (uint8_t)owned;
  if (owned) {
    struct stat st;
    if (fstat(fd, &st) == 0) {
      s->dev = st.st_dev;
      s->ino = st.st_ino;
    }
    H->nowned++;
  }
  H->socks[fd] = s;
  H->handles++;
  ar__handle_opened(H->E);
  return s;
}

static void multi_drain(ar__http_t *H);
static void easy_free(ar__http_easy_t *ez);
static void req_complete(ar__http_req_t *req, CURLcode rc);

/* Runs curl on the timeout, then delivers what finished. A failing
 * curl_multi_socket_action is counted (http.stats() shows it) and is not
 * fatal: drain() still delivers whatever curl finished. */
static void act(ar__http_t *H, curl_socket_t fd, int flags) {
  int running;
  CURLMcode rc = api.multi_socket_action(H->multi, fd, flags, &running);
  if (rc != CURLM_OK) H->multi_errors++;
  multi_drain(H);
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  sock_t *s = p->data;
  ar__http_t *H = s->H;
  curl_socket_t fd = s->fd;
  int flags = 0;
  /* On POLLERR libuv has already stopped the poll. */
  if (status < 0) s->events = 0;
  if (!s->wanted) { /* parked: curl checks the connection before reuse */
    sock_watch(s, 0);
    return;
  }
  /* An error is not curl's CURL_CSELECT_ERR: that makes it fail the
   * transfer at once. Reported as ready for what curl waits for, the
   * socket is read (or written) and curl sees the reset or the end of the
   * stream itself, and decides: a kept-alive connection the server closed
   * under a request is retried on a fresh one, as the curl tool does. */
  if (status < 0) events = s->want;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  if (api.multi_socket_action(H->multi, fd, flags, &running) != CURLM_OK)
    H->multi_errors++;
  /* s may have been closed in there (its memory lasts until the close
   * callback, and its number may already mean a new socket): only the
   * table says whether it is still this one. If curl still wants it, the
   * poll libuv stopped runs again. */
  if (!H->closing && sock_find(H, fd) == s && s->wanted) sock_watch(s, s->want);
  multi_drain(H);
}

/* Called from inside curl when a socket cannot be watched (no memory):
 * the transfer is ended after curl returns, by drain(). Never -1 from
 * socket_cb, which would make curl fail every transfer of the multi. */
static void defer_fail(ar__http_t *H, CURL *easy) {
  char *priv = NULL;
  if (easy == NULL) return;
  api.easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
  if (priv == NULL) return;
  ((ar__http_req_t *)priv)->nomem = 1;
  H->deferred = 1;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  (void)socketp;
  ar__http_t *H = userp;
  sock_t *s = sock_find(H, fd);
  if (what == CURL_POLL_REMOVE) {
    if (s == NULL) return 0;
    if (!s->owned || H->closing) {
      sock_close(H, s);
      return 0;
    }
    if (s->wanted) {
      s->wanted = 0;
      s->want = 0;
      H->nsocks--;
      uv_unref((uv_handle_t *)&s->poll);
    }
    /* Park it running only when it is the connection's established socket
     * (see sock_t); otherwise stop it, which leaves libuv nothing pending
     * on the descriptor whatever curl does with it next. */
    curl_socket_t active = CURL_SOCKET_BAD;
    if (easy != NULL) api.easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &active);
    if (active != fd) sock_watch(s, 0);
    return 0;
  }
  if (H->closing) return 0;
  if (s == NULL && (s = sock_open(H, fd, 0)) == NULL) {
    defer_fail(H, easy);
    return 0;
  }
  if (!s->wanted) {
    s->wanted = 1;
    H->nsocks++;
    uv_ref((uv_handle_t *)&s->poll);
  }
  s->want = 0;
  if (what & CURL_POLL_IN) s->want |= UV_READABLE;
  if (what & CURL_POLL_OUT) s->want |= UV_WRITABLE;
  sock_watch(s, s->want);
  return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: the socket and its poll are made together,
 * so every connection socket is owned (see sock_t). On failure returns
 * CURL_SOCKET_BAD, which fails this connection attempt only. */
static curl_socket_t open_cb(void *userp, curlsocktype purpose,
                             struct curl_sockaddr *addr) {
  ar__http_t *H = userp;
  (void)purpose;
  int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  sock_t *stale = sock_find(H, fd);
  if (stale != NULL) {
    /* Only an unowned socket's poll can outlive its descriptor (curl
     * closed it before CURL_POLL_REMOVE); an owned one would break the
     * invariant, which the counter lets the tests see. */
    if (stale->owned && stale->events != 0) H->violations++;
    if (stale->owned) H->unannounced++;
    sock_close(H, stale);
  }
  if (H->closing || sock_open(H, fd, 1) == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the poll goes before the descriptor, so
 * that libuv forgets it while the number still means this socket. */
static int close_cb(void *userp, curl_socket_t fd) {
  ar__http_t *H = userp;
  sock_t *s = sock_find(H, fd);
  if (s != NULL) sock_close(H, s);
  return close(fd);
}

static void timer_cb(uv_timer_t *t) { act(t->data, CURL_SOCKET_TIMEOUT, 0); }

static int timer_fn(CURLM *multi, long ms, void *userp) {
  (void)multi;
  ar__http_t *H = userp;
  if (ms < 0 || H->closing)
    uv_timer_stop(&H->timer);
  else
    uv_timer_start(&H->timer, timer_cb, (uint64_t)ms, 0);
  return 0;
}

ar__http_t *ar__http_new(ar_engine_t *E) {
  ar__http_t *H = calloc(1, sizeof *H);
  if (H == NULL) return NULL;
  H->E = E;
  ar__list_init(&H->active);
  H->multi = api.multi_init();
  if (H->multi == NULL ||
      api.multi_setopt(H->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) ||
      api.multi_setopt(H->multi, CURLMOPT_SOCKETDATA, (void *)H) ||
      api.multi_setopt(H->multi, CURLMOPT_TIMERFUNCTION, timer_fn) ||
      api.multi_setopt(H->multi, CURLMOPT_TIMERDATA, (void *)H)) {
    if (H->multi != NULL) api.multi_cleanup(H->multi);
    free(H);
    return NULL;
  }
  uv_timer_init(ar_engine_loop(E), &H->timer);
  H->timer.data = H;
  H->handles = 1;
  ar__handle_opened(E);
  return H;
}

/* Called from async.http's close hook, before the lua_State closes: by
 * then every task has ended, so normally nothing is in flight; whatever
 * is gets cut off. The uv handles are closed here and H is freed by the
 * last close callback, which ar_engine_free waits for: the finalizers of
 * requests and sessions that run during lua_close still find H. */
void ar__http_close(ar__http_t *H) {
  if (H == NULL || H->closing) return;
  H->closing = 1;
  while (!ar__list_empty(&H->active)) {
    ar__http_req_t *req =
        ar__container_of(H->active.next, ar__http_req_t, node);
    ar__list_remove(&req->node);
    api.multi_remove_handle(H->multi, req->easy->curl);
    easy_free(req->easy);
    req->easy = NULL;
    req->state = AR__REQ_DONE;
    req->result = CURLE_ABORTED_BY_CALLBACK;
    req->aborted = 1;
  }
  H->nactive = 0;
  for (int i = 0; i < H->nidle; i++)
    easy_free(H->idle[i]);
  H->nidle = 0;
  /* This closes the cached connections; curl may report their sockets
   * through socket_cb on the way, which closes their polls. */
  api.multi_cleanup(H->multi);
  H->multi = NULL;
  for (size_t fd = 0; fd < H->socks_cap; fd++)
    if (H->socks[fd] != NULL) sock_close(H, H->socks[fd]);
  free(H->socks);
  H->socks = NULL;
  H->socks_cap = 0;
  uv_close((uv_handle_t *)&H->timer, timer_close_cb);
}

void ar__http_stats(const ar__http_t *H, ar__http_stats_t *st) {
  memset(st, 0, sizeof *st);
  if (H == NULL) return;
  st->active = H->nactive;
  st->sockets = H->nsocks;
  st->pooled = H->nidle;
  st->handles = H->handles;
  st->owned = H->nowned;
  st->violations = H->violations;
  st->unannounced = H->unannounced;
  st->multi_errors = H->multi_errors;
  st->resent = H->resent;
  /* An owned poll whose descriptor is closed, or is now another socket. */
  for (size_t fd = 0; fd < H->socks_cap; fd++) {
    const sock_t *s = H->socks[fd];
    struct stat sb;
    if (s == NULL || !s->owned || s->events == 0) continue;
    if (fstat(s->fd, &sb) != 0 || sb.st_dev != s->dev || sb.st_ino != s->ino)
      st->stale++;
  }
}

/* ---- easy handles ----------------------------------------------------------
 */

static ar__http_easy_t *easy_acquire(ar__http_t *H) {
  if (H->nidle > 0) return H->idle[--H->nidle];
  ar__http_easy_t *ez = calloc(1, sizeof *ez);
  if (ez == NULL) return NULL;
  if ((ez->curl = api.easy_init()) == NULL) {
    free(ez);
    return NULL;
  }
  return ez;
}

/* Detaches a handle from its cookie jar, which curl_easy_reset would not
 * do, and frees curl's list of cookie files, which it would leak. */
static void easy_leave_jar(ar__http_easy_t *ez) {
  if (ez->share == NULL) return;
  opt_ptr(ez->curl, CURLOPT_COOKIEFILE, NULL);
  opt_ptr(ez->curl, CURLOPT_SHARE, NULL);
  ez->share = NULL;
  ez->reusable = 0;
}

static void easy_free(ar__http_easy_t *ez) {
  easy_leave_jar(ez);
  api.easy_cleanup(ez->curl);
  free(ez);
}

/* Puts a handle back in the pool with its options (see configure). */
static void easy_release(ar__http_t *H, ar__http_easy_t *ez) {
  if (H->closing) {
    easy_free(ez);
    return;
  }
  if (H->nidle == H->idle_cap && H->idle_cap < POOL_MAX) {
    int cap = H->idle_cap ? H->idle_cap * 2 : 16;
    if (cap > POOL_MAX) cap = POOL_MAX;
    ar__http_easy_t **idle = realloc(H->idle, (size_t)cap * sizeof *idle);
    if (idle != NULL) {
      H->idle = idle;
      H->idle_cap = cap;
    }
  }
  if (H->nidle < H->idle_cap)
    H->idle[H->nidle++] = ez;
  else
    easy_free(ez);
}

/* Appends to the body, doubling the buffer (never past max_body) so a
 * large body costs O(n) copies. Refusing data ends the transfer with
 * CURLE_WRITE_ERROR; `too_large` tells the two reasons apart. */
static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud) {
  ar__http_req_t *req = ud;
  size_t len = size * nmemb;
  if (len > req->max_body - req->body_size) {
    req->too_large = 1;
    return 0;
  }
  size_t need = req->body_size + len;
  if (need > req->body_cap) {
    size_t cap = req->body_cap * 2;
    if (req->body_cap == 0) {
      /* First data: a Content-Length (of the decoded body, unless it is
       * compressed) sizes the buffer in one go. */
      curl_off_t cl = -1;
      api.easy_getinfo(req->easy->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                       &cl);
      cap = cl > 0 && (curl_off_t)req->max_body >= cl ? (size_t)cl : 16384;
    }
    if (cap < need) cap = need;
    if (cap > req->max_body) cap = req->max_body;
    char *buf = realloc(req->body_buf, cap);
    if (buf == NULL) {
      req->nomem = 1;
      return 0;
    }
    req->body_buf = buf;
    req->body_cap = cap;
  }
  memcpy(req->body_buf + req->body_size, ptr, len);
  req->body_size = need;
  return len;
}

/* Keeps the header block of the last response only: every status line
 * (an interim 100, each redirect) starts a new one. */
static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud) {
  ar__http_req_t *req = ud;
  size_t len = size * nmemb;
  if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) req->hdr_size = 0;
  if (req->hdr_size + len > req->hdr_cap) {
    size_t cap = req->hdr_cap ? req->hdr_cap * 2 : 1024;
    while (cap < req->hdr_size + len)
      cap *= 2;
    char *buf = realloc(req->hdr_buf, cap);
    if (buf == NULL) {
      req->nomem = 1;
      return 0;
    }
    req->hdr_buf = buf;
    req->hdr_cap = cap;
  }
  memcpy(req->hdr_buf + req->hdr_size, ptr, len);
  req->hdr_size += len;
  return len;
}

static long to_ms(double seconds) {
  double ms = ceil(seconds * 1000.0);
  if (ms < 1) return 1;
  if (ms > (double)LONG_MAX / 2) return LONG_MAX / 2;
  return (long)ms;
}

/* Whether the header list names header `name` (a line "Name:..."). */
static int has_header(const struct curl_slist *l, const char *name) {
  size_t n = strlen(name);
  for (; l != NULL; l = l->next)
    if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':') return 1;
  return 0;
}

/* Describes req's options in *cfg; returns 0 for a request that does not
 * fit easy_cfg_t (see there). */
static int describe(const ar__http_req_t *req, easy_cfg_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if (req->body != NULL || req->proxy != NULL || req->headers_owned ||
      req->jar != NULL)
    return 0;
  if (strcmp(req->method, "HEAD") == 0)
    cfg->head = 1;
  else if (strcmp(req->method, "GET") != 0)
    return 0;
  cfg->headers = req->headers;
  cfg->user_agent = has_header(req->headers, "User-Agent");
  cfg->max_body = req->max_body;
  cfg->max_redirects = req->max_redirects;
  cfg->connect_ms = req->connect_timeout > 0 ? to_ms(req->connect_timeout) : 0;
  cfg->timeout = req->timeout > 0;
  cfg->verify_tls = req->verify_tls;
  cfg->https = strncmp(req->url, "https:", 6) == 0;
  return 1;
}

static int same_cfg(const easy_cfg_t *a, const easy_cfg_t *b) {
  return a->headers == b->headers && a->user_agent == b->user_agent &&
         a->max_body == b->max_body && a->max_redirects == b->max_redirects &&
         a->connect_ms == b->connect_ms && a->head == b->head &&
         a->timeout == b->timeout && a->verify_tls == b->verify_tls &&
         a->https == b->https;
}

/* Sets every option of an easy handle from req. A handle whose options
 * already match (the pool hands out the most recently used handle, so in
 * the usual run of like requests they do) only gets the request's own:
 * curl_easy_reset and the twenty-odd options after it were a tenth of a
 * small request's cost. Returns CURLE_OK or the first failure (out of
 * memory copying a string). */
static CURLcode configure(ar__http_req_t *req, ar__http_easy_t *ez,
                          double remaining) {
  CURLcode rc = CURLE_OK;
  CURL *e = ez->curl;
  const char *m = req->method;
  easy_cfg_t cfg;
  int reusable = describe(req, &cfg);
#define SET(call)                                                              \
  if (rc == CURLE_OK) rc = (call)
  if (!(reusable && ez->reusable && same_cfg(&cfg, &ez->cfg))) {
    easy_leave_jar(ez);
    if (ez->used) api.easy_reset(e);
    ez->used = 1;
    ez->reusable = 0; /* until every option below is set */
    SET(opt_long(e, CURLOPT_NOSIGNAL, 1L));
    SET(opt_ptr(e, CURLOPT_ERRORBUFFER, ez->errbuf));
    SET(opt_ptr(e, CURLOPT_PROTOCOLS_STR, "http,https"));
    SET(opt_ptr(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
    SET(opt_long(e, CURLOPT_FOLLOWLOCATION, req->max_redirects > 0));
    SET(opt_long(e, CURLOPT_MAXREDIRS, req->max_redirects));
    /* What this libcurl decodes, which it then decodes. A header list with
     * its own Accept-Encoding line saves curl formatting one per request. */
    SET(opt_ptr(e, CURLOPT_ACCEPT_ENCODING, api.encodings));
    /* Likewise the User-Agent, except that curl needs it as an option for
     * the CONNECT requests it sends to a proxy. */
    if (req->proxy != NULL || !has_header(req->headers, "User-Agent"))
      SET(opt_ptr(e, CURLOPT_USERAGENT, api.user_agent));
    SET(opt_ptr(e, CURLOPT_WRITEFUNCTION, (void *)write_cb));
    SET(opt_ptr(e, CURLOPT_HEADERFUNCTION, (void *)header_cb));
    SET(opt_ptr(e, CURLOPT_OPENSOCKETFUNCTION, (void *)open_cb));
    SET(opt_ptr(e, CURLOPT_OPENSOCKETDATA, req->H));
    SET(opt_ptr(e, CURLOPT_CLOSESOCKETFUNCTION, (void *)close_cb));
    SET(opt_ptr(e, CURLOPT_CLOSESOCKETDATA, req->H));
    if (req->headers != NULL) SET(opt_ptr(e, CURLOPT_HTTPHEADER, req->headers));
    /* An explicit proxy, or none: "" also keeps curl from reading
     * http_proxy and friends from the environment, as aiohttp does by
     * default, so a stray variable cannot divert loopback traffic. */
    SET(opt_ptr(e, CURLOPT_PROXY, req->proxy != NULL ? req->proxy : ""));
    /* A jar: curl's cookie engine, in memory ("" reads no file), its
     * cookies shared by every request of the session. */
    if (req->jar != NULL) {
      SET(opt_ptr(e, CURLOPT_SHARE, req->jar));
      if (rc == CURLE_OK) ez->share = req->jar;
      SET(opt_ptr(e, CURLOPT_COOKIEFILE, ""));
    }
    if (strcmp(m, "HEAD") == 0) {
      SET(opt_long(e, CURLOPT_NOBODY, 1L));
    } else if (req->body != NULL) {
      SET(opt_off(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len));
      SET(opt_ptr(e, CURLOPT_POSTFIELDS, req->body));
      if (strcmp(m, "POST") != 0) SET(opt_ptr(e, CURLOPT_CUSTOMREQUEST, m));
    } else if (strcmp(m, "POST") == 0) {
      SET(opt_off(e, CURLOPT_POSTFIELDSIZE_LARGE, 0));
      SET(opt_ptr(e, CURLOPT_POSTFIELDS, ""));
    } else if (strcmp(m, "GET") != 0) {
      SET(opt_ptr(e, CURLOPT_CUSTOMREQUEST, m));
    }
    if (req->connect_timeout > 0)
      SET(opt_long(e, CURLOPT_CONNECTTIMEOUT_MS, to_ms(req->connect_timeout)));
    /* Rejects a declared Content-Length over the limit before any body is
     * read; write_cb enforces it on what actually arrives. */
    if (req->max_body < (size_t)INT64_MAX)
      SET(opt_off(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body));
    if (!req->verify_tls) {
      SET(opt_long(e, CURLOPT_SSL_VERIFYPEER, 0L));
      SET(opt_long(e, CURLOPT_SSL_VERIFYHOST, 0L));
    }
    /* Over TLS, wait for a connection that may turn out to multiplex
     * (HTTP/2) rather than open one more. */
    if (strncmp(req->url, "https:", 6) == 0)
      SET(opt_long(e, CURLOPT_PIPEWAIT, 1L));
    if (rc != CURLE_OK) return rc;
    ez->cfg = cfg;
    ez->reusable = reusable;
  }
  /* The request's own. */
  ez->errbuf[0] = '\0';
  SET(opt_ptr(e, CURLOPT_PRIVATE, req));
  SET(opt_ptr(e, CURLOPT_URL, req->url));
  SET(opt_ptr(e, CURLOPT_WRITEDATA, req));
  SET(opt_ptr(e, CURLOPT_HEADERDATA, req));
  if (remaining > 0) SET(opt_long(e, CURLOPT_TIMEOUT_MS, to_ms(remaining)));
#undef SET
  return rc;
}

/* ---- cookie jars ----------------------------------------------------------
 */

CURLSH *ar__http_jar_new(void) {
  CURLSH *sh = api.share_init();
  if (sh != NULL && api.share_setopt(sh, CURLSHOPT_SHARE,
                                     CURL_LOCK_DATA_COOKIE) != CURLSHE_OK) {
    api.share_cleanup(sh);
    sh = NULL;
  }
  return sh;
}

void ar__http_jar_free(ar__http_t *H, CURLSH *jar) {
  /* Pooled handles may still hold it: they leave it first. */
  for (int i = 0; H != NULL && i < H->nidle; i++) {
    ar__http_easy_t *ez = H->idle[i];
    if (ez->share == jar) easy_leave_jar(ez);
  }
  /* In use only if a request of the session were still running, which
   * cannot be, as every request anchors its session; were it so, the jar
   * would be left to the process rather than freed under the transfer. */
  if (api.share_cleanup(jar) != CURLSHE_OK && H != NULL) H->multi_errors++;
}

/* ---- limits and the request lifecycle ---------------------------------------
 */

void ar__http_limit_init(ar__http_limit_t *lim, int max_total,
                         int max_per_host) {
  lim->max_total = max_total > 0 ? max_total : 1;
  lim->max_per_host = max_per_host > 0 ? max_per_host : 0;
  lim->active = 0;
  lim->queued = 0;
  ar__list_init(&lim->hosts);
}

void ar__http_limit_close(ar__http_limit_t *lim) {
  while (!ar__list_empty(&lim->hosts)) {
    ar__http_host_t *h =
        ar__container_of(lim->hosts.next, ar__http_host_t, node);
    ar__list_remove(&h->node);
    free(h);
  }
}

static ar__http_host_t *host_get(ar__http_limit_t *lim, const char *key) {
  ar__list_t *n;
  for (n = lim->hosts.next; n != &lim->hosts; n = n->next) {
    ar__http_host_t *h = ar__container_of(n, ar__http_host_t, node);
    if (strcmp(h->key, key) == 0) return h;
  }
  size_t len = strlen(key);
  ar__http_host_t *h = malloc(sizeof *h + len + 1);
  if (h == NULL) return NULL;
  memcpy(h->key, key, len + 1);
  h->active = 0;
  ar__list_init(&h->waiting);
  ar__list_insert_tail(&lim->hosts, &h->node);
  return h;
}

static void host_release(ar__http_host_t *h) {
  if (h->active == 0 && ar__list_empty(&h->waiting)) {
    ar__list_remove(&h->node);
    free(h);
  }
}

static int can_start(const ar__http_limit_t *lim, const ar__http_host_t *h) {
  return lim->active < lim->max_total &&
         (lim->max_per_host == 0 || h->active < lim->max_per_host);
}

void ar__http_req_init(ar__http_req_t *req) {
  memset(req, 0, sizeof *req);
  ar__list_init(&req->node);
  ar__timer_init(&req->queue_timer);
  req->method = "GET";
  req->max_redirects = 10;
  req->max_body = (size_t)64 << 20;
  req->verify_tls = 1;
}

void ar__http_req_release(ar__http_req_t *req) {
  free(req->body_buf);
  free(req->hdr_buf);
  free(req->final_url);
  free(req->errmsg);
  req->body_buf = req->hdr_buf = req->final_url = req->errmsg = NULL;
  req->body_size = req->body_cap = req->hdr_size = req->hdr_cap = 0;
  if (req->headers_owned) {
    ar__http_slist_free(req->headers);
    req->headers = NULL;
    req->headers_owned = 0;
  }
}

static double elapsed(const ar__http_req_t *req) {
  return (double)(uv_hrtime() - req->start_ns) / 1e9;
}

/* Ends a request that never reached curl, or lost it: state DONE with
 * code and message, then its callback. */
static void fail(ar__http_req_t *req, CURLcode code, const char *msg) {
  req->state = AR__REQ_DONE;
  req->result = code;
  req->done_ns = uv_hrtime();
  req->errmsg = strdup(msg); /* NULL: curl's text for code will do */
  if (req->done_cb != NULL) req->done_cb(req);
}

/* Sizes curl's connection cache from the peak concurrency. By default curl
 * keeps 4 connections per easy handle in the multi *at the moment a
 * transfer ends*; as every finished transfer leaves the multi before its
 * task makes the next request, that count dips with each burst of
 * completions, and curl then closes idle keep-alive connections only to
 * open new ones a moment later (the http benchmark opened 614 connections
 * for 20,000 requests instead of 64). The same rule applied to the peak
 * keeps them. */
static void size_cache(ar__http_t *H) {
  H->peak = H->nactive;
  /* Only a hint: on failure curl keeps its default. */
  (void)api.multi_setopt(H->multi, CURLMOPT_MAXCONNECTS, 4L * H->peak);
}

static int req_start(ar__http_req_t *req) {
  ar__http_t *H = req->H;
  double remaining = 0;
  if (req->timeout > 0) {
    remaining = req->timeout - elapsed(req);
    if (remaining <= 0) remaining = 0.001;
  }
  ar__http_easy_t *easy = easy_acquire(H);
  if (easy == NULL) return AR_ENOMEM;
  req->easy = easy;
  if (configure(req, easy, remaining) != CURLE_OK ||
      api.multi_add_handle(H->multi, easy->curl) != CURLM_OK) {
    req->easy = NULL;
    easy->reusable = 0;
    easy_release(H, easy);
    return AR_ENOMEM;
  }
  req->state = AR__REQ_ACTIVE;
  ar__list_insert_tail(&H->active, &req->node);
  if (++H->nactive > H->peak) size_cache(H);
  req->host->active++;
  req->limit->active++;
  return 0;
}

/* Starts waiting requests while the limits allow, oldest first across
 * hosts. A host at its own limit does not hold up the others. */
static void dispatch(ar__http_limit_t *lim) {
  while (lim->queued > 0 && lim->active < lim->max_total) {
    ar__http_req_t *next = NULL;
    ar__list_t *n;
    for (n = lim->hosts.next; n != &lim->hosts; n = n->next) {
      ar__http_host_t *h = ar__container_of(n, ar__http_host_t, node);
      if (ar__list_empty(&h->waiting) || !can_start(lim, h)) continue;
      ar__http_req_t *head =
          ar__container_of(h->waiting.next, ar__http_req_t, node);
      if (next == NULL || head->seq < next->seq) next = head;
    }
    if (next == NULL) break;
    ar__list_remove(&next->node);
    lim->queued--;
    ar__timer_stop(next->H->E, &next->queue_timer);
    if (req_start(next) != 0) {
      host_release(next->host);
      fail(next, CURLE_OUT_OF_MEMORY, "not enough memory");
    }
  }
}

static void queue_timeout_cb(ar__timer_t *tm) {
  ar__http_req_t *req = ar__container_of(tm, ar__http_req_t, queue_timer);
  char msg[96];
  ar__list_remove(&req->node);
  req->limit->queued--;
  host_release(req->host);
  snprintf(msg, sizeof msg,
           "timed out after %.3g s waiting for a free connection",
           req->timeout);
  fail(req, CURLE_OPERATION_TIMEDOUT, msg);
}

int ar__http_submit(ar__http_t *H, ar__http_limit_t *lim, const char *host_key,
                    ar__http_req_t *req) {
  req->H = H;
  req->limit = lim;
  req->seq = H->seq++;
  req->start_ns = uv_hrtime();
  req->result = CURLE_OK;
  req->host = host_get(lim, lim->max_per_host > 0 ? host_key : "");
  if (req->host == NULL) return AR_ENOMEM;
  if (ar__list_empty(&req->host->waiting) && can_start(lim, req->host)) {
    int rc = req_start(req);
    if (rc != 0) host_release(req->host);
    return rc;
  }
  if (req->timeout > 0 && ar__timer_start(H->E, &req->queue_timer, req->timeout,
                                          queue_timeout_cb) != 0) {
    host_release(req->host);
    return AR_ENOMEM;
  }
  req->state = AR__REQ_QUEUED;
  ar__list_insert_tail(&req->host->waiting, &req->node);
  lim->queued++;
  return 0;
}

/* Takes an active request out of the multi and gives its place to the
 * next waiter. */
static void detach(ar__http_req_t *req) {
  ar__http_t *H = req->H;
  ar__http_host_t *host = req->host;
  ar__list_remove(&req->node);
  H->nactive--;
  /* Fails only for a handle curl does not know, which is a bug here. */
  if (api.multi_remove_handle(H->multi, req->easy->curl) != CURLM_OK)
    H->multi_errors++;
  easy_release(H, req->easy);
  req->easy = NULL;
  host->active--;
  req->limit->active--;
  dispatch(req->limit);
  host_release(host);
}

void ar__http_abort(ar__http_req_t *req) {
  switch (req->state) {
  case AR__REQ_QUEUED:
    ar__list_remove(&req->node);
    req->limit->queued--;
    ar__timer_stop(req->H->E, &req->queue_timer);
    host_release(req->host);
    break;
  case AR__REQ_ACTIVE: detach(req); break;
  default: return;
  }
  req->state = AR__REQ_DONE;
  req->result = CURLE_ABORTED_BY_CALLBACK;
  req->aborted = 1;
  req->done_ns = uv_hrtime();
}

/* Whether a failed transfer may be sent again on a new connection: it
 * failed on a connection taken from the cache (no new one was made), with
 * nothing of a response received, and its method is idempotent (RFC 9110
 * 9.2.2), so a server that did see it cannot mind seeing it twice.
 *
 * This is the race every HTTP/1.1 client with keep-alive has: the server
 * closes an idle connection (without "Connection: close", or by a reset)
 * just as a request goes out on it. curl retries some of these itself, but
 * not all when transfers run side by side (the curl tool with --parallel
 * fails them too); browsers, Go and urllib3 resend idempotent requests in
 * exactly this case, and so does this client, at most twice. */
static int may_resend(const ar__http_req_t *req, CURLcode rc) {
  static const char *const idempotent[] = {"GET",   "HEAD", "OPTIONS",
                                           "TRACE", "PUT",  "DELETE"};
  CURL *e = req->easy->curl;
  long connects = -1, hdr = -1;
  curl_off_t got = -1;
  int ok = 0;
  if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
      rc != CURLE_GOT_NOTHING)
    return 0;
  if (req->resent >= 2 || req->too_large || req->nomem) return 0;
  for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
    ok |= strcmp(req->method, idempotent[i]) == 0;
  return ok && api.easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == 0 &&
         connects == 0 &&
         api.easy_getinfo(e, CURLINFO_HEADER_SIZE, &hdr) == 0 && hdr == 0 &&
         api.easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &got) == 0 && got == 0;
}

/* Sends req again on a fresh connection, keeping its place in the multi's
 * bookkeeping. Returns 0, or -1 when curl will not take it back (the
 * caller then fails it as it would have). */
static int resend(ar__http_req_t *req) {
  ar__http_t *H = req->H;
  ar__http_easy_t *ez = req->easy;
  CURL *e = ez->curl;
  if (api.multi_remove_handle(H->multi, e) != CURLM_OK) return -1;
  req->resent++;
  H->resent++;
  req->body_size = 0;
  req->hdr_size = 0;
  /* FRESH_CONNECT is not part of easy_cfg_t: the next user resets. */
  ez->reusable = 0;
  if (opt_long(e, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK) return -1;
  if (req->timeout > 0) {
    double remaining = req->timeout - elapsed(req);
    if (remaining <= 0) return -1;
    if (opt_long(e, CURLOPT_TIMEOUT_MS, to_ms(remaining)) != CURLE_OK)
      return -1;
  }
  char kept[CURL_ERROR_SIZE];
  memcpy(kept, ez->errbuf, sizeof kept);
  ez->errbuf[0] = '\0';
  if (api.multi_add_handle(H->multi, e) != CURLM_OK) {
    memcpy(ez->errbuf, kept, sizeof kept);
    return -1;
  }
  return 0;
}

static void req_complete(ar__http_req_t *req, CURLcode rc) {
  CURL *e = req->easy->curl;
  /* A failed resend ends the request with the first failure (detach()'s
   * removal of a handle already out of the multi is harmless). */
  if (may_resend(req, rc) && resend(req) == 0) return;
  const char *errbuf = req->easy->errbuf;
  char *url = NULL;
  long redirects = 0;
  req->result = rc;
  req->done_ns = uv_hrtime();
  api.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &req->status);
  api.easy_getinfo(e, CURLINFO_HTTP_VERSION, &req->http_version);
  api.easy_getinfo(e, CURLINFO_REDIRECT_COUNT, &redirects);
  /* Kept only when it differs: NULL means the URL asked for. */
  if (api.easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK &&
      url != NULL && strcmp(url, req->url) != 0)
    req->final_url = strdup(url);
  if (req->nomem) {
    /* Our own buffers (write_cb, header_cb) or a poll (defer_fail). */
    req->result = CURLE_OUT_OF_MEMORY;
  } else if (req->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    char msg[96];
    req->too_large = 1;
    snprintf(msg, sizeof msg, "response body exceeds max_body (%zu bytes)",
             req->max_body);
    req->errmsg = strdup(msg);
  } else if (rc == CURLE_OUT_OF_MEMORY && req->status > 0) {
    /* curl refuses a response header line over CURL_MAX_HTTP_HEADER
     * (100 KB) with its out-of-memory code, and without a message. Once
     * the status line is in, that is the likely cause: the server's doing,
     * not a shortage here. */
    req->too_large = 1;
    req->result = CURLE_RECV_ERROR;
    req->errmsg = strdup("a response header exceeds curl's limit (100 KB)");
  } else if (rc == CURLE_UNSUPPORTED_PROTOCOL && redirects == 0) {
    /* The URL was checked before the request, so this is the answer: a
     * status line that is not HTTP/1.x (curl takes it for HTTP/0.9). A
     * redirect to another scheme keeps the code (kind "invalid_url"). */
    req->result = CURLE_WEIRD_SERVER_REPLY;
    req->errmsg = strdup(errbuf[0] != '\0' ? errbuf
                                           : "the response is not HTTP/1.x "
                                             "(no valid status line)");
  } else if (rc != CURLE_OK && errbuf[0] != '\0') {
    req->errmsg = strdup(errbuf);
  }
  detach(req);
  req->state = AR__REQ_DONE;
  if (req->done_cb != NULL) req->done_cb(req);
}

/* Delivers what curl has finished, and the requests defer_fail marked.
 * Runs after curl_multi_socket_action returned, so removing handles and
 * starting new ones is allowed. */
static void multi_drain(ar__http_t *H) {
  CURLMsg *m;
  int left;
  while (!H->closing && (m = api.multi_info_read(H->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    CURLcode rc = m->data.result;
    char *priv = NULL;
    api.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    req_complete((ar__http_req_t *)priv, rc);
  }
  while (H->deferred && !H->closing) {
    ar__list_t *n;
    ar__http_req_t *req = NULL;
    H->deferred = 0;
    for (n = H->active.next; n != &H->active && req == NULL; n = n->next) {
      ar__http_req_t *r = ar__container_of(n, ar__http_req_t, node);
      if (r->nomem) req = r;
    }
    if (req != NULL) {
      H->deferred = 1; /* look again: complete() may start others */
      req_complete(req, CURLE_OUT_OF_MEMORY);
    }
  }
}

/* ---- errors and URLs
 * --------------------------------------------------------- */

const char *ar__http_error_kind(const ar__http_req_t *req) {
  if (req->too_large) return "too_large";
  switch (req->result) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT: return "invalid_url";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_FILESIZE_EXCEEDED: return "too_large";
  case CURLE_TOO_MANY_REDIRECTS: return "too_many_redirects";
  /* Only an abort of ours is a cancellation; retry, groups and map treat
   * the kind as one. */
  case CURLE_ABORTED_BY_CALLBACK:
    return req->aborted ? "cancelled" : "protocol";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED: return "tls";
  default: return "protocol";
  }
}

const char *ar__http_error_message(const ar__http_req_t *req) {
  if (req->errmsg != NULL) return req->errmsg;
  return api.easy_strerror((CURLcode)req->result);
}

/* The common case without curl's URL parser, which costs more than the
 * rest of a request's set-up together: an absolute http(s) URL whose host
 * is a plain name or IPv4 address, with an optional port, and a path of
 * printable ASCII without fragments, backslashes or dot segments (curl
 * would normalise those). Returns 1 when handled (0 or -1 in *rc), 0 to
 * leave the URL to curl_url. */
static int fast_url(const char *url, const char *query, char **out,
                    char **host_key, int *rc) {
  const char *scheme, *defport, *p;
  if (strncmp(url, "http://", 7) == 0) {
    scheme = "http";
    defport = "80";
    p = url + 7;
  } else if (strncmp(url, "https://", 8) == 0) {
    scheme = "https";
    defport = "443";
    p = url + 8;
  } else {
    return 0;
  }
  const char *host = p;
  while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
         (*p >= '0' && *p <= '9') || *p == '-' || *p == '.')
    p++;
  size_t hlen = (size_t)(p - host);
  if (hlen == 0 || hlen > 253) return 0;
  const char *port = defport;
  size_t plen = strlen(defport);
  if (*p == ':') {
    port = ++p;
    long v = 0;
    while (*p >= '0' && *p <= '9' && p - port < 6)
      v = v * 10 + (*p++ - '0');
    plen = (size_t)(p - port);
    if (plen == 0 || plen > 5 || v < 1 || v > 65535) return 0;
  }
  if (*p != '/' && *p != '?' && *p != '\0') return 0;
  const char *path = p;
  for (; *p != '\0'; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= 0x20 || c >= 0x7f || c == '#' || c == '\\') return 0;
    if (c == '.' && p[-1] == '/') return 0;
  }
  size_t ulen = (size_t)(path - url), rest = (size_t)(p - path);
  size_t qlen = query != NULL ? strlen(query) : 0;
  size_t slen = strlen(scheme);
  size_t flen = ulen + 1 + rest + 1 + qlen + 1;
  char *full = malloc(flen + slen + 3 + hlen + 1 + plen + 1);
  if (full == NULL) {
    *rc = -1;
    return 1;
  }
  char *f = full;
  memcpy(f, url, ulen);
  f += ulen;
  if (*path != '/') *f++ = '/'; /* "http://h" and "http://h?q" get a path */
  memcpy(f, path, rest);
  f += rest;
  if (qlen > 0) {
    *f++ = memchr(path, '?', rest) != NULL ? '&' : '?';
    memcpy(f, query, qlen);
    f += qlen;
  }
  *f++ = '\0';
  /* scheme://host:port, the host in lower case */
  char *key = f;
  memcpy(f, scheme, slen);
  memcpy(f + slen, "://", 3);
  f += slen + 3;
  for (size_t i = 0; i < hlen; i++)
    *f++ = host[i] >= 'A' && host[i] <= 'Z' ? (char)(host[i] - 'A' + 'a')
                                            : host[i];
  *f++ = ':';
  memcpy(f, port, plen);
  f[plen] = '\0';
  *out = full;
  *host_key = key;
  *rc = 0;
  return 1;
}

int ar__http_url(const char *base, const char *url, const char *query,
                 char **out, char **host_key, const char **err) {
  int frc;
  if (fast_url(url, query, out, host_key, &frc)) {
    if (frc != 0) *err = "not enough memory";
    return frc;
  }
  CURLU *u = api.url();
  char *full = NULL, *scheme = NULL, *host = NULL, *port = NULL;
  CURLUcode rc;
  int ret = -1;
  *out = *host_key = NULL;
  if (u == NULL) {
    *err = "not enough memory";
    return -1;
  }
  if (base != NULL &&
      (rc = api.url_set(u, CURLUPART_URL, base, 0)) != CURLUE_OK) {
    *err = "the session's base_url is not a valid URL";
    goto done;
  }
  /* With a base already set, a relative reference resolves against it. */
  if ((rc = api.url_set(u, CURLUPART_URL, url, 0)) != CURLUE_OK) {
    *err = api.url_strerror(rc);
    goto done;
  }
  if (api.url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
    *err = "only http and https URLs are allowed";
    goto done;
  }
  if (query != NULL && *query != '\0' &&
      (rc = api.url_set(u, CURLUPART_QUERY, query, CURLU_APPENDQUERY)) !=
          CURLUE_OK) {
    *err = api.url_strerror(rc);
    goto done;
  }
  if (api.url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK ||
      api.url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
      api.url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    *err = "URL has no host";
    goto done;
  }
  size_t flen = strlen(full) + 1;
  size_t klen = strlen(scheme) + strlen(host) + strlen(port) + 5;
  if ((*out = malloc(flen + klen)) == NULL) {
    *err = "not enough memory";
    goto done;
  }
  memcpy(*out, full, flen);
  *host_key = *out + flen;
  snprintf(*host_key, klen, "%s://%s:%s", scheme, host, port);
  ret = 0;
done:
  api.free(full);
  api.free(scheme);
  api.free(host);
  api.free(port);
  api.url_cleanup(u);
  return ret;
}
