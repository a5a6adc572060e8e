/* avx512emu.h — the AVX-512 intrinsics the CPU kernels use, written in C and AVX2, so that the
 * AVX-512 kernels (cpu_matmul.c, cpu_attention.c, cpu_backend.c, stats.c, cpu_quant_matmul.c)
 * can run their tests on a CPU without AVX-512 (`make test-avx512emu`; CI's machines have none).
 *
 * How it is used: the build defines CV_AVX512_EMU and the __AVX512*__ feature macros on the
 * command line, so the sources compile their AVX-512 branches; where those branches include
 * <immintrin.h> they include this file instead. It includes the real <immintrin.h> with the
 * feature macros removed (so GCC declares its intrinsics as usual, for the AVX2 ones and the
 * vector types), puts the macros back, and then renames every AVX-512 intrinsic the kernels call
 * to a function below.
 *
 * Each function follows the instruction's definition in Intel's SDM, lane by lane, so results are
 * bit-identical to the hardware's for the arithmetic ones (add, mul, FMA, division and
 * conversions round alike, and _mm512_reduce_* sum in GCC's order). Two deliberate extras:
 * masked loads read only the selected elements (the hardware's fault suppression), and the
 * aligned loads and stores abort on an address that is not 64-byte aligned, as the hardware
 * faults. Where the hardware depends on MXCSR (denormals), the default (no FTZ/DAZ) is assumed;
 * the BF16 instructions flush denormals as their definitions say.
 *
 * Speed is not the point: this is for correctness only. A name the kernels start using that is
 * not here calls GCC's real intrinsic and fails at build time ("target specific option
 * mismatch"), so nothing runs unemulated by accident. */
#ifndef CV_AVX512EMU_H
#define CV_AVX512EMU_H

#ifndef CV_AVX512_EMU
#error "avx512emu.h is only for the CV_AVX512_EMU build (make test-avx512emu)"
#endif

/* the feature macros the build defined (make test-avx512emu AVX512EMU_ISA=...), put back after
 * <immintrin.h> */
#ifdef __AVX512F__
#define CVEMU_HAS_F 1
#undef __AVX512F__
#endif
#ifdef __AVX512BW__
#define CVEMU_HAS_BW 1
#undef __AVX512BW__
#endif
#ifdef __AVX512VL__
#define CVEMU_HAS_VL 1
#undef __AVX512VL__
#endif
#ifdef __AVX512DQ__
#define CVEMU_HAS_DQ 1
#undef __AVX512DQ__
#endif
#ifdef __AVX512BF16__
#define CVEMU_HAS_BF16 1
#undef __AVX512BF16__
#endif
#ifdef __AVX512VNNI__
#define CVEMU_HAS_VNNI 1
#undef __AVX512VNNI__
#endif
#include <immintrin.h>
#ifdef CVEMU_HAS_F
#define __AVX512F__ 1
#endif
#ifdef CVEMU_HAS_BW
#define __AVX512BW__ 1
#endif
#ifdef CVEMU_HAS_VL
#define __AVX512VL__ 1
#endif
#ifdef CVEMU_HAS_DQ
#define __AVX512DQ__ 1
#endif
#ifdef CVEMU_HAS_BF16
#define __AVX512BF16__ 1
#endif
#ifdef CVEMU_HAS_VNNI
#define __AVX512VNNI__ 1
#endif

#include <stdint.h>

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "the AVX-512 emulation is written in AVX2 + FMA + F16C"
#endif

typedef union {
    __m512 v;
    __m512i i;
    __m512d d;
    __m512bh bh;
    float f[16];
    double g[8];
    int32_t s[16];
    uint32_t u[16];
    int64_t q[8];
    uint16_t h[32];
    int8_t sb[64];
    uint8_t b[64];
    __m256 f8[2];
    __m256i i8[2];
    __m256d d4[2];
    __m128 f4[4];
    __m128i i4[4];
} cvemu_v;

#define CVEMU      static inline __attribute__((always_inline, unused))
#define CVEMU_F(x) ((cvemu_v){.v = (x)})
#define CVEMU_I(x) ((cvemu_v){.i = (x)})
#define CVEMU_D(x) ((cvemu_v){.d = (x)})

static __attribute__((noinline, noreturn, cold, unused)) void cvemu_misaligned(const void *p) {
    (void)p;
    __builtin_trap(); /* the hardware raises #GP on a misaligned aligned load or store */
}
CVEMU void cvemu_check64(const void *p) {
    if ((uintptr_t)p & 63u) cvemu_misaligned(p);
}

