/*
 * form.c - the form of a per-order request (new_order, cancel, modify): its
 * fields read from the decoded message and checked, with the protocol's
 * error codes and messages (docs/protocol.md). The one place these rules
 * live: the Intake reads every per-order request through here, and
 * protocol.parse (Python) through read_order().
 *
 * The fields are checked in the order protocol.py always read them, so the
 * first fault found is the one reported. A field given as null is a field
 * left out.
 */
#include "server.h"

#include <string.h>

struct srv_tables srv_tables;
PyObject *srv_form_error_type;

/* ---- errors ------------------------------------------------------------ */

static int form_fail(struct srv_form_error *e, const char *code, PyObject *message)
{
    if (!message)
        return -1;
    e->code = code;
    e->message = message;
    return 0;
}

/* How protocol.py names a JSON value's type in a message. */
static const char *form_json_type(PyObject *v)
{
    if (PyUnicode_CheckExact(v))
        return "a string";
    if (PyBool_Check(v))
        return "a boolean";
    if (PyLong_CheckExact(v))
        return "an integer";
    if (PyFloat_CheckExact(v))
        return "a number";
    if (PyList_CheckExact(v))
        return "an array";
    if (PyDict_CheckExact(v))
        return "an object";
    return "null";
}

/* A rejected string in a message: repr() of its start (it may be huge). */
static PyObject *form_short_text(PyObject *s)
{
    PyObject *head = PyUnicode_Substring(s, 0, 40);
    PyObject *r = head ? PyObject_Repr(head) : NULL;

    Py_XDECREF(head);
    if (r && PyUnicode_GET_LENGTH(s) > 40)
        Py_SETREF(r, PyUnicode_FromFormat("%U...", r));
    return r;
}

/* A client's value in a message: a string shortened, anything else by its JSON type. */
static PyObject *form_shown(PyObject *v)
{
    return PyUnicode_CheckExact(v) ? form_short_text(v) : PyUnicode_FromString(form_json_type(v));
}

/* ---- fields ------------------------------------------------------------------ */

/* The interned key of a field, by name (srv_names holds them all). */
static PyObject *form_key(const char *key)
{
    static const struct {
        const char *name;
        PyObject **obj;
    } keys[] = {
        {"symbol", &srv_names.symbol},   {"side", &srv_names.side},         {"qty", &srv_names.qty},
        {"price", &srv_names.price},     {"order_type", &srv_names.order_type}, {"tif", &srv_names.tif},
        {"post_only", &srv_names.post_only}, {"stp", &srv_names.stp},       {"client_order_id", &srv_names.coid},
        {"order_id", &srv_names.order_id},
    };

    /* The callers' literals are this file's, one copy each: found by address
       first, so a look-up runs no strcmp (a few per field of every order). */
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (keys[i].name == key)
            return *keys[i].obj;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(keys[i].name, key) == 0)
            return *keys[i].obj;
    return NULL;
}

/* msg[key], borrowed; NULL for a missing key or null; *err on error. */
static PyObject *form_get(PyObject *msg, const char *key, int *err)
{
    PyObject *k = form_key(key), *v;

    if (!k) {
        PyErr_Format(PyExc_SystemError, "form.c: no interned key %s", key);
        *err = 1;
        return NULL;
    }
    v = PyDict_GetItemWithError(msg, k);
    if (!v && PyErr_Occurred())
        *err = 1;
    return v == Py_None ? NULL : v;
}

