/* luaplug-cffi: the Python host's call path, as one C function per instance.
 *
 * Included after lp_core.c in the cffi module. lp_install() publishes
 * `_bind(owner, contract_address, instance_id, instance_weakref, mode)` on
 * the module; it returns a builtin (METH_FASTCALL) bound to one instance,
 * which luaplug's Instance uses as its `dispatch` (mode 0) or `call` (mode 1).
 *
 * The fast case - fn_id, args and out plain ints, arena None or a CallArena -
 * converts them here, drops the GIL, runs dispatch_locked() under the state's
 * lock and returns 0 (dispatch) / None (call). Everything else (keyword
 * arguments, cffi pointers, a closed arena, out-of-range values, a non-zero
 * code) is handed to the instance's Python methods, so both paths share one
 * definition of the semantics:
 *   - unusual arguments: Instance._py_dispatch / _py_call(*args, **kwargs)
 *   - a non-zero code:   Instance._failed(code, fn_id, mode)
 *     (the Lua error text is still in this thread's tl_err).
 *
 * Lifetimes: the bound function's `self` is an lp_bound object holding
 * strong references to `owner` (the CffiState, which owns the lp_contract, so
 * the pointer stays valid as long as the function exists) and to the
 * Instance (a temporary `contract.create_instance().call(...)` must survive
 * its own call). The Instance holds the function in its __dict__, so that is
 * a reference cycle: lp_bound is a GC type and the cycle is collected.
 */

typedef struct lp_bound {
    PyObject_HEAD
    lp_contract *c;
    double iid;
    int mode;           /* 0: dispatch -> int, 1: call -> None or raise */
    PyObject *owner;
    PyObject *inst;
} lp_bound;

static PyTypeObject *lp_bound_type;

static PyObject *lp_str_address;    /* interned "_address" */
static PyObject *lp_str_py[2];      /* interned "_py_dispatch", "_py_call" */
static PyObject *lp_str_failed;     /* interned "_failed" */

static int lp_bound_traverse(lp_bound *b, visitproc visit, void *arg) {
    Py_VISIT(b->owner);
    Py_VISIT(b->inst);
    Py_VISIT(Py_TYPE(b));
    return 0;
}

static int lp_bound_clear(lp_bound *b) {
    Py_CLEAR(b->owner);
    Py_CLEAR(b->inst);
    return 0;
}

static void lp_bound_dealloc(lp_bound *b) {
    PyTypeObject *tp = Py_TYPE(b);
    PyObject_GC_UnTrack(b);
    lp_bound_clear(b);
    PyObject_GC_Del(b);
    Py_DECREF(tp);
}

static PyType_Slot lp_bound_slots[] = {
    {Py_tp_traverse, (void *)lp_bound_traverse},
    {Py_tp_clear, (void *)lp_bound_clear},
    {Py_tp_dealloc, (void *)lp_bound_dealloc},
    {0, NULL},
};

static PyType_Spec lp_bound_spec = {
    "luaplug_cffi._native.Bound", sizeof(lp_bound), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, lp_bound_slots,
};

static PyObject *lp_instance(lp_bound *b) {
    if (b->inst == NULL) {   /* cleared by the GC while the cycle was being broken */
        PyErr_SetString(PyExc_ReferenceError, "the luaplug Instance behind this call is gone");
        return NULL;
    }
    return b->inst;
}

static PyObject *lp_slow(lp_bound *b, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PyObject *inst = lp_instance(b);
    if (inst == NULL) return NULL;
    PyObject *meth = PyObject_GetAttr(inst, lp_str_py[b->mode]);
    if (meth == NULL) return NULL;
    PyObject *res = PyObject_Vectorcall(meth, args, nargsf, kwnames);
    Py_DECREF(meth);
    return res;
}

/* A non-negative int that fits `max`, else -1 (no exception left set). */
static int lp_uint_arg(PyObject *o, unsigned long long max, unsigned long long *out) {
    if (!PyLong_CheckExact(o)) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) { PyErr_Clear(); return -1; }
    if (v > max) return -1;
    *out = v;
    return 0;
}

