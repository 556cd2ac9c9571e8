/*
 * calls.c - pyengine._calls: the per-call verbs of pyengine.Engine in C.
 *
 * One call per operation is the API most users meet first. Through cffi, its
 * Python side (keyword arguments, checks, the call, the event objects) costs
 * several times the matching itself. This CPython extension type is the base
 * class of pyengine.Engine and implements submit, cancel, modify, order and
 * book: it binds the arguments, checks them, calls the core through struct
 * eng_api (the one copy of the core, linked into the cffi extension) and
 * builds the event and view objects itself.
 *
 * Every valid call runs here, in every documented form: strings or enum
 * members, ints or objects with __index__ (numpy integers), client order ids,
 * cancels without an account or by client order id. A call this file does
 * not take -- a bad argument -- goes, as it is, to the Python method of the
 * same name with a leading underscore (Engine._submit, ...), which finds
 * what is wrong and raises the error; it never runs a command. So the rules
 * of what is accepted live here and in the core (the order shape:
 * eng_order_shape), the wording of the errors in pyengine/_args.py. A closed
 * or busy engine is refused here, with the error of Python's table
 * (`refusals`), as Engine's own methods are.
 *
 * The GIL is held throughout: a command takes well under a microsecond, less
 * than releasing and taking the GIL back would cost.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pyengine.h"

/* The parameters of each verb, in order; the first `positional` may be given
   by position. */
enum calls_submit_arg {
    CALLS_SUB_SYMBOL,
    CALLS_SUB_SIDE,
    CALLS_SUB_QTY,
    CALLS_SUB_PRICE,
    CALLS_SUB_TIF,
    CALLS_SUB_ACCOUNT,
    CALLS_SUB_COID,
    CALLS_SUB_ORDER_TYPE,
    CALLS_SUB_POST_ONLY,
    CALLS_SUB_STP,
    CALLS_SUB_ORDER_ID,
    CALLS_SUB__COUNT
};
enum calls_target_arg { CALLS_TGT_ORDER_ID, CALLS_TGT_ACCOUNT, CALLS_TGT_COID, CALLS_TGT__COUNT };
enum calls_modify_arg { CALLS_MOD_ORDER_ID, CALLS_MOD_QTY, CALLS_MOD_PRICE, CALLS_MOD_ACCOUNT, CALLS_MOD_COID, CALLS_MOD__COUNT };
enum calls_book_arg { CALLS_BOOK_SYMBOL, CALLS_BOOK_DEPTH, CALLS_BOOK__COUNT };
/* The parameters whose default is None, a bit per slot. */
#define CALLS_BIT(slot) (1u << (slot))
enum {
    CALLS_SUB_NONE_OK = CALLS_BIT(CALLS_SUB_PRICE) | CALLS_BIT(CALLS_SUB_TIF) | CALLS_BIT(CALLS_SUB_COID) |
                        CALLS_BIT(CALLS_SUB_ORDER_ID),
    CALLS_TGT_NONE_OK = CALLS_BIT(CALLS_TGT_ORDER_ID) | CALLS_BIT(CALLS_TGT_ACCOUNT) | CALLS_BIT(CALLS_TGT_COID),
    CALLS_MOD_NONE_OK = (1u << CALLS_MOD__COUNT) - 1
};

/*
 * What _attach() takes by keyword: the Engine's own symbol table, the
 * classes of what the verbs return, and the code tables. One row each: its
 * name, what it must be, and where it goes.
 */
enum calls_kind { CALLS_K_DICT, CALLS_K_LIST, CALLS_K_TUPLE, CALLS_K_TUPLE_CLASS, CALLS_K_EXCEPTION };

enum { CALLS_LEVEL_CACHE = 32 }; /* levels per side whose objects book() keeps */

/* What _hold() returns (the module's HELD, CLOSED, IN_USE_HERE, IN_USE_ELSEWHERE). */
enum calls_hold {
    CALLS_HELD = 0,
    CALLS_CLOSED = 1,
    CALLS_IN_USE_HERE = 2,
    CALLS_IN_USE_ELSEWHERE = 3,
    CALLS_HOLD__COUNT
};

typedef struct {
    PyObject_HEAD
    struct eng *eng; /* NULL when detached: every call takes the Python path */
    const struct eng_api *api;
    PyObject *tables; /* the dict given to _attach, strong; the pointers below borrow from it */
    PyObject *symbols;         /* dict: symbol -> instrument number */
    PyObject *names;           /* list: symbol by instrument number */
    PyTypeObject *accepted, *rejected, *trade, *cancelled, *modified, *level_update, *state_changed;
    PyTypeObject *mass_cancelled, *mmp_update, *order_limits_set;
    PyTypeObject *level, *book_view, *order_state;
    PyObject *no_memory;       /* the exception class for an engine out of memory */
    PyObject *sides;           /* tuple by side code: None, Side.BUY, Side.SELL */
    PyObject *side_code, *tif_code, *order_type_code, *stp_code; /* dicts: str -> code */
    PyObject *stps;            /* tuple by stp code */
    PyObject *states;          /* tuple by trading state code */
    PyObject *rejects;         /* tuple by reject code: (reason, message) or None */
    PyObject *cancel_reasons;  /* tuple by cancel reason code */
    PyObject *default_tif;     /* tuple by order type code: the tif code given none (0: none) */
    PyObject *refusals;        /* tuple by hold code (enum calls_hold): None, or (exception class, message);
                                  strong, and kept until the Core goes: a closed Engine still says why */
    char busy;                 /* Engine._busy: a verb here, or a Python method (_holding, _hold) holds the engine */
    char in_verb;              /* a verb here set busy: it is the verb's to clear */
    unsigned long owner;       /* while busy: the thread that holds it (PyThread_get_thread_ident) */
    char caller_ids;           /* new orders bring their ids (eng_config.caller_order_ids) */
    /* The Level objects book() handed out last, by side and position, and
       the values they hold: book() hands out again a level that has not
       changed since (they are immutable), which spares most of its cost
       when a book is read more often than its levels change. */
    struct eng_level_info cached_info[2][CALLS_LEVEL_CACHE];
    PyObject *cached_level[2][CALLS_LEVEL_CACHE]; /* strong or NULL */
} calls_core;

