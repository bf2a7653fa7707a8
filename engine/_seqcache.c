/*
 * _seqcache: the block pool's isolated-request cycle, in C.
 *
 * A sequential replay runs one request at a time, so between requests every
 * block is free. A request's whole life (lookup, touch, allocate, cache, free
 * tail first) then reduces to BlockPool.cycle_isolated in engine/block_pool.py.
 * This module is the same state machine with the same rules, written in C so
 * that replay reaches millions of blocks per second. engine/block_pool.py stays
 * the readable reference; tests replay random traces through both and through
 * engine/naive.py and require identical hits, block ids, free queues and maps.
 *
 * State (ids index the arrays; block 0 is vLLM's null block and never used):
 *   hash[b]      the key block b carries, or NULL (owned reference)
 *   prev/next    the tail of the free queue as an intrusive doubly linked list
 *   in_tail[b]   whether b is linked in the tail
 *   head         a stack of unhashed freed blocks; its top is the queue head
 *   fresh_next   the first never-used id; fresh_end (-1: unbounded) bounds them
 *   cached       dict: key -> oldest block id holding it (Python ints)
 *   duplicates   dict: key -> list of younger block ids holding it (no dedup)
 *
 * Free queue = reversed(head) + range(fresh_next, fresh_end) + tail.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t cap;          /* allocated length of the arrays */
    PyObject **hash;
    PyObject **id_obj;       /* id_obj[b]: the Python int b, made once (owned) */
    Py_ssize_t *prev, *next;
    char *in_tail;
    Py_ssize_t tail_first, tail_last, tail_len;
    Py_ssize_t *head;
    Py_ssize_t head_len, head_cap;
    Py_ssize_t fresh_next, fresh_end; /* fresh_end < 0: unbounded */
    int to_head;             /* free order "current": unhashed frees go to the head */
    PyObject *cached;
    PyObject *duplicates;
    long long num_evicted;
    /* scratch, reused across requests */
    Py_ssize_t *hits, *fresh_ids;
    Py_ssize_t scratch_cap;
    PyObject *last_hits, *last_new;  /* the latest request's block ids (lists) */
} SeqCache;

static int grow(SeqCache *s, Py_ssize_t need) {
    if (need <= s->cap) return 0;
    Py_ssize_t cap = s->cap ? s->cap : 64;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 16) { PyErr_NoMemory(); return -1; }
        cap *= 2;
    }
    PyObject **h = PyMem_Realloc(s->hash, cap * sizeof(PyObject *));
    if (!h) { PyErr_NoMemory(); return -1; }
    s->hash = h;
    PyObject **ids = PyMem_Realloc(s->id_obj, cap * sizeof(PyObject *));
    if (!ids) { PyErr_NoMemory(); return -1; }
    s->id_obj = ids;
    Py_ssize_t *p = PyMem_Realloc(s->prev, cap * sizeof(Py_ssize_t));
    if (!p) { PyErr_NoMemory(); return -1; }
    s->prev = p;
    Py_ssize_t *n = PyMem_Realloc(s->next, cap * sizeof(Py_ssize_t));
    if (!n) { PyErr_NoMemory(); return -1; }
    s->next = n;
    char *t = PyMem_Realloc(s->in_tail, cap);
    if (!t) { PyErr_NoMemory(); return -1; }
    s->in_tail = t;
    for (Py_ssize_t i = s->cap; i < cap; i++) {
        s->hash[i] = NULL; s->id_obj[i] = NULL; s->prev[i] = -1; s->next[i] = -1; s->in_tail[i] = 0;
    }
    s->cap = cap;
    return 0;
}

static int grow_scratch(SeqCache *s, Py_ssize_t need) {
    if (need <= s->scratch_cap) return 0;
    Py_ssize_t cap = s->scratch_cap ? s->scratch_cap : 256;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 16) { PyErr_NoMemory(); return -1; }
        cap *= 2;
    }
    Py_ssize_t *a = PyMem_Realloc(s->hits, cap * sizeof(Py_ssize_t));
    if (!a) { PyErr_NoMemory(); return -1; }
    s->hits = a;
    Py_ssize_t *b = PyMem_Realloc(s->fresh_ids, cap * sizeof(Py_ssize_t));
    if (!b) { PyErr_NoMemory(); return -1; }
    s->fresh_ids = b;
    s->scratch_cap = cap;
    return 0;
}

