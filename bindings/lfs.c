/* The "async.fs" module: files and paths on libuv's thread pool, so a slow
 * disk suspends only the task that touches it (docs/fs.md).
 *
 * Two kinds of C records do the work, both in C memory so that they can
 * outlive the task (and the userdata) that started them:
 *
 * - fsreq_t, one operation of a task (open, stat, write_file, a write to a
 *   file...). It may take several uv_fs_* steps (write_file: open the temp
 *   file, write, fsync, close, rename, fsync the folder), chained in C by
 *   the uv callback; the task is woken once, at the end. Cancelling the
 *   task orphans the record (ar__work_orphan): the task resumes at once,
 *   the step in flight runs to its end, and the chain then only undoes
 *   what it did (closes the descriptor an open got, removes the temporary
 *   file) and frees itself. While the task waits, a small userdata on its
 *   stack (a "box") points at the record, so that a Lua error in the
 *   continuation cannot leak it.
 *
 * - file_t, an open file. Reads go through its buffers: a fill (one
 *   pread at a time, at most one in flight) belongs to
 *   the file, not to a task, so a task waiting for data only waits in the
 *   file's list of waiters, and cancelling it just unlinks it; the data,
 *   when it comes, stays in the file for the next read. Sequential readers
 *   (chunks, lines, repeated reads) get double buffering: while Lua
 *   consumes one buffer the pool fills the next. Everything that moves the
 *   position (write, seek, close) first waits until no request uses the
 *   descriptor, then drops what was read ahead. The record is counted:
 *   one reference for the userdata, one per request in flight; the last
 *   one frees it. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "module.h"
#include "modules.h"
#include "toolkit.h"

#define FILE_MT "asyncrun.fs.file"
#define BOX_MT "asyncrun.fs.request"

/* Bytes per read from the pool: the first read of a file (or after a
 * seek) is small, and each sequential one doubles, so a small file costs
 * a small buffer and a long stream amortises the thread hand-offs. */
#define FILL_MIN ((size_t)64 << 10)
#define FILL_MAX ((size_t)2 << 20)
/* A reader that finds its data in the buffers never waits. So that a loop
 * over a big file cannot starve timers and other tasks, it looks at the
 * clock every TURN_BYTES it takes, and after TURN_NS of running lets the
 * loop go round once. */
#define TURN_BYTES ((size_t)64 << 10)
#define TURN_NS 2000000
#define WRITE_MAX ((size_t)1 << 22) /* bytes copied per write request */
#define CHUNK_DEFAULT 65536

typedef struct file_s file_t;
typedef struct fsreq_s fsreq_t;

/* Per-engine state: the open files, so that the engine's teardown closes
 * their descriptors. */
typedef struct {
  ar__list_t files;
} fs_state_t;

static void fs_state_close(ar_engine_t *E, void *state);
static const ar__module_t fs_module = {"async.fs", sizeof(fs_state_t), NULL,
                                       fs_state_close, NULL};

/* ---- errors -------------------------------------------------------------- */

/* Raises {kind="fs", op=, path=, errno=, message="op 'path': ENOENT (...)"}
 * (and target= for a rename). */
static int fs_raise(lua_State *L, const char *op, const char *path,
                    const char *target, int err) {
  if (target != NULL)
    ar__error_push(L, "fs", "%s '%s' -> '%s': %s (%s)", op, path, target,
                   uv_err_name(err), uv_strerror(err));
  else
    ar__error_push(L, "fs", "%s '%s': %s (%s)", op, path, uv_err_name(err),
                   uv_strerror(err));
  lua_pushstring(L, op);
  lua_setfield(L, -2, "op");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "errno");
  if (target != NULL) {
    lua_pushstring(L, target);
    lua_setfield(L, -2, "target");
  }
  return ar__error_throw(L);
}

/* ---- descriptors closed without anyone waiting --------------------------- */

typedef struct {
  uv_fs_t req;
  ar_engine_t *E;
} dclose_t;

static void dclose_cb(uv_fs_t *req) {
  dclose_t *d = ar__container_of(req, dclose_t, req);
  ar_engine_t *E = d->E;
  uv_fs_req_cleanup(req);
  free(d);
  ar__req_finished(E);
}

/* Closes fd on the pool; nobody learns the outcome (a file collected
 * unclosed, a <close> variable, an orphaned open, the engine's teardown).
 * Without memory for the request the close is done here: close(2) on a
 * regular file does not wait for the disk. */
static void close_detached(ar_engine_t *E, uv_file fd) {
  dclose_t *d = malloc(sizeof *d);
  if (d != NULL) {
    d->E = E;
    if (uv_fs_close(ar_engine_loop(E), &d->req, fd, dclose_cb) == 0) {
      ar__req_started(E);
      return;
    }
    free(d);
  }
  uv_fs_t req;
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
}

/* ---- files --------------------------------------------------------------- */

enum { FILL_NONE, FILL_RUNNING, FILL_DONE };

/* Reads ahead in flight at once for a sequential reader: two, so that one
 * read's hand-off between the pool and the loop overlaps the other. */
#define NFILL 2

/* One read of the file into buf, at off. */
typedef struct {
  uv_fs_t req;
  file_t *f;
  char *buf;
  size_t cap;
  int64_t off;
  ssize_t res;
  int state;
} fill_t;

struct file_s {
  ar_engine_t *E;
  fs_state_t *S;       /* NULL once the engine's teardown has begun */
  ar__list_t node;     /* in S->files while fd is open */
  uv_file fd;          /* -1 once handed to a close */
  int refs;            /* the userdata + requests in flight */
  char *path;          /* for error messages */
  unsigned closed : 1; /* closed as far as Lua is concerned */
  unsigned append : 1; /* opened with "a": writes go to the end */
  unsigned nopos : 1;  /* not seekable (a FIFO): plain read(2) */
  unsigned eof : 1;    /* the last fill read nothing */
  unsigned stream : 1; /* sequential reader: read ahead */
  unsigned busy : 1;   /* a task's request (write, seek, close) uses fd */
  int nrun;            /* fills running on the pool */
  int nfills;          /* fills since the last seek or write */
  int rerr;            /* a fill's error, raised by the next read */
  /* Read data: rb[rd..rlen) are the next bytes for Lua; rpos is the file
   * offset just after rlen, where the next fill reads. acc holds bytes
   * already taken from earlier buffers for a chunk or line that is not
   * complete; acc[0..scanned) are known to hold no '\n'. */
  char *rb;
  size_t rcap, rd, rlen;
  int64_t rpos;
  char *acc;
  size_t alen, acap, scanned;
  char *spare; /* a free buffer of scap bytes, or NULL */
  size_t scap;
  /* Fills, oldest first from fhead; nfill are running or done. They read
   * consecutive ranges from rpos; fpos is where the next one would. */
  fill_t fills[NFILL];
  int fhead, nfill;
  int64_t fpos;
  int64_t size_hint;  /* the size at open (a regular file), else -1 */
  ar__list_t waiters; /* tasks waiting for the file to be idle or filled */
  size_t turn;        /* bytes handed to Lua since the clock was read */
  uint64_t turn_t0;   /* when the running reader's turn began, or 0 */
  ar__timer_t yield;  /* wakes `yielder`, a reader letting the loop run */
  ar__task_t *yielder;
};

