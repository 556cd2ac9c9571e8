/*
 * idmap.c - an index by a 64-bit id (an order id, an account): id -> a
 * pointer, for the Ledger's open orders (orders.c) and OrderStatus's open
 * records and accounts (status.c).
 *
 * Why not a dict keyed by int: a lookup in a large one reads three lines
 * from all over the heap (the index, the entry, the key's int object); here
 * a probe reads a slot that holds the id beside its pointer.
 *
 * The index is split in 2**SRV_IDMAP_SHARD_BITS tables by the top bits of a
 * Fibonacci hash of the id (so consecutive ids, and ids a power of two
 * apart, spread over all of them), each open addressing with linear probing
 * on the next bits, at most half full, removal by backward shift (no
 * tombstones). A table grows by moving all its slots at once; a shard holds
 * a 256th of the entries, so that never stalls the event loop long (one
 * dict of 61,000 owners took 3.7 ms). What a pointer points to is the
 * caller's: the index never follows one.
 */
#include "server.h"

enum { IDMAP_MIN_SLOTS = 16 };

static uint64_t idmap_hash(uint64_t key)
{
    return key * 0x9E3779B97F4A7C15ull;
}

static struct srv_idmap_shard *idmap_shard(const struct srv_idmap *m, uint64_t h)
{
    return (struct srv_idmap_shard *)&m->shards[h >> (64 - SRV_IDMAP_SHARD_BITS)];
}

/* The slot where a probe for hash `h` starts: the bits below the shard's. */
static size_t idmap_home(const struct srv_idmap_shard *s, uint64_t h)
{
    return (size_t)((h << SRV_IDMAP_SHARD_BITS) >> s->shift);
}

/* The slot holding `key`, or the free slot where it would go. */
static struct srv_idmap_slot *idmap_probe(const struct srv_idmap_shard *s, uint64_t h, uint64_t key)
{
    size_t mask = s->cap - 1, i = idmap_home(s, h);

    while (s->slots[i].value && s->slots[i].key != key)
        i = (i + 1) & mask;
    return &s->slots[i];
}

static int idmap_grow(struct srv_idmap_shard *s)
{
    size_t cap = s->cap ? 2 * s->cap : IDMAP_MIN_SLOTS;
    struct srv_idmap_shard grown = {.cap = cap, .used = s->used,
                                    .shift = (uint8_t)(64 - __builtin_ctzll((unsigned long long)cap))};

    grown.slots = PyMem_Calloc(cap, sizeof(*grown.slots));
    if (!grown.slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].value)
            *idmap_probe(&grown, idmap_hash(s->slots[i].key), s->slots[i].key) = s->slots[i];
    PyMem_Free(s->slots);
    *s = grown;
    return 0;
}

void *srv_idmap_find(const struct srv_idmap *m, uint64_t key)
{
    uint64_t h = idmap_hash(key);
    const struct srv_idmap_shard *s = idmap_shard(m, h);

    return s->cap ? idmap_probe(s, h, key)->value : NULL;
}

int srv_idmap_put(struct srv_idmap *m, uint64_t key, void *value, void **was)
{
    uint64_t h = idmap_hash(key);
    struct srv_idmap_shard *s = idmap_shard(m, h);
    struct srv_idmap_slot *slot = s->cap ? idmap_probe(s, h, key) : NULL;

    *was = slot ? slot->value : NULL;
    if (*was) {
        slot->value = value;
        return 0;
    }
    if (2 * (s->used + 1) > s->cap) {
        if (idmap_grow(s) < 0)
            return -1;
        slot = idmap_probe(s, h, key);
    }
    slot->key = key;
    slot->value = value;
    s->used++;
    m->count++;
    return 0;
}

/* Empty slot `i`, moving back each later entry of its run that a probe
 * from its home would otherwise no longer reach. */
static void idmap_unslot(struct srv_idmap_shard *s, size_t i)
{
    size_t mask = s->cap - 1;

    for (size_t j = (i + 1) & mask; s->slots[j].value; j = (j + 1) & mask) {
        size_t home = idmap_home(s, idmap_hash(s->slots[j].key));

        if (((j - home) & mask) >= ((j - i) & mask)) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i].value = NULL;
}

void *srv_idmap_remove(struct srv_idmap *m, uint64_t key)
{
    uint64_t h = idmap_hash(key);
    struct srv_idmap_shard *s = idmap_shard(m, h);
    struct srv_idmap_slot *slot;
    void *value;

    if (!s->cap || !(value = (slot = idmap_probe(s, h, key))->value))
        return NULL;
    idmap_unslot(s, (size_t)(slot - s->slots));
    s->used--;
    m->count--;
    return value;
}

void srv_idmap_clear(struct srv_idmap *m, void (*drop)(void *value, void *arg), void *arg)
{
    for (size_t k = 0; k < SRV_IDMAP_SHARDS; k++) {
        /* Taken out whole first: what `drop` runs sees an empty shard. */
        struct srv_idmap_shard s = m->shards[k];

        m->shards[k] = (struct srv_idmap_shard){0};
        m->count -= s.used;
        for (size_t i = 0; i < s.cap; i++)
            if (s.slots[i].value)
                drop(s.slots[i].value, arg);
        PyMem_Free(s.slots);
    }
}

const char *srv_idmap_verify(const struct srv_idmap *m, const char *(*check)(uint64_t key, void *value, void *arg),
                             void *arg)
{
    size_t count = 0;

    for (size_t k = 0; k < SRV_IDMAP_SHARDS; k++) {
        const struct srv_idmap_shard *s = &m->shards[k];
        size_t used = 0, mask = s->cap - 1;

        if (s->cap && (2 * s->used > s->cap || s->cap != (size_t)1 << (64 - s->shift)))
            return "a shard is over half full, or its shift does not match its size";
        for (size_t i = 0; i < s->cap; i++) {
            const char *wrong;
            uint64_t h;

            if (!s->slots[i].value)
                continue;
            used++;
            h = idmap_hash(s->slots[i].key);
            if (idmap_shard(m, h) != s)
                return "a slot's id is in another id's shard";
            for (size_t j = idmap_home(s, h); j != i; j = (j + 1) & mask)
                if (!s->slots[j].value)
                    return "a free slot lies between an entry and its home: a probe would not reach it";
            if ((wrong = check(s->slots[i].key, s->slots[i].value, arg)) != NULL)
                return wrong;
        }
        if (used != s->used)
            return "a shard's count of entries is wrong";
        count += used;
    }
    return count == m->count ? NULL : "the count of entries is wrong";
}

PyObject *srv_idmap_sizes(const struct srv_idmap *m)
{
    PyObject *sizes = PyList_New(SRV_IDMAP_SHARDS);

    for (size_t k = 0; sizes && k < SRV_IDMAP_SHARDS; k++) {
        PyObject *n = PyLong_FromSize_t(m->shards[k].used);

        if (!n)
            Py_CLEAR(sizes);
        else
            PyList_SET_ITEM(sizes, (Py_ssize_t)k, n);
    }
    return sizes;
}
