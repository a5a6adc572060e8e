/* stats.h — statistic records filled by the ops, and their finalization into SPEC §4 numbers.
 *
 * The ops that produce a summarized tensor (residual add / final norm for hidden states, the
 * softmax inside attention, the logits pass) accumulate partial sums into a small record of
 * doubles that lives in backend memory (host on the CPU, device on CUDA), so no full tensor is
 * ever stored or copied back. One step's records form one contiguous arena, downloaded once.
 *
 * Record layouts (all double):
 *   hidden  [CV_HS_ROWS] rows S, [CV_HS_SUM] sum x, [CV_HS_M2] sum of squared deviations from the
 * record mean (Chan et al. merge), [CV_HS_L2SUM] sum of row L2 norms, [CV_HS_MAXABS] max |x|, then
 * D column sums (for the sketch). attn    [CV_AS_ROWS] rows H*Q, [CV_AS_ESUM] sum of row entropies,
 * [CV_AS_EMIN] min row entropy, [CV_AS_WMAX] max single weight. logits  [CV_LS_V] V,
 * [CV_LS_ENTROPY] entropy (nats), [CV_LS_K] k, then k (id, prob) pairs in descending probability
 * (ties: lower id first). Records accumulate: an op adds its rows to whatever the record already
 * holds (zero it first). */
#ifndef COREVITAL_STATS_H
#define COREVITAL_STATS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Inline record updates shared by the CPU ops and the CUDA kernels (kernels/ *.cu). */
#ifdef __CUDACC__
#define CV_HD __host__ __device__
#else
#define CV_HD
#endif

enum {
    CV_HS_ROWS,
    CV_HS_SUM,
    CV_HS_M2,
    CV_HS_L2SUM,
    CV_HS_MAXABS,
    /* health (HEALTH.md §4): NaN count, +-inf count, count of |x| > 1e6 (inf included), and the
     * sum of row L2 norms of clamp(x, +-1e6) (the l2 the health flags use) */
    CV_HS_NNAN,
    CV_HS_NINF,
    CV_HS_NCLIP,
    CV_HS_L2CLAMP,
    CV_HS_FIXED
};
#define CV_CLIP_LIMIT 1e6
enum { CV_AS_ROWS, CV_AS_ESUM, CV_AS_EMIN, CV_AS_WMAX, CV_AS_SIZE };
/* Per-head attention record (health, HEALTH.md §3), one per query head: rows counted, sum of row
 * entropies e (nats), sum of e / ln K (e when K <= 1), sum of row max weights, largest weight,
 * smallest row max weight, rows with a non-finite softmax, rows with K <= 1. */
enum {
    CV_AH_ROWS,
    CV_AH_ESUM,
    CV_AH_NSUM,
    CV_AH_CSUM,
    CV_AH_WMAX,
    CV_AH_CMIN,
    CV_AH_NBAD,
    CV_AH_ONEKEY,
    CV_AH_SIZE
};
/* Logits record: V, entropy (nats), k, log-sum-exp of the finite logits, NaN count, +inf count,
 * -inf count, then k (id, prob) pairs. */
enum {
    CV_LS_V,
    CV_LS_ENTROPY,
    CV_LS_K,
    CV_LS_LSE,
    CV_LS_NNAN,
    CV_LS_NPINF,
    CV_LS_NNINF,
    CV_LS_FIXED
};
#define CV_TOPK_MAX 64
#define CV_ATTN_EPS 1e-10 /* the reference's epsilon inside ln(a + eps) */

static inline size_t cv_hidden_record_size(int D) {
    return CV_HS_FIXED + (size_t)D;
}
static inline size_t cv_logits_record_size(int k) {
    return CV_LS_FIXED + 2 * (size_t)k;
}

/* Where one step's records sit in the arena: L hidden, L attention, L cross-attention (seq2seq
 * decoder only, else 0), then one logits record. With health on (cv_stats_layout_health) the
 * arena goes on with per-head records (L x H, then L x H for cross-attention), and for a prompt
 * pass (prefill / encoder) the prompt analysis: basin sums (L x H x 2: sum over query rows of
 * the mass on the middle third of the keys, and off it), the layer transformations' cosine sums
 * (L: entry l sums cos(h_{l-1}[t], h_l[t]) over rows t, entry 0 unused). */
typedef struct {
    int n_layers, dim, has_cross, topk;
    size_t hidden_off, attn_off, cross_off, logits_off, total; /* in doubles */
    size_t step_off; /* CV_STEP_SLOTS doubles after the logits record (see cv_stats_step) */
    /* health: 0 when off */
    int health, n_heads, heads_last_row, prompt_P, sparse;
    size_t heads_off, cross_heads_off, basin_off, ltrans_off, sparse_off;
} cv_stats_layout;

/* Sparse prompt attention (HEALTH.md §5, layers[l].heads): per head at most CV_SPARSE_CAP
 * (q, k, w) with w > CV_SPARSE_MIN, the largest weights (ties to the lower (q, k)), kept in
 * row-major order: a count, then CV_SPARSE_CAP triples. */
