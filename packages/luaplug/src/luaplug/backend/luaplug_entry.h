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

/* ==========================================================================================
 * Typed calls: a typed proxy's method, packed in C, for a function whose params and result
 * are all scalars (spec §14).
 *
 *   typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc)
 *       (published as Entry.typed_call by luaplug_typed_init) -> a builtin, or None when it
 *       cannot serve that function (call is not an entry of this module in call mode, or
 *       there are more than LUAPLUG_TYPED_MAX_PARAMS params or args bytes).
 *       call       the instance's `call` builtin (mode 1) made by this module's bind.
 *       fallback   the proxy's Python method for the function: every call not served here.
 *       retry      retry(exc, fn_id, args, out) -> bool, called with a DispatchError the call
 *                  raised and the addresses that call used (the proxy's _retry).
 *       error      the class of `exc` above (luaplug.DispatchError).
 *       fn_id      the function's id.
 *       args_size  sizeof what `args` points at (0: no params, `args` is null).
 *       params     one (format, offset, cls, valid) per param, in order: format is the
 *                  `memoryview` letter of the slot's C type (b h i q B H I Q f d ?), offset
 *                  its byte offset from `args`; for an enum, cls is its class (its exact
 *                  members are accepted besides exact ints) and valid the frozenset of its
 *                  values (None for a bitflag enum, and for every other param).
 *       result     None (no result), or (format, members): members maps an enum result's
 *                  values to its members (None: not an enum).
 *       bad_bool   bad_bool(address) reads a bool result whose byte is neither 0 nor 1 (and
 *                  raises, as the proxy's own read does).
 *       name, doc  the method's __name__ and __doc__ (str).
 *
 * The builtin serves a call whose arguments are positional, as many as the params, each of
 * the exact class the proxy's memoryview store takes (int, or an enum's member; float; bool)
 * and within its slot's range (an f32 within FLT_MAX, an enum value among `valid`); it hands
 * every other call to `fallback` unchanged, so what is accepted and refused, and how, stays
 * the Python method's. A served call stores the values, calls luaplug_entry_call over the
 * entry (its re-entry refusal, error mapping and _failed), and decodes the out slot.
 *
 * Invariants:
 * - The args struct and the out slot a served call passes are the descriptor's own buffer,
 *   or, while that buffer is in use (another thread's call, a nested call on this thread),
 *   a buffer on the C stack: a served call never shares its memory with another call, nor
 *   with the fallback's preallocated struct.
 * - Only the layout the caller describes is written: the C side knows no type of the ABI.
 */

#include <float.h>
#include <math.h>
#include <string.h>

#define LUAPLUG_TYPED_MAX_PARAMS 16
#define LUAPLUG_TYPED_ARGS_WORDS 16 /* bytes of an args struct served here: at most 8 * this */

typedef struct luaplug_typed_param {
    Py_ssize_t offset;
    char kind;
    PyObject *cls;   /* an enum's class, or NULL */
    PyObject *valid; /* an enum's values (frozenset), or NULL */
} luaplug_typed_param;

typedef struct luaplug_typed {
    PyObject_HEAD
    PyObject *call, *fallback, *retry, *error, *members, *bad_bool;
    PyObject *name, *doc; /* str: the method's __name__ and __doc__ (def points into them) */
    PyMethodDef def;
    PyObject *stack[3]; /* fn_id, args and out addresses of `buf` */
    Py_ssize_t nstack, nparams, args_size;
    char result; /* the result's format, 0: none */
    int busy;    /* `buf` is in use by a call */
    uint64_t buf[LUAPLUG_TYPED_ARGS_WORDS + 1]; /* the args struct, then the out slot */
    luaplug_typed_param params[LUAPLUG_TYPED_MAX_PARAMS];
} luaplug_typed;

static PyTypeObject *luaplug_typed_type;

/* Store `v` into the slot at `p` when it is of the exact class and within range: 0, else -1
 * (the fallback decides; no exception left set). */
