/*
 * orders.c - the Ledger's open orders: order id -> its owner (a Link), its
 * instrument and client order id; and each Link's own list of them, in the
 * order it came to own them.
 *
 * Why not dicts keyed by int: a lookup in a large one reads three lines
 * from all over the heap (the index, the entry, the key's int object), and
 * every routed event made several (the owner, the client order id, the
 * forgetting); in a closed loop with a few hundred thousand open orders
 * they were the event loop's largest cost. Here a probe reads a slot that
 * holds the id beside its entry, and the entry holds everything.
 *
 * The index is split in 2**SRV_ORDER_SHARD_BITS tables by the top bits of
 * a Fibonacci hash of the id (so consecutive ids, and ids a power of two
 * apart, spread over all of them), each open addressing with linear
 * probing on the next bits, at most half full, removal by backward shift
 * (no tombstones). A table grows by moving all its slots at once; a shard
 * holds a 256th of the orders, so that never stalls the event loop long
 * (one dict of 61,000 owners took 3.7 ms). Entries are allocated one by
 * one and never move, so a Link's list runs through them. A Link with
 * orders is held (one reference, whatever their number), so it outlives
 * them whatever order the cyclic collector clears things in; and the
 * collector's walks never visit an order (the Ledger visits the Links it
 * holds through its dict of them: an owner is always attached).
 */
#include "server.h"

enum { ORDERS_MIN_SLOTS = 16 };

static uint64_t orders_hash(uint64_t oid)
{
    return oid * 0x9E3779B97F4A7C15ull;
}

static struct srv_open_shard *orders_shard(struct srv_orders *t, uint64_t h)
{
    return &t->shards[h >> (64 - SRV_ORDER_SHARD_BITS)];
}

/* The slot where a probe for hash `h` starts: the bits below the shard's. */
static size_t orders_home(const struct srv_open_shard *s, uint64_t h)
{
    return (size_t)((h << SRV_ORDER_SHARD_BITS) >> s->shift);
}

/* The slot holding `oid`, or the free slot where it would go. */
static struct srv_open_slot *orders_probe(const struct srv_open_shard *s, uint64_t h, uint64_t oid)
{
    size_t mask = s->cap - 1, i = orders_home(s, h);

    while (s->slots[i].order && s->slots[i].oid != oid)
        i = (i + 1) & mask;
    return &s->slots[i];
}

static int orders_grow(struct srv_open_shard *s)
{
    size_t cap = s->cap ? 2 * s->cap : ORDERS_MIN_SLOTS;
    struct srv_open_shard grown = {.cap = cap, .used = s->used,
                                    .shift = (uint8_t)(64 - __builtin_ctzll((unsigned long long)cap))};

    grown.slots = PyMem_Calloc(cap, sizeof(*grown.slots));
    if (!grown.slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].order)
            *orders_probe(&grown, orders_hash(s->slots[i].oid), s->slots[i].oid) = s->slots[i];
    PyMem_Free(s->slots);
    *s = grown;
    return 0;
}

/* On link's list, the Link held while it has orders. */
static void orders_hold(struct srv_open_order *o, srv_link *link)
{
    if (link->n_orders++ == 0)
        Py_INCREF(link);
    o->link = link;
    list_add_tail(&o->in_link, &link->orders);
}

/* Off its link's list; the Link let go when that was its last order (last:
 * its deallocation may run Python code). */
static void orders_unhold(struct srv_open_order *o)
{
    srv_link *link = o->link;

    list_del(&o->in_link);
    if (--link->n_orders == 0)
        Py_DECREF(link);
}

struct srv_open_order *srv_orders_find(struct srv_orders *t, uint64_t oid)
{
    uint64_t h = orders_hash(oid);
    struct srv_open_shard *s = orders_shard(t, h);

    return s->cap ? orders_probe(s, h, oid)->order : NULL;
}

struct srv_open_order *srv_orders_add(struct srv_orders *t, uint64_t oid, srv_link *link, uint32_t inst,
                                 PyObject *coid)
{
    uint64_t h = orders_hash(oid);
    struct srv_open_shard *s = orders_shard(t, h);
    struct srv_open_slot *slot;
    struct srv_open_order *o;

    if (2 * (s->used + 1) > s->cap && orders_grow(s) < 0)
        return NULL;
    if (!(o = PyMem_Malloc(sizeof(*o)))) {
        PyErr_NoMemory();
        return NULL;
    }
    o->oid = oid;
    o->inst = inst;
    o->coid = Py_NewRef(coid);
    orders_hold(o, link);
    slot = orders_probe(s, h, oid);
    slot->oid = oid;
    slot->order = o;
    s->used++;
    t->count++;
    return o;
}

