/*
 * ledger.c - Ledger: the server's per-order bookkeeping; CommandBuffer: the
 * engine commands queued for the engine thread.
 *
 * The Ledger knows every session's Link by id, the Link that owns each open
 * order, and per account the orders open and the new orders in flight (sent,
 * not answered yet: a burst cannot slip past the open-order limit). The
 * Intake and the Router change it as requests and events pass; Python asks
 * it through the methods below.
 *
 * A CommandBuffer holds `struct runner_cmd` records in memory that never
 * moves; Python's CommandQueue pushes them to the runner through the buffer
 * protocol, and marks what went in with sent().
 */
#include "server.h"

#include <structmember.h>
#include <string.h>

/* ---- counts per account ------------------------------------------------- */

enum { LEDGER_COUNTS_MIN = 64 };

/* Fibonacci hashing: the product's high bits, which every bit of the
 * account moves (its low bits would follow the account's low bits alone:
 * accounts k << 20 would all share one slot). */
static size_t ledger_counts_home(uint32_t account, size_t cap)
{
    unsigned bits = (unsigned)__builtin_ctzll((unsigned long long)cap); /* cap: a power of two, >= 64 */

    return (size_t)(((uint64_t)account * 0x9E3779B97F4A7C15u) >> (64 - bits));
}

static struct srv_account_counts *ledger_counts_probe(struct srv_account_counts *slots, size_t cap,
                                                     uint32_t account)
{
    size_t i = ledger_counts_home(account, cap);

    while (slots[i].used && slots[i].account != account)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int ledger_counts_grow(srv_ledger *l)
{
    size_t cap = l->counts_cap ? l->counts_cap * 2 : LEDGER_COUNTS_MIN;
    struct srv_account_counts *slots = PyMem_Calloc(cap, sizeof(*slots));

    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < l->counts_cap; i++)
        if (l->counts[i].used)
            *ledger_counts_probe(slots, cap, l->counts[i].account) = l->counts[i];
    PyMem_Free(l->counts);
    l->counts = slots;
    l->counts_cap = cap;
    return 0;
}

struct srv_account_counts *srv_ledger_counts(srv_ledger *l, uint32_t account)
{
    struct srv_account_counts *c;

    if (l->counts_cap) {
        c = ledger_counts_probe(l->counts, l->counts_cap, account);
        if (c->used)
            return c;
    }
    /* A new account: room first (the table stays at most half full). */
    if (2 * (l->counts_used + 1) > l->counts_cap && ledger_counts_grow(l) < 0)
        return NULL;
    c = ledger_counts_probe(l->counts, l->counts_cap, account);
    c->account = account;
    c->used = 1;
    l->counts_used++;
    return c;
}

/* ---- the open orders ------------------------------------------------------ */

/* Whether link's open orders, if any, are l's: a Link attached to several
 * Ledgers owns orders in one of them at most. */
static int ledger_owns_from(srv_ledger *l, srv_link *link)
{
    struct srv_open_order *first;

    if (!link->n_orders)
        return 1;
    first = eng_container_of(link->orders.next, struct srv_open_order, in_link);
    return srv_orders_find(&l->orders, first->oid) == first;
}

/* 1, or 0 with ValueError when link's open orders are another Ledger's. */
static int ledger_holds(srv_ledger *l, srv_link *link)
{
    if (ledger_owns_from(l, link))
        return 1;
    PyErr_Format(PyExc_ValueError, "session %lu owns the orders of another Ledger", (unsigned long)link->sid);
    return 0;
}

/* The attached Link of the session id `sid` (borrowed), or NULL; *err set on error. */
static srv_link *ledger_link_of(srv_ledger *l, PyObject *sid, int *err)
{
    PyObject *v = PyDict_GetItemWithError(l->links, sid);

    if (!v && PyErr_Occurred())
        *err = 1;
    return (srv_link *)v;
}

struct srv_open_order *srv_ledger_order(srv_ledger *l, uint64_t oid)
{
    return srv_orders_find(&l->orders, oid);
}

srv_link *srv_ledger_owner(srv_ledger *l, uint64_t oid)
{
    struct srv_open_order *o = srv_orders_find(&l->orders, oid);

    return o ? o->link : NULL;
}

int srv_ledger_knows(const srv_ledger *l, uint64_t oid)
{
    return l->catch_up_seq || oid <= l->known_oid;
}

