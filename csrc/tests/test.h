/*
 * test.h - a tiny test harness. A failed assertion prints both expressions
 * and both values, then exits non-zero, so ctest shows exactly what broke.
 */
#ifndef ENG_TEST_H
#define ENG_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyengine.h"

/*
 * Steps (orders, rounds) of a long test: n, or n / $PYENGINE_TEST_SHRINK
 * when that is set (the memcheck run shrinks them: valgrind is some 50 times
 * slower).
 */
static inline int test_steps(int n)
{
    const char *s = getenv("PYENGINE_TEST_SHRINK");
    int d = s ? atoi(s) : 1;
    return d > 1 ? n / d : n;
}

#define TEST_FAIL_(...)                                             \
    do {                                                            \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);             \
        fprintf(stderr, __VA_ARGS__);                               \
        fputc('\n', stderr);                                        \
        exit(1);                                                    \
    } while (0)

#define ASSERT_TRUE(x)                                   \
    do {                                                 \
        if (!(x))                                        \
            TEST_FAIL_("assertion failed: %s", #x);     \
    } while (0)

#define ASSERT_EQ(a, b)                                                            \
    do {                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                       \
        if (a_ != b_)                                                              \
            TEST_FAIL_("%s == %s failed: %lld != %lld", #a, #b, a_, b_);          \
    } while (0)

#define ASSERT_NE(a, b)                                                            \
    do {                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                       \
        if (a_ == b_)                                                              \
            TEST_FAIL_("%s != %s failed: both %lld", #a, #b, a_);                 \
    } while (0)

#define ASSERT_STREQ(a, b)                                                         \
    do {                                                                           \
        const char *a_ = (a), *b_ = (b);                                           \
        if (strcmp(a_, b_) != 0)                                                   \
            TEST_FAIL_("%s == %s failed: \"%s\" != \"%s\"", #a, #b, a_, b_);     \
    } while (0)

/* Check every engine invariant; on failure print which one. */
#define ASSERT_VERIFY(e)                                               \
    do {                                                               \
        char why_[256];                                                \
        if (eng_verify((e), why_, sizeof(why_)) != ENG_OK)             \
            TEST_FAIL_("eng_verify failed: %s", why_);                \
    } while (0)

/* Process one command and verify the engine; returns its events (valid
   until the next call). */
static inline const struct eng_event *run(struct eng *e, struct eng_cmd c, size_t *n)
{
    eng_clear_events(e);
    ASSERT_TRUE(eng_process(e, &c) >= 1);
    ASSERT_VERIFY(e);
    return eng_events(e, n);
}

/* A small deterministic PRNG (xorshift64*) for randomized tests. */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif /* ENG_TEST_H */
