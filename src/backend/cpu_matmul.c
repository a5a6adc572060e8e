/* cpu_matmul.c — out (T, N) = x (T, K) . W^T + bias for dense F32 / F16 / BF16 weights (N, K).
 *
 * Weights stay in the checkpoint's dtype and are widened to fp32 in registers, so a bf16
 * checkpoint reads half the bytes per token of an fp32 one. The AVX-512 path computes a tile of
 * TB query rows x NB weight rows with TB*NB vector accumulators, so each weight vector loaded is
 * used TB times and each activation vector NB times; threads split the weight rows (N).
 * Quantized formats (INT8, NF4) are dispatched to src/quant. cv_matmul_naive is the test oracle. */
#include "cpu_internal.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void cv_matmul_naive(float *out, const float *x, const cv_weight *w, const float *bias, int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    if (w->format != CV_WFMT_DENSE) {
        cv_cpu_matmul_quant(out, x, w, bias, T); /* quant has its own naive twin */
        return;
    }
    size_t es = cv_dtype_size(w->dtype);
    for (int t = 0; t < T; t++)
        for (size_t n = 0; n < N; n++) {
            const void *row = (const char *)w->data + n * K * es;
            double acc = bias ? bias[n] : 0.0;
            for (size_t k = 0; k < K; k++)
                acc += (double)x[(size_t)t * K + k] * cv_elem_f32(row, w->dtype, k);
            out[(size_t)t * N + n] = (float)acc;
        }
}

#ifdef CV_CPU_AVX512
/* A TB x NB tile: rows t0.. of x against weight rows n0.. . One copy per weight dtype (DT is a
 * constant, so the widening in cv_load16 is resolved at compile time). */
#define MM_TILE(TB, NB, SUF, DT)                                                                   \
    static inline void mm_tile_##TB##x##NB##_##SUF(float *out, const float *x, const void *W,      \
                                                   const float *bias, size_t N, size_t K,          \
                                                   size_t t0, size_t n0) {                         \
        const cv_dtype dt = DT;                                                                    \
        const size_t es = DT == CV_DT_F32 ? 4 : 2;                                                 \
        __m512 acc[TB][NB];                                                                        \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();                          \
        const char *wr[NB];                                                                        \
        for (int j = 0; j < NB; j++) wr[j] = (const char *)W + (n0 + j) * K * es;                  \
        size_t k = 0;                                                                              \
        for (; k + 16 <= K; k += 16) {                                                             \
            __m512 wv[NB];                                                                         \
            for (int j = 0; j < NB; j++) wv[j] = cv_load16(wr[j], dt, k);                          \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512 xv = _mm512_loadu_ps(x + (t0 + i) * K + k);                                 \
                for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);    \
            }                                                                                      \
        }                                                                                          \
        if (k < K) {                                                                               \
            __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);                                       \
            __m512 wv[NB];                                                                         \
            for (int j = 0; j < NB; j++) wv[j] = cv_load16_mask(wr[j], dt, k, m);                  \
            for (int i = 0; i < TB; i++) {                                                         \
                __m512 xv = _mm512_maskz_loadu_ps(m, x + (t0 + i) * K + k);                        \
                for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);    \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < TB; i++)                                                               \
            for (int j = 0; j < NB; j++)                                                           \
                out[(t0 + i) * N + n0 + j] =                                                       \
                    _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n0 + j] : 0.0f);                \
    }

/* One weight row against one activation row, four independent accumulators over k: a single
 * sequential stream through the row, which the hardware prefetcher follows best (decode). */
#define MM_ROW(SUF, DT)                                                                            \
    static inline float mm_row_##SUF(const float *x, const char *wr, size_t K) {                   \
        const cv_dtype dt = DT;                                                                    \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                \
        size_t k = 0;                                                                              \
        for (; k + 64 <= K; k += 64) {                                                             \
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), cv_load16(wr, dt, k), a0);                \
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), cv_load16(wr, dt, k + 16), a1);      \
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), cv_load16(wr, dt, k + 32), a2);      \
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), cv_load16(wr, dt, k + 48), a3);      \
        }                                                                                          \
        for (; k + 16 <= K; k += 16)                                                               \
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), cv_load16(wr, dt, k), a0);                \
        if (k < K) {                                                                               \
            __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);                                       \
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), cv_load16_mask(wr, dt, k, m),    \
                                 a1);                                                              \
        }                                                                                          \
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));  \
    }

/* The driver: threads split the weight rows in blocks of 4; each block runs over all T rows in
 * tiles of 4 (weights reused 4x from registers), then the T % 4 leftover rows. */
