#include "ids.h"
#include "test.h"

/* The "orders": the full id of handle h is ids_of[h]. */
static uint64_t ids_of[70000];

static bool same(const void *ctx, uint32_t h, uint64_t id)
{
    (void)ctx;
    return ids_of[h] == id;
}

static void verify(const struct ids *t)
{
    const char *why = NULL;
    if (!ids_verify(t, &why))
        TEST_FAIL_("ids_verify: %s", why);
}

void test_ids_dense_run_insert_erase(void)
{
    enum { N = 60000 };
    struct ids t;

    ASSERT_EQ(ids_init(&t, 16, false, 0), 0);
    for (uint32_t h = 1; h <= N; h++) {
        ids_of[h] = 1000 + h; /* consecutive ids: one dense run */
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
    }
    verify(&t);
    ASSERT_TRUE(ids_bytes(&t) >= N * 2 * sizeof(uint32_t)); /* a key and a handle each */
    for (uint32_t h = 1; h <= N; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ASSERT_EQ(ids_find(&t, 999, same, NULL), 0);
    ASSERT_EQ(ids_find(&t, 1000 + N + 1, same, NULL), 0);
    /* Every third id, oldest first, as fills take them. */
    for (uint32_t h = 1; h <= N; h += 3)
        ids_erase(&t, ids_of[h], h);
    verify(&t);
    for (uint32_t h = 1; h <= N; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), (h - 1) % 3 == 0 ? 0 : h);
    ids_destroy(&t);
}

/* With `seed` 0 the engine's ids, else caller ids keyed by it. */
static void wraparound_and_stragglers(uint64_t seed)
{
    struct ids t;
    uint64_t rng = 99;

    /* Ids that share home buckets (a table of eight, or equal in the low 32
       bits) overflow into the next buckets and leave them again in any
       order; every step keeps the overflow counts. */
    ASSERT_EQ(ids_init(&t, seed ? 28 : 40, seed != 0, seed), 0); /* eight buckets */
    ASSERT_EQ(t.mask, 7);
    bool present[200] = {false};
    memset(ids_of, 0, sizeof(ids_of));
    for (int step = 0; step < test_steps(5000); step++) {
        uint32_t h = 1 + (uint32_t)(test_rand(&rng) % 199);
        if (!ids_of[h])
            ids_of[h] = (test_rand(&rng) % 2 ? ((uint64_t)1 << 32) : 0) + 64 * (h % 7) + h % 3 + 1;
        if (present[h]) {
            ids_erase(&t, ids_of[h], h);
            present[h] = false;
        } else if (t.count < (seed ? 28 : 40)) {
            /* Keep the load high so buckets overflow. */
            bool clash = false;
            for (uint32_t k = 1; k < 200; k++)
                clash |= present[k] && ids_of[k] == ids_of[h];
            if (clash)
                continue;
            ASSERT_EQ(ids_reserve_one(&t), 0);
            ids_insert(&t, ids_of[h], h);
            present[h] = true;
        }
        verify(&t);
        for (uint32_t k = 1; k < 200; k++) {
            uint32_t holder = 0; /* the present handle with this id, if any */
            for (uint32_t j = 1; j < 200 && ids_of[k]; j++)
                if (present[j] && ids_of[j] == ids_of[k])
                    holder = j;
            if (ids_of[k])
                ASSERT_EQ(ids_find(&t, ids_of[k], same, NULL), holder);
        }
    }
    ids_destroy(&t);
}

void test_ids_wraparound_and_stragglers(void)
{
    wraparound_and_stragglers(0);
}

void test_ids_caller_ids_wraparound_and_stragglers(void)
{
    wraparound_and_stragglers(0x5eed);
    wraparound_and_stragglers(UINT64_MAX);
}

/*
 * The most buckets a lookup of an entry reads: from its home to its own.
 * Each one past the first is a cache line more, for its lookups and for
 * every lookup that passes it.
 */
static uint32_t longest_probe(const struct ids *t)
{
    uint32_t worst = 0;

    for (uint64_t at = 0; at <= t->mask; at++)
        for (int i = 0; i < IDS_BUCKET_SLOTS; i++) {
            const struct ids_bucket *b = &t->buckets[at];
            uint32_t probe = (((uint32_t)at - ids_home(t, b->key[i])) & t->mask) + 1;
            if (b->handle[i] && probe > worst)
                worst = probe;
        }
    return worst;
}

