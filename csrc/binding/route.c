/*
 * route.c - Router: the engine's events, routed and answered.
 *
 * The Router takes the engine thread's events itself, a batch at a time
 * (route_ready(): through the runner's function table, from the runner it
 * is attached to), when the dispatcher (pyengine/server/dispatch.py) asks:
 * at the end of a Poller turn, on the engine thread's wake-up, or from the
 * dispatcher's greenlet; Router.route() routes a batch given. For each event
 * this file finds the request it answers (the command's tag: the session's
 * Link, then its pending request), keeps the Ledger (owners, open and
 * in-flight orders), keeps the market data (books.c) and answers the events
 * of ordinary traffic itself -- acks, fills, cancels answering their owner
 * -- with frames built in frame.c.
 *
 * The rest goes to Python through the RouterEvents callbacks (see
 * pyengine/server/seam.py), each looked up once when the Router is built:
 * `cancelled` for a cancel by someone other than the owner, a mass cancel's
 * parts, or an order nobody holds; `modified`, `rejected`, `trading_state`,
 * `mass_cancelled` (a CANCEL_ALL's end), `snapshot_done`, `state_hash`; `accepted_late` for an order accepted after
 * its session closed; `accepted_unowned` and `unowned_gone` for orders no
 * session holds (a replica's, or recovered ones not claimed yet).
 *
 * Given an OrderStatus (status.c), every order's status follows the same
 * events, whoever holds the order.
 *
 * With a LatencyTrace on the Ledger (trace.c), route() stamps when it took
 * its events, each traced order's ack or reject once queued, and hands the
 * engine's batch stamps (RUNNER_EV_BATCH) to it.
 */
#include "server.h"

#include <errno.h>
#include <structmember.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    srv_ledger *ledger;
    srv_status *status; /* NULL: no order status kept */
    struct srv_md md;
    PyObject *md_tables;   /* the tuple md borrows from */
    PyObject *symbols_json, *sides_json, *reasons_json; /* tuples of bytes: each as a JSON string */
    PyObject *dumps;
    /* RouterEvents, bound once */
    PyObject *on_cancelled, *on_modified, *on_rejected, *on_trading_state, *on_snapshot_done, *on_state_hash;
    PyObject *on_mmp;
    PyObject *on_order_limits;
    PyObject *on_mass_cancelled;
    PyObject *on_accepted_late, *on_accepted_unowned, *on_unowned_gone;
    unsigned long long trades, orders;
    /* The engine thread it drains (attach): its runner, the runner's
       function table, the eventfd that wakes its consumer (the runner's);
       the events taken go through `taken`; `flush_md` sends what they
       changed to the market data's subscribers. */
    struct runner *runner;
    const struct runner_api *api;
    int wake_fd;
    struct runner_event *taken;
    PyObject *flush_md;
    int routing; /* route_ready() is routing `taken`: the Python it calls must not take more into it */
    /* The command whose events were routed last, kept from one route() to
       the next: a command's events (a CANCEL_ALL's thousands of cancels)
       may come in more than one batch, and its request is looked up once. */
    uint64_t cmd_tag;
    int have_cmd;
    srv_link *cmd_link; /* new references, or NULL */
    PyObject *cmd_info, *cmd_key; /* its pending request, and the key it has there */
} srv_router;

static PyObject *route_session(srv_link *link)
{
    return link ? link->session : Py_None;
}

