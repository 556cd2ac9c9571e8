/*
 * arena.c - bump allocation from a chain of chunks.
 *
 * Each chunk the arena mallocs starts with a `struct arena_chunk` header that
 * links it into a singly-linked list, so arena_destroy() can free them all.
 * Allocation is a pointer bump within the current chunk; when a request does
 * not fit, a new chunk becomes current and the tail of the old one is
 * abandoned (its waste is bounded by the largest request, and the pools
 * request one slab size).
 */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

struct arena_chunk {
    struct arena_chunk *next;
    size_t size;
};

void arena_init(struct arena *a, void *buf, size_t size, size_t chunk_size)
{
    a->cur = buf;
    a->end = buf ? (char *)buf + size : NULL;
    a->chunks = NULL;
    a->chunk_size = chunk_size;
    a->bytes_reserved = 0;
    a->bytes_used = 0;
}

static inline char *align_up(char *p, size_t align)
{
    uintptr_t v = (uintptr_t)p;
    return (char *)((v + (align - 1)) & ~(uintptr_t)(align - 1));
}

static int arena_grow(struct arena *a, size_t size, size_t align)
{
    size_t need = sizeof(struct arena_chunk) + size + align;
    size_t csize = a->chunk_size > need ? a->chunk_size : need;
    struct arena_chunk *c;

    if (a->chunk_size == 0)
        return -1;
    c = malloc(csize);
    if (!c)
        return -1;
    c->next = a->chunks;
    c->size = csize;
    a->chunks = c;
    a->bytes_reserved += csize;
    a->cur = (char *)(c + 1);
    a->end = (char *)c + csize;
    return 0;
}

void *arena_alloc(struct arena *a, size_t size, size_t align)
{
    char *p;

    ENG_ASSERT(align && (align & (align - 1)) == 0);
    p = a->cur ? align_up(a->cur, align) : NULL;
    if (!p || p > a->end || (size_t)(a->end - p) < size) {
        if (arena_grow(a, size, align) != 0)
            return NULL;
        p = align_up(a->cur, align);
    }
    a->bytes_used += (size_t)(p - a->cur) + size;
    a->cur = p + size;
    return p;
}

void arena_destroy(struct arena *a)
{
    struct arena_chunk *c = a->chunks;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
#if ENG_DEBUG >= 1
    memset(a, 0xff, sizeof(*a));
#else
    a->chunks = NULL;
    a->cur = a->end = NULL;
#endif
}
