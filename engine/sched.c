/* The ready queue and the driver: the only place that resumes tasks.
 *
 * Wake-ups push onto a ring of task pointers; a uv_prepare_t (before the
 * loop polls) and a uv_check_t (after it) drain it, so tasks woken by
 * timers or I/O run in the same loop iteration. A drain runs only the
 * tasks queued when it began, as asyncio does, so a task that yields in a
 * loop cannot starve I/O; while the queue is not empty an idle handle keeps
 * the poll from blocking. C stack depth stays flat: a task that wakes
 * another only queues it. */
#include <assert.h>

#include "internal.h"

/* Scripts run here, so the memory cap applies (see l_alloc). After the
 * drain, outside any task, the run in progress may move on. */
static void sched_drain(ar_engine_t *E) {
  size_t n = E->ready_len;
  E->mem_armed++;
  while (n-- > 0 && E->ready_len > 0) {
    ar__task_t *t = E->ready[E->ready_head];
    E->ready_head = (E->ready_head + 1) & (E->ready_cap - 1);
    E->ready_len--;
    if (t->queued) ar__task_run(t); /* else it ended by force meanwhile */
  }
  E->mem_armed--;
  if (E->ready_len == 0) uv_idle_stop(&E->idle);
  if (E->drain_hooks > 0) ar__modules_drained(E);
  ar__engine_watch(E);
}

static void prepare_cb(uv_prepare_t *h) { sched_drain(h->data); }
static void check_cb(uv_check_t *h) { sched_drain(h->data); }
static void idle_cb(uv_idle_t *h) { (void)h; }

int ar__sched_init(ar_engine_t *E) {
  E->ready_cap = 1024;
  E->ready = malloc(E->ready_cap * sizeof *E->ready);
  if (E->ready == NULL) return AR_ENOMEM;
  uv_prepare_init(E->loop, &E->prepare);
  uv_check_init(E->loop, &E->check);
  uv_idle_init(E->loop, &E->idle);
  E->prepare.data = E->check.data = E->idle.data = E;
  E->handles_open += 3;
  uv_prepare_start(&E->prepare, prepare_cb);
  uv_check_start(&E->check, check_cb);
  /* They watch for work; they are not work, and must not keep a loop
   * with nothing queued alive. */
  uv_unref((uv_handle_t *)&E->prepare);
  uv_unref((uv_handle_t *)&E->check);
  return 0;
}

void ar__sched_close(ar_engine_t *E) {
  uv_close((uv_handle_t *)&E->prepare, ar__engine_close_cb);
  uv_close((uv_handle_t *)&E->check, ar__engine_close_cb);
  uv_close((uv_handle_t *)&E->idle, ar__engine_close_cb);
}

/* A push never allocates: ar__sched_reserve grows the ring before a task
 * is created, so it always has a place for every live task (a task is
 * queued at most once at a time, which `queued` ensures). A wake-up
 * therefore cannot fail. */
void ar__sched_push(ar_engine_t *E, ar__task_t *t) {
  if (t->queued) return;
  t->queued = 1;
  assert(E->ready_len < E->ready_cap);
  size_t tail = (E->ready_head + E->ready_len) & (E->ready_cap - 1);
  E->ready[tail] = t;
  if (E->ready_len++ == 0) uv_idle_start(&E->idle, idle_cb);
}

/* Makes room in the ring for one more live task. A task is queued at most
 * once at a time, so capacity >= live tasks means a push never overflows.
 * Returns 0 or AR_ENOMEM. */
int ar__sched_reserve(ar_engine_t *E, size_t ntasks) {
  if (ntasks < E->ready_cap) return 0;
  size_t cap = E->ready_cap * 2;
  ar__task_t **ring = malloc(cap * sizeof *ring);
  if (ring == NULL) return AR_ENOMEM;
  for (size_t i = 0; i < E->ready_len; i++)
    ring[i] = E->ready[(E->ready_head + i) & (E->ready_cap - 1)];
  free(E->ready);
  E->ready = ring;
  E->ready_cap = cap;
  E->ready_head = 0;
  return 0;
}
