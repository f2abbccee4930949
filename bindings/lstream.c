/* Streams (see lstream.h): reading with a bounded buffer, writing with
 * back-pressure, closing from Lua, from the collector or at engine close.
 *
 * A read that finds what it wants in the buffer returns at once. Else the
 * task links itself as the stream's reader and suspends; read_cb appends
 * to the buffer and wakes it; the continuation looks again. The wake is
 * droppable: the bytes stay in the buffer, so a cancelled reader loses
 * nothing.
 *
 * A write first tries uv_try_write. What the kernel does not take at once
 * is copied into a request record and given to uv_write, and the task
 * suspends until the write callback: that is the back-pressure. A
 * cancelled writer leaves its request to finish (rule 5); the callback
 * frees it. */
#include <assert.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "lstream.h"

#define INITIAL_CAP ((size_t)16 << 10)
#define MIN_FREE ((size_t)4 << 10)
#define DEFAULT_READ ((size_t)64 << 10)

/* ---- per-engine state: every open stream, closed when the engine is ---- */

typedef struct {
  ar__list_t open;
} state_t;

static void state_close(ar_engine_t *E, void *data) {
  (void)E;
  state_t *st = data;
  while (!ar__list_empty(&st->open))
    ar__stream_close(ar__container_of(st->open.next, ar__stream_t, node));
}

static const ar__module_t stream_module = {"async.stream", sizeof(state_t),
                                           NULL, state_close, NULL};

/* A write to a pipe or socket whose reader is gone raises SIGPIPE, which
 * by default kills the process. Streams and the server want EPIPE instead
 * (raised as kind "closed"), so SIGPIPE is ignored if nobody chose
 * otherwise, as Node does. libuv restores the default in the children it
 * spawns. */
void ar__ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* ---- errors ------------------------------------------------------------ */

const char *ar__stream_error_kind(int err) {
  switch (err) {
  case UV_ECONNRESET: return "reset";
  case UV_EPIPE:
  case UV_ECANCELED:
  case UV_ENOTCONN:
  case UV_ESHUTDOWN:
  case UV_EBADF:
  case UV_EOF: return "closed";
  case UV_ETIMEDOUT: return "timeout";
  default: return "io";
  }
}

int ar__stream_raise(lua_State *L, const char *kind, int err,
                     const char *what) {
  ar__error_push(L, kind ? kind : ar__stream_error_kind(err), "%s: %s (%s)",
                 what, uv_err_name(err), uv_strerror(err));
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "errno");
  return ar__error_throw(L);
}

static int raise_closed(lua_State *L, const char *what) {
  return ar__error_raise(L, "closed", "%s: the stream is closed", what);
}

/* ---- the record -------------------------------------------------------- */

ar__stream_t *ar__stream_new(ar_engine_t *E, int kind) {
  state_t *st = ar__module_state(E, &stream_module);
  if (st == NULL) {
    if ((st = ar__module_open(E, &stream_module)) == NULL) return NULL;
    ar__list_init(&st->open);
    ar__ignore_sigpipe();
  }
  ar__stream_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  uv_loop_t *loop = ar_engine_loop(E);
  int rc = kind == AR__STREAM_TCP ? uv_tcp_init(loop, &s->u.tcp)
                                  : uv_pipe_init(loop, &s->u.pipe, 0);
  if (rc != 0) { /* only for bad arguments: nothing to close */
    free(s);
    return NULL;
  }
  s->u.handle.data = s;
  s->E = E;
  s->kind = (uint8_t)kind;
  ar__handle_opened(E);
  ar__list_insert_tail(&st->open, &s->node);
  return s;
}

static void close_cb(uv_handle_t *h) {
  ar__stream_t *s = h->data;
  ar_engine_t *E = s->E;
  assert(s->nreqs == 0); /* libuv ends requests before closing */
  free(s->buf);
  free(s);
  ar__handle_closed(E);
}