/* A call to Python with arguments built by Py_BuildValue's `fmt`. */
static int route_call_fmt(PyObject *fn, const char *fmt, ...)
{
    va_list va;
    PyObject *args, *r;

    va_start(va, fmt);
    args = Py_VaBuildValue(fmt, va);
    va_end(va);
    if (!args)
        return -1;
    r = PyObject_Call(fn, args, NULL);
    Py_DECREF(args);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *route_symbol(srv_router *self, uint32_t inst)
{
    if ((Py_ssize_t)inst >= PyTuple_GET_SIZE(self->symbols_json)) {
        PyErr_SetString(PyExc_ValueError, "an event of an unknown instrument");
        return NULL;
    }
    return PyTuple_GET_ITEM(self->symbols_json, inst);
}

static PyObject *route_side(srv_router *self, unsigned side)
{
    if (side != ENG_BUY && side != ENG_SELL) {
        PyErr_SetString(PyExc_ValueError, "an event with no side");
        return NULL;
    }
    return PyTuple_GET_ITEM(self->sides_json, side);
}

/* ---- fills --------------------------------------------------------------------- */

/* An event moves the account's counts: its open orders by `open`, its new
 * orders in flight by `in_flight`. */
static int route_count(srv_router *self, uint32_t account, int open, int in_flight)
{
    struct srv_account_counts *c = srv_ledger_counts(self->ledger, account);

    if (!c)
        return -1;
    c->open += open;
    c->in_flight += in_flight;
    return 0;
}

/* One side's fill, to the session that owns the order. */
static int route_fill(srv_router *self, srv_link *link, PyObject *coid, uint64_t oid, uint32_t inst, unsigned side,
                      int64_t price, int64_t qty, int64_t leaves, uint64_t trade_id, int maker, uint64_t seq)
{
    struct srv_frame w;
    PyObject *symbol, *side_json;
    int rc = -1;

    if (!(symbol = route_symbol(self, inst)) || !(side_json = route_side(self, side)))
        return -1;
    srv_frame_init(&w);
    if (SRV_PUT(&w, "{\"type\":\"fill\",\"order_id\":") < 0 || srv_put_u64(&w, oid) < 0 ||
        SRV_PUT(&w, ",\"client_order_id\":") < 0 || srv_put_value(&w, coid, self->dumps) < 0 ||
        SRV_PUT(&w, ",\"symbol\":") < 0 || srv_put_bytes(&w, symbol) < 0 || SRV_PUT(&w, ",\"side\":") < 0 ||
        srv_put_bytes(&w, side_json) < 0 || SRV_PUT(&w, ",\"price\":") < 0 || srv_put_i64(&w, price) < 0 ||
        SRV_PUT(&w, ",\"qty\":") < 0 || srv_put_i64(&w, qty) < 0 || SRV_PUT(&w, ",\"leaves\":") < 0 ||
        srv_put_i64(&w, leaves) < 0 || SRV_PUT(&w, ",\"trade_id\":") < 0 || srv_put_u64(&w, trade_id) < 0 ||
        (maker ? SRV_PUT(&w, ",\"liquidity\":\"maker\",\"seq\":") : SRV_PUT(&w, ",\"liquidity\":\"taker\",\"seq\":")) <
            0 ||
        srv_put_u64(&w, seq) < 0 || SRV_PUT(&w, "}") < 0)
        goto out;
    /* A finished order is forgotten before its frame is queued (the order
       in which a closing session hands its open orders on, UnclaimedOrders,
       relies on it). */
    if ((leaves == 0 && srv_ledger_forget(self->ledger, link, oid) < 0) || srv_frame_send(&w, self->ledger, link) < 0)
        goto out;
    rc = 0;
out:
    srv_frame_free(&w);
    return rc;
}

/* One side of a trade: its owner's fill, or, for an order nobody holds that
 * is now finished, events.unowned_gone(order_id). */
static int route_trade_side(srv_router *self, const struct eng_event *ev, uint64_t oid, unsigned side,
                            int64_t leaves, int maker)
{
    struct srv_open_order *o = srv_ledger_order(self->ledger, oid);
    srv_link *owner;
    PyObject *coid;
    int rc;

    if (!o) {
        if (leaves)
            return 0;
        return route_call_fmt(self->on_unowned_gone, "(K)", (unsigned long long)oid);
    }
    /* Held across calls into Python, which may detach the one and drop the
       other, and past the order's forgetting. */
    owner = (srv_link *)Py_NewRef((PyObject *)o->link);
    coid = Py_NewRef(o->coid);
    rc = route_fill(self, owner, coid, oid, ev->instrument, side, ev->price, ev->qty, leaves, ev->trade_id, maker,
                    ev->seq);
    Py_DECREF(coid);
    Py_DECREF(owner);
    return rc;
}

static int route_trade(srv_router *self, const struct eng_event *ev)
{
    self->trades++;
    if ((ev->leaves == 0 && route_count(self, ev->account, -1, 0) < 0) ||
        (ev->maker_leaves == 0 && route_count(self, ev->maker_account, -1, 0) < 0))
        return -1;
    if (self->status && srv_status_event(self->status, ev) < 0)
        return -1;
    if (route_trade_side(self, ev, ev->order_id, ev->side, ev->leaves, 0) < 0 ||
        route_trade_side(self, ev, ev->maker_order_id, ev->side == ENG_BUY ? ENG_SELL : ENG_BUY, ev->maker_leaves,
                         1) < 0)
        return -1;
    return srv_md_trade(&self->md, ev);
}

/* ---- acks ------------------------------------------------------------------------ */

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

static int route_accepted(srv_router *self, const struct eng_event *ev, uint64_t tag, srv_link *link,
                          PyObject *info)
{
    PyObject *coid, *symbol, *side_json;
    struct srv_frame w;
    int rc = -1;

    self->orders++;
    if (ev->order_id > self->ledger->known_oid)
        self->ledger->known_oid = ev->order_id;
    if (route_count(self, ev->account, 1, 0) < 0 ||
        (self->status && srv_status_event(self->status, ev) < 0))
        return -1;
    coid = route_event_coid(ev);
    if (!coid)
        return -1;
    if (!link || link->closed) {
        /* Nobody's yet (a replica applying its shard's log), or its session
         * has gone: Python decides what becomes of it. */
        if (self->ledger->meters.trace)
            srv_trace_dropped(self->ledger->meters.trace, tag);
        rc = link ? route_call_fmt(self->on_accepted_late, "(OKkkO)", link->session,
                                   (unsigned long long)ev->order_id, (unsigned long)ev->instrument,
                                   (unsigned long)ev->account, coid)
                  : route_call_fmt(self->on_accepted_unowned, "(KkkO)", (unsigned long long)ev->order_id,
                                   (unsigned long)ev->instrument, (unsigned long)ev->account, coid);
        Py_DECREF(coid);
        return rc;
    }
    if (!(symbol = route_symbol(self, ev->instrument)) || !(side_json = route_side(self, ev->side)) ||
        srv_ledger_own(self->ledger, link, ev->order_id, ev->instrument, coid) < 0) {
        Py_DECREF(coid);
        return -1;
    }
    srv_frame_init(&w);
    if (SRV_PUT(&w, "{\"type\":\"ack\",\"req_id\":") < 0 ||
        srv_put_value(&w, info ? PyTuple_GET_ITEM(info, 1) : Py_None, self->dumps) < 0 ||
        SRV_PUT(&w, ",\"order_id\":") < 0 || srv_put_u64(&w, ev->order_id) < 0 ||
        SRV_PUT(&w, ",\"client_order_id\":") < 0 || srv_put_value(&w, coid, self->dumps) < 0 ||
        SRV_PUT(&w, ",\"symbol\":") < 0 || srv_put_bytes(&w, symbol) < 0 || SRV_PUT(&w, ",\"side\":") < 0 ||
        srv_put_bytes(&w, side_json) < 0 || SRV_PUT(&w, ",\"price\":") < 0 ||
        (ev->price ? srv_put_i64(&w, ev->price) : SRV_PUT(&w, "null")) < 0 || SRV_PUT(&w, ",\"qty\":") < 0 ||
        srv_put_i64(&w, ev->qty) < 0 || SRV_PUT(&w, ",\"seq\":") < 0 || srv_put_u64(&w, ev->seq) < 0 ||
        SRV_PUT(&w, "}") < 0 || srv_frame_send(&w, self->ledger, link) < 0)
        goto out;
    srv_meters_acked(&self->ledger->meters, tag);
    if (self->ledger->meters.trace)
        srv_trace_routed(self->ledger->meters.trace, tag, ev->seq, link);
    rc = 0;
out:
    srv_frame_free(&w);
    Py_DECREF(coid);
    return rc;
}

/* ---- cancels --------------------------------------------------------------------- */

/*
 * A cancel answered here in the usual case -- the owner's session is known,
 * and either it asked or nobody did (an IOC's rest, an expiry, a self-trade
 * prevention) -- and by events.cancelled in the others.
 */
static int route_cancelled(srv_router *self, const struct eng_event *ev, srv_link *link, PyObject *info, int first)
{
    PyObject *req_id = Py_None, *coid;
    struct srv_open_order *o;
    srv_link *owner;
    struct srv_frame w;
    int rc = -1;

    if (route_count(self, ev->account, -1, 0) < 0 ||
        (self->status && srv_status_event(self->status, ev) < 0))
        return -1;
    o = srv_ledger_order(self->ledger, ev->order_id);
    owner = o ? o->link : NULL;
    if (info && first) {
        int mass = PyUnicode_Compare(PyTuple_GET_ITEM(info, 0), srv_names.mass_cancel);

        if (mass == -1 && PyErr_Occurred())
            return -1;
        req_id = mass == 0 ? NULL : PyTuple_GET_ITEM(info, 1);
    }
    Py_XINCREF(owner); /* held across calls into Python, which may detach it */
    if (!owner || !req_id || (req_id != Py_None && owner != link) ||
        ev->reason >= PyTuple_GET_SIZE(self->reasons_json)) {
        rc = route_call_fmt(self->on_cancelled, "(OKLiKOOO)", route_session(owner), (unsigned long long)ev->order_id,
                            (long long)ev->leaves, (int)ev->reason, (unsigned long long)ev->seq, route_session(link),
                            info ? info : Py_None, first ? Py_True : Py_False);
        Py_XDECREF(owner);
        return rc;
    }
    coid = Py_NewRef(o->coid); /* the order is forgotten before the frame is queued */
    srv_frame_init(&w);
    if (SRV_PUT(&w, "{\"type\":\"cancelled\",\"req_id\":") < 0 ||
        srv_put_value(&w, owner == link ? req_id : Py_None, self->dumps) < 0 || SRV_PUT(&w, ",\"order_id\":") < 0 ||
        srv_put_u64(&w, ev->order_id) < 0 || SRV_PUT(&w, ",\"client_order_id\":") < 0 ||
        srv_put_value(&w, coid, self->dumps) < 0 || SRV_PUT(&w, ",\"leaves\":") < 0 ||
        srv_put_i64(&w, ev->leaves) < 0 || SRV_PUT(&w, ",\"reason\":") < 0 ||
        srv_put_bytes(&w, PyTuple_GET_ITEM(self->reasons_json, ev->reason)) < 0 || SRV_PUT(&w, ",\"seq\":") < 0 ||
        srv_put_u64(&w, ev->seq) < 0 || SRV_PUT(&w, "}") < 0)
        goto out;
    /* Forgotten before the frame is queued (see route_fill). */
    if (srv_ledger_forget(self->ledger, owner, ev->order_id) < 0 || srv_frame_send(&w, self->ledger, owner) < 0)
        goto out;
    rc = 0;
out:
    srv_frame_free(&w);
    Py_DECREF(coid);
    Py_DECREF(owner);
    return rc;
}

/* ---- the rest: Python's ---------------------------------------------------------- */

static int route_python(srv_router *self, const struct eng_event *ev, uint64_t tag, srv_link *link, PyObject *info,
                        int first)
{
    PyObject *s = route_session(link), *i = info ? info : Py_None;
    int rc;

    switch (ev->type) {
    case ENG_EV_MODIFIED: {
        srv_link *owner = srv_ledger_owner(self->ledger, ev->order_id);

        if (self->status && srv_status_event(self->status, ev) < 0)
            return -1;
        Py_XINCREF(owner);
        rc = route_call_fmt(self->on_modified, "(OKLLOKOOO)", route_session(owner), (unsigned long long)ev->order_id,
                            (long long)ev->price, (long long)ev->qty,
                            (ev->flags & ENG_EV_F_PRIORITY_KEPT) ? Py_True : Py_False, (unsigned long long)ev->seq,
                            s, i, first ? Py_True : Py_False);
        Py_XDECREF(owner);
        return rc;
    }
    case ENG_EV_REJECTED: {
        struct srv_trace *trace;

        if (ev->reason < ENG_ERR__COUNT)
            self->ledger->meters.rejects[ev->reason]++;
        rc = route_call_fmt(self->on_rejected, "(OOiy#KK)", s, i, (int)ev->reason, ev->coid,
                            (Py_ssize_t)sizeof(ev->coid), (unsigned long long)ev->order_id,
                            (unsigned long long)ev->seq);
        /* A traced order's answer may be its reject; with its session gone
           there is nothing to write. The trace is looked up after the call:
           the callback may have let go of the LatencyTrace. */
        trace = self->ledger->meters.trace;
        if (trace && rc == 0 && link && !link->closed)
            srv_trace_routed(trace, tag, ev->seq, link);
        else if (trace)
            srv_trace_dropped(trace, tag);
        return rc;
    }
    case ENG_EV_STATE:
        return route_call_fmt(self->on_trading_state, "(OOkOK)", s, i, (unsigned long)ev->instrument,
                              ev->qty == ENG_STATE_HALTED ? Py_True : Py_False, (unsigned long long)ev->seq);
    case ENG_EV_MMP:
        return route_call_fmt(self->on_mmp, "(OOkkLLLOK)", s, i, (unsigned long)ev->account,
                              (unsigned long)ev->instrument, (long long)ev->qty, (long long)ev->price,
                              (long long)ev->leaves, (ev->flags & ENG_EV_F_TRIPPED) ? Py_True : Py_False,
                              (unsigned long long)ev->seq);
    case ENG_EV_MASS_CANCELLED: {
        PyObject *all = (ev->flags & ENG_EV_F_ALL_INSTRUMENTS) ? Py_True : Py_False;
        PyObject *account = (ev->flags & ENG_EV_F_ALL_ACCOUNTS) ? Py_NewRef(Py_None)
                                                                : PyLong_FromUnsignedLong(ev->account);

        if (!account)
            return -1;
        return route_call_fmt(self->on_mass_cancelled, "(OONkOLiK)", s, i, account, (unsigned long)ev->instrument,
                              all, (long long)ev->qty, (int)ev->reason, (unsigned long long)ev->seq);
    }
    case ENG_EV_LIMITS:
        return route_call_fmt(self->on_order_limits, "(OOkLLK)", s, i, (unsigned long)ev->instrument,
                              (long long)ev->qty, (long long)ev->price, (unsigned long long)ev->seq);
    case RUNNER_EV_SNAPSHOT:
        return route_call_fmt(self->on_snapshot_done, "(OOKL)", s, i, (unsigned long long)ev->seq,
                              (long long)ev->leaves);
    case RUNNER_EV_STATE_HASH:
        return route_call_fmt(self->on_state_hash, "(KKOK)", (unsigned long long)ev->seq,
                              (unsigned long long)ev->order_id, ev->qty ? Py_True : Py_False,
                              (unsigned long long)ev->maker_order_id);
    case RUNNER_EV_BATCH:
        if (self->ledger->meters.trace)
            srv_trace_batch(self->ledger->meters.trace, ev);
        return 0;
    default:
        return 0; /* nothing the server knows: ignored */
    }
}

/* ---- the loop -------------------------------------------------------------------- */

/*
 * The Link that sent a command (borrowed from the Ledger, or NULL if it is
 * gone) and the request it answers, in link->pending (a new reference, or
 * NULL if none), which keeps it until its command's last event is routed
 * (route_end); a new order's answer ends its flight (its account's count,
 * its client order id's).
 */
static int route_request(srv_router *self, const struct eng_event *ev, uint64_t tag, srv_link **link,
                         PyObject **info)
{
    PyObject *key, *v;
    int rc = 0, kind;

    *link = NULL;
    *info = NULL;
    key = PyLong_FromUnsignedLongLong(tag >> 32);
    if (!key)
        return -1;
    v = PyDict_GetItemWithError(self->ledger->links, key);
    Py_DECREF(key);
    if (!v)
        return PyErr_Occurred() ? -1 : 0;
    *link = (srv_link *)v;
    key = PyLong_FromUnsignedLongLong(tag & 0xFFFFFFFFu);
    if (!key)
        return -1;
    v = PyDict_GetItemWithError((*link)->pending, key);
    if (!v) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0;
    }
    *info = Py_NewRef(v);
    Py_XSETREF(self->cmd_key, key); /* for route_end */
    kind = PyUnicode_Compare(PyTuple_GET_ITEM(v, 0), srv_names.new_order);
    if (kind == -1 && PyErr_Occurred())
        return -1;
    if (kind == 0)
        rc = route_count(self, ev->account, 0, -1);
    if (kind == 0 && rc == 0 && PyUnicode_Check(PyTuple_GET_ITEM(v, 2)))
        rc = srv_link_landed(*link, PyTuple_GET_ITEM(v, 2));
    return rc;
}

