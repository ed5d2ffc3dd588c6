/* luaplug_entry.h: the per-instance native entry every luaplug backend compiles.
 *
 * An entry is the C-level callable luaplug's Instance stores as its `dispatch` (mode 0) or
 * `call` (mode 1): a builtin function (METH_FASTCALL, which the interpreter calls without a
 * generic dispatch) whose `self` is an Entry object holding the binding. It adds no Python
 * frame to a call: plain integer arguments go straight to the backend's VM; every other case
 * is handed back to the Instance, so the semantics have one definition (luaplug/contract.py).
 *
 * Using it: include <Python.h>, then this header (once per extension module), then define the
 * two hooks declared below. Call luaplug_entry_init(module, "pkg.module.Entry") once: it
 * publishes `bind` and `Entry` on the module. Build with luaplug.backend.get_include() on the include path.
 *
 *   static int luaplug_entry_refused(const luaplug_entry *e);
 *       Non-zero when this call must not enter the VM (a same-thread re-entry the engine
 *       cannot serve): the call then fails with LUAPLUG_REENTRANT_CALL without running Lua.
 *   static PyObject *luaplug_entry_invoke(luaplug_entry *e, const luaplug_args *a);
 *       Run function a->fn_id of the instance in the VM: a new reference to the result
 *       (the int 0 on success, else what Instance._failed takes: a code, or a
 *       (code, message) tuple), or NULL with an exception set.
 *
 * The native-entry protocol: the Python names the entry reads, and what it expects of them.
 *   bind(owner, instance, mode, target, data, instance_id) -> the builtin over a new Entry
 *       owner        the EngineState; kept alive by the entry. Its `cell_address` (int) is read
 *                    once: the address of the state's cell (the LUAPLUG_CELL_* slots below).
 *       instance     the luaplug Instance; kept alive by the entry (a temporary
 *                    `contract.create_instance().call(...)` must survive its own call).
 *       mode         0: dispatch (returns the code), 1: call (returns None or raises).
 *       target       any object the backend's invoke uses (None: none), kept alive.
 *       data         an address the backend's invoke uses (0: none); valid while owner lives.
 *       instance_id  the instance id (the prelude's number for it).
 *   Instance._py_dispatch / Instance._py_call (*args, **kwargs)
 *       every call the entry does not serve itself: keyword arguments, fewer than 1 or more
 *       than 4 arguments, arguments that are not exact non-negative ints (fn_id within uint32,
 *       addresses within uintptr_t), an arena that is closed or not a CallArena.
 *   CallArena._address
 *       the arena's address, an exact int; 0 once the arena is closed.
 *   Instance._failed(result, fn_id, mode)
 *       a non-zero result: logs the Lua error, then returns the code (mode 0) or raises (mode 1).
 *   Instance._translate(exc)
 *       an exception of the engine other than OverflowError, ValueError and TypeError (which
 *       propagate unchanged, as on the Python path): the luaplug error raised from it.
 *   The FastCall convention (luaplug.backend.FastCall): a dispatch function answers 0, a non-zero
 *   ABI code, or (code, message); -1 is never an engine's answer: the Python path uses it to say
 *   "not served here, convert the arguments and retry" (Instance._dispatch_slow).
 *
 * Invariants:
 * - The cell is a double[LUAPLUG_CELL_SLOTS] owned by the EngineState; the entry holds the
 *   state, so the pointer is valid as long as the entry. The prelude writes the thread slot as
 *   tonumber(pthread_self()): compare after the same uintptr_t -> double conversion.
 * - The entry and the Instance reference each other (the Instance holds the builtin in its
 *   __dict__, the builtin its Entry): Entry is a GC type, so the cycle is collected. A cleared entry (owner NULL) only
 *   delegates to the Instance, and a cleared Instance reference raises ReferenceError.
 */

#ifndef LUAPLUG_ENTRY_H
#define LUAPLUG_ENTRY_H

#include <pthread.h>
#include <stdint.h>

