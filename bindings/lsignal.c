/* async.signal(name): a uv_signal_t per object, whose :wait() suspends the
 * calling task until the signal arrives (docs/signal.md).
 *
 * Signals that arrive while no task waits are counted, and each later
 * :wait() takes one: none is lost between two waits of a loop. Every
 * waiting task is woken by one arrival (a broadcast). The handle keeps
 * the loop alive only while a task waits, so a script stuck elsewhere is
 * still reported as a deadlock.
 *
 * libuv installs its own handler for a watched signal and, when the last
 * watcher of the process stops, sets the default disposition, whatever
 * was there before. So the first object of an engine for a signal saves
 * the disposition it finds (the command's Ctrl-C handler, an ignored
 * SIGPIPE) and the last one closed puts it back. The handle lives in
 * C memory (watch_t), is counted as a handle of the engine, and is closed by
 * :close(), by the collector, or by the module's close hook when the
 * engine is freed; its memory goes in the close callback. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "lsignal.h"
#include "module.h"
#include "toolkit.h"

#define SIGNAL_MT "asyncrun.signal"

enum { WOKEN_SIGNAL, WOKEN_CLOSED };

typedef struct sig_state_s sig_state_t;
typedef struct sbox_s sbox_t;

typedef struct {
  uv_signal_t h;
  sbox_t *box; /* the userdata pointing here, until either closes */
  ar_engine_t *E;
  sig_state_t *S;     /* NULL once the engine's teardown has begun */
  ar__list_t node;    /* in S->sigs while open */
  ar__list_t waiters; /* tasks in :wait() */
  int signum;
  lua_Integer pending; /* arrivals nobody has waited for yet */
} watch_t;

struct sig_state_s {
  ar__list_t sigs;
  int count[NSIG];              /* open objects per signal */
  struct sigaction saved[NSIG]; /* what was there before the first */
};

static void sig_state_close(ar_engine_t *E, void *state);
static const ar__module_t sig_module = {"async.signal", sizeof(sig_state_t),
                                        NULL, sig_state_close, NULL};

/* The userdata: a pointer, NULL once closed. */
struct sbox_s {
  watch_t *s;
  int signum;
};

static const struct {
  const char *name;
  int num;
} names[] = {
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},     {"SIGQUIT", SIGQUIT},
    {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},   {"SIGTERM", SIGTERM},
    {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM},   {"SIGCHLD", SIGCHLD},
    {"SIGCONT", SIGCONT}, {"SIGTSTP", SIGTSTP},   {"SIGTTIN", SIGTTIN},
    {"SIGTTOU", SIGTTOU}, {"SIGWINCH", SIGWINCH}, {"SIGURG", SIGURG},
    {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ},   {"SIGVTALRM", SIGVTALRM},
    {"SIGPROF", SIGPROF}, {"SIGIO", SIGIO},       {"SIGSYS", SIGSYS},
    {"SIGTRAP", SIGTRAP}, {"SIGABRT", SIGABRT},
};

static const char *sig_name(int signum) {
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].num == signum) return names[i].name;
  return "?";
}

static sig_state_t *state_open(lua_State *L) {
  sig_state_t *S = ar__module_open(ar__engine_of(L), &sig_module);
  if (S == NULL) luaL_error(L, "not enough memory");
  if (S->sigs.next == NULL) ar__list_init(&S->sigs);
  return S;
}

int ar__signal_claimed(ar_engine_t *E, int signum) {
  sig_state_t *S = ar__module_state(E, &sig_module);
  if (S == NULL || signum <= 0 || signum >= NSIG) return 0;
  return S->count[signum];
}

static void sig_cb(uv_signal_t *h, int signum) {
  (void)signum;
  watch_t *s = ar__container_of(h, watch_t, h);
  if (ar__list_empty(&s->waiters)) {
    s->pending++;
    return;
  }
  /* Kept: a waiter cancelled right after still gets this arrival. */
  ar__task_t *t;
  while ((t = ar__waiters_shift(&s->waiters)) != NULL)
    ar__task_wake_kept(t, WOKEN_SIGNAL);
  uv_unref((uv_handle_t *)&s->h);
}

static void sig_close_cb(uv_handle_t *h) {
  watch_t *s = ar__container_of((uv_signal_t *)h, watch_t, h);
  ar_engine_t *E = s->E;
  free(s);
  ar__handle_closed(E);
}

/* Stops s, wakes its waiters (they raise "closed"), closes the handle.
 * Runs once per object: from the userdata (close, collection) or from the
 * engine's teardown, whichever comes first; each unlinks the other. */
static void sig_close(watch_t *s) {
  sig_state_t *S = s->S;
  if (s->box != NULL) s->box->s = NULL;
  s->box = NULL;
  ar__task_t *t;
  while ((t = ar__waiters_shift(&s->waiters)) != NULL)
    ar__task_wake(t, WOKEN_CLOSED);
  uv_close((uv_handle_t *)&s->h, sig_close_cb); /* stops it at once */
  if (S != NULL) {
    ar__list_remove(&s->node);
    s->S = NULL;
    if (--S->count[s->signum] == 0)
      sigaction(s->signum, &S->saved[s->signum], NULL);
  }
}

