/* matmul.cu — out (T, N) = x (T, K) . W^T (+ bias) on CUDA; CPU twin: src/backend/cpu_matmul.c.
 *
 * Routes (auto, the default):
 *   T <= 8, any dtype  a hand-written kernel, one warp per weight row, reading the weights in
 *                      their dtype (16-byte vector loads), widening F16/BF16 to fp32 in registers
 *                      and multiplying fp32 activations with fp32 accumulation — the CPU backend's
 *                      arithmetic, so a bf16 checkpoint decodes the same tokens on both. The bias
 *                      is fused (one launch per matmul: decode is launch-bound at small sizes).
 *                      T = 1 is a GEMV that reads every weight byte once, which is what bounds
 *                      decode speed; otherwise each pass over a weight row serves TB = 8 rows.
 *   T > 8, F32         cuBLAS SGEMM in CUBLAS_PEDANTIC_MATH (no TF32: inputs are not rounded to
 *                      10-bit mantissas), fp32 accumulation; bias by a broadcast kernel.
 *   8 < T <= 128, F16 / BF16  the same hand-written kernel (fp32 activations: parity with the CPU).
 *   T > 128, F16 / BF16       cublasGemmEx on tensor cores: activations rounded to the weight
 *                      dtype, fp32 accumulation (CUBLAS_COMPUTE_32F). The rounding of the
 *                      activations departs from the CPU (relative ~2^-8 per product for BF16,
 *                      2^-11 for F16, so |error| ~ 2^-9 sqrt(K) |x| |w| for BF16; docs/cuda.md).
 *                      CV_MM_GEMMEX_T is the threshold: short prompts and decode keep the CPU's
 *                      arithmetic, long prefills (where the GEMM is compute bound) get tensor
 * cores. Quantized (INT8 / NF4): T <= 64 the fused dequant-GEMV; 64 < T <= 128 dequantize row tiles
 * of at most CV_MM_QTILE elements to fp32 + SGEMM per tile (bit-for-bit the CPU's dequantized
 * values); T > 128 dequantize row tiles to bf16 + cublasGemmEx (the BF16 route's error). The
 * scratch stays bounded (64 MiB fp32 / 32 MiB bf16 per tile plus the activations) instead of
 * expanding the whole matrix (2 GiB fp32 for a 128256 x 4096 head).
 * cv_cuda_set_variant("matmul", 1) sends every dense dtype through the kernel; 2 sends every dense
 * dtype through cuBLAS (F16/BF16: cublasGemmEx at any T). */
#include "common.cuh"

extern "C" {
#include "corevital/quant_cuda.h"
}

/* F16 / BF16 weights with T above this take cublasGemmEx (auto route). */
#define CV_MM_GEMMEX_T 128
/* Quantized prefill: elements per dequantized row tile (16 Mi: 64 MiB fp32, 32 MiB bf16). */
#define CV_MM_QTILE (16ll << 20)

/* 16 bytes of weights widened to fp32: 4 F32 or 8 F16/BF16 values. */
template <typename WT> struct cv_vec16 {
    static constexpr int E = 16 / (int)sizeof(WT);
    static __device__ __forceinline__ void load(const WT *p, float *o) {
        uint4 raw = *reinterpret_cast<const uint4 *>(p);
        const WT *e = reinterpret_cast<const WT *>(&raw);
#pragma unroll
        for (int i = 0; i < E; i++) o[i] = cv_to_f32<WT>(e[i]);
    }
};

/* One warp per weight row n; query rows in chunks of TB. `vec`: K is a multiple of the vector
 * width and every row start is 16-byte aligned (checked by the host). */
