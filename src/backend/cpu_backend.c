/* cpu_backend.c — the CPU implementation of the op table (backend.h): memory, embeddings,
 * norms and residual adds with fused hidden statistics, activations, RoPE, the T5 position bias,
 * the logits pass and argmax. The matmul lives in cpu_matmul.c, attention in cpu_attention.c.
 *
 * Every op that summarizes its output does so on the rows it just wrote (still in cache): each
 * OpenMP thread accumulates a private partial record and the partials merge in thread order, so
 * the statistics cost no extra pass and are deterministic for a given thread count. */
#include "cpu_internal.h"
#include "corevital/stats.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- scratch ---------------------------------------------------------------------------- */

/* Grow *buf to hold n elements of size es (keeps the old block on failure: returns NULL). */
static void *grow(void **buf, size_t *cap, size_t n, size_t es) {
    if (n > *cap) {
        void *p = realloc(*buf, n * es);
        if (!p) return NULL;
        *buf = p;
        *cap = n;
    }
    return *buf;
}

double *cv_cpu_scratch_dbl(cv_backend *b, size_t n) {
    cv_cpu_ctx *c = b->ctx;
    return grow((void **)&c->dbl, &c->dbl_cap, n, sizeof(double));
}

float *cv_cpu_scratch_flt(cv_backend *b, size_t n) {
    cv_cpu_ctx *c = b->ctx;
    return grow((void **)&c->flt, &c->flt_cap, n, sizeof(float));
}

/* ---- memory ----------------------------------------------------------------------------- */

static void *cpu_alloc(cv_backend *b, size_t bytes) {
    (void)b;
    /* 64-byte aligned for vector loads, huge pages for the KV caches; zero-filled like
     * cudaMemset after cudaMalloc */
    void *p = cv_host_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}
static void cpu_free(cv_backend *b, void *p) {
    (void)b, free(p);
}
static void cpu_memcpy(cv_backend *b, void *dst, const void *src, size_t n) {
    (void)b;
    if (n) memcpy(dst, src, n);
}
static void cpu_kv_store(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                         int hd, int n_ctx, int pos0, const int32_t *dpos) {
    (void)b;
    if (dpos) pos0 = dpos[0]; /* the decode step's position, from backend (here host) memory */
#pragma omp parallel for schedule(static) if ((size_t)T * heads * hd > 65536)
    for (int t = 0; t < T; t++)
        for (int g = 0; g < heads; g++) {
            const float *s = src + ((size_t)t * heads + g) * hd;
            size_t o = ((size_t)g * n_ctx + pos0 + t) * hd; /* head-major */
            if (dt == CV_DT_BF16) {
                uint16_t *d = (uint16_t *)dst + o;
                for (int i = 0; i < hd; i++) d[i] = cv_f32_to_bf16(s[i]);
            } else {
                memcpy((float *)dst + o, s, sizeof(float) * (size_t)hd);
            }
        }
}
static void cpu_memset0(cv_backend *b, void *dst, size_t n) {
    (void)b;
    if (n) memset(dst, 0, n);
}
static void cpu_sync(cv_backend *b) {
    (void)b;
}

static cv_status cpu_weight_upload(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                                   int64_t rows, int64_t cols, cv_error *err) {
    (void)b;
    if (dtype != CV_DT_F32 && dtype != CV_DT_F16 && dtype != CV_DT_BF16)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "cpu: matrix weights must be F32, F16 or BF16, got %s",
                       cv_dtype_name(dtype));
    memset(w, 0, sizeof *w);
    w->data = host; /* used in place: the CPU reads weights straight from the mmap */
    w->dtype = dtype;
    w->format = CV_WFMT_DENSE;
    w->rows = rows;
    w->cols = cols;
    return CV_OK;
}

static void cpu_weight_free(cv_backend *b, cv_weight *w) {
    (void)b;
    free(w->owned);
    memset(w, 0, sizeof *w);
}

/* ---- hidden statistics helpers ------------------------------------------------------------ */

/* Partial records of an op over T rows of width C, one per block of HS_BLOCK rows, merged in
 * block order: the blocks do not depend on the thread count, so neither do the sums (per-thread
 * records did: which rows a thread gets depends on how many threads there are). NULL when not
 * summarizing. */
