/* view.h — reading a trace back for people: the terminal summary, the self-contained HTML report
 * (inline SVG charts, no network) and the comparison of two runs. Everything here reads a trace
 * file (schema 0.2.0, with or without the health layer's extensions), never a model.
 *
 * A trace is loaded once into cv_trace_view: per-step series (logits entropy, margin, and the
 * health values when the trace carries them) and layer x step matrices of every statistic, with
 * NaN standing for null (a disabled or non-finite statistic). */
#ifndef COREVITAL_VIEW_H
#define COREVITAL_VIEW_H

#include "corevital/common.h"

#include <cjson/cJSON.h>
#include <stdio.h>

/* The layer statistics a view shows, in this order. */
typedef enum {
    CV_VM_MEAN,
    CV_VM_STD,
    CV_VM_L2,
    CV_VM_MAXABS,
    CV_VM_ATT_ENT_MEAN,
    CV_VM_ATT_ENT_MIN,
    CV_VM_ATT_CONC_MAX,
    CV_VM_X_ENT_MEAN,
    CV_VM_X_ENT_MIN,
    CV_VM_X_CONC_MAX,
    CV_VM_COUNT
} cv_view_metric;

/* "hidden_summary.l2_norm_mean", ... */
const char *cv_view_metric_name(cv_view_metric m);

typedef struct {
    cJSON *root; /* the parsed trace; the strings below point into it */
    const char *path;
    int n_steps, n_layers, n_enc, has_cross, prompt_tokens;
    const char **token_text;    /* (n_steps) */
    int *token_id;              /* (n_steps) */
    double *entropy, *margin;   /* (n_steps) logits_summary, NaN = null */
    double *surprisal, *risk;   /* (n_steps) extensions.health when present, else NULL */
    double *layer[CV_VM_COUNT]; /* (n_layers, n_steps) row-major, NaN = null */
    double *enc[CV_VM_COUNT];   /* (n_enc) encoder layers, NULL when none */
} cv_trace_view;

/* Read and validate a trace file (cv_trace_validate: an invalid trace is refused, naming the
 * first problem). */
cv_status cv_view_load(const char *path, cv_trace_view *v, cv_error *err);
void cv_view_free(cv_trace_view *v);

/* Chart data reduction: n values into at most max_out buckets of consecutive values (bucket b
 * covers [b*n/k, (b+1)*n/k)), each the mean of its finite values (NaN when it has none).
 * Returns the number of buckets k = min(n, max_out). */
int cv_view_downsample(const double *x, int n, int max_out, double *out);
/* Min and max over the finite values; returns 0 when there are none. */
int cv_view_range(const double *x, int n, double *lo, double *hi);
/* Median of the finite values (NaN when none). */
double cv_view_median(const double *x, int n);

/* The terminal summary (under a screen). color = 1 adds ANSI colours (a TTY). */
void cv_view_summary(FILE *out, const cv_trace_view *v, int color);

/* The HTML report: one self-contained page. */
cv_status cv_view_report_html(FILE *out, const cv_trace_view *v, cv_error *err);

/* Compare two runs: the text form to out, and the HTML form to html when not NULL. Traces
 * whose layer counts differ are compared on what they share (tokens, logits) and say so.
 * Returns CV_OK, or CV_ERR_FORMAT when nothing is comparable (no steps). */
cv_status cv_view_compare(FILE *out, FILE *html, const cv_trace_view *a, const cv_trace_view *b,
                          cv_error *err);

#endif
