/* Declarations shared between the engine's files (the ar__ layer).
 * Nothing here is public: hosts use include/asyncrun.h. */
#ifndef AR_INTERNAL_H
#define AR_INTERNAL_H

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "asyncrun.h"
#include "list.h"

#include "module.h"

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

/* ---- tasks (task.c, taskobj.c) --------------------------------------- */

typedef enum {
  AR__TASK_NEW,     /* spawned, queued, body not started */
  AR__TASK_RUNNING, /* being resumed by the driver right now */
  AR__TASK_WAITING, /* suspended on its wait */
  AR__TASK_READY,   /* woken (or yielded), queued for the driver */
  AR__TASK_DONE
} ar__task_state_t;

/* How the next resume starts. */
typedef enum {
  AR__RESUME_VALUES, /* with the values on co (or the continuation) */
  AR__RESUME_CANCEL, /* raise "cancelled" at the waiting call */
  AR__RESUME_YIELDED /* after a bare coroutine.yield() */
} ar__resume_t;

/* A task lives inside its handle userdata (user value 1 is its thread,
 * 2 its name). While alive the handle is anchored in the registry (ref);
 * the anchor is dropped exactly once, when the task ends.
 *
 * Cancellation is a count (ncancels, as asyncio's) plus a due flag: due
 * means a "cancelled" error is to be raised at the task's next suspension,
 * or delivered by the driver now if it waits. Delivery always goes through
 * the ready queue, never by recursion. */
struct ar__task_s {
  ar_engine_t *E;
  lua_State *co;      /* the task's thread; kept alive by user value 1 */
  int ref;            /* registry anchor, LUA_NOREF once ended */
  uint8_t state;      /* ar__task_state_t */
  uint8_t outcome;    /* ar__outcome_t */
  uint8_t resume;     /* ar__resume_t for the next resume */
  uint8_t queued;     /* in the ready ring */
  uint8_t kept;       /* the pending wake carries what must not be lost */
  uint8_t cancel_due; /* raise "cancelled" at the next suspension */
  uint8_t cancelling; /* the wait's cancel function ran and said WAIT */
  uint8_t flags;      /* AR__TF_* */
  uint16_t ncancels;  /* requests not withdrawn; saturates */
  int code;           /* what the waker passed (ar__task_woken) */
  int nvals;          /* waking: values on co to hand over; done:
                       * results at co[1..nvals] (failure: error,
                       * traceback, name) */
  lua_Integer id;
  ar__list_t live;    /* in E->tasks while alive; once ended, in
                       * E->unretrieved while a failure is unseen */
  ar__list_t waiters; /* ar__done_t hooks to run when it ends */
  /* The current suspension. */
  ar__cancel_fn cancel;
  void *wait_data;
  lua_KFunction k; /* the primitive's continuation, or NULL */
  /* Where it waits: done.node is linked in the waiters of the task it
   * awaits, or in a primitive's FIFO of waiters. One link serves both. */
  ar__done_t done;
  ar__timer_t timer; /* for sleep and deadlines */
};

#define AR__TF_RETRIEVED 1 /* someone saw the failure */
#define AR__TF_JOIN 2      /* wait_data is an ar__join_t */
#define AR__TF_VISITED 4   /* scratch of ar__join_would_cycle */
#define AR__TF_HOOKED 8    /* a cancel hook is set on co */
#define AR__TF_MSG 16      /* t:cancel(msg) left a message */
#define AR__TF_SHARED 32   /* coroutine.running() handed out its thread */

/* Threads kept for reuse (see task_recycle). */
#define AR__CO_POOL_MAX 256

