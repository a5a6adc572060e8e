/* health.c — the run-level health layer (HEALTH.md §6-§7): profiles, the streaming state fed
 * one step at a time, the online flags (repetition, NaN/Inf, mid-layer anomaly), attention
 * collapse, risk v2, layer blame, the headline and the trace's `extensions` objects. */
#include "health_internal.h"

#include "corevital/report.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- profiles (HEALTH.md §0, decision 11) ---- */

static const cv_health_profile PROFILES[] = {
    {"default", 4.0, 0.9995, 8.0, 0.9},  {"gpt2", 5.0, 0.9995, 5.0, 0.9},
    {"llama", 3.5, 0.9998, 10.0, 0.85},  {"mistral", 4.0, 0.9997, 8.0, 0.85},
    {"mixtral", 4.5, 0.9997, 8.0, 0.85}, {"phi3", 3.8, 0.9996, 7.0, 0.88},
    {"qwen2", 4.5, 0.9997, 8.0, 0.88},
};

const cv_health_profile *cv_health_profile_for(const char *architecture) {
    char a[256];
    size_t n = 0;
    for (; architecture && architecture[n] && n + 1 < sizeof a; n++)
        a[n] = (char)tolower((unsigned char)architecture[n]);
    a[n] = '\0';
    /* upstream's order (config.py _architecture_to_profile_key): Mixtral before Mistral */
    static const struct {
        const char *sub;
        int idx;
    } keys[] = {{"gpt2", 1},  {"llama", 2}, {"mixtral", 4}, {"mistral", 3},
                {"qwen2", 6}, {"phi3", 5},  {"phi-3", 5}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strstr(a, keys[i].sub)) return &PROFILES[keys[i].idx];
    return &PROFILES[0];
}

/* ---- Python-compatible formatting and rounding ---- */

void cv_py_fmt_f(char *buf, size_t n, double x, int prec) {
    if (isnan(x))
        snprintf(buf, n, "nan");
    else if (isinf(x))
        snprintf(buf, n, "%s", x > 0 ? "inf" : "-inf");
    else
        snprintf(buf, n, "%.*f", prec, x);
}

void cv_py_fmt_pct(char *buf, size_t n, double x, int prec) {
    char t[340];
    cv_py_fmt_f(t, sizeof t, x * 100.0, prec); /* CPython: val *= 100, then 'f' */
    size_t l = strlen(t);
    if (l + 2 > n) l = n >= 2 ? n - 2 : 0;
    if (n >= 2) {
        memcpy(buf, t, l);
        buf[l] = '%';
        buf[l + 1] = '\0';
    }
}

/* ---- series ---- */

static int hs_push(cv_hseries *s, double v) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        double *nv = realloc(s->v, sizeof(double) * (size_t)cap);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

double cv_hs_mean_last(const cv_hseries *s, int k) {
    int m = k < s->n ? k : s->n;
    if (m <= 0) return 0.0;
    double t = 0.0;
    for (int i = s->n - m; i < s->n; i++) t += s->v[i];
    return t / m;
}

double cv_hs_mean_first(const cv_hseries *s, int k) {
    int m = k < s->n ? k : s->n;
    if (m <= 0) return 0.0;
    double t = 0.0;
    for (int i = 0; i < m; i++) t += s->v[i];
    return t / m;
}

double cv_hs_mean(const cv_hseries *s) {
    return cv_hs_mean_first(s, s->n);
}

double cv_hs_stdev(const double *v, int n) {
    if (n < 2) return 0.0;
    double m = 0.0;
    for (int i = 0; i < n; i++) m += v[i];
    m /= n;
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (v[i] - m) * (v[i] - m);
    return sqrt(ss / (n - 1));
}

double cv_hs_slope(const double *v, int n) {
    if (n < 2) return 0.0;
    double mv = 0.0;
    for (int i = 0; i < n; i++) mv += v[i];
    mv /= n;
    double xm = (n - 1) / 2.0, num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        num += (i - xm) * (v[i] - mv);
        den += (i - xm) * (i - xm);
    }
    return den > 0 ? num / den : 0.0;
}

/* ---- the run ---- */

