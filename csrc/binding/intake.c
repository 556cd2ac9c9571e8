/*
 * intake.c - Intake: every request frame, decoded once; the per-order
 * requests (new_order, cancel, modify) carried out here.
 *
 * A session's reader hands each frame to Intake.take(link, frame). The frame
 * is decoded by orjson (once). A well-formed per-order request is this
 * file's from then on, with every rule the server applies to it: the rate
 * limit, the login, the instrument's limits and the account's open-order
 * limit, the session's ownership of what it cancels or modifies. It answers
 * what it refuses through the IntakeEvents callbacks (`refused`, `rejected`,
 * `over_rate`) and queues what it accepts: the pending request in the Link,
 * the in-flight count in the Ledger, the engine command in the
 * CommandBuffer.
 *
 * Everything else goes to Python, decoded: `request(session, message)` for
 * a message that is not a per-order request or not a well-formed one (its
 * error reply is protocol.parse's), `undecodable(session, error)` for a
 * frame that is not JSON.
 */
#include "server.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    srv_ledger *ledger;
    srv_commands *commands;
    PyObject *instruments; /* dict: symbol -> instrument number */
    PyObject *sides, *order_types, *tifs, *stps; /* dicts: request string -> code */
    PyObject *loads;
    /* IntakeEvents, bound once */
    PyObject *on_request, *on_undecodable, *on_refused, *on_rejected, *on_over_rate;
    int64_t *max_qty, *max_notional; /* by instrument; 0: no limit */
    Py_ssize_t n_instruments;
    long long max_open;
} srv_intake;

/* ---- reading the request ------------------------------------------------------ */

/* msg[key], borrowed; NULL for a missing key or null. *err on error. */
static PyObject *intake_get(PyObject *msg, PyObject *key, int *err)
{
    PyObject *v = PyDict_GetItemWithError(msg, key);

    if (!v && PyErr_Occurred())
        *err = 1;
    return v == Py_None ? NULL : v;
}

