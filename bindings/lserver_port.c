/* The server's engine contact on today's engine (see lserver_port.h).
 * This is the one server file that includes internal.h; it goes away with
 * the port onto engine/module.h. */
#include "lserver_port.h"

#include "internal.h"

static void cancel_tramp(ar__task_t *t) {
  srv_wait_t *w = t->wait_data;
  w->cancel(w);
}

int srv_suspend(lua_State *L, ar__task_t *t, srv_wait_t *w, lua_KFunction k,
                lua_KContext ctx) {
  return ar__task_suspend(L, t, cancel_tramp, w, k, ctx);
}

void srv_wake(ar__task_t *t) { ar__task_wake(t, 0, 1); }

void srv_handle_opened(ar_engine_t *E) { E->handles_open++; }

void srv_handle_closed(ar_engine_t *E) { ar__engine_handle_closed(E); }
