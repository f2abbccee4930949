/* Host operations: a C function of the host suspends its task on an op,
 * and the host completes the op later from its own loop callbacks. Built
 * on the engine's one suspension mechanism (ar__task_suspend / wake), so a
 * host operation is cancelled like a sleep: the op's cancel function runs
 * the host's cancel callback, exactly once, instead of a completion.
 *
 * The host's values are built when it completes the op, in a protected
 * call on the engine's main thread, then moved onto the waiting task's
 * stack; a failure to build them (memory, or a push callback that raises)
 * becomes the error the script's call raises. So the host's data is only
 * read during the completing call, and nothing it does can raise through
 * its own code. */
#include <stdarg.h>
#include <string.h>

#include "internal.h"

enum {
  OP_STARTED,   /* made by ar_op_new, not yet suspended on */
  OP_WAITING,   /* its task is suspended on it */
  OP_EARLY,     /* completed before ar_op_suspend: values on the task */
  OP_CANCELLING /* its cancel callback is running */
};

/* How the task resumes (its wake code, or op->flags when early). */
#define OP_RAISE 1 /* raise the value woken with */
#define OP_NOMEM 2 /* no room even for an error: raise "not enough memory" */

struct ar_op_s {
  ar_engine_t *E;
  ar__task_t *task;
  ar_op_cancel_cb cancel_cb;
  void *data;
  int state;
  int nvals;       /* early: values on the task's stack */
  int flags;       /* early: OP_RAISE / OP_NOMEM */
  ar__list_t node; /* in E->ops until freed */
};

static void op_free(ar_op_t *op) {
  ar__list_remove(&op->node);
  free(op);
}

void ar__op_free_all(ar_engine_t *E) {
  while (!ar__list_empty(&E->ops))
    op_free(ar__container_of(E->ops.next, ar_op_t, node));
}

ar_op_t *ar_op_new(lua_State *L, ar_op_cancel_cb cancel_cb, void *data) {
  ar__task_t *t = ar__task_current(L);
  if (t == NULL) return NULL;
  ar_op_t *op = malloc(sizeof *op);
  if (op == NULL) return NULL;
  op->E = t->E;
  op->task = t;
  op->cancel_cb = cancel_cb;
  op->data = data;
  op->state = OP_STARTED;
  op->nvals = 0;
  op->flags = 0;
  ar__list_insert_tail(&t->E->ops, &op->node);
  return op;
}

void *ar_op_data(ar_op_t *op) { return op->data; }
ar_engine_t *ar_op_engine(ar_op_t *op) { return op->E; }

void ar_op_drop(ar_op_t *op) {
  if (op == NULL || op->state == OP_WAITING || op->state == OP_CANCELLING)
    return; /* suspended on: the task owns it now */
  op_free(op);
}

/* The task's cancel function: the host aborts, then the op is gone. */
static int op_cancel(ar__task_t *t, void *data) {
  (void)t;
  ar_op_t *op = data;
  op->state = OP_CANCELLING;
  if (op->cancel_cb != NULL) op->cancel_cb(op, op->data);
  op_free(op);
  return AR__CANCEL_DONE;
}

/* Continuation: the values the op was completed with, or its error raised
 * where the script called (the caller of the host's C function). */
static int resumed(lua_State *L, int flags, int base) {
  if (flags & OP_NOMEM) return luaL_error(L, "not enough memory");
  if (flags & OP_RAISE) {
    ar__error_locate(L, 1);
    return lua_error(L);
  }
  return lua_gettop(L) - base;
}

static int op_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return resumed(L, ar__task_woken(L), (int)ctx);
}

int ar_op_suspend(lua_State *L, ar_op_t *op) {
  ar__task_t *t = op->task;
  if (op->state == OP_EARLY) {
    int flags = op->flags, base = lua_gettop(L) - op->nvals;
    op_free(op);
    return resumed(L, flags, base);
  }
  op->state = OP_WAITING;
  /* With a cancel pending, op_cancel runs right away (it finds op in
   * wait_data) and "cancelled" is raised. */
  return ar__task_suspend(L, t, op_cancel, op, op_k,
                          (lua_KContext)lua_gettop(L));
}

/* ---- completion ---------------------------------------------------------- */

struct push {
  ar_op_t *op;
  ar_push_cb cb; /* one of: a host callback, */
  void *data;
  const char *fmt; /* a format and its values, */
  va_list *ap;
  const char *kind; /* or an error */
  const char *message;
  int n; /* values moved to the task */
};

