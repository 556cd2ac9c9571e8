/*
 * ids.c - the order-id index's slow paths (insert and erase past an id's
 * home bucket), growth and verify; the home-bucket cases are inline in ids.h,
 * which also gives the layout and why.
 */
#include "ids.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    IDS_MIN_BUCKETS = 8,
    IDS_MAX_QUOTIENT = 4,
    IDS_EVEN_RUN_BITS = 16, /* 65,536 runs, a million ids */
    IDS_MAX_DRAWS = 1 << 20
};

#define IDS_GOLDEN UINT32_C(2654435769) /* 2^32 / phi */

_Static_assert(sizeof(struct ids_bucket) == 64, "a bucket is one cache line");
_Static_assert(IDS_BUCKET_SLOTS < 8, "a place is bucket * 8 + slot");

static int ids_alloc(struct ids *t, uint64_t buckets)
{
    struct ids_bucket *b;

    /* A place (bucket * 8 + slot) must fit in 32 bits, the size in a size_t. */
    if (buckets > ((uint64_t)1 << 29) || buckets > SIZE_MAX / sizeof(*b))
        return -1;
    b = aligned_alloc(sizeof(*b), buckets * sizeof(*b));
    if (!b)
        return -1;
    memset(b, 0, buckets * sizeof(*b));
    t->buckets = b;
    t->mask = (uint32_t)(buckets - 1);
    t->count = 0;
    t->max_probe = 0;
    t->shift = 32;
    while (buckets > 1) {
        buckets >>= 1;
        t->shift--;
    }
    return 0;
}

/*
 * Whether the multiples of a / 2^32 (mod 1), the first buckets of runs
 * 0, 1, 2, ..., spread evenly: by the three-gap theorem the gaps between the
 * first n of them take at most three sizes, whose spread the continued
 * fraction of a / 2^32 bounds. Ask for partial quotients of at most
 * IDS_MAX_QUOTIENT until the convergents' denominators pass
 * 2^IDS_EVEN_RUN_BITS runs (2^32 / phi's are 22 1s and a 2 up to there;
 * a 32-bit multiplier has large ones further on, the golden ratio's too).
 */
static bool spreads_evenly(uint32_t a)
{
    uint64_t num = a, den = (uint64_t)1 << 32, q = 1, q_prev = 0;

    while (num && q < ((uint64_t)1 << IDS_EVEN_RUN_BITS)) {
        uint64_t quotient = den / num, rest = den % num, q_next = quotient * q + q_prev;
        if (quotient > IDS_MAX_QUOTIENT)
            return false;
        q_prev = q;
        q = q_next;
        den = num;
        num = rest;
    }
    return true;
}

/* The next multiplier of the sequence at *draws (splitmix64's) that
   spreads runs evenly: about one odd number in 140 does. A bound on the
   draws keeps any sequence from looping for long. */
static uint32_t next_multiplier(uint64_t *draws)
{
    for (int draw = 0; draw < IDS_MAX_DRAWS; draw++) {
        uint32_t a;
        *draws += 0x9E3779B97F4A7C15ull;
        a = (uint32_t)(eng_mix64(*draws) >> 32) | 1;
        if (spreads_evenly(a))
            return a;
    }
    return IDS_GOLDEN;
}

int ids_init(struct ids *t, uint32_t expected, bool caller_ids, uint64_t seed)
{
    uint64_t buckets = IDS_MIN_BUCKETS;

    t->seed = caller_ids ? (seed ? seed : 1) : 0;
    t->draws = eng_mix64(seed); /* seeds a splitmix64 step apart draw other multipliers */
    t->run_mult = caller_ids ? 0 : seed ? next_multiplier(&t->draws) : IDS_GOLDEN;
    t->probe_limit = IDS_PROBE_LIMIT;
    while (ids_max_load(t, buckets) < expected)
        buckets *= 2;
    return ids_alloc(t, buckets);
}

void ids_destroy(struct ids *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->count = 0;
}

void ids_insert_past(struct ids *t, uint32_t key, uint32_t handle)
{
    uint32_t at = ids_home(t, key);

    for (uint32_t dist = 0;; dist++, at = (at + 1) & t->mask) {
        struct ids_bucket *b = &t->buckets[at];
        uint32_t m = ids_free_slots(b);
        if (ENG_LIKELY(m)) {
            int i = __builtin_ctz(m);
            b->key[i] = key;
            b->handle[i] = handle;
            t->count++;
            if (ENG_UNLIKELY(dist > t->max_probe))
                t->max_probe = dist;
            return;
        }
        b->overflow++;
    }
}

