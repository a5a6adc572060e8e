/* cpu_attention.c — scaled dot-product attention over a KV cache, with the attention
 * statistics taken from the softmax's own running sums (SPEC §4):
 *   m = max_k s_k,  z = sum_k e^(s_k - m),  t = sum_k e^(s_k - m) (s_k - m)
 *   entropy = ln z - t / z,  largest weight = 1 / z
 * so no probability row is re-read or stored to summarize it. Handles causal and bidirectional
 * masks, GQA (query head h reads kv head h / (H / H_kv)), and an additive position bias (T5).
 * cv_attention_naive is the double-precision oracle. */
#include "cpu_internal.h"
#include "corevital/stats.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float dot_f32(const float *a, const float *b, int n) {
#ifdef CV_CPU_AVX512
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(CV_CPU_AVX2)
    __m256 acc = _mm256_setzero_ps(), acc2 = acc;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc2);
    }
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = cv_hsum256(_mm256_add_ps(acc, acc2));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
#else
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
#endif
}

/* Row k of kv head g of the keys (which 0) or the values (1) in fp32: the cache row itself, or
 * the bf16 cache's row widened into buf (head_dim floats; the widening is exact). */
static inline size_t kv_head_off(const cv_attn_args *a, int g) { /* elements to kv head g */
    return (size_t)g * (size_t)(a->kv_head_stride ? a->kv_head_stride : a->head_dim);
}
/* The split-key decode's merge (AVX-512 and AVX2 kernels): part holds, per kv head g, chunk c
 * and head hi of the group, the chunk's (m, z, t, basin in, basin out) at
 * ((g * nch + c) * rep + hi) * 5. M = max m_c; chunk c weighs w_c = e^(m_c - M). */
static inline double att_chunks_max(const double *part, int nch, int rep, int g, int hi) {
    double M = -INFINITY;
    for (int c = 0; c < nch; c++) {
        double mc = part[((size_t)(g * nch + c) * rep + hi) * 5];
        if (mc > M || c == 0) M = mc;
    }
    return M;
}
/* folds chunk partials pc into acc (z, t, basin in, basin out): z += w_c z_c,
 * t += w_c (t_c + (m_c - M) z_c), masses likewise; returns w_c for the chunk's P . V */
static inline double att_chunk_fold(const double *pc, double M, int nch, double acc[4]) {
    double dm = pc[0] - M, wc = exp(dm);
    if (nch == 1) dm = 0, wc = 1; /* one chunk: exact as is (also for a NaN max) */
    acc[0] += wc * pc[1];
    acc[1] += wc * (pc[2] + dm * pc[1]);
    acc[2] += wc * pc[3];
    acc[3] += wc * pc[4];
    return wc;
}
/* the head's row record for cv_attn_merge_rows: z, t, and the masses as fractions */
static inline void att_chunks_row(double *rz, const double acc[4]) {
    rz[0] = acc[0], rz[1] = acc[1], rz[2] = acc[2] / acc[0], rz[3] = acc[3] / acc[0];
}
static inline const float *kv_row(const cv_attn_args *a, int which, int k, int g, float *buf) {
    size_t off = (size_t)k * a->kv_stride + kv_head_off(a, g);
    if (!a->k16) return (which ? a->v : a->k) + off;
    const uint16_t *src = (which ? a->v16 : a->k16) + off;
    for (int i = 0; i < a->head_dim; i++) buf[i] = cv_bf16_to_f32(src[i]);
    return buf;
}

static inline int keys_visible(const cv_attn_args *a, int t) {
    if (!a->causal) return a->n_keys;
    int kend = a->q_pos0 + t + 1;
    return kend < a->n_keys ? kend : a->n_keys;
}

#if defined(CV_CPU_AVX512) || defined(CV_CPU_AVX2)
/* The tiled prefill kernels' packed keys (AVX-512 and AVX2): tile (g, kt) at Kt + (g * nkt + kt)
 * * head_dim * bk holds keys kt * bk .. of kv head g transposed, (head_dim, bk), zero-padded past
 * kmax (nkt = the tiles covering kmax keys). */
static void att_pack_kt(const cv_attn_args *a, float *Kt, int kmax, int bk) {
    const int hd = a->head_dim, nkt = (kmax + bk - 1) / bk;
#pragma omp parallel for schedule(static)
    for (int it = 0; it < a->n_kv_heads * nkt; it++) {
        int g = it / nkt, k0 = (it % nkt) * bk, kn = kmax - k0 < bk ? kmax - k0 : bk;
        float *dst = Kt + (size_t)it * hd * bk, row[128]; /* head_dim <= 128 in both kernels */
        for (int kk = 0; kk < kn; kk++) {
            const float *src = kv_row(a, 0, k0 + kk, g, row);
            for (int d = 0; d < hd; d++) dst[(size_t)d * bk + kk] = src[d];
        }
        for (int d = 0; d < hd; d++)
            for (int kk = kn; kk < bk; kk++) dst[(size_t)d * bk + kk] = 0.0f;
    }
}

/* The split-key decodes' cut of kend keys into chunks of *cs keys: at most cmax keys each and,
 * where there is more than one chunk, a multiple of 4 chunks of near-equal size (cs a multiple
 * of 4: the AVX2 scores' block of keys; the AVX-512 one of 16 takes a partial block at a chunk's
 * end), so that the static schedule gives 2 or 4 threads equal work (4,097 keys as 17 chunks of <=
 * 256 left one thread 26 of the 51 items and the other 22 full ones and 3 of a key or a few). The
 * cut depends only on the key count, not on the thread count, so neither do the sums. Returns the
 * number of chunks. */
static int att_dec_split(int kend, int cmax, int *cs) {
    int nch = (kend + cmax - 1) / cmax;
    *cs = cmax;
    if (nch <= 1) return nch;
    nch = (nch + 3) / 4 * 4;
    *cs = ((kend + nch - 1) / nch + 3) / 4 * 4;
    return (kend + *cs - 1) / *cs;
}

/* The keys of decode work item it + 1 (kv head (it + 1) % KVH, chunk (it + 1) / KVH of cs keys),
 * which the static schedule gives to the thread running item it: its first byte, and in *nb the
 * bytes of its contiguous rows (NULL and 0 for the last item or an interleaved cache). The
 * kernels prefetch them during item it's P . V, so the memory stays busy through the softmax. */
static const char *att_dec_next_keys(const cv_attn_args *a, int it, int items, int kend, int cs,
                                     size_t *nb) {
    const int hd = a->head_dim, KVH = a->n_kv_heads;
    *nb = 0;
    if (it + 1 >= items || a->kv_stride != hd) return NULL;
    const int g1 = (it + 1) % KVH, c1 = (it + 1) / KVH, kn1 = kend - c1 * cs;
    const size_t off = (size_t)c1 * cs * hd + kv_head_off(a, g1), es = a->k16 ? 2 : 4;
    *nb = (size_t)(kn1 < cs ? kn1 : cs) * hd * es;
    return a->k16 ? (const char *)(a->k16 + off) : (const char *)(a->k + off);
}

/* A decode chunk's V rows from element kbase when they are contiguous (the CPU's head-major
 * cache), else NULL, and in *row the bytes of one row: the kernels prefetch them while the
 * chunk's Q.K^T runs. */
static const char *att_dec_vrows(const cv_attn_args *a, size_t kbase, int bf, size_t *row) {
    *row = (size_t)a->head_dim * (bf ? sizeof(uint16_t) : sizeof(float));
    if (a->kv_stride != a->head_dim) return NULL;
    return bf ? (const char *)(a->v16 + kbase) : (const char *)(a->v + kbase);
}
#endif

/* One query row at a time: scores for all visible keys in a K-length buffer, then softmax and
 * the weighted sum of V. The path for probability captures (a->probs, tests), the sparse prompt
 * attention, head widths the SIMD kernels do not take, and hosts with neither AVX-512 nor AVX2. */
/* ---- sparse prompt attention (HEALTH.md §5): the best CV_SPARSE_CAP (q, k, w) of a head ---- */

typedef struct {
    float w;
    int q, k;
} sparse_entry;
typedef struct {
    sparse_entry e[CV_SPARSE_CAP];
    int n;
} sparse_heap; /* a min-heap: e[0] is the worst kept */

/* a ranks below b: a smaller weight, or an equal one at a later (q, k) */
static int sparse_worse(const sparse_entry *a, const sparse_entry *b) {
    if (a->w != b->w) return a->w < b->w;
    return a->q != b->q ? a->q > b->q : a->k > b->k;
}

static void sparse_sift_down(sparse_heap *hp, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < hp->n && sparse_worse(&hp->e[l], &hp->e[m])) m = l;
        if (r < hp->n && sparse_worse(&hp->e[r], &hp->e[m])) m = r;
        if (m == i) return;
        sparse_entry t = hp->e[i];
        hp->e[i] = hp->e[m];
        hp->e[m] = t;
        i = m;
    }
}

