/* quant.cu — CUDA kernels over INT8 / NF4 weights (quant_cuda.h); CPU twins: src/quant/quantize.c
 * (cv_dequantize_int8 / cv_dequantize_nf4) and src/quant/cpu_quant_matmul.c (the matmul).
 *
 *  - dequant kernels: one thread per int8 value / per NF4 byte (two values), grid-stride, fp32 or
 *    bf16 output, used before a dense GEMM for prefill;
 *  - a fused dequant-GEMV: one warp per weight row; each lane loads 16 weights per step (16 bytes
 *    of int8 or 8 bytes of NF4) and the matching activations as float4, dequantizes in registers
 *    and accumulates in fp32; the warp reduces with shuffles. Each pass over a row serves up to
 *    TB = 4 query rows. Decode (T = 1) is bound by reading the weights, which this does once.
 *  - the NF4 code table is copied into shared memory by each block (a __constant__ table indexed
 *    by a different code in every lane would serialize into up to 16 replays); int8 dequant runs
 *    one block per row (the row scale loaded once, no 64-bit division per element) and NF4
 *    absmax indices shift instead of divide when the block is a power of two.
 * Self-contained (no common.cuh): the backend calls these through plain C launchers. */
#include "corevital/quant_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdint.h>

/* bitsandbytes' NF4 code values (quant.h cv_nf4_code). */
__constant__ float cv_nf4_code_dev[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

enum { QFMT_INT8 = 1, QFMT_NF4 = 2 };

template <typename OT> __device__ __forceinline__ OT from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) {
    return v;
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

static unsigned grid_for(int64_t n, int threads) {
    int64_t g = (n + threads - 1) / threads;
    if (g > (1 << 20)) g = 1 << 20; /* grid-stride covers the rest */
    return (unsigned)(g > 0 ? g : 1);
}

/* The NF4 table in shared memory: lanes index it by their own codes, which a __constant__
 * array would serve one distinct address at a time (up to 16 replays); 16 words sit in 16
 * banks, so a shared-memory lookup never conflicts. Every thread of the block must call this
 * (it has a barrier). */
__device__ __forceinline__ void nf4_table_to_shared(float *code) {
    if (threadIdx.x < 16) code[threadIdx.x] = cv_nf4_code_dev[threadIdx.x];
    __syncthreads();
}

/* log2(block) when block is a power of two, else -1 (then absmax indices divide). */
static int block_shift(int block) {
    if (block <= 0 || (block & (block - 1))) return -1;
    int s = 0;
    while ((1 << s) < block) s++;
    return s;
}
__device__ __forceinline__ int64_t absmax_index(int64_t e, int block, int bshift) {
    return bshift >= 0 ? e >> bshift : e / block;
}

/* One block per row (grid-stride over rows), threads over the columns: the row scale is loaded
 * once, no per-element division. */
template <typename OT>
__global__ void dequant_int8_kernel(OT *__restrict__ out, const int8_t *__restrict__ q,
                                    const float *__restrict__ scales, int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float s = scales[r];
        const int8_t *qr = q + r * cols;
        OT *orow = out + r * cols;
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x)
            orow[k] = from_f32<OT>((float)qr[k] * s);
    }
}

template <typename OT>
__global__ void dequant_nf4_kernel(OT *__restrict__ out, const uint8_t *__restrict__ packed,
                                   const float *__restrict__ absmax, int64_t n, int block,
                                   int bshift) {
    __shared__ float code[16];
    nf4_table_to_shared(code);
    const int64_t nbytes = (n + 1) / 2;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < nbytes;
         j += (int64_t)gridDim.x * blockDim.x) {
        const uint8_t b = packed[j];
        const int64_t i = 2 * j;
        const int64_t bi = absmax_index(i, block, bshift);
        out[i] = from_f32<OT>(code[b >> 4] * absmax[bi]);
        if (i + 1 < n) {
            /* an even block keeps both nibbles of a byte in one absmax block */
            const int64_t bj = (block & 1) ? absmax_index(i + 1, block, bshift) : bi;
            out[i + 1] = from_f32<OT>(code[b & 0x0F] * absmax[bj]);
        }
    }
}

