/* attention.cu — scaled dot-product attention over a KV cache on CUDA, prefill and one-token
 * decode alike, with the attention statistics taken from the softmax's own running sums
 * (CPU twin: src/backend/cpu_attention.c; SPEC §4):
 *   m = max_k s_k,  z = sum_k e^(s_k - m),  t = sum_k e^(s_k - m) (s_k - m)
 *   entropy = ln z - t / z,  largest weight = 1 / z
 *
 * One block per (head h, query row t). The block keeps q and the row's scores in shared memory
 * (global scratch when a very long cache does not fit), computes the scores with one warp per
 * key (q.k * scale + bias, causal / GQA as the CPU), the max, z and t (double, from the fp32
 * e^(s-m) like the CPU), then the output row with the threads split into key groups x head_dim
 * (coalesced V reads), optional probabilities, and the row's (z, t) into a small buffer. A second
 * one-block launch reduces the rows' entropy / weight into the attention record with a fixed
 * tree (deterministic). Decode (T = 1) therefore runs H blocks, each streaming its kv head's
 * cache once. */
#include "common.cuh"

#include <float.h>

#define ATT_THREADS 256

__global__ void __launch_bounds__(ATT_THREADS)
    attention_kernel(cv_attn_args a, float *gscores, int use_smem, double *rowz) {
    extern __shared__ float sm[];
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int hd = a.head_dim, NK = a.n_keys, T = a.T;
    const int r = blockIdx.x, h = r / T, t = r % T;
    const int g = h / (a.n_heads / a.n_kv_heads);
    int kend = NK;
    if (a.causal) kend = a.q_pos0 + t + 1 < NK ? a.q_pos0 + t + 1 : NK;
    const int ngroups = (int)blockDim.x >= hd ? (int)blockDim.x / hd : 1;
    const int gsize = (int)blockDim.x >= hd ? hd : (int)blockDim.x;
    float *q = sm;
    float *acc = sm + hd;
    float *s = use_smem ? acc + (size_t)ngroups * hd : gscores + (size_t)r * NK;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;

    for (int i = tid; i < hd; i += blockDim.x)
        q[i] = a.q[(size_t)t * a.q_stride + (size_t)h * hd + i];
    __syncthreads();

    const float *brow = a.bias ? a.bias + ((size_t)h * T + t) * NK : NULL;
    float m = -FLT_MAX;
    for (int k = warp; k < kend; k += nw) {
        const float *kv = a.k + (size_t)k * a.kv_stride + (size_t)g * hd;
        float d = 0.0f;
        for (int i = lane; i < hd; i += 32) d += q[i] * kv[i];
        d = cv_warp_sum_f(d);
        float sc = d * a.scale + (brow ? brow[k] : 0.0f);
        sc = __shfl_sync(0xffffffffu, sc, 0); /* one value per key, whatever the lane's order */
        if (lane == 0) s[k] = sc;
        m = fmaxf(m, sc);
    }
    m = cv_block_max_f(m, shf); /* its barriers also publish s[] */

    double z = 0.0, tt = 0.0;
    for (int k = tid; k < kend; k += blockDim.x) {
        float d = s[k] - m;
        float e = expf(d);
        s[k] = e;
        z += e;
        tt += (double)e * d;
    }
    z = cv_block_sum_d(z, shd);
    tt = cv_block_sum_d(tt, shd);
    __syncthreads(); /* e values in s[] visible to every thread */
    const float inv = (float)(1.0 / z);

    const int grp = tid / gsize, li = tid % gsize;
    if (grp < ngroups) {
        const float *vbase = a.v + (size_t)g * hd;
        for (int i = li; i < hd; i += gsize) {
            float o = 0.0f;
            for (int k = grp; k < kend; k += ngroups)
                o += (s[k] * inv) * vbase[(size_t)k * a.kv_stride + i];
            acc[(size_t)grp * hd + i] = o;
        }
    }
    __syncthreads();
    float *out = a.out + (size_t)t * a.out_stride + (size_t)h * hd;
    for (int i = tid; i < hd; i += blockDim.x) {
        float o = 0.0f;
        for (int gi = 0; gi < ngroups; gi++) o += acc[(size_t)gi * hd + i];
        out[i] = o;
    }
    if (a.probs) {
        float *pr = a.probs + ((size_t)h * T + t) * NK;
        for (int k = tid; k < NK; k += blockDim.x) pr[k] = k < kend ? s[k] * inv : 0.0f;
    }
    if (rowz) {
        /* health: the row's mass on the prompt's middle third of keys and off it (basin) */
        double mid = 0.0, off = 0.0;
        if (a.basin) {
            for (int k = tid; k < kend; k += blockDim.x) {
                double p = s[k] * inv;
                if (k >= a.basin_lo && k < a.basin_hi)
                    mid += p;
                else
                    off += p;
            }
            mid = cv_block_sum_d(mid, shd);
            off = cv_block_sum_d(off, shd);
        }
        if (tid == 0) {
            rowz[4 * (size_t)r] = z;
            rowz[4 * (size_t)r + 1] = tt;
            rowz[4 * (size_t)r + 2] = mid;
            rowz[4 * (size_t)r + 3] = off;
        }
    }
}

