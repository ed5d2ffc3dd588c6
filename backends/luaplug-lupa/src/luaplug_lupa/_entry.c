/* luaplug-lupa: the Python host's call path, as one C-level callable per instance.
 *
 * `bind(target, cell_address, owner, instance, mode)` returns an Entry that
 * luaplug's Instance uses as its `dispatch` (mode 0) or `call` (mode 1).
 * `target` is the prelude's bound dispatcher of one instance, a lupa function
 * taking (fn_id[, args, out[, arena]]) and returning 0 or a non-zero code
 * (with the Lua error text for code 1).
 *
 * The Entry adds no Python frame to a call. It
 *   1. refuses a same-thread re-entry of the VM: lupa cannot run a call while
 *      the same state is running one on this thread (see engine.py), so when
 *      the VM's cell says it is running here the code is ReentrantCall;
 *   2. passes plain non-negative int arguments (and a CallArena's address) straight to lupa;
 *   3. hands everything else to the Instance's Python methods, so the
 *      semantics have one definition:
 *        unusual arguments:    Instance._py_dispatch / _py_call(*args, **kwargs)
 *        a non-zero result:    Instance._failed(result, fn_id, mode)
 *        an engine exception:  Instance._translate(exc), raised from exc
 *      (OverflowError, ValueError and TypeError from argument conversion
 *      propagate unchanged, as on the Python path).
 *
 * Invariants:
 * - `cell` points into the EngineState's cffi `double[4]`: [0] id of the
 *   thread running Lua in the VM, [1] nesting depth. The Entry keeps `owner`
 *   (that EngineState) alive, so the pointer is valid as long as the Entry.
 *   [0] is written by Lua as tonumber(pthread_self()), compared here after the
 *   same uint64 -> double conversion.
 * - The step-1 check runs with the GIL held; a thread that finds depth 0 or
 *   another thread's id cannot be the one running Lua in the VM, so a stale
 *   read is harmless (lupa's own lock serializes threads).
 * - The Instance holds the Entry in its __dict__ and the Entry holds the
 *   Instance: Entry is a GC type so the cycle is collected.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stdint.h>

#define REENTRANT_CALL 9

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *target;
    volatile const double *cell;
    PyObject *owner;
    PyObject *inst;
    int mode; /* 0: dispatch -> int, 1: call -> None or raise */
} Entry;

/* Whether an exact int is 0 (no exception is possible for an exact int). */
static int is_zero(PyObject *o) {
    int overflow;
    return PyLong_AsLongAndOverflow(o, &overflow) == 0 && !overflow;
}

/* Whether an exact int is >= 0 (the ABI's fn_id and addresses are unsigned: a negative
 * one goes to the Python path, which refuses it with OverflowError as cffi does). */
static int is_nonneg(PyObject *o) {
    int overflow;
    long v = PyLong_AsLongAndOverflow(o, &overflow);
    return overflow > 0 || (overflow == 0 && v >= 0);
}

static PyObject *str_address, *str_failed, *str_translate, *str_py[2];

static PyObject *entry_instance(Entry *e) {
    if (e->inst == NULL) { /* cleared by the GC while the cycle was being broken */
        PyErr_SetString(PyExc_ReferenceError, "the luaplug Instance behind this call is gone");
        return NULL;
    }
    return e->inst;
}

static PyObject *entry_slow(Entry *e, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PyObject *inst = entry_instance(e);
    if (inst == NULL) return NULL;
    PyObject *meth = PyObject_GetAttr(inst, str_py[e->mode]);
    if (meth == NULL) return NULL;
    PyObject *res = PyObject_Vectorcall(meth, args, nargsf, kwnames);
    Py_DECREF(meth);
    return res;
}

static PyObject *entry_failed(Entry *e, PyObject *result, PyObject *fn_id) {
    PyObject *inst = entry_instance(e);
    if (inst == NULL) return NULL;
    return PyObject_CallMethodObjArgs(inst, str_failed, result, fn_id, e->mode ? Py_True : Py_False, NULL);
}

/* The fn_id argument, positional or by keyword (borrowed), or NULL when it is missing. */
static PyObject *entry_fn_id(PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    if (n >= 1) return args[0];
    Py_ssize_t nk = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++) {
        int eq = PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "fn_id");
        if (eq == 0) return args[n + i];
    }
    return NULL;
}

/* lupa raised: argument errors propagate, anything else becomes luaplug's. */
static PyObject *entry_raise(Entry *e) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL || PyErr_GivenExceptionMatches(type, PyExc_OverflowError) ||
        PyErr_GivenExceptionMatches(type, PyExc_ValueError) || PyErr_GivenExceptionMatches(type, PyExc_TypeError)) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *inst = entry_instance(e);
    PyObject *mapped = inst ? PyObject_CallMethodOneArg(inst, str_translate, value) : NULL;
    if (mapped == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyException_SetContext(mapped, Py_NewRef(value));
    PyException_SetCause(mapped, value); /* steals value; sets __suppress_context__ */
    PyErr_SetObject((PyObject *)Py_TYPE(mapped), mapped);
    Py_DECREF(mapped);
    return NULL;
}

