/* The contract between the engine and its Lua modules (bindings/).
 *
 * A module includes this header and nothing else of engine/. Tasks and the
 * engine are opaque here: a module suspends a task, wakes it, cancels it,
 * and reads what the accessors below give, but never writes scheduler
 * state. docs/design.md ("Writing a module") walks through two examples.
 *
 * The rules, each checked by an assert() in debug builds where it can be:
 *
 * 1. Suspending. A primitive links itself wherever it waits, then ends
 *    with `return ar__task_suspend(L, t, cancel, data, k, ctx)`. Exactly
 *    one of two things follows: something wakes the task (ar__task_wake,
 *    ar__task_wake_kept, ar__task_hand) and the driver later resumes it
 *    in k; or the task is cancelled first, cancel(t, data) runs once and
 *    must undo the links, and the task raises "cancelled" at the waiting
 *    call. Never both, never twice.
 * 2. Keeping alive. What a task waits on must stay reachable while it
 *    waits: keep it on the waiting C function's stack (an argument, or a
 *    value pushed before suspending). That frame lives until k returns.
 *    C records that libuv callbacks reach (uv handles, uv requests) live
 *    in C memory, never in a userdata the collector may free.
 * 3. libuv callbacks never touch Lua. They record what happened in the
 *    module's C record and wake the task; the continuation k, running in
 *    the task, turns the record into Lua values or raises its error. Lua
 *    values are handed to a task only from Lua code (ar__task_hand).
 *    Cancel functions and timer callbacks follow the same rule.
 * 4. Handles and requests. Every uv handle a module initializes is
 *    counted with ar__handle_opened and ends its close callback with
 *    ar__handle_closed; every uv request in flight (uv_fs_t, uv_write_t,
 *    uv_connect_t, uv_getaddrinfo_t, ...) is counted with ar__req_started
 *    and ar__req_finished. The engine never closes a loop with either
 *    count above zero. Handle memory is freed only in its close callback.
 * 5. Work that cannot be aborted (a uv_fs_t on the thread pool, a DNS
 *    lookup, a write already handed to the kernel) lives in C memory
 *    behind an ar__work_t. A cancelled task resumes at once; the request
 *    becomes an orphan that its callback frees.
 * 6. Teardown. Per-engine module state comes from ar__module_open; its
 *    stop hook runs once per run when the engine is asked to stop (the
 *    run ends, ar_engine_stop, the first Ctrl-C), before tasks are
 *    cancelled, and may hold the stop for a grace period
 *    (ar__engine_hold); its close hook when the engine is freed, after
 *    every task has ended and before lua_close, in reverse order of
 *    opening. The state's memory lasts until the engine's own, so handles
 *    embedded in it may finish closing later. Nothing relies on the order in
 * which finalizers run. */
#ifndef AR_MODULE_H
#define AR_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "asyncrun.h"
#include "list.h"

typedef struct ar__task_s ar__task_t;
typedef struct ar__timer_s ar__timer_t;
typedef struct ar__done_s ar__done_t;

/* ---- the engine -------------------------------------------------------- */

/* The engine that owns L (any thread of it). */
ar_engine_t *ar__engine_of(lua_State *L);
/* Its loop: ar_engine_loop(E) (include/asyncrun.h). */

typedef struct {
  size_t tasks;          /* live */
  size_t ready;          /* queued for the driver */
  size_t timers;         /* armed deadlines */
  size_t memory;         /* bytes of Lua memory */
  int handles, requests; /* uv handles and requests not yet closed */
  int spare_threads;     /* threads of ended tasks kept for new ones */
} ar__engine_stats_t;
void ar__engine_stats(ar_engine_t *E, ar__engine_stats_t *st);

/* The library's constructor (ar_engine_new, bindings/modules.c) makes an
 * engine whose Lua state gets the built-in modules from preload: the
 * engine itself knows no module. */
ar_engine_t *ar__engine_new(const ar_config_t *cfg,
                            void (*preload)(lua_State *L));

/* ---- tasks ------------------------------------------------------------- */