#define HS_BLOCK 32
static inline int hs_blocks(int T) {
    return (T + HS_BLOCK - 1) / HS_BLOCK;
}
static double *hs_partials(cv_backend *b, double *hstats, int T, int C) {
    if (!hstats) return NULL;
    const int nb = hs_blocks(T);
    size_t rs = cv_hidden_record_size(C);
    double *p = cv_cpu_scratch_dbl(b, (size_t)nb * rs);
    if (!p) return NULL;
    for (int i = 0; i < nb; i++) cv_hidden_record_reset(p + (size_t)i * rs, C);
    return p;
}

static void hs_merge(double *hstats, const double *parts, int T, int C) {
    if (!hstats || !parts) return;
    size_t rs = cv_hidden_record_size(C);
    for (int i = 0; i < hs_blocks(T); i++)
        cv_hidden_record_merge(hstats, parts + (size_t)i * rs, C);
}

#define HS_PART(parts, blk, C) ((parts) ? (parts) + (size_t)(blk)*cv_hidden_record_size(C) : NULL)
#define PAR_IF(work)           if ((work) > 16384)

/* ---- ops -------------------------------------------------------------------------------- */

static void cpu_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                          const cv_weight *wte, const cv_weight *wpe, int pos0, const int32_t *dpos,
                          float scale) {
    (void)b;
    int C = (int)wte->cols;
    if (dpos) pos0 = dpos[0];
    for (int t = 0; t < T; t++) {
        const char *row =
            (const char *)wte->data + (size_t)tokens[t] * C * cv_dtype_size(wte->dtype);
        float *o = out + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = cv_elem_f32(row, wte->dtype, c) * scale;
        if (wpe) {
            const char *prow =
                (const char *)wpe->data + (size_t)(pos0 + t) * C * cv_dtype_size(wpe->dtype);
            for (int c = 0; c < C; c++) o[c] += cv_elem_f32(prow, wpe->dtype, c);
        }
    }
}

static void cpu_layernorm(cv_backend *b, float *out, const float *x, const float *w,
                          const float *bias, int T, int C, float eps, double *hstats) {
    double *parts = hs_partials(b, hstats, T, C);
#pragma omp parallel for schedule(static) PAR_IF((size_t)T *C)
    for (int blk = 0; blk < hs_blocks(T); blk++) {
        double *part = HS_PART(parts, blk, C);
        for (int t = blk * HS_BLOCK; t < T && t < (blk + 1) * HS_BLOCK; t++) {
            const float *xr = x + (size_t)t * C;
            float *o = out + (size_t)t * C;
            double s = 0, ss = 0;
            for (int c = 0; c < C; c++) s += xr[c];
            double mean = s / C;
            for (int c = 0; c < C; c++) {
                double d = xr[c] - mean;
                ss += d * d;
            }
            float rstd = (float)(1.0 / sqrt(ss / C + eps));
            float m = (float)mean;
            for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * rstd * w[c] + (bias ? bias[c] : 0.0f);
            if (part) cv_hidden_record_add_rows(part, o, 1, C);
        }
    }
    hs_merge(hstats, parts, T, C);
}

static void cpu_rmsnorm(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                        float eps, double *hstats) {
    double *parts = hs_partials(b, hstats, T, C);
#pragma omp parallel for schedule(static) PAR_IF((size_t)T *C)
    for (int blk = 0; blk < hs_blocks(T); blk++) {
        double *part = HS_PART(parts, blk, C);
        for (int t = blk * HS_BLOCK; t < T && t < (blk + 1) * HS_BLOCK; t++) {
            const float *xr = x + (size_t)t * C;
            float *o = out + (size_t)t * C;
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
            float r = (float)(1.0 / sqrt(ss / C + eps));
            for (int c = 0; c < C; c++) o[c] = w[c] * (xr[c] * r);
            if (part) cv_hidden_record_add_rows(part, o, 1, C);
        }
    }
    hs_merge(hstats, parts, T, C);
}

static void cpu_residual_add(cv_backend *b, float *x, const float *y, int T, int C,
                             double *hstats) {
    double *parts = hs_partials(b, hstats, T, C);
#pragma omp parallel for schedule(static) PAR_IF((size_t)T *C)
    for (int blk = 0; blk < hs_blocks(T); blk++) {
        double *part = HS_PART(parts, blk, C);
        for (int t = blk * HS_BLOCK; t < T && t < (blk + 1) * HS_BLOCK; t++) {
            float *xr = x + (size_t)t * C;
            const float *yr = y + (size_t)t * C;
            for (int c = 0; c < C; c++) xr[c] += yr[c];
            if (part) cv_hidden_record_add_rows(part, xr, 1, C);
        }
    }
    hs_merge(hstats, parts, T, C);
}

