/*
 * intake.c - Intake: every request frame, decoded once; the per-order
 * requests (new_order, cancel, modify) carried out here.
 *
 * A session's reader reads its socket into its Inbox (inbox.c) and has
 * Intake.drain(link, inbox) carry out the frames there, one by one, as
 * Intake.take(link, frame) does a single frame. Each is decoded by orjson
 * (once). A per-order request is this file's from then
 * on, with every rule the server applies to it: its form (form.c), the rate
 * limit, the login, the account's open-order limit, the session's
 * ownership of what it cancels or modifies (an instrument's order limits
 * are the engine's). It answers
 * what it refuses through the IntakeEvents callbacks (`refused`, `rejected`,
 * `over_rate`) and queues what it accepts: the pending request in the Link,
 * the in-flight count in the Ledger, the engine command in the
 * CommandBuffer.
 *
 * Everything else goes back to the reader, decoded, as take()'s result: a
 * message that is not a per-order request (or not a request at all: not an
 * object, a bad req_id or type). A frame that is not JSON is counted (as
 * "other", meters.c) and goes to `undecodable(session, error)`. The
 * callbacks reply; none waits for a login's check or for room in the
 * command buffer.
 */
#include "server.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Count a per-order request of `kind` (ok: srv_form_read's answer, 0 or 1):
 * a well-formed one by its command, another by its name. */
