/*
 * calls.c - pyengine._calls: Engine.submit and Engine.cancel in C.
 *
 * One call per operation is the API most users meet first. Through cffi, its
 * Python side (keyword arguments, checks, the call, the event objects) costs
 * several times the matching itself. This CPython extension type is the base
 * class of pyengine.Engine and implements those two methods for exactly-typed
 * arguments: it calls the core through struct eng_api (the one copy of the
 * core, linked into the cffi extension) and builds the event objects itself.
 *
 * Any other call -- a numpy integer, an enum member the tables do not hold, a
 * client order id, a bad value, a closed or busy engine -- is forwarded as it
 * is to the Python implementation (Engine._submit / Engine._cancel), which
 * stays the reference for every check and error message. Events this file
 * does not decode are decoded by Engine._events. Either way the caller gets
 * the same events.
 *
 * The GIL is held throughout: a command takes well under a microsecond, less
 * than releasing and taking the GIL back would cost.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "pyengine.h"

/* The parameters of submit(), in order; the first four may be positional. */
enum calls_submit_arg {
    SUB_SYMBOL,
    SUB_SIDE,
    SUB_QTY,
    SUB_PRICE,
    SUB_TIF,
    SUB_ACCOUNT,
    SUB_COID,
    SUB_ORDER_TYPE,
    SUB_POST_ONLY,
    SUB_STP,
    SUB__COUNT
};
enum calls_cancel_arg { CAN_ORDER_ID, CAN_ACCOUNT, CAN_COID, CAN__COUNT };

/* What _attach() takes, by position in its `tables` tuple. */
enum calls_table {
    T_SYMBOLS,        /* dict: symbol -> instrument number (the Engine's own) */
    T_NAMES,          /* list: symbol by instrument number (the Engine's own) */
    T_ACCEPTED,       /* the event classes, tuple subclasses */
    T_REJECTED,
    T_TRADE,
    T_CANCELLED,
    T_LEVEL,
    T_SIDES,          /* tuple by side code: None, Side.BUY, Side.SELL */
    T_SIDE_CODE,      /* dicts: argument string -> C code */
    T_TIF_CODE,
    T_ORDER_TYPE_CODE,
    T_STP_CODE,
    T_REJECTS,        /* tuple by reject code: (reason, message) or None */
    T_CANCEL_REASONS, /* tuple by cancel reason code */
    T_DEFAULT_TIF,    /* tuple by order type code: the tif code given none */
    T__COUNT
};

typedef struct {
    PyObject_HEAD
    struct eng *eng; /* NULL when detached: every call takes the Python path */
    const struct eng_api *api;
    PyObject *tables; /* strong; the pointers below borrow from it */
    PyObject *symbols, *names, *sides, *side_code, *tif_code, *order_type_code, *stp_code;
    PyObject *rejects, *cancel_reasons;
    PyTypeObject *accepted, *rejected, *trade, *cancelled, *level;
    uint8_t default_tif[ENG_MARKET + 1]; /* by order type code (enums.DEFAULT_TIF) */
    unsigned long long seq;              /* Engine._seq */
    char busy;                           /* Engine._busy */
} calls_core;

/* Interned names, made once when the module is first imported. */
static struct {
    PyObject *submit_args[SUB__COUNT];
    PyObject *cancel_args[CAN__COUNT];
    PyObject *py_submit, *py_cancel, *py_events;
} calls_names;

static const char *const calls_submit_names[SUB__COUNT] = {
    "symbol", "side",            "qty",        "price",     "tif",
    "account", "client_order_id", "order_type", "post_only", "stp",
};
static const char *const calls_cancel_names[CAN__COUNT] = {"order_id", "account",
                                                           "client_order_id"};

/*
 * Match a vectorcall's arguments to parameter slots. Keyword names are
 * compared by identity with the interned names (names written in source code
 * are interned). Returns 0 when anything is unusual -- too many positional
 * arguments, an unknown or repeated keyword, a name that is not interned --
 * and the call is then forwarded to the Python implementation as it is.
 */
static int calls_bind(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject *const *names, int n_names, int n_positional, PyObject **slots)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs > n_positional)
        return 0;
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;

        while (j < n_names && names[j] != key)
            j++;
        if (j == n_names || slots[j])
            return 0;
        slots[j] = args[nargs + k];
    }
    return 1;
}