cv_health_run *cv_health_run_new(const cv_health_profile *prof, int n_layers, int n_heads,
                                 int prompt_tokens) {
    cv_health_run *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->prof = prof ? *prof : PROFILES[0];
    r->L = n_layers > 0 ? n_layers : 0;
    r->H = n_heads;
    r->P = prompt_tokens;
    r->rep_first = -1;
    size_t L = (size_t)(r->L ? r->L : 1);
    r->layer_bad = calloc(L, sizeof(int));
    r->layer_collapsed = calloc(L, sizeof(int));
    r->layer_valid = calloc(L, sizeof(int));
    r->l2_n = calloc(L, sizeof(int));
    r->l2_mean = calloc(L, sizeof(double));
    r->l2_m2 = calloc(L, sizeof(double));
    if (!r->layer_bad || !r->layer_collapsed || !r->layer_valid || !r->l2_n || !r->l2_mean ||
        !r->l2_m2) {
        cv_health_run_free(r);
        return NULL;
    }
    return r;
}

void cv_health_run_free(cv_health_run *r) {
    if (!r) return;
    cv_hseries *all[] = {&r->ent,      &r->margin, &r->surp,   &r->mass, &r->ent_f,
                         &r->margin_f, &r->surp_f, &r->mass_f, &r->rate};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->v);
    free(r->cc);
    free(r->layer_bad);
    free(r->layer_collapsed);
    free(r->layer_valid);
    free(r->l2_n);
    free(r->l2_mean);
    free(r->l2_m2);
    free(r->peak_tok);
    free(r);
}

int cv_health_run_set_basins(cv_health_run *r, const double *basins, int n_layers, int n_heads) {
    r->have_basins = 1;
    r->basin_sum = 0.0;
    r->basin_n = 0;
    for (long i = 0; basins && i < (long)n_layers * n_heads; i++) {
        r->basin_sum += basins[i];
        r->basin_n++;
    }
    return 0;
}

/* A NaN with finite logits marks an absent value (e.g. surprisal of an out-of-range token);
 * with non-finite logits the value is real and stays in the unfiltered series. */
static int add_value(cv_hseries *all, cv_hseries *fin, double v, int logits_bad) {
    if (isnan(v) && !logits_bad) return 0;
    if (hs_push(all, v)) return -1;
    if (isfinite(v) && hs_push(fin, v)) return -1;
    return 0;
}

