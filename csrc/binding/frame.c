/*
 * frame.c - reply frames, built in C byte for byte as orjson writes the
 * same dict: the constant parts are literals copied from orjson's output,
 * and any value this file does not write verbatim (a string that is not
 * printable ASCII, an int beyond int64) goes through orjson itself.
 */
#include "server.h"

#include <string.h>

void srv_frame_init(struct srv_frame *w)
{
    w->buf = w->local;
    w->len = 4; /* the length goes in front */
    w->cap = sizeof(w->local);
}

void srv_frame_free(struct srv_frame *w)
{
    if (w->buf != w->local)
        PyMem_Free(w->buf);
}

int srv_put(struct srv_frame *w, const char *s, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = (w->len + n) * 2;
        char *b = PyMem_Malloc(cap);

        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(b, w->buf, w->len);
        srv_frame_free(w);
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return 0;
}

int srv_put_bytes(struct srv_frame *w, PyObject *bytes)
{
    return srv_put(w, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
}

/* Decimal digits of v, written backwards from `end`: where they start.
 * (snprintf parses its format on every call, and every reply has a few.) */
static char *frame_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

int srv_put_i64(struct srv_frame *w, int64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof(tmp);
    /* The magnitude as unsigned: INT64_MIN's has no int64 of its own. */
    char *p = frame_digits(end, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);

    if (v < 0)
        *--p = '-';
    return srv_put(w, p, (size_t)(end - p));
}

int srv_put_u64(struct srv_frame *w, uint64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof(tmp);
    char *p = frame_digits(end, v);

    return srv_put(w, p, (size_t)(end - p));
}

static int frame_put_dumped(struct srv_frame *w, PyObject *o, PyObject *dumps)
{
    PyObject *b = PyObject_CallOneArg(dumps, o);
    int rc;

    if (!b)
        return -1;
    rc = PyBytes_Check(b) ? srv_put_bytes(w, b) : -1;
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
    Py_DECREF(b);
    return rc;
}

/* A string of printable ASCII, quoted, with '"' and '\\' escaped: what
 * orjson writes for it. Anything else goes through orjson. */
static int frame_put_str(struct srv_frame *w, PyObject *s, PyObject *dumps)
{
    const char *p;
    Py_ssize_t n;

    if (!PyUnicode_IS_ASCII(s))
        return frame_put_dumped(w, s, dumps);
    p = (const char *)PyUnicode_1BYTE_DATA(s);
    n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return frame_put_dumped(w, s, dumps);
    if (SRV_PUT(w, "\"") < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((p[i] == '"' || p[i] == '\\') && srv_put(w, "\\", 1) < 0)
            return -1;
        if (srv_put(w, p + i, 1) < 0)
            return -1;
    }
    return SRV_PUT(w, "\"");
}

int srv_put_value(struct srv_frame *w, PyObject *o, PyObject *dumps)
{
    if (o == Py_None)
        return SRV_PUT(w, "null");
    if (PyUnicode_CheckExact(o))
        return frame_put_str(w, o, dumps);
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);

        if (!overflow && !(v == -1 && PyErr_Occurred()))
            return srv_put_i64(w, v);
        PyErr_Clear();
    }
    return frame_put_dumped(w, o, dumps);
}

int srv_frame_send(struct srv_frame *w, srv_ledger *l, srv_link *link)
{
    uint32_t n = (uint32_t)(w->len - 4);

    if (link->closed)
        return 0;
    w->buf[0] = (char)(n >> 24);
    w->buf[1] = (char)(n >> 16);
    w->buf[2] = (char)(n >> 8);
    w->buf[3] = (char)n;
    return srv_outbox_put(l, link, w->buf, w->len);
}
