/* luaplug-lupa: the per-instance native entry (luaplug_entry.h) over lupa.
 *
 * `target` is the prelude's bound dispatcher of one instance, a lupa function taking
 * (fn_id[, args, out[, arena]]) and returning 0, or a non-zero code (with the Lua error text
 * for code 1).
 *
 * lupa cannot run a call while the same state is running one on this thread (see engine.py):
 * such a call is refused from the cell alone. The check runs with the GIL held; a thread that
 * finds depth 0 or another thread's id cannot be the one running Lua in the VM, so a stale
 * read is harmless (lupa's own lock serializes threads).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "luaplug_entry.h"

static int luaplug_entry_refused(const luaplug_entry *e) { return luaplug_cell_running_here(e->cell); }

static PyObject *luaplug_entry_invoke(luaplug_entry *e, const luaplug_args *a) {
    PyObject *stack[4];
    size_t m = 1;
    if (e->target == NULL) {
        PyErr_SetString(PyExc_TypeError, "this entry was bound without a target");
        return NULL;
    }
    stack[0] = a->args[0];
    if (a->arena_address != NULL) {
        stack[1] = a->args[1];
        stack[2] = a->args[2];
        stack[3] = a->arena_address;
        m = 4;
    } else if (a->in != 0 || a->out != 0) {
        /* Fewer arguments are cheaper for lupa to convert: both pointers null -> fn_id alone. */
        stack[1] = a->args[1];
        if (a->nargs > 2) stack[2] = a->args[2];
        m = a->nargs > 2 ? 3 : 2;
    }
    return PyObject_Vectorcall(e->target, stack, m, NULL);
}

static int module_exec(PyObject *module) {
    if (luaplug_entry_init(module, "luaplug_lupa._entry.Entry") != 0) return -1;
    if (luaplug_typed_init("luaplug_lupa._entry.TypedCall") != 0) return -1;
    /* The C interface of every contract (luaplug_entry.h's peer section): peer calls into lupa. */
    if (luaplug_peer_init(module, "luaplug_lupa._entry.Peer") != 0) return -1;
    /* The HostApi's peer lookups (luaplug_entry.h's lookups section, luaplug.NativeLookups). */
    if (luaplug_lookups_init(module) != 0) return -1;
    /* The lock-order graph for peer waits on lupa VMs (luaplug_entry.h's graph section). */
    return luaplug_graph_init(module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "luaplug_lupa._entry", "The per-instance native entry and the contracts' C interface of the lupa backend.", 0, NULL,
    module_slots,
};

PyMODINIT_FUNC PyInit__entry(void) { return PyModuleDef_Init(&module_def); }
