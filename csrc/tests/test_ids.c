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

    ASSERT_EQ(ids_init(&t, 16, 0), 0);
    for (uint32_t h = 1; h <= N; h++) {
        ids_of[h] = 1000 + h; /* consecutive ids: one dense run */
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
    }
    verify(&t);
    ASSERT_TRUE(ids_bytes(&t) >= N * sizeof(struct ids_slot));
    for (uint32_t h = 1; h <= N; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ASSERT_EQ(ids_find(&t, 999, same, NULL), 0);
    ASSERT_EQ(ids_find(&t, 1000 + N + 1, same, NULL), 0);
    /* FIFO erase, as fills take the oldest orders. */
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

    /* Ids that share home slots (equal modulo the capacity, or equal in the
       low 32 bits) interleave in clusters; every step keeps the order. */
    ASSERT_EQ(ids_init(&t, seed ? 32 : 40, seed), 0); /* capacity 64 */
    ASSERT_EQ(t.mask, 63);
    bool present[200] = {false};
    memset(ids_of, 0, sizeof(ids_of));
    for (int step = 0; step < 5000; step++) {
        uint32_t h = 1 + (uint32_t)(test_rand(&rng) % 199);
        if (!ids_of[h])
            ids_of[h] = (test_rand(&rng) % 2 ? ((uint64_t)1 << 32) : 0) + 64 * (h % 7) + h % 3 + 1;
        if (present[h]) {
            ids_erase(&t, ids_of[h], h);
            present[h] = false;
        } else if (t.count < (seed ? 32 : 40)) {
            /* Keep the load fixed so clusters stay long. */
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
 * The longest run of occupied slots. An insert or erase may shift every
 * entry of the run it lands in: that is its cost.
 */
static uint32_t longest_cluster(const struct ids *t)
{
    uint32_t worst = 0, run = 0;

    /* Twice round, so that a run across the end of the table counts whole. */
    for (uint64_t i = 0; i < 2 * ((uint64_t)t->mask + 1); i++) {
        run = t->slots[i & t->mask].handle ? run + 1 : 0;
        worst = run > worst ? run : worst;
    }
    return worst;
}

void test_ids_long_lived_residents_keep_runs_short(void)
{
    enum { OLD = 10000, CHURN = 300000, BOUND = 256 };
    struct ids t;
    uint32_t prev = 0;

    /* Old orders that stay, then new ids coming and going while the id
       counter laps the table many times. With an id as its own home, the old
       orders fill one run of 10,000 slots, and every new id whose home falls
       in it shifts the rest of it by one slot. Runs must stay short. */
    ASSERT_EQ(ids_init(&t, 16, 0), 0);
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
            ASSERT_TRUE(longest_cluster(&t) <= BOUND);
        }
    }
    verify(&t);
    ASSERT_TRUE(longest_cluster(&t) <= BOUND);
    for (uint32_t h = 1; h <= OLD; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ASSERT_EQ(ids_find(&t, ids_of[prev], same, NULL), prev);
    ids_destroy(&t);
}

void test_ids_caller_ids_of_a_multiplicative_sequence_stay_spread(void)
{
    enum { LIVE = 10000, CHURN = 200000, BOUND = 64 };
    struct ids t;

    /* A gateway's ids k * 0x9E3779B1 (mod 2^25), the very pattern that the
       Fibonacci placement of the engine's own ids folds into clusters: keyed
       by the seeded mix they spread. 10,000 live, each replaced in turn. */
    ASSERT_EQ(ids_init(&t, LIVE, 7), 0);
    for (uint64_t k = 0; k < LIVE + CHURN; k++) {
        uint32_t h = 1 + (uint32_t)(k % LIVE);
        if (k >= LIVE)
            ids_erase(&t, ids_of[h], h); /* handle h's previous id */
        ids_of[h] = 1 + (k * 0x9E3779B1ull & ((1ull << 25) - 1));
        ASSERT_EQ(ids_reserve_one(&t), 0);
        ids_insert(&t, ids_of[h], h);
        if (k % 20000 == 0) {
            verify(&t);
            ASSERT_TRUE(longest_cluster(&t) <= BOUND);
        }
    }
    verify(&t);
    ASSERT_TRUE(longest_cluster(&t) <= BOUND);
    for (uint32_t h = 1; h <= LIVE; h++)
        ASSERT_EQ(ids_find(&t, ids_of[h], same, NULL), h);
    ids_destroy(&t);
}