int cv_health_run_add_step(cv_health_run *r, const cv_health_step *s,
                           const cv_health_layer_step *layers) {
    int bad = s->logits_nan || s->logits_inf;
    int L = r->L;
    /* reserve everything first so a failure leaves the run as it was, apart from series */
    if (r->steps == r->cc_cap) {
        int cap = r->cc_cap ? 2 * r->cc_cap : 64;
        int *nc = realloc(r->cc, sizeof(int) * (size_t)cap * (size_t)(L ? L : 1));
        if (!nc) return -1;
        r->cc = nc;
        r->cc_cap = cap;
    }
    if (add_value(&r->ent, &r->ent_f, s->entropy_bits, bad) ||
        add_value(&r->margin, &r->margin_f, s->top_k_margin, bad) ||
        add_value(&r->surp, &r->surp_f, s->surprisal_bits, bad) ||
        add_value(&r->mass, &r->mass_f, s->topk_mass, bad))
        return -1;

    if (s->entropy_bits > r->prof.high_entropy_bits) r->high_entropy++;
    if (isfinite(s->entropy_bits) && (!r->have_peak || s->entropy_bits > r->peak_ent)) {
        const char *t = s->token_text ? s->token_text : "";
        char *c = malloc(strlen(t) + 1);
        if (!c) return -1;
        memcpy(c, t, strlen(t) + 1);
        free(r->peak_tok);
        r->peak_tok = c;
        r->peak_ent = s->entropy_bits;
        r->peak_step = s->step_index;
        r->have_peak = 1;
    }

    /* repetition (decision 2): consecutive pairs with cos_prev > tau_rep, online */
    if (s->cos_prev > r->prof.tau_rep)
        r->rep_count++;
    else
        r->rep_count = 0;
    if (r->rep_count >= 3 && !r->rep) {
        r->rep = 1;
        r->rep_first = s->step_index;
    }

    if (s->logits_nan) r->nan = 1;
    if (s->logits_inf) r->inf = 1;

    int *cc = r->cc + (size_t)r->steps * (size_t)L;
    int step_cc = 0, valid = 0;
    for (int j = 0; j < L; j++) {
        const cv_health_layer_step *ly = &layers[j];
        if (ly->has_nan) r->nan = 1;
        if (ly->has_inf) r->inf = 1;
        if (ly->has_nan || ly->has_inf) r->layer_bad[j] = 1;
        if (ly->attn_valid) {
            cc[j] = ly->collapsed_heads;
            step_cc += ly->collapsed_heads;
            valid++;
            r->layer_valid[j]++;
            if (ly->collapsed_heads > 0) r->layer_collapsed[j]++;
            int cnt = ly->collapsed_heads, fc = ly->focused_heads;
            int d = cnt > fc ? cnt : fc;
            r->bn_cc += cnt;
            r->bn_d += d > 1 ? d : 1;
            r->bn_any = 1;
        } else {
            cc[j] = -1;
        }
        if (isfinite(ly->l2)) { /* NaN-safe blame statistics: finite values only */
            int n = ++r->l2_n[j];
            double dlt = ly->l2 - r->l2_mean[j];
            r->l2_mean[j] += dlt / n;
            r->l2_m2[j] += dlt * (ly->l2 - r->l2_mean[j]);
        }
    }
    if (valid > 0 && r->H >= 1 && hs_push(&r->rate, (double)step_cc / ((double)valid * r->H)))
        return -1;

    /* mid-layer anomaly (needs L >= 3): per-step baseline from the early layers */
    if (L >= 3 && !r->mid) {
        int m0 = L / 3, m1 = 2 * L / 3;
        for (int j = m0; j < m1; j++)
            if (layers[j].has_nan || layers[j].has_inf) r->mid = 1;
        double early[64], *e = early;
        double *heap = NULL;
        if (m0 > 64) {
            heap = malloc(sizeof(double) * (size_t)m0);
            if (!heap) return -1;
            e = heap;
        }
        int ne = 0;
        for (int j = 0; j < m0; j++)
            if (!isnan(layers[j].l2)) e[ne++] = layers[j].l2;
        double thr = 1000.0;
        if (ne > 0) {
            for (int i = 1; i < ne; i++) /* insertion sort: a handful of layers */
                for (int k = i; k > 0 && e[k - 1] > e[k]; k--) {
                    double t = e[k];
                    e[k] = e[k - 1];
                    e[k - 1] = t;
                }
            double base = ne % 2 ? e[ne / 2] : (e[ne / 2 - 1] + e[ne / 2]) / 2;
            thr = base * r->prof.l2_multiplier;
        }
        free(heap);
        for (int j = m0; j < m1; j++)
            if (layers[j].l2 > thr) r->mid = 1;
    }
    r->steps++;
    return 0;
}

int cv_health_steps(const cv_health_run *r) {
    return r->steps;
}
int cv_health_repetition(const cv_health_run *r) {
    return r->rep;
}
int64_t cv_health_repetition_first_step(const cv_health_run *r) {
    return r->rep_first;
}
int cv_health_nan(const cv_health_run *r) {
    return r->nan;
}
int cv_health_inf(const cv_health_run *r) {
    return r->inf;
}

/* ---- attention collapse (S/attention.py detect_attention_collapse, decision 10) ---- */

static void collapse(const cv_health_run *r, cv_heval *e) {
    if (r->steps == 0 || r->H < 1) {
        e->collapse_reason = 1;
        return;
    }
    const cv_hseries *s = &r->rate;
    if (s->n == 0) {
        e->collapse_reason = 2;
        return;
    }
    int n = s->n;
    e->mean_rate = cv_hs_mean(s);
    if (n >= 4) {
        int w = n / 3 < 5 ? n / 3 : 5;
        if (w < 1) w = 1;
        e->early_window = w;
        double peak = s->v[0];
        for (int i = 1; i < n; i++)
            if (s->v[i] > peak) peak = s->v[i];
        double dev = peak - cv_hs_mean_first(s, w);
        if (dev > 0.15) {
            e->trend = 1;
            e->trend_dev = cv_round_decimals(dev, 4);
        }
    }
    e->catastrophic = e->mean_rate > 0.70;
    e->collapse_detected = e->trend || e->catastrophic;
    double sev = 0.0;
    if (e->catastrophic) sev = 0.8;
    if (e->trend) {
        double t = e->trend_dev <= 0.25 ? 0.2 : 0.4;
        if (t > sev) sev = t;
    }
    e->collapse_severity = cv_round_decimals(sev, 2);
}

