/* elementwise.cu — the element-wise and gather ops on CUDA: embeddings, gelu_tanh, relu,
 * silu_mul, gelu_mul, rotate-half RoPE and the T5 relative position bias (CPU twins in
 * src/backend/cpu_backend.c, same formulas in fp32: tanhf / expf / cosf / sinf without fast-math).
 *
 * Token ids for the embedding may be host memory (the families pass the caller's array): they are
 * staged into a device buffer with an asynchronous copy on the op stream. The T5 bucket of a
 * relative distance is computed on the host by the CPU backend's own routine (cv_t5_bucket,
 * src/backend/cpu_backend.c) into a lookup table cached on the device per (bidirectional, buckets,
 * max_distance), so the GPU bias is bit-identical to the CPU's and a decode step costs one gather
 * launch, no host work. */
#include "common.cuh"

#include <math.h>
#include <stdlib.h>

/* ---- embeddings ---------------------------------------------------------------------------- */

__device__ __forceinline__ float elem_f32(const void *row, cv_dtype dt, int i) {
    switch (dt) {
    case CV_DT_BF16:
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(row)[i]);
    case CV_DT_F16:
        return __half2float(static_cast<const __half *>(row)[i]);
    default:
        return static_cast<const float *>(row)[i];
    }
}

__global__ void embedding_kernel(float *out, const int32_t *tokens, const void *wte, cv_dtype wdt,
                                 int V, const void *wpe, cv_dtype pdt, int pos0,
                                 const int32_t *dpos, int C, float scale) {
    const int t = blockIdx.x;
    if (dpos) pos0 = *dpos; /* the step's position, on the device */
    const int tok = tokens[t];
    float *o = out + (size_t)t * C;
    const size_t es = wdt == CV_DT_F32 ? 4 : 2, pes = pdt == CV_DT_F32 ? 4 : 2;
    const bool valid = tok >= 0 && tok < V; /* the CPU would read out of bounds: write zeros */
    const char *row = static_cast<const char *>(wte) + (size_t)(valid ? tok : 0) * C * es;
    const char *prow = wpe ? static_cast<const char *>(wpe) + (size_t)(pos0 + t) * C * pes : NULL;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        /* explicit roundings: no fused multiply-add, so the result is the CPU's bit for bit */
        float v = valid ? __fmul_rn(elem_f32(row, wdt, c), scale) : 0.0f;
        if (prow) v = __fadd_rn(v, elem_f32(prow, pdt, c));
        o[c] = v;
    }
}

/* Device pointer to T token ids: used in place when already device memory, else staged. */
static const int32_t *device_tokens(cv_cuda_ctx *c, const int32_t *tokens, int T) {
    /* the decode step's device token (the step words) asks at its first step only: no runtime
     * query inside a graph capture (device and host addresses never alias under UVA) */
    if (tokens == c->dev_tokens) return tokens;
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, tokens) == cudaSuccess &&
        (at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged)) {
        c->dev_tokens = tokens;
        return tokens;
    }
    (void)cudaGetLastError();
    if (c->capturing) { /* a host array would be read once, at recording: never replayed */
        cv_cuda_capture_broken(c, "embedding of host token ids");
        return NULL;
    }
    if ((size_t)T > c->tokens_cap) {
        size_t cap = c->tokens_cap ? c->tokens_cap : 256;
        while (cap < (size_t)T) cap *= 2;
        if (c->tokens) CV_CUDA_CHECK(c, cudaFree(c->tokens));
        c->tokens = NULL;
        c->tokens_cap = 0;
        cudaError_t e = cudaMalloc((void **)&c->tokens, cap * sizeof(int32_t));
        if (e != cudaSuccess) {
            cv_cuda_fail_call(c, "cudaMalloc (token staging)", e);
            c->tokens = NULL;
            return NULL;
        }
        c->tokens_cap = cap;
    }
    CV_CUDA_CHECK(c, cudaMemcpyAsync(c->tokens, tokens, sizeof(int32_t) * (size_t)T,
                                     cudaMemcpyHostToDevice, c->stream));
    return c->tokens;
}

void cv_cuda_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                       const cv_weight *wte, const cv_weight *wpe, int pos0, const int32_t *dpos,
                       float scale) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0) return;
    const int32_t *dt = device_tokens(c, tokens, T);
    if (!dt) return;
    embedding_kernel<<<T, 256, 0, c->stream>>>(out, dt, wte->data, wte->dtype, (int)wte->rows,
                                               wpe ? wpe->data : NULL, wpe ? wpe->dtype : CV_DT_F32,
                                               pos0, dpos, (int)wte->cols, scale);
    CV_CUDA_LAUNCHED(c, "embedding");
}

