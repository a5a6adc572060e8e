/* backend_cuda.cu — the CUDA implementation of the op table (backend.h): device selection,
 * memory, weight upload (kept in the checkpoint's F32 / F16 / BF16; INT8 / NF4 copied as
 * quantized), the stream and cuBLAS handle, and the assembly of the cv_backend table from the op
 * family files (matmul.cu, norms.cu, elementwise.cu, attention.cu, logits.cu; quant.cu).
 *
 * This file is the entry of the CUDA module, libcorevital_cuda.so (src/backend/cuda_module.h):
 * it exports one symbol, cv_cuda_module_entry, the table of available / create / set_variant /
 * stream / debug, which src/backend/cuda_loader.c forwards backend.h's cv_* entry points to.
 * With no GPU (no device, no driver, or CUDA_VISIBLE_DEVICES hiding them all) available() is 0
 * and create returns NULL with a message, so callers can fall back to the CPU. */
#include "common.cuh"

extern "C" {
#include "backend/cuda_module.h"
#include "corevital/quant.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors: the sticky failure state ------------------------------------------------------ */

void cv_cuda_report(cv_cuda_ctx *c, const char *what, const char *detail) {
    if (c->failed) return; /* first error wins: later ones are usually its consequences */
    c->failed = 1;
    snprintf(c->error, sizeof c->error, "%s: %s: %s", c->op ? c->op : "cuda", what, detail);
    CV_ERROR("cuda: %s", c->error);
}

/* The runtime's answers to a call that a stream capture cannot record: not a device fault. */
static int capture_error(cudaError_t e) {
    return e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureInvalidated ||
           e == cudaErrorStreamCaptureMerge || e == cudaErrorStreamCaptureUnmatched ||
           e == cudaErrorStreamCaptureUnjoined || e == cudaErrorStreamCaptureIsolation ||
           e == cudaErrorStreamCaptureImplicit || e == cudaErrorCapturedEvent ||
           e == cudaErrorStreamCaptureWrongThread;
}

void cv_cuda_fail_call(cv_cuda_ctx *c, const char *what, cudaError_t e) {
    (void)cudaGetLastError(); /* a non-sticky error must not be seen again by a later launch */
    if (c->capturing && capture_error(e)) { /* the capture is lost, not the device */
        cv_cuda_capture_broken(c, cudaGetErrorName(e));
        return;
    }
    /* CV_CUDA_CHECK passes the call's text: keep the function name, not its arguments */
    char name[96];
    size_t n = 0;
    while (what[n] && n + 1 < sizeof name && !(what[n] == '(' && n > 0 && what[n - 1] != ' ')) n++;
    memcpy(name, what, n);
    name[n] = '\0';
    char detail[320];
    snprintf(detail, sizeof detail, "%s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    cv_cuda_report(c, name, detail);
}

static void graph_drop(cv_cuda_ctx *c) {
    /* a replay may still be running: let it finish before its graph and memory go */
    if (c->exec && !c->capturing && !c->failed) CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    if (c->exec) cudaGraphExecDestroy(c->exec);
    if (c->graph) cudaGraphDestroy(c->graph);
    c->exec = NULL;
    c->graph = NULL;
}

void *cv_cuda_scratch(cv_cuda_ctx *c, size_t bytes) {
    if (bytes <= c->scratch_cap) return c->scratch;
    if (c->capturing) { /* the recorded kernels hold the old buffer: never free it under them */
        cv_cuda_capture_broken(c, "the device scratch had to grow");
        return NULL;
    }
    graph_drop(c); /* an instantiated graph points into the scratch about to be freed */
    size_t cap = c->scratch_cap ? c->scratch_cap : 1 << 20;
    while (cap < bytes) cap *= 2;
    if (c->scratch) CV_CUDA_CHECK(c, cudaFree(c->scratch)); /* waits for kernels still using it */
    c->scratch = NULL;
    c->scratch_cap = 0;
    cudaError_t e = c->fail_scratch ? cudaErrorMemoryAllocation : cudaMalloc(&c->scratch, cap);
    c->fail_scratch = 0;
    if (e != cudaSuccess) {
        c->scratch = NULL;
        cv_cuda_fail_call(c, "cudaMalloc (scratch)", e); /* blamed on the op that needed it */
        return NULL;
    }
    c->scratch_cap = cap;
    return c->scratch;
}

/* Entry of every op: name it (the sticky error blames it), make the backend's GPU current (the
 * current device belongs to the host thread, and another backend on another GPU may have
 * switched it), and refuse to enqueue anything after a failure. NULL: return at once. */
static cv_cuda_ctx *cu_enter(cv_backend *b, const char *op) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c->failed) return NULL;
    c->op = op;
    CV_CUDA_CHECK(c, cudaSetDevice(c->device)); /* cheap when it is already current */
    return c->failed ? NULL : c;
}

