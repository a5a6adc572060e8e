/* logits.cu — the logits pass on CUDA: one read of the V logits gives the entropy (online max /
 * sum-exp / sum-exp*(s-m), double) and the top-k (k <= 64) list written into the logits record
 * (stats.h); argmax returns the greedy token with a single 4-byte copy. CPU twin:
 * cv_logits_stats_row (src/stats/stats.c) and cpu_argmax.
 *
 * Stage 1, one block per 4096 logits: the block's (m, z, t) and non-finite flag, and its chunk
 * sorted in shared memory (bitonic, 64-bit keys: value, then lower id first) of which the best k
 * are kept. Stage 2, one block: merges the (m, z, t) partials in chunk order and selects the best
 * k of the candidates by the same sort (in rounds of 4096 when there are more), then writes the
 * record. Semantics follow the CPU exactly: -inf logits are masked tokens (probability 0, never
 * listed); NaN or +inf make the entropy and the probabilities NaN and are never listed; ties in
 * value list the lower id first; fewer than k finite logits list only those. */
#include "common.cuh"

#define LG_THREADS 512
#define LG_CHUNK   4096 /* logits per stage-1 block, and the stage-2 sort width */
#define LG_PART                                                                                    \
    7 /* doubles per stage-1 partial: m, z, t, non-finite flag, NaN / +inf / -inf counts */

typedef unsigned long long u64;

/* Sort n (a power of two, <= LG_CHUNK) keys in shared memory, descending. */
__device__ void bitonic_desc(u64 *keys, int n) {
    for (int size = 2; size <= n; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
                int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                bool desc = (lo & size) == 0;
                u64 a = keys[lo], b = keys[hi];
                if (desc ? a < b : a > b) {
                    keys[lo] = b;
                    keys[hi] = a;
                }
            }
            __syncthreads();
        }
}

/* Merge (m2, z2, t2) into (m, z, t): rescale both to the larger max. z == 0 means empty. */
__device__ __forceinline__ void mzt_merge(double &m, double &z, double &t, double m2, double z2,
                                          double t2) {
    if (z2 <= 0.0) return;
    if (z <= 0.0) {
        m = m2, z = z2, t = t2;
        return;
    }
    double M = m > m2 ? m : m2;
    double r1 = exp(m - M), r2 = exp(m2 - M);
    t = r1 * (t + (m - M) * z) + r2 * (t2 + (m2 - M) * z2);
    z = r1 * z + r2 * z2;
    m = M;
}