/* The task running on thread L, or NULL (inline for the engine). */
static inline ar__task_t *ar__task_of(lua_State *L) {
  ar__task_t *t = *(ar__task_t **)lua_getextraspace(L);
  return (t != NULL && t->co == L) ? t : NULL;
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

/* Driver entry: runs t once (sched.c calls it; nothing else may). */
void ar__task_run(ar__task_t *t);
/* Ends t without letting it run further (force close): its wait is
 * released, its thread closed, its anchor dropped. */
void ar__task_force_end(ar__task_t *t);
/* Threads kept for new tasks (the pool's holes closed first). */
int ar__task_spare_threads(ar_engine_t *E);

/* Reports failures nobody retrieved, on stderr. Returns how many. */
void ar__task_report(lua_State *L, ar__task_t *t);
int ar__task_report_all(ar_engine_t *E);
/* Describes on stderr where a live task waits (deadlock, stubborn). */
void ar__task_describe(ar__task_t *t, char *buf, size_t len);

void ar__task_open(lua_State *L); /* registers the task metatable */
/* Makes coroutine.resume and coroutine.close refuse a task's thread. */
void ar__task_guard_coroutines(lua_State *L);
void ar__task_mark_retrieved(ar__task_t *t);
/* Pushes the canonical "cancelled" error of t (its message, its name). */
void ar__task_push_cancelled(lua_State *L, ar__task_t *t);

/* ---- scheduler (sched.c) ----------------------------------------------- */

int ar__sched_init(ar_engine_t *E);
void ar__sched_close(ar_engine_t *E);
/* Queues t for the driver unless it is queued already. Never resumes
 * inline, never allocates. */
void ar__sched_push(ar_engine_t *E, ar__task_t *t);
/* Grows the ring to hold ntasks live tasks. Returns 0 or AR_ENOMEM. */
int ar__sched_reserve(ar_engine_t *E, size_t ntasks);

/* ---- errors (error.c) -------------------------------------------------- */

/* Pushes the text of the error value at idx, even when its __tostring
 * raises. */
void ar__error_push_text(lua_State *L, int idx);
/* Sets `where` on the engine error at the top of L if it has none. */
void ar__error_locate(lua_State *L, int level);
void ar__error_open(lua_State *L);

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

/* Opens the standard libraries the config allows (cfg NULL: all), then
 * calls preload, which registers the built-in modules, and disables what
 * the config denies. Raises on memory errors. */
void ar__config_open(lua_State *L, const ar_config_t *cfg,
                     void (*preload)(lua_State *L));

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
/* Counts a uv request of E's as finished (same release rule). */
void ar__engine_req_finished(ar_engine_t *E);
/* A close callback doing just that, for handles with E in h->data. */
void ar__engine_close_cb(uv_handle_t *h);
/* Runs the modules' stop hooks (once per stop), then their close hooks
 * (ar_engine_free), newest first. */
void ar__modules_stop(ar_engine_t *E);
void ar__modules_drained(ar_engine_t *E); /* after each drain */
void ar__modules_restart(ar_engine_t *E); /* a new run: stop hooks again */
void ar__modules_close(ar_engine_t *E);
void ar__modules_free(ar_engine_t *E); /* when the engine's memory goes */
/* Frees ops that were never suspended (a host that broke the contract). */
void ar__op_free_all(ar_engine_t *E);
/* Replaces the engine's last message. */
void ar__engine_set_error(ar_engine_t *E, const char *msg, size_t len);

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
  int reqs_open; /* uv requests in flight (ar__req_started) */
  /* ar__engine_hold: while holds > 0, ar_engine_stop runs the stop hooks
   * but leaves the tasks alone; stop_deferred says one is owed. */
  int holds;
  int stop_deferred;
  char *errmsg;

  /* Interrupting Lua code that computes (ar_engine_interrupt, from a
   * signal handler): the thread being resumed, and the request. */
  lua_State *volatile running;
  volatile sig_atomic_t interrupts;
  uv_async_t interrupt_async;

  /* Module state (ar__module_open), newest first; how many of those
   * modules have a drained hook (none: sched_drain skips the walk). */
  struct ar__modstate_s *modules;
  int drain_hooks;

  /* Threads of tasks that returned nothing, for the next spawns: in the
   * registry table co_pool_ref at 1..co_pool_n (its array part is made
   * AR__CO_POOL_MAX long, so storing never allocates). Its values are
   * weak: the collector frees what the pool holds at its next cycle, so a
   * thread that grew deep once is not kept (there may be holes). co_empty,
   * an empty thread, stands in for a finished task's thread once that is
   * reused. */
  int co_pool_ref, co_pool_n;
  lua_State *co_empty;
  int co_empty_ref;

  int reraise_ref;     /* the failed task whose error is being re-raised */
  int cancel_msgs_ref; /* weak table: task handle -> t:cancel(msg) */
  ar__task_t **dfs;    /* scratch of ar__join_would_cycle */
  size_t dfs_cap;
  uv_timer_t settle_timer; /* a round of settling lasts at most this */
  int settle_expired;

  /* the run in progress (run.c) */
  int phase;        /* AR__PHASE_* */
  int run_status;   /* its outcome so far: 0 or an AR_E* code */
  int settle_round; /* times leftovers were cancelled and got stuck */
  int blocking;     /* a blocking run waits for it (run_*, call) */
  int root_ref;     /* anchors the root's handle until the run is over */
  /* The task metatables (see ar__task_test), for identity checks and
   * setmetatable without a lookup by name. */
  const void *task_mt, *task_failed_mt;
  int task_mt_ref, task_failed_ref;
  int failures_reported; /* unseen failures reported on stderr */
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
