/* The engine: one uv loop (owned or borrowed), one lua_State, its tasks.
 * It holds no global state, so any number can live in one process. */
#include <stdio.h>
#include <string.h>

#include <lualib.h>

#include "internal.h"

const char *ar_version(void) { return AR_VERSION_STRING; }
int ar_version_num(void) { return AR_VERSION_NUM; }

const char *ar_strerror(int err) {
  switch (err) {
  case 0: return "success";
  case AR_ENOMEM: return "not enough memory";
  case AR_EINVAL: return "invalid argument";
  case AR_EFILE: return "cannot read script file";
  case AR_ESYNTAX: return "syntax error";
  case AR_ERUNTIME: return "script raised an error";
  case AR_ECANCELLED: return "cancelled";
  case AR_EDEADLOCK: return "deadlock";
  case AR_EBUSY: return "engine is running";
  default: return "unknown error";
  }
}

/* Lua's allocator, counting bytes so a host can cap them: past the cap the
 * script sees "not enough memory" and the host goes on. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ar_engine_t *E = ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    E->mem_used -= osize;
    return NULL;
  }
  if (E->mem_limit != 0 && nsize > osize &&
      E->mem_used + (nsize - osize) > E->mem_limit)
    return NULL;
  void *p = realloc(ptr, nsize);
  if (p == NULL) return NULL;
  E->mem_used = E->mem_used - osize + nsize;
  return p;
}

static int l_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "asyncrun: unprotected Lua error: %s\n", msg ? msg : "?");
  return 0;
}

static void set_error(ar_engine_t *E, const char *msg, size_t len) {
  char *copy = malloc(len + 1);
  if (copy == NULL) return; /* keep the old message rather than none */
  memcpy(copy, msg, len);
  copy[len] = '\0';
  free(E->errmsg);
  E->errmsg = copy;
}

const char *ar_engine_error(ar_engine_t *E) {
  return E != NULL && E->errmsg != NULL ? E->errmsg : "";
}

/* Runs in a protected call: everything that sets up the Lua state. */
static int init_p(lua_State *L) {
  ar_engine_t *E = lua_touserdata(L, 1);
  ar__engine_bind(L, E);
  luaL_openlibs(L);
  ar__error_open(L);
  ar__task_open(L);
  ar__modules_preload(L);
  return 0;
}

static void handle_close_cb(uv_handle_t *h) {
  ar_engine_t *E = h->data;
  E->handles_open--;
}

ar_engine_t *ar_engine_new(uv_loop_t *loop) {
  ar_engine_t *E = calloc(1, sizeof *E);
  if (E == NULL) return NULL;
  ar__list_init(&E->tasks);
  ar__list_init(&E->unretrieved);
  if (loop == NULL) {
    if (uv_loop_init(&E->own_loop) != 0) {
      free(E);
      return NULL;
    }
    E->loop = &E->own_loop;
    E->owns_loop = 1;
  } else {
    E->loop = loop;
  }
  E->L = lua_newstate(l_alloc, E);
  if (E->L == NULL) goto err;
  lua_atpanic(E->L, l_panic);
  *(ar__task_t **)lua_getextraspace(E->L) = NULL;
  uv_timer_init(E->loop, &E->uv_timer);
  E->uv_timer.data = E;
  E->handles_open++;
  if (ar__sched_init(E) != 0) goto err;
  lua_pushcfunction(E->L, init_p);
  lua_pushlightuserdata(E->L, E);
  if (lua_pcall(E->L, 1, 0, 0) != LUA_OK) goto err;
  return E;
err:
  ar_engine_free(E);
  return NULL;
}

lua_State *ar_engine_lua(ar_engine_t *E) { return E->L; }
uv_loop_t *ar_engine_loop(ar_engine_t *E) { return E->loop; }

void ar_engine_stop(ar_engine_t *E) {
  E->stopping = 1;
  ar__list_t *n;
  for (n = E->tasks.next; n != &E->tasks; n = n->next)
    ar__task_cancel(ar__container_of(n, ar__task_t, live));
}

/* Runs the loop until `done` holds or nothing can make progress.
 * Returns 1 when done, 0 on deadlock (no handle, no queued task). */
static int run_until(ar_engine_t *E, int (*done)(ar_engine_t *)) {
  while (!done(E)) {
    int more = uv_run(E->loop, UV_RUN_ONCE);
    if (done(E)) break;
    if (!more && ar__sched_pending(E) == 0) return 0;
  }
  return 1;
}

static int root_done(ar_engine_t *E) { return E->root->state == AR__TASK_DONE; }
static int all_done(ar_engine_t *E) { return E->ntasks == 0; }

/* After the root task: cancel what is left and let it clean up (asyncio's
 * run() semantics). A task that swallows cancellation is cancelled again;
 * one that still will not end has its thread closed, which runs its
 * pending <close> variables. */
