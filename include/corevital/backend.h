/* backend.h — the op table every model family is written against.
 *
 * A family file (src/model/gpt2.c, llama.c, t5.c) never touches a backend directly: it calls
 * these ops through a cv_backend, so the same forward pass runs on the CPU (src/backend/cpu*.c,
 * OpenMP) and on CUDA (kernels/ *.cu files). Pointers passed to ops (activations, weights, KV
 * cache, statistic records) are backend memory: host memory on the CPU, device memory on CUDA.
 *
 * Conventions: activations are fp32, row-major, one row per position: (T, C). Matrix weights are
 * stored as nn.Linear does, (out, in) row-major, in the checkpoint's dtype (F32, F16, BF16) or
 * quantized (int8 rows, NF4 blocks); y = x . W^T + b. Statistic records are described in stats.h;
 * a NULL record pointer means "not summarized". */
#ifndef COREVITAL_BACKEND_H
#define COREVITAL_BACKEND_H

#include "corevital/common.h"
#include "corevital/dtype.h"
#include "corevital/stats.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { CV_WFMT_DENSE = 0, CV_WFMT_INT8, CV_WFMT_NF4 } cv_weight_format;

/* A matrix weight (out, in). Dense: `data` holds rows*cols elements of `dtype`.
 * INT8: `data` int8 (rows, cols), `scales` one fp32 absmax/127 per row.
 * NF4: `data` packed codes, two per byte (first in the high nibble), `scales` one fp32 absmax per
 * block of `block` consecutive weights of the row-major flattened matrix (bitsandbytes'
 * layout; blocks align with rows when cols % block == 0). */
typedef struct {
    const void *data;
    const float *scales;
    cv_dtype dtype;
    cv_weight_format format;
    int64_t rows, cols;
    int block;
    /* 1: a product over more than one row (prefill, the encoder, the prompt analysis' LM head)
     * rounds x and W to bf16 and runs on the BF16 dot-product instruction, accumulating in fp32
     * (model.prefill_dtype bfloat16, dense weights, where the backend has prefill_bf16); one-row
     * products (decode) stay exact */
    int prefill_bf16;
    void *owned; /* backend memory to release with the weight, or NULL (e.g. mmap-backed) */
} cv_weight;

/* Arguments of one attention call: T query rows against the keys/values held in a cache.
 * Query t sits at position q_pos0 + t; when causal it sees keys 0..q_pos0+t, otherwise all
 * n_keys. Query head h reads kv head h / (n_heads / n_kv_heads) (GQA, repeat-interleave). */
typedef struct {
    float *out;         /* (T, out_stride): head h written at h*head_dim */
    const float *q;     /* (T, q_stride): head h at h*head_dim */
    const float *k, *v; /* (n_keys, kv_stride): kv head g at g*head_dim */
    /* a bf16 cache instead (--kv-dtype bf16): when k16 is set, k16 / v16 hold the keys and
     * values in the layout above and k / v are unused; scores and sums stay fp32 */
    const uint16_t *k16, *v16;
    int q_stride, kv_stride, out_stride;
    /* elements from kv head g to g + 1 in k / v: 0 means head_dim (heads side by side in a row,
     * the projection's layout); a head-major cache (n_ctx * head_dim, kv_stride head_dim) gives
     * each head's keys contiguously, so decode streams them (backends with kv_head_major) */
    int kv_head_stride;
    int T, n_keys, q_pos0;
    int n_heads, n_kv_heads, head_dim;
    int causal;
    float scale; /* multiplies q.k (1/sqrt(head_dim); 1 for T5) */
    /* added to the scores (T5's position bias), or NULL: a function of key - query only, held
     * as one diagonal per head, (n_heads, T + n_keys - 1), the bias of query t at key k being
     * bias[h][k - t + T - 1] (cv_attn_bias_row), so that no (T x n_keys) matrix is formed */
    const float *bias;
    double *stats; /* attention record (stats.h) or NULL */
    /* health (stats.h): per-head records (n_heads x CV_AH_SIZE) fed by query rows t >= heads_from,
     * or NULL; basin sums (n_heads x 2: per head, the sum over all query rows of the probability
     * mass on keys [basin_lo, basin_hi) and off it), or NULL */
    double *heads;
    int heads_from;
    double *basin;
    int basin_lo, basin_hi;
    /* sparse prompt attention (n_heads x CV_SPARSE_SLOTS, stats.h), over every query row, or
     * NULL; filled (not accumulated) by the per-row kernel */
    double *sparse;
    float *probs; /* (n_heads, T, n_keys) probabilities written out (tests), or NULL */
    /* The step's position in backend memory (backend.h CV_SP_POS), or NULL. When set, the
     * backend reads q_pos0 = dpos[0] and n_keys = dpos[0] + T there, and the host q_pos0 /
     * n_keys are upper bounds (n_keys: the cache capacity, q_pos0 = n_keys - T) that size the
     * launches, so the call is the same at every position. bias and probs must then be NULL. */
    const int32_t *dpos;
} cv_attn_args;