/* An integer field in [lo, hi] into *out; *present whether given. 1 ok, 0 fault, -1 error. */
static int form_int(PyObject *msg, const char *key, long long lo, long long hi, int required, long long *out,
                    int *present, struct srv_form_error *e)
{
    int err = 0, overflow;
    PyObject *v = form_get(msg, key, &err);
    long long x;

    *present = v != NULL;
    if (err)
        return -1;
    if (!v) {
        if (!required)
            return 1;
        return form_fail(e, "missing_field", PyUnicode_FromFormat("%s is required", key));
    }
    /* The decoder gives an integer literal past 64 bits as a float this large. */
    if (PyFloat_CheckExact(v) && (PyFloat_AS_DOUBLE(v) >= 0x1p63 || PyFloat_AS_DOUBLE(v) <= -0x1p63))
        return form_fail(e, "bad_field", PyUnicode_FromFormat("%s is out of range [%lld, %lld]", key, lo, hi));
    if (!PyLong_CheckExact(v))
        return form_fail(e, "bad_field", PyUnicode_FromFormat("%s must be an integer, not %s", key, form_json_type(v)));
    x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow || x < lo || x > hi)
        return form_fail(e, "bad_field", PyUnicode_FromFormat("%s=%S is out of range [%lld, %lld]", key, v, lo, hi));
    *out = x;
    return 1;
}

/* One of a table's strings (its code into *code, the string into *name, a
 * new reference), or the default's when missing (dflt NULL: required). */
static int form_choice(PyObject *msg, const char *key, PyObject *table, PyObject *choices, PyObject *dflt, long *code,
                       PyObject **name, struct srv_form_error *e)
{
    int err = 0;
    PyObject *v = form_get(msg, key, &err), *c;

    if (err)
        return -1;
    if (!v)
        v = dflt;
    if (!v)
        return form_fail(e, "missing_field", PyUnicode_FromFormat("%s is required", key));
    c = PyUnicode_CheckExact(v) ? PyDict_GetItemWithError(table, v) : NULL;
    if (!c) {
        PyObject *shown;

        if (PyErr_Occurred())
            return -1;
        shown = form_shown(v);
        if (!shown)
            return -1;
        err = form_fail(e, "bad_field", PyUnicode_FromFormat("%s must be one of %U, not %U", key, choices, shown));
        Py_DECREF(shown);
        return err;
    }
    *code = PyLong_AsLong(c);
    *name = Py_NewRef(v);
    return *code == -1 && PyErr_Occurred() ? -1 : 1;
}

static int form_bool(PyObject *msg, const char *key, int dflt, int *out, struct srv_form_error *e)
{
    int err = 0;
    PyObject *v = form_get(msg, key, &err);

    if (err)
        return -1;
    if (!v) {
        *out = dflt;
        return 1;
    }
    if (!PyBool_Check(v))
        return form_fail(e, "bad_field",
                         PyUnicode_FromFormat("%s must be true or false, not %s", key, form_json_type(v)));
    *out = v == Py_True;
    return 1;
}

/* A client order id: 1 to ENG_COID_LEN printable ASCII characters, into
 * r->cmd.coid and r->coid (a new reference; NULL for none). */
static int form_coid(PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    int err = 0;
    PyObject *v = form_get(msg, "client_order_id", &err);
    const char *p;
    Py_ssize_t n;
    int ok;

    if (err)
        return -1;
    r->coid = Py_XNewRef(v);
    memset(r->cmd.coid, 0, sizeof(r->cmd.coid));
    if (!v)
        return 1;
    if (!PyUnicode_Check(v))
        return form_fail(e, "bad_field", PyUnicode_FromFormat("client_order_id must be a string, not %s",
                                                              form_json_type(v)));
    n = PyUnicode_GET_LENGTH(v);
    ok = PyUnicode_IS_ASCII(v) && n >= 1 && n <= ENG_COID_LEN;
    p = ok ? (const char *)PyUnicode_1BYTE_DATA(v) : NULL;
    for (Py_ssize_t i = 0; ok && i < n; i++)
        ok = p[i] >= 0x20 && p[i] < 0x7f;
    if (!ok) {
        PyObject *shown = form_short_text(v);

        if (!shown)
            return -1;
        err = form_fail(e, "bad_field",
                        PyUnicode_FromFormat("client_order_id must be 1 to %d printable ASCII characters, not %U",
                                             ENG_COID_LEN, shown));
        Py_DECREF(shown);
        return err;
    }
    memcpy(r->cmd.coid, p, (size_t)n);
    return 1;
}

/* ---- requests ------------------------------------------------------------ */

