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

/* A new GC-tracked heap type from `spec` (static storage: the type keeps pointing at it), or
 * NULL with an exception set. `name` is its qualified name, a static string. */
static PyTypeObject *luaplug_gc_type(PyType_Spec *spec, const char *name, int size, PyType_Slot *slots) {
    spec->name = name;
    spec->basicsize = size;
    spec->flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
    spec->slots = slots;
    return (PyTypeObject *)PyType_FromSpec(spec);
}

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
        luaplug_entry_type = luaplug_gc_type(&spec, type_name, (int)sizeof(luaplug_entry), luaplug_entry_slots);
        if (luaplug_entry_type == NULL) return -1;
    }
    PyObject *bind = PyCFunction_NewEx(&luaplug_entry_bind_def, NULL, NULL);
    if (bind == NULL) return -1;
    int rc = PyObject_SetAttrString(module, "bind", bind);
    Py_DECREF(bind);
    if (rc != 0) return -1;
    return PyObject_SetAttrString(module, "Entry", (PyObject *)luaplug_entry_type);
}

/* ============================================================================================
 * The peer interface: C pointers of a GuestContractInterface over a Python-served contract.
 *
 * For a backend whose dispatch is a Python callable (lupa): a contract's `create_instance`,
 * `destroy_instance` and `dispatch.vm.call` are the C functions below, which guests of any
 * backend call through the HostApi (spec §13). Each takes the GIL and does what the core's
 * Python callbacks (luaplug/backend/interface.py) do, with the same checks in the same order,
 * calling the engine's callables with PyObject_Vectorcall (the engine keeps its own VM lock);
 * what is rare (failures, a closed VM, pending destroys, a memory cap) is handed to
 * the provider's Python methods, so every text and code has one definition.
 *
 * Using it: luaplug_peer_init(module, "pkg.module.Peer") once (after luaplug_entry_init): it publishes
 *   peer(provider, state, cidx, contract_id, guard, entries) -> a Peer
 *       provider     the luaplug.backend.PythonBackedContract (an EngineContract);
 *       state        its EngineState (its `cell_address` is read once);
 *       cidx         the contract's index in the prelude (an int);
 *       contract_id  the contract id written into created instances;
 *       guard        non-zero: the engine cannot re-enter a running VM (refuse such calls);
 *       entries      a dict holding the engine's "create" (cidx) -> id | (0, reason) and
 *                    "destroy" (cidx, id) callables, emptied when the VM closes; None: the
 *                    provider's Python methods serve create and destroy.
 *   Peer.address     the loader_data of the interface (the Peer's own address);
 *   peer_functions() -> (create_instance, destroy_instance, vm_call) addresses.
 * The provider's Python names it reads: `_dispatcher` (the contract's FastCall, replaced by a
 * stale one once the VM is closed: read at each call), `_pending_destroy` (a list; non-empty:
 * Python serves create and destroy, which drain it), `create_from_c` and `destroy_instance`
 * (the whole Python path), `call_failed_from_c(result) -> code`,
 * `create_failed_from_c(result or exception)`, `destroy_failed_from_c(exception)`.
 * From luaplug.backend.loader: `wait_graph_address()` (a uintptr_t[2]: the lock-order graph's
 * C `int begin(uintptr_t cell)` and `void end(void)`, zero when none is registered in C: with
 * luaplug-cffi imported its graph, else the graph section below once luaplug-lupa registered it),
 * `_wait_for(state)` / `_done_waiting(token)` (otherwise: the registered graph through Python, or
 * the core's Python wait table; the token is opaque here and ends the wait where it began), `_DEADLOCK_TEXT`,
 * `log_call_failure`, `log_create_failure`; from luaplug.backend.interface: `log_callback_error`.
 *
 * Invariants:
 * - loader_data is a Peer. The provider keeps it as `_c_handle`, and the registration keeps the
 *   provider in its keepalive list until the epoch releases it, when no guest can still hold the
 *   interface: the Peer outlives every call through it. A Peer cleared by the cyclic GC (its
 *   provider NULL) answers StaleHandle and creates nothing.
 * - The cell belongs to the state, which the Peer holds.
 * - No exception leaves these functions: each writes its result (the AbiError, the instance)
 *   and logs a failure through Python logging, as the Python callbacks do.
 */

#define LUAPLUG_GENERIC 1
#define LUAPLUG_STALE_HANDLE 5
#define LUAPLUG_FUNCTION_NOT_AVAILABLE 6
#define LUAPLUG_INVALID_POINTER 8
/* Instance ids are Lua numbers (doubles): past 2**53 no id names a live instance. */
#define LUAPLUG_MAX_INSTANCE_ID 9007199254740992ULL

/* The C ABI's types these functions take (luaplug.abi's declarations). */
typedef struct { void *data; } luaplug_vm_loader_data;
typedef struct { void *data; uint64_t contract_id; } luaplug_guest_instance;
typedef struct { uint32_t code; const uint8_t *ptr; size_t len; } luaplug_abi_error;

typedef struct luaplug_peer {
    PyObject_HEAD
    PyObject *provider;
    PyObject *state;
    PyObject *cidx;
    PyObject *entries; /* NULL: Python serves create and destroy */
    volatile const double *cell;
    uint64_t contract_id;
    int guard;
} luaplug_peer;

/* What a call's wait on the VM was recorded in, to end it in the same place. */
typedef struct luaplug_peer_wait {
    void (*end)(void); /* the C graph's end, or NULL */
    PyObject *token;   /* the Python wait table's token, or NULL */
} luaplug_peer_wait;

static PyTypeObject *luaplug_peer_type;
static PyObject *luaplug_peer_loader; /* luaplug.backend.loader */
static PyObject *luaplug_peer_iface;  /* luaplug.backend.interface */
static volatile const uintptr_t *luaplug_peer_graph;
static PyObject *luaplug_peer_str[9];
enum {
    LP_S_DISPATCHER, LP_S_PENDING, LP_S_CREATE_FROM_C, LP_S_DESTROY,
    LP_S_CALL_FAILED, LP_S_CREATE_FAILED, LP_S_DESTROY_FAILED, LP_S_CREATE, LP_S_DESTROY_ENTRY
};