/* Query row t's bias over keys 0..n_keys-1 under head h (cv_attn_args.bias), or NULL. */
static inline const float *cv_attn_bias_row(const cv_attn_args *a, int h, int t) {
    return a->bias ? a->bias + (size_t)h * (size_t)(a->T + a->n_keys - 1) + (size_t)(a->T - 1 - t)
                   : NULL;
}

/* Decode-step parameters: a few int32 words in backend memory that the generation loop keeps on
 * the backend between greedy steps. [CV_SP_TOKEN] is the step's input token (written by
 * pick_greedy), [CV_SP_POS] its position. Ops given a `dpos` pointer (step + CV_SP_POS) read the
 * position there, on the device, instead of their host position argument, so one decode step is
 * the same sequence of launches with the same arguments at every position (CUDA graph replay). */
enum { CV_SP_TOKEN = 0, CV_SP_POS = 1, CV_SP_WORDS = 4 };

typedef struct cv_backend cv_backend;
struct cv_backend {
    const char *name; /* "cpu" or "cuda" */
    void *ctx;
    int kv_head_major; /* 1: its KV caches are head-major (kv_store, kv_head_stride: the CPU) */
    int kv_bf16;       /* 1: kv_store and attention take a bf16 cache (k16 / v16: the CPU) */
    int prefill_bf16;  /* 1: matmul honours cv_weight.prefill_bf16 (the CPU with AVX512-BF16) */
    int host_weights;  /* 1: weight_upload keeps the host pointer and reads it (the CPU) */

    /* memory */
    void *(*alloc)(cv_backend *b, size_t bytes); /* zero-filled; NULL on failure */
    void (*free)(cv_backend *b, void *p);
    void (*upload)(cv_backend *b, void *dst, const void *src, size_t bytes);
    void (*download)(cv_backend *b, void *dst, const void *src, size_t bytes);
    void (*memset0)(cv_backend *b, void *dst, size_t bytes);
    void (*copy)(cv_backend *b, void *dst, const void *src, size_t bytes); /* within the backend */
    /* Store T new rows src (T, heads * hd) fp32 at positions p0.. of one layer's KV cache dst
     * of dtype dt (F32, or BF16 rounded to nearest even like cv_f32_to_bf16; BF16 only where
     * kv_bf16), laid out (heads, n_ctx, hd) when the backend is kv_head_major, else
     * (n_ctx, heads * hd); p0 = dpos[0] (backend memory: the decode step's position, CV_SP_POS)
     * when dpos is not NULL, else pos0. NULL where the backend only has an fp32 interleaved
     * cache (its forward writes the cache directly). */
    void (*kv_store)(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                     int hd, int n_ctx, int pos0, const int32_t *dpos);
    /* Make a host matrix (out, in) of dtype F32/F16/BF16 resident. `host` may be used in place when
     * the backend can (CPU and mmap), so it must outlive the weight. */
    cv_status (*weight_upload)(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                               int64_t rows, int64_t cols, cv_error *err);
    /* Make an already quantized matrix resident: INT8 (data int8 (rows, cols), scales (rows)) or
     * NF4 (data ((rows * cols + 1) / 2) packed bytes, scales (ceil(rows * cols / block))). Copies.
     */
    cv_status (*weight_upload_quant)(cv_backend *b, cv_weight *w, const void *data,
                                     const float *scales, cv_weight_format format, int64_t rows,
                                     int64_t cols, int block, cv_error *err);
    void (*weight_free)(cv_backend *b, cv_weight *w);
    void (*sync)(cv_backend *b);
    /* Optional (NULL: malloc / free): host memory the backend downloads into fastest (CUDA:
     * pinned, so a step's download is one DMA with no staging copy). Not zero-filled. */
    void *(*host_alloc)(cv_backend *b, size_t bytes);
    void (*host_free)(cv_backend *b, void *p);