/* 16 dequantized weights of row n starting at column k (vector path: k % 16 == 0, K % 16 == 0).
 * INT8 returns the raw codes (the row scale is applied to the dot product, as on the CPU). */
template <int FMT>
__device__ __forceinline__ void load16(float *o, const void *W, const float *scales, int64_t n,
                                       int K, int k, int block, int bshift, const float *code) {
    if (FMT == QFMT_INT8) {
        int4 raw = *reinterpret_cast<const int4 *>((const int8_t *)W + n * K + k);
        const int8_t *e = reinterpret_cast<const int8_t *>(&raw);
#pragma unroll
        for (int i = 0; i < 16; i++) o[i] = (float)e[i];
    } else {
        const int64_t e0 = n * K + k; /* multiple of 16: 8 aligned bytes, one absmax block */
        uint2 raw = *reinterpret_cast<const uint2 *>((const uint8_t *)W + e0 / 2);
        const uint8_t *b = reinterpret_cast<const uint8_t *>(&raw);
        const float am = scales[absmax_index(e0, block, bshift)];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            o[2 * i] = code[b[i] >> 4] * am;
            o[2 * i + 1] = code[b[i] & 0x0F] * am;
        }
    }
}

template <int FMT>
__device__ __forceinline__ float elem(const void *W, const float *scales, int64_t n, int K, int k,
                                      int block, int bshift, const float *code) {
    if (FMT == QFMT_INT8) return (float)((const int8_t *)W)[n * K + k];
    const int64_t e = n * K + k;
    const uint8_t b = ((const uint8_t *)W)[e / 2];
    return code[(e & 1) ? (b & 0x0F) : (b >> 4)] * scales[absmax_index(e, block, bshift)];
}

template <int FMT, int TB>
__global__ void quant_gemv_kernel(float *__restrict__ out, const float *__restrict__ x,
                                  const void *__restrict__ W, const float *__restrict__ scales,
                                  const float *__restrict__ bias, int T, int N, int K, int block,
                                  int bshift, int vec) {
    __shared__ float code[16];
    if (FMT == QFMT_NF4) nf4_table_to_shared(code); /* before any warp leaves */
    const int64_t n = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (n >= N) return; /* warp-uniform */
    const float rs = FMT == QFMT_INT8 ? scales[n] : 1.0f;
    const float b = bias ? bias[n] : 0.0f;
    for (int t0 = 0; t0 < T; t0 += TB) {
        const int tb = T - t0 < TB ? T - t0 : TB;
        float acc[TB];
#pragma unroll
        for (int i = 0; i < TB; i++) acc[i] = 0.0f;
        if (vec) {
            for (int k = lane * 16; k < K; k += 32 * 16) {
                float wv[16];
                load16<FMT>(wv, W, scales, n, K, k, block, bshift, code);
#pragma unroll
                for (int i = 0; i < TB; i++) {
                    if (i >= tb) break;
                    const float4 *xr =
                        reinterpret_cast<const float4 *>(x + (size_t)(t0 + i) * K + k);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const float4 xv = __ldg(xr + j);
                        acc[i] += xv.x * wv[4 * j] + xv.y * wv[4 * j + 1] + xv.z * wv[4 * j + 2] +
                                  xv.w * wv[4 * j + 3];
                    }
                }
            }
        } else {
            for (int k = lane; k < K; k += 32) {
                const float wv = elem<FMT>(W, scales, n, K, k, block, bshift, code);
#pragma unroll
                for (int i = 0; i < TB; i++)
                    if (i < tb) acc[i] += x[(size_t)(t0 + i) * K + k] * wv;
            }
        }
#pragma unroll
        for (int i = 0; i < TB; i++) {
            float v = acc[i];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
            if (lane == 0 && i < tb) out[(size_t)(t0 + i) * N + n] = v * rs + b;
        }
    }
}

