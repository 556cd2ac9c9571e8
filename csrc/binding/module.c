/*
 * module.c - pyengine._server: the interned names and the types (see server.h).
 */
#include "server.h"

#include <time.h>

struct srv_names srv_names;

PyObject *srv_method(PyObject *obj, const char *name)
{
    PyObject *m = PyObject_GetAttrString(obj, name);

    if (m && !PyCallable_Check(m)) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not callable", obj, name);
        Py_CLEAR(m);
    }
    return m;
}

PyObject *srv_take_error(void)
{
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value ? value : Py_NewRef(Py_None);
}

int srv_runner_addresses(PyObject *runner, PyObject *api, struct runner **r, const struct runner_api **a)
{
    unsigned long long rv = PyLong_AsUnsignedLongLong(runner), av;

    if (rv == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    av = PyLong_AsUnsignedLongLong(api);
    if (av == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (!rv || !av || ((const struct runner_api *)(uintptr_t)av)->size < sizeof(struct runner_api)) {
        PyErr_SetString(PyExc_ValueError, "attach: not a runner and a runner_api");
        return -1;
    }
    *r = (struct runner *)(uintptr_t)rv;
    *a = (const struct runner_api *)(uintptr_t)av;
    return 0;
}

int64_t srv_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

PyObject *srv_untracked(PyObject *tuple)
{
    if (!tuple)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (PyObject_IS_GC(PyTuple_GET_ITEM(tuple, i)))
            return tuple;
    PyObject_GC_UnTrack(tuple);
    return tuple;
}

static int module_exec(PyObject *module)
{
    static const char *const names[] = {
        "type",   "req_id",    "symbol", "side",     "qty",       "price",  "order_type", "tif", "post_only",
        "stp",    "client_order_id", "order_id", "new_order", "cancel", "modify", "mass_cancel",
    };
    PyObject **slots[] = {
        &srv_names.type,   &srv_names.req_id,   &srv_names.symbol,    &srv_names.side,   &srv_names.qty,
        &srv_names.price,  &srv_names.order_type, &srv_names.tif,     &srv_names.post_only, &srv_names.stp,
        &srv_names.coid,   &srv_names.order_id, &srv_names.new_order, &srv_names.cancel, &srv_names.modify,
        &srv_names.mass_cancel,
    };
    struct {
        const char *name;
        PyTypeObject *type;
    } types[] = {
        {"Link", &srv_link_type},     {"Ledger", &srv_ledger_type}, {"CommandBuffer", &srv_commands_type},
        {"Intake", &srv_intake_type}, {"Router", &srv_router_type},
        {"OrderStatus", &srv_status_type}, {"OrderRecord", &srv_status_rec_type},
        {"LatencyTrace", &srv_trace_type}, {"Inbox", &srv_inbox_type}, {"Poller", &srv_poller_type},
    };

    _Static_assert(sizeof(names) / sizeof(names[0]) == sizeof(slots) / sizeof(slots[0]), "one slot per name");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!*slots[i] && !(*slots[i] = PyUnicode_InternFromString(names[i])))
            return -1;
    if (srv_tables_init(module) < 0 || PyModule_AddIntConstant(module, "OUT_WAIT", SRV_OUT_WAIT) < 0 ||
        PyModule_AddIntConstant(module, "OUT_SLOW", SRV_OUT_SLOW) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (PyType_Ready(types[i].type) < 0 || PyModule_AddObjectRef(module, types[i].name, (PyObject *)types[i].type) < 0)
            return -1;
    return 0;
}

static PyMethodDef module_methods[] = {
    {"read_order", (PyCFunction)(void (*)(void))srv_read_order, METH_FASTCALL, srv_read_order_doc},
    {"stage_times", (PyCFunction)(void (*)(void))srv_stage_times, METH_FASTCALL, srv_stage_times_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef server_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyengine._server",
    .m_doc = "The server's per-order path in C: Link, Ledger, CommandBuffer, Inbox, Intake, Router, OrderStatus, LatencyTrace, Poller (see csrc/binding/server.h).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__server(void)
{
    return PyModuleDef_Init(&server_module);
}
