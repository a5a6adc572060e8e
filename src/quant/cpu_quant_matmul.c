/* cpu_quant_matmul.c — out (T, N) = x (T, K) . W^T + bias for INT8 and NF4 weights (N, K) on the
 * CPU: the AVX-512 paths the backend uses, a portable OpenMP path, and the naive twin (oracle).
 *
 * Both fast paths dequantize in registers and accumulate in fp32; weights are read once per tile
 * of up to 4 query rows (like the dense kernel in src/backend/cpu_matmul.c), so decode (T = 1)
 * reads 1 byte per weight for INT8 and 0.5 byte (+ 4 bytes of absmax per 64) for NF4 instead of 4.
 *   INT8: 16 int8 -> 16 int32 -> 16 fp32 (vpmovsxbd + vcvtdq2ps) times x, the row scale applied
 *         once to the finished dot product (scale * sum(x * q) == sum(x * q * scale) up to
 *         rounding). This is the default: fp32 activations, results equal to
 *         dequantize-then-matmul up to summation order.
 *   INT8 with quantized activations (opt-in, cv_quant_set_int8_activations(1)): each activation
 *         row becomes int8 (absmax / 127, as LLM.int8() does, without its outlier decomposition)
 *         stored as u8 = q + 128, and vpdpbusd (AVX512-VNNI) sums 64 u8 * s8 products per
 *         instruction; the +128 offset is removed with the row sums of the codes kept at upload
 *         (quant_internal.h). Measured on 1 thread: decode ~1.8x (bench_quant, GPT-2-small shape),
 *         prefill 1.3-2.4x the fp32-activation int8 path, for ~2x its logit error on the fixtures
 *         (test_quant) — hence opt-in. Real checkpoints with activation outliers (>= 6) would
 *         need bitsandbytes' decomposition, which is not implemented.
 *   NF4:  the 16 code values fit one zmm register, so a table lookup is one vpermps per 16
 *         weights; the block's absmax is folded into that register once per block (code * absmax
 *         is exactly the scalar dequantized value). A byte holds elements 2j (high nibble) and
 *         2j + 1 (low nibble), so instead of interleaving the two lookups we de-interleave x
 *         once per call: within each 32-element chunk, the 16 even elements then the 16 odd
 *         ones. This path needs rows aligned to blocks (cols % block == 0, block % 32 == 0:
 *         every real model); other shapes take the portable path (any bitsandbytes layout). */
#include "corevital/quant.h"

#include "../backend/cpu_internal.h"
#include "quant_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Dequantized element (r, c) of a quantized weight (scalar paths). */
static inline float quant_elem(const cv_weight *w, int64_t r, int64_t c) {
    if (w->format == CV_WFMT_INT8)
        return (float)((const int8_t *)w->data)[(size_t)r * (size_t)w->cols + (size_t)c] *
               w->scales[r];
    return cv_nf4_elem(w->data, w->scales, w->block, r * w->cols + c);
}

void cv_matmul_quant_naive(float *out, const float *x, const cv_weight *w, const float *bias,
                           int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    for (int t = 0; t < T; t++)
        for (size_t n = 0; n < N; n++) {
            double acc = bias ? bias[n] : 0.0;
            for (size_t k = 0; k < K; k++)
                acc += (double)x[(size_t)t * K + k] * quant_elem(w, (int64_t)n, (int64_t)k);
            out[(size_t)t * N + n] = (float)acc;
        }
}

/* ---- INT8 with activations quantized per row (VNNI) --------------------------------------- */

static int g_int8_act = 0;
void cv_quant_set_int8_activations(int on) {
    g_int8_act = on != 0;
}
int cv_quant_int8_activations(void) {
    return g_int8_act;
}

/* Row t of x as unsigned bytes xq + 128 with xq = round_half_even(x * 127 / absmax); returns the
 * row's scale absmax / 127 (0 for a zero row, whose bytes are all 128). */
