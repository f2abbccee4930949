/* The small-block pool behind Lua's allocator: lua_Alloc semantics across
 * size classes and the malloc boundary, contents kept on resize, freed
 * blocks reused, everything returned on close. */
#include <stdlib.h>

#include "check.h"
#include "internal.h"

static void fill(unsigned char *b, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)(seed + i);
}

static int same(const unsigned char *b, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != (unsigned char)(seed + i)) return 0;
  return 1;
}

static void test_semantics(void) {
  ar__pool_t p = {0};
  /* ptr == NULL: osize is a type tag, not a size. */
  unsigned char *a = ar__pool_realloc(&p, NULL, LUA_TTHREAD, 100);
  CHECK(a != NULL);
  fill(a, 100, 1);
  /* Same class: the block stays (plain realloc may move it). */
  unsigned char *a2 = ar__pool_realloc(&p, a, 100, 110);
#ifndef AR_NO_POOL
  CHECK(a2 == a);
#endif
  a = a2;
  CHECK(same(a, 100, 1));
  /* Growing within the pool, then past it into malloc, then back. */
  unsigned char *b = ar__pool_realloc(&p, a, 110, 500);
  CHECK(b != NULL && same(b, 100, 1));
  fill(b, 500, 2);
  unsigned char *c = ar__pool_realloc(&p, b, 500, 5000);
  CHECK(c != NULL && same(c, 500, 2));
  fill(c, 5000, 3);
  unsigned char *d = ar__pool_realloc(&p, c, 5000, 64);
  CHECK(d != NULL && same(d, 64, 3));
  CHECK(ar__pool_realloc(&p, d, 64, 0) == NULL);
  CHECK(ar__pool_realloc(&p, NULL, 0, 0) == NULL);
  ar__pool_close(&p);
}

#ifndef AR_NO_POOL
static void test_reuse(void) {
  ar__pool_t p = {0};
  void *x = ar__pool_realloc(&p, NULL, 0, 48);
  ar__pool_realloc(&p, x, 48, 0);
  /* The next block of that class is the one just freed (LIFO). */
  CHECK(ar__pool_realloc(&p, NULL, 0, 33) == x);
  ar__pool_close(&p);
  CHECK(p.chunks == NULL);
}
#endif

#if defined(__SANITIZE_ADDRESS__) && !defined(AR_NO_POOL)
#include <sanitizer/asan_interface.h>
/* Under ASan the pool hides what it has not handed out: the tail of a
 * block past its size, a freed block, the rest of a chunk. */
static void test_poison(void) {
  ar__pool_t p = {0};
  char *x = ar__pool_realloc(&p, NULL, 0, 40); /* a 48-byte class */
  CHECK(!__asan_address_is_poisoned(x + 39));
  CHECK(__asan_address_is_poisoned(x + 40));
  CHECK(__asan_address_is_poisoned(x + 48)); /* the unused rest */
  x = ar__pool_realloc(&p, x, 40, 47);       /* same class: grows in place */
  CHECK(!__asan_address_is_poisoned(x + 46));
  ar__pool_realloc(&p, x, 47, 0);
  CHECK(__asan_address_is_poisoned(x));
  CHECK(__asan_address_is_poisoned(x + 8));
  char *y = ar__pool_realloc(&p, NULL, 0, 33); /* the same block again */
  CHECK(y == x && !__asan_address_is_poisoned(y + 32));
  ar__pool_close(&p);
}
#endif

/* Many blocks of random sizes, resized and freed at random, each checked. */
#define NB 20000
static unsigned char *blk[NB];
static size_t len[NB];

static void test_random(void) {
  ar__pool_t p = {0};
  srand(11);
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < NB; i++) {
      size_t n = (size_t)(rand() % 1500) + 1;
      blk[i] = ar__pool_realloc(&p, blk[i], len[i], n);
      if (len[i] > 0) CHECK(same(blk[i], len[i] < n ? len[i] : n, (unsigned)i));
      len[i] = n;
      fill(blk[i], n, (unsigned)i);
    }
    for (int i = 0; i < NB; i += 3) {
      ar__pool_realloc(&p, blk[i], len[i], 0);
      blk[i] = NULL;
      len[i] = 0;
    }
  }
  for (int i = 0; i < NB; i++) {
    if (blk[i] != NULL) CHECK(same(blk[i], len[i], (unsigned)i));
    ar__pool_realloc(&p, blk[i], len[i], 0);
  }
  ar__pool_close(&p);
}

int main(void) {
#if defined(__SANITIZE_ADDRESS__) && !defined(AR_NO_POOL)
  test_poison();
#endif
  test_semantics();
#ifndef AR_NO_POOL
  test_reuse();
#endif
  test_random();
  return check_summary("test_pool");
}
