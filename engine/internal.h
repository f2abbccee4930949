/* Declarations shared between the engine's files (the ar__ layer).
 * Nothing here is public: hosts use include/asyncrun.h. */
#ifndef AR_INTERNAL_H
#define AR_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "asyncrun.h"
#include "list.h"

typedef struct ar__task_s ar__task_t;
typedef struct ar__timer_s ar__timer_t;
typedef struct ar__done_s ar__done_t;

/* Names of the metatables, in the registry. */
#define AR__TASK_MT "asyncrun.task"
#define AR__TASK_FAILED_MT "asyncrun.task.failed" /* see ar__task_test */
#define AR__ERROR_MT "asyncrun.error"

/* ---- the small-block pool (alloc.c) ----------------------------------- */

#define AR__POOL_MAX 1024
#define AR__POOL_CLASSES (AR__POOL_MAX / 16 + 1)

typedef struct {
  void *free[AR__POOL_CLASSES]; /* per size class, linked through the blocks */
  char *bump, *end;             /* the unused rest of the newest chunk */
  void *chunks;                 /* every chunk, linked through its start */
} ar__pool_t;

/* lua_Alloc semantics (ptr, osize, nsize), minus the byte counting. */
void *ar__pool_realloc(ar__pool_t *p, void *ptr, size_t osize, size_t nsize);
/* Returns every chunk to the system; the pool is then empty and reusable. */
void ar__pool_close(ar__pool_t *p);

/* ---- timers (timer.c) ------------------------------------------------- */

/* A deadline kept in the engine's heap. It is embedded in whatever record
 * needs it (a task's wait, a limiter); the heap only points at it, so the
 * embedding record must stop it before it is freed. One uv_timer_t per
 * engine serves them all. */
struct ar__timer_s {
  uint64_t due;  /* uv_hrtime() nanoseconds */
  uint32_t seq;  /* ties broken in start order (compared modulo 2^32) */
  uint32_t slot; /* index in the heap, or AR__TIMER_IDLE */
  void (*cb)(ar__timer_t *t);
};
#define AR__TIMER_IDLE UINT32_MAX

void ar__timer_init(ar__timer_t *t);
/* Arms t to fire seconds from now (never earlier, as measured by
 * uv_hrtime()). Re-arming a running timer moves it. Returns 0 or AR_ENOMEM,
 * in which case t is left stopped. */
int ar__timer_start(ar_engine_t *E, ar__timer_t *t, double seconds,
                    void (*cb)(ar__timer_t *t));
void ar__timer_stop(ar_engine_t *E, ar__timer_t *t);
static inline int ar__timer_active(const ar__timer_t *t) {
  return t->slot != AR__TIMER_IDLE;
}

/* ---- tasks (task.c) ---------------------------------------------------- */

typedef enum {
  AR__TASK_NEW,     /* spawned, queued, body not started */
  AR__TASK_RUNNING, /* being resumed by the driver right now */
  AR__TASK_WAITING, /* suspended on its wait record */
  AR__TASK_READY,   /* woken, queued for the driver */
  AR__TASK_DONE
} ar__task_state_t;

typedef enum {
  AR__OUT_NONE,
  AR__OUT_OK,       /* returned; results on co */
  AR__OUT_ERROR,    /* raised; error object and traceback string on co */
  AR__OUT_CANCELLED /* ended by a "cancelled" error */
} ar__outcome_t;

/* How a woken task is resumed. */
typedef enum {
  AR__RAISE_NONE,     /* with the values pushed on co */
  AR__RAISE_VALUE,    /* raise the value on top of co */
  AR__RAISE_CANCELLED /* raise a fresh "cancelled" error */
} ar__raise_t;

/* A hook called when a task ends: how await, gather and wait_for learn of
 * it. Linked into the finished task's waiters list; unlinked before cb. */
struct ar__done_s {
  ar__list_t node;
  void (*cb)(ar__done_t *d, ar__task_t *finished);
};