srv_link *srv_ledger_coid_holder(srv_ledger *l, srv_link *link, PyObject *coid, int *err)
{
    Py_ssize_t pos = 0;
    PyObject *sid, *v;

    /* Every session is looked at: a client order id is the account's, and
     * this is asked only when the session's own do not hold it. */
    while (PyDict_Next(l->links, &pos, &sid, &v)) {
        srv_link *other = (srv_link *)v;

        if (other == link || !other->logged_in || other->account != link->account)
            continue;
        /* A closed session's order in flight is nobody's once answered. */
        if (PyDict_GetItemWithError(other->coids, coid) ||
            (!PyErr_Occurred() && !other->closed && PyDict_GetItemWithError(other->flying, coid)))
            return other;
        if (PyErr_Occurred()) {
            *err = 1;
            return NULL;
        }
    }
    return NULL;
}

/* Drop link's client order id `coid` if it still names order `oid` (an id
 * may be used again once its order is finished). */
static int ledger_drop_coid(srv_link *link, PyObject *coid, uint64_t oid)
{
    PyObject *cur;

    if (coid == Py_None)
        return 0;
    cur = PyDict_GetItemWithError(link->coids, coid); /* an exact str: no Python code runs */
    if (!cur)
        return PyErr_Occurred() ? -1 : 0;
    if (PyLong_AsUnsignedLongLong(cur) != oid) /* an order id srv_ledger_own put there */
        return PyErr_Occurred() ? -1 : 0;
    return PyDict_DelItem(link->coids, coid);
}

/* Client order ids (exact strs or None) alike. */
static int ledger_same_coid(PyObject *a, PyObject *b)
{
    return a == b || (a != Py_None && b != Py_None && PyUnicode_Compare(a, b) == 0);
}

/* link's client order id `coid` (or None: nothing) names order `oid` now. */
static int ledger_set_coid(srv_link *link, PyObject *coid, uint64_t oid)
{
    PyObject *key;
    int rc;

    if (coid == Py_None)
        return 0;
    if (!(key = PyLong_FromUnsignedLongLong(oid)))
        return -1;
    rc = PyDict_SetItem(link->coids, coid, key);
    Py_DECREF(key);
    return rc;
}

int srv_ledger_own(srv_ledger *l, srv_link *link, uint64_t oid, uint32_t inst, PyObject *coid)
{
    struct srv_open_order *o = srv_orders_find(&l->orders, oid);

    if (!o) {
        if (!(o = srv_orders_add(&l->orders, oid, link, inst, coid)))
            return -1;
        if (ledger_set_coid(link, coid, oid) < 0) { /* taken out again, the exception kept */
            PyObject *type, *value, *tb;

            PyErr_Fetch(&type, &value, &tb);
            srv_orders_remove(&l->orders, o);
            PyErr_Restore(type, value, tb);
            return -1;
        }
        return 0;
    }
    /* Claimed from another session, or told again: the one step that can
       fail first, and then nothing has changed. The client order id it had
       names it no more (unless it is the same, in the same session). */
    if (ledger_set_coid(link, coid, oid) < 0)
        return -1;
    if (!(o->link == link && ledger_same_coid(o->coid, coid)) && ledger_drop_coid(o->link, o->coid, oid) < 0)
        PyErr_Clear(); /* then a stale id names a finished order, as a reused one may */
    if (o->link != link)
        srv_orders_move(o, link);
    o->inst = inst;
    Py_SETREF(o->coid, Py_NewRef(coid));
    return 0;
}

int srv_ledger_forget(srv_ledger *l, srv_link *link, uint64_t oid)
{
    struct srv_open_order *o = srv_orders_find(&l->orders, oid);

    if (!o || o->link != link)
        return 0;
    if (ledger_drop_coid(link, o->coid, oid) < 0)
        return -1;
    srv_orders_remove(&l->orders, o);
    return 0;
}

/* ---- the Ledger type ------------------------------------------------------ */

static int ledger_init(srv_ledger *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};

    if (self->links) {
        PyErr_SetString(PyExc_TypeError, "a Ledger is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Ledger", kwlist) || srv_meters_init(&self->meters) < 0)
        return -1;
    if (!(self->links = PyDict_New())) { /* the mark of an initialised Ledger */
        srv_meters_destroy(&self->meters);
        return -1;
    }
    return 0;
}

static int ledger_traverse(srv_ledger *self, visitproc visit, void *arg)
{
    PyObject *sid, *v;
    Py_ssize_t pos = 0;

    Py_VISIT(self->links);
    /* The Links its open orders hold (orders.c): every owner is attached
       (and may be to other Ledgers too, each visiting only its own). */
    while (self->links && PyDict_Next(self->links, &pos, &sid, &v))
        if (((srv_link *)v)->n_orders && ledger_owns_from(self, (srv_link *)v))
            Py_VISIT(v);
    for (size_t i = 0; i < self->n_listed; i++)
        Py_VISIT(self->listed[i]);
    return 0;
}