/* The position Lua sees. */
static int64_t file_pos(const file_t *f) {
  return f->rpos - (int64_t)(f->rlen - f->rd) - (int64_t)f->alen;
}

/* A request, a fill or a close is using the descriptor. */
static int file_inuse(const file_t *f) { return f->busy || f->nrun > 0; }

static void file_release(file_t *f) {
  if (--f->refs > 0) return;
  assert(f->fd < 0 && !file_inuse(f) && f->yielder == NULL);
  free(f->rb);
  free(f->acc);
  free(f->spare);
  for (int i = 0; i < NFILL; i++)
    free(f->fills[i].buf);
  free(f->path);
  free(f);
}

static void file_unlist(file_t *f) {
  if (f->S != NULL) ar__list_remove(&f->node);
}

/* Lets go of the descriptor without waiting (see close_detached). If a
 * request uses it, file_idle closes it when the last one ends. */
static void file_close_now(file_t *f) {
  f->closed = 1;
  if (f->fd >= 0 && !file_inuse(f)) {
    close_detached(f->E, f->fd);
    f->fd = -1;
    file_unlist(f);
  }
}

/* A request on fd has ended (C only: uv callbacks come here). */
static void file_idle(file_t *f) {
  if (f->closed) file_close_now(f);
  ar__task_t *t;
  while ((t = ar__waiters_shift(&f->waiters)) != NULL)
    ar__task_wake(t, 0);
}

/* Keeps the larger of b and the spare buffer, frees the other. */
static void buf_put(file_t *f, char *b, size_t cap) {
  if (f->spare != NULL && f->scap >= cap) {
    free(b);
    return;
  }
  free(f->spare);
  f->spare = b;
  f->scap = cap;
}

static void fills_drop(file_t *f) {
  assert(f->nrun == 0);
  for (int i = 0; i < NFILL; i++) {
    fill_t *fl = &f->fills[i];
    if (fl->buf != NULL) buf_put(f, fl->buf, fl->cap);
    fl->buf = NULL;
    fl->state = FILL_NONE;
  }
  f->fhead = f->nfill = 0;
}

/* Forgets what was read ahead: the next read starts at file_pos(). Only
 * while no fill runs. */
static void file_discard(file_t *f) {
  f->rpos = file_pos(f);
  f->rd = f->rlen = 0;
  f->alen = f->scanned = 0;
  fills_drop(f);
  f->eof = 0;
  f->rerr = 0;
  f->nfills = 0;
  f->stream = 0;
}

static void fill_cb(uv_fs_t *req);

/* Starts a fill after the others (at rpos if none). Returns 0 or a libuv
 * error. */
static int fill_start(file_t *f) {
  assert(f->nfill < NFILL && !f->busy && f->fd >= 0);
  if (f->nfill == 0) f->fpos = f->rpos;
  size_t size = FILL_MIN;
  for (int i = 0; i < f->nfills + f->nfill && size < FILL_MAX; i++)
    size *= 2;
  if (f->stream) size = FILL_MAX; /* chunks(), lines(): read it all */
  /* A file smaller than that is read in one go, with a byte to spare, so
   * that the read comes back short: the end, without one more read. */
  if (f->size_hint >= 0) {
    int64_t left = f->size_hint - f->fpos + 1;
    if (left > 0 && left < (int64_t)size)
      size = left < 4096 ? 4096 : (size_t)left;
  }
  char *buf = f->spare;
  if (buf != NULL && f->scap >= size) {
    size = f->scap;
    f->spare = NULL;
  } else if ((buf = malloc(size)) == NULL) {
    return UV_ENOMEM;
  }
  fill_t *fl = &f->fills[(f->fhead + f->nfill) % NFILL];
  uv_buf_t b = uv_buf_init(buf, (unsigned)size);
  int rc = uv_fs_read(ar_engine_loop(f->E), &fl->req, f->fd, &b, 1,
                      f->nopos ? -1 : f->fpos, fill_cb);
  if (rc < 0) {
    buf_put(f, buf, size);
    return rc;
  }
  fl->f = f;
  fl->buf = buf;
  fl->cap = size;
  fl->off = f->fpos;
  fl->state = FILL_RUNNING;
  f->fpos += (int64_t)size;
  f->nfill++;
  f->nrun++;
  f->refs++;
  ar__req_started(f->E);
  return 0;
}

/* Starts fills up to the depth a reader of this kind gets. */
static void fills_top_up(file_t *f) {
  int depth = f->stream && !f->nopos ? NFILL : 1;
  while (f->nfill < depth && !f->busy && !f->closed && !f->eof &&
         fill_start(f) == 0) {
  }
}

static void fill_cb(uv_fs_t *req) {
  fill_t *fl = ar__container_of(req, fill_t, req);
  file_t *f = fl->f;
  ar_engine_t *E = f->E;
  ssize_t res = req->result;
  uv_fs_req_cleanup(req);
  /* A FIFO or a terminal cannot pread: read it as a stream instead. */
  if (res == UV_ESPIPE && !f->nopos && !f->closed) {
    f->nopos = 1;
    uv_buf_t b = uv_buf_init(fl->buf, (unsigned)fl->cap);
    if (uv_fs_read(ar_engine_loop(E), &fl->req, f->fd, &b, 1, -1, fill_cb) == 0)
      return;
  }
  fl->res = res;
  fl->state = FILL_DONE;
  f->nrun--;
  file_idle(f);
  file_release(f);
  ar__req_finished(E); /* last: with a borrowed loop it may free E */
}

/* Moves the oldest fill, done, into rb (which must be used up); the old
 * rb becomes the spare buffer. A fill that does not start where rb ends
 * (the one before it was short) is dropped: the next starts at rpos. */
static void fill_take(file_t *f) {
  fill_t *fl = &f->fills[f->fhead];
  assert(fl->state == FILL_DONE && f->rd == f->rlen);
  ssize_t res = fl->res;
  f->fhead = (f->fhead + 1) % NFILL;
  f->nfill--;
  fl->state = FILL_NONE;
  if (res < 0 || (fl->off != f->rpos && !f->nopos)) {
    buf_put(f, fl->buf, fl->cap);
    fl->buf = NULL;
    if (res < 0) f->rerr = (int)res;
    return;
  }
  if (f->rb != NULL) buf_put(f, f->rb, f->rcap);
  f->rb = fl->buf;
  f->rcap = fl->cap;
  fl->buf = NULL;
  f->rd = 0;
  f->rlen = (size_t)res;
  f->rpos += res;
  /* A regular file read short has ended (for now: the next read after
   * the end is reached looks again). */
  if (res == 0 || (!f->nopos && (size_t)res < fl->cap)) {
    f->eof = 1;
    return;
  }
  if (++f->nfills >= 2) f->stream = 1;
  fills_top_up(f);
}

/* ---- reading: bytes and lines out of the buffers ------------------------- */

static void acc_append(lua_State *L, file_t *f, const char *p, size_t n) {
  if (f->alen + n > f->acap) {
    size_t cap = f->acap ? f->acap : 256;
    while (cap < f->alen + n)
      cap *= 2;
    char *a = realloc(f->acc, cap);
    if (a == NULL) luaL_error(L, "not enough memory");
    f->acc = a;
    f->acap = cap;
  }
  memcpy(f->acc + f->alen, p, n);
  f->alen += n;
}

/* Pushes the next `want` bytes (fewer at the end of the file, nil at its
 * end) and returns 1; or returns 0 when rb is used up first. */