/* The pending exception, normalized with its traceback (a new reference; NULL: none); clears it. */
static PyObject *luaplug_peer_fetch(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Log the pending exception as the callbacks do (`what` names the failing step); clears it. */
static void luaplug_peer_log_error(const char *what) {
    PyObject *value = luaplug_peer_fetch();
    if (value == NULL) return;
    PyObject *log = PyObject_GetAttrString(luaplug_peer_iface, "log_callback_error");
    PyObject *res = log != NULL ? PyObject_CallFunction(log, "sO", what, value) : NULL;
    if (res == NULL) PyErr_WriteUnraisable(log); /* logging itself failed: never propagate */
    Py_XDECREF(res);
    Py_XDECREF(log);
    Py_DECREF(value);
}

/* Call provider.<name>(args...); on an exception log it (`what`). A new reference or NULL. */
static PyObject *luaplug_peer_method(luaplug_peer *p, int name, PyObject *const *args, size_t n, const char *what) {
    PyObject *stack[4];
    stack[0] = p->provider;
    for (size_t i = 0; i < n && i < 3; i++) stack[i + 1] = args[i];
    PyObject *res = PyObject_VectorcallMethod(luaplug_peer_str[name], stack, n + 1, NULL);
    if (res == NULL) luaplug_peer_log_error(what);
    return res;
}

/* Call luaplug.backend.loader.<name>(arg); a new reference, or NULL with the exception logged. */
static PyObject *luaplug_peer_loader_call(const char *name, PyObject *arg) {
    PyObject *fn = PyObject_GetAttrString(luaplug_peer_loader, name);
    PyObject *res = fn != NULL ? PyObject_CallOneArg(fn, arg) : NULL;
    Py_XDECREF(fn);
    if (res == NULL) luaplug_peer_log_error("contract callback raised");
    return res;
}

/* Log the refusal of a wait that would deadlock (`logger`: log_call_failure or log_create_failure). */
static void luaplug_peer_log_deadlock(const char *logger) {
    PyObject *text = PyObject_GetAttrString(luaplug_peer_loader, "_DEADLOCK_TEXT");
    if (text == NULL) {
        luaplug_peer_log_error("contract callback raised");
        return;
    }
    Py_XDECREF(luaplug_peer_loader_call(logger, text));
    Py_DECREF(text);
}

/* Whether the C lock-order graph is registered (then every wait is recorded there). */
static int luaplug_peer_has_graph(void) { return luaplug_peer_graph != NULL && luaplug_peer_graph[0] != 0; }

/* Record that this thread may block on the VM (EngineContract._wait): 0 with `w` set, or -1 when
 * it must not wait (a same-thread re-entry, or a deadlock); errors count as a refusal. */
static int luaplug_peer_wait_begin(luaplug_peer *p, luaplug_peer_wait *w) {
    w->end = NULL;
    w->token = NULL;
    if (luaplug_peer_has_graph()) {
        /* The graph refuses a wait on a VM this thread runs in (its holder is this thread). */
        int (*begin)(uintptr_t) = (int (*)(uintptr_t))luaplug_peer_graph[0];
        w->end = (void (*)(void))luaplug_peer_graph[1];
        return begin((uintptr_t)p->cell) == 0 ? 0 : -1;
    }
    if (p->guard && luaplug_cell_running_here(p->cell)) return -1;
    PyObject *token = luaplug_peer_loader_call("_wait_for", p->state);
    if (token == NULL) return -1;
    if (token == Py_None) {
        Py_DECREF(token);
        return -1;
    }
    w->token = token;
    return 0;
}

static void luaplug_peer_wait_end(luaplug_peer_wait *w) {
    if (w->end != NULL) w->end();
    if (w->token != NULL) {
        PyObject *exc_type, *exc, *tb;
        PyErr_Fetch(&exc_type, &exc, &tb); /* a pending result error survives the bookkeeping */
        Py_XDECREF(luaplug_peer_loader_call("_done_waiting", w->token));
        PyErr_Restore(exc_type, exc, tb);
        Py_CLEAR(w->token);
    }
}

/* A refused wait: log the deadlock unless it is a same-thread re-entry (logger as above). */
static void luaplug_peer_refused(luaplug_peer *p, const char *logger) {
    if (!(p->guard && luaplug_cell_running_here(p->cell))) luaplug_peer_log_deadlock(logger);
}

/* An int a callable answered, as a code or an id: its value, or -1 when it is not one. */
static long long luaplug_peer_int(PyObject *o) {
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        return v;
    }
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (d >= 0 && d <= (double)LUAPLUG_MAX_INSTANCE_ID && d == (double)(long long)d) return (long long)d;
    }
    return -1;
}

static uint32_t luaplug_peer_call_held(luaplug_peer *p, uint64_t iid, uint32_t fn_id, const void *args, void *out,
                                       void *arena) {
    PyObject *a[5] = {NULL, NULL, NULL, NULL, NULL};
    uint32_t code = LUAPLUG_GENERIC;
    luaplug_peer_wait w;
    if (luaplug_peer_wait_begin(p, &w) != 0) {
        luaplug_peer_refused(p, "log_call_failure");
        return LUAPLUG_REENTRANT_CALL;
    }
    PyObject *res = NULL;
    a[0] = PyLong_FromUnsignedLong(fn_id);
    a[1] = PyLong_FromUnsignedLongLong(iid);
    a[2] = PyLong_FromVoidPtr((void *)args);
    a[3] = PyLong_FromVoidPtr(out);
    a[4] = PyLong_FromVoidPtr(arena);
    if (a[0] && a[1] && a[2] && a[3] && a[4]) {
        /* read at each call: a closed VM's contract answers StaleHandle from Python */
        PyObject *dispatcher = PyObject_GetAttr(p->provider, luaplug_peer_str[LP_S_DISPATCHER]);
        res = dispatcher != NULL ? PyObject_Vectorcall(dispatcher, a, 5, NULL) : NULL;
        Py_XDECREF(dispatcher);
    }
    luaplug_peer_wait_end(&w);
    if (res == NULL) {
        luaplug_peer_log_error("contract call from C failed");
        goto done;
    }
    if (res == luaplug_zero || luaplug_peer_int(res) == 0) {
        code = 0;
    } else {
        PyObject *c = luaplug_peer_method(p, LP_S_CALL_FAILED, &res, 1, "contract call from C failed");
        if (c != NULL) {
            long long v = luaplug_peer_int(c);
            code = v >= 0 && v <= 0xffffffffLL ? (uint32_t)v : LUAPLUG_GENERIC;
            Py_DECREF(c);
        }
    }
    Py_DECREF(res);
done:
    for (int i = 0; i < 5; i++) Py_XDECREF(a[i]);
    return code;
}

/* dispatch.vm.call */
static void luaplug_peer_call(luaplug_vm_loader_data ld, luaplug_guest_instance inst, uint32_t fn_id, const void *args,
                              void *out, void *arena, luaplug_abi_error *err) {
    uint32_t code = LUAPLUG_INVALID_POINTER;
    luaplug_peer *p = (luaplug_peer *)ld.data;
    uint64_t iid = (uint64_t)(uintptr_t)inst.data;
    if (p != NULL) {
        if (iid > LUAPLUG_MAX_INSTANCE_ID) {
            code = LUAPLUG_FUNCTION_NOT_AVAILABLE; /* never a live instance */
        } else {
            PyGILState_STATE g = PyGILState_Ensure();
            Py_INCREF(p); /* reachable while the call runs: the cyclic GC leaves it whole */
            code = p->provider == NULL ? LUAPLUG_STALE_HANDLE : luaplug_peer_call_held(p, iid, fn_id, args, out, arena);
            Py_DECREF(p);
            PyGILState_Release(g);
        }
    }
    if (err != NULL) {
        err->code = code;
        err->ptr = NULL;
        err->len = 0;
    }
}

/* Whether Python serves create and destroy: no engine callables, or destroys pending. */
static int luaplug_peer_python_serves(luaplug_peer *p) {
    if (p->entries == NULL) return 1;
    PyObject *pending = PyObject_GetAttr(p->provider, luaplug_peer_str[LP_S_PENDING]);
    if (pending == NULL) {
        PyErr_Clear();
        return 1;
    }
    int busy = !PyList_CheckExact(pending) || PyList_GET_SIZE(pending) != 0;
    Py_DECREF(pending);
    return busy;
}

/* create_instance through the provider's Python path: the id, or 0. */
static uint64_t luaplug_peer_create_python(luaplug_peer *p) {
    PyObject *res = luaplug_peer_method(p, LP_S_CREATE_FROM_C, NULL, 0, "contract callback raised");
    if (res == NULL) return 0;
    long long iid = luaplug_peer_int(res);
    Py_DECREF(res);
    return iid > 0 ? (uint64_t)iid : 0;
}

static uint64_t luaplug_peer_create_held(luaplug_peer *p) {
    long long iid = 0;
    if (luaplug_peer_python_serves(p)) return luaplug_peer_create_python(p);
    if (p->cell[LUAPLUG_CELL_RETIRED] != 0) return 0;
    luaplug_peer_wait w;
    if (luaplug_peer_wait_begin(p, &w) != 0) {
        luaplug_peer_refused(p, "log_create_failure");
        return 0;
    }
    PyObject *fn = PyDict_GetItemWithError(p->entries, luaplug_peer_str[LP_S_CREATE]); /* borrowed */
    if (fn == NULL) {
        /* The VM was closed (its entries dropped): the Python path says so. */
        luaplug_peer_wait_end(&w);
        PyErr_Clear();
        return luaplug_peer_create_python(p);
    }
    Py_INCREF(fn);
    PyObject *res = PyObject_Vectorcall(fn, &p->cidx, 1, NULL);
    Py_DECREF(fn);
    luaplug_peer_wait_end(&w);
    if (res != NULL) iid = luaplug_peer_int(res);
    if (iid > 0) {
        Py_DECREF(res);
        return (uint64_t)iid;
    }
    PyObject *failure = res != NULL ? res : luaplug_peer_fetch();
    if (failure == NULL) return 0;
    Py_XDECREF(luaplug_peer_method(p, LP_S_CREATE_FAILED, &failure, 1, "contract callback raised"));
    Py_DECREF(failure);
    return 0;
}

