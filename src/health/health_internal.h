/* health_internal.h — state and helpers shared by the health layer's files (src/health/). */
#ifndef COREVITAL_HEALTH_INTERNAL_H
#define COREVITAL_HEALTH_INTERNAL_H

#include "corevital/health.h"
#include "corevital/stats.h"

#include <stddef.h>
#include <stdint.h>

/* A growable list of doubles. */
typedef struct {
    double *v;
    int n, cap;
} cv_hseries;

struct cv_health_run {
    cv_health_profile prof;
    int L, H, P;
    int steps;
    /* per-step logit values: "unfiltered" (every present value, NaN/Inf included) and finite */
    cv_hseries ent, margin, surp, mass;
    cv_hseries ent_f, margin_f, surp_f, mass_f;
    /* collapse series: r_i for the steps with attention information, and per step (all steps)
     * the collapsed head count of each layer, -1 where attn_valid == 0 */
    cv_hseries rate;
    int *cc;
    int cc_cap; /* in steps */
    /* per-layer accumulators (blame) */
    int *layer_bad;       /* NaN/Inf at some step */
    int *layer_collapsed; /* steps with collapsed_heads > 0 */
    int *layer_valid;     /* steps whose attention had a row with K > 1 (decision 3) */
    int *l2_n;
    double *l2_mean, *l2_m2; /* Welford over the finite l2 values */
    /* attention_bottleneck totals */
    double bn_cc, bn_d;
    int bn_any;
    /* flags */
    int nan, inf, high_entropy, mid;
    int rep, rep_count;
    int64_t rep_first;
    /* narrative: the first step with the largest finite entropy */
    int have_peak;
    double peak_ent;
    int64_t peak_step;
    char *peak_tok;
    /* prompt basin scores */
    int have_basins;
    double basin_sum;
    long basin_n;
};

/* One compound signal. */
typedef struct {
    const char *name, *factor, *description;
    double severity;
    int n_evidence;
    char evidence[3][400];
} cv_hsignal;

/* One blamed layer. */
typedef struct {
    int layer;
    double severity; /* rounded to 2 decimals */
    int n_reasons;
    char reasons[4][400];
} cv_hblame;

#define CV_H_MAX_FACTORS 16
#define CV_H_MAX_WARN    8

/* Everything derived from the run so far (no allocation). */
typedef struct {
    /* attention collapse */
    int collapse_reason; /* 0: computed, 1: insufficient_data, 2: no_attention_data */
    int collapse_detected;
    double collapse_severity; /* r2; meaningful when detected */
    double mean_rate;         /* unrounded */
    int trend, catastrophic;
    double trend_dev; /* r4 when trend, else 0 */
    int early_window;
    /* compound signals, in upstream order */
    cv_hsignal compound[5];
    int n_compound;
    /* risk v2 */
    double risk;
    int n_factors;
    const char *factors[CV_H_MAX_FACTORS];
    double contrib[CV_H_MAX_FACTORS];
    /* early warning */
    double failure_risk;
    int n_warn;
    const char *warn[CV_H_MAX_WARN];
} cv_heval;

void cv_heval_compute(const cv_health_run *r, cv_heval *e);

/* Layer blame; *out is malloc'd (NULL when none). Returns the count, -1 on out of memory. */
int cv_health_blame(const cv_health_run *r, cv_hblame **out);

/* Compound signals and early warning (signals.c). */
void cv_health_compound(const cv_health_run *r, cv_heval *e);
void cv_health_early_warning(const cv_health_run *r, cv_heval *e);
/* The 25-value fingerprint v2. */
void cv_health_fingerprint(const cv_health_run *r, const cv_heval *e, double out[25]);
/* Narrative from a computed evaluation and blame list (narrative.c); caller frees. */
char *cv_health_narrative_of(const cv_health_run *r, const cv_heval *e, const cv_hblame *b, int nb);

/* Python-compatible formatting: f"{x:.{prec}f}" and f"{x:.{prec}%}" (nan, inf, -inf). */
void cv_py_fmt_f(char *buf, size_t n, double x, int prec);
void cv_py_fmt_pct(char *buf, size_t n, double x, int prec);

/* Series helpers. */
double cv_hs_mean_last(const cv_hseries *s, int k);  /* mean of the last min(k, n); 0 if n == 0 */
double cv_hs_mean_first(const cv_hseries *s, int k); /* mean of the first min(k, n) */
double cv_hs_mean(const cv_hseries *s);
double cv_hs_stdev(const double *v, int n); /* sample std, 0 if n < 2 */
double cv_hs_slope(const double *v, int n); /* OLS slope over the index, 0 if n < 2 */

#endif