/* Health: per-head records and basin sums from the rows' (z, t, mid, off), one block per head,
 * its rows folded in order by one thread (the CPU's cv_attn_merge_rows, bit for bit). */
__global__ void attn_heads_kernel(cv_attn_args a, const double *rowz) {
    if (threadIdx.x != 0) return;
    const int h = blockIdx.x, T = a.T;
    for (int t = 0; t < T; t++) {
        const double *q = rowz + 4 * ((size_t)h * T + t);
        if (a.heads && t >= a.heads_from) {
            int kend = a.n_keys;
            if (a.causal) kend = a.q_pos0 + t + 1 < a.n_keys ? a.q_pos0 + t + 1 : a.n_keys;
            cv_head_record_add_row(a.heads + (size_t)h * CV_AH_SIZE, q[0], q[1], kend);
        }
        if (a.basin) {
            a.basin[2 * h] += q[2];
            a.basin[2 * h + 1] += q[3];
        }
    }
}

/* Fold the rows' (z, t) into the attention record: rows, sum of entropies, min entropy, max
 * weight. One block; the per-thread strides and the reduction tree are fixed. */
__global__ void attn_record_kernel(double *rec, const double *rowz, int rows) {
    __shared__ double s_sum[ATT_THREADS], s_min[ATT_THREADS], s_max[ATT_THREADS];
    double esum = 0.0, emin = INFINITY, wmax = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        double z = rowz[4 * (size_t)r], t = rowz[4 * (size_t)r + 1];
        double e = log(z) - t / z, w = 1.0 / z;
        esum += e;
        if (e < emin) emin = e;
        if (w > wmax) wmax = w;
    }
    s_sum[threadIdx.x] = esum;
    s_min[threadIdx.x] = emin;
    s_max[threadIdx.x] = wmax;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) {
            s_sum[threadIdx.x] += s_sum[threadIdx.x + o];
            if (s_min[threadIdx.x + o] < s_min[threadIdx.x])
                s_min[threadIdx.x] = s_min[threadIdx.x + o];
            if (s_max[threadIdx.x + o] > s_max[threadIdx.x])
                s_max[threadIdx.x] = s_max[threadIdx.x + o];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        rec[CV_AS_ROWS] += rows;
        rec[CV_AS_ESUM] += s_sum[0];
        if (s_min[0] < rec[CV_AS_EMIN]) rec[CV_AS_EMIN] = s_min[0];
        if (s_max[0] > rec[CV_AS_WMAX]) rec[CV_AS_WMAX] = s_max[0];
    }
}

void cv_cuda_attention(cv_backend *b, const cv_attn_args *a) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    const int rows = a->n_heads * a->T, hd = a->head_dim, NK = a->n_keys;
    if (rows <= 0 || NK <= 0 || hd <= 0 || a->n_kv_heads <= 0) return;
    const int ngroups = ATT_THREADS >= hd ? ATT_THREADS / hd : 1;
    size_t base = sizeof(float) * ((size_t)hd + (size_t)ngroups * hd);
    size_t with_scores = base + sizeof(float) * (size_t)NK;
    /* the opt-in limit covers static + dynamic shared memory: keep 1 KiB for the static part */
    const size_t limit = c->smem_optin > 1024 ? (size_t)c->smem_optin - 1024 : 0;
    int use_smem = with_scores <= limit;
    size_t smem = use_smem ? with_scores : base;
    /* scratch: the rows' (z, t), then the scores when they live in global memory */
    const int want_rows = a->stats || a->heads || a->basin;
    size_t zbytes = want_rows ? sizeof(double) * 4 * (size_t)rows : 0;
    size_t sbytes = use_smem ? 0 : sizeof(float) * (size_t)rows * NK;
    char *scr = NULL;
    if (zbytes + sbytes) {
        scr = static_cast<char *>(cv_cuda_scratch(c, zbytes + sbytes));
        if (!scr) return;
    }
    if (smem > 48 * 1024 && (int)smem > c->attn_smem) {
        CV_CUDA_CHECK(c, cudaFuncSetAttribute(attention_kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)limit));
        c->attn_smem = (int)limit;
    }
    double *rowz = want_rows ? reinterpret_cast<double *>(scr) : NULL;
    float *gscores = use_smem ? NULL : reinterpret_cast<float *>(scr + zbytes);
    attention_kernel<<<rows, ATT_THREADS, smem, c->stream>>>(*a, gscores, use_smem, rowz);
    CV_CUDA_LAUNCHED(c, "attention");
    if (a->stats) {
        attn_record_kernel<<<1, ATT_THREADS, 0, c->stream>>>(a->stats, rowz, rows);
        CV_CUDA_LAUNCHED(c, "attention statistics");
    }
    if (a->heads || a->basin) {
        attn_heads_kernel<<<a->n_heads, 32, 0, c->stream>>>(*a, rowz);
        CV_CUDA_LAUNCHED(c, "attention head records");
    }
}