template <typename WT, int TB>
__global__ void mm_rows_kernel(float *__restrict__ out, const float *__restrict__ x,
                               const WT *__restrict__ W, const float *__restrict__ bias, int T,
                               int N, int K, int vec) {
    const int n = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (n >= N) return; /* warp-uniform */
    const WT *wr = W + (size_t)n * K;
    const float b = bias ? bias[n] : 0.0f;
    constexpr int E = cv_vec16<WT>::E;
    for (int t0 = 0; t0 < T; t0 += TB) {
        const int nt = min(TB, T - t0);
        float acc[TB];
#pragma unroll
        for (int i = 0; i < TB; i++) acc[i] = 0.0f;
        if (vec) {
            for (int k = lane * E; k < K; k += 32 * E) {
                float wv[E];
                cv_vec16<WT>::load(wr + k, wv);
#pragma unroll
                for (int i = 0; i < TB; i++) {
                    if (i < nt) {
                        const float4 *xp =
                            reinterpret_cast<const float4 *>(x + (size_t)(t0 + i) * K + k);
#pragma unroll
                        for (int j = 0; j < E / 4; j++) {
                            float4 xv = xp[j];
                            acc[i] += xv.x * wv[4 * j] + xv.y * wv[4 * j + 1] +
                                      xv.z * wv[4 * j + 2] + xv.w * wv[4 * j + 3];
                        }
                    }
                }
            }
        } else {
            for (int k = lane; k < K; k += 32) {
                float wv = cv_to_f32<WT>(wr[k]);
#pragma unroll
                for (int i = 0; i < TB; i++)
                    if (i < nt) acc[i] += x[(size_t)(t0 + i) * K + k] * wv;
            }
        }
#pragma unroll
        for (int i = 0; i < TB; i++) {
            if (i < nt) {
                float s = cv_warp_sum_f(acc[i]);
                if (lane == 0) out[(size_t)(t0 + i) * N + n] = s + b;
            }
        }
    }
}

/* The gated MLP's first half at T = 1 (gate_up_silu): one warp per output row n computes the
 * gate and up dot products with mm_rows_kernel's loop (per lane the same accumulation order, the
 * same warp reduction, the same "+ 0" of a missing bias), then silu(g) * u with act_kernel's
 * formula: one launch for what the unfused route does in three. */
__device__ __forceinline__ float mm_silu1(float v) {
    return v / (1.0f + expf(-v));
}

template <typename WT>
__global__ void mm_gate_up_silu_kernel(float *__restrict__ out, const float *__restrict__ x,
                                       const WT *__restrict__ Wg, const WT *__restrict__ Wu, int N,
                                       int K, int vec) {
    const int n = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (n >= N) return; /* warp-uniform */
    const WT *gr = Wg + (size_t)n * K, *ur = Wu + (size_t)n * K;
    constexpr int E = cv_vec16<WT>::E;
    float ag = 0.0f, au = 0.0f;
    if (vec) {
        for (int k = lane * E; k < K; k += 32 * E) {
            float gv[E], uv[E];
            cv_vec16<WT>::load(gr + k, gv);
            cv_vec16<WT>::load(ur + k, uv);
            const float4 *xp = reinterpret_cast<const float4 *>(x + k);
#pragma unroll
            for (int j = 0; j < E / 4; j++) {
                float4 xv = xp[j];
                ag += xv.x * gv[4 * j] + xv.y * gv[4 * j + 1] + xv.z * gv[4 * j + 2] +
                      xv.w * gv[4 * j + 3];
                au += xv.x * uv[4 * j] + xv.y * uv[4 * j + 1] + xv.z * uv[4 * j + 2] +
                      xv.w * uv[4 * j + 3];
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            ag += x[k] * cv_to_f32<WT>(gr[k]);
            au += x[k] * cv_to_f32<WT>(ur[k]);
        }
    }
    const float g = cv_warp_sum_f(ag) + 0.0f, u = cv_warp_sum_f(au) + 0.0f;
    if (lane == 0) out[n] = mm_silu1(g) * u;
}

__global__ void bias_add_kernel(float *out, const float *bias, size_t T, int N) {
    size_t total = T * (size_t)N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % (size_t)N];
}