/* The current command's events are all routed: its request leaves its
 * Link's pending (once: the next command's first event ends it too, should
 * its last not have been marked). */
static int route_end(srv_router *self)
{
    int rc;

    if (!self->cmd_info)
        return 0;
    Py_CLEAR(self->cmd_info);
    rc = PyDict_DelItem(self->cmd_link->pending, self->cmd_key);
    Py_CLEAR(self->cmd_key);
    if (rc < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear(); /* gone already */
        rc = 0;
    }
    return rc;
}

/* Route the n events of `evs`: 0, or -1 with an exception set (the events
 * after the one that failed are not routed). */
static int route_events(srv_router *self, const struct runner_event *evs, Py_ssize_t n)
{
    int rc = 0;

    if (self->ledger->meters.trace)
        srv_trace_popped(self->ledger->meters.trace);
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        const struct eng_event *ev = &evs[i].ev;
        int first;

        if (self->ledger->catch_up_seq && ev->seq >= self->ledger->catch_up_seq)
            self->ledger->catch_up_seq = 0; /* every answer before it is routed */
        if (ev->type == ENG_EV_LEVEL) {
            /* Never the first event of a command: no request to look up. */
            rc = srv_md_level(&self->md, ev);
            if (rc == 0 && (ev->flags & RUNNER_EV_F_LAST))
                rc = route_end(self);
            continue;
        }
        first = !self->have_cmd || evs[i].tag != self->cmd_tag;
        if (first) {
            if (route_end(self) < 0) {
                rc = -1;
                break;
            }
            self->have_cmd = 1;
            self->cmd_tag = evs[i].tag;
            Py_CLEAR(self->cmd_link);
            rc = route_request(self, ev, self->cmd_tag, &self->cmd_link, &self->cmd_info);
            Py_XINCREF(self->cmd_link); /* held while its events are routed */
            if (rc < 0)
                break;
        }
        switch (ev->type) {
        case ENG_EV_TRADE:
            rc = route_trade(self, ev);
            break;
        case ENG_EV_ACCEPTED:
            rc = route_accepted(self, ev, evs[i].tag, self->cmd_link, self->cmd_info);
            break;
        case ENG_EV_CANCELLED:
            rc = route_cancelled(self, ev, self->cmd_link, self->cmd_info, first);
            break;
        default:
            rc = route_python(self, ev, evs[i].tag, self->cmd_link, self->cmd_info, first);
            break;
        }
        if (rc == 0 && (ev->flags & RUNNER_EV_F_LAST))
            rc = route_end(self);
    }
    return rc < 0 ? -1 : 0;
}