#define MM_DRIVER(SUF, DT)                                                                         \
    MM_TILE(4, 4, SUF, DT)                                                                         \
    MM_TILE(1, 4, SUF, DT)                                                                         \
    MM_TILE(4, 1, SUF, DT)                                                                         \
    MM_TILE(1, 1, SUF, DT)                                                                         \
    MM_ROW(SUF, DT)                                                                                \
    static void matmul_avx512_##SUF(float *out, const float *x, const void *W, const float *bias,  \
                                    size_t N, size_t K, size_t T) {                                \
        if (T == 1 && K <= 4096) { /* short rows: one stream each; long rows: 4 streams below */   \
            const size_t es = DT == CV_DT_F32 ? 4 : 2;                                             \
            _Pragma("omp parallel for schedule(static) if (N * K > 32768)") for (size_t n = 0;     \
                                                                                 n < N; n++)       \
                out[n] =                                                                           \
                    mm_row_##SUF(x, (const char *)W + n * K * es, K) + (bias ? bias[n] : 0.0f);    \
            return;                                                                                \
        }                                                                                          \
        size_t nblocks = (N + 3) / 4;                                                              \
        _Pragma("omp parallel for schedule(static) if (N * K * T > 32768)") for (size_t nb = 0;    \
                                                                                 nb < nblocks;     \
                                                                                 nb++) {           \
            size_t n0 = nb * 4;                                                                    \
            int full_n = n0 + 4 <= N;                                                              \
            size_t t0 = 0;                                                                         \
            for (; t0 + 4 <= T; t0 += 4) {                                                         \
                if (full_n)                                                                        \
                    mm_tile_4x4_##SUF(out, x, W, bias, N, K, t0, n0);                              \
                else                                                                               \
                    for (size_t n = n0; n < N; n++)                                                \
                        mm_tile_4x1_##SUF(out, x, W, bias, N, K, t0, n);                           \
            }                                                                                      \
            for (; t0 < T; t0++) {                                                                 \
                if (full_n)                                                                        \
                    mm_tile_1x4_##SUF(out, x, W, bias, N, K, t0, n0);                              \
                else                                                                               \
                    for (size_t n = n0; n < N; n++)                                                \
                        mm_tile_1x1_##SUF(out, x, W, bias, N, K, t0, n);                           \
            }                                                                                      \
        }                                                                                          \
    }
MM_DRIVER(f32, CV_DT_F32)
MM_DRIVER(bf16, CV_DT_BF16)
MM_DRIVER(f16, CV_DT_F16)

#define MB_INLINE static inline __attribute__((always_inline))

/* ---- long prefill (T >= MM_PACK_T): packed weight panels, outer-product tiles ----------------
 * The weights are widened and packed per call into panels of 64 output columns laid out
 * (K, 64), so a 6 x 64 output tile is an outer product in registers: per k, 4 panel vectors and
 * 6 broadcast activations feed 24 FMAs, with no horizontal reduction at all. Packing reads the
 * weights once (N x K) and pays for itself when T is large; below MM_PACK_T the 4 x 4
 * dot-product tiles above are used. The unpacked kernel re-streamed all of x (T x K) from L3 /
 * memory once per 4 weight rows, which capped it near 40% of peak at long T. A work item packs
 * one panel into its thread's buffer, where it stays in L2 while the rows stream past it
 * (matmul_packed below). */
#define MM_PACK_T 192 /* measured at SmolLM2's shapes (K 576 / 1536): packed wins from T 256 */

/* The lanes of the 16 output columns from n that exist (< N): all, some, or none. */
MB_INLINE __mmask16 mm_cols_mask(size_t N, size_t n) {
    return n >= N        ? (__mmask16)0
           : N - n >= 16 ? (__mmask16)0xffff
                         : (__mmask16)((1u << (N - n)) - 1u);
}

/* A 6 x 64 tile's first RT rows (+ bias) to out, columns past N masked off. */
MB_INLINE void mm_tile_store(float *out, __m512 acc[6][4], const float *bias, size_t N, size_t t0,
                             size_t n0, int RT) {
    for (int j = 0; j < 4; j++) {
        size_t n = n0 + 16 * (size_t)j;
        __mmask16 m = mm_cols_mask(N, n);
        if (!m) break;
        __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + n) : _mm512_setzero_ps();
        for (int i = 0; i < RT; i++)
            _mm512_mask_storeu_ps(out + (t0 + i) * N + n, m, _mm512_add_ps(acc[i][j], bv));
    }
}

/* The gated MLP's epilogue (cv_cpu_gate_up_packed): acc is the up projection's tile and gate
 * already holds the gate projection's tile at the same place (stored a moment ago, still in L1);
 * gate = silu(gate) * up, the arithmetic of cpu_silu_mul's vector lanes. */
MB_INLINE void mm_tile_glu(float *gate, __m512 acc[6][4], size_t N, size_t t0, size_t n0, int RT) {
    for (int j = 0; j < 4; j++) {
        size_t n = n0 + 16 * (size_t)j;
        __mmask16 m = mm_cols_mask(N, n);
        if (!m) break;
        for (int i = 0; i < RT; i++) {
            float *g = gate + (t0 + i) * N + n;
            __m512 gv = _mm512_maskz_loadu_ps(m, g);
            _mm512_mask_storeu_ps(g, m, _mm512_mul_ps(cv_mul_sigmoid512(gv, gv), acc[i][j]));
        }
    }
}

