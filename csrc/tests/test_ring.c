#include <pthread.h>

#include "ring.h"
#include "test.h"

void test_ring_push_pop_wrap(void)
{
    uint32_t buf[8], out[8];
    struct ring r;
    uint32_t next_in = 0, next_out = 0;

    ASSERT_EQ(ring_init(&r, buf, 6, sizeof(uint32_t)), -1); /* not a power of two */
    ASSERT_EQ(ring_init(&r, buf, 8, sizeof(uint32_t)), 0);
    ASSERT_EQ(ring_capacity(&r), 8);
    ASSERT_EQ(ring_pop(&r, out, 8), 0);
    /* Many rounds of uneven pushes and pops wrap the indices many times. */
    for (int round = 0; round < 1000; round++) {
        uint32_t in[8];
        size_t want = 1 + (size_t)round % 8, got;
        for (size_t i = 0; i < want; i++)
            in[i] = next_in + (uint32_t)i;
        got = ring_push(&r, in, want);
        ASSERT_TRUE(got <= want);
        next_in += (uint32_t)got;
        ASSERT_EQ(ring_count(&r), next_in - next_out);
        size_t popped = ring_pop(&r, out, 1 + (size_t)(round * 7) % 8);
        for (size_t i = 0; i < popped; i++)
            ASSERT_EQ(out[i], next_out + i);
        next_out += (uint32_t)popped;
    }
    /* Full: pushes stop at the capacity. */
    while (ring_pop(&r, out, 8))
        ;
    uint32_t many[10] = {0};
    ASSERT_EQ(ring_push(&r, many, 10), 8);
    ASSERT_EQ(ring_push(&r, many, 1), 0);
    ASSERT_EQ(ring_pop(&r, out, 3), 3);
    ASSERT_EQ(ring_push(&r, many, 10), 3);
}

enum { STRESS_N = 4000000 };
static uint64_t stress_n; /* STRESS_N, or fewer under valgrind (test_steps) */

struct stress {
    struct ring r;
    uint64_t buf[1024];
};

static void *producer(void *arg)
{
    struct stress *s = arg;
    uint64_t next = 0, chunk[37];
    while (next < stress_n) {
        size_t want = 1 + next % 37, got;
        if (want > stress_n - next)
            want = stress_n - next;
        for (size_t i = 0; i < want; i++)
            chunk[i] = next + i;
        got = ring_push(&s->r, chunk, want);
        next += got;
    }
    return NULL;
}

/* Two threads, one pushing a counting sequence in uneven chunks, one popping
   and checking it; run under ThreadSanitizer in CI. */
void test_ring_two_threads(void)
{
    static struct stress s;
    pthread_t t;
    uint64_t expect = 0, out[53];

    stress_n = (uint64_t)test_steps(STRESS_N);
    ASSERT_EQ(ring_init(&s.r, s.buf, 1024, sizeof(uint64_t)), 0);
    ASSERT_EQ(pthread_create(&t, NULL, producer, &s), 0);
    while (expect < stress_n) {
        size_t n = ring_pop(&s.r, out, 1 + expect % 53);
        for (size_t i = 0; i < n; i++)
            if (out[i] != expect + i)
                TEST_FAIL_("out of order: got %llu, expected %llu", (unsigned long long)out[i],
                           (unsigned long long)(expect + i));
        expect += n;
    }
    pthread_join(t, NULL);
    ASSERT_EQ(ring_count(&s.r), 0);
}
