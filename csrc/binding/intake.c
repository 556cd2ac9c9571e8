/*
 * intake.c - pyengine._intake: the server's new_order and cancel requests in C.
 *
 * A session reader hands every frame to Intake.take(session, frame) first.
 * For a well-formed new_order or cancel that passes every check -- the
 * session is logged in, the instrument is known, no order limit is broken,
 * the session owns what it cancels, the command queue has room -- it does
 * what Session.handle would: takes a token from the session's rate limit,
 * counts the order in flight, records the pending request and appends the
 * engine command to the command queue. It returns True then. For anything
 * else it changes nothing and returns False, and Session.handle (Python)
 * does it all, from parsing on: that code stays the reference for every
 * check and every error message, and this file only ever accepts what it
 * would accept, with the same result.
 *
 * The JSON is decoded by orjson, as in Python; the GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "pyengine.h"

/* What the Intake is built from, by position in its `tables` tuple. */
enum intake_table {
    I_INSTRUMENTS,     /* dict: symbol -> instrument number */
    I_SIDES,           /* dicts: request string -> engine code */
    I_ORDER_TYPES,
    I_TIFS,
    I_STPS,
    I_MAX_QTY,         /* list by instrument: 0, or the largest qty */
    I_MAX_NOTIONAL,    /* list by instrument: 0, or the largest price x qty */
    I_MAX_OPEN,        /* int: 0, or the most open orders of an account */
    I_OPEN,            /* Counter: account -> open orders */
    I_IN_FLIGHT,       /* Counter: account -> new orders not answered */
    I_OWNERS,          /* dict: open order id -> Session */
    I_COMMANDS,        /* the CommandQueue */
    I_LOADS,           /* orjson.loads */
    I__COUNT
};

typedef struct {
    PyObject_HEAD
    PyObject *tables; /* strong; the pointers below borrow from it */
    PyObject *instruments, *sides, *order_types, *tifs, *stps, *max_qty, *max_notional;
    PyObject *open, *in_flight, *owners, *commands, *loads;
    long long max_open;
} intake_intake;

/* Interned names, made once when the module is first imported. */
static struct {
    PyObject *type, *req_id, *symbol, *side, *qty, *price, *order_type, *tif, *post_only, *stp, *coid;
    PyObject *order_id, *new_order, *cancel, *account, *admin, *next, *pending, *bucket, *sid, *take;
    PyObject *buf, *n, *cap, *over_rate;
} in_names;

/* ---- reading the request ----------------------------------------------- */

/* msg[key], borrowed; NULL for a missing key or null. -1 in *err on error. */
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

/* A client order id (1 to 16 printable ASCII characters) into 16 NUL-padded
 * bytes; all zero for NULL. 0 if it is not one. */
static int intake_coid(PyObject *o, char out[16])
{
    const char *p;
    Py_ssize_t n;

    memset(out, 0, 16);
    if (!o)
        return 1;
    if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_ASCII(o))
        return 0;
    n = PyUnicode_GET_LENGTH(o);
    if (n < 1 || n > 16)
        return 0;
    p = (const char *)PyUnicode_1BYTE_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    memcpy(out, p, (size_t)n);
    return 1;
}

static int intake_is(PyObject *o, const char *s)
{
    return o && PyUnicode_CheckExact(o) && PyUnicode_CompareWithASCIIString(o, s) == 0;
}

/* An attribute of an object as a long long, into *out; 0 if it is not an int. */
static int intake_attr_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    int ok;

    if (!v) {
        PyErr_Clear();
        return 0;
    }
    ok = intake_int(v, LLONG_MIN, LLONG_MAX, out);
    Py_DECREF(v);
    return ok;
}

/* counter.get(key, 0) for a Counter keyed by account; -1 on error. */
static int intake_counted(PyObject *counter, long long account, long long *out)
{
    PyObject *k = PyLong_FromLongLong(account);
    PyObject *v;

    if (!k)
        return -1;
    v = PyDict_GetItemWithError(counter, k);
    Py_DECREF(k);
    *out = 0;
    if (!v)
        return PyErr_Occurred() ? -1 : 0;
    if (!intake_int(v, LLONG_MIN, LLONG_MAX, out)) {
        PyErr_SetString(PyExc_TypeError, "an order count is not an int");
        return -1;
    }
    return 0;
}