static void sparse_push(sparse_heap *hp, float w, int q, int k) {
    sparse_entry x = {w, q, k};
    if (hp->n < CV_SPARSE_CAP) {
        int i = hp->n++;
        hp->e[i] = x;
        while (i > 0 && sparse_worse(&hp->e[i], &hp->e[(i - 1) / 2])) {
            sparse_entry t = hp->e[i];
            hp->e[i] = hp->e[(i - 1) / 2];
            hp->e[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (sparse_worse(&hp->e[0], &x)) {
        hp->e[0] = x;
        sparse_sift_down(hp, 0);
    }
}

static int sparse_cmp_rank(const void *a, const void *b) { /* best first */
    return sparse_worse(b, a) ? -1 : sparse_worse(a, b) ? 1 : 0;
}
static int sparse_cmp_pos(const void *a, const void *b) { /* row-major */
    const sparse_entry *x = a, *y = b;
    return x->q != y->q ? (x->q < y->q ? -1 : 1) : (x->k < y->k ? -1 : x->k > y->k);
}

/* The threads' heaps of each head -> one list in the record: the order is total, so the kept
 * set is the same whatever the thread count. */
static void sparse_merge(double *out, const sparse_heap *heaps, int nt, int H) {
    sparse_entry *all = malloc(sizeof *all * CV_SPARSE_CAP * (size_t)nt);
    for (int h = 0; h < H; h++) {
        double *o = out + (size_t)h * CV_SPARSE_SLOTS;
        o[0] = 0;
        if (!all) continue; /* out of memory: no list (never a wrong one) */
        int n = 0;
        for (int i = 0; i < nt; i++) {
            const sparse_heap *hp = &heaps[(size_t)i * H + h];
            for (int j = 0; j < hp->n; j++) all[n++] = hp->e[j];
        }
        qsort(all, (size_t)n, sizeof all[0], sparse_cmp_rank);
        if (n > CV_SPARSE_CAP) n = CV_SPARSE_CAP;
        qsort(all, (size_t)n, sizeof all[0], sparse_cmp_pos);
        o[0] = n;
        for (int j = 0; j < n; j++) {
            o[1 + 3 * j] = all[j].q;
            o[2 + 3 * j] = all[j].k;
            o[3 + 3 * j] = all[j].w;
        }
    }
    free(all);
}

void cv_cpu_attention_rows(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, T = a->T, hd = a->head_dim, NK = a->n_keys;
    const int rep = a->n_heads / a->n_kv_heads;
    const int rows = H * T;
    int nt = omp_get_max_threads();
    float *scores_all = cv_cpu_scratch_flt(b, (size_t)nt * (size_t)(NK + 2 * hd));
    const int want_rows = a->stats || a->heads || a->basin;
    double *row_z = want_rows ? cv_cpu_scratch_dbl(b, 4 * (size_t)rows) : NULL;
    /* sparse prompt attention: each thread keeps its own best CV_SPARSE_CAP per head */
    sparse_heap *heaps = a->sparse ? calloc((size_t)nt * H, sizeof *heaps) : NULL;

#pragma omp parallel if ((size_t)rows * NK * hd > 16384)
    {
        float *s = scores_all + (size_t)omp_get_thread_num() * (size_t)(NK + 2 * hd);
        float *acc = s + NK, *row = acc + hd; /* row: a bf16 cache row widened */
        sparse_heap *my = heaps ? heaps + (size_t)omp_get_thread_num() * H : NULL;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            int h = r / T, t = r % T, g = h / rep;
            int kend = keys_visible(a, t);
            const float *qv = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
            const float *bias = cv_attn_bias_row(a, h, t);
            float m = -FLT_MAX;
            for (int k = 0; k < kend; k++) {
                const float *kv = kv_row(a, 0, k, g, row);
                float sc = dot_f32(qv, kv, hd) * a->scale + (bias ? bias[k] : 0.0f);
                s[k] = sc;
                if (sc > m) m = sc;
            }
            double z = 0.0, tt = 0.0;
            for (int k = 0; k < kend; k++) {
                float d = s[k] - m;
                float e = expf(d);
                s[k] = e;
                z += e;
                tt += (double)e * d;
            }
            float inv = (float)(1.0 / z);
            for (int i = 0; i < hd; i++) acc[i] = 0.0f;
            for (int k = 0; k < kend; k++) {
                const float *vv = kv_row(a, 1, k, g, row);
                float p = s[k] * inv;
                for (int i = 0; i < hd; i++) acc[i] += p * vv[i];
            }
            float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
            for (int i = 0; i < hd; i++) o[i] = acc[i];
            if (a->probs) {
                float *pr = a->probs + ((size_t)h * T + t) * NK;
                for (int k = 0; k < kend; k++) pr[k] = s[k] * inv;
                for (int k = kend; k < NK; k++) pr[k] = 0.0f;
            }
            if (my)
                for (int k = 0; k < kend; k++) {
                    float p = s[k] * inv;
                    if (p > CV_SPARSE_MIN) sparse_push(&my[h], p, t, k);
                }
            if (row_z) {
                double mid = 0.0, off = 0.0;
                if (a->basin)
                    for (int k = 0; k < kend; k++) {
                        double p = s[k] * inv;
                        if (k >= a->basin_lo && k < a->basin_hi)
                            mid += p;
                        else
                            off += p;
                    }
                row_z[4 * r] = z;
                row_z[4 * r + 1] = tt;
                row_z[4 * r + 2] = mid;
                row_z[4 * r + 3] = off;
            }
        }
    }
    /* rows merge in a fixed order: deterministic whatever the thread count */
    if (row_z) cv_attn_merge_rows(a, row_z);
    if (heaps) {
        sparse_merge(a->sparse, heaps, nt, H);
        free(heaps);
    } else if (a->sparse) {
        for (int h = 0; h < H; h++) a->sparse[(size_t)h * CV_SPARSE_SLOTS] = 0;
    }
}

#ifdef CV_CPU_AVX512
/* ---- tiled prefill and split-key decode (AVX-512) -------------------------------------------
 *
 * Prefill (T > 1), flash-attention style: a work item is one kv head g and a tile of ATT_BQ
 * query positions for all rep = H / H_kv query heads that read g (rows r = hi * ATT_BQ + tq),
 * so each key and value loaded serves rep * ATT_BQ rows. Keys are packed once per call into
 * (head_dim, ATT_BK) transposed tiles, so a score tile S = Q . K^T is an outer product in
 * registers (4 rows x 64 keys). For every key tile each row keeps its running max m and, in
 * double, z = sum e^(s-m), t = sum e^(s-m)(s-m) and the unnormalized basin masses; when the max
 * rises from m_old to m_new they are rescaled by a = e^(m_old - m_new):
 *     z <- a z,   t <- a (t + (m_old - m_new) z),   masses <- a masses,   O <- a O
 * which is exact, so the statistics equal the one-pass kernel's without any (T x keys) matrix.
 * The work items run longest (last query tile) first, dynamically scheduled, because causal
 * tiles differ in length.
 *
 * Decode (T = 1): the keys are split into chunks of at most ATT_DCHUNK (att_dec_split: a
 * multiple of 4 near-equal chunks); a work item is (kv head, chunk)
 * and computes the partial softmax of all rep heads of the group from one read of that chunk of
 * K and V (16 keys' dot products reduced by one transpose-add tree). The partials (m, z, t,
 * masses, unnormalized output) merge per head in chunk order, so results do not depend on the
 * thread count. */
#define ATT_MAX_HD 128 /* head_dim up to 8 vectors */
#define ATT_BQ     16  /* query positions per tile; rows = rep * ATT_BQ, a multiple of 4 */
#define ATT_BK     128 /* keys per tile */
#define ATT_DCHUNK 256 /* decode: the most keys a work item takes */
#define ATT_INLINE static inline __attribute__((always_inline))

static inline __mmask16 lanes_below(int n) { /* the first n lanes (n <= 0: none, >= 16: all) */
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 16 values of the K or V cache at element i, lanes mk: fp32 (f), or the bf16 cache (h) widened
 * when bf (a compile-time constant at every call: the kernels are instantiated for both). The
 * bf16 path needs AVX-512 BW/VL for its masked 16-bit load; without them a bf16 cache takes the
 * one-row kernel. */
#if defined(__AVX512BW__) && defined(__AVX512VL__)
#define ATT_BF16 1
#endif
ATT_INLINE __m512 ld_kv(int bf, __mmask16 mk, const float *f, const uint16_t *h, size_t i) {
#ifdef ATT_BF16
    if (bf) {
        __m256i x = _mm256_maskz_loadu_epi16(mk, h + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
    }
#else
    (void)bf, (void)h;
#endif
    return _mm512_maskz_loadu_ps(mk, f + i);
}

/* S (4, ATT_BK) = Q (4 rows of stride qs) . Kt (hd, ATT_BK) over the first nch 64-key chunks */
ATT_INLINE void qk_4rows(float *S, const float *Q, int qs, const float *kt, int hd, int nch) {
    for (int c = 0; c < nch; c++) {
        __m512 acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
        const float *kc = kt + c * 64;
        for (int d = 0; d < hd; d++) {
            __m512 kv[4];
            for (int j = 0; j < 4; j++) kv[j] = _mm512_load_ps(kc + (size_t)d * ATT_BK + 16 * j);
            for (int i = 0; i < 4; i++) {
                __m512 qb = _mm512_set1_ps(Q[(size_t)i * qs + d]);
                for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(qb, kv[j], acc[i][j]);
            }
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                _mm512_store_ps(S + (size_t)i * ATT_BK + c * 64 + 16 * j, acc[i][j]);
    }
}

/* O (4, nv vectors) = alpha[i] * O + P (4, kn) . V (kn keys of stride vs from element voff of the
 * fp32 V or, when bf, the bf16 V16), nv <= 8 */
ATT_INLINE void pv_4rows(float *O, int os, const float *P, const float *alpha, const float *V,
                         const uint16_t *V16, size_t voff, int vs, int kn, int nv, __mmask16 tail,
                         int bf) {
    for (int vg = 0; vg < nv; vg += 4) {
        int nj = nv - vg < 4 ? nv - vg : 4;
        __m512 o[4][4];
        __mmask16 mk[4];
        for (int j = 0; j < nj; j++) mk[j] = vg + j == nv - 1 ? tail : (__mmask16)0xffff;
        for (int i = 0; i < 4; i++) {
            __m512 al = _mm512_set1_ps(alpha[i]);
            for (int j = 0; j < nj; j++)
                o[i][j] = _mm512_mul_ps(al, _mm512_load_ps(O + (size_t)i * os + (vg + j) * 16));
        }
        for (int k = 0; k < kn; k++) {
            const size_t vr = voff + (size_t)k * vs + (size_t)vg * 16;
            __m512 vv[4];
            for (int j = 0; j < nj; j++) vv[j] = ld_kv(bf, mk[j], V, V16, vr + 16 * (size_t)j);
            for (int i = 0; i < 4; i++) {
                __m512 pb = _mm512_set1_ps(P[(size_t)i * ATT_BK + k]);
                for (int j = 0; j < nj; j++) o[i][j] = _mm512_fmadd_ps(pb, vv[j], o[i][j]);
            }
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < nj; j++)
                _mm512_store_ps(O + (size_t)i * os + (vg + j) * 16, o[i][j]);
    }
}

/* Per-thread buffers of the prefill kernel (floats 64-byte aligned). */
typedef struct {
    float *Q, *O, *S, *m, *alpha;
    int *lim;
    double *st; /* per row: z, t, basin mass, off-basin mass (unnormalized) */
} att_tile_buf;

/* One work item: kv head g, query tile qt. Kt: g's packed key tiles. */
ATT_INLINE void attention_tile_item(const cv_attn_args *a, const float *Kt, int g, int qt,
                                    att_tile_buf *w, double *row_z, int nv, int bf) {
    const int T = a->T, hd = a->head_dim, NK = a->n_keys, rep = a->n_heads / a->n_kv_heads;
    const int R = rep * ATT_BQ, hdp = nv * 16, t0 = qt * ATT_BQ;
    const int tlast = t0 + ATT_BQ - 1 < T - 1 ? t0 + ATT_BQ - 1 : T - 1;
    const __mmask16 tail = lanes_below(hd - (nv - 1) * 16);
    const int want_basin = a->basin != NULL;
    for (int r = 0; r < R; r++) { /* padding rows (t > T - 1) repeat the last row, never stored */
        int h = g * rep + r / ATT_BQ, t = t0 + r % ATT_BQ;
        if (t > tlast) t = tlast;
        const float *q = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
        for (int j = 0; j < nv; j++) {
            __mmask16 mk = j == nv - 1 ? tail : (__mmask16)0xffff;
            _mm512_store_ps(w->Q + (size_t)r * hdp + 16 * j, _mm512_maskz_loadu_ps(mk, q + 16 * j));
            _mm512_store_ps(w->O + (size_t)r * hdp + 16 * j, _mm512_setzero_ps());
        }
        w->m[r] = -INFINITY;
        for (int i = 0; i < 4; i++) w->st[4 * r + i] = 0.0;
    }
    const int kmax = keys_visible(a, tlast), kmin = keys_visible(a, t0);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 scale = _mm512_set1_ps(a->scale);
    for (int k0 = 0; k0 < kmax; k0 += ATT_BK) {
        const int kn = kmax - k0 < ATT_BK ? kmax - k0 : ATT_BK, nch = (kn + 63) / 64;
        const float *kt = Kt + (size_t)(k0 / ATT_BK) * hd * ATT_BK;
        for (int r0 = 0; r0 < R; r0 += 4)
            qk_4rows(w->S + (size_t)r0 * ATT_BK, w->Q + (size_t)r0 * hdp, hdp, kt, hd, nch);
        const int full = k0 + kn <= kmin; /* every row sees all kn keys of this tile */
        for (int r = 0; r < R; r++) {
            int h = g * rep + r / ATT_BQ, t = t0 + r % ATT_BQ;
            if (t > tlast) t = tlast;
            int lim = full ? kn : keys_visible(a, t) - k0;
            if (lim > kn) lim = kn;
            float *s = w->S + (size_t)r * ATT_BK;
            w->lim[r] = lim > 0 ? lim : 0;
            w->alpha[r] = 1.0f;
            if (lim <= 0) { /* no visible key in this tile: the row is untouched and its
                             * weights 0 (its scores are in S, and P . V reads all 4 rows of its
                             * group up to the group's longest row) */
                for (int j = 0; j < nch * 64; j += 16) _mm512_store_ps(s + j, _mm512_setzero_ps());
                continue;
            }
            const float *bias = a->bias ? cv_attn_bias_row(a, h, t) + k0 : NULL;
            const int nvk = (lim + 15) / 16;
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int j = 0; j < nvk; j++) {
                __mmask16 mk = lanes_below(lim - 16 * j);
                __m512 sv = _mm512_mul_ps(_mm512_load_ps(s + 16 * j), scale);
                if (bias) sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(mk, bias + 16 * j));
                _mm512_store_ps(s + 16 * j, sv);
                mx = _mm512_mask_max_ps(mx, mk, mx, sv);
            }
            float tmax = _mm512_reduce_max_ps(mx), mold = w->m[r];
            float mnew = tmax > mold ? tmax : mold;
            __m512 mv = _mm512_set1_ps(mnew), zv = _mm512_setzero_ps(), tv = zv, bv = zv, ov = zv;
            for (int j = 0; j < nvk; j++) {
                __mmask16 mk = lanes_below(lim - 16 * j);
                __m512 d = _mm512_sub_ps(_mm512_load_ps(s + 16 * j), mv);
                __m512 p = _mm512_maskz_mov_ps(mk, cv_exp512(d));
                _mm512_store_ps(s + 16 * j, p);
                zv = _mm512_add_ps(zv, p);
                tv = _mm512_mask3_fmadd_ps(p, d, tv, mk);
                if (want_basin) {
                    __m512i ki = _mm512_add_epi32(lane, _mm512_set1_epi32(k0 + 16 * j));
                    __mmask16 in =
                        _mm512_mask_cmpge_epi32_mask(mk, ki, _mm512_set1_epi32(a->basin_lo));
                    in = _mm512_mask_cmplt_epi32_mask(in, ki, _mm512_set1_epi32(a->basin_hi));
                    bv = _mm512_mask_add_ps(bv, in, bv, p);
                    ov = _mm512_mask_add_ps(ov, mk & (__mmask16)~in, ov, p);
                }
            }
            for (int j = nvk * 16; j < nch * 64; j += 16)
                _mm512_store_ps(s + j, _mm512_setzero_ps());
            double *st = w->st + 4 * (size_t)r;
            double zs = _mm512_reduce_add_ps(zv), ts = _mm512_reduce_add_ps(tv);
            double bs = want_basin ? _mm512_reduce_add_ps(bv) : 0.0;
            double os = want_basin ? _mm512_reduce_add_ps(ov) : 0.0;
            if (mnew > mold && mold != -INFINITY) { /* the max rose: rescale what is held */
                double dm = (double)mold - (double)mnew, al = exp(dm);
                st[1] = al * (st[1] + dm * st[0]);
                st[0] *= al, st[2] *= al, st[3] *= al;
                w->alpha[r] = (float)al;
            }
            st[0] += zs, st[1] += ts, st[2] += bs, st[3] += os;
            w->m[r] = mnew;
        }
        const size_t vt = (size_t)k0 * a->kv_stride + kv_head_off(a, g);
        for (int r0 = 0; r0 < R; r0 += 4) {
            int kb = w->lim[r0];
            for (int i = 1; i < 4; i++) kb = w->lim[r0 + i] > kb ? w->lim[r0 + i] : kb;
            if (nv == 4)
                pv_4rows(w->O + (size_t)r0 * hdp, hdp, w->S + (size_t)r0 * ATT_BK, w->alpha + r0,
                         a->v, a->v16, vt, a->kv_stride, kb, 4, tail, bf);
            else
                pv_4rows(w->O + (size_t)r0 * hdp, hdp, w->S + (size_t)r0 * ATT_BK, w->alpha + r0,
                         a->v, a->v16, vt, a->kv_stride, kb, nv, tail, bf);
        }
    }
    for (int r = 0; r < R; r++) {
        int h = g * rep + r / ATT_BQ, t = t0 + r % ATT_BQ;
        if (t > tlast) continue;
        const double *st = w->st + 4 * (size_t)r;
        __m512 inv = _mm512_set1_ps((float)(1.0 / st[0]));
        float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
        for (int j = 0; j < nv; j++)
            _mm512_mask_storeu_ps(
                o + 16 * j, j == nv - 1 ? tail : (__mmask16)0xffff,
                _mm512_mul_ps(inv, _mm512_load_ps(w->O + (size_t)r * hdp + 16 * j)));
        double *q = row_z + 4 * ((size_t)h * T + t);
        q[0] = st[0];
        q[1] = st[1];
        q[2] = st[2] / st[0];
        q[3] = st[3] / st[0];
    }
}

static float *align64(float *p) {
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static void attention_tiled(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, T = a->T, hd = a->head_dim, KVH = a->n_kv_heads;
    const int rep = H / KVH, nv = (hd + 15) / 16, hdp = nv * 16, R = rep * ATT_BQ;
    const int kmax = keys_visible(a, T - 1), nkt = (kmax + ATT_BK - 1) / ATT_BK;
    const int nqt = (T + ATT_BQ - 1) / ATT_BQ, nt = omp_get_max_threads();
    const size_t kt_size = (size_t)hd * ATT_BK, kt_all = (size_t)KVH * nkt * kt_size;
    /* per thread: Q and O (R, hdp), S (R, ATT_BK), m, alpha, lim (R each), rounded to 16 */
    const size_t Rp = ((size_t)R + 15) / 16 * 16, per = 2 * (size_t)R * hdp + R * ATT_BK + 3 * Rp;
    float *fl = cv_cpu_scratch_flt(b, kt_all + (size_t)nt * per + 16);
    double *dbl = cv_cpu_scratch_dbl(b, 4 * (size_t)H * T + (size_t)nt * 4 * R);
    if (!fl || !dbl) return; /* out of memory: outputs left as they are */
    float *Kt = align64(fl);
    double *row_z = dbl;
    att_pack_kt(a, Kt, kmax, ATT_BK);
#pragma omp parallel
    {
        int me = omp_get_thread_num();
        float *base = Kt + kt_all + (size_t)me * per;
        att_tile_buf w = {.Q = base,
                          .O = base + (size_t)R * hdp,
                          .S = base + 2 * (size_t)R * hdp,
                          .m = base + 2 * (size_t)R * hdp + (size_t)R * ATT_BK,
                          .st = dbl + 4 * (size_t)H * T + (size_t)me * 4 * R};
        w.alpha = w.m + Rp;
        w.lim = (int *)(w.alpha + Rp);
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < KVH * nqt; it++) {
            int qt = nqt - 1 - it / KVH, g = it % KVH; /* longest causal tiles first */
            const float *kt = Kt + (size_t)g * nkt * kt_size;
            if (a->k16)
                attention_tile_item(a, kt, g, qt, &w, row_z, nv, 1);
            else
                attention_tile_item(a, kt, g, qt, &w, row_z, nv, 0);
        }
    }
    if (a->stats || a->heads || a->basin) cv_attn_merge_rows(a, row_z);
}

/* v[j] -> lane j of the result holds the sum of v[j]'s 16 lanes (a transpose-add tree) */
ATT_INLINE __m512 hsum16(const __m512 v[16]) {
    __m512 t[8], u[4], x[2];
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44),
                             _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[i], t[i + 4], 0x88),
                             _mm512_shuffle_f32x4(t[i], t[i + 4], 0xDD));
    for (int i = 0; i < 2; i++)
        x[i] = _mm512_add_ps(_mm512_shuffle_ps(u[i], u[i + 2], 0x44),
                             _mm512_shuffle_ps(u[i], u[i + 2], 0xEE));
    __m512 y =
        _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x88), _mm512_shuffle_ps(x[0], x[1], 0xDD));
    /* lane order after the tree: v0 v2 v1 v3 v8 v10 v9 v11 v4 v6 v5 v7 v12 v14 v13 v15 */
    const __m512i idx = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    return _mm512_permutexvar_ps(idx, y);
}