static void cu_leave(cv_cuda_ctx *c) {
    if (c->sync_each && !c->failed) CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    c->op = NULL;
}

/* status: the sticky failure, after a non-blocking look at the work still in flight (a fault
 * raised by kernels enqueued since the last wait shows up here rather than at the next op). */
static cv_status cu_status(cv_backend *b, cv_error *err) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!c->failed) {
        c->op = "pending work";
        cudaError_t e = cudaSetDevice(c->device);
        if (e == cudaSuccess) e = cudaStreamQuery(c->stream);
        if (e != cudaSuccess && e != cudaErrorNotReady) cv_cuda_fail_call(c, "cudaStreamQuery", e);
        c->op = NULL;
    }
    if (!c->failed) return CV_OK;
    return cv_fail(err, CV_ERR_RUNTIME, "cuda device %d: %s", c->device, c->error);
}

/* ---- memory -------------------------------------------------------------------------------- */

/* An allocation that fails returns NULL (the caller reports it) without entering the sticky
 * state: running out of memory at load time is an answer, not a fault. */
static void *cu_alloc(cv_backend *b, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "alloc");
    if (!c) return NULL;
    if (c->capturing) { /* its zero-fill would be recorded, not run: refused (backend.h) */
        cv_cuda_capture_broken(c, "alloc during a capture");
        cu_leave(c);
        return NULL;
    }
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory answer is not sticky: clear it */
        cu_leave(c);
        return NULL;
    }
    /* zero-filled like the CPU backend; enqueued on the op stream, so it lands before any op */
    CV_CUDA_CHECK(c, cudaMemsetAsync(p, 0, bytes ? bytes : 16, c->stream));
    cu_leave(c);
    return p;
}

/* Freeing goes on after a failure (no leaks); its own errors then add nothing. */
static void cu_free(cv_backend *b, void *p) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!p) return;
    cudaSetDevice(c->device);
    graph_drop(c);        /* the graph may point into p: never replay it on freed memory */
    c->dev_tokens = NULL; /* nor trust a cached "device memory" answer for its addresses */
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess) cv_cuda_fail_call(c, "cudaFree", e);
}

/* Host -> device from pageable memory: cudaMemcpyAsync returns once the source is staged, so
 * the caller may reuse its buffer immediately, and the copy is ordered with the ops. */
static void cu_upload(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "upload");
    if (!c) return;
    if (bytes)
        CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    cu_leave(c);
}

/* After a failure `dst` is left as it was: the caller's status() check says not to use it. */
static void cu_download(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "download");
    if (!c) return;
    if (bytes) {
        CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
        CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    }
    cu_leave(c);
}

static void cu_memset0(cv_backend *b, void *dst, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "memset0");
    if (!c) return;
    if (bytes) CV_CUDA_CHECK(c, cudaMemsetAsync(dst, 0, bytes, c->stream));
    cu_leave(c);
}

static void cu_copy(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "copy");
    if (!c) return;
    if (bytes)
        CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    cu_leave(c);
}