static void sig_state_close(ar_engine_t *E, void *state) {
  (void)E;
  sig_state_t *S = state;
  if (S->sigs.next == NULL) return;
  while (!ar__list_empty(&S->sigs)) {
    watch_t *s = ar__container_of(S->sigs.next, watch_t, node);
    sig_close(s);
  }
}

static int wait_cancel(ar__task_t *t, void *data) {
  watch_t *s = data;
  ar__waiters_cancel(t, NULL);
  if (ar__list_empty(&s->waiters)) uv_unref((uv_handle_t *)&s->h);
  return AR__CANCEL_DONE;
}

static int parse_signal(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  char full[32];
  if (strncmp(name, "SIG", 3) != 0 && strlen(name) < sizeof full - 4) {
    strcpy(full, "SIG");
    strcat(full, name);
    name = full;
  }
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(names[i].name, name) == 0) return names[i].num;
  if (strcmp(name, "SIGKILL") == 0 || strcmp(name, "SIGSTOP") == 0)
    return luaL_argerror(L, arg,
                         lua_pushfstring(L, "%s cannot be caught", name));
  return luaL_argerror(
      L, arg,
      lua_pushfstring(L,
                      "unknown signal name '%s' (expected \"SIGHUP\", "
                      "\"SIGUSR1\", ...)",
                      luaL_checkstring(L, arg)));
}

/* async.signal(name) -> a signal object */
static int l_signal(lua_State *L) {
  int signum = parse_signal(L, 1);
  sig_state_t *S = state_open(L);
  ar_engine_t *E = ar__engine_of(L);
  sbox_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  b->signum = signum;
  luaL_setmetatable(L, SIGNAL_MT);
  watch_t *s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory");
  s->E = E;
  s->signum = signum;
  ar__list_init(&s->waiters);
  uv_signal_init(ar_engine_loop(E), &s->h);
  ar__handle_opened(E);
  if (S->count[signum] == 0) sigaction(signum, NULL, &S->saved[signum]);
  int rc = uv_signal_start(&s->h, sig_cb, signum);
  if (rc < 0) {
    uv_close((uv_handle_t *)&s->h, sig_close_cb);
    if (S->count[signum] == 0) sigaction(signum, &S->saved[signum], NULL);
    return luaL_error(L, "async.signal: cannot watch %s: %s", sig_name(signum),
                      uv_strerror(rc));
  }
  uv_unref((uv_handle_t *)&s->h);
  S->count[signum]++;
  s->S = S;
  ar__list_insert_tail(&S->sigs, &s->node);
  b->s = s;
  s->box = b;
  return 1;
}

static sbox_t *check_sig(lua_State *L) { return ar__check_self(L, 1); }

static int raise_closed(lua_State *L, int signum) {
  return ar__error_raise(L, "closed", "signal %s is closed", sig_name(signum));
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  if (ar__task_woken(L) == WOKEN_CLOSED)
    return raise_closed(L, ((sbox_t *)lua_touserdata(L, 1))->signum);
  lua_pushboolean(L, 1);
  return 1;
}

/* sig:wait() -> true, once the signal has arrived (at once if it arrived
 * while nobody waited); raises "closed" if the object is closed. */
static int s_wait(lua_State *L) {
  sbox_t *b = check_sig(L);
  watch_t *s = b->s;
  if (s == NULL) return raise_closed(L, b->signum);
  ar__task_t *t = ar__task_check_current(L, "signal:wait");
  if (s->pending > 0) {
    s->pending--;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  ar__waiters_push(&s->waiters, t);
  uv_ref((uv_handle_t *)&s->h);
  return ar__task_suspend(L, t, wait_cancel, s, wait_k, 0);
}

/* sig:close(): stops watching; waiting tasks raise "closed". Closing
 * twice does nothing. */
static int s_close(lua_State *L) {
  sbox_t *b = check_sig(L);
  if (b->s != NULL) sig_close(b->s);
  return 0;
}

static int s_gc(lua_State *L) {
  sbox_t *b = lua_touserdata(L, 1);
  if (b->s != NULL) sig_close(b->s);
  return 0;
}

static int s_tostring(lua_State *L) {
  sbox_t *b = check_sig(L);
  lua_pushfstring(L, "signal %s%s", sig_name(b->signum),
                  b->s != NULL ? "" : " (closed)");
  return 1;
}

static int s_name(lua_State *L) {
  lua_pushstring(L, sig_name(check_sig(L)->signum));
  return 1;
}

void ar__signal_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"wait", s_wait}, {"close", s_close}, {"name", s_name}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", s_gc},
                                  {"__close", s_close},
                                  {"__tostring", s_tostring},
                                  {NULL, NULL}};
  ar__class_new(L, SIGNAL_MT, methods, meta);
  lua_pushcfunction(L, l_signal);
  lua_setfield(L, -2, "signal");
}
