/* Runs: a root task (a script file, a string or a global function) and
 * the way it ends. Blocking runs (ar_engine_run_*, ar_engine_call) and
 * started ones (ar_engine_start_*, the host runs the loop) share one state
 * machine, moved on by ar__engine_watch after every drain of the ready
 * queue:
 *
 *   IDLE --start--> RUNNING --the root ends, or deadlock--> SETTLING
 *   SETTLING --no task left--> IDLE, outcome reported
 *
 * SETTLING is asyncio.run's ending: the tasks the root left are cancelled
 * and awaited. A round of settling ends when nothing can make progress
 * ("stuck") or after AR__SETTLE_ROUND seconds; a task still alive then is
 * cancelled again, and after three rounds it is named on stderr and
 * closed by force, so a task that swallows every cancellation cannot
 * keep the process alive. "Stuck" (a deadlock) means nothing is queued
 * and nothing keeps the loop alive: no timer, no transfer, no pending
 * host operation. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct start {
  const char *path;  /* a file to load, or */
  const char *code;  /* a string, or */
  const char *fname; /* a global function to call */
  const char *chunkname;
  int argc;
  const char *const *argv;
  int nargs; /* for fname: the host's values on the stack */
  int rc;
};

/* Protected, with s and (for a call) the arguments on the stack: makes the
 * root task. Anything that can fail happens before ar__task_spawn queues
 * it, so a failure leaves no task behind. On a load error sets s->rc and
 * returns the message. */
static int start_p(lua_State *L) {
  struct start *s = lua_touserdata(L, 1);
  ar_engine_t *E = ar__engine_of(L);
  int nargs;
  /* The anchor's slot, taken now so that filling it cannot fail. */
  lua_pushboolean(L, 0);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  E->root_ref = ref;
  lua_pushstring(L, s->fname != NULL ? s->fname : "main");
  lua_insert(L, 2); /* the task's name */
  if (s->fname != NULL) {
    nargs = s->nargs;
    int ty = lua_getglobal(L, s->fname);
    if (ty != LUA_TFUNCTION && !luaL_getmetafield(L, -1, "__call")) {
      s->rc = AR_ERUNTIME;
      lua_pushfstring(L, "global '%s' is not a function (a %s value)", s->fname,
                      luaL_typename(L, -1));
      return 1;
    }
    if (ty != LUA_TFUNCTION) lua_pop(L, 1); /* the __call field */
    lua_insert(L, 3);
  } else {
    int st;
    if (s->path != NULL)
      st = luaL_loadfilex(L, strcmp(s->path, "-") == 0 ? NULL : s->path, NULL);
    else
      st = luaL_loadbufferx(L, s->code, strlen(s->code), s->chunkname, "t");
    if (st != LUA_OK) {
      s->rc = st == LUA_ERRSYNTAX ? AR_ESYNTAX
              : st == LUA_ERRMEM  ? AR_ENOMEM
                                  : AR_EFILE;
      return 1;
    }
    luaL_checkstack(L, s->argc, "too many script arguments");
    for (int i = 0; i < s->argc; i++)
      lua_pushstring(L, s->argv[i]);
    nargs = s->argc;
  }
  ar__task_t *t = ar__task_spawn(L, nargs);
  /* From here on nothing can fail. */
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 2);
  lua_rawseti(L, LUA_REGISTRYINDEX, ref);
  E->root = t;
  return 0;
}

/* Starts a run: the root task is queued. On failure the message is the
 * engine's error and the nargs values are popped either way. */
