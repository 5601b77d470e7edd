/* Exact Python-heap byte counter: allocator hooks on PYMEM_DOMAIN_MEM and PYMEM_DOMAIN_OBJ.
 *
 * Every block requested through PyMem_* / PyObject_* while the counter runs is remembered in a
 * pointer -> requested-size table, so a free or a realloc subtracts exactly what was added:
 * `current` is the sum of the live blocks' requested sizes, `peak` its maximum. Same figure as
 * tracemalloc's traced memory for these two domains, without computing a traceback per
 * allocation (the part that makes tracemalloc cost 6x on allocation-heavy code).
 *
 * Blocks allocated before start() are not in the table: freeing or reallocating them counts 0
 * for the old block, as in tracemalloc.
 *
 * Why no lock: the MEM and OBJ domains are only called with the GIL held (C API contract), so
 * the hooks, the table and the counters are serialized by the GIL. The free-threaded build
 * breaks that contract; there start() refuses and the Python side uses tracemalloc.
 *
 * Why not PYMEM_DOMAIN_RAW: it is called without the GIL (a lock on every raw allocation), and
 * what reaches it directly is interpreter bookkeeping (thread states, the GIL itself), not the
 * objects of the code under test. pymalloc hands large requests to PyMem_RawMalloc internally,
 * but those were already counted at the OBJ/MEM layer where they were requested.
 *
 * The table lives in memory from the C library's calloc/free, never from a Python allocator: its
 * growth cannot recurse into these hooks, and a tracemalloc running alongside does not count the
 * counter's bookkeeping as an allocation of the code under test.
 *
 * Stacking with other hooks (tracemalloc, memray): a hook installed on top of ours saves ours and
 * restores it when it stops. So stop() removes our hooks only when they are still on top;
 * otherwise they stay installed as a pass-through (one branch per call) and the next start()
 * reuses them. A hook installed *below* ours that is removed takes ours out of the chain with it;
 * get() notices (a canary allocation it cannot see) and raises instead of returning a figure
 * that silently stopped counting.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Two structures remember the requested size of every counted block:
 *
 * - the fast path, for blocks aligned on 16 bytes whose size fits in 16 bits (nearly all of
 *   them: pymalloc's blocks are 16-byte aligned and at most 512 bytes): per 64 KiB chunk of
 *   address space, an array with one uint16 per 16-byte unit holding size + 1 (0 = nothing
 *   counted there). Two live blocks cannot start in the same 16-byte unit, so the unit of the
 *   address is a key without collisions. Consecutive allocations land in neighbouring units,
 *   so the hooks touch memory the way the allocator does (2 bytes of bookkeeping per 16 bytes
 *   of heap span, sequentially), not one random cache line per block. Chunks are found through
 *   a small directory (one entry per 64 KiB) and a one-entry cache of the last chunk used.
 * - the exact table, for everything else (sizes >= 65534 bytes, unaligned addresses): a
 *   pointer -> size open-addressing hash table, power-of-two capacity, linear probing,
 *   backward-shift deletion, grown at 50 % load. A fast-path unit holding BIG says "look here".
 *
 * Measured on 300,000 small dicts (1.2 million live blocks): the pointer table alone for all
 * blocks cost 2.2-3.2x (a cache miss and a page of table per few blocks); with the chunk
 * arrays the counter costs about 1.1-1.2x (see benchmarks/memory_overhead.py).
 */

typedef struct {
    uintptr_t key; /* the block's address; 0 = empty slot */
    size_t size;   /* bytes requested */
} entry_t;

typedef struct {
    uintptr_t key;    /* chunk number + 1; 0 = empty slot */
    uint16_t *units;  /* CHUNK_UNITS entries */
} chunk_slot_t;

#define UNIT_SHIFT 4                                   /* 16-byte units */
#define CHUNK_SHIFT 16                                 /* 64 KiB chunks */
#define CHUNK_UNITS ((size_t)1 << (CHUNK_SHIFT - UNIT_SHIFT))
#define BIG 0xFFFFu                                    /* the size is in the exact table */
#define MAX_INLINE ((size_t)BIG - 2)                   /* stored as size + 1 < BIG */
#define TABLE_BITS 10
#define DIRECTORY_BITS 10

typedef struct {
    entry_t *slots;
    size_t mask; /* capacity - 1 */
    size_t used;
} table_t;

