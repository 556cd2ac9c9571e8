/*
 * common.h - macros shared by every module of the core.
 *
 * Assertions come in tiers chosen at build time by ENG_DEBUG:
 *   ENG_ASSERT            cheap checks, on when ENG_DEBUG >= 1
 *   ENG_ASSERT_INTERNAL   per-operation consistency, ENG_DEBUG >= 2
 *   ENG_ASSERT_EXPENSIVE  verify functions (after every command, what it
 *                         changed: eng__verify_events), ENG_DEBUG >= 3
 * They guard internal invariants only. Input from callers is validated and
 * rejected with an error code, never asserted.
 */
#ifndef ENG_COMMON_H
#define ENG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef ENG_DEBUG
#define ENG_DEBUG 0
#endif

#define ENG_LIKELY(x) __builtin_expect(!!(x), 1)
#define ENG_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* For a hot helper with few callers that the compiler would call, paying
   for saving and restoring registers more than for its own work. */
#define ENG_ALWAYS_INLINE inline __attribute__((always_inline))

#define eng_container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

/*
 * MurmurHash3's 64-bit finaliser: a bijection in which every bit of `x`
 * moves every bit of the result, the low ones an index's home included.
 * Given a key XORed with a secret seed, it keeps clients from choosing keys
 * that share a home (hash flooding).
 */
static inline uint64_t eng_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

#define ENG_ASSERT_FAIL_(expr)                                                    \
    (fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, expr), \
     abort())

#if ENG_DEBUG >= 1
#define ENG_ASSERT(x) ((x) ? (void)0 : ENG_ASSERT_FAIL_(#x))
#else
#define ENG_ASSERT(x) ((void)0)
#endif

#if ENG_DEBUG >= 2
#define ENG_ASSERT_INTERNAL(x) ((x) ? (void)0 : ENG_ASSERT_FAIL_(#x))
#else
#define ENG_ASSERT_INTERNAL(x) ((void)0)
#endif

#if ENG_DEBUG >= 3
#define ENG_ASSERT_EXPENSIVE(x) ((x) ? (void)0 : ENG_ASSERT_FAIL_(#x))
#else
#define ENG_ASSERT_EXPENSIVE(x) ((void)0)
#endif

/*
 * Defensive checks for conditions that "cannot happen" but must not crash a
 * release build: they abort in debug builds and evaluate to the condition
 * otherwise, so the caller can take a safe way out.
 */
#if ENG_DEBUG >= 1
#define ENG_NEVER(x) ((x) ? (ENG_ASSERT_FAIL_("NEVER(" #x ")"), 1) : 0)
#else
#define ENG_NEVER(x) ENG_UNLIKELY(x)
#endif

#endif /* ENG_COMMON_H */