/* create_instance */
static void luaplug_peer_create(luaplug_vm_loader_data ld, const void *host, const void *args,
                                luaplug_guest_instance *out) {
    (void)host;
    (void)args;
    if (out == NULL) return;
    out->data = NULL;
    out->contract_id = 0;
    luaplug_peer *p = (luaplug_peer *)ld.data;
    if (p == NULL) return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_INCREF(p);
    uint64_t iid = p->provider == NULL ? 0 : luaplug_peer_create_held(p);
    if (iid) {
        out->data = (void *)(uintptr_t)iid;
        out->contract_id = p->contract_id;
    }
    Py_DECREF(p);
    PyGILState_Release(g);
}

static void luaplug_peer_destroy_held(luaplug_peer *p, uint64_t iid) {
    PyObject *id = PyLong_FromUnsignedLongLong(iid);
    if (id == NULL) {
        luaplug_peer_log_error("contract callback raised");
        return;
    }
    if (luaplug_peer_python_serves(p)) goto python;
    luaplug_peer_wait w;
    if (luaplug_peer_wait_begin(p, &w) != 0) {
        /* The VM runs on this thread or waiting would deadlock: dropped at the next safe entry. */
        PyObject *pending = PyObject_GetAttr(p->provider, luaplug_peer_str[LP_S_PENDING]);
        if (pending == NULL || PyList_Append(pending, id) != 0) luaplug_peer_log_error("contract callback raised");
        Py_XDECREF(pending);
        goto done;
    }
    PyObject *fn = PyDict_GetItemWithError(p->entries, luaplug_peer_str[LP_S_DESTROY_ENTRY]); /* borrowed */
    if (fn == NULL) {
        /* The VM was closed (its entries dropped): the Python path says so. */
        luaplug_peer_wait_end(&w);
        PyErr_Clear();
        goto python;
    }
    PyObject *a[2] = {p->cidx, id};
    Py_INCREF(fn);
    PyObject *res = PyObject_Vectorcall(fn, a, 2, NULL);
    Py_DECREF(fn);
    luaplug_peer_wait_end(&w);
    if (res == NULL) {
        PyObject *exc = luaplug_peer_fetch();
        if (exc != NULL) {
            Py_XDECREF(luaplug_peer_method(p, LP_S_DESTROY_FAILED, &exc, 1, "contract callback raised"));
            Py_DECREF(exc);
        }
    }
    Py_XDECREF(res);
    goto done;
python:
    Py_XDECREF(luaplug_peer_method(p, LP_S_DESTROY, &id, 1, "contract callback raised"));
done:
    Py_DECREF(id);
}

/* destroy_instance */
static void luaplug_peer_destroy(luaplug_vm_loader_data ld, const void *host, luaplug_guest_instance inst) {
    (void)host;
    luaplug_peer *p = (luaplug_peer *)ld.data;
    uint64_t iid = (uint64_t)(uintptr_t)inst.data;
    if (p == NULL || iid == 0 || iid > LUAPLUG_MAX_INSTANCE_ID) return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_INCREF(p);
    if (p->provider != NULL && p->cell[LUAPLUG_CELL_RETIRED] == 0) luaplug_peer_destroy_held(p, iid);
    Py_DECREF(p);
    PyGILState_Release(g);
}

static int luaplug_peer_traverse(luaplug_peer *p, visitproc visit, void *arg) {
    Py_VISIT(p->provider);
    Py_VISIT(p->state);
    Py_VISIT(p->cidx);
    Py_VISIT(p->entries);
    Py_VISIT(Py_TYPE(p));
    return 0;
}

static int luaplug_peer_clear(luaplug_peer *p) {
    Py_CLEAR(p->provider);
    Py_CLEAR(p->entries);
    Py_CLEAR(p->cidx);
    /* the state stays: it owns the cell a racing reader may still look at */
    return 0;
}

static void luaplug_peer_dealloc(luaplug_peer *p) {
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    luaplug_peer_clear(p);
    Py_CLEAR(p->state);
    PyObject_GC_Del(p);
    Py_DECREF(tp);
}

static PyObject *luaplug_peer_address(luaplug_peer *p, void *closure) {
    (void)closure;
    return PyLong_FromVoidPtr(p);
}

static PyGetSetDef luaplug_peer_getset[] = {
    {"address", (getter)luaplug_peer_address, NULL, "the interface's loader_data (this Peer's address)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot luaplug_peer_slots[] = {
    {Py_tp_traverse, (void *)luaplug_peer_traverse},
    {Py_tp_clear, (void *)luaplug_peer_clear},
    {Py_tp_dealloc, (void *)luaplug_peer_dealloc},
    {Py_tp_getset, (void *)luaplug_peer_getset},
    {0, NULL},
};

/* peer(provider, state, cidx, contract_id, guard, entries) -> a Peer */
static PyObject *luaplug_peer_new(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    if (n != 6) {
        PyErr_SetString(PyExc_TypeError, "peer(provider, state, cidx, contract_id, guard, entries)");
        return NULL;
    }
    if (!PyLong_CheckExact(args[2]) || (args[5] != Py_None && !PyDict_CheckExact(args[5]))) {
        PyErr_SetString(PyExc_TypeError, "peer: cidx must be an int and entries a dict or None");
        return NULL;
    }
    unsigned long long cid = PyLong_AsUnsignedLongLong(args[3]);
    if (cid == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    int guard = PyObject_IsTrue(args[4]);
    if (guard < 0) return NULL;
    PyObject *cell_obj = PyObject_GetAttr(args[1], luaplug_str_cell_address);
    if (cell_obj == NULL) return NULL;
    unsigned long long cell = PyLong_AsUnsignedLongLong(cell_obj);
    Py_DECREF(cell_obj);
    if (cell == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (cell == 0) {
        PyErr_SetString(PyExc_ValueError, "peer: the state's cell_address is null");
        return NULL;
    }
    luaplug_peer *p = PyObject_GC_New(luaplug_peer, luaplug_peer_type);
    if (p == NULL) return NULL;
    p->provider = Py_NewRef(args[0]);
    p->state = Py_NewRef(args[1]);
    p->cidx = Py_NewRef(args[2]);
    p->entries = args[5] == Py_None ? NULL : Py_NewRef(args[5]);
    p->cell = (volatile const double *)(uintptr_t)cell;
    p->contract_id = (uint64_t)cid;
    p->guard = guard;
    PyObject_GC_Track(p);
    return (PyObject *)p;
}

static PyObject *luaplug_peer_functions(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return Py_BuildValue("(NNN)", PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_peer_create),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_peer_destroy),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_peer_call));
}

static PyMethodDef luaplug_peer_defs[] = {
    {"peer", (PyCFunction)(void (*)(void))luaplug_peer_new, METH_FASTCALL,
     "peer(provider, state, cidx, contract_id, guard, entries) -> the loader_data of a contract's C interface"},
    {"peer_functions", luaplug_peer_functions, METH_NOARGS,
     "peer_functions() -> (create_instance, destroy_instance, vm_call) addresses"},
    {NULL, NULL, 0, NULL},
};

/* Publish `peer`, `peer_functions` and `Peer` on `module` (after luaplug_entry_init, with the GIL
 * held); 0, or -1 with an exception set. `type_name` as for luaplug_entry_init. */
static int luaplug_peer_init(PyObject *module, const char *type_name) {
    static PyType_Spec spec;
    static const char *names[9] = {"_dispatcher", "_pending_destroy", "create_from_c",
                                    "destroy_instance", "call_failed_from_c", "create_failed_from_c",
                                    "destroy_failed_from_c", "create", "destroy"};
    if (luaplug_peer_type == NULL) {
        for (int i = 0; i < 9; i++)
            if ((luaplug_peer_str[i] = PyUnicode_InternFromString(names[i])) == NULL) return -1;
        luaplug_peer_loader = PyImport_ImportModule("luaplug.backend.loader");
        if (luaplug_peer_loader == NULL) return -1;
        luaplug_peer_iface = PyImport_ImportModule("luaplug.backend.interface");
        if (luaplug_peer_iface == NULL) return -1;
        PyObject *graph = PyObject_CallMethod(luaplug_peer_loader, "wait_graph_address", NULL);
        if (graph == NULL) return -1;
        luaplug_peer_graph = (volatile const uintptr_t *)PyLong_AsVoidPtr(graph);
        Py_DECREF(graph);
        if (luaplug_peer_graph == NULL && PyErr_Occurred()) return -1;
        luaplug_peer_type = luaplug_gc_type(&spec, type_name, (int)sizeof(luaplug_peer), luaplug_peer_slots);
        if (luaplug_peer_type == NULL) return -1;
    }
    if (PyModule_AddFunctions(module, luaplug_peer_defs) != 0) return -1;
    return PyObject_SetAttrString(module, "Peer", (PyObject *)luaplug_peer_type);
}