#define CALLS_TABLE(name, kind) {#name, kind, offsetof(calls_core, name)}
static const struct calls_table {
    const char *name;
    enum calls_kind kind;
    size_t offset;
} calls_tables[] = {
    CALLS_TABLE(symbols, CALLS_K_DICT),
    CALLS_TABLE(names, CALLS_K_LIST),
    CALLS_TABLE(accepted, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(rejected, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(trade, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(cancelled, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(modified, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(level_update, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(state_changed, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(mass_cancelled, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(mmp_update, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(order_limits_set, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(level, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(book_view, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(order_state, CALLS_K_TUPLE_CLASS),
    CALLS_TABLE(no_memory, CALLS_K_EXCEPTION),
    CALLS_TABLE(sides, CALLS_K_TUPLE),
    CALLS_TABLE(side_code, CALLS_K_DICT),
    CALLS_TABLE(tif_code, CALLS_K_DICT),
    CALLS_TABLE(order_type_code, CALLS_K_DICT),
    CALLS_TABLE(stp_code, CALLS_K_DICT),
    CALLS_TABLE(stps, CALLS_K_TUPLE),
    CALLS_TABLE(states, CALLS_K_TUPLE),
    CALLS_TABLE(rejects, CALLS_K_TUPLE),
    CALLS_TABLE(cancel_reasons, CALLS_K_TUPLE),
    CALLS_TABLE(default_tif, CALLS_K_TUPLE),
    CALLS_TABLE(refusals, CALLS_K_TUPLE),
};
#define CALLS_N_TABLES (sizeof(calls_tables) / sizeof(*calls_tables))

/* Interned names, made once when the module is first imported. */
static struct {
    PyObject *submit_args[CALLS_SUB__COUNT];
    PyObject *target_args[CALLS_TGT__COUNT];
    PyObject *modify_args[CALLS_MOD__COUNT];
    PyObject *book_args[CALLS_BOOK__COUNT];
    PyObject *py_submit, *py_cancel, *py_modify, *py_order, *py_book;
} calls_names;

static const char *const calls_submit_names[CALLS_SUB__COUNT] = {
    "symbol", "side",            "qty",        "price",     "tif",
    "account", "client_order_id", "order_type", "post_only", "stp",
    "order_id",
};
static const char *const calls_target_names[CALLS_TGT__COUNT] = {"order_id", "account",
                                                           "client_order_id"};
static const char *const calls_modify_names[CALLS_MOD__COUNT] = {"order_id", "qty", "price", "account",
                                                           "client_order_id"};
static const char *const calls_book_names[CALLS_BOOK__COUNT] = {"symbol", "depth"};

/* ---- binding and checking the arguments --------------------------------- */

/* What checking one argument found: it is good; it is not (the Python
   method says why); or user code the check ran (__index__, __hash__)
   raised, and that error stands. */
enum calls_check { CALLS_RAISED = -1, CALLS_BAD = 0, CALLS_GOOD = 1 };

/* Objects made while converting arguments (an __index__ result), released
   when the call returns: at most one per int argument of a verb. */
enum { CALLS_MAX_HELD = 4 };
_Static_assert(CALLS_MAX_HELD >= 4 && CALLS_MAX_HELD >= CALLS_MOD__COUNT - 1,
               "submit converts 4 ints, modify 4");
struct calls_held {
    PyObject *obj[CALLS_MAX_HELD];
    int n;
};

static void calls_release(struct calls_held *h)
{
    while (h->n)
        Py_DECREF(h->obj[--h->n]);
}

/*
 * Match a vectorcall's arguments to parameter slots. None counts as not
 * given for the parameters in `none_ok` (a bit per slot: those whose
 * default is None), and is wrong for the others. Keyword names are compared
 * by identity with the interned names first, then by value. Returns 0 for
 * what only Python can say is wrong -- too many positional arguments, an
 * unknown or repeated keyword, a None where none is taken -- and the call
 * then goes to the Python method, which raises the error.
 */
static int calls_bind(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject *const *names, int n_names, int n_positional, unsigned none_ok,
                      PyObject **slots)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs > n_positional)
        return 0;
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;

        while (j < n_names && names[j] != key)
            j++;
        if (j == n_names) /* keyword names are strs: the comparison cannot fail */
            for (j = 0; j < n_names && PyUnicode_Compare(key, names[j]) != 0; j++)
                ;
        if (j == n_names || slots[j])
            return 0;
        slots[j] = args[nargs + k];
    }
    for (int j = 0; j < n_names; j++) {
        if (slots[j] != Py_None)
            continue;
        if (!(none_ok & (1u << j)))
            return 0;
        slots[j] = NULL;
    }
    return 1;
}

static PyObject *calls_forward(PyObject *self, PyObject *method, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *bound = PyObject_GetAttr(self, method);
    PyObject *res;

    if (!bound)
        return NULL;
    res = PyObject_Vectorcall(bound, args, nargs, kwnames);
    Py_DECREF(bound);
    return res;
}

/*
 * An int argument as an exact int, into *o: an int, or an object with
 * __index__ other than a bool (a numpy integer), whose int *o then becomes
 * (held until the call returns), so that the events hold plain ints.
 */
static enum calls_check calls_exact_int(PyObject **o, struct calls_held *held)
{
    PyObject *v;

    if (PyLong_CheckExact(*o))
        return CALLS_GOOD;
    if (PyBool_Check(*o) || !PyIndex_Check(*o))
        return CALLS_BAD;
    v = PyNumber_Index(*o);
    if (!v)
        return CALLS_RAISED;
    held->obj[held->n++] = v;
    *o = v;
    return CALLS_GOOD;
}

/* An int argument in [lo, hi], into *out. */
static enum calls_check calls_to_int(PyObject **o, long long lo, long long hi, long long *out,
                                     struct calls_held *held)
{
    enum calls_check rc = calls_exact_int(o, held);
    int overflow;
    long long x;

    if (rc != CALLS_GOOD)
        return rc;
    x = PyLong_AsLongLongAndOverflow(*o, &overflow);
    if (overflow || x < lo || x > hi)
        return CALLS_BAD;
    *out = x;
    return CALLS_GOOD;
}

/* The same for an unsigned 64-bit value (an order id) in [lo, UINT64_MAX]. */
static enum calls_check calls_to_id(PyObject **o, unsigned long long lo, unsigned long long *out,
                                    struct calls_held *held)
{
    enum calls_check rc = calls_exact_int(o, held);
    unsigned long long x;

    if (rc != CALLS_GOOD)
        return rc;
    x = PyLong_AsUnsignedLongLong(*o);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* the OverflowError of a negative or too large id */
        return CALLS_BAD;
    }
    if (x < lo)
        return CALLS_BAD;
    *out = x;
    return CALLS_GOOD;
}

/*
 * A str found in `table` (a dict of str -> small int), into *out. With
 * `members`, the table is a small one of enum members, which are looked for
 * by identity first: a dict lookup with a str subclass takes CPython's slow
 * path. CALLS_BAD if it is no str or not there.
 */
static enum calls_check calls_code(PyObject *o, PyObject *table, int members, long *out)
{
    PyObject *v = NULL;

    if (!PyUnicode_Check(o))
        return CALLS_BAD;
    if (members && !PyUnicode_CheckExact(o)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;

        while (!v && PyDict_Next(table, &pos, &key, &value))
            if (key == o)
                v = value;
    }
    if (!v)
        v = PyDict_GetItemWithError(table, o);
    if (!v)
        return PyErr_Occurred() ? CALLS_RAISED : CALLS_BAD;
    *out = PyLong_AsLong(v); /* the tables hold small ints (checked by _attach) */
    return CALLS_GOOD;
}

/* A client order id: 1 to ENG_COID_LEN printable ASCII characters, into
   ENG_COID_LEN NUL-padded bytes. */
static enum calls_check calls_coid(PyObject *o, char out[ENG_COID_LEN])
{
    Py_ssize_t n;
    const char *s;

    if (!PyUnicode_Check(o) || !PyUnicode_IS_ASCII(o))
        return CALLS_BAD;
    n = PyUnicode_GET_LENGTH(o);
    if (n < 1 || n > ENG_COID_LEN)
        return CALLS_BAD;
    s = (const char *)PyUnicode_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return CALLS_BAD;
    memset(out, 0, ENG_COID_LEN);
    memcpy(out, s, (size_t)n);
    return CALLS_GOOD;
}

/* ---- building the objects ---------------------------------------------- */

/*
 * A new instance of a NamedTuple class holding `n` items, stolen. NULL, with
 * the exception set and every item released, if an item is NULL or the
 * allocation fails.
 */
static PyObject *calls_new(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyObject *obj = NULL;

    for (Py_ssize_t i = 0; i < n; i++)
        if (!items[i])
            goto fail;
    obj = type->tp_alloc(type, n);
    if (!obj)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(obj, i, items[i]);
    return obj;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* A one-event list, the event stolen. */
static PyObject *calls_one(PyObject *ev)
{
    PyObject *list;

    if (!ev)
        return NULL;
    list = PyList_New(1);
    if (!list) {
        Py_DECREF(ev);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, ev);
    return list;
}

/* Item `i` of a tuple or list (a new reference), or NULL with SystemError
   when the core gave a code the table does not hold. */
static PyObject *calls_item(PyObject *tuple_or_list, size_t i)
{
    PyObject *o;

    if ((Py_ssize_t)i >= PySequence_Fast_GET_SIZE(tuple_or_list)) {
        PyErr_Format(PyExc_SystemError, "the core gave code %zu, which the tables do not hold", i);
        return NULL;
    }
    o = PySequence_Fast_GET_ITEM(tuple_or_list, (Py_ssize_t)i);
    return Py_NewRef(o);
}

static inline PyObject *calls_u64(unsigned long long v)
{
    return PyLong_FromUnsignedLongLong(v);
}

static inline PyObject *calls_i64(long long v)
{
    return PyLong_FromLongLong(v);
}

/* A stored client order id as a str, or None when there is none. */
static PyObject *calls_coid_str(const char coid[ENG_COID_LEN])
{
    size_t n = strnlen(coid, ENG_COID_LEN);

    if (n == 0)
        return Py_NewRef(Py_None);
    return PyUnicode_DecodeASCII(coid, (Py_ssize_t)n, "backslashreplace");
}

/* Item 0 or 1 of the (reason, message) pair of reject code `code`. */
static PyObject *calls_reject(calls_core *self, int code, int which)
{
    PyObject *why = calls_item(self->rejects, (size_t)code);
    PyObject *o;

    if (!why)
        return NULL;
    if (!PyTuple_Check(why)) {
        Py_DECREF(why);
        PyErr_Format(PyExc_SystemError, "the core rejected with code %d, which has no reason", code);
        return NULL;
    }
    o = Py_NewRef(PyTuple_GET_ITEM(why, which));
    Py_DECREF(why);
    return o;
}

/* The event object of one record. NULL with an exception on failure. */
static PyObject *calls_decode(calls_core *self, const struct eng_event *ev)
{
    PyObject *it[12];

    switch (ev->type) {
    case ENG_EV_TRADE:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_u64(ev->trade_id);
        it[2] = calls_item(self->names, ev->instrument);
        it[3] = calls_i64(ev->price);
        it[4] = calls_i64(ev->qty);
        it[5] = calls_u64(ev->maker_order_id);
        it[6] = calls_u64(ev->order_id);
        it[7] = PyLong_FromUnsignedLong(ev->maker_account);
        it[8] = PyLong_FromUnsignedLong(ev->account);
        it[9] = calls_item(self->sides, ev->side);
        it[10] = calls_i64(ev->maker_leaves);
        it[11] = calls_i64(ev->leaves);
        return calls_new(self->trade, 12, it);
    case ENG_EV_ACCEPTED:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_u64(ev->order_id);
        it[2] = calls_item(self->names, ev->instrument);
        it[3] = calls_item(self->sides, ev->side);
        it[4] = ev->price ? calls_i64(ev->price) : Py_NewRef(Py_None);
        it[5] = calls_i64(ev->qty);
        it[6] = PyLong_FromUnsignedLong(ev->account);
        it[7] = calls_coid_str(ev->coid);
        return calls_new(self->accepted, 8, it);
    case ENG_EV_CANCELLED:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_u64(ev->order_id);
        it[2] = calls_i64(ev->leaves);
        it[3] = calls_item(self->cancel_reasons, ev->reason);
        return calls_new(self->cancelled, 4, it);
    case ENG_EV_MODIFIED:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_u64(ev->order_id);
        it[2] = calls_i64(ev->price);
        it[3] = calls_i64(ev->qty);
        it[4] = PyBool_FromLong(ev->flags & ENG_EV_F_PRIORITY_KEPT);
        return calls_new(self->modified, 5, it);
    case ENG_EV_REJECTED:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_reject(self, ev->reason, 0);
        it[2] = calls_reject(self, ev->reason, 1);
        it[3] = calls_coid_str(ev->coid);
        it[4] = ev->order_id ? calls_u64(ev->order_id) : Py_NewRef(Py_None);
        return calls_new(self->rejected, 5, it);
    case ENG_EV_LEVEL:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_item(self->names, ev->instrument);
        it[2] = calls_item(self->sides, ev->side);
        it[3] = calls_i64(ev->price);
        it[4] = calls_i64(ev->qty);
        it[5] = calls_i64(ev->leaves);
        return calls_new(self->level_update, 6, it);
    case ENG_EV_STATE:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_item(self->names, ev->instrument);
        it[2] = calls_item(self->states, (size_t)ev->qty);
        return calls_new(self->state_changed, 3, it);
    case ENG_EV_MASS_CANCELLED:
        it[0] = calls_u64(ev->seq);
        it[1] = PyLong_FromUnsignedLong(ev->account);
        it[2] = (ev->flags & ENG_EV_F_ALL_INSTRUMENTS) ? Py_NewRef(Py_None)
                                                       : calls_item(self->names, ev->instrument);
        it[3] = calls_i64(ev->qty);
        it[4] = calls_item(self->cancel_reasons, ev->reason);
        return calls_new(self->mass_cancelled, 5, it);
    case ENG_EV_MMP:
        it[0] = calls_u64(ev->seq);
        it[1] = PyLong_FromUnsignedLong(ev->account);
        it[2] = calls_item(self->names, ev->instrument);
        it[3] = calls_i64(ev->qty);
        it[4] = calls_i64(ev->price);
        it[5] = calls_i64(ev->leaves);
        it[6] = PyBool_FromLong(ev->flags & ENG_EV_F_TRIPPED);
        return calls_new(self->mmp_update, 7, it);
    case ENG_EV_LIMITS:
        it[0] = calls_u64(ev->seq);
        it[1] = calls_item(self->names, ev->instrument);
        it[2] = calls_i64(ev->qty);
        it[3] = calls_i64(ev->price);
        return calls_new(self->order_limits_set, 4, it);
    default:
        PyErr_Format(PyExc_SystemError, "the core gave an event of unknown type %d", ev->type);
        return NULL;
    }
}

static PyObject *calls_no_memory(calls_core *self)
{
    PyErr_SetString(self->no_memory, "the engine could not grow its event buffer");
    return NULL;
}

/*
 * The events of the command just processed, whose fast-path result r is
 * neither a lone success nor a lone Rejected (see pyengine.h).
 */
static PyObject *calls_events(calls_core *self, int64_t r)
{
    size_t count = 0;
    const struct eng_event *ev;
    PyObject *list;

    if (r == 0)
        return calls_no_memory(self);
    ev = self->api->events(self->eng, &count);
    if (count != (size_t)(-r - ENG_ERR__COUNT)) {
        PyErr_SetString(PyExc_SystemError, "the core's event count and result disagree");
        return NULL;
    }
    list = PyList_New((Py_ssize_t)count);
    if (!list)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        PyObject *obj = calls_decode(self, &ev[i]);

        if (!obj) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, obj);
    }
    return list;
}

/*
 * The events of a fast-path result r <= 0: a lone Rejected (of a command
 * that named client order id `coid` and order `target`, each NULL if not),
 * or several events, or out of memory.
 */
static PyObject *calls_not_simple(calls_core *self, int64_t r, const char *coid, PyObject *target)
{
    PyObject *it[5];

    if (r == 0 || r <= -ENG_ERR__COUNT)
        return calls_events(self, r);
    it[0] = calls_u64(self->api->seq(self->eng));
    it[1] = calls_reject(self, (int)-r, 0);
    it[2] = calls_reject(self, (int)-r, 1);
    it[3] = coid ? calls_coid_str(coid) : Py_NewRef(Py_None);
    it[4] = Py_NewRef(target ? target : Py_None);
    return calls_one(calls_new(self->rejected, 5, it));
}

/* ---- the verbs ---------------------------------------------------------- */

/* Hold the engine for this thread if it is attached and free. */
static enum calls_hold calls_take(calls_core *self)
{
    unsigned long me = PyThread_get_thread_ident();

    if (self->busy)
        return self->owner == me ? CALLS_IN_USE_HERE : CALLS_IN_USE_ELSEWHERE;
    if (!self->eng)
        return CALLS_CLOSED;
    self->busy = 1;
    self->owner = me;
    return CALLS_HELD;
}

/* NULL, with the error of hold code `r` (not CALLS_HELD): its exception
   and message in the `refusals` table, given by Python. */
static PyObject *calls_refuse(calls_core *self, enum calls_hold r)
{
    PyObject *why;

    if (!self->refusals) { /* never attached */
        PyErr_SetString(PyExc_RuntimeError, "the Engine is not attached");
        return NULL;
    }
    why = PyTuple_GET_ITEM(self->refusals, r);
    PyErr_SetObject(PyTuple_GET_ITEM(why, 0), PyTuple_GET_ITEM(why, 1));
    return NULL;
}

/*
 * Every verb holds the engine from its first look at the arguments to the
 * last event object it builds (`busy`, Engine._busy): converting an argument
 * can run user code (__index__, __hash__), which must find the engine in
 * use, not close it or enter it again (nor detach or attach this half, nor
 * end the hold: RuntimeError). A verb that finds the engine closed or busy
 * raises the refusal of its hold code, as the Python methods do, which hold
 * the engine by the same flag (_holding; _hold, _release): the code is the
 * one of the moment the verb looked, another thread's call may end at once.
 */
static enum calls_hold calls_enter(calls_core *self)
{
    enum calls_hold r = calls_take(self);

    if (r == CALLS_HELD)
        self->in_verb = 1;
    return r;
}

/*
 * How a verb that entered ends: with its result when every check was good;
 * with the error of user code that raised; else by handing the call to the
 * Python method, which finds what is wrong and raises it.
 */
static PyObject *calls_leave(calls_core *self, enum calls_check rc, PyObject *res,
                             struct calls_held *held, PyObject *method, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames)
{
    self->busy = self->in_verb = 0;
    calls_release(held);
    if (rc == CALLS_GOOD)
        return res;
    if (rc == CALLS_RAISED)
        return NULL;
    return calls_forward((PyObject *)self, method, args, nargs, kwnames);
}

/* A check that is not good ends the verb: `rc` says how. */
#define CALLS_CHECK(expr)                                                                          \
    do {                                                                                           \
        if ((rc = (expr)) != CALLS_GOOD)                                                           \
            goto out;                                                                              \
    } while (0)

/* A condition on the arguments that must hold, else Python says why. */
#define CALLS_REQUIRE(cond) CALLS_CHECK((cond) ? CALLS_GOOD : CALLS_BAD)

/* The instrument number of a symbol argument: a str found in the Engine's
   table, or UINT32_MAX for one it does not hold (the core rejects that:
   unknown_instrument). */
static enum calls_check calls_instrument(calls_core *self, PyObject *o, long *out)
{
    enum calls_check rc = calls_code(o, self->symbols, 0, out);

    if (rc == CALLS_BAD && PyUnicode_Check(o)) {
        *out = (long)UINT32_MAX;
        return CALLS_GOOD;
    }
    return rc;
}

PyDoc_STRVAR(calls_submit_doc,
             "submit($self, /, symbol, side, qty, price=None, *, tif=None, account=0,\n"
             "       client_order_id=None, order_type='limit', post_only=False, stp='none',\n"
             "       order_id=None)\n"
             "--\n\n"
             "Enter a new order; returns its events (Accepted or Rejected first).\n\n"
             "symbol: an instrument added with add_instrument; side: 'buy' or 'sell';\n"
             "qty, price: integers in the instrument's units (price None for a market\n"
             "order); tif: 'gtc', 'ioc' or 'fok', None for the order type's default\n"
             "('gtc' for a limit order, 'ioc' for a market order); order_type: 'limit'\n"
             "or 'market'; stp: 'none', 'cancel_newest', 'cancel_oldest' or 'cancel_both'.\n"
             "Every choice may be given as its str or as the enum member.\n"
             "order_id: the order's id, in [1, 2**64-1], on an Engine made with\n"
             "caller_order_ids=True, where it is required (unique among open orders,\n"
             "else a Rejected duplicate_order_id); not given on any other Engine,\n"
             "which numbers its orders 1, 2, 3, ...\n"
             "Bad arguments raise TypeError/ValueError; an order the market refuses\n"
             "is a Rejected event.");

static PyObject *calls_submit(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[CALLS_SUB__COUNT] = {0};
    struct calls_held held = {.n = 0};
    long long qty, price = 0, account = 0;
    unsigned long long order_id = 0;
    long inst, side, tif, order_type = ENG_LIMIT, stp = ENG_STP_NONE;
    char coid[ENG_COID_LEN];
    enum calls_check rc = CALLS_BAD;
    enum calls_hold hold;
    int post_only;
    int64_t r;
    PyObject *res = NULL;

    if ((hold = calls_enter(self)) != CALLS_HELD) /* closed or busy: untouched */
        return calls_refuse(self, hold);
    CALLS_REQUIRE(calls_bind(args, nargs, kwnames, calls_names.submit_args, CALLS_SUB__COUNT, 4,
                             CALLS_SUB_NONE_OK, a));
    CALLS_REQUIRE(a[CALLS_SUB_SYMBOL] && a[CALLS_SUB_SIDE] && a[CALLS_SUB_QTY]);
    CALLS_CHECK(calls_instrument(self, a[CALLS_SUB_SYMBOL], &inst));
    CALLS_CHECK(calls_code(a[CALLS_SUB_SIDE], self->side_code, 1, &side));
    CALLS_CHECK(calls_to_int(&a[CALLS_SUB_QTY], INT64_MIN, INT64_MAX, &qty, &held));
    if (a[CALLS_SUB_PRICE])
        CALLS_CHECK(calls_to_int(&a[CALLS_SUB_PRICE], INT64_MIN, INT64_MAX, &price, &held));
    if (a[CALLS_SUB_ORDER_TYPE])
        CALLS_CHECK(calls_code(a[CALLS_SUB_ORDER_TYPE], self->order_type_code, 1, &order_type));
    if (a[CALLS_SUB_STP])
        CALLS_CHECK(calls_code(a[CALLS_SUB_STP], self->stp_code, 1, &stp));
    if (a[CALLS_SUB_TIF])
        CALLS_CHECK(calls_code(a[CALLS_SUB_TIF], self->tif_code, 1, &tif));
    else
        tif = PyLong_AsLong(PyTuple_GET_ITEM(self->default_tif, order_type));
    CALLS_REQUIRE(tif > 0);
    if (a[CALLS_SUB_ACCOUNT])
        CALLS_CHECK(calls_to_int(&a[CALLS_SUB_ACCOUNT], 0, UINT32_MAX, &account, &held));
    CALLS_REQUIRE(!a[CALLS_SUB_POST_ONLY] || PyBool_Check(a[CALLS_SUB_POST_ONLY]));
    if (a[CALLS_SUB_COID])
        CALLS_CHECK(calls_coid(a[CALLS_SUB_COID], coid));
    /* An order id is the caller's to give on an engine in that mode only. */
    if (self->caller_ids) {
        CALLS_REQUIRE(a[CALLS_SUB_ORDER_ID] != NULL);
        CALLS_CHECK(calls_to_id(&a[CALLS_SUB_ORDER_ID], 1, &order_id, &held));
    } else {
        CALLS_REQUIRE(a[CALLS_SUB_ORDER_ID] == NULL);
    }
    post_only = a[CALLS_SUB_POST_ONLY] == Py_True;
    CALLS_REQUIRE(self->api->order_shape((uint8_t)order_type, (uint8_t)tif,
                                         a[CALLS_SUB_PRICE] != NULL,
                                         post_only ? ENG_CMD_F_POST_ONLY : 0) == ENG_SHAPE_OK);

    if (self->caller_ids) {
        /* Only the generic entry point takes a new order's id. */
        struct eng_cmd c = {.type = ENG_CMD_NEW,
                            .side = (uint8_t)side,
                            .order_type = (uint8_t)order_type,
                            .tif = (uint8_t)tif,
                            .stp = (uint8_t)stp,
                            .flags = post_only ? ENG_CMD_F_POST_ONLY : 0,
                            .instrument = (uint32_t)inst,
                            .account = (uint32_t)account,
                            .order_id = order_id,
                            .price = price,
                            .qty = qty};

        if (a[CALLS_SUB_COID])
            memcpy(c.coid, coid, ENG_COID_LEN);
        r = self->api->run(self->eng, &c);
    } else if (order_type == ENG_LIMIT && tif == ENG_GTC && stp == ENG_STP_NONE && !post_only &&
               !a[CALLS_SUB_COID]) {
        r = self->api->limit(self->eng, (uint32_t)inst, (uint8_t)side, (uint32_t)account, qty,
                             price);
    } else {
        r = self->api->new_order(self->eng, (uint32_t)inst, (uint8_t)side, (uint8_t)order_type,
                                 (uint8_t)tif, (uint8_t)stp, post_only ? ENG_CMD_F_POST_ONLY : 0,
                                 (uint32_t)account, qty, price, a[CALLS_SUB_COID] ? coid : NULL);
    }
    if (r > 0) {
        PyObject *it[8];
        PyObject *coid_obj = a[CALLS_SUB_COID];

        it[0] = calls_u64(self->api->seq(self->eng));
        /* With caller order ids r is 1 and the id is the argument. */
        it[1] = self->caller_ids ? Py_NewRef(a[CALLS_SUB_ORDER_ID]) : calls_i64(r);
        it[2] = calls_item(self->names, (size_t)inst);
        it[3] = calls_item(self->sides, (size_t)side);
        it[4] = Py_NewRef(a[CALLS_SUB_PRICE] ? a[CALLS_SUB_PRICE] : Py_None);
        it[5] = Py_NewRef(a[CALLS_SUB_QTY]);
        it[6] = a[CALLS_SUB_ACCOUNT] ? Py_NewRef(a[CALLS_SUB_ACCOUNT]) : PyLong_FromLong(0);
        /* A plain str in the event, as the core would decode it. */
        it[7] = !coid_obj ? Py_NewRef(Py_None)
                : PyUnicode_CheckExact(coid_obj) ? Py_NewRef(coid_obj)
                                                 : calls_coid_str(coid);
        res = calls_one(calls_new(self->accepted, 8, it));
    } else {
        res = calls_not_simple(self, r, a[CALLS_SUB_COID] ? coid : NULL,
                               self->caller_ids ? a[CALLS_SUB_ORDER_ID] : NULL);
    }
    rc = CALLS_GOOD;
out:
    return calls_leave(self, rc, res, &held, calls_names.py_submit, args, nargs, kwnames);
}

/*
 * The order a cancel, modify or order() call addresses: by id (account None:
 * an administrator, ENG_CMD_F_ANY_ACCOUNT), or by client order id with its
 * account.
 */
struct calls_target {
    unsigned long long order_id; /* 0 when addressed by client order id */
    long long account;
    uint8_t flags;
    const char *coid; /* NULL, or the buffer below */
    char buf[ENG_COID_LEN];
};

static enum calls_check calls_target(PyObject **order_id, PyObject **account, PyObject *coid,
                                     unsigned long long min_id, struct calls_target *t,
                                     struct calls_held *held)
{
    enum calls_check rc;

    t->order_id = 0;
    t->account = 0;
    t->flags = 0;
    t->coid = NULL;
    if (coid) {
        if (*order_id || !*account)
            return CALLS_BAD;
        if ((rc = calls_coid(coid, t->buf)) != CALLS_GOOD)
            return rc;
        t->coid = t->buf;
    } else {
        if (!*order_id)
            return CALLS_BAD;
        if ((rc = calls_to_id(order_id, min_id, &t->order_id, held)) != CALLS_GOOD)
            return rc;
    }
    if (!*account) {
        t->flags = ENG_CMD_F_ANY_ACCOUNT;
        return CALLS_GOOD;
    }
    return calls_to_int(account, 0, UINT32_MAX, &t->account, held);
}

PyDoc_STRVAR(calls_cancel_doc,
             "cancel($self, /, order_id=None, *, account=None, client_order_id=None)\n"
             "--\n\n"
             "Cancel an open order by id, or by client order id with its account.\n\n"
             "account=None cancels as an administrator (no ownership check).");

static PyObject *calls_cancel(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[CALLS_TGT__COUNT] = {0};
    struct calls_held held = {.n = 0};
    struct calls_target t;
    enum calls_check rc = CALLS_BAD;
    enum calls_hold hold;
    int64_t r;
    PyObject *res = NULL;

    if ((hold = calls_enter(self)) != CALLS_HELD) /* closed or busy: untouched */
        return calls_refuse(self, hold);
    CALLS_REQUIRE(calls_bind(args, nargs, kwnames, calls_names.target_args, CALLS_TGT__COUNT, 1,
                             CALLS_TGT_NONE_OK, a));
    CALLS_CHECK(calls_target(&a[CALLS_TGT_ORDER_ID], &a[CALLS_TGT_ACCOUNT], a[CALLS_TGT_COID], 1, &t,
                             &held));

    if (t.flags == 0 && !t.coid)
        r = self->api->cancel(self->eng, t.order_id, (uint32_t)t.account);
    else
        r = self->api->cancel_order(self->eng, t.order_id, (uint32_t)t.account, t.flags, t.coid);
    if (r > 0) {
        PyObject *it[4];

        it[0] = calls_u64(self->api->seq(self->eng));
        it[1] = Py_NewRef(a[CALLS_TGT_ORDER_ID]);
        it[2] = calls_i64(r);
        it[3] = calls_item(self->cancel_reasons, ENG_CANCEL_USER);
        res = calls_one(calls_new(self->cancelled, 4, it));
    } else {
        res = calls_not_simple(self, r, t.coid, a[CALLS_TGT_ORDER_ID]);
    }
    rc = CALLS_GOOD;
out:
    return calls_leave(self, rc, res, &held, calls_names.py_cancel, args, nargs, kwnames);
}

PyDoc_STRVAR(calls_modify_doc,
             "modify($self, /, order_id=None, qty=None, price=None, *, account=None,\n"
             "       client_order_id=None)\n"
             "--\n\n"
             "Change an open order: qty is its new open quantity (0 cancels), price\n"
             "its new price; give either or both. A qty left out is the order's open\n"
             "qty when the engine runs the modify; a price left out keeps the price.\n"
             "Lowering qty at the same price keeps time priority; anything else (a\n"
             "price change, more qty) loses it and may trade at once. The order is\n"
             "addressed as for cancel.");

static PyObject *calls_modify(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[CALLS_MOD__COUNT] = {0};
    struct calls_held held = {.n = 0};
    struct calls_target t;
    long long qty = 0, price = 0;
    enum calls_check rc = CALLS_BAD;
    enum calls_hold hold;
    uint8_t flags;
    int64_t r;
    PyObject *res = NULL;

    if ((hold = calls_enter(self)) != CALLS_HELD) /* closed or busy: untouched */
        return calls_refuse(self, hold);
    CALLS_REQUIRE(calls_bind(args, nargs, kwnames, calls_names.modify_args, CALLS_MOD__COUNT, 3,
                             CALLS_MOD_NONE_OK, a));
    CALLS_CHECK(calls_target(&a[CALLS_MOD_ORDER_ID], &a[CALLS_MOD_ACCOUNT], a[CALLS_MOD_COID], 1, &t,
                             &held));
    CALLS_REQUIRE(a[CALLS_MOD_QTY] || a[CALLS_MOD_PRICE]);
    if (a[CALLS_MOD_QTY])
        CALLS_CHECK(calls_to_int(&a[CALLS_MOD_QTY], INT64_MIN, INT64_MAX, &qty, &held));
    if (a[CALLS_MOD_PRICE])
        CALLS_CHECK(calls_to_int(&a[CALLS_MOD_PRICE], INT64_MIN, INT64_MAX, &price, &held));
    flags = t.flags | (a[CALLS_MOD_QTY] ? 0 : ENG_CMD_F_KEEP_QTY) |
            (a[CALLS_MOD_PRICE] ? 0 : ENG_CMD_F_KEEP_PRICE);

    r = self->api->modify_order(self->eng, t.order_id, (uint32_t)t.account, flags, qty, price,
                                t.coid);
    res = calls_not_simple(self, r, t.coid, a[CALLS_MOD_ORDER_ID]);
    rc = CALLS_GOOD;
out:
    return calls_leave(self, rc, res, &held, calls_names.py_modify, args, nargs, kwnames);
}

PyDoc_STRVAR(calls_order_doc,
             "order($self, /, order_id=None, *, account=None, client_order_id=None)\n"
             "--\n\n"
             "An open order (OrderState), addressed as for cancel: by order_id, or by\n"
             "client_order_id with its account. None if there is no such open order\n"
             "(never was, filled, cancelled); with an order id and an account, also if\n"
             "the order is another account's.");

static PyObject *calls_order(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *a[CALLS_TGT__COUNT] = {0};
    PyObject *it[9];
    struct calls_held held = {.n = 0};
    struct calls_target t;
    struct eng_order_info info;
    enum calls_check rc = CALLS_BAD;
    enum calls_hold hold;
    PyObject *res = NULL;
    int found;

    if ((hold = calls_enter(self)) != CALLS_HELD) /* closed or busy: untouched */
        return calls_refuse(self, hold);
    CALLS_REQUIRE(calls_bind(args, nargs, kwnames, calls_names.target_args, CALLS_TGT__COUNT, 1,
                             CALLS_TGT_NONE_OK, a));
    CALLS_CHECK(calls_target(&a[CALLS_TGT_ORDER_ID], &a[CALLS_TGT_ACCOUNT], a[CALLS_TGT_COID], 0, &t,
                             &held));
    rc = CALLS_GOOD;
    if (t.coid)
        found = self->api->get_order_by_coid(self->eng, (uint32_t)t.account, t.coid, &info);
    else
        found = self->api->get_order(self->eng, t.order_id, &info);
    if (!found || (!t.flags && info.account != (uint32_t)t.account)) {
        res = Py_NewRef(Py_None);
        goto out;
    }
    it[0] = calls_u64(info.order_id);
    it[1] = calls_item(self->names, info.instrument);
    it[2] = calls_item(self->sides, info.side);
    it[3] = calls_i64(info.price);
    it[4] = calls_i64(info.qty);
    it[5] = PyLong_FromUnsignedLong(info.account);
    it[6] = calls_coid_str(info.coid);
    it[7] = PyBool_FromLong(info.post_only);
    it[8] = calls_item(self->stps, info.stp);
    res = calls_new(self->order_state, 9, it);
out:
    return calls_leave(self, rc, res, &held, calls_names.py_order, args, nargs, kwnames);
}

static PyObject *calls_new_level(calls_core *self, const struct eng_level_info *info)
{
    PyObject *it[3] = {calls_i64(info->price), calls_i64(info->total_qty),
                       PyLong_FromUnsignedLong(info->order_count)};

    return calls_new(self->level, 3, it);
}

/*
 * The Level object of `info`, level `i` of side `s` of a book: the one
 * handed out last at that place if it holds the same values (a Level names
 * no instrument, so any book's will do).
 */
static PyObject *calls_level(calls_core *self, int s, int64_t i, const struct eng_level_info *info)
{
    PyObject *level;
    struct eng_level_info *was;

    if (i >= CALLS_LEVEL_CACHE)
        return calls_new_level(self, info);
    was = &self->cached_info[s][i];
    level = self->cached_level[s][i];
    if (level && was->price == info->price && was->total_qty == info->total_qty &&
        was->order_count == info->order_count)
        return Py_NewRef(level);
    level = calls_new_level(self, info);
    if (level) {
        *was = *info;
        Py_XSETREF(self->cached_level[s][i], Py_NewRef(level));
    }
    return level;
}

static void calls_forget_levels(calls_core *self)
{
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < CALLS_LEVEL_CACHE; i++)
            Py_CLEAR(self->cached_level[s][i]);
}

/* One side of a book: a list of Level objects, best first, at most `depth`. */
static PyObject *calls_side(calls_core *self, uint32_t inst, uint8_t side, long long depth)
{
    struct eng_level_info stack[CALLS_LEVEL_CACHE], *buf = stack;
    size_t cap = CALLS_LEVEL_CACHE;
    int64_t n;
    PyObject *list;

    /* Levels beyond the stack's: a buffer twice as large until the side fits. */
    for (;;) {
        size_t want = (unsigned long long)depth < cap ? (size_t)depth : cap;

        n = self->api->book_levels(self->eng, inst, side, buf, want);
        if (n < (int64_t)want || want == (size_t)depth)
            break;
        if (buf != stack)
            free(buf);
        cap *= 2;
        buf = malloc(cap * sizeof(*buf));
        if (!buf)
            return PyErr_NoMemory();
    }
    list = PyList_New(n > 0 ? n : 0);
    for (int64_t i = 0; list && i < n; i++) {
        PyObject *level = calls_level(self, side == ENG_BUY ? 0 : 1, i, &buf[i]);

        if (!level)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, level);
    }
    if (buf != stack)
        free(buf);
    return list;
}

PyDoc_STRVAR(calls_book_doc, "book($self, /, symbol, depth=10)\n--\n\n"
                             "The best `depth` levels of each side (BookView): lists of\n"
                             "Level(price, total_qty, order_count), best first.");

static PyObject *calls_book(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    PyObject *a[CALLS_BOOK__COUNT] = {0};
    struct calls_held held = {.n = 0};
    long long depth = 10;
    enum calls_check rc = CALLS_BAD;
    enum calls_hold hold;
    long inst;
    PyObject *it[3], *res = NULL;

    if ((hold = calls_enter(self)) != CALLS_HELD) /* closed or busy: untouched */
        return calls_refuse(self, hold);
    CALLS_REQUIRE(calls_bind(args, nargs, kwnames, calls_names.book_args, CALLS_BOOK__COUNT, 2, 0, a));
    CALLS_REQUIRE(a[CALLS_BOOK_SYMBOL] != NULL);
    CALLS_CHECK(calls_code(a[CALLS_BOOK_SYMBOL], self->symbols, 0, &inst));
    if (a[CALLS_BOOK_DEPTH])
        CALLS_CHECK(calls_to_int(&a[CALLS_BOOK_DEPTH], 0, INT64_MAX, &depth, &held));
    rc = CALLS_GOOD;
    it[1] = calls_side(self, (uint32_t)inst, ENG_BUY, depth);
    if (!it[1])
        goto out;
    it[2] = calls_side(self, (uint32_t)inst, ENG_SELL, depth);
    if (!it[2]) {
        Py_DECREF(it[1]);
        goto out;
    }
    it[0] = calls_item(self->names, (size_t)inst);
    res = calls_new(self->book_view, 3, it);
out:
    return calls_leave(self, rc, res, &held, calls_names.py_book, args, nargs, kwnames);
}

/* ---- attaching to an engine ---------------------------------------------- */

static int calls_in_use(void)
{
    PyErr_SetString(PyExc_RuntimeError, "the Engine is in use by a call");
    return -1;
}

/* 0, or -1 with RuntimeError while the engine is held (`busy`): a verb reads
   the engine and the tables until it ends, and user code it runs may not
   take them from it. */
static int calls_check_free(calls_core *self)
{
    return self->busy ? calls_in_use() : 0;
}

/* 0 if this thread holds the engine by _hold, else -1 with RuntimeError: a
   verb's hold, or another thread's, is not the caller's to end. */
static int calls_check_held_here(calls_core *self)
{
    if (self->in_verb || (self->busy && self->owner != PyThread_get_thread_ident()))
        return calls_in_use();
    if (!self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the Engine is not held by this thread");
        return -1;
    }
    return 0;
}

static int calls_table_ok(PyObject *o, enum calls_kind kind)
{
    switch (kind) {
    case CALLS_K_DICT:
        return PyDict_CheckExact(o);
    case CALLS_K_LIST:
        return PyList_CheckExact(o);
    case CALLS_K_TUPLE:
        return PyTuple_CheckExact(o);
    case CALLS_K_TUPLE_CLASS:
        return PyType_Check(o) && PyType_IsSubtype((PyTypeObject *)o, &PyTuple_Type);
    case CALLS_K_EXCEPTION:
        return PyExceptionClass_Check(o);
    }
    return 0;
}

static const char *const calls_kind_names[] = {"dict", "list", "tuple", "tuple subclass",
                                               "exception class"};

/* What the verbs take from the tables without checking: every code's entry
   is there, and holds what it must. */
static int calls_sizes_ok(PyObject *tables)
{
    PyObject *sides = PyDict_GetItemString(tables, "sides");
    PyObject *reasons = PyDict_GetItemString(tables, "cancel_reasons");
    PyObject *rejects = PyDict_GetItemString(tables, "rejects");
    PyObject *default_tif = PyDict_GetItemString(tables, "default_tif");

    PyObject *refusals = PyDict_GetItemString(tables, "refusals");

    if (PyTuple_GET_SIZE(sides) <= ENG_SELL || PyTuple_GET_SIZE(reasons) <= ENG_CANCEL_USER ||
        PyTuple_GET_SIZE(default_tif) != ENG_MARKET + 1 || PyTuple_GET_SIZE(refusals) != CALLS_HOLD__COUNT)
        return 0;
    for (Py_ssize_t i = 1; i < CALLS_HOLD__COUNT; i++) {
        PyObject *why = PyTuple_GET_ITEM(refusals, i);

        if (!(PyTuple_CheckExact(why) && PyTuple_GET_SIZE(why) == 2 &&
              PyExceptionClass_Check(PyTuple_GET_ITEM(why, 0))))
            return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(default_tif); i++)
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(default_tif, i)))
            return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rejects); i++) {
        PyObject *why = PyTuple_GET_ITEM(rejects, i);

        if (why != Py_None && !(PyTuple_CheckExact(why) && PyTuple_GET_SIZE(why) == 2))
            return 0;
    }
    return 1;
}

PyDoc_STRVAR(calls_attach_doc,
             "_attach($self, engine, api, /, **tables)\n--\n\n"
             "Serve the verbs for the C engine at address `engine` through the struct\n"
             "eng_api at address `api`. `tables`, all required, by name: symbols (dict)\n"
             "and names (list), the Engine's own symbol table; accepted, rejected,\n"
             "trade, cancelled, modified, level_update, state_changed, mass_cancelled,\n"
             "mmp_update, order_limits_set, level,\n"
             "book_view, order_state: the NamedTuple classes returned; no_memory: the\n"
             "exception raised when the engine is out of memory; sides, stps, states,\n"
             "cancel_reasons (tuples by C code), rejects (tuple by reject code of\n"
             "(reason, message) or None); side_code, tif_code, order_type_code,\n"
             "stp_code (dicts: str -> C code); default_tif (tuple by order type code\n"
             "of the tif code an order gets when given none, 0 for none); refusals (tuple\n"
             "by _hold() code of None or (exception class, message): what _holding raises).");

static PyObject *calls_attach(calls_core *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    void *eng, *api;
    PyObject *tables, *refusals;

    if (calls_check_free(self) < 0)
        return NULL;
    if (nargs != 2 || nkw != (Py_ssize_t)CALLS_N_TABLES) {
        PyErr_Format(PyExc_TypeError, "_attach takes (engine, api) and the %zu tables by name",
                     CALLS_N_TABLES);
        return NULL;
    }
    /* Addresses, trusted as they are: only Engine.__init__ calls this, with
       what eng_create() and eng_api() returned. */
    eng = PyLong_AsVoidPtr(args[0]);
    if (!eng && PyErr_Occurred())
        return NULL;
    api = PyLong_AsVoidPtr(args[1]);
    if (!api && PyErr_Occurred())
        return NULL;
    if (!eng || !api || ((const struct eng_api *)api)->size < sizeof(struct eng_api)) {
        PyErr_SetString(PyExc_ValueError, "_attach: not an engine and an eng_api");
        return NULL;
    }
    tables = PyDict_New();
    if (!tables)
        return NULL;
    for (Py_ssize_t k = 0; k < nkw; k++)
        if (PyDict_SetItem(tables, PyTuple_GET_ITEM(kwnames, k), args[nargs + k]) < 0)
            goto fail;
    for (size_t i = 0; i < CALLS_N_TABLES; i++) {
        const struct calls_table *row = &calls_tables[i];
        PyObject *o = PyDict_GetItemString(tables, row->name);

        if (!o || !calls_table_ok(o, row->kind)) {
            PyErr_Format(PyExc_ValueError, "_attach: table %s is missing or not a %s", row->name,
                         calls_kind_names[row->kind]);
            goto fail;
        }
    }
    if (!calls_sizes_ok(tables)) {
        PyErr_SetString(PyExc_ValueError, "_attach: a code table is short or holds the wrong things");
        goto fail;
    }
    refusals = self->refusals;
    for (size_t i = 0; i < CALLS_N_TABLES; i++)
        *(PyObject **)((char *)self + calls_tables[i].offset) =
            PyDict_GetItemString(tables, calls_tables[i].name);
    Py_INCREF(self->refusals); /* the one table held apart (see calls_core) */
    Py_XDECREF(refusals);
    Py_XSETREF(self->tables, tables);
    calls_forget_levels(self);
    self->api = api;
    self->eng = eng;
    self->caller_ids = self->api->caller_order_ids(self->eng) != 0;
    Py_RETURN_NONE;
fail:
    Py_DECREF(tables);
    return NULL;
}

PyDoc_STRVAR(calls_detach_doc, "_detach($self, /)\n--\n\n"
                               "Stop using the C engine (before it is freed); the caller holds it (_holding).");

static PyObject *calls_detach(calls_core *self, PyObject *Py_UNUSED(ignored))
{
    if (calls_check_held_here(self) < 0)
        return NULL;
    self->eng = NULL;
    calls_forget_levels(self);
    Py_RETURN_NONE;
}


PyDoc_STRVAR(calls_hold_doc,
             "_hold($self, /)\n--\n\n"
             "Hold the engine for a Python method, as a verb does, if it is attached\n"
             "and free: 0, held (end it with _release); 1, closed (not attached);\n"
             "2, held by a call in progress on this thread; 3, held by another thread.\n"
             "The check and the hold run with no thread switch between them.");

static PyObject *calls_hold(calls_core *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(calls_take(self));
}

PyDoc_STRVAR(calls_release_doc, "_release($self, /)\n--\n\n"
                                "End this thread's hold of the engine (_hold).");

static PyObject *calls_release_hold(calls_core *self, PyObject *Py_UNUSED(ignored))
{
    if (calls_check_held_here(self) < 0)
        return NULL;
    self->busy = 0;
    Py_RETURN_NONE;
}

/*
 * _holding(value): the hold as a context manager, for the Python methods.
 * `with core._holding(v) as x:` holds the engine in __enter__ (x is v), or
 * raises the refusal of the hold code (the `refusals` table), and ends the
 * hold in __exit__. Written in C for the moment between the two: after a
 * C __enter__ returns, the interpreter checks for signals nowhere before the
 * with-block's cleanup is armed, where a KeyboardInterrupt raised as a
 * Python-level _hold() returned left the engine held for good.
 */
typedef struct {
    PyObject_HEAD
    calls_core *core;
    PyObject *value;
    char held;
} calls_holding;

static void holding_dealloc(calls_holding *h)
{
    Py_XDECREF(h->core);
    Py_XDECREF(h->value);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *holding_enter(calls_holding *h, PyObject *Py_UNUSED(ignored))
{
    enum calls_hold r;

    if (h->held) {
        PyErr_SetString(PyExc_RuntimeError, "a hold is entered once");
        return NULL;
    }
    r = calls_take(h->core);
    if (r == CALLS_HELD) {
        h->held = 1;
        return Py_NewRef(h->value);
    }
    return calls_refuse(h->core, r);
}

static PyObject *holding_exit(calls_holding *h, PyObject *Py_UNUSED(args))
{
    if (h->held) {
        if (calls_check_held_here(h->core) < 0) /* another thread's exit: the hold stays the holder's */
            return NULL;
        h->held = 0;
        h->core->busy = 0;
    }
    Py_RETURN_FALSE;
}

static PyMethodDef holding_methods[] = {
    {"__enter__", (PyCFunction)holding_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)holding_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject calls_holding_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._calls._Holding",
    .tp_basicsize = sizeof(calls_holding),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("The engine held for a with-block (Core._holding)."),
    .tp_dealloc = (destructor)holding_dealloc,
    .tp_methods = holding_methods,
};

PyDoc_STRVAR(calls_holding_doc,
             "_holding($self, value, /)\n--\n\n"
             "A context manager that holds the engine for its block and gives `value`,\n"
             "or raises why it cannot (closed, or in use here or by another thread).");

static PyObject *calls_holding_new(calls_core *self, PyObject *value)
{
    calls_holding *h = PyObject_New(calls_holding, &calls_holding_type);

    if (!h)
        return NULL;
    h->core = (calls_core *)Py_NewRef((PyObject *)self);
    h->value = Py_NewRef(value);
    h->held = 0;
    return (PyObject *)h;
}

static int calls_traverse(calls_core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tables);
    Py_VISIT(self->refusals);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < CALLS_LEVEL_CACHE; i++)
            Py_VISIT(self->cached_level[s][i]);
    return 0;
}

