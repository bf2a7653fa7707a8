/*
 * _paged_cpu: fused paged-attention DECODE on CPU, fp32, in plain C.
 *
 * kernels/paged_torch.py gathers K/V blocks with index_select and multiplies
 * them with torch ops; on a 2-core CPU the gather alone costs about as much
 * as contiguous attention. This kernel reads each block's rows in place,
 * through the block table, and never copies K/V:
 *
 *   for each work item (sequence b, KV heads h0 .. h0 + nh - 1), one thread:
 *     q_s[hh, g, :] = q[b, (h0 + hh) * G + g, :] * scale      G = Hq / Hkv
 *     m = -inf, l = 0, acc = 0                                 per (hh, g)
 *     for each tile of TILE positions t < seq_len[b]:
 *       row(t, h) = k_cache + table[b, t / bs] * ks0 + (t % bs) * ks1 + h * ks2
 *       s[hh, g, t] = q_s[hh, g, :] . K row(t, h0 + hh)         (K pass)
 *       m' = max(m, max_t s); acc *= exp(m - m'); l *= exp(m - m')
 *       p = exp(s - m'); l += sum_t p; m = m'                  (online softmax)
 *       acc[hh, g, :] += sum_t p[hh, g, t] * V row(t, h0 + hh)  (V pass)
 *     out[b, (h0 + hh) * G + g, :] = acc / l
 *
 * Only positions < seq_len are read (unused slots may hold NaN), and only the
 * first ceil(seq_len / bs) ids of a table row are looked at (junk after them
 * is never dereferenced). All ids that will be read are checked against
 * num_blocks before any thread starts.
 *
 * Every (b, h) is computed by one thread with the same code whatever the
 * thread count, so results do not depend on it. Work items are handed out
 * with an atomic counter to the threads: torch's OpenMP team when its runtime
 * is loaded (see find_gomp below for why), else pthreads made per call; the
 * caller's thread works too, and the GIL is released meanwhile.
 *
 * SIMD: AVX2+FMA kernels compiled with __attribute__((target)) and chosen at
 * run time with __builtin_cpu_supports; a scalar fallback otherwise. No
 * -march flag, so the built module runs on any x86-64 (and elsewhere, scalar).
 *
 * The Python entry point takes raw addresses (tensor.data_ptr()) and strides
 * in elements; it trusts its caller (kvcache.kernels.paged_torch) to pass
 * live fp32 tensors whose last dimension is contiguous.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define PC_DLSYM 1
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PC_X86 1
#include <immintrin.h>
#endif

#define MAX_TILE 256
#define DEFAULT_TILE 32
/* Below this many bytes of K+V per call, one thread: creating threads costs
 * more than it saves (tens of microseconds). */
#define MIN_PARALLEL_BYTES (256 << 10)

typedef struct Job Job;

/* The per-tile steps, one set per instruction set. A tile is nt positions of
 * one sequence; rows[t] points at position t's row for the item's first KV
 * head, head hh's row is rows[t] + hh * hs (D floats each). Scores and probs
 * are [nh * G, ld] row-major, accumulators [nh * G, D]. Both steps also
 * prefetch pf[t] (npf rows, nh heads each, into L2): the rows the next pass
 * reads (the K pass this tile's V rows, the V pass the next tile's K rows).
 * Consecutive positions are a block slot (Hkv * D floats, often 4 KiB) apart,
 * so each row sits in its own page, where the hardware prefetcher does not
 * follow; without the software prefetch a step waits on memory. */
typedef struct {
    /* s[(hh * G + g) * ld + t] = qs[hh * G + g, :] . row(t, hh) */
    void (*scores)(const float *qs, int G, int nh, int64_t hs, const float *const *rows, int nt,
                   int D, float *s, int ld, const float *const *pf, int npf);
    /* p = exp(s - m) in place over n entries; returns sum p */
    float (*exp_sum)(float *s, int n, float m);
    /* acc[hh * G + g, :] += sum_t p[(hh * G + g) * ld + t] * row(t, hh) */
    void (*accumulate)(float *acc, int G, int nh, int64_t hs, const float *p, int ld,
                       const float *const *rows, int nt, int D, const float *const *pf, int npf);
} Kernels;

