/*
 * inbox.c - Inbox: one session's received bytes, split into frames.
 *
 * The protocol's framing (docs/protocol.md): a 4-byte big-endian length,
 * then that many bytes of body. A length of 0 is `empty_frame`, one over
 * the limit `frame_too_large` (told by the header, before the body comes),
 * and a stream that ends inside a frame `truncated_frame`. The frames
 * before a broken header are good: they are handed out first, and the error
 * is raised when the broken header is the next thing to read.
 *
 * read(fd) reads a socket into the inbox, and the Intake (Intake.drain)
 * carries out the frames from there: no Python between the socket and the
 * request's decoding. An inbox holds only the bytes that came (a read goes
 * into a scratch buffer first), and its buffer exists only while it holds
 * any: an idle session costs none, and a header announcing a large frame
 * reserves nothing for it.
 */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

enum { INBOX_HEADER = 4, INBOX_READ = 65536 /* bytes read at once, at most */ };

static uint32_t inbox_length(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int inbox_error(srv_inbox *self, const char *code, PyObject *message)
{
    PyObject *exc;

    if (!message)
        return -1;
    exc = PyObject_CallFunction(self->error, "sO", code, message);
    Py_DECREF(message);
    if (exc) {
        PyErr_SetObject(self->error, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* Room for `n` more bytes after the held ones: the held bytes moved to the
 * start, the buffer grown if need be. */
static int inbox_room(srv_inbox *self, size_t n)
{
    size_t held = self->end - self->pos;

    if (self->pos) {
        memmove(self->buf, self->buf + self->pos, held);
        self->pos = 0;
        self->end = held;
    }
    if (held + n > self->cap) {
        /* Doubling: a large frame that comes in many reads is copied a few times, not once a read. */
        size_t cap = held + n > 2 * self->cap ? held + n : 2 * self->cap;
        char *b = PyMem_Realloc(self->buf, cap);

        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = b;
        self->cap = cap;
    }
    return 0;
}

/* Once every byte is taken, the buffer goes. */
static void inbox_settle(srv_inbox *self)
{
    if (self->pos == self->end) {
        PyMem_Free(self->buf);
        self->buf = NULL;
        self->pos = self->end = self->cap = 0;
    }
}

int srv_inbox_next(srv_inbox *self, const char **body, size_t *len)
{
    size_t held = self->end - self->pos;
    uint32_t n;

    if (held < INBOX_HEADER)
        return 0;
    n = inbox_length((const unsigned char *)self->buf + self->pos);
    if (n == 0)
        return inbox_error(self, "empty_frame", PyUnicode_FromString("a frame of length 0"));
    if (n > self->max_frame)
        return inbox_error(self, "frame_too_large",
                           PyUnicode_FromFormat("a frame of %lu bytes is over the limit of %lu", (unsigned long)n,
                                                (unsigned long)self->max_frame));
    if (held - INBOX_HEADER < n)
        return 0;
    *body = self->buf + self->pos + INBOX_HEADER;
    *len = n;
    return 1;
}

void srv_inbox_taken(srv_inbox *self, size_t len)
{
    self->pos += INBOX_HEADER + len;
    inbox_settle(self);
}

int srv_inbox_check_idle(srv_inbox *self)
{
    if (!self->draining)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "the Inbox is being drained");
    return -1;
}

/* ---- Python's side --------------------------------------------------------- */

PyDoc_STRVAR(inbox_read_doc, "read($self, fd, /)\n--\n\n"
                             "Read once from the file descriptor fd into the inbox: the number of bytes read, 0\n"
                             "when the peer has closed its side. OSError as os.read raises it (BlockingIOError when\n"
                             "nothing is there yet).");

/* Where every inbox reads: only the bytes that came are kept, in the
 * inbox's own buffer (reads run on one thread, under the GIL). */
static char inbox_scratch[INBOX_READ];

ssize_t srv_inbox_read(srv_inbox *self, int fd)
{
    ssize_t n;

    do
        n = read(fd, inbox_scratch, sizeof(inbox_scratch));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return SRV_INBOX_ERRNO;
    if (n > 0) { /* 0: the peer closed (and an empty inbox has no buffer to copy into) */
        if (inbox_room(self, (size_t)n) < 0)
            return SRV_INBOX_NOMEM;
        memcpy(self->buf + self->end, inbox_scratch, (size_t)n);
        self->end += (size_t)n;
    }
    return n;
}

static PyObject *inbox_read(srv_inbox *self, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    ssize_t n;

    if (fd < 0)
        return NULL;
    n = srv_inbox_read(self, fd);
    if (n == SRV_INBOX_ERRNO)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (n == SRV_INBOX_NOMEM)
        return NULL;
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(inbox_feed_doc, "feed($self, data, /)\n--\n\nAdd bytes to the inbox, as read() would.");

static PyObject *inbox_feed(srv_inbox *self, PyObject *arg)
{
    Py_buffer view;
    int rc;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    rc = view.len ? inbox_room(self, (size_t)view.len) : 0;
    if (rc == 0 && view.len) {
        memcpy(self->buf + self->end, view.buf, (size_t)view.len);
        self->end += (size_t)view.len;
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(inbox_frames_doc, "frames($self, /)\n--\n\n"
                               "Take the whole frames held, in order, as a list of bodies. A broken header raises\n"
                               "the inbox's error once the frames before it are taken. RuntimeError while an Intake\n"
                               "drains the inbox.");

static PyObject *inbox_frames(srv_inbox *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out;
    const char *body;
    size_t len;
    int rc;

    if (srv_inbox_check_idle(self) < 0 || !(out = PyList_New(0)))
        return NULL;
    while ((rc = srv_inbox_next(self, &body, &len)) == 1) {
        PyObject *frame = PyBytes_FromStringAndSize(body, (Py_ssize_t)len);

        if (!frame || PyList_Append(out, frame) < 0) {
            Py_XDECREF(frame);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(frame);
        srv_inbox_taken(self, len);
    }
    if (rc < 0 && PyList_GET_SIZE(out) == 0) {
        Py_DECREF(out);
        return NULL;
    }
    PyErr_Clear(); /* the broken header is raised at the next call, the frames before it first */
    return out;
}

PyDoc_STRVAR(inbox_close_doc, "close($self, /)\n--\n\n"
                              "The peer has closed its side: raise the inbox's error (truncated_frame) if bytes of\n"
                              "a frame are left over, or one of a broken header if that is what is left.");

static PyObject *inbox_close(srv_inbox *self, PyObject *Py_UNUSED(ignored))
{
    const char *body;
    size_t len;
    size_t held = self->end - self->pos;

    if (!held)
        Py_RETURN_NONE;
    if (srv_inbox_next(self, &body, &len) < 0)
        return NULL;
    inbox_error(self, "truncated_frame", PyUnicode_FromFormat("the stream ended %zu bytes into a frame", held));
    return NULL;
}

static PyObject *inbox_held(srv_inbox *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->end - self->pos);
}

/* ---- the type ---------------------------------------------------------------- */

static int inbox_init(srv_inbox *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_frame", "error", NULL};
    unsigned long long max_frame;
    PyObject *limit, *error;

    if (self->error) {
        PyErr_SetString(PyExc_TypeError, "an Inbox is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Inbox", kwlist, &PyLong_Type, &limit, &error))
        return -1;
    max_frame = PyLong_AsUnsignedLongLong(limit); /* OverflowError past 64 bits or below 0 */
    if (max_frame == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (max_frame == 0 || max_frame > UINT32_MAX || !PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_ValueError, "Inbox: max_frame in [1, 2**32), error an exception class");
        return -1;
    }
    self->max_frame = (uint32_t)max_frame;
    self->error = Py_NewRef(error);
    return 0;
}

static int inbox_traverse(srv_inbox *self, visitproc visit, void *arg)
{
    Py_VISIT(self->error);
    return 0;
}

static int inbox_clear(srv_inbox *self)
{
    Py_CLEAR(self->error);
    return 0;
}

static void inbox_dealloc(srv_inbox *self)
{
    PyObject_GC_UnTrack(self);
    inbox_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef inbox_methods[] = {
    {"read", (PyCFunction)inbox_read, METH_O, inbox_read_doc},
    {"feed", (PyCFunction)inbox_feed, METH_O, inbox_feed_doc},
    {"frames", (PyCFunction)inbox_frames, METH_NOARGS, inbox_frames_doc},
    {"close", (PyCFunction)inbox_close, METH_NOARGS, inbox_close_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef inbox_getset[] = {
    {"held", (getter)inbox_held, NULL, "bytes received and not taken as frames yet", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject srv_inbox_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._server.Inbox",
    .tp_basicsize = sizeof(srv_inbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Inbox(max_frame, error): one session's received bytes, split into frames; a broken\n"
                        "stream raises error(code, message) (see csrc/binding/inbox.c)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)inbox_init,
    .tp_dealloc = (destructor)inbox_dealloc,
    .tp_traverse = (traverseproc)inbox_traverse,
    .tp_clear = (inquiry)inbox_clear,
    .tp_methods = inbox_methods,
    .tp_getset = inbox_getset,
};
