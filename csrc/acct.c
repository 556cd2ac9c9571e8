/*
 * acct.c - each account's resting orders (see acct.h).
 */
#include "acct.h"

#include <stdlib.h>
#include <string.h>

enum { ACCT_INITIAL_SLOTS = 16, ACCT_INITIAL_ENTRIES = 16 };

void acct_init(struct acct *t)
{
    memset(t, 0, sizeof(*t));
    t->max_seq = UINT32_MAX;
    t->max_slots = ACCT_MAX_SLOTS;
}

void acct_destroy(struct acct *t)
{
    for (uint32_t i = 0; t->slots && i <= t->mask; i++)
        free(t->slots[i].slots);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static inline uint32_t home_of(const struct acct *t, uint32_t account)
{
    return (uint32_t)(((uint64_t)account * 0x9E3779B97F4A7C15ull) >> 32) & t->mask;
}

static uint32_t slot_for(const struct acct *t, uint32_t account)
{
    uint32_t i = home_of(t, account);

    while (t->slots[i].used && t->slots[i].account != account)
        i = (i + 1) & t->mask;
    return i;
}

const struct acct_list *acct_find(const struct acct *t, uint32_t account)
{
    const struct acct_list *l;

    if (!t->slots)
        return NULL;
    l = &t->slots[slot_for(t, account)];
    return l->used && l->tracked ? l : NULL;
}

static int grow_table(struct acct *t)
{
    uint32_t cap = t->slots ? (t->mask + 1) * 2 : ACCT_INITIAL_SLOTS;
    uint32_t old_cap = t->slots ? t->mask + 1 : 0;
    struct acct_list *old = t->slots;
    struct acct_list *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return -1;
    t->slots = slots;
    t->mask = cap - 1;
    t->cached = false;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].used)
            slots[slot_for(t, old[i].account)] = old[i];
    free(old);
    return 0;
}

static int grow_list(struct acct_list *l, uint32_t max)
{
    uint32_t cap = l->cap >= max / 2 ? max : l->cap ? l->cap * 2 : ACCT_INITIAL_ENTRIES;
    struct acct_slot *slots;

    if (l->cap >= max)
        return -1;
    slots = realloc(l->slots, (size_t)cap * sizeof(*slots));
    if (!slots)
        return -1;
    l->slots = slots;
    l->cap = cap;
    return 0;
}

struct seq_index {
    uint32_t seq;
    uint32_t slot;
};