/* ---- set, load, store ------------------------------------------------------------------- */
#undef _mm512_setzero_ps
#define _mm512_setzero_ps cvemu_setzero_ps
CVEMU __m512 cvemu_setzero_ps(void) {
    return (__m512){0};
}
#undef _mm512_setzero_pd
#define _mm512_setzero_pd cvemu_setzero_pd
CVEMU __m512d cvemu_setzero_pd(void) {
    return (__m512d){0};
}
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 cvemu_setzero_si512
CVEMU __m512i cvemu_setzero_si512(void) {
    return (__m512i){0};
}
#undef _mm512_set1_ps
#define _mm512_set1_ps cvemu_set1_ps
CVEMU __m512 cvemu_set1_ps(float a) {
    cvemu_v r;
    for (int l = 0; l < 16; l++) r.f[l] = a;
    return r.v;
}
#undef _mm512_set1_pd
#define _mm512_set1_pd cvemu_set1_pd
CVEMU __m512d cvemu_set1_pd(double a) {
    cvemu_v r;
    for (int l = 0; l < 8; l++) r.g[l] = a;
    return r.d;
}
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 cvemu_set1_epi32
CVEMU __m512i cvemu_set1_epi32(int a) {
    cvemu_v r;
    for (int l = 0; l < 16; l++) r.s[l] = a;
    return r.i;
}
#undef _mm512_setr_epi32
#define _mm512_setr_epi32 cvemu_setr_epi32
CVEMU __m512i cvemu_setr_epi32(int e0, int e1, int e2, int e3, int e4, int e5, int e6, int e7,
                               int e8, int e9, int e10, int e11, int e12, int e13, int e14,
                               int e15) {
    cvemu_v r = {.s = {e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15}};
    return r.i;
}

#undef _mm512_loadu_ps
#define _mm512_loadu_ps cvemu_loadu_ps
CVEMU __m512 cvemu_loadu_ps(const void *p) {
    cvemu_v r;
    __builtin_memcpy(&r, p, 64);
    return r.v;
}
#undef _mm512_load_ps
#define _mm512_load_ps cvemu_load_ps
CVEMU __m512 cvemu_load_ps(const void *p) {
    cvemu_check64(p);
    return cvemu_loadu_ps(p);
}
#undef _mm512_load_pd
#define _mm512_load_pd cvemu_load_pd
CVEMU __m512d cvemu_load_pd(const void *p) {
    cvemu_check64(p);
    return CVEMU_F(cvemu_loadu_ps(p)).d;
}
#undef _mm512_loadu_si512
#define _mm512_loadu_si512 cvemu_loadu_si512
CVEMU __m512i cvemu_loadu_si512(const void *p) {
    return CVEMU_F(cvemu_loadu_ps(p)).i;
}
#undef _mm512_load_si512
#define _mm512_load_si512 cvemu_load_si512
CVEMU __m512i cvemu_load_si512(const void *p) {
    cvemu_check64(p);
    return cvemu_loadu_si512(p);
}
#undef _mm512_storeu_ps
#define _mm512_storeu_ps cvemu_storeu_ps
CVEMU void cvemu_storeu_ps(void *p, __m512 a) {
    __builtin_memcpy(p, &a, 64);
}
#undef _mm512_store_ps
#define _mm512_store_ps cvemu_store_ps
CVEMU void cvemu_store_ps(void *p, __m512 a) {
    cvemu_check64(p);
    __builtin_memcpy(p, &a, 64);
}
#undef _mm512_store_pd
#define _mm512_store_pd cvemu_store_pd
CVEMU void cvemu_store_pd(void *p, __m512d a) {
    cvemu_check64(p);
    __builtin_memcpy(p, &a, 64);
}
#undef _mm512_storeu_si512
#define _mm512_storeu_si512 cvemu_storeu_si512
CVEMU void cvemu_storeu_si512(void *p, __m512i a) {
    __builtin_memcpy(p, &a, 64);
}
#undef _mm512_store_si512
#define _mm512_store_si512 cvemu_store_si512
CVEMU void cvemu_store_si512(void *p, __m512i a) {
    cvemu_check64(p);
    __builtin_memcpy(p, &a, 64);
}