/* Releases what a suspension holds (stops its timer, unlinks its waiter).
 * Called exactly once when the wait is cancelled, never after a wake. */
typedef void (*ar__cancel_fn)(ar__task_t *t);

/* A task lives inside its handle userdata (user value 1 is its thread,
 * 2 its name). While alive the handle is anchored in the registry (ref);
 * the anchor is dropped exactly once, when the task ends. */
struct ar__task_s {
  ar_engine_t *E;
  lua_State *co;          /* the task's thread; kept alive by user value 1 */
  int ref;                /* registry anchor, LUA_NOREF once ended */
  uint8_t state;          /* ar__task_state_t */
  uint8_t outcome;        /* ar__outcome_t */
  uint8_t raise;          /* ar__raise_t for the next resume */
  uint8_t cancel_pending; /* raise "cancelled" at the next suspension */
  uint8_t droppable;      /* queued wake carries nothing that could be lost */
  uint8_t retrieved;      /* someone saw the error (await, gather) */
  uint8_t wait_flags;     /* scratch for the primitive it waits in */
  int nargs;              /* values on co to hand to lua_resume */
  int nres;               /* when done: values at co[1..nres]; on failure
                           * error, traceback and name */
  lua_Integer id;
  ar__list_t live;    /* in E->tasks while alive; once ended, in
                       * E->unretrieved while a failure is unseen */
  ar__list_t waiters; /* ar__done_t hooks to run when it ends */
  /* The current suspension. */
  ar__cancel_fn cancel;
  void *wait_data;
  lua_KFunction k; /* the primitive's continuation, or NULL */
  /* Where it waits: done.node is linked in the waiters of the task it
   * awaits, or in a primitive's FIFO of waiters (semaphore,
   * queue, event...). A task waits in one place at a time, so one link
   * serves both. */
  ar__done_t done;
  ar__timer_t timer; /* for sleep and deadlines */
};

/* FIFO waiter lists built on done.node. A primitive pushes the task, then
 * suspends with ar__waiters_cancel (or a cancel_fn that calls it), so a
 * cancelled waiter leaves the list and nothing else is left to undo. */
static inline void ar__waiters_push(ar__list_t *l, ar__task_t *t) {
  ar__list_insert_tail(l, &t->done.node);
}
/* Unlinks and returns the longest waiter, or NULL when there is none. */
static inline ar__task_t *ar__waiters_shift(ar__list_t *l) {
  if (ar__list_empty(l)) return NULL;
  ar__task_t *t = ar__container_of(l->next, ar__task_t, done.node);
  ar__list_remove(&t->done.node);
  return t;
}
static inline void ar__waiters_cancel(ar__task_t *t) {
  ar__list_remove(&t->done.node);
}

/* Closes a dead or abandoned thread: resets its stack and runs its pending
 * <close> variables. Debian's Lua is 5.4.4, where the call is
 * lua_resetthread; lua_closethread replaces it from 5.4.6. */
static inline void ar__thread_close(lua_State *co, lua_State *from) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, from);
#else
  (void)from;
  lua_resetthread(co);
#endif
}

/* The task running on thread L, or NULL when L is not a task's thread (the
 * main thread, or a plain coroutine created inside a task). */
static inline ar__task_t *ar__task_current(lua_State *L) {
  ar__task_t *t = *(ar__task_t **)lua_getextraspace(L);
  return (t != NULL && t->co == L) ? t : NULL;
}

/* The same, raising a clear error naming `what` outside a task. */
ar__task_t *ar__task_check_current(lua_State *L, const char *what);

/* The engine that owns L (any thread of it). */
ar_engine_t *ar__engine_of(lua_State *L);

/* Spawns the function at idx with the nargs values above it (popped) as a
 * task, and pushes its handle. Raises on memory errors. */
ar__task_t *ar__task_spawn(lua_State *L, int nargs);