__global__ void __launch_bounds__(LG_THREADS)
    logits_partial_kernel(const float *logits, int V, int k, double *part, u64 *cand) {
    __shared__ u64 keys[LG_CHUNK];
    __shared__ double sm[32], sz[32], st[32], scount[32];
    const int base = blockIdx.x * LG_CHUNK;
    double m = -INFINITY, z = 0.0, t = 0.0;
    int nonfinite = 0, cnan = 0, cpinf = 0, cninf = 0;
    for (int j = threadIdx.x; j < LG_CHUNK; j += blockDim.x) {
        int i = base + j;
        u64 key = 0;
        if (i < V) {
            float l = logits[i];
            if (isfinite(l)) {
                key = cv_rank_key(l, i);
                if (l > m) { /* rescale the running sums to the new maximum (as the CPU) */
                    double r = exp(m - l);
                    if (z > 0) t = r * (t + (m - l) * z), z = r * z;
                    m = l;
                }
                double d = l - m, e = exp(d);
                z += e;
                t += e * d;
            } else {
                if (isnan(l) || l > 0) nonfinite = 1;
                cnan += isnan(l);
                cpinf += isinf(l) && l > 0;
                cninf += isinf(l) && l < 0;
            }
        }
        keys[j] = key;
    }
    /* merge the threads' (m, z, t): warp butterflies, then warp 0 over the warps' results */
    for (int o = 16; o > 0; o >>= 1) {
        double m2 = __shfl_xor_sync(0xffffffffu, m, o), z2 = __shfl_xor_sync(0xffffffffu, z, o),
               t2 = __shfl_xor_sync(0xffffffffu, t, o);
        /* both lanes of a pair combine the same two values in a fixed (lower lane first) order */
        if ((threadIdx.x & o) == 0) {
            mzt_merge(m, z, t, m2, z2, t2);
        } else {
            double mm = m2, zz = z2, tt = t2;
            mzt_merge(mm, zz, tt, m, z, t);
            m = mm, z = zz, t = tt;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sm[warp] = m, sz[warp] = z, st[warp] = t;
    nonfinite = __syncthreads_or(nonfinite);
    /* non-finite counts (health, decision 4): rare, so three plain block sums */
    const double bnan = cv_block_sum_d((double)cnan, scount);
    const double bpinf = cv_block_sum_d((double)cpinf, scount);
    const double bninf = cv_block_sum_d((double)cninf, scount);
    if (threadIdx.x == 0) {
        double M = -INFINITY, Z = 0.0, Tt = 0.0;
        for (int w = 0; w < nw; w++) mzt_merge(M, Z, Tt, sm[w], sz[w], st[w]);
        double *p = part + LG_PART * (size_t)blockIdx.x;
        p[0] = M, p[1] = Z, p[2] = Tt, p[3] = nonfinite, p[4] = bnan, p[5] = bpinf, p[6] = bninf;
    }
    if (k <= 0) return;
    bitonic_desc(keys, LG_CHUNK); /* begins with the barrier above having published keys */
    for (int j = threadIdx.x; j < k; j += blockDim.x) cand[(size_t)blockIdx.x * k + j] = keys[j];
}

__global__ void __launch_bounds__(LG_THREADS)
    logits_final_kernel(double *rec, const double *part, int nblocks, const u64 *cand, int V,
                        int k) {
    __shared__ u64 keys[LG_CHUNK];
    __shared__ double fin[7];
    if (threadIdx.x == 0) {
        double M = -INFINITY, Z = 0.0, Tt = 0.0, cnt[3] = {0.0, 0.0, 0.0};
        int nonfinite = 0;
        for (int b = 0; b < nblocks; b++) {
            const double *p = part + LG_PART * (size_t)b;
            mzt_merge(M, Z, Tt, p[0], p[1], p[2]);
            nonfinite |= p[3] != 0.0;
            for (int i = 0; i < 3; i++) cnt[i] += p[4 + i];
        }
        fin[0] = M, fin[1] = Z, fin[2] = Tt, fin[3] = nonfinite;
        fin[4] = cnt[0], fin[5] = cnt[1], fin[6] = cnt[2];
    }
    /* top-k over nblocks * k candidates: keep the best k at the front, refill the rest */
    const int ncand = nblocks * k;
    int used = 0, kept = 0;
    while (k > 0 && used < ncand) {
        int room = LG_CHUNK - kept, take = ncand - used < room ? ncand - used : room;
        int width = 64; /* sort only the power of two that holds what is kept + taken */
        while (width < kept + take) width <<= 1;
        for (int j = threadIdx.x; j < width - kept; j += blockDim.x)
            keys[kept + j] = j < take ? cand[used + j] : 0ull;
        used += take;
        __syncthreads();
        bitonic_desc(keys, width);
        kept = k;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const double M = fin[0], Z = fin[1], Tt = fin[2];
        const int nonfinite = fin[3] != 0.0;
        int nbest = 0;
        for (int j = 0; j < k && keys[j] != 0ull; j++) nbest++;
        if (k <= 0) nbest = 0;
        rec[CV_LS_V] = V;
        rec[CV_LS_ENTROPY] = nonfinite || Z <= 0 ? (double)NAN : log(Z) - Tt / Z;
        rec[CV_LS_K] = nbest;
        rec[CV_LS_LSE] = nonfinite || Z <= 0 ? (double)NAN : M + log(Z);
        rec[CV_LS_NNAN] = fin[4];
        rec[CV_LS_NPINF] = fin[5];
        rec[CV_LS_NNINF] = fin[6];
        for (int j = 0; j < nbest; j++) {
            rec[CV_LS_FIXED + 2 * j] = cv_rank_id(keys[j]);
            rec[CV_LS_FIXED + 2 * j + 1] =
                nonfinite ? (double)NAN : exp((double)cv_rank_value(keys[j]) - M) / Z;
        }
    }
}

void cv_cuda_logits_stats(cv_backend *b, double *rec, const float *logits, int V, int topk) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    int k = topk > CV_TOPK_MAX ? CV_TOPK_MAX : topk;
    if (k > V) k = V;
    if (k < 0) k = 0;
    if (V <= 0) return;
    const int nblocks = (V + LG_CHUNK - 1) / LG_CHUNK;
    size_t pbytes = sizeof(double) * LG_PART * (size_t)nblocks;
    size_t cbytes = sizeof(u64) * (size_t)nblocks * (size_t)(k > 0 ? k : 1);
    char *scr = static_cast<char *>(cv_cuda_scratch(c, pbytes + cbytes));
    if (!scr) return;
    double *part = reinterpret_cast<double *>(scr);
    u64 *cand = reinterpret_cast<u64 *>(scr + pbytes);
    logits_partial_kernel<<<nblocks, LG_THREADS, 0, c->stream>>>(logits, V, k, part, cand);
    CV_CUDA_LAUNCHED(c, "logits statistics (partials)");
    logits_final_kernel<<<1, LG_THREADS, 0, c->stream>>>(rec, part, nblocks, cand, V, k);
    CV_CUDA_LAUNCHED(c, "logits statistics (final)");
}

/* The first index of the largest logit, like cpu_argmax (NaN never wins; a NaN at index 0 makes
 * the CPU loop keep 0, and so does this). */
__global__ void __launch_bounds__(LG_THREADS) argmax_kernel(const float *x, int V, int32_t *out) {
    __shared__ u64 sh[32];
    u64 best = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = x[i];
        if (!isnan(v)) {
            u64 key = cv_rank_key(v, i);
            if (key > best) best = key;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        u64 other = __shfl_xor_sync(0xffffffffu, best, o);
        if (other > best) best = other;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < nw; w++)
            if (sh[w] > sh[0]) sh[0] = sh[w];
        *out = (sh[0] == 0ull || isnan(x[0])) ? 0 : cv_rank_id(sh[0]);
    }
}