PyDoc_STRVAR(route_route_doc, "route($self, events, n, /)\n--\n\n"
                              "Route the first n records of `events` (a buffer of struct runner_event).");

static PyObject *route_route(srv_router *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t n;
    int rc;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "route takes (events, n)");
        return NULL;
    }
    if (!self->ledger) {
        PyErr_SetString(PyExc_ValueError, "the Router is not initialised");
        return NULL;
    }
    n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (self->routing) {
        PyErr_SetString(PyExc_RuntimeError, "route called from the Python its own routing calls");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (n < 0 || (size_t)n > (size_t)view.len / sizeof(struct runner_event)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "n is more records than the buffer holds");
        return NULL;
    }
    self->routing = 1;
    rc = route_events(self, view.buf, n);
    self->routing = 0;
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- draining the engine thread ---------------------------------------------------- */

enum { ROUTE_TAKE = 4096 }; /* events taken from the output ring at a time */

PyDoc_STRVAR(route_attach_doc,
             "attach($self, runner, api, flush_market_data, /)\n--\n\n"
             "Drain the runner at address `runner` (a struct runner *) through the struct runner_api at\n"
             "address `api` (runner_api()); `flush_market_data` is called after a batch that changed what\n"
             "subscribers see. The runner must outlive the attachment: detach() before it is destroyed.");

