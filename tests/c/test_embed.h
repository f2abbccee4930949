/* Assertions for the embedding tests (tests/c/test_embed_*.c). They use
 * only the public header: these tests are hosts. A failed check prints
 * where and what, and exits 1. */
#ifndef TEST_EMBED_H
#define TEST_EMBED_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asyncrun.h"

#define FAIL_AT(...)                                                           \
  do {                                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    exit(1);                                                                   \
  } while (0)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) FAIL_AT("check failed: %s", #cond);                           \
  } while (0)

#define CHECK_INT(got, want)                                                   \
  do {                                                                         \
    long long got_ = (long long)(got), want_ = (long long)(want);              \
    if (got_ != want_) FAIL_AT("%s: got %lld, want %lld", #got, got_, want_);  \
  } while (0)

/* An AR_E* code, with the engine's message on failure. */
#define CHECK_RC(E, got, want)                                                 \
  do {                                                                         \
    int got_ = (got), want_ = (want);                                          \
    if (got_ != want_)                                                         \
      FAIL_AT("%s: got %d (%s), want %d (%s); engine says: %s", #got, got_,    \
              ar_strerror(got_), want_, ar_strerror(want_),                    \
              (E) ? ar_engine_error(E) : "-");                                 \
  } while (0)

#define CHECK_STR(got, want)                                                   \
  do {                                                                         \
    const char *got_ = (got), *want_ = (want);                                 \
    if (got_ == NULL || strcmp(got_, want_) != 0)                              \
      FAIL_AT("%s: got \"%s\", want \"%s\"", #got, got_ ? got_ : "(null)",     \
              want_);                                                          \
  } while (0)

#define CHECK_HAS(got, part)                                                   \
  do {                                                                         \
    const char *got_ = (got), *part_ = (part);                                 \
    if (got_ == NULL || strstr(got_, part_) == NULL)                           \
      FAIL_AT("%s: \"%s\" does not contain \"%s\"", #got,                      \
              got_ ? got_ : "(null)", part_);                                  \
  } while (0)

/* Frees an engine on a borrowed loop, lets its handles close, and checks
 * the loop is left with nothing of the engine's. */
static inline void free_on_loop(ar_engine_t *E, uv_loop_t *loop) {
  ar_engine_free(E);
  uv_run(loop, UV_RUN_DEFAULT);
}

static inline void close_loop(uv_loop_t *loop) {
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), 0);
}

#endif