static int ledger_clear(srv_ledger *self)
{
    srv_orders_clear(&self->orders);
    Py_CLEAR(self->links);
    srv_outbox_release(self);
    return 0;
}

static void ledger_dealloc(srv_ledger *self)
{
    PyObject_GC_UnTrack(self);
    ledger_clear(self);
    PyMem_Free(self->counts);
    srv_meters_destroy(&self->meters);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Drop a dict's key if present. */
static int ledger_discard(PyObject *dict, PyObject *key)
{
    if (PyDict_DelItem(dict, key) == 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_KeyError))
        return -1;
    PyErr_Clear();
    return 0;
}

static int ledger_ready(srv_ledger *self)
{
    if (self->links)
        return 1;
    PyErr_SetString(PyExc_ValueError, "the Ledger is not initialised");
    return 0;
}

static srv_link *ledger_link_arg(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &srv_link_type) || !((srv_link *)o)->pending) {
        PyErr_SetString(PyExc_TypeError, "expected an initialised Link");
        return NULL;
    }
    return (srv_link *)o;
}

PyDoc_STRVAR(ledger_attach_doc, "attach($self, link, /)\n--\n\nA new session: its events are routed to `link`.");

static PyObject *ledger_attach(srv_ledger *self, PyObject *o)
{
    srv_link *link = ledger_link_arg(o);
    PyObject *cur;

    if (!link || !ledger_ready(self))
        return NULL;
    cur = PyDict_GetItemWithError(self->links, link->sid_key);
    if (cur && cur != o) {
        PyErr_Format(PyExc_ValueError, "another session %lu is attached already", (unsigned long)link->sid);
        return NULL;
    }
    if ((!cur && PyErr_Occurred()) || PyDict_SetItem(self->links, link->sid_key, o) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ledger_detach_doc, "detach($self, sid, /)\n--\n\n"
                                "Forget a closed session with nothing in flight (see Link.busy); ValueError\n"
                                "while it still owns open orders.");

static PyObject *ledger_detach(srv_ledger *self, PyObject *sid)
{
    srv_link *link;
    int err = 0;

    if (!ledger_ready(self))
        return NULL;
    if (!PyLong_CheckExact(sid)) { /* a key whose __eq__ runs code could give the session orders meanwhile */
        PyErr_Format(PyExc_TypeError, "detach: a session id is an int, not %.100s", Py_TYPE(sid)->tp_name);
        return NULL;
    }
    link = ledger_link_of(self, sid, &err);
    if (err)
        return NULL;
    if (link && link->n_orders) {
        PyErr_Format(PyExc_ValueError, "session %R still owns %zd open orders", sid, link->n_orders);
        return NULL;
    }
    if (ledger_discard(self->links, sid) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The open order that `oid` (any Python object) names, or NULL: with an
 * exception set if `oid` is not an int. */
static struct srv_open_order *ledger_order_arg(srv_ledger *self, PyObject *oid, const char *what)
{
    unsigned long long v;

    if (!PyLong_Check(oid)) {
        PyErr_Format(PyExc_TypeError, "%s: an order id is an int, not %.100s", what, Py_TYPE(oid)->tp_name);
        return NULL;
    }
    v = PyLong_AsUnsignedLongLong(oid);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError))
            PyErr_Clear(); /* below 0 or above 64 bits: no order's */
        return NULL;
    }
    return srv_orders_find(&self->orders, v);
}

PyDoc_STRVAR(ledger_owner_doc, "owner($self, order_id, /)\n--\n\nThe Link owning an open order, or None.");

static PyObject *ledger_owner(srv_ledger *self, PyObject *oid)
{
    struct srv_open_order *o;

    if (!ledger_ready(self))
        return NULL;
    o = ledger_order_arg(self, oid, "owner");
    if (!o && PyErr_Occurred())
        return NULL;
    return Py_NewRef(o ? (PyObject *)o->link : Py_None);
}

PyDoc_STRVAR(ledger_order_doc, "order($self, order_id, /)\n--\n\n"
                               "(instrument, client order id) of an open order a session owns, or None.");

static PyObject *ledger_order(srv_ledger *self, PyObject *oid)
{
    struct srv_open_order *o;

    if (!ledger_ready(self))
        return NULL;
    o = ledger_order_arg(self, oid, "order");
    if (!o)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return srv_order_info(o);
}

