/* luaplug-cffi: the small C layer between Python (cffi, API mode) and LuaJIT.
 *
 * Invariants:
 * - No lua_error/longjmp ever crosses a Python frame. Every Lua API call that
 *   can raise (pushes of strings, table/field access, loading) runs inside
 *   lua_cpcall or lua_pcall; the only C function Lua calls here (lp_arena_alloc,
 *   through the FFI) never raises. Python is reached from Lua only through cffi callbacks (HostApi),
 *   which return normally.
 * - Each state has its own recursive mutex, held across a whole call (cffi
 *   drops the GIL around our functions, so two states run in parallel). A
 *   nested call on the same thread (a peer call into another contract of the
 *   same bundle) re-enters the state with lua_pcall; the host prelude refuses
 *   a re-entry of the same contract with ReentrantCall.
 * - Error texts are copied into a thread-local buffer before the lock is
 *   released; lp_last_error() reads it on the same thread.
 * - lp_close() frees the lua_State but never the lp_vm: the struct belongs to
 *   Python (ffi.gc) and keeps answering StaleHandle after the close.
 * - Every state allocates through lp_alloc (malloc/realloc/free), which
 *   refuses growth past the memory limit, if any (Lua raises "not enough
 *   memory", the VM stays usable) and never refuses a shrink or a free. It
 *   runs under the state's lock (only Lua allocates), so mem_used needs no
 *   atomics.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#define LP_OK 0
#define LP_ERR_RUN 1
#define LP_ERR_SYNTAX 2
#define LP_ERR_MEM 3
#define LP_ERR_CLOSED 4

#define ABI_GENERIC 1
#define ABI_STALE 5
#define ABI_INVALID_POINTER 8

typedef struct lp_vm {
    lua_State *L;
    pthread_mutex_t mu;
    uint64_t owner;      /* id of the thread holding mu (0: none); read and written under graph_mu */
    int depth;           /* mu's recursion depth (written by its holder) */
    int prelude_ref;
    int disp_ref;
    int create_ref;      /* P.create and P.destroy, taken at load: the prelude never replaces them */
    int destroy_ref;
    int closed;
    size_t mem_used;     /* bytes the state holds */
    size_t mem_limit;    /* SIZE_MAX: no limit */
} lp_vm;

typedef struct lp_value {
    int type;            /* 0 nil, 1 number, 2 string, 3 boolean */
    double num;
    const char *str;     /* results: malloc'd copy, freed by lp_free_values */
    size_t len;
} lp_value;

typedef struct lp_contract {
    lp_vm *vm;
    int cidx;
    uint64_t contract_id;
} lp_contract;

/* Python side (extern "Python"): logs a failure of a C-path call; kind 0 is a
 * handler's Lua error, kind 1 a failed create_instance. Never called with a
 * state lock held. */
static void lp_log_failure(int kind, const char *text, size_t len);

/* ------------------------------------------------------------------------ */
/* state locks with deadlock detection                                        */
/* Mutual peer calls (A calls B on one thread while B calls A on another)    */
/* would wait for each other forever. Every thread records the VM it blocks  */
/* on and every VM its holder, under one global mutex; a thread about to      */
/* block on a VM whose chain of holders and their waits leads back to itself  */
/* is refused instead (the other threads of the cycle then proceed).          */

/* Threads are named by pthread_self(), the numbering Python's threading.get_ident() and the  */
/* prelude's cell use, so a wait on a VM of another engine (whose holder is in its cell, see  */
/* lp_foreign_wait_begin) takes part in the same graph.                                        */

static pthread_mutex_t graph_mu = PTHREAD_MUTEX_INITIALIZER;

/* A thread blocked (or about to block) on a VM: one of ours (vm) or another engine's (cell). */
typedef struct lp_wait {
    uint64_t tid;
    lp_vm *vm;
    const double *cell;  /* the prelude cell: [0] holder thread, [1] depth */
    struct lp_wait *next;
} lp_wait;
static lp_wait *waits = NULL;  /* under graph_mu */

static uint64_t self_tid(void) { return (uint64_t)pthread_self(); }

static lp_wait *find_wait(uint64_t tid) {
    for (lp_wait *w = waits; w != NULL; w = w->next)
        if (w->tid == tid) return w;
    return NULL;
}

static void unlink_wait(lp_wait *node) {
    for (lp_wait **p = &waits; *p != NULL; p = &(*p)->next)
        if (*p == node) { *p = node->next; return; }
}

