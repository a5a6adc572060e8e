/* signals.c — compound signals (compound_signals.py), early warning (early_warning.py) and the
 * 25-value fingerprint v2 (fingerprint.py), over the run's per-step series (HEALTH.md §7). */
#include "health_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static cv_hsignal *new_signal(cv_heval *e, const char *name, const char *factor,
                              const char *description, double severity) {
    cv_hsignal *s = &e->compound[e->n_compound++];
    s->name = name;
    s->factor = factor;
    s->description = description;
    s->severity = severity;
    s->n_evidence = 0;
    return s;
}

/* evidence line: prefix + f"{x:.{prec}f}" + suffix */
static void evidence(cv_hsignal *s, const char *prefix, double x, int prec, const char *suffix) {
    char v[340];
    cv_py_fmt_f(v, sizeof v, x, prec);
    snprintf(s->evidence[s->n_evidence++], sizeof s->evidence[0], "%s%s%s", prefix, v, suffix);
}

/* Compound signals over the unfiltered series (every present value). */
void cv_health_compound(const cv_health_run *r, cv_heval *e) {
    const cv_hseries *H = &r->ent, *M = &r->margin, *S = &r->surp, *A = &r->mass;
    /* 1. context_loss */
    if (H->n && r->have_basins) {
        double me = cv_hs_mean_last(H, 5);
        double mb = r->basin_n ? r->basin_sum / (double)r->basin_n : 1.0;
        if (me > 4.0 && mb < 0.3) {
            cv_hsignal *s = new_signal(
                e, "context_loss", "compound:context_loss",
                "Model is losing track of context: high entropy combined with low basin scores "
                "suggests middle-context tokens are being ignored.",
                0.75);
            evidence(s, "Mean entropy (last 5 steps): ", me, 2, "");
            evidence(s, "Mean basin score: ", mb, 2, "");
        }
    }
    /* 2. confident_confusion */
    if (H->n && M->n) {
        double me = cv_hs_mean_last(H, 5), mm = cv_hs_mean_last(M, 5);
        if (me > 4.0 && mm > 0.3) {
            cv_hsignal *s = new_signal(
                e, "confident_confusion", "compound:confident_confusion",
                "Model shows high overall uncertainty but still has a dominant token choice — "
                "may produce plausible-looking but unreliable output.",
                0.5);
            evidence(s, "Mean entropy (last 5): ", me, 2, "");
            evidence(s, "Mean margin (last 5): ", mm, 2, "");
        }
    }
    /* 3. degenerating_generation */
    if (H->n >= 10 && M->n >= 10 && S->n >= 10) {
        double se = cv_hs_slope(H->v, H->n), sm = cv_hs_slope(M->v, M->n),
               ss = cv_hs_slope(S->v, S->n);
        if (se > 0.05 && sm < -0.01 && ss > 0.05) {
            cv_hsignal *s =
                new_signal(e, "degenerating_generation", "compound:degenerating_generation",
                           "Output quality is degrading over time: entropy and "
                           "surprisal are rising while confidence margin is falling.",
                           0.7);
            evidence(s, "Entropy slope: +", se, 3, "/step");
            evidence(s, "Margin slope: ", sm, 3, "/step");
            evidence(s, "Surprisal slope: +", ss, 3, "/step");
        }
    }
    /* 4. attention_bottleneck: d = max(cc, fc, 1) per layer (max_weight_per_head is off) */
    if (r->steps && H->n && r->bn_any && r->bn_d > 0) {
        double rate = fmin(1.0, r->bn_cc / r->bn_d);
        double me = cv_hs_mean(H);
        if (rate > 0.2 && me > 3.5) {
            cv_hsignal *s = new_signal(e, "attention_bottleneck", "compound:attention_bottleneck",
                                       "Widespread attention collapse combined with high output "
                                       "entropy suggests information flow is restricted.",
                                       0.65);
            char p[340];
            cv_py_fmt_pct(p, sizeof p, rate, 1);
            snprintf(s->evidence[s->n_evidence++], sizeof s->evidence[0],
                     "Collapse rate: %s of observed heads", p);
            evidence(s, "Mean entropy: ", me, 2, "");
        }
    }
    /* 5. confident_repetition_risk */
    if (H->n && S->n) {
        double me = cv_hs_mean_last(H, 5), ms = cv_hs_mean_last(S, 5);
        if (me < 2.0 && ms < 1.0 && A->n) {
            double ma = cv_hs_mean_last(A, 5);
            if (ma > 0.95) {
                cv_hsignal *s = new_signal(
                    e, "confident_repetition_risk", "compound:confident_repetition_risk",
                    "Model is extremely confident with near-unanimous token selection — may be "
                    "locked into a repetitive pattern.",
                    0.4);
                evidence(s, "Mean entropy: ", me, 2, "");
                evidence(s, "Mean surprisal: ", ms, 2, "");
                evidence(s, "Mean voter agreement: ", ma, 2, "");
            }
        }
    }
}

static void warn(cv_heval *e, const char *name, double risk) {
    for (int i = 0; i < e->n_warn; i++)
        if (!strcmp(e->warn[i], name)) return;
    if (e->n_warn < CV_H_MAX_WARN) e->warn[e->n_warn++] = name;
    if (risk > e->failure_risk) e->failure_risk = risk;
}