/* The cell's slots (the prelude and luaplug.reentry name the same ones). */
#define LUAPLUG_CELL_THREAD 0  /* id of the thread running Lua in the VM (0: none) */
#define LUAPLUG_CELL_DEPTH 1   /* nesting depth of calls running in the VM */
#define LUAPLUG_CELL_RETIRED 2 /* non-zero: the VM is retired, every call is StaleHandle */
#define LUAPLUG_CELL_LIVE 3    /* live (non-default) instances over all contracts */
#define LUAPLUG_CELL_SLOTS 4

/* AbiErrorCode.ReentrantCall */
#define LUAPLUG_REENTRANT_CALL 9

typedef struct luaplug_entry {
    PyObject_HEAD
    PyObject *owner;
    PyObject *inst;
    PyObject *target;
    void *data;
    volatile const double *cell;
    double instance_id;
    int mode;
} luaplug_entry;

/* One call's arguments, checked: `args` are the caller's objects (exact ints for the first
 * min(nargs, 3)); `arena_address` is the arena's `_address` object (NULL: no arena). */
typedef struct luaplug_args {
    PyObject *const *args;
    Py_ssize_t nargs;
    uint32_t fn_id;
    uintptr_t in, out, arena;
    PyObject *arena_address;
} luaplug_args;

static int luaplug_entry_refused(const luaplug_entry *e);
static PyObject *luaplug_entry_invoke(luaplug_entry *e, const luaplug_args *a);

/* Whether the cell says Lua of its VM is running on the calling thread. */
static inline int luaplug_cell_running_here(volatile const double *cell) {
    return cell[LUAPLUG_CELL_DEPTH] != 0 && cell[LUAPLUG_CELL_THREAD] == (double)(uintptr_t)pthread_self();
}

static PyObject *luaplug_str_address, *luaplug_str_failed, *luaplug_str_translate, *luaplug_str_py[2];
static PyObject *luaplug_str_cell_address;
static PyObject *luaplug_zero; /* the int 0 (CPython keeps one, so a success is usually this object) */
static PyTypeObject *luaplug_entry_type;

/* An exact non-negative int no greater than `max`, else -1 (no exception left set). */
static int luaplug_uint_arg(PyObject *o, unsigned long long max, unsigned long long *out) {
    if (!PyLong_CheckExact(o)) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

static PyObject *luaplug_entry_instance(luaplug_entry *e) {
    if (e->inst == NULL) { /* cleared by the GC while the cycle was being broken */
        PyErr_SetString(PyExc_ReferenceError, "the luaplug Instance behind this call is gone");
        return NULL;
    }
    return e->inst;
}

static PyObject *luaplug_entry_slow(luaplug_entry *e, PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    PyObject *inst = luaplug_entry_instance(e);
    if (inst == NULL) return NULL;
    PyObject *meth = PyObject_GetAttr(inst, luaplug_str_py[e->mode]);
    if (meth == NULL) return NULL;
    PyObject *res = PyObject_Vectorcall(meth, args, (size_t)n, kwnames);
    Py_DECREF(meth);
    return res;
}

static PyObject *luaplug_entry_failed(luaplug_entry *e, PyObject *result, PyObject *fn_id) {
    PyObject *inst = luaplug_entry_instance(e);
    if (inst == NULL) return NULL;
    return PyObject_CallMethodObjArgs(inst, luaplug_str_failed, result, fn_id, e->mode ? Py_True : Py_False, NULL);
}

/* The fn_id argument, positional or by keyword (borrowed), or NULL when it is missing. */
static PyObject *luaplug_entry_fn_id(PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    if (n >= 1) return args[0];
    Py_ssize_t nk = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++)
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "fn_id") == 0) return args[n + i];
    return NULL;
}