/* Whether thread `me` waiting for a VM held by `holder` closes a cycle (graph_mu held). The
 * walk is bounded: a chain longer than any real one is treated as a cycle. */
static int closes_cycle(uint64_t holder, uint64_t me) {
    for (int steps = 0; holder != 0; steps++) {
        if (holder == me || steps > 4096) return 1;
        lp_wait *w = find_wait(holder);
        if (w == NULL) return 0;
        uint64_t next = w->vm != NULL ? w->vm->owner
                        : (w->cell[1] != 0 ? (uint64_t)w->cell[0] : 0);
        if (next == holder) return 0;  /* it holds what it waited for: it runs */
        holder = next;
    }
    return 0;
}

/* Lock vm->mu; 0, or -1 (not locked) when waiting would close a cycle. */
static int vm_lock(lp_vm *vm) {
    if (pthread_mutex_trylock(&vm->mu) != 0) {
        lp_wait node = {self_tid(), vm, NULL, NULL};
        pthread_mutex_lock(&graph_mu);
        if (closes_cycle(vm->owner, node.tid)) {
            pthread_mutex_unlock(&graph_mu);
            return -1;
        }
        node.next = waits;
        waits = &node;
        pthread_mutex_unlock(&graph_mu);
        pthread_mutex_lock(&vm->mu);
        pthread_mutex_lock(&graph_mu);
        unlink_wait(&node);
        pthread_mutex_unlock(&graph_mu);
    }
    if (vm->depth++ == 0) {
        pthread_mutex_lock(&graph_mu);
        vm->owner = self_tid();
        pthread_mutex_unlock(&graph_mu);
    }
    return 0;
}

/* The calling thread is about to block on a VM of another engine whose prelude cell is at
 * `cell` (an address): 0 with the wait recorded, or -1 (nothing recorded) when waiting would
 * close a cycle through any engine's VMs. Pair a 0 with lp_foreign_wait_end. */
int lp_foreign_wait_begin(uintptr_t cell) {
    const double *c = (const double *)cell;
    lp_wait *node = (lp_wait *)malloc(sizeof *node);
    pthread_mutex_lock(&graph_mu);
    uint64_t me = self_tid();
    if (closes_cycle(c[1] != 0 ? (uint64_t)c[0] : 0, me)) {
        pthread_mutex_unlock(&graph_mu);
        free(node);
        return -1;
    }
    if (node != NULL) {  /* without memory the wait goes unrecorded (as before this graph) */
        node->tid = me;
        node->vm = NULL;
        node->cell = c;
        node->next = waits;
        waits = node;
    }
    pthread_mutex_unlock(&graph_mu);
    return 0;
}

void lp_foreign_wait_end(void) {
    pthread_mutex_lock(&graph_mu);
    /* the thread's latest wait: its waits nest, and none of ours is open while it runs this */
    lp_wait *w = find_wait(self_tid());
    if (w != NULL && w->vm == NULL) unlink_wait(w);
    else w = NULL;
    pthread_mutex_unlock(&graph_mu);
    free(w);
}

static void vm_unlock(lp_vm *vm) {
    if (--vm->depth == 0) {
        pthread_mutex_lock(&graph_mu);
        vm->owner = 0;
        pthread_mutex_unlock(&graph_mu);
    }
    pthread_mutex_unlock(&vm->mu);
}

/* vm_lock for host-side steps (setup, close): never refused (they hold no other state). */
static void vm_lock_wait(lp_vm *vm) {
    pthread_mutex_lock(&vm->mu);
    if (vm->depth++ == 0) {
        pthread_mutex_lock(&graph_mu);
        vm->owner = self_tid();
        pthread_mutex_unlock(&graph_mu);
    }
}

#define ABI_REENTRANT 9

#define REENTRANT_TEXT "peer call refused: it would deadlock (mutual calls between bundle VMs on two threads)"

/* ------------------------------------------------------------------------ */
/* thread-local last error                                                    */

static __thread char *tl_err = NULL;
static __thread size_t tl_err_len = 0;

static void set_error(const char *s, size_t n) {
    char *copy = (char *)malloc(n + 1);
    if (copy == NULL) { n = 0; copy = NULL; }
    else { memcpy(copy, s, n); copy[n] = 0; }
    free(tl_err);
    tl_err = copy;
    tl_err_len = copy ? n : 0;
}

/* The error value on top of the stack becomes the thread's last error; pops it.
 * lua_tolstring on a non-string may allocate (and raise), so only strings
 * and numbers are converted. */
