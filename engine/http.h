/* The HTTP client's engine side (engine/http.c): one CURLM per engine
 * driven by the libuv loop, connection limiters, and the request record
 * that bindings/lhttp.c fills and turns into Lua values.
 *
 * libcurl is opened with dlopen at the first request (ar__http_load), so a
 * script that never fetches anything does not pay for loading libcurl and
 * the thirty libraries behind it. Everything below except ar__http_load
 * and the limiter functions requires a successful ar__http_load. */
#ifndef AR_HTTP_H
#define AR_HTTP_H

#include <curl/curl.h>

#include "module.h"

typedef struct ar__http_s ar__http_t;
typedef struct ar__http_limit_s ar__http_limit_t;
typedef struct ar__http_req_s ar__http_req_t;
typedef struct ar__http_host_s ar__http_host_t;
typedef struct ar__http_easy_s ar__http_easy_t; /* a pooled CURL handle */

/* Loads libcurl and runs curl_global_init, once per process (uv_once).
 * Returns NULL on success, else a message saying why HTTP is unavailable
 * (static storage). Safe to call from any thread, any number of times. */
const char *ar__http_load(void);

/* The per-engine multi state. Created at the first request; lives in C
 * memory because its uv handles outlive the lua_State: ar__http_close
 * aborts every transfer and closes the handles, and the last close
 * callback frees it. Counted in E->handles_open. Returns NULL when memory
 * runs out. */
ar__http_t *ar__http_new(ar_engine_t *E);
void ar__http_close(ar__http_t *H);

/* A connection limiter, embedded in a session: at most max_total requests
 * in flight, and at most max_per_host per scheme://host:port when that is
 * not 0. Requests beyond the limits wait in FIFO order. */
struct ar__http_limit_s {
  int max_total;
  int max_per_host; /* 0: only the total applies */
  int active;
  int queued;
  ar__list_t hosts; /* ar__http_host_t with requests active or waiting */
};

void ar__http_limit_init(ar__http_limit_t *lim, int max_total,
                         int max_per_host);
/* Frees the host records. Only valid once nothing is active or queued. */
void ar__http_limit_close(ar__http_limit_t *lim);

typedef enum {
  AR__REQ_IDLE,   /* filled in, not submitted */
  AR__REQ_QUEUED, /* waiting for a free connection */
  AR__REQ_ACTIVE, /* in the multi */
  AR__REQ_DONE    /* completed, failed or aborted */
} ar__req_state_t;

/* One request. The caller (a Lua userdata in practice) owns the record and
 * everything it points at that is marked "borrowed": those must stay valid
 * until the request is DONE. The engine owns easy, body and hdr while the
 * request runs; ar__http_req_release frees what is left. */
struct ar__http_req_s {
  ar__http_t *H;
  ar__http_limit_t *limit;
  ar__http_host_t *host;
  ar__list_t node; /* in its host's queue, or H->active */
  ar__http_easy_t *easy;
  uint8_t state; /* ar__req_state_t */
  uint8_t too_large;
  uint8_t verify_tls;
  uint8_t headers_owned; /* headers is ours to free */
  uint8_t nomem;         /* failed for want of memory on our side */
  uint8_t aborted;       /* ended by ar__http_abort or ar__http_close */
  uint8_t resent;        /* times sent again on a fresh connection */
  uint64_t seq;          /* FIFO order among waiters */

  /* What to send (borrowed unless said otherwise). */
  const char *url;
  const char *method; /* upper case; "GET", "POST", "HEAD", ... */
  const char *body;   /* NULL: no body */
  size_t body_len;
  struct curl_slist *headers; /* with User-Agent and Accept-Encoding lines
                               * when possible: see ar__http_user_agent */
  const char *proxy;      /* NULL: none (environment variables are ignored) */
  CURLSH *jar;            /* a cookie jar (ar__http_jar_new), or NULL */
  double timeout;         /* total seconds, 0: none */
  double connect_timeout; /* 0: curl's default */
  long max_redirects;     /* 0: do not follow */
  size_t max_body;

  /* Where the request waits for a free connection past its deadline. */
  ar__timer_t queue_timer;