#define CV_SPARSE_CAP   50
#define CV_SPARSE_MIN   0.01f
#define CV_SPARSE_SLOTS (1 + 3 * CV_SPARSE_CAP)

void cv_stats_layout_init(cv_stats_layout *lay, int n_layers, int dim, int has_cross, int topk);

/* Python's round(x, d): the correctly rounded decimal (what "%.*f" + strtod gives, halves to
 * even as the binary value decides); non-finite x unchanged. Every rN of the trace uses it. */
double cv_round_decimals(double x, int d);
/* Add the health records to a layout. heads_last_row: per-head records take only each head's
 * last query row (decoder steps, HEALTH.md §0); else every row (encoder layers). prompt_P > 0:
 * this pass is over a prompt of P tokens and also gathers the prompt analysis. */
void cv_stats_layout_health(cv_stats_layout *lay, int n_heads, int heads_last_row, int prompt_P);
static inline double *cv_stats_heads(double *base, const cv_stats_layout *l, int layer) {
    return base && l->health ? base + l->heads_off + (size_t)layer * l->n_heads * CV_AH_SIZE : NULL;
}
static inline double *cv_stats_cross_heads(double *base, const cv_stats_layout *l, int layer) {
    return base && l->health && l->has_cross
               ? base + l->cross_heads_off + (size_t)layer * l->n_heads * CV_AH_SIZE
               : NULL;
}
static inline double *cv_stats_basin(double *base, const cv_stats_layout *l, int layer) {
    return base && l->prompt_P > 0 ? base + l->basin_off + (size_t)layer * l->n_heads * 2 : NULL;
}
static inline double *cv_stats_sparse(double *base, const cv_stats_layout *l, int layer) {
    return base && l->sparse ? base + l->sparse_off + (size_t)layer * l->n_heads * CV_SPARSE_SLOTS
                             : NULL;
}
/* With the sparse prompt attention too (a prompt pass of a health layout). */
void cv_stats_layout_sparse(cv_stats_layout *lay);
static inline double *cv_stats_ltrans(double *base, const cv_stats_layout *l) {
    return base && l->prompt_P > 0 ? base + l->ltrans_off : NULL;
}

static inline double *cv_stats_hidden(double *base, const cv_stats_layout *l, int layer) {
    return base ? base + l->hidden_off + (size_t)layer * cv_hidden_record_size(l->dim) : NULL;
}
static inline double *cv_stats_attn(double *base, const cv_stats_layout *l, int layer) {
    return base ? base + l->attn_off + (size_t)layer * CV_AS_SIZE : NULL;
}
static inline double *cv_stats_cross(double *base, const cv_stats_layout *l, int layer) {
    return base && l->has_cross ? base + l->cross_off + (size_t)layer * CV_AS_SIZE : NULL;
}
static inline double *cv_stats_logits(double *base, const cv_stats_layout *l) {
    return base ? base + l->logits_off : NULL;
}
/* Per-step values the backend writes beside the records, so one download per step carries
 * everything: the chosen token and its raw logit (greedy), and the cosine of this step's final
 * vector with the previous one (health). Reset to 0. */
enum { CV_STEP_TOKEN, CV_STEP_LOGIT, CV_STEP_COS, CV_STEP_SLOTS = 4 };
static inline double *cv_stats_step(double *base, const cv_stats_layout *l) {
    return base ? base + l->step_off : NULL;
}

/* Reset records to their identities (sums 0, min +inf, max 0). */
void cv_hidden_record_reset(double *rec, int D);
void cv_attn_record_reset(double *rec);
void cv_stats_arena_reset(double *base, const cv_stats_layout *l);

/* Accumulate S rows of X (S, D) into a hidden record. `partial` variants are for merging records
 * computed by different threads: dst += src. */
void cv_hidden_record_add_rows(double *rec, const float *X, int S, int D);
void cv_hidden_record_merge(double *dst, const double *src, int D);
/* Add one attention row given its softmax running sums: z = sum e^(s-m), t = sum e^(s-m)(s-m). */
static inline void cv_attn_record_add_row(double *rec, double z, double t) {
    double e = __builtin_log(z) - t / z, w = 1.0 / z;
    rec[CV_AS_ROWS] += 1.0;
    rec[CV_AS_ESUM] += e;
    if (e < rec[CV_AS_EMIN]) rec[CV_AS_EMIN] = e;
    if (w > rec[CV_AS_WMAX]) rec[CV_AS_WMAX] = w;
}
void cv_attn_record_merge(double *dst, const double *src);
void cv_head_record_reset(double *rec);
/* One softmax row of head record `rec` over K keys, from its running sums (z, t). */
CV_HD static inline void cv_head_record_add_row(double *rec, double z, double t, int K) {
    double e = log(z) - t / z, w = 1.0 / z;
    rec[CV_AH_ROWS] += 1.0;
    if (!isfinite(z) || !isfinite(t)) rec[CV_AH_NBAD] += 1.0;
    if (K <= 1) rec[CV_AH_ONEKEY] += 1.0;
    rec[CV_AH_ESUM] += e;
    rec[CV_AH_NSUM] += K > 1 ? e / log((double)K) : e;
    rec[CV_AH_CSUM] += w;
    if (w > rec[CV_AH_WMAX] || w != w) rec[CV_AH_WMAX] = w; /* NaN sticks */
    if (w < rec[CV_AH_CMIN] || w != w) rec[CV_AH_CMIN] = w;
}