PyDoc_STRVAR(ledger_own_doc, "own($self, link, order_id, instrument, client_order_id, /)\n--\n\n"
                             "An open order is link's from now on (a claimed or late-accepted order).");

static PyObject *ledger_own(srv_ledger *self, PyObject *args)
{
    PyObject *o, *coid;
    unsigned long long oid;
    unsigned long inst;
    srv_link *link;

    if (!ledger_ready(self) || !PyArg_ParseTuple(args, "OKkO:own", &o, &oid, &inst, &coid))
        return NULL;
    if (!(link = ledger_link_arg(o)))
        return NULL;
    if (coid != Py_None && !PyUnicode_CheckExact(coid)) {
        PyErr_SetString(PyExc_TypeError, "a client order id is a str or None");
        return NULL;
    }
    if (PyDict_GetItemWithError(self->links, link->sid_key) != o) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "session %lu is not attached: it cannot own orders",
                         (unsigned long)link->sid);
        return NULL;
    }
    /* Checked here, not on the Router's path: its Links are this Ledger's alone. */
    if (!ledger_holds(self, link) || srv_ledger_own(self, link, oid, (uint32_t)inst, coid) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ledger_forget_doc, "forget($self, link, order_id, /)\n--\n\n"
                                "An order of link's is finished: it leaves the open orders (nothing if it is\n"
                                "not link's).");

