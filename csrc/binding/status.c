/*
 * status.c - OrderStatus: every order's status as the events tell it, for
 * the `orders` and `order_status` requests.
 *
 * Per account: its open orders (a list, in the order they were accepted)
 * and a ring of its last `keep` finished orders; one index (idmap.c) finds
 * an open order's record by its id, another an account's lists, a third an
 * open order's record by its account and client order id (an order_status
 * by client order id walked the account's open orders: 58 µs at 20,000).
 * That index is keyed by a 64-bit mix of the two: a record whose key
 * another record holds (the same client order id open twice, which the
 * engine refuses, or two ids of one key) stays out of it and is counted in
 * its account's `coid_clashes`, and while an account has any, a look-up
 * walks its list as before, so the answer is always the walk's (the oldest
 * open record with that id).
 * The Router updates it from the events it routes (accepted, trade,
 * modified, cancelled: srv_status_event); a restart from a data directory
 * seeds it with the orders resting at the snapshot, whose filled quantity
 * and time priority the engine does not keep (they read as None until a
 * modify sets the priority again), then gives it the events of the
 * journal's commands after the snapshot (apply_events, by the same rule).
 * Python reads it through the methods below; nothing here reads the engine.
 *
 * Why not dicts (account -> {order id: OrderRecord}): a lookup in a large
 * one reads three lines from all over the heap (the index, the entry, the
 * key's int object), and each event made two, with an int made for each.
 *
 * An OrderRecord holds no Python objects, so it is not tracked by the
 * cyclic collector; OrderStatus holds only records (in its C memory), so it
 * is not either: the collector never walks the open orders.
 */
#include "server.h"

#include <structmember.h>
#include <string.h>

enum status_state { STATUS_OPEN = 0, STATUS_FILLED = 1, STATUS_CANCELLED = 2 };

/* ---- OrderRecord -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t order_id;
    uint64_t priority; /* seq of the command that gave it its place in its level */
    uint64_t last_seq; /* seq of the last command that changed it */
    int64_t price;     /* 0: a market order's (no price) */
    int64_t qty;       /* as entered; 0 when not known (recovered) */
    int64_t leaves;    /* open quantity; what was open when it was cancelled */
    int64_t filled;
    uint32_t instrument;
    uint32_t account;
    uint8_t side;
    uint8_t state;     /* enum status_state */
    uint8_t reason;    /* enum eng_cancel_reason, when cancelled */
    char priority_known, filled_known;
    char coid_indexed; /* open, and in the index of client order ids */
    char coid[16];
    /* While open (in the index, which holds a reference): */
    struct status_account *acct; /* its account's lists */
    struct list_node in_account; /* on acct->open */
} status_rec;

