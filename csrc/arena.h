/*
 * arena.h - bump allocator that hands out large, aligned, never-freed blocks.
 *
 * The arena serves the node pools and other long-lived structures. Memory is
 * released all at once by arena_destroy(); nothing is freed piecemeal.
 */
#ifndef ENG_ARENA_H
#define ENG_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
    char *cur;                  /* next free byte of the current chunk */
    char *end;                  /* end of the current chunk */
    struct arena_chunk *chunks; /* chunks this arena malloc'ed, newest first */
    size_t chunk_size;          /* size of each new chunk; 0 = never grow */
    size_t bytes_reserved;      /* malloc'ed by the arena, headers included */
    size_t bytes_used;          /* handed out, alignment padding included */
};

/*
 * Start with the caller's buffer `buf` of `size` bytes (may be NULL/0), which
 * the arena never frees, and grow by malloc'ed chunks of `chunk_size` bytes
 * (0: never grow). Can't fail.
 */
void arena_init(struct arena *a, void *buf, size_t size, size_t chunk_size);

/*
 * Return `size` bytes aligned to `align` (a power of two), or NULL when the
 * arena cannot grow. A request larger than chunk_size gets a chunk of its own.
 */
void *arena_alloc(struct arena *a, size_t size, size_t align);

/* Free every chunk. The arena must not be used again until arena_init(). */
void arena_destroy(struct arena *a);

#endif /* ENG_ARENA_H */
