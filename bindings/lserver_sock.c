/* Two of h2o's socket paths with fewer system calls: pausing reads, and
 * writing at once.
 *
 * Reads. h2o 2.2's libuv binding stops reading (uv_read_stop) when a request
 * has arrived and starts again (uv_read_start) once it is answered. On Linux
 * libuv turns that pair into an epoll_ctl DEL and ADD: two of the four
 * system calls of every keep-alive request. The two functions below take
 * the place of h2o's own: libh2o calls them through its PLT, so the
 * definition linked first in the process (ours) is the one used. They
 * pause instead of stopping: the stream stays registered, and while h2o
 * wants no input the allocation callback offers no buffer, so libuv reads
 * nothing and reports UV_ENOBUFS. Only then, when the peer did send while
 * paused (a pipelined request, a close), is reading really stopped, until
 * h2o asks again; h2o's own input buffer is never touched while paused,
 * since a request being handled points into it.
 *
 * Writes. h2o writes with uv_write, whose completion makes libuv re-arm
 * the stream's epoll registration (uv__drain stops POLLOUT even when it
 * was never started: one more epoll_ctl per response). h2o_socket_write
 * below first tries uv_try_write; when everything went out, the server
 * runs h2o's write callback once the engine has run its ready tasks,
 * before the loop polls (ar__srv_write_later), with no uv_write at all.
 * A partial write hands the rest to h2o's own function.
 *
 * TLS sockets, and any socket that does not look like one made by
 * h2o_uv_socket_create (the stream's data pointing back at it), are passed
 * to h2o's own functions, found with dlsym(RTLD_NEXT); so are writes to
 * sockets that are not the server's connections. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

#include <h2o.h>

#include "lserver_sock.h"

/* h2o 2.2's struct st_h2o_uv_socket_t begins with the socket, then the
 * stream and the close callback given to h2o_uv_socket_create
 * (lib/common/socket/uv-binding.c.h). */
struct uv_socket_head {
  h2o_socket_t super;
  uv_stream_t *stream;
  uv_close_cb close_cb;
};

/* Exported (the library hides everything else) so that libh2o's calls
 * find them. */
#define AR_INTERPOSE __attribute__((visibility("default")))

/* h2o's own functions, found once when the library is loaded. */
static void (*h2o_read_start)(h2o_socket_t *, h2o_socket_cb);
static void (*h2o_read_stop)(h2o_socket_t *);
static void (*h2o_write)(h2o_socket_t *, h2o_iovec_t *, size_t, h2o_socket_cb);

__attribute__((constructor)) static void find_h2o(void) {
  *(void **)&h2o_read_start = dlsym(RTLD_NEXT, "h2o_socket_read_start");
  *(void **)&h2o_read_stop = dlsym(RTLD_NEXT, "h2o_socket_read_stop");
  *(void **)&h2o_write = dlsym(RTLD_NEXT, "h2o_socket_write");
}

/* The socket's stream when it is a plain TCP socket of the libuv flavour,
 * else NULL. */
static uv_stream_t *plain_stream(h2o_socket_t *sock) {
  uv_stream_t *stream = ((struct uv_socket_head *)sock)->stream;
  if (sock->ssl != NULL || stream == NULL || stream->data != sock) return NULL;
  return stream;
}

static void paused_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  h2o_socket_t *sock = h->data;
  if (sock->_cb.read == NULL) { /* paused: read nothing */
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  h2o_iovec_t v = h2o_buffer_reserve(&sock->input, 4096);
  *buf = uv_buf_init(v.base, (unsigned)v.len);
}

static void paused_read(uv_stream_t *stream, ssize_t nread,
                        const uv_buf_t *buf) {
  (void)buf;
  h2o_socket_t *sock = stream->data;
  if (sock->_cb.read == NULL) {
    /* Input while paused (UV_ENOBUFS): it waits in the kernel. */
    uv_read_stop(stream);
    return;
  }
  if (nread < 0) {
    sock->bytes_read = 0;
    sock->_cb.read(sock, h2o_socket_error_closed);
    return;
  }
  sock->input->size += (size_t)nread;
  sock->bytes_read = (size_t)nread;
  int conn = ar__srv_is_conn(((struct uv_socket_head *)sock)->close_cb);
  if (conn) ar__srv_reading(stream, 1);
  sock->_cb.read(sock, NULL);
  if (conn) ar__srv_reading(stream, 0);
}

AR_INTERPOSE void h2o_socket_read_start(h2o_socket_t *sock, h2o_socket_cb cb) {
  uv_stream_t *stream = plain_stream(sock);
  if (stream == NULL) {
    /* h2o's reader must not find ours installed (uv_read_start would
     * keep it). */
    uv_stream_t *s = ((struct uv_socket_head *)sock)->stream;
    if (s != NULL && s->data == sock && s->read_cb == paused_read)
      uv_read_stop(s);
    h2o_read_start(sock, cb);
    return;
  }
  sock->_cb.read = cb;
  /* UV_EALREADY: reading already, with ours unless another reader was
   * installed, which gives way. */
  if (uv_read_start(stream, paused_alloc, paused_read) == UV_EALREADY &&
      stream->read_cb != paused_read) {
    uv_read_stop(stream);
    uv_read_start(stream, paused_alloc, paused_read);
  }
}

AR_INTERPOSE void h2o_socket_read_stop(h2o_socket_t *sock) {
  uv_stream_t *stream = plain_stream(sock);
  if (stream == NULL || stream->read_cb != paused_read) {
    h2o_read_stop(sock);
    return;
  }
  sock->_cb.read = NULL;
}

/* The iovecs a write of up to this many buffers can be left with. */
#define WRITE_BUFS 8

AR_INTERPOSE void h2o_socket_write(h2o_socket_t *sock, h2o_iovec_t *bufs,
                                   size_t bufcnt, h2o_socket_cb cb) {
  uv_stream_t *stream = plain_stream(sock);
  if (stream == NULL || bufcnt > WRITE_BUFS || sock->_cb.write != NULL ||
      stream->write_queue_size > 0 ||
      !ar__srv_is_conn(((struct uv_socket_head *)sock)->close_cb)) {
    h2o_write(sock, bufs, bufcnt, cb);
    return;
  }
  size_t total = 0;
  for (size_t i = 0; i < bufcnt; i++)
    total += bufs[i].len;
  int n = uv_try_write(stream, (uv_buf_t *)bufs, (unsigned)bufcnt);
  size_t done = n > 0 ? (size_t)n : 0;
  sock->bytes_written += done;
  if (done == total) {
    sock->_cb.write = cb;
    ar__srv_write_later(stream);
    return;
  }
  /* The rest, the usual way (h2o counts what it is given). */
  h2o_iovec_t rest[WRITE_BUFS];
  size_t k = 0;
  for (size_t i = 0; i < bufcnt; i++) {
    if (done >= bufs[i].len) {
      done -= bufs[i].len;
      continue;
    }
    rest[k++] = h2o_iovec_init(bufs[i].base + done, bufs[i].len - done);
    done = 0;
  }
  h2o_write(sock, rest, k, cb);
}