/* Decode: o (nh heads of stride os, nj vectors) = P (nh rows of ATT_DCHUNK) . V (kn rows from
 * element vr, stride kv_stride); mlast masks the last vector. With each key, lpk lines of
 * [*pp, pe) are prefetched (the next item's keys) and *pp advanced past them. */
ATT_INLINE void pv_decode(const cv_attn_args *a, int bf, const float *P, float *o, int os,
                          size_t vr, int kn, int nh, int nj, __mmask16 mlast, const char **pp,
                          const char *pe, int lpk) {
    __m512 acc[4][4];
    for (int i = 0; i < nh; i++)
        for (int j = 0; j < nj; j++) acc[i][j] = _mm512_setzero_ps();
    const char *p = *pp;
    for (int k = 0; k < kn; k++, vr += (size_t)a->kv_stride) {
        for (int l = 0; l < lpk && p < pe; l++, p += 64) _mm_prefetch(p, _MM_HINT_T1);
        __m512 vv[4];
        for (int j = 0; j < nj; j++)
            vv[j] = ld_kv(bf, j == nj - 1 ? mlast : (__mmask16)0xffff, a->v, a->v16,
                          vr + 16 * (size_t)j);
        for (int i = 0; i < nh; i++) {
            __m512 pb = _mm512_set1_ps(P[(size_t)i * ATT_DCHUNK + k]);
            for (int j = 0; j < nj; j++) acc[i][j] = _mm512_fmadd_ps(pb, vv[j], acc[i][j]);
        }
    }
    *pp = p;
    for (int i = 0; i < nh; i++)
        for (int j = 0; j < nj; j++) _mm512_store_ps(o + (size_t)i * os + j * 16, acc[i][j]);
}

