/* ------------------------------------------------------------------------ */
/* HostApi peer lookups in C (find, resolve, create/destroy an instance).     */
/*                                                                          */
/* The core keeps, per HostApi, an lp_peers table: the registry's providers  */
/* as it was at one revision. Its address is the word right after the        */
/* HostApi struct (lp_peers_new tells this file the struct's size).     */
/* Invariants:                                                              */
/*  - the rows are sorted by contract id, each id's rows in the order the    */
/*    registry's find picks them (first registered first);                   */
/*  - any registry change marks the table stale (lp_peers_stale) before the  */
/*    change is visible to anyone; a stale table, or one whose runtime runs   */
/*    a bundle's init (its lookups are restricted to what it declared), is    */
/*    never read: find and resolve then call the Python callbacks, which      */
/*    answer from the registry itself and republish the table;               */
/*  - the table is read and replaced under its mutex, never held while       */
/*    anything else runs.                                                    */
/* ------------------------------------------------------------------------ */

#define LP_NULL_INDEX 0xFFFFFFFFu

typedef struct { uint32_t index; uint32_t generation; } HandleC;
typedef struct { uint32_t major; uint32_t minor; uint32_t patch; } VersionC;
typedef struct GuestIfaceC {
    uint64_t contract_id;
    VersionC contract_version;
    uint32_t dispatch_type;
    void (*create_instance)(VmLoaderDataC, const void *, const void *, InstanceC *);
    void (*destroy_instance)(VmLoaderDataC, const void *, InstanceC);
    void *call;
    VmLoaderDataC loader_data;
} GuestIfaceC;

typedef struct lp_peer_row { uint64_t contract_id; uint32_t major; uint32_t index; uint32_t generation; uint32_t pad; } lp_peer_row;
typedef struct lp_peer_slot { uintptr_t iface; uint32_t generation; uint32_t pad; } lp_peer_slot;

typedef HandleC (*lp_find_fn)(const void *, uint64_t, uint32_t);
typedef const void *(*lp_resolve_fn)(const void *, HandleC);

typedef struct lp_peers {
    pthread_mutex_t mu;
    lp_peer_row *rows;      /* malloc'd; nrows of them */
    size_t nrows;
    lp_peer_slot *slots;    /* malloc'd; indexed by handle index */
    size_t nslots;
    int stale;              /* under mu */
    int python;             /* > 0: every lookup goes through the Python callbacks (under mu) */
    lp_find_fn py_find;
    lp_resolve_fn py_resolve;
} lp_peers;

static size_t hostapi_size = 0;

lp_peers *lp_peers_new(size_t host_size, void *py_find, void *py_resolve) {
    hostapi_size = host_size; /* the same for every HostApi of the process */
    lp_peers *p = (lp_peers *)calloc(1, sizeof(lp_peers));
    if (p == NULL) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->stale = 1;
    p->py_find = (lp_find_fn)py_find;
    p->py_resolve = (lp_resolve_fn)py_resolve;
    return p;
}

void lp_peers_free(lp_peers *p) {
    if (p == NULL) return;
    pthread_mutex_destroy(&p->mu);
    free(p->rows);
    free(p->slots);
    free(p);
}

void lp_peers_stale(lp_peers *p) {
    pthread_mutex_lock(&p->mu);
    p->stale = 1;
    pthread_mutex_unlock(&p->mu);
}

void lp_peers_route_python(lp_peers *p, int delta) {
    pthread_mutex_lock(&p->mu);
    p->python += delta;
    pthread_mutex_unlock(&p->mu);
}

/* Replace the table with copies of these arrays; 0, or -1 (table left stale) without memory. */
int lp_peers_publish(lp_peers *p, const lp_peer_row *rows, size_t nrows, const lp_peer_slot *slots, size_t nslots) {
    lp_peer_row *r = (lp_peer_row *)malloc(nrows ? nrows * sizeof(lp_peer_row) : 1);
    lp_peer_slot *s = (lp_peer_slot *)malloc(nslots ? nslots * sizeof(lp_peer_slot) : 1);
    if (r == NULL || s == NULL) {
        free(r);
        free(s);
        return -1;
    }
    if (nrows) memcpy(r, rows, nrows * sizeof(lp_peer_row));
    if (nslots) memcpy(s, slots, nslots * sizeof(lp_peer_slot));
    pthread_mutex_lock(&p->mu);
    lp_peer_row *old_r = p->rows;
    lp_peer_slot *old_s = p->slots;
    p->rows = r;
    p->nrows = nrows;
    p->slots = s;
    p->nslots = nslots;
    p->stale = 0;
    pthread_mutex_unlock(&p->mu);
    free(old_r);
    free(old_s);
    return 0;
}

static lp_peers *peers_of(const void *host) {
    if (host == NULL || hostapi_size == 0) return NULL;
    return *(lp_peers *const *)((const char *)host + hostapi_size);
}

HandleC lp_host_find(const void *host, uint64_t contract_id, uint32_t min_major) {
    HandleC out = {LP_NULL_INDEX, 0};
    lp_peers *p = peers_of(host);
    if (p == NULL) return out;
    pthread_mutex_lock(&p->mu);
    if (p->stale || p->python > 0) {
        pthread_mutex_unlock(&p->mu);
        return p->py_find(host, contract_id, min_major);
    }
    size_t lo = 0, hi = p->nrows; /* the first row with contract id >= contract_id */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->rows[mid].contract_id < contract_id) lo = mid + 1; else hi = mid;
    }
    for (; lo < p->nrows && p->rows[lo].contract_id == contract_id; lo++) {
        if (p->rows[lo].major >= min_major) {
            out.index = p->rows[lo].index;
            out.generation = p->rows[lo].generation;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return out;
}

const void *lp_host_resolve(const void *host, HandleC handle) {
    lp_peers *p = peers_of(host);
    if (p == NULL || handle.index == LP_NULL_INDEX) return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stale || p->python > 0) {
        pthread_mutex_unlock(&p->mu);
        return p->py_resolve(host, handle);
    }
    const void *iface = NULL;
    if (handle.index < p->nslots && p->slots[handle.index].generation == handle.generation)
        iface = (const void *)p->slots[handle.index].iface;
    pthread_mutex_unlock(&p->mu);
    return iface;
}

void lp_host_create_instance(const void *host, const void *vi, const void *args, InstanceC *out) {
    const GuestIfaceC *iface = (const GuestIfaceC *)vi;
    if (out == NULL) return;
    out->data = NULL;
    out->contract_id = 0;
    if (iface == NULL || iface->create_instance == NULL) return;
    iface->create_instance(iface->loader_data, host, args, out);
}

void lp_host_destroy_instance(const void *host, const void *vi, InstanceC inst) {
    const GuestIfaceC *iface = (const GuestIfaceC *)vi;
    if (iface == NULL || iface->destroy_instance == NULL) return;
    iface->destroy_instance(iface->loader_data, host, inst);
}