static int take_bytes(lua_State *L, file_t *f, size_t want) {
  size_t avail = f->rlen - f->rd;
  if (f->alen == 0 && avail >= want) { /* the common case: one copy */
    lua_pushlstring(L, f->rb + f->rd, want);
    f->rd += want;
    f->turn += want;
    return 1;
  }
  size_t n = want - f->alen;
  if (n > avail) n = avail;
  if (n > 0) {
    acc_append(L, f, f->rb + f->rd, n);
    f->rd += n;
  }
  if (f->alen < want && !f->eof) return 0;
  if (f->alen == 0) {
    f->eof = 0; /* the next read looks again: the file may grow */
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, f->acc, f->alen);
  f->turn += f->alen;
  f->alen = f->scanned = 0;
  return 1;
}

static void push_line(lua_State *L, const char *p, size_t n) {
  if (n > 0 && p[n - 1] == '\r') n--;
  lua_pushlstring(L, p, n);
}

/* As take_bytes for the next line, without its "\n" or "\r\n". */
static int take_line(lua_State *L, file_t *f) {
  if (f->alen > f->scanned) { /* bytes left by a cancelled read(n) */
    char *nl = memchr(f->acc + f->scanned, '\n', f->alen - f->scanned);
    if (nl != NULL) {
      size_t n = (size_t)(nl - f->acc);
      push_line(L, f->acc, n);
      memmove(f->acc, nl + 1, f->alen - n - 1);
      f->alen -= n + 1;
      f->scanned = 0;
      return 1;
    }
    f->scanned = f->alen;
  }
  const char *p = f->rb + f->rd;
  size_t avail = f->rlen - f->rd;
  const char *nl = avail > 0 ? memchr(p, '\n', avail) : NULL;
  if (nl != NULL) {
    size_t n = (size_t)(nl - p);
    f->turn += n + 1;
    if (f->alen == 0) {
      push_line(L, p, n);
    } else {
      acc_append(L, f, p, n);
      push_line(L, f->acc, f->alen);
      f->alen = f->scanned = 0;
    }
    f->rd += n + 1;
    return 1;
  }
  if (avail > 0) {
    acc_append(L, f, p, avail);
    f->rd = f->rlen;
    f->scanned = f->alen;
  }
  if (!f->eof) return 0;
  if (f->alen == 0) {
    f->eof = 0;
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, f->acc, f->alen); /* a last line without "\n" */
  f->alen = f->scanned = 0;
  return 1;
}

enum { TAKE_BYTES, TAKE_LINE };

/* Whether the reader has run for TURN_NS (then a new turn begins). */
static int turn_over(file_t *f) {
  uint64_t now = uv_hrtime();
  f->turn = 0;
  if (f->turn_t0 == 0) {
    f->turn_t0 = now;
    return 0;
  }
  if (now - f->turn_t0 < TURN_NS) return 0;
  f->turn_t0 = 0;
  return 1;
}

static void yield_cb(ar__timer_t *tm) {
  file_t *f = ar__container_of(tm, file_t, yield);
  ar__task_t *t = f->yielder;
  f->yielder = NULL;
  ar__task_wake(t, 0);
}

static int yield_cancel(ar__task_t *t, void *data) {
  (void)t;
  file_t *f = data;
  ar__timer_stop(f->E, &f->yield);
  f->yielder = NULL;
  return AR__CANCEL_DONE;
}

/* One read of `want` bytes or of a line: pushes it and returns 1, or
 * suspends the task until more data is there and resumes in k(ctx), which
 * calls this again. Waiting holds nothing but a place among the file's
 * waiters: the fill belongs to the file. */
static int consume(lua_State *L, file_t *f, int how, size_t want,
                   lua_KFunction k, lua_KContext ctx) {
  for (;;) {
    if (f->closed) return luaL_error(L, "attempt to use a closed file");
    if (f->turn >= TURN_BYTES && turn_over(f)) {
      ar__task_t *t = ar__task_current(L);
      if (t != NULL && lua_isyieldable(L) && f->yielder == NULL &&
          ar__timer_start(f->E, &f->yield, 0, yield_cb) == 0) {
        f->yielder = t;
        return ar__task_suspend(L, t, yield_cancel, f, k, ctx);
      }
    }
    if (how == TAKE_LINE ? take_line(L, f) : take_bytes(L, f, want)) return 1;
    if (f->rerr != 0) {
      int err = f->rerr;
      f->rerr = 0;
      return fs_raise(L, "read", f->path, NULL, err);
    }
    if (f->nfill > 0 && f->fills[f->fhead].state == FILL_DONE) {
      fill_take(f);
      continue;
    }
    ar__task_t *t = ar__task_check_current(L, "file:read");
    if (f->nfill == 0 && !f->busy) {
      int rc = fill_start(f);
      if (rc < 0) return fs_raise(L, "read", f->path, NULL, rc);
      fills_top_up(f);
    }
    f->turn = 0;
    f->turn_t0 = 0;
    ar__waiters_push(&f->waiters, t);
    return ar__task_suspend(L, t, ar__waiters_cancel, NULL, k, ctx);
  }
}

/* ---- requests: one operation of a task, in as many steps as it takes ---- */

enum {
  OP_OPEN,
  OP_READ_FILE,
  OP_WRITE_FILE,
  OP_STAT,
  OP_SCANDIR,
  OP_MKDIR,
  OP_REMOVE,
  OP_RENAME,
  OP_FWRITE, /* file ops: r->file is the file, marked busy */
  OP_FSIZE,
  OP_FCLOSE
};

enum {
  S_START,
  S_OPEN,
  S_FSTAT,
  S_READ,
  S_CLOSE,
  S_STAT,
  S_FCHMOD,
  S_WRITE,
  S_FSYNC,
  S_RENAME,
  S_DIROPEN,
  S_DIRSYNC,
  S_DIRCLOSE,
  S_SCANDIR,
  S_MKDIR,
  S_UNLINK,
  S_RMDIR,
  S_UNWIND_CLOSE,
  S_UNWIND_UNLINK
};

typedef struct {
  char *name;
  uv_dirent_type_t type;
} ent_t;

/* A userdata on the waiting task's stack, pointing at its request until
 * the continuation has used it: a Lua error there cannot leak it. */
typedef struct {
  fsreq_t *r;
} box_t;

struct fsreq_s {
  uv_fs_t req;
  ar__work_t work;
  ar_engine_t *E;
  box_t *box;        /* NULL once orphaned */
  file_t *file;      /* file ops: one reference, and the file is busy */
  const char *what;  /* the operation, as the script called it */
  const char *path;  /* in this block */
  const char *path2; /* rename's target, write_file's temporary file */
  char *dir;         /* write_file: the folder to fsync, malloc'd */
  int op, step;
  int err;       /* the outcome: 0 or a libuv error */
  int unwinding; /* undoing: closing fd, removing the temporary file */
  uv_file fd;    /* a descriptor this request opened and must close */
  int tmp;       /* write_file: the temporary file exists */
  int flags, mode, keep_mode, parents, follow, isdir, nopos;
  char *buf; /* read_file's data, a write's copy, mkdir's prefix */
  size_t len, cap, off;
  int64_t pos; /* a file write: where (-1: at the end) */
  ssize_t nwritten;
  uv_stat_t st;
  ent_t *ents;
  size_t nents;
  size_t plen; /* mkdir parents: bytes of path made so far */
};

