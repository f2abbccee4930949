/* Typed assertions for the C tests. A failed check prints where and what,
 * counts, and the test goes on; main returns check_summary(). */
#ifndef AR_TEST_CHECK_H
#define AR_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(cond)                                                            \
  do {                                                                         \
    check_count++;                                                             \
    if (!(cond)) {                                                             \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_INT(got, want)                                                   \
  do {                                                                         \
    long long g_ = (long long)(got), w_ = (long long)(want);                   \
    check_count++;                                                             \
    if (g_ != w_) {                                                            \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: %s == %lld, want %lld\n", __FILE__, __LINE__,    \
              #got, g_, w_);                                                   \
    }                                                                          \
  } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                        \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    check_count++;                                                             \
    if (h_ == NULL || strstr(h_, n_) == NULL) {                                \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: %s = \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, \
              #hay, h_ ? h_ : "(null)", n_);                                   \
    }                                                                          \
  } while (0)

static int check_summary(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures == 0 ? 0 : 1;
}

#endif