static PyObject *route_attach(srv_router *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct runner *runner;
    const struct runner_api *api;

    if (nargs != 3 || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "attach takes (runner, api, flush_market_data)");
        return NULL;
    }
    if (!self->ledger) {
        PyErr_SetString(PyExc_ValueError, "the Router is not initialised");
        return NULL;
    }
    if (srv_runner_addresses(args[0], args[1], &runner, &api) < 0)
        return NULL;
    if (!self->taken && !(self->taken = PyMem_Malloc(ROUTE_TAKE * sizeof(*self->taken))))
        return PyErr_NoMemory();
    self->runner = runner;
    self->api = api;
    self->wake_fd = api->event_fd(runner); /* the runner's own: non-blocking */
    Py_XSETREF(self->flush_md, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static void route_unattach(srv_router *self)
{
    self->runner = NULL;
    self->api = NULL;
    self->wake_fd = -1;
    Py_CLEAR(self->flush_md);
}

PyDoc_STRVAR(route_detach_doc, "detach($self, /)\n--\n\n"
                               "Drain nothing from now on (the runner is about to be destroyed).");

static PyObject *route_detach(srv_router *self, PyObject *Py_UNUSED(ignored))
{
    route_unattach(self);
    Py_RETURN_NONE;
}

static int route_attached(srv_router *self)
{
    if (self->runner)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the Router is attached to no runner");
    return -1;
}

/*
 * Take what the output ring holds. When it holds nothing, the consumer's
 * wake-up is cleared and the ring looked at once more: the runner arms the
 * wake-up as it finds the ring empty, and the engine thread writes the
 * eventfd at its next publish, so clearing it before that last look loses
 * no wake-up, and the event loop is not woken for events taken here.
 */
static size_t route_take(srv_router *self)
{
    uint64_t count;
    size_t n = self->api->poll(self->runner, self->taken, ROUTE_TAKE);

    if (n)
        return n;
    /* Non-blocking: EAGAIN when it was not written. */
    while (read(self->wake_fd, &count, sizeof(count)) < 0 && errno == EINTR)
        ;
    return self->api->poll(self->runner, self->taken, ROUTE_TAKE);
}

PyDoc_STRVAR(route_route_ready_doc,
             "route_ready($self, /)\n--\n\n"
             "Take up to `batch` events from the attached runner's output ring and route them, then flush\n"
             "the market data if they changed it; how many were taken. 0: none, and the wake-up armed (the\n"
             "eventfd turns readable when events come). The runner's failure and its end wake the consumer\n"
             "without an event, and a 0 may have taken that wake-up: after a 0, look at journal_error (and,\n"
             "stopping, at whether the runner still runs) before waiting on the eventfd. RuntimeError when\n"
             "called from the Python the routing calls (it would take events into the batch being routed).");

static PyObject *route_route_ready(srv_router *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *flush_md, *r = NULL;
    size_t n;
    int rc;

    if (route_attached(self) < 0)
        return NULL;
    if (self->routing) {
        PyErr_SetString(PyExc_RuntimeError, "route_ready called from the Python its own routing calls");
        return NULL;
    }
    flush_md = Py_NewRef(self->flush_md); /* the Python the routing calls may detach the Router */
    n = route_take(self);
    self->routing = 1;
    rc = n ? route_events(self, self->taken, (Py_ssize_t)n) : 0;
    self->routing = 0;
    if (rc < 0)
        goto out;
    if (PyDict_GET_SIZE(self->md.changes) || PyDict_GET_SIZE(self->md.trades)) {
        if (!(r = PyObject_CallNoArgs(flush_md)))
            goto out;
        Py_DECREF(r);
    }
    r = PyLong_FromSize_t(n);
out:
    Py_DECREF(flush_md);
    return r;
}

static PyObject *route_get_journal_error(srv_router *self, void *Py_UNUSED(closure))
{
    if (route_attached(self) < 0)
        return NULL;
    return PyLong_FromLong(self->api->journal_error(self->runner));
}

/* ---- the type -------------------------------------------------------------------- */

/* Every instrument has its books (a 3-tuple of dicts), its subscriber set
 * and its symbol; every constant string is bytes. */
static int route_check_shapes(srv_router *self)
{
    PyObject *books = self->md.books, *subs = self->md.subscribers;
    Py_ssize_t n = PyTuple_GET_SIZE(self->symbols_json);

    if (!PyList_Check(books) || !PyList_Check(subs) || !PyDict_Check(self->md.changes) ||
        !PyDict_Check(self->md.trades) || PyList_GET_SIZE(books) != n || PyList_GET_SIZE(subs) != n ||
        PyTuple_GET_SIZE(self->sides_json) != ENG_SELL + 1)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(books, i);

        if (!PyTuple_Check(b) || PyTuple_GET_SIZE(b) != 3 || !PyDict_Check(PyTuple_GET_ITEM(b, ENG_BUY)) ||
            !PyDict_Check(PyTuple_GET_ITEM(b, ENG_SELL)) || !PySet_Check(PyList_GET_ITEM(subs, i)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(self->symbols_json, i)))
            return 0;
    }
    for (Py_ssize_t i = ENG_BUY; i <= ENG_SELL; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(self->sides_json, i)))
            return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->reasons_json); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(self->reasons_json, i)))
            return 0;
    return 1;
}