    /* out (T, C) = wte[tokens[t]] * scale (+ wpe[p0 + t] when wpe) — embeddings dense (V, C);
     * p0 = dpos[0] (backend memory) when dpos is not NULL, else pos0. tokens may be host or
     * backend memory (the step words' CV_SP_TOKEN) */
    void (*embedding)(cv_backend *b, float *out, const int32_t *tokens, int T, const cv_weight *wte,
                      const cv_weight *wpe, int pos0, const int32_t *dpos, float scale);
    /* out (T, N) = x (T, K) . W^T (+ bias (N)); W (N, K) */
    void (*matmul)(cv_backend *b, float *out, const float *x, const cv_weight *w, const float *bias,
                   int T);
    /* Optional (NULL: three matmul calls; use cv_matmul3): out[i] (T, w[i]->rows) = x . w[i]^T
     * (+ bias[i] where bias and bias[i] are not NULL) for i < 3, three products of one x (the
     * attention's q, k and v projections), equal to three matmul calls. The CPU runs a long
     * prefill's three as one pass. */
    void (*matmul3)(cv_backend *b, float *const out[3], const float *x, const cv_weight *const w[3],
                    const float *const bias[3], int T);
    /* out (T, C) = layernorm(x) * w + bias (biased variance, eps inside sqrt); hidden stats of out
     */
    void (*layernorm)(cv_backend *b, float *out, const float *x, const float *w, const float *bias,
                      int T, int C, float eps, double *hstats);
    /* out (T, C) = x * rsqrt(mean(x^2) + eps) * w; hidden stats of out */
    void (*rmsnorm)(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                    float eps, double *hstats);
    /* x (T, C) += y (T, C); hidden stats of the sum */
    void (*residual_add)(cv_backend *b, float *x, const float *y, int T, int C, double *hstats);
    /* in place over n values */
    void (*gelu_tanh)(cv_backend *b, float *x, size_t n);
    void (*relu)(cv_backend *b, float *x, size_t n);
    /* gate (T, N) = act(gate) * up, act = silu or gelu_tanh; strides in floats */
    void (*silu_mul)(cv_backend *b, float *gate, const float *up, size_t n);
    /* The gated MLP's first half in one op: gate (T, N) = silu(x . Wg^T) * (x . Wu^T), x (T, K),
     * Wg and Wu (N, K); up (T, N) is scratch the op may overwrite. Exactly matmul(gate, Wg),
     * matmul(up, Wu), silu_mul(gate, up) (the CPU runs those; CUDA fuses dense T = 1 into one
     * launch with the same per-row arithmetic). */
    void (*gate_up_silu)(cv_backend *b, float *gate, float *up, const float *x, const cv_weight *wg,
                         const cv_weight *wu, int T);
    void (*gelu_mul)(cv_backend *b, float *gate, const float *up, size_t n);
    /* Rotate-half RoPE in place on x (T, stride), heads n_heads of head_dim at h*head_dim, for
     * positions p0..p0+T-1 (p0 = dpos[0] in backend memory when dpos, else pos0); inv_freq
     * (head_dim/2) in backend memory. */
    void (*rope)(cv_backend *b, float *x, int T, int stride, int n_heads, int head_dim,
                 const float *inv_freq, int pos0, const int32_t *dpos);
    /* T5 relative position bias from table (num_buckets, H) for query positions q_pos0.. and key
     * positions 0..K-1, in cv_attn_args.bias's layout: out (H, T + K - 1), out[h][d] the bias of
     * the query t and key k with k - t = d - (T - 1), table[bucket(k - (q_pos0 + t))][h]. */
    void (*t5_position_bias)(cv_backend *b, float *out, const float *table, int H, int T, int K,
                             int q_pos0, int bidirectional, int num_buckets, int max_distance);
    void (*attention)(cv_backend *b, const cv_attn_args *a);
    /* One-pass logits statistics over the row (V) into a logits record (stats.h). */
    void (*logits_stats)(cv_backend *b, double *rec, const float *logits, int V, int topk);
    /* acc[0] += sum over rows t of cos(a[t], b[t]), a and b (T, C), each norm floored at 1e-8
     * (torch's cosine_similarity); double accumulation, rows in order */
    void (*row_cos)(cv_backend *b, double *acc, const float *a, const float *x, int T, int C);
    /* out[t] = ln softmax(logits[t])[targets[t]] over V, in double, for t < T; targets on the host,
     * out in backend memory */
    void (*target_logprob)(cv_backend *b, double *out, const float *logits, int T, int V,
                           const int32_t *targets);
    /* Online log-softmax over vocabulary slices: logits (T, n) are columns col0..col0+n-1 of T
     * rows; state (T x 3 doubles: running max, running sum of e^(l - max), the target's logit;
     * start from {-inf, 0, NaN}) is updated in place, the target logit taken when targets[t]
     * falls in the slice (targets on the host). A NaN or +inf logit makes the row's max NaN. The
     * row's log-probability is then target - (max + ln sum). */
    void (*logprob_accum)(cv_backend *b, double *state, const float *logits, int T, int n, int col0,
                          const int32_t *targets);
    /* Optional (NULL: not offered): out[t] = ln softmax(x[t] . w^T)[targets[t]] for t < T, the LM
     * head and the log-softmax fused, with no (T x V) logits stored; x (T, w->cols) and out in
     * backend memory, targets on the host; NaN where a logit is NaN or +inf or the target is
     * outside [0, w->rows). Returns 0, writing nothing, where it does not apply (the caller then
     * slices the head through matmul + logprob_accum). */
    int (*head_logprob)(cv_backend *b, double *out, const float *x, const cv_weight *w, int T,
                        const int32_t *targets);
    /* index of the largest logit (first on ties) — greedy decoding without copying the row back;
     * -1 (never a token) when the backend has failed (see status) */
    int32_t (*argmax)(cv_backend *b, const float *logits, int V);
    /* Greedy choice kept on the backend: slot[CV_STEP_TOKEN] = argmax (as argmax; -1 on a failed
     * backend), slot[CV_STEP_LOGIT] = that logit; slot is backend memory (an arena's step slots),
     * copied back with the arena in the step's one download, or NULL. When `step` (decode-step
     * parameters, CV_SP_*, backend memory) is not NULL the choice also becomes the next step's
     * input there: step[CV_SP_TOKEN] = argmax, step[CV_SP_POS] += 1 (the token chosen from the
     * row at position p sits at p + 1), so the next forward reads it without an upload. */
    void (*pick_greedy)(cv_backend *b, const float *logits, int V, double *slot, int32_t *step);
    /* Reset a statistics arena in backend memory to its identities (cv_stats_arena_reset), so a
     * step needs no upload. */
    void (*stats_reset)(cv_backend *b, double *arena, const cv_stats_layout *lay);