/* Pinned host memory (backend.h host_alloc): the step's arena download is then one DMA. NULL
 * when it cannot be had (the caller may fall back to malloc; generate.c reports out of memory). */
static void *cu_host_alloc(cv_backend *b, size_t bytes) {
    cv_cuda_ctx *c = cu_enter(b, "host_alloc");
    if (!c) return NULL;
    void *p = NULL;
    if (c->capturing || cudaMallocHost(&p, bytes ? bytes : 16) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of pinned memory is an answer, not a fault */
        p = NULL;
    }
    cu_leave(c);
    return p;
}
static void cu_host_free(cv_backend *b, void *p) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!p) return;
    cudaSetDevice(c->device);
    cudaError_t e = cudaFreeHost(p);
    if (e != cudaSuccess) cv_cuda_fail_call(c, "cudaFreeHost", e);
}

static void cu_sync(cv_backend *b) {
    cv_cuda_ctx *c = cu_enter(b, "sync");
    if (!c) return;
    CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    cu_leave(c);
}

/* Weights are copied once, in the checkpoint's dtype (a BF16 checkpoint stays BF16 on the
 * device: half the bytes per decoded token of fp32). */
static cv_status cu_weight_upload(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                                  int64_t rows, int64_t cols, cv_error *err) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c->failed) return cu_status(b, err); /* the sticky failure, not a new one */
    cudaSetDevice(c->device);
    if (dtype != CV_DT_F32 && dtype != CV_DT_F16 && dtype != CV_DT_BF16)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "cuda: matrix weights must be F32, F16 or BF16, got %s",
                       cv_dtype_name(dtype));
    size_t bytes = (size_t)rows * (size_t)cols * cv_dtype_size(dtype);
    void *d = NULL;
    cudaError_t e = cudaMalloc(&d, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cv_fail(err, CV_ERR_NOMEM,
                       "cuda: out of device memory for a %lld x %lld %s weight (%zu bytes): %s",
                       (long long)rows, (long long)cols, cv_dtype_name(dtype), bytes,
                       cudaGetErrorString(e));
    }
    e = cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) {
        cudaFree(d);
        return cv_fail(err, CV_ERR_RUNTIME, "cuda: weight upload failed: %s",
                       cudaGetErrorString(e));
    }
    memset(w, 0, sizeof *w);
    w->data = d;
    w->owned = d;
    w->dtype = dtype;
    w->format = CV_WFMT_DENSE;
    w->rows = rows;
    w->cols = cols;
    return CV_OK;
}

/* INT8 / NF4 (quant.h layouts) copied into one device allocation: the codes, padded to 256
 * bytes, then the fp32 scales — the CPU backend's layout, so kernels/quant.cu reads both. */
