/*
 * outbox.c - a session's frames on their way out: queued in its Link,
 * written to its socket by the Ledger's flush.
 *
 * Every frame for a session -- the Router's acks, fills and cancels, and
 * Python's replies and market data (Ledger.send) -- is appended to its
 * Link's output, and the Link goes on the Ledger's flush list once.
 * Ledger.flush(), at the server's flush points (the end of a dispatched
 * batch, of a reader's burst), writes each listed Link's output to its
 * socket with one non-blocking send. What the socket does not take stays,
 * and the Link is `writing`: its session's writer greenlet waits for the
 * socket to drain and calls Link.write() until nothing is left, and flushes
 * leave that Link's output alone meanwhile.
 *
 * Python hears of a Link only when something waits or is wrong: the
 * flush's report has (session, what) for such a Link, `what` being
 * SRV_OUT_WAIT (wake its writer), SRV_OUT_SLOW (its unsent output passed
 * max_unsent: disconnect it, a reader too slow to be buffered for) or the
 * failed send's errno. The frame that was queued while nothing else waited
 * (its unsent rest) does not count against max_unsent: one reply, however
 * large (the `orders` of an account with many), makes no slow reader; what
 * the session lets pile up behind it does.
 *
 * A Link built without a socket (fd -1) keeps its frames for
 * Link.take_output(). Once its socket is gone (Link.forget_socket()), its
 * output is dropped rather than written to a descriptor that may by then
 * be another connection's.
 */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

enum { OUTBOX_MIN = 1024 };

/* Put `link` on the flush list (once). */
static int outbox_list(srv_ledger *l, srv_link *link)
{
    if (link->listed)
        return 0;
    if (l->n_listed == l->listed_cap) {
        size_t cap = l->listed_cap ? 2 * l->listed_cap : 64;
        srv_link **b = PyMem_Realloc(l->listed, cap * sizeof(*b));

        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        l->listed = b;
        l->listed_cap = cap;
    }
    l->listed[l->n_listed++] = (srv_link *)Py_NewRef(link);
    link->listed = 1;
    return 0;
}

int srv_outbox_put(srv_ledger *l, srv_link *link, const char *data, size_t n)
{
    int first = srv_link_unsent(link) == 0;

    if (link->socket_gone)
        return 0; /* nobody to write it to */
    if (link->out_len + n > link->out_cap) {
        size_t held = link->out_len - link->out_pos;

        /* What was sent makes room first; the buffer grows if that is not enough. */
        if (link->out_pos) {
            memmove(link->out, link->out + link->out_pos, held);
            link->head_end = link->head_end > link->out_pos ? link->head_end - link->out_pos : 0;
            link->out_pos = 0;
            link->out_len = held;
        }
        if (held + n > link->out_cap) {
            size_t cap = link->out_cap ? 2 * link->out_cap : OUTBOX_MIN;
            char *b;

            while (cap < held + n)
                cap *= 2;
            if (!(b = PyMem_Realloc(link->out, cap))) {
                PyErr_NoMemory();
                return -1;
            }
            link->out = b;
            link->out_cap = cap;
        }
    }
    if (outbox_list(l, link) < 0)
        return -1;
    memcpy(link->out + link->out_len, data, n);
    link->out_len += n;
    if (first)
        link->head_end = link->out_len;
    return 0;
}

size_t srv_link_unsent(const srv_link *link)
{
    return link->out_len - link->out_pos;
}

/* The unsent output that counts against max_unsent: all but the rest of
 * the frame queued while nothing else was unsent. */
static size_t outbox_counted(const srv_link *link)
{
    size_t head = link->head_end > link->out_pos ? link->head_end - link->out_pos : 0;

    return srv_link_unsent(link) - head;
}

static void outbox_clear(srv_link *link)
{
    PyMem_Free(link->out);
    link->out = NULL;
    link->out_pos = link->out_len = link->out_cap = link->head_end = 0;
    link->writing = 0;
}

/* Send what fits: 0 when nothing is left (or there is no socket: the
 * output stays for take_output), 1 when the socket is full, -1 with errno
 * when the send failed. */