/* The fused LM head (cv_cpu_head_logprob): instead of storing a tile, fold it into each row's
 * running log-sum-exp. Every thread keeps, per row, 16 lanes of running max (fp32) and of the sum
 * of e^(l - max) (double), so a tile costs one max, one rescale and four exps per row and no
 * horizontal reduction; the lanes and threads are merged once at the end. The max starts at
 * -FLT_MAX, not -inf, so that a lane that has only seen -inf logits rescales by 0, not by NaN. */
typedef cv_lse_view mm_lse; /* (cpu_internal.h) one thread's 16 lanes per row */

MB_INLINE void mm_tile_lse(const mm_lse *L, __m512 acc[6][4], size_t N, size_t t0, size_t n0,
                           int RT) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY), pinf = _mm512_set1_ps(INFINITY);
    for (int i = 0; i < RT; i++) {
        size_t t = t0 + (size_t)i;
        __m512 v[4], mo = _mm512_load_ps(L->m + t * 16), mx = mo;
        __mmask16 bm = 0;
        for (int j = 0; j < 4; j++) {
            v[j] = _mm512_mask_mov_ps(ninf, mm_cols_mask(N, n0 + 16 * (size_t)j), acc[i][j]);
            bm |= _mm512_cmp_ps_mask(v[j], v[j], _CMP_UNORD_Q) |
                  _mm512_cmp_ps_mask(v[j], pinf, _CMP_EQ_OQ);
            mx = _mm512_max_ps(mx, v[j]);
        }
        if (bm) L->bad[t] = 1;
        int64_t y = L->y[t];
        if (y >= (int64_t)n0 && y < (int64_t)n0 + 64 && y < (int64_t)N) {
            float row[64];
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(row + 16 * j, acc[i][j]);
            L->tgt[t] = row[y - (int64_t)n0];
        }
        __m512 sc = cv_exp512(_mm512_sub_ps(mo, mx)), z = _mm512_setzero_ps();
        for (int j = 0; j < 4; j++) z = _mm512_add_ps(z, cv_exp512(_mm512_sub_ps(v[j], mx)));
        double *s = L->s + t * 16;
        _mm512_store_pd(s, _mm512_fmadd_pd(_mm512_load_pd(s),
                                           _mm512_cvtps_pd(_mm512_castps512_ps256(sc)),
                                           _mm512_cvtps_pd(_mm512_castps512_ps256(z))));
        _mm512_store_pd(s + 8, _mm512_fmadd_pd(_mm512_load_pd(s + 8),
                                               _mm512_cvtps_pd(_mm512_extractf32x8_ps(sc, 1)),
                                               _mm512_cvtps_pd(_mm512_extractf32x8_ps(z, 1))));
        _mm512_store_ps(L->m + t * 16, mx);
    }
}

/* What a packed call does with its finished tiles: store them (+ bias), fold them into the
 * rows' log-sum-exp (the fused LM head), or store the gate's and combine the up's with it. */
typedef enum { MM_STORE, MM_LSE, MM_GLU } mm_mode;

/* One work item's view of a packed call: the rows of x (fp32, and as bf16 pairs in bf mode), the
 * job whose panel is packed (its out, bias and N) and the panel(s). */
typedef struct {
    int bf;
    mm_mode mode;
    const float *x;
    const uint32_t *x2;
    size_t K, kw, N;
    float *out;
    const float *bias;
    const mm_lse *lse;
    const void *panel, *panel2; /* MM_GLU: the gate's panel and the up's, same columns */
} mm_ctx;

/* A finished tile of the panel (up: the MM_GLU call's second panel). */
MB_INLINE void mm_tile_done(const mm_ctx *c, __m512 acc[6][4], size_t t0, size_t n0, int RT,
                            int up) {
    if (c->mode == MM_LSE)
        mm_tile_lse(c->lse, acc, c->N, t0, n0, RT);
    else if (up)
        mm_tile_glu(c->out, acc, c->N, t0, n0, RT);
    else
        mm_tile_store(c->out, acc, c->bias, c->N, t0, n0, RT);
}

MB_INLINE void mmp_tile(const mm_ctx *c, const float *panel, size_t t0, size_t n0, int RT, int up) {
    __m512 acc[6][4];
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    const size_t K = c->K;
    const float *xr = c->x + t0 * K;
    for (size_t k = 0; k < K; k++) {
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_load_ps(panel + k * 64 + 16 * j);
        for (int i = 0; i < RT; i++) {
            __m512 xb = _mm512_set1_ps(xr[i * K + k]);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(xb, wv[j], acc[i][j]);
        }
    }
    mm_tile_done(c, acc, t0, n0, RT, up);
}

/* r[0..15] (16 x 16 32-bit words) transposed in registers: r[i] becomes word i of every input
 * row. Pairs of rows interleaved by words, then by pairs of words, then 128-bit lanes twice
 * (after the second step, lane L of u[j] holds word 4L + j of four consecutive rows). */
