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

#include <stddef.h>
#include <stdint.h>

enum { CV_HS_ROWS, CV_HS_SUM, CV_HS_M2, CV_HS_L2SUM, CV_HS_MAXABS, CV_HS_FIXED };
enum { CV_AS_ROWS, CV_AS_ESUM, CV_AS_EMIN, CV_AS_WMAX, CV_AS_SIZE };
enum { CV_LS_V, CV_LS_ENTROPY, CV_LS_K, CV_LS_FIXED };
#define CV_TOPK_MAX 64
#define CV_ATTN_EPS 1e-10 /* the reference's epsilon inside ln(a + eps) */

static inline size_t cv_hidden_record_size(int D) {
    return CV_HS_FIXED + (size_t)D;
}
static inline size_t cv_logits_record_size(int k) {
    return CV_LS_FIXED + 2 * (size_t)k;
}

/* Where one step's records sit in the arena: L hidden, L attention, L cross-attention (seq2seq
 * decoder only, else 0), then one logits record. */
typedef struct {
    int n_layers, dim, has_cross, topk;
    size_t hidden_off, attn_off, cross_off, logits_off, total; /* in doubles */
} cv_stats_layout;

void cv_stats_layout_init(cv_stats_layout *lay, int n_layers, int dim, int has_cross, int topk);
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

/* Finalized numbers (SPEC §4). */
typedef struct {
    double mean, std, l2_norm_mean, max_abs;
    int sketch_dim;
    double sketch[256];
} cv_hidden_stats;
typedef struct {
    double entropy_mean, entropy_min, concentration_max;
} cv_attn_stats;
typedef struct {
    double entropy, margin;
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