/* Masked loads and stores touch only the selected elements (fault suppression). */
#define CVEMU_MASKZ_LOAD(name, ret, field, elem, n, mask_t)                                        \
    CVEMU ret name(mask_t k, const void *p) {                                                      \
        cvemu_v r = {.i = {0}};                                                                    \
        const elem *e = (const elem *)p;                                                           \
        for (int l = 0; l < (n); l++)                                                              \
            if ((k >> l) & 1) r.field[l] = e[l];                                                   \
        return *(ret *)&r;                                                                         \
    }
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps cvemu_maskz_loadu_ps
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_ps, __m512, f, float, 16, __mmask16)
#undef _mm512_maskz_loadu_pd
#define _mm512_maskz_loadu_pd cvemu_maskz_loadu_pd
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_pd, __m512d, g, double, 8, __mmask8)
#undef _mm512_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi16 cvemu_maskz_loadu_epi16
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_epi16, __m512i, h, uint16_t, 32, __mmask32)
#undef _mm512_maskz_loadu_epi8
#define _mm512_maskz_loadu_epi8 cvemu_maskz_loadu_epi8
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_epi8, __m512i, b, uint8_t, 64, __mmask64)
#undef _mm256_maskz_loadu_ps
#define _mm256_maskz_loadu_ps cvemu_maskz_loadu_ps8
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_ps8, __m256, f, float, 8, __mmask8)
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16 cvemu_maskz_loadu_epi16_256
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_epi16_256, __m256i, h, uint16_t, 16, __mmask16)
#undef _mm_maskz_loadu_epi8
#define _mm_maskz_loadu_epi8 cvemu_maskz_loadu_epi8_128
CVEMU_MASKZ_LOAD(cvemu_maskz_loadu_epi8_128, __m128i, b, uint8_t, 16, __mmask16)

#define CVEMU_MASK_STORE(name, vec, conv, field, elem, n, mask_t)                                  \
    CVEMU void name(void *p, mask_t k, vec a) {                                                    \
        cvemu_v r = conv(a);                                                                       \
        elem *e = (elem *)p;                                                                       \
        for (int l = 0; l < (n); l++)                                                              \
            if ((k >> l) & 1) e[l] = r.field[l];                                                   \
    }
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps cvemu_mask_storeu_ps
CVEMU_MASK_STORE(cvemu_mask_storeu_ps, __m512, CVEMU_F, f, float, 16, __mmask16)
#undef _mm512_mask_storeu_pd
#define _mm512_mask_storeu_pd cvemu_mask_storeu_pd
CVEMU_MASK_STORE(cvemu_mask_storeu_pd, __m512d, CVEMU_D, g, double, 8, __mmask8)
#undef _mm512_mask_storeu_epi32
#define _mm512_mask_storeu_epi32 cvemu_mask_storeu_epi32
CVEMU_MASK_STORE(cvemu_mask_storeu_epi32, __m512i, CVEMU_I, s, int32_t, 16, __mmask16)

/* ---- casts and halves ------------------------------------------------------------------- */
#undef _mm512_castps_si512
#define _mm512_castps_si512 cvemu_castps_si512
CVEMU __m512i cvemu_castps_si512(__m512 a) {
    return CVEMU_F(a).i;
}
#undef _mm512_castsi512_ps
#define _mm512_castsi512_ps cvemu_castsi512_ps
CVEMU __m512 cvemu_castsi512_ps(__m512i a) {
    return CVEMU_I(a).v;
}
#undef _mm512_castps_pd
#define _mm512_castps_pd cvemu_castps_pd
CVEMU __m512d cvemu_castps_pd(__m512 a) {
    return CVEMU_F(a).d;
}
#undef _mm512_castps512_ps256
#define _mm512_castps512_ps256 cvemu_castps512_ps256
CVEMU __m256 cvemu_castps512_ps256(__m512 a) {
    return CVEMU_F(a).f8[0];
}
#undef _mm512_extractf32x8_ps
#define _mm512_extractf32x8_ps cvemu_extractf32x8_ps
CVEMU __m256 cvemu_extractf32x8_ps(__m512 a, int imm) {
    return CVEMU_F(a).f8[imm & 1];
}
#undef _mm512_extractf64x4_pd
#define _mm512_extractf64x4_pd cvemu_extractf64x4_pd
CVEMU __m256d cvemu_extractf64x4_pd(__m512d a, int imm) {
    return CVEMU_D(a).d4[imm & 1];
}

/* ---- fp32 and fp64 arithmetic, on the two 256-bit halves ------------------------------- */
#define CVEMU_BIN(name, vec, conv, field, op)                                                      \
    CVEMU vec name(vec a, vec b) {                                                                 \
        cvemu_v x = conv(a), y = conv(b), r;                                                       \
        r.field[0] = op(x.field[0], y.field[0]);                                                   \
        r.field[1] = op(x.field[1], y.field[1]);                                                   \
        return *(vec *)&r;                                                                         \
    }
