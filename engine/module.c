/* The parts of the module contract (module.h) that are not about tasks:
 * the accounting of uv handles and requests, work that cannot be
 * aborted, and per-engine module state with its stop and close hooks. */
#include <assert.h>
#include <string.h>

#include "internal.h"

/* ---- handles and requests ---------------------------------------------- */

void ar__handle_opened(ar_engine_t *E) { E->handles_open++; }

void ar__handle_closed(ar_engine_t *E) { ar__engine_handle_closed(E); }

void ar__handle_close_cb(uv_handle_t *h) { ar__engine_handle_closed(h->data); }

void ar__req_started(ar_engine_t *E) { E->reqs_open++; }

void ar__req_finished(ar_engine_t *E) {
  assert(E->reqs_open > 0);
  ar__engine_req_finished(E);
}

/* ---- work that cannot be aborted --------------------------------------- */

void ar__work_start(ar__work_t *w, ar__task_t *t) {
  w->E = t->E;
  w->task = t;
  ar__req_started(t->E);
}

void ar__work_orphan(ar__work_t *w) { w->task = NULL; }

ar__task_t *ar__work_finish(ar__work_t *w) {
  ar__task_t *t = w->task;
  w->task = NULL;
  /* Last: with a borrowed loop this may release the engine. */
  ar__req_finished(w->E);
  return t;
}

/* ---- module state -------------------------------------------------------- */

struct ar__modstate_s {
  struct ar__modstate_s *next;
  const ar__module_t *m;
  int stopped;
  max_align_t state[]; /* m->size bytes */
};

int ar__index_method(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

void *ar__module_state(ar_engine_t *E, const ar__module_t *m) {
  for (struct ar__modstate_s *s = E->modules; s != NULL; s = s->next)
    if (s->m == m) return s->state;
  return NULL;
}

void *ar__module_open(ar_engine_t *E, const ar__module_t *m) {
  void *state = ar__module_state(E, m);
  if (state != NULL) return state;
  assert(!E->freeing);
  struct ar__modstate_s *s = calloc(1, sizeof *s + m->size);
  if (s == NULL) return NULL;
  s->m = m;
  s->next = E->modules;
  E->modules = s;
  if (m->drained != NULL) E->drain_hooks++;
  return s->state;
}

void ar__modules_stop(ar_engine_t *E) {
  for (struct ar__modstate_s *s = E->modules; s != NULL; s = s->next) {
    if (s->stopped || s->m->stop == NULL) continue;
    s->stopped = 1;
    s->m->stop(E, s->state);
  }
}

void ar__modules_drained(ar_engine_t *E) {
  for (struct ar__modstate_s *s = E->modules; s != NULL; s = s->next)
    if (s->m->drained != NULL) s->m->drained(E, s->state);
}

void ar__modules_restart(ar_engine_t *E) {
  for (struct ar__modstate_s *s = E->modules; s != NULL; s = s->next)
    s->stopped = 0;
}

/* Newest first: a module opened later may use one opened earlier. The
 * states stay allocated until the engine's memory goes (ar__modules_free):
 * handles embedded in them close later. */
void ar__modules_close(ar_engine_t *E) {
  for (struct ar__modstate_s *s = E->modules; s != NULL; s = s->next)
    if (s->m->close != NULL) s->m->close(E, s->state);
}

void ar__modules_free(ar_engine_t *E) {
  while (E->modules != NULL) {
    struct ar__modstate_s *s = E->modules;
    E->modules = s->next;
    free(s);
  }
}
