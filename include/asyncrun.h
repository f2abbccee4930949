/* asyncrun: Lua 5.4 coroutines scheduled by a libuv loop.
 *
 * This is the only public header. Every type is opaque and every public
 * name starts with ar_ (AR_ for macros). Functions that can fail return 0
 * or a negative AR_E* code; ar_strerror() names the code and
 * ar_engine_error() gives the engine's last message, with traceback.
 * User documentation lives in docs/embedding.md. */
#ifndef ASYNCRUN_H
#define ASYNCRUN_H

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
#define AR_VERSION_NUM \
  (AR_VERSION_MAJOR * 10000 + AR_VERSION_MINOR * 100 + AR_VERSION_PATCH)

/* Error codes. Always negative; 0 is success. */
#define AR_ENOMEM (-1)     /* out of memory (or over the memory cap) */
#define AR_EINVAL (-2)     /* bad argument from the host */
#define AR_EFILE (-3)      /* a script file cannot be opened or read */
#define AR_ESYNTAX (-4)    /* a chunk does not compile */
#define AR_ERUNTIME (-5)   /* the root task raised an error */
#define AR_ECANCELLED (-6) /* the root task was cancelled (ar_engine_stop) */
#define AR_EDEADLOCK (-7)  /* every task waits and nothing can wake one */
#define AR_EBUSY (-8)      /* the engine is already running */

typedef struct ar_engine_s ar_engine_t;

AR_API const char *ar_version(void);
AR_API int ar_version_num(void);
AR_API const char *ar_strerror(int err);

/* Creates an engine. With loop == NULL the engine owns a loop of its own;
 * otherwise it attaches to the host's loop and never closes it.
 * Returns NULL when memory runs out. */
AR_API ar_engine_t *ar_engine_new(uv_loop_t *loop);

/* Cancels what is still running, lets it clean up, closes the engine's
 * handles and frees everything the engine owns. NULL is a no-op. */
AR_API void ar_engine_free(ar_engine_t *E);

AR_API lua_State *ar_engine_lua(ar_engine_t *E);
AR_API uv_loop_t *ar_engine_loop(ar_engine_t *E);

/* Runs a script file as the root task, with argv as the chunk's varargs,
 * until it ends; then cancels the tasks it left running and waits for their
 * cleanup. path "-" reads standard input. Returns 0 or an AR_E* code. */
AR_API int ar_engine_run_file(ar_engine_t *E, const char *path, int argc,
                              const char *const *argv);

/* The same for a string of Lua code; chunkname names it in messages. */
AR_API int ar_engine_run_string(ar_engine_t *E, const char *code,
                                const char *chunkname);

/* Cancels every task of the engine. Safe from any loop callback (a signal
 * handler's, say); a run in progress returns AR_ECANCELLED once the tasks
 * have cleaned up. */
AR_API void ar_engine_stop(ar_engine_t *E);

/* The message of the engine's last failure ("" when none). Valid until the
 * next call into the engine. */
AR_API const char *ar_engine_error(ar_engine_t *E);

#ifdef __cplusplus
}
#endif
#endif
