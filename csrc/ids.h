/*
 * ids.h - the order-id index: order id -> order handle, a hash table of
 * buckets of one cache line each.
 *
 * A bucket holds seven entries (a 32-bit key and a handle each) and a count
 * of the entries that overflowed past it: an id is looked for in its home
 * bucket, and in the next ones only while the bucket just read counts some
 * overflow, and no further than the farthest any entry went from its home
 * (entries that overflowed outlive those that filled their home, so every
 * bucket may count overflow at once). An insert takes the first free slot
 * from home on, counting itself in each full bucket it passes; an erase
 * clears its slot and takes itself out of those counts again. Nothing moves on insert or erase, so a
 * lookup's place (ids_lookup) stays good for an erase right after it. A
 * lookup reads one cache line almost always and compares its seven keys at
 * once (SSE2 compares into a bit mask): no branch per slot, where the Robin
 * Hood probing this replaced had one per slot, whose outcome no predictor
 * can guess on random ids (docs/design.md, "Indexes"). A key that matches is
 * confirmed on the order.
 *
 * Two kinds of ids, two placements:
 *
 * The engine's own ids are consecutive, and orders live for very different
 * times: a deep book keeps old orders for hours while new ones come and go.
 * Consecutive ids should share cache lines (with every id scattered, each
 * insert into a table bigger than the cache misses), yet old residents must
 * not pile up where the counter comes round again. So ids go in runs of 16:
 * two consecutive ids to a bucket, a run to 8 consecutive buckets from a
 * first bucket that is a multiplicative hash of the run number (the high
 * bits of run * a), which spreads consecutive runs evenly. The runs' windows
 * overlap, so neighbouring buckets' loads are sums over several runs and
 * even out. The key is the id's low 32 bits; the table is at most three
 * quarters full.
 *
 * Clients cannot choose the engine's ids, but they choose which of their
 * orders stay open: knowing the multiplier, one could keep just those whose
 * runs share a home and pile them into one overflow chain that every lookup
 * there walks (with 2^32/phi, 160,000 such orders made another account's
 * order and cancel take 24 µs instead of 0.07). So the multiplier is a
 * secret drawn from the engine's seed, among those that spread runs nearly
 * as evenly as 2^32/phi (Fibonacci hashing) does, and once an entry has
 * landed further from its home than the probe limit (IDS_PROBE_LIMIT
 * buckets, or twice the longest probe the last placing left, whichever is
 * more) the next reservation places every entry again by the next one
 * (ids_grow): a pile built for one multiplier is scattered by the next. Multipliers that spread evenly are alike enough
 * that a set of runs chosen for one still bunches a little under some of
 * the others; the limit bounds what that costs.
 *
 * Ids the caller chooses (eng_config.caller_order_ids) follow no pattern we
 * may count on: a gateway's ids can be a multiplicative sequence that a
 * Fibonacci hash folds into clusters, or a hostile client's. Their key is a
 * seeded 64-bit mix of the whole id (its high half), the home bucket its top
 * bits, and the table is at most half full: random homes fill buckets
 * unevenly, and each overflow costs the lookups that pass it a cache line.
 *
 * Buckets are allocated anew and filled again when the table doubles
 * (O(log n) times in an engine's life) and when a probe passes the limit
 * (once a pile outgrows it): never per order.
 */
#ifndef ENG_IDS_H
#define ENG_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum {
    IDS_BUCKET_SLOTS = 7,
    IDS_PROBE_LIMIT = 32,   /* buckets past its home, at most, before runs are placed again */
    IDS_RUN_SHARE_BITS = 1, /* two consecutive engine ids to a bucket */
    IDS_RUN_BUCKET_BITS = 3 /* a run of engine ids spans 8 buckets (16 ids) */
};

struct ids_bucket {
    uint32_t key[IDS_BUCKET_SLOTS];
    uint32_t handle[IDS_BUCKET_SLOTS]; /* 0 = a free slot */
    uint32_t overflow; /* entries whose probe passed this bucket full */
    uint32_t reserved;
};

struct ids {
    struct ids_bucket *buckets;
    uint32_t mask;      /* buckets - 1 */
    uint32_t count;
    uint32_t shift;     /* 32 - log2(buckets): the hash's high bits are the home */
    uint32_t max_probe; /* the most buckets past its home an entry went since the
                           table was made: where a lookup gives up at the latest */
    uint64_t seed;      /* 0: the engine's consecutive ids; else caller ids, keyed by it */
    uint32_t run_mult;  /* engine ids: the multiplier placing runs */
    uint32_t probe_limit; /* a longer max_probe makes the next reservation place
                             every entry again (ids_grow) */
    uint64_t draws;     /* engine ids: the secret sequence of multipliers */
};