/* ---- activations --------------------------------------------------------------------------- */

__device__ __forceinline__ float gelu_tanh1(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float silu1(float x) {
    return x / (1.0f + expf(-x));
}

enum { ACT_GELU, ACT_RELU, ACT_SILU_MUL, ACT_GELU_MUL };

template <int ACT> __global__ void act_kernel(float *x, const float *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (ACT == ACT_GELU) v = gelu_tanh1(v);
        if (ACT == ACT_RELU) v = v > 0.0f ? v : 0.0f;
        if (ACT == ACT_SILU_MUL) v = silu1(v) * u[i];
        if (ACT == ACT_GELU_MUL) v = gelu_tanh1(v) * u[i];
        x[i] = v;
    }
}

template <int ACT> static void run_act(cv_backend *b, float *x, const float *u, size_t n) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!n) return;
    act_kernel<ACT><<<cv_cuda_blocks(n, 256), 256, 0, c->stream>>>(x, u, n);
    CV_CUDA_LAUNCHED(c, "activation");
}

void cv_cuda_gelu_tanh(cv_backend *b, float *x, size_t n) {
    run_act<ACT_GELU>(b, x, NULL, n);
}
void cv_cuda_relu(cv_backend *b, float *x, size_t n) {
    run_act<ACT_RELU>(b, x, NULL, n);
}
void cv_cuda_silu_mul(cv_backend *b, float *g, const float *u, size_t n) {
    run_act<ACT_SILU_MUL>(b, g, u, n);
}
void cv_cuda_gelu_mul(cv_backend *b, float *g, const float *u, size_t n) {
    run_act<ACT_GELU_MUL>(b, g, u, n);
}

/* ---- rotary embeddings --------------------------------------------------------------------- */

/* One thread per (t, j, h): rotate the pair (j, j + half) of head h at position pos0 + t. */
__global__ void rope_kernel(float *x, int T, int stride, int n_heads, int head_dim,
                            const float *inv_freq, int pos0, const int32_t *dpos) {
    const int half = head_dim / 2;
    if (dpos) pos0 = *dpos;
    const size_t total = (size_t)T * half * n_heads;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int h = (int)(i % n_heads);
        int j = (int)((i / n_heads) % half);
        int t = (int)(i / ((size_t)n_heads * half));
        float ang = (float)(pos0 + t) * inv_freq[j]; /* fp32, as HF computes freqs */
        float cs = cosf(ang), sn = sinf(ang);
        float *v = x + (size_t)t * stride + (size_t)h * head_dim;
        float a = v[j], bb = v[j + half];
        v[j] = a * cs - bb * sn;
        v[j + half] = bb * cs + a * sn;
    }
}

void cv_cuda_rope(cv_backend *b, float *x, int T, int stride, int n_heads, int head_dim,
                  const float *inv_freq, int pos0, const int32_t *dpos) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    size_t total = (size_t)T * (size_t)(head_dim / 2) * (size_t)n_heads;
    if (!total) return;
    rope_kernel<<<cv_cuda_blocks(total, 256), 256, 0, c->stream>>>(x, T, stride, n_heads, head_dim,
                                                                   inv_freq, pos0, dpos);
    CV_CUDA_LAUNCHED(c, "rope");
}

/* ---- KV cache store (the staged rows of a call, at the host or the device position) -------- */

/* dst rows p0 .. p0 + T - 1 of an interleaved fp32 cache (n_ctx, dim) = src (T, dim), p0 = *dpos
 * when dpos (the decode step's position, read on the device) else pos0. */
__global__ void kv_store_kernel(float *dst, const float *src, size_t tn, size_t dim, int pos0,
                                const int32_t *dpos) {
    const size_t at = (size_t)(dpos ? *dpos : pos0) * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < tn;
         i += (size_t)gridDim.x * blockDim.x)
        dst[at + i] = src[i];
}

/* kv_store (CPU twin cpu_kv_store): CUDA's caches are fp32 and interleaved (kv_head_major 0,
 * kv_bf16 0), so the rows land contiguously; a BF16 cache is refused (model load does too). */
void cv_cuda_kv_store(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                      int hd, int n_ctx, int pos0, const int32_t *dpos) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    (void)n_ctx;
    if (dt != CV_DT_F32) {
        cv_cuda_report(c, "kv_store", "the CUDA backend has no bf16 KV cache");
        return;
    }
    const size_t dim = (size_t)heads * (size_t)hd, tn = (size_t)T * dim;
    if (!tn) return;
    kv_store_kernel<<<cv_cuda_blocks(tn, 256), 256, 0, c->stream>>>(static_cast<float *>(dst), src,
                                                                    tn, dim, pos0, dpos);
    CV_CUDA_LAUNCHED(c, "kv_store");
}