static cv_status cu_weight_upload_quant(cv_backend *b, cv_weight *w, const void *data,
                                        const float *scales, cv_weight_format format, int64_t rows,
                                        int64_t cols, int block, cv_error *err) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c->failed) return cu_status(b, err); /* the sticky failure, not a new one */
    cudaSetDevice(c->device);
    if (rows <= 0 || cols <= 0 || rows > INT32_MAX || cols > INT32_MAX)
        return cv_fail(err, CV_ERR_RUNTIME, "cuda: quantized weight has shape (%lld, %lld)",
                       (long long)rows, (long long)cols);
    size_t n = (size_t)rows * (size_t)cols, data_bytes, n_scales;
    if (format == CV_WFMT_INT8) {
        data_bytes = n;
        n_scales = (size_t)rows;
    } else if (format == CV_WFMT_NF4) {
        if (block <= 0 || block % 2)
            return cv_fail(err, CV_ERR_RUNTIME, "cuda: NF4 block size %d must be even and > 0",
                           block);
        data_bytes = cv_nf4_bytes((int64_t)n);
        n_scales = cv_nf4_blocks((int64_t)n, block);
    } else {
        return cv_fail(err, CV_ERR_RUNTIME, "cuda: weight_upload_quant got a dense format");
    }
    size_t data_pad = (data_bytes + 255) & ~(size_t)255;
    size_t total = data_pad + n_scales * sizeof(float);
    char *d = NULL;
    cudaError_t e = cudaMalloc((void **)&d, total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cv_fail(err, CV_ERR_NOMEM,
                       "cuda: out of device memory for a %zu-byte quantized weight: %s", total,
                       cudaGetErrorString(e));
    }
    if ((e = cudaMemcpyAsync(d, data, data_bytes, cudaMemcpyHostToDevice, c->stream)) ==
            cudaSuccess &&
        (e = cudaMemcpyAsync(d + data_pad, scales, n_scales * sizeof(float), cudaMemcpyHostToDevice,
                             c->stream)) == cudaSuccess)
        e = cudaMemsetAsync(d + data_bytes, 0, data_pad - data_bytes, c->stream);
    if (e != cudaSuccess) {
        cudaFree(d);
        return cv_fail(err, CV_ERR_RUNTIME, "cuda: quantized weight upload failed: %s",
                       cudaGetErrorString(e));
    }
    memset(w, 0, sizeof *w);
    w->data = d;
    w->scales = reinterpret_cast<const float *>(d + data_pad);
    w->dtype = format == CV_WFMT_INT8 ? CV_DT_I8 : CV_DT_U8; /* as the CPU backend reports */
    w->format = format;
    w->rows = rows;
    w->cols = cols;
    w->block = format == CV_WFMT_NF4 ? block : 0;
    w->owned = d;
    return CV_OK;
}

static void cu_weight_free(cv_backend *b, cv_weight *w) {
    if (w->owned) cu_free(b, w->owned);
    memset(w, 0, sizeof *w);
}

