/* Byte streams shared by async.process (pipes) and async.net (TCP).
 *
 * A stream is a C record (ar__stream_t) holding a uv_pipe_t or uv_tcp_t,
 * its read buffer and the task waiting to read. Lua sees a box, a userdata
 * holding a pointer to the record. The record is freed only in its close
 * callback; the box lets go of it (the pointer becomes NULL) when the
 * stream is closed, so a box never points at freed memory.
 *
 * Reading is buffered in C. The handle reads while a task waits to read,
 * or while the buffer holds less than AR__STREAM_HIGH_WATER bytes; beyond
 * that, with nobody reading, it stops (uv_read_stop), so a fast writer
 * fills the kernel's buffers and then waits, instead of growing ours. */
#ifndef AR_LSTREAM_H
#define AR_LSTREAM_H

#include "module.h"

#define AR__STREAM_MT "asyncrun.stream"
#define AR__STREAM_HIGH_WATER ((size_t)64 << 10)

typedef struct ar__stream_s ar__stream_t;

/* Ignores SIGPIPE unless the process chose otherwise (once the first
 * stream or server is made). */
void ar__ignore_sigpipe(void);

enum { AR__STREAM_PIPE, AR__STREAM_TCP };

/* Called from a libuv callback when a collecting stream (see collect)
 * received data, its end or an error. Follows rule 3: C only. */
typedef void (*ar__stream_notify_fn)(ar__stream_t *s, void *data);

struct ar__stream_s {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } u;
  ar_engine_t *E;
  ar__list_t node;    /* in the module's list of open streams */
  ar__stream_t **box; /* the Lua box's pointer to us, or NULL */
  char *buf;          /* input: buf[head .. head + len) */
  size_t head, len, cap;
  size_t scanned;     /* bytes from head known to hold no '\n' */
  ar__task_t *reader; /* the task waiting to read, or NULL */
  int rerr;           /* 0, UV_EOF, or the error that ended reading */
  int nreqs;          /* write and shutdown requests in flight */
  uint8_t kind;       /* AR__STREAM_PIPE or AR__STREAM_TCP */
  uint8_t reading;    /* uv_read_start is in effect */
  uint8_t closing;    /* uv_close called */
  uint8_t collect;    /* read everything, tell notify (process.exec) */
  ar__stream_notify_fn notify;
  void *notify_data;
};

/* A libuv status (0 or a negative error) through a task's wake code, which
 * the engine keeps in 16 bits, not negative: woken with
 * ar__stream_code(status), read back with ar__stream_status(L). */
static inline int ar__stream_code(int status) { return -status; }
static inline int ar__stream_status(lua_State *L) { return -ar__task_woken(L); }

/* Registers the stream metatable in L (idempotent). */
void ar__stream_open(lua_State *L);

/* A new record with its handle initialized (not open yet) and counted.
 * Returns NULL when memory runs out. The caller opens the handle
 * (uv_spawn, uv_accept, uv_tcp_connect), then starts reading with
 * ar__stream_start, or closes it with ar__stream_close. */
ar__stream_t *ar__stream_new(ar_engine_t *E, int kind);

/* Starts reading into the buffer. Returns 0 or a libuv error. */
int ar__stream_start(ar__stream_t *s);

/* Pushes an empty box (raises on memory errors, before anything is
 * bound); ar__stream_bind then hands s to it. */
ar__stream_t **ar__stream_newbox(lua_State *L);
void ar__stream_bind(ar__stream_t **box, ar__stream_t *s);

/* Closes s: the box lets go, a waiting reader is woken (and raises
 * "closed"), pending writes fail with "closed", the record is freed in
 * the close callback. Idempotent. Never calls Lua. */
void ar__stream_close(ar__stream_t *s);

/* Writes data without a task, then shuts the writing side down
 * (process.exec's stdin). Failures are ignored: the child may exit
 * without reading. Returns 0 or a libuv error. */
int ar__stream_send_and_shutdown(ar__stream_t *s, const char *data, size_t len);

/* The error kind for a libuv error met on a stream: "reset", "closed",
 * "timeout" or "io". */
const char *ar__stream_error_kind(int err);

/* Raises an engine error for err, of kind ar__stream_error_kind(err)
 * unless kind is given, with fields errno (e.g. "ECONNRESET"); the
 * message is "<what>: <errno> (<description>)". */
int ar__stream_raise(lua_State *L, const char *kind, int err, const char *what);

#endif