/* ---- T5 relative position bias ------------------------------------------------------------- */

/* A device table of buckets for relative positions -range..range (built on the host once). */
static const int32_t *bucket_table(cv_cuda_ctx *c, int need, int bidirectional, int num_buckets,
                                   int max_distance, int *range_out) {
    cv_cuda_bucket_cache *slot = NULL;
    for (int i = 0; i < c->n_buckets; i++) {
        cv_cuda_bucket_cache *s = &c->buckets[i];
        if (s->bidirectional == bidirectional && s->num_buckets == num_buckets &&
            s->max_distance == max_distance) {
            slot = s;
            break;
        }
    }
    if (slot && slot->range >= need) {
        *range_out = slot->range;
        return slot->table;
    }
    if (!slot) {
        if (c->n_buckets == CV_CUDA_BUCKET_SLOTS) { /* evict the oldest */
            if (c->buckets[0].table) CV_CUDA_CHECK(c, cudaFree(c->buckets[0].table));
            for (int i = 1; i < CV_CUDA_BUCKET_SLOTS; i++) c->buckets[i - 1] = c->buckets[i];
            c->n_buckets--;
        }
        slot = &c->buckets[c->n_buckets++];
        slot->bidirectional = bidirectional;
        slot->num_buckets = num_buckets;
        slot->max_distance = max_distance;
        slot->range = 0;
        slot->table = NULL;
    }
    int range = slot->range > 512 ? slot->range : 512;
    while (range < need) range *= 2;
    size_t n = 2 * (size_t)range + 1;
    int32_t *host = static_cast<int32_t *>(malloc(n * sizeof(int32_t)));
    if (!host) {
        cv_cuda_report(c, "t5_position_bias", "out of host memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        host[i] = cv_t5_bucket((int)i - range, bidirectional, num_buckets, max_distance);
    if (slot->table) CV_CUDA_CHECK(c, cudaFree(slot->table));
    slot->table = NULL;
    slot->range = 0;
    cudaError_t e = cudaMalloc((void **)&slot->table, n * sizeof(int32_t));
    if (e != cudaSuccess) {
        cv_cuda_fail_call(c, "cudaMalloc (T5 buckets)", e);
        slot->table = NULL;
        free(host);
        return NULL;
    }
    /* On the backend's own (non-blocking) stream, ordered before the kernels that read the table:
     * a cudaMemcpy on the legacy stream is not ordered with that stream. From pageable memory
     * the copy is staged before cudaMemcpyAsync returns, so `host` may be freed right after. */
    CV_CUDA_CHECK(c, cudaMemcpyAsync(slot->table, host, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                     c->stream));
    free(host);
    slot->range = range;
    *range_out = range;
    return slot->table;
}

void cv_cuda_free_buckets(cv_cuda_ctx *c) {
    for (int i = 0; i < c->n_buckets; i++)
        if (c->buckets[i].table) cudaFree(c->buckets[i].table);
    c->n_buckets = 0;
}

/* out (H, D = T + K - 1)[h][d] = table[bucket(d - (T - 1) - q_pos0)][h]: one diagonal per head,
 * the bias of query t and key k at d = k - t + T - 1 (backend.h) */
__global__ void t5_bias_kernel(float *out, const float *table, const int32_t *buckets, int range,
                               int H, int T, int K, int q_pos0) {
    const size_t D = (size_t)T + (size_t)K - 1, total = (size_t)H * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % D), h = (int)(i / D);
        int bk = buckets[d - (T - 1) - q_pos0 + range];
        out[i] = table[(size_t)bk * H + h];
    }
}

void cv_cuda_t5_position_bias(cv_backend *b, float *out, const float *table, int H, int T, int K,
                              int q_pos0, int bidirectional, int num_buckets, int max_distance) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (H < 1 || T < 1 || K < 1) return;
    size_t total = (size_t)H * ((size_t)T + (size_t)K - 1);
    int need = q_pos0 + T - 1 > K - 1 ? q_pos0 + T - 1 : K - 1, range = 0;
    const int32_t *bk = bucket_table(c, need, bidirectional, num_buckets, max_distance, &range);
    if (!bk) return;
    t5_bias_kernel<<<cv_cuda_blocks(total, 256), 256, 0, c->stream>>>(out, table, bk, range, H, T,
                                                                      K, q_pos0);
    CV_CUDA_LAUNCHED(c, "t5_position_bias");
}