static void req_cb(uv_fs_t *req);

static void req_free(fsreq_t *r) {
  if (r->fd >= 0) close_detached(r->E, r->fd); /* an open nobody took */
  for (size_t i = 0; i < r->nents; i++)
    free(r->ents[i].name);
  free(r->ents);
  free(r->buf);
  free(r->dir);
  free(r);
}

/* The continuation is done with r. */
static void req_drop(fsreq_t *r) {
  if (r->box != NULL) r->box->r = NULL;
  req_free(r);
}

static int sub(fsreq_t *r, int step, int rc) {
  r->step = step;
  return rc < 0 ? rc : 1;
}

/* Undoes what the chain did: closes the descriptor it opened, removes
 * its temporary file. Returns as step() does. */
static int unwind(fsreq_t *r) {
  uv_loop_t *loop = ar_engine_loop(r->E);
  r->unwinding = 1;
  if (r->fd >= 0)
    return sub(r, S_UNWIND_CLOSE, uv_fs_close(loop, &r->req, r->fd, req_cb));
  if (r->tmp)
    return sub(r, S_UNWIND_UNLINK,
               uv_fs_unlink(loop, &r->req, r->path2, req_cb));
  return 0;
}

static int fail(fsreq_t *r, ssize_t res) {
  if (r->err == 0) r->err = (int)res;
  return unwind(r);
}

/* mkdir with parents: the next prefix of path, in r->buf. */
static int mkdir_next(fsreq_t *r) {
  const char *p = r->path;
  size_t n = strlen(p), i = r->plen;
  while (i < n && p[i] == '/')
    i++;
  while (i < n && p[i] != '/')
    i++;
  r->plen = i;
  memcpy(r->buf, p, i);
  r->buf[i] = '\0';
  return sub(
      r, S_MKDIR,
      uv_fs_mkdir(ar_engine_loop(r->E), &r->req, r->buf, r->mode, req_cb));
}

static int mkdir_last(const fsreq_t *r) {
  const char *p = r->path + r->plen;
  while (*p == '/')
    p++;
  return *p == '\0';
}

static int write_file_data(fsreq_t *r) {
  uv_loop_t *loop = ar_engine_loop(r->E);
  if (r->off < r->len) {
    uv_buf_t b = uv_buf_init(
        r->buf + r->off,
        (unsigned)(r->len - r->off > INT32_MAX ? INT32_MAX : r->len - r->off));
    return sub(r, S_WRITE,
               uv_fs_write(loop, &r->req, r->fd, &b, 1, -1, req_cb));
  }
  return sub(r, S_FSYNC, uv_fs_fsync(loop, &r->req, r->fd, req_cb));
}

/* One step of r's chain: takes the result of the step that ended (res;
 * ignored at S_START) and submits the next. Returns 1 when a request was
 * submitted (req_cb follows), 0 when the chain is over (r->err holds the
 * outcome), or a libuv error when a submission failed at once (advance()
 * then calls again with it, as if the step had failed). */