/* The task handle at idx, raising "bad argument" if it is not one. */
ar__task_t *ar__task_check(lua_State *L, int idx);
ar__task_t *ar__task_test(lua_State *L, int idx);

/* Suspends the task running on L. The primitive has already linked itself
 * wherever it waits; `cancel` undoes that if the task is cancelled first.
 * Use as `return ar__task_suspend(...)`. When woken the task resumes in k
 * (with ctx), or, when k is NULL, returns the values it was woken with.
 * If a cancel is pending, cancel runs now and "cancelled" is raised. */
int ar__task_suspend(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                     void *data, lua_KFunction k, lua_KContext ctx);

/* Yields once: the task goes to the back of the ready queue (sleep(0)). */
int ar__task_yield(lua_State *L, ar__task_t *t);

/* Wakes a waiting task with nvals values already pushed on t->co.
 * droppable: a cancel arriving before the resume may discard them. */
void ar__task_wake(ar__task_t *t, int nvals, int droppable);
/* Wakes a waiting task so that it raises: AR__RAISE_VALUE raises the value
 * the caller pushed on t->co; the others build their error in the task. */
void ar__task_wake_raise(ar__task_t *t, ar__raise_t how);

/* Requests cancellation (see docs/design.md). Ending tasks do nothing. */
void ar__task_cancel(ar__task_t *t);

/* Pushes on L the results of a finished task, or raises its error. Returns
 * the number of values pushed. Marks the error as retrieved. */
int ar__task_push_results(lua_State *L, ar__task_t *t);
/* Pushes the first result, or the error object; returns the outcome. */
int ar__task_push_first(lua_State *L, ar__task_t *t);

void ar__task_add_done(ar__task_t *t, ar__done_t *d,
                       void (*cb)(ar__done_t *, ar__task_t *));
static inline void ar__task_remove_done(ar__done_t *d) {
  ar__list_remove(&d->node);
}

/* Driver entry: resumes t once (sched.c calls it; nothing else may). */
void ar__task_run(ar__task_t *t);

/* Reports failures nobody retrieved, on stderr. */
void ar__task_report(lua_State *L, ar__task_t *t);
void ar__task_report_all(ar_engine_t *E);

void ar__task_open(lua_State *L); /* registers the task metatable */

/* ---- scheduler (sched.c) ----------------------------------------------- */

int ar__sched_init(ar_engine_t *E);
void ar__sched_close(ar_engine_t *E);
/* Queues t for the driver. Never resumes inline. */
void ar__sched_push(ar_engine_t *E, ar__task_t *t);
size_t ar__sched_pending(ar_engine_t *E);
/* Grows the ring to hold ntasks live tasks. Returns 0 or AR_ENOMEM. */
int ar__sched_reserve(ar_engine_t *E, size_t ntasks);

/* ---- errors (error.c) -------------------------------------------------- */

/* Pushes a new error object {kind=, message=} (metatable asyncrun.error).
 * The message is formatted like lua_pushfstring. */
void ar__error_push(lua_State *L, const char *kind, const char *fmt, ...);
/* Raises such an error, with `where` set to the caller's position. */
int ar__error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* If the value at idx is an engine error of that kind (NULL: any kind). */
int ar__error_is(lua_State *L, int idx, const char *kind);
/* Sets `where` on the engine error at the top of L if it has none. */
void ar__error_locate(lua_State *L, int level);
void ar__error_open(lua_State *L);
int ar__error_new_lua(lua_State *L); /* async.error(kind, message, fields) */

void ar__engine_bind(lua_State *L, ar_engine_t *E);

/* ---- embedding (engine.c, run.c, config.c, op.c) ----------------------- */

/* A rule of ar_config_allow / ar_config_deny. */
typedef struct {
  char *name;
  int allow;
} ar__rule_t;

struct ar_config_s {
  uv_loop_t *loop;
  size_t mem_limit;
  char *path, *cpath; /* NULL: Lua's defaults */
  ar__rule_t *rules;
  size_t nrules;
};