#define CHECK_INIT(s, ret)                                                         \
    do {                                                                           \
        if (!(s)->cached) {                                                        \
            PyErr_SetString(PyExc_RuntimeError, "SeqCache.__init__ has not run"); \
            return ret;                                                            \
        }                                                                          \
    } while (0)

static inline void tail_unlink(SeqCache *s, Py_ssize_t b) {
    Py_ssize_t p = s->prev[b], n = s->next[b];
    if (p >= 0) s->next[p] = n; else s->tail_first = n;
    if (n >= 0) s->prev[n] = p; else s->tail_last = p;
    s->prev[b] = s->next[b] = -1;
    s->in_tail[b] = 0;
    s->tail_len--;
}

static inline void tail_append(SeqCache *s, Py_ssize_t b) {
    s->prev[b] = s->tail_last;
    s->next[b] = -1;
    if (s->tail_last >= 0) s->next[s->tail_last] = b; else s->tail_first = b;
    s->tail_last = b;
    s->in_tail[b] = 1;
    s->tail_len++;
}

static int head_push(SeqCache *s, Py_ssize_t b) {
    if (s->head_len == s->head_cap) {
        Py_ssize_t cap = s->head_cap ? s->head_cap * 2 : 64;
        Py_ssize_t *h = PyMem_Realloc(s->head, cap * sizeof(Py_ssize_t));
        if (!h) { PyErr_NoMemory(); return -1; }
        s->head = h;
        s->head_cap = cap;
    }
    s->head[s->head_len++] = b;
    return 0;
}

/* The Python int for block id b, created on first use and kept (borrowed). */
static inline PyObject *block_id_obj(SeqCache *s, Py_ssize_t b) {
    if (!s->id_obj[b]) s->id_obj[b] = PyLong_FromSsize_t(b);
    return s->id_obj[b];
}

static Py_ssize_t num_free(SeqCache *s) {
    if (s->fresh_end < 0) return PY_SSIZE_T_MAX;
    return s->head_len + (s->fresh_end - s->fresh_next) + s->tail_len;
}

/* Drop the hash of block b, which is being reallocated (an eviction). */
static int evict(SeqCache *s, Py_ssize_t b) {
    PyObject *key = s->hash[b];
    PyObject *first = PyDict_GetItemWithError(s->cached, key); /* borrowed */
    if (!first) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_AssertionError, "block %zd carries a hash missing from the map", b);
        return -1;
    }
    PyObject *younger = PyDict_GetItemWithError(s->duplicates, key); /* borrowed */
    if (!younger && PyErr_Occurred()) return -1;
    if (first == s->id_obj[b] || PyLong_AsSsize_t(first) == b) {
        if (younger) {
            /* the oldest duplicate becomes the block lookups return */
            PyObject *promoted = PyList_GET_ITEM(younger, 0);
            if (PyDict_SetItem(s->cached, key, promoted) < 0) return -1;
            if (PySequence_DelItem(younger, 0) < 0) return -1;
            if (PyList_GET_SIZE(younger) == 0 && PyDict_DelItem(s->duplicates, key) < 0) return -1;
        } else if (PyDict_DelItem(s->cached, key) < 0) {
            return -1;
        }
    } else {
        if (!younger) { PyErr_Format(PyExc_AssertionError, "block %zd is not mapped by its hash", b); return -1; }
        PyObject *id = block_id_obj(s, b);
        if (!id) return -1;
        PyObject *r = PyObject_CallMethod(younger, "remove", "O", id);
        if (!r) return -1;
        Py_DECREF(r);
        if (PyList_GET_SIZE(younger) == 0 && PyDict_DelItem(s->duplicates, key) < 0) return -1;
    }
    s->hash[b] = NULL;
    Py_DECREF(key);
    s->num_evicted++;
    return 0;
}