static int luaplug_typed_store(const luaplug_typed_param *q, PyObject *v, char *p) {
    int ovf;
    long long x;
    switch (q->kind) {
    case 'f':
    case 'd': {
        if (!PyFloat_CheckExact(v)) return -1;
        double d = PyFloat_AS_DOUBLE(v);
        if (q->kind == 'd') {
            memcpy(p, &d, sizeof d);
            return 0;
        }
        if (isfinite(d) && fabs(d) > FLT_MAX) return -1; /* may round to inf: the fallback decides */
        float f = (float)d;
        memcpy(p, &f, sizeof f);
        return 0;
    }
    case '?':
        if (v != Py_True && v != Py_False) return -1;
        *(uint8_t *)p = v == Py_True;
        return 0;
    case 'Q': {
        if (!PyLong_CheckExact(v) && (q->cls == NULL || !Py_IS_TYPE(v, (PyTypeObject *)q->cls))) return -1;
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        memcpy(p, &u, sizeof u);
        goto check;
    }
    default:
        break;
    }
    if (!PyLong_CheckExact(v) && (q->cls == NULL || !Py_IS_TYPE(v, (PyTypeObject *)q->cls))) return -1;
    x = PyLong_AsLongLongAndOverflow(v, &ovf);
    if (ovf || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    switch (q->kind) {
    case 'b': if (x < INT8_MIN || x > INT8_MAX) return -1; *(int8_t *)p = (int8_t)x; break;
    case 'h': if (x < INT16_MIN || x > INT16_MAX) return -1; { int16_t y = (int16_t)x; memcpy(p, &y, sizeof y); } break;
    case 'i': if (x < INT32_MIN || x > INT32_MAX) return -1; { int32_t y = (int32_t)x; memcpy(p, &y, sizeof y); } break;
    case 'q': memcpy(p, &x, sizeof x); break;
    case 'B': if (x < 0 || x > UINT8_MAX) return -1; *(uint8_t *)p = (uint8_t)x; break;
    case 'H': if (x < 0 || x > UINT16_MAX) return -1; { uint16_t y = (uint16_t)x; memcpy(p, &y, sizeof y); } break;
    case 'I': if (x < 0 || x > UINT32_MAX) return -1; { uint32_t y = (uint32_t)x; memcpy(p, &y, sizeof y); } break;
    default: return -1;
    }
check:
    if (q->valid != NULL) {
        int in = PySet_Contains(q->valid, v);
        if (in != 1) {
            if (in < 0) PyErr_Clear();
            return -1;
        }
    }
    return 0;
}

/* The result in the out slot at `p` (a new reference), or NULL with an exception set. */
static PyObject *luaplug_typed_result(luaplug_typed *t, const char *p, PyObject *out_address) {
    PyObject *v;
    switch (t->result) {
    case 0: Py_RETURN_NONE;
    case 'b': v = PyLong_FromLong(*(const int8_t *)p); break;
    case 'h': { int16_t y; memcpy(&y, p, sizeof y); v = PyLong_FromLong(y); } break;
    case 'i': { int32_t y; memcpy(&y, p, sizeof y); v = PyLong_FromLong(y); } break;
    case 'q': { long long y; memcpy(&y, p, sizeof y); v = PyLong_FromLongLong(y); } break;
    case 'B': v = PyLong_FromUnsignedLong(*(const uint8_t *)p); break;
    case 'H': { uint16_t y; memcpy(&y, p, sizeof y); v = PyLong_FromUnsignedLong(y); } break;
    case 'I': { uint32_t y; memcpy(&y, p, sizeof y); v = PyLong_FromUnsignedLong(y); } break;
    case 'Q': { unsigned long long y; memcpy(&y, p, sizeof y); v = PyLong_FromUnsignedLongLong(y); } break;
    case 'f': { float y; memcpy(&y, p, sizeof y); return PyFloat_FromDouble((double)y); }
    case 'd': { double y; memcpy(&y, p, sizeof y); return PyFloat_FromDouble(y); }
    case '?':
        if (*(const uint8_t *)p > 1) return PyObject_CallOneArg(t->bad_bool, out_address);
        return PyBool_FromLong(*(const uint8_t *)p);
    default:
        PyErr_SetString(PyExc_SystemError, "luaplug typed call: unknown result format");
        return NULL;
    }
    if (v == NULL || t->members == NULL) return v;
    PyObject *m = PyDict_GetItemWithError(t->members, v);
    if (m == NULL) {
        if (!PyErr_Occurred()) return v; /* not a member: the plain int */
        Py_DECREF(v);
        return NULL;
    }
    Py_DECREF(v);
    return Py_NewRef(m);
}

static PyObject *luaplug_typed_call(PyObject *self, PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    luaplug_typed *t = (luaplug_typed *)self;
    uint64_t local[LUAPLUG_TYPED_ARGS_WORDS + 1];
    PyObject *stack[3];
    char *base;
    int own = !t->busy;

    if (kwnames != NULL || n != t->nparams) goto fallback;
    base = own ? (char *)t->buf : (char *)local;
    for (Py_ssize_t i = 0; i < n; i++)
        if (luaplug_typed_store(&t->params[i], args[i], base + t->params[i].offset)) goto fallback;
    char *out = base + 8 * LUAPLUG_TYPED_ARGS_WORDS;
    memset(out, 0, 8);
    stack[0] = t->stack[0];
    if (own) {
        stack[1] = Py_NewRef(t->stack[1]);
        stack[2] = Py_NewRef(t->stack[2]);
        t->busy = 1;
    } else {
        stack[1] = t->args_size ? PyLong_FromVoidPtr(base) : Py_NewRef(t->stack[1]);
        stack[2] = t->result ? PyLong_FromVoidPtr(out) : Py_NewRef(t->stack[2]);
        if (stack[1] == NULL || stack[2] == NULL) {
            Py_XDECREF(stack[1]);
            Py_XDECREF(stack[2]);
            return NULL;
        }
    }
    PyObject *res = luaplug_entry_call(PyCFunction_GET_SELF(t->call), stack, t->nstack, NULL);
    if (res == NULL && PyErr_ExceptionMatches(t->error)) {
        /* What the proxy's except clause does: retry (a reload) or name the function. */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL) PyException_SetTraceback(exc, tb);
        PyObject *retry_args[4] = {exc, t->stack[0], stack[1], stack[2]};
        PyObject *again = PyObject_Vectorcall(t->retry, retry_args, 4, NULL);
        int retried = again == NULL ? -1 : PyObject_IsTrue(again);
        Py_XDECREF(again);
        if (retried == 0) {
            PyErr_Restore(type, exc, tb);
        } else if (retried < 0) {
            PyObject *t2, *e2, *tb2;
            PyErr_Fetch(&t2, &e2, &tb2);
            PyErr_NormalizeException(&t2, &e2, &tb2);
            if (e2 != NULL && e2 != exc) { /* raised while handling exc, as in the proxy's except clause */
                PyObject *ctx = PyException_GetContext(e2);
                if (ctx == NULL) PyException_SetContext(e2, Py_NewRef(exc));
                Py_XDECREF(ctx);
            }
            PyErr_Restore(t2, e2, tb2);
            Py_XDECREF(type);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
        } else {
            Py_XDECREF(type);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
            res = Py_NewRef(Py_None);
        }
    }
    PyObject *value = res == NULL ? NULL : luaplug_typed_result(t, out, stack[2]);
    Py_XDECREF(res);
    if (own) t->busy = 0;
    Py_DECREF(stack[1]);
    Py_DECREF(stack[2]);
    return value;
fallback:
    return PyObject_Vectorcall(t->fallback, args, (size_t)n, kwnames);
}