/* The task running on L, or NULL (the main thread, a plain coroutine). */
ar__task_t *ar__task_current(lua_State *L);
/* The same, raising a clear error naming `what` outside a task. */
ar__task_t *ar__task_check_current(lua_State *L, const char *what);
/* The same, also raising the "C-call boundary" error where the task
 * cannot yield: what a primitive whose cancel function may answer
 * AR__CANCEL_WAIT calls before linking anything. */
ar__task_t *ar__task_check_suspendable(lua_State *L, const char *what);

ar_engine_t *ar__task_engine(const ar__task_t *t);
lua_Integer ar__task_id(const ar__task_t *t);
int ar__task_is_done(const ar__task_t *t);
/* How a task ended; AR__OUT_NONE while it runs. */
typedef enum {
  AR__OUT_NONE,
  AR__OUT_OK,       /* returned */
  AR__OUT_ERROR,    /* raised */
  AR__OUT_CANCELLED /* ended by a "cancelled" error, or never started */
} ar__outcome_t;
int ar__task_outcome(const ar__task_t *t);
/* Pushes the task's handle (a live task's is always reachable). */
void ar__task_push_handle(lua_State *L, ar__task_t *t);

/* Of a finished task: pushes its results and returns how many, or raises
 * its error (marked as seen, keeping the task's traceback for the report
 * of whoever does not catch it). */
int ar__task_push_results(lua_State *L, ar__task_t *t);
/* Pushes its first result, or its error object, without raising; returns
 * the outcome. An error pushed this way counts as seen. */
int ar__task_push_first(lua_State *L, ar__task_t *t);
/* Raises the error of a failed or cancelled task (as push_results). */
int ar__task_reraise(lua_State *L, ar__task_t *t);

/* Spawns the function at -(nargs+1) with the nargs values above it
 * (popped) and pushes its handle. Raises on memory errors. */
ar__task_t *ar__task_spawn(lua_State *L, int nargs);
/* The task handle at idx, or NULL / a "bad argument" error. */
ar__task_t *ar__task_test(lua_State *L, int idx);
ar__task_t *ar__task_check(lua_State *L, int idx);

/* Requests cancellation; safe from anywhere, including a cancel function
 * or a libuv callback: it only queues. A task that has ended ignores it. */
void ar__task_cancel(ar__task_t *t);

/* ---- suspension -------------------------------------------------------- */

/* Undoes a suspension's links (rule 1). Never calls Lua, never raises.
 * Returns AR__CANCEL_DONE when the wait is released (the task raises
 * "cancelled" at once), or AR__CANCEL_WAIT when the wait must first see
 * something finish (inner tasks cancelled in turn, a child process being
 * killed): the task stays suspended, the module wakes it later, and its
 * continuation, seeing ar__task_cancelling() true, decides whether to
 * return what it got (the cancellation is then raised at the next
 * suspension) or to raise it now (ar__task_raise_cancelled). A cancel
 * function that answered AR__CANCEL_WAIT is called once more if the
 * engine closes the task by force meanwhile: it must then let go of
 * everything and answer AR__CANCEL_DONE. */
typedef int (*ar__cancel_fn)(ar__task_t *t, void *data);
enum { AR__CANCEL_DONE, AR__CANCEL_WAIT };

/* Suspends the task running on L (t, from ar__task_check_current). When
 * woken it resumes in k(L, LUA_YIELD, ctx); with k NULL the waiting call
 * returns the values handed over, or none. If a cancellation is already
 * due, cancel runs now and "cancelled" is raised instead. */
int ar__task_suspend(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                     void *data, lua_KFunction k, lua_KContext ctx);

/* Wakes a waiting task; `code` is what its continuation will read with
 * ar__task_woken(). A cancellation that arrives before the task runs
 * wins: the task raises "cancelled" instead. */
void ar__task_wake(ar__task_t *t, int code);
/* The same for a wake that carries an effect that must not be lost (a
 * lock handed over, a put that happened): the continuation runs even if a
 * cancellation arrives first, and the cancellation is raised at the
 * task's next suspension. */
void ar__task_wake_kept(ar__task_t *t, int code);
/* From Lua code only: moves the n values on top of L to the waiting task
 * t and wakes it as ar__task_wake_kept does, so they are delivered (the
 * waiting call returns them when k is NULL). Raises in L, with nothing
 * changed, if t's stack cannot grow. */