MB_INLINE void mm_transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) { /* rows g..g+3: u[g + j] = word 4L + j per lane L */
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i x0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88);      /* lanes 0, 2 of rows 0-7 */
        __m512i x1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xdd);      /* lanes 1, 3 */
        __m512i y0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88); /* rows 8-15 */
        __m512i y1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xdd);
        r[j] = _mm512_shuffle_i32x4(x0, y0, 0x88);      /* word j: lane 0 of all four groups */
        r[4 + j] = _mm512_shuffle_i32x4(x1, y1, 0x88);  /* word 4 + j */
        r[8 + j] = _mm512_shuffle_i32x4(x0, y0, 0xdd);  /* word 8 + j */
        r[12 + j] = _mm512_shuffle_i32x4(x1, y1, 0xdd); /* word 12 + j */
    }
}

/* Pack panel p (64 output columns from row p * 64) of w, widened to fp32, as (K, 64) into dst:
 * 16 rows x 16 k at a time, loaded a row at a time, transposed in registers and stored a k at a
 * time (in blocks of 16 k, so the block's 16 panel rows, 4 KiB, stay in L1 while its 64 weight
 * rows are read; a scalar element-at-a-time copy was 12% of a bf16 prefill's samples). */
static void mmp_pack(float *dst, const cv_weight *w, size_t p, size_t N, size_t K) {
    const cv_dtype dt = w->dtype;
    const size_t es = cv_dtype_size(dt);
    for (size_t k0 = 0; k0 < K; k0 += 16) {
        size_t nk = K - k0 < 16 ? K - k0 : 16;
        __mmask16 km = (__mmask16)((1u << nk) - 1u);
        for (size_t c0 = 0; c0 < 64; c0 += 16) {
            __m512i r[16];
            for (size_t c = 0; c < 16; c++) {
                size_t n = p * 64 + c0 + c;
                r[c] = n < N ? _mm512_castps_si512(
                                   cv_load16_mask((const char *)w->data + n * K * es, dt, k0, km))
                             : _mm512_setzero_si512();
            }
            mm_transpose16(r);
            for (size_t i = 0; i < nk; i++)
                _mm512_store_si512((void *)(dst + (k0 + i) * 64 + c0), r[i]);
        }
    }
}

#ifdef __AVX512BF16__
/* ---- bf16 prefill (cv_weight.prefill_bf16, model.prefill_dtype bfloat16) --------------------
 * The same outer-product tiles on the BF16 dot-product instruction: vdpbf16ps multiplies pairs
 * of bf16 (two consecutive k) and adds both products to an fp32 lane, twice the work of an fp32
 * FMA per instruction. A product of two bf16 is exact in fp32, so the only rounding is of x and W
 * to bf16 (nearest even) and the fp32 sums. Panels hold 64 output columns as (K/2, 64, 2) bf16:
 * per k pair, four vectors of 16 columns x 2 k; a row of x is (K/2) 32-bit pairs, broadcast. */
MB_INLINE void mmb_tile(const mm_ctx *c, const uint16_t *panel, size_t t0, size_t n0, int RT,
                        int up) {
    __m512 acc[6][4];
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    const size_t kw = c->kw;
    const uint32_t *xr = c->x2 + t0 * kw;
    for (size_t kp = 0; kp < kw; kp++) {
        __m512bh wv[4];
        for (int j = 0; j < 4; j++)
            wv[j] = (__m512bh)_mm512_load_si512((const void *)(panel + kp * 128 + 32 * j));
        for (int i = 0; i < RT; i++) {
            __m512bh xb = (__m512bh)_mm512_set1_epi32((int)xr[i * kw + kp]);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xb, wv[j]);
        }
    }
    mm_tile_done(c, acc, t0, n0, RT, up);
}

/* 32 elements of a row from element k (n of them, the rest 0) as bf16, rounded to nearest even */
MB_INLINE __m512i mmb_load32(const void *row, cv_dtype dt, size_t k, size_t n) {
    __mmask16 lo = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
    __mmask16 hi = n >= 32 ? (__mmask16)0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1u) : 0;
    if (dt == CV_DT_BF16) {
        __mmask32 m = n >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << n) - 1u);
        return _mm512_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    }
    __m512 a = cv_load16_mask(row, dt, k, lo), c = cv_load16_mask(row, dt, k + 16, hi);
    return (__m512i)_mm512_cvtne2ps_pbh(c, a); /* second operand -> low half */
}

/* Pack panel p (64 output columns from row p * 64) of w as (kw, 64) bf16 pairs into dst: 16
 * rows x 16 pairs (one 64-byte stretch of each row) transposed in registers (mm_transpose16) and
 * stored a pair at a time. */
static void mmb_pack(uint32_t *dst, const cv_weight *w, size_t p, size_t N, size_t K, size_t kw) {
    const cv_dtype dt = w->dtype;
    const size_t es = cv_dtype_size(dt);
    for (size_t k0 = 0; k0 < 2 * kw; k0 += 32) {
        size_t e = 2 * kw - k0 >= 32 ? 16 : (2 * kw - k0) / 2;
        for (size_t c0 = 0; c0 < 64; c0 += 16) {
            __m512i r[16];
            for (size_t c = 0; c < 16; c++) {
                size_t n = p * 64 + c0 + c;
                r[c] = n < N ? mmb_load32((const char *)w->data + n * K * es, dt, k0, K - k0)
                             : _mm512_setzero_si512();
            }
            mm_transpose16(r);
            for (size_t i = 0; i < e; i++)
                _mm512_store_si512((void *)(dst + (k0 / 2 + i) * 64 + c0), r[i]);
        }
    }
}