static PyObject *ledger_forget(srv_ledger *self, PyObject *args)
{
    PyObject *o;
    unsigned long long oid;
    srv_link *link;

    if (!ledger_ready(self) || !PyArg_ParseTuple(args, "OK:forget", &o, &oid) || !(link = ledger_link_arg(o)))
        return NULL;
    if (srv_ledger_forget(self, link, oid) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ledger_release_doc,
             "release($self, link, /)\n--\n\n"
             "Take every open order away from `link` (its session closed without cancel-on-disconnect):\n"
             "order id -> (instrument, client order id) of each.");

/* Take away from link the orders of `part` (a dict of copies `c`) that are
 * still its own, and drop from `part` those that are not (a finalizer run
 * while it was made forgot or moved them). No Python code runs. */
static void ledger_take_away(srv_ledger *self, srv_link *link, const struct srv_order_copies *c, PyObject *part)
{
    for (size_t i = 0; i < c->n; i++) {
        struct srv_open_order *held = srv_orders_find(&self->orders, c->items[i].oid);
        PyObject *key;

        if (held && held->link == link) {
            if (ledger_drop_coid(link, held->coid, held->oid) < 0)
                PyErr_Clear(); /* then a stale id names a finished order, as a reused one may */
            srv_orders_remove(&self->orders, held);
        } else if ((key = PyLong_FromUnsignedLongLong(c->items[i].oid)) == NULL || PyDict_DelItem(part, key) < 0) {
            PyErr_Clear(); /* out of memory: then the dict names an order that is no longer link's */
            Py_XDECREF(key);
        } else {
            Py_DECREF(key);
        }
    }
}

static PyObject *ledger_release(srv_ledger *self, PyObject *o)
{
    srv_link *link = ledger_link_arg(o);
    PyObject *orders;

    if (!link || !ledger_ready(self) || !ledger_holds(self, link) || !(orders = PyDict_New()))
        return NULL;
    /* Each round: the orders' dict first, then the orders it names are taken
       away. Making the dict can run a finalizer that changes link's orders:
       those it gave link meanwhile are the next round's. */
    while (link->n_orders) {
        struct srv_order_copies c = {0};
        PyObject *part = srv_orders_copy(link, &c) == 0 ? srv_order_copies_dict(&c) : NULL;
        int rc = -1;

        if (part) {
            ledger_take_away(self, link, &c, part);
            rc = PyDict_Update(orders, part);
            Py_DECREF(part);
        }
        srv_orders_copies_free(&c);
        if (rc < 0) {
            Py_DECREF(orders);
            return NULL;
        }
    }
    return orders;
}

PyDoc_STRVAR(ledger_owned_doc, "owned($self, account, /)\n--\n\n"
                               "(order id, instrument) of the open orders that sessions of `account` own\n"
                               "(None: of every account), in no particular order.");

static PyObject *ledger_owned(srv_ledger *self, PyObject *account)
{
    struct srv_order_copies c = {0};
    PyObject *out, *sid, *v;
    unsigned long acc = 0;
    Py_ssize_t pos = 0;

    if (!ledger_ready(self))
        return NULL;
    if (account != Py_None) {
        acc = PyLong_AsUnsignedLong(account);
        if (acc == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
    }
    /* Copied first, then made into tuples (see struct srv_order_copies).
       An owner is always attached (detach, attach, own). */
    while (PyDict_Next(self->links, &pos, &sid, &v)) {
        srv_link *link = (srv_link *)v;

        if ((account == Py_None || (link->logged_in && link->account == acc)) && srv_orders_copy(link, &c) < 0) {
            srv_orders_copies_free(&c);
            return NULL;
        }
    }
    out = PyList_New(0);
    for (size_t i = 0; out && i < c.n; i++) {
        PyObject *item = Py_BuildValue("(Kk)", (unsigned long long)c.items[i].oid, (unsigned long)c.items[i].inst);

        if (!item || PyList_Append(out, item) < 0)
            Py_CLEAR(out);
        Py_XDECREF(item);
    }
    srv_orders_copies_free(&c);
    return out;
}

PyDoc_STRVAR(ledger_verify_doc, "verify($self, /)\n--\n\n"
                                "Check the open orders' invariants (AssertionError naming what is wrong); the\n"
                                "number of orders in each shard of their index.");

static PyObject *ledger_verify(srv_ledger *self, PyObject *Py_UNUSED(ignored))
{
    const char *wrong;
    PyObject *sid, *v;
    Py_ssize_t pos = 0, owned = 0;

    if (!ledger_ready(self))
        return NULL;
    if ((wrong = srv_orders_verify(&self->orders)) != NULL) {
        PyErr_SetString(PyExc_AssertionError, wrong);
        return NULL;
    }
    while (PyDict_Next(self->links, &pos, &sid, &v)) {
        srv_link *link = (srv_link *)v;
        Py_ssize_t n = 0;

        for (struct list_node *i = link->orders.next; i != &link->orders; i = i->next, n++) {
            struct srv_open_order *o = eng_container_of(i, struct srv_open_order, in_link);

            if (o->link != link || srv_orders_find(&self->orders, o->oid) != o) {
                PyErr_Format(PyExc_AssertionError, "session %R lists an order that is not its own", sid);
                return NULL;
            }
        }
        if (n != link->n_orders) {
            PyErr_Format(PyExc_AssertionError, "session %R counts %zd orders and lists %zd", sid, link->n_orders, n);
            return NULL;
        }
        owned += n;
    }
    if ((size_t)owned != self->orders.index.count) {
        PyErr_SetString(PyExc_AssertionError, "an open order's owner is not attached");
        return NULL;
    }
    return srv_idmap_sizes(&self->orders.index);
}

/* The account number `account` (a Python int): 0, or -1 with an exception set. */
static int ledger_account_arg(srv_ledger *self, PyObject *account, uint32_t *out)
{
    unsigned long acc;

    if (!ledger_ready(self))
        return -1;
    acc = PyLong_AsUnsignedLong(account);
    if (acc == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (acc > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "account %lu is not a 32-bit account number", acc);
        return -1;
    }
    *out = (uint32_t)acc;
    return 0;
}

/* The counts of an account, or NULL if it has none (read: nothing made). */
static const struct srv_account_counts *ledger_counts_find(const srv_ledger *self, uint32_t account)
{
    const struct srv_account_counts *c;

    if (!self->counts_cap)
        return NULL;
    c = ledger_counts_probe(self->counts, self->counts_cap, account);
    return c->used ? c : NULL;
}

/* One of an account's counts, for Python: its open orders, or its new
 * orders in flight. */
static PyObject *ledger_count_get(srv_ledger *self, PyObject *account, int in_flight)
{
    const struct srv_account_counts *c;
    uint32_t acc;

    if (ledger_account_arg(self, account, &acc) < 0)
        return NULL;
    c = ledger_counts_find(self, acc);
    return PyLong_FromLongLong(!c ? 0 : in_flight ? c->in_flight : c->open);
}

PyDoc_STRVAR(ledger_open_doc, "open($self, account, /)\n--\n\nThe account's accepted orders not finished.");

static PyObject *ledger_open(srv_ledger *self, PyObject *account)
{
    return ledger_count_get(self, account, 0);
}

PyDoc_STRVAR(ledger_in_flight_doc, "in_flight($self, account, /)\n--\n\nThe account's new orders not answered yet.");

static PyObject *ledger_in_flight(srv_ledger *self, PyObject *account)
{
    return ledger_count_get(self, account, 1);
}

PyDoc_STRVAR(ledger_count_open_doc, "count_open($self, account, n, /)\n--\n\n"
                                    "The account has `n` more open orders (recovered at start).");

static PyObject *ledger_count_open(srv_ledger *self, PyObject *args)
{
    PyObject *account;
    struct srv_account_counts *c;
    uint32_t acc;
    long long n;

    if (!PyArg_ParseTuple(args, "OL:count_open", &account, &n) || ledger_account_arg(self, account, &acc) < 0 ||
        !(c = srv_ledger_counts(self, acc)))
        return NULL;
    c->open += n;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ledger_meters_doc, "meters($self, /)\n--\n\n"
                                 "What the per-order path counted (csrc/binding/meters.c): requests by kind, rejects\n"
                                 "by code (nonzero counts), the order-to-ack latency buckets (bounds in seconds,\n"
                                 "counts with one above them all) and the latencies' sum in seconds.");

static PyObject *ledger_meters(srv_ledger *self, PyObject *Py_UNUSED(ignored))
{
    if (!ledger_ready(self))
        return NULL;
    return srv_meters_read(&self->meters);
}

PyDoc_STRVAR(ledger_send_doc, "send($self, link, frame, /)\n--\n\n"
                              "Queue a whole frame (bytes) for link's session; it is written at the next flush().");

static PyObject *ledger_send(srv_ledger *self, PyObject *const *args, Py_ssize_t nargs)
{
    srv_link *link;

    if (!ledger_ready(self))
        return NULL;
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send takes (link, frame: bytes)");
        return NULL;
    }
    if (!(link = ledger_link_arg(args[0])))
        return NULL;
    if (srv_outbox_put(self, link, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1])) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ledger_flush_doc,
             "flush($self, /)\n--\n\n"
             "Write every session's queued output to its socket, one non-blocking send each (csrc/binding/\n"
             "outbox.c); then the acks written have their latencies counted. None, or a list of (session,\n"
             "what) for the sessions Python must see to: what is OUT_WAIT (the socket is full: wake its\n"
             "writer), OUT_SLOW (its unsent output passed max_unsent) or the failed send's errno.");