/* GELU (tanh form): 0.5 x (1 + tanh(y)) = x sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3). The
 * sigmoid form needs one exp and no tanh, and keeps the far negative tail (where 1 + tanhf(y)
 * rounds to 0) to relative precision. */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
static inline float gelu_tanh1(float x) {
    return x / (1.0f + expf(-2.0f * GELU_K * (x + 0.044715f * x * x * x)));
}
static inline float silu1(float x) {
    return x / (1.0f + expf(-x));
}

static void cpu_gelu_tanh(cv_backend *b, float *x, size_t n) {
    (void)b;
    size_t i0 = 0;
#ifdef CV_CPU_AVX512
    i0 = n / 16 * 16;
#pragma omp parallel for PAR_IF(n) schedule(static)
    for (size_t i = 0; i < i0; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 y = _mm512_mul_ps(
            _mm512_set1_ps(2.0f * GELU_K),
            _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v), _mm512_mul_ps(v, v), v));
        _mm512_storeu_ps(x + i, cv_mul_sigmoid512(v, y));
    }
#elif defined(CV_CPU_AVX2)
    i0 = n / 8 * 8;
#pragma omp parallel for PAR_IF(n) schedule(static)
    for (size_t i = 0; i < i0; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 y = _mm256_mul_ps(
            _mm256_set1_ps(2.0f * GELU_K),
            _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), _mm256_mul_ps(v, v), v));
        _mm256_storeu_ps(x + i, cv_mul_sigmoid256(v, y));
    }