static PyObject *calls_forward(PyObject *self, PyObject *method, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *bound = PyObject_GetAttr(self, method);
    PyObject *res;

    if (!bound)
        return NULL;
    res = PyObject_Vectorcall(bound, args, nargs, kwnames);
    Py_DECREF(bound);
    return res;
}

/* An exact int in [lo, hi], into *out; 0 if it is anything else. */
static int calls_int64(PyObject *o, int64_t lo, int64_t hi, int64_t *out)
{
    int overflow;
    long long v;

    if (!PyLong_CheckExact(o))
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

/* An exact str found in `table` (a dict of small ints), into *out; 0 if not. */
static int calls_code(PyObject *o, PyObject *table, long *out)
{
    PyObject *v;

    if (!PyUnicode_CheckExact(o))
        return 0;
    v = PyDict_GetItemWithError(table, o);
    if (!v) {
        PyErr_Clear();
        return 0;
    }
    *out = PyLong_AsLong(v);
    return *out != -1 || !PyErr_Occurred();
}

/*
 * A new instance of an event class (a tuple subclass) holding `n` items,
 * stolen. NULL, with the exception set and every item released, if an item
 * is NULL or the allocation fails.
 */
static PyObject *calls_event(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyObject *ev = NULL;

    for (Py_ssize_t i = 0; i < n; i++)
        if (!items[i])
            goto fail;
    ev = type->tp_alloc(type, n);
    if (!ev)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(ev, i, items[i]);
    return ev;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* A one-event list, the event stolen. */
static PyObject *calls_one(PyObject *ev)
{
    PyObject *list;

    if (!ev)
        return NULL;
    list = PyList_New(1);
    if (!list) {
        Py_DECREF(ev);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, ev);
    return list;
}

static PyObject *calls_item(PyObject *tuple_or_list, size_t i)
{
    PyObject *o = PySequence_Fast_GET_ITEM(tuple_or_list, (Py_ssize_t)i);

    Py_INCREF(o);
    return o;
}

#define U64(v) PyLong_FromUnsignedLongLong(v)
#define I64(v) PyLong_FromLongLong(v)

static int calls_coid_empty(const struct eng_event *ev)
{
    static const char zero[sizeof(ev->coid)];

    return memcmp(ev->coid, zero, sizeof(zero)) == 0;
}

/*
 * The event object of one record, or Py_None (a new reference) when this file
 * does not decode it: a record with a client order id, or of a type that
 * submit and cancel do not produce. NULL with an exception on failure.
 */
static PyObject *calls_decode_one(calls_core *self, const struct eng_event *ev)
{
    PyObject *it[12];
    Py_ssize_t n_names = PyList_GET_SIZE(self->names);
    int known_inst = (Py_ssize_t)ev->instrument < n_names;
    int known_side = ev->side < PyTuple_GET_SIZE(self->sides);

    switch (ev->type) {
    case ENG_EV_TRADE:
        if (!known_inst || !known_side)
            break;
        it[0] = U64(ev->seq);
        it[1] = U64(ev->trade_id);
        it[2] = calls_item(self->names, ev->instrument);
        it[3] = I64(ev->price);
        it[4] = I64(ev->qty);
        it[5] = U64(ev->maker_order_id);
        it[6] = U64(ev->order_id);
        it[7] = PyLong_FromUnsignedLong(ev->maker_account);
        it[8] = PyLong_FromUnsignedLong(ev->account);
        it[9] = calls_item(self->sides, ev->side);
        it[10] = I64(ev->maker_leaves);
        it[11] = I64(ev->leaves);
        return calls_event(self->trade, 12, it);
    case ENG_EV_ACCEPTED:
        if (!known_inst || !known_side || !calls_coid_empty(ev))
            break;
        it[0] = U64(ev->seq);
        it[1] = U64(ev->order_id);
        it[2] = calls_item(self->names, ev->instrument);
        it[3] = calls_item(self->sides, ev->side);
        it[4] = ev->price ? I64(ev->price) : Py_NewRef(Py_None);
        it[5] = I64(ev->qty);
        it[6] = PyLong_FromUnsignedLong(ev->account);
        it[7] = Py_NewRef(Py_None);
        return calls_event(self->accepted, 8, it);
    case ENG_EV_CANCELLED:
        if (ev->reason >= PyTuple_GET_SIZE(self->cancel_reasons))
            break;
        it[0] = U64(ev->seq);
        it[1] = U64(ev->order_id);
        it[2] = I64(ev->leaves);
        it[3] = calls_item(self->cancel_reasons, ev->reason);
        return calls_event(self->cancelled, 4, it);
    case ENG_EV_REJECTED: {
        PyObject *why;

        if (ev->reason >= PyTuple_GET_SIZE(self->rejects) || !calls_coid_empty(ev))
            break;
        why = PyTuple_GET_ITEM(self->rejects, ev->reason);
        if (!PyTuple_Check(why))
            break;
        it[0] = U64(ev->seq);
        it[1] = calls_item(why, 0);
        it[2] = calls_item(why, 1);
        it[3] = Py_NewRef(Py_None);
        it[4] = ev->order_id ? U64(ev->order_id) : Py_NewRef(Py_None);
        return calls_event(self->rejected, 5, it);
    }
    case ENG_EV_LEVEL:
        if (!known_inst || !known_side)
            break;
        it[0] = U64(ev->seq);
        it[1] = calls_item(self->names, ev->instrument);
        it[2] = calls_item(self->sides, ev->side);
        it[3] = I64(ev->price);
        it[4] = I64(ev->qty);
        it[5] = I64(ev->leaves);
        return calls_event(self->level, 6, it);
    default:
        break;
    }
    return Py_NewRef(Py_None);
}

/*
 * The events of the command just processed, whose fast-path result was r
 * (see pyengine.h). Records this file does not decode, and r == 0 (out of
 * memory), go to Engine._events, which decodes or raises.
 */
static PyObject *calls_events(calls_core *self, int64_t r)
{
    size_t count = 0;
    const struct eng_event *ev;
    PyObject *list;

    if (r == 0)
        goto python;
    ev = self->api->events(self->eng, &count);
    if (count != (size_t)(-r - ENG_ERR__COUNT) || count == 0)
        goto python;
    list = PyList_New((Py_ssize_t)count);
    if (!list)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        PyObject *obj = calls_decode_one(self, &ev[i]);

        if (!obj) {
            Py_DECREF(list);
            return NULL;
        }
        if (obj == Py_None) {
            Py_DECREF(obj);
            Py_DECREF(list);
            goto python;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, obj);
    }
    self->seq = ev[count - 1].seq;
    return list;
python : {
    PyObject *code = I64(r);
    PyObject *res;

    if (!code)
        return NULL;
    res = PyObject_CallMethodOneArg((PyObject *)self, calls_names.py_events, code);
    Py_DECREF(code);
    return res;
}
}

/*
 * The events of a fast-path result r <= 0: a lone Rejected (with `target`,
 * the order id of a cancel or None), or several events, or out of memory.
 */
static PyObject *calls_not_simple(calls_core *self, int64_t r, PyObject *target)
{
    PyObject *why = NULL;
    PyObject *it[5];
    int64_t code = -r;

    if (r == 0 || r <= -ENG_ERR__COUNT)
        return calls_events(self, r);
    if (code < PyTuple_GET_SIZE(self->rejects))
        why = PyTuple_GET_ITEM(self->rejects, code);
    if (!why || !PyTuple_Check(why)) {
        PyErr_Format(PyExc_SystemError, "the core rejected with code %lld, which has no reason",
                     (long long)code);
        return NULL;
    }
    it[0] = U64(++self->seq);
    it[1] = calls_item(why, 0);
    it[2] = calls_item(why, 1);
    it[3] = Py_NewRef(Py_None);
    it[4] = Py_NewRef(target);
    return calls_one(calls_event(self->rejected, 5, it));
}

PyDoc_STRVAR(calls_submit_doc,
             "submit($self, /, symbol, side, qty, price=None, *, tif=None, account=0,\n"
             "       client_order_id=None, order_type='limit', post_only=False, stp='none')\n"
             "--\n\n"
             "Enter a new order; returns its events (Accepted or Rejected first).\n\n"
             "symbol: an instrument added with add_instrument; side: 'buy' or 'sell';\n"
             "qty, price: integers in the instrument's units (price None for a market\n"
             "order); tif: 'gtc', 'ioc' or 'fok', None for the order type's default\n"
             "('gtc' for a limit order, 'ioc' for a market order); order_type: 'limit'\n"
             "or 'market'; stp: 'none', 'cancel_newest', 'cancel_oldest' or 'cancel_both'.\n"
             "Bad arguments raise TypeError/ValueError; an order the market refuses\n"
             "is a Rejected event.");

static PyObject *calls_submit(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[SUB__COUNT] = {0};
    int64_t qty, price = 0, account = 0, r;
    long inst, side, tif, order_type = ENG_LIMIT, stp = ENG_STP_NONE;
    int post_only, market;
    PyObject *res;

    if (!self->eng || self->busy ||
        !calls_bind(args, nargs, kwnames, calls_names.submit_args, SUB__COUNT, 4, a))
        goto python;
    if (!a[SUB_SYMBOL] || !a[SUB_SIDE] || !a[SUB_QTY])
        goto python;
    if (!calls_code(a[SUB_SYMBOL], self->symbols, &inst) ||
        !calls_code(a[SUB_SIDE], self->side_code, &side) ||
        !calls_int64(a[SUB_QTY], INT64_MIN, INT64_MAX, &qty))
        goto python;
    if (a[SUB_PRICE] == Py_None)
        a[SUB_PRICE] = NULL;
    if (a[SUB_PRICE] && !calls_int64(a[SUB_PRICE], INT64_MIN, INT64_MAX, &price))
        goto python;
    if ((a[SUB_ORDER_TYPE] && !calls_code(a[SUB_ORDER_TYPE], self->order_type_code, &order_type)) ||
        (a[SUB_STP] && !calls_code(a[SUB_STP], self->stp_code, &stp)))
        goto python;
    if (a[SUB_TIF] == Py_None)
        a[SUB_TIF] = NULL;
    if (a[SUB_TIF]) {
        if (!calls_code(a[SUB_TIF], self->tif_code, &tif))
            goto python;
    } else if (order_type >= 0 && order_type <= ENG_MARKET && self->default_tif[order_type]) {
        tif = self->default_tif[order_type];
    } else {
        goto python;
    }
    if (a[SUB_ACCOUNT] && !calls_int64(a[SUB_ACCOUNT], 0, UINT32_MAX, &account))
        goto python;
    if (a[SUB_POST_ONLY] && a[SUB_POST_ONLY] != Py_True && a[SUB_POST_ONLY] != Py_False)
        goto python;
    if (a[SUB_COID] && a[SUB_COID] != Py_None)
        goto python;
    post_only = a[SUB_POST_ONLY] == Py_True;
    market = order_type == ENG_MARKET;
    /* Shapes that are not orders at all: the Python path says why. */
    if (market ? (a[SUB_PRICE] || tif == ENG_GTC || post_only)
               : (!a[SUB_PRICE] || (post_only && tif != ENG_GTC)))
        goto python;

    self->busy = 1;
    if (!market && tif == ENG_GTC && stp == ENG_STP_NONE && !post_only)
        r = self->api->limit(self->eng, (uint32_t)inst, (uint8_t)side, (uint32_t)account, qty,
                             price);
    else
        r = self->api->new_order(self->eng, (uint32_t)inst, (uint8_t)side, (uint8_t)order_type,
                                 (uint8_t)tif, (uint8_t)stp, post_only ? ENG_CMD_F_POST_ONLY : 0,
                                 (uint32_t)account, qty, price, NULL);
    if (r > 0) {
        PyObject *it[8];

        it[0] = U64(++self->seq);
        it[1] = I64(r);
        it[2] = calls_item(self->names, (size_t)inst);
        it[3] = calls_item(self->sides, (size_t)side);
        it[4] = Py_NewRef(a[SUB_PRICE] ? a[SUB_PRICE] : Py_None);
        it[5] = Py_NewRef(a[SUB_QTY]);
        it[6] = a[SUB_ACCOUNT] ? Py_NewRef(a[SUB_ACCOUNT]) : PyLong_FromLong(0);
        it[7] = Py_NewRef(Py_None);
        res = calls_one(calls_event(self->accepted, 8, it));
    } else {
        res = calls_not_simple(self, r, Py_None);
    }
    self->busy = 0;
    return res;
python:
    return calls_forward((PyObject *)self, calls_names.py_submit, args, nargs, kwnames);
}

PyDoc_STRVAR(calls_cancel_doc,
             "cancel($self, /, order_id=None, *, account=None, client_order_id=None)\n"
             "--\n\n"
             "Cancel an open order by id, or by client order id with its account.\n\n"
             "account=None cancels as an administrator (no ownership check).");

static PyObject *calls_cancel(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[CAN__COUNT] = {0};
    int64_t account, r;
    unsigned long long order_id;
    PyObject *res;

    if (!self->eng || self->busy ||
        !calls_bind(args, nargs, kwnames, calls_names.cancel_args, CAN__COUNT, 1, a))
        goto python;
    if (!a[CAN_ORDER_ID] || !PyLong_CheckExact(a[CAN_ORDER_ID]) || !a[CAN_ACCOUNT] ||
        !calls_int64(a[CAN_ACCOUNT], 0, UINT32_MAX, &account) ||
        (a[CAN_COID] && a[CAN_COID] != Py_None))
        goto python;
    order_id = PyLong_AsUnsignedLongLong(a[CAN_ORDER_ID]);
    if (order_id == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto python;
    }
    if (order_id == 0)
        goto python;

    self->busy = 1;
    r = self->api->cancel(self->eng, order_id, (uint32_t)account);
    if (r > 0) {
        PyObject *it[4];

        it[0] = U64(++self->seq);
        it[1] = Py_NewRef(a[CAN_ORDER_ID]);
        it[2] = I64(r);
        it[3] = calls_item(self->cancel_reasons, ENG_CANCEL_USER);
        res = calls_one(calls_event(self->cancelled, 4, it));
    } else {
        res = calls_not_simple(self, r, a[CAN_ORDER_ID]);
    }
    self->busy = 0;
    return res;
python:
    return calls_forward((PyObject *)self, calls_names.py_cancel, args, nargs, kwnames);
}

static int calls_check_tables(PyObject *t)
{
    static const int classes[] = {T_ACCEPTED, T_REJECTED, T_TRADE, T_CANCELLED, T_LEVEL};
    static const int dicts[] = {T_SYMBOLS, T_SIDE_CODE, T_TIF_CODE, T_ORDER_TYPE_CODE, T_STP_CODE};
    static const int tuples[] = {T_SIDES, T_REJECTS, T_CANCEL_REASONS, T_DEFAULT_TIF};

    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != T__COUNT)
        return 0;
    for (size_t i = 0; i < sizeof(classes) / sizeof(*classes); i++) {
        PyObject *c = PyTuple_GET_ITEM(t, classes[i]);

        if (!PyType_Check(c) || !PyType_IsSubtype((PyTypeObject *)c, &PyTuple_Type))
            return 0;
    }
    for (size_t i = 0; i < sizeof(dicts) / sizeof(*dicts); i++)
        if (!PyDict_CheckExact(PyTuple_GET_ITEM(t, dicts[i])))
            return 0;
    for (size_t i = 0; i < sizeof(tuples) / sizeof(*tuples); i++)
        if (!PyTuple_CheckExact(PyTuple_GET_ITEM(t, tuples[i])))
            return 0;
    return PyList_CheckExact(PyTuple_GET_ITEM(t, T_NAMES)) &&
           PyTuple_GET_SIZE(PyTuple_GET_ITEM(t, T_SIDES)) > ENG_SELL &&
           PyTuple_GET_SIZE(PyTuple_GET_ITEM(t, T_CANCEL_REASONS)) > ENG_CANCEL_USER &&
           PyTuple_GET_SIZE(PyTuple_GET_ITEM(t, T_DEFAULT_TIF)) == ENG_MARKET + 1;
}