/* Decode, one work item: scores of the rep heads of kv head g against keys k0..k0+kn-1 into s
 * (rep, ATT_DCHUNK), then the chunk's softmax partials and unnormalized outputs. The chunk's V
 * rows are prefetched during the first head's scores, and the pfb bytes at pf (the next item's
 * keys) during the P . V, as in the AVX2 decode (docs/perf.md: 3-8% there; not measured on an
 * AVX-512 CPU). */
ATT_INLINE void decode_chunk(const cv_attn_args *a, int g, int k0, int kn, float *s, double *part,
                             float *po, int nv, int bf, const char *pf, size_t pfb) {
    const int hd = a->head_dim, rep = a->n_heads / a->n_kv_heads, hdp = nv * 16;
    const __mmask16 tail = lanes_below(hd - (nv - 1) * 16);
    const __m512 scale = _mm512_set1_ps(a->scale);
    const size_t kbase = (size_t)k0 * a->kv_stride + kv_head_off(a, g); /* element offsets */
    size_t vrow;
    const char *vp = att_dec_vrows(a, kbase, bf, &vrow);
    for (int hi = 0; hi < rep; hi++) {
        const float *q = a->q + (size_t)(g * rep + hi) * hd;
        __m512 qv[8];
        for (int j = 0; j < nv; j++)
            qv[j] = _mm512_maskz_loadu_ps(j == nv - 1 ? tail : (__mmask16)0xffff, q + 16 * j);
        for (int kb = 0; kb < kn; kb += 16) {
            __m512 acc[16];
            const int nk = kn - kb < 16 ? kn - kb : 16; /* 16 but in the last block */
            if (vp && hi == 0) /* the block's V rows, for the P . V below */
                for (size_t o = (size_t)kb * vrow; o < (size_t)(kb + nk) * vrow; o += 64)
                    _mm_prefetch(vp + o, _MM_HINT_T1);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) {
                acc[i] = _mm512_setzero_ps();
                if (nk < 16 && i >= nk) continue;
                const size_t kr = kbase + (size_t)(kb + i) * a->kv_stride;
                for (int j = 0; j < nv; j++)
                    acc[i] = _mm512_fmadd_ps(qv[j],
                                             ld_kv(bf, j == nv - 1 ? tail : (__mmask16)0xffff, a->k,
                                                   a->k16, kr + 16 * (size_t)j),
                                             acc[i]);
            }
            _mm512_store_ps(s + (size_t)hi * ATT_DCHUNK + kb, _mm512_mul_ps(hsum16(acc), scale));
        }
    }
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int nvk = (kn + 15) / 16;
    for (int hi = 0; hi < rep; hi++) {
        float *sh = s + (size_t)hi * ATT_DCHUNK;
        const float *bias = a->bias ? cv_attn_bias_row(a, g * rep + hi, 0) + k0 : NULL;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < nvk; j++) {
            __mmask16 mk = lanes_below(kn - 16 * j);
            __m512 sv = _mm512_load_ps(sh + 16 * j);
            if (bias) sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(mk, bias + 16 * j));
            _mm512_store_ps(sh + 16 * j, sv);
            mx = _mm512_mask_max_ps(mx, mk, mx, sv);
        }
        float m = _mm512_reduce_max_ps(mx);
        __m512 mv = _mm512_set1_ps(m), zv = _mm512_setzero_ps(), tv = zv, bv = zv, ov = zv;
        for (int j = 0; j < nvk; j++) {
            __mmask16 mk = lanes_below(kn - 16 * j);
            __m512 d = _mm512_sub_ps(_mm512_load_ps(sh + 16 * j), mv);
            __m512 p = _mm512_maskz_mov_ps(mk, cv_exp512(d));
            _mm512_store_ps(sh + 16 * j, p);
            zv = _mm512_add_ps(zv, p);
            tv = _mm512_mask3_fmadd_ps(p, d, tv, mk);
            if (a->basin) {
                __m512i ki = _mm512_add_epi32(lane, _mm512_set1_epi32(k0 + 16 * j));
                __mmask16 in = _mm512_mask_cmpge_epi32_mask(mk, ki, _mm512_set1_epi32(a->basin_lo));
                in = _mm512_mask_cmplt_epi32_mask(in, ki, _mm512_set1_epi32(a->basin_hi));
                bv = _mm512_mask_add_ps(bv, in, bv, p);
                ov = _mm512_mask_add_ps(ov, mk & (__mmask16)~in, ov, p);
            }
        }
        double *pt = part + 5 * (size_t)hi;
        pt[0] = m;
        pt[1] = _mm512_reduce_add_ps(zv);
        pt[2] = _mm512_reduce_add_ps(tv);
        pt[3] = a->basin ? _mm512_reduce_add_ps(bv) : 0.0;
        pt[4] = a->basin ? _mm512_reduce_add_ps(ov) : 0.0;
    }
    /* po (rep, hdp) = P (rep, kn) . V, up to four heads and four vectors at a time; the common
     * (heads, vectors) shapes get constant trip counts so the accumulators stay in registers */
    const char *pp = pf, *pe = pfb ? pf + pfb : pf;
    const int lpk = kn > 0 ? (int)((pfb / 64 + (size_t)kn - 1) / (size_t)kn) : 0;
    for (int h0 = 0; h0 < rep; h0 += 4) {
        int nh = rep - h0 < 4 ? rep - h0 : 4;
        for (int vg = 0; vg < nv; vg += 4) {
            int nj = nv - vg < 4 ? nv - vg : 4;
            const float *sh = s + (size_t)h0 * ATT_DCHUNK;
            float *oh = po + (size_t)h0 * hdp + vg * 16;
            size_t vr = kbase + (size_t)vg * 16;
            __mmask16 mlast = vg + nj == nv ? tail : (__mmask16)0xffff;
            if (nj == 4 && nh == 3)
                pv_decode(a, bf, sh, oh, hdp, vr, kn, 3, 4, mlast, &pp, pe, lpk);
            else if (nj == 4 && nh == 4)
                pv_decode(a, bf, sh, oh, hdp, vr, kn, 4, 4, mlast, &pp, pe, lpk);
            else if (nj == 4 && nh == 1)
                pv_decode(a, bf, sh, oh, hdp, vr, kn, 1, 4, mlast, &pp, pe, lpk);
            else if (nj == 4 && nh == 2)
                pv_decode(a, bf, sh, oh, hdp, vr, kn, 2, 4, mlast, &pp, pe, lpk);
            else
                pv_decode(a, bf, sh, oh, hdp, vr, kn, nh, nj, mlast, &pp, pe, lpk);
        }
    }
    for (; pp < pe; pp += 64) _mm_prefetch(pp, _MM_HINT_T1);
}