#endif
    for (size_t i = i0; i < n; i++) x[i] = gelu_tanh1(x[i]);
}
static void cpu_relu(cv_backend *b, float *x, size_t n) {
    (void)b;
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
static void cpu_silu_mul(cv_backend *b, float *g, const float *u, size_t n) {
    (void)b;
    size_t i0 = 0;
#ifdef CV_CPU_AVX512
    i0 = n / 16 * 16;
#pragma omp parallel for PAR_IF(n) schedule(static)
    for (size_t i = 0; i < i0; i += 16) {
        __m512 v = _mm512_loadu_ps(g + i);
        _mm512_storeu_ps(g + i, _mm512_mul_ps(cv_mul_sigmoid512(v, v), _mm512_loadu_ps(u + i)));
    }
#elif defined(CV_CPU_AVX2)
    i0 = n / 8 * 8;
#pragma omp parallel for PAR_IF(n) schedule(static)
    for (size_t i = 0; i < i0; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(g + i, _mm256_mul_ps(cv_mul_sigmoid256(v, v), _mm256_loadu_ps(u + i)));
    }
#endif
    for (size_t i = i0; i < n; i++) g[i] = silu1(g[i]) * u[i];
}
static void cpu_gelu_mul(cv_backend *b, float *g, const float *u, size_t n) {
    (void)b;
#pragma omp parallel for PAR_IF(n) schedule(static)
    for (size_t i = 0; i < n; i++) g[i] = gelu_tanh1(g[i]) * u[i];
}

/* (cos, sin) of pos * inv_freq[j] for positions pos0 .. pos0 + T - 1, as (T, half, 2): from
 * the cache when the last call asked for the same (the other projection, the next layer), or
 * NULL when there is no room (the caller computes them in place). */
static const float *rope_table(cv_backend *b, int T, int half, const float *inv_freq, int pos0) {
    cv_cpu_ctx *c = b ? b->ctx : NULL;
    if (!c || half > 256) return NULL;
    if (c->rope_cs && c->rope_T == T && c->rope_pos0 == pos0 && c->rope_half == half &&
        memcmp(c->rope_freq, inv_freq, sizeof(float) * (size_t)half) == 0)
        return c->rope_cs;
    if (!grow((void **)&c->rope_cs, &c->rope_cap, (size_t)T * half * 2, sizeof(float))) {
        c->rope_T = -1;
        return NULL;
    }
    float *cs = c->rope_cs;
#pragma omp parallel for PAR_IF((size_t)T *half * 16) schedule(static)
    for (int t = 0; t < T; t++) {
        float pos = (float)(pos0 + t);
        for (int j = 0; j < half; j++) {
            float ang = pos * inv_freq[j]; /* fp32, as HF computes freqs */
            cs[((size_t)t * half + j) * 2] = cosf(ang);
            cs[((size_t)t * half + j) * 2 + 1] = sinf(ang);
        }
    }
    memcpy(c->rope_freq, inv_freq, sizeof(float) * (size_t)half);
    c->rope_T = T, c->rope_pos0 = pos0, c->rope_half = half;
    return cs;
}

static void cpu_rope(cv_backend *b, float *x, int T, int stride, int n_heads, int head_dim,
                     const float *inv_freq, int pos0, const int32_t *dpos) {
    int half = head_dim / 2;
    if (dpos) pos0 = dpos[0];
    const float *cs = rope_table(b, T, half, inv_freq, pos0);
#pragma omp parallel for PAR_IF((size_t)T *stride) schedule(static)
    for (int t = 0; t < T; t++) {
        float pos = (float)(pos0 + t);
        for (int j = 0; j < half; j++) {
            float c, s;
            if (cs) {
                c = cs[((size_t)t * half + j) * 2], s = cs[((size_t)t * half + j) * 2 + 1];
            } else {
                float ang = pos * inv_freq[j];
                c = cosf(ang), s = sinf(ang);
            }
            for (int h = 0; h < n_heads; h++) {
                float *v = x + (size_t)t * stride + (size_t)h * head_dim;
                float a = v[j], bb = v[j + half];
                v[j] = a * c - bb * s;
                v[j + half] = bb * c + a * s;
            }
        }
    }
}

/* q, k and v of one x: one packed pass for a long prefill, else three matmuls */
static void cpu_matmul3(cv_backend *b, float *const out[3], const float *x,
                        const cv_weight *const w[3], const float *const bias[3], int T) {
    if (cv_cpu_matmul_packed_n(b, out, x, w, bias, 3, T)) return;
#ifdef CV_CPU_AVX2
    if (T == 1 && cv_cpu_matvec_n_avx2(out, x, w, bias, 3)) return;
#endif
    for (int i = 0; i < 3; i++) cv_cpu_matmul(b, out[i], x, w[i], bias ? bias[i] : NULL, T);
}

/* the twin of CUDA's fused launch: the three ops it stands for */
static void cpu_gate_up_silu(cv_backend *b, float *gate, float *up, const float *x,
                             const cv_weight *wg, const cv_weight *wu, int T) {
    if (cv_cpu_gate_up_packed(b, gate, x, wg, wu, T)) return; /* a long prefill: one pass */
#ifdef CV_CPU_AVX2
    if (T == 1 && wg->format == CV_WFMT_DENSE && wu->format == CV_WFMT_DENSE &&
        wg->cols == wu->cols && wg->rows == wu->rows) {
        /* decode: gate and up rows side by side (two sequential streams per thread) in blocks
         * of 8, each block's SiLU(gate) * up applied as it is done; one region, not three. The
         * result is cpu_silu_mul's, element for element (the same 8-lane and scalar forms). */
        const size_t F = (size_t)wg->rows, K = (size_t)wg->cols, nb = (F + 7) / 8;
        const size_t eg = cv_dtype_size(wg->dtype) * K, eu = cv_dtype_size(wu->dtype) * K;
#pragma omp parallel for schedule(static) PAR_IF(F *K)
        for (size_t blk = 0; blk < nb; blk++) {
            const size_t n0 = blk * 8, n1 = n0 + 8 < F ? n0 + 8 : F;
            for (size_t n = n0; n < n1; n++) {
                gate[n] = cv_cpu_dot_row_avx2(x, (const char *)wg->data + n * eg, K, wg->dtype);
                up[n] = cv_cpu_dot_row_avx2(x, (const char *)wu->data + n * eu, K, wu->dtype);
            }
            if (n1 - n0 == 8) {
                __m256 v = _mm256_loadu_ps(gate + n0);
                _mm256_storeu_ps(gate + n0,
                                 _mm256_mul_ps(cv_mul_sigmoid256(v, v), _mm256_loadu_ps(up + n0)));
            } else
                for (size_t n = n0; n < n1; n++) gate[n] = silu1(gate[n]) * up[n];
        }
        return;
    }
#endif
    cv_cpu_matmul(b, gate, x, wg, NULL, T);
    cv_cpu_matmul(b, up, x, wu, NULL, T);
    cpu_silu_mul(b, gate, up, (size_t)T * (size_t)wg->rows);
}

/* T5's bucketing of (key - query) distances, in fp32 like transformers' _relative_position_bucket.
 */
int cv_t5_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket += num_buckets;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0;
    }
    int max_exact = num_buckets / 2;
    if (rel < max_exact) return bucket + rel;
    float lg = logf((float)rel / (float)max_exact) / (float)log((double)max_distance / max_exact);
    int large = max_exact + (int)(lg * (float)(num_buckets - max_exact));
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