static inline void prefetch_row(const float *const *pf, int npf, int t, int nh, int64_t hs,
                                int D) {
#if defined(__GNUC__) || defined(__clang__)
    if (t >= npf) return;
    for (int hh = 0; hh < nh; hh++) {
        const char *r = (const char *)(pf[t] + hh * hs);
        for (int x = 0; x < D * (int)sizeof(float); x += 64) __builtin_prefetch(r + x, 0, 2);
    }
#else
    (void)pf; (void)npf; (void)t; (void)nh; (void)hs; (void)D;
#endif
}

struct Job {
    const float *q, *k, *v;
    float *out;
    const char *table;
    int table_elsize;
    int64_t table_stride;        /* elements between rows */
    const int64_t *seq_lens;     /* [B] */
    const int64_t *order;        /* [B] sequences, longest first */
    int64_t B, Hq, Hkv, D, bs, G;
    int64_t q_sb, q_sh;          /* q [B, Hq, D] strides (elements) */
    int64_t k_s0, k_s1, k_s2;    /* k_cache [num_blocks, bs, Hkv, D] */
    int64_t v_s0, v_s1, v_s2;
    int64_t o_sb, o_sh;          /* out [B, Hq, D] */
    float scale;
    int64_t heads_per_item, items_per_seq, n_items;
    int tile, prefetch;
    const Kernels *kern;
    int64_t next_item;           /* shared counter, atomic */
    int failed;                  /* a worker could not allocate its scratch */
};

/* ------------------------------------------------------------------ scalar */
/* Plain loops: the fallback where AVX2+FMA is missing, and the readable
 * version of the SIMD kernels below. About 5x slower than AVX2 here, which is
 * slower than the torch ops: kvcache.kernels.paged_torch only picks the C
 * kernel by default when simd() is not "scalar". */
static void scores_scalar(const float *qs, int G, int nh, int64_t hs,
                          const float *const *rows, int nt, int D, float *s, int ld,
                          const float *const *pf, int npf) {
    for (int t = 0; t < nt; t++) {
        prefetch_row(pf, npf, t, nh, hs, D);
        for (int hh = 0; hh < nh; hh++) {
            const float *r = rows[t] + hh * hs;
            for (int g = 0; g < G; g++) {
                const float *qg = qs + ((int64_t)hh * G + g) * D;
                float a = 0.0f;
                for (int d = 0; d < D; d++) a += qg[d] * r[d];
                s[((int64_t)hh * G + g) * ld + t] = a;
            }
        }
    }
}

static float exp_sum_scalar(float *s, int n, float m) {
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
        s[t] = expf(s[t] - m);
        sum += s[t];
    }
    return sum;
}

static void accumulate_scalar(float *acc, int G, int nh, int64_t hs, const float *p, int ld,
                              const float *const *rows, int nt, int D,
                              const float *const *pf, int npf) {
    for (int t = 0; t < nt; t++) {
        prefetch_row(pf, npf, t, nh, hs, D);
        for (int hh = 0; hh < nh; hh++) {
            const float *r = rows[t] + hh * hs;
            for (int g = 0; g < G; g++) {
                float w = p[(int64_t)(hh * G + g) * ld + t];
                float *a = acc + (int64_t)(hh * G + g) * D;
                for (int d = 0; d < D; d++) a[d] += w * r[d];
            }
        }
    }
}

static const Kernels KERNELS_SCALAR = {scores_scalar, exp_sum_scalar, accumulate_scalar};

/* ------------------------------------------------------------------ AVX2 + FMA */
#ifdef PC_X86
#define AVX2 __attribute__((target("avx2,fma")))

#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

AVX2_INLINE float hsum256(__m256 x) {
    __m128 lo = _mm256_castps256_ps128(x), hi = _mm256_extractf128_ps(x, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* The four horizontal sums of a, b, c, d as one [sum a, sum b, sum c, sum d]. */
AVX2_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
}

/* GN (1..4) queries q + g * D against two rows r0, r1: 2 * GN dot products,
 * each row and query chunk loaded once. out0[g], out1[g]. */
AVX2_INLINE void dots2(const float *q, const float *r0, const float *r1, int D, const int GN,
                       float *out0, float *out1) {
    __m256 a0[4], a1[4];
    for (int g = 0; g < 4; g++) a0[g] = a1[g] = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 x0 = _mm256_loadu_ps(r0 + d), x1 = _mm256_loadu_ps(r1 + d);
        for (int g = 0; g < GN; g++) {
            __m256 qv = _mm256_loadu_ps(q + (int64_t)g * D + d);
            a0[g] = _mm256_fmadd_ps(qv, x0, a0[g]);
            a1[g] = _mm256_fmadd_ps(qv, x1, a1[g]);
        }
    }
    float s0[4], s1[4];
    _mm_storeu_ps(s0, hsum4(a0[0], a0[1], a0[2], a0[3]));
    _mm_storeu_ps(s1, hsum4(a1[0], a1[1], a1[2], a1[3]));
    for (; d < D; d++)
        for (int g = 0; g < GN; g++) {
            s0[g] += q[(int64_t)g * D + d] * r0[d];
            s1[g] += q[(int64_t)g * D + d] * r1[d];
        }
    for (int g = 0; g < GN; g++) { out0[g] = s0[g]; out1[g] = s1[g]; }
}

