/*
 * idx.h - open-addressing hash index of pool handles (linear probing).
 *
 * The table stores only 32-bit pool handles (0 = empty slot); keys live in the
 * nodes the handles name. The caller supplies, through `struct idx_ops`, the
 * hash of a stored node and, per lookup, the hash of the key and a predicate
 * that compares a node with it. The functions are inline so that with a
 * constant ops table the compiler inlines the hash and the comparison.
 *
 * Capacity is a power of two and the home slot of a hash is its low bits, so
 * a caller's hash must mix all of the key's bits into the low ones. Two
 * indexes use it: each book's levels by (side, price) and the engine's open
 * orders by (account, client order id); order ids have an index of their own
 * (ids.h). The table doubles when more than half full, so probe sequences
 * stay short.
 * Erase uses backward-shift deletion: no tombstones, lookups never slow down
 * with churn.
 */
#ifndef ENG_IDX_H
#define ENG_IDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct idx {
    uint32_t *slots;
    uint32_t mask;  /* capacity - 1: home slot = hash & mask */
    uint32_t count;
};

struct idx_ops {
    /* Hash of the key held by the node with this handle. */
    uint64_t (*hash)(const void *ctx, uint32_t handle);
};

/* Allocate an empty table with room for `expected` entries. Returns 0 or -1
   (out of memory; nothing is allocated then). */
int idx_init(struct idx *t, uint32_t expected);
void idx_destroy(struct idx *t);

/* idx_reserve_one() when the table must grow. */
int idx_grow(struct idx *t, const struct idx_ops *ops, const void *ctx);

/*
 * Make room for one more entry, doubling (and rehashing) if needed. Returns
 * 0, or -1 when out of memory, in which case the table is unchanged. Inline:
 * it is asked on every insert and almost always has room.
 */
static inline int idx_reserve_one(struct idx *t, const struct idx_ops *ops, const void *ctx)
{
    if (ENG_LIKELY((uint64_t)t->count + 1 <= ((uint64_t)t->mask + 1) / 2))
        return 0;
    return idx_grow(t, ops, ctx);
}

static inline size_t idx_bytes(const struct idx *t)
{
    return ((size_t)t->mask + 1) * sizeof(uint32_t);
}

static inline uint32_t idx_home(const struct idx *t, uint64_t hash)
{
    return (uint32_t)hash & t->mask;
}

/*
 * Find the slot whose node matches `key`. Returns the slot position, or -1.
 * `match(ctx, handle, key)` compares a stored node with the key.
 */
static inline int64_t idx_find(const struct idx *t, uint64_t hash,
                               bool (*match)(const void *ctx, uint32_t handle, const void *key),
                               const void *ctx, const void *key)
{
    uint32_t i = idx_home(t, hash);
    for (;;) {
        uint32_t h = t->slots[i];
        if (h == 0)
            return -1;
        if (match(ctx, h, key))
            return i;
        i = (i + 1) & t->mask;
    }
}

/* The slot holding `handle`, whose key hashes to `hash`; caller guarantees
   it is in the table. Compares handles only, never touching the nodes. */
static inline uint32_t idx_slot_of(const struct idx *t, uint64_t hash, uint32_t handle)
{
    uint32_t i = idx_home(t, hash);
    while (t->slots[i] != handle) {
        ENG_ASSERT(t->slots[i] != 0);
        i = (i + 1) & t->mask;
    }
    return i;
}

/* Insert `handle` (hash `hash`); caller guarantees idx_reserve_one() succeeded
   since the last insert and the key is not present. Can't fail. */
static inline void idx_insert(struct idx *t, uint64_t hash, uint32_t handle)
{
    uint32_t i = idx_home(t, hash);
    while (t->slots[i])
        i = (i + 1) & t->mask;
    t->slots[i] = handle;
    t->count++;
}

/* Remove the entry at slot `pos` (as returned by idx_find). Can't fail. */
static inline void idx_erase_at(struct idx *t, uint32_t pos, const struct idx_ops *ops,
                                const void *ctx)
{
    uint32_t hole = pos, j = pos;

    /* Walk the cluster after the hole; an entry whose home slot is not
       cyclically within (hole, j] can move back into the hole. */
    for (;;) {
        uint32_t h, home;
        j = (j + 1) & t->mask;
        h = t->slots[j];
        if (h == 0)
            break;
        home = idx_home(t, ops->hash(ctx, h));
        if (((j - home) & t->mask) >= ((j - hole) & t->mask)) {
            t->slots[hole] = h;
            hole = j;
        }
    }
    t->slots[hole] = 0;
    t->count--;
}

/*
 * Check that every entry is reachable from its home slot without crossing an
 * empty slot and that the count matches. Returns true, or false with a static
 * description in *why.
 */
bool idx_verify(const struct idx *t, const struct idx_ops *ops, const void *ctx,
                const char **why);

#endif /* ENG_IDX_H */