static int begin(ar_engine_t *E, struct start *s, int nargs) {
  lua_State *L = E->L;
  int top = lua_gettop(L) - nargs;
  if (E->phase != AR__PHASE_IDLE || E->blocking || E->freeing) {
    lua_settop(L, top);
    ar__engine_set_error(E, "a run is in progress", 20);
    return AR_EBUSY;
  }
  ar__engine_set_error(E, "", 0);
  if (!lua_checkstack(L, 4)) {
    lua_settop(L, top);
    ar__engine_set_error(E, "not enough memory", 17);
    return AR_ENOMEM;
  }
  E->stop_deferred = 0;
  ar__modules_restart(E);
  E->root_ref = LUA_NOREF;
  s->nargs = nargs;
  s->rc = 0;
  lua_pushcfunction(L, start_p);
  lua_pushlightuserdata(L, s);
  lua_rotate(L, top + 1, 2);
  E->mem_armed++;
  int st = lua_pcall(L, nargs + 1, 1, 0);
  E->mem_armed--;
  if (st != LUA_OK || s->rc != 0) {
    size_t len = 0;
    const char *msg = lua_tolstring(L, -1, &len);
    if (msg == NULL) msg = "error object is not a string", len = 29;
    ar__engine_set_error(E, msg, len);
    if (E->root_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, E->root_ref);
    E->root_ref = LUA_NOREF;
    lua_settop(L, top);
    return s->rc != 0 ? s->rc : st == LUA_ERRMEM ? AR_ENOMEM : AR_ERUNTIME;
  }
  lua_settop(L, top);
  E->phase = AR__PHASE_RUNNING;
  E->run_status = 0;
  E->settle_round = 0;
  return 0;
}

/* Protected: the root task's failure as "message\ntraceback". */
static int root_message_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  if (!lua_checkstack(t->co, 2)) return luaL_error(L, "not enough memory");
  lua_pushvalue(t->co, 1);
  lua_pushvalue(t->co, 2);
  lua_xmove(t->co, L, 2);
  luaL_tolstring(L, 2, NULL);
  if (lua_isstring(L, 3) && lua_rawlen(L, 3) > 0) {
    lua_pushliteral(L, "\n");
    lua_pushvalue(L, 3);
    lua_concat(L, 3);
  }
  return 1;
}

static void root_outcome(ar_engine_t *E) {
  ar__task_t *root = E->root;
  lua_State *L = E->L;
  if (root->outcome == AR__OUT_ERROR) {
    E->run_status = AR_ERUNTIME;
    int top = lua_gettop(L);
    if (lua_checkstack(L, 2)) {
      lua_pushcfunction(L, root_message_p);
      lua_pushlightuserdata(L, root);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK || lua_isstring(L, -1)) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        ar__engine_set_error(E, msg, len);
      }
    }
    lua_settop(L, top);
  } else if (root->outcome == AR__OUT_CANCELLED) {
    E->run_status = AR_ECANCELLED;
    ar__engine_set_error(E, "cancelled", 9);
  }
}

#define AR__SETTLE_ROUND 1.0 /* seconds */

static int stuck(ar_engine_t *E) {
  return E->ready_len == 0 && !uv_loop_alive(E->loop);
}

void ar__engine_force_close(ar_engine_t *E) {
  while (E->ntasks > 0)
    ar__task_force_end(ar__container_of(E->tasks.next, ar__task_t, live));
  /* The ready ring may still name closed tasks; they are gone now. */
  E->ready_len = 0;
  uv_idle_stop(&E->idle);
}

/* Lists the live tasks on stderr, one line each, after `what`. */
static void describe_tasks(ar_engine_t *E, const char *what) {
  char line[400];
  int n = 0;
  fprintf(stderr, "asyncrun: %s\n", what);
  for (ar__list_t *q = E->tasks.next; q != &E->tasks; q = q->next) {
    if (++n > 20) {
      fprintf(stderr, "  ... and %zu more\n", E->ntasks - 20);
      break;
    }
    ar__task_describe(ar__container_of(q, ar__task_t, live), line, sizeof line);
    fprintf(stderr, "  %s\n", line);
  }
  fflush(stderr);
}

/* Unreferenced: it ends a round early enough, but never keeps a loop
 * with nothing else to do alive (that is "stuck", seen at once). */