static int route_clear(srv_router *self);

static int route_init(srv_router *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ledger", "events", "market_data", "symbols_json", "sides_json", "reasons_json",
                             "dumps", "status", NULL};
    PyObject *ledger = NULL, *events = NULL, *md = NULL, *symbols = NULL, *sides = NULL, *reasons = NULL;
    PyObject *dumps = NULL, *status = Py_None;

    if (self->ledger) {
        PyErr_SetString(PyExc_TypeError, "a Router is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O!OO!O!O!O!OO:Router", kwlist, &srv_ledger_type, &ledger, &events,
                                     &PyTuple_Type, &md, &PyTuple_Type, &symbols, &PyTuple_Type, &sides,
                                     &PyTuple_Type, &reasons, &dumps, &status))
        return -1;
    if (!ledger || !events || !md || !symbols || !sides || !reasons || !dumps) {
        PyErr_SetString(PyExc_TypeError, "Router: every argument but status is required");
        return -1;
    }
    if (status != Py_None && !PyObject_TypeCheck(status, &srv_status_type)) {
        PyErr_SetString(PyExc_TypeError, "Router: status is an OrderStatus or None");
        return -1;
    }
    /* Made by __new__ alone, they have no tables to keep. */
    if (!((srv_ledger *)ledger)->links) {
        PyErr_SetString(PyExc_ValueError, "Router: the Ledger is not initialised");
        return -1;
    }
    if (status != Py_None && !((srv_status *)status)->ready) {
        PyErr_SetString(PyExc_ValueError, "Router: the OrderStatus is not initialised");
        return -1;
    }
    if (PyTuple_GET_SIZE(md) != 4) {
        PyErr_SetString(PyExc_ValueError, "Router: market_data is MarketData.router_tables()");
        return -1;
    }
    self->md_tables = Py_NewRef(md);
    self->md.books = PyTuple_GET_ITEM(md, 0);
    self->md.subscribers = PyTuple_GET_ITEM(md, 1);
    self->md.changes = PyTuple_GET_ITEM(md, 2);
    self->md.trades = PyTuple_GET_ITEM(md, 3);
    self->symbols_json = Py_NewRef(symbols);
    self->sides_json = Py_NewRef(sides);
    self->reasons_json = Py_NewRef(reasons);
    self->dumps = Py_NewRef(dumps);
    if (!route_check_shapes(self)) {
        PyErr_SetString(PyExc_ValueError, "Router: not the market data's or the JSON strings' shape");
        goto fail;
    }
    if (!(self->on_cancelled = srv_method(events, "cancelled")) ||
        !(self->on_modified = srv_method(events, "modified")) ||
        !(self->on_rejected = srv_method(events, "rejected")) ||
        !(self->on_trading_state = srv_method(events, "trading_state")) ||
        !(self->on_mmp = srv_method(events, "mmp")) ||
        !(self->on_order_limits = srv_method(events, "order_limits")) ||
        !(self->on_mass_cancelled = srv_method(events, "mass_cancelled")) ||
        !(self->on_snapshot_done = srv_method(events, "snapshot_done")) ||
        !(self->on_state_hash = srv_method(events, "state_hash")) ||
        !(self->on_accepted_late = srv_method(events, "accepted_late")) ||
        !(self->on_accepted_unowned = srv_method(events, "accepted_unowned")) ||
        !(self->on_unowned_gone = srv_method(events, "unowned_gone")))
        goto fail;
    self->status = status == Py_None ? NULL : (srv_status *)Py_NewRef(status);
    self->ledger = (srv_ledger *)Py_NewRef(ledger);
    return 0;
