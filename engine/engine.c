/* The engine: one uv loop (owned or borrowed), one lua_State, its tasks.
 * It holds no global state, so any number can live in one process, in one
 * thread or one per thread. Runs are in run.c, the config in config.c,
 * host operations in op.c. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

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
  case AR_EBUSY: return "a run is in progress";
  default: return "unknown error";
  }
}

/* Lua's allocator, counting bytes so a host can cap them: past the cap the
 * script sees "not enough memory" and the host goes on. The cap is armed
 * only while scripts run (the scheduler's drain, a run being loaded, an op
 * building its values), all of it inside protected calls; what the host
 * pushes on the main thread between runs is never refused by the cap, so
 * an unprotected push cannot panic because of it. Shrinking never fails,
 * as Lua requires. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ar_engine_t *E = ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    ar__pool_realloc(&E->pool, ptr, osize, 0);
    E->mem_used -= osize;
    return NULL;
  }
  if (E->mem_limit != 0 && E->mem_armed > 0 && nsize > osize &&
      E->mem_used + (nsize - osize) > E->mem_limit)
    return NULL;
  void *p = ar__pool_realloc(&E->pool, ptr, osize, nsize);
  if (p == NULL) return NULL;
  E->mem_used = E->mem_used - osize + nsize;
  return p;
}

static int l_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "asyncrun: unprotected Lua error: %s\n", msg ? msg : "?");
  return 0;
}

void ar__engine_set_error(ar_engine_t *E, const char *msg, size_t len) {
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

struct init {
  ar_engine_t *E;
  const ar_config_t *cfg;
  void (*preload)(lua_State *L);
};

/* Runs in a protected call: everything that sets up the Lua state. */
static int init_p(lua_State *L) {
  struct init *in = lua_touserdata(L, 1);
  ar_engine_t *E = in->E;
  ar__engine_bind(L, E);
  ar__config_open(L, in->cfg, in->preload);
  ar__error_open(L);
  ar__task_open(L);
  /* Lua builds this message when an error handler fails, outside any
   * protected call (lua_resume's end). Kept interned, building it again
   * never allocates, so it cannot panic under the cap. */
  lua_pushliteral(L, "error in error handling");
  lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&init_p);
  return 0;
}

/* Frees what the engine owns once no handle or request is left. */
static void release(ar_engine_t *E) {
  assert(E->handles_open == 0 && E->reqs_open == 0);
  if (E->owns_loop) {
    int rc = uv_loop_close(E->loop);
    /* Every handle of ours went through its close callback; a handle the
     * host put on our loop is its bug, but not a reason to free memory
     * libuv still uses. */
    assert(rc == 0);
    if (rc != 0) return;
  }
  ar__modules_free(E);
  free(E->ready);
  free(E->heap);
  free(E->dfs);
  free(E->errmsg);
  free(E);
}

void ar__engine_handle_closed(ar_engine_t *E) {
  assert(E->handles_open > 0);
  /* A borrowed loop: ar_engine_free returned long ago, the memory goes
   * with the last handle or request. */
  if (--E->handles_open == 0 && E->reqs_open == 0 && E->freeing &&
      !E->owns_loop)
    release(E);
}

void ar__engine_req_finished(ar_engine_t *E) {
  if (--E->reqs_open == 0 && E->handles_open == 0 && E->freeing &&
      !E->owns_loop)
    release(E);
}

static void interrupt_cb(uv_async_t *h) {
  ar_engine_t *E = h->data;
  E->interrupts = 0;
  ar_engine_stop(E);
}

void ar__engine_stats(ar_engine_t *E, ar__engine_stats_t *st) {
  st->tasks = E->ntasks;
  st->ready = E->ready_len;
  st->timers = E->heap_len;
  st->memory = E->mem_used;
  st->handles = E->handles_open;
  st->requests = E->reqs_open;
  st->spare_threads = ar__task_spare_threads(E);
}

int ar_engine_failures(ar_engine_t *E) {
  return E != NULL ? E->failures_reported : 0;
}

void ar__engine_close_cb(uv_handle_t *h) { ar__engine_handle_closed(h->data); }

/* Creation runs everything that can fail before the first uv handle is
 * initialized: a handle can only leave a loop through a close callback,
 * which a failing constructor cannot wait for on a borrowed loop. */
