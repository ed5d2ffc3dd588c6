/* luaplug-cffi: the per-instance native entry (luaplug_entry.h) over lp_core.c.
 *
 * Included after lp_core.c in the cffi module. `data` is the contract's lp_contract (owned by
 * the CffiState the entry holds). A call converts nothing: it drops the GIL and runs
 * dispatch_locked() under the state's recursive lock, so a same-thread re-entry is served
 * (never refused from the cell); a code of its own is ReentrantCall when waiting for the lock
 * would deadlock.
 */

#include "luaplug_entry.h"

static int luaplug_entry_refused(const luaplug_entry *e) {
    (void)e;
    return 0;
}

static PyObject *luaplug_entry_invoke(luaplug_entry *e, const luaplug_args *a) {
    lp_contract *c = (lp_contract *)e->data;
    if (c == NULL) {
        PyErr_SetString(PyExc_TypeError, "this entry was bound without its contract");
        return NULL;
    }
    lp_vm *vm = c->vm;
    int code, logged = 0;
    Py_BEGIN_ALLOW_THREADS
    if (vm_lock(vm) != 0) {
        code = ABI_REENTRANT;
    } else {
        code = dispatch_locked(vm, c->cidx, a->fn_id, e->instance_id, a->in, a->out, a->arena, &logged);
        vm_unlock(vm);
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(code);
}

/* Called once from Python (cffi drops the GIL around it, so take it back). */
int lp_install(const char *module_name) {
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -1;
    PyObject *mod = PyImport_ImportModule(module_name);
    if (mod != NULL) rc = luaplug_entry_init(mod, "luaplug_cffi._native.Entry");
    if (rc == 0) rc = luaplug_typed_init("luaplug_cffi._native.TypedCall");
    if (rc == 0) rc = luaplug_lookups_init(mod); /* the HostApi's peer lookups (luaplug.NativeLookups) */
    if (rc != 0) PyErr_Print();
    Py_XDECREF(mod);
    PyGILState_Release(g);
    return rc;
}