/* Prefetch one row of D floats into L2. */
static inline void prefetch_one(const float *r, int D) {
#if defined(__GNUC__) || defined(__clang__)
    for (int x = 0; x < D; x += 16) __builtin_prefetch(r + x, 0, 2);
    __builtin_prefetch(r + D - 1, 0, 2);
#else
    (void)r; (void)D;
#endif
}

AVX2 static void scores_avx2(const float *qs, int G, int nh, int64_t hs,
                             const float *const *rows, int nt, int D, float *s, int ld,
                             const float *const *pf, int npf) {
    for (int t = 0; t < nt; t += 2) {
        int t1 = t + 1 < nt ? t + 1 : t;  /* an odd tail repeats its row; one result kept */
        for (int hh = 0; hh < nh; hh++) {
            const float *r0 = rows[t] + hh * hs, *r1 = rows[t1] + hh * hs;
            const float *qh = qs + (int64_t)hh * G * D;
            if (t < npf) prefetch_one(pf[t] + hh * hs, D);
            if (t1 != t && t1 < npf) prefetch_one(pf[t1] + hh * hs, D);
            for (int g = 0; g < G; g += 4) {
                float o0[4], o1[4];
                const float *qg = qh + (int64_t)g * D;
                switch (G - g) {
                case 1: dots2(qg, r0, r1, D, 1, o0, o1); break;
                case 2: dots2(qg, r0, r1, D, 2, o0, o1); break;
                case 3: dots2(qg, r0, r1, D, 3, o0, o1); break;
                default: dots2(qg, r0, r1, D, 4, o0, o1); break;
                }
                int gn = G - g < 4 ? G - g : 4;
                for (int i = 0; i < gn; i++) {
                    float *si = s + (int64_t)(hh * G + g + i) * ld;
                    si[t] = o0[i];
                    si[t1] = o1[i];
                }
            }
        }
    }
}

/* acc[g, :] += sum_t p[g * ld + t] * rows[t][:] for GN (1..4) queries, 16
 * columns at a time with the sums in registers over the whole tile. While
 * at columns d, prefetch the same columns of pf rows (the next pass's). */
AVX2_INLINE void accumulate_group(float *acc, const float *p, int ld, const float *const *rows,
                                  int64_t off, int nt, int D, const int GN,
                                  const float *const *pf, int npf) {
    int d = 0;
    for (; d + 16 <= D; d += 16) {
        __m256 a0[4], a1[4];
        for (int g = 0; g < GN; g++) a0[g] = a1[g] = _mm256_setzero_ps();
        for (int t = 0; t < nt; t++) {
            const float *r = rows[t] + off + d;
#if defined(__GNUC__) || defined(__clang__)
            if (t < npf) __builtin_prefetch(pf[t] + off + d, 0, 2);
#endif
            __m256 x0 = _mm256_loadu_ps(r), x1 = _mm256_loadu_ps(r + 8);
            for (int g = 0; g < GN; g++) {
                __m256 w = _mm256_broadcast_ss(p + (int64_t)g * ld + t);
                a0[g] = _mm256_fmadd_ps(w, x0, a0[g]);
                a1[g] = _mm256_fmadd_ps(w, x1, a1[g]);
            }
        }
        for (int g = 0; g < GN; g++) {
            float *a = acc + (int64_t)g * D + d;
            _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), a0[g]));
            _mm256_storeu_ps(a + 8, _mm256_add_ps(_mm256_loadu_ps(a + 8), a1[g]));
        }
    }
    for (; d + 8 <= D; d += 8) {
        __m256 a0[4];
        for (int g = 0; g < GN; g++) a0[g] = _mm256_setzero_ps();
        for (int t = 0; t < nt; t++) {
            __m256 x0 = _mm256_loadu_ps(rows[t] + off + d);
            for (int g = 0; g < GN; g++)
                a0[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (int64_t)g * ld + t), x0, a0[g]);
        }
        for (int g = 0; g < GN; g++) {
            float *a = acc + (int64_t)g * D + d;
            _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), a0[g]));
        }
    }
    for (; d < D; d++)
        for (int g = 0; g < GN; g++) {
            float x = 0.0f;
            for (int t = 0; t < nt; t++) x += p[(int64_t)g * ld + t] * rows[t][off + d];
            acc[(int64_t)g * D + d] += x;
        }
