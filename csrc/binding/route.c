/*
 * route.c - pyengine._route: the server dispatcher's event loop in C.
 *
 * The dispatcher (pyengine/server/dispatch.py) takes events from the engine
 * thread in batches and, for each, updates the server's bookkeeping and
 * replies to the sessions concerned. In Python that loop was about a third
 * of the event-loop thread's time per order. Router.route() runs it here for
 * the events of ordinary traffic -- acks, fills, cancels answering the
 * canceller, book levels, trades -- building each reply's JSON frame itself,
 * byte for byte what orjson makes of the same dict (the constant strings
 * come from orjson, and any string this file does not copy verbatim goes
 * through orjson too). Everything else (a cancel by someone other than the
 * owner, a mass cancel's parts, rejects, modifies, trading states,
 * snapshots, sessions that closed) goes to the Dispatcher's Python methods,
 * called with the same arguments as from the Python loop before.
 *
 * The bookkeeping stays in the server's own Python objects (dicts, lists,
 * sessions), so the rest of the server sees no difference. The GIL is held
 * throughout; nothing here blocks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "pyengine.h"

/* What the Router is built from, by position in its `tables` tuple. */
enum route_table {
    R_DISPATCHER,     /* the Dispatcher: its methods take the rare events */
    R_SESSIONS,       /* dict: session id -> Session */
    R_OWNERS,         /* dict: open order id -> Session */
    R_OPEN,           /* Counter: account -> open orders */
    R_IN_FLIGHT,      /* Counter: account -> new orders not answered */
    R_UNCLAIMED,      /* UnclaimedOrders */
    R_BOOKS,          /* MarketData.books: per instrument, ({}, bids, asks) */
    R_SUBSCRIBERS,    /* MarketData.subscribers: per instrument, a set */
    R_CHANGES,        /* MarketData._changes */
    R_MD_TRADES,      /* MarketData._trades */
    R_SYMBOLS_JSON,   /* tuple of bytes: each symbol as a JSON string */
    R_SIDES_JSON,     /* tuple of bytes by side code (0 unused) */
    R_REASONS_JSON,   /* tuple of bytes by cancel reason code */
    R_DUMPS,          /* orjson.dumps */
    R__COUNT
};

typedef struct {
    PyObject_HEAD
    PyObject *tables; /* strong; the pointers below borrow from it */
    PyObject *dispatcher, *sessions, *owners, *open, *in_flight, *unclaimed;
    PyObject *books, *subscribers, *changes, *md_trades;
    PyObject *symbols_json, *sides_json, *reasons_json, *dumps;
    unsigned long long trades, orders;
} route_router;

/* Interned names, made once when the module is first imported. */
static struct {
    PyObject *pending, *closed, *orders, *coids, *send, *new_order, *mass_cancel;
} route_names;

/* ---- JSON frames ------------------------------------------------------- */

/* A frame being written: the 4-byte length first, then the JSON body. */
struct route_writer {
    char *buf;
    size_t len, cap;
    char local[512];
};

static void route_writer_init(struct route_writer *w)
{
    w->buf = w->local;
    w->len = 4;
    w->cap = sizeof(w->local);
}

static void route_writer_free(struct route_writer *w)
{
    if (w->buf != w->local)
        PyMem_Free(w->buf);
}

static int route_put(struct route_writer *w, const char *s, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = (w->len + n) * 2;
        char *b = PyMem_Malloc(cap);

        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(b, w->buf, w->len);
        route_writer_free(w);
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return 0;
}

#define PUT(w, lit) route_put((w), (lit), sizeof(lit) - 1)

static int route_put_bytes(struct route_writer *w, PyObject *bytes)
{
    return route_put(w, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
}

static int route_put_i64(struct route_writer *w, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);

    return route_put(w, tmp, (size_t)n);
}

static int route_put_u64(struct route_writer *w, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);

    return route_put(w, tmp, (size_t)n);
}

/* Any value, as orjson writes it. */
static int route_put_dumped(route_router *self, struct route_writer *w, PyObject *o)
{
    PyObject *b = PyObject_CallOneArg(self->dumps, o);
    int rc;

    if (!b)
        return -1;
    rc = PyBytes_Check(b) ? route_put_bytes(w, b) : -1;
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
    Py_DECREF(b);
    return rc;
}

/*
 * A string of printable ASCII, quoted, with '"' and '\\' escaped: what
 * orjson writes for it. Anything else goes through orjson itself.
 */
