#include "idx.h"
#include "test.h"

/* Keys live in a plain array; the handle is the array position (never 0). */
struct table {
    uint64_t keys[5000];
};

static uint64_t key_hash(uint64_t k)
{
    return k * 0x9E3779B97F4A7C15ull;
}

static uint64_t hash_of(const void *ctx, uint32_t h)
{
    return key_hash(((const struct table *)ctx)->keys[h]);
}

/* All keys collide: the worst case for linear probing. */
static uint64_t const_hash_of(const void *ctx, uint32_t h)
{
    (void)ctx;
    (void)h;
    return 42;
}

static bool match(const void *ctx, uint32_t h, const void *key)
{
    return ((const struct table *)ctx)->keys[h] == *(const uint64_t *)key;
}

static const struct idx_ops ops = {hash_of};
static const struct idx_ops const_ops = {const_hash_of};

static void verify(const struct idx *t, const struct idx_ops *o, const void *ctx)
{
    const char *why = NULL;
    if (!idx_verify(t, o, ctx, &why))
        TEST_FAIL_("idx_verify: %s", why);
}

void test_idx_insert_find_erase(void)
{
    static struct table tab;
    struct idx t;

    ASSERT_EQ(idx_init(&t, 10), 0);
    for (uint32_t h = 1; h <= 20; h++) {
        tab.keys[h] = 1000 + h;
        ASSERT_EQ(idx_reserve_one(&t, &ops, &tab), 0);
        idx_insert(&t, key_hash(tab.keys[h]), h);
        verify(&t, &ops, &tab);
    }
    for (uint32_t h = 1; h <= 20; h++) {
        int64_t pos = idx_find(&t, key_hash(tab.keys[h]), match, &tab, &tab.keys[h]);
        ASSERT_TRUE(pos >= 0);
        ASSERT_EQ(t.slots[pos], h);
        ASSERT_EQ(idx_slot_of(&t, key_hash(tab.keys[h]), h), pos);
    }
    uint64_t missing = 999;
    ASSERT_EQ(idx_find(&t, key_hash(missing), match, &tab, &missing), -1);
    for (uint32_t h = 1; h <= 20; h += 2) {
        idx_erase_at(&t, idx_slot_of(&t, key_hash(tab.keys[h]), h), &ops, &tab);
        verify(&t, &ops, &tab);
    }
    for (uint32_t h = 1; h <= 20; h++) {
        int64_t pos = idx_find(&t, key_hash(tab.keys[h]), match, &tab, &tab.keys[h]);
        ASSERT_EQ(pos >= 0, h % 2 == 0);
    }
    ASSERT_EQ(t.count, 10);
    idx_destroy(&t);
}

void test_idx_grows_and_keeps_entries(void)
{
    static struct table tab;
    struct idx t;

    ASSERT_EQ(idx_init(&t, 0), 0);
    size_t before = idx_bytes(&t);
    for (uint32_t h = 1; h < 5000; h++) {
        tab.keys[h] = (uint64_t)h * 977;
        ASSERT_EQ(idx_reserve_one(&t, &ops, &tab), 0);
        idx_insert(&t, key_hash(tab.keys[h]), h);
    }
    verify(&t, &ops, &tab);
    ASSERT_TRUE(idx_bytes(&t) > before);
    ASSERT_TRUE(t.count * 2 <= t.mask + 1);
    for (uint32_t h = 1; h < 5000; h++)
        ASSERT_TRUE(idx_find(&t, key_hash(tab.keys[h]), match, &tab, &tab.keys[h]) >= 0);
    idx_destroy(&t);
}

void test_idx_backward_shift_on_collisions(void)
{
    static struct table tab;
    struct idx t;
    uint64_t rng = 12345;

    ASSERT_EQ(idx_init(&t, 40), 0);
    for (uint32_t h = 1; h <= 30; h++) {
        tab.keys[h] = h;
        ASSERT_EQ(idx_reserve_one(&t, &const_ops, &tab), 0);
        idx_insert(&t, const_hash_of(&tab, h), h);
    }
    verify(&t, &const_ops, &tab);
    /* Erase in random order; every survivor stays findable. */
    bool present[31];
    for (int i = 0; i <= 30; i++)
        present[i] = i > 0;
    for (int n = 0; n < 30; n++) {
        uint32_t h;
        do
            h = 1 + (uint32_t)(test_rand(&rng) % 30);
        while (!present[h]);
        idx_erase_at(&t, idx_slot_of(&t, const_hash_of(&tab, h), h), &const_ops, &tab);
        present[h] = false;
        verify(&t, &const_ops, &tab);
        for (uint32_t k = 1; k <= 30; k++) {
            int64_t pos = idx_find(&t, const_hash_of(&tab, k), match, &tab, &tab.keys[k]);
            ASSERT_EQ(pos >= 0, present[k]);
        }
    }
    ASSERT_EQ(t.count, 0);
    idx_destroy(&t);
}