#if defined(__GNUC__) || defined(__clang__)
    for (int t = 0; t < npf; t++) __builtin_prefetch(pf[t] + off + D - 1, 0, 2);
#endif
}

AVX2 static void accumulate_avx2(float *acc, int G, int nh, int64_t hs, const float *p, int ld,
                                 const float *const *rows, int nt, int D,
                                 const float *const *pf, int npf) {
    for (int hh = 0; hh < nh; hh++) {
        for (int g = 0; g < G; g += 4) {
            int64_t i = (int64_t)hh * G + g;
            float *a = acc + i * D;
            const float *pg = p + i * ld;
            int n = g == 0 ? npf : 0;  /* prefetch once per head */
            switch (G - g) {
            case 1: accumulate_group(a, pg, ld, rows, hh * hs, nt, D, 1, pf, n); break;
            case 2: accumulate_group(a, pg, ld, rows, hh * hs, nt, D, 2, pf, n); break;
            case 3: accumulate_group(a, pg, ld, rows, hh * hs, nt, D, 3, pf, n); break;
            default: accumulate_group(a, pg, ld, rows, hh * hs, nt, D, 4, pf, n); break;
            }
        }
    }
}

/* exp(x) for x in float range, Cephes' expf polynomial (relative error ~1e-7).
 * NaN in, NaN out: max/min return their second operand when one is NaN. */
AVX2_INLINE __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);
    x = _mm256_min_ps(_mm256_set1_ps(88.37626f), x);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvttps_epi32(fx);
    n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

AVX2 static float exp_sum_avx2(float *s, int n, float m) {
    __m256 vm = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
        _mm256_storeu_ps(s + t, p);
        sum = _mm256_add_ps(sum, p);
    }
    float tot = hsum256(sum);
    if (t < n) {  /* the tail through a padded buffer, same polynomial */
        float buf[8] = {0};
        memcpy(buf, s + t, (size_t)(n - t) * sizeof(float));
        __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(buf), vm));
        _mm256_storeu_ps(buf, p);
        for (int i = 0; i < n - t; i++) { s[t + i] = buf[i]; tot += buf[i]; }
    }
    return tot;
}

static const Kernels KERNELS_AVX2 = {scores_avx2, exp_sum_avx2, accumulate_avx2};
#endif

static const Kernels *best_kernels(void) {
#ifdef PC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &KERNELS_AVX2;
#endif
    return &KERNELS_SCALAR;
}

/* ------------------------------------------------------------------ the work */
static inline int64_t block_id(const Job *j, int64_t b, int64_t i) {
    const char *row = j->table + (b * j->table_stride + i) * j->table_elsize;
    return j->table_elsize == 4 ? (int64_t)*(const int32_t *)row : *(const int64_t *)row;
}

/* Base pointers (head 0) of positions t0 .. t0 + nt - 1 of sequence b. */
static void tile_rows(const Job *j, int64_t b, int64_t t0, int nt, const float **kb,
                      const float **vb) {
    int64_t blk = t0 / j->bs, off = t0 % j->bs, id = block_id(j, b, blk);
    for (int t = 0; t < nt; t++) {
        kb[t] = j->k + id * j->k_s0 + off * j->k_s1;
        vb[t] = j->v + id * j->v_s0 + off * j->v_s1;
        if (++off == j->bs && t + 1 < nt) {
            off = 0;
            id = block_id(j, b, ++blk);
        }
    }
}

typedef struct {
    float *qs, *acc, *s, *m, *l;              /* [nh*G, D], [nh*G, D], [nh*G, tile], [nh*G] x 2 */
    const float **kb, **vb, **kb2, **vb2;      /* [tile] each: tile row bases (head 0) */
    const float **rows, **vrows, **krows_next; /* [tile] each: rows at head h0 */
} Scratch;