fail:
    route_clear(self); /* what it took is let go: an __init__ may follow */
    memset(&self->md, 0, sizeof(self->md));
    return -1;
}

static int route_traverse(srv_router *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->status);
    Py_VISIT(self->md_tables);
    Py_VISIT(self->symbols_json);
    Py_VISIT(self->sides_json);
    Py_VISIT(self->reasons_json);
    Py_VISIT(self->dumps);
    Py_VISIT(self->on_cancelled);
    Py_VISIT(self->on_modified);
    Py_VISIT(self->on_rejected);
    Py_VISIT(self->on_trading_state);
    Py_VISIT(self->on_mmp);
    Py_VISIT(self->on_order_limits);
    Py_VISIT(self->on_mass_cancelled);
    Py_VISIT(self->cmd_link);
    Py_VISIT(self->cmd_info);
    Py_VISIT(self->on_snapshot_done);
    Py_VISIT(self->on_state_hash);
    Py_VISIT(self->on_accepted_late);
    Py_VISIT(self->on_accepted_unowned);
    Py_VISIT(self->on_unowned_gone);
    Py_VISIT(self->flush_md);
    return 0;
}

static int route_clear(srv_router *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->status);
    Py_CLEAR(self->md_tables);
    Py_CLEAR(self->symbols_json);
    Py_CLEAR(self->sides_json);
    Py_CLEAR(self->reasons_json);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->on_cancelled);
    Py_CLEAR(self->on_modified);
    Py_CLEAR(self->on_rejected);
    Py_CLEAR(self->on_trading_state);
    Py_CLEAR(self->on_mmp);
    Py_CLEAR(self->on_order_limits);
    Py_CLEAR(self->on_mass_cancelled);
    Py_CLEAR(self->cmd_link);
    Py_CLEAR(self->cmd_info);
    Py_CLEAR(self->cmd_key);
    self->have_cmd = 0;
    Py_CLEAR(self->on_snapshot_done);
    Py_CLEAR(self->on_state_hash);
    Py_CLEAR(self->on_accepted_late);
    Py_CLEAR(self->on_accepted_unowned);
    Py_CLEAR(self->on_unowned_gone);
    route_unattach(self);
    return 0;
}