static int route_put_str(route_router *self, struct route_writer *w, PyObject *s)
{
    const char *p;
    Py_ssize_t n;

    if (!PyUnicode_IS_ASCII(s))
        return route_put_dumped(self, w, s);
    p = (const char *)PyUnicode_1BYTE_DATA(s);
    n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return route_put_dumped(self, w, s);
    if (PUT(w, "\"") < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((p[i] == '"' || p[i] == '\\') && route_put(w, "\\", 1) < 0)
            return -1;
        if (route_put(w, p + i, 1) < 0)
            return -1;
    }
    return PUT(w, "\"");
}

/* A request id (None, an int or a string) or a client order id (None or a string). */
static int route_put_value(route_router *self, struct route_writer *w, PyObject *o)
{
    if (o == Py_None)
        return PUT(w, "null");
    if (PyUnicode_CheckExact(o))
        return route_put_str(self, w, o);
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);

        if (!overflow && !(v == -1 && PyErr_Occurred()))
            return route_put_i64(w, v);
        PyErr_Clear();
    }
    return route_put_dumped(self, w, o);
}

/* The finished frame as bytes: the body's length goes in front. */
static PyObject *route_frame(struct route_writer *w)
{
    uint32_t n = (uint32_t)(w->len - 4);

    w->buf[0] = (char)(n >> 24);
    w->buf[1] = (char)(n >> 16);
    w->buf[2] = (char)(n >> 8);
    w->buf[3] = (char)n;
    return PyBytes_FromStringAndSize(w->buf, (Py_ssize_t)w->len);
}