typedef struct {
    table_t big;
    chunk_slot_t *dir;
    size_t dir_mask;
    size_t dir_used;
    uintptr_t last_chunk; /* chunk number + 1 of last_units; 0 = none */
    uint16_t *last_units;
    size_t current;
    size_t peak;
    int counting; /* the tables and the counters are live */
    int broken;   /* bookkeeping memory ran out: figures are incomplete */
    PyMemAllocatorEx orig_mem;
    PyMemAllocatorEx orig_obj;
} state_t;

static state_t st;

static inline size_t
hash_of(uintptr_t key)
{
    /* Fibonacci hashing; the low bits of an address carry no entropy (alignment). */
    return (size_t)(((uint64_t)key * UINT64_C(0x9E3779B97F4A7C15)) >> 24);
}

/* -- the exact table ------------------------------------------------------------------------ */

static int
table_init(table_t *t, size_t capacity)
{
    entry_t *slots = (entry_t *)calloc(capacity, sizeof(entry_t));
    if (slots == NULL) {
        return -1;
    }
    t->slots = slots;
    t->mask = capacity - 1;
    t->used = 0;
    return 0;
}

static void
table_clear(table_t *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = 0;
    t->used = 0;
}

/* Insert or replace without growing (the caller reserved room). Returns the size previously
 * stored for the key, or 0. */
static size_t
table_put(table_t *t, uintptr_t key, size_t size)
{
    size_t mask = t->mask;
    size_t i = hash_of(key) & mask;
    entry_t *slots = t->slots;
    for (;;) {
        if (slots[i].key == 0) {
            slots[i].key = key;
            slots[i].size = size;
            t->used++;
            return 0;
        }
        if (slots[i].key == key) {
            size_t old = slots[i].size;
            slots[i].size = size;
            return old;
        }
        i = (i + 1) & mask;
    }
}

/* Remove the key; return its size, or 0 when it is not in the table. Backward-shift deletion
 * (no tombstones): later entries of the probe run move back so every lookup stays exact. */
static size_t
table_pop(table_t *t, uintptr_t key)
{
    size_t mask = t->mask;
    size_t i = hash_of(key) & mask;
    entry_t *slots = t->slots;
    for (;;) {
        if (slots[i].key == 0) {
            return 0;
        }
        if (slots[i].key == key) {
            break;
        }
        i = (i + 1) & mask;
    }
    size_t size = slots[i].size;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].key == 0) {
            break;
        }
        size_t home = hash_of(slots[j].key) & mask;
        /* Move entry j into the hole at i unless its home lies cyclically in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].key = 0;
    slots[i].size = 0;
    t->used--;
    return size;
}

static int
table_contains(const table_t *t, uintptr_t key)
{
    size_t mask = t->mask;
    size_t i = hash_of(key) & mask;
    for (;;) {
        if (t->slots[i].key == 0) {
            return 0;
        }
        if (t->slots[i].key == key) {
            return 1;
        }
        i = (i + 1) & mask;
    }
}

/* Make room for one more entry: double and rehash beyond a 50 % load. */
static int
table_reserve(table_t *t)
{
    size_t capacity = t->mask + 1;
    if ((t->used + 1) * 2 <= capacity) {
        return 0;
    }
    if (capacity > SIZE_MAX / (4 * sizeof(entry_t))) {
        return -1;
    }
    table_t grown;
    if (table_init(&grown, capacity * 2) < 0) {
        return -1;
    }
    for (size_t k = 0; k < capacity; k++) {
        if (t->slots[k].key != 0) {
            table_put(&grown, t->slots[k].key, t->slots[k].size);
        }
    }
    free(t->slots);
    *t = grown;
    return 0;
}

/* -- the chunk arrays ----------------------------------------------------------------------- */

static int
directory_init(void)
{
    size_t capacity = (size_t)1 << DIRECTORY_BITS;
    st.dir = (chunk_slot_t *)calloc(capacity, sizeof(chunk_slot_t));
    if (st.dir == NULL) {
        return -1;
    }
    st.dir_mask = capacity - 1;
    st.dir_used = 0;
    st.last_chunk = 0;
    st.last_units = NULL;
    return 0;
}

static void
directory_clear(void)
{
    if (st.dir != NULL) {
        for (size_t k = 0; k <= st.dir_mask; k++) {
            free(st.dir[k].units);
        }
    }
    free(st.dir);
    st.dir = NULL;
    st.dir_mask = 0;
    st.dir_used = 0;
    st.last_chunk = 0;
    st.last_units = NULL;
}

