/*
 * trace.c - LatencyTrace: where one new order in N spends its time between
 * the socket read that completed its frame and the write of its answer
 * (the server's --trace-latency; pyengine/server/latency_trace.py reads it).
 *
 * A traced order collects one CLOCK_MONOTONIC stamp at each point, in this
 * order (enum srv_trace_point):
 *
 *   read       the socket read that completed its frame (the session's
 *              reader calls read() after each read)
 *   intake     decoded, checked and packed into the command buffer
 *   pushed     the push of its record into the engine's input ring began
 *              (stamped before the push: the engine may take it at once)
 *   taken      the engine thread took the batch holding it    } the batch's
 *   published  ... and first published the batch's events     } RUNNER_EV_BATCH
 *   popped     the dispatcher took its answer from the output ring
 *   routed     the Router queued its answer (ack, or reject) to the session
 *   written    the flush's send that handed its session's output to the
 *              socket whole (or the flush's end, when the socket took only
 *              part of it, or none: the rest goes from the session's writer)
 *
 * Stamps are taken by the thread that does the step; the clock is the same
 * for all, so each order's stamps are in the order above.
 *
 * Records in flight sit in a table of slots by tag. A slot still in use
 * when another traced order wants it is taken over once its order is
 * older than SRV_TRACE_STALE_NS (an order whose session closed before its
 * ack, or whose batch stamp never came: `lost`); before that the newcomer
 * is not traced (`skipped`). Routed records wait in `routed` for their
 * write and their batch's stamps. Finished records go to `kept`, a
 * reservoir sample of SRV_TRACE_KEEP (every record while there are no
 * more).
 *
 * Off (no LatencyTrace on the Ledger), the per-order path tests one NULL
 * pointer at the intake and one at each ack. On, the cost is a clock
 * reading per traced order at most points, one per socket read, push,
 * route() call and flush, and a look-up in the slots per pushed record (only
 * while a traced order waits for its push) and per ack.
 */
#include "server.h"

#include <structmember.h>
#include <string.h>

static const char *const trace_point_names[SRV_TP__COUNT] = {
    "read", "intake", "pushed", "taken", "published", "popped", "routed", "written",
};

typedef struct {
    PyObject_HEAD
    srv_ledger *ledger; /* whose meters point at `t` */
    struct srv_trace t;
} srv_trace_obj;

static struct srv_trace_rec *trace_slot(struct srv_trace *t, uint64_t tag)
{
    return &t->slots[srv_tag_slot(tag, SRV_TRACE_SLOTS)];
}

/* Take slot `s` out of the routed list, if it is there. */
static void trace_unroute(struct srv_trace *t, struct srv_trace_rec *s)
{
    uint32_t idx = (uint32_t)(s - t->slots);

    for (size_t i = 0; i < t->n_routed; i++)
        if (t->routed[i] == idx) {
            t->routed[i] = t->routed[--t->n_routed];
            return;
        }
}

/* Free a slot whose order will not finish. */
static void trace_lose(struct srv_trace *t, struct srv_trace_rec *s)
{
    if (!s->t[SRV_TP_PUSHED])
        t->unpushed--;
    if (s->t[SRV_TP_ROUTED])
        trace_unroute(t, s);
    s->tag = 0;
    t->lost++;
}

/* Routed record i has every stamp: into the sample, its slot freed. */
static void trace_finish(struct srv_trace *t, size_t i)
{
    struct srv_trace_rec *s = &t->slots[t->routed[i]];
    unsigned long long j;

    t->completed++;
    if (t->n_kept < SRV_TRACE_KEEP) {
        j = t->n_kept++;
    } else {
        /* Reservoir sampling: every finished record is kept with the same odds. */
        t->rng ^= t->rng << 13;
        t->rng ^= t->rng >> 7;
        t->rng ^= t->rng << 17;
        j = t->rng % t->completed;
    }
    if (j < SRV_TRACE_KEEP)
        memcpy(&t->kept[j * SRV_TP__COUNT], s->t, sizeof(s->t));
    s->tag = 0;
    t->routed[i] = t->routed[--t->n_routed];
}

void srv_trace_taken(struct srv_trace *t, uint64_t tag)
{
    struct srv_trace_rec *s;
    int64_t now;

    if (--t->countdown)
        return;
    t->countdown = t->every;
    now = srv_monotonic_ns();
    s = trace_slot(t, tag);
    if (s->tag) {
        if (now - s->t[SRV_TP_INTAKE] < SRV_TRACE_STALE_NS) {
            t->skipped++;
            return;
        }
        trace_lose(t, s);
    }
    memset(s, 0, sizeof(*s));
    s->tag = tag;
    /* No read stamped yet (an Intake used without a session): the intake's. */
    s->t[SRV_TP_READ] = t->read_ns && t->read_ns <= now ? t->read_ns : now;
    s->t[SRV_TP_INTAKE] = now;
    t->unpushed++;
    t->traced++;
}

void srv_trace_popped(struct srv_trace *t)
{
    t->popped_ns = srv_monotonic_ns();
}