static int outbox_send(srv_link *link)
{
    if (link->fd < 0)
        return 0;
    while (link->out_pos < link->out_len) {
        ssize_t n = send(link->fd, link->out + link->out_pos, link->out_len - link->out_pos,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        link->out_pos += (size_t)n;
    }
    outbox_clear(link); /* all sent: an idle session holds no buffer */
    return 0;
}

static int outbox_report(PyObject **report, srv_link *link, int what)
{
    PyObject *item;
    int rc;

    if (!*report && !(*report = PyList_New(0)))
        return -1;
    if (!(item = Py_BuildValue("(Oi)", link->session, what)))
        return -1;
    rc = PyList_Append(*report, item);
    Py_DECREF(item);
    return rc;
}

/*
 * A flush whose report failed (for memory): the links it had to tell go back
 * on the list, for the next flush to tell them -- a writer never woken would
 * leave its session's output unsent for good. The flush's own array holds
 * them, so this needs no memory unless Python listed more links meanwhile
 * than the array has room for; with none at all, a link is told when it is
 * next listed. Takes the array and its references.
 */
static void outbox_relist(srv_ledger *l, srv_link **listed, size_t n)
{
    size_t k = 0, m;
    srv_link **b;

    /* The links to tell first, each marked listed (no Python runs here). */
    for (size_t i = 0; i < n; i++) {
        srv_link *link = listed[i];

        if (link->unreported && !link->listed) {
            link->listed = 1;
            listed[i] = listed[k];
            listed[k++] = link;
        }
    }
    /* The others let go: Python may run, and list links of its own. */
    for (size_t i = k; i < n; i++)
        Py_DECREF(listed[i]);
    m = l->n_listed;
    if (k + m <= n) {
        if (m)
            memcpy(listed + k, l->listed, m * sizeof(*listed));
        PyMem_Free(l->listed);
        l->listed = listed;
        l->n_listed = k + m;
        l->listed_cap = n;
        return;
    }
    if ((b = PyMem_Realloc(l->listed, (m + k) * sizeof(*b)))) {
        memcpy(b + m, listed, k * sizeof(*b));
        l->listed = b;
        l->n_listed = l->listed_cap = m + k;
        PyMem_Free(listed);
        return;
    }
    for (size_t i = 0; i < k; i++)
        listed[i]->listed = 0;
    for (size_t i = 0; i < k; i++)
        Py_DECREF(listed[i]);
    PyMem_Free(listed);
}

PyObject *srv_outbox_flush(srv_ledger *l)
{
    /* The list is taken first: a frame queued while this runs (Python may
     * run, building the report) goes on a new one, for the next flush. */
    srv_link **listed = l->listed;
    size_t n = l->n_listed;
    PyObject *report = NULL;
    int rc = 0;

    l->listed = NULL;
    l->n_listed = l->listed_cap = 0;
    for (size_t i = 0; i < n; i++) {
        srv_link *link = listed[i];
        int sent = 0, what;

        link->listed = 0;
        if (!link->writing) {
            sent = outbox_send(link);
            if (sent > 0)
                link->writing = 1;
            else if (sent == 0 && link->fd >= 0 && l->meters.trace)
                srv_trace_sent(l->meters.trace, link);
        }
        if (sent < 0)
            what = errno;
        else if (link->max_unsent && outbox_counted(link) > link->max_unsent)
            what = SRV_OUT_SLOW;
        else if (sent > 0)
            what = SRV_OUT_WAIT;
        else if (link->unreported)
            what = link->told; /* a report of an earlier flush that ran out of memory */
        else
            continue;
        /* Every link is written even if the report fails (for memory). */
        link->unreported = 1;
        link->told = what;
        if (rc == 0)
            rc = outbox_report(&report, link, what);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            listed[i]->unreported = 0; /* told */
            Py_DECREF(listed[i]);
        }
        PyMem_Free(listed);
    } else {
        outbox_relist(l, listed, n);
    }
    srv_meters_written(&l->meters);
    if (rc < 0) {
        Py_XDECREF(report);
        return NULL;
    }
    return report ? report : Py_NewRef(Py_None);
}

void srv_outbox_release(srv_ledger *l)
{
    /* Taken off the Ledger first: a link let go may run Python that queues. */
    srv_link **listed = l->listed;
    size_t n = l->n_listed;

    l->listed = NULL;
    l->n_listed = l->listed_cap = 0;
    for (size_t j = 0; j < n; j++)
        listed[j]->listed = 0;
    for (size_t j = 0; j < n; j++)
        Py_DECREF(listed[j]);
    PyMem_Free(listed);
}

/* ---- a Link's side, for Python --------------------------------------------- */

const char srv_link_write_doc[] =
    "write($self, /)\n--\n\n"
    "Send what the session's output holds, as much as the socket takes now: the bytes left (0:\n"
    "all sent, and the Link no longer `writing`). OSError if the send fails.";

PyObject *srv_link_write(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    int sent = outbox_send(self);

    if (sent < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    self->writing = sent > 0;
    return PyLong_FromSize_t(srv_link_unsent(self));
}

const char srv_link_take_output_doc[] =
    "take_output($self, /)\n--\n\nThe session's unsent output, taken out of it (bytes).";

PyObject *srv_link_take_output(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyBytes_FromStringAndSize(self->out ? self->out + self->out_pos : "",
                                              (Py_ssize_t)srv_link_unsent(self));

    if (out)
        outbox_clear(self);
    return out;
}

const char srv_link_drop_output_doc[] =
    "drop_output($self, /)\n--\n\nForget the session's unsent output (a slow reader's, which it would not read).";

PyObject *srv_link_drop_output(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    outbox_clear(self);
    Py_RETURN_NONE;
}

const char srv_link_forget_socket_doc[] =
    "forget_socket($self, /)\n--\n\n"
    "The session's socket is about to close: nothing more is written to it, and what is unsent is\n"
    "dropped. ValueError while a Poller watches it (unwatch first: the Poller knows it by its descriptor).";

PyObject *srv_link_forget_socket(srv_link *self, PyObject *Py_UNUSED(ignored))
{
    if (self->polled) {
        PyErr_SetString(PyExc_ValueError, "forget_socket: a Poller watches the socket still: unwatch it first");
        return NULL;
    }
    self->fd = -1;
    self->socket_gone = 1;
    outbox_clear(self);
    Py_RETURN_NONE;
}