template <typename WT> __global__ void to_half_kernel(WT *dst, const float *src, size_t n);
template <> __global__ void to_half_kernel<__half>(__half *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}
template <>
__global__ void to_half_kernel<__nv_bfloat16>(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

template <typename WT>
static void launch_rows(cv_cuda_ctx *c, float *out, const float *x, const cv_weight *w,
                        const float *bias, int T) {
    const int N = (int)w->rows, K = (int)w->cols;
    constexpr int E = cv_vec16<WT>::E;
    int vec = K % E == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)w->data & 15) == 0;
    const unsigned threads = 256, rows_per_block = threads / 32;
    unsigned blocks = (unsigned)((N + rows_per_block - 1) / rows_per_block);
    const WT *W = static_cast<const WT *>(w->data);
    if (T == 1)
        mm_rows_kernel<WT, 1><<<blocks, threads, 0, c->stream>>>(out, x, W, bias, T, N, K, vec);
    else
        mm_rows_kernel<WT, 8><<<blocks, threads, 0, c->stream>>>(out, x, W, bias, T, N, K, vec);
    CV_CUDA_LAUNCHED(c, "matmul kernel");
}

static void add_bias(cv_cuda_ctx *c, float *out, const float *bias, int T, int N) {
    if (!bias) return;
    size_t n = (size_t)T * (size_t)N;
    bias_add_kernel<<<cv_cuda_blocks(n, 256), 256, 0, c->stream>>>(out, bias, (size_t)T, N);
    CV_CUDA_LAUNCHED(c, "matmul bias");
}

static void cublas_check(cv_cuda_ctx *c, cublasStatus_t s, const char *what) {
    if (s != CUBLAS_STATUS_SUCCESS) cv_cuda_report(c, what, cublasGetStatusString(s));
}

/* Column-major view: out^T (N x T, ld N) = W^T (W stored K x N col-major, ld K) . x^T (K x T). */
static void cublas_f32(cv_cuda_ctx *c, float *out, const float *x, const cv_weight *w,
                       const float *bias, int T) {
    const int N = (int)w->rows, K = (int)w->cols;
    const float one = 1.0f, zero = 0.0f;
    cublas_check(c,
                 cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one,
                             static_cast<const float *>(w->data), K, x, K, &zero, out, N),
                 "cublasSgemm");
    add_bias(c, out, bias, T, N);
}

template <typename WT>
static void cublas_16(cv_cuda_ctx *c, float *out, const float *x, const cv_weight *w,
                      const float *bias, int T, cudaDataType_t dt) {
    const int N = (int)w->rows, K = (int)w->cols;
    size_t n = (size_t)T * (size_t)K;
    WT *xs = static_cast<WT *>(cv_cuda_scratch(c, n * sizeof(WT)));
    if (!xs) return;
    to_half_kernel<WT><<<cv_cuda_blocks(n, 256), 256, 0, c->stream>>>(xs, x, n);
    CV_CUDA_LAUNCHED(c, "matmul activation rounding");
    const float one = 1.0f, zero = 0.0f;
    /* tensor cores welcome here: products of 16-bit inputs are exact, accumulation is fp32 */
    cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH);
    cublas_check(c,
                 cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w->data, dt, K,
                              xs, dt, K, &zero, out, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
    cublasSetMathMode(c->cublas, CUBLAS_PEDANTIC_MATH);
    add_bias(c, out, bias, T, N);
}

