/*
 * orders.c - the Ledger's open orders: order id -> its owner (a Link), its
 * instrument and client order id; and each Link's own list of them, in the
 * order it came to own them.
 *
 * Why not dicts keyed by int: a lookup in a large one reads three lines
 * from all over the heap (the index, the entry, the key's int object), and
 * every routed event made several (the owner, the client order id, the
 * forgetting); in a closed loop with a few hundred thousand open orders
 * they were the event loop's largest cost. Here the index (idmap.c) holds
 * the id beside its entry, and the entry holds everything.
 *
 * Entries are allocated one by one and never move, so a Link's list runs
 * through them. A Link with orders is held (one reference, whatever their
 * number), so it outlives them whatever order the cyclic collector clears
 * things in; and the collector's walks never visit an order (the Ledger
 * visits the Links it holds through its dict of them: an owner is always
 * attached).
 */
#include "server.h"

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
    return srv_idmap_find(&t->index, oid);
}

struct srv_open_order *srv_orders_add(struct srv_orders *t, uint64_t oid, srv_link *link, uint32_t inst,
                                 PyObject *coid)
{
    struct srv_open_order *o = PyMem_Malloc(sizeof(*o));
    void *was;

    if (!o) {
        PyErr_NoMemory();
        return NULL;
    }
    if (srv_idmap_put(&t->index, oid, o, &was) < 0) {
        PyMem_Free(o);
        return NULL;
    }
    o->oid = oid;
    o->inst = inst;
    o->coid = Py_NewRef(coid);
    orders_hold(o, link);
    return o;
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
    srv_idmap_remove(&t->index, o->oid);
    orders_free(o);
}

static void orders_drop(void *o, void *arg)
{
    (void)arg;
    orders_free(o);
}

void srv_orders_clear(struct srv_orders *t)
{
    srv_idmap_clear(&t->index, orders_drop, NULL);
}

/* (instrument, client order id): the client order id held before the tuple
 * is made, as making it can run a collection, whose finalizers may forget
 * the order it was read from. */
static PyObject *orders_info(uint32_t inst, PyObject *coid)
{
    return Py_BuildValue("(kN)", (unsigned long)inst, Py_NewRef(coid));
}

PyObject *srv_order_info(const struct srv_open_order *o)
{
    return orders_info(o->inst, o->coid);
}

int srv_orders_copy(srv_link *link, struct srv_order_copies *c)
{
    size_t need = c->n + (size_t)link->n_orders;

    if (need > c->cap) {
        struct srv_order_copy *items = PyMem_Realloc(c->items, need * sizeof(*items));

        if (!items) {
            PyErr_NoMemory();
            return -1;
        }
        c->items = items;
        c->cap = need;
    }
    for (struct list_node *n = link->orders.next; n != &link->orders; n = n->next) {
        struct srv_open_order *o = eng_container_of(n, struct srv_open_order, in_link);

        c->items[c->n++] = (struct srv_order_copy){o->oid, o->inst, Py_NewRef(o->coid)};
    }
    return 0;
}

void srv_orders_copies_free(struct srv_order_copies *c)
{
    for (size_t i = 0; i < c->n; i++)
        Py_DECREF(c->items[i].coid);
    PyMem_Free(c->items);
    *c = (struct srv_order_copies){0};
}

PyObject *srv_order_copies_dict(const struct srv_order_copies *c)
{
    PyObject *out = PyDict_New();

    for (size_t i = 0; out && i < c->n; i++) {
        PyObject *key = PyLong_FromUnsignedLongLong(c->items[i].oid);
        PyObject *info = key ? orders_info(c->items[i].inst, c->items[i].coid) : NULL;

        if (!info || PyDict_SetItem(out, key, info) < 0)
            Py_CLEAR(out);
        Py_XDECREF(key);
        Py_XDECREF(info);
    }
    return out;
}

PyObject *srv_link_orders(srv_link *link)
{
    struct srv_order_copies c = {0};
    PyObject *out = srv_orders_copy(link, &c) == 0 ? srv_order_copies_dict(&c) : NULL;

    srv_orders_copies_free(&c);
    return out;
}

PyObject *srv_link_order_ids(srv_link *link, int64_t inst)
{
    /* The ids copied before any Python object is made: making one can run
     * a collection, whose finalizers may change the session's orders. */
    uint64_t *ids = PyMem_Malloc(((size_t)link->n_orders + 1) * sizeof(*ids));
    Py_ssize_t n = 0;
    PyObject *out;

    if (!ids)
        return PyErr_NoMemory();
    for (struct list_node *at = link->orders.next; at != &link->orders; at = at->next) {
        const struct srv_open_order *o = eng_container_of(at, struct srv_open_order, in_link);

        if (inst < 0 || o->inst == inst)
            ids[n++] = o->oid;
    }
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *id = PyLong_FromUnsignedLongLong(ids[i]);

        if (!id)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, id);
    }
    PyMem_Free(ids);
    return out;
}

static const char *orders_check(uint64_t oid, void *entry, void *arg)
{
    const struct srv_open_order *o = entry;

    (void)arg;
    if (o->oid != oid)
        return "a slot's id is not its entry's";
    if (o->link->n_orders <= 0 || o->in_link.next->prev != &o->in_link || o->in_link.prev->next != &o->in_link)
        return "an entry is not on its link's list";
    return NULL;
}

const char *srv_orders_verify(struct srv_orders *t)
{
    return srv_idmap_verify(&t->index, orders_check, NULL);
}
