/*
 * idx.c - allocation, growth and checking of the open-addressing index.
 *
 * The slot array is malloc'ed, not taken from the arena: it is replaced
 * wholesale when the table doubles, which happens O(log n) times in the life
 * of an engine, never per order. Sizing the table up front
 * (eng_config.expected_orders) avoids even that on a live engine.
 */
#include "idx.h"

#include <stdlib.h>

enum { IDX_MIN_CAPACITY = 64 };

static int idx_alloc(struct idx *t, uint64_t capacity)
{
    uint32_t *slots = calloc(capacity, sizeof(*slots));
    if (!slots)
        return -1;
    t->slots = slots;
    t->mask = (uint32_t)(capacity - 1);
    return 0;
}

int idx_init(struct idx *t, uint32_t expected)
{
    uint64_t cap = IDX_MIN_CAPACITY;
    while (cap / 2 < expected)
        cap *= 2;
    t->count = 0;
    return idx_alloc(t, cap);
}

void idx_destroy(struct idx *t)
{
    free(t->slots);
    t->slots = NULL;
    t->count = 0;
}

int idx_grow(struct idx *t, const struct idx_ops *ops, const void *ctx)
{
    struct idx old = *t;
    uint64_t cap = (uint64_t)t->mask + 1;

    if (cap >= ((uint64_t)1 << 32))
        return -1;
    if (idx_alloc(t, cap * 2) != 0) {
        *t = old;
        return -1;
    }
    t->count = 0;
    for (uint64_t i = 0; i < cap; i++) {
        uint32_t h = old.slots[i];
        if (h)
            idx_insert(t, ops->hash(ctx, h), h);
    }
    free(old.slots);
    return 0;
}

bool idx_verify(const struct idx *t, const struct idx_ops *ops, const void *ctx,
                const char **why)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i <= t->mask; i++) {
        uint32_t h = t->slots[i];
        if (!h)
            continue;
        n++;
        /* Every slot from home up to i must be occupied. */
        for (uint32_t k = idx_home(t, ops->hash(ctx, h)); k != i; k = (k + 1) & t->mask) {
            if (!t->slots[k]) {
                *why = "index: entry not reachable from its home slot";
                return false;
            }
        }
    }
    if (n != t->count) {
        *why = "index: count does not match the occupied slots";
        return false;
    }
    if ((uint64_t)t->count > ((uint64_t)t->mask + 1) / 2) {
        *why = "index: more than half full";
        return false;
    }
    return true;
}
