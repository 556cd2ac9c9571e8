/*
 * ring.c - push and pop of the SPSC ring.
 *
 * Ordering: the producer writes records, then publishes them by storing head
 * with release; the consumer loads head with acquire before reading them, so
 * it sees the records complete. Symmetrically the consumer frees slots by
 * storing tail with release after it has copied records out, and the
 * producer loads tail with acquire before overwriting those slots. Each side
 * reads its own index relaxed: only it writes it.
 */
#include "ring.h"

#include <string.h>

int ring_init(struct ring *r, void *buf, size_t capacity, size_t elem)
{
    if (!buf || capacity == 0 || (capacity & (capacity - 1)) || elem == 0)
        return -1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->tail_cache = 0;
    r->head_cache = 0;
    r->buf = buf;
    r->mask = capacity - 1;
    r->elem = elem;
    return 0;
}

/* Copy `n` records between the ring at `index` and `flat`, in up to two
   pieces because the ring wraps. */
static void copy_in(struct ring *r, size_t index, const char *flat, size_t n)
{
    size_t slot = index & r->mask, first = r->mask + 1 - slot;
    if (first > n)
        first = n;
    memcpy(r->buf + slot * r->elem, flat, first * r->elem);
    memcpy(r->buf, flat + first * r->elem, (n - first) * r->elem);
}

static void copy_out(const struct ring *r, size_t index, char *flat, size_t n)
{
    size_t slot = index & r->mask, first = r->mask + 1 - slot;
    if (first > n)
        first = n;
    memcpy(flat, r->buf + slot * r->elem, first * r->elem);
    memcpy(flat + first * r->elem, r->buf, (n - first) * r->elem);
}

size_t ring_push(struct ring *r, const void *items, size_t n)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed); /* ours */
    size_t free = r->mask + 1 - (head - r->tail_cache);

    if (free < n) {
        /* Acquire: the consumer's copies out of these slots are done. */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        free = r->mask + 1 - (head - r->tail_cache);
        if (n > free)
            n = free;
    }
    if (n == 0)
        return 0;
    copy_in(r, head, items, n);
    /* Release: the records are written before the consumer can see them. */
    atomic_store_explicit(&r->head, head + n, memory_order_release);
    return n;
}

size_t ring_pop(struct ring *r, void *out, size_t max)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed); /* ours */
    size_t avail = r->head_cache - tail;

    if (avail < max) {
        /* Acquire: pairs with the producer's release of head. */
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        avail = r->head_cache - tail;
    }
    if (max > avail)
        max = avail;
    if (max == 0)
        return 0;
    copy_out(r, tail, out, max);
    /* Release: we are done reading these slots before the producer reuses them. */
    atomic_store_explicit(&r->tail, tail + max, memory_order_release);
    return max;
}

size_t ring_pop_if(struct ring *r, void *out, size_t max,
                   bool (*ok)(const void *record, const void *ctx), const void *ctx)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed); /* ours */
    size_t avail, n = 0;

    /* Acquire: pairs with the producer's release of head. */
    r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
    avail = r->head_cache - tail;
    if (max > avail)
        max = avail;
    while (n < max && ok(r->buf + ((tail + n) & r->mask) * r->elem, ctx))
        n++;
    if (n == 0)
        return 0;
    copy_out(r, tail, out, n);
    /* Release: we are done reading these slots before the producer reuses them. */
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
    return n;
}

size_t ring_count(struct ring *r)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    return head - tail;
}