static PyObject *ledger_flush(srv_ledger *self, PyObject *Py_UNUSED(ignored))
{
    return ledger_ready(self) ? srv_outbox_flush(self) : NULL;
}

PyDoc_STRVAR(ledger_catch_up_doc,
             "catch_up($self, seq, /)\n--\n\n"
             "The engine has answered commands up to `seq` that the Router has not routed yet (a node that\n"
             "took the lead): until it routes the event of that seq, any order id may be one a client was\n"
             "told of. 0: none.");

static PyObject *ledger_catch_up(srv_ledger *self, PyObject *arg)
{
    unsigned long long seq = PyLong_AsUnsignedLongLong(arg);

    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    self->catch_up_seq = seq;
    Py_RETURN_NONE;
}

static PyObject *ledger_get_known_order_id(srv_ledger *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->known_oid);
}

/* Raised only: what was known stays so. */
static int ledger_set_known_order_id(srv_ledger *self, PyObject *value, void *Py_UNUSED(closure))
{
    unsigned long long oid;

    if (!value) {
        PyErr_SetString(PyExc_TypeError, "known_order_id cannot be deleted");
        return -1;
    }
    oid = PyLong_AsUnsignedLongLong(value);
    if (oid == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (oid > self->known_oid)
        self->known_oid = oid;
    return 0;
}

static PyObject *ledger_get_catch_up_seq(srv_ledger *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->catch_up_seq);
}