static long long gcd_ll(long long a, long long b) {
    while (b) {
        long long t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Rows of W (N, K) dequantized per tile: at most CV_MM_QTILE elements (but at least one step),
 * a multiple of `step` rows so that every NF4 tile starts on an absmax block and a whole byte:
 * tile n0 .. n0 + rows - 1 is then the plain launchers' input at offset pointers. */
static int quant_tile_rows(const cv_weight *w, int N, int K) {
    long long step = 1;
    if (w->format == CV_WFMT_NF4) {
        long long L = (w->block & 1) ? 2ll * w->block : (long long)w->block;
        step = L / gcd_ll((long long)K, L);
    }
    long long rows = CV_MM_QTILE / (K > 0 ? K : 1) / step * step;
    if (rows < step) rows = step;
    if (rows > N) rows = N;
    return (int)rows;
}

/* Dequantize rows n0 .. n0 + nt - 1 of w into tile (fp32 or bf16). */
static int dequant_tile(void *tile, int bf16, const cv_weight *w, int n0, int nt, int K,
                        cudaStream_t s) {
    if (w->format == CV_WFMT_INT8) {
        const int8_t *q = static_cast<const int8_t *>(w->data) + (size_t)n0 * K;
        return bf16 ? cv_cuda_dequant_int8_bf16(static_cast<uint16_t *>(tile), q, w->scales + n0,
                                                nt, K, s)
                    : cv_cuda_dequant_int8_f32(static_cast<float *>(tile), q, w->scales + n0, nt, K,
                                               s);
    }
    if (w->block <= 0) return (int)cudaErrorInvalidValue;
    const int64_t e0 = (int64_t)n0 * K, n = (int64_t)nt * K;
    const uint8_t *p = static_cast<const uint8_t *>(w->data) + e0 / 2;
    const float *am = w->scales + e0 / w->block;
    return bf16 ? cv_cuda_dequant_nf4_bf16(static_cast<uint16_t *>(tile), p, am, n, w->block, s)
                : cv_cuda_dequant_nf4_f32(static_cast<float *>(tile), p, am, n, w->block, s);
}

/* INT8 / NF4 weights (kernels/quant.cu): T <= 64 the fused dequant-GEMV (fp32 accumulation,
 * the CPU's arithmetic); longer prefills dequantize bounded row tiles (fp32 + SGEMM up to
 * CV_MM_GEMMEX_T, bf16 + GemmEx above) and write each tile's columns of out (ld N). */
static void quant_matmul(cv_cuda_ctx *c, float *out, const float *x, const cv_weight *w,
                         const float *bias, int T) {
    const int N = (int)w->rows, K = (int)w->cols;
    int rc = 0;
    if (T <= 64) {
        rc = cv_cuda_quant_gemv(out, x, w->data, w->scales, bias, (int)w->format, T, N, K, w->block,
                                c->stream);
        if (rc != 0) cv_cuda_report(c, "quantized matmul", cudaGetErrorString((cudaError_t)rc));
        return;
    }
    const int bf16 = T > CV_MM_GEMMEX_T;
    const int R = quant_tile_rows(w, N, K);
    const size_t xbytes = bf16 ? ((size_t)T * K * sizeof(__nv_bfloat16) + 255) / 256 * 256 : 0;
    const size_t tbytes = (size_t)R * K * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
    char *scr = static_cast<char *>(cv_cuda_scratch(c, xbytes + tbytes));
    if (!scr) return;
    __nv_bfloat16 *xs = reinterpret_cast<__nv_bfloat16 *>(scr);
    void *tile = scr + xbytes;
    if (bf16) {
        size_t n = (size_t)T * K;
        to_half_kernel<__nv_bfloat16><<<cv_cuda_blocks(n, 256), 256, 0, c->stream>>>(xs, x, n);
        CV_CUDA_LAUNCHED(c, "matmul activation rounding");
        cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH);
    }
    const float one = 1.0f, zero = 0.0f;
    for (int n0 = 0; n0 < N && rc == 0; n0 += R) {
        const int nt = N - n0 < R ? N - n0 : R;
        rc = dequant_tile(tile, bf16, w, n0, nt, K, c->stream);
        if (rc != 0) break;
        /* out^T (N x T, ld N) rows n0..: W_tile^T (K x nt col-major, ld K) . x^T (K x T) */
        if (bf16)
            cublas_check(c,
                         cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, nt, T, K, &one, tile,
                                      CUDA_R_16BF, K, xs, CUDA_R_16BF, K, &zero, out + n0,
                                      CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         "cublasGemmEx (quantized tile)");
        else
            cublas_check(c,
                         cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, nt, T, K, &one,
                                     static_cast<const float *>(tile), K, x, K, &zero, out + n0, N),
                         "cublasSgemm (quantized tile)");
    }
    if (bf16) cublasSetMathMode(c->cublas, CUBLAS_PEDANTIC_MATH);
    if (rc != 0) {
        cv_cuda_report(c, "quantized matmul", cudaGetErrorString((cudaError_t)rc));
        return;
    }
    add_bias(c, out, bias, T, N);
}

