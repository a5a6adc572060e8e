/* narrative.c — the run's narrative sentences (narrative.py build_narrative), in upstream's
 * order and wording: risk level, peak entropy, entropy rise, compound signals, blamed layers,
 * advice. */
#include "health_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void add(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        va_end(ap2);
        return;
    }
    size_t need = b->len + (size_t)n + 2; /* a separating space and the NUL */
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            va_end(ap2);
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    if (b->len) b->s[b->len++] = ' ';
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

static int has_factor(const cv_heval *e, const char *f) {
    for (int i = 0; i < e->n_factors; i++)
        if (!strcmp(e->factors[i], f)) return 1;
    return 0;
}

/* narrative.py _dominant_factor */
static const char *dominant(const cv_heval *e) {
    static const char *const prio[] = {
        "nan_or_inf",        "repetition_loop", "mid_layer_anomaly",     "attention_collapse",
        "elevated_entropy",  "entropy_rising",  "low_confidence_margin", "low_topk_mass",
        "elevated_surprisal"};
    for (size_t i = 0; i < sizeof prio / sizeof prio[0]; i++)
        if (has_factor(e, prio[i])) return prio[i];
    for (int i = 0; i < e->n_factors; i++)
        if (!strncmp(e->factors[i], "compound:", 9)) return e->factors[i];
    return e->n_factors ? e->factors[0] : "multiple signals";
}

/* narrative.py _humanize_factor: the text goes to out */
static void humanize(const char *f, char *out, size_t n) {
    static const char *const map[][2] = {
        {"repetition_loop", "a repetition loop in the last generated tokens"},
        {"mid_layer_anomaly", "anomalous behavior in middle transformer layers"},
        {"attention_collapse", "attention head collapse"},
        {"elevated_entropy", "elevated output uncertainty"},
        {"nan_or_inf", "numerical instability (NaN/Inf)"},
        {"entropy_rising", "rising entropy over generation"},
        {"entropy_accelerating", "accelerating entropy over generation"},
        {"low_confidence_margin", "low confidence between top token choices"},
        {"low_topk_mass", "low top-K probability mass (dispersed predictions)"},
        {"elevated_surprisal", "elevated surprisal (unexpected token choices)"},
    };
    if (!strncmp(f, "compound:", 9))
        f += 9;
    else
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(f, map[i][0])) {
                snprintf(out, n, "%s", map[i][1]);
                return;
            }
    snprintf(out, n, "%s", f);
    for (char *p = out; *p; p++)
        if (*p == '_') *p = ' ';
}

char *cv_health_narrative_of(const cv_health_run *r, const cv_heval *e, const cv_hblame *b,
                             int nb) {
    sbuf s = {0};
    char x[340], y[340];
    int any = e->n_factors || e->n_warn || e->n_compound || nb;
    cv_py_fmt_f(x, sizeof x, e->risk, 2);
    if (e->risk > 0.7) {
        char h[128];
        humanize(dominant(e), h, sizeof h);
        add(&s, "High risk (score: %s), driven by %s.", x, h);
    } else if (e->risk > 0.3) {
        add(&s, "Moderate risk (score: %s).", x);
    } else if (any) {
        add(&s, "Low risk (score: %s), though some mild signals were observed.", x);
    } else {
        add(&s, "Low risk (score: %s). No significant anomalies detected.", x);
    }

    const cv_hseries *H = &r->ent_f;
    if (H->n) {
        if (r->peak_ent > 4.0) {
            cv_py_fmt_f(x, sizeof x, r->peak_ent, 1);
            cv_py_fmt_f(y, sizeof y, cv_hs_mean(H), 1);
            const char *tok = r->peak_tok && r->peak_tok[0] ? r->peak_tok : "?";
            add(&s,
                "Peak entropy of %s bits at step %lld (mean: %s); the model was most uncertain "
                "when generating \"%s\".",
                x, (long long)r->peak_step, y, tok);
        }
        int trend = 0;
        for (int i = 0; i < e->n_warn; i++)
            if (!strcmp(e->warn[i], "entropy_accelerating")) trend = 1;
        if (trend && H->n >= 6) {
            cv_py_fmt_f(x, sizeof x, cv_hs_mean_first(H, 3), 1);
            cv_py_fmt_f(y, sizeof y, cv_hs_mean_last(H, 3), 1);
            add(&s,
                "Entropy rose from ~%s to ~%s bits over the course of generation, suggesting "
                "progressive degradation.",
                x, y);
        }
    }

    for (int i = 0; i < e->n_compound && i < 2; i++) add(&s, "%s", e->compound[i].description);

    /* the top 3 blamed layers by severity, a stable sort (ties keep layer order) */
    int used[3] = {-1, -1, -1};
    for (int k = 0; k < 3 && k < nb; k++) {
        int best = -1;
        for (int i = 0; i < nb; i++) {
            if (i == used[0] || i == used[1] || i == used[2]) continue;
            if (best < 0 || b[i].severity > b[best].severity) best = i;
        }
        used[k] = best;
        char reasons[4 * 400 + 8] = "";
        for (int j = 0; j < b[best].n_reasons; j++) {
            if (j) strcat(reasons, "; ");
            strcat(reasons, b[best].reasons[j]);
        }
        if (reasons[0]) add(&s, "Layer %d: %s.", b[best].layer, reasons);
    }

    if (e->risk > 0.7) {
        if (has_factor(e, "repetition_loop"))
            add(&s, "Consider: lower temperature, add repetition penalty, or shorten "
                    "max_new_tokens.");
        else if (has_factor(e, "mid_layer_anomaly"))
            add(&s, "Consider: check input encoding, try different precision (fp32 vs fp16), or "
                    "use a different model.");
        else if (has_factor(e, "elevated_entropy"))
            add(&s, "Consider: refine the prompt for clarity, provide more context, or try a "
                    "model better suited to this domain.");
    }
    if (s.oom) {
        free(s.s);
        return NULL;
    }
    return s.s;
}