static void settle_timer_cb(uv_timer_t *h) {
  ar_engine_t *E = h->data;
  E->settle_expired = 1;
  ar__engine_watch(E);
}

static void settle_round(ar_engine_t *E) {
  E->settle_expired = 0;
  uv_timer_start(&E->settle_timer, settle_timer_cb,
                 (uint64_t)(AR__SETTLE_ROUND * 1000), 0);
  ar_engine_stop(E);
}

void ar__engine_hold(ar_engine_t *E) { E->holds++; }

void ar__engine_release(ar_engine_t *E) {
  assert(E->holds > 0);
  if (--E->holds > 0 || !E->stop_deferred) return;
  E->stop_deferred = 0;
  if (E->phase == AR__PHASE_SETTLING)
    settle_round(E);
  else
    ar_engine_stop(E);
}

/* The run is over: report it. A blocking caller collects the root's
 * results itself; a started run's callback gets them on the stack. */
static void end_run(ar_engine_t *E) {
  lua_State *L = E->L;
  ar__task_t *root = E->root;
  int ref = E->root_ref;
  ar_done_cb cb = E->done_cb;
  void *data = E->done_data;
  int status = E->run_status;
  E->phase = AR__PHASE_IDLE;
  E->root = NULL;
  E->root_ref = LUA_NOREF;
  E->done_cb = NULL;
  E->done_data = NULL;
  ar__task_report_all(E);
  if (E->blocking) {
    E->ended = root;
    E->ended_ref = ref;
    return;
  }
  int top = lua_gettop(L), n = 0;
  if (cb != NULL) {
    if (status == 0 && root->outcome == AR__OUT_OK && root->nvals > 0) {
      n = root->nvals;
      if (lua_checkstack(L, n) && lua_checkstack(root->co, 1)) {
        for (int i = 1; i <= n; i++) {
          lua_pushvalue(root->co, i);
          lua_xmove(root->co, L, 1);
        }
      } else {
        n = 0;
        status = AR_ENOMEM;
        ar__engine_set_error(E, "not enough memory for the results", 33);
      }
    }
    E->in_callback++;
    cb(E, status, n, data);
    E->in_callback--;
    if (E->freeing) return; /* the callback freed the engine */
    lua_settop(L, top);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void ar__engine_abandon_run(ar_engine_t *E) {
  if (E->phase == AR__PHASE_IDLE) return;
  uv_timer_stop(&E->settle_timer);
  E->done_cb = NULL;
  if (E->phase == AR__PHASE_RUNNING) E->run_status = AR_ECANCELLED;
  ar__engine_force_close(E);
  end_run(E);
}

void ar__engine_watch(ar_engine_t *E) {
  if (E->phase == AR__PHASE_RUNNING) {
    if (E->root->state == AR__TASK_DONE) {
      root_outcome(E);
    } else if (stuck(E)) {
      static const char msg[] =
          "deadlock: every task is waiting and nothing can wake one "
          "(no timer, transfer or ready task is left)";
      ar__engine_set_error(E, msg, sizeof msg - 1);
      E->run_status = AR_EDEADLOCK;
      describe_tasks(E, "deadlock; the tasks and where they wait:");
    } else {
      return;
    }
    E->phase = AR__PHASE_SETTLING;
    if (E->ntasks > 0) {
      settle_round(E);
    }
  }
  if (E->phase != AR__PHASE_SETTLING) return;
  if (E->holds > 0) {
    /* A module's grace period: rounds start again at the release. */
    E->settle_expired = 0;
    return;
  }
  if (E->ntasks > 0) {
    if (!stuck(E) && !E->settle_expired) return;
    if (++E->settle_round < 3) {
      settle_round(E);
      return;
    }
    describe_tasks(E, "closing tasks that ignored cancellation three times:");
    ar__engine_force_close(E);
  }
  uv_timer_stop(&E->settle_timer);
  end_run(E);
}

/* Runs the loop until the run is over. uv_run returns 0 when nothing keeps
 * the loop alive, possibly without running a drain: then watch here. */
static int wait_run(ar_engine_t *E) {
  E->blocking++;
  while (E->phase != AR__PHASE_IDLE)
    if (uv_run(E->loop, UV_RUN_ONCE) == 0 && E->phase != AR__PHASE_IDLE)
      ar__engine_watch(E);
  E->blocking--;
  return E->run_status;
}

/* Runs s to its end. With results, a successful run pushes the root's
 * results and returns how many. */
static int run_blocking(ar_engine_t *E, struct start *s, int nargs,
                        int results) {
  int rc = begin(E, s, nargs);
  if (rc != 0) return rc;
  rc = wait_run(E);
  lua_State *L = E->L;
  ar__task_t *root = E->ended;
  if (rc == 0 && results && root->outcome == AR__OUT_OK) {
    int n = root->nvals;
    if (n > 0 && (!lua_checkstack(L, n) || !lua_checkstack(root->co, 1))) {
      ar__engine_set_error(E, "not enough memory for the results", 33);
      rc = AR_ENOMEM;
    } else {
      for (int i = 1; i <= n; i++) {
        lua_pushvalue(root->co, i);
        lua_xmove(root->co, L, 1);
      }
      rc = n;
    }
  }
  luaL_unref(L, LUA_REGISTRYINDEX, E->ended_ref);
  E->ended_ref = LUA_NOREF;
  E->ended = NULL;
  return rc;
}

int ar_engine_run_file(ar_engine_t *E, const char *path, int argc,
                       const char *const *argv) {
  if (E == NULL || E->L == NULL || path == NULL || argc < 0 ||
      (argc > 0 && argv == NULL))
    return AR_EINVAL;
  struct start s = {.path = path, .argc = argc, .argv = argv};
  return run_blocking(E, &s, 0, 0);
}

int ar_engine_run_string(ar_engine_t *E, const char *code,
                         const char *chunkname) {
  if (E == NULL || E->L == NULL || code == NULL) return AR_EINVAL;
  struct start s = {.code = code,
                    .chunkname = chunkname ? chunkname : "=(string)"};
  return run_blocking(E, &s, 0, 0);
}

int ar_engine_call(ar_engine_t *E, const char *name, int nargs) {
  if (E == NULL || E->L == NULL || name == NULL || nargs < 0 ||
      lua_gettop(E->L) < nargs)
    return AR_EINVAL;
  struct start s = {.fname = name};
  return run_blocking(E, &s, nargs, 1);
}

static int run_start(ar_engine_t *E, struct start *s, int nargs, ar_done_cb cb,
                     void *data) {
  int rc = begin(E, s, nargs);
  if (rc != 0) return rc;
  E->done_cb = cb;
  E->done_data = data;
  return 0;
}

int ar_engine_start_file(ar_engine_t *E, const char *path, int argc,
                         const char *const *argv, ar_done_cb cb, void *data) {
  if (E == NULL || E->L == NULL || path == NULL || argc < 0 ||
      (argc > 0 && argv == NULL))
    return AR_EINVAL;
  struct start s = {.path = path, .argc = argc, .argv = argv};
  return run_start(E, &s, 0, cb, data);
}

int ar_engine_start_string(ar_engine_t *E, const char *code,
                           const char *chunkname, ar_done_cb cb, void *data) {
  if (E == NULL || E->L == NULL || code == NULL) return AR_EINVAL;
  struct start s = {.code = code,
                    .chunkname = chunkname ? chunkname : "=(string)"};
  return run_start(E, &s, 0, cb, data);
}

int ar_engine_start_call(ar_engine_t *E, const char *name, int nargs,
                         ar_done_cb cb, void *data) {
  if (E == NULL || E->L == NULL || name == NULL || nargs < 0 ||
      lua_gettop(E->L) < nargs)
    return AR_EINVAL;
  struct start s = {.fname = name};
  return run_start(E, &s, nargs, cb, data);
}