void ar__task_hand(lua_State *L, ar__task_t *t, int n, int code);
/* From Lua code only: moves the n values on top of the waiting task t's
 * stack (what it offered when it suspended, a putter's item) onto L. */
void ar__task_take(lua_State *L, ar__task_t *t, int n);
/* In a continuation: the code the task was woken with. */
int ar__task_woken(lua_State *L);
/* In a continuation: whether the wait that just ended was being
 * cancelled (its cancel function returned AR__CANCEL_WAIT). */
int ar__task_cancelling(lua_State *L);
/* Raises the task's "cancelled" error now (the one t:cancel(msg) asked
 * for), consuming the pending cancellation. */
int ar__task_raise_cancelled(lua_State *L);
/* The same error, pushed instead of raised (to add fields, then raise it
 * with ar__error_throw); the cancellation is consumed too. */
void ar__task_push_cancelled_error(lua_State *L);
/* Cancellation requests a task has received so far and seen delivered:
 * what a primitive that may cancel the task itself records when it
 * begins (a group, before cancelling its owner's body). */
int ar__task_cancels(const ar__task_t *t);
/* Withdraws one cancellation the primitive requested itself, as asyncio's
 * uncancel(). `base` is what ar__task_cancels gave when it began. Returns
 * how many requests came from elsewhere since then; when none, its own
 * request, if still pending, is dropped. */
int ar__task_uncancel(ar__task_t *t, int base);

/* Yields once: the task goes to the back of the ready queue (sleep(0)). */
int ar__task_yield(lua_State *L, ar__task_t *t);

/* FIFO lists of waiting tasks (semaphores, queues, events). A task is in
 * at most one. Push, then suspend with ar__waiters_cancel (or a cancel
 * function that calls it). */
void ar__waiters_push(ar__list_t *l, ar__task_t *t);
/* Unlinks and returns the longest waiter, or NULL. */
ar__task_t *ar__waiters_shift(ar__list_t *l);
ar__task_t *ar__waiters_first(ar__list_t *l);
int ar__waiters_cancel(ar__task_t *t, void *data);

/* Waiting for other tasks to end (await, wait_for, gather, map, groups).
 * A wait that, when cancelled, cancels its tasks and waits for them
 * registers how to list them, so that a cycle of such waits (two tasks
 * waiting on each other) is found and broken instead of waiting forever.
 * The record is the suspension's data; `each` calls fn on every task
 * still awaited, stopping when fn returns non-zero (and returning that). */
typedef struct ar__join_s ar__join_t;
struct ar__join_s {
  int (*each)(ar__join_t *j, int (*fn)(ar__task_t *t, void *ud), void *ud);
};
/* Suspends as ar__task_suspend, with data a join record. */
int ar__task_suspend_join(lua_State *L, ar__task_t *t, ar__cancel_fn cancel,
                          ar__join_t *join, lua_KFunction k, lua_KContext ctx);
/* In a join's cancel function: whether waiting for `inner` would wait
 * for the cancelling task itself (a cycle). Then do not wait for it. */
int ar__join_would_cycle(ar__task_t *self, ar__task_t *inner);

/* Hooks run when a task ends (await-like primitives). Unlinked before cb
 * runs; cb follows rule 3. */
struct ar__done_s {
  ar__list_t node;
  void (*cb)(ar__done_t *d, ar__task_t *finished);
};
void ar__task_add_done(ar__task_t *t, ar__done_t *d,
                       void (*cb)(ar__done_t *, ar__task_t *));
void ar__task_remove_done(ar__done_t *d);

/* ---- timers ------------------------------------------------------------ */

/* Every task has one timer for the primitive it waits in (sleep, a
 * deadline); it must be stopped when that wait ends. */
ar__timer_t *ar__task_timer(ar__task_t *t);
ar__task_t *ar__task_of_timer(ar__timer_t *tm);

/* A deadline in the engine's heap, embedded in the module's record; the
 * record must stop it before it is freed. cb follows rule 3. */
struct ar__timer_s {
  uint64_t due;  /* uv_hrtime() nanoseconds */
  uint32_t seq;  /* ties broken in start order */
  uint32_t slot; /* index in the heap, or AR__TIMER_IDLE */
  void (*cb)(ar__timer_t *t);
};
#define AR__TIMER_IDLE UINT32_MAX