#define FORM_TRY(call)          \
    do {                        \
        int rc_ = (call);       \
        if (rc_ <= 0)           \
            return rc_;         \
    } while (0)

/* The order's shape: what makes it an order at all, by the core's rule
 * (csrc/shape.c), in its words. */
static int form_shape(struct srv_order *r, int post_only, struct srv_form_error *e)
{
    int shape = eng_order_shape(r->cmd.order_type, r->cmd.tif, r->has_price,
                                post_only ? ENG_CMD_F_POST_ONLY : 0);

    if (shape == ENG_SHAPE_OK)
        return 1;
    return form_fail(e, "bad_field", PyUnicode_FromString(eng_shape_message(shape)));
}

int srv_form_new_order(PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    long type, tif, side, stp;
    long long price = 0, qty;
    int post_only, qty_given;
    int err = 0;

    FORM_TRY(form_choice(msg, "order_type", srv_tables.order_types, srv_tables.order_type_choices,
                         srv_tables.limit, &type, &r->order_type, e));
    FORM_TRY(form_choice(msg, "tif", srv_tables.tifs, srv_tables.tif_choices,
                         type == ENG_MARKET ? srv_tables.ioc : srv_tables.gtc, &tif, &r->tif, e));
    FORM_TRY(form_bool(msg, "post_only", 0, &post_only, e));
    FORM_TRY(form_int(msg, "price", INT64_MIN, INT64_MAX, 0, &price, &r->has_price, e));
    r->cmd.order_type = (uint8_t)type;
    r->cmd.tif = (uint8_t)tif;
    FORM_TRY(form_shape(r, post_only, e));
    r->symbol = Py_XNewRef(form_get(msg, "symbol", &err));
    if (err)
        return -1;
    if (!r->symbol)
        return form_fail(e, "missing_field", PyUnicode_FromString("symbol is required"));
    if (!PyUnicode_CheckExact(r->symbol))
        return form_fail(e, "bad_field",
                         PyUnicode_FromFormat("symbol must be a string, not %s", form_json_type(r->symbol)));
    FORM_TRY(form_choice(msg, "side", srv_tables.sides, srv_tables.side_choices, NULL, &side, &r->side, e));
    FORM_TRY(form_int(msg, "qty", INT64_MIN, INT64_MAX, 1, &qty, &qty_given, e));
    FORM_TRY(form_choice(msg, "stp", srv_tables.stps, srv_tables.stp_choices, srv_tables.stp_none, &stp, &r->stp,
                         e));
    FORM_TRY(form_coid(msg, r, e));
    r->cmd.type = ENG_CMD_NEW;
    r->cmd.side = (uint8_t)side;
    r->cmd.stp = (uint8_t)stp;
    r->cmd.flags = post_only ? ENG_CMD_F_POST_ONLY : 0;
    r->cmd.price = price;
    r->cmd.qty = qty;
    r->kind = srv_names.new_order;
    return 1;
}

/* The order a cancel or modify names: exactly one of order_id (> 0) and
 * client_order_id. */
static int form_target(PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    long long order_id = 0;
    int given;

    FORM_TRY(form_int(msg, "order_id", 1, INT64_MAX, 0, &order_id, &given, e));
    FORM_TRY(form_coid(msg, r, e));
    if (!given && !r->coid) /* the same answers as order_status's (protocol.py) */
        return form_fail(e, "missing_field", PyUnicode_FromString("order_id or client_order_id is required"));
    if (given && r->coid)
        return form_fail(e, "bad_field", PyUnicode_FromString("give one of order_id and client_order_id, not both"));
    r->cmd.order_id = (uint64_t)order_id;
    return 1;
}

int srv_form_cancel(PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    FORM_TRY(form_target(msg, r, e));
    r->cmd.type = ENG_CMD_CANCEL;
    r->kind = srv_names.cancel;
    return 1;
}

