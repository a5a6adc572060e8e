/* cpu_avx2.c — the dense matmul and the fused LM head on AVX2 + FMA, for x86 CPUs without AVX-512
 * (AMD Zen 1-3, Intel before Skylake-X / Ice Lake, most laptops). Built where -march=native gives
 * AVX2, FMA and F16C but not AVX-512F (cpu_internal.h CV_CPU_AVX2); the AVX-512 build never
 * compiles this file's body. Same shape as cpu_matmul.c's AVX-512 path, at 8 lanes:
 *   - one row (decode): a weight row at a time, dot products on four 8-lane FMA chains, so each
 *     thread reads its share of the weights as one sequential stream (decode is bound by it);
 *   - few rows (T < A2_PACK_T): 4 weight rows x up to 2 activation rows per tile, dot
 *     products over k on 8-lane FMA chains, reduced once at the end;
 *   - many rows (prefill): weights widened and packed per call into panels of 16 output
 *     columns laid out (K, 16), so a 6 x 16 output tile is an outer product in registers: per
 *     k, 2 panel vectors and 6 broadcast activations feed 12 FMAs (12 of the 16 ymm registers
 *     accumulate; no horizontal sums). A work item (panel, block of rows) packs its panel into
 *     its thread's own buffer, where it stays in L1 / L2 while the rows stream past it.
 * Weights stay in the checkpoint's dtype (F32, BF16, F16) and are widened in registers. The
 * AVX2 attention kernels are in cpu_attention.c, beside the AVX-512 ones they follow. */
#include "cpu_internal.h"

#ifdef CV_CPU_AVX2
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define A2_INLINE static inline __attribute__((always_inline))
#ifndef A2_PACK_T
#define A2_PACK_T 16 /* rows from which the packed path is taken (bench_matmul) */
#endif
#define A2_TR 6 /* rows per packed tile */

/* 8 weights of a dense row from element i, widened to fp32 (dt a constant at every call). */
A2_INLINE __m256 a2_load8(const void *row, cv_dtype dt, size_t i) {
    const uint16_t *h = (const uint16_t *)row + i;
    switch (dt) {
    case CV_DT_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h)), 16));
    case CV_DT_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    default:
        return _mm256_loadu_ps((const float *)row + i);
    }
}

/* The first n (< 8) weights from element i, zero after (a copy, so nothing past the row is read).
 */
A2_INLINE __m256 a2_load_part(const void *row, cv_dtype dt, size_t i, size_t n) {
    float tmp[8] = {0};
    for (size_t j = 0; j < n; j++) tmp[j] = cv_elem_f32(row, dt, i + j);
    return _mm256_loadu_ps(tmp);
}

/* ---- few rows: dot-product tiles ---------------------------------------------------------- */

/* out rows t0.. (TB of them) x weight rows n0.. (NB) over all K; dt, TB and NB are constants */
A2_INLINE void a2_dot_tile(float *out, const float *x, const cv_weight *w, const float *bias,
                           size_t t0, size_t n0, int TB, int NB, cv_dtype dt) {
    const size_t N = (size_t)w->rows, K = (size_t)w->cols, es = dt == CV_DT_F32 ? 4 : 2;
    __m256 acc[2][4], acc2[2][4];
    const char *wr[4];
    for (int j = 0; j < NB; j++) wr[j] = (const char *)w->data + (n0 + (size_t)j) * K * es;
    for (int i = 0; i < TB; i++)
        for (int j = 0; j < NB; j++) acc[i][j] = acc2[i][j] = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 16 <= K; k += 16) { /* two chains per product: the FMA latency is hidden */
        __m256 wv[4], wv2[4];
        for (int j = 0; j < NB; j++)
            wv[j] = a2_load8(wr[j], dt, k), wv2[j] = a2_load8(wr[j], dt, k + 8);
        for (int i = 0; i < TB; i++) {
            __m256 xv = _mm256_loadu_ps(x + (t0 + i) * K + k);
            __m256 xv2 = _mm256_loadu_ps(x + (t0 + i) * K + k + 8);
            for (int j = 0; j < NB; j++) {
                acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
                acc2[i][j] = _mm256_fmadd_ps(xv2, wv2[j], acc2[i][j]);
            }
        }
    }
    for (; k < K; k += 8) {
        size_t n = K - k < 8 ? K - k : 8;
        for (int j = 0; j < NB; j++) {
            __m256 wv = n == 8 ? a2_load8(wr[j], dt, k) : a2_load_part(wr[j], dt, k, n);
            for (int i = 0; i < TB; i++) {
                float xt[8] = {0};
                memcpy(xt, x + (t0 + i) * K + k, n * sizeof(float));
                acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(xt), wv, acc[i][j]);
            }
        }
    }
    for (int i = 0; i < TB; i++)
        for (int j = 0; j < NB; j++)
            out[(t0 + i) * N + n0 + j] =
                cv_hsum256(_mm256_add_ps(acc[i][j], acc2[i][j])) + (bias ? bias[n0 + j] : 0.0f);
}