/* ==========================================================================================
 * Typed calls: a typed proxy's method, packed in C, for a function whose params and result
 * are all scalars or strings (spec §14).
 *
 *   typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc,
 *              strings)
 *       (published as Entry.typed_call by luaplug_typed_init) -> a builtin, or None when it
 *       cannot serve that function (call is not an entry of this module in call mode, or
 *       there are more than LUAPLUG_TYPED_MAX_PARAMS params or args bytes, more than
 *       LUAPLUG_TYPED_MAX_STRINGS string params, or an inline length over LUAPLUG_TYPED_MAX_INLINE).
 *       call       the instance's `call` builtin (mode 1) made by this module's bind.
 *       fallback   the proxy's Python method for the function: every call not served here.
 *       retry      retry(exc, fn_id, args, out[, arena]) -> bool, called with a DispatchError the
 *                  call raised and the addresses (and, for a string result, the arena) that call
 *                  used (the proxy's _retry).
 *       error      the class of `exc` above (luaplug.DispatchError).
 *       fn_id      the function's id.
 *       args_size  sizeof what `args` points at (0: no params, `args` is null).
 *       params     one (format, offset, cls, valid) per param, in order: format is the
 *                  `memoryview` letter of the slot's C type (b h i q B H I Q f d ?), or `s`
 *                  for a StringView (a pointer, then a size_t length), offset
 *                  its byte offset from `args`; for an enum, cls is its class (its exact
 *                  members are accepted besides exact ints) and valid the frozenset of its
 *                  values (None for a bitflag enum, and for every other param).
 *       result     None (no result), or (format, members): members maps an enum result's
 *                  values to its members (None: not an enum); format `s`: a StringView built
 *                  in the call arena.
 *       bad_bool   bad_bool(address) reads a bool result whose byte is neither 0 nor 1 (and
 *                  raises, as the proxy's own read does).
 *       name, doc  the method's __name__ and __doc__ (str).
 *       strings    None when no param nor the result is a string, else (inline, arena, spare,
 *                  null_string): inline, the bytes of a string argument served here (a longer
 *                  one goes to `fallback`); arena, a CallArena for this builtin alone (None when
 *                  the result is not a string), rewound before each call, read through its
 *                  `_address` (0: closed, the call goes to `fallback`) and its `reset()`, which a
 *                  call uses while overflow blocks are chained; spare() -> a fresh CallArena for
 *                  a call made while `arena` is in use, closed (`close()`) after that call;
 *                  null_string() raises the error of a null StringView with a length.
 *
 * The builtin serves a call whose arguments are positional, as many as the params, each of
 * the exact class the proxy's memoryview store takes (int, or an enum's member; float; bool)
 * and within its slot's range (an f32 within FLT_MAX, an enum value among `valid`), or, for a
 * string param, an exact str that encodes to UTF-8 in at most `inline` bytes; it hands
 * every other call to `fallback` unchanged, so what is accepted and refused, and how, stays
 * the Python method's. A served call stores the values, calls luaplug_entry_call over the
 * entry (its re-entry refusal, error mapping and _failed), and decodes the out slot. A string
 * result decodes as bytes.decode() does: length 0 is "", a null pointer with a length is
 * null_string()'s error, bytes that are not UTF-8 raise UnicodeDecodeError.
 *
 * Invariants:
 * - The args struct and the out slot a served call passes are the descriptor's own buffer,
 *   or, while that buffer is in use (another thread's call, a nested call on this thread),
 *   a buffer on the C stack: a served call never shares its memory with another call, nor
 *   with the fallback's preallocated struct. The same holds for the bytes of string arguments
 *   (the descriptor's `strbuf`, or one on the C stack) and for the arena (the descriptor's
 *   `arena`, or a `spare()` one).
 * - Only the layout the caller describes is written: the C side knows no type of the ABI.
 */

#include <float.h>
#include <math.h>
#include <string.h>

#define LUAPLUG_TYPED_MAX_PARAMS 16
#define LUAPLUG_TYPED_ARGS_WORDS 16 /* bytes of an args struct served here: at most 8 * this */
#define LUAPLUG_TYPED_OUT_WORDS 2   /* the out slot: a scalar or a StringView */
#define LUAPLUG_TYPED_MAX_STRINGS 4
#define LUAPLUG_TYPED_MAX_INLINE 256

/* The ABI's CallArena (spec §8), as luaplug.abi declares it. */
typedef struct luaplug_call_arena {
    uint8_t *cur, *end, *base;
    const void *host;
    void *first_overflow;
} luaplug_call_arena;

typedef struct luaplug_typed_param {
    Py_ssize_t offset;
    char kind;
    PyObject *cls;   /* an enum's class, or NULL */
    PyObject *valid; /* an enum's values (frozenset), or NULL */
    Py_ssize_t str;  /* a string param: its inline buffer's offset in strbuf */
} luaplug_typed_param;

typedef struct luaplug_typed {
    PyObject_HEAD
    PyObject *call, *fallback, *retry, *error, *members, *bad_bool;
    PyObject *arena, *spare, *null_string; /* NULL: no string result */
    PyObject *name, *doc; /* str: the method's __name__ and __doc__ (def points into them) */
    PyMethodDef def;
    PyObject *stack[3]; /* fn_id, args and out addresses of `buf` */
    Py_ssize_t nstack, nparams, args_size, inline_len;
    char result; /* the result's format, 0: none */
    int busy;    /* `buf`, `strbuf` and `arena` are in use by a call */
    uint64_t buf[LUAPLUG_TYPED_ARGS_WORDS + LUAPLUG_TYPED_OUT_WORDS]; /* the args struct, then the out slot */
    char strbuf[LUAPLUG_TYPED_MAX_STRINGS * LUAPLUG_TYPED_MAX_INLINE]; /* string arguments' bytes */
    luaplug_typed_param params[LUAPLUG_TYPED_MAX_PARAMS];
} luaplug_typed;

static PyTypeObject *luaplug_typed_type;

/* Store `v` into the slot at `p` when it is of the exact class and within range: 0, else -1
 * (the fallback decides; no exception left set). */