static void take_error(lua_State *L) {
    size_t n = 0;
    const char *s = NULL;
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) s = lua_tolstring(L, -1, &n);
    if (s == NULL) { s = "(error object is not a string)"; n = strlen(s); }
    set_error(s, n);
    lua_pop(L, 1);
}

const char *lp_last_error(size_t *len) {
    *len = tl_err_len;
    return tl_err ? tl_err : "";
}

/* ------------------------------------------------------------------------ */
/* arena_alloc(size, arena_addr) -> address: spec section 8, never raises.    */

typedef struct ArenaBlock { struct ArenaBlock *next; size_t capacity; size_t used; } ArenaBlock;
typedef struct HostApiHead {
    void *runtime;
    void *register_guest_contract;
    uint8_t *(*alloc)(const void *, size_t, size_t);
    void (*free)(const void *, uint8_t *, size_t, size_t);
} HostApiHead;
typedef struct CArena {
    uint8_t *cur; uint8_t *end; uint8_t *base; const HostApiHead *host; ArenaBlock *first;
} CArena;

static uintptr_t arena_bump(CArena *a, size_t size) {
    if (a->cur != NULL && (size_t)(a->end - a->cur) >= size) {
        uint8_t *p = a->cur;
        a->cur += size;
        return (uintptr_t)p;
    }
    for (ArenaBlock *b = a->first; b != NULL; b = b->next) {
        if (b->capacity - b->used >= size) {
            uintptr_t p = (uintptr_t)b + b->used;
            b->used += size;
            return p;
        }
    }
    if (a->host == NULL || a->host->alloc == NULL) return 0;
    size_t cap = sizeof(ArenaBlock) + 1 + size;
    if (cap < 4096) cap = 4096;
    ArenaBlock *b = (ArenaBlock *)a->host->alloc(a->host, cap, 8);
    if (b == NULL) return 0;
    b->next = a->first;
    b->capacity = cap;
    b->used = sizeof(ArenaBlock) + size;
    a->first = b;
    return (uintptr_t)b + sizeof(ArenaBlock);
}

/* Called from Lua through the FFI (the prelude casts its address), so the
 * JIT compiles the call into a guest's trace; a lua_CFunction would stop it. */
uint64_t lp_arena_alloc(double size, double arena, double host) {
    if (size <= 0) return 0;
    if (arena != 0) return (uint64_t)arena_bump((CArena *)(uintptr_t)arena, (size_t)size);
    if (host == 0) return 0;
    const HostApiHead *h = (const HostApiHead *)(uintptr_t)host;
    return (uint64_t)(uintptr_t)h->alloc(h, (size_t)size, 1);
}

/* ------------------------------------------------------------------------ */
/* state lifetime                                                             */

static int open_libs(lua_State *L) {
    luaL_openlibs(L);
    return 0;
}

static void *lp_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    lp_vm *vm = (lp_vm *)ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        vm->mem_used -= old;
        return NULL;
    }
    if (nsize > old && vm->mem_used - old + nsize > vm->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p == NULL) {
        /* A failed shrink keeps the old block, which is still big enough. */
        return nsize <= old ? ptr : NULL;
    }
    vm->mem_used = vm->mem_used - old + nsize;
    return p;
}

lp_vm *lp_new(size_t mem_limit) {
    lp_vm *vm = (lp_vm *)calloc(1, sizeof(lp_vm));
    if (vm == NULL) return NULL;
    /* Every state allocates through the process allocator (lp_alloc), capped
     * or not: what one state frees (its loading garbage, a closed state) is
     * reused by the next, where LuaJIT's own allocator would keep a private
     * arena per state. */
    /* The cap applies once the state and its libraries exist: LuaJIT 2.1 does
     * not survive an allocation failing inside lua_newstate (it crashes while
     * unwinding the half-made state), so a cap below what a bare state needs
     * fails here, cleanly, instead. */
    vm->mem_limit = SIZE_MAX;
    vm->L = lua_newstate(lp_alloc, vm);
    if (vm->L == NULL) { free(vm); return NULL; }
    /* No collection while the libraries open (a known, small heap); the
     * prelude, which always runs next, restarts the collector. */
    lua_gc(vm->L, LUA_GCSTOP, 0);
    if (lua_cpcall(vm->L, open_libs, NULL) != 0 || (mem_limit && vm->mem_used > mem_limit)) {
        lua_close(vm->L);
        free(vm);
        return NULL;
    }
    vm->mem_limit = mem_limit ? mem_limit : SIZE_MAX;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&vm->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    vm->prelude_ref = vm->disp_ref = vm->create_ref = vm->destroy_ref = LUA_NOREF;
    return vm;
}