static void wake_reader(ar__stream_t *s) {
  ar__task_t *t = s->reader;
  if (t == NULL) return;
  s->reader = NULL;
  ar__task_wake(t, 0);
}

void ar__stream_close(ar__stream_t *s) {
  if (s->closing) return;
  s->closing = 1;
  if (s->box != NULL) *s->box = NULL;
  s->box = NULL;
  s->notify = NULL;
  ar__list_remove(&s->node);
  wake_reader(s); /* it finds its box empty and raises "closed" */
  uv_close(&s->u.handle, close_cb);
}

/* ---- reading ----------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  ar__stream_t *s = h->data;
  if (s->len == 0) s->head = 0;
  if (s->cap - s->head - s->len < MIN_FREE && s->head > 0) {
    memmove(s->buf, s->buf + s->head, s->len);
    s->head = 0;
  }
  if (s->cap - s->len < MIN_FREE) {
    size_t cap = s->cap ? s->cap * 2 : INITIAL_CAP;
    char *p = realloc(s->buf, cap);
    if (p == NULL) { /* libuv reports UV_ENOBUFS to read_cb */
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    s->buf = p;
    s->cap = cap;
  }
  *buf = uv_buf_init(s->buf + s->head + s->len,
                     (unsigned int)(s->cap - s->head - s->len));
}

static void stop_reading(ar__stream_t *s) {
  if (!s->reading) return;
  s->reading = 0;
  uv_read_stop(&s->u.stream);
}

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  ar__stream_t *s = h->data;
  if (nread == 0) return; /* EAGAIN */
  if (nread > 0) {
    s->len += (size_t)nread;
  } else {
    s->rerr = (int)nread;
    stop_reading(s);
  }
  if (s->collect) {
    if (s->notify != NULL) s->notify(s, s->notify_data);
    return;
  }
  wake_reader(s);
  if (s->len >= AR__STREAM_HIGH_WATER) stop_reading(s);
}

static int start_reading(ar__stream_t *s) {
  if (s->reading || s->rerr != 0 || s->closing) return 0;
  int rc = uv_read_start(&s->u.stream, alloc_cb, read_cb);
  if (rc == 0)
    s->reading = 1;
  else
    s->rerr = rc;
  return rc;
}

int ar__stream_start(ar__stream_t *s) { return start_reading(s); }

/* After Lua took bytes: read ahead again below the high-water mark, and
 * give back a large buffer once it is empty. */
static void consumed(ar__stream_t *s, size_t n) {
  s->head += n;
  s->len -= n;
  s->scanned = s->scanned > n ? s->scanned - n : 0;
  if (s->len == 0) {
    s->head = 0;
    if (s->cap > 4 * INITIAL_CAP && !s->reading) {
      free(s->buf);
      s->buf = NULL;
      s->cap = 0;
    }
  }
  if (s->len < AR__STREAM_HIGH_WATER) start_reading(s);
}

/* ---- the box ----------------------------------------------------------- */

static ar__stream_t **check_box(lua_State *L) {
  return luaL_checkudata(L, 1, AR__STREAM_MT);
}

ar__stream_t **ar__stream_newbox(lua_State *L) {
  ar__stream_t **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, AR__STREAM_MT);
  return box;
}

void ar__stream_bind(ar__stream_t **box, ar__stream_t *s) {
  assert(s->box == NULL && !s->closing);
  *box = s;
  s->box = box;
}

enum { OP_READ, OP_LINE, OP_ALL };
static const char *const op_names[] = {"stream:read", "stream:read_line",
                                       "stream:read_all"};

