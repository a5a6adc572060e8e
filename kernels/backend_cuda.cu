/* backend_cuda.cu — the CUDA implementation of the op table (backend.h): device selection,
 * memory, weight upload (kept in the checkpoint's F32 / F16 / BF16; INT8 / NF4 copied as
 * quantized), the stream and cuBLAS handle, and the assembly of the cv_backend table from the op
 * family files (matmul.cu, norms.cu, elementwise.cu, attention.cu, logits.cu; quant.cu).
 *
 * Exported with C linkage: cv_backend_cuda_create, cv_cuda_available, and for the bench
 * cv_cuda_set_variant (kernel versions) and cv_cuda_stream (cudaEvent timing). With no GPU (no
 * device, no driver, or CUDA_VISIBLE_DEVICES hiding them all) cv_cuda_available() is 0 and create
 * returns NULL with a message, so callers can fall back to the CPU. */
#include "common.cuh"

extern "C" {
#include "corevital/quant.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cv_cuda_report(cv_cuda_ctx *c, const char *what, const char *detail) {
    if (c->failed) return;
    c->failed = 1;
    CV_ERROR("cuda: %s failed: %s", what, detail);
}

void *cv_cuda_scratch(cv_cuda_ctx *c, size_t bytes) {
    if (bytes <= c->scratch_cap) return c->scratch;
    size_t cap = c->scratch_cap ? c->scratch_cap : 1 << 20;
    while (cap < bytes) cap *= 2;
    if (c->scratch) CV_CUDA_CHECK(c, cudaFree(c->scratch)); /* waits for kernels still using it */
    c->scratch = NULL;
    c->scratch_cap = 0;
    if (cudaMalloc(&c->scratch, cap) != cudaSuccess) {
        cv_cuda_report(c, "cudaMalloc (scratch)", "out of device memory");
        c->scratch = NULL;
        return NULL;
    }
    c->scratch_cap = cap;
    return c->scratch;
}

/* ---- memory -------------------------------------------------------------------------------- */

static void *cu_alloc(cv_backend *b, size_t bytes) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory answer is not sticky: clear it */
        return NULL;
    }
    /* zero-filled like the CPU backend; enqueued on the op stream, so it lands before any op */
    CV_CUDA_CHECK(c, cudaMemsetAsync(p, 0, bytes ? bytes : 16, c->stream));
    return p;
}

static void cu_free(cv_backend *b, void *p) {
    if (p) CV_CUDA_CHECK(cv_cuda_ctx_of(b), cudaFree(p));
}

/* Host -> device from pageable memory: cudaMemcpyAsync returns once the source is staged, so
 * the caller may reuse its buffer immediately, and the copy is ordered with the ops. */
static void cu_upload(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (bytes)
        CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void cu_download(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (!bytes) return;
    CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

static void cu_memset0(cv_backend *b, void *dst, size_t bytes) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (bytes) CV_CUDA_CHECK(c, cudaMemsetAsync(dst, 0, bytes, c->stream));
}

static void cu_copy(cv_backend *b, void *dst, const void *src, size_t bytes) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (bytes)
        CV_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

static void cu_sync(cv_backend *b) {
    CV_CUDA_CHECK(cv_cuda_ctx_of(b), cudaStreamSynchronize(cv_cuda_ctx_of(b)->stream));
}

/* Weights are copied once, in the checkpoint's dtype (a BF16 checkpoint stays BF16 on the
 * device: half the bytes per decoded token of fp32). */
static cv_status cu_weight_upload(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                                  int64_t rows, int64_t cols, cv_error *err) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
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
    if (w->owned) CV_CUDA_CHECK(cv_cuda_ctx_of(b), cudaFree(w->owned));
    memset(w, 0, sizeof *w);
}

static void cu_destroy(cv_backend *b) {
    if (!b) return;
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream) cudaStreamSynchronize(c->stream);
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

/* ---- creation ------------------------------------------------------------------------------ */

extern "C" int cv_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* "no device" / "no driver" must not poison later calls */
        return 0;
    }
    return n > 0;
}

extern "C" cv_backend *cv_backend_cuda_create(int device, cv_error *err) {
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
    b->embedding = cv_cuda_embedding;
    b->matmul = cv_cuda_matmul;
    b->layernorm = cv_cuda_layernorm;
    b->rmsnorm = cv_cuda_rmsnorm;
    b->residual_add = cv_cuda_residual_add;
    b->gelu_tanh = cv_cuda_gelu_tanh;
    b->relu = cv_cuda_relu;
    b->silu_mul = cv_cuda_silu_mul;
    b->gelu_mul = cv_cuda_gelu_mul;
    b->rope = cv_cuda_rope;
    b->t5_position_bias = cv_cuda_t5_position_bias;
    b->attention = cv_cuda_attention;
    b->logits_stats = cv_cuda_logits_stats;
    b->argmax = cv_cuda_argmax;
    b->row_cos = cv_cuda_row_cos;
    b->target_logprob = cv_cuda_target_logprob;
    b->logprob_accum = cv_cuda_logprob_accum;
    b->destroy = cu_destroy;
    CV_DEBUG("cuda: device %d %s, %d SMs, %.1f GiB", device, prop.name, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return b;
}

/* Select a kernel version for the bench ladder: op "matmul", v = 0 auto, 1 hand-written kernel
 * for every dtype, 2 cuBLAS for every dtype (F16/BF16: activations rounded to the weight dtype,
 * fp32 accumulation — faster prefill, not bit-compatible with the CPU). Returns 0 on success. */
extern "C" int cv_cuda_set_variant(cv_backend *b, const char *op, int v) {
    if (!b || !b->name || strcmp(b->name, "cuda") != 0 || !op) return -1;
    if (strcmp(op, "matmul") == 0 && v >= CV_MM_AUTO && v <= CV_MM_CUBLAS) {
        cv_cuda_ctx_of(b)->mm_variant = v;
        return 0;
    }
    return -1;
}

/* The backend's op stream (a cudaStream_t), for timing with cudaEvents (bench/bench_cuda.c):
 * events recorded on the legacy default stream would not order with this non-blocking stream. */
extern "C" void *cv_cuda_stream(cv_backend *b) {
    if (!b || !b->name || strcmp(b->name, "cuda") != 0) return NULL;
    return (void *)cv_cuda_ctx_of(b)->stream;
}