static void cpu_t5_position_bias(cv_backend *b, float *out, const float *table, int H, int T, int K,
                                 int q_pos0, int bidirectional, int num_buckets, int max_distance) {
    (void)b;
    const size_t D = (size_t)T + (size_t)K - 1; /* one diagonal per head: k - t = d - (T - 1) */
    for (size_t d = 0; d < D; d++) {
        int bk = cv_t5_bucket((int)d - (T - 1) - q_pos0, bidirectional, num_buckets, max_distance);
        for (int h = 0; h < H; h++) out[(size_t)h * D + d] = table[(size_t)bk * H + h];
    }
}

static void cpu_logits_stats(cv_backend *b, double *rec, const float *logits, int V, int topk) {
    (void)b;
    cv_logits_stats_row(rec, logits, V, topk);
}

static void cpu_row_cos(cv_backend *b, double *acc, const float *x, const float *y, int T, int C) {
    (void)b;
    for (int t = 0; t < T; t++) {
        const float *p = x + (size_t)t * C, *q = y + (size_t)t * C;
        double d = 0.0, na = 0.0, nb = 0.0;
        for (int c = 0; c < C; c++) {
            d += (double)p[c] * q[c];
            na += (double)p[c] * p[c];
            nb += (double)q[c] * q[c];
        }
        na = sqrt(na);
        nb = sqrt(nb);
        acc[0] += d / ((na > 1e-8 ? na : 1e-8) * (nb > 1e-8 ? nb : 1e-8));
    }
}

static void cpu_target_logprob(cv_backend *b, double *out, const float *logits, int T, int V,
                               const int32_t *targets) {
    (void)b;
#pragma omp parallel for schedule(static) if ((size_t)T * V > 65536)
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * V;
        float m = -INFINITY;
        int bad = 0;
        for (int i = 0; i < V; i++) {
            if (l[i] > m) m = l[i];
            bad |= isnan(l[i]) || (isinf(l[i]) && l[i] > 0);
        }
        double z = 0.0;
        for (int i = 0; i < V; i++) z += expf(l[i] - m);
        int y = targets[t];
        out[t] = bad || y < 0 || y >= V ? NAN : (double)l[y] - (double)m - log(z);
    }
}

static void cpu_logprob_accum(cv_backend *b, double *state, const float *logits, int T, int n,
                              int col0, const int32_t *targets) {
    (void)b;
#pragma omp parallel for schedule(static) if ((size_t)T * n > 65536)
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * n;
        double *st = state + 3 * (size_t)t;
        float m = -INFINITY;
        int bad = 0, i = 0;
#ifdef CV_CPU_AVX512
        { /* 16 at a time: the max, and whether any NaN or +inf is present */
            const __m512 pinf = _mm512_set1_ps(INFINITY);
            __m512 mv = _mm512_set1_ps(-INFINITY);
            __mmask16 bm = 0;
            for (; i + 16 <= n; i += 16) {
                __m512 v = _mm512_loadu_ps(l + i);
                bm |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) |
                      _mm512_cmp_ps_mask(v, pinf, _CMP_EQ_OQ);
                mv = _mm512_max_ps(mv, v);
            }
            m = _mm512_reduce_max_ps(mv);
            bad = bm != 0;
        }
#endif
        for (; i < n; i++) {
            if (l[i] > m) m = l[i];
            bad |= isnan(l[i]) || (isinf(l[i]) && l[i] > 0);
        }
        int y = targets[t] - col0;
        if (y >= 0 && y < n) st[2] = l[y];
        if (bad || isnan(st[0])) {
            st[0] = NAN;
            continue;
        }
        double mo = st[0], mn = (double)m > mo ? (double)m : mo;
        double z = 0.0;
        i = 0;