static int read_cancel(ar__task_t *t, void *data) {
  ar__stream_t *s = data;
  if (s->reader == t) s->reader = NULL;
  if (s->len >= AR__STREAM_HIGH_WATER) stop_reading(s);
  return AR__CANCEL_DONE;
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

/* One attempt at a read of kind op: returns its results, raises, or
 * suspends until the buffer changes and then tries again (read_k). */
static int read_step(lua_State *L, int op) {
  ar__stream_t *s = *check_box(L);
  if (s == NULL) return raise_closed(L, op_names[op]);
  if (s->reader != NULL && s->reader != ar__task_current(L))
    return luaL_error(L, "%s: another task is already reading this stream",
                      op_names[op]);
  const char *p = s->buf + s->head;
  switch (op) {
  case OP_READ:
    if (s->len > 0) {
      lua_Integer want = luaL_optinteger(L, 2, (lua_Integer)DEFAULT_READ);
      size_t n = s->len < (size_t)want ? s->len : (size_t)want;
      lua_pushlstring(L, p, n);
      consumed(s, n);
      return 1;
    }
    break;
  case OP_LINE: {
    const char *nl = s->len > s->scanned
                         ? memchr(p + s->scanned, '\n', s->len - s->scanned)
                         : NULL;
    if (nl != NULL) {
      size_t n = (size_t)(nl - p);
      lua_pushlstring(L, p, n > 0 && p[n - 1] == '\r' ? n - 1 : n);
      consumed(s, n + 1);
      return 1;
    }
    s->scanned = s->len;
    if (s->rerr == UV_EOF && s->len > 0) { /* a last line without \n */
      size_t n = s->len;
      lua_pushlstring(L, p, p[n - 1] == '\r' ? n - 1 : n);
      consumed(s, n);
      return 1;
    }
    break;
  }
  case OP_ALL:
    if (s->rerr == UV_EOF) {
      lua_pushlstring(L, s->len ? p : "", s->len);
      consumed(s, s->len);
      return 1;
    }
    break;
  }
  if (s->rerr == UV_EOF) {
    lua_pushnil(L);
    return 1;
  }
  if (s->rerr != 0) return ar__stream_raise(L, NULL, s->rerr, op_names[op]);
  ar__task_t *t = ar__task_check_current(L, op_names[op]);
  int rc = start_reading(s);
  if (rc != 0) return ar__stream_raise(L, NULL, rc, op_names[op]);
  s->reader = t;
  return ar__task_suspend(L, t, read_cancel, s, read_k, op);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return read_step(L, (int)ctx);
}

/* s:read([n]) -> up to n bytes (default 64 KiB) as soon as any are
 * there, or nil at the end of the stream. */
static int l_read(lua_State *L) {
  if (!lua_isnoneornil(L, 2) && luaL_checkinteger(L, 2) <= 0)
    return luaL_argerror(L, 2, "a byte count > 0 expected");
  lua_settop(L, 2);
  return read_step(L, OP_READ);
}

/* s:read_line() -> the next line without its "\n" or "\r\n"; a last line
 * without one too; nil at the end. */
static int l_read_line(lua_State *L) {
  lua_settop(L, 1);
  return read_step(L, OP_LINE);
}

/* s:read_all() -> everything up to the end ("" if nothing). */
static int l_read_all(lua_State *L) {
  lua_settop(L, 1);
  return read_step(L, OP_ALL);
}

static int lines_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  return read_step(L, OP_LINE);
}

/* for line in s:lines() do ... end */
static int l_lines(lua_State *L) {
  check_box(L);
  lua_settop(L, 1);
  lua_pushcclosure(L, lines_iter, 1);
  return 1;
}

/* ---- writing ----------------------------------------------------------- */

typedef struct {
  ar__work_t work; /* the writer, or orphaned; unused by send_and_shutdown */
  uv_write_t req;
  ar__stream_t *s;
  int tasked;
  char data[];
} wreq_t;

typedef struct {
  ar__work_t work;
  uv_shutdown_t req;
  ar__stream_t *s;
  int tasked;
} sreq_t;

/* Ends a request record: frees it, then finishes its count, last (with
 * a borrowed loop that may release the engine). Returns the task to wake,
 * if a task waits for it. */
static ar__task_t *req_done(ar__stream_t *s, void *rec, ar__work_t *work,
                            int tasked) {
  ar_engine_t *E = s->E;
  ar__work_t w = *work;
  s->nreqs--;
  free(rec);
  if (tasked) return ar__work_finish(&w);
  ar__req_finished(E);
  return NULL;
}