/* The units of chunk `key` (chunk number + 1), or NULL when it has none. Chunks are only
 * removed at stop(), so the directory needs no deletion. */
static uint16_t *
directory_find(uintptr_t key)
{
    size_t mask = st.dir_mask;
    size_t i = hash_of(key) & mask;
    for (;;) {
        if (st.dir[i].key == key) {
            return st.dir[i].units;
        }
        if (st.dir[i].key == 0) {
            return NULL;
        }
        i = (i + 1) & mask;
    }
}

static int
directory_grow(void)
{
    size_t capacity = st.dir_mask + 1;
    if (capacity > SIZE_MAX / (4 * sizeof(chunk_slot_t))) {
        return -1;
    }
    chunk_slot_t *grown = (chunk_slot_t *)calloc(capacity * 2, sizeof(chunk_slot_t));
    if (grown == NULL) {
        return -1;
    }
    size_t mask = capacity * 2 - 1;
    for (size_t k = 0; k < capacity; k++) {
        if (st.dir[k].key != 0) {
            size_t i = hash_of(st.dir[k].key) & mask;
            while (grown[i].key != 0) {
                i = (i + 1) & mask;
            }
            grown[i] = st.dir[k];
        }
    }
    free(st.dir);
    st.dir = grown;
    st.dir_mask = mask;
    return 0;
}

static uint16_t *
directory_add(uintptr_t key)
{
    if ((st.dir_used + 1) * 2 > st.dir_mask + 1 && directory_grow() < 0) {
        return NULL;
    }
    uint16_t *units = (uint16_t *)calloc(CHUNK_UNITS, sizeof(uint16_t));
    if (units == NULL) {
        return NULL;
    }
    size_t i = hash_of(key) & st.dir_mask;
    while (st.dir[i].key != 0) {
        i = (i + 1) & st.dir_mask;
    }
    st.dir[i].key = key;
    st.dir[i].units = units;
    st.dir_used++;
    return units;
}

/* The fast-path unit of an aligned address, creating its chunk when `create`; NULL if none. */
static inline uint16_t *
unit_of(uintptr_t address, int create)
{
    uintptr_t key = (address >> CHUNK_SHIFT) + 1;
    uint16_t *units;
    if (key == st.last_chunk) {
        units = st.last_units;
    }
    else {
        units = directory_find(key);
        if (units == NULL) {
            if (!create) {
                return NULL;
            }
            units = directory_add(key);
            if (units == NULL) {
                return NULL;
            }
        }
        st.last_chunk = key;
        st.last_units = units;
    }
    return &units[(address >> UNIT_SHIFT) & (CHUNK_UNITS - 1)];
}

/* -- accounting ----------------------------------------------------------------------------- */

static inline int
aligned(uintptr_t address)
{
    return (address & (((uintptr_t)1 << UNIT_SHIFT) - 1)) == 0;
}

/* Forget a block; return the size counted for it (0 if it was not counted). */
static inline size_t
forget(uintptr_t address)
{
    if (aligned(address)) {
        uint16_t *unit = unit_of(address, 0);
        if (unit == NULL || *unit == 0) {
            return 0;
        }
        uint16_t stored = *unit;
        *unit = 0;
        if (stored != BIG) {
            return (size_t)stored - 1;
        }
    }
    return st.big.used ? table_pop(&st.big, address) : 0;
}

static inline void
account_new(void *ptr, size_t size)
{
    uintptr_t address = (uintptr_t)ptr;
    /* A block already counted at this address was freed while the hooks were out of the
     * chain: replace it, as tracemalloc does. */
    size_t replaced = forget(address);
    if (aligned(address)) {
        uint16_t *unit = unit_of(address, 1);
        if (unit == NULL) {
            st.broken = 1;
            return;
        }
        if (size <= MAX_INLINE) {
            *unit = (uint16_t)(size + 1);
        }
        else if (table_reserve(&st.big) == 0) {
            *unit = BIG;
            table_put(&st.big, address, size);
        }
        else {
            st.broken = 1;
            return;
        }
    }
    else if (table_reserve(&st.big) == 0) {
        table_put(&st.big, address, size);
    }
    else {
        st.broken = 1;
        return;
    }
    st.current = st.current - replaced + size;
    if (st.current > st.peak) {
        st.peak = st.current;
    }
}

static inline void
account_gone(void *ptr)
{
    st.current -= forget((uintptr_t)ptr);
}

