/* The server's contact with the engine, in one place.
 *
 * Everything bindings/lserver.c needs from the engine goes through the
 * names below. The ar__ ones have the same signatures in engine/module.h;
 * the srv_ ones wrap the calls whose signatures module.h changes (suspend
 * with a cancel that takes its data, wake with a code, handle counting).
 * When the module API lands, this header becomes `#include "module.h"` and
 * lserver_port.c shrinks to those few wrappers (or goes away). */
#ifndef AR_LSERVER_PORT_H
#define AR_LSERVER_PORT_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "asyncrun.h"

typedef struct ar__task_s ar__task_t;

/* Same signatures as in engine/module.h. */
ar_engine_t *ar__engine_of(lua_State *L);
ar__task_t *ar__task_check_current(lua_State *L, const char *what);
ar__task_t *ar__task_spawn(lua_State *L, int nargs);
void ar__task_cancel(ar__task_t *t);
void ar__error_push(lua_State *L, const char *kind, const char *fmt, ...);
int ar__error_raise(lua_State *L, const char *kind, const char *fmt, ...);
int ar__error_is(lua_State *L, int idx, const char *kind);

/* A suspension record embedded in the waiting C record. cancel runs once
 * if the task is cancelled while waiting; it must unlink the record and
 * never call Lua. */
typedef struct srv_wait_s srv_wait_t;
struct srv_wait_s {
  void (*cancel)(srv_wait_t *w);
};

/* Suspends the task t running on L (`return srv_suspend(...)`); when woken
 * it resumes in k(L, LUA_YIELD, ctx). Whoever wakes it unlinks w first: a
 * woken task's cancel never runs. */
int srv_suspend(lua_State *L, ar__task_t *t, srv_wait_t *w, lua_KFunction k,
                lua_KContext ctx);
/* Wakes a task waiting in srv_suspend. Safe from libuv callbacks. */
void srv_wake(ar__task_t *t);

/* Counts a uv handle of E's as open, or as through its close callback. */
void srv_handle_opened(ar_engine_t *E);
void srv_handle_closed(ar_engine_t *E);

#endif