static void cu_destroy(cv_backend *b) {
    if (!b) return;
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c) {
        cudaSetDevice(c->device);
        if (c->capturing) { /* leave capture mode before waiting on the stream */
            cudaGraph_t g = NULL;
            if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
            (void)cudaGetLastError();
            c->capturing = 0;
        }
        if (c->stream) cudaStreamSynchronize(c->stream);
        c->failed = 1; /* graph_drop: the stream was just waited for */
        graph_drop(c);
        cv_cuda_free_buckets(c);
        if (c->scratch) cudaFree(c->scratch);
        if (c->tokens) cudaFree(c->tokens);
        if (c->pinned) cudaFreeHost(c->pinned);
        if (c->cublas) cublasDestroy(c->cublas);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

/* ---- the ops: entry and exit around the op family files' implementations ------------------ */

static void op_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                         const cv_weight *wte, const cv_weight *wpe, int pos0, const int32_t *dpos,
                         float scale) {
    cv_cuda_ctx *c = cu_enter(b, "embedding");
    if (!c) return;
    cv_cuda_embedding(b, out, tokens, T, wte, wpe, pos0, dpos, scale);
    cu_leave(c);
}
static void op_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w,
                      const float *bias, int T) {
    cv_cuda_ctx *c = cu_enter(b, "matmul");
    if (!c) return;
    cv_cuda_matmul(b, out, x, w, bias, T);
    cu_leave(c);
}
static void op_layernorm(cv_backend *b, float *out, const float *x, const float *w,
                         const float *bias, int T, int C, float eps, double *hstats) {
    cv_cuda_ctx *c = cu_enter(b, "layernorm");
    if (!c) return;
    cv_cuda_layernorm(b, out, x, w, bias, T, C, eps, hstats);
    cu_leave(c);
}
static void op_rmsnorm(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                       float eps, double *hstats) {
    cv_cuda_ctx *c = cu_enter(b, "rmsnorm");
    if (!c) return;
    cv_cuda_rmsnorm(b, out, x, w, T, C, eps, hstats);
    cu_leave(c);
}
static void op_residual_add(cv_backend *b, float *x, const float *y, int T, int C, double *hstats) {
    cv_cuda_ctx *c = cu_enter(b, "residual_add");
    if (!c) return;
    cv_cuda_residual_add(b, x, y, T, C, hstats);
    cu_leave(c);
}
static void op_gelu_tanh(cv_backend *b, float *x, size_t n) {
    cv_cuda_ctx *c = cu_enter(b, "gelu_tanh");
    if (!c) return;
    cv_cuda_gelu_tanh(b, x, n);
    cu_leave(c);
}
static void op_relu(cv_backend *b, float *x, size_t n) {
    cv_cuda_ctx *c = cu_enter(b, "relu");
    if (!c) return;
    cv_cuda_relu(b, x, n);
    cu_leave(c);
}
static void op_silu_mul(cv_backend *b, float *gate, const float *up, size_t n) {
    cv_cuda_ctx *c = cu_enter(b, "silu_mul");
    if (!c) return;
    cv_cuda_silu_mul(b, gate, up, n);
    cu_leave(c);
}
static void op_gate_up_silu(cv_backend *b, float *gate, float *up, const float *x,
                            const cv_weight *wg, const cv_weight *wu, int T) {
    cv_cuda_ctx *c = cu_enter(b, "gate_up_silu");
    if (!c) return;
    cv_cuda_gate_up_silu(b, gate, up, x, wg, wu, T);
    cu_leave(c);
}
static void op_gelu_mul(cv_backend *b, float *gate, const float *up, size_t n) {
    cv_cuda_ctx *c = cu_enter(b, "gelu_mul");
    if (!c) return;
    cv_cuda_gelu_mul(b, gate, up, n);
    cu_leave(c);
}
static void op_rope(cv_backend *b, float *x, int T, int stride, int n_heads, int head_dim,
                    const float *inv_freq, int pos0, const int32_t *dpos) {
    cv_cuda_ctx *c = cu_enter(b, "rope");
    if (!c) return;
    cv_cuda_rope(b, x, T, stride, n_heads, head_dim, inv_freq, pos0, dpos);
    cu_leave(c);
}
static void op_kv_store(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                        int hd, int n_ctx, int pos0, const int32_t *dpos) {
    cv_cuda_ctx *c = cu_enter(b, "kv_store");
    if (!c) return;
    cv_cuda_kv_store(b, dst, dt, src, T, heads, hd, n_ctx, pos0, dpos);
    cu_leave(c);
}
static void op_t5_position_bias(cv_backend *b, float *out, const float *table, int H, int T, int K,
                                int q_pos0, int bidirectional, int num_buckets, int max_distance) {
    cv_cuda_ctx *c = cu_enter(b, "t5_position_bias");
    if (!c) return;
    cv_cuda_t5_position_bias(b, out, table, H, T, K, q_pos0, bidirectional, num_buckets,
                             max_distance);
    cu_leave(c);
}
static void op_attention(cv_backend *b, const cv_attn_args *a) {
    cv_cuda_ctx *c = cu_enter(b, "attention");
    if (!c) return;
    cv_cuda_attention(b, a);
    cu_leave(c);
}
static void op_logits_stats(cv_backend *b, double *rec, const float *logits, int V, int topk) {
    cv_cuda_ctx *c = cu_enter(b, "logits_stats");
    if (!c) return;
    cv_cuda_logits_stats(b, rec, logits, V, topk);
    cu_leave(c);
}
static void op_row_cos(cv_backend *b, double *acc, const float *x, const float *y, int T, int C) {
    cv_cuda_ctx *c = cu_enter(b, "row_cos");
    if (!c) return;
    cv_cuda_row_cos(b, acc, x, y, T, C);
    cu_leave(c);
}
static void op_target_logprob(cv_backend *b, double *out, const float *logits, int T, int V,
                              const int32_t *targets) {
    cv_cuda_ctx *c = cu_enter(b, "target_logprob");
    if (!c) return;
    cv_cuda_target_logprob(b, out, logits, T, V, targets);
    cu_leave(c);
}
static void op_logprob_accum(cv_backend *b, double *state, const float *logits, int T, int n,
                             int col0, const int32_t *targets) {
    cv_cuda_ctx *c = cu_enter(b, "logprob_accum");
    if (!c) return;
    cv_cuda_logprob_accum(b, state, logits, T, n, col0, targets);
    cu_leave(c);
}
static void op_pick_greedy(cv_backend *b, const float *logits, int V, double *slot, int32_t *step) {
    cv_cuda_ctx *c = cu_enter(b, "pick_greedy");
    if (!c) return;
    cv_cuda_pick_greedy(b, logits, V, slot, step);
    cu_leave(c);
}
static void op_stats_reset(cv_backend *b, double *arena, const cv_stats_layout *lay) {
    cv_cuda_ctx *c = cu_enter(b, "stats_reset");
    if (!c) return;
    cv_cuda_stats_reset(b, arena, lay);
    cu_leave(c);
}
/* -1 after any failure, this op's or an earlier one's: never a made-up token */
static int32_t op_argmax(cv_backend *b, const float *logits, int V) {
    cv_cuda_ctx *c = cu_enter(b, "argmax");
    if (!c) return -1;
    int32_t id = cv_cuda_argmax(b, logits, V);
    cu_leave(c);
    return c->failed ? -1 : id;
}