static int push_values(lua_State *L, struct push *p) {
  int n = 0;
  for (const char *f = p->fmt; *f != '\0'; f++, n++) {
    luaL_checkstack(L, 1, "too many values");
    switch (*f) {
    case 'n': lua_pushnil(L); break;
    case 'b': lua_pushboolean(L, va_arg(*p->ap, int)); break;
    case 'i': lua_pushinteger(L, va_arg(*p->ap, int)); break;
    case 'I': lua_pushinteger(L, va_arg(*p->ap, lua_Integer)); break;
    case 'd': lua_pushnumber(L, va_arg(*p->ap, double)); break;
    case 's': {
      const char *s = va_arg(*p->ap, const char *);
      if (s != NULL)
        lua_pushstring(L, s);
      else
        lua_pushnil(L);
      break;
    }
    case 'S': {
      const char *s = va_arg(*p->ap, const char *);
      size_t len = va_arg(*p->ap, size_t);
      lua_pushlstring(L, s, len);
      break;
    }
    default:
      return luaL_error(L, "bad format character '%c' in ar_op_resolve_values",
                        *f);
    }
  }
  return n;
}

/* Protected, on the main thread: builds the values, then moves them to
 * the task's stack. */
static int push_p(lua_State *L) {
  struct push *p = lua_touserdata(L, 1);
  lua_State *co = p->op->task->co;
  int base = lua_gettop(L), n;
  if (p->cb != NULL) {
    n = p->cb(L, p->data);
    if (n < 0 || n > lua_gettop(L) - base)
      return luaL_error(L, "push callback returned %d for %d values", n,
                        lua_gettop(L) - base);
  } else if (p->fmt != NULL) {
    n = push_values(L, p);
  } else {
    ar__error_push(L, p->kind != NULL ? p->kind : "error", "%s",
                   p->message != NULL ? p->message : "operation failed");
    n = 1;
  }
  if (!lua_checkstack(co, n)) return luaL_error(L, "not enough memory");
  lua_xmove(L, co, n);
  p->n = n;
  return 0;
}

static int op_complete(ar_op_t *op, struct push *p, int raise) {
  if (op == NULL) return AR_EINVAL;
  if (op->state == OP_CANCELLING) return AR_ECANCELLED;
  if (op->state == OP_EARLY) return AR_EINVAL; /* completed twice */
  ar_engine_t *E = op->E;
  lua_State *L = E->L, *co = op->task->co;
  int top = lua_gettop(L), rc = 0, flags = raise ? OP_RAISE : 0;
  p->op = op;
  p->n = 0;
  if (lua_checkstack(L, 2)) {
    lua_pushcfunction(L, push_p);
    lua_pushlightuserdata(L, p);
    E->mem_armed++;
    int st = lua_pcall(L, 1, 0, 0);
    E->mem_armed--;
    if (st != LUA_OK) {
      rc = st == LUA_ERRMEM ? AR_ENOMEM : AR_ERUNTIME;
      flags = OP_RAISE;
      if (lua_checkstack(co, 1)) {
        lua_xmove(L, co, 1);
        p->n = 1;
      } else {
        flags = OP_NOMEM;
      }
    }
  } else {
    rc = AR_ENOMEM;
    flags = OP_NOMEM;
  }
  lua_settop(L, top);
  if (op->state == OP_STARTED) {
    /* Completed inside the C function that made it: ar_op_suspend will
     * return the values, which sit on top of its task's stack. */
    op->state = OP_EARLY;
    op->nvals = p->n;
    op->flags = flags;
    return rc;
  }
  ar__task_t *t = op->task;
  op_free(op);
  t->nvals = p->n;
  ar__task_wake(t, flags);
  return rc;
}

int ar_op_resolve(ar_op_t *op, ar_push_cb push, void *data) {
  if (push == NULL) return AR_EINVAL;
  struct push p = {.cb = push, .data = data};
  return op_complete(op, &p, 0);
}

int ar_op_resolve_values(ar_op_t *op, const char *fmt, ...) {
  if (fmt == NULL) return AR_EINVAL;
  va_list ap;
  va_start(ap, fmt);
  struct push p = {.fmt = fmt, .ap = &ap};
  int rc = op_complete(op, &p, 0);
  va_end(ap);
  return rc;
}

int ar_op_reject(ar_op_t *op, const char *kind, const char *message) {
  struct push p = {.kind = kind, .message = message};
  return op_complete(op, &p, 1);
}