/* Give block b the key `key` and make it hittable (the oldest holder wins lookups). */
static int cache_block(SeqCache *s, Py_ssize_t b, PyObject *key) {
    PyObject *id = block_id_obj(s, b); /* borrowed */
    if (!id) return -1;
    PyObject *held = PyDict_SetDefault(s->cached, key, id); /* borrowed */
    if (!held) return -1;
    if (held != id) {
        PyObject *younger = PyDict_GetItemWithError(s->duplicates, key);
        if (!younger) {
            if (PyErr_Occurred()) return -1;
            younger = PyList_New(0);
            if (!younger) return -1;
            if (PyDict_SetItem(s->duplicates, key, younger) < 0) { Py_DECREF(younger); return -1; }
            Py_DECREF(younger); /* the dict holds it */
        }
        if (PyList_Append(younger, id) < 0) return -1;
    }
    Py_INCREF(key);
    s->hash[b] = key;
    return 0;
}

static PyObject *ids_to_list(const Py_ssize_t *ids, Py_ssize_t n) {
    PyObject *l = PyList_New(n);
    if (!l) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromSsize_t(ids[i]);
        if (!v) { Py_DECREF(l); return NULL; }
        PyList_SET_ITEM(l, i, v);
    }
    return l;
}

/*
 * cycle(keys, max_hit_blocks, total_blocks, cache_end, record=False) -> hits or -1
 *
 * keys: the request's block keys (a list); max_hit_blocks: most leading blocks a
 * lookup may return (already capped by the caller); total_blocks: blocks the
 * request's KV needs; cache_end: blocks [hits, cache_end) receive keys[i].
 * Returns the number of hit blocks, or -1 if the request cannot fit (nothing
 * changes then). With record=True the hit and new block ids are kept in
 * last_hits / last_new for tests.
 */
static PyObject *SeqCache_cycle(SeqCache *s, PyObject *args) {
    PyObject *keys;
    Py_ssize_t max_hit, total, cache_end;
    int record = 0;
    if (!PyArg_ParseTuple(args, "O!nnn|p", &PyList_Type, &keys, &max_hit, &total, &cache_end, &record)) return NULL;
    CHECK_INIT(s, NULL);
    if (total < 0) { PyErr_SetString(PyExc_ValueError, "total_blocks must not be negative"); return NULL; }
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    if (max_hit > nkeys) max_hit = nkeys;
    if (max_hit > total) max_hit = total;
    if (max_hit < 0) max_hit = 0;
    if (cache_end > nkeys) cache_end = nkeys;
    if (cache_end > total) cache_end = total;
    /* capacity: the hits are free blocks too, so the whole request must fit */
    if (s->fresh_end >= 0 && total > num_free(s)) return PyLong_FromLong(-1);
    if (grow_scratch(s, total + 1) < 0) return NULL;

    /* 1. lookup: the longest run of cached keys from the start */
    Py_ssize_t k = 0;
    for (; k < max_hit; k++) {
        PyObject *v = PyDict_GetItemWithError(s->cached, PyList_GET_ITEM(keys, k));
        if (!v) { if (PyErr_Occurred()) return NULL; break; }
        s->hits[k] = PyLong_AsSsize_t(v);
    }
    Py_ssize_t need = total - k;

    /* 2. touch: hits leave the free queue. A malformed trace can repeat a key
       inside one request, so a block may be hit twice: unlink it once. */
    for (Py_ssize_t i = 0; i < k; i++)
        if (s->in_tail[s->hits[i]]) tail_unlink(s, s->hits[i]);

    /* 3. allocate: pop the head stack, then fresh ids, then the LRU tail */
    Py_ssize_t *out = s->fresh_ids;
    Py_ssize_t n = 0;
    while (n < need && s->head_len > 0) out[n++] = s->head[--s->head_len];
    if (n < need) {
        Py_ssize_t want = need - n;
        Py_ssize_t stop = s->fresh_next + want;
        if (s->fresh_end >= 0 && stop > s->fresh_end) stop = s->fresh_end;
        if (grow(s, stop) < 0) return NULL;
        while (s->fresh_next < stop) out[n++] = s->fresh_next++;
    }
    while (n < need) {
        Py_ssize_t b = s->tail_first;
        if (b < 0) { PyErr_SetString(PyExc_AssertionError, "free queue ran dry after the capacity check"); return NULL; }
        tail_unlink(s, b);
        out[n++] = b;
    }
    for (Py_ssize_t i = 0; i < need; i++)
        if (s->hash[out[i]] && evict(s, out[i]) < 0) return NULL;

    /* 4. cache the newly computed full blocks */
    for (Py_ssize_t i = k; i < cache_end; i++)
        if (cache_block(s, out[i - k], PyList_GET_ITEM(keys, i)) < 0) return NULL;

    /* 5. free tail first: new blocks deepest first, then the hits */
    Py_ssize_t group_start = s->head_len;
    for (Py_ssize_t i = need - 1; i >= 0; i--) {
        Py_ssize_t b = out[i];
        if (s->to_head && !s->hash[b]) {
            if (head_push(s, b) < 0) return NULL;
        } else {
            tail_append(s, b);
        }
    }
    /* The unhashed frees form one group prepended in freeing order: the first
       freed must end on top of the stack, so reverse what was pushed. */
    for (Py_ssize_t lo = group_start, hi = s->head_len - 1; lo < hi; lo++, hi--) {
        Py_ssize_t t = s->head[lo]; s->head[lo] = s->head[hi]; s->head[hi] = t;
    }
    for (Py_ssize_t i = k - 1; i >= 0; i--) {
        Py_ssize_t b = s->hits[i];
        if (s->in_tail[b]) tail_unlink(s, b); /* a repeated hit: it ends where its first use frees it */
        tail_append(s, b);
    }

    if (record) {
        PyObject *h = ids_to_list(s->hits, k), *w = ids_to_list(out, need);
        if (!h || !w) { Py_XDECREF(h); Py_XDECREF(w); return NULL; }
        Py_XSETREF(s->last_hits, h);
        Py_XSETREF(s->last_new, w);
    }
    return PyLong_FromSsize_t(k);
}

