/* Deadlines for every task of an engine, in one binary min-heap driven by a
 * single uv_timer_t. A sleeping task costs a heap slot instead of a uv
 * handle, and a sleep needs no close callback before its memory can go. */
#include <math.h>

#include "internal.h"

static int earlier(const ar__timer_t *a, const ar__timer_t *b) {
  return a->due < b->due ||
         (a->due == b->due && (int32_t)(a->seq - b->seq) < 0);
}

static void heap_set(ar_engine_t *E, size_t i, ar__timer_t *t) {
  E->heap[i] = t;
  t->slot = (uint32_t)i;
}

static void sift_up(ar_engine_t *E, size_t i) {
  ar__timer_t *t = E->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, E->heap[parent])) break;
    heap_set(E, i, E->heap[parent]);
    i = parent;
  }
  heap_set(E, i, t);
}

static void sift_down(ar_engine_t *E, size_t i) {
  ar__timer_t *t = E->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= E->heap_len) break;
    if (c + 1 < E->heap_len && earlier(E->heap[c + 1], E->heap[c])) c++;
    if (!earlier(E->heap[c], t)) break;
    heap_set(E, i, E->heap[c]);
    i = c;
  }
  heap_set(E, i, t);
}

static void heap_remove(ar_engine_t *E, ar__timer_t *t) {
  size_t i = t->slot;
  ar__timer_t *last = E->heap[--E->heap_len];
  t->slot = AR__TIMER_IDLE;
  if (last == t) return;
  heap_set(E, i, last);
  if (i > 0 && earlier(last, E->heap[(i - 1) / 2]))
    sift_up(E, i);
  else
    sift_down(E, i);
}

static void heap_timer_cb(uv_timer_t *h);

/* Arms the one uv timer for the earliest deadline. libuv counts in whole
 * milliseconds from a cached loop time, so the uv timer may fire before
 * the deadline in hrtime terms; heap_timer_cb checks against uv_hrtime()
 * and re-arms, which is what makes "never early" hold. */
static void rearm(ar_engine_t *E) {
  if (E->heap_len == 0) {
    if (E->uv_timer_due != 0) {
      uv_timer_stop(&E->uv_timer);
      E->uv_timer_due = 0;
    }
    return;
  }
  uint64_t due = E->heap[0]->due;
  if (due == E->uv_timer_due) return;
  uv_update_time(E->loop);
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_timer_start(&E->uv_timer, heap_timer_cb, ms, 0);
  E->uv_timer_due = due;
}

static void heap_timer_cb(uv_timer_t *h) {
  ar_engine_t *E = h->data;
  uint64_t now = uv_hrtime();
  E->uv_timer_due = 0;
  while (E->heap_len > 0 && E->heap[0]->due <= now) {
    ar__timer_t *t = E->heap[0];
    heap_remove(E, t);
    t->cb(t);
  }
  rearm(E);
}

void ar__timer_init(ar__timer_t *t) {
  t->due = 0;
  t->seq = 0;
  t->slot = AR__TIMER_IDLE;
  t->cb = NULL;
}

int ar__timer_start(ar_engine_t *E, ar__timer_t *t, double seconds,
                    void (*cb)(ar__timer_t *t)) {
  if (ar__timer_active(t)) heap_remove(E, t);
  if (E->heap_len == E->heap_cap) {
    size_t cap = E->heap_cap ? E->heap_cap * 2 : 64;
    ar__timer_t **heap = realloc(E->heap, cap * sizeof *heap);
    if (heap == NULL) {
      rearm(E);
      return AR_ENOMEM;
    }
    E->heap = heap;
    E->heap_cap = cap;
  }
  /* NaN and negatives mean "now"; huge values saturate at ~292 years. */
  uint64_t ns = 0;
  if (seconds > 0)
    ns = seconds >= 9.2e9 ? (uint64_t)INT64_MAX : (uint64_t)ceil(seconds * 1e9);
  t->due = uv_hrtime() + ns;
  t->seq = (uint32_t)E->timer_seq++;
  t->cb = cb;
  t->slot = (uint32_t)E->heap_len++;
  E->heap[t->slot] = t;
  sift_up(E, t->slot);
  if (t->slot == 0) rearm(E);
  return 0;
}

void ar__timer_stop(ar_engine_t *E, ar__timer_t *t) {
  if (!ar__timer_active(t)) return;
  int was_first = t->slot == 0;
  heap_remove(E, t);
  if (was_first) rearm(E);
}
