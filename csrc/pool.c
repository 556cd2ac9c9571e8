/*
 * pool.c - fixed-size nodes from arena slabs, recycled through a free list.
 *
 * Layout: slabs[k] is the base of slab k, an array of 1 << slab_shift nodes.
 * Node i of slab k has handle (k << slab_shift) | i. Slab 0's node 0 is never
 * handed out so that handle 0 stays free to mean "none".
 *
 * A free node holds a `struct pool_free` (next pointer and its own handle), so
 * the free list costs no memory of its own and pool_alloc() can return the
 * handle of a recycled node without arithmetic. Debug builds fill nodes with
 * 0xAA when handed out and 0x55 when freed, so reads of uninitialised or
 * freed memory show up as recognisable garbage.
 */
#include "pool.h"

#include <string.h>

#include "common.h"

struct pool_free {
    struct pool_free *next;
    uint32_t handle;
};

enum { POOL_MAX_SLAB_SHIFT = 24 };

int pool_init(struct pool *p, struct arena *arena, size_t node_size, uint32_t slab_shift)
{
    size_t size = (node_size + 7) & ~(size_t)7;

    if (size < sizeof(struct pool_free))
        size = sizeof(struct pool_free);
    if (node_size == 0 || slab_shift == 0 || slab_shift > POOL_MAX_SLAB_SHIFT)
        return -1;
    p->arena = arena;
    p->node_size = size;
    p->slab_shift = slab_shift;
    p->nslabs = 0;
    p->slabs_cap = 0;
    p->carved = 1u << slab_shift; /* "newest slab is full": first alloc adds one */
    p->slabs = NULL;
    p->free = NULL;
    p->in_use = 0;
    p->capacity = 0;
    return 0;
}

/* Add a slab; returns 0 or -1 when out of memory or handles. */
static int pool_add_slab(struct pool *p)
{
    size_t per_slab = (size_t)1 << p->slab_shift;
    char *slab;


    if (((uint64_t)p->nslabs + 1) << p->slab_shift > ((uint64_t)1 << 32))
        return -1;
    if (p->nslabs == p->slabs_cap) {
        /* The old array stays in the arena; the arrays sum to less than
           twice the final one. */
        uint32_t cap = p->slabs_cap ? p->slabs_cap * 2 : 16;
        char **slabs = arena_alloc(p->arena, cap * sizeof(*slabs), sizeof(void *));
        if (!slabs)
            return -1;
        if (p->nslabs)
            memcpy(slabs, p->slabs, p->nslabs * sizeof(*slabs));
        p->slabs = slabs;
        p->slabs_cap = cap;
    }
    slab = arena_alloc(p->arena, per_slab * p->node_size, 64);
    if (!slab)
        return -1;
    p->slabs[p->nslabs] = slab;
    p->carved = p->nslabs == 0 ? 1 : 0; /* reserve handle 0 */
    p->nslabs++;
    return 0;
}

void *pool_alloc(struct pool *p, uint32_t *handle)
{
    void *node;

    if (p->free) {
        struct pool_free *f = p->free;
        p->free = f->next;
        *handle = f->handle;
        node = f;
    } else {
        if (p->carved == (1u << p->slab_shift) && pool_add_slab(p) != 0)
            return NULL;
        *handle = ((p->nslabs - 1) << p->slab_shift) | p->carved;
        node = p->slabs[p->nslabs - 1] + (size_t)p->carved * p->node_size;
        p->carved++;
        p->capacity++;
    }
    p->in_use++;
#if ENG_DEBUG >= 1
    memset(node, 0xAA, p->node_size);
#endif
    return node;
}

void pool_free(struct pool *p, void *node, uint32_t handle)
{
    struct pool_free *f = node;

    ENG_ASSERT_INTERNAL(pool_at(p, handle) == node);
    ENG_ASSERT(p->in_use > 0);
#if ENG_DEBUG >= 1
    memset(node, 0x55, p->node_size);
#endif
    f->next = p->free;
    f->handle = handle;
    p->free = f;
    p->in_use--;
}

bool pool_verify(const struct pool *p, const char **why)
{
    size_t nfree = 0;
    uint32_t per_slab = 1u << p->slab_shift;

    for (const struct pool_free *f = p->free; f; f = f->next) {
        uint32_t slab = f->handle >> p->slab_shift;
        uint32_t idx = f->handle & (per_slab - 1);
        if (slab >= p->nslabs || (slab == p->nslabs - 1 && idx >= p->carved) ||
            f->handle == 0) {
            *why = "pool: free node handle out of range";
            return false;
        }
        if ((const void *)pool_at(p, f->handle) != (const void *)f) {
            *why = "pool: free node handle does not map back to it";
            return false;
        }
        if (++nfree > p->capacity) {
            *why = "pool: free list longer than the pool (cycle?)";
            return false;
        }
    }
    if (p->in_use + nfree != p->capacity) {
        *why = "pool: in_use + free != capacity";
        return false;
    }
    return true;
}

int pool_destroy(struct pool *p)
{
    if (p->in_use)
        return -1;
#if ENG_DEBUG >= 1
    memset(p, 0xff, sizeof(*p));
#else
    p->slabs = NULL;
    p->free = NULL;
#endif
    return 0;
}
