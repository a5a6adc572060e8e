/* cpu_internal.h — shared by the CPU backend files: per-thread scratch and SIMD helpers. */
#ifndef COREVITAL_CPU_INTERNAL_H
#define COREVITAL_CPU_INTERNAL_H

#include "corevital/backend.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__)
#ifdef CV_AVX512_EMU
#include "avx512emu.h" /* the AVX-512 kernels' tests on a CPU without it (make test-avx512emu) */
#else
#include <immintrin.h>
#endif
#define CV_CPU_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CV_CPU_AVX2 1 /* x86 without AVX-512: the AVX2 + FMA kernels (cpu_avx2.c) */
#endif

/* Scratch that grows on demand (outside the steady-state forward: it reaches its high-water
 * mark on the first prefill and is reused afterwards). */
typedef struct {
    double *dbl;
    size_t dbl_cap;
    float *flt;
    size_t flt_cap;
    /* RoPE's (cos, sin) of positions rope_pos0 .. + rope_T for the frequencies rope_freq: every
     * layer's q and k rotate by the same angles, so they are computed once per forward */
    float *rope_cs;
    size_t rope_cap;
    int rope_pos0, rope_T, rope_half;
    float rope_freq[256];
} cv_cpu_ctx;

double *cv_cpu_scratch_dbl(cv_backend *b, size_t n);
float *cv_cpu_scratch_flt(cv_backend *b, size_t n);

void cv_cpu_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w, const float *bias,
                   int T);
/* The fused LM head for prompt surprisals (backend.h head_logprob): with bf16 panels from this
 * many rows up, with fp32 ones from MM_PACK_T (below, packing the whole head per call costs more
 * than the stored logits it saves: bench_head). */
#define CV_HEAD_FUSED_T 32
int cv_cpu_head_logprob(cv_backend *b, double *out, const float *x, const cv_weight *w, int T,
                        const int32_t *targets);
/* The fused heads' running sums (AVX-512: 16 lanes, AVX2: 8): per thread (nth) and row (nt), the
 * per-lane max m and sum s of e^(l - m) ((nth, nt, lanes) each), whether the thread saw a NaN or
 * +inf logit (bad, (nth, nt)), and each row's target logit (tgt, nt). init allocates and resets
 * them (0 without memory); finish, when ok, merges them into ln p(target) = tgt - max - ln z per
 * row (NaN where bad or the target is outside [0, N)), frees them, and returns ok. */
typedef struct {
    float *m;
    double *s;
    unsigned char *bad;
    float *tgt;
    size_t nt, nth;
    int lanes;
} cv_head_lse;
int cv_head_lse_init(cv_head_lse *h, size_t nt, size_t nth, int lanes);
int cv_head_lse_finish(cv_head_lse *h, int ok, double *out, const int32_t *targets, size_t N);
/* One thread's part of a cv_head_lse, as the packed tiles fold into it: its own rows of m, s
 * (nt x lanes) and bad, the shared tgt, and the rows' target ids y. */
typedef struct {
    float *m;
    double *s;
    unsigned char *bad;
    float *tgt;
    const int32_t *y;
} cv_lse_view;
static inline cv_lse_view cv_head_lse_view(const cv_head_lse *h, const int32_t *y, size_t me) {
    const size_t rows = me * h->nt;
    return (cv_lse_view){h->m + rows * (size_t)h->lanes, h->s + rows * (size_t)h->lanes,
                         h->bad + rows, h->tgt, y};
}
/* n (<= 3) products of one x as one packed pass (attention's q, k, v), and the gated MLP's
 * silu(x . Wg^T) * (x . Wu^T) with the up product folded into the gate's tiles: 0 (nothing
 * written) where the packed path does not take the weights alike (the caller runs the ops one by
 * one). */
int cv_cpu_matmul_packed_n(cv_backend *b, float *const *out, const float *x,
                           const cv_weight *const *w, const float *const *bias, int n, int T);
int cv_cpu_gate_up_packed(cv_backend *b, float *gate, const float *x, const cv_weight *wg,
                          const cv_weight *wu, int T);
void cv_cpu_attention(cv_backend *b, const cv_attn_args *a);
/* The one-row-at-a-time attention (probability captures, non-AVX-512 hosts), kept callable for
 * the bench ladder. */
void cv_cpu_attention_rows(cv_backend *b, const cv_attn_args *a);
/* Merge per-row softmax sums (z, t, mid mass, off mass; 4 doubles a row, row r = h * T + t) into
 * the records the args name, in row order. */
void cv_attn_merge_rows(const cv_attn_args *a, const double *row_z);
/* Quantized weights (src/quant): copy into an owned buffer; matmul over them. */
cv_status cv_cpu_weight_upload_quant(cv_backend *b, cv_weight *w, const void *data,
                                     const float *scales, cv_weight_format format, int64_t rows,
                                     int64_t cols, int block, cv_error *err);
void cv_cpu_matmul_quant(float *out, const float *x, const cv_weight *w, const float *bias, int T);
/* The portable (non-AVX-512) dense matmul, kept for the bench ladder. */
void cv_cpu_matmul_portable(float *out, const float *x, const cv_weight *w, const float *bias,
                            int T);

#ifdef CV_CPU_AVX2
/* The dense matmul on AVX2 + FMA (cpu_avx2.c): dot-product tiles for few rows, packed panels of
 * 16 columns and 6 x 16 outer-product tiles from 16 rows. */