/* ---- the command ------------------------------------------------------- */

/* A command being entered: checked, not yet queued. */
struct intake_cmd {
    struct eng_cmd cmd;
    PyObject *kind;    /* "new_order" or "cancel" (interned) */
    PyObject *req_id;  /* borrowed from the message */
    PyObject *coid;    /* borrowed from the message; NULL for none */
};

/*
 * Queue a checked command for `session`: a token from its rate limit (none
 * left: the session's over_rate(req_id) replies, and the command is
 * dropped), then its pending request, its place in the command queue, and
 * for a new order the in-flight count. 1 when done, -1 on error.
 */
static int intake_queue(intake_intake *self, PyObject *session, struct intake_cmd *c, Py_ssize_t slot,
                        PyObject *buf)
{
    PyObject *bucket, *ok, *pending = NULL, *entry = NULL, *key = NULL, *nv = NULL;
    long long next, sid;
    struct runner_cmd rc;
    struct timespec ts;
    int admitted, r = -1;

    bucket = PyObject_GetAttr(session, in_names.bucket);
    if (!bucket)
        return -1;
    ok = PyObject_CallMethodNoArgs(bucket, in_names.take);
    Py_DECREF(bucket);
    if (!ok)
        return -1;
    admitted = PyObject_IsTrue(ok);
    Py_DECREF(ok);
    if (admitted < 0)
        return -1;
    if (!admitted) {
        PyObject *res = PyObject_CallMethodOneArg(session, in_names.over_rate, c->req_id);

        Py_XDECREF(res);
        return res ? 1 : -1;
    }
    if (!intake_attr_ll(session, in_names.next, &next) || !intake_attr_ll(session, in_names.sid, &sid)) {
        PyErr_SetString(PyExc_TypeError, "a session without an int _next and sid");
        return -1;
    }
    next = (next + 1) & 0xFFFFFFFF;
    pending = PyObject_GetAttr(session, in_names.pending);
    key = PyLong_FromLongLong(next);
    entry = PyTuple_Pack(3, c->kind, c->req_id, c->coid ? c->coid : Py_None);
    if (!pending || !key || !entry || PyObject_SetAttr(session, in_names.next, key) < 0 ||
        PyDict_SetItem(pending, key, entry) < 0)
        goto out;
    if (c->cmd.type == ENG_CMD_NEW) {
        long long flying;

        if (intake_counted(self->in_flight, c->cmd.account, &flying) < 0)
            goto out;
        nv = PyLong_FromLongLong(flying + 1);
        Py_XSETREF(key, PyLong_FromUnsignedLong(c->cmd.account));
        if (!nv || !key || PyDict_SetItem(self->in_flight, key, nv) < 0)
            goto out;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(&rc, 0, sizeof(rc));
    rc.cmd = c->cmd;
    rc.cmd.ts = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    rc.tag = ((uint64_t)sid << 32) | (uint64_t)next;
    memcpy(PyByteArray_AS_STRING(buf) + (size_t)slot * sizeof(rc), &rc, sizeof(rc));
    Py_XSETREF(nv, PyLong_FromSsize_t(slot + 1));
    if (!nv || PyObject_SetAttr(self->commands, in_names.n, nv) < 0)
        goto out;
    r = 1;
out:
    Py_XDECREF(nv);
    Py_XDECREF(entry);
    Py_XDECREF(key);
    Py_XDECREF(pending);
    return r;
}

/* The new order's fields, checked as protocol._parse_new_order and
 * Session.new_order check them; 0 if any is off. */
static int intake_new_order(intake_intake *self, PyObject *msg, struct intake_cmd *c, int *err)
{
    long type, tif, side, stp, post_only = 0;
    long long price = 0, qty, max;
    PyObject *v, *inst;
    int has_price;

    if (!intake_code(intake_get(msg, in_names.order_type, err), self->order_types, ENG_LIMIT, &type) || *err)
        return 0;
    if (!intake_code(intake_get(msg, in_names.tif, err), self->tifs, type == ENG_MARKET ? ENG_IOC : ENG_GTC,
                     &tif) || *err)
        return 0;
    v = intake_get(msg, in_names.post_only, err);
    if (*err)
        return 0;
    if (v) {
        if (!PyBool_Check(v))
            return 0;
        post_only = v == Py_True;
    }
    v = intake_get(msg, in_names.price, err);
    if (*err)
        return 0;
    has_price = v != NULL;
    if (has_price && !intake_int(v, INT64_MIN, INT64_MAX, &price))
        return 0;
    if (type == ENG_MARKET ? (has_price || tif == ENG_GTC || post_only)
                           : (!has_price || (post_only && tif != ENG_GTC)))
        return 0;
    v = intake_get(msg, in_names.symbol, err);
    if (*err || !v || !PyUnicode_CheckExact(v))
        return 0;
    inst = PyDict_GetItemWithError(self->instruments, v);
    if (!inst) {
        if (PyErr_Occurred())
            *err = 1;
        return 0; /* unknown: the engine's reject, through Python */
    }
    if (!intake_code(intake_get(msg, in_names.side, err), self->sides, -1, &side) || *err ||
        !intake_int(intake_get(msg, in_names.qty, err), INT64_MIN, INT64_MAX, &qty) || *err ||
        !intake_code(intake_get(msg, in_names.stp, err), self->stps, ENG_STP_NONE, &stp) || *err)
        return 0;
    c->coid = intake_get(msg, in_names.coid, err);
    if (*err || !intake_coid(c->coid, c->cmd.coid))
        return 0;
    c->cmd.instrument = (uint32_t)PyLong_AsUnsignedLong(inst);
    if (PyErr_Occurred()) {
        *err = 1;
        return 0;
    }
    /* OrderLimits.check_order: over a limit is a reject, Python's. */
    if ((Py_ssize_t)c->cmd.instrument >= PyList_GET_SIZE(self->max_qty) ||
        (Py_ssize_t)c->cmd.instrument >= PyList_GET_SIZE(self->max_notional))
        return 0;
    if (!intake_int(PyList_GET_ITEM(self->max_qty, c->cmd.instrument), 0, INT64_MAX, &max) || (max && qty > max))
        return 0;
    if (!intake_int(PyList_GET_ITEM(self->max_notional, c->cmd.instrument), 0, INT64_MAX, &max))
        return 0;
    if (max && has_price) {
        long long notional;

        if (__builtin_mul_overflow(price, qty, &notional) || notional > max)
            return 0;
    }
    c->cmd.type = ENG_CMD_NEW;
    c->cmd.side = (uint8_t)side;
    c->cmd.order_type = (uint8_t)type;
    c->cmd.tif = (uint8_t)tif;
    c->cmd.stp = (uint8_t)stp;
    c->cmd.flags = post_only ? ENG_CMD_F_POST_ONLY : 0;
    c->cmd.price = price;
    c->cmd.qty = qty;
    c->kind = in_names.new_order;
    return 1;
}

/* The cancel's fields, checked as protocol._parse_cancel and
 * Session.cancel check them; 0 if any is off. */
static int intake_cancel(intake_intake *self, PyObject *msg, PyObject *session, int admin, struct intake_cmd *c,
                         int *err)
{
    PyObject *v = intake_get(msg, in_names.order_id, err);
    long long order_id = 0;

    if (*err || (v && !intake_int(v, 1, INT64_MAX, &order_id)))
        return 0;
    c->coid = intake_get(msg, in_names.coid, err);
    if (*err || (v == NULL) == (c->coid == NULL) || !intake_coid(c->coid, c->cmd.coid))
        return 0;
    if (v) {
        PyObject *owner = PyDict_GetItemWithError(self->owners, v);

        if (!owner && PyErr_Occurred()) {
            *err = 1;
            return 0;
        }
        if (owner && owner != session && !admin)
            return 0; /* not its order: Python's reject */
        memset(c->cmd.coid, 0, sizeof(c->cmd.coid));
        c->coid = NULL; /* the request is by order id */
    }
    c->cmd.type = ENG_CMD_CANCEL;
    c->cmd.flags = admin ? ENG_CMD_F_ANY_ACCOUNT : 0;
    c->cmd.order_id = (uint64_t)order_id;
    c->kind = in_names.cancel;
    return 1;
}

PyDoc_STRVAR(intake_take_doc,
             "take($self, session, frame, /)\n--\n\n"
             "Carry out a new_order or cancel frame for `session` if it passes every check;\n"
             "True if it did, False (having changed nothing) if Session.handle must.");

static PyObject *intake_take(intake_intake *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *session, *msg, *typ, *req_id, *v, *buf = NULL;
    struct intake_cmd c;
    long long account, n, cap;
    int err = 0, admin, ok, r;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take takes (session, frame)");
        return NULL;
    }
    if (!self->tables) {
        PyErr_SetString(PyExc_ValueError, "the intake has no tables");
        return NULL;
    }
    session = args[0];
    msg = PyObject_CallOneArg(self->loads, args[1]);
    if (!msg) {
        PyErr_Clear(); /* bad JSON: Python's error reply */
        Py_RETURN_FALSE;
    }
    ok = 0;
    if (!PyDict_CheckExact(msg))
        goto decline;
    typ = intake_get(msg, in_names.type, &err);
    req_id = PyDict_GetItemWithError(msg, in_names.req_id);
    if (err || (!req_id && PyErr_Occurred()))
        goto fail;
    if (!req_id)
        req_id = Py_None;
    if (req_id != Py_None && !PyLong_CheckExact(req_id) && !PyUnicode_CheckExact(req_id))
        goto decline;
    /* The session: logged in, and its command queue has room. */
    v = PyObject_GetAttr(session, in_names.account);
    if (!v)
        goto fail;
    ok = intake_int(v, 0, UINT32_MAX, &account);
    Py_DECREF(v);
    if (!ok)
        goto decline;
    v = PyObject_GetAttr(session, in_names.admin);
    if (!v)
        goto fail;
    admin = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (admin < 0)
        goto fail;
    if (!intake_attr_ll(self->commands, in_names.n, &n) || !intake_attr_ll(self->commands, in_names.cap, &cap))
        goto decline;
    buf = PyObject_GetAttr(self->commands, in_names.buf);
    if (!buf)
        goto fail;
    if (!PyByteArray_CheckExact(buf) || n < 0 || n >= cap ||
        (size_t)n >= (size_t)PyByteArray_GET_SIZE(buf) / sizeof(struct runner_cmd))
        goto decline; /* full: Python waits for room */
    memset(&c, 0, sizeof(c));
    c.req_id = req_id;
    c.cmd.account = (uint32_t)account;
    if (intake_is(typ, "new_order"))
        ok = intake_new_order(self, msg, &c, &err);
    else if (intake_is(typ, "cancel"))
        ok = intake_cancel(self, msg, session, admin, &c, &err);
    else
        ok = 0;
    if (err)
        goto fail;
    if (!ok)
        goto decline;
    if (c.cmd.type == ENG_CMD_NEW && self->max_open) {
        /* OrderLimits.check_open */
        long long open, flying;

        if (intake_counted(self->open, account, &open) < 0 || intake_counted(self->in_flight, account, &flying) < 0)
            goto fail;
        if (open + flying >= self->max_open)
            goto decline;
    }
    r = intake_queue(self, session, &c, (Py_ssize_t)n, buf);
    if (r < 0)
        goto fail;
    Py_DECREF(buf);
    Py_DECREF(msg);
    Py_RETURN_TRUE;
decline:
    Py_XDECREF(buf);
    Py_DECREF(msg);
    Py_RETURN_FALSE;
fail:
    Py_XDECREF(buf);
    Py_DECREF(msg);
    return NULL;
}