static int luaplug_typed_traverse(luaplug_typed *t, visitproc visit, void *arg) {
    Py_VISIT(t->call);
    Py_VISIT(t->fallback);
    Py_VISIT(t->retry);
    Py_VISIT(t->error);
    Py_VISIT(t->members);
    Py_VISIT(t->bad_bool);
    Py_VISIT(t->name);
    Py_VISIT(t->doc);
    for (Py_ssize_t i = 0; i < t->nparams; i++) {
        Py_VISIT(t->params[i].cls);
        Py_VISIT(t->params[i].valid);
    }
    Py_VISIT(Py_TYPE(t));
    return 0;
}

static int luaplug_typed_clear(luaplug_typed *t) {
    /* A cleared descriptor (nparams -1) raises ReferenceError when called (luaplug_typed_method). */
    t->nparams = -1;
    Py_CLEAR(t->call);
    Py_CLEAR(t->fallback);
    Py_CLEAR(t->retry);
    Py_CLEAR(t->error);
    Py_CLEAR(t->members);
    Py_CLEAR(t->bad_bool);
    for (Py_ssize_t i = 0; i < LUAPLUG_TYPED_MAX_PARAMS; i++) {
        Py_CLEAR(t->params[i].cls);
        Py_CLEAR(t->params[i].valid);
    }
    return 0;
}