/* ---- risk v2 (risk.py compute_risk_score) ---- */

static void add_factor(cv_heval *e, const char *f, double c) {
    if (e->n_factors < CV_H_MAX_FACTORS) {
        e->factors[e->n_factors] = f;
        e->contrib[e->n_factors++] = c;
    }
}

static double finite_mean(const cv_hseries *s) {
    return cv_hs_mean(s);
}

static void risk(const cv_health_run *r, cv_heval *e) {
    if (r->nan || r->inf) {
        e->risk = 1.0;
        add_factor(e, "nan_or_inf", 1.0);
        return;
    }
    if (r->steps == 0) return;
    double bmax = 0.0, comps[CV_H_MAX_FACTORS];
    int nb = 0, nc = 0;
    if (r->rep) {
        bmax = fmax(bmax, 0.9);
        nb++;
        add_factor(e, "repetition_loop", 0.9);
    }
    if (r->mid) {
        bmax = fmax(bmax, 0.7);
        nb++;
        add_factor(e, "mid_layer_anomaly", 0.7);
    }
    if (e->collapse_detected) {
        bmax = fmax(bmax, e->collapse_severity);
        nb++;
        add_factor(e, "attention_collapse", e->collapse_severity);
    }
    if (r->ent_f.n > 0) {
        double m = finite_mean(&r->ent_f);
        double c = fmin(1.0, m / 8.0) * 0.3;
        if (c > 0.05) {
            comps[nc++] = c;
            add_factor(e, "elevated_entropy", c);
        }
        if (r->ent_f.n >= 6) {
            int k = r->ent_f.n / 3;
            double f = cv_hs_mean_first(&r->ent_f, k), l = cv_hs_mean_last(&r->ent_f, k);
            if (f > 1e-9 && l > f * 1.3) {
                double t = fmin(0.2, (l - f) / f * 0.1);
                comps[nc++] = t;
                add_factor(e, "entropy_rising", t);
            }
        }
    }
    if (r->margin_f.n > 0) {
        double c = fmax(0.0, 1.0 - finite_mean(&r->margin_f) * 5.0) * 0.2;
        if (c > 0.05) {
            comps[nc++] = c;
            add_factor(e, "low_confidence_margin", c);
        }
    }
    if (r->mass_f.n > 0) {
        double c = fmax(0.0, 1.0 - finite_mean(&r->mass_f)) * 0.15;
        if (c > 0.03) {
            comps[nc++] = c;
            add_factor(e, "low_topk_mass", c);
        }
    }
    if (r->surp_f.n > 0) {
        double c = fmin(0.1, finite_mean(&r->surp_f) / 10.0);
        if (c > 0.02) {
            comps[nc++] = c;
            add_factor(e, "elevated_surprisal", c);
        }
    }
    for (int i = 0; i < e->n_compound; i++) {
        comps[nc++] = e->compound[i].severity;
        add_factor(e, e->compound[i].factor, e->compound[i].severity);
    }
    double sum = 0.0;
    for (int i = 0; i < nc; i++) sum += comps[i];
    e->risk = (nb || nc) ? fmin(1.0, bmax + sum) : 0.0;
}

void cv_heval_compute(const cv_health_run *r, cv_heval *e) {
    memset(e, 0, sizeof *e);
    collapse(r, e);
    cv_health_compound(r, e);
    risk(r, e);
    cv_health_early_warning(r, e);
}

double cv_health_risk_now(const cv_health_run *r) {
    cv_heval e;
    cv_heval_compute(r, &e);
    return e.risk;
}

/* ---- layer blame (risk.py compute_layer_blame) ---- */