/* ---- the type ---------------------------------------------------------- */

static int intake_init(intake_intake *self, PyObject *args, PyObject *kwds)
{
    PyObject *t;
    long long max_open;

    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Intake takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O:Intake", &t))
        return -1;
    if (self->tables) {
        PyErr_SetString(PyExc_TypeError, "an Intake is initialised once");
        return -1;
    }
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != I__COUNT || !PyDict_Check(PyTuple_GET_ITEM(t, I_INSTRUMENTS)) ||
        !PyDict_Check(PyTuple_GET_ITEM(t, I_SIDES)) || !PyDict_Check(PyTuple_GET_ITEM(t, I_ORDER_TYPES)) ||
        !PyDict_Check(PyTuple_GET_ITEM(t, I_TIFS)) || !PyDict_Check(PyTuple_GET_ITEM(t, I_STPS)) ||
        !PyList_Check(PyTuple_GET_ITEM(t, I_MAX_QTY)) || !PyList_Check(PyTuple_GET_ITEM(t, I_MAX_NOTIONAL)) ||
        !intake_int(PyTuple_GET_ITEM(t, I_MAX_OPEN), 0, INT64_MAX, &max_open) ||
        !PyDict_Check(PyTuple_GET_ITEM(t, I_OPEN)) || !PyDict_Check(PyTuple_GET_ITEM(t, I_IN_FLIGHT)) ||
        !PyDict_Check(PyTuple_GET_ITEM(t, I_OWNERS)) || !PyCallable_Check(PyTuple_GET_ITEM(t, I_LOADS))) {
        PyErr_SetString(PyExc_ValueError, "Intake: not the server's tables (see enum intake_table)");
        return -1;
    }
    Py_XSETREF(self->tables, Py_NewRef(t));
    self->instruments = PyTuple_GET_ITEM(t, I_INSTRUMENTS);
    self->sides = PyTuple_GET_ITEM(t, I_SIDES);
    self->order_types = PyTuple_GET_ITEM(t, I_ORDER_TYPES);
    self->tifs = PyTuple_GET_ITEM(t, I_TIFS);
    self->stps = PyTuple_GET_ITEM(t, I_STPS);
    self->max_qty = PyTuple_GET_ITEM(t, I_MAX_QTY);
    self->max_notional = PyTuple_GET_ITEM(t, I_MAX_NOTIONAL);
    self->max_open = max_open;
    self->open = PyTuple_GET_ITEM(t, I_OPEN);
    self->in_flight = PyTuple_GET_ITEM(t, I_IN_FLIGHT);
    self->owners = PyTuple_GET_ITEM(t, I_OWNERS);
    self->commands = PyTuple_GET_ITEM(t, I_COMMANDS);
    self->loads = PyTuple_GET_ITEM(t, I_LOADS);
    return 0;
}