static void luaplug_typed_dealloc(luaplug_typed *t) {
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    luaplug_typed_clear(t);
    for (int i = 0; i < 3; i++) Py_CLEAR(t->stack[i]);
    Py_CLEAR(t->name); /* after the builtin over t->def, which holds t */
    Py_CLEAR(t->doc);
    PyObject_GC_Del(t);
    Py_DECREF(tp);
}

static PyType_Slot luaplug_typed_slots[] = {
    {Py_tp_traverse, (void *)luaplug_typed_traverse},
    {Py_tp_clear, (void *)luaplug_typed_clear},
    {Py_tp_dealloc, (void *)luaplug_typed_dealloc},
    {0, NULL},
};

static PyObject *luaplug_typed_method(PyObject *self, PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    luaplug_typed *t = (luaplug_typed *)self;
    if (t->nparams >= 0) return luaplug_typed_call(self, args, n, kwnames);
    PyErr_SetString(PyExc_ReferenceError, "the typed proxy behind this method is gone");
    return NULL;
}

static const char luaplug_typed_kinds[] = "bhiqBHIQfd?";

/* typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc) */
static PyObject *luaplug_typed_new(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    if (n != 11 || !PyUnicode_Check(args[9]) || !PyUnicode_Check(args[10])) {
        PyErr_SetString(PyExc_TypeError,
                        "typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc)");
        return NULL;
    }
    PyObject *call = args[0], *params = args[6], *result = args[7];
    if (!PyCFunction_Check(call) || ((PyCFunctionObject *)call)->m_ml != &luaplug_entry_defs[1] ||
        !Py_IS_TYPE(PyCFunction_GET_SELF(call), luaplug_entry_type))
        Py_RETURN_NONE; /* not this module's call entry: the proxy keeps its Python method */
    if (!PyTuple_Check(params) || !PyLong_CheckExact(args[4]) || !PyLong_CheckExact(args[5]) ||
        (result != Py_None && (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2))) {
        PyErr_SetString(PyExc_TypeError, "typed_call: malformed descriptor");
        return NULL;
    }
    Py_ssize_t np = PyTuple_GET_SIZE(params), args_size = PyLong_AsSsize_t(args[5]);
    if (args_size == -1 && PyErr_Occurred()) return NULL;
    if (np > LUAPLUG_TYPED_MAX_PARAMS || args_size < 0 || args_size > 8 * LUAPLUG_TYPED_ARGS_WORDS) Py_RETURN_NONE;
    if ((np == 0) != (args_size == 0)) {
        PyErr_SetString(PyExc_ValueError, "typed_call: args_size is 0 exactly when there are no params");
        return NULL;
    }
    luaplug_typed *t = PyObject_GC_New(luaplug_typed, luaplug_typed_type);
    if (t == NULL) return NULL;
    memset((char *)t + sizeof(PyObject), 0, sizeof(luaplug_typed) - sizeof(PyObject));
    t->nparams = np;
    t->args_size = args_size;
    t->call = Py_NewRef(call);
    t->fallback = Py_NewRef(args[1]);
    t->retry = Py_NewRef(args[2]);
    t->error = Py_NewRef(args[3]);
    t->bad_bool = Py_NewRef(args[8]);
    t->name = Py_NewRef(args[9]);
    t->doc = Py_NewRef(args[10]);
    t->def.ml_name = PyUnicode_AsUTF8(t->name);
    t->def.ml_doc = PyUnicode_AsUTF8(t->doc);
    t->def.ml_meth = (PyCFunction)(void (*)(void))luaplug_typed_method;
    t->def.ml_flags = METH_FASTCALL | METH_KEYWORDS;
    PyObject_GC_Track(t);
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *q = PyTuple_GET_ITEM(params, i);
        const char *kind;
        Py_ssize_t klen;
        if (!PyTuple_Check(q) || PyTuple_GET_SIZE(q) != 4 || !PyUnicode_Check(PyTuple_GET_ITEM(q, 0))) goto malformed;
        kind = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(q, 0), &klen);
        if (kind == NULL) goto fail;
        Py_ssize_t off = PyLong_AsSsize_t(PyTuple_GET_ITEM(q, 1));
        if (off == -1 && PyErr_Occurred()) goto fail;
        Py_ssize_t width = 0;
        switch (kind[0]) {
        case 'b': case 'B': case '?': width = 1; break;
        case 'h': case 'H': width = 2; break;
        case 'i': case 'I': case 'f': width = 4; break;
        case 'q': case 'Q': case 'd': width = 8; break;
        default: break;
        }
        if (klen != 1 || width == 0 || off < 0 || off + width > args_size) goto malformed;
        PyObject *cls = PyTuple_GET_ITEM(q, 2), *valid = PyTuple_GET_ITEM(q, 3);
        if ((cls != Py_None && !PyType_Check(cls)) || (valid != Py_None && !PyFrozenSet_Check(valid))) goto malformed;
        t->params[i].kind = kind[0];
        t->params[i].offset = off;
        t->params[i].cls = cls == Py_None ? NULL : Py_NewRef(cls);
        t->params[i].valid = valid == Py_None ? NULL : Py_NewRef(valid);
    }
    if (result != Py_None) {
        Py_ssize_t klen;
        const char *kind = PyUnicode_Check(PyTuple_GET_ITEM(result, 0))
                               ? PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(result, 0), &klen)
                               : NULL;
        PyObject *members = PyTuple_GET_ITEM(result, 1);
        if (kind == NULL || klen != 1 || strchr(luaplug_typed_kinds, kind[0]) == NULL ||
            (members != Py_None && !PyDict_Check(members)))
            goto malformed;
        t->result = kind[0];
        t->members = members == Py_None ? NULL : Py_NewRef(members);
    }
    t->stack[0] = Py_NewRef(args[4]);
    t->stack[1] = np ? PyLong_FromVoidPtr(t->buf) : PyLong_FromLong(0);
    t->stack[2] = t->result ? PyLong_FromVoidPtr(t->buf + LUAPLUG_TYPED_ARGS_WORDS) : PyLong_FromLong(0);
    if (t->stack[1] == NULL || t->stack[2] == NULL) goto fail;
    /* As the proxy calls the entry: fn_id alone when both pointers are null. */
    t->nstack = (np || t->result) ? 3 : 1;
    if (t->def.ml_name == NULL || t->def.ml_doc == NULL) goto fail;
    PyObject *fn = PyCFunction_NewEx(&t->def, (PyObject *)t, NULL);
    Py_DECREF(t);
    return fn;