void cv_cpu_matmul_avx2(cv_backend *b, float *out, const float *x, const cv_weight *w,
                        const float *bias, int T);
/* The LM head fused with the log-softmax of every row's target (backend.h head_logprob) on the
 * packed path: from A2_PACK_T rows; returns 0 (nothing written) below, or without memory. */
int cv_cpu_head_logprob_avx2(cv_backend *b, double *out, const float *x, const cv_weight *w, int T,
                             const int32_t *targets);
/* x (K) against one dense weight row of dtype dt (decode's dot product, four FMA chains). */
float cv_cpu_dot_row_avx2(const float *x, const void *row, size_t K, cv_dtype dt);
/* Decode (one row of x): out[i] = x W[i]^T + bias[i] for nw dense weights of one K, in one
 * parallel region over all their rows (q / k / v: one fork and join where three matmuls had
 * three). Returns 0, nothing written, when a weight is not dense or K differs. */
int cv_cpu_matvec_n_avx2(float *const *out, const float *x, const cv_weight *const *w,
                         const float *const *bias, int nw);
#endif

/* The unpacked 4 x 4 dot-product AVX-512 matmul at any T (bench ladder). */
void cv_cpu_matmul_unblocked(float *out, const float *x, const cv_weight *w, const float *bias,
                             int T);

#ifdef CV_CPU_AVX512
/* e^x for softmax arguments x <= 0: Cephes' expf polynomial after x = n ln2 + r (about 1 ulp);
 * x below -104 (and -inf) gives 0; NaN stays NaN (max returns its second operand on NaN). */
static inline __m512 cv_exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x * sigmoid(a) = x / (1 + e^-a) on 16 lanes. cv_exp512 flushes e^-a below e^-104 to 0 (the
 * quotient is then x, as with expf) and overflows to inf above e^88 (the quotient is -0 or 0,
 * as with expf); NaN stays NaN. About 1 ulp from the scalar forms (SiLU, GELU, in cpu_backend.c).
 */
static inline __m512 cv_mul_sigmoid512(__m512 x, __m512 a) {
    __m512 e = cv_exp512(_mm512_sub_ps(_mm512_setzero_ps(), a));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

#endif

#ifdef CV_CPU_AVX2
/* e^(n ln 2 + r) = 2^n e^r: cv_exp512's polynomial for e^r, |r| <= ln 2 / 2 (x less n ln 2 in
 * two parts), then 2^n from the exponent field (n in [-126, 128]; 128: inf) */
static inline __m256 cv_exp256_2n(__m256 x, __m256 n, __m256i ebits) {
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(ebits, 23)));
}

/* e^x on 8 lanes (AVX2 + FMA), cv_exp512's polynomial: x below -87.3 (where e^x leaves the
 * normal floats) and -inf give 0, above 88.7 inf; NaN stays NaN. */
static inline __m256 cv_exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ);                /* x >= lo, or NaN */
    x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(lo, x)); /* NaN passes both */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_and_ps(keep, cv_exp256_2n(x, n, e));
}

/* cv_exp256 for x <= 0 (a softmax's s - max), in fewer operations: no upper clamp, and n =
 * round(x log2 e) read from the low bits of x log2 e + 1.5 * 2^23 rather than by a round and a
 * convert. Below -87.3 and -inf give 0; NaN stays NaN. Equal to cv_exp256 but where x log2 e
 * lies within an ulp of a half-integer (n may differ by one; both are within the polynomial's
 * range). */
static inline __m256 cv_exp256_neg(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f), magic = _mm256_set1_ps(12582912.0f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ); /* x >= lo, or NaN */
    x = _mm256_max_ps(lo, x);                        /* NaN passes */
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    __m256 n = _mm256_sub_ps(t, magic); /* t's low mantissa bits hold n + 2^22 */
    __m256i e = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000 - 127));
    return _mm256_and_ps(keep, cv_exp256_2n(x, n, e));
}

/* x * sigmoid(a) = x / (1 + e^-a) on 8 lanes, as cv_mul_sigmoid512: e^-a flushed to 0 below
 * e^-87.3 (the quotient is x) and inf above e^88.7 (the quotient is -0 or 0); NaN stays NaN. */
static inline __m256 cv_mul_sigmoid256(__m256 x, __m256 a) {
    __m256 e = cv_exp256(_mm256_sub_ps(_mm256_setzero_ps(), a));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* Sum of 8 lanes. */
static inline float cv_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* Load 16 weights of a dense row starting at element i, widened to fp32. */
#ifdef CV_CPU_AVX512
static inline __m512 cv_load16(const void *row, cv_dtype dt, size_t i) {
    switch (dt) {
    case CV_DT_BF16: {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case CV_DT_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i)));
    default:
        return _mm512_loadu_ps((const float *)row + i);
    }
}
static inline __m512 cv_load16_mask(const void *row, cv_dtype dt, size_t i, __mmask16 m) {
    switch (dt) {
    case CV_DT_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case CV_DT_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    default:
        return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    }
}
#endif

/* One element of a dense row as fp32 (scalar paths). */
static inline float cv_elem_f32(const void *row, cv_dtype dt, size_t i) {
    switch (dt) {
    case CV_DT_BF16:
        return cv_bf16_to_f32(((const uint16_t *)row)[i]);
    case CV_DT_F16:
        return cv_f16_to_f32(((const uint16_t *)row)[i]);
    default:
        return ((const float *)row)[i];
    }
}

#endif