static void attention_decode(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, hd = a->head_dim, KVH = a->n_kv_heads, rep = H / KVH;
    const int nv = (hd + 15) / 16, hdp = nv * 16, kend = keys_visible(a, 0);
    int cs;
    const int nch = att_dec_split(kend, ATT_DCHUNK, &cs), items = KVH * nch;
    const int nt = omp_get_max_threads();
    const size_t sc = (size_t)rep * ATT_DCHUNK; /* per-thread scores */
    float *fl = cv_cpu_scratch_flt(b, (size_t)items * rep * hdp + (size_t)nt * sc + 16);
    double *dbl = cv_cpu_scratch_dbl(b, 4 * (size_t)H + (size_t)items * rep * 5);
    if (!fl || !dbl) return;
    float *po = align64(fl), *scores = po + (size_t)items * rep * hdp;
    double *row_z = dbl, *part = dbl + 4 * (size_t)H;
    /* items run chunk-major (all kv heads of a chunk of keys, then the next chunk): over an
     * interleaved cache a thread then reads whole rows in address order; over a head-major one
     * (the CPU's own, kv_head_stride) each item is one contiguous block of K and of V.
     * Partials are stored head-major. */
#pragma omp parallel for schedule(static) if ((size_t)kend * KVH * hd > 32768)
    for (int it = 0; it < items; it++) {
        int g = it % KVH, c = it / KVH, k0 = c * cs;
        int kn = kend - k0 < cs ? kend - k0 : cs;
        float *s = scores + (size_t)omp_get_thread_num() * sc;
        size_t pi = (size_t)g * nch + c, pfb;
        double *pt = part + pi * rep * 5;
        float *o = po + pi * rep * hdp;
        const char *pf = att_dec_next_keys(a, it, items, kend, cs, &pfb);
        if (a->k16 && nv == 4)
            decode_chunk(a, g, k0, kn, s, pt, o, 4, 1, pf, pfb);
        else if (a->k16)
            decode_chunk(a, g, k0, kn, s, pt, o, nv, 1, pf, pfb);
        else if (nv == 4)
            decode_chunk(a, g, k0, kn, s, pt, o, 4, 0, pf, pfb);
        else
            decode_chunk(a, g, k0, kn, s, pt, o, nv, 0, pf, pfb);
    }
    /* merge the chunks of each head in order: M = max m_c, w_c = e^(m_c - M),
     * z = sum w_c z_c, t = sum w_c (t_c + (m_c - M) z_c), masses and outputs likewise */
    const __mmask16 tail = lanes_below(hd - (nv - 1) * 16);
    for (int h = 0; h < H; h++) {
        int g = h / rep, hi = h % rep;
        const double M = att_chunks_max(part, nch, rep, g, hi);
        double sums[4] = {0, 0, 0, 0};
        __m512 acc[8];
        for (int j = 0; j < nv; j++) acc[j] = _mm512_setzero_ps();
        for (int c = 0; c < nch; c++) {
            size_t pi = (size_t)(g * nch + c) * rep + hi;
            __m512 wv = _mm512_set1_ps((float)att_chunk_fold(part + pi * 5, M, nch, sums));
            for (int j = 0; j < nv; j++)
                acc[j] = _mm512_fmadd_ps(wv, _mm512_load_ps(po + pi * hdp + 16 * j), acc[j]);
        }
        __m512 inv = _mm512_set1_ps((float)(1.0 / sums[0]));
        float *out = a->out + (size_t)h * hd;
        for (int j = 0; j < nv; j++)
            _mm512_mask_storeu_ps(out + 16 * j, j == nv - 1 ? tail : (__mmask16)0xffff,
                                  _mm512_mul_ps(inv, acc[j]));
        att_chunks_row(row_z + 4 * h, sums);
    }
    if (a->stats || a->heads || a->basin) cv_attn_merge_rows(a, row_z);
}
#endif

#ifdef CV_CPU_AVX2
/* ---- tiled attention (AVX2 + FMA, CPUs without AVX-512) ------------------------------------
 * The AVX-512 prefill kernel's algorithm at 8 lanes (T > 1): a work item is kv head g and a tile
 * of A2_BQ query positions for the rep query heads reading g (rows r = hi * A2_BQ + tq, padded to a
 * multiple of A2_RG with copies of the last row, never stored). Keys are packed per call into
 * (head_dim, A2_BK) transposed tiles; per key tile S = Q . K^T is 6 rows x 16 keys of outer
 * products in registers, then each row's running max, z, t and basin masses are rescaled by the
 * online-softmax identity (exact; see above) and P . V runs 6 rows x 16 dims at a time, V read from
 * the cache. head_dim a multiple of 8 (<= 128). */
#ifndef A2_BK
#define A2_BK 64 /* keys per tile */
#endif
#define A2_BQ     16 /* query positions per tile */
#define A2_RG     6  /* rows per register tile: 12 accumulators of the 16 ymm registers */
#define A2_MAX_HD 128
#define A2_INL    static inline __attribute__((always_inline))

A2_INL __m256 a2_lanes_below(int n) { /* all-ones in the first n lanes */
    return _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* 8 values of the fp32 cache f, or the bf16 cache h widened (bf a constant at every call) */
A2_INL __m256 a2_ld_kv(int bf, const float *f, const uint16_t *h, size_t i) {
    if (bf)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i))), 16));
    return _mm256_loadu_ps(f + i);
}

A2_INL float a2_hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* A row of lim (> 0) raw scores s (32-byte aligned, room to the next 8): times mul (1 where they
 * are already scaled), plus the bias, -inf past lim to the vector's end; returns the row's max. */
A2_INL float a2_row_mask_max(float *s, const float *bias, int lim, __m256 mul) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 mx = ninf;
    int j = 0;
    if (!bias)
        for (; j < lim / 8; j++) { /* whole vectors without a bias need no masks */
            __m256 sv = _mm256_mul_ps(_mm256_load_ps(s + 8 * j), mul);
            _mm256_store_ps(s + 8 * j, sv);
            mx = _mm256_max_ps(mx, sv);
        }
    for (; j < (lim + 7) / 8; j++) {
        __m256 mk = a2_lanes_below(lim - 8 * j);
        __m256 sv = _mm256_mul_ps(_mm256_load_ps(s + 8 * j), mul);
        if (bias) sv = _mm256_add_ps(sv, _mm256_maskload_ps(bias + 8 * j, _mm256_castps_si256(mk)));
        sv = _mm256_blendv_ps(ninf, sv, mk);
        _mm256_store_ps(s + 8 * j, sv);
        mx = _mm256_max_ps(mx, sv);
    }
    return a2_hmax(mx);
}

/* The row's weights p = e^(s - m) in place (0 past lim) and their sums: out[0] z = sum p,
 * out[1] sum p (s - m), out[2] / out[3] the masses inside / outside the basin (keys k0 + j;
 * 0 without a basin). */
A2_INL void a2_row_exp_sums(const cv_attn_args *a, float *s, int lim, int k0, float m,
                            double out[4]) {
    const __m256 mv = _mm256_set1_ps(m);
    __m256 zv = _mm256_setzero_ps(), tv = zv;
    const int nv = (lim + 7) / 8;
    int j = 0;
    for (; j < lim / 8; j++) { /* whole vectors need no masks */
        __m256 d = _mm256_sub_ps(_mm256_load_ps(s + 8 * j), mv);
        __m256 p = cv_exp256_neg(d);
        _mm256_store_ps(s + 8 * j, p);
        zv = _mm256_add_ps(zv, p);
        tv = _mm256_fmadd_ps(p, d, tv);
    }
    if (j < nv) {
        __m256 mk = a2_lanes_below(lim - 8 * j);
        __m256 d = _mm256_and_ps(mk, _mm256_sub_ps(_mm256_load_ps(s + 8 * j), mv));
        __m256 p = _mm256_and_ps(mk, cv_exp256_neg(d));
        _mm256_store_ps(s + 8 * j, p);
        zv = _mm256_add_ps(zv, p);
        tv = _mm256_fmadd_ps(p, d, tv);
    }
    out[0] = cv_hsum256(zv);
    out[1] = cv_hsum256(tv);
    out[2] = out[3] = 0.0;
    if (!a->basin) return;
    /* with a basin (a prompt pass with health on), a second pass over the stored weights: in
     * the exp's loop the two more accumulators and the key compares pushed its constants out of
     * the registers (+13% on the attention of a 4,096-token prefill). A vector of 8 keys wholly
     * inside or outside [basin_lo, basin_hi) adds to one mass unmasked; only the vectors on its
     * edges compare key indices. */
    const int blo = a->basin_lo, bhi = a->basin_hi;
    if (k0 >= blo && k0 + lim <= bhi) { /* all inside: the same sums as z, in the same order */
        out[2] = out[0];
        return;
    }
    if (k0 + lim <= blo || k0 >= bhi) { /* all outside */
        out[3] = out[0];
        return;
    }
    __m256 bv = _mm256_setzero_ps(), ov = bv;
    for (j = 0; j < nv; j++) {
        const int kj = k0 + 8 * j;
        const __m256 p = _mm256_load_ps(s + 8 * j);
        if (kj >= blo && kj + 8 <= bhi) {
            bv = _mm256_add_ps(bv, p);
        } else if (kj + 8 <= blo || kj >= bhi) {
            ov = _mm256_add_ps(ov, p);
        } else {
            const __m256i ki =
                _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(kj));
            const __m256 in = _mm256_castsi256_ps(
                _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(blo), ki),
                                    _mm256_cmpgt_epi32(_mm256_set1_epi32(bhi), ki)));
            bv = _mm256_add_ps(bv, _mm256_and_ps(in, p));
            ov = _mm256_add_ps(ov, _mm256_andnot_ps(in, p));
        }
    }
    out[2] = cv_hsum256(bv);
    out[3] = cv_hsum256(ov);
}