#endif

/* One panel's tile of RT rows from row t: fp32 or bf16 panels. */
MB_INLINE void mm_kernel(const mm_ctx *c, const void *panel, size_t t, size_t n0, int RT, int up) {
#ifdef __AVX512BF16__
    if (c->bf) {
        mmb_tile(c, panel, t, n0, RT, up);
        return;
    }
#endif
    mmp_tile(c, panel, t, n0, RT, up);
}

/* A tile of RT rows from row t against the item's panel; MM_GLU: the gate's tile, then the up's
 * over the same rows and columns (its epilogue reads the gate's back while it is in L1). */
MB_INLINE void mm_panel_tile(const mm_ctx *c, size_t t, size_t n0, int RT) {
    mm_kernel(c, c->panel, t, n0, RT, 0);
    if (c->mode == MM_GLU) mm_kernel(c, c->panel2, t, n0, RT, 1);
}

/* Rows t0..t1 of x against the item's panel, in tiles of 6 rows, then the 1-5 left (each tile
 * height a constant, so its accumulators stay in registers). */
MB_INLINE void mm_panel_rows(const mm_ctx *c, size_t t0, size_t t1, size_t n0) {
    size_t t = t0;
    for (; t + 6 <= t1; t += 6) mm_panel_tile(c, t, n0, 6);
    switch (t1 > t ? t1 - t : 0) {
    case 5:
        mm_panel_tile(c, t, n0, 5);
        break;
    case 4:
        mm_panel_tile(c, t, n0, 4);
        break;
    case 3:
        mm_panel_tile(c, t, n0, 3);
        break;
    case 2:
        mm_panel_tile(c, t, n0, 2);
        break;
    case 1:
        mm_panel_tile(c, t, n0, 1);
        break;
    default:
        break;
    }
}

static void mm_pack(int bf, void *dst, const cv_weight *w, size_t p, size_t N, size_t K,
                    size_t kw) {
#ifdef __AVX512BF16__
    if (bf) {
        mmb_pack(dst, w, p, N, K, kw);
        return;
    }
#endif
    (void)bf, (void)kw;
    mmp_pack(dst, w, p, N, K);
}

/* One product of a packed call: out (T, w->rows) = x . w^T + bias. */
typedef struct {
    const cv_weight *w;
    float *out;
    const float *bias;
} mm_job;

/* Row blocks per panel: few panels (small N) are split so that every thread has work (at least 4
 * items each, blocks of at least 48 rows), and the count is raised (up to 3 more) until the items
 * divide evenly among the threads: the items are equal, so 9 panels on 2 threads would leave one
 * thread idle for a tenth of the call (a block re-packs its panel, 1/48 of its work at most). */
static size_t mm_row_blocks(size_t np, size_t nth, size_t T) {
    size_t most = (T + 47) / 48, lo = np >= 4 * nth ? 1 : (4 * nth + np - 1) / np, best = 0;
    if (lo > most) lo = most;
    if (lo < 1) lo = 1;
    double best_eff = -1.0;
    for (size_t r = lo; r <= most && r < lo + 4; r++) {
        size_t items = np * r, rounds = (items + nth - 1) / nth;
        double eff = (double)items / (double)(rounds * nth);
        if (eff > best_eff + 1e-9) best_eff = eff, best = r;
        if (items % nth == 0) break;
    }
    return best ? best : lo;
}

/* The packed products of one x (T, K): every job's out = x . W^T + bias through packed panels
 * (MM_STORE), the first job's folded into lse (MM_LSE), or jobs[0] = gate and jobs[1] = up with
 * gate = silu(gate) * up (MM_GLU; their panels packed side by side). bf: the bf16 panels
 * (cv_weight.prefill_bf16), x rounded once per call into pairs. A work item is (panel of a job,
 * row block): it packs its panel into the thread's own buffer (it stays in L2) and runs its rows
 * against it, so the panels never go out to memory and back, and the scratch is one panel per
 * thread whatever N (a vocabulary-sized head included). The items of all jobs share one parallel
 * region and one schedule. Every tile's arithmetic is the same whatever the jobs, blocks or
 * threads, so the results are those of one call per product. Returns 0 when the scratch cannot
 * be had (the caller falls back). */
