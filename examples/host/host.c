/* A host application embedding asyncrun in its own libuv loop.
 *
 * The host has a loop with work of its own (a heartbeat timer) and a
 * "device" whose reads complete later, from host timers. It gives scripts
 * a C module, `device`, whose read(channel) is a host asynchronous
 * operation: the calling task waits, the others run. It starts a script
 * and keeps running its own loop; a callback tells it when the script is
 * over.
 *
 *   usage: host_example [script.lua]   (default: sensors.lua next to it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <asyncrun.h>

struct host {
  uv_loop_t loop;
  uv_timer_t heartbeat;
  int beats, beats_at_end;
  int started, completed, cancelled;
  int status;
  ar_engine_t *E;
};

/* ---- the device: a read takes 20 ms per channel number ------------------ */

struct read_req {
  uv_timer_t timer; /* its memory goes in the close callback */
  ar_op_t *op;
  int channel;
  struct host *host;
};

static void req_close_cb(uv_handle_t *h) { free(h->data); }

static void read_done_cb(uv_timer_t *t) {
  struct read_req *r = t->data;
  printf("device: channel %d ready\n", r->channel);
  r->host->completed++;
  /* The script's device.read returns these: the reading and its unit. */
  ar_op_resolve_values(r->op, "ds", r->channel * 10 + 0.5, "mV");
  uv_close((uv_handle_t *)&r->timer, req_close_cb);
}

/* The task waiting for the read was cancelled (here by a timeout): abort
 * the read. The op is freed once this returns. */
static void read_cancel_cb(ar_op_t *op, void *data) {
  struct read_req *r = data;
  (void)op;
  printf("device: read on channel %d cancelled\n", r->channel);
  r->host->cancelled++;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, req_close_cb);
}

/* device.read(channel) -> value, unit */
static int l_read(lua_State *L) {
  struct host *h = ar_engine_data(ar_engine_of(L));
  lua_Integer ch = luaL_checkinteger(L, 1);
  luaL_argcheck(L, ch >= 0 && ch <= 100, 1, "no such channel");
  struct read_req *r = malloc(sizeof *r);
  if (r == NULL) return luaL_error(L, "not enough memory");
  r->op = ar_op_new(L, read_cancel_cb, r);
  if (r->op == NULL) {
    free(r);
    return luaL_error(L, "device.read must be called from a task");
  }
  r->channel = (int)ch;
  r->host = h;
  uv_timer_init(&h->loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, read_done_cb, (uint64_t)(20 * ch), 0);
  h->started++;
  printf("device: read channel %d started\n", r->channel);
  return ar_op_suspend(L, r->op);
}

static const luaL_Reg device_funcs[] = {{"read", l_read}, {NULL, NULL}};

/* ---- the host's own work --------------------------------------------------
 */

static void heartbeat_cb(uv_timer_t *t) {
  struct host *h = t->data;
  h->beats++;
}

/* The script is over: report, and let the loop end by closing what keeps
 * it alive. */
static void done_cb(ar_engine_t *E, int status, int nresults, void *data) {
  struct host *h = data;
  h->status = status;
  if (status == 0) {
    /* The script's return values are on the engine's stack. */
    lua_State *L = ar_engine_lua(E);
    if (nresults > 0 && lua_isinteger(L, -nresults))
      printf("host: script finished: it read %d channels\n",
             (int)lua_tointeger(L, -nresults));
    else
      printf("host: script finished\n");
  } else {
    printf("host: script failed (%s): %s\n", ar_strerror(status),
           ar_engine_error(E));
  }
  h->beats_at_end = h->beats;
  uv_close((uv_handle_t *)&h->heartbeat, NULL);
}

int main(int argc, char **argv) {
  struct host h;
  memset(&h, 0, sizeof h);
  const char *script = argc > 1 ? argv[1] : "sensors.lua";

  uv_loop_init(&h.loop);
  uv_timer_init(&h.loop, &h.heartbeat);
  h.heartbeat.data = &h;
  uv_timer_start(&h.heartbeat, heartbeat_cb, 5, 5);

  /* The engine shares the host's loop; the script may not touch files or
   * end the process, and gets 32 MiB. */
  ar_config_t *cfg = ar_config_new();
  if (cfg == NULL || ar_config_set_loop(cfg, &h.loop) != 0 ||
      ar_config_set_memory_limit(cfg, 32u << 20) != 0 ||
      ar_config_deny(cfg, "io") != 0 || ar_config_deny(cfg, "os.exit") != 0 ||
      ar_config_deny(cfg, "os.execute") != 0 ||
      ar_config_deny(cfg, "_G.dofile") != 0 ||
      ar_config_deny(cfg, "_G.loadfile") != 0) {
    fprintf(stderr, "host: cannot configure the engine\n");
    return 1;
  }
  h.E = ar_engine_new(cfg);
  ar_config_free(cfg);
  if (h.E == NULL) {
    fprintf(stderr, "host: cannot create the engine\n");
    return 1;
  }
  ar_engine_set_data(h.E, &h);
  ar_engine_register_library(h.E, "device", device_funcs);

  int rc = ar_engine_start_file(h.E, script, 0, NULL, done_cb, &h);
  if (rc != 0) {
    fprintf(stderr, "host: %s\n", ar_engine_error(h.E));
    uv_close((uv_handle_t *)&h.heartbeat, NULL);
    h.status = rc;
  }

  /* The host's loop, as it would run anyway. */
  uv_run(&h.loop, UV_RUN_DEFAULT);

  printf("host: %d reads started, %d completed, %d cancelled\n", h.started,
         h.completed, h.cancelled);
  printf("host: the heartbeat kept ticking meanwhile: %s\n",
         h.beats_at_end > 0 ? "yes" : "no");

  /* The engine's handles close on the host's loop: run it once more. */
  ar_engine_free(h.E);
  uv_run(&h.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&h.loop) != 0) {
    fprintf(stderr, "host: the loop still has handles\n");
    return 1;
  }
  return h.status == 0 ? 0 : 1;
}