void ids_uncount(struct ids *t, uint32_t at, int i)
{
    for (uint32_t p = ids_home(t, t->buckets[at].key[i]); p != at; p = (p + 1) & t->mask)
        t->buckets[p].overflow--;
}

void ids_erase_past(struct ids *t, uint32_t key, uint32_t handle)
{
    uint32_t at = ids_home(t, key);

    for (;;) {
        uint32_t m;
        ENG_ASSERT(t->buckets[at].overflow != 0);
        at = (at + 1) & t->mask;
        m = ids_slots_equal(t->buckets[at].handle, handle);
        if (m) {
            ENG_ASSERT_INTERNAL(t->buckets[at].key[__builtin_ctz(m)] == key);
            ids_erase_at(t, at * 8 + (uint32_t)__builtin_ctz(m));
            return;
        }
    }
}

/* Place every entry again, in a new table of `buckets` (its runs by
   t->run_mult). Returns 0, or -1 when out of memory, the table unchanged. */
static int ids_rebuild(struct ids *t, uint64_t buckets)
{
    struct ids old = *t;

    if (ids_alloc(t, buckets) != 0) {
        *t = old;
        return -1;
    }
    for (uint64_t at = 0; at <= old.mask; at++) {
        const struct ids_bucket *b = &old.buckets[at];
        for (int i = 0; i < IDS_BUCKET_SLOTS; i++)
            if (b->handle[i])
                ids_insert_key(t, b->key[i], b->handle[i]);
    }
    free(old.buckets);
    return 0;
}

int ids_grow(struct ids *t)
{
    uint64_t buckets = (uint64_t)t->mask + 1;
    uint32_t mult = t->run_mult;

    if ((uint64_t)t->count + 1 > ids_max_load(t, buckets)) {
        if (ids_rebuild(t, buckets * 2) != 0)
            return -1;
    } else if (t->seed == 0) {
        /* A probe past the limit: the next multiplier scatters a pile built
           for this one. Out of memory, the table stays as it is. */
        t->run_mult = next_multiplier(&t->draws);
        if (ids_rebuild(t, buckets) != 0)
            t->run_mult = mult;
    }
    /* Room above the probes there are now, or each reservation would place
       them again: a long probe can also be chance (and caller ids' keys, a
       secret mix, are placed again only by growth). */
    t->probe_limit = t->max_probe > IDS_PROBE_LIMIT / 2 ? 2 * t->max_probe : IDS_PROBE_LIMIT;
    return 0;
}

bool ids_verify(const struct ids *t, const char **why)
{
    uint64_t nbuckets = (uint64_t)t->mask + 1, n = 0;
    uint32_t *passed = calloc(nbuckets, sizeof(*passed));
    bool ok = true;

    if (!passed) {
        *why = "ids: no memory to verify";
        return false;
    }
    for (uint64_t at = 0; at < nbuckets; at++) {
        const struct ids_bucket *b = &t->buckets[at];
        for (int i = 0; i < IDS_BUCKET_SLOTS; i++) {
            uint32_t home;

            if (!b->handle[i]) {
                if (b->key[i]) {
                    *why = "ids: a free slot keeps a key";
                    ok = false;
                }
                continue;
            }
            n++;
            /* Every bucket from its home up to this one counts it. */
            home = ids_home(t, b->key[i]);
            if (((at - home) & t->mask) > t->max_probe) {
                *why = "ids: an entry lies past the longest probe";
                ok = false;
            }
            for (uint64_t p = home; p != at; p = (p + 1) & t->mask)
                passed[p]++;
        }
    }
    for (uint64_t at = 0; ok && at < nbuckets; at++)
        if (passed[at] != t->buckets[at].overflow) {
            *why = "ids: a bucket's overflow count does not match the entries past it";
            ok = false;
        }
    free(passed);
    if (ok && n != t->count) {
        *why = "ids: count does not match the occupied slots";
        ok = false;
    }
    if (ok && (uint64_t)t->count > ids_max_load(t, nbuckets)) {
        *why = "ids: fuller than its maximum load";
        ok = false;
    }
    return ok;
}