/* ---- decode-step graphs (backend.h graph_begin / graph_end / graph_launch / graph_reset) ---- */

/* Graphs are off for good after one failure: log it once, the loop runs plain launches. */
static void graph_give_up(cv_cuda_ctx *c, const char *what, const char *why) {
    if (!c->graph_off)
        CV_WARN("cuda: %s failed (%s): decoding with plain launches from now on", what, why);
    c->graph_off = 1;
}

/* Record the ops from here to graph_end on the backend's stream (relaxed capture is not needed:
 * no op of a decode step allocates, synchronizes or copies to pageable memory; one that would
 * is caught and breaks the capture, see cv_cuda_capture_broken). Refused when graphs are off,
 * with the per-op sync hook (a sync inside a capture is illegal) and with the cuBLAS matmul
 * variant forced (its workspace handling under capture is not relied on). */
static int cu_graph_begin(cv_backend *b) {
    cv_cuda_ctx *c = cu_enter(b, "graph_begin");
    if (!c) return 0;
    int ok = 0;
    if (!c->graph_off && !c->capturing && !c->sync_each && c->mm_variant != CV_MM_CUBLAS) {
        graph_drop(c);
        c->capture_broken = 0;
        c->capture_why = NULL;
        cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
            c->capturing = 1;
            ok = 1;
        } else {
            (void)cudaGetLastError();
            graph_give_up(c, "cudaStreamBeginCapture", cudaGetErrorName(e));
        }
    }
    cu_leave(c);
    return ok;
}

/* Stop recording; instantiate. Always ends the capture, even after a failure (the stream must
 * leave capture mode), and never enqueues the recorded work: 1 = ready for graph_launch, 0 =
 * discarded (the caller issues the ops again plainly; a sticky failure stays reported). */
static int cu_graph_end(cv_backend *b) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!c->capturing) return 0;
    c->op = "graph_end";
    cudaSetDevice(c->device);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->capturing = 0;
    int ok = e == cudaSuccess && g && !c->capture_broken && !c->failed;
    if (!ok) {
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        if (!c->failed)
            graph_give_up(c, "decode step capture",
                          c->capture_broken ? c->capture_why : cudaGetErrorName(e));
        c->op = NULL;
        return 0;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cudaGraphDestroy(g);
        graph_give_up(c, "cudaGraphInstantiate", cudaGetErrorName(e));
        c->op = NULL;
        return 0;
    }
    c->graph = g;
    c->exec = x;
    c->op = NULL;
    CV_DEBUG("cuda: decode step captured as a graph");
    return 1;
}

/* Replay the instantiated graph on the stream: 1 when enqueued, 0 when there is none (dropped
 * since, e.g. by a scratch growth or a free; the caller then issues the ops plainly). A failed
 * launch is a sticky failure like any op's; faults of the replayed kernels surface at the next
 * download / sync / status, as for plain launches. */