static float quantize_act_row(uint8_t *xu, const float *x, size_t K) {
    float amax = 0.0f;
    for (size_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[k]));
    if (amax == 0.0f) {
        memset(xu, 128, K);
        return 0.0f;
    }
    float mul = 127.0f / amax;
    for (size_t k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * mul);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        xu[k] = (uint8_t)((int)v + 128);
    }
    return amax / 127.0f;
}

/* The epilogue both paths share, so that they agree to the last bit: the exact integer dot
 * product of the signed codes, then (dot * sx) * sw + bias in fp32. */
static inline float actq_finish(int64_t dot_u, int32_t rowsum, float sx, float sw, float b) {
    return (float)(dot_u - 128 * (int64_t)rowsum) * sx * sw + b;
}

void cv_matmul_int8_actq_naive(float *out, const float *x, const cv_weight *w, const float *bias,
                               int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    uint8_t *xu = malloc(K ? K : 1);
    if (!xu) return;
    for (int t = 0; t < T; t++) {
        float sx = quantize_act_row(xu, x + (size_t)t * K, K);
        for (size_t n = 0; n < N; n++) {
            const int8_t *q = (const int8_t *)w->data + n * K;
            int64_t dot = 0, rs = 0;
            for (size_t k = 0; k < K; k++) dot += (int64_t)xu[k] * q[k], rs += q[k];
            out[(size_t)t * N + n] =
                actq_finish(dot, (int32_t)rs, sx, w->scales[n], bias ? bias[n] : 0.0f);
        }
    }
    free(xu);
}

/* Portable: threads over weight rows; each row is dequantized once into a per-thread buffer and
 * dotted with every query row. */
void cv_matmul_quant_portable(float *out, const float *x, const cv_weight *w, const float *bias,
                              int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
#pragma omp parallel if (N * K * (size_t)T > 32768)
    {
        float *row = malloc(K * sizeof(float));
#pragma omp for schedule(static)
        for (size_t n = 0; n < N; n++) {
            if (row) {
                if (w->format == CV_WFMT_INT8) {
                    const int8_t *q = (const int8_t *)w->data + n * K;
                    for (size_t k = 0; k < K; k++) row[k] = (float)q[k] * w->scales[n];
                } else {
                    for (size_t k = 0; k < K; k++)
                        row[k] = cv_nf4_elem(w->data, w->scales, w->block, (int64_t)(n * K + k));
                }
            }
            for (int t = 0; t < T; t++) {
                const float *xr = x + (size_t)t * K;
                float acc = 0.0f;
                if (row)
                    for (size_t k = 0; k < K; k++) acc += xr[k] * row[k];
                else /* no memory for the row buffer: dequantize on the fly */
                    for (size_t k = 0; k < K; k++)
                        acc += xr[k] * quant_elem(w, (int64_t)n, (int64_t)k);
                out[(size_t)t * N + n] = acc + (bias ? bias[n] : 0.0f);
            }
        }
        free(row);
    }
}

#ifdef CV_CPU_AVX512
/* ---- INT8 ----------------------------------------------------------------------------------- */

static inline __m512 i8_load16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline __m512 i8_load16_mask(const int8_t *p, __mmask16 m) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

#define I8_TILE(TB, NB)                                                                            \
    static inline void i8_tile_##TB##x##NB(float *out, const float *x, const cv_weight *w,         \
                                           const float *bias, size_t N, size_t K, size_t t0,       \
                                           size_t n0) {                                            \
        __m512 acc[TB][NB];                                                                        \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();                          \
        const int8_t *wr[NB];                                                                      \
        for (int j = 0; j < NB; j++) wr[j] = (const int8_t *)w->data + (n0 + j) * K;               \
        size_t k = 0;                                                                              \
        for (; k + 16 <= K; k += 16) {                                                             \
            __m512 wv[NB];                                                                         \
            for (int j = 0; j < NB; j++) wv[j] = i8_load16(wr[j] + k);                             \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512 xv = _mm512_loadu_ps(x + (t0 + i) * K + k);                                 \
                for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);    \
            }                                                                                      \
        }                                                                                          \
        if (k < K) {                                                                               \
            __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);                                       \
            __m512 wv[NB];                                                                         \
            for (int j = 0; j < NB; j++) wv[j] = i8_load16_mask(wr[j] + k, m);                     \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512 xv = _mm512_maskz_loadu_ps(m, x + (t0 + i) * K + k);                        \
                for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);    \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++)                                                           \
                out[(t0 + i) * N + n0 + j] = _mm512_reduce_add_ps(acc[i][j]) * w->scales[n0 + j] + \
                                             (bias ? bias[n0 + j] : 0.0f);                         \
    }