static int matmul_packed(cv_backend *b, int bf, const mm_job *jobs, int nj, mm_mode mode,
                         const cv_head_lse *lse, const int32_t *y, const float *x, size_t K,
                         size_t T) {
    size_t first[4] = {0}; /* jobs' first global panel; MM_GLU: one panel (pair) per column block */
    int nseq = mode == MM_GLU ? 1 : nj;
    for (int j = 0; j < nseq; j++) first[j + 1] = first[j] + ((size_t)jobs[j].w->rows + 63) / 64;
    size_t np = first[nseq], kw = (K + 1) / 2; /* bf16: k pairs; an odd K ends with a zero */
    size_t pan = bf ? kw * 64 : K * 64;        /* 32-bit words per panel */
    size_t per = mode == MM_GLU ? 2 * pan : pan;
    size_t nth = (size_t)omp_get_max_threads();
    float *fl = cv_cpu_scratch_flt(b, nth * per + (bf ? T * kw : 0) + 16);
    if (!fl) return 0;
    float *P = (float *)(((uintptr_t)fl + 63) & ~(uintptr_t)63);
    uint32_t *X = (uint32_t *)(P + nth * per);
    size_t nrb = mm_row_blocks(np, nth, T);
    size_t tb = ((T + nrb - 1) / nrb + 5) / 6 * 6; /* whole 6-row tiles but the last */
    nrb = (T + tb - 1) / tb;
#pragma omp parallel
    {
#ifdef __AVX512BF16__
        if (bf) { /* x rounded once per call: row t, pair kp = (x[2kp] low, x[2kp+1] high) */
#pragma omp for schedule(static)
            for (size_t t = 0; t < T; t++)
                for (size_t k = 0; k < K; k += 32)
                    _mm512_mask_storeu_epi32(
                        X + t * kw + k / 2,
                        (__mmask16)(K - k >= 32 ? 0xffff : (1u << (K - k + 1) / 2) - 1u),
                        mmb_load32(x + t * K, CV_DT_F32, k, K - k));
        }
#endif
        const size_t me = (size_t)omp_get_thread_num();
        float *panel = P + me * per;
        mm_lse mine; /* lse: this thread's own running sums */
        if (lse) mine = cv_head_lse_view(lse, y, me);
        mm_ctx c = {.bf = bf,
                    .mode = mode,
                    .x = x,
                    .x2 = X,
                    .K = K,
                    .kw = kw,
                    .lse = lse ? &mine : NULL,
                    .panel = panel,
                    .panel2 = panel + pan};
        size_t packed = (size_t)-1;
#pragma omp for schedule(dynamic, 1)
        for (size_t it = 0; it < np * nrb; it++) {
            size_t g = it / nrb, t0 = (it % nrb) * tb;
            size_t t1 = t0 + tb < T ? t0 + tb : T;
            int j = 0;
            while (g >= first[j + 1]) j++;
            size_t p = g - first[j];
            c.N = (size_t)jobs[j].w->rows;
            c.out = jobs[j].out;
            c.bias = jobs[j].bias;
            if (packed != g) {
                mm_pack(bf, panel, jobs[j].w, p, c.N, K, kw);
                if (mode == MM_GLU) mm_pack(bf, panel + pan, jobs[1].w, p, c.N, K, kw);
                packed = g;
            }
            mm_panel_rows(&c, t0, t1, p * 64);
        }
    }
    return 1;
}

/* Whether the packed path takes this weight at T rows, and with which panels (*bf). */
static int mm_packs(const cv_backend *b, const cv_weight *w, int T, int *bf) {
    *bf = 0;
#ifdef __AVX512BF16__
    *bf = w->prefill_bf16 && T >= 2;
#endif
    return b && w->format == CV_WFMT_DENSE && (T >= MM_PACK_T || *bf);
}

/* BF16 decode: a 64-byte load holds 32 weights; bf16 is the top half of an fp32, so a shift
 * (even elements) and a mask (odd elements) widen them in place, without the cross-lane
 * conversion. The activation row is split once into its even and odd elements to match. */
static inline float mm_row_bf16_eo(const float *xe, const float *xo, const uint16_t *wr, size_t K) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 e0 = _mm512_setzero_ps(), o0 = e0, e1 = e0, o1 = e0;
    size_t k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512i w0 = _mm512_loadu_si512((const void *)(wr + k));
        __m512i w1 = _mm512_loadu_si512((const void *)(wr + k + 32));
        e0 = _mm512_fmadd_ps(_mm512_loadu_ps(xe + k / 2),
                             _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), e0);
        o0 = _mm512_fmadd_ps(_mm512_loadu_ps(xo + k / 2),
                             _mm512_castsi512_ps(_mm512_and_si512(w0, hi)), o0);
        e1 = _mm512_fmadd_ps(_mm512_loadu_ps(xe + k / 2 + 16),
                             _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)), e1);
        o1 = _mm512_fmadd_ps(_mm512_loadu_ps(xo + k / 2 + 16),
                             _mm512_castsi512_ps(_mm512_and_si512(w1, hi)), o1);
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(e0, o0), _mm512_add_ps(e1, o1)));
    for (; k + 1 < K; k += 2)
        acc += xe[k / 2] * cv_bf16_to_f32(wr[k]) + xo[k / 2] * cv_bf16_to_f32(wr[k + 1]);
    if (k < K) acc += xe[k / 2] * cv_bf16_to_f32(wr[k]); /* odd K: the last even element */
    return acc;
}