static int
is_counted(void *ptr)
{
    uintptr_t address = (uintptr_t)ptr;
    if (aligned(address)) {
        uint16_t *unit = unit_of(address, 0);
        if (unit != NULL && *unit != 0 && *unit != BIG) {
            return 1;
        }
    }
    return table_contains(&st.big, address);
}

/* -- the hooks: ctx is the allocator they wrap ------------------------------------------------ */

static void *
hc_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *orig = (PyMemAllocatorEx *)ctx;
    if (!st.counting) {
        return orig->malloc(orig->ctx, size);
    }
    void *ptr = orig->malloc(orig->ctx, size);
    if (ptr != NULL) {
        account_new(ptr, size);
    }
    return ptr;
}

static void *
hc_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *orig = (PyMemAllocatorEx *)ctx;
    if (!st.counting) {
        return orig->calloc(orig->ctx, nelem, elsize);
    }
    void *ptr = orig->calloc(orig->ctx, nelem, elsize);
    if (ptr != NULL) {
        /* A successful calloc means nelem * elsize did not overflow. */
        account_new(ptr, nelem * elsize);
    }
    return ptr;
}

static void *
hc_realloc(void *ctx, void *old, size_t size)
{
    PyMemAllocatorEx *orig = (PyMemAllocatorEx *)ctx;
    if (!st.counting) {
        return orig->realloc(orig->ctx, old, size);
    }
    void *ptr = orig->realloc(orig->ctx, old, size);
    if (ptr != NULL) {
        if (old != NULL) {
            account_gone(old); /* 0 for a block from before start() */
        }
        account_new(ptr, size);
    }
    return ptr;
}

static void
hc_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *orig = (PyMemAllocatorEx *)ctx;
    if (st.counting && ptr != NULL) {
        account_gone(ptr);
    }
    orig->free(orig->ctx, ptr);
}

static PyMemAllocatorEx hook_mem = {&st.orig_mem, hc_malloc, hc_calloc, hc_realloc, hc_free};
static PyMemAllocatorEx hook_obj = {&st.orig_obj, hc_malloc, hc_calloc, hc_realloc, hc_free};

typedef struct {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx *orig;
    PyMemAllocatorEx *hook;
    int hooked; /* our hook was installed (maybe now a pass-through under other hooks) */
} domain_t;

static domain_t domains[2] = {
    {PYMEM_DOMAIN_MEM, &st.orig_mem, &hook_mem, 0},
    {PYMEM_DOMAIN_OBJ, &st.orig_obj, &hook_obj, 0},
};

static int
on_top(PyMemAllocatorDomain domain, PyMemAllocatorEx *hook)
{
    PyMemAllocatorEx now;
    PyMem_GetAllocator(domain, &now);
    return now.malloc == hc_malloc && now.ctx == hook->ctx;
}

static void
install(PyMemAllocatorDomain domain, PyMemAllocatorEx *orig, PyMemAllocatorEx *hook)
{
    PyMem_GetAllocator(domain, orig);
    PyMem_SetAllocator(domain, hook);
}

/* Whether a domain still passes through our hook (only while counting): on top, or under other
 * hooks, as a canary block shows by landing in the table. */
static int
in_chain(PyMemAllocatorDomain domain, PyMemAllocatorEx *hook)
{
    if (on_top(domain, hook)) {
        return 1;
    }
    int seen;
    if (domain == PYMEM_DOMAIN_MEM) {
        void *canary = PyMem_Malloc(1);
        seen = canary != NULL && is_counted(canary);
        PyMem_Free(canary);
    }
    else {
        void *canary = PyObject_Malloc(1);
        seen = canary != NULL && is_counted(canary);
        PyObject_Free(canary);
    }
    return seen;
}

/* -- module functions ----------------------------------------------------------------------- */