#undef _mm512_add_ps
#define _mm512_add_ps cvemu_add_ps
CVEMU_BIN(cvemu_add_ps, __m512, CVEMU_F, f8, _mm256_add_ps)
#undef _mm512_sub_ps
#define _mm512_sub_ps cvemu_sub_ps
CVEMU_BIN(cvemu_sub_ps, __m512, CVEMU_F, f8, _mm256_sub_ps)
#undef _mm512_mul_ps
#define _mm512_mul_ps cvemu_mul_ps
CVEMU_BIN(cvemu_mul_ps, __m512, CVEMU_F, f8, _mm256_mul_ps)
#undef _mm512_div_ps
#define _mm512_div_ps cvemu_div_ps
CVEMU_BIN(cvemu_div_ps, __m512, CVEMU_F, f8, _mm256_div_ps)
/* max: the second operand where either is NaN or both are zeros, as vmaxps and _mm256_max_ps */
#undef _mm512_max_ps
#define _mm512_max_ps cvemu_max_ps
CVEMU_BIN(cvemu_max_ps, __m512, CVEMU_F, f8, _mm256_max_ps)
#undef _mm512_add_pd
#define _mm512_add_pd cvemu_add_pd
CVEMU_BIN(cvemu_add_pd, __m512d, CVEMU_D, d4, _mm256_add_pd)
#undef _mm512_add_epi32
#define _mm512_add_epi32 cvemu_add_epi32
CVEMU_BIN(cvemu_add_epi32, __m512i, CVEMU_I, i8, _mm256_add_epi32)
#undef _mm512_and_si512
#define _mm512_and_si512 cvemu_and_si512
CVEMU_BIN(cvemu_and_si512, __m512i, CVEMU_I, i8, _mm256_and_si256)

#define CVEMU_TERN(name, vec, conv, field, op)                                                     \
    CVEMU vec name(vec a, vec b, vec c) {                                                          \
        cvemu_v x = conv(a), y = conv(b), z = conv(c), r;                                          \
        r.field[0] = op(x.field[0], y.field[0], z.field[0]);                                       \
        r.field[1] = op(x.field[1], y.field[1], z.field[1]);                                       \
        return *(vec *)&r;                                                                         \
    }
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps cvemu_fmadd_ps
CVEMU_TERN(cvemu_fmadd_ps, __m512, CVEMU_F, f8, _mm256_fmadd_ps)
#undef _mm512_fnmadd_ps
#define _mm512_fnmadd_ps cvemu_fnmadd_ps
CVEMU_TERN(cvemu_fnmadd_ps, __m512, CVEMU_F, f8, _mm256_fnmadd_ps)
#undef _mm512_fmadd_pd
#define _mm512_fmadd_pd cvemu_fmadd_pd
CVEMU_TERN(cvemu_fmadd_pd, __m512d, CVEMU_D, d4, _mm256_fmadd_pd)

#undef _mm512_abs_ps
#define _mm512_abs_ps cvemu_abs_ps
CVEMU __m512 cvemu_abs_ps(__m512 a) {
    cvemu_v r = CVEMU_F(a);
    for (int l = 0; l < 16; l++) r.u[l] &= 0x7fffffffu;
    return r.v;
}

/* Masked forms: lanes outside k keep src (mask_) or become 0 (maskz_); mask3_fmadd keeps c. */
CVEMU __m512 cvemu_blend_ps(__mmask16 k, __m512 src, __m512 a) {
    cvemu_v r = CVEMU_F(src), x = CVEMU_F(a);
    for (int l = 0; l < 16; l++)
        if ((k >> l) & 1) r.f[l] = x.f[l];
    return r.v;
}
#undef _mm512_mask_add_ps
#define _mm512_mask_add_ps cvemu_mask_add_ps
CVEMU __m512 cvemu_mask_add_ps(__m512 src, __mmask16 k, __m512 a, __m512 b) {
    return cvemu_blend_ps(k, src, cvemu_add_ps(a, b));
}
#undef _mm512_mask_max_ps
#define _mm512_mask_max_ps cvemu_mask_max_ps
CVEMU __m512 cvemu_mask_max_ps(__m512 src, __mmask16 k, __m512 a, __m512 b) {
    return cvemu_blend_ps(k, src, cvemu_max_ps(a, b));
}
#undef _mm512_mask3_fmadd_ps
#define _mm512_mask3_fmadd_ps cvemu_mask3_fmadd_ps
CVEMU __m512 cvemu_mask3_fmadd_ps(__m512 a, __m512 b, __m512 c, __mmask16 k) {
    return cvemu_blend_ps(k, c, cvemu_fmadd_ps(a, b, c));
}
#undef _mm512_mask_mov_ps
#define _mm512_mask_mov_ps cvemu_mask_mov_ps
CVEMU __m512 cvemu_mask_mov_ps(__m512 src, __mmask16 k, __m512 a) {
    return cvemu_blend_ps(k, src, a);
}
#undef _mm512_maskz_mov_ps
#define _mm512_maskz_mov_ps cvemu_maskz_mov_ps
CVEMU __m512 cvemu_maskz_mov_ps(__mmask16 k, __m512 a) {
    return cvemu_blend_ps(k, cvemu_setzero_ps(), a);
}
#undef _mm512_maskz_sub_pd
#define _mm512_maskz_sub_pd cvemu_maskz_sub_pd
CVEMU __m512d cvemu_maskz_sub_pd(__mmask8 k, __m512d a, __m512d b) {
    cvemu_v x = CVEMU_D(a), y = CVEMU_D(b), r = {.i = {0}};
    for (int l = 0; l < 8; l++)
        if ((k >> l) & 1) r.g[l] = x.g[l] - y.g[l];
    return r.d;
}