static int cu_graph_launch(cv_backend *b) {
    cv_cuda_ctx *c = cu_enter(b, "graph_launch");
    if (!c) return 0;
    int ok = 0;
    if (c->exec && !c->capturing) {
        c->launches++;
        CV_CUDA_CHECK(c, cudaGraphLaunch(c->exec, c->stream));
        ok = !c->failed;
    }
    cu_leave(c);
    return ok;
}

static void cu_graph_reset(cv_backend *b) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c->capturing) return; /* graph_end first */
    cudaSetDevice(c->device);
    graph_drop(c);
}

/* ---- creation ------------------------------------------------------------------------------ */

static int cu_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* "no device" / "no driver" must not poison later calls */
        return 0;
    }
    return n > 0;
}

static cv_backend *cu_create(int device, cv_error *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        cv_fail(err, CV_ERR_UNSUPPORTED, "no CUDA device available (%s)",
                e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices");
        return NULL;
    }
    if (device < 0 || device >= n) {
        cv_fail(err, CV_ERR_CONFIG, "CUDA device %d does not exist (%d device%s present)", device,
                n, n == 1 ? "" : "s");
        return NULL;
    }
    cv_backend *b = (cv_backend *)calloc(1, sizeof *b);
    cv_cuda_ctx *c = (cv_cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        cv_fail(err, CV_ERR_NOMEM, "out of memory");
        return NULL;
    }
    b->ctx = c;
    c->device = device;
    cudaDeviceProp prop;
    const char *step = "cudaSetDevice";
    if ((e = cudaSetDevice(device)) == cudaSuccess &&
        (step = "cudaGetDeviceProperties", e = cudaGetDeviceProperties(&prop, device)) ==
            cudaSuccess &&
        (step = "cudaStreamCreate",
         e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) == cudaSuccess &&
        (step = "cudaMallocHost", e = cudaMallocHost((void **)&c->pinned, sizeof(int32_t))) ==
            cudaSuccess) {
        c->sm_count = prop.multiProcessorCount;
        c->smem_optin = (int)prop.sharedMemPerBlockOptin;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cv_fail(err, CV_ERR_RUNTIME, "CUDA device %d: %s failed: %s", device, step,
                cudaGetErrorString(e));
        cu_destroy(b);
        return NULL;
    }
    cublasStatus_t cs = cublasCreate(&c->cublas);
    if (cs == CUBLAS_STATUS_SUCCESS) cs = cublasSetStream(c->cublas, c->stream);
    /* fp32 parity: no TF32 tensor-core rounding of the inputs, no reduced-precision reductions */
    if (cs == CUBLAS_STATUS_SUCCESS) cs = cublasSetMathMode(c->cublas, CUBLAS_PEDANTIC_MATH);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        cv_fail(err, CV_ERR_RUNTIME, "CUDA device %d: cuBLAS initialization failed: %s", device,
                cublasGetStatusString(cs));
        cu_destroy(b);
        return NULL;
    }
    const char *mv = getenv("CV_CUDA_MATMUL");
    if (mv && strcmp(mv, "kernel") == 0) c->mm_variant = CV_MM_KERNEL;
    if (mv && strcmp(mv, "cublas") == 0) c->mm_variant = CV_MM_CUBLAS;
    const char *sy = getenv("CV_CUDA_SYNC");
    c->sync_each = sy && strcmp(sy, "1") == 0;
    const char *gr = getenv("CV_CUDA_GRAPH");
    c->graph_off = gr && strcmp(gr, "0") == 0;

    b->name = "cuda";
    b->alloc = cu_alloc;
    b->free = cu_free;
    b->upload = cu_upload;
    b->download = cu_download;
    b->memset0 = cu_memset0;
    b->copy = cu_copy;
    b->weight_upload = cu_weight_upload;
    b->weight_upload_quant = cu_weight_upload_quant;
    b->weight_free = cu_weight_free;
    b->sync = cu_sync;
    b->host_alloc = cu_host_alloc;
    b->host_free = cu_host_free;
    b->embedding = op_embedding;
    b->matmul = op_matmul;
    b->layernorm = op_layernorm;
    b->rmsnorm = op_rmsnorm;
    b->residual_add = op_residual_add;
    b->gelu_tanh = op_gelu_tanh;
    b->relu = op_relu;
    b->silu_mul = op_silu_mul;
    b->gate_up_silu = op_gate_up_silu;
    b->gelu_mul = op_gelu_mul;
    b->rope = op_rope;
    b->kv_store = op_kv_store;
    b->t5_position_bias = op_t5_position_bias;
    b->attention = op_attention;
    b->logits_stats = op_logits_stats;
    b->argmax = op_argmax;
    b->row_cos = op_row_cos;
    b->target_logprob = op_target_logprob;
    b->logprob_accum = op_logprob_accum;
    b->pick_greedy = op_pick_greedy;
    b->stats_reset = op_stats_reset;
    b->graph_begin = cu_graph_begin;
    b->graph_end = cu_graph_end;
    b->graph_launch = cu_graph_launch;
    b->graph_reset = cu_graph_reset;
    b->status = cu_status;
    b->destroy = cu_destroy;
    CV_DEBUG("cuda: device %d %s, %d SMs, %.1f GiB", device, prop.name, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return b;
}