static int luaplug_typed_store(const luaplug_typed_param *q, PyObject *v, char *p, char *str, Py_ssize_t inline_len) {
    int ovf;
    long long x;
    switch (q->kind) {
    case 's': {
        /* The StringView points at this call's copy of the UTF-8 bytes (str + q->str). */
        Py_ssize_t len;
        const char *s;
        if (!PyUnicode_CheckExact(v)) return -1;
        if (PyUnicode_IS_ASCII(v)) {
            s = (const char *)PyUnicode_DATA(v);
            len = PyUnicode_GET_LENGTH(v);
        } else if ((s = PyUnicode_AsUTF8AndSize(v, &len)) == NULL) {
            PyErr_Clear(); /* not encodable (a lone surrogate): the fallback raises */
            return -1;
        }
        if (len > inline_len) return -1;
        uint64_t view[2] = {(uint64_t)(uintptr_t)(str + q->str), (uint64_t)len};
        memcpy(str + q->str, s, (size_t)len);
        memcpy(p, view, sizeof view);
        return 0;
    }
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
    case 's': {
        uint64_t view[2];
        memcpy(view, p, sizeof view);
        if (view[1] == 0) return PyUnicode_New(0, 0);
        if (view[0] == 0) {
            v = PyObject_CallNoArgs(t->null_string);
            if (v == NULL) return NULL;
            Py_DECREF(v);
            PyErr_SetString(PyExc_SystemError, "luaplug typed call: null_string() returned");
            return NULL;
        }
        if (view[1] > (uint64_t)PY_SSIZE_T_MAX) { /* as ffi.unpack refuses the length */
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C ssize_t");
            return NULL;
        }
        return PyUnicode_DecodeUTF8((const char *)(uintptr_t)view[0], (Py_ssize_t)view[1], NULL);
    }
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

/* The arena a call of `t` passes (a new reference), rewound, or NULL: with an exception set
 * when making a spare one failed, else (*closed set) when `t->arena` is closed. */
static PyObject *luaplug_typed_arena(luaplug_typed *t, int own, int *closed) {
    if (!own) return PyObject_CallNoArgs(t->spare); /* fresh: nothing to rewind */
    PyObject *address = PyObject_GetAttr(t->arena, luaplug_str_address);
    unsigned long long a;
    if (address == NULL) return NULL;
    int bad = luaplug_uint_arg(address, UINTPTR_MAX, &a) || a == 0;
    Py_DECREF(address);
    if (bad) {
        *closed = 1;
        return NULL;
    }
    luaplug_call_arena *arena = (luaplug_call_arena *)(uintptr_t)a;
    if (arena->first_overflow == NULL) {
        arena->cur = arena->base;
    } else { /* the blocks are emptied too: the arena's own reset */
        PyObject *r = PyObject_CallMethod(t->arena, "reset", NULL);
        if (r == NULL) return NULL;
        Py_DECREF(r);
    }
    return Py_NewRef(t->arena);
}

/* Close a spare arena after its call, keeping the call's outcome (`value`, or the exception). */
static PyObject *luaplug_typed_close_spare(PyObject *arena, PyObject *value) {
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyObject *r = PyObject_CallMethod(arena, "close", NULL);
    Py_DECREF(arena);
    if (r == NULL) {
        Py_XDECREF(value);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return NULL;
    }
    Py_DECREF(r);
    PyErr_Restore(type, exc, tb);
    return value;
}

static PyObject *luaplug_typed_call(PyObject *self, PyObject *const *args, Py_ssize_t n, PyObject *kwnames) {
    luaplug_typed *t = (luaplug_typed *)self;
    uint64_t local[LUAPLUG_TYPED_ARGS_WORDS + LUAPLUG_TYPED_OUT_WORDS];
    char local_str[LUAPLUG_TYPED_MAX_STRINGS * LUAPLUG_TYPED_MAX_INLINE];
    PyObject *stack[4];
    char *base, *str;
    int own = !t->busy, closed = 0;

    if (kwnames != NULL || n != t->nparams) goto fallback;
    base = own ? (char *)t->buf : (char *)local;
    str = own ? t->strbuf : local_str;
    /* Marked before the first store: an enum's membership check and the arena step may run
     * Python code, which lets another thread in. */
    if (own) t->busy = 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (luaplug_typed_store(&t->params[i], args[i], base + t->params[i].offset, str, t->inline_len)) {
            if (own) t->busy = 0;
            goto fallback;
        }
    char *out = base + 8 * LUAPLUG_TYPED_ARGS_WORDS;
    memset(out, 0, 8 * LUAPLUG_TYPED_OUT_WORDS);
    stack[3] = NULL;
    if (t->arena != NULL) {
        stack[3] = luaplug_typed_arena(t, own, &closed);
        if (stack[3] == NULL) {
            if (own) t->busy = 0;
            if (closed) goto fallback; /* the proxy is closed: its method says how */
            return NULL;
        }
    }
    stack[0] = t->stack[0];
    if (own) {
        stack[1] = Py_NewRef(t->stack[1]);
        stack[2] = Py_NewRef(t->stack[2]);
    } else {
        stack[1] = t->args_size ? PyLong_FromVoidPtr(base) : Py_NewRef(t->stack[1]);
        stack[2] = t->result ? PyLong_FromVoidPtr(out) : Py_NewRef(t->stack[2]);
        if (stack[1] == NULL || stack[2] == NULL) {
            Py_XDECREF(stack[1]);
            Py_XDECREF(stack[2]);
            return stack[3] == NULL ? NULL : luaplug_typed_close_spare(stack[3], NULL);
        }
    }
    PyObject *res = luaplug_entry_call(PyCFunction_GET_SELF(t->call), stack, stack[3] ? 4 : t->nstack, NULL);
    if (res == NULL && PyErr_ExceptionMatches(t->error)) {
        /* What the proxy's except clause does: retry (a reload) or name the function. */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL) PyException_SetTraceback(exc, tb);
        PyObject *retry_args[5] = {exc, t->stack[0], stack[1], stack[2], stack[3]};
        PyObject *again = PyObject_Vectorcall(t->retry, retry_args, stack[3] ? 5 : 4, NULL);
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
    if (stack[3] == NULL) return value;
    if (own) {
        Py_DECREF(stack[3]);
        return value;
    }
    return luaplug_typed_close_spare(stack[3], value);
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
    Py_VISIT(t->arena);
    Py_VISIT(t->spare);
    Py_VISIT(t->null_string);
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
    Py_CLEAR(t->arena);
    Py_CLEAR(t->spare);
    Py_CLEAR(t->null_string);
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

static const char luaplug_typed_kinds[] = "bhiqBHIQfd?s";

/* typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc, strings) */
static PyObject *luaplug_typed_new(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    if (n != 12 || !PyUnicode_Check(args[9]) || !PyUnicode_Check(args[10])) {
        PyErr_SetString(PyExc_TypeError, "typed_call(call, fallback, retry, error, fn_id, args_size, params, result, "
                                         "bad_bool, name, doc, strings)");
        return NULL;
    }
    PyObject *call = args[0], *params = args[6], *result = args[7], *strings = args[11];
    if (!PyCFunction_Check(call) || ((PyCFunctionObject *)call)->m_ml != &luaplug_entry_defs[1] ||
        !Py_IS_TYPE(PyCFunction_GET_SELF(call), luaplug_entry_type))
        Py_RETURN_NONE; /* not this module's call entry: the proxy keeps its Python method */
    if (!PyTuple_Check(params) || !PyLong_CheckExact(args[4]) || !PyLong_CheckExact(args[5]) ||
        (result != Py_None && (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2)) ||
        (strings != Py_None && (!PyTuple_Check(strings) || PyTuple_GET_SIZE(strings) != 4 ||
                                !PyLong_CheckExact(PyTuple_GET_ITEM(strings, 0))))) {
        PyErr_SetString(PyExc_TypeError, "typed_call: malformed descriptor");
        return NULL;
    }
    Py_ssize_t np = PyTuple_GET_SIZE(params), args_size = PyLong_AsSsize_t(args[5]), inline_len = 0, nstr = 0;
    if (args_size == -1 && PyErr_Occurred()) return NULL;
    if (strings != Py_None) {
        inline_len = PyLong_AsSsize_t(PyTuple_GET_ITEM(strings, 0));
        if (inline_len == -1 && PyErr_Occurred()) return NULL;
    }
    if (np > LUAPLUG_TYPED_MAX_PARAMS || args_size < 0 || args_size > 8 * LUAPLUG_TYPED_ARGS_WORDS ||
        inline_len < 0 || inline_len > LUAPLUG_TYPED_MAX_INLINE)
        Py_RETURN_NONE;
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
        case 's': width = 16; break;
        default: break;
        }
        if (klen != 1 || width == 0 || off < 0 || off + width > args_size || (kind[0] == 's' && strings == Py_None))
            goto malformed;
        if (kind[0] == 's') {
            if (nstr == LUAPLUG_TYPED_MAX_STRINGS) {
                Py_DECREF(t);
                Py_RETURN_NONE;
            }
            t->params[i].str = LUAPLUG_TYPED_MAX_INLINE * nstr++;
        }
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
    if (strings != Py_None) {
        PyObject *arena = PyTuple_GET_ITEM(strings, 1);
        if ((arena == Py_None) != (t->result != 's')) goto malformed;
        t->inline_len = inline_len;
        t->arena = arena == Py_None ? NULL : Py_NewRef(arena);
        t->spare = Py_NewRef(PyTuple_GET_ITEM(strings, 2));
        t->null_string = Py_NewRef(PyTuple_GET_ITEM(strings, 3));
    } else if (t->result == 's') {
        goto malformed;
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
    "typed_call(call, fallback, retry, error, fn_id, args_size, params, result, bad_bool, name, doc, strings) -> a "
    "typed proxy's method packed in C, or None (luaplug_entry.h)"};

/* After luaplug_entry_init: publish `typed_call` on the Entry type (with the GIL held); 0, or -1
 * with an exception set. `type_name` is the qualified name of the descriptor type, a static string. */
static int luaplug_typed_init(const char *type_name) {
    static PyType_Spec spec;
    if (luaplug_entry_type == NULL) {
        PyErr_SetString(PyExc_SystemError, "luaplug_typed_init before luaplug_entry_init");
        return -1;
    }
    if (luaplug_typed_type == NULL) {
        luaplug_typed_type = luaplug_gc_type(&spec, type_name, (int)sizeof(luaplug_typed), luaplug_typed_slots);
        if (luaplug_typed_type == NULL) return -1;
    }
    PyObject *factory = PyCFunction_NewEx(&luaplug_typed_new_def, NULL, NULL);
    if (factory == NULL) return -1;
    int rc = PyObject_SetAttrString((PyObject *)luaplug_entry_type, "typed_call", factory);
    Py_DECREF(factory);
    return rc;
}

/* ==========================================================================================
 * Peer lookups: the HostApi's find, resolve, create and destroy of a guest contract in C
 * (spec §12), answered from a table per HostApi that the core keeps (luaplug.hostapi).
 *
 * A table holds the registry's providers as they were at one revision. Its address is the
 * word right after the HostApi struct (lookups_new tells this section the struct's size).
 *
 * Using it: luaplug_lookups_init(module) once (with the GIL held): it publishes
 *   lookups_new(host_size, py_find, py_resolve) -> a table's address, 0 without memory
 *       host_size    sizeof(HostApi): the same for every table of the process;
 *       py_find      the core's find_guest_contract callback (a C function address);
 *       py_resolve   the core's resolve_guest_contract callback.
 *   lookups_free(table), lookups_stale(table), lookups_route_python(table, delta)
 *   lookups_publish(table, rows, slots) -> True, or False (the table left stale) without memory
 *       rows   `=QIIII` records: contract id, major, handle index, generation, 0; sorted by
 *              contract id, each id's in the order the registry's find picks them;
 *       slots  `@NII` records, one per handle index: the interface's address (0: none),
 *              its generation, 0.
 *   lookups_functions() -> (find, resolve, create, destroy): the HostApi function addresses.
 * A table argument must be one lookups_new of this module made and lookups_free has not freed
 * (ValueError otherwise); a bytes length that is not a whole number of records is a ValueError.
 *
 * Invariants:
 * - the rows are sorted by contract id, each id's rows in the registry's order;
 * - any registry change marks the table stale (lookups_stale) before the change is visible to
 *   anyone; a stale table, or one whose runtime runs a bundle's init (route_python count > 0:
 *   its lookups are restricted to what it declared), is never read: find and resolve then
 *   call the Python callbacks, which answer from the registry itself and republish the table;
 * - the table is read and replaced under its mutex, never held while anything else runs (the
 *   Python callbacks are called after it is released);
 * - the lookup functions take no GIL: they read C memory only (or call a callback that takes it).
 */

#define LUAPLUG_NULL_INDEX 0xFFFFFFFFu

/* The ABI's GuestContractHandle, Version and GuestContractInterface (luaplug.abi's declarations). */
typedef struct { uint32_t index; uint32_t generation; } luaplug_guest_handle;
typedef struct { uint32_t major; uint32_t minor; uint32_t patch; } luaplug_version;
typedef struct luaplug_guest_interface {
    uint64_t contract_id;
    luaplug_version contract_version;
    uint32_t dispatch_type;
    void (*create_instance)(luaplug_vm_loader_data, const void *, const void *, luaplug_guest_instance *);
    void (*destroy_instance)(luaplug_vm_loader_data, const void *, luaplug_guest_instance);
    union {
        struct { uint32_t function_count; void *const *functions; } native;
        struct { void *call; luaplug_vm_loader_data loader_data; } vm;
    } dispatch;
} luaplug_guest_interface;

/* One record of `rows` and of `slots` (the layouts the registry's publish_peers packs). */
typedef struct luaplug_lookups_row {
    uint64_t contract_id;
    uint32_t major, index, generation, pad;
} luaplug_lookups_row;
typedef struct luaplug_lookups_slot {
    uintptr_t iface;
    uint32_t generation, pad;
} luaplug_lookups_slot;

typedef luaplug_guest_handle (*luaplug_lookups_find_fn)(const void *, uint64_t, uint32_t);
typedef const void *(*luaplug_lookups_resolve_fn)(const void *, luaplug_guest_handle);

typedef struct luaplug_lookups {
    pthread_mutex_t mu;
    luaplug_lookups_row *rows;   /* malloc'd; nrows of them (under mu) */
    size_t nrows;
    luaplug_lookups_slot *slots; /* malloc'd; indexed by handle index (under mu) */
    size_t nslots;
    int stale;                   /* under mu */
    long python;                 /* > 0: every lookup goes through the Python callbacks (under mu) */
    luaplug_lookups_find_fn py_find;
    luaplug_lookups_resolve_fn py_resolve;
} luaplug_lookups;

/* sizeof(HostApi), set by the first lookups_new; 0: no table yet. */
static size_t luaplug_lookups_host_size;
/* The addresses (ints) of this module's live tables (touched with the GIL held). */
static PyObject *luaplug_lookups_live;

static luaplug_lookups *luaplug_lookups_of(const void *host) {
    if (host == NULL || luaplug_lookups_host_size == 0) return NULL;
    return *(luaplug_lookups *const *)((const char *)host + luaplug_lookups_host_size);
}

/* find_guest_contract */
static luaplug_guest_handle luaplug_lookups_find(const void *host, uint64_t contract_id, uint32_t min_major) {
    luaplug_guest_handle out = {LUAPLUG_NULL_INDEX, 0};
    luaplug_lookups *t = luaplug_lookups_of(host);
    if (t == NULL) return out;
    pthread_mutex_lock(&t->mu);
    if (t->stale || t->python > 0) {
        pthread_mutex_unlock(&t->mu);
        return t->py_find(host, contract_id, min_major);
    }
    size_t lo = 0, hi = t->nrows; /* the first row whose contract id is >= contract_id */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->rows[mid].contract_id < contract_id) lo = mid + 1; else hi = mid;
    }
    for (; lo < t->nrows && t->rows[lo].contract_id == contract_id; lo++) {
        if (t->rows[lo].major >= min_major) {
            out.index = t->rows[lo].index;
            out.generation = t->rows[lo].generation;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return out;
}

/* resolve_guest_contract */
static const void *luaplug_lookups_resolve(const void *host, luaplug_guest_handle handle) {
    luaplug_lookups *t = luaplug_lookups_of(host);
    if (t == NULL || handle.index == LUAPLUG_NULL_INDEX) return NULL;
    pthread_mutex_lock(&t->mu);
    if (t->stale || t->python > 0) {
        pthread_mutex_unlock(&t->mu);
        return t->py_resolve(host, handle);
    }
    const void *iface = NULL;
    if (handle.index < t->nslots && t->slots[handle.index].generation == handle.generation)
        iface = (const void *)t->slots[handle.index].iface;
    pthread_mutex_unlock(&t->mu);
    return iface;
}

/* create_guest_instance: the interface's own create_instance, or a null instance. */
static void luaplug_lookups_create(const void *host, const void *vi, const void *args, luaplug_guest_instance *out) {
    const luaplug_guest_interface *iface = (const luaplug_guest_interface *)vi;
    if (out == NULL) return;
    out->data = NULL;
    out->contract_id = 0;
    if (iface == NULL || iface->create_instance == NULL) return;
    iface->create_instance(iface->dispatch.vm.loader_data, host, args, out);
}

/* destroy_guest_instance */
static void luaplug_lookups_destroy(const void *host, const void *vi, luaplug_guest_instance inst) {
    const luaplug_guest_interface *iface = (const luaplug_guest_interface *)vi;
    if (iface == NULL || iface->destroy_instance == NULL) return;
    iface->destroy_instance(iface->dispatch.vm.loader_data, host, inst);
}

/* An int within [0, max] (TypeError / ValueError otherwise): 0, or -1 with an exception set. */
static int luaplug_lookups_uint(PyObject *o, unsigned long long max, const char *what, unsigned long long *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear(); /* negative, or past 64 bits */
    } else if (v <= max) {
        *out = v;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "%s is out of range", what);
    return -1;
}

/* The table args[0] names: one of this module's live tables, else NULL with ValueError set. */
static luaplug_lookups *luaplug_lookups_table(PyObject *const *args, Py_ssize_t n, Py_ssize_t want, const char *usage) {
    unsigned long long a;
    if (n != want) {
        PyErr_Format(PyExc_TypeError, "%s", usage);
        return NULL;
    }
    if (luaplug_lookups_uint(args[0], UINTPTR_MAX, "table", &a) != 0) return NULL;
    int live = a == 0 ? 0 : PySet_Contains(luaplug_lookups_live, args[0]);
    if (live < 0) return NULL;
    if (!live) {
        PyErr_SetString(PyExc_ValueError, "table is not a live peer-lookup table of this module");
        return NULL;
    }
    return (luaplug_lookups *)(uintptr_t)a;
}

/* lookups_new(host_size, py_find, py_resolve) -> table address, 0 without memory */
static PyObject *luaplug_lookups_new(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    unsigned long long size, find, resolve;
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "lookups_new(host_size, py_find, py_resolve)");
        return NULL;
    }
    if (luaplug_lookups_uint(args[0], SIZE_MAX / 2, "host_size", &size) != 0 ||
        luaplug_lookups_uint(args[1], UINTPTR_MAX, "py_find", &find) != 0 ||
        luaplug_lookups_uint(args[2], UINTPTR_MAX, "py_resolve", &resolve) != 0)
        return NULL;
    if (size == 0 || find == 0 || resolve == 0) {
        PyErr_SetString(PyExc_ValueError, "lookups_new: host_size and both callbacks must be non-zero");
        return NULL;
    }
    if (luaplug_lookups_host_size != 0 && luaplug_lookups_host_size != (size_t)size) {
        PyErr_SetString(PyExc_ValueError, "lookups_new: host_size differs from the one of this module's tables");
        return NULL;
    }
    luaplug_lookups *t = (luaplug_lookups *)calloc(1, sizeof(luaplug_lookups));
    if (t == NULL) return PyLong_FromLong(0);
    PyObject *address = PyLong_FromVoidPtr(t);
    if (address == NULL || PySet_Add(luaplug_lookups_live, address) != 0) {
        Py_XDECREF(address);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->stale = 1;
    t->py_find = (luaplug_lookups_find_fn)(uintptr_t)find;
    t->py_resolve = (luaplug_lookups_resolve_fn)(uintptr_t)resolve;
    luaplug_lookups_host_size = (size_t)size; /* the same for every HostApi of the process */
    return address;
}

/* lookups_free(table): the HostApi pointing at it is gone (no lookup can run on it any more). */
static PyObject *luaplug_lookups_free(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    luaplug_lookups *t = luaplug_lookups_table(args, n, 1, "lookups_free(table)");
    if (t == NULL) return NULL;
    if (PySet_Discard(luaplug_lookups_live, args[0]) < 0) return NULL;
    pthread_mutex_destroy(&t->mu);
    free(t->rows);
    free(t->slots);
    free(t);
    Py_RETURN_NONE;
}

/* lookups_stale(table): lookups go through Python until the next publish. */
static PyObject *luaplug_lookups_stale(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    luaplug_lookups *t = luaplug_lookups_table(args, n, 1, "lookups_stale(table)");
    if (t == NULL) return NULL;
    pthread_mutex_lock(&t->mu);
    t->stale = 1;
    pthread_mutex_unlock(&t->mu);
    Py_RETURN_NONE;
}

/* lookups_route_python(table, delta): while the count is positive, lookups go through Python. */
static PyObject *luaplug_lookups_route_python(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    luaplug_lookups *t = luaplug_lookups_table(args, n, 2, "lookups_route_python(table, delta)");
    if (t == NULL) return NULL;
    if (!PyLong_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "delta must be an int, not %.100s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    long delta = PyLong_AsLong(args[1]);
    if (delta == -1 && PyErr_Occurred()) return NULL;
    if (delta > INT32_MAX || delta < INT32_MIN) {
        PyErr_SetString(PyExc_ValueError, "delta is out of range");
        return NULL;
    }
    pthread_mutex_lock(&t->mu);
    t->python += delta;
    pthread_mutex_unlock(&t->mu);
    Py_RETURN_NONE;
}

/* A copy of the records in `o` (a buffer whose length is a multiple of `size`): 0 with *out (NULL
 * when there are none) and *count set, 1 without memory, -1 with an exception set. */
static int luaplug_lookups_records(PyObject *o, size_t size, const char *what, void **out, size_t *count) {
    Py_buffer view;
    *out = NULL;
    *count = 0;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    int rc = 0;
    if ((size_t)view.len % size != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zu-byte records", what, view.len, size);
        rc = -1;
    } else if (view.len > 0) {
        *out = malloc((size_t)view.len);
        if (*out == NULL) {
            rc = 1;
        } else {
            memcpy(*out, view.buf, (size_t)view.len);
            *count = (size_t)view.len / size;
        }
    }
    PyBuffer_Release(&view);
    return rc;
}

/* lookups_publish(table, rows, slots) -> True, or False (left stale) without memory */
static PyObject *luaplug_lookups_publish(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    luaplug_lookups *t = luaplug_lookups_table(args, n, 3, "lookups_publish(table, rows, slots)");
    if (t == NULL) return NULL;
    void *r, *s;
    size_t nrows, nslots;
    int rc = luaplug_lookups_records(args[1], sizeof(luaplug_lookups_row), "rows", &r, &nrows);
    if (rc < 0) return NULL;
    int rs = luaplug_lookups_records(args[2], sizeof(luaplug_lookups_slot), "slots", &s, &nslots);
    if (rs != 0 || rc != 0) {
        free(r);
        free(s);
        if (rs < 0) return NULL;
        Py_RETURN_FALSE;
    }
    pthread_mutex_lock(&t->mu);
    void *old_r = t->rows, *old_s = t->slots;
    t->rows = (luaplug_lookups_row *)r;
    t->nrows = nrows;
    t->slots = (luaplug_lookups_slot *)s;
    t->nslots = nslots;
    t->stale = 0;
    pthread_mutex_unlock(&t->mu);
    free(old_r);
    free(old_s);
    Py_RETURN_TRUE;
}

/* lookups_functions() -> (find, resolve, create, destroy) addresses */
static PyObject *luaplug_lookups_functions(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return Py_BuildValue("(NNNN)", PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_lookups_find),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_lookups_resolve),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_lookups_create),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_lookups_destroy));
}