static int by_seq(const void *pa, const void *pb)
{
    const struct seq_index *a = pa, *b = pb;

    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Number the orders of `l` 1, 2, ... in their order. -1 when out of memory. */
static int renumber(struct acct_list *l)
{
    struct seq_index *order = malloc((size_t)l->live * sizeof(*order));
    uint32_t n = 0;

    if (!order)
        return -1;
    for (uint32_t i = 0; i < l->len; i++)
        if (l->slots[i].handle)
            order[n++] = (struct seq_index){l->slots[i].seq, i};
    qsort(order, n, sizeof(*order), by_seq);
    for (uint32_t k = 0; k < n; k++)
        l->slots[order[k].slot].seq = k + 1;
    l->seq = n;
    free(order);
    return 0;
}

/* Stop tracking the account of `l`: its orders lose their slots. The
   table keeps its entry (probes pass it), untracked. */
static void untrack(struct acct *t, struct pool *orders, struct acct_list *l)
{
    for (uint32_t i = 0; i < l->len; i++)
        if (l->slots[i].handle)
            ((struct order *)pool_at(orders, l->slots[i].handle))->acct_slot = ACCT_NONE;
    t->live -= l->live;
    free(l->slots);
    *l = (struct acct_list){.account = l->account, .used = true};
    t->cached = false;
}

int acct_make_room(struct acct *t, struct pool *orders, struct acct_list *l, struct acct_list **out)
{
    if (!l->free && l->len == l->cap && l->cap >= t->max_slots) {
        untrack(t, orders, l);
        *out = NULL;
        return 0;
    }
    if (l->seq >= t->max_seq && renumber(l) != 0)
        return -1;
    if (!l->free && l->len == l->cap && grow_list(l, t->max_slots) != 0)
        return -1;
    return l->seq < t->max_seq ? 0 : -1;
}

struct acct_list *acct_track(struct acct *t, uint32_t account, uint32_t n)
{
    struct acct_slot *slots = NULL;
    uint32_t cap = ACCT_INITIAL_ENTRIES;
    struct acct_list *l;

    if (n > t->max_slots)
        return NULL;
    while (cap < n)
        cap = cap >= t->max_slots / 2 ? t->max_slots : cap * 2;
    if (!(slots = malloc((size_t)cap * sizeof(*slots))))
        return NULL;
    /* An account tracked before (it had too many orders) has its entry. */
    l = t->slots ? &t->slots[slot_for(t, account)] : NULL;
    if ((!l || !l->used) && (!t->slots || (t->count + 1) * 2 > t->mask + 1) && grow_table(t) != 0) {
        free(slots);
        return NULL;
    }
    l = &t->slots[slot_for(t, account)];
    t->count += !l->used;
    *l = (struct acct_list){.slots = slots, .account = account, .cap = cap, .used = true, .tracked = true};
    t->cached = false;
    return l;
}

bool acct_holds(const struct acct *t, const struct order *o)
{
    const struct acct_list *l = acct_find(t, o->account);

    return l && o->acct_slot < l->len && l->slots[o->acct_slot].handle == o->handle;
}

size_t acct_bytes(const struct acct *t)
{
    size_t bytes = t->slots ? (size_t)(t->mask + 1) * sizeof(*t->slots) : 0;

    for (uint32_t i = 0; t->slots && i <= t->mask; i++)
        bytes += (size_t)t->slots[i].cap * sizeof(struct acct_slot);
    return bytes;
}

static bool list_valid(const struct acct_list *l, const struct pool *orders, const char **why)
{
    uint32_t in_use = 0, free = 0;

    if (l->len > l->cap || l->cap > ACCT_MAX_SLOTS) {
        *why = "acct: a list is longer than its room";
        return false;
    }
    for (uint32_t i = 0; i < l->len; i++) {
        const struct acct_slot *s = &l->slots[i];
        const struct order *o;
        if (!s->handle)
            continue;
        o = pool_at(orders, s->handle);
        if (o->handle != s->handle || o->account != l->account || o->acct_slot != i) {
            *why = "acct: a slot names an order that does not name it";
            return false;
        }
        if (s->seq == 0 || s->seq > l->seq) {
            *why = "acct: a join number past the list's last";
            return false;
        }
        in_use++;
    }
    if (in_use != l->live) {
        *why = "acct: a list's live count is wrong";
        return false;
    }
    /* The free chain: every other slot below len, once (the count bounds it). */
    for (uint32_t f = l->free; f; f = l->slots[f - 1].seq) {
        if (f > l->len || l->slots[f - 1].handle || ++free > l->len - in_use) {
            *why = "acct: the free slots are not a chain of the others";
            return false;
        }
    }
    if (free != l->len - in_use) {
        *why = "acct: a free slot is out of the chain";
        return false;
    }
    return true;
}

bool acct_verify(const struct acct *t, const struct pool *orders, const char **why)
{
    uint64_t live = 0, lists = 0;

    for (uint32_t i = 0; t->slots && i <= t->mask; i++) {
        const struct acct_list *l = &t->slots[i];

        if (!l->used)
            continue;
        lists++;
        if (&t->slots[slot_for(t, l->account)] != l) {
            *why = "acct: a list is not found by its account";
            return false;
        }
        if (!l->tracked) {
            if (l->slots || l->len || l->cap || l->live || l->free || l->seq) {
                *why = "acct: an account not tracked keeps a list";
                return false;
            }
            continue;
        }
        if (!list_valid(l, orders, why))
            return false;
        live += l->live;
    }
    if (lists != t->count || live != t->live) {
        *why = "acct: the table's counts are wrong";
        return false;
    }
    if (t->cached && t->last != acct_find(t, t->last_account)) {
        *why = "acct: the account looked up last has another list";
        return false;
    }
    return true;
}