static int intake_traverse(intake_intake *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tables);
    return 0;
}

static int intake_clear(intake_intake *self)
{
    Py_CLEAR(self->tables);
    return 0;
}

static void intake_dealloc(intake_intake *self)
{
    PyObject_GC_UnTrack(self);
    intake_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef intake_methods[] = {
    {"take", (PyCFunction)(void (*)(void))intake_take, METH_FASTCALL, intake_take_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject intake_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._intake.Intake",
    .tp_basicsize = sizeof(intake_intake),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Intake(tables): new_order and cancel requests (see csrc/binding/intake.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)intake_init,
    .tp_dealloc = (destructor)intake_dealloc,
    .tp_traverse = (traverseproc)intake_traverse,
    .tp_clear = (inquiry)intake_clear,
    .tp_methods = intake_methods,
};

static int intake_exec(PyObject *module)
{
    static const char *const names[] = {
        "type",      "req_id", "symbol",  "side",    "qty",        "price",  "order_type", "tif",
        "post_only", "stp",    "client_order_id", "order_id", "new_order", "cancel", "account", "admin",
        "_next",     "pending", "_bucket", "sid",    "take",       "_buf",   "_n",         "_cap",
        "over_rate",
    };
    PyObject **slots[] = {
        &in_names.type,      &in_names.req_id,  &in_names.symbol,  &in_names.side,     &in_names.qty,
        &in_names.price,     &in_names.order_type, &in_names.tif,  &in_names.post_only, &in_names.stp,
        &in_names.coid,      &in_names.order_id, &in_names.new_order, &in_names.cancel, &in_names.account,
        &in_names.admin,     &in_names.next,    &in_names.pending, &in_names.bucket,   &in_names.sid,
        &in_names.take,      &in_names.buf,     &in_names.n,       &in_names.cap,      &in_names.over_rate,
    };

    _Static_assert(sizeof(names) / sizeof(names[0]) == sizeof(slots) / sizeof(slots[0]), "one slot per name");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!*slots[i] && !(*slots[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    if (PyType_Ready(&intake_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Intake", (PyObject *)&intake_type);
}

static PyModuleDef_Slot intake_slots[] = {
    {Py_mod_exec, intake_exec},
    {0, NULL},
};

static struct PyModuleDef intake_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyengine._intake",
    .m_doc = "The server's new_order and cancel requests in C (see csrc/binding/intake.c).",
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = intake_slots,
};

PyMODINIT_FUNC PyInit__intake(void)
{
    return PyModuleDef_Init(&intake_module);
}