template <typename WT>
static void launch_gate_up(cv_cuda_ctx *c, float *out, const float *x, const cv_weight *wg,
                           const cv_weight *wu) {
    const int N = (int)wg->rows, K = (int)wg->cols;
    constexpr int E = cv_vec16<WT>::E;
    int vec = K % E == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)wg->data & 15) == 0 &&
              ((uintptr_t)wu->data & 15) == 0;
    const unsigned threads = 256, rows_per_block = threads / 32;
    unsigned blocks = (unsigned)((N + rows_per_block - 1) / rows_per_block);
    mm_gate_up_silu_kernel<WT><<<blocks, threads, 0, c->stream>>>(
        out, x, static_cast<const WT *>(wg->data), static_cast<const WT *>(wu->data), N, K, vec);
    CV_CUDA_LAUNCHED(c, "gate_up_silu kernel");
}

/* gate_up_silu (CPU twin cpu_gate_up_silu: matmul, matmul, silu_mul): fused for a dense decode
 * row on the hand-written kernel's route; every other case (quantized weights, T > 1, the
 * cuBLAS variant, mismatched shapes or dtypes) is the three ops. */
void cv_cuda_gate_up_silu(cv_backend *b, float *gate, float *up, const float *x,
                          const cv_weight *wg, const cv_weight *wu, int T) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || wg->rows <= 0) return;
    const int fuse = T == 1 && wg->format == CV_WFMT_DENSE && wu->format == CV_WFMT_DENSE &&
                     wg->dtype == wu->dtype && wg->rows == wu->rows && wg->cols == wu->cols &&
                     c->mm_variant != CV_MM_CUBLAS;
    if (fuse && wg->dtype == CV_DT_F32) return launch_gate_up<float>(c, gate, x, wg, wu);
    if (fuse && wg->dtype == CV_DT_F16) return launch_gate_up<__half>(c, gate, x, wg, wu);
    if (fuse && wg->dtype == CV_DT_BF16) return launch_gate_up<__nv_bfloat16>(c, gate, x, wg, wu);
    cv_cuda_matmul(b, gate, x, wg, NULL, T);
    cv_cuda_matmul(b, up, x, wu, NULL, T);
    cv_cuda_silu_mul(b, gate, up, (size_t)T * (size_t)wg->rows);
}

void cv_cuda_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w,
                    const float *bias, int T) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || w->rows <= 0) return;
    if (w->format != CV_WFMT_DENSE) {
        quant_matmul(c, out, x, w, bias, T);
        return;
    }
    const int auto_cublas = w->dtype == CV_DT_F32 ? T > 8 : T > CV_MM_GEMMEX_T;
    const int use_cublas =
        c->mm_variant == CV_MM_CUBLAS || (c->mm_variant == CV_MM_AUTO && auto_cublas);
    switch (w->dtype) {
    case CV_DT_F32:
        if (use_cublas)
            cublas_f32(c, out, x, w, bias, T);
        else
            launch_rows<float>(c, out, x, w, bias, T);
        break;
    case CV_DT_F16:
        if (use_cublas)
            cublas_16<__half>(c, out, x, w, bias, T, CUDA_R_16F);
        else
            launch_rows<__half>(c, out, x, w, bias, T);
        break;
    case CV_DT_BF16:
        if (use_cublas)
            cublas_16<__nv_bfloat16>(c, out, x, w, bias, T, CUDA_R_16BF);
        else
            launch_rows<__nv_bfloat16>(c, out, x, w, bias, T);
        break;
    default:
        cv_cuda_report(c, "matmul", "weight dtype must be F32, F16 or BF16");
    }
}