malformed:
    PyErr_SetString(PyExc_TypeError, "typed_call: malformed descriptor");
fail:
    Py_DECREF(t);
    return NULL;
}

static PyMethodDef luaplug_typed_new_def = {
    "typed_call", (PyCFunction)(void (*)(void))luaplug_typed_new, METH_FASTCALL,
    "typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc) -> a typed "
    "proxy's method packed in C, or None (luaplug_entry.h)"};

/* After luaplug_entry_init: publish `typed_call` on the Entry type (with the GIL held); 0, or -1
 * with an exception set. `type_name` is the qualified name of the descriptor type, a static string. */
static int luaplug_typed_init(const char *type_name) {
    static PyType_Spec spec;
    if (luaplug_entry_type == NULL) {
        PyErr_SetString(PyExc_SystemError, "luaplug_typed_init before luaplug_entry_init");
        return -1;
    }
    if (luaplug_typed_type == NULL) {
        spec.name = type_name;
        spec.basicsize = sizeof(luaplug_typed);
        spec.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
        spec.slots = luaplug_typed_slots;
        luaplug_typed_type = (PyTypeObject *)PyType_FromSpec(&spec);
        if (luaplug_typed_type == NULL) return -1;
    }
    PyObject *factory = PyCFunction_NewEx(&luaplug_typed_new_def, NULL, NULL);
    if (factory == NULL) return -1;
    int rc = PyObject_SetAttrString((PyObject *)luaplug_entry_type, "typed_call", factory);
    Py_DECREF(factory);
    return rc;
}

#endif /* LUAPLUG_ENTRY_H */