/* One activation row (decode) against weight row n: four 8-lane chains over 32 weights a step.
 * One row at a time keeps each thread's reads a single sequential stream, which the hardware
 * prefetcher follows at full bandwidth; the 4-row tile's four interleaved short streams (a row
 * is 1-3 KB) measured 15-22 GB/s against 28-31 GB/s for this on Zen 3 with bf16 weights. */
A2_INLINE float a2_dot_row(const float *x, const void *row, size_t K, cv_dtype dt) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), a2_load8(row, dt, k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), a2_load8(row, dt, k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), a2_load8(row, dt, k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), a2_load8(row, dt, k + 24), a3);
    }
    for (; k + 8 <= K; k += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), a2_load8(row, dt, k), a0);
    if (k < K) {
        float xt[8] = {0};
        memcpy(xt, x + k, (K - k) * sizeof(float));
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xt), a2_load_part(row, dt, k, K - k), a1);
    }
    return cv_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

#define A2_DOT_DRIVER(SUF, DT)                                                                     \
    static void a2_matmul_dot_##SUF(float *out, const float *x, const cv_weight *w,                \
                                    const float *bias, size_t T) {                                 \
        const size_t N = (size_t)w->rows, K = (size_t)w->cols, nb = (N + 3) / 4;                   \
        if (T == 1) {                                                                              \
            const size_t es = DT == CV_DT_F32 ? 4 : 2;                                             \
            _Pragma("omp parallel for schedule(static) if (N * K > 32768)") for (size_t n = 0;     \
                                                                                 n < N; n++)       \
                out[n] = a2_dot_row(x, (const char *)w->data + n * K * es, K, DT) +                \
                         (bias ? bias[n] : 0.0f);                                                  \
            return;                                                                                \
        }                                                                                          \
        _Pragma("omp parallel for schedule(static) if (N * K * T > 32768)") for (size_t b = 0;     \
                                                                                 b < nb; b++) {    \
            size_t n0 = b * 4;                                                                     \
            for (size_t t0 = 0; t0 < T; t0 += 2) {                                                 \
                int two = t0 + 1 < T;                                                              \
                if (n0 + 4 <= N) {                                                                 \
                    if (two)                                                                       \
                        a2_dot_tile(out, x, w, bias, t0, n0, 2, 4, DT);                            \
                    else                                                                           \
                        a2_dot_tile(out, x, w, bias, t0, n0, 1, 4, DT);                            \
                } else                                                                             \
                    for (size_t n = n0; n < N; n++) {                                              \
                        if (two)                                                                   \
                            a2_dot_tile(out, x, w, bias, t0, n, 2, 1, DT);                         \
                        else                                                                       \
                            a2_dot_tile(out, x, w, bias, t0, n, 1, 1, DT);                         \
                    }                                                                              \
            }                                                                                      \
        }                                                                                          \
    }
A2_DOT_DRIVER(f32, CV_DT_F32)
A2_DOT_DRIVER(bf16, CV_DT_BF16)
A2_DOT_DRIVER(f16, CV_DT_F16)

/* ---- many rows: packed panels, outer-product tiles ---------------------------------------- */

