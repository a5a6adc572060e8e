/* quant.h — weight quantization at load time (issue 11): int8 rows and NF4 blocks, laid out as
 * bitsandbytes stores them, plus the CPU matmuls that read them (src/quant).
 *
 * INT8 (LLM.int8() weight layout): per output row r, absmax[r] = max_c |W[r,c]| and
 *   q[r,c] = round_half_even(W[r,c] * (127 / absmax[r])) as int8 (a zero row gives q = 0);
 *   the cv_weight keeps scale[r] = absmax[r] / 127 so that W ~= q * scale.
 * NF4 (QLoRA / bitsandbytes quantize_4bit, quant_type "nf4"): the matrix is flattened row-major
 *   (n = rows * cols), cut into blocks of `block` (64, transformers' default) consecutive values,
 *   the last one possibly partial; absmax[b] = max |w| over block b; each w * (1 / absmax[b]) is
 *   mapped to a 4-bit index by bitsandbytes' decision tree (dQuantizeNF4: strict '>' against the
 *   midpoints, so a value exactly on a midpoint takes the lower code); two indices per byte,
 * element 2j in the HIGH nibble and 2j+1 in the LOW nibble; (n + 1) / 2 bytes, the pad nibble of an
 * odd n is the code of 0.0. A block whose absmax is 0 gets index 0 everywhere (bitsandbytes
 * computes 0 * (1/0) = NaN, which fails every '>' test) and dequantizes to (-)0. Dequant: w[i] =
 * cv_nf4_code[index(i)] * absmax[i / block]. Blocks follow the flattened matrix (as bitsandbytes
 * does), so for cols % block != 0 a block spans the end of one row and the start of the next; every
 * real model has cols % 64 == 0, where blocks and rows align and the fast kernels apply. */
#ifndef COREVITAL_QUANT_H
#define COREVITAL_QUANT_H

#include "corevital/backend.h"
#include "corevital/common.h"

#include <stddef.h>
#include <stdint.h>

#define CV_NF4_BLOCK 64

/* The 16 NF4 code values, index 0..15 (index 7 is exactly 0), as bitsandbytes defines them. */
extern const float cv_nf4_code[16];
/* The 15 decision thresholds of bitsandbytes' dQuantizeNF4, ascending (threshold i separates
 * code i and code i + 1). */
extern const float cv_nf4_threshold[15];

/* 4-bit index of a normalized value x (bitsandbytes' decision tree; NaN -> 0). */
uint8_t cv_nf4_index(float x);

/* INT8: q (rows, cols), scales (rows) = absmax / 127. */
void cv_quantize_int8(int8_t *q, float *scales, const float *w, int64_t rows, int64_t cols);
void cv_dequantize_int8(float *w, const int8_t *q, const float *scales, int64_t rows, int64_t cols);

/* NF4 over n values in blocks of `block` (even, > 0). */
static inline size_t cv_nf4_bytes(int64_t n) {
    return (size_t)((n + 1) / 2);
}
static inline size_t cv_nf4_blocks(int64_t n, int block) {
    return (size_t)((n + block - 1) / block);
}
void cv_quantize_nf4(uint8_t *packed, float *absmax, const float *w, int64_t n, int block);
void cv_dequantize_nf4(float *w, const uint8_t *packed, const float *absmax, int64_t n, int block);
/* One dequantized element i of an NF4 weight (scalar paths and tests). */
static inline float cv_nf4_elem(const uint8_t *packed, const float *absmax, int block, int64_t i) {
    uint8_t b = packed[i >> 1];
    return cv_nf4_code[(i & 1) ? (b & 0x0F) : (b >> 4)] * absmax[i / block];
}

/* Bytes a quantized (rows, cols) matrix occupies: data + scales (block ignored for INT8). */
size_t cv_quant_weight_bytes(cv_weight_format format, int64_t rows, int64_t cols, int block);

/* Quantize a host matrix (rows, cols) of F32 / F16 / BF16 into `format` (INT8 or NF4 with blocks of
 * CV_NF4_BLOCK) and make it resident on backend b through b->weight_upload_quant. The host data is
 * not kept; release the weight with b->weight_free. */
cv_status cv_weight_quantize(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                             int64_t rows, int64_t cols, cv_weight_format format, cv_error *err);

/* Matmul over a quantized weight, out (T, N) = x (T, K) . W^T (+ bias), host memory:
 * the naive twin (plain loops, double accumulation, no threads — the oracle) and the portable
 * path (OpenMP, fp32, no intrinsics: the fallback without AVX-512). The fast path is the CPU
 * backend's matmul (cv_cpu_matmul_quant). */
void cv_matmul_quant_naive(float *out, const float *x, const cv_weight *w, const float *bias,
                           int T);
void cv_matmul_quant_portable(float *out, const float *x, const cv_weight *w, const float *bias,
                              int T);

/* INT8 activation mode of the CPU matmul: 0 (the default) multiplies fp32 activations with the
 * dequantized weights; 1 quantizes each activation row to int8 first (absmax / 127, round half to
 * even — LLM.int8()'s activation quantization without its outlier decomposition) and multiplies
 * with AVX512-VNNI integer dot products (vpdpbusd), when the build has VNNI. Process-wide; set
 * before running. */
void cv_quant_set_int8_activations(int on);
int cv_quant_int8_activations(void);
/* The naive twin of the quantized-activation path (same activation rounding, exact integer dot
 * products, same fp32 epilogue: equal to the VNNI path bit for bit). */
void cv_matmul_int8_actq_naive(float *out, const float *x, const cv_weight *w, const float *bias,
                               int T);

/* Name of the fast path this build uses for a weight ("int8-avx512", "int8-vnni-actq",
 * "nf4-avx512", "portable"). */
const char *cv_matmul_quant_path(const cv_weight *w);

#endif