/* ------------------------------------------------------------------------ */
/* the prelude as bytecode: compiled once per process, loaded by every state  */

static int dump_stripped(lua_State *L) {
    /* string.dump(f, true): lua_dump keeps the debug info, which costs every
     * state that loads the prelude a few KiB; the traceback cut and the budget
     * hook need the chunk name only, which the loading call supplies. */
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "dump");
    lua_pushvalue(L, 1);
    lua_pushboolean(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* Compile `src` (text) in a scratch state and dump it without debug info.
 * *out is malloc'd: free it with lp_free_buf. */
int lp_dump(const char *src, size_t len, const char *name, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    lua_State *L = luaL_newstate();
    if (L == NULL) return LP_ERR_MEM;
    luaL_openlibs(L);
    int rc = luaL_loadbufferx(L, src, len, name, "t");
    if (rc == 0) {
        lua_pushcfunction(L, dump_stripped);
        lua_insert(L, -2);
        rc = lua_pcall(L, 1, 1, 0);
        size_t n = 0;
        const char *code = rc == 0 ? lua_tolstring(L, -1, &n) : NULL;
        char *copy = code != NULL ? (char *)malloc(n) : NULL;
        if (copy != NULL) {
            memcpy(copy, code, n);
            *out = copy;
            *out_len = n;
        } else {
            rc = LUA_ERRMEM;
        }
    } else {
        take_error(L);
    }
    lua_close(L);
    if (rc != 0) return rc == LUA_ERRSYNTAX ? LP_ERR_SYNTAX : LP_ERR_MEM;
    return LP_OK;
}

void lp_free_buf(char *p) {
    free(p);
}

/* Returns LP_OK, or LP_ERR_CLOSED when a call is running on this thread. */
int lp_close(lp_vm *vm) {
    vm_lock_wait(vm);
    if (vm->L != NULL) {
        /* A call of this thread is on the stack: closing now would pull the
         * state from under it. The caller retries later. */
        if (lua_gettop(vm->L) != 0) {
            vm_unlock(vm);
            return LP_ERR_CLOSED;
        }
        lua_close(vm->L);
        vm->L = NULL;
    }
    vm->closed = 1;
    vm_unlock(vm);
    return LP_OK;
}

void lp_free(lp_vm *vm) {
    if (vm == NULL) return;
    if (vm->L != NULL) lua_close(vm->L);
    pthread_mutex_destroy(&vm->mu);
    free(vm);
}

/* ------------------------------------------------------------------------ */
/* protected helpers                                                          */

static int status_of(int rc) {
    if (rc == 0) return LP_OK;
    if (rc == LUA_ERRSYNTAX) return LP_ERR_SYNTAX;
    if (rc == LUA_ERRMEM) return LP_ERR_MEM;
    return LP_ERR_RUN;
}

typedef struct load_args {
    lp_vm *vm;
    const char *src; size_t len;
    int rc;
} load_args;

/* Run the prelude chunk and keep its table and its dispatchers (the core calls its setup). */
static int load_body(lua_State *L) {
    load_args *a = (load_args *)lua_touserdata(L, 1);
    lp_vm *vm = a->vm;
    a->rc = luaL_loadbuffer(L, a->src, a->len, "=luaplug_host");
    if (a->rc != 0) return lua_error(L);
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "dispatchers");
    vm->disp_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "create");
    vm->create_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "destroy");
    vm->destroy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->prelude_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int lp_load(lp_vm *vm, const char *src, size_t len) {
    load_args a = {vm, src, len, 0};
    vm_lock_wait(vm);
    /* The prelude loads uncapped, then the cap must hold what it left: LuaJIT
     * 2.1 can leave a half-read chunk behind when an allocation fails while it
     * reads bytecode, and closing such a state crashes. */
    size_t limit = vm->mem_limit;
    vm->mem_limit = SIZE_MAX;
    int rc = lua_cpcall(vm->L, load_body, &a);
    vm->mem_limit = limit;
    if (rc != 0) take_error(vm->L);
    lua_settop(vm->L, 0);
    if (rc == 0 && a.rc == 0 && vm->mem_used > limit) {
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
        if (vm->mem_used > limit) {
            set_error("not enough memory", strlen("not enough memory"));
            vm_unlock(vm);
            return LP_ERR_MEM;
        }
    }
    vm_unlock(vm);
    return status_of(a.rc ? a.rc : rc);
}

