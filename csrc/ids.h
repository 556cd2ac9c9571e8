/*
 * ids.h - the order-id index: order id -> order handle, Robin Hood hashing.
 *
 * Order ids are consecutive, so an id is its own hash: the home slot of id i
 * is i & mask, and orders that arrive together sit in neighbouring slots
 * (inserts land on hot cache lines). Each slot keeps the handle and the low 32
 * bits of the id, enough to compute a resident's home and probe distance
 * without touching the order: probing reads only the table.
 *
 * Robin Hood keeps every cluster ordered by home slot. That is what makes
 * dense runs of consecutive ids cheap: a lookup stops as soon as it meets a
 * resident closer to home than itself, and erase shifts back only the entries
 * that are displaced (it stops at the first entry already at home) instead of
 * walking to the end of the cluster as plain linear probing must.
 *
 * Slots are malloc'ed and replaced wholesale when the table doubles (at 3/4
 * load): O(log n) times in an engine's life, never per order.
 */
#ifndef ENG_IDS_H
#define ENG_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct ids_slot {
    uint32_t handle; /* 0 = empty */
    uint32_t id_lo;  /* low 32 bits of the order id */
};

struct ids {
    struct ids_slot *slots;
    uint32_t mask;  /* capacity - 1 */
    uint32_t count;
};

/* Allocate an empty table with room for `expected` ids. Returns 0 or -1. */
int ids_init(struct ids *t, uint32_t expected);
void ids_destroy(struct ids *t);

/* Make room for one more id (may double the table). Returns 0, or -1 when
   out of memory, in which case the table is unchanged. */
int ids_reserve_one(struct ids *t);

static inline size_t ids_bytes(const struct ids *t)
{
    return ((size_t)t->mask + 1) * sizeof(struct ids_slot);
}

static inline uint32_t ids_dist(const struct ids *t, uint32_t pos, uint32_t id_lo)
{
    return (pos - id_lo) & t->mask;
}

/*
 * The handle stored for `id`, or 0. Candidates whose low 32 bits match are
 * confirmed with `same(ctx, handle, id)`, which compares the full id.
 */
static inline uint32_t ids_find(const struct ids *t, uint64_t id,
                                bool (*same)(const void *ctx, uint32_t handle, uint64_t id),
                                const void *ctx)
{
    uint32_t lo = (uint32_t)id, pos = lo & t->mask;
    for (uint32_t dist = 0;; dist++, pos = (pos + 1) & t->mask) {
        const struct ids_slot *s = &t->slots[pos];
        if (s->handle == 0 || ids_dist(t, pos, s->id_lo) < dist)
            return 0;
        if (s->id_lo == lo && same(ctx, s->handle, id))
            return s->handle;
    }
}

/* Insert; caller guarantees ids_reserve_one() succeeded since the last insert
   and `id` is not present. Can't fail. */
void ids_insert(struct ids *t, uint64_t id, uint32_t handle);

/* Remove the entry of `handle`, whose id is `id`; caller guarantees it is
   present. Can't fail. */
void ids_erase(struct ids *t, uint64_t id, uint32_t handle);

/*
 * Check that every entry is reachable (all slots from its home to it are
 * occupied), that probe distances grow by at most one from slot to slot (the
 * Robin Hood order) and that the count matches. Returns true, or false with a
 * static description in *why.
 */
bool ids_verify(const struct ids *t, const char **why);

#endif /* ENG_IDS_H */