/* ---- comparisons into masks ------------------------------------------------------------ */
/* One lane of vcmpps with predicate imm (0-31; bit 4, the signalling variant, gives the same
 * result) */
CVEMU int cvemu_cmp1(float a, float b, int imm) {
    const int un = __builtin_isnan(a) || __builtin_isnan(b);
    switch (imm & 15) {
    case 0:
        return !un && a == b; /* EQ_OQ */
    case 1:
        return !un && a < b; /* LT_OS */
    case 2:
        return !un && a <= b; /* LE_OS */
    case 3:
        return un; /* UNORD_Q */
    case 4:
        return un || a != b; /* NEQ_UQ */
    case 5:
        return un || !(a < b); /* NLT_US */
    case 6:
        return un || !(a <= b); /* NLE_US */
    case 7:
        return !un; /* ORD_Q */
    case 8:
        return un || a == b; /* EQ_UQ */
    case 9:
        return un || !(a >= b); /* NGE_US */
    case 10:
        return un || !(a > b); /* NGT_US */
    case 11:
        return 0; /* FALSE_OQ */
    case 12:
        return !un && a != b; /* NEQ_OQ */
    case 13:
        return !un && a >= b; /* GE_OS */
    case 14:
        return !un && a > b; /* GT_OS */
    default:
        return 1; /* TRUE_UQ */
    }
}
#undef _mm512_mask_cmp_ps_mask
#define _mm512_mask_cmp_ps_mask cvemu_mask_cmp_ps_mask
CVEMU __mmask16 cvemu_mask_cmp_ps_mask(__mmask16 k, __m512 a, __m512 b, int imm) {
    cvemu_v x = CVEMU_F(a), y = CVEMU_F(b);
    unsigned r = 0;
    for (int l = 0; l < 16; l++)
        if (((k >> l) & 1) && cvemu_cmp1(x.f[l], y.f[l], imm)) r |= 1u << l;
    return (__mmask16)r;
}
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask cvemu_cmp_ps_mask
CVEMU __mmask16 cvemu_cmp_ps_mask(__m512 a, __m512 b, int imm) {
    return cvemu_mask_cmp_ps_mask((__mmask16)0xffff, a, b, imm);
}
/* signed 32-bit compares into a mask, lanes outside k clear */
#define CVEMU_CMP_EPI32(name, rel)                                                                 \
    CVEMU __mmask16 name(__mmask16 k, __m512i a, __m512i b) {                                      \
        cvemu_v x = CVEMU_I(a), y = CVEMU_I(b);                                                    \
        unsigned r = 0;                                                                            \
        for (int l = 0; l < 16; l++)                                                               \
            if (((k >> l) & 1) && x.s[l] rel y.s[l]) r |= 1u << l;                                 \
        return (__mmask16)r;                                                                       \
    }
#undef _mm512_mask_cmpge_epi32_mask
#define _mm512_mask_cmpge_epi32_mask cvemu_mask_cmpge_epi32_mask
CVEMU_CMP_EPI32(cvemu_mask_cmpge_epi32_mask, >=)
#undef _mm512_mask_cmplt_epi32_mask
#define _mm512_mask_cmplt_epi32_mask cvemu_mask_cmplt_epi32_mask
CVEMU_CMP_EPI32(cvemu_mask_cmplt_epi32_mask, <)

