/* attention.cu — scaled dot-product attention over a KV cache on CUDA, prefill and one-token
 * decode alike, with the attention statistics taken from the softmax's own running sums
 * (CPU twin: src/backend/cpu_attention.c; SPEC §4):
 *   m = max_k s_k,  z = sum_k e^(s_k - m),  t = sum_k e^(s_k - m) (s_k - m)
 *   entropy = ln z - t / z,  largest weight = 1 / z
 *
 * Three routes, the same per-row results (output, and (z, t, mid, off) per row r = h*T + t in a
 * small buffer that the record kernels fold):
 *  - decode (T = 1, no probabilities): flash-decoding, attn_decode_chunk_kernel + merge: the keys
 *    are split into chunks across blocks, each block serving all query heads of one GQA group
 *    from one read of its chunk of K / V; the chunks' partial softmax sums merge per head in a
 *    fixed order with the CPU's rescaling;
 *  - prefill (T > 1, head_dim <= 256, no probabilities): attn_prefill_kernel, tiles of 32
 *    queries x 32 keys in shared memory with the online softmax of the CPU's tiled kernel;
 *  - otherwise (probabilities wanted, large head_dim): attention_kernel, one block per (head h,
 *    query row t). The block keeps q and the row's scores in shared memory (global scratch when
 *    a very long cache does not fit), computes the scores with one warp per key, the max, z and
 *    t (double, from the fp32 e^(s-m) like the CPU), then the output row with the threads split
 *    into key groups x head_dim (coalesced V reads), optional probabilities, and the row's
 *    (z, t).
 * A one-block launch reduces the rows' entropy / weight into the attention record with a fixed
 * tree (deterministic); another folds the per-head health records and basin sums. */
#include "common.cuh"

#include <float.h>

#define ATT_THREADS 256

/* A call at the step's position (backend.h: cv_attn_args.dpos): every kernel reads q_pos0 and
 * n_keys from device memory first; the host values were upper bounds that sized the launch. */
__device__ __forceinline__ void att_at_step(cv_attn_args &a) {
    if (!a.dpos) return;
    a.q_pos0 = *a.dpos;
    a.n_keys = a.q_pos0 + a.T;
}

/* query row t's position bias under head h: one diagonal per head, (H, T + n_keys - 1), as the
 * CPU's cv_attn_bias_row (backend.h) */
__device__ static inline const float *att_bias_row(const cv_attn_args &a, int h, int t) {
    return a.bias + (size_t)h * (size_t)(a.T + a.n_keys - 1) + (size_t)(a.T - 1 - t);
}