static void write_cb(uv_write_t *req, int status) {
  wreq_t *w = ar__container_of(req, wreq_t, req);
  ar__task_t *t = req_done(w->s, w, &w->work, w->tasked);
  /* kept: the bytes went out, so the writer learns it even if a
   * cancellation arrives before it runs. */
  if (t != NULL) ar__task_wake_kept(t, ar__stream_code(status));
}

static int write_cancel(ar__task_t *t, void *data) {
  (void)t;
  ar__work_orphan(&((wreq_t *)data)->work);
  return AR__CANCEL_DONE;
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  int rc = ar__stream_status(L);
  if (rc < 0) return ar__stream_raise(L, NULL, rc, "stream:write");
  lua_settop(L, 1);
  return 1;
}

/* Queues bufs[0..n) minus the first `done` bytes with uv_write, copied.
 * Returns the request or NULL with *rc set. */
static wreq_t *queue_write(ar__stream_t *s, const uv_buf_t *bufs, int n,
                           size_t done, int *rc) {
  size_t total = 0;
  for (int i = 0; i < n; i++)
    total += bufs[i].len;
  wreq_t *w = malloc(sizeof *w + (total - done));
  if (w == NULL) {
    *rc = UV_ENOMEM;
    return NULL;
  }
  char *p = w->data;
  for (int i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    const char *b = bufs[i].base;
    if (done >= len) {
      done -= len;
      continue;
    }
    memcpy(p, b + done, len - done);
    p += len - done;
    done = 0;
  }
  w->s = s;
  w->tasked = 0;
  uv_buf_t one = uv_buf_init(w->data, (unsigned int)(p - w->data));
  *rc = uv_write(&w->req, &s->u.stream, &one, 1, write_cb);
  if (*rc != 0) {
    free(w);
    return NULL;
  }
  s->nreqs++;
  return w; /* counted by the caller: ar__work_start or ar__req_started */
}

#define MAX_WRITE_ARGS 16

/* s:write(data, ...) -> s. Returns once the kernel has taken all of it;
 * suspends meanwhile. Numbers are written as strings, as file:write
 * does. */
static int l_write(lua_State *L) {
  ar__stream_t *s = *check_box(L);
  int n = lua_gettop(L) - 1;
  if (n > MAX_WRITE_ARGS)
    return luaL_error(L, "stream:write: at most %d values at once",
                      MAX_WRITE_ARGS);
  uv_buf_t bufs[MAX_WRITE_ARGS];
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    size_t len;
    const char *p = luaL_checklstring(L, i + 2, &len);
    bufs[i] = uv_buf_init((char *)p, (unsigned int)len);
    if (len > UINT32_MAX) return luaL_argerror(L, i + 2, "string too long");
    total += len;
  }
  if (s == NULL) return raise_closed(L, "stream:write");
  if (total == 0) {
    lua_settop(L, 1);
    return 1;
  }
  ar__task_t *t = ar__task_check_current(L, "stream:write");
  size_t done = 0;
  int rc = uv_try_write(&s->u.stream, bufs, (unsigned int)n);
  if (rc >= 0) {
    done = (size_t)rc;
    if (done == total) {
      lua_settop(L, 1);
      return 1;
    }
  } else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
    return ar__stream_raise(L, NULL, rc, "stream:write");
  }
  wreq_t *w = queue_write(s, bufs, n, done, &rc);
  if (w == NULL) return ar__stream_raise(L, NULL, rc, "stream:write");
  w->tasked = 1;
  ar__work_start(&w->work, t);
  lua_settop(L, 1);
  return ar__task_suspend(L, t, write_cancel, w, write_k, 0);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  sreq_t *r = ar__container_of(req, sreq_t, req);
  ar__task_t *t = req_done(r->s, r, &r->work, r->tasked);
  if (t != NULL) ar__task_wake_kept(t, ar__stream_code(status));
}