/* ---- horizontal reductions, in the order of GCC's avx512fintrin.h -------------------------- */
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps cvemu_reduce_add_ps
CVEMU float cvemu_reduce_add_ps(__m512 a) {
    cvemu_v x = CVEMU_F(a);
    __m256 t3 = _mm256_add_ps(x.f8[1], x.f8[0]);
    __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
}
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps cvemu_reduce_max_ps
CVEMU float cvemu_reduce_max_ps(__m512 a) {
    cvemu_v x = CVEMU_F(a);
    __m256 t3 = _mm256_max_ps(x.f8[1], x.f8[0]);
    __m128 t6 = _mm_max_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    __m128 t8 = _mm_max_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    __m128 t10 = _mm_max_ps(t8, _mm_shuffle_ps(t8, t8, _MM_SHUFFLE(0, 1, 0, 1)));
    return _mm_cvtss_f32(t10);
}
#undef _mm512_reduce_add_pd
#define _mm512_reduce_add_pd cvemu_reduce_add_pd
CVEMU double cvemu_reduce_add_pd(__m512d a) {
    cvemu_v x = CVEMU_D(a);
    __m256d t3 = _mm256_add_pd(x.d4[1], x.d4[0]);
    __m128d t6 = _mm_add_pd(_mm256_extractf128_pd(t3, 1), _mm256_castpd256_pd128(t3));
    return _mm_cvtsd_f64(t6) + _mm_cvtsd_f64(_mm_unpackhi_pd(t6, t6));
}
#undef _mm512_reduce_add_epi32
#define _mm512_reduce_add_epi32 cvemu_reduce_add_epi32
CVEMU int cvemu_reduce_add_epi32(__m512i a) {
    cvemu_v x = CVEMU_I(a);
    uint32_t s = 0; /* integer sums wrap alike in any order */
    for (int l = 0; l < 16; l++) s += x.u[l];
    return (int)s;
}