/* Opens the standard libraries and preloads the built-in modules the
 * config allows (cfg NULL: all). Raises on memory errors. */
void ar__config_open(lua_State *L, const ar_config_t *cfg);

/* Where a run is (run.c):
 *   IDLE --start--> RUNNING --root ends, or deadlock--> SETTLING
 *   SETTLING --no task left--> IDLE */
enum { AR__PHASE_IDLE, AR__PHASE_RUNNING, AR__PHASE_SETTLING };

/* Advances the run in progress: the scheduler calls it after each drain
 * of the ready queue, outside any task. It may end the run and call the
 * host's callback. */
void ar__engine_watch(ar_engine_t *E);
/* Ends every task now, without letting it run (ar_engine_free, and runs
 * whose tasks will not end): pending waits are cancelled, threads closed. */
void ar__engine_force_close(ar_engine_t *E);
/* Ends the run in progress at once, without calling its callback. */
void ar__engine_abandon_run(ar_engine_t *E);
/* Counts a handle of E's as closed; with a borrowed loop, the last one
 * after ar_engine_free releases E (so nothing may touch E after it). */
void ar__engine_handle_closed(ar_engine_t *E);
/* A close callback doing just that, for handles with E in h->data. */
void ar__engine_close_cb(uv_handle_t *h);
/* Frees ops that were never suspended (a host that broke the contract). */
void ar__op_free_all(ar_engine_t *E);
/* Replaces the engine's last message. */
void ar__engine_set_error(ar_engine_t *E, const char *msg, size_t len);

/* Registers the built-in modules in package.preload (bindings/modules.c). */
void ar__modules_preload(lua_State *L);

/* ---- engine (engine.c) ------------------------------------------------- */

struct ar_engine_s {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  lua_State *L;
  size_t mem_used;
  size_t mem_limit; /* 0: none */
  ar__pool_t pool;  /* Lua's small blocks */

  /* scheduler: a ring of queued tasks */
  ar__task_t **ready;
  size_t ready_head, ready_len, ready_cap;
  uv_prepare_t prepare;
  uv_check_t check;
  uv_idle_t idle;

  /* tasks */
  ar__list_t tasks; /* every live task */
  size_t ntasks;
  lua_Integer next_id;
  ar__list_t unretrieved;
  ar__task_t *root;

  /* timers: a binary min-heap on (due, seq) */
  ar__timer_t **heap;
  size_t heap_len, heap_cap;
  uint64_t timer_seq;
  uv_timer_t uv_timer;
  uint64_t uv_timer_due; /* what uv_timer is armed for, 0 when stopped */

  /* uv handles not yet through their close callback. A module that owns
   * handles counts them here, closes them from a __gc it anchors in the
   * registry, and ends each close callback with ar__engine_handle_closed:
   * ar_engine_free closes the lua_State, then (owned loop) runs the loop
   * until this reaches zero, or (borrowed loop) leaves the last close
   * callback to release the engine. */
  int handles_open;
  int stopping;
  char *errmsg;

  /* the run in progress (run.c) */
  int phase;        /* AR__PHASE_* */
  int run_status;   /* its outcome so far: 0 or an AR_E* code */
  int settle_round; /* times leftovers were cancelled and got stuck */
  int blocking;     /* a blocking run waits for it (run_*, call) */
  int root_ref;     /* anchors the root's handle until the run is over */
  /* The task metatables (see ar__task_test), for identity checks and
   * setmetatable without a lookup by name. */
  const void *task_mt, *task_failed_mt;
  int task_mt_ref;
  ar_done_cb done_cb;
  void *done_data;
  ar__task_t *ended; /* the root of the run just over, for its results */
  int ended_ref;

  /* the host's side */
  int mem_armed;   /* the memory cap applies only while > 0 */
  int in_callback; /* inside the host's done callback */
  int freeing;     /* ar_engine_free has begun */
  void *host_data;
  ar__list_t ops; /* ar_op_t not yet suspended */
};

#endif
