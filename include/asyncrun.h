/* asyncrun: Lua 5.4 coroutines scheduled by a libuv loop.
 *
 * This is the only public header. Every type is opaque and every public
 * name starts with ar_ (AR_ for macros). Functions that can fail return 0
 * (or a count) or a negative AR_E* code; ar_strerror() names the code and
 * ar_engine_error() gives the engine's last message, with traceback.
 *
 * Threads: an engine, its ops and its loop belong to one thread; engines
 * share nothing, so each thread may have its own.
 *
 * User documentation lives in docs/embedding.md; the comments here are
 * the contracts. */
#ifndef ASYNCRUN_H
#define ASYNCRUN_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define AR_API __declspec(dllexport)
#elif defined(__GNUC__)
#define AR_API __attribute__((visibility("default")))
#else
#define AR_API
#endif

#define AR_VERSION_MAJOR 0
#define AR_VERSION_MINOR 1
#define AR_VERSION_PATCH 0
#define AR_VERSION_STRING "0.1.0"
#define AR_VERSION_NUM                                                         \
  (AR_VERSION_MAJOR * 10000 + AR_VERSION_MINOR * 100 + AR_VERSION_PATCH)

/* Error codes. Always negative; 0 is success. */
#define AR_ENOMEM (-1)     /* out of memory (or over the memory cap) */
#define AR_EINVAL (-2)     /* bad argument from the host */
#define AR_EFILE (-3)      /* a script file cannot be opened or read */
#define AR_ESYNTAX (-4)    /* a chunk does not compile */
#define AR_ERUNTIME (-5)   /* the root task raised an error */
#define AR_ECANCELLED (-6) /* the root task was cancelled (ar_engine_stop) */
#define AR_EDEADLOCK (-7)  /* every task waits and nothing can wake one */
#define AR_EBUSY (-8)      /* a run is already in progress */

typedef struct ar_engine_s ar_engine_t;
typedef struct ar_config_s ar_config_t;
typedef struct ar_op_s ar_op_t;

/* The library's version (AR_VERSION_STRING / AR_VERSION_NUM of the build
 * that is linked, which may differ from the header's). */
AR_API const char *ar_version(void);
AR_API int ar_version_num(void);
/* A static string naming an AR_E* code. */
AR_API const char *ar_strerror(int err);

/* ---- configuration ------------------------------------------------------
 * A config holds the options of ar_engine_new; the engine copies what it
 * needs, so a config may be freed or reused right after. Setters return 0,
 * AR_EINVAL or AR_ENOMEM, and change nothing on failure. */

AR_API ar_config_t *ar_config_new(void);      /* NULL when memory runs out */
AR_API void ar_config_free(ar_config_t *cfg); /* NULL is a no-op */

/* Attach to the host's loop (never closed by the engine) instead of
 * owning one. NULL goes back to an owned loop. */
AR_API int ar_config_set_loop(ar_config_t *cfg, uv_loop_t *loop);

/* Caps the bytes the engine's Lua state may hold while scripts run (0: no
 * cap). Past it an allocation fails and the script sees "not enough
 * memory"; the host is unaffected. */
AR_API int ar_config_set_memory_limit(ar_config_t *cfg, size_t bytes);

/* Which standard libraries, built-in modules and library functions the
 * engine opens. A name is a standard library ("io", "os", "debug", ...),
 * a built-in module ("async", "async.fs", ...), a function of a standard
 * library ("os.exit", "package.loadlib", "_G.dofile"), "name.*" (every
 * module or function under name) or "*" (every library and module).
 * Rules apply in order and the last one matching a name wins; with none,
 * everything is open. The base library and "package" always open (their
 * functions can be denied). Names matching nothing are kept, so a host may
 * deny modules a later version adds. */
AR_API int ar_config_allow(ar_config_t *cfg, const char *name);
AR_API int ar_config_deny(ar_config_t *cfg, const char *name);

/* package.path and package.cpath for require (NULL: Lua's defaults, which
 * read LUA_PATH_5_4 / LUA_CPATH_5_4). "" finds no files at all. */
AR_API int ar_config_set_path(ar_config_t *cfg, const char *path);
AR_API int ar_config_set_cpath(ar_config_t *cfg, const char *cpath);

/* ---- engines ------------------------------------------------------------ */

/* Creates an engine (cfg NULL: defaults, an owned loop). Returns NULL when
 * memory runs out or an owned loop cannot be initialized. */
AR_API ar_engine_t *ar_engine_new(const ar_config_t *cfg);

