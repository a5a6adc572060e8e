/* health.cu — the two small ops the health layer adds (CPU twins: cpu_row_cos and
 * cpu_target_logprob in src/backend/cpu_backend.c; HEALTH.md §4-§5):
 *   row_cos:        acc[0] += sum_t cos(a[t], b[t]), each norm floored at 1e-8 — one block per
 *                   row writes its cosine, then one thread adds the rows in order (deterministic,
 *                   the CPU's order);
 *   target_logprob: out[t] = ln softmax(logits[t])[targets[t]] — one block per row: the max, the
 *                   sum of e^(l - max) in double, then the target's log-probability. The targets
 *                   come from the host and are staged on the backend's stream. */
#include "common.cuh"

#define HL_THREADS 256

__global__ void __launch_bounds__(HL_THREADS)
    row_cos_kernel(double *rows, const float *a, const float *b, int C) {
    __shared__ double sh[32];
    const size_t r = blockIdx.x;
    const float *x = a + r * C, *y = b + r * C;
    double d = 0.0, na = 0.0, nb = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        d += (double)x[c] * y[c];
        na += (double)x[c] * x[c];
        nb += (double)y[c] * y[c];
    }
    d = cv_block_sum_d(d, sh);
    na = sqrt(cv_block_sum_d(na, sh));
    nb = sqrt(cv_block_sum_d(nb, sh));
    if (threadIdx.x == 0) rows[r] = d / ((na > 1e-8 ? na : 1e-8) * (nb > 1e-8 ? nb : 1e-8));
}

__global__ void row_cos_sum_kernel(double *acc, const double *rows, int T) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s = acc[0];
    for (int t = 0; t < T; t++) s += rows[t];
    acc[0] = s;
}

void cv_cuda_row_cos(cv_backend *b, double *acc, const float *x, const float *y, int T, int C) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || C <= 0) return;
    double *rows = static_cast<double *>(cv_cuda_scratch(c, sizeof(double) * (size_t)T));
    if (!rows) return;
    row_cos_kernel<<<T, HL_THREADS, 0, c->stream>>>(rows, x, y, C);
    CV_CUDA_LAUNCHED(c, "row cosine");
    row_cos_sum_kernel<<<1, 32, 0, c->stream>>>(acc, rows, T);
    CV_CUDA_LAUNCHED(c, "row cosine sum");
}

__global__ void __launch_bounds__(HL_THREADS)
    target_logprob_kernel(double *out, const float *logits, int V, const int32_t *targets) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    const size_t r = blockIdx.x;
    const float *l = logits + r * V;
    float m = -INFINITY;
    int bad = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = l[i];
        m = fmaxf(m, v); /* fmaxf drops NaN; `bad` keeps it */
        bad |= isnan(v) || (isinf(v) && v > 0);
    }
    m = cv_block_max_f(m, shf);
    bad = __syncthreads_or(bad);
    double z = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) z += expf(l[i] - m);
    z = cv_block_sum_d(z, shd);
    if (threadIdx.x == 0) {
        int y = targets[r];
        out[r] = bad || y < 0 || y >= V ? (double)NAN : (double)l[y] - (double)m - log(z);
    }
}

void cv_cuda_target_logprob(cv_backend *b, double *out, const float *logits, int T, int V,
                            const int32_t *targets) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || V <= 0) return;
    int32_t *dt = static_cast<int32_t *>(cv_cuda_scratch(c, sizeof(int32_t) * (size_t)T));
    if (!dt) return;
    /* pageable source: returns once staged, so the caller may reuse `targets` at once */
    CV_CUDA_CHECK(c, cudaMemcpyAsync(dt, targets, sizeof(int32_t) * (size_t)T,
                                     cudaMemcpyHostToDevice, c->stream));
    target_logprob_kernel<<<T, HL_THREADS, 0, c->stream>>>(out, logits, V, dt);
    CV_CUDA_LAUNCHED(c, "target log-probabilities");
}

/* logprob_accum (CPU twin cpu_logprob_accum): one block per row folds a vocabulary slice into the
 * row's running (max, sum of e^(l - max), target logit). */
__global__ void __launch_bounds__(HL_THREADS)
    logprob_accum_kernel(double *state, const float *logits, int n, int col0,
                         const int32_t *targets) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    const size_t r = blockIdx.x;
    const float *l = logits + r * n;
    double *st = state + 3 * r;
    float m = -INFINITY;
    int bad = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = l[i];
        m = fmaxf(m, v);
        bad |= isnan(v) || (isinf(v) && v > 0);
    }
    m = cv_block_max_f(m, shf);
    bad = __syncthreads_or(bad);
    const double mo = st[0]; /* read by every thread before thread 0 writes */
    const double mn = (double)m > mo ? (double)m : mo;
    double z = 0.0;
    if (!bad && !isnan(mo))
        for (int i = threadIdx.x; i < n; i += blockDim.x) z += expf(l[i] - (float)mn);
    z = cv_block_sum_d(z, shd); /* its barriers also order the reads of st[] before the writes */
    if (threadIdx.x == 0) {
        int y = targets[r] - col0;
        if (y >= 0 && y < n) st[2] = l[y];
        if (bad || isnan(mo)) {
            st[0] = NAN;
        } else {
            st[1] = (mo == -INFINITY ? 0.0 : st[1] * exp(mo - mn)) + z;
            st[0] = mn;
        }
    }
}

void cv_cuda_logprob_accum(cv_backend *b, double *state, const float *logits, int T, int n,
                           int col0, const int32_t *targets) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || n <= 0) return;
    int32_t *dt = static_cast<int32_t *>(cv_cuda_scratch(c, sizeof(int32_t) * (size_t)T));
    if (!dt) return;
    CV_CUDA_CHECK(c, cudaMemcpyAsync(dt, targets, sizeof(int32_t) * (size_t)T,
                                     cudaMemcpyHostToDevice, c->stream));
    logprob_accum_kernel<<<T, HL_THREADS, 0, c->stream>>>(state, logits, n, col0, dt);
    CV_CUDA_LAUNCHED(c, "log-softmax accumulation");
}
