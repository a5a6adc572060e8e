/* common.cuh — shared by the CUDA backend files (kernels/ *.cu): the backend context, error
 * bookkeeping, device scratch, dtype widening, warp/block reductions, and the entry points each
 * op family file exports to backend_cuda.cu (which assembles the cv_backend table).
 *
 * Threading model: every op of one backend is enqueued on one CUDA stream, in call order, so
 * kernels of consecutive ops never race and scratch buffers can be shared between ops. Ops are
 * asynchronous; only download, argmax and sync wait for the stream. */
#ifndef COREVITAL_KERNELS_COMMON_CUH
#define COREVITAL_KERNELS_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

/* The project headers are C: give their declarations C linkage. */
extern "C" {
#include "corevital/backend.h"
#include "corevital/log.h"
#include "corevital/stats.h"
}

/* Cached T5 relative-position bucket lookups (see elementwise.cu). */
typedef struct {
    int bidirectional, num_buckets, max_distance;
    int range;      /* covers relative positions -range..range */
    int32_t *table; /* device, 2*range+1 bucket ids, index rel + range */
} cv_cuda_bucket_cache;

#define CV_CUDA_BUCKET_SLOTS 4

/* Matmul routes (cv_cuda_set_variant "matmul", or CV_CUDA_MATMUL=kernel|cublas): auto uses the
 * fp32-activation kernel for T <= 8 and for F16/BF16 weights, cuBLAS SGEMM for F32 with T > 8. */
enum { CV_MM_AUTO = 0, CV_MM_KERNEL = 1, CV_MM_CUBLAS = 2 };

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    int sm_count;
    int smem_optin; /* largest dynamic shared memory a block may opt into, bytes */
    void *scratch;  /* device scratch shared by all ops (one stream: no overlap) */
    size_t scratch_cap;
    int32_t *tokens;           /* device staging for token ids handed in from the host */
    const int32_t *dev_tokens; /* the last token pointer found to be device memory */
    size_t tokens_cap;         /* in elements */
    int32_t *pinned;           /* pinned host word for argmax's 4-byte result */
    cv_cuda_bucket_cache buckets[CV_CUDA_BUCKET_SLOTS];
    int n_buckets;
    int mm_variant;
    int attn_smem; /* dynamic shared memory the attention kernel was opened to */
    /* Sticky failure state (first error wins): once a CUDA / cuBLAS call fails, `error` holds
     * "<op>: <what>: <cudaErrorName> (<description>)", every later op returns at once without
     * enqueueing anything (argmax answers -1), and the op table's `status` reports the message. */
    int failed;
    char error[512];
    const char *op;   /* the op table entry being executed (blamed in `error`), or NULL */
    int sync_each;    /* CV_CUDA_SYNC=1 / cv_cuda_debug "sync": wait after every op, so that an
                       * asynchronous fault is blamed on the op whose kernels raised it */
    int fail_scratch; /* test hook (cv_cuda_debug "fail_scratch"): the next scratch growth fails */
    /* CUDA graph of one decode step (backend.h graph_begin / graph_end / graph_launch). While
     * `capturing`, an op that cannot be recorded (scratch growth, host token ids, a capture
     * error from the runtime) sets `capture_broken` instead of the sticky failure: graph_end then
     * discards the capture and the caller runs the ops plainly. `graph_off`: CV_CUDA_GRAPH=0, or
     * a capture / instantiation failed once (logged once): graph_begin answers 0 from then on. */
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    int capturing, capture_broken, graph_off;
    const char *capture_why;     /* what broke the capture, for the one log line */
    unsigned long long launches; /* kernel launches enqueued (cv_cuda_debug "launches") */
} cv_cuda_ctx;

static inline cv_cuda_ctx *cv_cuda_ctx_of(cv_backend *b) {
    return (cv_cuda_ctx *)b->ctx;
}

/* Record a failure in the sticky state (kept only when it is the first one) and log it once.
 * cv_cuda_fail_call is for a cudaError_t: it also clears the runtime's last-error slot, so a
 * non-sticky failure (an out-of-memory answer) is not reported again by the next launch check.
 * cv_cuda_report takes a free-form detail (cuBLAS status strings, host allocation failures). */
void cv_cuda_fail_call(cv_cuda_ctx *c, const char *what, cudaError_t e);
void cv_cuda_report(cv_cuda_ctx *c, const char *what, const char *detail);
#define CV_CUDA_CHECK(c, call)                                                                     \
    do {                                                                                           \
        cudaError_t cv_e_ = (call);                                                                \
        if (cv_e_ != cudaSuccess) cv_cuda_fail_call((c), #call, cv_e_);                            \
    } while (0)
/* After a kernel launch: a bad configuration shows up here, not at the next sync. */
#define CV_CUDA_LAUNCHED(c, name)                                                                  \
    do {                                                                                           \
        (c)->launches++;                                                                           \
        cudaError_t cv_e_ = cudaGetLastError();                                                    \
        if (cv_e_ != cudaSuccess) cv_cuda_fail_call((c), (name), cv_e_);                           \
    } while (0)

/* While a graph is being captured: this op cannot be recorded (`why`); graph_end will discard
 * the capture (no sticky failure: the ops are then run plainly). */
static inline void cv_cuda_capture_broken(cv_cuda_ctx *c, const char *why) {
    if (!c->capture_broken) c->capture_why = why;
    c->capture_broken = 1;
}

/* Device scratch of at least `bytes` (grown by reallocation; cudaFree waits for pending work).
 * NULL when the allocation fails: the failure is then in the sticky state, blamed on the op. */
void *cv_cuda_scratch(cv_cuda_ctx *c, size_t bytes);

static inline unsigned cv_cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 16u) b = 65535u * 16u; /* grid-stride loops cover the rest */
    return (unsigned)(b ? b : 1);
}

