/* Intrusive circular doubly linked list, in the manner of libuv's queue.h.
 * A node that is not on any list points at itself, so unlinking twice is
 * harmless and "is it linked?" is one comparison. */
#ifndef AR_LIST_H
#define AR_LIST_H

#include <stddef.h>

typedef struct ar__list_s ar__list_t;
struct ar__list_s {
  ar__list_t *next;
  ar__list_t *prev;
};

#define ar__container_of(ptr, type, field)                                     \
  ((type *)((char *)(ptr)-offsetof(type, field)))

static inline void ar__list_init(ar__list_t *l) { l->next = l->prev = l; }
static inline int ar__list_empty(const ar__list_t *l) { return l->next == l; }

static inline void ar__list_insert_tail(ar__list_t *head, ar__list_t *n) {
  n->next = head;
  n->prev = head->prev;
  head->prev->next = n;
  head->prev = n;
}

static inline void ar__list_remove(ar__list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

#endif