int cv_health_blame(const cv_health_run *r, cv_hblame **out) {
    *out = NULL;
    if (r->steps == 0 || r->L == 0) return 0;
    double gsum = 0.0;
    int gn = 0;
    for (int j = 0; j < r->L; j++)
        if (r->l2_n[j] > 0) {
            gsum += r->l2_mean[j];
            gn++;
        }
    double gmean = gn ? gsum / gn : 0.0, gstd = 0.0;
    if (gn >= 2) {
        double ss = 0.0;
        for (int j = 0; j < r->L; j++)
            if (r->l2_n[j] > 0) ss += (r->l2_mean[j] - gmean) * (r->l2_mean[j] - gmean);
        gstd = sqrt(ss / (gn - 1));
    }
    cv_hblame *b = calloc((size_t)(unsigned)r->L, sizeof *b);
    if (!b) return -1;
    int nb = 0;
    for (int j = 0; j < r->L; j++) {
        cv_hblame *x = &b[nb];
        double sev = 0.0;
        x->n_reasons = 0;
        if (r->layer_bad[j]) {
            snprintf(x->reasons[x->n_reasons++], sizeof x->reasons[0], "NaN/Inf detected");
            sev = 1.0;
        }
        /* steps without attention information (decision 3) count on neither side */
        double rate =
            (double)r->layer_collapsed[j] / (r->layer_valid[j] > 1 ? r->layer_valid[j] : 1);
        if (rate > 0.5) {
            char p[340];
            cv_py_fmt_pct(p, sizeof p, rate, 0);
            snprintf(x->reasons[x->n_reasons++], sizeof x->reasons[0],
                     "Attention collapse in %s of steps", p);
            sev = fmax(sev, 0.4);
        }
        if (r->l2_n[j] > 0 && gstd > 0) {
            double z = (r->l2_mean[j] - gmean) / gstd;
            if (z > 2.5) {
                char p[340];
                cv_py_fmt_f(p, sizeof p, z, 1);
                snprintf(x->reasons[x->n_reasons++], sizeof x->reasons[0], "L2 norm outlier (z=%s)",
                         p);
                sev = fmax(sev, 0.5);
            }
        }
        if (r->l2_n[j] >= 3) {
            double cv = sqrt(r->l2_m2[j] / (r->l2_n[j] - 1)) / fmax(1e-10, r->l2_mean[j]);
            if (cv > 0.5) {
                char p[340];
                cv_py_fmt_f(p, sizeof p, cv, 2);
                snprintf(x->reasons[x->n_reasons++], sizeof x->reasons[0],
                         "Unstable L2 norms (CV=%s)", p);
                sev = fmax(sev, 0.3);
            }
        }
        if (x->n_reasons) {
            x->layer = j;
            x->severity = cv_round_decimals(sev, 2);
            nb++;
        }
    }
    if (!nb) {
        free(b);
        return 0;
    }
    *out = b;
    return nb;
}

/* ---- headline ---- */

void cv_health_headline_of(const cv_health_run *r, cv_health_headline *out) {
    cv_heval e;
    cv_heval_compute(r, &e);
    out->risk = e.risk;
    out->main_factor = NULL;
    double best = -1.0;
    for (int i = 0; i < e.n_factors; i++)
        if (e.contrib[i] > best) {
            best = e.contrib[i];
            out->main_factor = e.factors[i];
        }
    out->blamed_layer = -1;
    cv_hblame *b;
    int nb = cv_health_blame(r, &b);
    double sev = -1.0;
    for (int i = 0; i < nb; i++)
        if (b[i].severity > sev) {
            sev = b[i].severity;
            out->blamed_layer = b[i].layer;
        }
    free(b);
}

char *cv_health_narrative(const cv_health_run *r) {
    cv_heval e;
    cv_heval_compute(r, &e);
    cv_hblame *b;
    int nb = cv_health_blame(r, &b);
    if (nb < 0) return NULL;
    char *s = cv_health_narrative_of(r, &e, b, nb);
    free(b);
    return s;
}

/* ---- JSON ---- */

static cJSON *jnum(double v) {
    return isfinite(v) ? cv_json_float(v) : cJSON_CreateNull();
}