static void intake_count(srv_intake *self, PyObject *kind, const struct srv_order *r, int ok)
{
    enum srv_request_kind k = SRV_REQ_MODIFY;

    if (ok ? r->cmd.type == ENG_CMD_NEW : PyUnicode_Compare(kind, srv_names.new_order) == 0)
        k = SRV_REQ_NEW_ORDER;
    else if (ok ? r->cmd.type == ENG_CMD_CANCEL : PyUnicode_Compare(kind, srv_names.cancel) == 0)
        k = SRV_REQ_CANCEL;
    self->ledger->meters.requests[k]++;
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
static int intake_rejected(srv_intake *self, srv_link *link, struct srv_order *r, enum srv_reject why,
                           PyObject *message, int limit)
{
    PyObject *c = PyUnicode_FromString(srv_reject_name(why));
    PyObject *oid = r->cmd.order_id ? PyLong_FromUnsignedLongLong(r->cmd.order_id) : Py_NewRef(Py_None);
    int rc = -1;

    self->ledger->meters.rejects[why]++;
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

/* The account's open-order limit on a new order (1 when it is not reached,
 * 0 when it is and the reject is sent, -1 on error). It bounds the book
 * memory an account fills, so an order that never rests (IOC, FOK, market)
 * goes whatever the count: an account at its limit can still take
 * liquidity to hedge or flatten. Every new order in flight counts, for the
 * check of one that can rest. An instrument's order limits are the
 * engine's (SET_LIMITS): it checks them where it runs the order or the
 * modify, against the order as it is then. */
static int intake_limits(srv_intake *self, srv_link *link, struct srv_order *r)
{
    struct srv_account_counts *counts;

    if (!self->max_open || r->cmd.order_type != ENG_LIMIT || r->cmd.tif != ENG_GTC)
        return 1;
    if (!(counts = srv_ledger_counts(self->ledger, link->account)))
        return -1;
    if (counts->open + counts->in_flight < self->max_open)
        return 1;
    return intake_rejected(self, link, r, SRV_REJ_MAX_OPEN,
                           PyUnicode_FromFormat("account %lu has %lld open and %lld unanswered new orders: "
                                                "at most %lld may rest",
                                                (unsigned long)link->account, counts->open, counts->in_flight,
                                                self->max_open),
                           1);
}

/* A cancel or modify by client order id: the order is not another
 * session's of the account (1), or the reject is sent (0); -1 on error.
 * Another session's: it holds an open order with that id, or, open still,
 * has a new order with it unanswered (whose answer could come before the
 * engine takes this), even if this session has one in flight too: the
 * engine may accept the other and refuse this one as a duplicate. Held by
 * none: the engine answers. The other sessions are looked at only when the
 * account has another session open. */
static int intake_owned_coid(srv_intake *self, srv_link *link, struct srv_order *r)
{
    srv_link *holder;
    int err = 0;

    if (!r->coid || link->admin || !link->account_shared || PyDict_GetItemWithError(link->coids, r->coid))
        return 1;
    if (PyErr_Occurred())
        return -1;
    holder = srv_ledger_coid_holder(self->ledger, link, r->coid, &err);
    if (err)
        return -1;
    if (!holder)
        return 1;
    return intake_rejected(self, link, r, (enum srv_reject)ENG_NOT_OWNER,
                           PyUnicode_FromString("order belongs to another session"), 0);
}

/* A cancel or modify: the order is the session's, or it is an
 * administrator's (the engine checks accounts; sessions of one account are
 * kept apart here). 1 if so, 0 when the reject is sent, -1 on error. An
 * order id the server has told no client of yet is another session's new
 * order in flight, or none: while the account has another session open,
 * unknown_order here (the engine would take the first for this session's). */
static int intake_owned(srv_intake *self, srv_link *link, struct srv_order *r)
{
    srv_link *owner;

    if (!r->cmd.order_id)
        return intake_owned_coid(self, link, r);
    owner = srv_ledger_owner(self->ledger, r->cmd.order_id);
    if (!owner && !link->admin && link->account_shared && !srv_ledger_knows(self->ledger, r->cmd.order_id)) {
        Py_CLEAR(r->coid);
        return intake_rejected(self, link, r, (enum srv_reject)ENG_UNKNOWN_ORDER,
                               PyUnicode_FromFormat("no order %llu is known yet",
                                                    (unsigned long long)r->cmd.order_id),
                               0);
    }
    if (!owner || owner == link || link->admin)
        return 1;
    Py_CLEAR(r->coid); /* the reject names the order by id */
    /* The engine's code; its message when the order is another account's. */
    return intake_rejected(self, link, r, (enum srv_reject)ENG_NOT_OWNER,
                           PyUnicode_FromString(owner->account == link->account ? "order belongs to another session"
                                                                                 : eng_strerror(ENG_NOT_OWNER)),
                           0);
}

/* Every message spends a token of the session's rate, a well-formed one or
 * not (what a session sends costs the server alike). 0 when it had one;
 * otherwise 1 once the over_rate answer is given, or -1 if that failed:
 * the message is dropped. */
static int intake_over_rate(srv_intake *self, srv_link *link, PyObject *req_id)
{
    PyObject *args[] = {link->session, req_id};

    if (srv_link_take_token(link))
        return 0;
    return intake_call(self->on_over_rate, args, 2) < 0 ? -1 : 1;
}

/* Carry out a well-formed per-order request (0 when done or refused, -1 on error). */
static int intake_carry_out(srv_intake *self, srv_link *link, struct srv_order *r, int64_t taken_ns)
{
    struct runner_cmd *rc;
    uint64_t tag;
    int ok;

    if ((ok = intake_over_rate(self, link, r->req_id)) != 0)
        return ok < 0 ? -1 : 0;
    if (!link->logged_in)
        return intake_refused(self, link, r->req_id, "not_logged_in", PyUnicode_FromString("log in first"));
    r->cmd.account = link->account;
    if (r->cmd.type == ENG_CMD_NEW) {
        PyObject *inst = PyDict_GetItemWithError(self->instruments, r->symbol);

        if (!inst && PyErr_Occurred())
            return -1;
        /* An unknown symbol is the engine's reject: a number it never has. */
        r->cmd.instrument = inst ? (uint32_t)PyLong_AsUnsignedLong(inst) : UINT32_MAX;
        if (PyErr_Occurred())
            return -1;
    }
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
    rc = srv_commands_reserve(self->commands); /* room: take() checked, and no Python ran since */
    if (!rc) {
        PyErr_SetString(PyExc_RuntimeError, "the command buffer filled while a request was read");
        return -1;
    }
    /* The count first: a failed tag leaves nothing pending behind it. */
    /* The account's counts exist before the tag (so finding them again
     * after it allocates nothing and cannot fail). */
    if (r->cmd.type == ENG_CMD_NEW && !srv_ledger_counts(self->ledger, link->account)) {
        self->commands->n--; /* the record is not queued after all */
        return -1;
    }
    if (srv_link_tag(link, r->kind, r->req_id, r->coid ? r->coid : Py_None, &tag) < 0) {
        self->commands->n--;
        return -1;
    }
    if (r->cmd.type == ENG_CMD_NEW)
        srv_ledger_counts(self->ledger, link->account)->in_flight++;
    if (r->cmd.type == ENG_CMD_NEW)
        srv_meters_stamp(&self->ledger->meters, tag, taken_ns);
    rc->cmd = r->cmd;
    rc->cmd.ts = taken_ns;
    rc->tag = tag;
    if (self->ledger->meters.trace && r->cmd.type == ENG_CMD_NEW)
        srv_trace_taken(self->ledger->meters.trace, tag);
    return 0;
}

/* One request frame of link's session, reaching the server's C at
 * `taken_ns` (the command's timestamp, and where a new order's latency
 * starts): None when it is done; (message,) when the decoded message is
 * Python's; False, having done nothing, when it is a well-formed per-order
 * request and the command buffer is full. */
static PyObject *intake_frame(srv_intake *self, srv_link *link, PyObject *frame, int64_t taken_ns)
{
    PyObject *msg, *typ, *req_id;
    struct srv_order r;
    int ok = 2, rc = 0, full = 0; /* ok 2: Python's (as srv_form_read says) */

    msg = PyObject_CallOneArg(self->loads, frame);
    if (!msg) {
        PyObject *exc;
        PyObject *cargs[2];

        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        self->ledger->meters.requests[SRV_REQ_OTHER]++;
        exc = srv_take_error();
        cargs[0] = link->session;
        cargs[1] = exc;
        if ((rc = intake_over_rate(self, link, Py_None)) == 0)
            rc = intake_call(self->on_undecodable, cargs, 2);
        Py_DECREF(exc);
        if (rc < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (PyDict_CheckExact(msg)) {
        typ = PyDict_GetItemWithError(msg, srv_names.type);
        req_id = typ || !PyErr_Occurred() ? PyDict_GetItemWithError(msg, srv_names.req_id) : NULL;
        if (PyErr_Occurred())
            goto fail;
        if (!req_id)
            req_id = Py_None;
        /* Held, not borrowed: reading the message may run a key's __eq__
           (a custom `loads`), which could drop them from it. */
        Py_XINCREF(typ);
        Py_INCREF(req_id);
        /* A bad req_id or type is any message's fault: Python's. */
        if (typ && PyUnicode_CheckExact(typ) &&
            (req_id == Py_None || PyLong_CheckExact(req_id) || PyUnicode_CheckExact(req_id))) {
            struct srv_form_error e = {NULL, NULL};

            ok = srv_form_read(typ, msg, &r, &e);
            r.req_id = req_id;
            /* No room for its command: the reader makes room and hands the
             * frame back (decoded again: only under backpressure). Any
             * other request goes on at once. */
            full = ok == 1 && self->commands->n >= self->commands->cap;
            if (ok == 0) {
                intake_count(self, typ, &r, 0);
                if ((rc = intake_over_rate(self, link, req_id)) == 0)
                    rc = intake_refused(self, link, req_id, e.code, e.message);
                else
                    Py_XDECREF(e.message);
            } else if (ok == 1 && !full) {
                intake_count(self, typ, &r, 1);
                rc = intake_carry_out(self, link, &r, taken_ns);
            }
            srv_form_release(&r);
        }
        Py_XDECREF(typ);
        Py_DECREF(req_id);
        if (ok < 0)
            goto fail;
        if (full) {
            Py_DECREF(msg);
            Py_RETURN_FALSE;
        }
        if (ok != 2)
            goto done;
    }
    /* Python's, in the reader's own frame: its requests may wait (a login's
     * secret check, room for a mass cancel's commands), which is no work
     * for a C frame. */
    return Py_BuildValue("(N)", msg);
done:
    Py_DECREF(msg);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
fail:
    Py_DECREF(msg);
    return NULL;
}

/* The link of a (link, x) call, or NULL with TypeError saying `usage`. */
static srv_link *intake_link(srv_intake *self, PyObject *const *args, Py_ssize_t nargs, const char *usage)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &srv_link_type) || !((srv_link *)args[0])->pending) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (!self->ledger) {
        PyErr_SetString(PyExc_ValueError, "the Intake is not initialised");
        return NULL;
    }
    return (srv_link *)args[0];
}

PyDoc_STRVAR(intake_take_doc,
             "take($self, link, frame, /)\n--\n\n"
             "Carry out one request frame of link's session (see csrc/binding/intake.c): None when it is\n"
             "done; (message,) when the decoded message is Python's to carry out; False, having done\n"
             "nothing, when it is a well-formed per-order request and the command buffer is full (make\n"
             "room, then take it again).");

static PyObject *intake_take(srv_intake *self, PyObject *const *args, Py_ssize_t nargs)
{
    srv_link *link = intake_link(self, args, nargs, "take takes (link, frame)");

    return link ? intake_frame(self, link, args[1], srv_meters_now()) : NULL;
}

PyDoc_STRVAR(intake_drain_doc,
             "drain($self, link, inbox, /)\n--\n\n"
             "Carry out the whole frames held in inbox (an Inbox of link's session), in order, as take()\n"
             "does each, until one needs Python or waiting: None when none is left; (message,) when the\n"
             "next is Python's (it is taken: carry it out, then drain again); False when the next is a\n"
             "per-order request and the command buffer is full (it stays in the inbox: make room, then\n"
             "drain again); True when the drain has run the Intake's turn_after seconds, having carried\n"
             "out a frame at least, and frames are left (they stay in the inbox: let the loop turn, then\n"
             "drain again). A broken header raises the inbox's error when it is the next thing to read.\n"
             "Until it returns, the inbox's frames are its own: a drain of it or Inbox.frames() raises\n"
             "RuntimeError.");

/* One session's drain stops after turn_after_ns: the frames of one read
 * that each cost a call into Python (errors over the rate: a flood of
 * malformed frames answers every one) would otherwise hold the loop, and
 * every other session, for as long as they take. The clock is the frames'
 * timestamps' (wall time): a step back ends the drain early too, as
 * harmless as a step forward. */
static PyObject *intake_drain_frames(srv_intake *self, srv_link *link, srv_inbox *inbox)
{
    int64_t started = srv_meters_now(), now = started, until = started + self->turn_after_ns;

    for (;;) {
        const char *body;
        size_t len;
        PyObject *frame, *left;
        int rc = srv_inbox_next(inbox, &body, &len);

        if (rc <= 0) {
            if (rc < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        /* `now`: when the frame before was done (for the first, `started`: never past `until`). */
        if (self->turn_after_ns && (now >= until || now < started))
            Py_RETURN_TRUE; /* the frame stays in the inbox */
        if (!(frame = PyBytes_FromStringAndSize(body, (Py_ssize_t)len)))
            return NULL;
        left = intake_frame(self, link, frame, now);
        Py_DECREF(frame);
        if (left == Py_False)
            return left; /* not taken */
        srv_inbox_taken(inbox, len);
        if (left != Py_None)
            return left; /* (message,), or NULL: taken either way */
        Py_DECREF(left);
        now = srv_meters_now();
    }
}

PyObject *srv_intake_drain(srv_intake *self, srv_link *link, srv_inbox *inbox)
{
    PyObject *left;

    /* The frame carried out is taken once it is done: meanwhile the Python
       it calls takes none from the inbox (Inbox.frames, a drain of it). */
    if (srv_inbox_check_idle(inbox) < 0)
        return NULL;
    inbox->draining = 1;
    left = intake_drain_frames(self, link, inbox);
    inbox->draining = 0;
    return left;
}

static PyObject *intake_drain(srv_intake *self, PyObject *const *args, Py_ssize_t nargs)
{
    srv_link *link = intake_link(self, args, nargs, "drain takes (link, inbox)");

    if (!link)
        return NULL;
    if (!PyObject_TypeCheck(args[1], &srv_inbox_type)) {
        PyErr_SetString(PyExc_TypeError, "drain takes (link, inbox)");
        return NULL;
    }
    return srv_intake_drain(self, link, (srv_inbox *)args[1]);
}

/* ---- the type ---------------------------------------------------------------- */

static int intake_clear(srv_intake *self);

static int intake_init(srv_intake *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ledger", "commands", "events", "instruments", "max_open", "loads", "turn_after", NULL};
    PyObject *ledger = NULL, *commands = NULL, *events = NULL, *instruments = NULL, *loads = NULL;
    long long max_open = LLONG_MIN;
    double turn_after = 0.0;

    if (self->ledger) {
        PyErr_SetString(PyExc_TypeError, "an Intake is initialised once");
        return -1;
    }
    /* Keyword-only arguments are optional ones to PyArg_Parse: all but turn_after are needed. */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O!O!OO!LOd:Intake", kwlist, &srv_ledger_type, &ledger,
                                     &srv_commands_type, &commands, &events, &PyDict_Type, &instruments, &max_open,
                                     &loads, &turn_after))
        return -1;
    if (!ledger || !commands || !events || !instruments || max_open == LLONG_MIN || !loads) {
        PyErr_SetString(PyExc_TypeError, "Intake needs ledger, commands, events, instruments, max_open and loads");
        return -1;
    }
    /* Written as !(x <= max): a NaN fails it too. */
    if (max_open < 0 || !PyCallable_Check(loads) || turn_after < 0.0 || !(turn_after <= 60.0)) {
        PyErr_SetString(PyExc_ValueError, "Intake: max_open >= 0, loads callable, 0 <= turn_after <= 60 (seconds)");
        return -1;
    }
    /* Made by __new__ alone, they have no tables or records to keep. */
    if (!((srv_ledger *)ledger)->links) {
        PyErr_SetString(PyExc_ValueError, "Intake: the Ledger is not initialised");
        return -1;
    }
    if (!((srv_commands *)commands)->recs) {
        PyErr_SetString(PyExc_ValueError, "Intake: the CommandBuffer is not initialised");
        return -1;
    }
    if (!(self->on_undecodable = srv_method(events, "undecodable")) ||
        !(self->on_refused = srv_method(events, "refused")) || !(self->on_rejected = srv_method(events, "rejected")) ||
        !(self->on_over_rate = srv_method(events, "over_rate"))) {
        intake_clear(self); /* what it took is let go: an __init__ may follow */
        return -1;
    }
    self->ledger = (srv_ledger *)Py_NewRef(ledger);
    self->commands = (srv_commands *)Py_NewRef(commands);
    self->instruments = Py_NewRef(instruments);
    self->loads = Py_NewRef(loads);
    self->max_open = max_open;
    /* Any turn_after over 0 bounds the drain, however small. */
    self->turn_after_ns = turn_after > 0.0 && turn_after < 1e-9 ? 1 : (int64_t)(turn_after * 1e9);
    return 0;
}

static int intake_traverse(srv_intake *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    Py_VISIT(self->commands);
    Py_VISIT(self->instruments);
    Py_VISIT(self->loads);
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
    Py_CLEAR(self->loads);
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
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef intake_methods[] = {
    {"take", (PyCFunction)(void (*)(void))intake_take, METH_FASTCALL, intake_take_doc},
    {"drain", (PyCFunction)(void (*)(void))intake_drain, METH_FASTCALL, intake_drain_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject srv_intake_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Intake",
    .tp_basicsize = sizeof(srv_intake),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Intake(*, ledger, commands, events, instruments, max_open, loads, turn_after=0.0):\n"
                        "request frames (see csrc/binding/intake.c); a drain stops after turn_after seconds\n"
                        "(0: when the frames end)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)intake_init,
    .tp_dealloc = (destructor)intake_dealloc,
    .tp_traverse = (traverseproc)intake_traverse,
    .tp_clear = (inquiry)intake_clear,
    .tp_methods = intake_methods,
};
