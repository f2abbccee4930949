/* The HTTP module at the C level: engines keep their HTTP state to
 * themselves (two engines on two threads at once), and freeing an engine
 * with transfers in flight releases everything curl holds: every uv handle
 * is closed (the host's loop closes cleanly) and no descriptor is left.
 *
 * The "server" is a listening socket nobody accepts from: connections
 * complete in the backlog and requests are never answered. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "asyncrun.h"
#include "http.h"

#include "check.h"

/* For set-up steps the rest of the test cannot do without. */
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond);     \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_RC(E, rc)                                                        \
  do {                                                                         \
    int rc_ = (rc);                                                            \
    CHECK(rc_ == 0);                                                           \
    if (rc_ != 0)                                                              \
      fprintf(stderr, "%s:%d: engine failed (%s): %s\n", __FILE__, __LINE__,   \
              ar_strerror(rc_), ar_engine_error(E));                           \
  } while (0)

static int silent_port; /* listens, never accepts */
static int closed_port; /* nothing listens */

static int listen_socket(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(fd >= 0);
  REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  REQUIRE(listen(fd, 512) == 0);
  REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  REQUIRE(d != NULL);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void run(ar_engine_t *E, const char *fmt) {
  char code[4096];
  snprintf(code, sizeof code, fmt, silent_port, closed_port);
  CHECK_RC(E, ar_engine_run_string(E, code, "=test"));
}

/* Timeouts and refusals, many at once, through one engine's multi. */
static const char *const busy_script =
    "local async = require 'async'\n"
    "local http = require 'async.http'\n"
    "local tasks = {}\n"
    "for i = 1, 20 do\n"
    "  tasks[#tasks + 1] = async.spawn(function()\n"
    "    local ok, e = pcall(http.get, 'http://127.0.0.1:%d/', {timeout = "
    "0.2})\n"
    "    assert(not ok and e.kind == 'timeout', tostring(e))\n"
    "  end)\n"
    "  tasks[#tasks + 1] = async.spawn(function()\n"
    "    local ok, e = pcall(http.get, 'http://127.0.0.1:%d/')\n"
    "    assert(not ok and e.kind == 'connect', tostring(e))\n"
    "  end)\n"
    "end\n"
    "async.gather(tasks)\n"
    "assert(http.stats().active == 0)\n";

static void engine_thread(void *arg) {
  (void)arg;
  for (int round = 0; round < 3; round++) {
    ar_engine_t *E = ar_engine_new(NULL);
    REQUIRE(E != NULL);
    run(E, busy_script);
    ar_engine_free(E);
  }
}

static void test_two_engines_on_two_threads(void) {
  uv_thread_t a, b;
  REQUIRE(uv_thread_create(&a, engine_thread, NULL) == 0);
  REQUIRE(uv_thread_create(&b, engine_thread, NULL) == 0);
  CHECK(uv_thread_join(&a) == 0);
  CHECK(uv_thread_join(&b) == 0);
}

/* Two engines on one thread, alternating on one loop each. */
static void test_two_engines_interleaved(void) {
  ar_engine_t *E1 = ar_engine_new(NULL), *E2 = ar_engine_new(NULL);
  REQUIRE(E1 != NULL && E2 != NULL);
  run(E1, busy_script);
  run(E2, busy_script);
  run(E1, busy_script);
  ar_engine_free(E1);
  run(E2, busy_script);
  ar_engine_free(E2);
}

/* The script ends with transfers in flight and a session queue full:
 * the run cancels them; then freeing the engine closes everything. */
static void test_free_with_transfers_in_flight(void) {
  int fds0 = count_fds();
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  ar_config_t *cfg = ar_config_new();
  REQUIRE(cfg != NULL && ar_config_set_loop(cfg, &loop) == 0);
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  REQUIRE(E != NULL);
  run(E, "local async = require 'async'\n"
         "local http = require 'async.http'\n"
         "local s = http.session({max_connections = 10})\n"
         "for i = 1, 30 do async.spawn(function() "
         "s:get('http://127.0.0.1:%d/') end) end\n"
         "async.sleep(0.1)\n"
         "assert(http.stats().active == 10 and s.waiting == 20)\n");
  /* A second run may start requests again, then the engine goes away
   * while one is still running (its task is cancelled in ar_engine_free). */
  run(E, "local async = require 'async'\n"
         "local http = require 'async.http'\n"
         "assert(http.stats().active == 0)\n"
         "async.spawn(function() http.get('http://127.0.0.1:%d/') end)\n"
         "async.sleep(0.05)\n"
         "assert(http.stats().active == 1)\n");
  ar_engine_free(E);
  /* Every handle the engine (and curl through it) opened is closed. */
  CHECK_INT(uv_run(&loop, UV_RUN_NOWAIT), 0);
  CHECK_INT(uv_loop_close(&loop), 0);
  CHECK_INT(count_fds(), fds0);
}

/* Out of descriptors: the connections that cannot get a socket fail with
 * kind "connect", one by one; the others go on to their own end (here a
 * timeout); no transfer is reported as cancelled, the multi handle lives
 * on, and with descriptors back the next requests work. */
static void test_out_of_descriptors(void) {
  struct rlimit old, low;
  REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
  ar_engine_t *E = ar_engine_new(NULL);
  REQUIRE(E != NULL);
  /* Loads the multi first, so that libcurl's own descriptors exist. */
  run(E, "local http = require 'async.http'\n"
         "local silent, closed = %d, %d\n"
         "pcall(http.get, 'http://127.0.0.1:' .. closed .. '/')\n");
  low = old;
  low.rlim_cur = (rlim_t)count_fds() + 12;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  run(E, "local async = require 'async'\n"
         "local http = require 'async.http'\n"
         "local kinds = {}\n"
         "local tasks = {}\n"
         "for i = 1, 40 do tasks[i] = async.spawn(function()\n"
         "  local ok, e = pcall(http.get, 'http://127.0.0.1:%d/', "
         "{timeout = 0.5})\n"
         "  assert(not ok and type(e) == 'table', tostring(e))\n"
         "  kinds[e.kind] = (kinds[e.kind] or 0) + 1\n"
         "end) end\n"
         "async.gather(tasks)\n"
         "assert(not kinds.cancelled, 'a transport failure said cancelled')\n"
         "assert(kinds.connect and kinds.connect > 0, 'no connect failure')\n"
         "assert(kinds.timeout and kinds.timeout > 0, 'no timeout')\n"
         "assert((kinds.connect + kinds.timeout) == 40)\n"
         "local st = http.stats()\n"
         "assert(st.active == 0 and st.stale == 0 and st.multi_errors == 0)\n");
  REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
  run(E, "local http = require 'async.http'\n"
         "local silent, closed = %d, %d\n"
         "local ok, e = pcall(http.get, 'http://127.0.0.1:' .. closed .. '/')\n"
         "assert(e.kind == 'connect', tostring(e))\n"
         "ok, e = pcall(http.get, 'http://127.0.0.1:' .. silent .. '/', "
         "{timeout = 0.2})\n"
         "assert(e.kind == 'timeout', tostring(e))\n");
  ar_engine_free(E);
}

/* CURLE_ABORTED_BY_CALLBACK, which curl also reports for every transfer
 * of a multi whose socket callback failed, is a cancellation only when we
 * aborted the request; a transport failure never says "cancelled". */
static void test_abort_kinds(void) {
  ar__http_req_t req;
  ar__http_req_init(&req);
  req.result = CURLE_ABORTED_BY_CALLBACK;
  CHECK(strcmp(ar__http_error_kind(&req), "protocol") == 0);
  req.aborted = 1;
  CHECK(strcmp(ar__http_error_kind(&req), "cancelled") == 0);
  req.aborted = 0;
  req.result = CURLE_WEIRD_SERVER_REPLY;
  CHECK(strcmp(ar__http_error_kind(&req), "protocol") == 0);
  req.result = CURLE_RECV_ERROR;
  req.too_large = 1;
  CHECK(strcmp(ar__http_error_kind(&req), "too_large") == 0);
}

/* An engine that never makes a request never loads its multi. */
static void test_no_request_no_multi(void) {
  ar_engine_t *E = ar_engine_new(NULL);
  REQUIRE(E != NULL);
  run(E, "local http = require 'async.http'\n"
         "local st = http.stats()\n"
         "assert(st.active == 0 and st.handles == 0)\n");
  ar_engine_free(E);
}

int main(void) {
  int silent = listen_socket(&silent_port);
  int closed = listen_socket(&closed_port);
  close(closed);
  test_abort_kinds();
  test_no_request_no_multi();
  test_two_engines_interleaved();
  test_two_engines_on_two_threads();
  test_free_with_transfers_in_flight();
  test_out_of_descriptors();
  close(silent);
  return check_summary("test_http_engine");
}