static PyMethodDef luaplug_lookups_defs[] = {
    {"lookups_new", (PyCFunction)(void (*)(void))luaplug_lookups_new, METH_FASTCALL,
     "lookups_new(host_size, py_find, py_resolve) -> a peer-lookup table's address (0 without memory)"},
    {"lookups_free", (PyCFunction)(void (*)(void))luaplug_lookups_free, METH_FASTCALL,
     "lookups_free(table): free a table lookups_new made"},
    {"lookups_stale", (PyCFunction)(void (*)(void))luaplug_lookups_stale, METH_FASTCALL,
     "lookups_stale(table): lookups go through Python until the next publish"},
    {"lookups_route_python", (PyCFunction)(void (*)(void))luaplug_lookups_route_python, METH_FASTCALL,
     "lookups_route_python(table, delta): while the count is positive, lookups go through Python"},
    {"lookups_publish", (PyCFunction)(void (*)(void))luaplug_lookups_publish, METH_FASTCALL,
     "lookups_publish(table, rows, slots) -> True, or False (left stale) without memory"},
    {"lookups_functions", luaplug_lookups_functions, METH_NOARGS,
     "lookups_functions() -> (find, resolve, create, destroy): the HostApi's peer functions' addresses"},
    {NULL, NULL, 0, NULL},
};