/* Where an entry is: its bucket times 8 plus its slot. */
typedef uint32_t ids_pos;

/*
 * Allocate an empty table with room for `expected` ids: the caller's
 * (`caller_ids`), keyed by `seed`, or the engine's own, their runs placed by
 * multipliers drawn from `seed` (0: the first is the golden ratio's, for
 * tests). The seed must be secret from clients. Returns 0 or -1.
 */
int ids_init(struct ids *t, uint32_t expected, bool caller_ids, uint64_t seed);
void ids_destroy(struct ids *t);

static inline size_t ids_bytes(const struct ids *t)
{
    return ((size_t)t->mask + 1) * sizeof(struct ids_bucket);
}

/* The key of `id`: its low 32 bits, or a caller id's mix. */
static inline uint32_t ids_key(const struct ids *t, uint64_t id)
{
    if (!t->seed)
        return (uint32_t)id;
    return (uint32_t)(eng_mix64(id ^ t->seed) >> 32);
}

/*
 * The home bucket of a key: a caller id's top bits; an engine id's the
 * bucket of its pair in its run's window, which starts at a multiplicative
 * hash of the run number (see above). Shifts in 64 bits to allow one of 32
 * (a single bucket).
 */
static inline uint32_t ids_home(const struct ids *t, uint32_t key)
{
    uint32_t run, first;

    if (t->seed)
        return (uint32_t)((uint64_t)key >> t->shift);
    run = (key >> (IDS_RUN_SHARE_BITS + IDS_RUN_BUCKET_BITS)) * t->run_mult;
    first = (uint32_t)((uint64_t)run >> t->shift);
    return (first + ((key >> IDS_RUN_SHARE_BITS) & ((1u << IDS_RUN_BUCKET_BITS) - 1))) & t->mask;
}

/* The most entries a table of `buckets` holds. */
static inline uint64_t ids_max_load(const struct ids *t, uint64_t buckets)
{
    return t->seed ? buckets * IDS_BUCKET_SLOTS / 2 : buckets * IDS_BUCKET_SLOTS * 3 / 4;
}

/* ids_reserve_one() when the table must grow, or an entry went past the
   probe limit. */
int ids_grow(struct ids *t);

/* Make room for one more id (may double the table, or place every entry
   again). Returns 0, or -1 when out of memory, in which case the table is
   unchanged. */
static inline int ids_reserve_one(struct ids *t)
{
    if (ENG_LIKELY((uint64_t)t->count + 1 <= ids_max_load(t, (uint64_t)t->mask + 1) &&
                   t->max_probe <= t->probe_limit))
        return 0;
    return ids_grow(t);
}

/* The slots whose value in `v` (a bucket's keys or handles) is `x`, one bit
   each. The eighth value read is the word after the slots, masked off. */
static inline uint32_t ids_slots_equal(const uint32_t *v, uint32_t x)
{
#ifdef __SSE2__
    __m128i k = _mm_set1_epi32((int)x);
    __m128i lo = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)v), k);
    __m128i hi = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(v + 4)), k);
    uint32_t m = (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(lo)) |
                 (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(hi)) << 4;
    return m & ((1u << IDS_BUCKET_SLOTS) - 1);
#else
    uint32_t m = 0;
    for (int i = 0; i < IDS_BUCKET_SLOTS; i++)
        m |= (uint32_t)(v[i] == x) << i;
    return m;
#endif
}

/* The slots of `b` whose key is `key` (free slots' key is 0). */
static inline uint32_t ids_matches(const struct ids_bucket *b, uint32_t key)
{
    return ids_slots_equal(b->key, key);
}

/*
 * The handle stored for the id `id` whose key is `key` (ids_key), or 0; its
 * place in *pos when found. Candidates whose key matches are confirmed with
 * `same(ctx, handle, id)`, which compares the full id.
 */
static inline uint32_t ids_lookup(const struct ids *t, uint32_t key, uint64_t id,
                                  bool (*same)(const void *ctx, uint32_t handle, uint64_t id),
                                  const void *ctx, ids_pos *pos)
{
    uint32_t at = ids_home(t, key);

    for (uint32_t dist = 0;; dist++, at = (at + 1) & t->mask) {
        const struct ids_bucket *b = &t->buckets[at];
        for (uint32_t m = ids_matches(b, key); m; m &= m - 1) {
            int i = __builtin_ctz(m);
            uint32_t h = b->handle[i];
            if (h && same(ctx, h, id)) {
                *pos = at * 8 + (uint32_t)i;
                return h;
            }
        }
        /* Every bucket may count overflow (entries that overflowed outlive
           the ones that filled their home), so the longest probe ends it. */
        if (ENG_LIKELY(b->overflow == 0) || dist == t->max_probe)
            return 0;
    }
}