I8_TILE(4, 4)
I8_TILE(1, 4)
I8_TILE(4, 1)
I8_TILE(1, 1)

static void matmul_int8_avx512(float *out, const float *x, const cv_weight *w, const float *bias,
                               int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols, Tz = (size_t)T;
    size_t nblocks = (N + 3) / 4;
#pragma omp parallel for schedule(static) if (N * K * Tz > 32768)
    for (size_t nb = 0; nb < nblocks; nb++) {
        size_t n0 = nb * 4;
        int full_n = n0 + 4 <= N;
        size_t t0 = 0;
        for (; t0 + 4 <= Tz; t0 += 4) {
            if (full_n)
                i8_tile_4x4(out, x, w, bias, N, K, t0, n0);
            else
                for (size_t n = n0; n < N; n++) i8_tile_4x1(out, x, w, bias, N, K, t0, n);
        }
        for (; t0 < Tz; t0++) {
            if (full_n)
                i8_tile_1x4(out, x, w, bias, N, K, t0, n0);
            else
                for (size_t n = n0; n < N; n++) i8_tile_1x1(out, x, w, bias, N, K, t0, n);
        }
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define CV_QUANT_VNNI 1
/* TB x NB tile over unsigned activation bytes xu (T, K) and int8 weight rows: vpdpbusd sums 4
 * u8 * s8 products into each int32 lane, 64 weights per instruction. */
#define I8Q_TILE(TB, NB)                                                                           \
    static inline void i8q_tile_##TB##x##NB(                                                       \
        float *out, const uint8_t *xu, const float *sx, const cv_weight *w, const int32_t *rs,     \
        const float *bias, size_t N, size_t K, size_t t0, size_t n0) {                             \
        __m512i acc[TB][NB];                                                                       \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_si512();                       \
        const int8_t *wr[NB];                                                                      \
        for (int j = 0; j < NB; j++) wr[j] = (const int8_t *)w->data + (n0 + j) * K;               \
        size_t k = 0;                                                                              \
        for (; k + 64 <= K; k += 64) {                                                             \
            __m512i wv[NB];                                                                        \
            for (int j = 0; j < NB; j++) wv[j] = _mm512_loadu_si512(wr[j] + k);                    \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512i xv = _mm512_loadu_si512(xu + (t0 + i) * K + k);                            \
                for (int j = 0; j < NB; j++)                                                       \
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[j]);                         \
            }                                                                                      \
        }                                                                                          \
        if (k < K) {                                                                               \
            __mmask64 m = (__mmask64)((1ull << (K - k)) - 1ull);                                   \
            __m512i wv[NB];                                                                        \
            for (int j = 0; j < NB; j++) wv[j] = _mm512_maskz_loadu_epi8(m, wr[j] + k);            \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512i xv = _mm512_maskz_loadu_epi8(m, xu + (t0 + i) * K + k);                    \
                for (int j = 0; j < NB; j++)                                                       \
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[j]);                         \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++)                                                           \
                out[(t0 + i) * N + n0 + j] =                                                       \
                    actq_finish(_mm512_reduce_add_epi32(acc[i][j]), rs[n0 + j], sx[t0 + i],        \
                                w->scales[n0 + j], bias ? bias[n0 + j] : 0.0f);                    \
    }