static int step(fsreq_t *r, ssize_t res) {
  uv_loop_t *loop = ar_engine_loop(r->E);
  switch (r->step) { /* what the step that ended leaves behind */
  case S_OPEN:
  case S_DIROPEN:
    if (res >= 0) {
      r->fd = (uv_file)res;
      if (r->op == OP_WRITE_FILE && r->step == S_OPEN) r->tmp = 1;
    }
    break;
  case S_CLOSE:
  case S_DIRCLOSE:
  case S_UNWIND_CLOSE:
    /* A close that uv_cancel stopped before it ran left fd open. */
    if (res != UV_ECANCELED) r->fd = -1;
    break;
  case S_RENAME:
    if (res >= 0) r->tmp = 0;
    break;
  case S_UNWIND_UNLINK: r->tmp = 0; break;
  default: break;
  }
  if (r->unwinding) return unwind(r);
  /* A cancelled task: do nothing more, only undo. */
  if (r->step != S_START && r->work.task == NULL) return unwind(r);

  switch (r->op) {
  case OP_OPEN:
    switch (r->step) {
    case S_START:
      return sub(r, S_OPEN,
                 uv_fs_open(loop, &r->req, r->path, r->flags, r->mode, req_cb));
    case S_OPEN:
      if (res < 0) return fail(r, res);
      return sub(r, S_FSTAT, uv_fs_fstat(loop, &r->req, r->fd, req_cb));
    case S_FSTAT:
      if (res < 0) return fail(r, res);
      /* As Python: a folder is not a file, say so now, not at the read. */
      if (S_ISDIR(r->st.st_mode)) return fail(r, UV_EISDIR);
      r->nopos = !S_ISREG(r->st.st_mode) && !S_ISBLK(r->st.st_mode);
      return 0;
    }
    break;

  case OP_READ_FILE:
    switch (r->step) {
    case S_START:
      return sub(r, S_OPEN,
                 uv_fs_open(loop, &r->req, r->path, O_RDONLY, 0, req_cb));
    case S_OPEN:
      if (res < 0) return fail(r, res);
      return sub(r, S_FSTAT, uv_fs_fstat(loop, &r->req, r->fd, req_cb));
    case S_FSTAT:
      if (res < 0) return fail(r, res);
      if (S_ISDIR(r->st.st_mode)) return fail(r, UV_EISDIR);
      /* One byte more than the size, so that the read that finds the end
       * needs no new buffer; files of /proc say 0. */
      r->cap = (size_t)r->st.st_size + 1;
      if (r->cap < 4096) r->cap = 4096;
      if ((r->buf = malloc(r->cap)) == NULL) return fail(r, UV_ENOMEM);
      goto read_more;
    case S_READ:
      if (res < 0) return fail(r, res);
      if (res == 0)
        return sub(r, S_CLOSE, uv_fs_close(loop, &r->req, r->fd, req_cb));
      r->len += (size_t)res;
      if (r->len == r->cap) {
        char *b = realloc(r->buf, r->cap * 2);
        if (b == NULL) return fail(r, UV_ENOMEM);
        r->buf = b;
        r->cap *= 2;
      }
    read_more : {
      size_t n = r->cap - r->len;
      uv_buf_t b = uv_buf_init(r->buf + r->len,
                               (unsigned)(n > INT32_MAX ? INT32_MAX : n));
      return sub(r, S_READ,
                 uv_fs_read(loop, &r->req, r->fd, &b, 1, -1, req_cb));
    }
    case S_CLOSE: return 0;
    }
    break;

  case OP_WRITE_FILE:
    switch (r->step) {
    case S_START:
      return sub(r, S_STAT, uv_fs_stat(loop, &r->req, r->path, req_cb));
    case S_STAT:
      /* The new file keeps the old one's permissions. */
      if (res == 0) {
        if (S_ISDIR(r->st.st_mode)) return fail(r, UV_EISDIR);
        r->keep_mode = 1;
        r->mode = (int)(r->st.st_mode & 07777);
      } else if (res != UV_ENOENT) {
        return fail(r, res);
      }
      return sub(r, S_OPEN,
                 uv_fs_open(loop, &r->req, r->path2,
                            O_WRONLY | O_CREAT | O_EXCL, 0666, req_cb));
    case S_OPEN:
      if (res < 0) return fail(r, res);
      if (r->keep_mode)
        return sub(r, S_FCHMOD,
                   uv_fs_fchmod(loop, &r->req, r->fd, r->mode, req_cb));
      return write_file_data(r);
    case S_FCHMOD:
      if (res < 0) return fail(r, res);
      return write_file_data(r);
    case S_WRITE:
      if (res < 0) return fail(r, res);
      if (res == 0) return fail(r, UV_EIO);
      r->off += (size_t)res;
      return write_file_data(r);
    case S_FSYNC:
      if (res < 0) return fail(r, res);
      return sub(r, S_CLOSE, uv_fs_close(loop, &r->req, r->fd, req_cb));
    case S_CLOSE:
      if (res < 0) return fail(r, res);
      return sub(r, S_RENAME,
                 uv_fs_rename(loop, &r->req, r->path2, r->path, req_cb));
    case S_RENAME:
      if (res < 0) return fail(r, res);
      /* The rename is done; making it durable is the folder's fsync, a
       * best effort (some file systems refuse it). */
      return sub(
          r, S_DIROPEN,
          uv_fs_open(loop, &r->req, r->dir, O_RDONLY | O_DIRECTORY, 0, req_cb));
    case S_DIROPEN:
      if (res < 0) return 0;
      return sub(r, S_DIRSYNC, uv_fs_fsync(loop, &r->req, r->fd, req_cb));
    case S_DIRSYNC:
      return sub(r, S_DIRCLOSE, uv_fs_close(loop, &r->req, r->fd, req_cb));
    case S_DIRCLOSE: return 0;
    }
    break;

  case OP_STAT:
    if (r->step == S_START)
      return sub(r, S_STAT,
                 r->follow ? uv_fs_stat(loop, &r->req, r->path, req_cb)
                           : uv_fs_lstat(loop, &r->req, r->path, req_cb));
    return res < 0 ? fail(r, res) : 0;

  case OP_SCANDIR:
    if (r->step == S_START)
      return sub(r, S_SCANDIR,
                 uv_fs_scandir(loop, &r->req, r->path, 0, req_cb));
    return res < 0 ? fail(r, res) : 0;

  case OP_MKDIR:
    switch (r->step) {
    case S_START:
      if (r->parents) return mkdir_next(r);
      return sub(r, S_MKDIR,
                 uv_fs_mkdir(loop, &r->req, r->path, r->mode, req_cb));
    case S_MKDIR:
      if (!r->parents) return res < 0 ? fail(r, res) : 0;
      if (res < 0 && res != UV_EEXIST) return fail(r, res);
      if (!mkdir_last(r)) return mkdir_next(r);
      if (res == 0) return 0;
      /* It was there: fine if it is a folder, as with mkdir -p. */
      return sub(r, S_STAT, uv_fs_stat(loop, &r->req, r->path, req_cb));
    case S_STAT:
      if (res < 0) return fail(r, res);
      return S_ISDIR(r->st.st_mode) ? 0 : fail(r, UV_EEXIST);
    }
    break;

  case OP_REMOVE:
    switch (r->step) {
    case S_START:
      return sub(r, S_UNLINK, uv_fs_unlink(loop, &r->req, r->path, req_cb));
    case S_UNLINK:
      /* Linux says EISDIR for a folder: remove it as rmdir would. */
      if (res == UV_EISDIR)
        return sub(r, S_RMDIR, uv_fs_rmdir(loop, &r->req, r->path, req_cb));
      return res < 0 ? fail(r, res) : 0;
    case S_RMDIR: return res < 0 ? fail(r, res) : 0;
    }
    break;

  case OP_RENAME:
    if (r->step == S_START)
      return sub(r, S_RENAME,
                 uv_fs_rename(loop, &r->req, r->path, r->path2, req_cb));
    return res < 0 ? fail(r, res) : 0;

  case OP_FWRITE:
    switch (r->step) {
    case S_START: {
      uv_buf_t b = uv_buf_init(r->buf, (unsigned)r->len);
      return sub(
          r, S_WRITE,
          uv_fs_write(loop, &r->req, r->file->fd, &b, 1, r->pos, req_cb));
    }
    case S_WRITE:
      if (res < 0) return fail(r, res);
      if (res == 0) return fail(r, UV_EIO);
      r->nwritten = res;
      /* Appending: the position is the new end of the file. */
      if (r->pos < 0)
        return sub(r, S_FSTAT, uv_fs_fstat(loop, &r->req, r->file->fd, req_cb));
      return 0;
    case S_FSTAT: return res < 0 ? fail(r, res) : 0;
    }
    break;

  case OP_FSIZE:
    if (r->step == S_START)
      return sub(r, S_FSTAT, uv_fs_fstat(loop, &r->req, r->file->fd, req_cb));
    return res < 0 ? fail(r, res) : 0;

  case OP_FCLOSE:
    if (r->step == S_START) {
      uv_file fd = r->fd;
      return sub(r, S_CLOSE, uv_fs_close(loop, &r->req, fd, req_cb));
    }
    return res < 0 ? fail(r, res) : 0;
  }
  assert(0 && "fs: bad step");
  return fail(r, UV_EINVAL);
}

static int advance(fsreq_t *r, ssize_t res) {
  for (;;) {
    int rc = step(r, res);
    if (rc >= 0) return rc;
    res = rc;
  }
}

static int ent_cmp(const void *a, const void *b) {
  return strcmp(((const ent_t *)a)->name, ((const ent_t *)b)->name);
}

/* Copies a scandir's entries out of req (before uv_fs_req_cleanup), sorted
 * by name. Returns 0 or UV_ENOMEM. */
static int ents_collect(fsreq_t *r) {
  size_t n = (size_t)r->req.result;
  int rc = 0;
  r->ents = calloc(n > 0 ? n : 1, sizeof *r->ents);
  uv_dirent_t d;
  while (uv_fs_scandir_next(&r->req, &d) != UV_EOF) {
    if (r->ents == NULL || r->nents == n) continue; /* drain it all */
    char *name = strdup(d.name);
    if (name == NULL) {
      rc = UV_ENOMEM;
      continue;
    }
    r->ents[r->nents].name = name;
    r->ents[r->nents++].type = d.type;
  }
  if (r->ents == NULL) return UV_ENOMEM;
  qsort(r->ents, r->nents, sizeof *r->ents, ent_cmp);
  return rc;
}

/* The chain of r is over: wakes its task (from_cb), gives the file back,
 * and frees r if its task gave up (returns 0) or leaves it to the task's
 * continuation (returns 1). A write moves the position even if its task
 * gave up: the bytes are in the file. */
static int req_end(fsreq_t *r, int from_cb) {
  ar__task_t *t = r->work.task;
  if (t != NULL && from_cb) ar__task_wake(t, 0);
  file_t *f = r->file;
  if (f != NULL) {
    r->file = NULL;
    if (r->op == OP_FWRITE && r->err == 0) {
      f->rpos = r->pos < 0 ? (int64_t)r->st.st_size : r->pos + r->nwritten;
      if (f->size_hint >= 0 && f->rpos > f->size_hint) f->size_hint = f->rpos;
    }
    f->busy = 0;
    file_idle(f);
    file_release(f);
  }
  ar__work_t w = r->work;
  if (t == NULL) req_free(r);
  ar__work_finish(&w); /* last: with a borrowed loop it may free E */
  return t != NULL;
}