/* The engine raised: argument errors propagate, anything else becomes luaplug's. */
static PyObject *luaplug_entry_raise(luaplug_entry *e) {
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
    PyObject *inst = luaplug_entry_instance(e);
    PyObject *mapped = inst ? PyObject_CallMethodOneArg(inst, luaplug_str_translate, value) : NULL;
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

static PyObject *luaplug_entry_call(PyObject *self, PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    luaplug_entry *e = (luaplug_entry *)self;
    unsigned long long fn_id, in = 0, out = 0, arena = 0, zero;
    luaplug_args a;

    if (e->owner == NULL) goto slow; /* cleared by the GC */
    if (luaplug_entry_refused(e)) {
        /* Never delegate a call that names a function: the methods would enter the VM. */
        PyObject *fn = luaplug_entry_fn_id(args, n, kwnames);
        if (fn == NULL) goto slow; /* raises TypeError */
        PyObject *code = PyLong_FromLong(LUAPLUG_REENTRANT_CALL);
        if (code == NULL) return NULL;
        PyObject *res = luaplug_entry_failed(e, code, fn);
        Py_DECREF(code);
        return res;
    }
    if (kwnames != NULL || n < 1 || n > 4) goto slow;
    if (luaplug_uint_arg(args[0], 0xffffffffULL, &fn_id)) goto slow;
    if (n > 1 && luaplug_uint_arg(args[1], UINTPTR_MAX, &in)) goto slow;
    if (n > 2 && luaplug_uint_arg(args[2], UINTPTR_MAX, &out)) goto slow;
    a.arena_address = NULL;
    if (n > 3 && args[3] != Py_None) {
        a.arena_address = PyObject_GetAttr(args[3], luaplug_str_address);
        if (a.arena_address == NULL) {
            PyErr_Clear();
            goto slow; /* not an arena */
        }
        if (luaplug_uint_arg(a.arena_address, UINTPTR_MAX, &arena) || arena == 0) {
            Py_DECREF(a.arena_address);
            goto slow; /* a closed arena: the Python path raises */
        }
    }
    a.args = args;
    a.nargs = n;
    a.fn_id = (uint32_t)fn_id;
    a.in = (uintptr_t)in;
    a.out = (uintptr_t)out;
    a.arena = (uintptr_t)arena;

    PyObject *res = luaplug_entry_invoke(e, &a);
    Py_XDECREF(a.arena_address);
    if (res == NULL) return luaplug_entry_raise(e);
    if (res == luaplug_zero || (PyLong_CheckExact(res) && luaplug_uint_arg(res, 0, &zero) == 0)) {
        if (e->mode) {
            Py_DECREF(res);
            Py_RETURN_NONE;
        }
        return res;
    }
    PyObject *failed = luaplug_entry_failed(e, res, args[0]);
    Py_DECREF(res);
    return failed;
slow:
    return luaplug_entry_slow(e, args, n, kwnames);
}

/* The builtins an entry is called through, by mode. */
static PyMethodDef luaplug_entry_defs[2] = {
    {"dispatch", (PyCFunction)(void (*)(void))luaplug_entry_call, METH_FASTCALL | METH_KEYWORDS,
     "dispatch(fn_id, args=0, out=0, arena=None) -> code (luaplug.Instance.dispatch)"},
    {"call", (PyCFunction)(void (*)(void))luaplug_entry_call, METH_FASTCALL | METH_KEYWORDS,
     "call(fn_id, args=0, out=0, arena=None) -> None (luaplug.Instance.call)"},
};

static int luaplug_entry_traverse(luaplug_entry *e, visitproc visit, void *arg) {
    Py_VISIT(e->owner);
    Py_VISIT(e->inst);
    Py_VISIT(e->target);
    Py_VISIT(Py_TYPE(e));
    return 0;
}

static int luaplug_entry_clear(luaplug_entry *e) {
    Py_CLEAR(e->owner);
    Py_CLEAR(e->inst);
    Py_CLEAR(e->target);
    return 0;
}

static void luaplug_entry_dealloc(luaplug_entry *e) {
    PyTypeObject *tp = Py_TYPE(e);
    PyObject_GC_UnTrack(e);
    luaplug_entry_clear(e);
    PyObject_GC_Del(e);
    Py_DECREF(tp);
}

static PyObject *luaplug_entry_repr(luaplug_entry *e) {
    return PyUnicode_FromFormat("<luaplug %s entry>", e->mode ? "call" : "dispatch");
}

static PyType_Slot luaplug_entry_slots[] = {
    {Py_tp_traverse, (void *)luaplug_entry_traverse},
    {Py_tp_clear, (void *)luaplug_entry_clear},
    {Py_tp_dealloc, (void *)luaplug_entry_dealloc},
    {Py_tp_repr, (void *)luaplug_entry_repr},
    {0, NULL},
};

/* bind(owner, instance, mode, target, data, instance_id) -> the builtin over a new Entry */
static PyObject *luaplug_entry_bind(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    unsigned long long cell, data, iid;
    if (n != 6) {
        PyErr_SetString(PyExc_TypeError, "bind(owner, instance, mode, target, data, instance_id)");
        return NULL;
    }
    long mode = PyLong_AsLong(args[2]);
    if (mode == -1 && PyErr_Occurred()) return NULL;
    data = PyLong_AsUnsignedLongLong(args[4]);
    if (data == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    iid = PyLong_AsUnsignedLongLong(args[5]);
    if (iid == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *cell_obj = PyObject_GetAttr(args[0], luaplug_str_cell_address);
    if (cell_obj == NULL) return NULL;
    cell = PyLong_AsUnsignedLongLong(cell_obj);
    Py_DECREF(cell_obj);
    if (cell == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (cell == 0) {
        PyErr_SetString(PyExc_ValueError, "bind: the owner's cell_address is null");
        return NULL;
    }
    luaplug_entry *e = PyObject_GC_New(luaplug_entry, luaplug_entry_type);
    if (e == NULL) return NULL;
    e->owner = Py_NewRef(args[0]);
    e->inst = Py_NewRef(args[1]);
    e->target = args[3] == Py_None ? NULL : Py_NewRef(args[3]);
    e->data = (void *)(uintptr_t)data;
    e->cell = (volatile const double *)(uintptr_t)cell;
    e->instance_id = (double)iid;
    e->mode = mode ? 1 : 0;
    PyObject_GC_Track(e);
    PyObject *fn = PyCFunction_NewEx(&luaplug_entry_defs[e->mode], (PyObject *)e, NULL);
    Py_DECREF(e);
    return fn;
}

static PyMethodDef luaplug_entry_bind_def = {
    "bind", (PyCFunction)(void (*)(void))luaplug_entry_bind, METH_FASTCALL,
    "bind(owner, instance, mode, target, data, instance_id) -> the instance's dispatch (0) or call (1)"};

/* Publish `bind` and `Entry` on `module` (with the GIL held); 0, or -1 with an exception set.
 * `type_name` is the qualified name of the Entry type ("package.module.Entry"), a static string. */
static int luaplug_entry_init(PyObject *module, const char *type_name) {
    static PyType_Spec spec;
    if (luaplug_str_address == NULL) {
        luaplug_str_address = PyUnicode_InternFromString("_address");
        luaplug_str_failed = PyUnicode_InternFromString("_failed");
        luaplug_str_translate = PyUnicode_InternFromString("_translate");
        luaplug_str_py[0] = PyUnicode_InternFromString("_py_dispatch");
        luaplug_str_py[1] = PyUnicode_InternFromString("_py_call");
        luaplug_str_cell_address = PyUnicode_InternFromString("cell_address");
        luaplug_zero = PyLong_FromLong(0);
        if (!luaplug_zero || !luaplug_str_address || !luaplug_str_failed || !luaplug_str_translate || !luaplug_str_py[0] ||
            !luaplug_str_py[1] || !luaplug_str_cell_address)
            return -1;
    }
    if (luaplug_entry_type == NULL) {
        spec.name = type_name;
        spec.basicsize = sizeof(luaplug_entry);
        spec.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
        spec.slots = luaplug_entry_slots;
        luaplug_entry_type = (PyTypeObject *)PyType_FromSpec(&spec);
        if (luaplug_entry_type == NULL) return -1;
    }
    PyObject *bind = PyCFunction_NewEx(&luaplug_entry_bind_def, NULL, NULL);
    if (bind == NULL) return -1;
    int rc = PyObject_SetAttrString(module, "bind", bind);
    Py_DECREF(bind);
    if (rc != 0) return -1;
    return PyObject_SetAttrString(module, "Entry", (PyObject *)luaplug_entry_type);
}

#endif /* LUAPLUG_ENTRY_H */