static unsigned rows_grid(int64_t rows) {
    return (unsigned)(rows < (1 << 20) ? (rows > 0 ? rows : 1) : (1 << 20));
}

static int launch_status(void) {
    return (int)cudaGetLastError();
}

extern "C" int cv_cuda_dequant_int8_f32(float *out, const int8_t *q, const float *scales,
                                        int64_t rows, int64_t cols, void *stream) {
    const int64_t n = rows * cols;
    if (n <= 0) return 0;
    dequant_int8_kernel<float>
        <<<rows_grid(rows), 256, 0, (cudaStream_t)stream>>>(out, q, scales, rows, cols);
    return launch_status();
}

extern "C" int cv_cuda_dequant_int8_bf16(uint16_t *out, const int8_t *q, const float *scales,
                                         int64_t rows, int64_t cols, void *stream) {
    const int64_t n = rows * cols;
    if (n <= 0) return 0;
    dequant_int8_kernel<__nv_bfloat16><<<rows_grid(rows), 256, 0, (cudaStream_t)stream>>>(
        reinterpret_cast<__nv_bfloat16 *>(out), q, scales, rows, cols);
    return launch_status();
}

extern "C" int cv_cuda_dequant_nf4_f32(float *out, const uint8_t *packed, const float *absmax,
                                       int64_t n, int block, void *stream) {
    if (n <= 0) return 0;
    if (block <= 0) return (int)cudaErrorInvalidValue;
    dequant_nf4_kernel<float><<<grid_for((n + 1) / 2, 256), 256, 0, (cudaStream_t)stream>>>(
        out, packed, absmax, n, block, block_shift(block));
    return launch_status();
}

extern "C" int cv_cuda_dequant_nf4_bf16(uint16_t *out, const uint8_t *packed, const float *absmax,
                                        int64_t n, int block, void *stream) {
    if (n <= 0) return 0;
    if (block <= 0) return (int)cudaErrorInvalidValue;
    dequant_nf4_kernel<__nv_bfloat16><<<grid_for((n + 1) / 2, 256), 256, 0, (cudaStream_t)stream>>>(
        reinterpret_cast<__nv_bfloat16 *>(out), packed, absmax, n, block, block_shift(block));
    return launch_status();
}

extern "C" int cv_cuda_quant_gemv(float *out, const float *x, const void *w, const float *scales,
                                  const float *bias, int format, int T, int N, int K, int block,
                                  void *stream) {
    if (T <= 0 || N <= 0) return 0;
    const int threads = 256, warps = threads / 32;
    const unsigned grid = (unsigned)((N + warps - 1) / warps);
    cudaStream_t s = (cudaStream_t)stream;
    /* vector loads need 16-column groups that stay within one NF4 block and aligned addresses
     * (cudaMalloc is 256-byte aligned; x rows are K floats apart) */
    const int vec = K % 16 == 0 && (format == QFMT_INT8 || block % 16 == 0) &&
                    ((uintptr_t)w % 16) == 0 && ((uintptr_t)x % 16) == 0;
    if (format == QFMT_INT8) {
        quant_gemv_kernel<QFMT_INT8, 4>
            <<<grid, threads, 0, s>>>(out, x, w, scales, bias, T, N, K, block, -1, vec);
    } else if (format == QFMT_NF4) {
        if (block <= 0) return (int)cudaErrorInvalidValue;
        quant_gemv_kernel<QFMT_NF4, 4><<<grid, threads, 0, s>>>(out, x, w, scales, bias, T, N, K,
                                                                block, block_shift(block), vec);
    } else {
        return (int)cudaErrorInvalidValue;
    }
    return launch_status();
}