void srv_trace_routed(struct srv_trace *t, uint64_t tag, uint64_t seq, const void *link)
{
    struct srv_trace_rec *s = trace_slot(t, tag);

    if (s->tag != tag || !tag || s->t[SRV_TP_ROUTED])
        return;
    if (!s->t[SRV_TP_PUSHED] || !t->popped_ns) {
        trace_lose(t, s); /* answered without a push we saw: not a record to trust */
        return;
    }
    s->seq = seq;
    s->link = link;
    s->t[SRV_TP_POPPED] = t->popped_ns;
    s->t[SRV_TP_ROUTED] = srv_monotonic_ns();
    t->routed[t->n_routed++] = (uint32_t)(s - t->slots);
}

void srv_trace_dropped(struct srv_trace *t, uint64_t tag)
{
    struct srv_trace_rec *s = trace_slot(t, tag);

    if (tag && s->tag == tag)
        trace_lose(t, s);
}

void srv_trace_batch(struct srv_trace *t, const struct eng_event *ev)
{
    uint64_t first = ev->order_id, last = ev->seq;

    for (size_t i = t->n_routed; i-- > 0;) {
        struct srv_trace_rec *s = &t->slots[t->routed[i]];

        if (s->t[SRV_TP_TAKEN])
            continue;
        if (s->seq < first) {
            trace_lose(t, s); /* its batch has gone by unstamped */
            continue;
        }
        if (s->seq > last)
            continue;
        s->t[SRV_TP_TAKEN] = ev->price;
        s->t[SRV_TP_PUBLISHED] = ev->qty;
        if (s->t[SRV_TP_WRITTEN])
            trace_finish(t, i);
    }
}

void srv_trace_sent(struct srv_trace *t, const void *link)
{
    int64_t now = 0;

    for (size_t i = t->n_routed; i-- > 0;) {
        struct srv_trace_rec *s = &t->slots[t->routed[i]];

        if (s->link != link || s->t[SRV_TP_WRITTEN])
            continue;
        s->t[SRV_TP_WRITTEN] = now ? now : (now = srv_monotonic_ns());
        if (s->t[SRV_TP_TAKEN])
            trace_finish(t, i);
    }
}

void srv_trace_written(struct srv_trace *t)
{
    int64_t now;

    if (!t->n_routed)
        return;
    now = srv_monotonic_ns();
    for (size_t i = t->n_routed; i-- > 0;) {
        struct srv_trace_rec *s = &t->slots[t->routed[i]];

        if (!s->t[SRV_TP_WRITTEN])
            s->t[SRV_TP_WRITTEN] = now;
        if (s->t[SRV_TP_TAKEN])
            trace_finish(t, i);
    }
}

void srv_trace_read(struct srv_trace *t)
{
    t->read_ns = srv_monotonic_ns();
}

void srv_trace_pushed(struct srv_trace *t, const struct runner_cmd *recs, size_t n, int64_t ns)
{
    for (size_t i = 0; i < n && t->unpushed; i++) {
        struct srv_trace_rec *s = trace_slot(t, recs[i].tag);

        if (recs[i].tag && s->tag == recs[i].tag && !s->t[SRV_TP_PUSHED]) {
            s->t[SRV_TP_PUSHED] = ns;
            t->unpushed--;
        }
    }
}

/* ---- the type ---------------------------------------------------------------- */

PyDoc_STRVAR(trace_read_doc, "read($self, /)\n--\n\n"
                             "A socket read has just returned: the read stamp of the orders it completes.");

static PyObject *trace_read(srv_trace_obj *self, PyObject *Py_UNUSED(ignored))
{
    srv_trace_read(&self->t);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trace_records_doc,
             "records($self, /)\n--\n\n"
             "The kept records of finished orders: bytes of native int64 stamps (ns), one per point\n"
             "(`points`) for each record.");

static PyObject *trace_records(srv_trace_obj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBytes_FromStringAndSize((const char *)self->t.kept,
                                     (Py_ssize_t)(self->t.n_kept * SRV_TP__COUNT * sizeof(int64_t)));
}

static int trace_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

const char srv_stage_times_doc[] =
    "stage_times(records, width, start, end, /)\n--\n\n"
    "The times from point `start` to point `end` (indices into a record of `width` stamps) of every\n"
    "record in `records` (native int64 stamps, as LatencyTrace.records() gives them), sorted: bytes\n"
    "of native int64. Sorted here, in C, because the server does it on its event loop (SIGUSR1),\n"
    "where sorting 65,536 values in Python for each stage stalled it for a third of a second.";