/* Publish the lookups_* functions on `module` (with the GIL held); 0, or -1 with an exception set. */
static int luaplug_lookups_init(PyObject *module) {
    if (luaplug_lookups_live == NULL && (luaplug_lookups_live = PySet_New(NULL)) == NULL) return -1;
    return PyModule_AddFunctions(module, luaplug_lookups_defs);
}

/* ==========================================================================================
 * The lock-order graph: peer-call waits on VMs whose lock is taken inside their engine.
 *
 * For a backend whose VM lock is taken inside the engine (lupa), registered with
 * luaplug.backend.loader.set_wait_graph while no other graph is. Before a peer call may block
 * on a VM, the calling thread records "this thread may block on the VM whose prelude cell is
 * `cell`"; a wait whose chain of holders and their waits leads back to the calling thread is
 * refused instead, so mutual peer calls from two threads fail one call rather than hang both.
 * The holder of a VM is read from its cell: cell[LUAPLUG_CELL_THREAD] while
 * cell[LUAPLUG_CELL_DEPTH] != 0 (the walk is luaplug.backend.loader's _closes_cycle over
 * these records).
 *
 * Using it: luaplug_graph_init(module) once (with the GIL held) publishes
 *   wait_begin(cell_address) -> 0 (the wait is recorded) or -1 (refused: it would close a
 *       cycle, or the calling thread holds that VM itself; nothing recorded)
 *   wait_end() -> None: ends the calling thread's latest wait; each 0 of wait_begin is paired
 *       with one wait_end on the same thread, before the thread exits and while the cell lives
 *   wait_functions() -> (begin, end): the addresses of the same two functions in C,
 *       `int begin(uintptr_t cell)` and `void end(void)`, which take no GIL and call no Python.
 *
 * Invariants:
 * - Threads are named as the cell names them: (double)(uintptr_t)pthread_self(), the numbering
 *   of threading.get_ident().
 * - Every recorded wait is a node in luaplug_graph_waits (newest first; luaplug_graph_count
 *   nodes), read and changed only under luaplug_graph_mu. A thread's waits nest: its latest is
 *   the first of its nodes in the list. A node's cell stays valid while the node is listed
 *   (the waiting peer call holds the VM's state).
 * - luaplug_graph_depth counts the calling thread's open waits, recorded or not, and a node
 *   keeps the depth it was begun at: end() unlinks a node only at its own depth, so a wait
 *   that went unrecorded (no memory for its node) ends without touching an outer one.
 * - The first LUAPLUG_GRAPH_LOCAL depths use the thread's own nodes; deeper ones are malloc'd.
 * - The walk is bounded by the number of nodes: a longer chain (only possible through waits
 *   recorded elsewhere) counts as a cycle.
 */

