/* The floor for the serve workload: the least a server on libuv can do per
 * request. No HTTP parser: every "\r\n\r\n" a connection sends ends one
 * request (wrk sends GETs without bodies), and each is answered with the
 * bytes asyncrun's server sends for "hello" (status line, Date,
 * Connection, Content-Length), written at once with uv_try_write. What is
 * left is the kernel's share and the load generator's: how many requests
 * per second wrk itself can drive on this machine.
 *
 * usage: serve_floor [PORT]   prints "port=N" once listening. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#define HEAD_MAX 128
#define BATCH 64

typedef struct {
  uv_tcp_t tcp; /* first: callbacks get the handle */
  int matched;  /* bytes of "\r\n\r\n" seen at the end of the input */
  char in[16384];
} conn_t;

static char response[HEAD_MAX + 8];
static size_t response_len;
static time_t response_time;

/* The answer, its Date refreshed once a second as a real server's is. */
static void refresh_response(uv_loop_t *loop) {
  time_t now = (time_t)(uv_now(loop) / 1000);
  if (response_len > 0 && now == response_time) return;
  response_time = now;
  time_t wall = time(NULL);
  struct tm tm;
  char date[40];
  gmtime_r(&wall, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  int n = snprintf(response, sizeof response,
                   "HTTP/1.1 200 OK\r\nDate: %s\r\nConnection: keep-alive\r\n"
                   "Content-Length: 5\r\n\r\nhello",
                   date);
  response_len = n > 0 ? (size_t)n : 0;
}

static void on_closed(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = (conn_t *)h;
  *buf = uv_buf_init(c->in, sizeof c->in);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  static const char end[] = "\r\n\r\n";
  conn_t *c = (conn_t *)s;
  if (nread < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  int requests = 0;
  for (ssize_t i = 0; i < nread; i++) {
    char ch = buf->base[i];
    if (ch == end[c->matched])
      c->matched++;
    else
      c->matched = ch == '\r' ? 1 : 0;
    if (c->matched == 4) {
      requests++;
      c->matched = 0;
    }
  }
  refresh_response(s->loop);
  while (requests > 0) {
    uv_buf_t out[BATCH];
    int k = requests < BATCH ? requests : BATCH;
    for (int i = 0; i < k; i++)
      out[i] = uv_buf_init(response, (unsigned)response_len);
    if (uv_try_write(s, out, (unsigned)k) != (int)(response_len * (size_t)k)) {
      /* A client too slow to take a few hundred bytes: not wrk. */
      uv_close((uv_handle_t *)s, on_closed);
      return;
    }
    requests -= k;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  uv_tcp_init(server->loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, &addr);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 1024, on_connection) != 0 ||
      uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len) != 0) {
    fprintf(stderr, "serve_floor: cannot listen\n");
    return 1;
  }
  printf("port=%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