static void settle(ar_engine_t *E) {
  for (int round = 0; round < 3 && E->ntasks > 0; round++) {
    ar_engine_stop(E);
    run_until(E, all_done);
  }
  while (E->ntasks > 0) {
    ar__task_t *t = ar__container_of(E->tasks.next, ar__task_t, live);
    if (t->cancel != NULL) {
      ar__cancel_fn fn = t->cancel;
      t->cancel = NULL;
      fn(t);
    }
#if LUA_VERSION_RELEASE_NUM >= 50406
    lua_closethread(t->co, E->L);
#else
    lua_resetthread(t->co);
#endif
    lua_settop(t->co, 0);
    *(ar__task_t **)lua_getextraspace(t->co) = NULL;
    t->state = AR__TASK_DONE;
    t->outcome = AR__OUT_CANCELLED;
    t->nres = 0;
    ar__list_remove(&t->live);
    E->ntasks--;
    luaL_unref(E->L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
  }
  /* The ready ring may still name closed tasks; they are gone now. */
  E->ready_len = 0;
  uv_idle_stop(&E->idle);
}

/* Protected: renders the root task's failure as "message\ntraceback". */
static int root_message_p(lua_State *L) {
  ar__task_t *t = lua_touserdata(L, 1);
  lua_checkstack(t->co, 2);
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

struct start {
  const char *path; /* file to load, or NULL */
  const char *code; /* else this string */
  const char *chunkname;
  int argc;
  const char *const *argv;
  int rc;
};

/* Protected: loads the chunk and spawns it as the root task. On a load
 * error it sets s->rc and returns the message. */
static int start_p(lua_State *L) {
  struct start *s = lua_touserdata(L, 1);
  ar_engine_t *E = ar__engine_of(L);
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
  for (int i = 0; i < s->argc; i++) lua_pushstring(L, s->argv[i]);
  E->root = ar__task_spawn(L, s->argc);
  lua_pushliteral(L, "main");
  lua_setiuservalue(L, -2, 2);
  return 0;
}

static int run(ar_engine_t *E, struct start *s) {
  lua_State *L = E->L;
  int top = lua_gettop(L);
  if (E->running) return AR_EBUSY;
  set_error(E, "", 0);
  E->stopping = 0;
  lua_pushcfunction(L, start_p);
  lua_pushlightuserdata(L, s);
  s->rc = 0;
  int st = lua_pcall(L, 1, 1, 0);
  if (st != LUA_OK || s->rc != 0) {
    size_t len = 0;
    const char *msg = lua_tolstring(L, -1, &len);
    set_error(E, msg ? msg : "error object is not a string", msg ? len : 30);
    lua_settop(L, top);
    return s->rc != 0 ? s->rc : AR_ENOMEM;
  }
  lua_settop(L, top);
  E->running = 1;
  ar__task_t *root = E->root;
  /* Keep the root's handle reachable until we have read its outcome. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, root->ref);
  int rc = 0;
  if (!run_until(E, root_done)) {
    static const char msg[] =
        "deadlock: every task is waiting and nothing can wake one "
        "(no timer, transfer or ready task is left)";
    ar_engine_stop(E);
    run_until(E, root_done);
    if (root->state != AR__TASK_DONE) settle(E);
    set_error(E, msg, sizeof msg - 1);
    rc = AR_EDEADLOCK;
  }
  if (rc == 0 && root->outcome == AR__OUT_ERROR) {
    rc = AR_ERUNTIME;
    lua_pushcfunction(L, root_message_p);
    lua_pushlightuserdata(L, root);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK || lua_isstring(L, -1)) {
      size_t len;
      const char *msg = lua_tolstring(L, -1, &len);
      set_error(E, msg, len);
    }
    lua_pop(L, 1);
  } else if (rc == 0 && root->outcome == AR__OUT_CANCELLED) {
    rc = AR_ECANCELLED;
    set_error(E, "cancelled", 9);
  }
  settle(E);
  ar__task_report_all(E);
  E->root = NULL;
  E->running = 0;
  lua_settop(L, top);
  return rc;
}

int ar_engine_run_file(ar_engine_t *E, const char *path, int argc,
                       const char *const *argv) {
  if (E == NULL || path == NULL || argc < 0 || (argc > 0 && argv == NULL))
    return AR_EINVAL;
  struct start s = {path, NULL, NULL, argc, argv, 0};
  return run(E, &s);
}

int ar_engine_run_string(ar_engine_t *E, const char *code,
                         const char *chunkname) {
  if (E == NULL || code == NULL) return AR_EINVAL;
  struct start s = {NULL, code, chunkname ? chunkname : "=(string)", 0, NULL, 0};
  return run(E, &s);
}

void ar_engine_free(ar_engine_t *E) {
  if (E == NULL) return;
  if (E->L != NULL) {
    if (E->ntasks > 0) settle(E);
    ar__task_report_all(E);
    lua_close(E->L);
    E->L = NULL;
  }
  if (E->handles_open > 0) {
    if (E->ready != NULL) ar__sched_close(E);
    uv_close((uv_handle_t *)&E->uv_timer, handle_close_cb);
    while (E->handles_open > 0) uv_run(E->loop, UV_RUN_NOWAIT);
  }
  if (E->owns_loop) uv_loop_close(E->loop);
  free(E->ready);
  free(E->heap);
  free(E->errmsg);
  free(E);
}