static int calls_clear(calls_core *self)
{
    self->eng = NULL;
    Py_CLEAR(self->tables);
    calls_forget_levels(self);
    return 0;
}

static void calls_dealloc(calls_core *self)
{
    PyObject_GC_UnTrack(self);
    calls_clear(self);
    Py_CLEAR(self->refusals);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define CALLS_VERB(name) \
    {#name, (PyCFunction)(void (*)(void))calls_##name, METH_FASTCALL | METH_KEYWORDS, calls_##name##_doc}

static PyMethodDef calls_methods[] = {
    CALLS_VERB(submit),
    CALLS_VERB(cancel),
    CALLS_VERB(modify),
    CALLS_VERB(order),
    CALLS_VERB(book),
    {"_attach", (PyCFunction)(void (*)(void))calls_attach, METH_FASTCALL | METH_KEYWORDS,
     calls_attach_doc},
    {"_detach", (PyCFunction)calls_detach, METH_NOARGS, calls_detach_doc},
    {"_hold", (PyCFunction)calls_hold, METH_NOARGS, calls_hold_doc},
    {"_release", (PyCFunction)calls_release_hold, METH_NOARGS, calls_release_doc},
    {"_holding", (PyCFunction)calls_holding_new, METH_O, calls_holding_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *calls_get_busy(calls_core *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->busy);
}

static PyGetSetDef calls_getset[] = {
    {"_busy", (getter)calls_get_busy, NULL, "a call holds the engine (a verb, or a method by _holding or _hold)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject calls_core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyengine._calls.Core",
    .tp_basicsize = sizeof(calls_core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("The C half of pyengine.Engine: submit, cancel, modify, order, book."),
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)calls_dealloc,
    .tp_traverse = (traverseproc)calls_traverse,
    .tp_clear = (inquiry)calls_clear,
    .tp_methods = calls_methods,
    .tp_getset = calls_getset,
};

static int calls_intern(PyObject **out, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!out[i] && !(out[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    return 0;
}

static int calls_exec(PyObject *module)
{
    static const char *const methods[] = {"_submit", "_cancel", "_modify", "_order", "_book"};
    PyObject *py[5] = {0};

    if (calls_intern(calls_names.submit_args, calls_submit_names, CALLS_SUB__COUNT) < 0 ||
        calls_intern(calls_names.target_args, calls_target_names, CALLS_TGT__COUNT) < 0 ||
        calls_intern(calls_names.modify_args, calls_modify_names, CALLS_MOD__COUNT) < 0 ||
        calls_intern(calls_names.book_args, calls_book_names, CALLS_BOOK__COUNT) < 0 ||
        calls_intern(py, methods, 5) < 0)
        return -1;
    calls_names.py_submit = py[0];
    calls_names.py_cancel = py[1];
    calls_names.py_modify = py[2];
    calls_names.py_order = py[3];
    calls_names.py_book = py[4];
    if (PyType_Ready(&calls_holding_type) < 0 || PyType_Ready(&calls_core_type) < 0)
        return -1;
    /* What Core._hold() returns: the Python side reads these names. */
    if (PyModule_AddIntConstant(module, "HELD", CALLS_HELD) < 0 ||
        PyModule_AddIntConstant(module, "CLOSED", CALLS_CLOSED) < 0 ||
        PyModule_AddIntConstant(module, "IN_USE_HERE", CALLS_IN_USE_HERE) < 0 ||
        PyModule_AddIntConstant(module, "IN_USE_ELSEWHERE", CALLS_IN_USE_ELSEWHERE) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Core", (PyObject *)&calls_core_type);
}

static PyModuleDef_Slot calls_slots[] = {
    {Py_mod_exec, calls_exec},
    {0, NULL},
};

static struct PyModuleDef calls_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyengine._calls",
    .m_doc = "The per-call verbs of pyengine.Engine in C (see csrc/binding/calls.c).",
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = calls_slots,
};

PyMODINIT_FUNC PyInit__calls(void)
{
    return PyModuleDef_Init(&calls_module);
}