PyObject *srv_stage_times(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t width, start, end;
    PyObject *out = NULL;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "stage_times takes (records, width, start, end)");
        return NULL;
    }
    width = PyLong_AsSsize_t(args[1]);
    start = PyLong_AsSsize_t(args[2]);
    end = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (width < 1 || width > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(int64_t) || start < 0 || end < 0 ||
        start >= width || end >= width) {
        PyErr_SetString(PyExc_ValueError, "stage_times: 0 <= start, end < width, a record's size a size");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len % (Py_ssize_t)(width * sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "stage_times: records are not whole records of `width` int64 stamps");
    } else {
        Py_ssize_t n = view.len / (Py_ssize_t)(width * sizeof(int64_t));

        out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
        if (out) {
            int64_t *times = (int64_t *)PyBytes_AS_STRING(out);
            const char *recs = view.buf;

            for (Py_ssize_t r = 0; r < n; r++) {
                int64_t a, b;

                /* memcpy: the buffer need not be aligned */
                memcpy(&a, recs + (r * width + start) * (Py_ssize_t)sizeof(int64_t), sizeof(a));
                memcpy(&b, recs + (r * width + end) * (Py_ssize_t)sizeof(int64_t), sizeof(b));
                times[r] = b - a;
            }
            qsort(times, (size_t)n, sizeof(*times), trace_cmp_i64);
        }
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *trace_get_points(srv_trace_obj *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    PyObject *names = PyTuple_New(SRV_TP__COUNT);

    for (Py_ssize_t i = 0; names && i < SRV_TP__COUNT; i++) {
        PyObject *name = PyUnicode_FromString(trace_point_names[i]);

        if (!name) {
            Py_CLEAR(names);
            break;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

static int trace_init(srv_trace_obj *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ledger", "every", NULL};
    PyObject *ledger, *n;
    unsigned long long every;

    if (self->ledger) {
        PyErr_SetString(PyExc_TypeError, "a LatencyTrace is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!:LatencyTrace", kwlist, &srv_ledger_type, &ledger, &PyLong_Type, &n))
        return -1;
    every = PyLong_AsUnsignedLongLong(n); /* OverflowError past 64 bits or below 0 */
    if (every == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (every < 1 || every > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "LatencyTrace: every in [1, 2**32) (one order in every)");
        return -1;
    }
    if (((srv_ledger *)ledger)->meters.trace) {
        PyErr_SetString(PyExc_ValueError, "LatencyTrace: the Ledger has one already");
        return -1;
    }
    self->t.slots = PyMem_Calloc(SRV_TRACE_SLOTS, sizeof(*self->t.slots));
    self->t.routed = PyMem_Calloc(SRV_TRACE_SLOTS, sizeof(*self->t.routed));
    self->t.kept = PyMem_Calloc((size_t)SRV_TRACE_KEEP * SRV_TP__COUNT, sizeof(*self->t.kept));
    if (!self->t.slots || !self->t.routed || !self->t.kept) {
        /* Freed here: a later __init__ allocates them again. */
        PyMem_Free(self->t.slots);
        PyMem_Free(self->t.routed);
        PyMem_Free(self->t.kept);
        self->t.slots = NULL;
        self->t.routed = NULL;
        self->t.kept = NULL;
        PyErr_NoMemory();
        return -1;
    }
    self->t.every = self->t.countdown = (uint32_t)every;
    self->t.rng = 0x9E3779B97F4A7C15u;
    self->ledger = (srv_ledger *)Py_NewRef(ledger);
    self->ledger->meters.trace = &self->t;
    return 0;
}

static int trace_traverse(srv_trace_obj *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ledger);
    return 0;
}

static int trace_clear(srv_trace_obj *self)
{
    if (self->ledger && self->ledger->meters.trace == &self->t)
        self->ledger->meters.trace = NULL;
    Py_CLEAR(self->ledger);
    return 0;
}

static void trace_dealloc(srv_trace_obj *self)
{
    PyObject_GC_UnTrack(self);
    trace_clear(self);
    PyMem_Free(self->t.slots);
    PyMem_Free(self->t.routed);
    PyMem_Free(self->t.kept);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef trace_methods[] = {
    {"read", (PyCFunction)trace_read, METH_NOARGS, trace_read_doc},
    {"records", (PyCFunction)trace_records, METH_NOARGS, trace_records_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef trace_members[] = {
    {"every", T_UINT, offsetof(srv_trace_obj, t.every), READONLY, "one new order in `every` is traced"},
    {"traced", T_ULONGLONG, offsetof(srv_trace_obj, t.traced), READONLY, "orders picked and stamped"},
    {"completed", T_ULONGLONG, offsetof(srv_trace_obj, t.completed), READONLY, "... with every stamp"},
    {"lost", T_ULONGLONG, offsetof(srv_trace_obj, t.lost), READONLY,
     "... that will not finish (their session closed, or their batch went by unstamped)"},
    {"skipped", T_ULONGLONG, offsetof(srv_trace_obj, t.skipped), READONLY,
     "orders picked and not traced: their slot was busy"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef trace_getset[] = {
    {"points", (getter)trace_get_points, NULL, "the names of the stamps of a record, in order", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject srv_trace_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.LatencyTrace",
    .tp_basicsize = sizeof(srv_trace_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("LatencyTrace(ledger, every): stamps of one new order in `every` on its way through the\n"
                        "server (see csrc/binding/trace.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)trace_init,
    .tp_dealloc = (destructor)trace_dealloc,
    .tp_traverse = (traverseproc)trace_traverse,
    .tp_clear = (inquiry)trace_clear,
    .tp_methods = trace_methods,
    .tp_members = trace_members,
    .tp_getset = trace_getset,
};