/* session.send(frame): the Session's own method, with its limits. */
static int route_send(struct route_writer *w, PyObject *session)
{
    PyObject *frame = route_frame(w);
    PyObject *r;

    if (!frame)
        return -1;
    r = PyObject_CallMethodOneArg(session, route_names.send, frame);
    Py_DECREF(frame);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- bookkeeping ------------------------------------------------------- */

/* counter[key] += delta, for a Counter (a dict whose missing keys count 0). */
static int route_count(PyObject *counter, uint32_t key, long delta)
{
    PyObject *k = PyLong_FromUnsignedLong(key);
    PyObject *v, *nv;
    long cur = 0;
    int rc;

    if (!k)
        return -1;
    v = PyDict_GetItemWithError(counter, k);
    if (v) {
        cur = PyLong_AsLong(v);
        if (cur == -1 && PyErr_Occurred()) {
            Py_DECREF(k);
            return -1;
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    nv = PyLong_FromLong(cur + delta);
    rc = nv ? PyDict_SetItem(counter, k, nv) : -1;
    Py_XDECREF(nv);
    Py_DECREF(k);
    return rc;
}

/* The value of a dict at an integer key, borrowed; NULL (no exception) if none. */
static PyObject *route_get_u64(PyObject *dict, uint64_t key, int *err)
{
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    PyObject *v;

    if (!k) {
        *err = 1;
        return NULL;
    }
    v = PyDict_GetItemWithError(dict, k);
    Py_DECREF(k);
    if (!v && PyErr_Occurred())
        *err = 1;
    return v;
}

/* session.closed as 0/1, or -1 on error. */
static int route_closed(PyObject *session)
{
    PyObject *v = PyObject_GetAttr(session, route_names.closed);
    int r;

    if (!v)
        return -1;
    r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* The client order id of one of a session's orders (a new reference): the
 * second item of session.orders[oid], or None. */
static PyObject *route_order_coid(PyObject *session, uint64_t oid)
{
    PyObject *orders = PyObject_GetAttr(session, route_names.orders);
    PyObject *o, *coid;
    int err = 0;

    if (!orders)
        return NULL;
    o = route_get_u64(orders, oid, &err);
    if (err) {
        Py_DECREF(orders);
        return NULL;
    }
    coid = (o && PyTuple_Check(o) && PyTuple_GET_SIZE(o) == 2) ? PyTuple_GET_ITEM(o, 1) : Py_None;
    Py_INCREF(coid);
    Py_DECREF(orders);
    return coid;
}

/* Dispatcher._forget: the order is finished; drop it from the owners, the
 * session's orders and, if it still points there, its client order id. */
static int route_forget(route_router *self, PyObject *session, uint64_t oid)
{
    PyObject *key = PyLong_FromUnsignedLongLong(oid);
    PyObject *orders = NULL, *coids = NULL, *o = NULL;
    int rc = -1;

    if (!key)
        return -1;
    if (PyDict_DelItem(self->owners, key) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            goto out;
        PyErr_Clear();
    }
    orders = PyObject_GetAttr(session, route_names.orders);
    if (!orders)
        goto out;
    o = PyDict_GetItemWithError(orders, key);
    if (!o) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto out;
    }
    Py_INCREF(o);
    if (PyDict_DelItem(orders, key) < 0)
        goto out;
    if (PyTuple_Check(o) && PyTuple_GET_SIZE(o) == 2 && PyTuple_GET_ITEM(o, 1) != Py_None) {
        PyObject *coid = PyTuple_GET_ITEM(o, 1);
        PyObject *cur;

        coids = PyObject_GetAttr(session, route_names.coids);
        if (!coids)
            goto out;
        cur = PyDict_GetItemWithError(coids, coid);
        if (!cur && PyErr_Occurred())
            goto out;
        if (cur) {
            int same = PyObject_RichCompareBool(cur, key, Py_EQ);

            if (same < 0 || (same && PyDict_DelItem(coids, coid) < 0))
                goto out;
        }
    }
    rc = 0;
out:
    Py_XDECREF(o);
    Py_XDECREF(coids);
    Py_XDECREF(orders);
    Py_DECREF(key);
    return rc;
}

/* ---- market data (MarketData.level and MarketData.trade) --------------- */

static int route_md_level(route_router *self, const struct eng_event *ev)
{
    Py_ssize_t n = PyList_GET_SIZE(self->books);
    PyObject *book, *price, *subs;
    int rc = -1;

    if ((Py_ssize_t)ev->instrument >= n || (Py_ssize_t)ev->instrument >= PyList_GET_SIZE(self->subscribers) ||
        (ev->side != ENG_BUY && ev->side != ENG_SELL)) {
        PyErr_SetString(PyExc_ValueError, "a level event of an unknown instrument or side");
        return -1;
    }
    book = PyList_GET_ITEM(self->books, ev->instrument);
    subs = PyList_GET_ITEM(self->subscribers, ev->instrument);
    if (!PyTuple_Check(book) || PyTuple_GET_SIZE(book) != 3 || !PySet_Check(subs)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's books or subscribers changed shape");
        return -1;
    }
    book = PyTuple_GET_ITEM(book, ev->side);
    if (!PyDict_Check(book)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's books changed shape");
        return -1;
    }
    price = PyLong_FromLongLong(ev->price);
    if (!price)
        return -1;
    /* A level event: qty is the level's total, leaves its order count. */
    if (ev->qty) {
        PyObject *level = Py_BuildValue("(LL)", (long long)ev->qty, (long long)ev->leaves);

        if (!level || PyDict_SetItem(book, price, level) < 0) {
            Py_XDECREF(level);
            goto out;
        }
        Py_DECREF(level);
    } else if (PyDict_DelItem(book, price) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            goto out;
        PyErr_Clear();
    }
    if (PySet_GET_SIZE(subs)) {
        PyObject *inst = PyLong_FromUnsignedLong(ev->instrument);
        PyObject *changes, *key, *val;

        if (!inst)
            goto out;
        changes = PyDict_GetItemWithError(self->changes, inst);
        if (!changes) {
            if (PyErr_Occurred() || !(changes = PyDict_New()) ||
                PyDict_SetItem(self->changes, inst, changes) < 0) {
                Py_XDECREF(changes);
                Py_DECREF(inst);
                goto out;
            }
            Py_DECREF(changes); /* the dict holds it */
        }
        Py_DECREF(inst);
        key = Py_BuildValue("(iL)", (int)ev->side, (long long)ev->price);
        val = Py_BuildValue("(LL)", (long long)ev->qty, (long long)ev->leaves);
        if (!key || !val || PyDict_SetItem(changes, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            goto out;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    rc = 0;
out:
    Py_DECREF(price);
    return rc;
}

static int route_md_trade(route_router *self, const struct eng_event *ev)
{
    PyObject *inst, *list, *item, *subs;
    int rc;

    if ((Py_ssize_t)ev->instrument >= PyList_GET_SIZE(self->subscribers)) {
        PyErr_SetString(PyExc_ValueError, "a trade of an unknown instrument");
        return -1;
    }
    subs = PyList_GET_ITEM(self->subscribers, ev->instrument);
    if (!PySet_Check(subs)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's subscribers changed shape");
        return -1;
    }
    if (!PySet_GET_SIZE(subs))
        return 0;
    inst = PyLong_FromUnsignedLong(ev->instrument);
    if (!inst)
        return -1;
    list = PyDict_GetItemWithError(self->md_trades, inst);
    if (!list) {
        if (PyErr_Occurred() || !(list = PyList_New(0)) || PyDict_SetItem(self->md_trades, inst, list) < 0) {
            Py_XDECREF(list);
            Py_DECREF(inst);
            return -1;
        }
        Py_DECREF(list);
    }
    Py_DECREF(inst);
    item = Py_BuildValue("(KLLi)", (unsigned long long)ev->trade_id, (long long)ev->price,
                         (long long)ev->qty, (int)ev->side);
    if (!item)
        return -1;
    rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* ---- replies ----------------------------------------------------------- */

static PyObject *route_symbol(route_router *self, uint32_t inst)
{
    if ((Py_ssize_t)inst >= PyTuple_GET_SIZE(self->symbols_json)) {
        PyErr_SetString(PyExc_ValueError, "an event of an unknown instrument");
        return NULL;
    }
    return PyTuple_GET_ITEM(self->symbols_json, inst);
}

static PyObject *route_side(route_router *self, unsigned side)
{
    if (side != ENG_BUY && side != ENG_SELL) {
        PyErr_SetString(PyExc_ValueError, "an event with no side");
        return NULL;
    }
    return PyTuple_GET_ITEM(self->sides_json, side);
}

/* Dispatcher._fill: one side's fill, to the session that owns the order. */
static int route_fill(route_router *self, PyObject *session, uint64_t oid, uint32_t inst, unsigned side,
                      int64_t price, int64_t qty, int64_t leaves, uint64_t trade_id, int maker, uint64_t seq)
{
    struct route_writer w;
    PyObject *symbol, *side_json, *coid;
    int rc = -1;

    if (!(symbol = route_symbol(self, inst)) || !(side_json = route_side(self, side)))
        return -1;
    coid = route_order_coid(session, oid);
    if (!coid)
        return -1;
    route_writer_init(&w);
    if (PUT(&w, "{\"type\":\"fill\",\"order_id\":") < 0 || route_put_u64(&w, oid) < 0 ||
        PUT(&w, ",\"client_order_id\":") < 0 || route_put_value(self, &w, coid) < 0 ||
        PUT(&w, ",\"symbol\":") < 0 || route_put_bytes(&w, symbol) < 0 || PUT(&w, ",\"side\":") < 0 ||
        route_put_bytes(&w, side_json) < 0 || PUT(&w, ",\"price\":") < 0 || route_put_i64(&w, price) < 0 ||
        PUT(&w, ",\"qty\":") < 0 || route_put_i64(&w, qty) < 0 || PUT(&w, ",\"leaves\":") < 0 ||
        route_put_i64(&w, leaves) < 0 || PUT(&w, ",\"trade_id\":") < 0 || route_put_u64(&w, trade_id) < 0 ||
        (maker ? PUT(&w, ",\"liquidity\":\"maker\",\"seq\":") : PUT(&w, ",\"liquidity\":\"taker\",\"seq\":")) < 0 ||
        route_put_u64(&w, seq) < 0 || PUT(&w, "}") < 0 || route_send(&w, session) < 0)
        goto out;
    rc = leaves == 0 ? route_forget(self, session, oid) : 0;
out:
    route_writer_free(&w);
    Py_DECREF(coid);
    return rc;
}

/* An order nobody holds (its session closed before its ack, or it was
 * recovered and not claimed yet) filled completely: UnclaimedOrders.gone. */
static int route_unclaimed_gone(route_router *self, uint64_t oid)
{
    int any = PyObject_IsTrue(self->unclaimed);
    PyObject *r;

    if (any <= 0)
        return any;
    r = PyObject_CallMethod(self->unclaimed, "gone", "K", (unsigned long long)oid);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int route_trade(route_router *self, const struct runner_event *re)
{
    const struct eng_event *ev = &re->ev;
    PyObject *taker, *maker;
    int err = 0;

    self->trades++;
    if (ev->leaves == 0 && route_count(self->open, ev->account, -1) < 0)
        return -1;
    if (ev->maker_leaves == 0 && route_count(self->open, ev->maker_account, -1) < 0)
        return -1;
    taker = route_get_u64(self->owners, ev->order_id, &err);
    if (err)
        return -1;
    if (taker) {
        int rc;

        Py_INCREF(taker);
        rc = route_fill(self, taker, ev->order_id, ev->instrument, ev->side, ev->price, ev->qty, ev->leaves,
                        ev->trade_id, 0, ev->seq);
        Py_DECREF(taker);
        if (rc < 0)
            return -1;
    } else if (ev->leaves == 0 && route_unclaimed_gone(self, ev->order_id) < 0) {
        return -1;
    }
    maker = route_get_u64(self->owners, ev->maker_order_id, &err);
    if (err)
        return -1;
    if (maker) {
        int rc;

        Py_INCREF(maker);
        rc = route_fill(self, maker, ev->maker_order_id, ev->instrument, ev->side == ENG_BUY ? ENG_SELL : ENG_BUY, ev->price, ev->qty,
                        ev->maker_leaves, ev->trade_id, 1, ev->seq);
        Py_DECREF(maker);
        if (rc < 0)
            return -1;
    } else if (ev->maker_leaves == 0 && route_unclaimed_gone(self, ev->maker_order_id) < 0) {
        return -1;
    }
    return route_md_trade(self, ev);
}

/* The client order id of an event as a str, or None (a new reference). */
static PyObject *route_event_coid(const struct eng_event *ev)
{
    size_t n = sizeof(ev->coid);

    while (n > 0 && !ev->coid[n - 1])
        n--;
    if (n == 0)
        return Py_NewRef(Py_None);
    return PyUnicode_DecodeASCII(ev->coid, (Py_ssize_t)n, "backslashreplace");
}

static int route_accepted(route_router *self, const struct eng_event *ev, PyObject *session, PyObject *info)
{
    PyObject *coid = NULL, *key = NULL, *orders = NULL, *coids = NULL, *entry = NULL, *req_id;
    PyObject *symbol, *side_json;
    struct route_writer w;
    int closed, rc = -1;

    self->orders++;
    if (route_count(self->open, ev->account, 1) < 0)
        return -1;
    coid = route_event_coid(ev);
    if (!coid)
        return -1;
    if (!session) {
        /* Nobody's yet (a replica applying its shard's log): the account's
         * next session takes it. */
        PyObject *r = PyObject_CallMethod(self->unclaimed, "add", "KkkO", (unsigned long long)ev->order_id,
                                          (unsigned long)ev->instrument, (unsigned long)ev->account, coid);

        rc = r ? 0 : -1;
        Py_XDECREF(r);
        goto out;
    }
    closed = route_closed(session);
    if (closed < 0)
        goto out;
    if (closed) {
        /* Its session has gone: Python decides (cancel it, or keep it for
         * the account's next session). */
        PyObject *r = PyObject_CallMethod(self->dispatcher, "_accepted_late", "OKkkO", session,
                                          (unsigned long long)ev->order_id, (unsigned long)ev->instrument,
                                          (unsigned long)ev->account, coid);

        rc = r ? 0 : -1;
        Py_XDECREF(r);
        goto out;
    }
    if (!(symbol = route_symbol(self, ev->instrument)) || !(side_json = route_side(self, ev->side)))
        goto out;
    key = PyLong_FromUnsignedLongLong(ev->order_id);
    orders = PyObject_GetAttr(session, route_names.orders);
    entry = Py_BuildValue("(kO)", (unsigned long)ev->instrument, coid);
    if (!key || !orders || !entry || PyDict_SetItem(self->owners, key, session) < 0 ||
        PyDict_SetItem(orders, key, entry) < 0)
        goto out;
    if (coid != Py_None) {
        coids = PyObject_GetAttr(session, route_names.coids);
        if (!coids || PyDict_SetItem(coids, coid, key) < 0)
            goto out;
    }
    req_id = info ? PyTuple_GET_ITEM(info, 1) : Py_None;
    route_writer_init(&w);
    if (PUT(&w, "{\"type\":\"ack\",\"req_id\":") < 0 || route_put_value(self, &w, req_id) < 0 ||
        PUT(&w, ",\"order_id\":") < 0 || route_put_u64(&w, ev->order_id) < 0 ||
        PUT(&w, ",\"client_order_id\":") < 0 || route_put_value(self, &w, coid) < 0 ||
        PUT(&w, ",\"symbol\":") < 0 || route_put_bytes(&w, symbol) < 0 || PUT(&w, ",\"side\":") < 0 ||
        route_put_bytes(&w, side_json) < 0 || PUT(&w, ",\"price\":") < 0 ||
        (ev->price ? route_put_i64(&w, ev->price) : PUT(&w, "null")) < 0 || PUT(&w, ",\"qty\":") < 0 ||
        route_put_i64(&w, ev->qty) < 0 || PUT(&w, ",\"seq\":") < 0 || route_put_u64(&w, ev->seq) < 0 ||
        PUT(&w, "}") < 0 || route_send(&w, session) < 0) {
        route_writer_free(&w);
        goto out;
    }
    route_writer_free(&w);
    rc = 0;
out:
    Py_XDECREF(entry);
    Py_XDECREF(coids);
    Py_XDECREF(orders);
    Py_XDECREF(key);
    Py_XDECREF(coid);
    return rc;
}

static PyObject *route_none(PyObject *o)
{
    return o ? o : Py_None;
}

/*
 * Dispatcher._cancelled for the usual case -- the owner's session is known,
 * and either it asked or nobody did (an IOC's rest, an expiry, a
 * self-trade prevention) -- and the Python method for the others.
 */
static int route_cancelled(route_router *self, const struct eng_event *ev, PyObject *session, PyObject *info,
                           int first)
{
    PyObject *owner, *req_id = Py_None, *coid, *r;
    struct route_writer w;
    int err = 0, rc = -1;

    if (route_count(self->open, ev->account, -1) < 0)
        return -1;
    owner = route_get_u64(self->owners, ev->order_id, &err);
    if (err)
        return -1;
    if (info && first) {
        int mass = PyUnicode_Compare(PyTuple_GET_ITEM(info, 0), route_names.mass_cancel);

        if (mass == -1 && PyErr_Occurred())
            return -1;
        req_id = mass == 0 ? NULL : PyTuple_GET_ITEM(info, 1);
    }
    Py_XINCREF(owner); /* held across calls into Python, which may drop it from owners */
    if (!owner || !req_id || (req_id != Py_None && owner != session) ||
        ev->reason >= PyTuple_GET_SIZE(self->reasons_json)) {
        r = PyObject_CallMethod(self->dispatcher, "_cancelled", "OKLiKOOO", route_none(owner),
                                (unsigned long long)ev->order_id, (long long)ev->leaves, (int)ev->reason,
                                (unsigned long long)ev->seq, route_none(session), route_none(info),
                                first ? Py_True : Py_False);
        Py_XDECREF(owner);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    coid = route_order_coid(owner, ev->order_id);
    if (!coid) {
        Py_DECREF(owner);
        return -1;
    }
    route_writer_init(&w);
    if (PUT(&w, "{\"type\":\"cancelled\",\"req_id\":") < 0 ||
        route_put_value(self, &w, owner == session ? req_id : Py_None) < 0 || PUT(&w, ",\"order_id\":") < 0 ||
        route_put_u64(&w, ev->order_id) < 0 || PUT(&w, ",\"client_order_id\":") < 0 ||
        route_put_value(self, &w, coid) < 0 || PUT(&w, ",\"leaves\":") < 0 || route_put_i64(&w, ev->leaves) < 0 ||
        PUT(&w, ",\"reason\":") < 0 || route_put_bytes(&w, PyTuple_GET_ITEM(self->reasons_json, ev->reason)) < 0 ||
        PUT(&w, ",\"seq\":") < 0 || route_put_u64(&w, ev->seq) < 0 || PUT(&w, "}") < 0 ||
        route_send(&w, owner) < 0)
        goto out;
    rc = route_forget(self, owner, ev->order_id);
out:
    route_writer_free(&w);
    Py_DECREF(coid);
    Py_DECREF(owner);
    return rc;
}

/* The events that are always the Python methods' (rare, and with logging). */
static int route_python(route_router *self, const struct eng_event *ev, PyObject *session, PyObject *info,
                        int first)
{
    PyObject *s = route_none(session), *i = route_none(info), *r = NULL;

    switch (ev->type) {
    case ENG_EV_MODIFIED: {
        int err = 0;
        PyObject *owner = route_get_u64(self->owners, ev->order_id, &err);

        if (err)
            return -1;
        Py_XINCREF(owner);
        r = PyObject_CallMethod(self->dispatcher, "_modified", "OKLLOKOOO", route_none(owner),
                                (unsigned long long)ev->order_id, (long long)ev->price, (long long)ev->qty,
                                (ev->flags & ENG_EV_F_PRIORITY_KEPT) ? Py_True : Py_False,
                                (unsigned long long)ev->seq, s, i, first ? Py_True : Py_False);
        Py_XDECREF(owner);
        break;
    }
    case ENG_EV_REJECTED:
        r = PyObject_CallMethod(self->dispatcher, "_rejected", "OOiy#KK", s, i, (int)ev->reason, ev->coid,
                                (Py_ssize_t)sizeof(ev->coid), (unsigned long long)ev->order_id,
                                (unsigned long long)ev->seq);
        break;
    case ENG_EV_STATE:
        r = PyObject_CallMethod(self->dispatcher, "_trading_state", "OOkOK", s, i, (unsigned long)ev->instrument,
                                ev->qty == 1 ? Py_True : Py_False, (unsigned long long)ev->seq);
        break;
    case RUNNER_EV_SNAPSHOT:
        r = PyObject_CallMethod(self->dispatcher, "_snapshot_done", "OOKL", s, i, (unsigned long long)ev->seq,
                                (long long)ev->leaves);
        break;
    case RUNNER_EV_STATE_HASH:
        r = PyObject_CallMethod(self->dispatcher, "_state_hash", "KKOK", (unsigned long long)ev->seq,
                                (unsigned long long)ev->order_id, ev->qty ? Py_True : Py_False,
                                (unsigned long long)ev->maker_order_id);
        break;
    default:
        return 0; /* nothing the server knows: as before, ignored */
    }
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/*
 * The session that sent a command (a new reference, or NULL if it is gone)
 * and the request it answers, taken from session.pending (a new reference,
 * or NULL if none).
 */
static int route_request(route_router *self, uint64_t tag, PyObject **session, PyObject **info)
{
    PyObject *pending, *key, *v;
    int err = 0, rc = -1;

    *session = *info = NULL;
    v = route_get_u64(self->sessions, tag >> 32, &err);
    if (err)
        return -1;
    if (!v)
        return 0;
    *session = Py_NewRef(v);
    pending = PyObject_GetAttr(v, route_names.pending);
    if (!pending)
        return -1;
    key = PyLong_FromUnsignedLongLong(tag & 0xFFFFFFFFu);
    if (!key)
        goto out;
    v = PyDict_GetItemWithError(pending, key);
    if (v) {
        *info = Py_NewRef(v);
        rc = PyDict_DelItem(pending, key);
        if (rc == 0 && (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 3)) {
            PyErr_SetString(PyExc_TypeError, "a pending request is not a (kind, req_id, extra) tuple");
            rc = -1;
        }
    } else {
        rc = PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(key);
out:
    Py_DECREF(pending);
    return rc;
}

PyDoc_STRVAR(route_route_doc,
             "route($self, events, n, /)\n--\n\n"
             "Route the first n records of `events` (a buffer of struct runner_event).");

static PyObject *route_route(route_router *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t n;
    const struct runner_event *evs;
    PyObject *session = NULL, *info = NULL;
    uint64_t last_tag = 0;
    int have_tag = 0, rc = 0;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "route takes (events, n)");
        return NULL;
    }
    if (!self->tables) {
        PyErr_SetString(PyExc_ValueError, "the router has no tables");
        return NULL;
    }
    n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (n < 0 || (size_t)n > (size_t)view.len / sizeof(struct runner_event)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "n is more records than the buffer holds");
        return NULL;
    }
    evs = view.buf;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        const struct eng_event *ev = &evs[i].ev;
        int first;

        if (ev->type == ENG_EV_LEVEL) {
            /* Never the first event of a command: no request to look up. */
            rc = route_md_level(self, ev);
            continue;
        }
        first = !have_tag || evs[i].tag != last_tag;
        if (first) {
            have_tag = 1;
            last_tag = evs[i].tag;
            Py_CLEAR(session);
            Py_CLEAR(info);
            rc = route_request(self, last_tag, &session, &info);
            if (rc == 0 && info) {
                int kind = PyUnicode_Compare(PyTuple_GET_ITEM(info, 0), route_names.new_order);

                if (kind == -1 && PyErr_Occurred())
                    rc = -1;
                else if (kind == 0)
                    rc = route_count(self->in_flight, ev->account, -1);
            }
            if (rc < 0)
                break;
        }
        switch (ev->type) {
        case ENG_EV_TRADE:
            rc = route_trade(self, &evs[i]);
            break;
        case ENG_EV_ACCEPTED:
            rc = route_accepted(self, ev, session, info);
            break;
        case ENG_EV_CANCELLED:
            rc = route_cancelled(self, ev, session, info, first);
            break;
        default:
            rc = route_python(self, ev, session, info, first);
            break;
        }
    }
    Py_XDECREF(session);
    Py_XDECREF(info);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the type ---------------------------------------------------------- */

static int route_check_tables(PyObject *t)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != R__COUNT)
        return 0;
    return PyDict_Check(PyTuple_GET_ITEM(t, R_SESSIONS)) && PyDict_Check(PyTuple_GET_ITEM(t, R_OWNERS)) &&
           PyDict_Check(PyTuple_GET_ITEM(t, R_OPEN)) && PyDict_Check(PyTuple_GET_ITEM(t, R_IN_FLIGHT)) &&
           PyList_Check(PyTuple_GET_ITEM(t, R_BOOKS)) && PyList_Check(PyTuple_GET_ITEM(t, R_SUBSCRIBERS)) &&
           PyDict_Check(PyTuple_GET_ITEM(t, R_CHANGES)) && PyDict_Check(PyTuple_GET_ITEM(t, R_MD_TRADES)) &&
           PyTuple_Check(PyTuple_GET_ITEM(t, R_SYMBOLS_JSON)) && PyTuple_Check(PyTuple_GET_ITEM(t, R_SIDES_JSON)) &&
           PyTuple_Check(PyTuple_GET_ITEM(t, R_REASONS_JSON)) && PyCallable_Check(PyTuple_GET_ITEM(t, R_DUMPS));
}

/* Every instrument has its books (a 3-tuple of dicts), its subscriber set
 * and its symbol; every constant string is bytes. */
static int route_check_shapes(PyObject *t)
{
    PyObject *books = PyTuple_GET_ITEM(t, R_BOOKS), *subs = PyTuple_GET_ITEM(t, R_SUBSCRIBERS);
    PyObject *symbols = PyTuple_GET_ITEM(t, R_SYMBOLS_JSON), *sides = PyTuple_GET_ITEM(t, R_SIDES_JSON);
    PyObject *reasons = PyTuple_GET_ITEM(t, R_REASONS_JSON);
    Py_ssize_t n = PyTuple_GET_SIZE(symbols);

    if (PyList_GET_SIZE(books) != n || PyList_GET_SIZE(subs) != n || PyTuple_GET_SIZE(sides) != ENG_SELL + 1)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(books, i);

        if (!PyTuple_Check(b) || PyTuple_GET_SIZE(b) != 3 || !PyDict_Check(PyTuple_GET_ITEM(b, 1)) ||
            !PyDict_Check(PyTuple_GET_ITEM(b, 2)) || !PySet_Check(PyList_GET_ITEM(subs, i)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(symbols, i)))
            return 0;
    }
    for (Py_ssize_t i = ENG_BUY; i <= ENG_SELL; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(sides, i)))
            return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(reasons); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(reasons, i)))
            return 0;
    return 1;
}

static int route_init(route_router *self, PyObject *args, PyObject *kwds)
{
    PyObject *t;

    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Router takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O:Router", &t))
        return -1;
    if (self->tables) {
        PyErr_SetString(PyExc_TypeError, "a Router is initialised once");
        return -1;
    }
    if (!route_check_tables(t) || !route_check_shapes(t)) {
        PyErr_SetString(PyExc_ValueError, "Router: not the dispatcher's tables (see enum route_table)");
        return -1;
    }
    Py_XSETREF(self->tables, Py_NewRef(t));
    self->dispatcher = PyTuple_GET_ITEM(t, R_DISPATCHER);
    self->sessions = PyTuple_GET_ITEM(t, R_SESSIONS);
    self->owners = PyTuple_GET_ITEM(t, R_OWNERS);
    self->open = PyTuple_GET_ITEM(t, R_OPEN);
    self->in_flight = PyTuple_GET_ITEM(t, R_IN_FLIGHT);
    self->unclaimed = PyTuple_GET_ITEM(t, R_UNCLAIMED);
    self->books = PyTuple_GET_ITEM(t, R_BOOKS);
    self->subscribers = PyTuple_GET_ITEM(t, R_SUBSCRIBERS);
    self->changes = PyTuple_GET_ITEM(t, R_CHANGES);
    self->md_trades = PyTuple_GET_ITEM(t, R_MD_TRADES);
    self->symbols_json = PyTuple_GET_ITEM(t, R_SYMBOLS_JSON);
    self->sides_json = PyTuple_GET_ITEM(t, R_SIDES_JSON);
    self->reasons_json = PyTuple_GET_ITEM(t, R_REASONS_JSON);
    self->dumps = PyTuple_GET_ITEM(t, R_DUMPS);
    return 0;
}

static int route_traverse(route_router *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tables);
    return 0;
}

static int route_clear(route_router *self)
{
    Py_CLEAR(self->tables);
    return 0;
}

static void route_dealloc(route_router *self)
{
    PyObject_GC_UnTrack(self);
    route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef route_methods[] = {
    {"route", (PyCFunction)(void (*)(void))route_route, METH_FASTCALL, route_route_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef route_members[] = {
    {"trades", T_ULONGLONG, offsetof(route_router, trades), READONLY, "trades routed"},
    {"orders", T_ULONGLONG, offsetof(route_router, orders), READONLY, "orders accepted"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject route_router_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._route.Router",
    .tp_basicsize = sizeof(route_router),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Router(tables): the dispatcher's event loop (see csrc/binding/route.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)route_init,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_traverse = (traverseproc)route_traverse,
    .tp_clear = (inquiry)route_clear,
    .tp_methods = route_methods,
    .tp_members = route_members,
};

static int route_exec(PyObject *module)
{
    static const char *const names[] = {"pending", "closed", "orders", "coids", "send", "new_order",
                                        "mass_cancel"};
    PyObject **slots[] = {&route_names.pending, &route_names.closed, &route_names.orders, &route_names.coids,
                          &route_names.send, &route_names.new_order, &route_names.mass_cancel};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!*slots[i] && !(*slots[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    if (PyType_Ready(&route_router_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Router", (PyObject *)&route_router_type);
}

static PyModuleDef_Slot route_slots[] = {
    {Py_mod_exec, route_exec},
    {0, NULL},
};

static struct PyModuleDef route_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyengine._route",
    .m_doc = "The server dispatcher's event loop in C (see csrc/binding/route.c).",
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = route_slots,
};

PyMODINIT_FUNC PyInit__route(void)
{
    return PyModuleDef_Init(&route_module);
}