/* Early warning over the finite series, window 5. */
void cv_health_early_warning(const cv_health_run *r, cv_heval *e) {
    const int w = 5;
    const cv_hseries *H = &r->ent_f, *M = &r->margin_f, *S = &r->surp_f;
    e->failure_risk = 0.0;
    /* 1. entropy_accelerating: stride-1 window means, the last 3 deltas */
    if (H->n >= 2 * w) {
        int nw = H->n - w + 1; /* >= 6 */
        double m[4];           /* the last 4 window means */
        for (int k = 0; k < 4; k++) {
            int s0 = nw - 4 + k;
            double t = 0.0;
            for (int i = s0; i < s0 + w; i++) t += H->v[i];
            m[k] = t / w;
        }
        double d0 = m[1] - m[0], d1 = m[2] - m[1], d2 = m[3] - m[2];
        if (d0 > 0 && d1 > 0 && d2 > 0 && d2 > d0) warn(e, "entropy_accelerating", 0.7);
    }
    /* 2. margin_collapsed / margin_declining */
    if (M->n >= w) {
        int all = 1;
        for (int i = M->n - w; i < M->n; i++)
            if (!(M->v[i] < 0.1)) all = 0;
        if (all)
            warn(e, "margin_collapsed", 0.6);
        else if (M->n >= 2 * w) {
            double early = cv_hs_mean_first(M, w), late = cv_hs_mean_last(M, w);
            if (early > 0 && late / early < 0.3) warn(e, "margin_declining", 0.5);
        }
    }
    /* 3. surprisal_volatile */
    if (S->n >= w) {
        const double *rv = S->v + S->n - w;
        double vol = cv_hs_stdev(rv, w), ms = cv_hs_mean_last(S, w);
        if (ms > 0 && vol / ms > 1.5) warn(e, "surprisal_volatile", 0.5);
    }
    /* 4. entropy_margin_divergence */
    if (H->n >= w && M->n >= w) {
        double re = cv_hs_mean_last(H, w), rm = cv_hs_mean_last(M, w);
        if (re > r->prof.high_entropy_bits && rm > 0.3) warn(e, "entropy_margin_divergence", 0.55);
    }
    /* 5. flags */
    if (r->rep) warn(e, "repetition_loop", 0.9);
    if (r->mid) warn(e, "mid_layer_anomaly", 0.6);
    if (e->collapse_detected) warn(e, "attention_collapse", 0.4);
}

/* (mean, sample std, min, max, slope); NaN anywhere makes min and max NaN */
static void safe_stats(const cv_hseries *s, double st[5]) {
    memset(st, 0, sizeof(double) * 5);
    if (!s->n) return;
    st[0] = cv_hs_mean(s);
    st[1] = cv_hs_stdev(s->v, s->n);
    double mn = s->v[0], mx = s->v[0];
    int nan = 0;
    for (int i = 0; i < s->n; i++) {
        if (isnan(s->v[i])) nan = 1;
        if (s->v[i] < mn) mn = s->v[i];
        if (s->v[i] > mx) mx = s->v[i];
    }
    st[2] = nan ? NAN : mn;
    st[3] = nan ? NAN : mx;
    st[4] = cv_hs_slope(s->v, s->n);
}

static double correlation(const cv_hseries *x, const cv_hseries *y) {
    int n = x->n < y->n ? x->n : y->n;
    if (n < 2) return 0.0;
    double xm = cv_hs_mean_first(x, n), ym = cv_hs_mean_first(y, n);
    double cov = 0.0, vx = 0.0, vy = 0.0;
    for (int i = 0; i < n; i++) {
        cov += (x->v[i] - xm) * (y->v[i] - ym);
        vx += (x->v[i] - xm) * (x->v[i] - xm);
        vy += (y->v[i] - ym) * (y->v[i] - ym);
    }
    double den = sqrt(vx * vy);
    if (den == 0.0) return 0.0;
    return cov / den;
}

void cv_health_fingerprint(const cv_health_run *r, const cv_heval *e, double out[25]) {
    double h[5], m[5], s[5], a[5];
    safe_stats(&r->ent, h);
    safe_stats(&r->margin, m);
    safe_stats(&r->surp, s);
    safe_stats(&r->mass, a);
    int total = r->P + r->steps;
    if (total < 1) total = 1;
    double fq = 0.0, lq = 0.0;
    if (r->ent.n >= 4) {
        int q = r->ent.n / 4;
        fq = cv_hs_mean_first(&r->ent, q);
        lq = cv_hs_mean_last(&r->ent, q);
    }
    double v[25] = {h[0],
                    h[1],
                    h[2],
                    h[3],
                    h[4],
                    m[0],
                    m[1],
                    m[4],
                    s[0],
                    s[1],
                    s[4],
                    a[0],
                    a[1],
                    e->risk,
                    (double)r->high_entropy / total,
                    r->nan ? 1.0 : 0.0,
                    r->inf ? 1.0 : 0.0,
                    e->collapse_detected ? 1.0 : 0.0,
                    r->rep ? 1.0 : 0.0,
                    r->mid ? 1.0 : 0.0,
                    (r->ent.n && r->margin.n) ? correlation(&r->ent, &r->margin) : 0.0,
                    h[0] > 0 ? h[1] / h[0] : 0.0,
                    fq,
                    lq,
                    0.0};
    memcpy(out, v, sizeof v);
}