/* Finalized numbers (SPEC §4). */
typedef struct {
    double mean, std, l2_norm_mean, max_abs;
    int sketch_dim;
    double sketch[256];
} cv_hidden_stats;
typedef struct {
    double entropy_mean, entropy_min, concentration_max;
} cv_attn_stats;
/* Health values of one layer's attention at one step (HEALTH.md §3). */
typedef struct {
    int n_heads, valid; /* valid: some head had a row with K > 1 */
    double entropy_mean, entropy_mean_normalized, entropy_min, entropy_max;
    double concentration_max, concentration_min;
    int collapsed_head_count, focused_head_count;
    double collapsed_head_rate; /* rounded to 4 decimals */
    int has_nan;                /* a row with a non-finite softmax */
} cv_attn_health;
/* Reference path from probabilities (oracle, edge cases): add Q rows of K weights (Q x K) of one
 * head, with HEALTH.md §3's renormalization (a row whose sum is off 1 by more than 1e-3 + 1e-5
 * divides every row by max(sum, 1e-10)), e = -sum a ln max(a, 1e-10), max weight max_k a. */
void cv_head_record_add_probs(double *rec, const double *A, int Q, int K);
/* H per-head records -> layer values; focus: the focused-head threshold (0.9 on the timeline). */
void cv_attn_health_finalize(const double *heads, int H, double focus, cv_attn_health *out);

/* Health values of one hidden record (HEALTH.md §4). */
typedef struct {
    int clipped, has_nan, has_inf;
    double clip_fraction, clip_max_before, l2; /* l2: mean row norm of the clamped values */
} cv_hidden_health;
void cv_hidden_health_finalize(const double *rec, int D, cv_hidden_health *out);

typedef struct {
    double entropy, margin;
    double lse; /* log-sum-exp of the finite logits */
    int n_nan, n_pinf, n_ninf;
    int k;
    int32_t ids[CV_TOPK_MAX];
    double probs[CV_TOPK_MAX];
} cv_logit_stats;

/* The sketch projection: R (D x dim) from numpy's legacy MT19937 Gaussian stream, / sqrt(D). */
typedef struct {
    int D, dim;
    uint32_t seed;
    double *R; /* (D, dim) row-major */
} cv_sketch;
int cv_sketch_init(cv_sketch *sk, int D, int dim, uint32_t seed); /* 0 ok, -1 out of memory */
void cv_sketch_free(cv_sketch *sk);

void cv_hidden_finalize(const double *rec, int D, const cv_sketch *sk, cv_hidden_stats *out);
void cv_attn_finalize(const double *rec, cv_attn_stats *out);
void cv_logits_finalize(const double *rec, cv_logit_stats *out);

/* The health logit values of a step (HEALTH.md §2, raw logits) from its logits record (k >= 10
 * for topk_mass) and the emitted token's raw logit. NaN where undefined. */
typedef struct {
    double entropy_bits, perplexity, surprisal_bits, top_k_margin, topk_mass;
    int nan, inf; /* a NaN / an infinite logit (either sign) in the row */
} cv_logit_health;
void cv_logit_health_of(const double *rec, int token, float token_logit, cv_logit_health *out);

/* One-pass logits statistics over a full row of V raw logits (the CPU op and the oracle for CUDA):
 * online max / sum-exp / sum-exp*(s-m) plus a k-best list. Writes a logits record. */
void cv_logits_stats_row(double *rec, const float *logits, int V, int k);

/* numpy legacy RandomState (MT19937 + polar Gaussians), for the sketch. */
typedef struct {
    uint32_t mt[624];
    int mti;
    int has_gauss;
    double gauss;
} cv_np_random;
void cv_np_seed(cv_np_random *r, uint32_t seed);
uint32_t cv_np_genrand(cv_np_random *r);
double cv_np_random_double(cv_np_random *r);
double cv_np_gauss(cv_np_random *r);

/* Reference implementations over full tensors (test oracles). */
void cv_hidden_stats_ref(const float *X, int S, int D, const cv_sketch *sk, cv_hidden_stats *out);
void cv_attn_stats_ref(const float *A, int rows, int K, cv_attn_stats *out); /* A (rows, K) probs */
void cv_logits_stats_ref(const float *logits, int V, int k, cv_logit_stats *out);

#endif