static PyObject *rec_coid(status_rec *r, void *closure)
{
    size_t n = sizeof(r->coid);

    (void)closure;
    while (n > 0 && !r->coid[n - 1])
        n--;
    if (n == 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeASCII(r->coid, (Py_ssize_t)n, "backslashreplace");
}

static PyObject *rec_priority(status_rec *r, void *closure)
{
    (void)closure;
    if (!r->priority_known)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(r->priority);
}

static PyObject *rec_filled(status_rec *r, void *closure)
{
    (void)closure;
    if (!r->filled_known)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(r->filled);
}

static PyObject *rec_qty(status_rec *r, void *closure)
{
    (void)closure;
    if (!r->filled_known)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(r->qty);
}

static PyObject *rec_last_seq(status_rec *r, void *closure)
{
    (void)closure;
    if (!r->last_seq)
        Py_RETURN_NONE; /* recovered, and nothing changed it since */
    return PyLong_FromUnsignedLongLong(r->last_seq);
}

static PyObject *rec_price(status_rec *r, void *closure)
{
    (void)closure;
    if (!r->price)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(r->price);
}

static PyGetSetDef rec_getset[] = {
    {"client_order_id", (getter)rec_coid, NULL, "the client order id, or None", NULL},
    {"priority", (getter)rec_priority, NULL,
     "seq of the command that gave the order its place in its level (entry, or the last modify that lost "
     "priority); None for a recovered order not modified since",
     NULL},
    {"filled", (getter)rec_filled, NULL, "quantity filled; None for a recovered order", NULL},
    {"qty", (getter)rec_qty, NULL, "quantity as entered; None for a recovered order", NULL},
    {"last_seq", (getter)rec_last_seq, NULL,
     "seq of the last command that changed it; None for a recovered order not changed since", NULL},
    {"price", (getter)rec_price, NULL, "the price, or None (a market order)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef rec_members[] = {
    {"order_id", T_ULONGLONG, offsetof(status_rec, order_id), READONLY, "the order id"},
    {"leaves", T_LONGLONG, offsetof(status_rec, leaves), READONLY,
     "open quantity (a cancelled order: what was open when it was cancelled)"},
    {"instrument", T_UINT, offsetof(status_rec, instrument), READONLY, "the instrument"},
    {"account", T_UINT, offsetof(status_rec, account), READONLY, "the account"},
    {"side", T_UBYTE, offsetof(status_rec, side), READONLY, "enum eng_side"},
    {"state", T_UBYTE, offsetof(status_rec, state), READONLY, "0 open, 1 filled, 2 cancelled"},
    {"reason", T_UBYTE, offsetof(status_rec, reason), READONLY, "enum eng_cancel_reason, when cancelled"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject srv_status_rec_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.OrderRecord",
    .tp_basicsize = sizeof(status_rec),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("One order's status (made by OrderStatus only)."),
    .tp_getset = rec_getset,
    .tp_members = rec_members,
};

static status_rec *rec_new(void)
{
    status_rec *r = PyObject_New(status_rec, &srv_status_rec_type);

    if (r)
        memset((char *)r + sizeof(PyObject), 0, sizeof(*r) - sizeof(PyObject));
    return r;
}

/* ---- a ring of finished orders ------------------------------------------------- */

struct status_ring {
    PyObject **items; /* n of them (held); once n == cap, items[head] is the oldest */
    Py_ssize_t n, cap, head;
};

/* One account's records: in memory that never moves (its open records link to it). */
struct status_account {
    struct list_node open; /* its open records (status_rec.in_account), the oldest accepted first */
    Py_ssize_t n_open;
    Py_ssize_t coid_clashes; /* its open records with a client order id not in the index of them */
    struct status_ring finished;
};

/* Keep `rec` (a reference stolen), dropping the oldest beyond `keep`. */
static int ring_push(struct status_ring *r, PyObject *rec, Py_ssize_t keep)
{
    if (r->n < keep && r->n == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 16;
        PyObject **items;

        if (cap > keep)
            cap = keep;
        items = PyMem_Realloc(r->items, (size_t)cap * sizeof(*items));
        if (!items) {
            Py_DECREF(rec);
            PyErr_NoMemory();
            return -1;
        }
        r->items = items;
        r->cap = cap;
    }
    if (r->n < r->cap) {
        r->items[r->n++] = rec;
        return 0;
    }
    Py_DECREF(r->items[r->head]);
    r->items[r->head] = rec;
    r->head = (r->head + 1) % r->cap;
    return 0;
}

/* The i-th newest (0: the newest); borrowed. */
static PyObject *ring_newest(const struct status_ring *r, Py_ssize_t i)
{
    Py_ssize_t last = r->n < r->cap ? r->n - 1 : r->head - 1 + r->cap;

    return r->items[(last - i + r->cap) % r->cap];
}

/* ---- OrderStatus ---------------------------------------------------------------- */

/* The lists of `account`; created if `create`, else NULL (no error) if none. */
static struct status_account *status_account_of(srv_status *st, uint32_t account, int create)
{
    struct status_account *a = srv_idmap_find(&st->accounts, account);
    void *was;

    if (a || !create)
        return a;
    if (!(a = PyMem_Calloc(1, sizeof(*a)))) {
        PyErr_NoMemory();
        return NULL;
    }
    list_init(&a->open);
    if (srv_idmap_put(&st->accounts, account, a, &was) < 0) {
        PyMem_Free(a);
        return NULL;
    }
    return a;
}

/* ---- the index of open records by client order id ------------------------------ */

static uint64_t coid_mix(uint64_t x) /* splitmix64's finaliser */
{
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t coid_key(const srv_status *st, uint32_t account, const char coid[16])
{
    uint64_t lo, hi;

    memcpy(&lo, coid, 8);
    memcpy(&hi, coid + 8, 8);
    return coid_mix(coid_mix(account ^ lo) ^ hi) >> (64 - st->coid_key_bits);
}

/* No client order id: all 16 bytes 0, as the engine has it (a record's
 * client_order_id reads None only then). */
static int coid_none(const char coid[16])
{
    static const char zero[16];

    return memcmp(coid, zero, sizeof(zero)) == 0;
}

/* An open record of `r->acct` into the index if it has a client order id:
 * one whose key is held (or that finds no memory for it) is counted as a
 * clash instead, and its account's look-ups walk. Never fails. */
static void coid_index(srv_status *st, status_rec *r)
{
    uint64_t key;
    void *was;

    if (coid_none(r->coid))
        return;
    key = coid_key(st, r->account, r->coid);
    if (!srv_idmap_find(&st->coids, key)) {
        if (srv_idmap_put(&st->coids, key, r, &was) == 0) {
            r->coid_indexed = 1;
            return;
        }
        PyErr_Clear(); /* the MemoryError of the put alone */
    }
    r->acct->coid_clashes++;
}

/* An open record is leaving its account's open ones: out of the index, or
 * out of the clashes. */
static void coid_unindex(srv_status *st, status_rec *r)
{
    if (r->coid_indexed) {
        srv_idmap_remove(&st->coids, coid_key(st, r->account, r->coid));
        r->coid_indexed = 0;
    } else if (!coid_none(r->coid)) {
        r->acct->coid_clashes--;
    }
}

/* The oldest open record of the account with this client order id (borrowed), or NULL. */
static status_rec *coid_find_open(srv_status *st, struct status_account *a, uint32_t account, const char coid[16])
{
    status_rec *r;

    if (a->coid_clashes == 0) {
        r = srv_idmap_find(&st->coids, coid_key(st, account, coid));
        return r && r->account == account && memcmp(r->coid, coid, sizeof(r->coid)) == 0 ? r : NULL;
    }
    for (struct list_node *n = a->open.next; n != &a->open; n = n->next) {
        r = eng_container_of(n, status_rec, in_account);
        if (memcmp(r->coid, coid, sizeof(r->coid)) == 0)
            return r;
    }
    return NULL;
}

/* Open, at the end of its account's list. An order id open already (the
 * engine gives each once) is replaced: in its place if the account is the
 * same, as a dict's value is. */
static int status_insert(srv_status *st, status_rec *r)
{
    struct status_account *a = status_account_of(st, r->account, 1);
    status_rec *old;
    void *was;

    if (!a || srv_idmap_put(&st->open, r->order_id, r, &was) < 0)
        return -1;
    old = was;
    Py_INCREF(r);
    r->acct = a;
    if (old && old->acct == a) {
        list_add_tail(&r->in_account, &old->in_account); /* just before it */
    } else {
        list_add_tail(&r->in_account, &a->open);
        a->n_open++;
        if (old)
            old->acct->n_open--;
    }
    if (old) {
        coid_unindex(st, old);
        list_del(&old->in_account);
        Py_DECREF(old);
    }
    coid_index(st, r);
    return 0;
}

/* The account's open order's record (borrowed), or NULL. */
static status_rec *status_find_open(srv_status *st, uint32_t account, uint64_t oid)
{
    status_rec *r = srv_idmap_find(&st->open, oid);

    return r && r->account == account ? r : NULL;
}

/* The order is finished: out of the open orders, into its account's ring. */
static int status_finish(srv_status *st, status_rec *r)
{
    struct status_account *a = r->acct;

    srv_idmap_remove(&st->open, r->order_id);
    coid_unindex(st, r);
    list_del(&r->in_account);
    a->n_open--;
    if (st->keep <= 0) {
        Py_DECREF(r);
        return 0;
    }
    return ring_push(&a->finished, (PyObject *)r, st->keep); /* the index's reference */
}

static int status_accepted(srv_status *st, const struct eng_event *ev)
{
    status_rec *r = rec_new();
    int rc;

    if (!r)
        return -1;
    r->order_id = ev->order_id;
    r->priority = r->last_seq = ev->seq;
    r->price = ev->price;
    r->qty = r->leaves = ev->qty;
    r->instrument = ev->instrument;
    r->account = ev->account;
    r->side = ev->side;
    r->priority_known = r->filled_known = 1;
    memcpy(r->coid, ev->coid, sizeof(r->coid));
    rc = status_insert(st, r);
    Py_DECREF(r);
    return rc;
}

static int status_traded(srv_status *st, uint32_t account, uint64_t oid, int64_t qty, int64_t leaves, uint64_t seq)
{
    status_rec *r = status_find_open(st, account, oid);

    if (!r)
        return 0;
    /* Modifies that raise the open qty let fills add up past any int64. */
    r->filled = r->filled > INT64_MAX - qty ? INT64_MAX : r->filled + qty;
    r->leaves = leaves;
    r->last_seq = seq;
    if (leaves != 0)
        return 0;
    r->state = STATUS_FILLED;
    return status_finish(st, r);
}

static int status_cancelled(srv_status *st, const struct eng_event *ev)
{
    status_rec *r = status_find_open(st, ev->account, ev->order_id);

    if (!r)
        return 0;
    r->leaves = ev->leaves;
    r->last_seq = ev->seq;
    r->state = STATUS_CANCELLED;
    r->reason = ev->reason;
    return status_finish(st, r);
}

static int status_modified(srv_status *st, const struct eng_event *ev)
{
    status_rec *r = status_find_open(st, ev->account, ev->order_id);

    if (!r)
        return 0;
    r->price = ev->price;
    r->leaves = ev->qty;
    r->last_seq = ev->seq;
    if (!(ev->flags & ENG_EV_F_PRIORITY_KEPT)) {
        r->priority = ev->seq;
        r->priority_known = 1;
    }
    return 0;
}

int srv_status_event(srv_status *st, const struct eng_event *ev)
{
    switch (ev->type) {
    case ENG_EV_ACCEPTED:
        return status_accepted(st, ev);
    case ENG_EV_TRADE:
        if (status_traded(st, ev->account, ev->order_id, ev->qty, ev->leaves, ev->seq) < 0)
            return -1;
        return status_traded(st, ev->maker_account, ev->maker_order_id, ev->qty, ev->maker_leaves, ev->seq);
    case ENG_EV_CANCELLED:
        return status_cancelled(st, ev);
    case ENG_EV_MODIFIED:
        return status_modified(st, ev);
    default:
        return 0; /* no order's status changes by it alone (a mass cancel's come as Cancelled) */
    }
}

/* ---- Python's methods ----------------------------------------------------------- */

/* 1, or 0 with ValueError for an OrderStatus never initialised (no tables). */
static int status_ready(srv_status *st)
{
    if (st->ready)
        return 1;
    PyErr_SetString(PyExc_ValueError, "the OrderStatus is not initialised");
    return 0;
}

PyDoc_STRVAR(status_recovered_doc,
             "recovered($self, order_id, account, instrument, side, price, leaves, client_order_id, /)\n--\n\n"
             "An open order recovered from a data directory (before the engine thread starts): its filled "
             "quantity, entered quantity and time priority are not known.");

static PyObject *status_recovered(srv_status *st, PyObject *args)
{
    unsigned long long oid;
    unsigned int account, inst;
    unsigned char side;
    long long price, leaves;
    const char *coid = NULL;
    Py_ssize_t coid_len = 0;
    status_rec *r;
    int rc;

    if (!status_ready(st) || !PyArg_ParseTuple(args, "KIIbLLz#:recovered", &oid, &account, &inst, &side, &price,
                                               &leaves, &coid, &coid_len))
        return NULL;
    if (coid_len > (Py_ssize_t)sizeof(r->coid)) {
        PyErr_SetString(PyExc_ValueError, "recovered: a client order id is at most 16 characters");
        return NULL;
    }
    if (!(r = rec_new()))
        return NULL;
    r->order_id = oid;
    r->account = account;
    r->instrument = inst;
    r->side = side;
    r->price = price;
    r->leaves = leaves;
    if (coid)
        memcpy(r->coid, coid, (size_t)coid_len);
    rc = status_insert(st, r);
    Py_DECREF(r);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int status_account_arg(PyObject *arg, uint32_t *account)
{
    unsigned long v = PyLong_AsUnsignedLong(arg);

    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "an account is a 32-bit number");
        return -1;
    }
    *account = (uint32_t)v;
    return 0;
}

PyDoc_STRVAR(status_apply_events_doc,
             "apply_events($self, events, /)\n--\n\n"
             "Update the records by the engine's events in `events` (a buffer of whole struct eng_event "
             "records), as the Router does by those it routes: how a restart learns what the commands it "
             "replayed did.");

static PyObject *status_apply_events(srv_status *st, PyObject *arg)
{
    Py_buffer view;
    struct eng_event ev;
    int rc = 0;

    if (!status_ready(st) || PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (view.len % (Py_ssize_t)sizeof(ev) != 0) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "apply_events: %zd bytes are no whole number of %zu-byte events",
                            view.len, sizeof(ev));
    }
    /* Each copied out: a buffer need not be aligned as the struct is. */
    for (Py_ssize_t at = 0; at < view.len && rc == 0; at += (Py_ssize_t)sizeof(ev)) {
        memcpy(&ev, (const char *)view.buf + at, sizeof(ev));
        rc = srv_status_event(st, &ev);
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(status_open_orders_doc, "open_orders($self, account, /)\n--\n\n"
                                     "The account's open orders' records, in the order they were accepted "
                                     "(recovered ones first).");

static PyObject *status_open_orders(srv_status *st, PyObject *arg)
{
    uint32_t account;
    struct status_account *a;
    PyObject *out;
    Py_ssize_t i = 0;

    if (!status_ready(st) || status_account_arg(arg, &account) < 0)
        return NULL;
    for (;;) {
        Py_ssize_t n;

        a = status_account_of(st, account, 0);
        n = a ? a->n_open : 0;
        if (!(out = PyList_New(n)))
            return NULL;
        /* The allocation may have run a collection, and a finalizer that
           changed the account's orders: then again, at the new size. */
        if (n == (a ? a->n_open : 0) && a == status_account_of(st, account, 0))
            break;
        Py_DECREF(out);
    }
    for (struct list_node *n = a ? a->open.next : NULL; n && n != &a->open; n = n->next)
        PyList_SET_ITEM(out, i++, Py_NewRef((PyObject *)eng_container_of(n, status_rec, in_account)));
    return out;
}

PyDoc_STRVAR(status_finished_orders_doc, "finished_orders($self, account, /)\n--\n\n"
                                         "The account's finished orders kept (at most `keep`), newest first.");

static PyObject *status_finished_orders(srv_status *st, PyObject *arg)
{
    uint32_t account;
    struct status_account *a;
    const struct status_ring *ring;
    PyObject *out;

    if (!status_ready(st) || status_account_arg(arg, &account) < 0)
        return NULL;
    a = status_account_of(st, account, 0);
    if (!a)
        return PyList_New(0);
    ring = &a->finished;
    for (;;) {
        Py_ssize_t n = ring->n;

        if (!(out = PyList_New(n)))
            return NULL;
        if (n == ring->n) /* else a finalizer the allocation ran changed it (see open_orders) */
            break;
        Py_DECREF(out);
    }
    for (Py_ssize_t i = 0; i < ring->n; i++)
        PyList_SET_ITEM(out, i, Py_NewRef(ring_newest(ring, i)));
    return out;
}

PyDoc_STRVAR(status_find_doc,
             "find($self, account, order_id, /)\n--\n\n"
             "The record of one of the account's orders: open, or among its finished ones kept; None if "
             "neither (another account's order is not found either).");

static PyObject *status_find(srv_status *st, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t account;
    unsigned long long oid;
    status_rec *r;
    struct status_account *a;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "find takes (account, order_id)");
        return NULL;
    }
    if (!status_ready(st) || status_account_arg(args[0], &account) < 0)
        return NULL;
    oid = PyLong_AsUnsignedLongLong(args[1]);
    if (oid == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if ((r = status_find_open(st, account, oid)) != NULL)
        return Py_NewRef((PyObject *)r);
    if (!(a = status_account_of(st, account, 0)))
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < a->finished.n; i++) {
        status_rec *f = (status_rec *)ring_newest(&a->finished, i);

        if (f->order_id == oid)
            return Py_NewRef((PyObject *)f);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(status_find_coid_doc,
             "find_coid($self, account, client_order_id, /)\n--\n\n"
             "The record of the account's order with this client order id: its open order (a client order "
             "id is unique among those), else the newest of its finished ones kept; None if neither. "
             "Compared in C, with no object made per record.");

static PyObject *status_find_coid(srv_status *st, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t account;
    const char *text;
    Py_ssize_t len;
    char coid[sizeof(((status_rec *)0)->coid)] = {0};
    struct status_account *a;
    status_rec *r;

    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "find_coid takes (account, client_order_id: str)");
        return NULL;
    }
    if (!status_ready(st) || status_account_arg(args[0], &account) < 0)
        return NULL;
    /* A record's client order id is 1 to 16 ASCII bytes, not all 0: anything else names no order (all 0
       is an order's with none). */
    if (!PyUnicode_IS_ASCII(args[1]) || (len = PyUnicode_GET_LENGTH(args[1])) > (Py_ssize_t)sizeof(coid) ||
        len == 0)
        Py_RETURN_NONE;
    text = (const char *)PyUnicode_DATA(args[1]);
    memcpy(coid, text, (size_t)len);
    if (coid_none(coid) || !(a = status_account_of(st, account, 0)))
        Py_RETURN_NONE;
    if ((r = coid_find_open(st, a, account, coid)) != NULL)
        return Py_NewRef((PyObject *)r);
    for (Py_ssize_t i = 0; i < a->finished.n; i++) {
        status_rec *f = (status_rec *)ring_newest(&a->finished, i);

        if (memcmp(f->coid, coid, sizeof(coid)) == 0)
            return Py_NewRef((PyObject *)f);
    }
    Py_RETURN_NONE;
}

/* What verify counts as it walks the accounts. */
struct status_walk {
    srv_status *st;
    size_t listed, coids_indexed;
};

static const char *status_check_open(uint64_t oid, void *rec, void *arg)
{
    const status_rec *r = rec;
    srv_status *st = arg;

    if (r->order_id != oid || r->state != STATUS_OPEN)
        return "an open record's id is not its slot's, or it is finished";
    if (r->acct != srv_idmap_find(&st->accounts, r->account))
        return "an open record is not on its account's list";
    if (r->in_account.next->prev != &r->in_account || r->in_account.prev->next != &r->in_account)
        return "an open record is not on a list";
    if (r->coid_indexed && (coid_none(r->coid) || srv_idmap_find(&st->coids, coid_key(st, r->account, r->coid)) != r))
        return "an open record is not in the index of client order ids where it says it is";
    return NULL;
}

static const char *status_check_coid(uint64_t key, void *rec, void *arg)
{
    const status_rec *r = rec;
    srv_status *st = arg;

    if (!r->coid_indexed || key != coid_key(st, r->account, r->coid) || srv_idmap_find(&st->open, r->order_id) != r)
        return "the index of client order ids holds a record that is not open, or not at its key";
    return NULL;
}

static const char *status_check_account(uint64_t account, void *lists, void *arg)
{
    const struct status_account *a = lists;
    const struct status_ring *ring = &a->finished;
    struct status_walk *w = arg;
    Py_ssize_t n = 0, clashes = 0;

    for (const struct list_node *i = a->open.next; i != &a->open; i = i->next, n++) {
        const status_rec *r = eng_container_of(i, status_rec, in_account);

        if (r->account != account || r->acct != a || srv_idmap_find(&w->st->open, r->order_id) != r)
            return "an account lists a record that is not its open one";
        clashes += !coid_none(r->coid) && !r->coid_indexed;
        w->coids_indexed += r->coid_indexed;
    }
    if (n != a->n_open)
        return "an account's count of open records is wrong";
    if (clashes != a->coid_clashes)
        return "an account's count of client order ids left out of their index is wrong";
    w->listed += (size_t)n;
    if (ring->n > ring->cap || ring->cap > w->st->keep ||
        (ring->head && (ring->n < ring->cap || ring->head >= ring->cap)))
        return "a ring of finished records is over its size, or its oldest is out of place";
    for (Py_ssize_t i = 0; i < ring->n; i++) {
        const status_rec *f = (const status_rec *)ring->items[i];

        if (f->account != account || f->state == STATUS_OPEN)
            return "an account's ring holds another's record, or an open one";
    }
    return NULL;
}

PyDoc_STRVAR(status_verify_doc, "verify($self, /)\n--\n\n"
                                "Check the records' invariants (AssertionError naming what is wrong); the\n"
                                "number of open records in each shard of their index.");

static PyObject *status_verify(srv_status *st, PyObject *Py_UNUSED(ignored))
{
    struct status_walk w = {.st = st};
    const char *wrong;

    if (!status_ready(st))
        return NULL;
    if (!(wrong = srv_idmap_verify(&st->open, status_check_open, st)))
        wrong = srv_idmap_verify(&st->accounts, status_check_account, &w);
    if (!wrong)
        wrong = srv_idmap_verify(&st->coids, status_check_coid, st);
    if (!wrong && w.listed != st->open.count)
        wrong = "an open record is on no account's list";
    if (!wrong && w.coids_indexed != st->coids.count)
        wrong = "the index of client order ids holds a record twice";
    if (wrong) {
        PyErr_SetString(PyExc_AssertionError, wrong);
        return NULL;
    }
    return srv_idmap_sizes(&st->open);
}

static PyMethodDef status_methods[] = {
    {"recovered", (PyCFunction)status_recovered, METH_VARARGS, status_recovered_doc},
    {"apply_events", (PyCFunction)status_apply_events, METH_O, status_apply_events_doc},
    {"open_orders", (PyCFunction)status_open_orders, METH_O, status_open_orders_doc},
    {"finished_orders", (PyCFunction)status_finished_orders, METH_O, status_finished_orders_doc},
    {"find", (PyCFunction)(void (*)(void))status_find, METH_FASTCALL, status_find_doc},
    {"find_coid", (PyCFunction)(void (*)(void))status_find_coid, METH_FASTCALL, status_find_coid_doc},
    {"verify", (PyCFunction)status_verify, METH_NOARGS, status_verify_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef status_members[] = {
    {"keep", T_PYSSIZET, offsetof(srv_status, keep), READONLY, "finished orders kept per account"},
    {NULL, 0, 0, 0, NULL},
};

static int status_init(srv_status *st, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"keep", "coid_key_bits", NULL};
    PyObject *keep_arg = NULL; /* required: optional to the parser, as no required keyword-only one precedes one */
    Py_ssize_t keep;
    int bits = 64;

    if (st->ready) {
        PyErr_SetString(PyExc_TypeError, "an OrderStatus is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$Oi:OrderStatus", kwlist, &keep_arg, &bits))
        return -1;
    if (!keep_arg) {
        PyErr_SetString(PyExc_TypeError, "OrderStatus() missing required keyword-only argument: 'keep'");
        return -1;
    }
    if ((keep = PyNumber_AsSsize_t(keep_arg, PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return -1;
    if (keep < 0) {
        PyErr_SetString(PyExc_ValueError, "OrderStatus: keep is 0 or more");
        return -1;
    }
    if (bits < 1 || bits > 64) {
        PyErr_SetString(PyExc_ValueError, "OrderStatus: coid_key_bits is 1 to 64");
        return -1;
    }
    st->keep = keep;
    st->coid_key_bits = bits;
    st->ready = 1;
    return 0;
}

static void status_drop_rec(void *r, void *arg)
{
    (void)arg;
    Py_DECREF((PyObject *)r);
}

static void status_forget_rec(void *r, void *arg) /* an index that holds no reference */
{
    (void)r;
    (void)arg;
}

static void status_drop_account(void *account, void *arg)
{
    struct status_account *a = account;

    (void)arg;
    for (Py_ssize_t i = 0; i < a->finished.n; i++)
        Py_DECREF(a->finished.items[i]);
    PyMem_Free(a->finished.items);
    PyMem_Free(a);
}

static void status_dealloc(srv_status *st)
{
    /* The records first: an open one's list runs through its account's. */
    srv_idmap_clear(&st->coids, status_forget_rec, NULL);
    srv_idmap_clear(&st->open, status_drop_rec, NULL);
    srv_idmap_clear(&st->accounts, status_drop_account, NULL);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

PyTypeObject srv_status_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.OrderStatus",
    .tp_basicsize = sizeof(srv_status),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("OrderStatus(*, keep, coid_key_bits=64): every account's open orders and its last `keep` "
                        "finished ones, as the Router's events tell them (see csrc/binding/status.c); "
                        "coid_key_bits below 64 makes client order ids' keys clash, for tests."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)status_init,
    .tp_dealloc = (destructor)status_dealloc,
    .tp_methods = status_methods,
    .tp_members = status_members,
};