/* The T_DEFAULT_TIF tuple into `out`: tif codes (0: none) by order type code. */
static int calls_default_tif(PyObject *codes, uint8_t out[ENG_MARKET + 1])
{
    for (int i = 0; i <= ENG_MARKET; i++) {
        long v = PyLong_AsLong(PyTuple_GET_ITEM(codes, i));

        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v < 0 || v > ENG_FOK) {
            PyErr_SetString(PyExc_ValueError, "_attach: a default tif that is no tif code");
            return -1;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

PyDoc_STRVAR(calls_attach_doc,
             "_attach($self, engine, api, tables, /)\n--\n\n"
             "Serve submit/cancel for the C engine at address `engine` through the\n"
             "struct eng_api at address `api`; `tables` holds what the events are\n"
             "built from (see enum calls_table in csrc/binding/calls.c).");

static PyObject *calls_attach(calls_core *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *eng, *api;
    PyObject *t;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_attach takes (engine, api, tables)");
        return NULL;
    }
    eng = PyLong_AsVoidPtr(args[0]);
    if (!eng && PyErr_Occurred())
        return NULL;
    api = PyLong_AsVoidPtr(args[1]);
    if (!api && PyErr_Occurred())
        return NULL;
    t = args[2];
    if (!eng || !api || ((const struct eng_api *)api)->size < sizeof(struct eng_api) ||
        !calls_check_tables(t)) {
        PyErr_SetString(PyExc_ValueError, "_attach: not an engine, an eng_api and the tables");
        return NULL;
    }
    if (calls_default_tif(PyTuple_GET_ITEM(t, T_DEFAULT_TIF), self->default_tif) < 0)
        return NULL;
    Py_XSETREF(self->tables, Py_NewRef(t));
    self->symbols = PyTuple_GET_ITEM(t, T_SYMBOLS);
    self->names = PyTuple_GET_ITEM(t, T_NAMES);
    self->accepted = (PyTypeObject *)PyTuple_GET_ITEM(t, T_ACCEPTED);
    self->rejected = (PyTypeObject *)PyTuple_GET_ITEM(t, T_REJECTED);
    self->trade = (PyTypeObject *)PyTuple_GET_ITEM(t, T_TRADE);
    self->cancelled = (PyTypeObject *)PyTuple_GET_ITEM(t, T_CANCELLED);
    self->level = (PyTypeObject *)PyTuple_GET_ITEM(t, T_LEVEL);
    self->sides = PyTuple_GET_ITEM(t, T_SIDES);
    self->side_code = PyTuple_GET_ITEM(t, T_SIDE_CODE);
    self->tif_code = PyTuple_GET_ITEM(t, T_TIF_CODE);
    self->order_type_code = PyTuple_GET_ITEM(t, T_ORDER_TYPE_CODE);
    self->stp_code = PyTuple_GET_ITEM(t, T_STP_CODE);
    self->rejects = PyTuple_GET_ITEM(t, T_REJECTS);
    self->cancel_reasons = PyTuple_GET_ITEM(t, T_CANCEL_REASONS);
    self->api = api;
    self->eng = eng;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(calls_detach_doc, "_detach($self, /)\n--\n\n"
                               "Stop using the C engine (before it is freed).");

static PyObject *calls_detach(calls_core *self, PyObject *Py_UNUSED(ignored))
{
    self->eng = NULL;
    Py_RETURN_NONE;
}

static int calls_traverse(calls_core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tables);
    return 0;
}

static int calls_clear(calls_core *self)
{
    self->eng = NULL;
    Py_CLEAR(self->tables);
    return 0;
}

static void calls_dealloc(calls_core *self)
{
    PyObject_GC_UnTrack(self);
    calls_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef calls_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))calls_submit, METH_FASTCALL | METH_KEYWORDS,
     calls_submit_doc},
    {"cancel", (PyCFunction)(void (*)(void))calls_cancel, METH_FASTCALL | METH_KEYWORDS,
     calls_cancel_doc},
    {"_attach", (PyCFunction)(void (*)(void))calls_attach, METH_FASTCALL, calls_attach_doc},
    {"_detach", (PyCFunction)calls_detach, METH_NOARGS, calls_detach_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef calls_members[] = {
    {"_seq", T_ULONGLONG, offsetof(calls_core, seq), 0,
     "the sequence number of the last command, as the Engine knows it"},
    {"_busy", T_BOOL, offsetof(calls_core, busy), 0, "a call is running"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject calls_core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._calls.Core",
    .tp_basicsize = sizeof(calls_core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("The C half of pyengine.Engine: submit and cancel."),
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)calls_dealloc,
    .tp_traverse = (traverseproc)calls_traverse,
    .tp_clear = (inquiry)calls_clear,
    .tp_methods = calls_methods,
    .tp_members = calls_members,
};

static int calls_intern(PyObject **out, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!out[i] && !(out[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    return 0;
}

static int calls_exec(PyObject *module)
{
    static const char *const methods[] = {"_submit", "_cancel", "_events"};
    PyObject *slots[3] = {calls_names.py_submit, calls_names.py_cancel, calls_names.py_events};

    if (calls_intern(calls_names.submit_args, calls_submit_names, SUB__COUNT) < 0 ||
        calls_intern(calls_names.cancel_args, calls_cancel_names, CAN__COUNT) < 0 ||
        calls_intern(slots, methods, 3) < 0)
        return -1;
    calls_names.py_submit = slots[0];
    calls_names.py_cancel = slots[1];
    calls_names.py_events = slots[2];
    if (PyType_Ready(&calls_core_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Core", (PyObject *)&calls_core_type);
}

static PyModuleDef_Slot calls_slots[] = {
    {Py_mod_exec, calls_exec},
    {0, NULL},
};

static struct PyModuleDef calls_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyengine._calls",
    .m_doc = "Engine.submit and Engine.cancel in C (see csrc/binding/calls.c).",
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = calls_slots,
};

PyMODINIT_FUNC PyInit__calls(void)
{
    return PyModuleDef_Init(&calls_module);
}