#ifdef CV_CPU_AVX512
        { /* e^(l - max) in fp32 (cv_exp512, ~1 ulp like expf), summed in double lanes */
            const __m512 sv = _mm512_set1_ps((float)mn);
            __m512d z0 = _mm512_setzero_pd(), z1 = z0;
            for (; i + 16 <= n; i += 16) {
                __m512 e = cv_exp512(_mm512_sub_ps(_mm512_loadu_ps(l + i), sv));
                z0 = _mm512_add_pd(z0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
                z1 = _mm512_add_pd(z1, _mm512_cvtps_pd(_mm256_castpd_ps(
                                           _mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
            }
            z = _mm512_reduce_add_pd(_mm512_add_pd(z0, z1));
        }
#endif
        for (; i < n; i++) z += expf(l[i] - (float)mn);
        st[1] = (mo == -INFINITY ? 0.0 : st[1] * exp(mo - mn)) + z;
        st[0] = mn;
    }
}

static int32_t cpu_argmax(cv_backend *b, const float *x, int V) {
    (void)b;
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* The CPU ops cannot fail after the fact (allocation failures are reported by alloc). */
static cv_status cpu_status(cv_backend *b, cv_error *err) {
    (void)b, (void)err;
    return CV_OK;
}

static void cpu_pick_greedy(cv_backend *b, const float *logits, int V, double *slot,
                            int32_t *step) {
    int32_t id = cpu_argmax(b, logits, V);
    if (slot) {
        slot[CV_STEP_TOKEN] = id;
        slot[CV_STEP_LOGIT] = id >= 0 && id < V ? logits[id] : NAN;
    }
    if (step) { /* the next step's input, one position on */
        step[CV_SP_TOKEN] = id;
        step[CV_SP_POS] += 1;
    }
}

static void cpu_stats_reset(cv_backend *b, double *arena, const cv_stats_layout *lay) {
    (void)b;
    cv_stats_arena_reset(arena, lay);
}

static void cpu_destroy(cv_backend *b) {
    if (!b) return;
    cv_cpu_ctx *c = b->ctx;
    if (c) {
        free(c->dbl);
        free(c->flt);
        free(c->rope_cs);
        free(c);
    }
    free(b);
}

cv_backend *cv_backend_cpu_create(void) {
    cv_backend *b = calloc(1, sizeof *b);
    cv_cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return NULL;
    }
    b->name = "cpu";
    b->ctx = c;
    b->kv_head_major = 1;
    b->host_weights = 1;
    b->kv_bf16 = 1;
#if defined(CV_CPU_AVX512) && defined(__AVX512BF16__)
    b->prefill_bf16 = 1;
#endif
    b->alloc = cpu_alloc;
    b->free = cpu_free;
    b->upload = cpu_memcpy;
    b->download = cpu_memcpy;
    b->copy = cpu_memcpy;
    b->kv_store = cpu_kv_store;
    b->memset0 = cpu_memset0;
    b->weight_upload = cpu_weight_upload;
    b->weight_upload_quant = cv_cpu_weight_upload_quant;
    b->weight_free = cpu_weight_free;
    b->sync = cpu_sync;
    b->embedding = cpu_embedding;
    b->matmul = cv_cpu_matmul;
    b->layernorm = cpu_layernorm;
    b->rmsnorm = cpu_rmsnorm;
    b->residual_add = cpu_residual_add;
    b->gelu_tanh = cpu_gelu_tanh;
    b->relu = cpu_relu;
    b->silu_mul = cpu_silu_mul;
    b->gelu_mul = cpu_gelu_mul;
    b->rope = cpu_rope;
    b->gate_up_silu = cpu_gate_up_silu;
    b->matmul3 = cpu_matmul3;
    b->t5_position_bias = cpu_t5_position_bias;
    b->attention = cv_cpu_attention;
    b->logits_stats = cpu_logits_stats;
    b->argmax = cpu_argmax;
    b->status = cpu_status;
    b->row_cos = cpu_row_cos;
    b->target_logprob = cpu_target_logprob;
    b->logprob_accum = cpu_logprob_accum;
#ifdef CV_CPU_AVX512
    b->head_logprob = cv_cpu_head_logprob; /* the portable build slices the head (NULL op) */
#elif defined(CV_CPU_AVX2)
    b->head_logprob = cv_cpu_head_logprob_avx2;
#endif
    b->pick_greedy = cpu_pick_greedy;
    b->stats_reset = cpu_stats_reset;
    b->destroy = cpu_destroy;
    return b;
}