/* An exact int in [lo, hi], into *out; 0 if it is anything else. */
static int intake_int(PyObject *o, long long lo, long long hi, long long *out)
{
    int overflow;
    long long v;

    if (!o || !PyLong_CheckExact(o))
        return 0;
    v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    if (v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* An exact str found in `table` (a dict of small ints), or `dflt` if o is
 * NULL (missing or null) and dflt >= 0; 0 if neither. */
static int intake_code(PyObject *o, PyObject *table, long dflt, long *out)
{
    PyObject *v;

    if (!o) {
        *out = dflt;
        return dflt >= 0;
    }
    if (!PyUnicode_CheckExact(o))
        return 0;
    v = PyDict_GetItemWithError(table, o);
    if (!v) {
        PyErr_Clear();
        return 0;
    }
    *out = PyLong_AsLong(v);
    if (*out == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* A client order id (1 to ENG_COID_LEN printable ASCII characters) into
 * NUL-padded bytes; all zero for NULL. 0 if it is not one. */
static int intake_coid(PyObject *o, char out[ENG_COID_LEN])
{
    const char *p;
    Py_ssize_t n;

    memset(out, 0, ENG_COID_LEN);
    if (!o)
        return 1;
    if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_ASCII(o))
        return 0;
    n = PyUnicode_GET_LENGTH(o);
    if (n < 1 || n > ENG_COID_LEN)
        return 0;
    p = (const char *)PyUnicode_1BYTE_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    memcpy(out, p, (size_t)n);
    return 1;
}

/* ---- a request ----------------------------------------------------------------- */

/* A per-order request, read and checked for form; not yet carried out. */
struct intake_req {
    struct eng_cmd cmd;
    PyObject *kind;   /* interned "new_order", "cancel" or "modify" */
    PyObject *req_id; /* borrowed from the message */
    PyObject *coid;   /* borrowed from the message; NULL for none */
    int has_price;    /* new_order: a limit price was given */
    int keep_price, keep_qty; /* modify */
};

/* new_order's fields, as protocol._parse_new_order reads them; 0 if any is off. */
static int intake_new_order(srv_intake *self, PyObject *msg, struct intake_req *r, int *err)
{
    long type, tif, side, stp;
    long long price = 0, qty;
    int post_only = 0;
    PyObject *v, *inst;

    if (!intake_code(intake_get(msg, srv_names.order_type, err), self->order_types, ENG_LIMIT, &type) || *err)
        return 0;
    if (!intake_code(intake_get(msg, srv_names.tif, err), self->tifs, type == ENG_MARKET ? ENG_IOC : ENG_GTC, &tif) ||
        *err)
        return 0;
    v = intake_get(msg, srv_names.post_only, err);
    if (*err || (v && !PyBool_Check(v)))
        return 0;
    post_only = v == Py_True;
    v = intake_get(msg, srv_names.price, err);
    if (*err)
        return 0;
    r->has_price = v != NULL;
    if (r->has_price && !intake_int(v, INT64_MIN, INT64_MAX, &price))
        return 0;
    /* the order's shape (_args.check_order_shape) */
    if (type == ENG_MARKET ? (r->has_price || tif == ENG_GTC || post_only)
                           : (!r->has_price || (post_only && tif != ENG_GTC)))
        return 0;
    v = intake_get(msg, srv_names.symbol, err);
    if (*err || !v || !PyUnicode_CheckExact(v))
        return 0;
    inst = PyDict_GetItemWithError(self->instruments, v);
    if (!inst && PyErr_Occurred()) {
        *err = 1;
        return 0;
    }
    if (!intake_code(intake_get(msg, srv_names.side, err), self->sides, -1, &side) || *err ||
        !intake_int(intake_get(msg, srv_names.qty, err), INT64_MIN, INT64_MAX, &qty) || *err ||
        !intake_code(intake_get(msg, srv_names.stp, err), self->stps, ENG_STP_NONE, &stp) || *err)
        return 0;
    r->coid = intake_get(msg, srv_names.coid, err);
    if (*err || !intake_coid(r->coid, r->cmd.coid))
        return 0;
    /* An unknown symbol is the engine's reject: a number it never has. */
    r->cmd.instrument = inst ? (uint32_t)PyLong_AsUnsignedLong(inst) : UINT32_MAX;
    if (PyErr_Occurred()) {
        *err = 1;
        return 0;
    }
    r->cmd.type = ENG_CMD_NEW;
    r->cmd.side = (uint8_t)side;
    r->cmd.order_type = (uint8_t)type;
    r->cmd.tif = (uint8_t)tif;
    r->cmd.stp = (uint8_t)stp;
    r->cmd.flags = post_only ? ENG_CMD_F_POST_ONLY : 0;
    r->cmd.price = price;
    r->cmd.qty = qty;
    r->kind = srv_names.new_order;
    return 1;
}

/* The order a cancel or modify names: exactly one of order_id (> 0) and
 * client_order_id, as protocol._target reads them; 0 if off. */
static int intake_target(PyObject *msg, struct intake_req *r, int *err)
{
    PyObject *v = intake_get(msg, srv_names.order_id, err);
    long long order_id = 0;

    if (*err || (v && !intake_int(v, 1, INT64_MAX, &order_id)))
        return 0;
    r->coid = intake_get(msg, srv_names.coid, err);
    if (*err || !intake_coid(r->coid, r->cmd.coid) || (v == NULL) == (r->coid == NULL))
        return 0;
    r->cmd.order_id = (uint64_t)order_id;
    return 1;
}

static int intake_cancel(PyObject *msg, struct intake_req *r, int *err)
{
    if (!intake_target(msg, r, err))
        return 0;
    r->cmd.type = ENG_CMD_CANCEL;
    r->kind = srv_names.cancel;
    return 1;
}

static int intake_modify(PyObject *msg, struct intake_req *r, int *err)
{
    PyObject *qty, *price;
    long long q = 0, p = 0;

    if (!intake_target(msg, r, err))
        return 0;
    qty = intake_get(msg, srv_names.qty, err);
    price = *err ? NULL : intake_get(msg, srv_names.price, err);
    if (*err || (qty && !intake_int(qty, INT64_MIN, INT64_MAX, &q)) ||
        (price && !intake_int(price, INT64_MIN, INT64_MAX, &p)) || (!qty && !price))
        return 0;
    r->cmd.type = ENG_CMD_MODIFY;
    r->cmd.qty = q;
    r->cmd.price = p;
    r->keep_qty = !qty;
    r->keep_price = !price;
    r->kind = srv_names.modify;
    return 1;
}

/* ---- answers ------------------------------------------------------------------- */

static int intake_call(PyObject *fn, PyObject *const *args, size_t n)
{
    PyObject *r = PyObject_Vectorcall(fn, args, n, NULL);

    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* An error reply decided here: events.refused(session, req_id, code, message). */
static int intake_refused(srv_intake *self, srv_link *link, PyObject *req_id, const char *code, PyObject *message)
{
    PyObject *c = PyUnicode_FromString(code);
    int rc = -1;

    if (c && message) {
        PyObject *args[] = {link->session, req_id, c, message};

        rc = intake_call(self->on_refused, args, 4);
    }
    Py_XDECREF(c);
    Py_XDECREF(message);
    return rc;
}

/* A reject decided here: events.rejected(session, req_id, code, message,
 * client_order_id, order_id, limit). Steals `message`. */
static int intake_rejected(srv_intake *self, srv_link *link, struct intake_req *r, const char *code,
                           PyObject *message, int limit)
{
    PyObject *c = PyUnicode_FromString(code);
    PyObject *oid = r->cmd.order_id ? PyLong_FromUnsignedLongLong(r->cmd.order_id) : Py_NewRef(Py_None);
    int rc = -1;

    if (c && message && oid) {
        PyObject *args[] = {link->session, r->req_id, c, message, r->coid ? r->coid : Py_None, oid,
                            limit ? Py_True : Py_False};

        rc = intake_call(self->on_rejected, args, 7);
    }
    Py_XDECREF(c);
    Py_XDECREF(oid);
    Py_XDECREF(message);
    return rc;
}

/* The instrument's and the account's limits on a new order (1 when none is
 * broken, 0 when one is and the reject is sent, -1 on error). */
static int intake_limits(srv_intake *self, srv_link *link, struct intake_req *r)
{
    uint32_t inst = r->cmd.instrument;
    long long open, flying;

    if ((Py_ssize_t)inst < self->n_instruments) {
        int64_t max = self->max_qty[inst];

        if (max && r->cmd.qty > max)
            return intake_rejected(self, link, r, "max_qty_exceeded",
                                   PyUnicode_FromFormat("qty %lld is over the instrument's limit of %lld",
                                                        (long long)r->cmd.qty, (long long)max),
                                   1);
        max = self->max_notional[inst];
        if (max && r->has_price) {
            long long notional;
            /* An overflow is over the limit when the product is positive. */
            int over = __builtin_mul_overflow(r->cmd.price, r->cmd.qty, &notional)
                           ? (r->cmd.price > 0) == (r->cmd.qty > 0)
                           : notional > max;

            if (over) {
                /* The product as Python writes it, however large. */
                PyObject *p = PyLong_FromLongLong(r->cmd.price), *q = PyLong_FromLongLong(r->cmd.qty);
                PyObject *pq = p && q ? PyNumber_Multiply(p, q) : NULL;
                PyObject *msg = pq ? PyUnicode_FromFormat(
                                         "notional %S (price x qty) is over the instrument's limit of %lld", pq,
                                         (long long)max)
                                   : NULL;

                Py_XDECREF(p);
                Py_XDECREF(q);
                Py_XDECREF(pq);
                return intake_rejected(self, link, r, "max_notional_exceeded", msg, 1);
            }
        }
    }
    if (!self->max_open)
        return 1;
    if (srv_count_get(self->ledger->open, link->account, &open) < 0 ||
        srv_count_get(self->ledger->in_flight, link->account, &flying) < 0)
        return -1;
    if (open + flying < self->max_open)
        return 1;
    return intake_rejected(self, link, r, "max_open_orders_exceeded",
                           PyUnicode_FromFormat("account %lu has %lld open orders, the most it may have",
                                                (unsigned long)link->account, self->max_open),
                           1);
}

/* A cancel or modify by order id: the order is the session's, or it is an
 * administrator's (the engine checks accounts; sessions of one account are
 * kept apart here). 1 if so, 0 when the reject is sent, -1 on error. */
static int intake_owned(srv_intake *self, srv_link *link, struct intake_req *r)
{
    srv_link *owner;
    int err = 0;

    if (!r->cmd.order_id)
        return 1;
    owner = srv_ledger_owner(self->ledger, r->cmd.order_id, &err);
    if (err)
        return -1;
    if (!owner || owner == link || link->admin)
        return 1;
    r->coid = NULL; /* the reject names the order by id */
    return intake_rejected(self, link, r, "not_owner", PyUnicode_FromString("order belongs to another session"), 0);
}

/* Carry out a well-formed per-order request (0 when done or refused, -1 on error). */
static int intake_carry_out(srv_intake *self, srv_link *link, struct intake_req *r)
{
    struct runner_cmd *rc;
    struct timespec ts;
    uint64_t tag;
    int ok;

    if (!srv_link_take_token(link)) {
        PyObject *args[] = {link->session, r->req_id};

        return intake_call(self->on_over_rate, args, 2);
    }
    if (!link->logged_in)
        return intake_refused(self, link, r->req_id, "not_logged_in", PyUnicode_FromString("log in first"));
    r->cmd.account = link->account;
    ok = r->cmd.type == ENG_CMD_NEW ? intake_limits(self, link, r) : intake_owned(self, link, r);
    if (ok <= 0)
        return ok;
    if (r->cmd.type != ENG_CMD_NEW) {
        if (r->cmd.order_id) {
            memset(r->cmd.coid, 0, sizeof(r->cmd.coid)); /* by order id */
        }
        r->cmd.flags = link->admin ? ENG_CMD_F_ANY_ACCOUNT : 0;
        if (r->keep_price)
            r->cmd.flags |= ENG_CMD_F_KEEP_PRICE;
        if (r->keep_qty)
            r->cmd.flags |= ENG_CMD_F_KEEP_QTY;
    }
    if (srv_link_tag(link, r->kind, r->req_id, r->coid ? r->coid : Py_None, &tag) < 0)
        return -1;
    if (r->cmd.type == ENG_CMD_NEW && srv_count_add(self->ledger->in_flight, link->account, 1) < 0)
        return -1;
    rc = srv_commands_reserve(self->commands); /* room: take() checked */
    clock_gettime(CLOCK_REALTIME, &ts);
    rc->cmd = r->cmd;
    rc->cmd.ts = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    rc->tag = tag;
    return 0;
}

/* Python's: events.request(session, message). */
static int intake_to_python(srv_intake *self, srv_link *link, PyObject *msg)
{
    PyObject *args[] = {link->session, msg};

    return intake_call(self->on_request, args, 2);
}

PyDoc_STRVAR(intake_take_doc,
             "take($self, link, frame, /)\n--\n\n"
             "Carry out one request frame of link's session (see csrc/binding/intake.c).\n"
             "False, having done nothing, when the command buffer is full: make room, then take it again.");

static PyObject *intake_take(srv_intake *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *msg, *typ, *req_id;
    struct intake_req r;
    srv_link *link;
    int err = 0, ok, rc;

    if (nargs != 2 || !PyObject_TypeCheck(args[0], &srv_link_type) || !((srv_link *)args[0])->pending) {
        PyErr_SetString(PyExc_TypeError, "take takes (link, frame)");
        return NULL;
    }
    if (!self->ledger) {
        PyErr_SetString(PyExc_ValueError, "the Intake is not initialised");
        return NULL;
    }
    link = (srv_link *)args[0];
    if (self->commands->n >= self->commands->cap)
        Py_RETURN_FALSE;
    msg = PyObject_CallOneArg(self->loads, args[1]);
    if (!msg) {
        PyObject *t, *exc, *tb;
        PyObject *cargs[2];

        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Fetch(&t, &exc, &tb);
        PyErr_NormalizeException(&t, &exc, &tb);
        cargs[0] = link->session;
        cargs[1] = exc;
        rc = intake_call(self->on_undecodable, cargs, 2);
        Py_XDECREF(t);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        if (rc < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    ok = 0;
    memset(&r, 0, sizeof(r));
    if (PyDict_CheckExact(msg)) {
        typ = intake_get(msg, srv_names.type, &err);
        req_id = err ? NULL : PyDict_GetItemWithError(msg, srv_names.req_id);
        if (err || (!req_id && PyErr_Occurred()))
            goto fail;
        r.req_id = req_id ? req_id : Py_None;
        if (typ && PyUnicode_CheckExact(typ) &&
            (r.req_id == Py_None || PyLong_CheckExact(r.req_id) || PyUnicode_CheckExact(r.req_id))) {
            if (typ == srv_names.new_order || PyUnicode_Compare(typ, srv_names.new_order) == 0)
                ok = intake_new_order(self, msg, &r, &err);
            else if (PyUnicode_Compare(typ, srv_names.cancel) == 0)
                ok = intake_cancel(msg, &r, &err);
            else if (PyUnicode_Compare(typ, srv_names.modify) == 0)
                ok = intake_modify(msg, &r, &err);
            if (err || PyErr_Occurred())
                goto fail;
        }
    }
    rc = ok ? intake_carry_out(self, link, &r) : intake_to_python(self, link, msg);
    Py_DECREF(msg);
    if (rc < 0)
        return NULL;
    Py_RETURN_TRUE;
fail:
    Py_DECREF(msg);
    return NULL;
}

/* ---- the type ---------------------------------------------------------------- */

/* A list of ints >= 0, one per instrument, into a new C array. */
static int64_t *intake_limits_array(PyObject *seq, Py_ssize_t n, const char *what)
{
    int64_t *out;

    if (!PyList_Check(seq) || PyList_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_ValueError, "Intake: %s must be a list with one int per instrument", what);
        return NULL;
    }
    out = PyMem_Calloc((size_t)(n ? n : 1), sizeof(*out));
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v;

        if (!intake_int(PyList_GET_ITEM(seq, i), 0, INT64_MAX, &v)) {
            PyErr_Format(PyExc_ValueError, "Intake: %s holds an int >= 0 per instrument", what);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = v;
    }
    return out;
}

static int intake_init(srv_intake *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ledger",  "commands", "events",       "instruments", "sides", "order_types",
                             "tifs",    "stps",     "max_qty",      "max_notional", "max_open", "loads", NULL};
    PyObject *ledger, *commands, *events, *instruments, *sides, *types, *tifs, *stps, *max_qty, *max_notional, *loads;
    long long max_open;

    if (self->ledger) {
        PyErr_SetString(PyExc_TypeError, "an Intake is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$O!O!OO!O!O!O!O!OOLO:Intake", kwlist, &srv_ledger_type, &ledger,
                                     &srv_commands_type, &commands, &events, &PyDict_Type, &instruments,
                                     &PyDict_Type, &sides, &PyDict_Type, &types, &PyDict_Type, &tifs, &PyDict_Type,
                                     &stps, &max_qty, &max_notional, &max_open, &loads))
        return -1;
    if (max_open < 0 || !PyCallable_Check(loads)) {
        PyErr_SetString(PyExc_ValueError, "Intake: max_open >= 0, loads callable");
        return -1;
    }
    self->n_instruments = PyDict_GET_SIZE(instruments);
    if (!(self->max_qty = intake_limits_array(max_qty, self->n_instruments, "max_qty")) ||
        !(self->max_notional = intake_limits_array(max_notional, self->n_instruments, "max_notional")))
        return -1;
    if (!(self->on_request = srv_method(events, "request")) ||
        !(self->on_undecodable = srv_method(events, "undecodable")) ||
        !(self->on_refused = srv_method(events, "refused")) || !(self->on_rejected = srv_method(events, "rejected")) ||
        !(self->on_over_rate = srv_method(events, "over_rate")))
        return -1;
    self->ledger = (srv_ledger *)Py_NewRef(ledger);
    self->commands = (srv_commands *)Py_NewRef(commands);
    self->instruments = Py_NewRef(instruments);
    self->sides = Py_NewRef(sides);
    self->order_types = Py_NewRef(types);
    self->tifs = Py_NewRef(tifs);
    self->stps = Py_NewRef(stps);
    self->loads = Py_NewRef(loads);
    self->max_open = max_open;
    return 0;
}

static int intake_traverse(srv_intake *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->commands);
    Py_VISIT(self->instruments);
    Py_VISIT(self->sides);
    Py_VISIT(self->order_types);
    Py_VISIT(self->tifs);
    Py_VISIT(self->stps);
    Py_VISIT(self->loads);
    Py_VISIT(self->on_request);
    Py_VISIT(self->on_undecodable);
    Py_VISIT(self->on_refused);
    Py_VISIT(self->on_rejected);
    Py_VISIT(self->on_over_rate);
    return 0;
}

static int intake_clear(srv_intake *self)
{
    Py_CLEAR(self->ledger);
    Py_CLEAR(self->commands);
    Py_CLEAR(self->instruments);
    Py_CLEAR(self->sides);
    Py_CLEAR(self->order_types);
    Py_CLEAR(self->tifs);
    Py_CLEAR(self->stps);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->on_request);
    Py_CLEAR(self->on_undecodable);
    Py_CLEAR(self->on_refused);
    Py_CLEAR(self->on_rejected);
    Py_CLEAR(self->on_over_rate);
    return 0;
}

static void intake_dealloc(srv_intake *self)
{
    PyObject_GC_UnTrack(self);
    intake_clear(self);
    PyMem_Free(self->max_qty);
    PyMem_Free(self->max_notional);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef intake_methods[] = {
    {"take", (PyCFunction)(void (*)(void))intake_take, METH_FASTCALL, intake_take_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_intake_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Intake",
    .tp_basicsize = sizeof(srv_intake),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Intake(*, ledger, commands, events, instruments, sides, order_types, tifs, stps, max_qty,\n"
                        "max_notional, max_open, loads): request frames (see csrc/binding/intake.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)intake_init,
    .tp_dealloc = (destructor)intake_dealloc,
    .tp_traverse = (traverseproc)intake_traverse,
    .tp_clear = (inquiry)intake_clear,
    .tp_methods = intake_methods,
};