static PyObject *SeqCache_free_queue(SeqCache *s, PyObject *Py_UNUSED(ignored)) {
    CHECK_INIT(s, NULL);
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    for (Py_ssize_t i = s->head_len - 1; i >= 0; i--) {
        PyObject *v = PyLong_FromSsize_t(s->head[i]);
        if (!v || PyList_Append(l, v) < 0) { Py_XDECREF(v); Py_DECREF(l); return NULL; }
        Py_DECREF(v);
    }
    Py_ssize_t end = s->fresh_end >= 0 ? s->fresh_end : s->fresh_next;
    for (Py_ssize_t b = s->fresh_next; b < end; b++) {
        PyObject *v = PyLong_FromSsize_t(b);
        if (!v || PyList_Append(l, v) < 0) { Py_XDECREF(v); Py_DECREF(l); return NULL; }
        Py_DECREF(v);
    }
    for (Py_ssize_t b = s->tail_first; b >= 0; b = s->next[b]) {
        PyObject *v = PyLong_FromSsize_t(b);
        if (!v || PyList_Append(l, v) < 0) { Py_XDECREF(v); Py_DECREF(l); return NULL; }
        Py_DECREF(v);
    }
    return l;
}

static PyObject *SeqCache_num_free_blocks(SeqCache *s, void *Py_UNUSED(c)) {
    CHECK_INIT(s, NULL);
    return PyLong_FromSsize_t(num_free(s));
}
static PyObject *SeqCache_num_evicted(SeqCache *s, void *Py_UNUSED(c)) {
    CHECK_INIT(s, NULL);
    return PyLong_FromLongLong(s->num_evicted);
}
static PyObject *SeqCache_cached(SeqCache *s, void *Py_UNUSED(c)) {
    CHECK_INIT(s, NULL);
    Py_INCREF(s->cached);
    return s->cached;
}
static PyObject *SeqCache_duplicates(SeqCache *s, void *Py_UNUSED(c)) {
    CHECK_INIT(s, NULL);
    Py_INCREF(s->duplicates);
    return s->duplicates;
}
static PyObject *SeqCache_last_hits(SeqCache *s, void *Py_UNUSED(c)) {
    PyObject *r = s->last_hits ? s->last_hits : Py_None;
    Py_INCREF(r);
    return r;
}
static PyObject *SeqCache_last_new(SeqCache *s, void *Py_UNUSED(c)) {
    PyObject *r = s->last_new ? s->last_new : Py_None;
    Py_INCREF(r);
    return r;
}

