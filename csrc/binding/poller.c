/*
 * poller.c - Poller: the sessions' sockets, read in C a whole loop turn at
 * a time.
 *
 * The event loop watches one descriptor, the Poller's epoll instance, and
 * calls turn() when it is readable. A turn reads every ready session socket
 * once into its Inbox and has the Intake carry out the frames there, then
 * pushes the commands gathered to the engine thread in one go, calls
 * after_push if set (the dispatcher's, which routes what the engine thread
 * has answered by then: sharing this CPU, it often has), and writes every
 * session's queued output (Ledger.flush): one ring operation and one wake-up
 * of the engine thread serve every socket of the turn, and answers given
 * during the turn go out with it, without waking the event loop again.
 *
 * What may wait (a request that is Python's, a full command buffer, the
 * rest of a read whose drain has held the turn for the Intake's turn_after)
 * and what ends a session (its peer closed, a read that failed, a broken
 * frame) goes to the session's reader greenlet through PollerEvents.handed, and
 * its socket is watched no more until the reader watches it again. A
 * session closed meanwhile is dropped: closing woke its reader. turn()
 * never raises (an exception in a loop watcher's callback would only be
 * printed, and the watcher stopped): what fails in a turn goes to
 * PollerEvents.turn_failed.
 *
 * Spinning (spin_for): a loop that sleeps in epoll_wait between requests
 * pays for a wake-up with each one, tens of microseconds on a virtual
 * machine whose idle CPU halts. After a turn that found a socket ready, the
 * Poller can have the loop poll instead for a while: Python starts an idle
 * watcher (libev does not block while one is active) whose callback is
 * spin(), and spin() yields the CPU, so that an engine thread pinned to the
 * same one runs the moment it has work, until the time passes with no such
 * turn; then it has Python stop the watcher, and the loop sleeps again.
 *
 * Sessions are kept by socket descriptor; a session must be unwatched
 * before its socket is closed (the descriptor's number may be the next
 * connection's): Link.forget_socket() refuses a Link watched still.
 */
#include "server.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <structmember.h>

enum { POLL_BATCH = 64 }; /* ready sockets taken per epoll_wait */

struct poll_entry {
    srv_link *link; /* NULL: the descriptor is not watched */
    srv_inbox *inbox;
};

typedef struct {
    PyObject_HEAD
    int epfd; /* -1 once closed */
    srv_intake *intake;
    /* PollerEvents, bound once */
    PyObject *on_handed, *on_push_short, *on_flushed, *on_failed;
    PyObject *after_push; /* NULL, or called after each turn's push */
    struct poll_entry *entries; /* by descriptor */
    size_t n_entries;
    Py_ssize_t watched;
    unsigned long long turns, reads, spins;
    /* spin_for's: 0, or how long the loop polls after a turn that found a socket ready */
    int64_t spin_ns, last_read_ns;
    PyObject *spin_switch; /* NULL, or called with True to start spinning, False to stop */
    char spinning;
} srv_poller;

/* Tell PollerEvents.turn_failed what is set now; if that fails too, it is
 * printed as unraisable. */
static void poller_failed(srv_poller *self)
{
    PyObject *error = srv_take_error(), *r;

    r = PyObject_CallOneArg(self->on_failed, error);
    if (!r)
        PyErr_WriteUnraisable(self->on_failed);
    Py_XDECREF(r);
    Py_DECREF(error);
}

static void poller_call(srv_poller *self, PyObject *fn, PyObject *const *args, size_t n)
{
    PyObject *r = PyObject_Vectorcall(fn, args, n, NULL);

    if (!r)
        poller_failed(self);
    Py_XDECREF(r);
}