/* ---- shifts, widening and conversions --------------------------------------------------- */
#undef _mm512_slli_epi32
#define _mm512_slli_epi32 cvemu_slli_epi32
CVEMU __m512i cvemu_slli_epi32(__m512i a, unsigned imm) {
    cvemu_v r = CVEMU_I(a);
    for (int l = 0; l < 16; l++) r.u[l] = imm > 31 ? 0 : r.u[l] << imm;
    return r.i;
}
#undef _mm512_srli_epi32
#define _mm512_srli_epi32 cvemu_srli_epi32
CVEMU __m512i cvemu_srli_epi32(__m512i a, unsigned imm) {
    cvemu_v r = CVEMU_I(a);
    for (int l = 0; l < 16; l++) r.u[l] = imm > 31 ? 0 : r.u[l] >> imm;
    return r.i;
}
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 cvemu_cvtepu16_epi32
CVEMU __m512i cvemu_cvtepu16_epi32(__m256i a) {
    cvemu_v x = {.i8 = {a}}, r;
    for (int l = 0; l < 16; l++) r.u[l] = x.h[l];
    return r.i;
}
#undef _mm512_cvtepu8_epi32
#define _mm512_cvtepu8_epi32 cvemu_cvtepu8_epi32
CVEMU __m512i cvemu_cvtepu8_epi32(__m128i a) {
    cvemu_v x = {.i4 = {a}}, r;
    for (int l = 0; l < 16; l++) r.u[l] = x.b[l];
    return r.i;
}
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32 cvemu_cvtepi8_epi32
CVEMU __m512i cvemu_cvtepi8_epi32(__m128i a) {
    cvemu_v x = {.i4 = {a}}, r;
    for (int l = 0; l < 16; l++) r.s[l] = x.sb[l];
    return r.i;
}
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps cvemu_cvtepi32_ps
CVEMU __m512 cvemu_cvtepi32_ps(__m512i a) {
    cvemu_v x = CVEMU_I(a), r;
    r.f8[0] = _mm256_cvtepi32_ps(x.i8[0]);
    r.f8[1] = _mm256_cvtepi32_ps(x.i8[1]);
    return r.v;
}
#undef _mm512_cvtps_pd
#define _mm512_cvtps_pd cvemu_cvtps_pd
CVEMU __m512d cvemu_cvtps_pd(__m256 a) {
    cvemu_v r;
    r.d4[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    r.d4[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    return r.d;
}
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps cvemu_cvtph_ps
CVEMU __m512 cvemu_cvtph_ps(__m256i a) {
    cvemu_v r;
    r.f8[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(a));
    r.f8[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1));
    return r.v;
}

/* vrndscaleps: round to 2^-M steps (M = imm[7:4]) by imm[1:0] (nearest even, down, up,
 * toward zero), or by MXCSR (nearest even here) when imm[2] is set. */
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps cvemu_roundscale_ps
CVEMU __m512 cvemu_roundscale_ps(__m512 a, int imm) {
    cvemu_v r = CVEMU_F(a);
    const int m = (imm >> 4) & 15, mode = (imm & 4) ? 0 : (imm & 3);
    for (int l = 0; l < 16; l++) {
        float x = r.f[l];
        if (__builtin_isnan(x) || __builtin_isinf(x)) {
            r.f[l] = x + x; /* NaN quieted, inf kept */
            continue;
        }
        float s = __builtin_ldexpf(x, m);
        s = mode == 0   ? __builtin_rintf(s)
            : mode == 1 ? __builtin_floorf(s)
            : mode == 2 ? __builtin_ceilf(s)
                        : __builtin_truncf(s);
        r.f[l] = __builtin_copysignf(__builtin_ldexpf(s, -m), x); /* -0.4 rounds to -0 */
    }
    return r.v;
}

/* vscalefps: a * 2^floor(b), with the SDM's special cases for NaN, infinities and zeros. */
#undef _mm512_scalef_ps
#define _mm512_scalef_ps cvemu_scalef_ps
CVEMU __m512 cvemu_scalef_ps(__m512 a, __m512 b) {
    cvemu_v x = CVEMU_F(a), y = CVEMU_F(b), r;
    for (int l = 0; l < 16; l++) {
        float p = x.f[l], e = y.f[l];
        if (__builtin_isnan(p) || __builtin_isnan(e)) {
            r.f[l] = p + e; /* a quiet NaN */
        } else if (__builtin_isinf(e)) {
            if (e > 0)
                r.f[l] = p == 0 ? __builtin_nanf("") : p * __builtin_inff();
            else
                r.f[l] = __builtin_isinf(p) ? __builtin_nanf("") : p * 0.0f;
        } else {
            float fl = __builtin_floorf(e);
            int n = fl > 400.0f ? 400 : fl < -400.0f ? -400 : (int)fl;
            r.f[l] = __builtin_ldexpf(p, n);
        }
    }
    return r.v;
}

/* ---- lane permutations ------------------------------------------------------------------- */
/* vshuff32x4 / vshufi32x4: 128-bit blocks a[imm0], a[imm1], b[imm2], b[imm3] */
CVEMU __m512i cvemu_shuffle_x4(__m512i a, __m512i b, int imm) {
    cvemu_v x = CVEMU_I(a), y = CVEMU_I(b), r;
    r.i4[0] = x.i4[imm & 3];
    r.i4[1] = x.i4[(imm >> 2) & 3];
    r.i4[2] = y.i4[(imm >> 4) & 3];
    r.i4[3] = y.i4[(imm >> 6) & 3];
    return r.i;
}
#undef _mm512_shuffle_i32x4
#define _mm512_shuffle_i32x4 cvemu_shuffle_i32x4
CVEMU __m512i cvemu_shuffle_i32x4(__m512i a, __m512i b, int imm) {
    return cvemu_shuffle_x4(a, b, imm);
}
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4 cvemu_shuffle_f32x4
CVEMU __m512 cvemu_shuffle_f32x4(__m512 a, __m512 b, int imm) {
    return CVEMU_I(cvemu_shuffle_x4(CVEMU_F(a).i, CVEMU_F(b).i, imm)).v;
}
/* vshufps: within each 128-bit block, a[imm0], a[imm1], b[imm2], b[imm3] */
#undef _mm512_shuffle_ps
#define _mm512_shuffle_ps cvemu_shuffle_ps
CVEMU __m512 cvemu_shuffle_ps(__m512 a, __m512 b, int imm) {
    cvemu_v x = CVEMU_F(a), y = CVEMU_F(b), r;
    for (int blk = 0; blk < 16; blk += 4) {
        r.f[blk + 0] = x.f[blk + (imm & 3)];
        r.f[blk + 1] = x.f[blk + ((imm >> 2) & 3)];
        r.f[blk + 2] = y.f[blk + ((imm >> 4) & 3)];
        r.f[blk + 3] = y.f[blk + ((imm >> 6) & 3)];
    }
    return r.v;
}
#undef _mm512_permutexvar_ps
#define _mm512_permutexvar_ps cvemu_permutexvar_ps
CVEMU __m512 cvemu_permutexvar_ps(__m512i idx, __m512 a) {
    cvemu_v ix = CVEMU_I(idx), x = CVEMU_F(a), r;
    for (int l = 0; l < 16; l++) r.f[l] = x.f[ix.u[l] & 15];
    return r.v;
}
/* vpermt2ps: index bit 4 picks b over a */
#undef _mm512_permutex2var_ps
#define _mm512_permutex2var_ps cvemu_permutex2var_ps
CVEMU __m512 cvemu_permutex2var_ps(__m512 a, __m512i idx, __m512 b) {
    cvemu_v ix = CVEMU_I(idx), x = CVEMU_F(a), y = CVEMU_F(b), r;
    for (int l = 0; l < 16; l++) r.f[l] = (ix.u[l] & 16) ? y.f[ix.u[l] & 15] : x.f[ix.u[l] & 15];
    return r.v;
}
/* unpacks interleave within each 128-bit block: the SSE2 unpack on each of the four */
#define CVEMU_BLOCKWISE(name, op)                                                                  \
    CVEMU __m512i name(__m512i a, __m512i b) {                                                     \
        cvemu_v x = CVEMU_I(a), y = CVEMU_I(b), r;                                                 \
        for (int k = 0; k < 4; k++) r.i4[k] = op(x.i4[k], y.i4[k]);                                \
        return r.i;                                                                                \
    }
#undef _mm512_unpacklo_epi32
#define _mm512_unpacklo_epi32 cvemu_unpacklo_epi32
CVEMU_BLOCKWISE(cvemu_unpacklo_epi32, _mm_unpacklo_epi32)
#undef _mm512_unpackhi_epi32
#define _mm512_unpackhi_epi32 cvemu_unpackhi_epi32
CVEMU_BLOCKWISE(cvemu_unpackhi_epi32, _mm_unpackhi_epi32)
#undef _mm512_unpacklo_epi64
#define _mm512_unpacklo_epi64 cvemu_unpacklo_epi64
CVEMU_BLOCKWISE(cvemu_unpacklo_epi64, _mm_unpacklo_epi64)
#undef _mm512_unpackhi_epi64
#define _mm512_unpackhi_epi64 cvemu_unpackhi_epi64
CVEMU_BLOCKWISE(cvemu_unpackhi_epi64, _mm_unpackhi_epi64)

/* ---- dot-product instructions ------------------------------------------------------------ */
/* vpdpbusd (VNNI): per 32-bit lane, src + the four products of unsigned bytes of a and signed
 * bytes of b, wrapping (no saturation). */
#undef _mm512_dpbusd_epi32
#define _mm512_dpbusd_epi32 cvemu_dpbusd_epi32
CVEMU __m512i cvemu_dpbusd_epi32(__m512i src, __m512i a, __m512i b) {
    cvemu_v r = CVEMU_I(src), x = CVEMU_I(a), y = CVEMU_I(b);
    for (int l = 0; l < 16; l++) {
        uint32_t s = r.u[l];
        for (int j = 0; j < 4; j++)
            s += (uint32_t)((int32_t)x.b[4 * l + j] * (int32_t)y.sb[4 * l + j]);
        r.u[l] = s;
    }
    return r.i;
}

/* BF16 (AVX512_BF16): denormal inputs are read as zero and denormal results flushed to zero. */
CVEMU float cvemu_daz(float x) {
    cvemu_v t = {.f = {x}};
    if ((t.u[0] & 0x7f800000u) == 0) t.u[0] &= 0x80000000u;
    return t.f[0];
}
CVEMU float cvemu_bf16_f32(uint16_t h) {
    cvemu_v t = {.u = {(uint32_t)h << 16}};
    return cvemu_daz(t.f[0]);
}
/* vcvtne2ps2bf16's conversion: nearest even; a NaN stays a quiet NaN */
CVEMU uint16_t cvemu_f32_bf16(float x) {
    cvemu_v t = {.f = {cvemu_daz(x)}};
    uint32_t u = t.u[0];
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/* low 16 bf16 from b, high 16 from a */
#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh cvemu_cvtne2ps_pbh
CVEMU __m512bh cvemu_cvtne2ps_pbh(__m512 a, __m512 b) {
    cvemu_v x = CVEMU_F(a), y = CVEMU_F(b), r;
    for (int l = 0; l < 16; l++) {
        r.h[l] = cvemu_f32_bf16(y.f[l]);
        r.h[16 + l] = cvemu_f32_bf16(x.f[l]);
    }
    return r.bh;
}
/* vdpbf16ps: per fp32 lane, src + a[2l+1] b[2l+1], then + a[2l] b[2l] (the SDM's order; each
 * bf16 product is exact in fp32, each sum rounded) */
#undef _mm512_dpbf16_ps
#define _mm512_dpbf16_ps cvemu_dpbf16_ps
CVEMU __m512 cvemu_dpbf16_ps(__m512 src, __m512bh a, __m512bh b) {
    cvemu_v r = CVEMU_F(src), x = {.bh = a}, y = {.bh = b};
    for (int l = 0; l < 16; l++) {
        float s = cvemu_daz(r.f[l]);
        s = cvemu_daz(s + cvemu_bf16_f32(x.h[2 * l + 1]) * cvemu_bf16_f32(y.h[2 * l + 1]));
        s = cvemu_daz(s + cvemu_bf16_f32(x.h[2 * l]) * cvemu_bf16_f32(y.h[2 * l]));
        r.f[l] = s;
    }
    return r.v;
}

#endif /* CV_AVX512EMU_H */