I8Q_TILE(4, 4)
I8Q_TILE(1, 4)
I8Q_TILE(4, 1)
I8Q_TILE(1, 1)

/* Returns 0 when scratch cannot be allocated (the caller falls back to fp32 activations). */
static int matmul_int8_vnni(float *out, const float *x, const cv_weight *w, const int32_t *rs,
                            const float *bias, int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols, Tz = (size_t)T;
    uint8_t xs[8192];
    float sxs[64];
    uint8_t *xu = Tz * K <= sizeof xs ? xs : malloc(Tz * K);
    float *sx = Tz <= 64 ? sxs : malloc(Tz * sizeof(float));
    if (!xu || !sx) {
        if (xu != xs) free(xu);
        if (sx != sxs) free(sx);
        return 0;
    }
    for (size_t t = 0; t < Tz; t++) sx[t] = quantize_act_row(xu + t * K, x + t * K, K);
    size_t nblocks = (N + 3) / 4;
#pragma omp parallel for schedule(static) if (N * K * Tz > 32768)
    for (size_t nb = 0; nb < nblocks; nb++) {
        size_t n0 = nb * 4;
        int full_n = n0 + 4 <= N;
        size_t t0 = 0;
        for (; t0 + 4 <= Tz; t0 += 4) {
            if (full_n)
                i8q_tile_4x4(out, xu, sx, w, rs, bias, N, K, t0, n0);
            else
                for (size_t n = n0; n < N; n++) i8q_tile_4x1(out, xu, sx, w, rs, bias, N, K, t0, n);
        }
        for (; t0 < Tz; t0++) {
            if (full_n)
                i8q_tile_1x4(out, xu, sx, w, rs, bias, N, K, t0, n0);
            else
                for (size_t n = n0; n < N; n++) i8q_tile_1x1(out, xu, sx, w, rs, bias, N, K, t0, n);
        }
    }
    if (xu != xs) free(xu);
    if (sx != sxs) free(sx);
    return 1;
}
#endif

/* ---- NF4 ------------------------------------------------------------------------------------ */

/* xp (T, K): within each 32-element chunk, elements 0, 2, .., 30 then 1, 3, .., 31. */
static void nf4_deinterleave(float *xp, const float *x, size_t T, size_t K) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (size_t i = 0; i < T * K; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        _mm512_storeu_ps(xp + i, _mm512_permutex2var_ps(a, even, b));
        _mm512_storeu_ps(xp + i + 16, _mm512_permutex2var_ps(a, odd, b));
    }
}

#define NF4_TILE(TB, NB)                                                                           \
    static inline void nf4_tile_##TB##x##NB(float *out, const float *xp, const cv_weight *w,       \
                                            const float *bias, size_t N, size_t K, size_t t0,      \
                                            size_t n0, __m512 lut) {                               \
        __m512 acc[TB][NB];                                                                        \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();                          \
        const size_t B = (size_t)w->block, nbk = K / B;                                            \
        const __m512i lo_mask = _mm512_set1_epi32(0x0F);                                           \
        const uint8_t *wr[NB];                                                                     \
        const float *am[NB];                                                                       \
        for (int j = 0; j < NB; j++) {                                                             \
            wr[j] = (const uint8_t *)w->data + (n0 + j) * (K / 2);                                 \
            am[j] = w->scales + (n0 + j) * nbk;                                                    \
        }                                                                                          \
        for (size_t bk = 0; bk < nbk; bk++) {                                                      \
            __m512 tab[NB];                                                                        \
            for (int j = 0; j < NB; j++) tab[j] = _mm512_mul_ps(lut, _mm512_set1_ps(am[j][bk]));   \
            for (size_t k = bk * B; k < (bk + 1) * B; k += 32) {                                   \
                __m512 we[NB], wo[NB];                                                             \
                for (int j = 0; j < NB; j++) {                                                     \
                    __m512i v =                                                                    \
                        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wr[j] + k / 2)));   \
                    we[j] = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tab[j]);                \
                    wo[j] = _mm512_permutexvar_ps(_mm512_and_si512(v, lo_mask), tab[j]);           \
                }                                                                                  \
                for (int i = 0; i < TB; i++) {                                                     \
                    __m512 xe = _mm512_loadu_ps(xp + (t0 + i) * K + k);                            \
                    __m512 xo = _mm512_loadu_ps(xp + (t0 + i) * K + k + 16);                       \
                    for (int j = 0; j < NB; j++) {                                                 \
                        acc[i][j] = _mm512_fmadd_ps(xe, we[j], acc[i][j]);                         \
                        acc[i][j] = _mm512_fmadd_ps(xo, wo[j], acc[i][j]);                         \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++)                                                           \
                out[(t0 + i) * N + n0 + j] =                                                       \
                    _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n0 + j] : 0.0f);                \
    }