static void matmul_bf16_decode(cv_backend *b, float *out, const float *x, const uint16_t *W,
                               const float *bias, size_t N, size_t K) {
    float *xe = cv_cpu_scratch_flt(b, K + 2), *xo = xe ? xe + (K + 1) / 2 + 1 : NULL;
    if (!xe) { /* no scratch: the generic kernel */
        matmul_avx512_bf16(out, x, W, bias, N, K, 1);
        return;
    }
    for (size_t k = 0; k < K; k++) (k % 2 ? xo : xe)[k / 2] = x[k];
#pragma omp parallel for schedule(static) if (N * K > 32768)
    for (size_t n = 0; n < N; n++)
        out[n] = mm_row_bf16_eo(xe, xo, W + n * K, K) + (bias ? bias[n] : 0.0f);
}

static void matmul_dense_avx512(cv_backend *b, float *out, const float *x, const cv_weight *w,
                                const float *bias, int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    /* long prefill: packed panels; the bf16 panels at any T > 1 (decode stays exact) */
    int bf;
    mm_job job = {w, out, bias};
    if (mm_packs(b, w, T, &bf) &&
        matmul_packed(b, bf, &job, 1, MM_STORE, NULL, NULL, x, K, (size_t)T))
        return; /* else no scratch: the unpacked tiles below */
    switch (w->dtype) {
    case CV_DT_BF16:
        if (T == 1 && K <= 4096 && b)
            matmul_bf16_decode(b, out, x, w->data, bias, N, K);
        else
            matmul_avx512_bf16(out, x, w->data, bias, N, K, (size_t)T);
        break;
    case CV_DT_F16:
        matmul_avx512_f16(out, x, w->data, bias, N, K, (size_t)T);
        break;
    default:
        matmul_avx512_f32(out, x, w->data, bias, N, K, (size_t)T);
        break;
    }
}
#endif

/* out[t] = ln softmax(x[t] . W^T)[targets[t]] for t < T (the prompt surprisals' LM head): the
 * packed matmul with its tiles folded into each row's log-sum-exp as they are computed, so no
 * (T x V) logits are ever stored (mm_tile_lse). The products are the matmul's own (bf16 panels
 * when the weight is marked for the bf16 prefill), the exps fp32 (cv_exp512, as logprob_accum)
 * and the sums double. A NaN or +inf logit, or a target outside [0, V), gives NaN. Returns 0
 * (nothing written) where it does not apply: a quantized weight, a build without AVX-512, fewer
 * rows than CV_HEAD_FUSED_T (bf16 panels) or MM_PACK_T (fp32), or no memory; the caller then
 * takes the sliced path. */
int cv_cpu_head_logprob(cv_backend *b, double *out, const float *x, const cv_weight *w, int T,
                        const int32_t *targets) {
#ifdef CV_CPU_AVX512
    int bf = 0;
#ifdef __AVX512BF16__
    bf = w->prefill_bf16;
#endif
    /* where the plain matmul would not pack either, packing the whole head costs more than the
     * stored logits it saves (bench_head) */
    if (!b || w->format != CV_WFMT_DENSE || T < (bf ? CV_HEAD_FUSED_T : MM_PACK_T)) return 0;
    size_t K = (size_t)w->cols, nt = (size_t)T;
    cv_head_lse h;
    int ok = cv_head_lse_init(&h, nt, (size_t)omp_get_max_threads(), 16);
    if (ok) {
        mm_job job = {w, NULL, NULL};
        ok = matmul_packed(b, bf, &job, 1, MM_LSE, &h, targets, x, K, nt);
    }
    return cv_head_lse_finish(&h, ok, out, targets, (size_t)w->rows);
#else
    (void)b, (void)out, (void)x, (void)w, (void)T, (void)targets;
    return 0;
#endif
}

int cv_head_lse_init(cv_head_lse *h, size_t nt, size_t nth, int lanes) {
    size_t n = (size_t)lanes * nth * nt;
    *h = (cv_head_lse){.m = aligned_alloc(64, (sizeof(float) * n + 63) & ~(size_t)63),
                       .s = aligned_alloc(64, sizeof(double) * n),
                       .bad = calloc(nth * nt, 1),
                       .tgt = malloc(sizeof(float) * nt),
                       .nt = nt,
                       .nth = nth,
                       .lanes = lanes};
    if (!h->m || !h->s || !h->bad || !h->tgt) return 0;
    for (size_t i = 0; i < n; i++) h->m[i] = -FLT_MAX, h->s[i] = 0.0;
    for (size_t t = 0; t < nt; t++) h->tgt[t] = NAN;
    return 1;
}

int cv_head_lse_finish(cv_head_lse *h, int ok, double *out, const int32_t *targets, size_t N) {
    const size_t nt = h->nt, nth = h->nth;
    const int lanes = h->lanes;
    if (ok) {
#pragma omp parallel for schedule(static)
        for (size_t t = 0; t < nt; t++) {
            double mx = -INFINITY, z = 0.0;
            int any_bad = 0;
            for (size_t th = 0; th < nth; th++) {
                any_bad |= h->bad[th * nt + t];
                for (int l = 0; l < lanes; l++)
                    mx = fmax(mx, (double)h->m[(th * nt + t) * lanes + l]);
            }
            for (size_t th = 0; th < nth; th++)
                for (int l = 0; l < lanes; l++) {
                    size_t i = (th * nt + t) * lanes + (size_t)l;
                    z += h->s[i] * exp((double)h->m[i] - mx);
                }
            int y = targets[t];
            out[t] = any_bad || y < 0 || (size_t)y >= N ? NAN : (double)h->tgt[t] - mx - log(z);
        }
    }
    free(h->m);
    free(h->s);
    free(h->bad);
    free(h->tgt);
    return ok;
}

