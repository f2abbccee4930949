/* The server's replacements for two of h2o's socket paths
 * (lserver_sock.c) and what they need of the server (lserver.c). */
#ifndef AR_LSERVER_SOCK_H
#define AR_LSERVER_SOCK_H

#include <h2o.h>

/* Whether a socket made with this close callback is one of the server's
 * connections. */
int ar__srv_is_conn(uv_close_cb close_cb);
/* A write to one of those went out whole at once: arranges for h2o's
 * write callback (sock->_cb.write) to run on the next turn of the loop. */
void ar__srv_write_later(uv_stream_t *stream);
/* h2o is reading from one of those (on) or has finished (off): the
 * requests it parses meanwhile came on that connection. */
void ar__srv_reading(uv_stream_t *stream, int on);

#endif