/* r[0..7] (8 x 8 floats) transposed in registers: r[i] becomes element i of every input row. */
A2_INLINE void a2_transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 8; g += 4) {
        u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

/* Panel p (weight rows p * 16 .. + 15, zero past N) widened and packed as (K, 16) into dst: 8 rows
 * x 8 k at a time, transposed in registers. */
A2_INLINE void a2_pack_dt(float *dst, const cv_weight *w, size_t p, cv_dtype dt) {
    const size_t N = (size_t)w->rows, K = (size_t)w->cols, es = cv_dtype_size(dt);
    for (size_t k0 = 0; k0 < K; k0 += 8) {
        size_t nk = K - k0 < 8 ? K - k0 : 8;
        for (size_t c0 = 0; c0 < 16; c0 += 8) {
            __m256 r[8];
            for (size_t c = 0; c < 8; c++) {
                size_t n = p * 16 + c0 + c;
                const char *row = (const char *)w->data + n * K * es;
                r[c] = n >= N    ? _mm256_setzero_ps()
                       : nk == 8 ? a2_load8(row, dt, k0)
                                 : a2_load_part(row, dt, k0, nk);
            }
            a2_transpose8(r);
            for (size_t i = 0; i < nk; i++) _mm256_store_ps(dst + (k0 + i) * 16 + c0, r[i]);
        }
    }
}

/* One copy per dtype, so the eight loaded rows stay in registers for the transpose. */
static void a2_pack(float *dst, const cv_weight *w, size_t p, cv_dtype dt) {
    switch (dt) {
    case CV_DT_BF16:
        a2_pack_dt(dst, w, p, CV_DT_BF16);
        break;
    case CV_DT_F16:
        a2_pack_dt(dst, w, p, CV_DT_F16);
        break;
    default:
        a2_pack_dt(dst, w, p, CV_DT_F32);
    }
}

/* Lanes of the 8 output columns from n that exist (< N), as a maskstore mask. */
A2_INLINE __m256i a2_cols_mask(size_t N, size_t n) {
    int have = n >= N ? 0 : N - n >= 8 ? 8 : (int)(N - n);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(have), lane);
}

/* The fused head's running sums (head_logprob): one thread's 8 lanes per row (cpu_internal.h). */
typedef cv_lse_view a2_lse;

/* Rows t0.. (RT) of a finished tile (tb: 6 x 16, columns n0.., N wide) folded into the running
 * sums. The tile comes through memory so that the product loop's accumulators stay registers. */
static void a2_tile_lse(const a2_lse *L, const float *tb, size_t N, size_t t0, size_t n0, int RT) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY), pinf = _mm256_set1_ps(INFINITY);
    for (int i = 0; i < RT; i++) {
        size_t t = t0 + (size_t)i;
        __m256 v[2], mo = _mm256_load_ps(L->m + t * 8), mx = mo, bad = _mm256_setzero_ps();
        for (int j = 0; j < 2; j++) {
            __m256 have = _mm256_castsi256_ps(a2_cols_mask(N, n0 + 8 * (size_t)j));
            v[j] = _mm256_blendv_ps(ninf, _mm256_load_ps(tb + 16 * i + 8 * j), have);
            bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(v[j], v[j], _CMP_UNORD_Q),
                                                 _mm256_cmp_ps(v[j], pinf, _CMP_EQ_OQ)));
            mx = _mm256_max_ps(mx, v[j]);
        }
        if (_mm256_movemask_ps(bad)) L->bad[t] = 1;
        int64_t y = L->y[t];
        if (y >= (int64_t)n0 && y < (int64_t)n0 + 16 && y < (int64_t)N)
            L->tgt[t] = tb[16 * i + (y - (int64_t)n0)];
        __m256 sc = cv_exp256(_mm256_sub_ps(mo, mx));
        __m256 z =
            _mm256_add_ps(cv_exp256(_mm256_sub_ps(v[0], mx)), cv_exp256(_mm256_sub_ps(v[1], mx)));
        double *s = L->s + t * 8;
        for (int h = 0; h < 2; h++) {
            __m128 sch = h ? _mm256_extractf128_ps(sc, 1) : _mm256_castps256_ps128(sc);
            __m128 zh = h ? _mm256_extractf128_ps(z, 1) : _mm256_castps256_ps128(z);
            _mm256_store_pd(s + 4 * h, _mm256_fmadd_pd(_mm256_load_pd(s + 4 * h),
                                                       _mm256_cvtps_pd(sch), _mm256_cvtps_pd(zh)));
        }
        _mm256_store_ps(L->m + t * 8, mx);
    }
}