/* Select a kernel version for the bench ladder: op "matmul", v = 0 auto, 1 hand-written kernel
 * for every dtype, 2 cuBLAS for every dtype (F16/BF16: activations rounded to the weight dtype,
 * fp32 accumulation — faster prefill, not bit-compatible with the CPU). Returns 0 on success. */
static int cu_set_variant(cv_backend *b, const char *op, int v) {
    if (!b || !b->name || strcmp(b->name, "cuda") != 0 || !op) return -1;
    if (strcmp(op, "matmul") == 0 && v >= CV_MM_AUTO && v <= CV_MM_CUBLAS) {
        cv_cuda_ctx_of(b)->mm_variant = v;
        return 0;
    }
    return -1;
}

/* Debugging and test hooks (backend.h): "sync" waits after every op so that an asynchronous
 * fault is blamed on its op; "fail_scratch" makes the next scratch growth fail. */
static int cu_debug(cv_backend *b, const char *what, int v) {
    if (!b || !b->name || strcmp(b->name, "cuda") != 0 || !what) return -1;
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (strcmp(what, "sync") == 0) {
        c->sync_each = v != 0;
    } else if (strcmp(what, "fail_scratch") == 0) {
        c->fail_scratch = v != 0;
    } else if (strcmp(what, "graph") == 0) { /* v = 0: plain launches, 1: graphs allowed */
        c->graph_off = v == 0;
    } else if (strcmp(what, "launches") == 0) { /* kernel launches since the last reset */
        unsigned long long n = c->launches;
        if (v) c->launches = 0;
        return n > 0x7fffffffull ? 0x7fffffff : (int)n;
    } else {
        return -1;
    }
    return 0;
}

/* The backend's op stream (a cudaStream_t), for timing with cudaEvents (bench/bench_cuda.c):
 * events recorded on the legacy default stream would not order with this non-blocking stream. */
static void *cu_stream(cv_backend *b) {
    if (!b || !b->name || strcmp(b->name, "cuda") != 0) return NULL;
    return (void *)cv_cuda_ctx_of(b)->stream;
}

/* ---- the module's one export --------------------------------------------------------------- */

extern "C" __attribute__((visibility("default"))) const cv_cuda_module *cv_cuda_module_entry(void) {
    static const cv_cuda_module m = {
        CV_CUDA_MODULE_ABI, sizeof(cv_backend), cu_available, cu_create,
        cu_set_variant,     cu_stream,          cu_debug};
    return &m;
}