void ar__timer_init(ar__timer_t *t);
/* Arms t to fire `seconds` from now (never earlier). Re-arming moves it.
 * Returns 0 or AR_ENOMEM (t is then stopped). */
int ar__timer_start(ar_engine_t *E, ar__timer_t *t, double seconds,
                    void (*cb)(ar__timer_t *t));
void ar__timer_stop(ar_engine_t *E, ar__timer_t *t);
static inline int ar__timer_active(const ar__timer_t *t) {
  return t->slot != AR__TIMER_IDLE;
}

/* ---- handles, requests, work that cannot be aborted -------------------- */

void ar__handle_opened(ar_engine_t *E);
void ar__handle_closed(ar_engine_t *E);
/* A close callback for handles whose data is their engine. */
void ar__handle_close_cb(uv_handle_t *h);
void ar__req_started(ar_engine_t *E);
void ar__req_finished(ar_engine_t *E);

/* Embedded in a C-allocated request record. Start it when the uv request
 * is submitted; call ar__work_orphan from the suspension's cancel
 * function; in the uv callback, ar__work_finish returns the task to wake,
 * or NULL when the task gave up (the callback then frees the record). */
typedef struct {
  ar_engine_t *E;
  ar__task_t *task; /* NULL once orphaned */
} ar__work_t;
void ar__work_start(ar__work_t *w, ar__task_t *t);
void ar__work_orphan(ar__work_t *w);
ar__task_t *ar__work_finish(ar__work_t *w);

/* ---- per-engine module state ------------------------------------------- */

typedef struct {
  const char *name;
  size_t size; /* of the state, allocated zeroed */
  /* The engine is asked to stop (the run ends, ar_engine_stop, the
   * first Ctrl-C), before its tasks are cancelled: stop accepting work.
   * Once per run. May be NULL. */
  void (*stop)(ar_engine_t *E, void *state);
  /* The engine is being freed: every task has ended, Lua is still open
   * but must not be called. Close the module's handles (their close
   * callbacks may run later) and free what is not waiting on one. */
  void (*close)(ar_engine_t *E, void *state);
  /* The driver has just run the ready tasks (before and after each poll
   * of the loop): finish what they left for the module to do as a batch,
   * before the loop waits. Must not call Lua. May be NULL. */
  void (*drained)(ar_engine_t *E, void *state);
} ar__module_t;

/* Holding the stop. A stop hook that lets work in flight finish first (a
 * server's grace period) takes a hold: ar_engine_stop then cancels no task
 * until the last hold is released, and the run's settling rounds do not
 * count meanwhile. Whoever holds must release within a bounded time (a
 * timer of its own, which also keeps the loop alive) and in its close
 * hook at the latest. */
void ar__engine_hold(ar_engine_t *E);
void ar__engine_release(ar_engine_t *E);

/* The module's state for E, created (zeroed) at the first call. Returns
 * NULL only when memory runs out. */
void *ar__module_open(ar_engine_t *E, const ar__module_t *m);
/* The state if it exists, else NULL. */
void *ar__module_state(ar_engine_t *E, const ar__module_t *m);

/* ---- userdata with properties ------------------------------------------- */

/* The end of an __index function that serves a type's properties itself:
 * pushes the method named by the key (argument 2) from the `methods`
 * table of the object's metatable (nil if there is none) and returns 1.
 * ar__class_new (bindings/toolkit.h) builds such a metatable when `meta`
 * has an __index. */
int ar__index_method(lua_State *L);

/* ---- errors ------------------------------------------------------------ */

/* Pushes a new error object {kind=, message=}; the message is formatted
 * as by lua_pushfstring. Add fields with lua_setfield before raising. */
void ar__error_push(lua_State *L, const char *kind, const char *fmt, ...);
/* Raises such an error, with `where` set to the caller's position. */
int ar__error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* Raises the error object on top of L, setting its `where`. */
int ar__error_throw(lua_State *L);
/* async.error(kind, message [, fields]): the Lua constructor. */
int ar__error_new_lua(lua_State *L);
/* If the value at idx is an engine error of that kind (NULL: any). */
int ar__error_is(lua_State *L, int idx, const char *kind);

#endif