/* A 6 x 16 tile: rows t0.. (RT <= 6 stored; missing rows repeat row t0) x the panel's 16 columns
 * from n0, over all K, + bias; or, with L, folded into the fused head's running sums. */
A2_INLINE void a2_tile(float *out, const float *x, const float *panel, const float *bias, size_t N,
                       size_t K, size_t t0, size_t n0, int RT, const a2_lse *L) {
    __m256 acc[A2_TR][2];
    const float *xr[A2_TR];
    for (int i = 0; i < A2_TR; i++) {
        xr[i] = x + (t0 + (size_t)(i < RT ? i : 0)) * K;
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    }
    for (size_t k = 0; k < K; k++) {
        __m256 w0 = _mm256_load_ps(panel + k * 16), w1 = _mm256_load_ps(panel + k * 16 + 8);
        for (int i = 0; i < A2_TR; i++) {
            __m256 xb = _mm256_broadcast_ss(xr[i] + k);
            acc[i][0] = _mm256_fmadd_ps(xb, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xb, w1, acc[i][1]);
        }
    }
    if (L) {
        float tb[A2_TR * 16] __attribute__((aligned(32)));
        for (int i = 0; i < A2_TR; i++)
            for (int j = 0; j < 2; j++) _mm256_store_ps(tb + 16 * i + 8 * j, acc[i][j]);
        a2_tile_lse(L, tb, N, t0, n0, RT);
        return;
    }
    for (int j = 0; j < 2; j++) {
        size_t n = n0 + 8 * (size_t)j;
        if (n + 8 <= N) { /* plain stores: vmaskmovps to memory is slow on AMD (a tenth of the
                           * kernel's time at T = 4096 with masks on every store) */
            __m256 bv = bias ? _mm256_loadu_ps(bias + n) : _mm256_setzero_ps();
            for (int i = 0; i < RT; i++)
                _mm256_storeu_ps(out + (t0 + i) * N + n, _mm256_add_ps(acc[i][j], bv));
            continue;
        }
        __m256i mk = a2_cols_mask(N, n);
        __m256 bv = bias ? _mm256_maskload_ps(bias + n, mk) : _mm256_setzero_ps();
        for (int i = 0; i < RT; i++)
            _mm256_maskstore_ps(out + (t0 + i) * N + n, mk, _mm256_add_ps(acc[i][j], bv));
    }
}

/* Rows t0..t1 against the packed panel of columns n0.. */
A2_INLINE void a2_rows(float *out, const float *x, const float *panel, const float *bias, size_t N,
                       size_t K, size_t t0, size_t t1, size_t n0, const a2_lse *L) {
    size_t t = t0;
    for (; t + A2_TR <= t1; t += A2_TR) a2_tile(out, x, panel, bias, N, K, t, n0, A2_TR, L);
    if (t < t1) a2_tile(out, x, panel, bias, N, K, t, n0, (int)(t1 - t), L);
}

/* One copy per mode, so the accumulators stay in registers in both. */
static void a2_panel_rows(float *out, const float *x, const float *panel, const float *bias,
                          size_t N, size_t K, size_t t0, size_t t1, size_t n0, const a2_lse *L) {
    if (L)
        a2_rows(NULL, x, panel, NULL, N, K, t0, t1, n0, L);
    else
        a2_rows(out, x, panel, bias, N, K, t0, t1, n0, NULL);
}