/* Generic prelude call: P[entry](args...) -> every result, copied into a
 * malloc'd array (init returns 2 + 4 per contract: no fixed cap). */
typedef struct call_args {
    lp_vm *vm; const char *entry; int nargs; const lp_value *args;
    lp_value *res; int nres;
} call_args;

static int call_body(lua_State *L) {
    call_args *a = (call_args *)lua_touserdata(L, 1);
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->vm->prelude_ref);
    lua_getfield(L, -1, a->entry);
    for (int i = 0; i < a->nargs; i++) {
        const lp_value *v = &a->args[i];
        if (v->type == 1) lua_pushnumber(L, v->num);
        else if (v->type == 2) lua_pushlstring(L, v->str, v->len);
        else if (v->type == 3) lua_pushboolean(L, v->num != 0);
        else lua_pushnil(L);
    }
    lua_call(L, a->nargs, LUA_MULTRET);
    int first = base + 2;
    int n = lua_gettop(L) - first + 1;
    a->res = (lp_value *)calloc(n > 0 ? (size_t)n : 1, sizeof(lp_value));
    if (a->res == NULL) return luaL_error(L, "out of memory copying results");
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        lp_value *r = &a->res[i];
        int t = lua_type(L, idx);
        r->str = NULL; r->len = 0; r->num = 0;
        if (t == LUA_TNUMBER) { r->type = 1; r->num = lua_tonumber(L, idx); }
        else if (t == LUA_TSTRING) {
            size_t len; const char *s = lua_tolstring(L, idx, &len);
            char *copy = (char *)malloc(len + 1);
            if (copy == NULL) return luaL_error(L, "out of memory copying a result");
            memcpy(copy, s, len); copy[len] = 0;
            r->type = 2; r->str = copy; r->len = len;
        }
        else if (t == LUA_TBOOLEAN) { r->type = 3; r->num = lua_toboolean(L, idx); }
        else r->type = 0;
        a->nres = i + 1;
    }
    return 0;
}

int lp_call(lp_vm *vm, const char *entry, int nargs, const lp_value *args, lp_value **res, int *nres) {
    call_args a = {vm, entry, nargs, args, NULL, 0};
    *nres = 0;
    *res = NULL;
    if (vm_lock(vm) != 0) {
        set_error(REENTRANT_TEXT, strlen(REENTRANT_TEXT));
        return LP_ERR_RUN;
    }
    if (vm->L == NULL) {
        vm_unlock(vm);
        set_error("the bundle VM is closed", 23);
        return LP_ERR_CLOSED;
    }
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    int rc = lua_cpcall(L, call_body, &a);
    if (rc != 0) take_error(L);
    lua_settop(L, top);
    vm_unlock(vm);
    *nres = a.nres;
    *res = a.res;   /* the caller frees it with lp_free_results, also after an error */
    return status_of(rc);
}

void lp_free_values(lp_value *vals, int n) {
    for (int i = 0; i < n; i++) {
        if (vals[i].type == 2) free((void *)vals[i].str);
        vals[i].str = NULL;
    }
}

void lp_free_results(lp_value *vals, int n) {
    if (vals == NULL) return;
    lp_free_values(vals, n);
    free(vals);
}

/* ------------------------------------------------------------------------ */
/* the hot path: one call from Python                                         */

/* dispatchers[cidx](fn_id, iid, args, out, arena) -> code[, message].
 * rawgeti and pushnumber never raise; the call itself is protected. */
static int dispatch_locked(lp_vm *vm, int cidx, uint32_t fn_id, double iid,
                           uintptr_t args, uintptr_t out, uintptr_t arena, int *logged) {
    lua_State *L = vm->L;
    if (L == NULL) return ABI_STALE;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8)) return ABI_GENERIC;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->disp_ref);
    lua_rawgeti(L, -1, cidx);
    if (!lua_isfunction(L, -1)) { lua_settop(L, top); return ABI_STALE; }
    lua_pushnumber(L, (lua_Number)fn_id);
    lua_pushnumber(L, iid);
    lua_pushnumber(L, (lua_Number)args);
    lua_pushnumber(L, (lua_Number)out);
    lua_pushnumber(L, (lua_Number)arena);
    int rc = lua_pcall(L, 5, 2, 0);
    int code;
    if (rc != 0) {
        take_error(L);
        code = ABI_GENERIC;
        *logged = 1;
    } else {
        code = (int)lua_tonumber(L, -2);
        if (code == ABI_GENERIC) {
            lua_settop(L, top + 3);
            take_error(L);
            *logged = 1;
        }
    }
    lua_settop(L, top);
    return code;
}