/* Products of one x (T, K) by n (<= 3) dense weights of K columns, as one packed pass when every
 * weight takes the packed path with the same panels: one parallel region, x rounded once, the
 * panels of all products in one balanced schedule. Returns 0 (nothing written) otherwise. The
 * results are those of n matmul calls (the same tiles). */
int cv_cpu_matmul_packed_n(cv_backend *b, float *const *out, const float *x,
                           const cv_weight *const *w, const float *const *bias, int n, int T) {
#ifdef CV_CPU_AVX512
    mm_job jobs[3];
    int bf0 = 0;
    if (n < 1 || n > 3) return 0;
    for (int i = 0; i < n; i++) {
        int bf;
        if (!mm_packs(b, w[i], T, &bf) || w[i]->cols != w[0]->cols || (i && bf != bf0)) return 0;
        bf0 = bf;
        jobs[i] = (mm_job){w[i], out[i], bias ? bias[i] : NULL};
    }
    return matmul_packed(b, bf0, jobs, n, MM_STORE, NULL, NULL, x, (size_t)w[0]->cols, (size_t)T);
#else
    (void)b, (void)out, (void)x, (void)w, (void)bias, (void)n, (void)T;
    return 0;
#endif
}

/* gate (T, N) = silu(x . Wg^T) * (x . Wu^T) as one packed pass (backend.h gate_up_silu): each item
 * packs the gate's and the up's panel of the same 64 columns, and each 6-row tile of the up
 * product is combined with the gate's tile just stored (mm_tile_glu), so the up product is never
 * stored and read back. Returns 0 (nothing written) where the packed path does not take both
 * weights alike. */
int cv_cpu_gate_up_packed(cv_backend *b, float *gate, const float *x, const cv_weight *wg,
                          const cv_weight *wu, int T) {
#ifdef CV_CPU_AVX512
    int bg, bu;
    if (!mm_packs(b, wg, T, &bg) || !mm_packs(b, wu, T, &bu) || bg != bu || wg->rows != wu->rows ||
        wg->cols != wu->cols)
        return 0;
    mm_job jobs[2] = {{wg, gate, NULL}, {wu, gate, NULL}};
    return matmul_packed(b, bg, jobs, 2, MM_GLU, NULL, NULL, x, (size_t)wg->cols, (size_t)T);
#else
    (void)b, (void)gate, (void)x, (void)wg, (void)wu, (void)T;
    return 0;
#endif
}

/* Portable path: one output row block per thread, fp32 accumulation the compiler vectorizes. */
static void matmul_dense_portable(float *out, const float *x, const cv_weight *w, const float *bias,
                                  int T) {
    size_t N = (size_t)w->rows, K = (size_t)w->cols, es = cv_dtype_size(w->dtype);
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const void *row = (const char *)w->data + n * K * es;
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * K;
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++) acc += xr[k] * cv_elem_f32(row, w->dtype, k);
            out[(size_t)t * N + n] = acc + (bias ? bias[n] : 0.0f);
        }
    }
}

void cv_cpu_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w, const float *bias,
                   int T) {
    if (w->format != CV_WFMT_DENSE) {
        cv_cpu_matmul_quant(out, x, w, bias, T);
        return;
    }
#ifdef CV_CPU_AVX512
    matmul_dense_avx512(b, out, x, w, bias, T);
#elif defined(CV_CPU_AVX2)
    cv_cpu_matmul_avx2(b, out, x, w, bias, T);
#else
    matmul_dense_portable(out, x, w, bias, T);
#endif
}

/* The 4 x 4 dot-product AVX-512 kernel at any T, never packed (the bench ladder's previous
 * version). */
void cv_cpu_matmul_unblocked(float *out, const float *x, const cv_weight *w, const float *bias,
                             int T) {
#ifdef CV_CPU_AVX512
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    if (w->format == CV_WFMT_DENSE) {
        if (w->dtype == CV_DT_BF16)
            matmul_avx512_bf16(out, x, w->data, bias, N, K, (size_t)T);
        else if (w->dtype == CV_DT_F16)
            matmul_avx512_f16(out, x, w->data, bias, N, K, (size_t)T);
        else
            matmul_avx512_f32(out, x, w->data, bias, N, K, (size_t)T);
        return;
    }
#endif
    cv_cpu_matmul(NULL, out, x, w, bias, T);
}

/* Keep the portable path compiled (and tested through the naive comparison) on AVX-512 hosts. */
void cv_cpu_matmul_portable(float *out, const float *x, const cv_weight *w, const float *bias,
                            int T) {
    matmul_dense_portable(out, x, w, bias, T);
}
