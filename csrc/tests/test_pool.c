#include "pool.h"
#include "test.h"

struct node {
    uint64_t a, b, c;
};

void test_pool_handles_map_back(void)
{
    struct arena a;
    struct pool p;
    struct node *nodes[1000];
    uint32_t handles[1000];
    const char *why = NULL;

    arena_init(&a, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&p, &a, sizeof(struct node), 4), 0); /* 16 per slab */
    for (int i = 0; i < 1000; i++) {
        nodes[i] = pool_alloc(&p, &handles[i]);
        ASSERT_TRUE(nodes[i] != NULL);
        nodes[i]->a = (uint64_t)i;
        ASSERT_TRUE(pool_verify(&p, &why));
    }
    for (int i = 0; i < 1000; i++) {
        ASSERT_TRUE(pool_at(&p, handles[i]) == nodes[i]);
        ASSERT_EQ(((struct node *)pool_at(&p, handles[i]))->a, i);
        for (int j = 0; j < i; j++)
            ASSERT_NE(handles[i], handles[j]);
    }
    ASSERT_EQ(p.in_use, 1000);
    for (int i = 0; i < 1000; i++)
        pool_free(&p, nodes[i], handles[i]);
    ASSERT_TRUE(pool_verify(&p, &why));
    ASSERT_EQ(pool_destroy(&p), 0);
    arena_destroy(&a);
}

void test_pool_free_list_reuses_lifo(void)
{
    struct arena a;
    struct pool p;
    uint32_t h1, h2, h3, h4;
    const char *why = NULL;

    arena_init(&a, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&p, &a, sizeof(struct node), 6), 0);
    void *n1 = pool_alloc(&p, &h1);
    void *n2 = pool_alloc(&p, &h2);
    size_t cap = p.capacity;
    pool_free(&p, n1, h1);
    pool_free(&p, n2, h2);
    ASSERT_TRUE(pool_verify(&p, &why));
    /* Most recently freed first, and no new memory carved. */
    ASSERT_TRUE(pool_alloc(&p, &h3) == n2);
    ASSERT_EQ(h3, h2);
    ASSERT_TRUE(pool_alloc(&p, &h4) == n1);
    ASSERT_EQ(h4, h1);
    ASSERT_EQ(p.capacity, cap);
    ASSERT_EQ(pool_destroy(&p), -1);
    pool_free(&p, n1, h1);
    pool_free(&p, n2, h2);
    ASSERT_EQ(pool_destroy(&p), 0);
    arena_destroy(&a);
}

void test_pool_never_hands_out_handle_zero(void)
{
    struct arena a;
    struct pool p;
    uint32_t h;

    arena_init(&a, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&p, &a, 16, 3), 0);
    for (int i = 0; i < 50; i++) {
        ASSERT_TRUE(pool_alloc(&p, &h) != NULL);
        ASSERT_NE(h, 0);
    }
    ASSERT_EQ(p.nslabs, 7); /* 7 slabs of 8 hold 50 with one slot reserved */
    ASSERT_EQ(p.capacity, 50);
    arena_destroy(&a);
}

void test_pool_destroy_busy_while_in_use(void)
{
    struct arena a;
    struct pool p;
    uint32_t h;

    arena_init(&a, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&p, &a, 24, 4), 0);
    void *n = pool_alloc(&p, &h);
    ASSERT_EQ(pool_destroy(&p), -1);
    pool_free(&p, n, h);
    ASSERT_EQ(pool_destroy(&p), 0);
    ASSERT_EQ(pool_init(&p, &a, 0, 4), -1);
    ASSERT_EQ(pool_init(&p, &a, 24, 0), -1);
    arena_destroy(&a);
}

void test_pool_out_of_memory(void)
{
    static char buf[4096] __attribute__((aligned(64)));
    struct arena a;
    struct pool p;
    uint32_t h;
    int n = 0;

    arena_init(&a, buf, sizeof(buf), 0);
    ASSERT_EQ(pool_init(&p, &a, 32, 4), 0);
    while (pool_alloc(&p, &h) != NULL)
        n++;
    ASSERT_TRUE(n > 0 && n < 4096 / 32);
    ASSERT_EQ((size_t)n, p.in_use);
    arena_destroy(&a);
}