static void route_dealloc(srv_router *self)
{
    PyObject_GC_UnTrack(self);
    route_clear(self);
    PyMem_Free(self->taken);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef route_methods[] = {
    {"route", (PyCFunction)(void (*)(void))route_route, METH_FASTCALL, route_route_doc},
    {"attach", (PyCFunction)(void (*)(void))route_attach, METH_FASTCALL, route_attach_doc},
    {"detach", (PyCFunction)route_detach, METH_NOARGS, route_detach_doc},
    {"route_ready", (PyCFunction)route_route_ready, METH_NOARGS, route_route_ready_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *route_get_batch(srv_router *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    return PyLong_FromLong(ROUTE_TAKE);
}

static PyGetSetDef route_getset[] = {
    {"batch", (getter)route_get_batch, NULL, "the most events route_ready takes at a time", NULL},
    {"journal_error", (getter)route_get_journal_error, NULL,
     "the attached runner's journal error: 0 while it works, else its errno", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef route_members[] = {
    {"trades", T_ULONGLONG, offsetof(srv_router, trades), READONLY, "trades routed"},
    {"orders", T_ULONGLONG, offsetof(srv_router, orders), READONLY, "orders accepted"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject srv_router_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Router",
    .tp_basicsize = sizeof(srv_router),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Router(*, ledger, events, market_data, symbols_json, sides_json, reasons_json, dumps, "
                        "status=None):\n"
                        "the engine's events, routed (see csrc/binding/route.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)route_init,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_traverse = (traverseproc)route_traverse,
    .tp_clear = (inquiry)route_clear,
    .tp_methods = route_methods,
    .tp_members = route_members,
    .tp_getset = route_getset,
};