static void run_item(Job *j, Scratch *w, int64_t item) {
    const Kernels *kn = j->kern;
    int64_t b = j->order[item / j->items_per_seq];
    int64_t h0 = (item % j->items_per_seq) * j->heads_per_item;
    int64_t nh = j->Hkv - h0 < j->heads_per_item ? j->Hkv - h0 : j->heads_per_item;
    int64_t G = j->G, D = j->D, L = j->seq_lens[b], nq = nh * G;
    int tile = j->tile;

    for (int64_t i = 0; i < nq; i++) {  /* i = hh * G + g = query head - h0 * G */
        const float *src = j->q + b * j->q_sb + (h0 * G + i) * j->q_sh;
        for (int64_t d = 0; d < D; d++) w->qs[i * D + d] = src[d] * j->scale;
        w->m[i] = -INFINITY;
        w->l[i] = 0.0f;
    }
    memset(w->acc, 0, (size_t)(nq * D) * sizeof(float));

    /* Rows of this tile (kb, vb) and of the next one (kb2, vb2), at head h0.
     * The K pass prefetches this tile's V rows, the V pass the next K rows. */
    int nt_next = L < tile ? (int)L : tile;
    if (L > 0) tile_rows(j, b, 0, nt_next, w->kb2, w->vb2);
    for (int64_t t0 = 0; t0 < L; t0 += tile) {
        int nt = nt_next;
        const float **tmp;
        tmp = w->kb; w->kb = w->kb2; w->kb2 = tmp;
        tmp = w->vb; w->vb = w->vb2; w->vb2 = tmp;
        int64_t t1 = t0 + nt;
        nt_next = L - t1 < tile ? (int)(L - t1) : tile;
        if (nt_next > 0) tile_rows(j, b, t1, nt_next, w->kb2, w->vb2);
        int pf = j->prefetch;
        for (int t = 0; t < nt; t++) w->rows[t] = w->kb[t] + h0 * j->k_s2;
        for (int t = 0; t < nt; t++) w->vrows[t] = w->vb[t] + h0 * j->v_s2;
        for (int t = 0; t < nt_next; t++) w->krows_next[t] = w->kb2[t] + h0 * j->k_s2;
        kn->scores(w->qs, (int)G, (int)nh, j->k_s2, w->rows, nt, (int)D, w->s, tile,
                   w->vrows, pf ? nt : 0);
        for (int64_t i = 0; i < nq; i++) {  /* online softmax, per query head */
            float *sg = w->s + i * tile, mt = sg[0], *m = w->m + i, *l = w->l + i;
            for (int t = 1; t < nt; t++) mt = sg[t] > mt ? sg[t] : mt;
            if (mt > *m) {  /* rescale what was summed under the old max */
                if (*m != -INFINITY) {
                    float alpha = expf(*m - mt), *a = w->acc + i * D;
                    for (int64_t d = 0; d < D; d++) a[d] *= alpha;
                    *l *= alpha;
                }
                *m = mt;
            }
            *l += kn->exp_sum(sg, nt, *m);
        }
        kn->accumulate(w->acc, (int)G, (int)nh, j->v_s2, w->s, tile, w->vrows, nt, (int)D,
                       w->krows_next, pf ? nt_next : 0);
    }
    for (int64_t i = 0; i < nq; i++) {
        float *dst = j->out + b * j->o_sb + (h0 * G + i) * j->o_sh;
        float inv = w->l[i] > 0.0f ? 1.0f / w->l[i] : 0.0f;
        for (int64_t d = 0; d < D; d++) dst[d] = w->acc[i * D + d] * inv;
    }
}