__global__ void __launch_bounds__(ATT_THREADS)
    attention_kernel(cv_attn_args a, float *gscores, int use_smem, double *rowz) {
    extern __shared__ float sm[];
    __shared__ float shf[32];
    __shared__ double shd[32];
    att_at_step(a);
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

    const float *brow = a.bias ? att_bias_row(a, h, t) : NULL;
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
    att_at_step(a);
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

/* ---- flash-decoding (T = 1, no probabilities) ----------------------------------------------
 *
 * Grid (chunk c, kv head g, head group): a block reads keys k0 = c * chunk .. k0 + chunk - 1 of
 * kv head g once and serves up to DEC_RB query heads of g's GQA group from it: one warp per key
 * for the scores (all the group's q vectors against the one K row the warp holds), one warp per
 * head for the chunk's softmax partials, and the threads split into key groups x head_dim for
 * the unnormalized output (each V element read once per block). Per (query head, chunk) it
 * writes m, z = sum e^(s-m), t = sum e^(s-m)(s-m), the unnormalized basin masses (double) and
 * the unnormalized output vector (fp32). attn_decode_merge_kernel (one block per query head)
 * then rescales the chunks to the global max with the CPU's formulas
 *     M = max_c m_c, w_c = e^(m_c - M), z = sum w_c z_c, t = sum w_c (t_c + (m_c - M) z_c)
 * (masses likewise, output sum_c w_c o_c / z) over a fixed strided split and reduction tree,
 * and writes the row's (z, t, mid, off) into rowz like attention_kernel: the record kernels
 * are shared. The chunk length is picked per call (64..512 keys) so that the grid covers about
 * two blocks per SM. */
#define DEC_RB        8 /* query heads per block (a GQA group of up to 8 in one block) */
#define DEC_MIN_CHUNK 64
#define DEC_MAX_CHUNK 512
#define DEC_PART      5 /* doubles per (head, chunk): m, z, t, basin mass, off-basin mass */

__global__ void __launch_bounds__(ATT_THREADS)
    attn_decode_chunk_kernel(cv_attn_args a, int chunk, int nch, float *po, double *part) {
    extern __shared__ float sm[];
    att_at_step(a);
    const int hd = a.head_dim, rep = a.n_heads / a.n_kv_heads;
    const int c = blockIdx.x, g = blockIdx.y, hg = blockIdx.z;
    const int h0 = g * rep + hg * DEC_RB;
    const int nh = rep - hg * DEC_RB < DEC_RB ? rep - hg * DEC_RB : DEC_RB;
    const int kend = a.causal ? min(a.q_pos0 + 1, a.n_keys) : a.n_keys;
    /* >= 1 by the grid, except at a device position (dpos) where the grid covers the whole
     * cache: the chunks past the step's keys do nothing and the merge ignores them */
    const int k0 = c * chunk, kn = min(chunk, kend - k0);
    if (kn <= 0) return;
    const int ngroups = (int)blockDim.x >= hd ? (int)blockDim.x / hd : 1;
    const int gsize = (int)blockDim.x >= hd ? hd : (int)blockDim.x;
    float *qs = sm;                           /* (DEC_RB, hd) */
    float *sc = qs + DEC_RB * hd;             /* (DEC_RB, chunk): scores, then e^(s-m) */
    float *red = sc + (size_t)DEC_RB * chunk; /* (ngroups, DEC_RB, hd) */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;

    /* T = 1: the group's heads h0 .. h0 + nh - 1 are contiguous in the q row */
    for (int i = tid; i < nh * hd; i += blockDim.x) qs[i] = a.q[(size_t)h0 * hd + i];
    __syncthreads();

    for (int kk = warp; kk < kn; kk += nw) {
        const float *kr = a.k + (size_t)(k0 + kk) * a.kv_stride + (size_t)g * hd;
        float d[DEC_RB];
#pragma unroll
        for (int j = 0; j < DEC_RB; j++) d[j] = 0.0f;
        for (int i = lane; i < hd; i += 32) {
            const float kv = kr[i];
#pragma unroll
            for (int j = 0; j < DEC_RB; j++)
                if (j < nh) d[j] += qs[j * hd + i] * kv;
        }
#pragma unroll
        for (int j = 0; j < DEC_RB; j++) {
            if (j < nh) { /* nh is uniform over the block: the whole warp shuffles */
                const float s = cv_warp_sum_f(d[j]);
                if (lane == 0) {
                    const float bv = a.bias ? att_bias_row(a, h0 + j, 0)[k0 + kk] : 0.0f;
                    sc[(size_t)j * chunk + kk] = s * a.scale + bv;
                }
            }
        }
    }
    __syncthreads();

    for (int j = warp; j < nh; j += nw) { /* one warp per head: the chunk's softmax partials */
        float *s = sc + (size_t)j * chunk;
        float m = -FLT_MAX;
        for (int kk = lane; kk < kn; kk += 32) m = fmaxf(m, s[kk]);
        m = cv_warp_max_f(m);
        double z = 0.0, tt = 0.0, bm = 0.0, om = 0.0;
        for (int kk = lane; kk < kn; kk += 32) {
            const float d = s[kk] - m;
            const float e = expf(d);
            s[kk] = e;
            z += e;
            tt += (double)e * d;
            if (a.basin) {
                const int k = k0 + kk;
                if (k >= a.basin_lo && k < a.basin_hi)
                    bm += e;
                else
                    om += e;
            }
        }
        z = cv_warp_sum_d(z);
        tt = cv_warp_sum_d(tt);
        bm = cv_warp_sum_d(bm);
        om = cv_warp_sum_d(om);
        if (lane == 0) {
            double *pt = part + ((size_t)(h0 + j) * nch + c) * DEC_PART;
            pt[0] = m;
            pt[1] = z;
            pt[2] = tt;
            pt[3] = bm;
            pt[4] = om;
        }
    }
    __syncthreads(); /* e values in sc[] visible to every thread */

    const int grp = tid / gsize, li = tid % gsize;
    if (grp < ngroups) {
        const float *vb = a.v + (size_t)k0 * a.kv_stride + (size_t)g * hd;
        for (int i = li; i < hd; i += gsize) {
            float o[DEC_RB];
#pragma unroll
            for (int j = 0; j < DEC_RB; j++) o[j] = 0.0f;
            for (int kk = grp; kk < kn; kk += ngroups) {
                const float v = vb[(size_t)kk * a.kv_stride + i];
#pragma unroll
                for (int j = 0; j < DEC_RB; j++)
                    if (j < nh) o[j] += sc[(size_t)j * chunk + kk] * v;
            }
#pragma unroll
            for (int j = 0; j < DEC_RB; j++)
                if (j < nh) red[((size_t)grp * DEC_RB + j) * hd + i] = o[j];
        }
    }
    __syncthreads();
    for (int idx = tid; idx < nh * hd; idx += blockDim.x) {
        const int j = idx / hd, i = idx % hd;
        float o = 0.0f;
        for (int gi = 0; gi < ngroups; gi++) o += red[((size_t)gi * DEC_RB + j) * hd + i];
        po[((size_t)(h0 + j) * nch + c) * hd + i] = o;
    }
}

__device__ __forceinline__ double att_block_max_d(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* One block per query head h (T = 1): merge the chunks' partials, write out and rowz. Needs
 * head_dim <= 2 * blockDim.x. */
__global__ void __launch_bounds__(ATT_THREADS)
    attn_decode_merge_kernel(cv_attn_args a, int chunk, int nch, const float *po,
                             const double *part, double *rowz) {
    __shared__ double shd[32];
    __shared__ float wsh[ATT_THREADS];
    const int h = blockIdx.x, hd = a.head_dim, tid = threadIdx.x, bd = blockDim.x;
    /* nch: the launch's chunk count, the partials' stride; at a device position (dpos) the
     * launch covers the whole cache and only the chunks holding the step's keys are merged */
    const double *P = part + (size_t)h * nch * DEC_PART;
    const float *ph = po + (size_t)h * nch * hd;
    if (a.dpos) {
        att_at_step(a);
        const int kend = a.causal ? min(a.q_pos0 + 1, a.n_keys) : a.n_keys;
        nch = (kend + chunk - 1) / chunk;
    }
    const int one = nch == 1; /* one chunk: exact as is (the CPU's special case) */
    double M = -INFINITY;
    for (int c = tid; c < nch; c += bd) M = fmax(M, P[(size_t)c * DEC_PART]);
    M = att_block_max_d(M, shd);
    double z = 0.0, t = 0.0, bm = 0.0, om = 0.0;
    for (int c = tid; c < nch; c += bd) {
        const double *pc = P + (size_t)c * DEC_PART;
        const double dm = one ? 0.0 : pc[0] - M, wc = one ? 1.0 : exp(dm);
        t += wc * (pc[2] + dm * pc[1]);
        z += wc * pc[1];
        bm += wc * pc[3];
        om += wc * pc[4];
    }
    z = cv_block_sum_d(z, shd);
    t = cv_block_sum_d(t, shd);
    bm = cv_block_sum_d(bm, shd);
    om = cv_block_sum_d(om, shd);
    float acc0 = 0.0f, acc1 = 0.0f; /* dims tid and tid + bd */
    for (int c0 = 0; c0 < nch; c0 += bd) {
        const int cn = nch - c0 < bd ? nch - c0 : bd;
        __syncthreads(); /* wsh of the previous segment fully read */
        if (tid < cn) wsh[tid] = one ? 1.0f : (float)exp(P[(size_t)(c0 + tid) * DEC_PART] - M);
        __syncthreads();
        for (int cc = 0; cc < cn; cc++) { /* chunks in order */
            const float *pr = ph + (size_t)(c0 + cc) * hd;
            const float w = wsh[cc];
            if (tid < hd) acc0 = fmaf(w, pr[tid], acc0);
            if (tid + bd < hd) acc1 = fmaf(w, pr[tid + bd], acc1);
        }
    }
    const float inv = (float)(1.0 / z);
    float *out = a.out + (size_t)h * hd;
    if (tid < hd) out[tid] = inv * acc0;
    if (tid + bd < hd) out[tid + bd] = inv * acc1;
    if (rowz && tid == 0) {
        rowz[4 * (size_t)h] = z;
        rowz[4 * (size_t)h + 1] = t;
        rowz[4 * (size_t)h + 2] = bm / z;
        rowz[4 * (size_t)h + 3] = om / z;
    }
}

/* ---- tiled prefill (T > 1, no probabilities) -----------------------------------------------
 *
 * Grid (query tile, query head), the last (longest causal) tiles first. A block holds PF_BQ
 * query rows of head h in shared memory and walks the visible keys in tiles of PF_BK: K and V
 * tiles staged in shared memory (one coalesced read per tile for PF_BQ rows instead of one per
 * row), 8 threads per query row, each computing 4 of the tile's scores (q.k * scale + bias),
 * then per row the online softmax of the CPU's tiled kernel: running max m, and in double
 * z, t and the unnormalized basin masses, rescaled by a = e^(m_old - m_new) when the max rises
 *     z <- a z,   t <- a (t + (m_old - m_new) z),   masses <- a masses,   O <- a O
 * and the output row accumulated in registers (head_dim / 8 values per thread, fp32). At the
 * end each row writes out = O / z and its (z, t, mid, off) into rowz. head_dim <= 8 * NJ. */
#define PF_BQ      32
#define PF_BK      32
#define PF_THREADS 256 /* PF_BQ rows x 8 threads */

__host__ __device__ static inline size_t pf_smem_bytes(int hd) {
    return sizeof(float) * ((size_t)(PF_BQ + 2 * PF_BK) * (hd + 1) + (size_t)PF_BQ * (PF_BK + 1));
}

__device__ __forceinline__ int att_visible(const cv_attn_args &a, int t) {
    if (!a.causal) return a.n_keys;
    return a.q_pos0 + t + 1 < a.n_keys ? a.q_pos0 + t + 1 : a.n_keys;
}

template <int NJ>
__global__ void __launch_bounds__(PF_THREADS) attn_prefill_kernel(cv_attn_args a, double *rowz) {
    extern __shared__ float sm[];
    att_at_step(a);
    const int hd = a.head_dim, T = a.T, ld = hd + 1;
    const int qt = (int)gridDim.x - 1 - (int)blockIdx.x, h = blockIdx.y;
    const int g = h / (a.n_heads / a.n_kv_heads), t0 = qt * PF_BQ;
    const int tid = threadIdx.x, r = tid >> 3, sub = tid & 7;
    const int t = t0 + r, live = t < T;
    float *Qs = sm, *Ks = Qs + PF_BQ * ld, *Vs = Ks + PF_BK * ld, *Ps = Vs + PF_BK * ld;

    for (int idx = tid; idx < PF_BQ * hd; idx += PF_THREADS) {
        const int rr = idx / hd, d = idx % hd, tq = t0 + rr;
        Qs[rr * ld + d] = tq < T ? a.q[(size_t)tq * a.q_stride + (size_t)h * hd + d] : 0.0f;
    }
    const int tl = min(t0 + PF_BQ, T) - 1;
    const int kmax = att_visible(a, tl);
    const int lim_row = live ? att_visible(a, t) : 0;
    const float *brow = a.bias && live ? att_bias_row(a, h, t) : NULL;
    float m = -FLT_MAX;
    double z = 0.0, tt = 0.0, bm = 0.0, om = 0.0;
    float o[NJ];
#pragma unroll
    for (int j = 0; j < NJ; j++) o[j] = 0.0f;
    const float *qr = Qs + r * ld;
    float *pr = Ps + r * (PF_BK + 1);

    for (int k0 = 0; k0 < kmax; k0 += PF_BK) {
        const int kn = min(PF_BK, kmax - k0);
        __syncthreads(); /* Q stored (first tile); the previous tile's K / V no longer read */
        for (int idx = tid; idx < PF_BK * hd; idx += PF_THREADS) {
            const int kk = idx / hd, d = idx % hd;
            const size_t off = (size_t)(k0 + kk) * a.kv_stride + (size_t)g * hd + d;
            Ks[kk * ld + d] = kk < kn ? a.k[off] : 0.0f;
            Vs[kk * ld + d] = kk < kn ? a.v[off] : 0.0f;
        }
        __syncthreads();
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int d = 0; d < hd; d++) {
            const float qv = qr[d];
#pragma unroll
            for (int j = 0; j < 4; j++) s[j] += qv * Ks[(sub + 8 * j) * ld + d];
        }
        int lim = lim_row - k0; /* this row's visible keys in the tile */
        if (lim > kn) lim = kn;
        float tmax = -FLT_MAX;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int kk = sub + 8 * j;
            if (kk < lim) {
                s[j] = s[j] * a.scale + (brow ? brow[k0 + kk] : 0.0f);
                tmax = fmaxf(tmax, s[j]);
            }
        }
        /* the row's 8 threads are lanes 8i..8i+7 of one warp; every lane takes part */
        for (int o2 = 1; o2 < 8; o2 <<= 1)
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o2));
        const float mnew = fmaxf(m, tmax);
        float al = 1.0f;
        if (mnew > m) { /* the max rose: rescale what is held (a = 0 from the -FLT_MAX start) */
            const double dm = (double)m - (double)mnew, ad = exp(dm);
            tt = ad * (tt + dm * z);
            z *= ad, bm *= ad, om *= ad;
            al = (float)ad;
        }
        m = mnew;
        double zs = 0.0, ts = 0.0, bs = 0.0, os = 0.0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int kk = sub + 8 * j;
            float e = 0.0f;
            if (kk < lim) {
                const float d = s[j] - m;
                e = expf(d);
                zs += e;
                ts += (double)e * d;
                if (a.basin) {
                    const int k = k0 + kk;
                    if (k >= a.basin_lo && k < a.basin_hi)
                        bs += e;
                    else
                        os += e;
                }
            }
            pr[kk] = e;
        }
        for (int o2 = 1; o2 < 8; o2 <<= 1) { /* same tree in the 8 lanes: equal results */
            zs += __shfl_xor_sync(0xffffffffu, zs, o2);
            ts += __shfl_xor_sync(0xffffffffu, ts, o2);
            bs += __shfl_xor_sync(0xffffffffu, bs, o2);
            os += __shfl_xor_sync(0xffffffffu, os, o2);
        }
        z += zs, tt += ts, bm += bs, om += os;
        __syncwarp(); /* the row's P values, written by its 8 lanes, visible to them */