static void req_cb(uv_fs_t *req) {
  fsreq_t *r = ar__container_of(req, fsreq_t, req);
  ssize_t res = req->result;
  if (res >= 0 && (r->step == S_STAT || r->step == S_FSTAT))
    r->st = req->statbuf;
  if (res >= 0 && r->step == S_SCANDIR) {
    int rc = ents_collect(r);
    if (rc < 0) res = rc;
  }
  uv_fs_req_cleanup(req);
  if (advance(r, res)) return;
  req_end(r, 1);
}

/* The task is cancelled: it resumes at once; r finishes on its own. */
static int req_cancel(ar__task_t *t, void *data) {
  (void)t;
  fsreq_t *r = data;
  if (r->box != NULL) r->box->r = NULL;
  r->box = NULL;
  ar__work_orphan(&r->work);
  /* Not started yet: it never will (a close is let run: it is quick, and
   * wanted anyway). */
  if (r->op != OP_FCLOSE) uv_cancel((uv_req_t *)&r->req);
  return AR__CANCEL_DONE;
}

static int box_gc(lua_State *L) {
  box_t *b = lua_touserdata(L, 1);
  if (b->r != NULL) {
    b->r->box = NULL;
    req_free(b->r);
    b->r = NULL;
  }
  return 0;
}

/* Pushes a box and returns a new request for `what` on path (and
 * path2). Raises on memory errors before anything is started. */
static fsreq_t *req_new(lua_State *L, int op, const char *what,
                        const char *path, const char *path2) {
  size_t l1 = strlen(path), l2 = path2 != NULL ? strlen(path2) + 1 : 0;
  box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->r = NULL;
  luaL_setmetatable(L, BOX_MT);
  fsreq_t *r = malloc(sizeof *r + l1 + 1 + l2);
  if (r == NULL) luaL_error(L, "not enough memory");
  memset(r, 0, sizeof *r);
  r->E = ar__engine_of(L);
  r->op = op;
  r->what = what;
  r->fd = -1;
  r->box = box;
  box->r = r;
  char *p = (char *)(r + 1);
  memcpy(p, path, l1 + 1);
  r->path = p;
  if (path2 != NULL) {
    memcpy(p + l1 + 1, path2, l2);
    r->path2 = p + l1 + 1;
  }
  return r;
}

/* Starts r for the task t and suspends it; k(ctx = r) takes the outcome
 * and must req_drop(r) (or raise with req_raise). */
static int req_run(lua_State *L, ar__task_t *t, fsreq_t *r, lua_KFunction k) {
  ar__work_start(&r->work, t);
  if (advance(r, 0))
    return ar__task_suspend(L, t, req_cancel, r, k, (lua_KContext)r);
  req_end(r, 0); /* failed at once: no callback will come */
  return k(L, LUA_OK, (lua_KContext)r);
}

static int req_raise(lua_State *L, fsreq_t *r) {
  int err = r->err;
  const char *target = r->op == OP_RENAME ? r->path2 : NULL;
  if (target != NULL)
    ar__error_push(L, "fs", "%s '%s' -> '%s': %s (%s)", r->what, r->path,
                   target, uv_err_name(err), uv_strerror(err));
  else
    ar__error_push(L, "fs", "%s '%s': %s (%s)", r->what, r->path,
                   uv_err_name(err), uv_strerror(err));
  lua_pushstring(L, r->what);
  lua_setfield(L, -2, "op");
  lua_pushstring(L, r->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "errno");
  if (target != NULL) {
    lua_pushstring(L, target);
    lua_setfield(L, -2, "target");
  }
  req_drop(r);
  return ar__error_throw(L);
}

#define REQ(ctx) ((fsreq_t *)(ctx))

static const char *check_path(lua_State *L, int arg) {
  size_t len;
  const char *p = luaL_checklstring(L, arg, &len);
  if (strlen(p) != len) luaL_argerror(L, arg, "path contains a zero byte");
  if (len == 0) luaL_argerror(L, arg, "path is empty");
  return p;
}

/* ---- the file object ----------------------------------------------------- */

typedef struct {
  file_t *f; /* NULL once collected */
} fbox_t;

static file_t *check_file(lua_State *L, int idx) {
  fbox_t *b = ar__check_self(L, idx);
  return b->f;
}

static file_t *check_open(lua_State *L, int idx) {
  file_t *f = check_file(L, idx);
  if (f->closed) luaL_error(L, "attempt to use a closed file");
  return f;
}

static file_t *up_file(lua_State *L) {
  return ((fbox_t *)lua_touserdata(L, lua_upvalueindex(1)))->f;
}

static int wait_idle(lua_State *L, ar__task_t *t, file_t *f, lua_KFunction k,
                     lua_KContext ctx) {
  ar__waiters_push(&f->waiters, t);
  return ar__task_suspend(L, t, ar__waiters_cancel, NULL, k, ctx);
}

/* f:read(n) -> up to n bytes (exactly n unless the file ends), nil at the
 * end of the file. */
static int read_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return consume(L, check_file(L, 1), TAKE_BYTES, (size_t)ctx, read_k, ctx);
}

static int f_read(lua_State *L) {
  file_t *f = check_open(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "count must be >= 0");
  lua_settop(L, 2);
  return consume(L, f, TAKE_BYTES, (size_t)n, read_k, (lua_KContext)n);
}

static int chunk_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return consume(L, up_file(L), TAKE_BYTES, (size_t)ctx, chunk_k, ctx);
}

static int chunk_iter(lua_State *L) {
  file_t *f = up_file(L);
  size_t size = (size_t)lua_tointeger(L, lua_upvalueindex(2));
  f->stream = 1;
  return consume(L, f, TAKE_BYTES, size, chunk_k, (lua_KContext)size);
}

/* f:chunks([size]) -> iterator over chunks of size bytes (64 KiB). */
static int f_chunks(lua_State *L) {
  check_open(L, 1);
  lua_Integer size = luaL_optinteger(L, 2, CHUNK_DEFAULT);
  luaL_argcheck(L, size > 0, 2, "size must be > 0");
  lua_settop(L, 1);
  lua_pushinteger(L, size);
  lua_pushcclosure(L, chunk_iter, 2);
  return 1;
}

static int line_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return consume(L, up_file(L), TAKE_LINE, 0, line_k, ctx);
}

static int line_iter(lua_State *L) {
  file_t *f = up_file(L);
  f->stream = 1;
  return consume(L, f, TAKE_LINE, 0, line_k, 0);
}

/* f:lines() -> iterator over lines, without "\n" or "\r\n". */
static int f_lines(lua_State *L) {
  check_open(L, 1);
  lua_settop(L, 1);
  lua_pushcclosure(L, line_iter, 1);
  return 1;
}

/* f:write(s) -> f. Copies s in pieces of at most WRITE_MAX bytes: the pool
 * may still write a piece after its task gave up, and the string may be
 * gone by then. */
static int write_go(lua_State *L, size_t off);

static int write_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return write_go(L, (size_t)ctx);
}

static int write_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  size_t off = r->off + (size_t)r->nwritten;
  req_drop(r);
  return write_go(L, off);
}