static PyObject *
hc_start(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
#ifdef Py_GIL_DISABLED
    PyErr_SetString(PyExc_RuntimeError,
                    "the heap counter needs the GIL (free-threaded build): use tracemalloc");
    return NULL;
#else
    if (st.counting) {
        PyErr_SetString(PyExc_RuntimeError, "the heap counter is already running");
        return NULL;
    }
    if (table_init(&st.big, (size_t)1 << TABLE_BITS) < 0) {
        return PyErr_NoMemory();
    }
    if (directory_init() < 0) {
        table_clear(&st.big);
        return PyErr_NoMemory();
    }
    st.broken = 0;
    /* A domain whose hook is still installed from an earlier run (a pass-through under other
     * hooks) is reused, unless a hook below it stopped and took it out of the chain; then it
     * wraps whatever the domain has now. A hook still in the chain must not be installed
     * again: its saved allocator would become itself (endless recursion). */
    int out[2];
    st.counting = 1;
    for (int d = 0; d < 2; d++) {
        out[d] = !domains[d].hooked || !in_chain(domains[d].domain, domains[d].hook);
    }
    st.counting = 0;
    for (int d = 0; d < 2; d++) {
        if (out[d]) {
            install(domains[d].domain, domains[d].orig, domains[d].hook);
            domains[d].hooked = 1;
        }
    }
    st.counting = 1;
    st.current = st.peak = 0;
    Py_RETURN_NONE;
#endif
}

static PyObject *
hc_stop(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (!st.counting) {
        Py_RETURN_NONE;
    }
    st.counting = 0;
    for (int d = 0; d < 2; d++) {
        /* A hook installed on top of ours holds ours and will put it back when it stops:
         * then ours stays, as a pass-through (see the top of the file). */
        if (on_top(domains[d].domain, domains[d].hook)) {
            PyMem_SetAllocator(domains[d].domain, domains[d].orig);
            domains[d].hooked = 0;
        }
    }
    table_clear(&st.big);
    directory_clear();
    st.current = st.peak = 0;
    Py_RETURN_NONE;
}

static PyObject *
hc_is_running(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyBool_FromLong(st.counting);
}

static PyObject *
hc_get(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (!st.counting) {
        return Py_BuildValue("(nn)", (Py_ssize_t)0, (Py_ssize_t)0);
    }
    if (!in_chain(domains[0].domain, domains[0].hook) ||
        !in_chain(domains[1].domain, domains[1].hook)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the heap counter was taken out of the allocator chain (an allocator hook "
                        "installed before it, e.g. tracemalloc, was removed while it ran); "
                        "its figures are incomplete");
        return NULL;
    }
    if (st.broken) {
        PyErr_SetString(PyExc_MemoryError,
                        "the heap counter could not allocate its bookkeeping; its figures are "
                        "incomplete");
        return NULL;
    }
    return Py_BuildValue("(nn)", (Py_ssize_t)st.current, (Py_ssize_t)st.peak);
}

static PyObject *
hc_reset_peak(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    st.peak = st.current;
    Py_RETURN_NONE;
}

static PyObject *
hc_table_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return Py_BuildValue("{s:n,s:n,s:n}", "exact_entries", (Py_ssize_t)st.big.used,
                         "exact_capacity", (Py_ssize_t)(st.big.slots ? st.big.mask + 1 : 0),
                         "chunks", (Py_ssize_t)st.dir_used);
}

/* Internal consistency check for the tests: the counted sizes add up to `current`, and every
 * exact-table entry is reachable from its home slot (what backward-shift deletion preserves). */
static PyObject *
hc_check(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (!st.counting) {
        Py_RETURN_TRUE;
    }
    size_t total = 0;
    for (size_t k = 0; st.dir != NULL && k <= st.dir_mask; k++) {
        if (st.dir[k].key == 0) {
            continue;
        }
        for (size_t u = 0; u < CHUNK_UNITS; u++) {
            uint16_t stored = st.dir[k].units[u];
            if (stored != 0 && stored != BIG) {
                total += (size_t)stored - 1;
            }
        }
    }
    for (size_t k = 0; k <= st.big.mask; k++) {
        uintptr_t key = st.big.slots[k].key;
        if (key == 0) {
            continue;
        }
        total += st.big.slots[k].size;
        for (size_t i = hash_of(key) & st.big.mask; i != k; i = (i + 1) & st.big.mask) {
            if (st.big.slots[i].key == 0) {
                Py_RETURN_FALSE;
            }
        }
    }
    return PyBool_FromLong(total == st.current);
}

/* Randomized test of the bookkeeping on synthetic addresses (never dereferenced): aligned and
 * unaligned, small and big sizes, replaced addresses; checked against a plain array after every
 * step. Runs on fresh structures with the real ones set aside; only the C library allocates
 * meanwhile, and the GIL is held, so no hook can touch them. */