/* Empty slot `i`, moving back each later entry of its run that a probe
 * from its home would otherwise no longer reach. */
static void orders_unslot(struct srv_open_shard *s, size_t i)
{
    size_t mask = s->cap - 1;

    for (size_t j = (i + 1) & mask; s->slots[j].order; j = (j + 1) & mask) {
        size_t home = orders_home(s, orders_hash(s->slots[j].oid));

        if (((j - home) & mask) >= ((j - i) & mask)) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i].order = NULL;
}

void srv_orders_move(struct srv_open_order *o, srv_link *link)
{
    srv_link *was = o->link;

    Py_INCREF(was); /* not let go before the order is link's */
    orders_unhold(o);
    orders_hold(o, link);
    Py_DECREF(was);
}

/* Off its link's list and freed. Its references dropped last: either may
 * run Python code (a str's or a Link's deallocation). */
static void orders_free(struct srv_open_order *o)
{
    PyObject *coid = o->coid;

    orders_unhold(o);
    PyMem_Free(o);
    Py_DECREF(coid);
}

void srv_orders_remove(struct srv_orders *t, struct srv_open_order *o)
{
    uint64_t h = orders_hash(o->oid);
    struct srv_open_shard *s = orders_shard(t, h);
    struct srv_open_slot *slot = orders_probe(s, h, o->oid);

    orders_unslot(s, (size_t)(slot - s->slots));
    s->used--;
    t->count--;
    orders_free(o);
}

void srv_orders_clear(struct srv_orders *t)
{
    for (size_t k = 0; k < SRV_ORDER_SHARDS; k++) {
        /* Taken out whole first: what the deallocations run sees an empty shard. */
        struct srv_open_shard s = t->shards[k];

        t->shards[k] = (struct srv_open_shard){0};
        t->count -= s.used;
        for (size_t i = 0; i < s.cap; i++)
            if (s.slots[i].order)
                orders_free(s.slots[i].order);
        PyMem_Free(s.slots);
    }
}

PyObject *srv_order_info(const struct srv_open_order *o)
{
    return Py_BuildValue("(kO)", (unsigned long)o->inst, o->coid);
}

PyObject *srv_link_orders(srv_link *link)
{
    PyObject *out = PyDict_New();

    for (struct list_node *n = link->orders.next; out && n != &link->orders; n = n->next) {
        struct srv_open_order *o = eng_container_of(n, struct srv_open_order, in_link);
        PyObject *key = PyLong_FromUnsignedLongLong(o->oid), *info = key ? srv_order_info(o) : NULL;

        if (!info || PyDict_SetItem(out, key, info) < 0)
            Py_CLEAR(out);
        Py_XDECREF(key);
        Py_XDECREF(info);
    }
    return out;
}

const char *srv_orders_verify(struct srv_orders *t)
{
    size_t count = 0;

    for (size_t k = 0; k < SRV_ORDER_SHARDS; k++) {
        struct srv_open_shard *s = &t->shards[k];
        size_t used = 0, mask = s->cap - 1;

        if (s->cap && (2 * s->used > s->cap || s->cap != (size_t)1 << (64 - s->shift)))
            return "a shard is over half full, or its shift does not match its size";
        for (size_t i = 0; i < s->cap; i++) {
            const struct srv_open_order *o = s->slots[i].order;
            uint64_t h;

            if (!o)
                continue;
            used++;
            h = orders_hash(s->slots[i].oid);
            if (o->oid != s->slots[i].oid || orders_shard(t, h) != s)
                return "a slot's id is not its entry's, or it is in another id's shard";
            for (size_t j = orders_home(s, h); j != i; j = (j + 1) & mask)
                if (!s->slots[j].order)
                    return "a free slot lies between an entry and its home: a probe would not reach it";
            if (o->link->n_orders <= 0 || o->in_link.next->prev != &o->in_link ||
                o->in_link.prev->next != &o->in_link)
                return "an entry is not on its link's list";
        }
        if (used != s->used)
            return "a shard's count of entries is wrong";
        count += used;
    }
    return count == t->count ? NULL : "the count of entries is wrong";
}
