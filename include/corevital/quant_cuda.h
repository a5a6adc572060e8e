/* quant_cuda.h — CUDA kernels over quantized weights (kernels/quant.cu), for the CUDA backend's
 * weight_upload_quant / matmul and for tests/cuda/test_cuda_quant.c.
 *
 * Layouts are those of quant.h (bitsandbytes'): INT8 q (rows, cols) int8 + scales (rows) =
 * absmax / 127; NF4 packed (rows * cols + 1) / 2 bytes (element 2j in the high nibble) + absmax per
 * block of `block` elements of the flattened matrix. Every pointer is device memory; `stream` is a
 * cudaStream_t (NULL = the default stream). Launchers only enqueue; they return 0 or the
 * cudaError_t of the launch (cudaGetLastError), never synchronizing.
 *
 * Routes (what the CUDA backend's matmul should do for a quantized weight):
 *   decode / short T (T <= 8): cv_cuda_quant_gemv — one warp per weight row, dequantizes in
 *     registers and accumulates in fp32 (the CPU fast path's arithmetic: int8 row scale applied to
 *     the finished dot product, NF4 code * absmax per element), reading each weight byte once per
 *     chunk of 4 query rows.
 *   prefill (T > 8): dequantize the matrix into device scratch, then the dense route:
 *     cv_cuda_dequant_*_bf16 + the backend's BF16 path (or cublasGemmEx), or
 *     cv_cuda_dequant_*_f32 + cublasSgemm (bit-for-bit the dequantized weights the CPU uses). */
#ifndef COREVITAL_QUANT_CUDA_H
#define COREVITAL_QUANT_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out (rows, cols) = q * scales[row], as fp32 / as bf16 (round to nearest even). */
int cv_cuda_dequant_int8_f32(float *out, const int8_t *q, const float *scales, int64_t rows,
                             int64_t cols, void *stream);
int cv_cuda_dequant_int8_bf16(uint16_t *out, const int8_t *q, const float *scales, int64_t rows,
                              int64_t cols, void *stream);
/* out (n values) = NF4[code] * absmax[i / block], as fp32 / as bf16. */
int cv_cuda_dequant_nf4_f32(float *out, const uint8_t *packed, const float *absmax, int64_t n,
                            int block, void *stream);
int cv_cuda_dequant_nf4_bf16(uint16_t *out, const uint8_t *packed, const float *absmax, int64_t n,
                             int block, void *stream);
/* out (T, N) = x (T, K) . dequant(W)^T (+ bias (N), may be NULL); format 1 = INT8, 2 = NF4
 * (cv_weight_format values); block is ignored for INT8. */
int cv_cuda_quant_gemv(float *out, const float *x, const void *w, const float *scales,
                       const float *bias, int format, int T, int N, int K, int block, void *stream);

#ifdef __cplusplus
}
#endif

#endif