int srv_form_modify(PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    long long qty = 0, price = 0;
    int qty_given, price_given;

    FORM_TRY(form_target(msg, r, e));
    FORM_TRY(form_int(msg, "qty", INT64_MIN, INT64_MAX, 0, &qty, &qty_given, e));
    FORM_TRY(form_int(msg, "price", INT64_MIN, INT64_MAX, 0, &price, &price_given, e));
    if (!qty_given && !price_given)
        return form_fail(e, "missing_field", PyUnicode_FromString("modify needs qty, price or both"));
    r->cmd.type = ENG_CMD_MODIFY;
    r->cmd.qty = qty;
    r->cmd.price = price;
    r->keep_qty = !qty_given;
    r->keep_price = !price_given;
    r->has_price = price_given;
    r->kind = srv_names.modify;
    return 1;
}

int srv_form_read(PyObject *kind, PyObject *msg, struct srv_order *r, struct srv_form_error *e)
{
    memset(r, 0, sizeof(*r));
    if (kind == srv_names.new_order || PyUnicode_Compare(kind, srv_names.new_order) == 0)
        return srv_form_new_order(msg, r, e);
    if (PyUnicode_Compare(kind, srv_names.cancel) == 0)
        return srv_form_cancel(msg, r, e);
    if (PyUnicode_Compare(kind, srv_names.modify) == 0)
        return srv_form_modify(msg, r, e);
    return PyErr_Occurred() ? -1 : 2; /* not a per-order request */
}

void srv_form_release(struct srv_order *r)
{
    Py_CLEAR(r->coid);
    Py_CLEAR(r->symbol);
    Py_CLEAR(r->side);
    Py_CLEAR(r->order_type);
    Py_CLEAR(r->tif);
    Py_CLEAR(r->stp);
}

/* ---- read_order(), for protocol.parse -------------------------------------------- */

static PyObject *form_opt_ll(int given, long long v)
{
    return given ? PyLong_FromLongLong(v) : Py_NewRef(Py_None);
}

const char srv_read_order_doc[] =
             "read_order(kind, message, /)\n--\n\n"
             "The fields of a per-order request (kind: 'new_order', 'cancel' or 'modify'; message: the\n"
             "decoded dict), as protocol's NewOrder, Cancel or Modify hold them after req_id; FormError(code,\n"
             "message) if it is not well-formed.";

PyObject *srv_read_order(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    struct srv_order r;
    struct srv_form_error e = {NULL, NULL};
    PyObject *out = NULL;
    int rc;

    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_order takes (kind, message: dict)");
        return NULL;
    }
    rc = srv_form_read(args[0], args[1], &r, &e);
    if (rc == 2) {
        PyErr_Format(PyExc_ValueError, "%R is not a per-order request", args[0]);
    } else if (rc == 0) {
        PyObject *exc = Py_BuildValue("(sN)", e.code, e.message);

        if (exc)
            PyErr_SetObject(srv_form_error_type, exc);
        Py_XDECREF(exc);
    } else if (rc == 1 && r.cmd.type == ENG_CMD_NEW) {
        out = Py_BuildValue("(OOLNOOOOO)", r.symbol, r.side, (long long)r.cmd.qty,
                            form_opt_ll(r.has_price, r.cmd.price), r.order_type, r.tif,
                            (r.cmd.flags & ENG_CMD_F_POST_ONLY) ? Py_True : Py_False, r.stp,
                            r.coid ? r.coid : Py_None);
    } else if (rc == 1 && r.cmd.type == ENG_CMD_CANCEL) {
        out = Py_BuildValue("(NO)", form_opt_ll(r.cmd.order_id != 0, (long long)r.cmd.order_id),
                            r.coid ? r.coid : Py_None);
    } else if (rc == 1) {
        out = Py_BuildValue("(NONN)", form_opt_ll(r.cmd.order_id != 0, (long long)r.cmd.order_id),
                            r.coid ? r.coid : Py_None, form_opt_ll(!r.keep_qty, r.cmd.qty),
                            form_opt_ll(!r.keep_price, r.cmd.price));
    }
    srv_form_release(&r);
    return out;
}

/* ---- the tables --------------------------------------------------------------- */