/* Ends the engine at once, never waiting on a script: a run in progress
 * is abandoned without its callback and its tasks closed by force (ops
 * get their cancel callbacks), then the Lua state and the engine's
 * handles are closed. With an owned loop everything is released before
 * it returns. With a borrowed loop the last handle's close callback
 * releases the engine: the host runs its loop again before
 * uv_loop_close(); it may call this from a callback of that loop. Never
 * from a blocking run, a C function called by a script, or (owned loop) a
 * callback of the engine's loop. NULL is a no-op. */
AR_API void ar_engine_free(ar_engine_t *E);

/* The engine's Lua state (main thread) and loop. */
AR_API lua_State *ar_engine_lua(ar_engine_t *E);
AR_API uv_loop_t *ar_engine_loop(ar_engine_t *E);
/* The engine owning L (any thread of an engine's state). */
AR_API ar_engine_t *ar_engine_of(lua_State *L);

/* A pointer for the host, NULL until set. */
AR_API void ar_engine_set_data(ar_engine_t *E, void *data);
AR_API void *ar_engine_data(ar_engine_t *E);

/* Bytes held by the Lua state; the cap can change at any time (0: none). */
AR_API size_t ar_engine_memory(ar_engine_t *E);
AR_API void ar_engine_set_memory_limit(ar_engine_t *E, size_t bytes);
/* Tasks alive (not yet ended). */
AR_API size_t ar_engine_tasks(ar_engine_t *E);

/* The message of the engine's last failure ("" when none). Valid until
 * the next call into the engine. */
AR_API const char *ar_engine_error(ar_engine_t *E);

/* ---- registering C code --------------------------------------------------
 * Each returns 0 or AR_ENOMEM / AR_EINVAL. */

/* A global function. */
AR_API int ar_engine_register_function(ar_engine_t *E, const char *name,
                                       lua_CFunction fn);
/* A module for require: openf is called like a luaopen_* function. */
AR_API int ar_engine_register_module(ar_engine_t *E, const char *name,
                                     lua_CFunction openf);
/* A module for require made of the functions in funcs (an array ending in
 * {NULL, NULL} that must outlive the engine, typically static). */
AR_API int ar_engine_register_library(ar_engine_t *E, const char *name,
                                      const luaL_Reg *funcs);

/* ---- running -------------------------------------------------------------
 * A run has a root task: a script file, a string, or a global function.
 * When the root ends, the tasks it left are cancelled and awaited (the way
 * asyncio.run ends), then the run's outcome is known: 0, AR_ERUNTIME (the
 * root raised; the message and traceback are in ar_engine_error()),
 * AR_ECANCELLED (ar_engine_stop), AR_EDEADLOCK, or, before anything runs,
 * AR_EFILE / AR_ESYNTAX / AR_ENOMEM / AR_EINVAL / AR_EBUSY. One run at a
 * time per engine; globals persist from one run to the next. */

/* Blocking runs: they run the engine's loop (UV_RUN_ONCE at a time) until
 * the run is over, so they must not be called from a callback of that
 * loop. ar_engine_run_file passes argv as the chunk's varargs; path "-"
 * reads standard input. chunkname names a string in messages (NULL:
 * "=(string)"). Return 0 or an AR_E* code. */
AR_API int ar_engine_run_file(ar_engine_t *E, const char *path, int argc,
                              const char *const *argv);
AR_API int ar_engine_run_string(ar_engine_t *E, const char *code,
                                const char *chunkname);

/* Calls the global function `name` with the nargs values on top of the
 * engine's stack and runs until the run is over. The arguments are popped
 * in every case but AR_EINVAL (a bad argument: nothing is touched). On
 * success pushes the function's results and returns how many (>= 0); the
 * caller pops them. Otherwise returns an AR_E* code (AR_ERUNTIME when
 * `name` is not a function). Pushing the arguments is the host's business;
 * the memory cap does not apply to it, so it cannot fail because of it. */
AR_API int ar_engine_call(ar_engine_t *E, const char *name, int nargs);

/* How a started run reports its end: from a callback of the loop, with
 * the outcome, and on success the root's nresults results on top of the
 * engine's stack (popped after cb returns). cb may start the next run, or
 * (borrowed loop) free the engine. */
typedef void (*ar_done_cb)(ar_engine_t *E, int status, int nresults,
                           void *data);

/* Started runs: the same runs, returning at once (0 or an AR_E* code, and
 * then cb is never called; ar_engine_start_call pops its arguments as
 * ar_engine_call does). The host runs the loop, to completion or a
 * step at a time (uv_run(loop, UV_RUN_NOWAIT)); cb (may be NULL) is called
 * once when the run is over. */