static PyObject *lp_fast(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    lp_bound *b = (lp_bound *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    unsigned long long fn_id, a = 0, o = 0, r = 0;
    if (kwnames != NULL || n < 1 || n > 4) goto slow;
    if (lp_uint_arg(args[0], 0xffffffffULL, &fn_id)) goto slow;
    if (n > 1 && lp_uint_arg(args[1], UINTPTR_MAX, &a)) goto slow;
    if (n > 2 && lp_uint_arg(args[2], UINTPTR_MAX, &o)) goto slow;
    if (n > 3 && args[3] != Py_None) {
        PyObject *addr = PyObject_GetAttr(args[3], lp_str_address);
        if (addr == NULL) { PyErr_Clear(); goto slow; }
        int bad = lp_uint_arg(addr, UINTPTR_MAX, &r);
        Py_DECREF(addr);
        if (bad || r == 0) goto slow;   /* not an arena, or a closed one */
    }

    int code, logged = 0;
    if (b->owner == NULL) goto slow;
    lp_vm *vm = b->c->vm;
    Py_BEGIN_ALLOW_THREADS
    if (vm_lock(vm) != 0) {
        code = ABI_REENTRANT;
    } else {
        code = dispatch_locked(vm, b->c->cidx, (uint32_t)fn_id, b->iid, (uintptr_t)a, (uintptr_t)o,
                               (uintptr_t)r, &logged);
        vm_unlock(vm);
    }
    Py_END_ALLOW_THREADS
    if (code == 0) {
        if (b->mode) Py_RETURN_NONE;
        return PyLong_FromLong(0);
    }
    {
        PyObject *inst = lp_instance(b);
        if (inst == NULL) return NULL;
        PyObject *code_obj = PyLong_FromLong(code);
        if (code_obj == NULL) return NULL;
        PyObject *res = PyObject_CallMethodObjArgs(inst, lp_str_failed, code_obj, args[0],
                                                   b->mode ? Py_True : Py_False, NULL);
        Py_DECREF(code_obj);
        return res;
    }
slow:
    return lp_slow(b, args, nargsf, kwnames);
}

static PyMethodDef lp_fast_def = {
    "luaplug_cffi_dispatch", (PyCFunction)(void (*)(void))lp_fast, METH_FASTCALL | METH_KEYWORDS,
    "Call a function of one contract instance (see luaplug.Instance.dispatch / call)."};

/* _bind(owner, contract_address, instance_id, instance, mode) */
static PyObject *lp_bind(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    (void)module;
    if (n != 5) {
        PyErr_SetString(PyExc_TypeError, "_bind(owner, contract_address, instance_id, instance, mode)");
        return NULL;
    }
    unsigned long long caddr = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    unsigned long long iid = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    long mode = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (caddr == 0) { PyErr_SetString(PyExc_ValueError, "null contract"); return NULL; }
    lp_bound *b = PyObject_GC_New(lp_bound, lp_bound_type);
    if (b == NULL) return NULL;
    b->c = (lp_contract *)(uintptr_t)caddr;
    b->iid = (double)iid;
    b->mode = mode ? 1 : 0;
    Py_INCREF(args[0]);
    b->owner = args[0];
    Py_INCREF(args[3]);
    b->inst = args[3];
    PyObject_GC_Track(b);
    PyObject *fn = PyCFunction_NewEx(&lp_fast_def, (PyObject *)b, NULL);
    Py_DECREF(b);
    return fn;
}

static PyMethodDef lp_bind_def = {
    "_bind", (PyCFunction)(void (*)(void))lp_bind, METH_FASTCALL,
    "_bind(owner, contract_address, instance_id, instance, mode) -> builtin"};

/* Called once from Python (cffi drops the GIL around it, so take it back). */
int lp_install(const char *module_name) {
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -1;
    PyObject *mod = NULL, *fn = NULL;
    if (lp_str_address == NULL) {
        lp_str_address = PyUnicode_InternFromString("_address");
        lp_str_py[0] = PyUnicode_InternFromString("_py_dispatch");
        lp_str_py[1] = PyUnicode_InternFromString("_py_call");
        lp_str_failed = PyUnicode_InternFromString("_failed");
        if (!lp_str_address || !lp_str_py[0] || !lp_str_py[1] || !lp_str_failed) goto done;
    }
    if (lp_bound_type == NULL) {
        lp_bound_type = (PyTypeObject *)PyType_FromSpec(&lp_bound_spec);
        if (lp_bound_type == NULL) goto done;
    }
    mod = PyImport_ImportModule(module_name);
    if (mod == NULL) goto done;
    fn = PyCFunction_NewEx(&lp_bind_def, NULL, NULL);
    if (fn == NULL) goto done;
    rc = PyObject_SetAttrString(mod, "_bind", fn);
done:
    if (rc != 0) PyErr_Print();
    Py_XDECREF(fn);
    Py_XDECREF(mod);
    PyGILState_Release(g);
    return rc;
}
