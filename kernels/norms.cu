/* norms.cu — layernorm, RMSNorm and the residual add on CUDA, with the hidden statistics of
 * their output fused in (CPU twins: cpu_layernorm / cpu_rmsnorm / cpu_residual_add in
 * src/backend/cpu_backend.c; record layout in stats.h).
 *
 * Stage 1 (one block per row): normalize / add, write the row, and while it is still in
 * registers and L1 compute the row's sum, its M2 about its own mean (second pass over the row the
 * thread itself wrote), its L2 norm and max |x| (NaN-sticky), all in double, into a small
 * per-row partial buffer (T x 4 doubles of device scratch).
 * Stage 2 (one small launch; folded into stage 1 when T = 1, the decode case): block 0 /
 * thread 0 merges the row partials into the record in row order with Chan's formula — exactly
 * cv_hidden_record_add_rows' sequence — and every thread adds its columns of the rows into the
 * D column sums, row by row. No atomics: the record is
 * deterministic and matches the single-threaded CPU accumulation up to the double rounding of
 * the in-row reductions. Arithmetic of the outputs follows the CPU twin (double mean / variance,
 * float rstd). */
#include "common.cuh"

enum { OP_LAYERNORM, OP_RMSNORM, OP_RESADD };
#define ROW_THREADS 256

/* Merge one row's partial (sum, M2 about its mean, L2 norm, max|x|) into the record: the step
 * cv_hidden_record_add_rows takes for each row (Chan et al.). Column sums are separate. */
#define HS_PART 8 /* per-row partial: sum, M2, L2, max|x|, NaN / inf / clip counts, clamped L2 */

__device__ void hs_merge_row(double *rec, const double *p, int D) {
    double n_a = rec[CV_HS_ROWS] * D, n_b = D, m2 = p[1];
    if (n_a > 0) {
        double delta = p[0] / n_b - rec[CV_HS_SUM] / n_a;
        m2 += delta * delta * n_a * n_b / (n_a + n_b);
    }
    rec[CV_HS_M2] += m2;
    rec[CV_HS_SUM] += p[0];
    rec[CV_HS_ROWS] += 1.0;
    rec[CV_HS_L2SUM] += p[2];
    double cur = rec[CV_HS_MAXABS];
    if (!isnan(cur) && (isnan(p[3]) || p[3] > cur)) rec[CV_HS_MAXABS] = p[3];
    rec[CV_HS_NNAN] += p[4];
    rec[CV_HS_NINF] += p[5];
    rec[CV_HS_NCLIP] += p[6];
    rec[CV_HS_L2CLAMP] += p[7];
}

/* `rec` non-NULL (T = 1 only): fold the row into the record directly; else write the row's
 * partial to part[HS_PART * row] for hs_merge_kernel. */
