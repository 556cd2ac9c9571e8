/*
 * pool.h - fixed-size node pool with an intrusive free list and 32-bit handles.
 *
 * Nodes are carved from slabs of (1 << slab_shift) nodes that the pool takes
 * from an arena. Every node has a handle, a uint32_t that maps back to it in
 * O(1) (slab number << slab_shift | index): indexes store handles instead of
 * pointers to halve their size. Handle 0 is never handed out, so 0 can mean
 * "no node". A freed node goes on a free list threaded through the free nodes
 * themselves and is reused before anything new is carved.
 */
#ifndef ENG_POOL_H
#define ENG_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

struct pool_free;

struct pool {
    struct arena *arena;
    size_t node_size;       /* bytes per node, a multiple of 8 and >= 16 */
    uint32_t slab_shift;    /* log2(nodes per slab) */
    uint32_t nslabs;
    uint32_t slabs_cap;
    uint32_t carved;        /* nodes handed out from the newest slab */
    char **slabs;           /* slab base addresses, for handle -> node */
    struct pool_free *free; /* free nodes, most recently freed first */
    size_t in_use;          /* nodes allocated and not freed */
    size_t capacity;        /* nodes handed out at least once (in use + free) */
};

/*
 * Prepare a pool of `node_size`-byte nodes (rounded up to a multiple of 8,
 * at least 16) drawn from `arena` in slabs of 1 << slab_shift nodes.
 * Returns 0, or -1 for an invalid size/shift (nothing is changed then).
 */
int pool_init(struct pool *p, struct arena *arena, size_t node_size, uint32_t slab_shift);

/*
 * Return an uninitialised node and store its handle in *handle, or return NULL
 * when the arena is exhausted or the handle space (2^32) is used up.
 */
void *pool_alloc(struct pool *p, uint32_t *handle);

/* Return `node`, whose handle is `handle`, to the pool. Can't fail. */
void pool_free(struct pool *p, void *node, uint32_t handle);

/* The node of `handle`; caller guarantees the handle was handed out. */
static inline void *pool_at(const struct pool *p, uint32_t handle)
{
    uint32_t mask = (1u << p->slab_shift) - 1;
    return p->slabs[handle >> p->slab_shift] + (size_t)(handle & mask) * p->node_size;
}

/* Bytes of node memory taken from the arena so far. */
static inline size_t pool_bytes(const struct pool *p)
{
    return ((size_t)p->nslabs << p->slab_shift) * p->node_size;
}

/*
 * Check the free list: every free node lies in a slab and its handle maps back
 * to it, and in_use + free == capacity. Returns true if all hold, else false
 * with a static description in *why.
 */
bool pool_verify(const struct pool *p, const char **why);

/* Returns 0, or -1 (and changes nothing) if nodes are still in use. The
   memory itself goes back with the arena. */
int pool_destroy(struct pool *p);

#endif /* ENG_POOL_H */