typedef struct {
    float *Q, *O, *S, *m, *alpha, *rmax; /* rmax: each row's max over the tile, from S = Q . K^T */
    int *lim;
    double *st; /* per row: z, t, basin mass, off-basin mass (unnormalized) */
    /* the scale is a power of 2 (1/8 at head_dim 64, 1 for T5): (q s) . k = (q . k) s exactly,
     * so Q is scaled as it is copied and the rows' maxima come from the product's registers */
    int prescale;
} a2_att_buf;

A2_INL void a2_att_item(const cv_attn_args *a, const float *Kt, int g, int qt, a2_att_buf *w,
                        double *row_z, int bf) {
    const int T = a->T, hd = a->head_dim, rep = a->n_heads / a->n_kv_heads;
    const int bq = A2_BQ, R = (rep * bq + A2_RG - 1) / A2_RG * A2_RG, nv = hd / 8, t0 = qt * bq,
              nrow = rep * bq;
    const int tlast = t0 + bq - 1 < T - 1 ? t0 + bq - 1 : T - 1, prescale = w->prescale;
    const __m256 qmul = _mm256_set1_ps(prescale ? a->scale : 1.0f);
    for (int r = 0; r < R; r++) { /* padding rows repeat the last real row, never stored */
        int rr = r < nrow ? r : nrow - 1, h = g * rep + rr / bq, t = t0 + rr % bq;
        if (t > tlast) t = tlast;
        const float *qr = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
        for (int j = 0; j < nv; j++) /* times the scale when that is exact (prescale) */
            _mm256_storeu_ps(w->Q + (size_t)r * hd + 8 * j,
                             _mm256_mul_ps(qmul, _mm256_loadu_ps(qr + 8 * j)));
        memset(w->O + (size_t)r * hd, 0, sizeof(float) * (size_t)hd);
        w->m[r] = -INFINITY;
        for (int i = 0; i < 4; i++) w->st[4 * r + i] = 0.0;
    }
    const int kmax = keys_visible(a, tlast), kmin = keys_visible(a, t0);
    const __m256 scale = _mm256_set1_ps(prescale ? 1.0f : a->scale);
    for (int k0 = 0; k0 < kmax; k0 += A2_BK) {
        const int kn = kmax - k0 < A2_BK ? kmax - k0 : A2_BK, nch = (kn + 15) / 16;
        const float *kt = Kt + (size_t)(k0 / A2_BK) * hd * A2_BK;
        /* every row sees all kn keys of this tile, none padded: each row's max is taken from the
         * product's registers (with a prescaled Q and no bias), not by another pass over S */
        const int full = k0 + kn <= kmin, regmax = full && prescale && !a->bias && kn == nch * 16;
        for (int r0 = 0; r0 < R; r0 += A2_RG) { /* S = Q . K^T, A2_RG rows x 16 keys at a time */
            __m256 mx[A2_RG];
            for (int i = 0; i < A2_RG; i++) mx[i] = _mm256_set1_ps(-INFINITY);
            for (int c = 0; c < nch; c++) {
                __m256 acc[A2_RG][2];
                for (int i = 0; i < A2_RG; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
                const float *kc = kt + c * 16;
                const float *q = w->Q + (size_t)r0 * hd;
                for (int d = 0; d < hd; d++) {
                    __m256 k0v = _mm256_load_ps(kc + (size_t)d * A2_BK);
                    __m256 k1v = _mm256_load_ps(kc + (size_t)d * A2_BK + 8);
                    for (int i = 0; i < A2_RG; i++) {
                        __m256 qb = _mm256_broadcast_ss(q + (size_t)i * hd + d);
                        acc[i][0] = _mm256_fmadd_ps(qb, k0v, acc[i][0]);
                        acc[i][1] = _mm256_fmadd_ps(qb, k1v, acc[i][1]);
                    }
                }
                for (int i = 0; i < A2_RG; i++) {
                    _mm256_store_ps(w->S + (size_t)(r0 + i) * A2_BK + c * 16, acc[i][0]);
                    _mm256_store_ps(w->S + (size_t)(r0 + i) * A2_BK + c * 16 + 8, acc[i][1]);
                    if (regmax) mx[i] = _mm256_max_ps(mx[i], _mm256_max_ps(acc[i][0], acc[i][1]));
                }
            }
            if (regmax)
                for (int i = 0; i < A2_RG; i++) w->rmax[r0 + i] = a2_hmax(mx[i]);
        }
        for (int r = 0; r < R; r++) {
            int rr = r < nrow ? r : nrow - 1, h = g * rep + rr / bq, t = t0 + rr % bq;
            if (t > tlast) t = tlast;
            int lim = full ? kn : keys_visible(a, t) - k0;
            if (lim > kn) lim = kn;
            float *s = w->S + (size_t)r * A2_BK;
            w->lim[r] = lim > 0 ? lim : 0;
            w->alpha[r] = 1.0f;
            if (lim <= 0) { /* no visible key here: weights 0 (P . V reads the row's group) */
                memset(s, 0, sizeof(float) * A2_BK);
                continue;
            }
            const float *bias = a->bias ? cv_attn_bias_row(a, h, t) + k0 : NULL;
            const int nvk = (lim + 7) / 8;
            float tmax = regmax ? w->rmax[r] : a2_row_mask_max(s, bias, lim, scale), mold = w->m[r];
            float mnew = tmax > mold ? tmax : mold;
            double sums[4];
            a2_row_exp_sums(a, s, lim, k0, mnew, sums);
            for (int j = nvk * 8; j < nch * 16; j += 8) _mm256_store_ps(s + j, _mm256_setzero_ps());
            double *st = w->st + 4 * (size_t)r;
            const double zs = sums[0], ts = sums[1], bs = sums[2], os = sums[3];
            if (mnew > mold && mold != -INFINITY) { /* the max rose: rescale what is held */
                double dm = (double)mold - (double)mnew, al = exp(dm);
                st[1] = al * (st[1] + dm * st[0]);
                st[0] *= al, st[2] *= al, st[3] *= al;
                w->alpha[r] = (float)al;
            }
            st[0] += zs, st[1] += ts, st[2] += bs, st[3] += os;
            w->m[r] = mnew;
        }
        const size_t vt = (size_t)k0 * a->kv_stride + kv_head_off(a, g);
        for (int r0 = 0; r0 < R;
             r0 += A2_RG) { /* O = alpha O + P . V, A2_RG rows x 16 dims at a time */
            int kb = w->lim[r0];
            for (int i = 1; i < A2_RG; i++) kb = w->lim[r0 + i] > kb ? w->lim[r0 + i] : kb;
            const float *P = w->S + (size_t)r0 * A2_BK;
            for (int v0 = 0; v0 < nv; v0 += 2) {
                /* an odd last vector of dims reads its own dims twice (in bounds, no branch in
                 * the key loop) and leaves the second half unstored */
                const int two = v0 + 1 < nv;
                const size_t d1 = two ? 8 : 0, vs = (size_t)a->kv_stride;
                __m256 o[A2_RG][2];
                for (int i = 0; i < A2_RG; i++) {
                    __m256 al = _mm256_set1_ps(w->alpha[r0 + i]);
                    float *oi = w->O + (size_t)(r0 + i) * hd + v0 * 8;
                    o[i][0] = _mm256_mul_ps(al, _mm256_loadu_ps(oi));
                    o[i][1] =
                        two ? _mm256_mul_ps(al, _mm256_loadu_ps(oi + 8)) : _mm256_setzero_ps();
                }
                size_t vr = vt + (size_t)v0 * 8;
                for (int k = 0; k < kb; k++, vr += vs) {
                    __m256 x0 = a2_ld_kv(bf, a->v, a->v16, vr);
                    __m256 x1 = a2_ld_kv(bf, a->v, a->v16, vr + d1);
                    for (int i = 0; i < A2_RG; i++) {
                        __m256 pb = _mm256_broadcast_ss(P + (size_t)i * A2_BK + k);
                        o[i][0] = _mm256_fmadd_ps(pb, x0, o[i][0]);
                        o[i][1] = _mm256_fmadd_ps(pb, x1, o[i][1]);
                    }
                }
                for (int i = 0; i < A2_RG; i++) {
                    float *oi = w->O + (size_t)(r0 + i) * hd + v0 * 8;
                    _mm256_storeu_ps(oi, o[i][0]);
                    if (two) _mm256_storeu_ps(oi + 8, o[i][1]);
                }
            }
        }
    }
    for (int r = 0; r < nrow; r++) {
        int h = g * rep + r / bq, t = t0 + r % bq;
        if (t > tlast) continue;
        const double *st = w->st + 4 * (size_t)r;
        __m256 inv = _mm256_set1_ps((float)(1.0 / st[0]));
        float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
        for (int j = 0; j < nv; j++)
            _mm256_storeu_ps(o + 8 * j,
                             _mm256_mul_ps(inv, _mm256_loadu_ps(w->O + (size_t)r * hd + 8 * j)));
        double *q = row_z + 4 * ((size_t)h * T + t);
        q[0] = st[0];
        q[1] = st[1];
        q[2] = st[2] / st[0];
        q[3] = st[3] / st[0];
    }
}

/* Decode (T = 1), split over keys as the AVX-512 decode: a work item is (kv head g, a chunk of
 * keys); it computes the partial softmax (m, z, t, basin masses) and the unnormalized P . V of all
 * rep heads of the group from that chunk of K and V, and the partials merge per head in chunk
 * order (deterministic for any thread count). */
#ifndef A2_DCHUNK
#define A2_DCHUNK 256
#endif

/* The GQA group's heads share each K and V read: up to A2_DG heads of the group at a time.
 * Scores: 4 keys x NH heads, 12 accumulators, each K vector loaded once for all NH heads (q from
 * L1); P . V: NH heads x 4 vectors of dims, 12 accumulators, each V vector loaded once for all
 * NH heads. Key order and each product's FMA chain are those of one head at a time. */
#define A2_DG 3

/* scores s[h][kb..kb+3] (scaled) of heads h0..h0+NH-1 for keys kb.. of the chunk; keys past
 * kn read key kn-1 again (in bounds; their scores are masked afterwards) */
A2_INL void a2_dec_qk(const cv_attn_args *a, const float *q, size_t kbase, int kb, int kn, float *s,
                      int NH, int bf) {
    const int hd = a->head_dim, nv = hd / 8;
    size_t kr[4];
    for (int i = 0; i < 4; i++)
        kr[i] = kbase + (size_t)(kb + i < kn ? kb + i : kn - 1) * a->kv_stride;
    __m256 acc[A2_DG][4];
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < 4; i++) acc[h][i] = _mm256_setzero_ps();
    for (int j = 0; j < nv; j++) { /* q's 8 dims of NH heads in registers, 4 K loads */
        __m256 qv[A2_DG];
        for (int h = 0; h < NH; h++) {
            qv[h] = _mm256_loadu_ps(q + (size_t)h * hd + 8 * j);
            /* opaque to the compiler, so it keeps qv in a register; else with 12 accumulators
             * it reloads q for every FMA and the loop is bound by loads (2.7-3.6 against
             * 1.9-2.4 us a chunk, Zen 3) */
            __asm__("" : "+x"(qv[h]));
        }
        for (int i = 0; i < 4; i++) {
            __m256 kv = a2_ld_kv(bf, a->k, a->k16, kr[i] + 8 * (size_t)j);
            __asm__("" : "+x"(kv)); /* one load for the NH FMAs, not one each */
            for (int h = 0; h < NH; h++) acc[h][i] = _mm256_fmadd_ps(qv[h], kv, acc[h][i]);
        }
    }
    const __m128 scale = _mm_set1_ps(a->scale);
    for (int h = 0; h < NH; h++) { /* lane i: key i's sum: (0+1)+(2+3) + (4+5)+(6+7) */
        __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(acc[h][0], acc[h][1]),
                                  _mm256_hadd_ps(acc[h][2], acc[h][3]));
        __m128 r = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        _mm_storeu_ps(s + (size_t)h * A2_DCHUNK + kb, _mm_mul_ps(r, scale));
    }
}