#include <stdlib.h>

#define LUAPLUG_GRAPH_LOCAL 4

typedef struct luaplug_graph_wait {
    double thread;                 /* the waiting thread */
    volatile const double *cell;   /* the cell of the VM it may block on */
    unsigned depth;                /* the thread's luaplug_graph_depth while this wait is open */
    struct luaplug_graph_wait *next;
} luaplug_graph_wait;

static pthread_mutex_t luaplug_graph_mu = PTHREAD_MUTEX_INITIALIZER;
static luaplug_graph_wait *luaplug_graph_waits;
static size_t luaplug_graph_count;
static _Thread_local unsigned luaplug_graph_depth;
static _Thread_local luaplug_graph_wait luaplug_graph_local[LUAPLUG_GRAPH_LOCAL];

static inline double luaplug_graph_self(void) { return (double)(uintptr_t)pthread_self(); }

/* The thread running Lua in the cell's VM, 0: none. */
static inline double luaplug_graph_holder(volatile const double *cell) {
    return cell[LUAPLUG_CELL_DEPTH] != 0 ? cell[LUAPLUG_CELL_THREAD] : 0;
}

/* The latest recorded wait of `thread` (luaplug_graph_mu held), or NULL. */
static luaplug_graph_wait *luaplug_graph_find(double thread) {
    for (luaplug_graph_wait *w = luaplug_graph_waits; w != NULL; w = w->next)
        if (w->thread == thread) return w;
    return NULL;
}

/* Whether `me` waiting on a VM held by `holder` closes a cycle (luaplug_graph_mu held). */
static int luaplug_graph_closes_cycle(double holder, double me) {
    for (size_t steps = 0; steps <= luaplug_graph_count; steps++) {
        if (holder == 0) return 0;
        if (holder == me) return 1;
        const luaplug_graph_wait *w = luaplug_graph_find(holder);
        if (w == NULL) return 0;
        double next = luaplug_graph_holder(w->cell);
        if (next == holder) return 0; /* it holds what it waited for: it runs, it does not wait */
        holder = next;
    }
    return 1;
}

/* The calling thread may block on the VM whose cell is at `cell`: 0 (recorded unless there was
 * no memory for it), or -1 when waiting would close a cycle (nothing recorded). */
static int luaplug_graph_begin(uintptr_t cell) {
    volatile const double *c = (volatile const double *)cell;
    double me = luaplug_graph_self();
    unsigned depth = luaplug_graph_depth + 1;
    luaplug_graph_wait *node =
        depth <= LUAPLUG_GRAPH_LOCAL ? &luaplug_graph_local[depth - 1] : (luaplug_graph_wait *)malloc(sizeof *node);
    pthread_mutex_lock(&luaplug_graph_mu);
    if (luaplug_graph_closes_cycle(luaplug_graph_holder(c), me)) {
        pthread_mutex_unlock(&luaplug_graph_mu);
        if (depth > LUAPLUG_GRAPH_LOCAL) free(node);
        return -1;
    }
    if (node != NULL) {
        node->thread = me;
        node->cell = c;
        node->depth = depth;
        node->next = luaplug_graph_waits;
        luaplug_graph_waits = node;
        luaplug_graph_count++;
    }
    pthread_mutex_unlock(&luaplug_graph_mu);
    luaplug_graph_depth = depth;
    return 0;
}

/* End the calling thread's latest wait (begun with a 0 of luaplug_graph_begin). */
static void luaplug_graph_end(void) {
    unsigned depth = luaplug_graph_depth;
    if (depth == 0) return; /* no open wait on this thread */
    luaplug_graph_depth = depth - 1;
    double me = luaplug_graph_self();
    luaplug_graph_wait *found = NULL;
    pthread_mutex_lock(&luaplug_graph_mu);
    for (luaplug_graph_wait **p = &luaplug_graph_waits; *p != NULL; p = &(*p)->next) {
        if ((*p)->thread != me) continue;
        if ((*p)->depth == depth) { /* else this wait went unrecorded: the node is an outer one */
            found = *p;
            *p = found->next;
            luaplug_graph_count--;
        }
        break;
    }
    pthread_mutex_unlock(&luaplug_graph_mu);
    if (found != NULL && depth > LUAPLUG_GRAPH_LOCAL) free(found);
}

/* wait_begin(cell_address) -> 0 | -1 */
static PyObject *luaplug_graph_py_begin(PyObject *module, PyObject *arg) {
    (void)module;
    unsigned long long cell;
    if (luaplug_uint_arg(arg, UINTPTR_MAX, &cell) != 0 || cell == 0) {
        PyErr_SetString(PyExc_ValueError, "wait_begin(cell_address): the address of a prelude cell (a non-zero int)");
        return NULL;
    }
    return PyLong_FromLong(luaplug_graph_begin((uintptr_t)cell));
}

static PyObject *luaplug_graph_py_end(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    luaplug_graph_end();
    Py_RETURN_NONE;
}

static PyObject *luaplug_graph_functions(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return Py_BuildValue("(NN)", PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_graph_begin),
                         PyLong_FromVoidPtr((void *)(uintptr_t)&luaplug_graph_end));
}

static PyMethodDef luaplug_graph_defs[] = {
    {"wait_begin", luaplug_graph_py_begin, METH_O,
     "wait_begin(cell_address) -> 0 (the calling thread's wait on that VM is recorded) or -1 (it would deadlock)"},
    {"wait_end", luaplug_graph_py_end, METH_NOARGS, "wait_end() -> None: end the calling thread's latest wait"},
    {"wait_functions", luaplug_graph_functions, METH_NOARGS,
     "wait_functions() -> (begin, end): the addresses of wait_begin and wait_end in C"},
    {NULL, NULL, 0, NULL},
};

/* Publish `wait_begin`, `wait_end` and `wait_functions` on `module` (with the GIL held); 0, or
 * -1 with an exception set. */
static int luaplug_graph_init(PyObject *module) { return PyModule_AddFunctions(module, luaplug_graph_defs); }

#endif /* LUAPLUG_ENTRY_H */