static int SeqCache_init(SeqCache *s, PyObject *args, PyObject *kw) {
    static char *names[] = {"num_blocks", "free_order", NULL};
    PyObject *num_blocks = Py_None;
    const char *order = "current";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Os", names, &num_blocks, &order)) return -1;
    if (s->cached) { PyErr_SetString(PyExc_RuntimeError, "a SeqCache cannot be re-initialised"); return -1; }
    if (strcmp(order, "current") == 0) s->to_head = 1;
    else if (strcmp(order, "classic") == 0) s->to_head = 0;
    else { PyErr_Format(PyExc_ValueError, "unknown free order %s", order); return -1; }
    if (num_blocks == Py_None) {
        s->fresh_end = -1;
    } else {
        Py_ssize_t nb = PyLong_AsSsize_t(num_blocks);
        if (nb == -1 && PyErr_Occurred()) return -1;
        if (nb < 2) { PyErr_SetString(PyExc_ValueError, "num_blocks must be at least 2"); return -1; }
        s->fresh_end = nb;
        if (grow(s, nb) < 0) return -1;
    }
    s->fresh_next = 1;
    s->tail_first = s->tail_last = -1;
    s->tail_len = 0;
    s->head_len = 0;
    s->num_evicted = 0;
    Py_XSETREF(s->cached, PyDict_New());
    Py_XSETREF(s->duplicates, PyDict_New());
    if (!s->cached || !s->duplicates) return -1;
    return 0;
}

static void SeqCache_dealloc(SeqCache *s) {
    for (Py_ssize_t i = 0; i < s->cap; i++) { Py_XDECREF(s->hash[i]); Py_XDECREF(s->id_obj[i]); }
    PyMem_Free(s->hash); PyMem_Free(s->id_obj); PyMem_Free(s->prev); PyMem_Free(s->next); PyMem_Free(s->in_tail);
    PyMem_Free(s->head); PyMem_Free(s->hits); PyMem_Free(s->fresh_ids);
    Py_XDECREF(s->cached); Py_XDECREF(s->duplicates);
    Py_XDECREF(s->last_hits); Py_XDECREF(s->last_new);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef SeqCache_methods[] = {
    {"cycle", (PyCFunction)SeqCache_cycle, METH_VARARGS,
     "cycle(keys, max_hit_blocks, total_blocks, cache_end, record=False) -> hit blocks, or -1 if it cannot fit"},
    {"free_queue", (PyCFunction)SeqCache_free_queue, METH_NOARGS, "The whole free queue, head first."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SeqCache_getset[] = {
    {"num_free_blocks", (getter)SeqCache_num_free_blocks, NULL, "Blocks that can be allocated now.", NULL},
    {"num_evicted", (getter)SeqCache_num_evicted, NULL, "Hashes dropped by reallocation.", NULL},
    {"cached", (getter)SeqCache_cached, NULL, "key -> oldest block id (do not mutate).", NULL},
    {"duplicates", (getter)SeqCache_duplicates, NULL, "key -> younger block ids (do not mutate).", NULL},
    {"last_hits", (getter)SeqCache_last_hits, NULL, "Hit block ids of the latest cycle(record=True).", NULL},
    {"last_new", (getter)SeqCache_last_new, NULL, "New block ids of the latest cycle(record=True).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SeqCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvcache.engine._seqcache.SeqCache",
    .tp_doc = "The block pool's isolated-request cycle (see engine/block_pool.py cycle_isolated).",
    .tp_basicsize = sizeof(SeqCache),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SeqCache_init,
    .tp_dealloc = (destructor)SeqCache_dealloc,
    .tp_methods = SeqCache_methods,
    .tp_getset = SeqCache_getset,
};

static struct PyModuleDef seqcache_module = {
    PyModuleDef_HEAD_INIT, "_seqcache",
    "C implementation of the sequential replay's block-pool cycle.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__seqcache(void) {
    if (PyType_Ready(&SeqCacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&seqcache_module);
    if (!m) return NULL;
    Py_INCREF(&SeqCacheType);
    if (PyModule_AddObject(m, "SeqCache", (PyObject *)&SeqCacheType) < 0) {
        Py_DECREF(&SeqCacheType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