static int write_go(lua_State *L, size_t off) {
  lua_settop(L, 2);
  file_t *f = check_open(L, 1);
  size_t len;
  const char *s = lua_tolstring(L, 2, &len);
  if (off >= len) {
    lua_settop(L, 1);
    return 1;
  }
  ar__task_t *t = ar__task_check_current(L, "file:write");
  if (file_inuse(f)) return wait_idle(L, t, f, write_wait_k, (lua_KContext)off);
  file_discard(f);
  size_t n = len - off < WRITE_MAX ? len - off : WRITE_MAX;
  fsreq_t *r = req_new(L, OP_FWRITE, "write", f->path, NULL);
  if ((r->buf = malloc(n)) == NULL) return luaL_error(L, "not enough memory");
  memcpy(r->buf, s + off, n);
  r->len = n;
  r->off = off;
  r->pos = f->append || f->nopos ? -1 : f->rpos; /* -1: write(2) */
  r->file = f;
  f->busy = 1;
  f->refs++;
  return req_run(L, t, r, write_done_k);
}

static int f_write(lua_State *L) {
  check_open(L, 1);
  luaL_checkstring(L, 2);
  return write_go(L, 0);
}

/* f:seek([whence [, offset]]) -> the new position; whence is "set",
 * "cur" (the default) or "end". */
static const char *const whences[] = {"set", "cur", "end", NULL};
enum { W_SET, W_CUR, W_END };

static int seek_go(lua_State *L);

static int seek_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return seek_go(L);
}

static int seek_to(lua_State *L, file_t *f, int64_t pos) {
  if (pos < 0) return fs_raise(L, "seek", f->path, NULL, UV_EINVAL);
  file_discard(f);
  f->rpos = pos;
  lua_pushinteger(L, (lua_Integer)pos);
  return 1;
}

static int seek_end_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  int64_t size = (int64_t)r->st.st_size;
  req_drop(r);
  file_t *f = check_open(L, 1);
  if (file_inuse(f)) return seek_go(L); /* another came first: again */
  return seek_to(L, f, size + luaL_optinteger(L, 3, 0));
}

static int seek_go(lua_State *L) {
  lua_settop(L, 3);
  file_t *f = check_open(L, 1);
  int whence = luaL_checkoption(L, 2, "cur", whences);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  if (whence == W_CUR && off == 0) { /* only asks where: no waiting */
    lua_pushinteger(L, (lua_Integer)file_pos(f));
    return 1;
  }
  if (f->nopos) return fs_raise(L, "seek", f->path, NULL, UV_ESPIPE);
  ar__task_t *t = ar__task_check_current(L, "file:seek");
  if (file_inuse(f)) return wait_idle(L, t, f, seek_k, 0);
  if (whence == W_SET) return seek_to(L, f, off);
  if (whence == W_CUR) return seek_to(L, f, file_pos(f) + off);
  fsreq_t *r = req_new(L, OP_FSIZE, "seek", f->path, NULL);
  r->file = f;
  f->busy = 1;
  f->refs++;
  return req_run(L, t, r, seek_end_k);
}

static int f_seek(lua_State *L) {
  check_open(L, 1);
  luaL_checkoption(L, 2, "cur", whences);
  luaL_optinteger(L, 3, 0);
  return seek_go(L);
}

/* f:close() -> true. Waits for the close and raises its error, when the
 * caller can wait; otherwise (no task, a context that cannot yield) the
 * descriptor is closed in the background. Closing twice does nothing. */
static int close_go(lua_State *L);

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  req_drop(r);
  lua_pushboolean(L, 1);
  return 1;
}

static int close_wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return close_go(L);
}

static void file_drop_buffers(file_t *f) {
  f->rd = f->rlen = 0;
  f->alen = f->scanned = 0;
  free(f->rb);
  f->rb = NULL;
  free(f->spare);
  f->spare = NULL;
  free(f->acc);
  f->acc = NULL;
  f->acap = 0;
}

static int close_go(lua_State *L) {
  lua_settop(L, 1);
  file_t *f = check_file(L, 1);
  ar__task_t *t = ar__task_current(L);
  if (f->closed || t == NULL || !lua_isyieldable(L)) {
    file_close_now(f);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (file_inuse(f)) return wait_idle(L, t, f, close_wait_k, 0);
  fsreq_t *r = req_new(L, OP_FCLOSE, "close", f->path, NULL);
  f->closed = 1;
  r->fd = f->fd; /* the request closes it, even if the task gives up */
  f->fd = -1;
  file_unlist(f);
  fills_drop(f);
  file_drop_buffers(f);
  return req_run(L, t, r, close_k);
}

static int f_close(lua_State *L) {
  check_file(L, 1);
  return close_go(L);
}

/* __close: a <close> variable going out of scope, perhaps while its task
 * unwinds from a cancellation: never waits. */
static int f_tbc(lua_State *L) {
  file_close_now(check_file(L, 1));
  return 0;
}

static int f_gc(lua_State *L) {
  fbox_t *b = lua_touserdata(L, 1);
  file_t *f = b->f;
  if (f == NULL) return 0;
  b->f = NULL;
  file_close_now(f);
  file_release(f);
  return 0;
}

static int f_tostring(lua_State *L) {
  file_t *f = check_file(L, 1);
  lua_pushfstring(L, "fs.file '%s'%s", f->path, f->closed ? " (closed)" : "");
  return 1;
}

/* ---- the module's functions ---------------------------------------------- */

static fs_state_t *state_of(lua_State *L) {
  fs_state_t *S = ar__module_open(ar__engine_of(L), &fs_module);
  if (S == NULL) luaL_error(L, "not enough memory");
  if (S->files.next == NULL) ar__list_init(&S->files);
  return S;
}

static void fs_state_close(ar_engine_t *E, void *state) {
  (void)E;
  fs_state_t *S = state;
  if (S->files.next == NULL) return;
  while (!ar__list_empty(&S->files)) {
    file_t *f = ar__container_of(S->files.next, file_t, node);
    ar__list_remove(&f->node);
    f->S = NULL;
    file_close_now(f);
  }
}

/* "r", "w", "a", each with "+" (read and write), "b" (ignored) and "x"
 * (fail if it exists) after it. Returns open(2) flags, or -1. */
static int parse_mode(const char *m, int *append) {
  int flags, plus = 0, excl = 0;
  char c = *m++;
  *append = 0;
  for (; *m != '\0'; m++) {
    if (*m == '+')
      plus = 1;
    else if (*m == 'x' && c != 'r')
      excl = 1;
    else if (*m != 'b')
      return -1;
  }
  switch (c) {
  case 'r': flags = plus ? O_RDWR : O_RDONLY; break;
  case 'w': flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC; break;
  case 'a':
    flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND;
    *append = 1;
    break;
  default: return -1;
  }
  return flags | (excl ? O_EXCL : 0);
}

static int open_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  file_t *f = ((fbox_t *)lua_touserdata(L, 3))->f;
  f->fd = r->fd;
  r->fd = -1;
  f->nopos = (unsigned)r->nopos;
  f->size_hint = r->nopos ? -1 : (int64_t)r->st.st_size;
  f->closed = 0;
  fs_state_t *S = state_of(L);
  f->S = S;
  ar__list_insert_tail(&S->files, &f->node);
  req_drop(r);
  lua_settop(L, 3);
  return 1;
}