/* po[h][v0*8 .. +8*VB] (+)= sum over kn keys of p[h][k] V[k] for NH heads (more: po holds the
 * sums over the keys before, continued in the same order); two lines of [*pp, pe) prefetched
 * with each key (the next item's keys), *pp advanced past them */
A2_INL void a2_dec_pv(const cv_attn_args *a, const float *s, size_t vr, int kn, float *po, int v0,
                      int NH, int VB, int bf, const char **pp, const char *pe, int more) {
    const int hd = a->head_dim;
    __m256 o[A2_DG][4];
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < VB; j++)
            o[h][j] =
                more ? _mm256_loadu_ps(po + (size_t)h * hd + (v0 + j) * 8) : _mm256_setzero_ps();
    vr += (size_t)v0 * 8;
    const char *p = *pp;
    for (int k = 0; k < kn; k++, vr += (size_t)a->kv_stride) {
        if (p < pe) {
            _mm_prefetch(p, _MM_HINT_T1);
            _mm_prefetch(p + 64, _MM_HINT_T1);
            p += 128;
        }
        __m256 pv[A2_DG];
        for (int h = 0; h < NH; h++) pv[h] = _mm256_broadcast_ss(s + (size_t)h * A2_DCHUNK + k);
        for (int j = 0; j < VB; j++) {
            __m256 x = a2_ld_kv(bf, a->v, a->v16, vr + 8 * (size_t)j);
            __asm__("" : "+x"(x)); /* one load for the NH FMAs, not one each */
            for (int h = 0; h < NH; h++) o[h][j] = _mm256_fmadd_ps(pv[h], x, o[h][j]);
        }
    }
    *pp = p;
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < VB; j++) _mm256_storeu_ps(po + (size_t)h * hd + (v0 + j) * 8, o[h][j]);
}

/* one head group's scores and P . V with NH (a constant) heads. vpf (not NULL for the group's
 * first heads, with contiguous rows of vrow bytes): the chunk's V rows, prefetched as the scores
 * of their keys are computed, so the memory is busy during the scores too (the next chunk's keys
 * are fetched during P . V); from 4 KiB-paged memory this was no gain, from huge pages
 * 4-10% on the decode attention at 4,096 keys (docs/perf.md). */
A2_INL void a2_dec_group_qk(const cv_attn_args *a, const float *q, size_t kbase, int kn, float *s,
                            int NH, int bf, const char *vpf, size_t vrow) {
    for (int kb = 0; kb < kn; kb += 4) {
        if (vpf) { /* four lines an iteration (a line or three past the chunk's end is harmless) */
            const size_t end = (size_t)(kb + 4 < kn ? kb + 4 : kn) * vrow;
            for (size_t o = (size_t)kb * vrow; o < end; o += 256) {
                _mm_prefetch(vpf + o, _MM_HINT_T1);
                _mm_prefetch(vpf + o + 64, _MM_HINT_T1);
                _mm_prefetch(vpf + o + 128, _MM_HINT_T1);
                _mm_prefetch(vpf + o + 192, _MM_HINT_T1);
            }
        }
        a2_dec_qk(a, q, kbase, kb, kn, s, NH, bf);
    }
}
/* Keys in blocks of A2_DPB: each block's V rows (A2_DPB x head_dim) are read from memory once,
 * by the first pass over its dims, and from L1 by the others; the NH x 4 accumulators go through
 * po between blocks (the same FMA chains, so the same sums as one pass over all keys). The next
 * item's pfb bytes of keys are prefetched two lines a key through the passes (the rest, if any,
 * at the end). */
#define A2_DPB 32
A2_INL void a2_dec_group_pv(const cv_attn_args *a, const float *s, size_t kbase, int kn, float *po,
                            int NH, int bf, const char *pf, size_t pfb) {
    const int nv = a->head_dim / 8;
    const char *pp = pf, *pe = pfb ? pf + pfb : pf;
    for (int k0 = 0; k0 < kn; k0 += A2_DPB) {
        const int bn = kn - k0 < A2_DPB ? kn - k0 : A2_DPB;
        const size_t vr = kbase + (size_t)k0 * a->kv_stride;
        int v0 = 0;
        for (; v0 + 4 <= nv; v0 += 4)
            a2_dec_pv(a, s + k0, vr, bn, po, v0, NH, 4, bf, &pp, pe, k0 > 0);
        for (; v0 < nv; v0++) a2_dec_pv(a, s + k0, vr, bn, po, v0, NH, 1, bf, &pp, pe, k0 > 0);
    }
    for (; pp < pe; pp += 64) _mm_prefetch(pp, _MM_HINT_T1);
}

A2_INL void a2_decode_chunk(const cv_attn_args *a, int g, int k0, int kn, float *s, double *part,
                            float *po, int bf, const char *pf, size_t pfb) {
    const int hd = a->head_dim, rep = a->n_heads / a->n_kv_heads;
    const size_t kbase = (size_t)k0 * a->kv_stride + kv_head_off(a, g);
    size_t vrow;
    const char *vp = att_dec_vrows(a, kbase, bf, &vrow);
    for (int h0 = 0; h0 < rep; h0 += A2_DG) { /* scores, the group's heads A2_DG at a time */
        const float *q = a->q + (size_t)(g * rep + h0) * hd;
        float *sh = s + (size_t)h0 * A2_DCHUNK;
        const char *vpf = h0 ? NULL : vp;
        if (rep - h0 >= 3)
            a2_dec_group_qk(a, q, kbase, kn, sh, 3, bf, vpf, vrow);
        else if (rep - h0 == 2)
            a2_dec_group_qk(a, q, kbase, kn, sh, 2, bf, vpf, vrow);
        else
            a2_dec_group_qk(a, q, kbase, kn, sh, 1, bf, vpf, vrow);
    }
    for (int hi = 0; hi < rep; hi++) { /* the chunk's softmax partials (scores already scaled) */
        float *sh = s + (size_t)hi * A2_DCHUNK;
        const float *bias = a->bias ? cv_attn_bias_row(a, g * rep + hi, 0) + k0 : NULL;
        double *pt = part + 5 * (size_t)hi;
        pt[0] = a2_row_mask_max(sh, bias, kn, _mm256_set1_ps(1.0f));
        a2_row_exp_sums(a, sh, kn, k0, (float)pt[0], pt + 1);
    }
    for (int h0 = 0; h0 < rep; h0 += A2_DG) { /* po (rep, hd) = P . V */
        const float *sh = s + (size_t)h0 * A2_DCHUNK;
        float *ph = po + (size_t)h0 * hd;
        if (rep - h0 >= 3)
            a2_dec_group_pv(a, sh, kbase, kn, ph, 3, bf, pf, h0 ? 0 : pfb);
        else if (rep - h0 == 2)
            a2_dec_group_pv(a, sh, kbase, kn, ph, 2, bf, pf, h0 ? 0 : pfb);
        else
            a2_dec_group_pv(a, sh, kbase, kn, ph, 1, bf, pf, h0 ? 0 : pfb);
    }
}

