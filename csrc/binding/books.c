/*
 * books.c - market data from the engine's events: each level event kept in
 * the instrument's L2 book, and, for instruments with subscribers, the
 * changed levels and the trades gathered for MarketData.flush (the books and
 * subscriber sets are MarketData's, handed over by MarketData.router_tables;
 * MarketData.level does the same in Python for the books recovered at start).
 */
#include "server.h"

int srv_md_level(struct srv_md *md, const struct eng_event *ev)
{
    Py_ssize_t n = PyList_GET_SIZE(md->books);
    PyObject *book, *price, *subs;
    int rc = -1;

    if ((Py_ssize_t)ev->instrument >= n || (Py_ssize_t)ev->instrument >= PyList_GET_SIZE(md->subscribers) ||
        (ev->side != ENG_BUY && ev->side != ENG_SELL)) {
        PyErr_SetString(PyExc_ValueError, "a level event of an unknown instrument or side");
        return -1;
    }
    book = PyList_GET_ITEM(md->books, ev->instrument);
    subs = PyList_GET_ITEM(md->subscribers, ev->instrument);
    if (!PyTuple_Check(book) || PyTuple_GET_SIZE(book) != 3 || !PySet_Check(subs)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's books or subscribers changed shape");
        return -1;
    }
    book = PyTuple_GET_ITEM(book, ev->side);
    if (!PyDict_Check(book)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's books changed shape");
        return -1;
    }
    price = PyLong_FromLongLong(ev->price);
    if (!price)
        return -1;
    /* A level event: qty is the level's total, leaves its order count. */
    if (ev->qty) {
        PyObject *level = srv_untracked(Py_BuildValue("(LL)", (long long)ev->qty, (long long)ev->leaves));

        if (!level || PyDict_SetItem(book, price, level) < 0) {
            Py_XDECREF(level);
            goto out;
        }
        Py_DECREF(level);
    } else if (PyDict_DelItem(book, price) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            goto out;
        PyErr_Clear();
    }
    if (PySet_GET_SIZE(subs)) {
        PyObject *inst = PyLong_FromUnsignedLong(ev->instrument);
        PyObject *changes, *key, *val;

        if (!inst)
            goto out;
        changes = PyDict_GetItemWithError(md->changes, inst);
        if (!changes) {
            if (PyErr_Occurred() || !(changes = PyDict_New()) ||
                PyDict_SetItem(md->changes, inst, changes) < 0) {
                Py_XDECREF(changes);
                Py_DECREF(inst);
                goto out;
            }
            Py_DECREF(changes); /* the dict holds it */
        }
        Py_DECREF(inst);
        key = srv_untracked(Py_BuildValue("(iL)", (int)ev->side, (long long)ev->price));
        val = srv_untracked(Py_BuildValue("(LL)", (long long)ev->qty, (long long)ev->leaves));
        if (!key || !val || PyDict_SetItem(changes, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            goto out;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    rc = 0;
out:
    Py_DECREF(price);
    return rc;
}

int srv_md_trade(struct srv_md *md, const struct eng_event *ev)
{
    PyObject *inst, *list, *item, *subs;
    int rc;

    if ((Py_ssize_t)ev->instrument >= PyList_GET_SIZE(md->subscribers)) {
        PyErr_SetString(PyExc_ValueError, "a trade of an unknown instrument");
        return -1;
    }
    subs = PyList_GET_ITEM(md->subscribers, ev->instrument);
    if (!PySet_Check(subs)) {
        PyErr_SetString(PyExc_TypeError, "MarketData's subscribers changed shape");
        return -1;
    }
    if (!PySet_GET_SIZE(subs))
        return 0;
    inst = PyLong_FromUnsignedLong(ev->instrument);
    if (!inst)
        return -1;
    list = PyDict_GetItemWithError(md->trades, inst);
    if (!list) {
        if (PyErr_Occurred() || !(list = PyList_New(0)) || PyDict_SetItem(md->trades, inst, list) < 0) {
            Py_XDECREF(list);
            Py_DECREF(inst);
            return -1;
        }
        Py_DECREF(list);
    }
    Py_DECREF(inst);
    item = srv_untracked(Py_BuildValue("(KLLi)", (unsigned long long)ev->trade_id, (long long)ev->price,
                                       (long long)ev->qty, (int)ev->side));
    if (!item)
        return -1;
    rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