int32_t cv_cuda_argmax(cv_backend *b, const float *logits, int V) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (V <= 0) return 0;
    int32_t *d = static_cast<int32_t *>(cv_cuda_scratch(c, sizeof(int32_t)));
    if (!d) return -1;
    argmax_kernel<<<1, LG_THREADS, 0, c->stream>>>(logits, V, d);
    CV_CUDA_LAUNCHED(c, "argmax");
    *c->pinned = -1; /* never a token: what a failed copy would leave behind */
    CV_CUDA_CHECK(
        c, cudaMemcpyAsync(c->pinned, d, sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    CV_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    /* a fault of this or an earlier kernel surfaces in the copy or the sync: no made-up token */
    return c->failed ? -1 : *c->pinned;
}

/* pick_greedy (CPU twin cpu_pick_greedy): the argmax kernel's choice, then one thread writes it
 * and its logit into the arena's step slots and, for the device-token loop, the next step's
 * token and position into the step parameters, on the device: no copy, no sync here. */
__global__ void pick_slot_kernel(const int32_t *id, const float *x, int V, double *slot,
                                 int32_t *step) {
    int i = *id;
    if (slot) {
        slot[CV_STEP_TOKEN] = i;
        slot[CV_STEP_LOGIT] = i >= 0 && i < V ? (double)x[i] : (double)NAN;
    }
    if (step) {
        step[CV_SP_TOKEN] = i;
        step[CV_SP_POS] += 1;
    }
}

void cv_cuda_pick_greedy(cv_backend *b, const float *logits, int V, double *slot, int32_t *step) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    if (V <= 0 || (!slot && !step)) return;
    int32_t *d = static_cast<int32_t *>(cv_cuda_scratch(c, sizeof(int32_t)));
    if (!d) return;
    argmax_kernel<<<1, LG_THREADS, 0, c->stream>>>(logits, V, d);
    CV_CUDA_LAUNCHED(c, "argmax");
    pick_slot_kernel<<<1, 1, 0, c->stream>>>(d, logits, V, slot, step);
    CV_CUDA_LAUNCHED(c, "greedy step slot");
}

/* stats_reset (CPU twin cv_stats_arena_reset): zero the arena, then the few fields whose
 * identity is +inf (attention minimum entropy, per-head minimum row weight). */
__global__ void stats_identities_kernel(double *a, cv_stats_layout l) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < l.n_layers;
         i += gridDim.x * blockDim.x) {
        a[l.attn_off + (size_t)i * CV_AS_SIZE + CV_AS_EMIN] = INFINITY;
        if (l.has_cross) a[l.cross_off + (size_t)i * CV_AS_SIZE + CV_AS_EMIN] = INFINITY;
        if (!l.health) continue;
        for (int h = 0; h < l.n_heads; h++) {
            size_t at = ((size_t)i * l.n_heads + h) * CV_AH_SIZE + CV_AH_CMIN;
            a[l.heads_off + at] = INFINITY;
            if (l.has_cross) a[l.cross_heads_off + at] = INFINITY;
        }
    }
}

void cv_cuda_stats_reset(cv_backend *b, double *arena, const cv_stats_layout *lay) {
    cv_cuda_ctx *c = cv_cuda_ctx_of(b);
    CV_CUDA_CHECK(c, cudaMemsetAsync(arena, 0, lay->total * sizeof(double), c->stream));
    stats_identities_kernel<<<1, 128, 0, c->stream>>>(arena, *lay);
    CV_CUDA_LAUNCHED(c, "statistics reset");
}