template <int OP, bool STATS>
__global__ void __launch_bounds__(ROW_THREADS)
    row_kernel(float *out, const float *x, const float *y, const float *w, const float *bias, int C,
               float eps, double *part, double *rec) {
    __shared__ double shd[32];
    __shared__ float shf[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * C;
    float *o = out + row * C;
    if (OP == OP_LAYERNORM) {
        double s = 0.0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
        const double mean = cv_block_sum_d(s, shd) / C;
        double ss = 0.0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            double d = xr[c] - mean;
            ss += d * d;
        }
        ss = cv_block_sum_d(ss, shd);
        const float rstd = (float)(1.0 / sqrt(ss / C + (double)eps));
        const float m = (float)mean;
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            o[c] = (xr[c] - m) * rstd * w[c] + (bias ? bias[c] : 0.0f);
    } else if (OP == OP_RMSNORM) {
        double ss = 0.0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) ss += (double)xr[c] * xr[c];
        ss = cv_block_sum_d(ss, shd);
        const float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = w[c] * (xr[c] * r);
    } else {
        const float *yr = y + row * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = xr[c] + yr[c];
    }
    if (!STATS) return;
    /* each thread re-reads only the elements it wrote: no barrier needed before these loads */
    double sum = 0.0, sq = 0.0, sq_big = 0.0;
    float mx = 0.0f;
    int nan = 0, nnan = 0, ninf = 0, nclip = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double v = o[c];
        sum += v;
        float a = fabsf(o[c]);
        if ((double)a <= CV_CLIP_LIMIT) {
            sq += v * v;
        } else { /* rare (health, HEALTH.md §4): out of the clamp range, infinite or NaN */
            sq_big += v * v;
            nnan += isnan(a);
            ninf += isinf(a);
            nclip += !isnan(a);
        }
        nan |= isnan(a);
        mx = fmaxf(mx, a); /* fmaxf drops NaN; the flag keeps it */
    }
    sum = cv_block_sum_d(sum, shd);
    sq = cv_block_sum_d(sq, shd);
    mx = cv_block_max_f(mx, shf);
    nan = __syncthreads_or(nan);
    const int rare = __syncthreads_or(nnan | ninf | nclip);
    double cnan = 0.0, cinf = 0.0, cclip = 0.0;
    if (rare) {
        sq_big = cv_block_sum_d(sq_big, shd);
        cnan = cv_block_sum_d((double)nnan, shd);
        cinf = cv_block_sum_d((double)ninf, shd);
        cclip = cv_block_sum_d((double)nclip, shd);
    }
    const double sq_clamped = cnan > 0 ? (double)NAN : sq + cclip * CV_CLIP_LIMIT * CV_CLIP_LIMIT;
    if (rare) sq += sq_big;
    const double mean_b = sum / C;
    double m2 = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double d = o[c] - mean_b;
        m2 += d * d;
    }
    m2 = cv_block_sum_d(m2, shd);
    const double p[HS_PART] = {sum,  m2,   sqrt(sq), nan ? (double)NAN : (double)mx,
                               cnan, cinf, cclip,    sqrt(sq_clamped)};
    if (rec) { /* a single row (decode): merge here, no second launch */
        if (threadIdx.x == 0) hs_merge_row(rec, p, C);
        for (int c = threadIdx.x; c < C; c += blockDim.x) rec[CV_HS_FIXED + c] += o[c];
    } else if (threadIdx.x == 0) {
        for (int i = 0; i < HS_PART; i++) part[HS_PART * row + i] = p[i];
    }
}

/* Merge T row partials into the record (block 0, thread 0) and add the column sums. */
__global__ void hs_merge_kernel(double *rec, const double *part, const float *out, int T, int D) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
        for (int t = 0; t < T; t++) hs_merge_row(rec, part + HS_PART * (size_t)t, D);
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d < D) {
        double s = rec[CV_HS_FIXED + d];
        for (int t = 0; t < T; t++) s += out[(size_t)t * D + d];
        rec[CV_HS_FIXED + d] = s;
    }
}

template <int OP>
static void run_rows(cv_backend *b, float *out, const float *x, const float *y, const float *w,
                     const float *bias, int T, int C, float eps, double *hstats) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (T <= 0 || C <= 0) return;
    if (!hstats) {
        row_kernel<OP, false>
            <<<T, ROW_THREADS, 0, c->stream>>>(out, x, y, w, bias, C, eps, nullptr, nullptr);
        CV_CUDA_LAUNCHED(c, "norm / residual kernel");
        return;
    }
    if (T == 1) { /* decode: one block folds its row into the record itself */
        row_kernel<OP, true>
            <<<1, ROW_THREADS, 0, c->stream>>>(out, x, y, w, bias, C, eps, nullptr, hstats);
        CV_CUDA_LAUNCHED(c, "norm / residual kernel (stats, one row)");
        return;
    }
    double *part = static_cast<double *>(cv_cuda_scratch(c, sizeof(double) * HS_PART * (size_t)T));
    if (!part) return;
    row_kernel<OP, true>
        <<<T, ROW_THREADS, 0, c->stream>>>(out, x, y, w, bias, C, eps, part, nullptr);
    CV_CUDA_LAUNCHED(c, "norm / residual kernel (stats)");
    hs_merge_kernel<<<(C + 255) / 256, 256, 0, c->stream>>>(hstats, part, out, T, C);
    CV_CUDA_LAUNCHED(c, "hidden statistics merge");
}

void cv_cuda_layernorm(cv_backend *b, float *out, const float *x, const float *w, const float *bias,
                       int T, int C, float eps, double *hstats) {
    run_rows<OP_LAYERNORM>(b, out, x, NULL, w, bias, T, C, eps, hstats);
}

void cv_cuda_rmsnorm(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                     float eps, double *hstats) {
    run_rows<OP_RMSNORM>(b, out, x, NULL, w, NULL, T, C, eps, hstats);
}

void cv_cuda_residual_add(cv_backend *b, float *x, const float *y, int T, int C, double *hstats) {
    run_rows<OP_RESADD>(b, x, x, y, NULL, NULL, T, C, 0.0f, hstats);
}