static PyGetSetDef ledger_getset[] = {
    {"catch_up_seq", (getter)ledger_get_catch_up_seq, NULL, "catch_up()'s seq until it is routed, then 0", NULL},
    {"known_order_id", (getter)ledger_get_known_order_id, (setter)ledger_set_known_order_id,
     "the highest order id the server knows (recovered, or in an accepted order routed); setting it\n"
     "only raises it",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef ledger_methods[] = {
    {"catch_up", (PyCFunction)ledger_catch_up, METH_O, ledger_catch_up_doc},
    {"meters", (PyCFunction)ledger_meters, METH_NOARGS, ledger_meters_doc},
    {"send", (PyCFunction)(void (*)(void))ledger_send, METH_FASTCALL, ledger_send_doc},
    {"flush", (PyCFunction)ledger_flush, METH_NOARGS, ledger_flush_doc},
    {"attach", (PyCFunction)ledger_attach, METH_O, ledger_attach_doc},
    {"detach", (PyCFunction)ledger_detach, METH_O, ledger_detach_doc},
    {"owner", (PyCFunction)ledger_owner, METH_O, ledger_owner_doc},
    {"order", (PyCFunction)ledger_order, METH_O, ledger_order_doc},
    {"verify", (PyCFunction)ledger_verify, METH_NOARGS, ledger_verify_doc},
    {"own", (PyCFunction)ledger_own, METH_VARARGS, ledger_own_doc},
    {"forget", (PyCFunction)ledger_forget, METH_VARARGS, ledger_forget_doc},
    {"release", (PyCFunction)ledger_release, METH_O, ledger_release_doc},
    {"owned", (PyCFunction)ledger_owned, METH_O, ledger_owned_doc},
    {"open", (PyCFunction)ledger_open, METH_O, ledger_open_doc},
    {"in_flight", (PyCFunction)ledger_in_flight, METH_O, ledger_in_flight_doc},
    {"count_open", (PyCFunction)ledger_count_open, METH_VARARGS, ledger_count_open_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_ledger_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Ledger",
    .tp_basicsize = sizeof(srv_ledger),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Ledger(): the server's per-order bookkeeping (csrc/binding/ledger.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ledger_init,
    .tp_dealloc = (destructor)ledger_dealloc,
    .tp_traverse = (traverseproc)ledger_traverse,
    .tp_clear = (inquiry)ledger_clear,
    .tp_methods = ledger_methods,
    .tp_getset = ledger_getset,
};

/* ---- CommandBuffer ------------------------------------------------------- */

struct runner_cmd *srv_commands_reserve(srv_commands *c)
{
    struct runner_cmd *r;

    if (c->n >= c->cap)
        return NULL;
    r = &c->recs[c->n++];
    memset(r, 0, sizeof(*r));
    return r;
}

static int commands_init(srv_commands *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t cap;

    if (self->recs) {
        PyErr_SetString(PyExc_TypeError, "a CommandBuffer is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:CommandBuffer", kwlist, &cap))
        return -1;
    if (cap < 1 || (size_t)cap > PY_SSIZE_T_MAX / sizeof(struct runner_cmd)) {
        PyErr_SetString(PyExc_ValueError, "CommandBuffer: capacity must be positive");
        return -1;
    }
    self->recs = PyMem_Calloc((size_t)cap, sizeof(struct runner_cmd));
    if (!self->recs) {
        PyErr_NoMemory();
        return -1;
    }
    self->cap = cap;
    return 0;
}

static int commands_traverse(srv_commands *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    return 0;
}

static int commands_clear(srv_commands *self)
{
    self->runner = NULL; /* pushes nowhere without its Ledger's part */
    self->api = NULL;
    Py_CLEAR(self->ledger);
    return 0;
}

static void commands_dealloc(srv_commands *self)
{
    PyObject_GC_UnTrack(self);
    commands_clear(self);
    PyMem_Free(self->recs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Submit the records not in the ring yet, what fits: how many went in. */
static size_t commands_submit(srv_commands *c)
{
    struct srv_trace *trace = c->ledger ? ((srv_ledger *)c->ledger)->meters.trace : NULL;
    /* Stamped before: the engine thread may take them at once. */
    int64_t began = trace && trace->unpushed ? srv_monotonic_ns() : 0;
    size_t k = c->api->submit(c->runner, c->recs + c->sent, (size_t)(c->n - c->sent));

    c->pushes += k > 0;
    if (began)
        srv_trace_pushed(trace, c->recs + c->sent, k, began);
    c->sent += (Py_ssize_t)k;
    if (c->sent == c->n)
        c->sent = c->n = 0;
    return k;
}

static int commands_attached(srv_commands *c)
{
    if (c->runner)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the CommandBuffer is attached to no runner");
    return -1;
}

int srv_commands_push(srv_commands *c)
{
    if (c->n == 0)
        return 1; /* nothing to push, attached or not */
    if (commands_attached(c) < 0)
        return -1;
    if (c->held)
        return 0;
    if (c->sent < c->n)
        commands_submit(c);
    return c->n == 0;
}

static int commands_getbuffer(srv_commands *self, Py_buffer *view, int flags)
{
    if (!self->recs) {
        PyErr_SetString(PyExc_ValueError, "the CommandBuffer is not initialised");
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, self->recs, self->cap * (Py_ssize_t)sizeof(struct runner_cmd),
                             0, flags);
}

static PyBufferProcs commands_as_buffer = {
    .bf_getbuffer = (getbufferproc)commands_getbuffer,
};

PyDoc_STRVAR(commands_reserve_doc, "reserve($self, /)\n--\n\n"
                                   "Index of the next record, zeroed; -1 when the buffer is full.");

static PyObject *commands_reserve(srv_commands *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(srv_commands_reserve(self) ? self->n - 1 : -1);
}

PyDoc_STRVAR(commands_unreserve_doc, "unreserve($self, /)\n--\n\n"
                                     "Take back the record reserve() gave last (one that could not be written):\n"
                                     "ValueError when there is none (no record queued, or it is in the ring).");

static PyObject *commands_unreserve(srv_commands *self, PyObject *Py_UNUSED(ignored))
{
    if (self->n <= self->sent) {
        PyErr_SetString(PyExc_ValueError, "unreserve: no record queued and not yet in the ring");
        return NULL;
    }
    if (--self->n == self->sent)
        self->sent = self->n = 0; /* as once everything queued is in */
    Py_RETURN_NONE;
}

PyDoc_STRVAR(commands_attach_doc,
             "attach($self, runner, api, ledger, /)\n--\n\n"
             "Push to the runner at address `runner` (a struct runner *), through the struct runner_api at\n"
             "address `api` (runner_api()); pushes are stamped in the Ledger's LatencyTrace, if it has one.\n"
             "The runner must outlive the attachment: detach() before it is destroyed.");

static PyObject *commands_attach(srv_commands *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[2], &srv_ledger_type)) {
        PyErr_SetString(PyExc_TypeError, "attach takes (runner, api, ledger)");
        return NULL;
    }
    if (srv_runner_addresses(args[0], args[1], &self->runner, &self->api) < 0)
        return NULL;
    Py_XSETREF(self->ledger, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(commands_detach_doc, "detach($self, /)\n--\n\n"
                                  "Push nowhere from now on (the runner is about to be destroyed).");

static PyObject *commands_detach(srv_commands *self, PyObject *Py_UNUSED(ignored))
{
    commands_clear(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(commands_push_doc,
             "push($self, /)\n--\n\n"
             "Push what fits in the runner's input ring of the records not in it yet, unless the buffer is\n"
             "held: True when every queued record is in (the buffer is empty).");

static PyObject *commands_push(srv_commands *self, PyObject *Py_UNUSED(ignored))
{
    int rc = srv_commands_push(self);

    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

PyDoc_STRVAR(commands_submit_doc,
             "submit($self, /)\n--\n\n"
             "Push what fits in the runner's input ring of the records not in it yet, held or not: how many\n"
             "went in.");

static PyObject *commands_submit_py(srv_commands *self, PyObject *Py_UNUSED(ignored))
{
    if (commands_attached(self) < 0)
        return NULL;
    return PyLong_FromSize_t(self->sent < self->n ? commands_submit(self) : 0);
}

static PyObject *commands_get_full(srv_commands *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->n >= self->cap);
}

static PyMethodDef commands_methods[] = {
    {"reserve", (PyCFunction)commands_reserve, METH_NOARGS, commands_reserve_doc},
    {"unreserve", (PyCFunction)commands_unreserve, METH_NOARGS, commands_unreserve_doc},
    {"attach", (PyCFunction)(void (*)(void))commands_attach, METH_FASTCALL, commands_attach_doc},
    {"detach", (PyCFunction)commands_detach, METH_NOARGS, commands_detach_doc},
    {"push", (PyCFunction)commands_push, METH_NOARGS, commands_push_doc},
    {"submit", (PyCFunction)commands_submit_py, METH_NOARGS, commands_submit_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef commands_members[] = {
    {"capacity", T_PYSSIZET, offsetof(srv_commands, cap), READONLY, "records it holds at most"},
    {"queued", T_PYSSIZET, offsetof(srv_commands, n), READONLY, "records queued"},
    {"sent", T_PYSSIZET, offsetof(srv_commands, sent), READONLY, "of them, already in the ring"},
    {"pushes", T_ULONGLONG, offsetof(srv_commands, pushes), READONLY, "ring operations that put records in"},
    {"held", T_BOOL, offsetof(srv_commands, held), 0, "a flush waiting for room holds the records: push() pushes none"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef commands_getset[] = {
    {"full", (getter)commands_get_full, NULL, "no room for another record", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject srv_commands_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.CommandBuffer",
    .tp_basicsize = sizeof(srv_commands),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("CommandBuffer(capacity): struct runner_cmd records queued (csrc/binding/ledger.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)commands_init,
    .tp_dealloc = (destructor)commands_dealloc,
    .tp_traverse = (traverseproc)commands_traverse,
    .tp_clear = (inquiry)commands_clear,
    .tp_as_buffer = &commands_as_buffer,
    .tp_methods = commands_methods,
    .tp_members = commands_members,
    .tp_getset = commands_getset,
};