static sreq_t *queue_shutdown(ar__stream_t *s, int *rc) {
  sreq_t *r = malloc(sizeof *r);
  if (r == NULL) {
    *rc = UV_ENOMEM;
    return NULL;
  }
  r->s = s;
  r->tasked = 0;
  *rc = uv_shutdown(&r->req, &s->u.stream, shutdown_cb);
  if (*rc != 0) {
    free(r);
    return NULL;
  }
  s->nreqs++;
  return r; /* counted by the caller */
}

int ar__stream_send_and_shutdown(ar__stream_t *s, const char *data,
                                 size_t len) {
  int rc = 0;
  size_t done = 0;
  if (len > 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
    rc = uv_try_write(&s->u.stream, &b, 1);
    if (rc >= 0)
      done = (size_t)rc;
    else if (rc != UV_EAGAIN)
      return rc;
    if (done < len) {
      if (queue_write(s, &b, 1, done, &rc) == NULL) return rc;
      ar__req_started(s->E);
    }
  }
  if (queue_shutdown(s, &rc) == NULL) return rc;
  ar__req_started(s->E);
  return 0;
}

static int shutdown_cancel(ar__task_t *t, void *data) {
  (void)t;
  ar__work_orphan(&((sreq_t *)data)->work);
  return AR__CANCEL_DONE;
}

static int shutdown_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  int rc = ar__stream_status(L);
  if (rc < 0 && rc != UV_ENOTCONN)
    return ar__stream_raise(L, NULL, rc, "stream:shutdown");
  return 0;
}

/* s:shutdown(): after the pending writes, ends the writing side (the
 * peer reads the end of the stream); reading goes on. */
static int l_shutdown(lua_State *L) {
  ar__stream_t *s = *check_box(L);
  if (s == NULL) return raise_closed(L, "stream:shutdown");
  ar__task_t *t = ar__task_check_current(L, "stream:shutdown");
  int rc;
  sreq_t *r = queue_shutdown(s, &rc);
  if (r == NULL) {
    if (rc == UV_ENOTCONN) return 0; /* already shut down */
    return ar__stream_raise(L, NULL, rc, "stream:shutdown");
  }
  r->tasked = 1;
  ar__work_start(&r->work, t);
  return ar__task_suspend(L, t, shutdown_cancel, r, shutdown_k, 0);
}

/* ---- closing and the rest ---------------------------------------------- */

/* s:close(): idempotent; also __close and __gc. */
static int l_close(lua_State *L) {
  ar__stream_t *s = *check_box(L);
  if (s != NULL) ar__stream_close(s);
  return 0;
}

/* s:closed() -> true once closed (by s:close(), or its owner). */
static int l_closed(lua_State *L) {
  lua_pushboolean(L, *check_box(L) == NULL);
  return 1;
}

/* s:buffered() -> bytes read from the peer and not yet by the script. */
static int l_buffered(lua_State *L) {
  ar__stream_t *s = *check_box(L);
  lua_pushinteger(L, s != NULL ? (lua_Integer)s->len : 0);
  return 1;
}

static int l_tostring(lua_State *L) {
  ar__stream_t *s = *check_box(L);
  if (s == NULL)
    lua_pushfstring(L, "stream (closed): %p", lua_topointer(L, 1));
  else
    lua_pushfstring(L, "stream (%s): %p",
                    s->kind == AR__STREAM_TCP ? "tcp" : "pipe",
                    lua_topointer(L, 1));
  return 1;
}

void ar__stream_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"read", l_read},   {"read_line", l_read_line}, {"read_all", l_read_all},
      {"lines", l_lines}, {"write", l_write},         {"shutdown", l_shutdown},
      {"close", l_close}, {"closed", l_closed},       {"buffered", l_buffered},
      {NULL, NULL}};
  if (!luaL_newmetatable(L, AR__STREAM_MT)) {
    lua_pop(L, 1);
    return;
  }
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, l_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
