/*
 * link.c - Link: what one session holds for its orders, in C.
 *
 * The session's account once logged in, its request numbers and the
 * requests still waiting for their first event, its message rate (a token
 * bucket: `rate` tokens a second, at most `burst` saved; rate 0: no limit)
 * and the open orders it owns, and its output not sent yet (outbox.c). The
 * Intake and the Router read and change it directly; Python reads it
 * through the attributes and methods below.
 */
#include "server.h"

#include <structmember.h>

static double link_now(void)
{
    return (double)srv_monotonic_ns() * 1e-9; /* time.monotonic()'s clock */
}

/* Add `delta` to the count of the session's unanswered new orders with
 * client order id `coid` (none left: out of the dict). */
static int link_fly(srv_link *link, PyObject *coid, long delta)
{
    PyObject *v = PyDict_GetItemWithError(link->flying, coid), *count;
    long n = v ? PyLong_AsLong(v) : 0;
    int rc;

    if (PyErr_Occurred())
        return -1;
    n += delta;
    if (n <= 0)
        return v ? PyDict_DelItem(link->flying, coid) : 0;
    if (!(count = PyLong_FromLong(n)))
        return -1;
    rc = PyDict_SetItem(link->flying, coid, count);
    Py_DECREF(count);
    return rc;
}

int srv_link_tag(srv_link *link, PyObject *kind, PyObject *req_id, PyObject *extra, uint64_t *tag)
{
    /* The tuple first: making it can run a collection, and a finalizer
       that tags this link too; the number is read after it. */
    PyObject *entry = srv_untracked(PyTuple_Pack(3, kind, req_id, extra));
    uint32_t n = link->next + 1;
    PyObject *key = entry ? PyLong_FromUnsignedLong(n) : NULL;
    int rc = key && entry ? PyDict_SetItem(link->pending, key, entry) : -1;
    int coid = PyUnicode_Check(extra) &&
               (kind == srv_names.new_order || PyUnicode_Compare(kind, srv_names.new_order) == 0);

    if (rc == 0 && coid && link_fly(link, extra, 1) < 0) {
        PyDict_DelItem(link->pending, key); /* nothing pending that is not counted */
        rc = -1;
    }
    Py_XDECREF(key);
    Py_XDECREF(entry);
    if (rc < 0)
        return -1;
    link->next = n;
    *tag = ((uint64_t)link->sid << 32) | n;
    return 0;
}

int srv_link_landed(srv_link *link, PyObject *coid)
{
    return link_fly(link, coid, -1);
}

/* The tokens saved at time `now` (seconds, time.monotonic()'s clock), the
   bucket brought up to it. */
static double link_refill(srv_link *link, double now)
{
    link->tokens += now > link->stamp ? (now - link->stamp) * link->rate : 0;
    if (link->tokens > link->burst)
        link->tokens = link->burst;
    link->stamp = now;
    return link->tokens;
}

/* Spend one token at time `now`. */
static int link_take_token_at(srv_link *link, double now)
{
    if (link->rate == 0)
        return 1;
    if (link_refill(link, now) < 1.0)
        return 0;
    link->tokens -= 1.0;
    return 1;
}

int srv_link_take_token(srv_link *link)
{
    return link->rate == 0 ? 1 : link_take_token_at(link, link_now());
}

/* Spend `n` more tokens at time `now`, into debt if need be: what a request
   cost beyond its message, known once it is carried out. */
static void link_spend_at(srv_link *link, double now, double n)
{
    if (link->rate != 0) {
        link_refill(link, now);
        link->tokens -= n;
    }
}

/* ---- the type -------------------------------------------------------------- */

static int link_init(srv_link *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sid", "session", "rate", "burst", "fd", "max_unsent", NULL};
    unsigned long sid;
    PyObject *session, *pending, *coids, *flying, *sid_key;
    double rate, burst;
    int fd = -1;
    Py_ssize_t max_unsent = 0;

    if (self->pending) {
        PyErr_SetString(PyExc_TypeError, "a Link is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "kOdd|$in:Link", kwlist, &sid, &session, &rate, &burst, &fd,
                                     &max_unsent))
        return -1;
    if (sid == 0 || sid > UINT32_MAX || rate < 0 || burst < 0 || fd < -1 || max_unsent < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "Link: sid in [1, 2**32), rate, burst and max_unsent >= 0, fd a descriptor or -1");
        return -1;
    }
    pending = PyDict_New();
    coids = PyDict_New();
    flying = PyDict_New();
    sid_key = PyLong_FromUnsignedLong(sid);
    if (!pending || !coids || !flying || !sid_key) {
        Py_XDECREF(pending);
        Py_XDECREF(coids);
        Py_XDECREF(flying);
        Py_XDECREF(sid_key);
        return -1;
    }
    self->pending = pending; /* last: a Link with pending is a whole one */
    list_init(&self->orders);
    self->coids = coids;
    self->flying = flying;
    self->sid_key = sid_key;
    self->sid = (uint32_t)sid;
    self->session = Py_NewRef(session);
    self->fd = fd;
    self->max_unsent = (size_t)max_unsent;
    self->rate = rate;
    self->burst = self->tokens = burst;
    self->stamp = self->last_read = link_now();
    return 0;
}