void test_ids_long_lived_residents_keep_runs_short(void)
{
    enum { OLD = 10000, CHURN = 300000, BOUND = 8 };
    struct ids t;
    uint32_t prev = 0;

    /* Old orders that stay, then new ids coming and going while the id
       counter laps the table many times: the new ids keep landing among the
       old residents, and lookups must stay within a bucket or two. */
    ASSERT_EQ(ids_init(&t, 16, false, 0), 0);
    for (uint32_t h = 1; h <= OLD; h++) {
        ids_of[h] = h;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
    }
    for (uint64_t k = 0; k < CHURN; k++) {
        uint32_t h = OLD + 1 + (uint32_t)(k % 2);
        ids_of[h] = OLD + 1 + k;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
        if (prev)
            ids_erase(&t, ids_of[prev], prev);
        prev = h;
        if (k % 10000 == 0) {
            verify(&t);
            ASSERT_TRUE(longest_probe(&t) <= BOUND);
        }
    }
    verify(&t);
    ASSERT_TRUE(longest_probe(&t) <= BOUND);
    for (uint32_t h = 1; h <= OLD; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ASSERT_EQ(ids_find(&t, ids_of[prev], same, NULL), prev);
    ids_destroy(&t);
}

void test_ids_caller_ids_of_a_multiplicative_sequence_stay_spread(void)
{
    enum { LIVE = 10000, CHURN = 200000, BOUND = 3 };
    struct ids t;

    /* A gateway's ids k * 0x9E3779B1 (mod 2^25), the pattern that folded
       into clusters when the engine's run placement held them (Robin Hood,
       docs/design.md): keyed by the seeded mix, lookups stay within three
       buckets. 10,000 live, each replaced in turn. */
    ASSERT_EQ(ids_init(&t, LIVE, true, 7), 0);
    for (uint64_t k = 0; k < LIVE + CHURN; k++) {
        uint32_t h = 1 + (uint32_t)(k % LIVE);
        if (k >= LIVE)
            ids_erase(&t, ids_of[h], h); /* handle h's previous id */
        ids_of[h] = 1 + (k * 0x9E3779B1ull & ((1ull << 25) - 1));
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
        if (k % 20000 == 0) {
            verify(&t);
            ASSERT_TRUE(longest_probe(&t) <= BOUND);
        }
    }
    verify(&t);
    ASSERT_TRUE(longest_probe(&t) <= BOUND);
    for (uint32_t h = 1; h <= LIVE; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ids_destroy(&t);
}

/*
 * Clients cannot choose the engine's ids, but they choose which of their
 * orders stay open: one that knows where runs land can cancel at once every
 * order but those homed in one eighth of the table, and pile those into one
 * overflow chain that every lookup there walks. Keeps `KEPT` ids chosen so
 * by the golden ratio's multiplier (the one a table of seed 0 starts with,
 * known to clients) in a table of `seed`; the longest probe left.
 */
static uint32_t survivors_longest_probe(uint64_t seed, uint32_t *mult)
{
    enum { KEPT = 20000 };
    struct ids t, known;
    uint32_t h = 0, probe;

    ASSERT_EQ(ids_init(&t, KEPT, false, seed), 0);
    ASSERT_EQ(ids_init(&known, KEPT, false, 0), 0);
    ASSERT_EQ(t.mask, known.mask);
    for (uint64_t id = 1; h < KEPT; id++) {
        if (ids_home(&known, ids_key(&known, id)) > known.mask / 8)
            continue; /* cancelled at once: gone from the table */
        ids_of[++h] = id;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, id, h);
    }
    ASSERT_EQ(t.mask, known.mask); /* never grown: placed again at most */
    verify(&t);
    probe = longest_probe(&t);
    for (h = 1; h <= KEPT; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    *mult = t.run_mult;
    ids_destroy(&known);
    ids_destroy(&t);
    return probe;
}

void test_ids_survivors_chosen_by_a_known_multiplier_stay_spread(void)
{
    uint32_t golden, mult;

    /* The pile forms under the multiplier it was chosen for, and scatters:
       past the probe limit the table takes the next one. */
    golden = UINT32_C(2654435769);
    ASSERT_TRUE(survivors_longest_probe(0, &mult) <= 2 * IDS_PROBE_LIMIT);
    ASSERT_TRUE(mult != golden);
    for (uint64_t seed = 1; seed <= 16; seed++)
        ASSERT_TRUE(survivors_longest_probe(seed * 0x5EEDull, &mult) <= 2 * IDS_PROBE_LIMIT);
}

void test_ids_a_pile_no_multiplier_scatters_is_placed_again_once(void)
{
    enum { SAME = 300 }; /* 43 buckets' worth, from one home */
    struct ids t;
    uint32_t mult, placed_again = 0;

    /* Engine ids equal in their low 32 bits share a key, so a home under
       every multiplier: placing them again cannot help, and the limit rises
       past what they need instead of placing them again at each
       reservation. */
    ASSERT_EQ(ids_init(&t, 4 * SAME, false, 0x5EEDull), 0);
    mult = t.run_mult;
    for (uint32_t h = 1; h <= SAME; h++) {
        ids_of[h] = (uint64_t)h << 32 | 12345;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        placed_again += t.run_mult != mult;
        mult = t.run_mult;
        ids_insert(&t, ids_of[h], h);
    }
    verify(&t);
    ASSERT_TRUE(t.max_probe > IDS_PROBE_LIMIT);
    ASSERT_EQ(placed_again, 1);
    ASSERT_TRUE(t.probe_limit >= t.max_probe);
    for (uint32_t h = 1; h <= SAME; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ids_destroy(&t);
}

void test_ids_run_multipliers_are_odd_secret_and_spread_runs(void)
{
    uint32_t seen[64];

    for (uint64_t seed = 1; seed <= 64; seed++) {
        struct ids t;
        uint32_t a, first[1024], gap_lo = UINT32_MAX, gap_hi = 0;

        ASSERT_EQ(ids_init(&t, 1, false, seed), 0);
        a = t.run_mult;
        ids_destroy(&t);
        ASSERT_TRUE(a & 1);
        for (uint64_t k = 1; k < seed; k++)
            ASSERT_TRUE(a != seen[k - 1]);
        seen[seed - 1] = a;
        /* The first buckets of 1,024 consecutive runs in a table of 2^20
           buckets: sorted round the table, their gaps are within a small
           factor of each other. */
        for (uint32_t r = 0; r < 1024; r++)
            first[r] = (r * a) >> 12;
        for (uint32_t i = 1; i < 1024; i++) /* insertion sort */
            for (uint32_t j = i; j > 0 && first[j - 1] > first[j]; j--) {
                uint32_t x = first[j];
                first[j] = first[j - 1];
                first[j - 1] = x;
            }
        for (uint32_t i = 0; i < 1024; i++) {
            uint32_t gap = i < 1023 ? first[i + 1] - first[i] : first[0] + (1u << 20) - first[1023];
            gap_lo = gap < gap_lo ? gap : gap_lo;
            gap_hi = gap > gap_hi ? gap : gap_hi;
        }
        ASSERT_TRUE(gap_lo > 0 && gap_hi <= 8 * gap_lo);
    }
}

static void expect_corrupt(const struct ids *t, const char *expected)
{
    const char *why = NULL;
    ASSERT_TRUE(!ids_verify(t, &why));
    ASSERT_TRUE(why && strcmp(why, expected) == 0);
}

void test_ids_erase_at_a_place_and_verify_catches_corruption(void)
{
    enum { SAME = 10 }; /* more than a bucket holds */
    struct ids t;
    ids_pos pos[SAME + 1];
    uint32_t home, key = 0;

    /* Engine ids equal in their low 32 bits share a key, so a home: seven
       fill it, the rest overflow into the next bucket, here across the end
       of the table (the key is one whose home is the last bucket). */
    ASSERT_EQ(ids_init(&t, 40, false, 0), 0);
    while (ids_home(&t, key) != t.mask)
        key++;
    for (uint32_t h = 1; h <= SAME; h++) {
        ids_of[h] = (uint64_t)h << 32 | key;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
    }
    verify(&t);
    home = ids_home(&t, key);
    ASSERT_EQ(t.buckets[home].overflow, SAME - IDS_BUCKET_SLOTS);
    ASSERT_EQ(longest_probe(&t), 2);
    for (uint32_t h = 1; h <= SAME; h++) {
        ASSERT_EQ(ids_lookup(&t, key, ids_of[h], same, NULL, &pos[h]), h);
        ASSERT_EQ(pos[h] / 8, h <= IDS_BUCKET_SLOTS ? home : (home + 1) & t.mask);
    }

    /* Out of the home bucket: nothing overflowed less. Out of the next one:
       one entry fewer passed the home. */
    ids_erase_at(&t, pos[2]);
    verify(&t);
    ASSERT_EQ(t.buckets[home].overflow, SAME - IDS_BUCKET_SLOTS);
    ids_erase_at(&t, pos[SAME]);
    verify(&t);
    ASSERT_EQ(t.buckets[home].overflow, SAME - IDS_BUCKET_SLOTS - 1);
    for (uint32_t h = 1; h <= SAME; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h == 2 || h == SAME ? 0 : h);

    /* verify() sees a wrong overflow count, a key left in a free slot, a
       wrong count of entries. */
    t.buckets[home].overflow++;
    expect_corrupt(&t, "ids: a bucket's overflow count does not match the entries past it");
    t.buckets[home].overflow--;
    t.buckets[pos[2] / 8].key[pos[2] % 8] = 1;
    expect_corrupt(&t, "ids: a free slot keeps a key");
    t.buckets[pos[2] / 8].key[pos[2] % 8] = 0;
    t.count++;
    expect_corrupt(&t, "ids: count does not match the occupied slots");
    t.count--;
    /* ...an entry farther from its home than the longest probe recorded. */
    ASSERT_EQ(t.max_probe, 1);
    t.max_probe = 0;
    expect_corrupt(&t, "ids: an entry lies past the longest probe");
    t.max_probe = 1;
    verify(&t);
    ids_destroy(&t);
}

/* verify() sees a table fuller than its load allows: every entry in place,
   one more than ids_reserve_one lets in (written by hand, as an insert
   without a reservation would have, which debug builds stop). */
void test_ids_verify_catches_a_table_over_its_load(void)
{
    struct ids t;
    uint64_t buckets, limit;
    uint32_t h, key, home;
    int slot;

    ASSERT_EQ(ids_init(&t, 40, true, 0x5EEDull), 0);
    buckets = (uint64_t)t.mask + 1;
    limit = ids_max_load(&t, buckets);
    ASSERT_TRUE(limit + 1 < sizeof(ids_of) / sizeof(ids_of[0]));
    for (h = 1; h <= limit; h++) {
        ids_of[h] = h * 0x9E3779B97F4A7C15ull;
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
    }
    ASSERT_EQ((uint64_t)t.mask + 1, buckets); /* full to its load, not grown */
    verify(&t);
    /* One more, in a free slot of its home bucket (half of all slots are free). */
    for (;; h++) {
        ids_of[h] = h * 0x9E3779B97F4A7C15ull;
        key = ids_key(&t, ids_of[h]);
        home = ids_home(&t, key);
        if (ids_free_slots(&t.buckets[home]))
            break;
    }
    slot = __builtin_ctz(ids_free_slots(&t.buckets[home]));
    t.buckets[home].key[slot] = key;
    t.buckets[home].handle[slot] = h;
    t.count++;
    expect_corrupt(&t, "ids: fuller than its maximum load");
    t.buckets[home].key[slot] = 0;
    t.buckets[home].handle[slot] = 0;
    t.count--;
    verify(&t);
    ids_destroy(&t);
}

/*
 * Entries that overflowed outlive the ones that filled their home: for each
 * bucket of eight, fill it with ids whose home it is, let one more overflow
 * into the next bucket, then erase the seven (and every id homed elsewhere
 * at once). Eight entries are left, one past each home, and every bucket
 * counts overflow. A lookup of an absent id must still end.
 */
void test_ids_lookup_ends_when_every_bucket_counts_overflow(void)
{
    struct ids t;
    uint32_t next_handle = 1, left[8];
    uint64_t next_id = 1;

    ASSERT_EQ(ids_init(&t, 1, false, 0), 0);
    ASSERT_EQ(t.mask, 7);
    memset(ids_of, 0, sizeof(ids_of));
    for (uint32_t b = 0; b <= t.mask; b++) {
        uint32_t kept[IDS_BUCKET_SLOTS], nkept = 0;
        for (;;) {
            uint32_t h = next_handle++, key;
            ids_pos pos = 0; /* ids_lookup sets it when it finds the id: always, here */
            ASSERT_TRUE(h < sizeof(ids_of) / sizeof(ids_of[0]));
            ids_of[h] = next_id++;
            key = ids_key(&t, ids_of[h]);
            ASSERT_EQ(ids_reserve_one(&t), 0);
            ids_insert(&t, ids_of[h], h);
            ASSERT_EQ(ids_lookup(&t, key, ids_of[h], same, NULL, &pos), h);
            if (ids_home(&t, key) != b) {
                ids_erase_at(&t, pos);
            } else if (nkept < IDS_BUCKET_SLOTS) {
                kept[nkept++] = h;
            } else {
                ASSERT_EQ(pos / 8, (b + 1) & t.mask); /* overflowed */
                left[b] = h;
                break;
            }
        }
        for (uint32_t k = 0; k < nkept; k++)
            ids_erase(&t, ids_of[kept[k]], kept[k]);
        verify(&t);
    }
    ASSERT_EQ(t.count, 8);
    for (uint32_t b = 0; b <= t.mask; b++)
        ASSERT_EQ(t.buckets[b].overflow, 1);
    ASSERT_EQ(ids_find(&t, next_id, same, NULL), 0);
    for (uint32_t b = 0; b <= t.mask; b++)
        ASSERT_EQ(ids_find(&t, ids_of[left[b]], same, NULL), left[b]);
    ids_destroy(&t);
}
