/*
 * ids.h - the order-id index: order id -> order handle, Robin Hood hashing.
 *
 * Two kinds of ids, two placements:
 *
 * The engine's own ids are consecutive, and orders live for very different
 * times: a deep book keeps old orders for hours while new ones come and go.
 * Were an id its own hash, ids would be placed in runs, and once ids wrap
 * around the table the run of new ids would meet the old residents of that
 * stretch: locally more than one entry per slot, a cluster that grows with
 * every insert (measured: 2.4 us per insert with 10,000 old orders, 76 us
 * with 300,000). So ids go in runs of 16 consecutive ids to 16 consecutive
 * slots (an insert still lands on a warm cache line most of the time), and
 * each run's place is a Fibonacci hash of the run number -- the high bits of
 * run * 2^32/phi -- which spreads consecutive runs evenly over the table.
 * The slot's key is the id's low 32 bits.
 *
 * Ids the caller chooses (eng_config.caller_order_ids) follow no pattern we
 * may count on: a gateway's ids can be a multiplicative sequence that a
 * Fibonacci hash folds into clusters, or a hostile client's. Their key is a
 * seeded 64-bit mix of the whole id (its high half), the home its top bits,
 * and the table grows at half full, not three quarters: on the harness-shaped
 * flow (docs/design.md) each step of a probe is a branch nobody can predict,
 * and the lower load bought more than the bigger table cost.
 *
 * Each slot keeps the handle and the 32-bit key, enough to compute a
 * resident's home and probe distance without touching the order: probing
 * reads only the table; a key that matches is confirmed on the order.
 *
 * Robin Hood keeps every cluster ordered by home slot: a lookup stops as soon
 * as it meets a resident closer to home than itself, and erase shifts back
 * only the entries that are displaced (it stops at the first entry already at
 * home) instead of walking to the end of the cluster as plain linear probing
 * must.
 *
 * Slots are malloc'ed and replaced wholesale when the table doubles: O(log n)
 * times in an engine's life, never per order.
 */
#ifndef ENG_IDS_H
#define ENG_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct ids_slot {
    uint32_t handle; /* 0 = empty */
    uint32_t key;    /* ids_key() of the order id */
};

struct ids {
    struct ids_slot *slots;
    uint32_t mask;  /* capacity - 1 */
    uint32_t count;
    uint32_t shift; /* 32 - log2(capacity): the hash's high bits are the home */
    uint64_t seed;  /* 0: the engine's consecutive ids; else caller ids, keyed by it */
};

/*
 * Allocate an empty table with room for `expected` ids: the engine's own
 * (`seed` 0) or the caller's, keyed by the nonzero `seed`. Returns 0 or -1.
 */
int ids_init(struct ids *t, uint32_t expected, uint64_t seed);
void ids_destroy(struct ids *t);


static inline size_t ids_bytes(const struct ids *t)
{
    return ((size_t)t->mask + 1) * sizeof(struct ids_slot);
}

/* Ids go in runs of 2^IDS_RUN_BITS consecutive slots (see above). */
enum { IDS_RUN_BITS = 4 };

/* The key a slot keeps for `id`: its low 32 bits, or a caller id's mix. */
static inline uint32_t ids_key(const struct ids *t, uint64_t id)
{
    uint64_t h;

    if (!t->seed)
        return (uint32_t)id;
    h = id ^ t->seed;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return (uint32_t)(h >> 32);
}

/*
 * The home slot of a key. A caller id's is the top bits of its mix. An
 * engine id's run's place is a Fibonacci hash of the run number, its place
 * in the run the id's low bits. The table has at least one run
 * (IDS_MIN_CAPACITY), so shift + IDS_RUN_BITS is at most 32; the shifts are
 * done in 64 bits to allow 32.
 */
static inline uint32_t ids_home(const struct ids *t, uint32_t key)
{
    uint32_t run, run_home;

    if (t->seed)
        return (uint32_t)((uint64_t)key >> t->shift);
    run = (key >> IDS_RUN_BITS) * UINT32_C(2654435769);
    run_home = (uint32_t)((uint64_t)run >> (t->shift + IDS_RUN_BITS));
    return (run_home << IDS_RUN_BITS) | (key & ((UINT32_C(1) << IDS_RUN_BITS) - 1));
}

static inline uint32_t ids_dist(const struct ids *t, uint32_t pos, uint32_t key)
{
    return (pos - ids_home(t, key)) & t->mask;
}

/* The most entries a table of `cap` slots holds (see above for why). */
static inline uint64_t ids_max_load(const struct ids *t, uint64_t cap)
{
    return t->seed ? cap / 2 : cap * 3 / 4;
}

/* ids_reserve_one() when the table must grow. */
int ids_grow(struct ids *t);

/* Make room for one more id (may double the table). Returns 0, or -1 when
   out of memory, in which case the table is unchanged. */
static inline int ids_reserve_one(struct ids *t)
{
    if (ENG_LIKELY((uint64_t)t->count + 1 <= ids_max_load(t, (uint64_t)t->mask + 1)))
        return 0;
    return ids_grow(t);
}

/*
 * The handle stored for `id`, or 0. Candidates whose key matches are
 * confirmed with `same(ctx, handle, id)`, which compares the full id.
 */
static inline uint32_t ids_find(const struct ids *t, uint64_t id,
                                bool (*same)(const void *ctx, uint32_t handle, uint64_t id),
                                const void *ctx)
{
    uint32_t key = ids_key(t, id), pos = ids_home(t, key);
    for (uint32_t dist = 0;; dist++, pos = (pos + 1) & t->mask) {
        const struct ids_slot *s = &t->slots[pos];
        if (s->handle == 0 || ids_dist(t, pos, s->key) < dist)
            return 0;
        if (s->key == key && same(ctx, s->handle, id))
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