int lp_dispatch(lp_vm *vm, int cidx, uint32_t fn_id, uint64_t iid, uintptr_t args, uintptr_t out, uintptr_t arena) {
    int logged = 0;
    if (vm_lock(vm) != 0) return ABI_REENTRANT;
    int code = dispatch_locked(vm, cidx, fn_id, (double)iid, args, out, arena, &logged);
    vm_unlock(vm);
    return code;
}

/* ------------------------------------------------------------------------ */
/* the C GuestContractInterface pointers (peer calls never enter Python,      */
/* except to log a failure, after the lock is released)                       */

typedef struct { void *data; } VmLoaderDataC;
typedef struct { void *data; uint64_t contract_id; } InstanceC;
typedef struct { const uint8_t *ptr; size_t len; } StringViewC;
typedef struct { uint32_t code; StringViewC message; } AbiErrorC;

void lp_vm_call(VmLoaderDataC ld, InstanceC inst, uint32_t fn_id, const void *args, void *out,
                void *arena, AbiErrorC *err) {
    int code = ABI_INVALID_POINTER;
    int logged = 0;
    lp_contract *c = (lp_contract *)ld.data;
    if (c != NULL && c->vm != NULL) {
        if (vm_lock(c->vm) != 0) {
            code = ABI_REENTRANT;
            set_error(REENTRANT_TEXT, strlen(REENTRANT_TEXT));
            logged = 1;
        } else {
            code = dispatch_locked(c->vm, c->cidx, fn_id, (double)(uintptr_t)inst.data, (uintptr_t)args,
                                   (uintptr_t)out, (uintptr_t)arena, &logged);
            vm_unlock(c->vm);
        }
        if (logged) lp_log_failure(0, tl_err ? tl_err : "", tl_err_len);
    }
    if (err != NULL) {
        err->code = (uint32_t)code;
        err->message.ptr = NULL;
        err->message.len = 0;
    }
}

/* P.create(cidx) -> id | 0, reason (destroy: 0) or P.destroy(cidx, iid), through the refs taken
 * at load: rawgeti and pushnumber never raise; the call itself is protected. A create that gives
 * no id leaves its reason (or the Lua error) as this thread's error. */
static double entry_call(lp_contract *c, int destroy, double iid) {
    lp_vm *vm = c->vm;
    double out = 0;
    if (vm_lock(vm) != 0) {
        set_error(REENTRANT_TEXT, strlen(REENTRANT_TEXT));
        return 0;
    }
    if (vm->L == NULL) {
        vm_unlock(vm);
        set_error("the bundle VM is closed", 23);
        return 0;
    }
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, destroy ? vm->destroy_ref : vm->create_ref);
    lua_pushnumber(L, (lua_Number)c->cidx);
    if (destroy) lua_pushnumber(L, iid);
    int rc = lua_pcall(L, destroy ? 2 : 1, 2, 0);
    if (rc != 0) {
        take_error(L);
    } else if (!destroy) {
        if (lua_type(L, -2) == LUA_TNUMBER) out = lua_tonumber(L, -2);
        if (out <= 0) {
            size_t len = 0;
            const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            if (why != NULL) set_error(why, len);
            else set_error("create_instance failed", 22);
        }
    }
    lua_settop(L, top);
    vm_unlock(vm);
    return out;
}

void lp_create_instance(VmLoaderDataC ld, const void *host, const void *args, InstanceC *out) {
    (void)host; (void)args;
    if (out == NULL) return;
    out->data = NULL;
    out->contract_id = 0;
    lp_contract *c = (lp_contract *)ld.data;
    if (c == NULL || c->vm == NULL) return;
    double id = entry_call(c, 0, 0);
    if (id <= 0) lp_log_failure(1, tl_err ? tl_err : "", tl_err_len);
    if (id > 0) {
        out->data = (void *)(uintptr_t)id;
        out->contract_id = c->contract_id;
    }
}

void lp_destroy_instance(VmLoaderDataC ld, const void *host, InstanceC inst) {
    (void)host;
    lp_contract *c = (lp_contract *)ld.data;
    if (c == NULL || c->vm == NULL || inst.data == NULL) return;
    entry_call(c, 1, (double)(uintptr_t)inst.data);
}

const char *lp_luajit_version(void) {
    return LUAJIT_VERSION;
}
