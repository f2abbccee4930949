/* The engine's allocator for Lua's small blocks.
 *
 * Lua tells its allocator the old size of every block it frees or resizes,
 * so small blocks need no header: each size class (multiples of 16 bytes up
 * to AR__POOL_MAX) keeps a free list threaded through its free blocks and is
 * refilled from 2 MiB chunks. Compared with malloc this saves the per-block
 * header (8 to 16 bytes on each of the five or so blocks a task needs) and
 * the cost of a general allocator on Lua's hottest path. Larger blocks go
 * to malloc.
 *
 * Memory stays in the pool for reuse until the engine is freed. The pool is
 * per engine, so engines on different threads share nothing. Under
 * AddressSanitizer the pool poisons what is not handed out (the unused
 * rest of a chunk, free blocks, the tail of a block past its size), so the
 * sanitizer runs check the allocator that users run. AR_NO_POOL still
 * builds a malloc-only engine, for comparisons. */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#ifndef AR_NO_POOL
#define CHUNK_SIZE ((size_t)2 << 20)
#define CLASS(n) (((n) + 15) >> 4) /* 1..AR__POOL_CLASSES-1 */

static void *chunk_new(ar__pool_t *p) {
  /* Map twice the size and trim to an aligned 2 MiB chunk, so that the
   * kernel may back it with huge pages where it does so unasked. */
  size_t len = 2 * CHUNK_SIZE;
  char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *start = (char *)(((uintptr_t)raw + CHUNK_SIZE - 1) & ~(CHUNK_SIZE - 1));
  if (start > raw) munmap(raw, (size_t)(start - raw));
  char *end = start + CHUNK_SIZE;
  if (raw + len > end) munmap(end, (size_t)(raw + len - end));
  /* No MADV_HUGEPAGE: with the kernel's default "defrag=madvise" a fault
   * in such a chunk compacts memory synchronously when no huge page is
   * free, which made spawning 100,000 tasks 2-3x slower whenever another
   * program had run just before (bench/run alternates programs). */
  /* The first 16 bytes link the chunks for ar__pool_close. */
  *(void **)start = p->chunks;
  p->chunks = start;
  p->bump = start + 16;
  p->end = end;
  POISON(p->bump, (size_t)(end - p->bump));
  return start;
}

static void *small_alloc(ar__pool_t *p, size_t n) {
  size_t c = CLASS(n);
  void *b = p->free[c];
  if (b != NULL) {
    UNPOISON(b, sizeof(void *));
    p->free[c] = *(void **)b;
    UNPOISON(b, n);
    return b;
  }
  size_t size = c << 4;
  if ((size_t)(p->end - p->bump) < size && chunk_new(p) == NULL) return NULL;
  b = p->bump;
  p->bump += size;
  UNPOISON(b, n);
  return b;
}

static void small_free(ar__pool_t *p, void *b, size_t n) {
  size_t c = CLASS(n);
  UNPOISON(b, sizeof(void *));
  *(void **)b = p->free[c];
  p->free[c] = b;
  POISON(b, c << 4);
}

#endif

void *ar__pool_realloc(ar__pool_t *p, void *ptr, size_t osize, size_t nsize) {
#ifdef AR_NO_POOL
  (void)p;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
#else
  int osmall = osize <= AR__POOL_MAX, nsmall = nsize <= AR__POOL_MAX;
  if (ptr == NULL) osize = 0; /* osize then names the object's type */
  if (nsize == 0) {
    if (ptr == NULL) return NULL;
    if (osmall)
      small_free(p, ptr, osize);
    else
      free(ptr);
    return NULL;
  }
  if (ptr == NULL) return nsmall ? small_alloc(p, nsize) : malloc(nsize);
  if (osmall && nsmall && CLASS(osize) == CLASS(nsize)) {
    POISON(ptr, CLASS(osize) << 4);
    UNPOISON(ptr, nsize);
    return ptr;
  }
  if (!osmall && !nsmall) return realloc(ptr, nsize);
  void *q = nsmall ? small_alloc(p, nsize) : malloc(nsize);
  if (q == NULL) {
    /* Lua requires that shrinking never fails. Keeping the old block is
     * correct in every way but one: a malloc'd block shrunk into a class
     * will join that class's free list when freed and is given back to the
     * system only at exit. This needs mmap to fail. */
    return nsize <= osize ? ptr : NULL;
  }
  memcpy(q, ptr, osize < nsize ? osize : nsize);
  if (osmall)
    small_free(p, ptr, osize);
  else
    free(ptr);
  return q;
#endif
}

void ar__pool_close(ar__pool_t *p) {
#ifndef AR_NO_POOL
  while (p->chunks != NULL) {
    void *next = *(void **)p->chunks;
    UNPOISON(p->chunks, CHUNK_SIZE); /* the mapping may be reused */
    munmap(p->chunks, CHUNK_SIZE);
    p->chunks = next;
  }
#endif
  memset(p, 0, sizeof *p);
}