static int link_traverse(srv_link *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pending);
    Py_VISIT(self->coids);
    Py_VISIT(self->flying);
    Py_VISIT(self->session);
    return 0;
}

static int link_clear(srv_link *self)
{
    Py_CLEAR(self->pending);
    Py_CLEAR(self->coids);
    Py_CLEAR(self->flying);
    Py_CLEAR(self->session);
    Py_CLEAR(self->sid_key);
    return 0;
}

static void link_dealloc(srv_link *self)
{
    PyObject_GC_UnTrack(self);
    link_clear(self);
    PyMem_Free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int link_ready(srv_link *self)
{
    if (self->pending)
        return 1;
    PyErr_SetString(PyExc_ValueError, "the Link is not initialised");
    return 0;
}

PyDoc_STRVAR(link_login_doc, "login($self, account, admin, /)\n--\n\n"
                             "The session is logged in as `account` (an administrator's if `admin`).");

static PyObject *link_login(srv_link *self, PyObject *args)
{
    unsigned long long account;
    int admin;

    if (!PyArg_ParseTuple(args, "Kp:login", &account, &admin))
        return NULL;
    if (account > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "an account is a 32-bit number");
        return NULL;
    }
    self->logged_in = 1;
    self->account = (uint32_t)account;
    self->admin = (char)admin;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(link_close_doc, "close($self, /)\n--\n\nThe session has ended: nothing more is sent to it.");

static PyObject *link_close(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(link_tag_doc, "tag($self, kind, req_id, extra=None, /)\n--\n\n"
                           "A new pending request: the command's tag, (sid << 32) | its number.");

static PyObject *link_tag(srv_link *self, PyObject *args)
{
    PyObject *kind, *req_id, *extra = Py_None;
    uint64_t tag;

    if (!link_ready(self) || !PyArg_ParseTuple(args, "UO|O:tag", &kind, &req_id, &extra))
        return NULL;
    if (srv_link_tag(self, kind, req_id, extra, &tag) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(tag);
}

PyDoc_STRVAR(link_take_token_doc, "take_token($self, now=None, /)\n--\n\n"
                                  "Spend one token of the rate limit; False if none. `now`: the time in seconds\n"
                                  "on time.monotonic()'s clock (by default, that clock now).");

static PyObject *link_take_token(srv_link *self, PyObject *args)
{
    PyObject *now = Py_None;
    double t;

    if (!PyArg_ParseTuple(args, "|O:take_token", &now))
        return NULL;
    if (now == Py_None)
        return PyBool_FromLong(srv_link_take_token(self));
    t = PyFloat_AsDouble(now);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(link_take_token_at(self, t));
}

PyDoc_STRVAR(link_spend_doc, "spend($self, tokens, now=None, /)\n--\n\n"
                             "Spend `tokens` more of the rate limit (a reply's cost beyond its message), into\n"
                             "debt if need be: the session's next messages wait for the bucket to refill.");

static PyObject *link_spend(srv_link *self, PyObject *args)
{
    PyObject *now = Py_None;
    double n, t;

    if (!PyArg_ParseTuple(args, "d|O:spend", &n, &now))
        return NULL;
    if (!(n >= 0)) {
        PyErr_Format(PyExc_ValueError, "tokens must be 0 or more, not %R", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    if (now == Py_None) {
        t = link_now();
    } else if ((t = PyFloat_AsDouble(now)) == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    link_spend_at(self, t, n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(link_orders_doc, "orders($self, /)\n--\n\n"
                              "The open orders the session owns: order id -> (instrument, client order id); a copy.");

static PyObject *link_orders(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    return link_ready(self) ? srv_link_orders(self) : NULL;
}

PyDoc_STRVAR(link_order_ids_doc, "order_ids($self, instrument=None, /)\n--\n\n"
                                 "The ids of the open orders the session owns, oldest first: of one instrument\n"
                                 "(its id), or of all. A new list.");

static PyObject *link_order_ids(srv_link *self, PyObject *args)
{
    PyObject *instrument = Py_None;
    unsigned long inst;

    if (!link_ready(self) || !PyArg_ParseTuple(args, "|O:order_ids", &instrument))
        return NULL;
    if (instrument == Py_None)
        return srv_link_order_ids(self, -1);
    inst = PyLong_AsUnsignedLong(instrument);
    if (inst == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (inst > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "instrument must be an instrument id (0 to %lu), not %R",
                     (unsigned long)UINT32_MAX, instrument);
        return NULL;
    }
    return srv_link_order_ids(self, (int64_t)inst);
}

PyDoc_STRVAR(link_pending_doc, "pending($self, /)\n--\n\n"
                               "The requests waiting for their first event: number -> (kind, req_id, extra); a copy.");

static PyObject *link_pending(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    return link_ready(self) ? PyDict_Copy(self->pending) : NULL;
}

static PyObject *link_get_account(srv_link *self, void *Py_UNUSED(closure))
{
    if (!self->logged_in)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->account);
}

static PyObject *link_get_busy(srv_link *self, void *Py_UNUSED(closure))
{
    if (!link_ready(self))
        return NULL;
    return PyBool_FromLong(PyDict_GET_SIZE(self->pending) || self->n_orders);
}

static PyObject *link_get_pending_count(srv_link *self, void *Py_UNUSED(closure))
{
    if (!link_ready(self))
        return NULL;
    return PyLong_FromSsize_t(PyDict_GET_SIZE(self->pending));
}

static PyObject *link_get_order_count(srv_link *self, void *Py_UNUSED(closure))
{
    if (!link_ready(self))
        return NULL;
    return PyLong_FromSsize_t(self->n_orders);
}

static PyMethodDef link_methods[] = {
    {"login", (PyCFunction)link_login, METH_VARARGS, link_login_doc},
    {"close", (PyCFunction)link_close, METH_NOARGS, link_close_doc},
    {"tag", (PyCFunction)link_tag, METH_VARARGS, link_tag_doc},
    {"take_token", (PyCFunction)link_take_token, METH_VARARGS, link_take_token_doc},
    {"spend", (PyCFunction)link_spend, METH_VARARGS, link_spend_doc},
    {"orders", (PyCFunction)link_orders, METH_NOARGS, link_orders_doc},
    {"order_ids", (PyCFunction)link_order_ids, METH_VARARGS, link_order_ids_doc},
    {"pending", (PyCFunction)link_pending, METH_NOARGS, link_pending_doc},
    {"write", (PyCFunction)srv_link_write, METH_NOARGS, srv_link_write_doc},
    {"take_output", (PyCFunction)srv_link_take_output, METH_NOARGS, srv_link_take_output_doc},
    {"drop_output", (PyCFunction)srv_link_drop_output, METH_NOARGS, srv_link_drop_output_doc},
    {"forget_socket", (PyCFunction)srv_link_forget_socket, METH_NOARGS, srv_link_forget_socket_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *link_get_unsent(srv_link *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(srv_link_unsent(self));
}

static PyGetSetDef link_getset[] = {
    {"unsent", (getter)link_get_unsent, NULL, "bytes queued for the session, not sent yet", NULL},
    {"account", (getter)link_get_account, NULL, "the account logged in as, or None", NULL},
    {"busy", (getter)link_get_busy, NULL, "requests in flight or open orders: not to be forgotten yet", NULL},
    {"order_count", (getter)link_get_order_count, NULL, "open orders the session owns", NULL},
    {"pending_count", (getter)link_get_pending_count, NULL,
     "requests waiting for their events (until the last of them is routed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef link_members[] = {
    {"sid", T_UINT, offsetof(srv_link, sid), READONLY, "the session's id"},
    {"admin", T_BOOL, offsetof(srv_link, admin), READONLY, "logged in with an administrator's account"},
    {"closed", T_BOOL, offsetof(srv_link, closed), READONLY, "the session has ended"},
    {"account_shared", T_BOOL, offsetof(srv_link, account_shared), 0,
     "another open session is logged in as the same account (the server keeps it): the intake then makes sure a\n"
     "client order id it cancels or modifies is not another session's"},
    {"last_read", T_DOUBLE, offsetof(srv_link, last_read), READONLY,
     "when its socket last gave bytes (time.monotonic()'s clock; at first, when the Link was made)"},
    {"session", T_OBJECT, offsetof(srv_link, session), READONLY, "the Python Session"},
    {"writing", T_BOOL, offsetof(srv_link, writing), READONLY,
     "the socket was full: the session's writer sends the output (Link.write) until it is empty"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject srv_link_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Link",
    .tp_basicsize = sizeof(srv_link),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Link(sid, session, rate, burst, *, fd=-1, max_unsent=0): one session's per-order state and\n"
                        "its output (csrc/binding/link.c, outbox.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)link_init,
    .tp_dealloc = (destructor)link_dealloc,
    .tp_traverse = (traverseproc)link_traverse,
    .tp_clear = (inquiry)link_clear,
    .tp_methods = link_methods,
    .tp_getset = link_getset,
    .tp_members = link_members,
};