/* ---- device helpers ------------------------------------------------------------------------ */

/* One element of a dense row widened to fp32 (exact for F16 / BF16, like cv_elem_f32). */
template <typename WT> __device__ __forceinline__ float cv_to_f32(WT v);
template <> __device__ __forceinline__ float cv_to_f32<float>(float v) {
    return v;
}
template <> __device__ __forceinline__ float cv_to_f32<__half>(__half v) {
    return __half2float(v);
}
template <> __device__ __forceinline__ float cv_to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

__device__ __forceinline__ float cv_warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double cv_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float cv_warp_max_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum of a double; every thread gets the result. `sh` holds 32 doubles. The tree
 * shape is fixed by blockDim, so the result is deterministic for a launch configuration. */
__device__ __forceinline__ double cv_block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cv_warp_sum_d(v);
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return cv_warp_sum_d(v);
}
__device__ __forceinline__ float cv_block_max_f(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cv_warp_max_f(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -3.402823466e38f;
    return cv_warp_max_f(v);
}

/* Total order on (value, id) for top-k and argmax: larger value first, then lower id.
 * Finite values and -inf map to a key > 0; excluded entries use key 0. */
__device__ __forceinline__ unsigned long long cv_rank_key(float v, int id) {
    unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v); /* -0 ties with +0, as `<` sees them */
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (unsigned long long)(0xffffffffu - (unsigned)id);
}
__device__ __forceinline__ int cv_rank_id(unsigned long long key) {
    return (int)(0xffffffffu - (unsigned)(key & 0xffffffffu));
}
__device__ __forceinline__ float cv_rank_value(unsigned long long key) {
    unsigned u = (unsigned)(key >> 32);
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
    return __uint_as_float(u);
}

/* ---- op entry points (defined in the family files) ----------------------------------------- */

/* matmul.cu */
void cv_cuda_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w,
                    const float *bias, int T);
void cv_cuda_gate_up_silu(cv_backend *b, float *gate, float *up, const float *x,
                          const cv_weight *wg, const cv_weight *wu, int T);
/* norms.cu */
void cv_cuda_layernorm(cv_backend *b, float *out, const float *x, const float *w, const float *bias,
                       int T, int C, float eps, double *hstats);
void cv_cuda_rmsnorm(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                     float eps, double *hstats);
void cv_cuda_residual_add(cv_backend *b, float *x, const float *y, int T, int C, double *hstats);
/* elementwise.cu */
void cv_cuda_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                       const cv_weight *wte, const cv_weight *wpe, int pos0, const int32_t *dpos,
                       float scale);
void cv_cuda_gelu_tanh(cv_backend *b, float *x, size_t n);
void cv_cuda_relu(cv_backend *b, float *x, size_t n);
void cv_cuda_silu_mul(cv_backend *b, float *gate, const float *up, size_t n);
void cv_cuda_gelu_mul(cv_backend *b, float *gate, const float *up, size_t n);
void cv_cuda_rope(cv_backend *b, float *x, int T, int stride, int n_heads, int head_dim,
                  const float *inv_freq, int pos0, const int32_t *dpos);
void cv_cuda_kv_store(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                      int hd, int n_ctx, int pos0, const int32_t *dpos);
void cv_cuda_t5_position_bias(cv_backend *b, float *out, const float *table, int H, int T, int K,
                              int q_pos0, int bidirectional, int num_buckets, int max_distance);
void cv_cuda_free_buckets(cv_cuda_ctx *c);
/* attention.cu */
void cv_cuda_attention(cv_backend *b, const cv_attn_args *a);
/* logits.cu */
void cv_cuda_logits_stats(cv_backend *b, double *rec, const float *logits, int V, int topk);
int32_t cv_cuda_argmax(cv_backend *b, const float *logits, int V);
void cv_cuda_pick_greedy(cv_backend *b, const float *logits, int V, double *slot, int32_t *step);
void cv_cuda_stats_reset(cv_backend *b, double *arena, const cv_stats_layout *lay);
void cv_cuda_row_cos(cv_backend *b, double *acc, const float *x, const float *y, int T, int C);
void cv_cuda_target_logprob(cv_backend *b, double *out, const float *logits, int T, int V,
                            const int32_t *targets);
void cv_cuda_logprob_accum(cv_backend *b, double *state, const float *logits, int T, int n,
                           int col0, const int32_t *targets);

#endif