/* fs.open(path [, mode]) -> file */
static int l_open(lua_State *L) {
  const char *path = check_path(L, 1);
  int append, flags = parse_mode(luaL_optstring(L, 2, "r"), &append);
  if (flags < 0) return luaL_argerror(L, 2, "invalid mode");
  ar__task_t *t = ar__task_check_current(L, "fs.open");
  state_of(L);
  lua_settop(L, 2);
  fbox_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->f = NULL;
  luaL_setmetatable(L, FILE_MT);
  file_t *f = calloc(1, sizeof *f);
  if (f == NULL || (f->path = strdup(path)) == NULL) {
    free(f);
    return luaL_error(L, "not enough memory");
  }
  f->E = ar__engine_of(L);
  f->fd = -1;
  f->refs = 1;
  f->closed = 1; /* until open_k */
  f->append = (unsigned)append;
  ar__list_init(&f->node);
  ar__list_init(&f->waiters);
  ar__timer_init(&f->yield);
  b->f = f;
  fsreq_t *r = req_new(L, OP_OPEN, "open", path, NULL);
  r->flags = flags;
  r->mode = 0666;
  return req_run(L, t, r, open_k);
}

static int read_file_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  lua_pushlstring(L, r->buf != NULL ? r->buf : "", r->len);
  req_drop(r);
  return 1;
}

/* fs.read_file(path) -> its whole content */
static int l_read_file(lua_State *L) {
  const char *path = check_path(L, 1);
  ar__task_t *t = ar__task_check_current(L, "fs.read_file");
  lua_settop(L, 1);
  return req_run(L, t, req_new(L, OP_READ_FILE, "read_file", path, NULL),
                 read_file_k);
}

static int done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  req_drop(r);
  return 0;
}

/* fs.write_file(path, data): a temporary file in the same folder, written,
 * fsynced, then renamed over path: readers see the old content or the new,
 * never a part. */
static int l_write_file(lua_State *L) {
  const char *path = check_path(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  ar__task_t *t = ar__task_check_current(L, "fs.write_file");
  lua_settop(L, 2);
  const char *slash = strrchr(path, '/');
  const char *base = slash != NULL ? slash + 1 : path;
  int dlen = slash != NULL ? (int)(slash - path) : 0;
  /* "dir/.name.<random>.tmp": hidden, and unique enough with O_EXCL. */
  unsigned char rnd[6] = {0};
  char hex[13];
  (void)uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
  snprintf(hex, sizeof hex, "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
           rnd[3], rnd[4], rnd[5]);
  lua_pushlstring(L, path, (size_t)(base - path));
  const char *tmp =
      lua_pushfstring(L, "%s.%s.%s.tmp", lua_tostring(L, -1), base, hex);
  fsreq_t *r = req_new(L, OP_WRITE_FILE, "write_file", path, tmp);
  r->dir = dlen > 0 ? strndup(path, (size_t)dlen)
                    : strdup(slash != NULL ? "/" : ".");
  r->len = len;
  if (r->dir == NULL || (len > 0 && (r->buf = malloc(len)) == NULL))
    return luaL_error(L, "not enough memory");
  if (len > 0) memcpy(r->buf, data, len);
  return req_run(L, t, r, done_k);
}

static const char *type_name(uv_dirent_type_t t) {
  switch (t) {
  case UV_DIRENT_FILE: return "file";
  case UV_DIRENT_DIR: return "directory";
  case UV_DIRENT_LINK: return "link";
  case UV_DIRENT_FIFO: return "fifo";
  case UV_DIRENT_SOCKET: return "socket";
  case UV_DIRENT_CHAR: return "char";
  case UV_DIRENT_BLOCK: return "block";
  default: return "unknown";
  }
}

static const char *mode_type(uint64_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "link";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "char";
  if (S_ISBLK(m)) return "block";
  return "unknown";
}

static int stat_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  uv_stat_t st = r->st;
  req_drop(r);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec +
                        (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  lua_pushstring(L, mode_type(st.st_mode));
  lua_setfield(L, -2, "type");
  return 1;
}

static int opt_flag(lua_State *L, int arg, const char *name) {
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_getfield(L, arg, name);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* fs.stat(path [, {follow=true}]) -> {size=, mtime=, mode=, type=}. A
 * symbolic link is described itself ("link") unless follow is set. */
static int l_stat(lua_State *L) {
  const char *path = check_path(L, 1);
  int follow = opt_flag(L, 2, "follow");
  ar__task_t *t = ar__task_check_current(L, "fs.stat");
  lua_settop(L, 2);
  fsreq_t *r = req_new(L, OP_STAT, "stat", path, NULL);
  r->follow = follow;
  return req_run(L, t, r, stat_k);
}

static int scandir_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fsreq_t *r = REQ(ctx);
  if (r->err != 0) return req_raise(L, r);
  lua_createtable(L, (int)r->nents, 0);
  for (size_t i = 0; i < r->nents; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, r->ents[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, type_name(r->ents[i].type));
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  req_drop(r);
  return 1;
}

/* fs.scandir(path) -> { {name=, type=}, ... } sorted by name (bytes) */
static int l_scandir(lua_State *L) {
  const char *path = check_path(L, 1);
  ar__task_t *t = ar__task_check_current(L, "fs.scandir");
  lua_settop(L, 1);
  return req_run(L, t, req_new(L, OP_SCANDIR, "scandir", path, NULL),
                 scandir_k);
}

/* fs.mkdir(path [, {parents=true, mode=0777}]) */
static int l_mkdir(lua_State *L) {
  const char *path = check_path(L, 1);
  int parents = opt_flag(L, 2, "parents");
  lua_Integer mode = 0777;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "mode");
    mode = luaL_optinteger(L, -1, 0777);
    lua_pop(L, 1);
  }
  ar__task_t *t = ar__task_check_current(L, "fs.mkdir");
  lua_settop(L, 2);
  fsreq_t *r = req_new(L, OP_MKDIR, "mkdir", path, NULL);
  r->parents = parents;
  r->mode = (int)(mode & 07777);
  if (parents && (r->buf = malloc(strlen(path) + 1)) == NULL)
    return luaL_error(L, "not enough memory");
  return req_run(L, t, r, done_k);
}

/* fs.remove(path): a file, a link, or an empty folder. */
static int l_remove(lua_State *L) {
  const char *path = check_path(L, 1);
  ar__task_t *t = ar__task_check_current(L, "fs.remove");
  lua_settop(L, 1);
  return req_run(L, t, req_new(L, OP_REMOVE, "remove", path, NULL), done_k);
}

/* fs.rename(from, to) */
static int l_rename(lua_State *L) {
  const char *from = check_path(L, 1);
  const char *to = check_path(L, 2);
  ar__task_t *t = ar__task_check_current(L, "fs.rename");
  lua_settop(L, 2);
  return req_run(L, t, req_new(L, OP_RENAME, "rename", from, to), done_k);
}

int luaopen_async_fs(lua_State *L) {
  static const luaL_Reg methods[] = {{"read", f_read},     {"write", f_write},
                                     {"seek", f_seek},     {"close", f_close},
                                     {"chunks", f_chunks}, {"lines", f_lines},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", f_tbc},
                                  {"__gc", f_gc},
                                  {"__tostring", f_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"open", l_open},
                                   {"read_file", l_read_file},
                                   {"write_file", l_write_file},
                                   {"stat", l_stat},
                                   {"scandir", l_scandir},
                                   {"mkdir", l_mkdir},
                                   {"remove", l_remove},
                                   {"rename", l_rename},
                                   {NULL, NULL}};
  ar__class_new(L, FILE_MT, methods, meta);
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