/* Returns 0 when the scratch cannot be had (the caller takes the dot-product path). */
static int a2_matmul_packed(cv_backend *b, float *out, const float *x, const cv_weight *w,
                            const float *bias, size_t T, const cv_head_lse *lse, const int32_t *y) {
    const size_t N = (size_t)w->rows, K = (size_t)w->cols, np = (N + 15) / 16;
    const size_t nth = (size_t)omp_get_max_threads(), per = K * 16 + 8;
    float *fl = cv_cpu_scratch_flt(b, nth * per + 8);
    if (!fl) return 0;
    float *P = (float *)(((uintptr_t)fl + 31) & ~(uintptr_t)31);
    /* enough items for every thread, each a whole number of tiles: few panels -> row blocks */
    size_t nrb = np >= 4 * nth ? 1 : (4 * nth + np - 1) / np;
    size_t tb = ((T + nrb - 1) / nrb + A2_TR - 1) / A2_TR * A2_TR;
    nrb = (T + tb - 1) / tb;
    const cv_dtype dt = w->dtype;
#pragma omp parallel
    {
        const size_t me = (size_t)omp_get_thread_num();
        float *panel = P + me * per;
        size_t packed = (size_t)-1;
        a2_lse mine; /* lse: this thread's own running sums */
        if (lse) mine = cv_head_lse_view(lse, y, me);
#pragma omp for schedule(dynamic, 1)
        for (size_t it = 0; it < np * nrb; it++) {
            size_t p = it / nrb, t0 = (it % nrb) * tb, t1 = t0 + tb < T ? t0 + tb : T;
            if (packed != p) {
                a2_pack(panel, w, p, dt);
                packed = p;
            }
            a2_panel_rows(out, x, panel, bias, N, K, t0, t1, p * 16, lse ? &mine : NULL);
        }
    }
    return 1;
}

void cv_cpu_matmul_avx2(cv_backend *b, float *out, const float *x, const cv_weight *w,
                        const float *bias, int T) {
    if (T >= A2_PACK_T && b && a2_matmul_packed(b, out, x, w, bias, (size_t)T, NULL, NULL)) return;
    switch (w->dtype) {
    case CV_DT_BF16:
        a2_matmul_dot_bf16(out, x, w, bias, (size_t)T);
        break;
    case CV_DT_F16:
        a2_matmul_dot_f16(out, x, w, bias, (size_t)T);
        break;
    default:
        a2_matmul_dot_f32(out, x, w, bias, (size_t)T);
    }
}

/* One row's dot product with x, the inner loop specialized for the row's dtype. */
float cv_cpu_dot_row_avx2(const float *x, const void *row, size_t K, cv_dtype dt) {
    switch (dt) {
    case CV_DT_BF16:
        return a2_dot_row(x, row, K, CV_DT_BF16);
    case CV_DT_F16:
        return a2_dot_row(x, row, K, CV_DT_F16);
    default:
        return a2_dot_row(x, row, K, CV_DT_F32);
    }
}

int cv_cpu_matvec_n_avx2(float *const *out, const float *x, const cv_weight *const *w,
                         const float *const *bias, int nw) {
    size_t total = 0, K = (size_t)w[0]->cols;
    for (int i = 0; i < nw; i++) {
        if (w[i]->format != CV_WFMT_DENSE || (size_t)w[i]->cols != K) return 0;
        total += (size_t)w[i]->rows;
    }
    /* the rows of all nw weights as one range, split in contiguous shares: one region */
#pragma omp parallel for schedule(static) if (total * K > 32768)
    for (size_t r = 0; r < total; r++) {
        int i = 0;
        size_t n = r;
        while (n >= (size_t)w[i]->rows) n -= (size_t)w[i++]->rows;
        const cv_weight *wi = w[i];
        const char *row = (const char *)wi->data + n * K * cv_dtype_size(wi->dtype);
        out[i][n] =
            cv_cpu_dot_row_avx2(x, row, K, wi->dtype) + (bias && bias[i] ? bias[i][n] : 0.0f);
    }
    return 1;
}

int cv_cpu_head_logprob_avx2(cv_backend *b, double *out, const float *x, const cv_weight *w, int T,
                             const int32_t *targets) {
    if (!b || w->format != CV_WFMT_DENSE || T < A2_PACK_T) return 0;
    cv_head_lse h;
    int ok = cv_head_lse_init(&h, (size_t)T, (size_t)omp_get_max_threads(), 8);
    if (ok) ok = a2_matmul_packed(b, NULL, x, w, NULL, (size_t)T, &h, targets);
    return cv_head_lse_finish(&h, ok, out, targets, (size_t)w->rows);
}
#endif
