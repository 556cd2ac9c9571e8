#include "arena.h"
#include "test.h"

void test_arena_bump_and_align(void)
{
    struct arena a;
    arena_init(&a, NULL, 0, 4096);
    char *p1 = arena_alloc(&a, 3, 1);
    char *p2 = arena_alloc(&a, 8, 64);
    char *p3 = arena_alloc(&a, 1, 8);
    ASSERT_TRUE(p1 && p2 && p3);
    ASSERT_EQ((uintptr_t)p2 % 64, 0);
    ASSERT_EQ((uintptr_t)p3 % 8, 0);
    ASSERT_TRUE(p2 >= p1 + 3);
    ASSERT_TRUE(p3 >= p2 + 8);
    memset(p2, 0xab, 8); /* usable memory (ASan would object otherwise) */
    ASSERT_TRUE(a.bytes_used >= 12);
    arena_destroy(&a);
}

void test_arena_fixed_buffer_exhausts(void)
{
    static char buf[256] __attribute__((aligned(16)));
    struct arena a;
    arena_init(&a, buf, sizeof(buf), 0);
    ASSERT_TRUE(arena_alloc(&a, 200, 8) == buf);
    ASSERT_TRUE(arena_alloc(&a, 56, 8) != NULL);
    ASSERT_TRUE(arena_alloc(&a, 1, 1) == NULL); /* no chunk size: never grows */
    ASSERT_EQ(a.bytes_reserved, 0);
    arena_destroy(&a);
}

void test_arena_grows_in_chunks(void)
{
    struct arena a;
    arena_init(&a, NULL, 0, 1024);
    for (int i = 0; i < 100; i++) {
        char *p = arena_alloc(&a, 100, 16);
        ASSERT_TRUE(p != NULL);
        memset(p, i, 100);
    }
    ASSERT_TRUE(a.bytes_reserved >= 100 * 100);
    /* A request bigger than a chunk gets a chunk of its own. */
    char *big = arena_alloc(&a, 10000, 64);
    ASSERT_TRUE(big != NULL);
    ASSERT_EQ((uintptr_t)big % 64, 0);
    memset(big, 1, 10000);
    arena_destroy(&a);
}