static PyObject *
hc_selftest(PyObject *module, PyObject *args)
{
    (void)module;
    unsigned long long seed;
    Py_ssize_t steps;
    if (!PyArg_ParseTuple(args, "Kn", &seed, &steps)) {
        return NULL;
    }
    enum { SLOTS = 4096 };
    uintptr_t *addr = (uintptr_t *)calloc(SLOTS, sizeof(uintptr_t));
    size_t *size = (size_t *)calloc(SLOTS, sizeof(size_t));
    if (addr == NULL || size == NULL) {
        free(addr);
        free(size);
        return PyErr_NoMemory();
    }
    state_t saved = st;
    memset(&st, 0, sizeof(st));
    int ok = table_init(&st.big, (size_t)1 << 3) == 0 && directory_init() == 0;
    /* Not counting: the hooks stay pass-throughs while the structures are borrowed. */
    uint64_t x = seed | 1;
    size_t expected = 0;
    const char *failure = ok ? NULL : "could not allocate";
    for (Py_ssize_t n = 0; ok && n < steps; n++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t slot = (size_t)(x % SLOTS);
        size_t kind = (size_t)((x >> 20) % 8);
        size_t want = (size_t)(x >> 32);
        want = kind < 5 ? want % 600 : kind < 7 ? want % 200000 : want % 70000000;
        if (addr[slot] != 0 && (x >> 40) % 3 == 0) { /* free */
            expected -= size[slot];
            account_gone((void *)addr[slot]);
            addr[slot] = 0;
            size[slot] = 0;
        }
        else {
            if (addr[slot] != 0) { /* realloc in place or moved: forget the old block */
                expected -= size[slot];
                account_gone((void *)addr[slot]);
            }
            /* Distinct addresses per slot; a few unaligned, a few sharing chunks. */
            uintptr_t base = ((uintptr_t)1 << 32) + ((uintptr_t)slot << 12);
            uintptr_t offset = (uintptr_t)(((x >> 48) % 128) * 16) + ((x >> 56) % 5 == 0 ? 8 : 0);
            addr[slot] = base + offset;
            size[slot] = want;
            expected += want;
            account_new((void *)addr[slot], want);
        }
        if (st.broken) {
            failure = "bookkeeping allocation failed";
            ok = 0;
        }
        else if (st.current != expected) {
            failure = "current differs from the reference";
            ok = 0;
        }
    }
    for (size_t k = 0; ok && k < SLOTS; k++) {
        if (addr[k] != 0 && forget(addr[k]) != size[k]) {
            failure = "a stored size differs from the reference";
            ok = 0;
        }
    }
    if (ok && (st.big.used != 0)) {
        failure = "exact table not empty after forgetting every block";
        ok = 0;
    }
    table_clear(&st.big);
    directory_clear();
    st = saved;
    free(addr);
    free(size);
    if (!ok) {
        PyErr_SetString(PyExc_AssertionError, failure);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef hc_methods[] = {
    {"start", hc_start, METH_NOARGS,
     "start()\n--\n\nStart counting Python-heap bytes (PyMem_*/PyObject_*); current and peak "
     "start at 0. RuntimeError if already running."},
    {"stop", hc_stop, METH_NOARGS,
     "stop()\n--\n\nStop counting, restore the original allocators, free the table."},
    {"is_running", hc_is_running, METH_NOARGS, "is_running()\n--\n\nWhether the counter runs."},
    {"get", hc_get, METH_NOARGS,
     "get()\n--\n\n(current, peak): bytes of live blocks allocated since start(), and the "
     "maximum of that since start() or reset_peak(). (0, 0) when not running."},
    {"reset_peak", hc_reset_peak, METH_NOARGS, "reset_peak()\n--\n\nSet peak to current."},
    {"table_stats", hc_table_stats, METH_NOARGS,
     "table_stats()\n--\n\nSizes of the bookkeeping (diagnostics): exact-table entries and "
     "capacity, 64 KiB chunks with unit arrays."},
    {"_check", hc_check, METH_NOARGS,
     "_check()\n--\n\nTests: whether the bookkeeping is consistent with current."},
    {"_selftest", hc_selftest, METH_VARARGS,
     "_selftest(seed, steps)\n--\n\nTests: randomized bookkeeping run on synthetic addresses; "
     "AssertionError on a mismatch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hc_module = {
    PyModuleDef_HEAD_INIT,
    "pytest_bridgeperf.memory._heapcount",
    "Exact Python-heap byte counter (allocator hooks on the MEM and OBJ domains).",
    -1,
    hc_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__heapcount(void)
{
    return PyModule_Create(&hc_module);
}
