/*
 * meters.c - the server's meters: what the per-order path counts in C for
 * the metrics endpoint (pyengine/server/metrics.py), read only when it is
 * scraped. Counting costs an increment; no Python object is touched.
 *
 *   requests  per-order requests taken by the Intake, by kind, and frames
 *             that are not JSON ("other")
 *   rejects   reject replies, by code: the engine's and the server's own
 *   latency   new order to ack: from the moment the order's frame reaches
 *             the Intake (in the event-loop turn of the socket read that
 *             brought it, after the frame split) to the write of its ack to
 *             the socket (the first flush after the Router built it)
 *
 * The clock is CLOCK_REALTIME, the one the Intake reads anyway for the
 * commands' timestamps: no clock reading is added per order, one per flush
 * that writes acks. A step of the system clock (not NTP's slewing) while
 * orders are in flight shows as wrong samples (a step back: in the lowest
 * bucket).
 *
 * The Intake stamps a new order by its tag into a table of slots (a slot
 * taken again before the ack came loses that sample); the Router moves the
 * stamp of each ack it sends to the unwritten list; the server's flush
 * reads the clock once and puts them all in their buckets.
 */
#include "server.h"

#include <string.h>
#include <time.h>

/* The latency buckets' upper bounds, in nanoseconds (Prometheus' `le`). */
const int64_t srv_latency_bounds[SRV_LAT_BOUNDS] = {
    10000,     25000,     50000,     100000,    250000,     500000,     1000000,    2500000,
    5000000,   10000000,  25000000,  50000000,  100000000, 250000000, 1000000000, 2500000000,
};

static const char *const meters_request_names[SRV_REQ__COUNT] = {"new_order", "cancel", "modify", "other"};

#define METERS_ERR_NAME_(code, name, msg) [ENG_##code] = name,
static const char *const meters_reject_names[SRV_REJ__COUNT] = {
    ENG_ERR_MAP(METERS_ERR_NAME_)[SRV_REJ_MAX_OPEN] = "max_open_orders_exceeded",
};
#undef METERS_ERR_NAME_

const char *srv_reject_name(enum srv_reject why)
{
    return meters_reject_names[why];
}

int srv_meters_init(struct srv_meters *m)
{
    memset(m, 0, sizeof(*m));
    m->stamps = PyMem_Calloc(SRV_STAMPS, sizeof(*m->stamps));
    m->unwritten = PyMem_Calloc(SRV_UNWRITTEN, sizeof(*m->unwritten));
    if (!m->stamps || !m->unwritten) {
        srv_meters_destroy(m);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void srv_meters_destroy(struct srv_meters *m)
{
    PyMem_Free(m->stamps);
    PyMem_Free(m->unwritten);
    m->stamps = NULL;
    m->unwritten = NULL;
}

int64_t srv_meters_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A tag's slot. */
static struct srv_stamp *meters_slot(struct srv_meters *m, uint64_t tag)
{
    return &m->stamps[srv_tag_slot(tag, SRV_STAMPS)];
}

void srv_meters_stamp(struct srv_meters *m, uint64_t tag, int64_t ns)
{
    struct srv_stamp *s;

    if (!m->stamps)
        return; /* a Ledger never initialised */
    s = meters_slot(m, tag);
    s->tag = tag;
    s->ns = ns;
}

void srv_meters_acked(struct srv_meters *m, uint64_t tag)
{
    struct srv_stamp *s;

    if (!m->stamps)
        return;
    s = meters_slot(m, tag);
    if (s->tag != tag || !s->ns)
        return; /* not stamped, or its slot was taken again */
    if (m->n_unwritten < SRV_UNWRITTEN)
        m->unwritten[m->n_unwritten++] = s->ns;
    s->ns = 0;
}

void srv_meters_written(struct srv_meters *m)
{
    int64_t now;

    if (m->trace)
        srv_trace_written(m->trace);
    if (!m->n_unwritten)
        return;
    now = srv_meters_now();
    for (size_t i = 0; i < m->n_unwritten; i++) {
        int64_t d = now - m->unwritten[i];
        size_t b = 0;

        while (b < SRV_LAT_BOUNDS && d > srv_latency_bounds[b])
            b++;
        m->latency[b]++;
        m->latency_sum_ns += (unsigned long long)(d > 0 ? d : 0);
    }
    m->n_unwritten = 0;
}

/* {name: count} of the nonzero counts. */
static PyObject *meters_counts(const unsigned long long *counts, const char *const *names, size_t n)
{
    PyObject *d = PyDict_New();

    for (size_t i = 0; d && i < n; i++) {
        PyObject *v;

        if (!counts[i] || !names[i])
            continue;
        v = PyLong_FromUnsignedLongLong(counts[i]);
        if (!v || PyDict_SetItemString(d, names[i], v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

PyObject *srv_meters_read(const struct srv_meters *m)
{
    PyObject *bounds = PyTuple_New(SRV_LAT_BOUNDS), *counts = PyTuple_New(SRV_LAT_BOUNDS + 1);
    PyObject *requests = meters_counts(m->requests, meters_request_names, SRV_REQ__COUNT);
    PyObject *rejects = meters_counts(m->rejects, meters_reject_names, SRV_REJ__COUNT);

    for (Py_ssize_t i = 0; bounds && i < SRV_LAT_BOUNDS; i++) {
        PyObject *v = PyFloat_FromDouble((double)srv_latency_bounds[i] / 1e9);

        if (!v) {
            Py_CLEAR(bounds);
            break;
        }
        PyTuple_SET_ITEM(bounds, i, v);
    }
    for (Py_ssize_t i = 0; counts && i <= SRV_LAT_BOUNDS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(m->latency[i]);

        if (!v) {
            Py_CLEAR(counts);
            break;
        }
        PyTuple_SET_ITEM(counts, i, v);
    }
    if (!bounds || !counts || !requests || !rejects) {
        Py_XDECREF(bounds);
        Py_XDECREF(counts);
        Py_XDECREF(requests);
        Py_XDECREF(rejects);
        return NULL;
    }
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:d}", "requests", requests, "rejects", rejects, "latency_bounds",
                         bounds, "latency_counts", counts, "latency_sum", (double)m->latency_sum_ns / 1e9);
}