ar_engine_t *ar__engine_new(const ar_config_t *cfg,
                            void (*preload)(lua_State *L)) {
  ar_engine_t *E = calloc(1, sizeof *E);
  if (E == NULL) return NULL;
  ar__list_init(&E->tasks);
  ar__list_init(&E->unretrieved);
  ar__list_init(&E->ops);
  E->root_ref = E->ended_ref = LUA_NOREF;
  E->L = lua_newstate(l_alloc, E);
  if (E->L == NULL) goto err;
  lua_atpanic(E->L, l_panic);
  *(ar__task_t **)lua_getextraspace(E->L) = NULL;
  struct init in = {E, cfg, preload};
  lua_pushcfunction(E->L, init_p);
  lua_pushlightuserdata(E->L, &in);
  if (lua_pcall(E->L, 1, 0, 0) != LUA_OK) goto err;
  E->mem_limit = cfg != NULL ? cfg->mem_limit : 0;
  if (cfg != NULL && cfg->loop != NULL) {
    E->loop = cfg->loop;
  } else {
    if (uv_loop_init(&E->own_loop) != 0) goto err;
    E->loop = &E->own_loop;
    E->owns_loop = 1;
  }
  /* ar__sched_init allocates before it initializes a handle. */
  if (ar__sched_init(E) != 0) goto err;
  uv_timer_init(E->loop, &E->uv_timer);
  E->uv_timer.data = E;
  E->handles_open++;
  uv_timer_init(E->loop, &E->settle_timer);
  E->settle_timer.data = E;
  E->handles_open++;
  uv_unref((uv_handle_t *)&E->settle_timer);
  if (uv_async_init(E->loop, &E->interrupt_async, interrupt_cb) == 0) {
    E->interrupt_async.data = E;
    E->handles_open++;
    uv_unref((uv_handle_t *)&E->interrupt_async);
  } else {
    E->interrupt_async.data = NULL; /* ar_engine_interrupt is then a no-op */
  }
  return E;
err:
  if (E->L != NULL) {
    lua_close(E->L);
    ar__pool_close(&E->pool);
  }
  if (E->owns_loop) uv_loop_close(E->loop);
  free(E->ready);
  free(E);
  return NULL;
}

lua_State *ar_engine_lua(ar_engine_t *E) { return E->L; }
uv_loop_t *ar_engine_loop(ar_engine_t *E) { return E->loop; }
ar_engine_t *ar_engine_of(lua_State *L) { return ar__engine_of(L); }
void ar_engine_set_data(ar_engine_t *E, void *data) { E->host_data = data; }
void *ar_engine_data(ar_engine_t *E) { return E->host_data; }
size_t ar_engine_memory(ar_engine_t *E) { return E->mem_used; }
void ar_engine_set_memory_limit(ar_engine_t *E, size_t bytes) {
  E->mem_limit = bytes;
}
size_t ar_engine_tasks(ar_engine_t *E) { return E->ntasks; }

void ar_engine_stop(ar_engine_t *E) {
  if (E == NULL || E->L == NULL) return;
  ar__modules_stop(E);
  if (E->holds > 0) { /* a stop hook lets work finish first */
    E->stop_deferred = 1;
    return;
  }
  ar__list_t *n;
  for (n = E->tasks.next; n != &E->tasks; n = n->next)
    ar__task_cancel(ar__container_of(n, ar__task_t, live));
}

/* Nothing here runs a script's cleanup asynchronously: a run still in
 * progress is abandoned (its tasks closed by force, their pending waits
 * cancelled), so freeing never waits on a script. */
void ar_engine_free(ar_engine_t *E) {
  if (E == NULL || E->freeing) return;
  if (E->L != NULL) {
    ar__engine_abandon_run(E);
    if (E->ntasks > 0) ar__engine_force_close(E);
    ar__task_report_all(E);
    /* Modules close their handles while Lua is still there, before the
     * finalizers run in no particular order. */
    ar__modules_close(E);
    if (E->ended_ref != LUA_NOREF) {
      luaL_unref(E->L, LUA_REGISTRYINDEX, E->ended_ref);
      E->ended_ref = LUA_NOREF;
    }
    lua_close(E->L);
    ar__pool_close(&E->pool);
    E->L = NULL;
  }
  ar__op_free_all(E);
  E->freeing = 1;
  ar__sched_close(E);
  uv_close((uv_handle_t *)&E->uv_timer, ar__engine_close_cb);
  uv_close((uv_handle_t *)&E->settle_timer, ar__engine_close_cb);
  if (E->interrupt_async.data != NULL)
    uv_close((uv_handle_t *)&E->interrupt_async, ar__engine_close_cb);
  /* A borrowed loop: the last close callback releases E. An owned loop
   * inside its own uv_run (a misuse) cannot be closed here: leak rather
   * than free memory uv_run is using. */
  if (!E->owns_loop || E->in_callback) return;
  while (E->handles_open > 0 || E->reqs_open > 0)
    uv_run(E->loop, E->reqs_open > 0 ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  release(E);
}