static void *worker(void *arg) {
    Job *j = (Job *)arg;
    int64_t nq = j->heads_per_item * j->G, tile = j->tile;
    size_t floats = (size_t)(2 * nq * j->D + nq * tile + 2 * nq);
    float *f = malloc(floats * sizeof(float));
    const float **p = malloc((size_t)(7 * tile) * sizeof(float *));
    if (!f || !p) {
        free(f);
        free((void *)p);
        __atomic_store_n(&j->failed, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    Scratch w = {f, f + nq * j->D, f + 2 * nq * j->D, f + 2 * nq * j->D + nq * tile,
                 f + 2 * nq * j->D + nq * tile + nq,
                 p, p + tile, p + 2 * tile, p + 3 * tile, p + 4 * tile, p + 5 * tile,
                 p + 6 * tile};
    for (;;) {
        int64_t item = __atomic_fetch_add(&j->next_item, 1, __ATOMIC_RELAXED);
        if (item >= j->n_items || __atomic_load_n(&j->failed, __ATOMIC_RELAXED)) break;
        run_item(j, &w, item);
    }
    free(f);
    free((void *)p);
    return NULL;
}

/* Threads. torch runs its ops on an OpenMP team whose idle workers spin for
 * several milliseconds after each op. Threads of our own that start right
 * after a torch op share the cores with those spinning workers: the step
 * took ~23-27 ms instead of ~16 ms here. So when an OpenMP runtime is already
 * loaded in the process (torch's libgomp, or an LLVM/Intel runtime, which
 * export the same GOMP_parallel entry point), the work runs on that team
 * instead, through GOMP_parallel found with dlsym: nothing is linked against
 * OpenMP at build time. Otherwise, pthreads made per call (creating them
 * costs tens of microseconds, below the threading threshold's worth of work). */
static void gomp_worker(void *arg) { (void)worker(arg); }

typedef void (*GompParallel)(void (*)(void *), void *, unsigned, unsigned);

static GompParallel find_gomp(void) {
#ifdef PC_DLSYM
    return (GompParallel)dlsym(RTLD_DEFAULT, "GOMP_parallel");
#else
    return NULL;
#endif
}

/* ------------------------------------------------------------------ Python API */
/* (length, sequence) pairs, longest first, then by sequence */
static int longer_first(const void *x, const void *y) {
    const int64_t *a = (const int64_t *)x, *b = (const int64_t *)y;
    if (a[0] != b[0]) return a[0] > b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : (a[1] > b[1]);
}

static int64_t getaddr(PyObject *o, const char *name, int *err) {
    void *p = PyLong_AsVoidPtr(o);
    if (!p && PyErr_Occurred()) { *err = 1; return 0; }
    if (!p) { PyErr_Format(PyExc_ValueError, "%s is a null pointer", name); *err = 1; }
    return (int64_t)(intptr_t)p;
}

static int parse_strides(PyObject *o, int64_t *dst, Py_ssize_t n, const char *name) {
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != n) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of %zd ints", name, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        dst[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(o, i));
        if (dst[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

PyDoc_STRVAR(decode_doc,
"decode(q, k_cache, v_cache, out, table, table_elsize, table_stride, seq_lens,\n"
"       num_blocks, num_q_heads, num_kv_heads, head_dim, block_size,\n"
"       q_strides, k_strides, v_strides, out_strides, scale, threads,\n"
"       heads_per_item=0, tile=0, prefetch=1, simd=-1, pool=0) -> None\n\n"
"Paged decode attention, fp32, written into out. q, k_cache, v_cache, out and\n"
"table are addresses (tensor.data_ptr()); strides are in elements, the last\n"
"dimension must be contiguous: q_strides/out_strides (seq, head) of [B, Hq, D],\n"
"k_strides/v_strides (block, slot, head) of [num_blocks, block_size, Hkv, D].\n"
"table: int32 (table_elsize 4) or int64 (8) [B, >= max blocks], table_stride\n"
"elements apart. seq_lens: a sequence of B ints >= 0. heads_per_item: KV heads\n"
"per work item (0: auto); tile: positions per softmax step (0: auto); simd:\n"
"-1 best available, 0 scalar, 1 AVX2 (ValueError if unsupported); pool: 0 the\n"
"OpenMP team already loaded (torch's) if any, else pthreads; 1 pthreads; 2\n"
"OpenMP (ValueError if none is loaded). threads: how many, the caller included.");

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"q", "k_cache", "v_cache", "out", "table", "table_elsize",
                             "table_stride", "seq_lens", "num_blocks", "num_q_heads",
                             "num_kv_heads", "head_dim", "block_size", "q_strides",
                             "k_strides", "v_strides", "out_strides", "scale", "threads",
                             "heads_per_item", "tile", "prefetch", "simd", "pool", NULL};
    PyObject *oq, *ok, *ov, *oo, *ot, *olens, *oqs, *oks, *ovs, *oos;
    int elsize, threads, tile = 0, prefetch = 1, simd = -1, pool = 0;
    long long tstride, num_blocks, hq, hkv, d, bs, hpi = 0;
    double scale;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOiLOLLLLLOOOOdi|Liiii", kwlist, &oq, &ok,
                                     &ov, &oo, &ot, &elsize, &tstride, &olens, &num_blocks, &hq,
                                     &hkv, &d, &bs, &oqs, &oks, &ovs, &oos, &scale, &threads,
                                     &hpi, &tile, &prefetch, &simd, &pool))
        return NULL;

    Job j;
    memset(&j, 0, sizeof j);
    int err = 0;
    j.q = (const float *)(intptr_t)getaddr(oq, "q", &err);
    if (!err) j.k = (const float *)(intptr_t)getaddr(ok, "k_cache", &err);
    if (!err) j.v = (const float *)(intptr_t)getaddr(ov, "v_cache", &err);
    if (!err) j.out = (float *)(intptr_t)getaddr(oo, "out", &err);
    if (!err) j.table = (const char *)(intptr_t)getaddr(ot, "table", &err);
    if (err) return NULL;
    int64_t st[3];
    if (parse_strides(oqs, st, 2, "q_strides") < 0) return NULL;
    j.q_sb = st[0]; j.q_sh = st[1];
    if (parse_strides(oos, st, 2, "out_strides") < 0) return NULL;
    j.o_sb = st[0]; j.o_sh = st[1];
    if (parse_strides(oks, st, 3, "k_strides") < 0) return NULL;
    j.k_s0 = st[0]; j.k_s1 = st[1]; j.k_s2 = st[2];
    if (parse_strides(ovs, st, 3, "v_strides") < 0) return NULL;
    j.v_s0 = st[0]; j.v_s1 = st[1]; j.v_s2 = st[2];

    if (elsize != 4 && elsize != 8)
        return PyErr_Format(PyExc_ValueError, "table_elsize must be 4 or 8, got %d", elsize);
    if (hkv <= 0 || hq <= 0 || hq % hkv != 0)
        return PyErr_Format(PyExc_ValueError, "num_q_heads (%lld) must be a positive multiple "
                            "of num_kv_heads (%lld)", hq, hkv);
    if (d <= 0 || d > (1 << 16) || bs <= 0 || num_blocks < 0 || tstride < 0)
        return PyErr_Format(PyExc_ValueError, "bad sizes: head_dim %lld, block_size %lld, "
                            "num_blocks %lld, table_stride %lld", d, bs, num_blocks, tstride);
    if (tile < 0 || tile > MAX_TILE)
        return PyErr_Format(PyExc_ValueError, "tile must be in [0, %d]", MAX_TILE);
    if (hpi < 0) return PyErr_Format(PyExc_ValueError, "heads_per_item must be >= 0");
    if (simd == 1) {
        const Kernels *k = best_kernels();
        if (k == &KERNELS_SCALAR)
            return PyErr_Format(PyExc_ValueError, "AVX2+FMA is not available on this CPU");
        j.kern = k;
    } else if (simd == 0) {
        j.kern = &KERNELS_SCALAR;
    } else if (simd == -1) {
        j.kern = best_kernels();
    } else {
        return PyErr_Format(PyExc_ValueError, "simd must be -1, 0 or 1, got %d", simd);
    }

    if (pool < 0 || pool > 2)
        return PyErr_Format(PyExc_ValueError, "pool must be 0, 1 or 2, got %d", pool);
    if (pool == 2 && !find_gomp())
        return PyErr_Format(PyExc_ValueError, "no OpenMP runtime is loaded in this process");

    PyObject *lens = PySequence_Fast(olens, "seq_lens must be a sequence of ints");
    if (!lens) return NULL;
    Py_ssize_t B = PySequence_Fast_GET_SIZE(lens);
    /* seq_lens[0 .. B), then the order in which items are handed out, then
     * B (length, sequence) pairs to sort it by */
    int64_t *seq_lens = PyMem_Malloc((size_t)(B ? 4 * B : 1) * sizeof(int64_t));
    if (!seq_lens) { Py_DECREF(lens); return PyErr_NoMemory(); }
    int64_t total = 0, max_blocks = 0;
    for (Py_ssize_t b = 0; b < B; b++) {
        long long n = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(lens, b));
        if (n == -1 && PyErr_Occurred()) goto fail;
        if (n < 0) { PyErr_Format(PyExc_ValueError, "seq_lens[%zd] is negative", b); goto fail; }
        seq_lens[b] = n;
        total += n;
        int64_t nb = (n + bs - 1) / bs;
        if (nb > max_blocks) max_blocks = nb;
    }
    Py_DECREF(lens);
    lens = NULL;
    if (B > 1 && max_blocks > tstride) {
        PyErr_Format(PyExc_ValueError, "table rows (%lld apart) are shorter than %lld blocks",
                     tstride, (long long)max_blocks);
        goto fail;
    }

    j.seq_lens = seq_lens;
    j.table_elsize = elsize;
    j.table_stride = tstride;
    j.B = B; j.Hq = hq; j.Hkv = hkv; j.D = d; j.bs = bs; j.G = hq / hkv;
    j.scale = (float)scale;
    /* Every id that will be read, before any thread runs. */
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = (seq_lens[b] + bs - 1) / bs;
        for (int64_t i = 0; i < nb; i++) {
            int64_t id = block_id(&j, b, i);
            if (id < 0 || id >= num_blocks) {
                PyErr_Format(PyExc_ValueError, "block_table[%lld, %lld] = %lld is outside "
                             "[0, %lld)", (long long)b, (long long)i, (long long)id, num_blocks);
                goto fail;
            }
        }
    }
    if (B == 0) { PyMem_Free(seq_lens); Py_RETURN_NONE; }
    /* Longest sequences first, so that a long one does not start last and run
     * alone at the end. */
    int64_t *order = seq_lens + B, *pairs = seq_lens + 2 * B;
    for (int64_t b = 0; b < B; b++) { pairs[2 * b] = seq_lens[b]; pairs[2 * b + 1] = b; }
    qsort(pairs, (size_t)B, 2 * sizeof(int64_t), longer_first);
    for (int64_t b = 0; b < B; b++) order[b] = pairs[2 * b + 1];
    j.order = order;

    if (threads < 1) threads = 1;
    int64_t bytes = 2 * total * hkv * d * (int64_t)sizeof(float);
    if (bytes < MIN_PARALLEL_BYTES) threads = 1;
    /* Whole sequences (all KV heads) per item unless that leaves threads idle:
     * then split the heads, as evenly as divides Hkv. */
    if (hpi == 0) {
        hpi = hkv;
        while (hpi > 1 && B * ((hkv + hpi - 1) / hpi) < 4 * (int64_t)threads) {
            int64_t next = hpi - 1;
            while (next > 1 && hkv % next) next--;
            hpi = next;
        }
    }
    if (hpi > hkv) hpi = hkv;
    j.heads_per_item = hpi;
    j.items_per_seq = (hkv + hpi - 1) / hpi;
    j.n_items = B * j.items_per_seq;
    j.tile = tile ? tile : DEFAULT_TILE;
    j.prefetch = prefetch;
    if (threads > j.n_items) threads = (int)j.n_items;

    GompParallel gomp = pool == 1 ? NULL : find_gomp();
    if (gomp && threads > 1) {
        Py_BEGIN_ALLOW_THREADS
        gomp(gomp_worker, &j, (unsigned)threads, 0);
        Py_END_ALLOW_THREADS
        PyMem_Free(seq_lens);
        if (j.failed) return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    pthread_t *tids = threads > 1 ? PyMem_Malloc((size_t)(threads - 1) * sizeof(pthread_t)) : NULL;
    if (threads > 1 && !tids) { PyErr_NoMemory(); goto fail; }
    int started = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; started < threads - 1; started++)
        if (pthread_create(&tids[started], NULL, worker, &j) != 0) break;
    worker(&j);
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    Py_END_ALLOW_THREADS
    PyMem_Free(tids);
    PyMem_Free(seq_lens);
    if (j.failed) return PyErr_NoMemory();
    Py_RETURN_NONE;

fail:
    Py_XDECREF(lens);
    PyMem_Free(seq_lens);
    return NULL;
}

static PyObject *py_simd(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyUnicode_FromString(best_kernels() == &KERNELS_SCALAR ? "scalar" : "avx2");
}

static PyObject *py_openmp(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(find_gomp() != NULL);
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS, decode_doc},
    {"simd", py_simd, METH_NOARGS, "The instruction set decode uses by default: 'avx2' or 'scalar'."},
    {"openmp", py_openmp, METH_NOARGS,
     "Whether an OpenMP runtime (torch's) is loaded: decode then runs on its team by default."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_paged_cpu",
    "Fused paged-attention decode on CPU (fp32), reading K/V blocks in place.", -1, methods,
};

PyMODINIT_FUNC PyInit__paged_cpu(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "MIN_PARALLEL_BYTES", MIN_PARALLEL_BYTES) < 0
              || PyModule_AddIntConstant(m, "MAX_TILE", MAX_TILE) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