  /* What came back. */
  int result; /* CURLcode; CURLE_OK with a status for a response */
  long status;
  long http_version; /* CURL_HTTP_VERSION_* */
  char *final_url;   /* malloc'd; NULL when it is url (no redirect) */
  char *body_buf;    /* malloc'd, len bytes */
  size_t body_size, body_cap;
  char *hdr_buf; /* the last response's header block, malloc'd */
  size_t hdr_size, hdr_cap;
  uint64_t start_ns, done_ns;
  char *errmsg; /* malloc'd; NULL: curl's words for result */

  /* Called once when the request completes or fails on its own (never
   * after ar__http_abort, never from inside ar__http_submit). */
  void (*done_cb)(ar__http_req_t *req);
  void *data;
};

/* Prepares a record for the fields above to be filled in. */
void ar__http_req_init(ar__http_req_t *req);

/* Starts req under lim, now or once a connection is free. host_key
 * ("scheme://host:port") is copied. Returns 0, or AR_ENOMEM and nothing is
 * started (done_cb will not be called). */
int ar__http_submit(ar__http_t *H, ar__http_limit_t *lim, const char *host_key,
                    ar__http_req_t *req);

/* Aborts a queued or running request at once: it leaves the queue or the
 * multi (closing its connection if the response was not complete) and is
 * DONE with CURLE_ABORTED_BY_CALLBACK; done_cb is not called. Other
 * requests may start in its place. A no-op for requests not submitted or
 * already done. */
void ar__http_abort(ar__http_req_t *req);

/* Frees the buffers a finished request still holds. Idempotent. */
void ar__http_req_release(ar__http_req_t *req);

/* The error kind for a failed request ("dns", "timeout", ...) and a
 * message: curl's own words when it has some. */
const char *ar__http_error_kind(const ar__http_req_t *req);
const char *ar__http_error_message(const ar__http_req_t *req);

/* Resolves url against base (may be NULL), appends query (already
 * encoded "k=v&k2=v2", may be NULL) and checks the scheme is http or
 * https. On success returns 0 with *out the full URL and *host_key
 * "scheme://host:port", in one malloc'd block: free(*out) frees both. On
 * failure returns -1 and *err says why (static storage). */
int ar__http_url(const char *base, const char *url, const char *query,
                 char **out, char **host_key, const char **err);

/* curl_slist_append / curl_slist_free_all through the loaded library. */
struct curl_slist *ar__http_slist_append(struct curl_slist *l, const char *s);
void ar__http_slist_free(struct curl_slist *l);

/* A cookie jar: curl's cookie engine in memory, shared by the requests
 * that name it (req->jar). Returns NULL when memory runs out. Free it only
 * when none of its requests is in flight; H (may be NULL) is the multi
 * whose pooled handles may still hold it. */
CURLSH *ar__http_jar_new(void);
void ar__http_jar_free(ar__http_t *H, CURLSH *jar);

/* Counters for tests and stats. */
typedef struct {
  int active;  /* transfers in the multi */
  int sockets; /* sockets curl watches (idle connections are not) */
  int pooled;  /* idle easy handles kept for reuse */
  int handles; /* uv handles of this module not through their close cb */
  int owned;   /* connection sockets open (made by the module for curl) */
  /* The socket-ownership invariant (engine/http.c, sock_t): owned polls
   * whose descriptor is no longer their socket, now and ever. Both 0. */
  int stale;
  int violations;
  int unannounced;  /* owned sockets curl closed without telling (7.88) */
  int multi_errors; /* curl_multi_* calls that failed (always 0) */
  uint64_t resent;  /* requests sent again on a fresh connection, ever */
} ar__http_stats_t;
void ar__http_stats(const ar__http_t *H, ar__http_stats_t *st);

/* "libcurl/7.88.1" */
const char *ar__http_curl_version(void);

/* The User-Agent ("asyncrun/0.1.0 libcurl/7.88.1") and Accept-Encoding
 * ("deflate, gzip, br, zstd") values curl would send. A request whose
 * header list has lines for them spares curl formatting its own for every
 * request (through its printf, a byte at a time); a list without them gets
 * curl's. Valid after ar__http_load. */
const char *ar__http_user_agent(void);
const char *ar__http_accept_encoding(void);

#endif