AR_API int ar_engine_start_file(ar_engine_t *E, const char *path, int argc,
                                const char *const *argv, ar_done_cb cb,
                                void *data);
AR_API int ar_engine_start_string(ar_engine_t *E, const char *code,
                                  const char *chunkname, ar_done_cb cb,
                                  void *data);
AR_API int ar_engine_start_call(ar_engine_t *E, const char *name, int nargs,
                                ar_done_cb cb, void *data);

/* Cancels every task of the engine. Safe from any callback of the loop (a
 * signal handler's, say) and from C functions called by scripts; the run
 * in progress ends with AR_ECANCELLED once the tasks have cleaned up (the
 * root may still end otherwise if it catches the cancellation). Modules
 * stop taking work first; an HTTP server with requests in flight delays
 * the cancellation for its grace period (docs/server.md). */
AR_API void ar_engine_stop(ar_engine_t *E);

/* ar_engine_stop for signal handlers (async-signal-safe, on the loop's
 * thread): it also interrupts Lua code that computes without waiting
 * (`while true do end`), raising "cancelled" in it at its next step, as
 * lua.c does for Ctrl-C; the stop itself happens on the loop right after.
 * The CLI calls it on the first SIGINT or SIGTERM. */
AR_API void ar_engine_interrupt(ar_engine_t *E);

/* How many failed tasks were reported on stderr because nobody retrieved
 * their error (await, gather, result...). The CLI exits 1 when it is not
 * zero, as Node does. */
AR_API int ar_engine_failures(ar_engine_t *E);

/* ---- host asynchronous operations ----------------------------------------
 * A C function called by a script makes an op, starts the host's work and
 * returns ar_op_suspend(L, op): its task waits. Later, from a loop
 * callback, the host completes the op once (ar_op_resolve*, ar_op_reject)
 * and the script's call returns those values or raises that error. If the
 * task is cancelled first, cancel_cb runs instead, once, synchronously: it
 * aborts the work and forgets op. An op is valid from ar_op_new until it
 * is completed or its cancel_cb returns. A pending op must keep the loop
 * alive (an active, referenced handle or request). See docs/embedding.md. */

typedef void (*ar_op_cancel_cb)(ar_op_t *op, void *data);
/* Pushes values onto L and returns how many; runs in a protected call, so
 * it may raise (its error is then what the script's call raises). */
typedef int (*ar_push_cb)(lua_State *L, void *data);

/* Creates the op of the task running L, or returns NULL (and nothing is
 * to be undone) when L is not a task's (the main thread, a plain
 * coroutine) or memory runs out. Between it and ar_op_suspend nothing may
 * raise. */
AR_API ar_op_t *ar_op_new(lua_State *L, ar_op_cancel_cb cancel_cb, void *data);
/* Forgets an op that its C function made but will not suspend on (it
 * failed to start the work, say), completed or not. Only before
 * ar_op_suspend; the op is then invalid. */
AR_API void ar_op_drop(ar_op_t *op);
/* Suspends the task on op: use as `return ar_op_suspend(L, op);`. If op
 * was already completed, returns its values (or raises its error) at once;
 * if a cancel is pending, cancel_cb runs and "cancelled" is raised. */
AR_API int ar_op_suspend(lua_State *L, ar_op_t *op);

AR_API void *ar_op_data(ar_op_t *op);
AR_API ar_engine_t *ar_op_engine(ar_op_t *op);

/* Completes op with the values push leaves (data is only used during the
 * call). Returns 0; AR_ENOMEM or AR_ERUNTIME when push failed (the script
 * then raises that error instead); AR_ECANCELLED, doing nothing, when
 * called from op's own cancel callback. */
AR_API int ar_op_resolve(ar_op_t *op, ar_push_cb push, void *data);

/* The same with C values, one per character of fmt: 'n' nil, 'b' boolean
 * (int), 'i' int, 'I' lua_Integer, 'd' double, 's' NUL-terminated string
 * (NULL: nil), 'S' bytes (const char *, size_t). Strings are copied. */
AR_API int ar_op_resolve_values(ar_op_t *op, const char *fmt, ...);

/* Completes op with an error {kind = kind, message = message} (the
 * engine's error objects; kind NULL: "error"), raised where the script
 * called. Same returns. */
AR_API int ar_op_reject(ar_op_t *op, const char *kind, const char *message);

#ifdef __cplusplus
}
#endif
#endif
