/*
 * ring.h - bounded single-producer/single-consumer ring of fixed-size records.
 *
 * One thread pushes, one thread pops, no locks. Capacity is a power of two
 * and the indices run free (they wrap only at SIZE_MAX), so slot = index &
 * mask and count = head - tail. The producer's and the consumer's indices sit
 * on separate cache lines, and each side keeps a cached copy of the other's
 * index so that it reads the shared one only when the cache says the ring is
 * full (producer) or empty (consumer).
 *
 * Memory is the caller's: ring_init() takes the record buffer.
 */
#ifndef ENG_RING_H
#define ENG_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define RING_CACHE_LINE 64

struct ring {
    /* Producer side. */
    _Alignas(RING_CACHE_LINE) _Atomic size_t head; /* next index to write */
    size_t tail_cache;                             /* producer's view of tail */
    /* Consumer side. */
    _Alignas(RING_CACHE_LINE) _Atomic size_t tail; /* next index to read */
    size_t head_cache;                             /* consumer's view of head */
    /* Read-only after init. */
    _Alignas(RING_CACHE_LINE) char *buf;
    size_t mask;
    size_t elem;
};

/*
 * Prepare a ring over `buf`, which holds `capacity` records of `elem` bytes;
 * capacity must be a power of two. Returns 0, or -1 for a bad capacity or
 * size (nothing changes then).
 */
int ring_init(struct ring *r, void *buf, size_t capacity, size_t elem);

/* Producer: copy up to `n` records from `items` in; returns how many fit. */
size_t ring_push(struct ring *r, const void *items, size_t n);

/* Consumer: copy up to `max` records out into `out`; returns how many. */
size_t ring_pop(struct ring *r, void *out, size_t max);

/* Consumer: as ring_pop, but stop before the first record for which
   `ok(record, ctx)` is false (it stays in the ring). */
size_t ring_pop_if(struct ring *r, void *out, size_t max,
                   bool (*ok)(const void *record, const void *ctx), const void *ctx);

/* Records in the ring right now; exact on either side's thread when the
   other side is idle, a snapshot otherwise. */
size_t ring_count(struct ring *r);

static inline size_t ring_capacity(const struct ring *r)
{
    return r->mask + 1;
}

#endif /* ENG_RING_H */
