/*
 * ids.c - Robin Hood insert, backward-shift erase, growth and verify of the
 * order-id index (see ids.h for the layout and why).
 */
#include "ids.h"

#include <stdlib.h>

enum { IDS_MIN_CAPACITY = 64 };

static int ids_alloc(struct ids *t, uint64_t capacity)
{
    struct ids_slot *slots = calloc(capacity, sizeof(*slots));
    if (!slots)
        return -1;
    t->slots = slots;
    t->mask = (uint32_t)(capacity - 1);
    t->count = 0;
    t->shift = 32;
    while (capacity > 1) {
        capacity >>= 1;
        t->shift--;
    }
    return 0;
}

int ids_init(struct ids *t, uint32_t expected, uint64_t seed)
{
    uint64_t cap = IDS_MIN_CAPACITY;

    t->seed = seed;
    while (ids_max_load(t, cap) < expected)
        cap *= 2;
    return ids_alloc(t, cap);
}

void ids_destroy(struct ids *t)
{
    free(t->slots);
    t->slots = NULL;
    t->count = 0;
}

static void insert_slot(struct ids *t, struct ids_slot cur)
{
    uint32_t pos = ids_home(t, cur.key);

    for (uint32_t dist = 0;; dist++, pos = (pos + 1) & t->mask) {
        struct ids_slot *s = &t->slots[pos];
        uint32_t sdist;
        if (s->handle == 0) {
            *s = cur;
            t->count++;
            return;
        }
        /* Take the place of a resident closer to its home; it moves on. */
        sdist = ids_dist(t, pos, s->key);
        if (sdist < dist) {
            struct ids_slot tmp = *s;
            *s = cur;
            cur = tmp;
            dist = sdist;
        }
    }
}

void ids_insert(struct ids *t, uint64_t id, uint32_t handle)
{
    ENG_ASSERT(handle != 0 && t->count < t->mask);
    insert_slot(t, (struct ids_slot){handle, ids_key(t, id)});
}

void ids_erase(struct ids *t, uint64_t id, uint32_t handle)
{
    uint32_t pos = ids_home(t, ids_key(t, id));

    while (t->slots[pos].handle != handle) {
        ENG_ASSERT(t->slots[pos].handle != 0);
        pos = (pos + 1) & t->mask;
    }
    /* Shift the displaced entries after it back by one. */
    for (;;) {
        uint32_t next = (pos + 1) & t->mask;
        const struct ids_slot *n = &t->slots[next];
        if (n->handle == 0 || ids_dist(t, next, n->key) == 0)
            break;
        t->slots[pos] = *n;
        pos = next;
    }
    t->slots[pos] = (struct ids_slot){0, 0};
    t->count--;
}

int ids_grow(struct ids *t)
{
    struct ids old = *t;
    uint64_t cap = (uint64_t)t->mask + 1;

    if (cap >= ((uint64_t)1 << 32))
        return -1;
    if (ids_alloc(t, cap * 2) != 0) {
        *t = old;
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++)
        if (old.slots[i].handle)
            insert_slot(t, old.slots[i]);
    free(old.slots);
    return 0;
}

bool ids_verify(const struct ids *t, const char **why)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i <= t->mask; i++) {
        const struct ids_slot *s = &t->slots[i];
        uint32_t pos = (uint32_t)i, dist, prev_pos = (pos - 1) & t->mask;
        const struct ids_slot *prev = &t->slots[prev_pos];
        if (!s->handle)
            continue;
        n++;
        dist = ids_dist(t, pos, s->key);
        if (dist > 0 && (!prev->handle || ids_dist(t, prev_pos, prev->key) + 1 < dist)) {
            *why = "ids: entry displaced past a gap or out of Robin Hood order";
            return false;
        }
    }
    if (n != t->count) {
        *why = "ids: count does not match the occupied slots";
        return false;
    }
    if ((uint64_t)t->count > ids_max_load(t, (uint64_t)t->mask + 1)) {
        *why = "ids: fuller than its maximum load";
        return false;
    }
    return true;
}