/* Adds `item` to `obj` under `key`; returns 0, -1 when item is NULL (out of memory). */
static int put(cJSON *obj, const char *key, cJSON *item) {
    if (!item) return -1;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static int push(cJSON *arr, cJSON *item) {
    if (!item) return -1;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *flags_json(const cv_health_run *r, const cv_heval *e) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int rc = put(o, "nan_detected", cJSON_CreateBool(r->nan));
    rc |= put(o, "inf_detected", cJSON_CreateBool(r->inf));
    rc |= put(o, "attention_collapse_detected", cJSON_CreateBool(e->collapse_detected));
    rc |= put(o, "attention_collapse_severity",
              e->collapse_detected ? jnum(e->collapse_severity) : cJSON_CreateNull());
    rc |= put(o, "high_entropy_steps", cJSON_CreateNumber(r->high_entropy));
    rc |= put(o, "repetition_loop_detected", cJSON_CreateBool(r->rep));
    rc |= put(o, "mid_layer_anomaly_detected", cJSON_CreateBool(r->mid));
    rc |= put(o, "repetition_first_step",
              r->rep ? cJSON_CreateNumber((double)r->rep_first) : cJSON_CreateNull());
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cv_health_flags_json(const cv_health_run *r) {
    cv_heval e;
    cv_heval_compute(r, &e);
    return flags_json(r, &e);
}

static cJSON *profile_json(const cv_health_run *r) {
    cJSON *o = cJSON_CreateObject(), *t = cJSON_CreateObject();
    int rc = !o || !t;
    if (!rc) {
        rc |= put(t, "high_entropy_threshold_bits", jnum(r->prof.high_entropy_bits));
        rc |= put(t, "repetition_cosine_threshold", jnum(r->prof.tau_rep));
        rc |= put(t, "l2_explosion_multiplier", jnum(r->prof.l2_multiplier));
        rc |= put(t, "focused_head_concentration_threshold", jnum(r->prof.focus_threshold));
        rc |= put(o, "key", cJSON_CreateString(r->prof.key));
        rc |= put(o, "thresholds", t);
        t = NULL;
        rc |= put(o, "logits_basis", cJSON_CreateString("raw"));
    }
    cJSON_Delete(t);
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *collapse_detail_json(const cv_health_run *r, const cv_heval *e) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int rc = 0;
    if (e->collapse_reason) {
        rc = put(o, "reason",
                 cJSON_CreateString(e->collapse_reason == 1 ? "insufficient_data"
                                                            : "no_attention_data"));
        if (rc) {
            cJSON_Delete(o);
            return NULL;
        }
        return o;
    }
    cJSON *tl = cJSON_CreateArray(), *pl = cJSON_CreateArray();
    rc = !tl || !pl;
    for (int j = 0; !rc && j < r->L; j++) {
        int cnt = 0, sum = 0, mx = 0, early = 0;
        for (int i = 0; i < r->steps; i++) {
            int c = r->cc[(size_t)i * (size_t)r->L + (size_t)j];
            if (c < 0) continue;
            if (cnt < e->early_window) early += c;
            if (!cnt || c > mx) mx = c;
            sum += c;
            cnt++;
        }
        if (!cnt) continue;
        if (e->trend && cnt >= 4) {
            double le = (double)early / ((double)e->early_window * r->H);
            double lp = (double)mx / r->H;
            if (lp - le > 0.15) rc |= push(tl, cJSON_CreateNumber(j));
        }
        rc |= push(pl, jnum(cv_round_decimals((double)sum / ((double)cnt * r->H), 4)));
    }
    if (!rc) {
        rc |= put(o, "mean_collapse_rate", jnum(cv_round_decimals(e->mean_rate, 4)));
        rc |= put(o, "trend_detected", cJSON_CreateBool(e->trend));
        rc |= put(o, "trend_peak_deviation", jnum(e->trend_dev));
        rc |= put(o, "trend_layers", tl);
        tl = NULL;
        rc |= put(o, "catastrophic", cJSON_CreateBool(e->catastrophic));
        rc |= put(o, "calibration_anomaly", cJSON_CreateBool(0));
        rc |= put(o, "calibration_anomaly_layers", cJSON_CreateArray());
        rc |= put(o, "per_layer_mean_collapse_rate", pl);
        pl = NULL;
    }
    cJSON_Delete(tl);
    cJSON_Delete(pl);
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *risk_json(const cv_health_run *r, const cv_heval *e, const cv_hblame *b, int nb) {
    cJSON *o = cJSON_CreateObject(), *f = cJSON_CreateArray(), *bl = cJSON_CreateArray(),
          *fl = cJSON_CreateArray();
    int rc = !o || !f || !bl || !fl;
    for (int i = 0; !rc && i < e->n_factors; i++) rc |= push(f, cJSON_CreateString(e->factors[i]));
    for (int i = 0; !rc && i < nb; i++) {
        cJSON *x = cJSON_CreateObject(), *rs = cJSON_CreateArray();
        rc |= !x || !rs;
        for (int k = 0; !rc && k < b[i].n_reasons; k++)
            rc |= push(rs, cJSON_CreateString(b[i].reasons[k]));
        if (!rc) {
            rc |= put(x, "layer", cJSON_CreateNumber(b[i].layer));
            rc |= put(x, "reasons", rs);
            rs = NULL;
            rc |= put(x, "severity", jnum(b[i].severity));
            rc |= push(bl, x);
            x = NULL;
            rc |= push(fl, cJSON_CreateNumber(b[i].layer));
        }
        cJSON_Delete(rs);
        cJSON_Delete(x);
    }
    if (!rc) {
        rc |= put(o, "risk_score", jnum(e->risk));
        rc |= put(o, "risk_factors", f);
        f = NULL;
        rc |= put(o, "blamed_layers", bl);
        bl = NULL;
        rc |= put(o, "blamed_layers_flat", fl);
        fl = NULL;
        rc |= put(o, "attention_collapse_detail", collapse_detail_json(r, e));
    }
    cJSON_Delete(f);
    cJSON_Delete(bl);
    cJSON_Delete(fl);
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *compound_json(const cv_heval *e) {
    cJSON *a = cJSON_CreateArray();
    int rc = !a;
    for (int i = 0; !rc && i < e->n_compound; i++) {
        const cv_hsignal *s = &e->compound[i];
        cJSON *x = cJSON_CreateObject(), *ev = cJSON_CreateArray();
        rc |= !x || !ev;
        for (int k = 0; !rc && k < s->n_evidence; k++)
            rc |= push(ev, cJSON_CreateString(s->evidence[k]));
        if (!rc) {
            rc |= put(x, "name", cJSON_CreateString(s->name));
            rc |= put(x, "description", cJSON_CreateString(s->description));
            rc |= put(x, "severity", jnum(s->severity));
            rc |= put(x, "evidence", ev);
            ev = NULL;
            rc |= push(a, x);
            x = NULL;
        }
        cJSON_Delete(ev);
        cJSON_Delete(x);
    }
    if (rc) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

static cJSON *early_json(const cv_heval *e) {
    cJSON *o = cJSON_CreateObject(), *w = cJSON_CreateArray();
    int rc = !o || !w;
    for (int i = 0; !rc && i < e->n_warn; i++) rc |= push(w, cJSON_CreateString(e->warn[i]));
    if (!rc) {
        rc |= put(o, "failure_risk", jnum(e->failure_risk));
        rc |= put(o, "warning_signals", w);
        w = NULL;
    }
    cJSON_Delete(w);
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *fingerprint_json(const cv_health_run *r, const cv_heval *e, const char *prompt,
                               const char *hf_id) {
    double v[25];
    cv_health_fingerprint(r, e, v);
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    int rc = !o || !a;
    for (int i = 0; !rc && i < 25; i++) rc |= push(a, jnum(v[i]));
    char hash[65];
    int hrc = cv_health_prompt_hash(prompt ? prompt : "", hf_id ? hf_id : "", hash);
    if (!rc) {
        rc |= put(o, "vector", a);
        a = NULL;
        rc |= put(o, "prompt_hash", hrc ? cJSON_CreateNull() : cJSON_CreateString(hash));
        rc |= put(o, "version", cJSON_CreateNumber(2));
    }
    cJSON_Delete(a);
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int replace(cJSON *ext, const char *key, cJSON *item) {
    if (!item) return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(ext, key);
    return put(ext, key, item);
}

int cv_health_finish(const cv_health_run *r, const char *prompt, const char *hf_id, cJSON *ext) {
    cv_heval e;
    cv_heval_compute(r, &e);
    cv_hblame *b;
    int nb = cv_health_blame(r, &b);
    if (nb < 0) return -1;
    int rc = replace(ext, "health_profile", profile_json(r));
    rc |= replace(ext, "health_flags", flags_json(r, &e));
    rc |= replace(ext, "risk", risk_json(r, &e, b, nb));
    rc |= replace(ext, "compound_signals", compound_json(&e));
    rc |= replace(ext, "early_warning", early_json(&e));
    rc |= replace(ext, "fingerprint", fingerprint_json(r, &e, prompt, hf_id));
    char *narr = cv_health_narrative_of(r, &e, b, nb);
    cJSON *n = narr ? cJSON_CreateObject() : NULL;
    if (n && put(n, "summary", cJSON_CreateString(narr))) {
        cJSON_Delete(n);
        n = NULL;
    }
    free(narr);
    rc |= replace(ext, "narrative", n);
    free(b);
    return rc ? -1 : 0;
}