/* Stop watching descriptor fd (watched); its entry's references are given back. */
static void poller_drop(srv_poller *self, int fd)
{
    struct poll_entry *e = &self->entries[fd];
    srv_link *link = e->link;
    srv_inbox *inbox = e->inbox;

    /* Failing only for a descriptor closed already (which left the set). */
    (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
    e->link = NULL;
    e->inbox = NULL;
    self->watched--;
    link->polled = 0;
    Py_DECREF(link);
    Py_DECREF(inbox);
}

/* Stop watching `link`'s descriptor fd if it is watched for it still
 * (Python called while serving it may have closed the Poller). */
static void poller_drop_link(srv_poller *self, int fd, srv_link *link)
{
    if (self->epfd >= 0 && (size_t)fd < self->n_entries && self->entries[fd].link == link)
        poller_drop(self, fd);
}

/* Call switch(False); spinning no more unless that raised (-1, the
 * exception set). */
static int poller_spin_stop(srv_poller *self)
{
    PyObject *off = Py_False, *sw = Py_NewRef(self->spin_switch), *r; /* it may call spin_for */
    int rc = 0;

    self->spinning = 0;
    if (!(r = PyObject_Vectorcall(sw, &off, 1, NULL))) {
        rc = -1;
        self->spinning = self->spin_switch == sw; /* unless it was replaced meanwhile */
    }
    Py_XDECREF(r);
    Py_DECREF(sw);
    return rc;
}

/* A turn that found a socket ready has ended: spin from now, and start if
 * stopped (a switch(True) that fails is tried again at the next such turn). */
static void poller_spin_from_now(srv_poller *self)
{
    self->last_read_ns = srv_monotonic_ns();
    if (!self->spinning) {
        PyObject *on = Py_True, *sw = Py_NewRef(self->spin_switch), *r;

        self->spinning = 1;
        if (!(r = PyObject_Vectorcall(sw, &on, 1, NULL))) {
            self->spinning = 0;
            poller_failed(self);
        }
        Py_XDECREF(r);
        Py_DECREF(sw);
    }
}

/* Read a ready socket once and drain its inbox; hand what is not this
 * turn's over to the session's reader. */
static void poller_serve(srv_poller *self, int fd)
{
    struct srv_trace *trace = self->intake->ledger->meters.trace;
    srv_link *link;
    srv_inbox *inbox;
    PyObject *handed, *args[2];
    ssize_t n;

    if (fd < 0 || (size_t)fd >= self->n_entries || !self->entries[fd].link) {
        /* Dropped earlier in this turn; were it ever in the set without an
           entry, the set would stay readable and the hub turn for nothing. */
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
        return;
    }
    link = (srv_link *)Py_NewRef(self->entries[fd].link);
    inbox = (srv_inbox *)Py_NewRef(self->entries[fd].inbox);
    if (link->closed) {
        poller_drop_link(self, fd, link); /* closing woke its reader */
        goto out;
    }
    n = srv_inbox_read(inbox, fd);
    if (n == SRV_INBOX_ERRNO && (errno == EAGAIN || errno == EWOULDBLOCK))
        goto out;
    self->reads++;
    if (trace)
        srv_trace_read(trace);
    if (n >= 0)
        link->last_read = (double)srv_monotonic_ns() * 1e-9;
    if (n == SRV_INBOX_ERRNO) {
        PyErr_SetFromErrno(PyExc_OSError);
        handed = srv_take_error();
    } else if (n == SRV_INBOX_NOMEM) {
        handed = srv_take_error();
    } else if (n == 0) {
        handed = Py_NewRef(Py_None); /* the peer closed its side */
    } else {
        handed = srv_intake_drain(self->intake, link, inbox);
        if (!handed)
            handed = srv_take_error();
        else if (handed == Py_None) {
            Py_DECREF(handed);
            goto out;
        }
    }
    poller_drop_link(self, fd, link);
    args[0] = link->session;
    args[1] = handed;
    poller_call(self, self->on_handed, args, 2);
    Py_DECREF(handed);
out:
    Py_DECREF(link);
    Py_DECREF(inbox);
}

/* The turn's end: the commands to the engine thread, then after_push (the
 * engine thread, sharing this CPU, may have answered them already: their
 * answers go out with this turn's output), the output to the sockets. */
static void poller_finish(srv_poller *self)
{
    int rc = srv_commands_push(self->intake->commands);
    PyObject *report;

    if (rc < 0)
        poller_failed(self);
    else if (rc == 0)
        poller_call(self, self->on_push_short, NULL, 0);
    if (self->after_push) {
        PyObject *after = Py_NewRef(self->after_push); /* it may set after_push */

        poller_call(self, after, NULL, 0);
        Py_DECREF(after);
    }
    report = srv_outbox_flush(self->intake->ledger);
    if (!report) {
        poller_failed(self); /* the links it could not report are listed again */
        return;
    }
    if (report != Py_None)
        poller_call(self, self->on_flushed, &report, 1);
    Py_DECREF(report);
}

/* ---- Python's side ---------------------------------------------------------- */

static int poller_open(srv_poller *self)
{
    if (self->epfd >= 0)
        return 0;
    PyErr_SetString(PyExc_ValueError, self->intake ? "the Poller is closed" : "the Poller is not initialised");
    return -1;
}

PyDoc_STRVAR(poller_turn_doc,
             "turn($self, /)\n--\n\n"
             "One turn: read every ready session socket once and carry out its frames, push the commands\n"
             "to the engine thread, write the sessions' output (csrc/binding/poller.c). Never raises:\n"
             "what fails goes to the events' turn_failed().");

static PyObject *poller_turn(srv_poller *self, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event evs[POLL_BATCH];
    int n;

    if (self->epfd < 0 || !self->intake->ledger || !self->intake->commands)
        Py_RETURN_NONE; /* closed, or its Intake cleared (by the collector) */
    n = epoll_wait(self->epfd, evs, POLL_BATCH, 0);
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            poller_failed(self);
        }
        Py_RETURN_NONE;
    }
    self->turns++;
    for (int i = 0; i < n && self->epfd >= 0; i++)
        poller_serve(self, evs[i].data.fd);
    poller_finish(self);
    if (n > 0 && self->spin_ns)
        poller_spin_from_now(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(poller_spin_for_doc,
             "spin_for($self, ns, switch, /)\n--\n\n"
             "After each turn that finds a socket ready, keep the event loop polling for ns nanoseconds:\n"
             "switch(True) when it should start (an idle watcher whose callback is spin()), switch(False)\n"
             "when ns passed with no such turn. ns 0 and switch None: never. Spinning already, the old\n"
             "switch is called with False first.");

static PyObject *poller_spin_for(srv_poller *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long ns;

    if (nargs != 2 || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "spin_for takes (ns, switch)");
        return NULL;
    }
    if ((ns = PyLong_AsLongLong(args[0])) == -1 && PyErr_Occurred())
        return NULL;
    if (ns < 0) {
        PyErr_Format(PyExc_ValueError, "spin_for: ns must be >= 0, not %lld", ns);
        return NULL;
    }
    if (ns ? !PyCallable_Check(args[1]) : args[1] != Py_None) {
        PyErr_SetString(PyExc_TypeError, "spin_for: switch is a callable, or None with ns 0");
        return NULL;
    }
    if (self->spinning && poller_spin_stop(self) < 0)
        return NULL;
    self->spin_ns = ns;
    Py_XSETREF(self->spin_switch, ns ? Py_NewRef(args[1]) : NULL);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(poller_spin_doc,
             "spin($self, /)\n--\n\n"
             "The spinning loop's idle callback: yield the CPU (and the GIL meanwhile), or, once spin_for's\n"
             "time has passed since the last turn that found a socket ready, call switch(False). Never\n"
             "raises: what the switch raises goes to turn_failed, and it is called again at the next spin().");

static PyObject *poller_spin(srv_poller *self, PyObject *Py_UNUSED(ignored))
{
    if (self->spinning && srv_monotonic_ns() - self->last_read_ns >= self->spin_ns) {
        if (poller_spin_stop(self) == 0)
            Py_RETURN_NONE;
        poller_failed(self); /* spinning still: tried again at the next call, the CPU yielded meanwhile */
    }
    /* Yield, spinning or not: called while not spinning is a watcher that a
     * failing switch(True) left running (stopped after the next read's
     * spell), and the loop must not poll hot meanwhile. */
    self->spins += (unsigned long long)self->spinning;
    Py_BEGIN_ALLOW_THREADS
    sched_yield();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The link of a (link, ...) call, or NULL with TypeError saying `usage`. */
static srv_link *poller_link(PyObject *o, const char *usage)
{
    if (!PyObject_TypeCheck(o, &srv_link_type) || !((srv_link *)o)->pending) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    return (srv_link *)o;
}

PyDoc_STRVAR(poller_watch_doc,
             "watch($self, link, inbox, /)\n--\n\n"
             "Read link's socket (its fd) into inbox at each turn it is ready, until it is handed over\n"
             "(PollerEvents.handed) or unwatched. ValueError if the Link or its descriptor is watched already.");

static PyObject *poller_watch(srv_poller *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *usage = "watch takes (link, inbox)";
    struct epoll_event ev = {.events = EPOLLIN};
    srv_link *link;
    int fd;

    if (nargs != 2 || !PyObject_TypeCheck(args[1], &srv_inbox_type)) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (!(link = poller_link(args[0], usage)))
        return NULL;
    if (poller_open(self) < 0)
        return NULL;
    if ((fd = link->fd) < 0) {
        PyErr_SetString(PyExc_ValueError, "watch: the Link has no socket");
        return NULL;
    }
    if (link->closed) { /* it would be dropped unread, its reader never told */
        PyErr_SetString(PyExc_ValueError, "watch: the Link is closed");
        return NULL;
    }
    if (link->polled) {
        PyErr_SetString(PyExc_ValueError, "watch: the Link is watched already");
        return NULL;
    }
    if ((size_t)fd >= self->n_entries) {
        size_t n = self->n_entries ? self->n_entries : 64;
        struct poll_entry *grown;

        while (n <= (size_t)fd)
            n *= 2;
        if (!(grown = PyMem_Realloc(self->entries, n * sizeof(*grown))))
            return PyErr_NoMemory();
        memset(grown + self->n_entries, 0, (n - self->n_entries) * sizeof(*grown));
        self->entries = grown;
        self->n_entries = n;
    }
    if (self->entries[fd].link) {
        PyErr_Format(PyExc_ValueError, "watch: descriptor %d is watched already", fd);
        return NULL;
    }
    ev.data.fd = fd;
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    self->entries[fd].link = (srv_link *)Py_NewRef(link);
    self->entries[fd].inbox = (srv_inbox *)Py_NewRef(args[1]);
    self->watched++;
    link->polled = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(poller_unwatch_doc,
             "unwatch($self, link, /)\n--\n\n"
             "Stop reading link's socket: True, or False if it was not watched (handed over already).\n"
             "It is found by the Link's descriptor: unwatch before Link.forget_socket().");

static PyObject *poller_unwatch(srv_poller *self, PyObject *arg)
{
    srv_link *link = poller_link(arg, "unwatch takes (link)");
    int fd;

    if (!link)
        return NULL;
    fd = link->fd;
    if (self->epfd < 0 || fd < 0 || (size_t)fd >= self->n_entries || self->entries[fd].link != link)
        Py_RETURN_FALSE;
    poller_drop(self, fd);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(poller_fileno_doc, "fileno($self, /)\n--\n\n"
                                "The epoll instance's descriptor: readable when a watched socket is.");

static PyObject *poller_fileno(srv_poller *self, PyObject *Py_UNUSED(ignored))
{
    if (poller_open(self) < 0)
        return NULL;
    return PyLong_FromLong(self->epfd);
}

static void poller_release(srv_poller *self)
{
    /* Taken off the Poller first: a reference let go may run Python. */
    struct poll_entry *entries = self->entries;
    size_t n = self->n_entries;

    self->entries = NULL;
    self->n_entries = 0;
    self->watched = 0;
    if (self->epfd >= 0)
        close(self->epfd);
    self->epfd = -1;
    for (size_t fd = 0; fd < n; fd++)
        if (entries[fd].link)
            entries[fd].link->polled = 0;
    for (size_t fd = 0; fd < n; fd++) {
        Py_XDECREF(entries[fd].link);
        Py_XDECREF(entries[fd].inbox);
    }
    PyMem_Free(entries);
}

PyDoc_STRVAR(poller_close_doc, "close($self, /)\n--\n\n"
                               "Watch nothing more and close the epoll instance (again: nothing).");

static PyObject *poller_close(srv_poller *self, PyObject *Py_UNUSED(ignored))
{
    poller_release(self);
    Py_RETURN_NONE;
}

static int poller_init(srv_poller *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"intake", "events", NULL};
    PyObject *intake, *events, *handed = NULL, *push_short = NULL, *flushed = NULL, *failed = NULL;

    if (self->intake) {
        PyErr_SetString(PyExc_TypeError, "a Poller is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Poller", kwlist, &srv_intake_type, &intake, &events))
        return -1;
    if (!((srv_intake *)intake)->ledger) {
        PyErr_SetString(PyExc_ValueError, "Poller: the Intake is not initialised");
        return -1;
    }
    if (!(handed = srv_method(events, "handed")) || !(push_short = srv_method(events, "push_short")) ||
        !(flushed = srv_method(events, "flushed")) || !(failed = srv_method(events, "turn_failed"))) {
        Py_XDECREF(handed);
        Py_XDECREF(push_short);
        Py_XDECREF(flushed);
        return -1;
    }
    Py_XSETREF(self->on_handed, handed);
    Py_XSETREF(self->on_push_short, push_short);
    Py_XSETREF(self->on_flushed, flushed);
    Py_XSETREF(self->on_failed, failed);
    if ((self->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->intake = (srv_intake *)Py_NewRef(intake);
    return 0;
}

static PyObject *poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    srv_poller *self = (srv_poller *)PyType_GenericNew(type, args, kwds);

    if (self)
        self->epfd = -1;
    return (PyObject *)self;
}

static int poller_traverse(srv_poller *self, visitproc visit, void *arg)
{
    Py_VISIT(self->intake);
    Py_VISIT(self->on_handed);
    Py_VISIT(self->on_push_short);
    Py_VISIT(self->on_flushed);
    Py_VISIT(self->on_failed);
    Py_VISIT(self->after_push);
    Py_VISIT(self->spin_switch);
    for (size_t fd = 0; fd < self->n_entries; fd++) {
        Py_VISIT(self->entries[fd].link);
        Py_VISIT(self->entries[fd].inbox);
    }
    return 0;
}

static int poller_clear(srv_poller *self)
{
    poller_release(self);
    Py_CLEAR(self->on_handed);
    Py_CLEAR(self->on_push_short);
    Py_CLEAR(self->on_flushed);
    Py_CLEAR(self->on_failed);
    Py_CLEAR(self->after_push);
    Py_CLEAR(self->spin_switch);
    self->spin_ns = 0;
    self->spinning = 0;
    /* intake stays: a closed Poller's turn() and watch() look at epfd first */
    return 0;
}

static void poller_dealloc(srv_poller *self)
{
    PyObject_GC_UnTrack(self);
    poller_clear(self);
    Py_CLEAR(self->intake);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef poller_methods[] = {
    {"turn", (PyCFunction)poller_turn, METH_NOARGS, poller_turn_doc},
    {"watch", (PyCFunction)(void (*)(void))poller_watch, METH_FASTCALL, poller_watch_doc},
    {"unwatch", (PyCFunction)poller_unwatch, METH_O, poller_unwatch_doc},
    {"fileno", (PyCFunction)poller_fileno, METH_NOARGS, poller_fileno_doc},
    {"close", (PyCFunction)poller_close, METH_NOARGS, poller_close_doc},
    {"spin_for", (PyCFunction)(void (*)(void))poller_spin_for, METH_FASTCALL, poller_spin_for_doc},
    {"spin", (PyCFunction)poller_spin, METH_NOARGS, poller_spin_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef poller_members[] = {
    {"watched", T_PYSSIZET, offsetof(srv_poller, watched), READONLY, "sockets watched now"},
    {"turns", T_ULONGLONG, offsetof(srv_poller, turns), READONLY, "turns that looked at the sockets"},
    {"reads", T_ULONGLONG, offsetof(srv_poller, reads), READONLY,
     "socket reads that found something: bytes, the end, or a failure"},
    {"spins", T_ULONGLONG, offsetof(srv_poller, spins), READONLY, "spin() calls that yielded the CPU"},
    {"spinning", T_BOOL, offsetof(srv_poller, spinning), READONLY,
     "the loop is kept polling (spin_for): switch(True) succeeded, switch(False) has not yet"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *poller_get_after_push(srv_poller *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->after_push ? self->after_push : Py_None);
}

static int poller_set_after_push(srv_poller *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value && value != Py_None && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "after_push is a callable or None");
        return -1;
    }
    Py_XSETREF(self->after_push, value && value != Py_None ? Py_NewRef(value) : NULL);
    return 0;
}

static PyGetSetDef poller_getset[] = {
    {"after_push", (getter)poller_get_after_push, (setter)poller_set_after_push,
     "None, or called with no arguments at each turn's end, after the commands are pushed and\n"
     "before the output is written (what it raises goes to turn_failed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject srv_poller_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Poller",
    .tp_basicsize = sizeof(srv_poller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Poller(intake, events): the sessions' sockets, read a turn at a time (csrc/binding/poller.c)."),
    .tp_new = poller_new,
    .tp_init = (initproc)poller_init,
    .tp_dealloc = (destructor)poller_dealloc,
    .tp_traverse = (traverseproc)poller_traverse,
    .tp_clear = (inquiry)poller_clear,
    .tp_methods = poller_methods,
    .tp_members = poller_members,
    .tp_getset = poller_getset,
};