/* A guess at the handle of the key `key`: the first entry of its home bucket
   with that key, unconfirmed (for prefetching), or 0. */
static inline uint32_t ids_guess(const struct ids *t, uint32_t key)
{
    const struct ids_bucket *b = &t->buckets[ids_home(t, key)];
    uint32_t m = ids_matches(b, key);
    return m ? b->handle[__builtin_ctz(m)] : 0;
}

/* ids_lookup() for an id whose place is of no interest. */
static inline uint32_t ids_find(const struct ids *t, uint64_t id,
                                bool (*same)(const void *ctx, uint32_t handle, uint64_t id),
                                const void *ctx)
{
    ids_pos pos;
    return ids_lookup(t, ids_key(t, id), id, same, ctx, &pos);
}

/* The free slots of `b`, one bit each. */
static inline uint32_t ids_free_slots(const struct ids_bucket *b)
{
    return ids_slots_equal(b->handle, 0);
}

/* ids_insert_key() past a full home bucket. */
void ids_insert_past(struct ids *t, uint32_t key, uint32_t handle);

/* Insert the id whose key is `key`; caller guarantees ids_reserve_one()
   succeeded since the last insert and the id is not present. Can't fail.
   Inline while the home bucket has room, as it nearly always has. */
static inline void ids_insert_key(struct ids *t, uint32_t key, uint32_t handle)
{
    struct ids_bucket *b;
    uint32_t m;
    int i;

    ENG_ASSERT(handle != 0 && (uint64_t)t->count < ids_max_load(t, (uint64_t)t->mask + 1));
    b = &t->buckets[ids_home(t, key)];
    m = ids_free_slots(b);
    if (ENG_UNLIKELY(m == 0)) {
        ids_insert_past(t, key, handle);
        return;
    }
    i = __builtin_ctz(m);
    b->key[i] = key;
    b->handle[i] = handle;
    t->count++;
}

static inline void ids_insert(struct ids *t, uint64_t id, uint32_t handle)
{
    ids_insert_key(t, ids_key(t, id), handle);
}

/* Take the entry in slot `i` of bucket `at`, which overflowed past its
   home, out of the overflow counts of the buckets it passed. */
void ids_uncount(struct ids *t, uint32_t at, int i);

/* Remove the entry at `pos` (from ids_lookup, with no insert, erase or
   reservation since: a reservation may place every entry again).
   Can't fail. */
static inline void ids_erase_at(struct ids *t, ids_pos pos)
{
    uint32_t at = pos / 8;
    int i = (int)(pos % 8);
    struct ids_bucket *b = &t->buckets[at];

    ENG_ASSERT(at <= t->mask && i < IDS_BUCKET_SLOTS && b->handle[i] != 0);
    if (ENG_UNLIKELY(ids_home(t, b->key[i]) != at))
        ids_uncount(t, at, i);
    b->handle[i] = 0;
    b->key[i] = 0;
    t->count--;
}

/* ids_erase() of an entry that is not in its home bucket. */
void ids_erase_past(struct ids *t, uint32_t key, uint32_t handle);

/* Remove the entry of `handle`, whose id is `id`; caller guarantees it is
   present. Can't fail. Handles are unique, so the home bucket's slot with
   this handle is the entry. */
static inline void ids_erase(struct ids *t, uint64_t id, uint32_t handle)
{
    uint32_t key = ids_key(t, id);
    uint32_t at = ids_home(t, key);
    uint32_t m = ids_slots_equal(t->buckets[at].handle, handle);

    if (ENG_UNLIKELY(m == 0)) {
        ids_erase_past(t, key, handle);
        return;
    }
    ENG_ASSERT_INTERNAL(t->buckets[at].key[__builtin_ctz(m)] == key);
    ids_erase_at(t, at * 8 + (uint32_t)__builtin_ctz(m));
}

/*
 * Check that every bucket from an entry's home up to its own counts it as
 * overflow, that each bucket's overflow count is exactly that, that no entry
 * lies past max_probe, and that the count and load match. Returns true, or false
 * with a static description in *why.
 */
bool ids_verify(const struct ids *t, const char **why);

#endif /* ENG_IDS_H */