static PyObject *entry_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Entry *e = (Entry *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *stack[4];
    PyObject *arena_addr = NULL;
    Py_ssize_t m;

    if (e->cell[1] != 0 && e->cell[0] == (double)(uintptr_t)pthread_self()) {
        /* Never delegate a call that names a function: the methods would enter the VM. */
        PyObject *fn_id = entry_fn_id(args, n, kwnames);
        if (fn_id == NULL) return entry_slow(e, args, nargsf, kwnames); /* raises TypeError */
        PyObject *code = PyLong_FromLong(REENTRANT_CALL);
        if (code == NULL) return NULL;
        PyObject *res = entry_failed(e, code, fn_id);
        Py_DECREF(code);
        return res;
    }
    if (kwnames != NULL || n < 1 || n > 4 || e->target == NULL) goto slow; /* NULL: cleared by the GC */
    for (Py_ssize_t i = 0; i < n && i < 3; i++)
        if (!PyLong_CheckExact(args[i]) || !is_nonneg(args[i])) goto slow;
    stack[0] = args[0];
    m = 1;
    if (n == 4 && args[3] != Py_None) {
        arena_addr = PyObject_GetAttr(args[3], str_address);
        if (arena_addr == NULL) {
            PyErr_Clear();
            goto slow; /* not an arena */
        }
        if (!PyLong_CheckExact(arena_addr) || is_zero(arena_addr)) {
            Py_DECREF(arena_addr);
            goto slow; /* a closed arena: the Python path raises */
        }
        stack[1] = args[1];
        stack[2] = args[2];
        stack[3] = arena_addr;
        m = 4;
    } else if (n > 1) {
        /* Fewer arguments are cheaper for lupa to convert: both pointers null -> fn_id alone. */
        int zero_a = is_zero(args[1]);
        int zero_o = n > 2 ? is_zero(args[2]) : 1;
        if (!(zero_a && zero_o)) {
            stack[1] = args[1];
            if (n > 2) {
                stack[2] = args[2];
                m = 3;
            } else {
                m = 2;
            }
        }
    }

    PyObject *res = PyObject_Vectorcall(e->target, stack, (size_t)m, NULL);
    Py_XDECREF(arena_addr);
    if (res == NULL) return entry_raise(e);
    if (PyLong_CheckExact(res) && is_zero(res)) {
        if (e->mode) {
            Py_DECREF(res);
            Py_RETURN_NONE;
        }
        return res;
    }
    PyObject *out = entry_failed(e, res, args[0]);
    Py_DECREF(res);
    return out;
slow:
    return entry_slow(e, args, nargsf, kwnames);
}

static int entry_traverse(Entry *e, visitproc visit, void *arg) {
    Py_VISIT(e->target);
    Py_VISIT(e->owner);
    Py_VISIT(e->inst);
    Py_VISIT(Py_TYPE(e));
    return 0;
}

static int entry_clear(Entry *e) {
    Py_CLEAR(e->target);
    Py_CLEAR(e->owner);
    Py_CLEAR(e->inst);
    return 0;
}

static void entry_dealloc(Entry *e) {
    PyTypeObject *tp = Py_TYPE(e);
    PyObject_GC_UnTrack(e);
    entry_clear(e);
    PyObject_GC_Del(e);
    Py_DECREF(tp);
}

static PyObject *entry_repr(Entry *e) {
    return PyUnicode_FromFormat("<luaplug-lupa %s entry>", e->mode ? "call" : "dispatch");
}

static PyMemberDef entry_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Entry, vectorcall), READONLY, NULL},
    {NULL},
};

static PyType_Slot entry_slots[] = {
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_traverse, (void *)entry_traverse},
    {Py_tp_clear, (void *)entry_clear},
    {Py_tp_dealloc, (void *)entry_dealloc},
    {Py_tp_repr, (void *)entry_repr},
    {Py_tp_members, entry_members},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    "luaplug_lupa._entry.Entry",
    sizeof(Entry),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    entry_slots,
};

static PyTypeObject *entry_type;

/* bind(target, cell_address, owner, instance, mode) -> Entry */
static PyObject *bind(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    if (n != 5) {
        PyErr_SetString(PyExc_TypeError, "bind(target, cell_address, owner, instance, mode)");
        return NULL;
    }
    unsigned long long cell = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    long mode = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (cell == 0) {
        PyErr_SetString(PyExc_ValueError, "null cell");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "target must be callable");
        return NULL;
    }
    Entry *e = PyObject_GC_New(Entry, entry_type);
    if (e == NULL) return NULL;
    e->vectorcall = entry_call;
    e->target = Py_NewRef(args[0]);
    e->cell = (volatile const double *)(uintptr_t)cell;
    e->owner = Py_NewRef(args[2]);
    e->inst = Py_NewRef(args[3]);
    e->mode = mode ? 1 : 0;
    PyObject_GC_Track(e);
    return (PyObject *)e;
}

static PyMethodDef module_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(target, cell_address, owner, instance, mode) -> the instance's dispatch (0) or call (1)"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    str_address = PyUnicode_InternFromString("_address");
    str_failed = PyUnicode_InternFromString("_failed");
    str_translate = PyUnicode_InternFromString("_translate");
    str_py[0] = PyUnicode_InternFromString("_py_dispatch");
    str_py[1] = PyUnicode_InternFromString("_py_call");
    if (!str_address || !str_failed || !str_translate || !str_py[0] || !str_py[1]) return -1;
    if (entry_type == NULL) {
        entry_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &entry_spec, NULL);
        if (entry_type == NULL) return -1;
    }
    return PyModule_AddObjectRef(module, "Entry", (PyObject *)entry_type);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "luaplug_lupa._entry", "The per-instance C entry of the lupa backend.", 0, module_methods,
    module_slots,
};

PyMODINIT_FUNC PyInit__entry(void) { return PyModuleDef_Init(&module_def); }