/* repr(sorted(table)): the choices as a message lists them. */
static PyObject *form_choices(PyObject *table)
{
    PyObject *keys = PyDict_Keys(table), *r = NULL;

    if (keys && PyList_Sort(keys) == 0)
        r = PyObject_Repr(keys);
    Py_XDECREF(keys);
    return r;
}

static PyObject *form_table(const char *const *names, const long *codes, size_t n)
{
    PyObject *t = PyDict_New();

    for (size_t i = 0; t && i < n; i++) {
        PyObject *c = PyLong_FromLong(codes[i]);

        if (!c || PyDict_SetItemString(t, names[i], c) < 0)
            Py_CLEAR(t);
        Py_XDECREF(c);
    }
    return t;
}

#define FORM_TABLE(names, codes) form_table((names), (codes), sizeof(names) / sizeof((names)[0]))

int srv_tables_init(PyObject *module)
{
    /* The wire's names for the engine's codes (pyengine.h). */
    static const char *const sides[] = {"buy", "sell"};
    static const long side_codes[] = {ENG_BUY, ENG_SELL};
    static const char *const types[] = {"limit", "market"};
    static const long type_codes[] = {ENG_LIMIT, ENG_MARKET};
    static const char *const tifs[] = {"gtc", "ioc", "fok"};
    static const long tif_codes[] = {ENG_GTC, ENG_IOC, ENG_FOK};
    static const char *const stps[] = {"none", "cancel_newest", "cancel_oldest", "cancel_both"};
    static const long stp_codes[] = {ENG_STP_NONE, ENG_STP_CANCEL_NEWEST, ENG_STP_CANCEL_OLDEST,
                                     ENG_STP_CANCEL_BOTH};

    _Static_assert(sizeof(sides) / sizeof(sides[0]) == sizeof(side_codes) / sizeof(side_codes[0]), "sides");
    _Static_assert(sizeof(tifs) / sizeof(tifs[0]) == sizeof(tif_codes) / sizeof(tif_codes[0]), "tifs");
    _Static_assert(sizeof(stps) / sizeof(stps[0]) == sizeof(stp_codes) / sizeof(stp_codes[0]), "stps");
    if (!srv_tables.sides) {
        if (!(srv_tables.sides = FORM_TABLE(sides, side_codes)) ||
            !(srv_tables.order_types = FORM_TABLE(types, type_codes)) ||
            !(srv_tables.tifs = FORM_TABLE(tifs, tif_codes)) || !(srv_tables.stps = FORM_TABLE(stps, stp_codes)) ||
            !(srv_tables.side_choices = form_choices(srv_tables.sides)) ||
            !(srv_tables.order_type_choices = form_choices(srv_tables.order_types)) ||
            !(srv_tables.tif_choices = form_choices(srv_tables.tifs)) ||
            !(srv_tables.stp_choices = form_choices(srv_tables.stps)) ||
            !(srv_tables.limit = PyUnicode_InternFromString("limit")) ||
            !(srv_tables.gtc = PyUnicode_InternFromString("gtc")) ||
            !(srv_tables.ioc = PyUnicode_InternFromString("ioc")) ||
            !(srv_tables.stp_none = PyUnicode_InternFromString("none")))
            return -1;
        srv_form_error_type = PyErr_NewExceptionWithDoc(
            "pyengine._server.FormError", "A per-order request that is not well-formed: args (code, message).",
            PyExc_ValueError, NULL);
        if (!srv_form_error_type)
            return -1;
    }
    if (PyModule_AddObjectRef(module, "SIDE_CODES", srv_tables.sides) < 0 ||
        PyModule_AddObjectRef(module, "ORDER_TYPE_CODES", srv_tables.order_types) < 0 ||
        PyModule_AddObjectRef(module, "TIF_CODES", srv_tables.tifs) < 0 ||
        PyModule_AddObjectRef(module, "STP_CODES", srv_tables.stps) < 0 ||
        PyModule_AddObjectRef(module, "FormError", srv_form_error_type) < 0)
        return -1;
    return 0;
}