static void attention_decode_avx2(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, hd = a->head_dim, KVH = a->n_kv_heads, rep = H / KVH;
    int cs;
    const int kend = keys_visible(a, 0), nch = att_dec_split(kend, A2_DCHUNK, &cs);
    const int items = KVH * nch, nt = omp_get_max_threads();
    const size_t sc = (size_t)rep * A2_DCHUNK; /* per-thread scores */
    float *fl = cv_cpu_scratch_flt(b, (size_t)items * rep * hd + (size_t)nt * sc + 8);
    double *dbl = cv_cpu_scratch_dbl(b, 4 * (size_t)H + (size_t)items * rep * 5);
    if (!fl || !dbl) return;
    float *po = fl;
    float *scores = (float *)(((uintptr_t)(po + (size_t)items * rep * hd) + 31) & ~(uintptr_t)31);
    double *row_z = dbl, *part = dbl + 4 * (size_t)H;
#pragma omp parallel for schedule(static) if ((size_t)kend * KVH * hd > 32768)
    for (int it = 0; it < items; it++) { /* chunk-major, partials stored head-major */
        int g = it % KVH, c = it / KVH, k0 = c * cs;
        int kn = kend - k0 < cs ? kend - k0 : cs;
        float *s = scores + (size_t)omp_get_thread_num() * sc;
        size_t pi = (size_t)g * nch + c;
        size_t pfb;
        const char *pf = att_dec_next_keys(a, it, items, kend, cs, &pfb);
        if (a->k16)
            a2_decode_chunk(a, g, k0, kn, s, part + pi * rep * 5, po + pi * rep * hd, 1, pf, pfb);
        else
            a2_decode_chunk(a, g, k0, kn, s, part + pi * rep * 5, po + pi * rep * hd, 0, pf, pfb);
    }
    /* merge each head's chunks in order: M = max m_c, w_c = e^(m_c - M), z = sum w_c z_c,
     * t = sum w_c (t_c + (m_c - M) z_c), masses and outputs likewise */
    for (int h = 0; h < H; h++) {
        int g = h / rep, hi = h % rep;
        const double M = att_chunks_max(part, nch, rep, g, hi);
        double sums[4] = {0, 0, 0, 0};
        float *out = a->out + (size_t)h * hd;
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (int c = 0; c < nch; c++) {
            size_t pi = (size_t)(g * nch + c) * rep + hi;
            const float w = (float)att_chunk_fold(part + pi * 5, M, nch, sums), *oc = po + pi * hd;
            for (int d = 0; d < hd; d++) out[d] += w * oc[d];
        }
        const float inv = (float)(1.0 / sums[0]);
        for (int d = 0; d < hd; d++) out[d] *= inv;
        att_chunks_row(row_z + 4 * h, sums);
    }
    if (a->stats || a->heads || a->basin) cv_attn_merge_rows(a, row_z);
}

static void attention_tiled_avx2(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, T = a->T, hd = a->head_dim, KVH = a->n_kv_heads, rep = H / KVH;
    const int bq = A2_BQ, R = (rep * bq + A2_RG - 1) / A2_RG * A2_RG;
    const int kmax = keys_visible(a, T - 1), nkt = (kmax + A2_BK - 1) / A2_BK;
    const int nqt = (T + bq - 1) / bq, nt = omp_get_max_threads();
    const size_t kt_size = (size_t)hd * A2_BK, kt_all = (size_t)KVH * nkt * kt_size;
    /* per thread: Q and O (R, hd), S (R, A2_BK), m, alpha, rmax, lim (R each) */
    const size_t Rp = ((size_t)R + 7) / 8 * 8,
                 per = 2 * (size_t)R * hd + (size_t)R * A2_BK + 4 * Rp;
    float *fl = cv_cpu_scratch_flt(b, kt_all + (size_t)nt * per + 8);
    double *dbl = cv_cpu_scratch_dbl(b, 4 * (size_t)H * T + (size_t)nt * 4 * R);
    if (!fl || !dbl) return; /* out of memory: outputs left as they are */
    float *Kt = (float *)(((uintptr_t)fl + 31) & ~(uintptr_t)31);
    double *row_z = dbl;
    att_pack_kt(a, Kt, kmax, A2_BK);
#pragma omp parallel
    {
        int me = omp_get_thread_num();
        float *base = Kt + kt_all + (size_t)me * per;
        a2_att_buf w = {.Q = base,
                        .O = base + (size_t)R * hd,
                        .S = base + 2 * (size_t)R * hd,
                        .m = base + 2 * (size_t)R * hd + (size_t)R * A2_BK,
                        .st = dbl + 4 * (size_t)H * T + (size_t)me * 4 * R};
        int sexp;
        w.prescale = frexpf(a->scale, &sexp) == 0.5f;
        w.alpha = w.m + Rp;
        w.rmax = w.alpha + Rp;
        w.lim = (int *)(w.rmax + Rp);
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < KVH * nqt; it++) {
            int qt = nqt - 1 - it / KVH, g = it % KVH; /* longest causal tiles first */
            const float *kt = Kt + (size_t)g * nkt * kt_size;
            if (a->k16)
                a2_att_item(a, kt, g, qt, &w, row_z, 1);
            else
                a2_att_item(a, kt, g, qt, &w, row_z, 0);
        }
    }
    if (a->stats || a->heads || a->basin) cv_attn_merge_rows(a, row_z);
}
#endif

void cv_cpu_attention(cv_backend *b, const cv_attn_args *a) {
    cv_attn_args at;
    if (a->dpos) { /* the step's position from backend (here host) memory */
        at = cv_attn_at_step(a);
        a = &at;
    }
#ifdef CV_CPU_AVX512
#ifdef ATT_BF16
    const int kv_ok = 1;
#else
    const int kv_ok = !a->k16; /* a bf16 cache needs the masked 16-bit loads */
#endif
    if (!a->probs && !a->sparse && a->head_dim <= ATT_MAX_HD && a->n_keys > 0 && kv_ok) {
        if (a->T == 1)
            attention_decode(b, a);
        else
            attention_tiled(b, a);
        return;
    }
#elif defined(CV_CPU_AVX2)
    if (!a->probs && !a->sparse && a->head_dim % 8 == 0 && a->head_dim <= A2_MAX_HD &&
        a->n_keys > 0) {
        if (a->T == 1)
            attention_decode_avx2(b, a);
        else
            attention_tiled_avx2(b, a);
        return;
    }
#endif
    cv_cpu_attention_rows(b, a);
}

/* Position-major (every head of row t, then row t + 1), so a prompt run in row chunks
 * (model.h cv_prefill_chunks) merges its rows in the same order as one call over all of them. */
void cv_attn_merge_rows(const cv_attn_args *a, const double *row_z) {
    const int T = a->T, H = a->n_heads;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const double *q = row_z + 4 * ((size_t)h * T + t);
            if (a->stats) cv_attn_record_add_row(a->stats, q[0], q[1]);
            if (a->heads && t >= a->heads_from)
                cv_head_record_add_row(a->heads + (size_t)h * CV_AH_SIZE, q[0], q[1],
                                       keys_visible(a, t));
            if (a->basin) {
                a->basin[2 * h] += q[2];
                a->basin[2 * h + 1] += q[3];
            }
        }
}

void cv_attention_naive(const cv_attn_args *a) {
    cv_attn_args at;
    if (a->dpos) {
        at = cv_attn_at_step(a);
        a = &at;
    }
    const int H = a->n_heads, T = a->T, hd = a->head_dim, NK = a->n_keys;
    const int rep = a->n_heads / a->n_kv_heads;
    double *sc = malloc(sizeof(double) * (size_t)(NK > 0 ? NK : 1));
    double *row_z = malloc(sizeof(double) * 4 * (size_t)(H * T > 0 ? H * T : 1));
    float *row = malloc(sizeof(float) * (size_t)(hd > 0 ? hd : 1)); /* a bf16 row widened */
    double *acc = malloc(sizeof(double) * (size_t)(hd > 0 ? hd : 1));
    if (!sc || !row_z || !row || !acc) {
        free(sc);
        free(row_z);
        free(row);
        free(acc);
        return;
    }
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            int g = h / rep, kend = keys_visible(a, t);
            const float *qv = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
            double m = -INFINITY, z = 0.0, tt = 0.0;
            for (int k = 0; k < kend; k++) {
                const float *kv = kv_row(a, 0, k, g, row);
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                sc[k] = d * a->scale + (a->bias ? cv_attn_bias_row(a, h, t)[k] : 0.0);
                if (sc[k] > m) m = sc[k];
            }
            for (int k = 0; k < kend; k++) {
                double e = exp(sc[k] - m);
                z += e;
                tt += e * (sc[k] - m);
                sc[k] = e;
            }
            float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
            for (int i = 0; i < hd; i++) acc[i] = 0.0;
            for (int k = 0; k < kend; k++) {
                const float *vv = kv_row(a, 1, k, g, row);
                for (int i = 0; i < hd; i++) acc[i] += sc[k] / z * vv[i];
            }
            for (int i = 0; i < hd; i++) o[i] = (float)acc[i];
            if (a->probs) {
                float *pr = a->probs + ((size_t)h * T + t) * NK;
                for (int k = 0; k < NK; k++) pr[k] = k < kend ? (float)(sc[k] / z) : 0.0f;
            }
            double *q = row_z + 4 * ((size_t)h * T + t);
            q[0] = z;
            q[1] = tt;
            q[2] = q[3] = 0.0;
            for (int k = 0; k < kend; k++)
                q[k >= a->basin_lo && k < a->basin_hi ? 2 : 3] += sc[k] / z;
        }
    cv_attn_merge_rows(a, row_z);
    if (a->sparse) { /* the oracle: every row again, one heap per head */
        sparse_heap *heaps = calloc((size_t)H, sizeof *heaps);
        if (heaps) {
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++) {
                    int g = h / rep, kend = keys_visible(a, t);
                    const float *qv = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
                    double m = -INFINITY, z = 0.0;
                    for (int k = 0; k < kend; k++) {
                        const float *kv = kv_row(a, 0, k, g, row);
                        double d = 0.0;
                        for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                        sc[k] = d * a->scale + (a->bias ? cv_attn_bias_row(a, h, t)[k] : 0.0);
                        if (sc[k] > m) m = sc[k];
                    }
                    for (int k = 0; k < kend; k++) z += exp(sc[k] - m);
                    for (int k = 0; k < kend; k++) {
                        float p = (float)(exp(sc[k] - m) / z);
                        if (p > CV_SPARSE_MIN) sparse_push(&heaps[h], p, t, k);
                    }
                }
            sparse_merge(a->sparse, heaps, 1, H);
            free(heaps);
        }
    }
    free(sc);
    free(row_z);
    free(row);
    free(acc);
}