    /* Optional step graphs (CUDA graphs; NULL on the CPU, where there is no launch cost to save).
     * graph_begin starts recording the ops that follow instead of running them; it returns 1
     * when recording started, 0 when not (graphs disabled: CV_CUDA_GRAPH=0, or given up after a
     * failure; the ops then simply run). graph_end stops recording: 1 = the graph is ready and
     * NONE of the recorded ops has run yet (graph_launch runs them); 0 = nothing was kept and
     * nothing ran (the recording failed: an op could not be recorded, or instantiation failed;
     * logged once), so the caller issues the same ops again plainly. graph_launch replays the
     * ready graph and returns 1, or 0 when there is none (never made, or dropped because memory
     * it uses was freed or the scratch grew): the caller then issues the ops plainly. Every
     * argument and pointer is fixed at recording: only what the ops read from backend memory
     * changes between replays (the step words of CV_SP_*, the arena, the caches). Between
     * graph_begin and graph_end only ops may be called: no alloc, upload, download, sync,
     * argmax or status. graph_reset drops the graph. */
    int (*graph_begin)(cv_backend *b);
    int (*graph_end)(cv_backend *b);
    int (*graph_launch)(cv_backend *b);
    void (*graph_reset)(cv_backend *b);

    /* Errors. Ops return nothing and may run asynchronously, so a backend that can fail (CUDA:
     * a device fault, a failed launch or allocation) keeps the first failure, sticky, and stops
     * doing work; status() returns CV_OK or that failure with its message ("cuda: attention:
     * cudaErrorIllegalAddress (...)"). Callers check it once per step, after the step's
     * downloads, before trusting what they copied back. The CPU backend always answers CV_OK. */
    cv_status (*status)(cv_backend *b, cv_error *err);