NF4_TILE(4, 4)
NF4_TILE(1, 4)
NF4_TILE(4, 1)
NF4_TILE(1, 1)

static int nf4_fast_ok(const cv_weight *w) {
    return w->block > 0 && w->block % 32 == 0 && w->cols % w->block == 0;
}

/* Returns 0 when the scratch for the de-interleaved activations cannot be allocated. */
static int matmul_nf4_avx512(float *out, const float *x, const cv_weight *w, const float *bias,
                             int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols, Tz = (size_t)T;
    float xs[4096]; /* decode rows up to K = 4096 without a heap allocation */
    float *xp = Tz * K <= 4096 ? xs : malloc(Tz * K * sizeof(float));
    if (!xp) return 0;
    nf4_deinterleave(xp, x, Tz, K);
    const __m512 lut = _mm512_loadu_ps(cv_nf4_code);
    size_t nblocks = (N + 3) / 4;
#pragma omp parallel for schedule(static) if (N * K * Tz > 32768)
    for (size_t nb = 0; nb < nblocks; nb++) {
        size_t n0 = nb * 4;
        int full_n = n0 + 4 <= N;
        size_t t0 = 0;
        for (; t0 + 4 <= Tz; t0 += 4) {
            if (full_n)
                nf4_tile_4x4(out, xp, w, bias, N, K, t0, n0, lut);
            else
                for (size_t n = n0; n < N; n++) nf4_tile_4x1(out, xp, w, bias, N, K, t0, n, lut);
        }
        for (; t0 < Tz; t0++) {
            if (full_n)
                nf4_tile_1x4(out, xp, w, bias, N, K, t0, n0, lut);
            else
                for (size_t n = n0; n < N; n++) nf4_tile_1x1(out, xp, w, bias, N, K, t0, n, lut);
        }
    }
    if (xp != xs) free(xp);
    return 1;
}
#endif

const char *cv_matmul_quant_path(const cv_weight *w) {
#ifdef CV_CPU_AVX512
#ifdef CV_QUANT_VNNI
    if (w->format == CV_WFMT_INT8 && g_int8_act && cv_int8_rowsums(w)) return "int8-vnni-actq";
#endif
    if (w->format == CV_WFMT_INT8) return "int8-avx512";
    if (w->format == CV_WFMT_NF4 && nf4_fast_ok(w)) return "nf4-avx512";
#else
    (void)w;
#endif
    return "portable";
}

void cv_cpu_matmul_quant(float *out, const float *x, const cv_weight *w, const float *bias, int T) {
#ifdef CV_CPU_AVX512
    if (w->format == CV_WFMT_INT8) {
#ifdef CV_QUANT_VNNI
        const int32_t *rs = cv_int8_rowsums(w);
        if (g_int8_act && rs && matmul_int8_vnni(out, x, w, rs, bias, T)) return;
#endif
        matmul_int8_avx512(out, x, w, bias, T);
        return;
    }
    if (w->format == CV_WFMT_NF4 && nf4_fast_ok(w) && matmul_nf4_avx512(out, x, w, bias, T)) return;
#endif
    cv_matmul_quant_portable(out, x, w, bias, T);
}