#pragma unroll
        for (int j = 0; j < NJ; j++) o[j] *= al;
        for (int kk = 0; kk < kn; kk++) {
            const float p = pr[kk];
            const float *vr = Vs + kk * ld;
#pragma unroll
            for (int j = 0; j < NJ; j++)
                if (sub + 8 * j < hd) o[j] += p * vr[sub + 8 * j];
        }
    }
    if (live) {
        const float inv = (float)(1.0 / z);
        float *out = a.out + (size_t)t * a.out_stride + (size_t)h * hd;
#pragma unroll
        for (int j = 0; j < NJ; j++)
            if (sub + 8 * j < hd) out[sub + 8 * j] = o[j] * inv;
        if (rowz && sub == 0) {
            double *q = rowz + 4 * ((size_t)h * T + t);
            q[0] = z;
            q[1] = tt;
            q[2] = bm / z;
            q[3] = om / z;
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------------ */

enum { ATT_DONE = 1, ATT_FALLBACK = 0, ATT_FAILED = -1 };

/* The per-row kernel (probabilities, head_dim beyond the tiled kernels). */
static int attention_rows(cv_cuda_ctx *c, const cv_attn_args *a, int want_rows, double **rowz) {
    const int rows = a->n_heads * a->T, hd = a->head_dim, NK = a->n_keys;
    const int ngroups = ATT_THREADS >= hd ? ATT_THREADS / hd : 1;
    size_t base = sizeof(float) * ((size_t)hd + (size_t)ngroups * hd);
    size_t with_scores = base + sizeof(float) * (size_t)NK;
    /* the opt-in limit covers static + dynamic shared memory: keep 1 KiB for the static part */
    const size_t limit = c->smem_optin > 1024 ? (size_t)c->smem_optin - 1024 : 0;
    int use_smem = with_scores <= limit;
    size_t smem = use_smem ? with_scores : base;
    /* scratch: the rows' (z, t), then the scores when they live in global memory */
    size_t zbytes = want_rows ? sizeof(double) * 4 * (size_t)rows : 0;
    size_t sbytes = use_smem ? 0 : sizeof(float) * (size_t)rows * NK;
    char *scr = NULL;
    if (zbytes + sbytes) {
        scr = static_cast<char *>(cv_cuda_scratch(c, zbytes + sbytes));
        if (!scr) return ATT_FAILED;
    }
    if (smem > 48 * 1024 && (int)smem > c->attn_smem) {
        CV_CUDA_CHECK(c, cudaFuncSetAttribute(attention_kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)limit));
        c->attn_smem = (int)limit;
    }
    *rowz = want_rows ? reinterpret_cast<double *>(scr) : NULL;
    float *gscores = use_smem ? NULL : reinterpret_cast<float *>(scr + zbytes);
    attention_kernel<<<rows, ATT_THREADS, smem, c->stream>>>(*a, gscores, use_smem, *rowz);
    CV_CUDA_LAUNCHED(c, "attention");
    return ATT_DONE;
}

static size_t dec_smem_bytes(int hd, int chunk) {
    const int ngroups = ATT_THREADS >= hd ? ATT_THREADS / hd : 1;
    return sizeof(float) *
           ((size_t)DEC_RB * hd + (size_t)DEC_RB * chunk + (size_t)ngroups * DEC_RB * hd);
}

static int attention_decode(cv_cuda_ctx *c, const cv_attn_args *a, int want_rows, double **rowz) {
    const int H = a->n_heads, KVH = a->n_kv_heads, hd = a->head_dim, rep = H / KVH;
    if (a->T != 1 || a->probs || hd > 2 * ATT_THREADS || H % KVH) return ATT_FALLBACK;
    const int kend =
        a->causal ? (a->q_pos0 + 1 < a->n_keys ? a->q_pos0 + 1 : a->n_keys) : a->n_keys;
    if (kend <= 0) return ATT_FALLBACK;
    const int ngrp = (rep + DEC_RB - 1) / DEC_RB;
    /* chunk length: about two blocks per SM, 64..512 keys (a multiple of 64) */
    const long long target = 2LL * (c->sm_count > 0 ? c->sm_count : 132);
    long long per = ((long long)kend * KVH * ngrp + target - 1) / target;
    int chunk = (int)((per + DEC_MIN_CHUNK - 1) / DEC_MIN_CHUNK * DEC_MIN_CHUNK);
    if (chunk < DEC_MIN_CHUNK) chunk = DEC_MIN_CHUNK;
    if (chunk > DEC_MAX_CHUNK) chunk = DEC_MAX_CHUNK;
    while (chunk > DEC_MIN_CHUNK && dec_smem_bytes(hd, chunk) > 48 * 1024) chunk -= DEC_MIN_CHUNK;
    const size_t smem = dec_smem_bytes(hd, chunk);
    if (smem > 48 * 1024) return ATT_FALLBACK;
    const int nch = (kend + chunk - 1) / chunk;
    if (nch > 65535) return ATT_FALLBACK; /* > 33M keys: grid.x is fine, keep it simple */
    /* scratch: rowz (4 H doubles), partials (H nch 5 doubles), partial outputs (H nch hd) */
    const size_t zb = sizeof(double) * 4 * (size_t)H, pb = sizeof(double) * DEC_PART * H * nch;
    const size_t ob = sizeof(float) * (size_t)H * nch * hd;
    char *scr = static_cast<char *>(cv_cuda_scratch(c, zb + pb + ob));
    if (!scr) return ATT_FAILED;
    double *part = reinterpret_cast<double *>(scr + zb);
    float *po = reinterpret_cast<float *>(scr + zb + pb);
    *rowz = want_rows ? reinterpret_cast<double *>(scr) : NULL;
    dim3 grid((unsigned)nch, (unsigned)KVH, (unsigned)ngrp);
    attn_decode_chunk_kernel<<<grid, ATT_THREADS, smem, c->stream>>>(*a, chunk, nch, po, part);
    CV_CUDA_LAUNCHED(c, "attention decode chunks");
    attn_decode_merge_kernel<<<H, ATT_THREADS, 0, c->stream>>>(*a, chunk, nch, po, part, *rowz);
    CV_CUDA_LAUNCHED(c, "attention decode merge");
    return ATT_DONE;
}

template <int NJ>
static void launch_prefill(cv_cuda_ctx *c, const cv_attn_args *a, size_t smem, double *rowz) {
    if (smem > 48 * 1024)
        CV_CUDA_CHECK(c,
                      cudaFuncSetAttribute(attn_prefill_kernel<NJ>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)((a->T + PF_BQ - 1) / PF_BQ), (unsigned)a->n_heads);
    attn_prefill_kernel<NJ><<<grid, PF_THREADS, smem, c->stream>>>(*a, rowz);
    CV_CUDA_LAUNCHED(c, "attention prefill tiles");
}

static int attention_prefill(cv_cuda_ctx *c, const cv_attn_args *a, int want_rows, double **rowz) {
    const int hd = a->head_dim;
    if (a->T <= 1 || a->probs || hd > 256 || a->n_heads % a->n_kv_heads) return ATT_FALLBACK;
    if (a->n_heads > 65535) return ATT_FALLBACK;
    const size_t smem = pf_smem_bytes(hd);
    if (smem > 48 * 1024 && (c->smem_optin <= 0 || smem > (size_t)c->smem_optin))
        return ATT_FALLBACK;
    *rowz = NULL;
    if (want_rows) {
        *rowz = static_cast<double *>(
            cv_cuda_scratch(c, sizeof(double) * 4 * (size_t)a->n_heads * a->T));
        if (!*rowz) return ATT_FAILED;
    }
    if (hd <= 64)
        launch_prefill<8>(c, a, smem, *rowz);
    else if (hd <= 128)
        launch_prefill<16>(c, a, smem, *rowz);
    else
        launch_prefill<32>(c, a, smem, *rowz);
    return ATT_DONE;
}

void cv_cuda_attention(cv_backend *b, const cv_attn_args *a) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    const int rows = a->n_heads * a->T, hd = a->head_dim, NK = a->n_keys;
    if (rows <= 0 || NK <= 0 || hd <= 0 || a->n_kv_heads <= 0) return;
    const int want_rows = a->stats || a->heads || a->basin;
    double *rowz = NULL;
    int rc = attention_decode(c, a, want_rows, &rowz);
    if (rc == ATT_FALLBACK) rc = attention_prefill(c, a, want_rows, &rowz);
    if (rc == ATT_FALLBACK) rc = attention_rows(c, a, want_rows, &rowz);
    if (rc != ATT_DONE) return;
    if (a->stats) {
        attn_record_kernel<<<1, ATT_THREADS, 0, c->stream>>>(a->stats, rowz, rows);
        CV_CUDA_LAUNCHED(c, "attention statistics");
    }
    if (a->heads || a->basin) {
        attn_heads_kernel<<<a->n_heads, 32, 0, c->stream>>>(*a, rowz);
        CV_CUDA_LAUNCHED(c, "attention head records");
    }
}