    void (*destroy)(cv_backend *b);
};

/* The CPU backend (OpenMP; threads from OMP_NUM_THREADS / omp_set_num_threads). */
cv_backend *cv_backend_cpu_create(void);
/* The CUDA backend on device `device` (NULL with err set when CUDA is not built or no GPU). */
cv_backend *cv_backend_cuda_create(int device, cv_error *err);
/* 1 when this build has CUDA and a usable GPU is present. */
int cv_cuda_available(void);
/* CUDA only (stubs elsewhere): pick a kernel version for an op ("matmul": 0 auto, 1 own kernel,
 * 2 cuBLAS; returns -1 when unknown or not CUDA), and the stream ops run on (for event timing). */
int cv_cuda_set_variant(cv_backend *b, const char *op, int v);
void *cv_cuda_stream(cv_backend *b);
/* CUDA only, for debugging and tests: what = "sync" (v = 1: wait for the stream after every op,
 * so an asynchronous fault is blamed on the op that raised it; also CV_CUDA_SYNC=1) or
 * "fail_scratch" (v = 1: the next growth of the device scratch fails as if out of memory),
 * "graph" (v = 0: no step graphs, as CV_CUDA_GRAPH=0; 1: allowed again) or "launches" (returns
 * the number of kernel launches enqueued so far, a replayed graph counting as one; v = 1 also
 * resets the count).
 * Returns 0 (or the count for "launches"), or -1 when unknown or not CUDA. */
int cv_cuda_debug(cv_backend *b, const char *what, int v);

/* The arguments at the step's position (host-readable dpos: the CPU backend, the naive twin):
 * q_pos0 = dpos[0], n_keys = dpos[0] + T, dpos cleared. */
static inline cv_attn_args cv_attn_at_step(const cv_attn_args *a) {
    cv_attn_args r = *a;
    r.q_pos0 = a->dpos[0];
    r.n_keys = a->dpos[0] + a->T;
    r.dpos = NULL;
    return r;
}

/* Three products of one x (matmul3 where the backend offers it, else three matmul calls). */
static inline void cv_matmul3(cv_backend *b, float *const out[3], const float *x,
                              const cv_weight *const w[3], const float *const bias[3], int T) {
    if (b->matmul3) {
        b->matmul3(b, out, x, w, bias, T);
        return;
    }
    for (int i = 0; i < 3; i++) b->matmul(b, out[i], x, w[i], bias ? bias[i] : NULL, T);
}

/* T5's bucket for a (key - query) distance, in fp32 like transformers' _relative_position_bucket.
 * One definition (src/backend/cpu_backend.c) serves the CPU op and the CUDA bucket table. */
int cv_t5_bucket(int rel, int bidirectional, int num_buckets, int max_distance);

/* Naive twins (tests and bench oracles): plain loops, no threads, double accumulation. */
void cv_matmul_naive(float *out, const float *x, const cv_weight *w, const float *bias, int T);
void cv_attention_naive(const cv_attn_args *a);

#endif
