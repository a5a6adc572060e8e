/* test_health.c — the run-level health layer (src/health/) on constructed step series: every
 * flag, risk term, blame reason, compound signal, early-warning signal, fingerprint entry and
 * narrative sentence fires on one series and stays silent on another (the gates' strict / >=
 * boundaries included), the online API (repetition_first_step, risk after each step), NaN runs,
 * the `extensions` JSON shapes, and prompt_hash vectors from CPython. Expected numbers were
 * computed by hand or with upstream's own Python functions (stdlib only) on the same series. */
#include "corevital/health.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LMAX 16
static cv_health_layer_step LY[LMAX];
static int g_L, g_P;

/* every layer: l2, no NaN, attention valid, no collapsed / focused heads */
static void lay_reset(double l2) {
    for (int j = 0; j < LMAX; j++) {
        LY[j] = (cv_health_layer_step){0};
        LY[j].l2 = l2;
        LY[j].attn_valid = 1;
        LY[j].entropy_mean = 1.0;
    }
}

static cv_health_run *mk(const char *arch, int L, int H, int P) {
    g_L = L;
    g_P = P;
    lay_reset(10.0);
    cv_health_run *r = cv_health_run_new(cv_health_profile_for(arch), L, H, P);
    ck_assert_ptr_nonnull(r);
    return r;
}

static void step_tok(cv_health_run *r, double H, double m, double S, double A, double cos,
                     const char *tok) {
    cv_health_step s = {0};
    s.step_index = g_P + cv_health_steps(r);
    s.token_text = tok;
    s.entropy_bits = H;
    s.perplexity = pow(2.0, H);
    s.surprisal_bits = S;
    s.top_k_margin = m;
    s.topk_mass = A;
    s.cos_prev = cos;
    ck_assert_int_eq(cv_health_run_add_step(r, &s, LY), 0);
}
static void step(cv_health_run *r, double H, double m, double S, double A, double cos) {
    step_tok(r, H, m, S, A, cos, "x");
}
/* a quiet step: no risk term fires */
static void quiet(cv_health_run *r) {
    step(r, 0.5, 1.0, 0.0, 0.9, 0.1);
}

/* ---- JSON helpers ---- */

static const cJSON *at(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o;
         k = strtok_r(NULL, ".", &save)) {
        char *end;
        long idx = strtol(k, &end, 10);
        o = (*end == '\0' && cJSON_IsArray(o)) ? cJSON_GetArrayItem(o, (int)idx)
                                               : cJSON_GetObjectItemCaseSensitive(o, k);
    }
    ck_assert_msg(o != NULL, "no %s", path);
    return o;
}
/* a number written by cv_json_float (raw) or cJSON_CreateNumber; NAN for null */
static double num(const cJSON *o, const char *path) {
    const cJSON *x = at(o, path);
    if (cJSON_IsRaw(x)) return strtod(x->valuestring, NULL);
    if (cJSON_IsNumber(x)) return x->valuedouble;
    ck_assert_msg(cJSON_IsNull(x), "%s is not a number", path);
    return NAN;
}
static const char *str(const cJSON *o, const char *path) {
    const cJSON *x = at(o, path);
    ck_assert_msg(cJSON_IsString(x), "%s is not a string", path);
    return x->valuestring;
}
static int size(const cJSON *o, const char *path) {
    return cJSON_GetArraySize(at(o, path));
}
static int truth(const cJSON *o, const char *path) {
    const cJSON *x = at(o, path);
    ck_assert(cJSON_IsBool(x));
    return cJSON_IsTrue(x);
}

static cJSON *finish(cv_health_run *r) {
    cJSON *ext = cJSON_CreateObject();
    ck_assert_int_eq(cv_health_finish(r, "Hello", "gpt2", ext), 0);
    return ext;
}

/* the risk factor list as one comma-joined string */
static void factors_of(const cJSON *ext, char *out, size_t n) {
    out[0] = '\0';
    const cJSON *f = at(ext, "risk.risk_factors");
    for (const cJSON *x = f->child; x; x = x->next) {
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, x->valuestring, n - strlen(out) - 1);
    }
}
static void warnings_of(const cJSON *ext, char *out, size_t n) {
    out[0] = '\0';
    const cJSON *f = at(ext, "early_warning.warning_signals");
    for (const cJSON *x = f->child; x; x = x->next) {
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, x->valuestring, n - strlen(out) - 1);
    }
}
static void compounds_of(const cJSON *ext, char *out, size_t n) {
    out[0] = '\0';
    const cJSON *f = at(ext, "compound_signals");
    for (const cJSON *x = f->child; x; x = x->next) {
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, at(x, "name")->valuestring, n - strlen(out) - 1);
    }
}

#define EQ(a, b) ck_assert_double_eq_tol((a), (b), 1e-12)

/* ---- profiles ---- */

START_TEST(test_profiles) {
    static const struct {
        const char *arch, *key;
        double he, tau, l2, focus;
    } want[] = {
        {"GPT2LMHeadModel", "gpt2", 5, .9995, 5, .9},
        {"LlamaForCausalLM", "llama", 3.5, .9998, 10, .85},
        {"MixtralForCausalLM", "mixtral", 4.5, .9997, 8, .85},
        {"MistralForCausalLM", "mistral", 4, .9997, 8, .85},
        {"Qwen2ForCausalLM", "qwen2", 4.5, .9997, 8, .88},
        {"Phi3ForCausalLM", "phi3", 3.8, .9996, 7, .88},
        {"T5ForConditionalGeneration", "default", 4, .9995, 8, .9},
        {"BartForConditionalGeneration", "default", 4, .9995, 8, .9},
        {NULL, "default", 4, .9995, 8, .9},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const cv_health_profile *p = cv_health_profile_for(want[i].arch);
        ck_assert_str_eq(p->key, want[i].key);
        EQ(p->high_entropy_bits, want[i].he);
        EQ(p->tau_rep, want[i].tau);
        EQ(p->l2_multiplier, want[i].l2);
        EQ(p->focus_threshold, want[i].focus);
    }
}
END_TEST

/* ---- flags ---- */

START_TEST(test_high_entropy_steps) {
    cv_health_run *r = mk(NULL, 3, 2, 2);
    step(r, 4.0, 1, 0, .9, .1); /* = threshold: strict, not counted */
    step(r, 4.000001, 1, 0, .9, .1);
    step(r, 5.0, 1, 0, .9, .1);
    cJSON *f = cv_health_flags_json(r);
    EQ(num(f, "high_entropy_steps"), 2);
    cJSON_Delete(f);
    cv_health_run_free(r);

    r = mk("GPT2LMHeadModel", 3, 2, 2);
    step(r, 5.0, 1, 0, .9, .1);
    step(r, 5.01, 1, 0, .9, .1);
    f = cv_health_flags_json(r);
    EQ(num(f, "high_entropy_steps"), 1);
    cJSON_Delete(f);
    cv_health_run_free(r);
}
END_TEST

START_TEST(test_repetition_online) {
    const double hi = 0.99951, q[4] = {.5, 1.0, 0.0, .9};
    cv_health_run *r = mk(NULL, 3, 2, 7);
    step(r, q[0], q[1], q[2], q[3], NAN);
    for (int i = 1; i <= 2; i++) {
        step(r, q[0], q[1], q[2], q[3], hi);
        ck_assert_int_eq(cv_health_repetition(r), 0);
        ck_assert_int_eq(cv_health_repetition_first_step(r), -1);
        EQ(cv_health_risk_now(r), 0.0);
    }
    step(r, q[0], q[1], q[2], q[3], hi); /* the third pair */
    ck_assert_int_eq(cv_health_repetition(r), 1);
    ck_assert_int_eq(cv_health_repetition_first_step(r), 7 + 3);
    EQ(cv_health_risk_now(r), 0.9);
    step(r, q[0], q[1], q[2], q[3], 0.2); /* stays set, first step unchanged */
    ck_assert_int_eq(cv_health_repetition(r), 1);
    ck_assert_int_eq(cv_health_repetition_first_step(r), 10);
    cJSON *f = cv_health_flags_json(r);
    ck_assert(truth(f, "repetition_loop_detected"));
    EQ(num(f, "repetition_first_step"), 10);
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* cos == tau_rep is not above it */
    r = mk(NULL, 3, 2, 7);
    step(r, q[0], q[1], q[2], q[3], NAN);
    for (int i = 0; i < 6; i++) step(r, q[0], q[1], q[2], q[3], 0.9995);
    ck_assert_int_eq(cv_health_repetition(r), 0);
    f = cv_health_flags_json(r);
    ck_assert(!truth(f, "repetition_loop_detected"));
    ck_assert(cJSON_IsNull(at(f, "repetition_first_step")));
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* a low pair or a NaN resets the counter */
    r = mk(NULL, 3, 2, 0);
    const double cs[] = {NAN, hi, hi, .3, hi, hi, NAN, hi, hi, hi};
    for (int i = 0; i < 10; i++) {
        step(r, q[0], q[1], q[2], q[3], cs[i]);
        ck_assert_int_eq(cv_health_repetition(r), i == 9);
    }
    ck_assert_int_eq(cv_health_repetition_first_step(r), 9);
    cv_health_run_free(r);

    /* a loop early in a long run is caught (upstream's last-5 window would miss it) */
    r = mk(NULL, 3, 2, 4);
    step(r, q[0], q[1], q[2], q[3], NAN);
    for (int i = 1; i < 30; i++) step(r, q[0], q[1], q[2], q[3], .5);
    for (int i = 30; i < 33; i++) step(r, q[0], q[1], q[2], q[3], hi);
    for (int i = 33; i < 60; i++) step(r, q[0], q[1], q[2], q[3], .5);
    ck_assert_int_eq(cv_health_repetition(r), 1);
    ck_assert_int_eq(cv_health_repetition_first_step(r), 4 + 32);
    cv_health_run_free(r);

    /* the profile's tau: llama .9998 */
    r = mk("LlamaForCausalLM", 3, 2, 0);
    step(r, q[0], q[1], q[2], q[3], NAN);
    for (int i = 0; i < 4; i++) step(r, q[0], q[1], q[2], q[3], .9997);
    ck_assert_int_eq(cv_health_repetition(r), 0);
    for (int i = 0; i < 3; i++) step(r, q[0], q[1], q[2], q[3], .99985);
    ck_assert_int_eq(cv_health_repetition(r), 1);
    cv_health_run_free(r);
}
END_TEST

START_TEST(test_nan_inf) {
    cv_health_run *r = mk(NULL, 3, 2, 4);
    quiet(r);
    EQ(cv_health_risk_now(r), 0.0);
    ck_assert_int_eq(cv_health_nan(r), 0);
    LY[0].has_nan = 1;
    LY[0].l2 = NAN;
    quiet(r);
    lay_reset(10.0);
    ck_assert_int_eq(cv_health_nan(r), 1);
    ck_assert_int_eq(cv_health_inf(r), 0);
    EQ(cv_health_risk_now(r), 1.0);
    quiet(r);
    EQ(cv_health_risk_now(r), 1.0);
    cv_health_headline h;
    cv_health_headline_of(r, &h);
    EQ(h.risk, 1.0);
    ck_assert_str_eq(h.main_factor, "nan_or_inf");
    ck_assert_int_eq(h.blamed_layer, 0);

    cJSON *ext = finish(r);
    EQ(num(ext, "risk.risk_score"), 1.0);
    char buf[512];
    factors_of(ext, buf, sizeof buf);
    ck_assert_str_eq(buf, "nan_or_inf");
    char *raw = cJSON_PrintUnformatted(at(ext, "risk.risk_score"));
    ck_assert_str_eq(raw, "1.0");
    free(raw);
    ck_assert(truth(ext, "health_flags.nan_detected"));
    ck_assert(!truth(ext, "health_flags.inf_detected"));
    ck_assert(!truth(ext, "health_flags.mid_layer_anomaly_detected")); /* layer 0 is not mid */
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 1);
    EQ(num(ext, "risk.blamed_layers.0.layer"), 0);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"), "NaN/Inf detected");
    EQ(num(ext, "risk.blamed_layers.0.severity"), 1.0);
    EQ(num(ext, "risk.blamed_layers_flat.0"), 0);
    ck_assert_int_eq(size(ext, "fingerprint.vector"), 25);
    EQ(num(ext, "fingerprint.vector.13"), 1.0);
    EQ(num(ext, "fingerprint.vector.15"), 1.0);
    EQ(num(ext, "fingerprint.vector.16"), 0.0);
    EQ(num(ext, "fingerprint.vector.0"), 0.5);
    ck_assert_int_eq((int)strlen(str(ext, "fingerprint.prompt_hash")), 64);
    EQ(num(ext, "early_warning.failure_risk"), 0.0);
    ck_assert_str_eq(str(ext, "narrative.summary"),
                     "High risk (score: 1.00), driven by numerical instability (NaN/Inf). "
                     "Layer 0: NaN/Inf detected.");
    cJSON_Delete(ext);
    cv_health_run_free(r);

    /* NaN logits (decision 4): flagged; the unfiltered fingerprint mean becomes null */
    r = mk(NULL, 3, 2, 4);
    quiet(r);
    cv_health_step s = {.step_index = 5,
                        .entropy_bits = NAN,
                        .perplexity = NAN,
                        .surprisal_bits = NAN,
                        .top_k_margin = NAN,
                        .topk_mass = NAN,
                        .cos_prev = NAN,
                        .logits_nan = 1};
    ck_assert_int_eq(cv_health_run_add_step(r, &s, LY), 0);
    ck_assert_int_eq(cv_health_nan(r), 1);
    EQ(cv_health_risk_now(r), 1.0);
    ext = finish(r);
    ck_assert(truth(ext, "health_flags.nan_detected"));
    ck_assert(cJSON_IsNull(at(ext, "fingerprint.vector.0")));
    EQ(num(ext, "fingerprint.vector.15"), 1.0);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 0);
    cJSON_Delete(ext);
    cv_health_run_free(r);

    /* Inf: in logits and in a layer */
    r = mk(NULL, 3, 2, 4);
    s.logits_nan = 0;
    s.logits_inf = 1;
    s.entropy_bits = 1.0;
    s.top_k_margin = 1.0;
    s.surprisal_bits = INFINITY;
    s.topk_mass = 1.0;
    ck_assert_int_eq(cv_health_run_add_step(r, &s, LY), 0);
    ck_assert_int_eq(cv_health_inf(r), 1);
    ck_assert_int_eq(cv_health_nan(r), 0);
    EQ(cv_health_risk_now(r), 1.0);
    ext = finish(r);
    ck_assert(truth(ext, "health_flags.inf_detected"));
    EQ(num(ext, "fingerprint.vector.16"), 1.0);
    ck_assert(cJSON_IsNull(at(ext, "fingerprint.vector.8"))); /* mean surprisal = inf */
    cJSON_Delete(ext);
    cv_health_run_free(r);

    r = mk(NULL, 3, 2, 4);
    LY[2].has_inf = 1;
    quiet(r);
    ck_assert_int_eq(cv_health_inf(r), 1);
    EQ(cv_health_risk_now(r), 1.0);
    cv_health_run_free(r);
}
END_TEST

START_TEST(test_mid_layer_anomaly) {
    /* L = 6: early [0, 2), mid [2, 4); median of 10 and 20 = 15, threshold 15 * 8 = 120 */
    cv_health_run *r = mk(NULL, 6, 2, 3);
    LY[1].l2 = 20;
    LY[2].l2 = 120;
    quiet(r);
    cJSON *f = cv_health_flags_json(r);
    ck_assert(!truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    EQ(cv_health_risk_now(r), 0.0);
    LY[3].l2 = 120.000001;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    EQ(cv_health_risk_now(r), 0.7);
    cv_health_run_free(r);

    /* a layer past the mid range (layer 5 of 6) does not count */
    r = mk(NULL, 6, 2, 3);
    LY[4].l2 = 1e6;
    LY[5].has_nan = 1;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(!truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* L = 9, odd early count: median of {10, 30, 20} = 20 (sorted), threshold 160 */
    r = mk(NULL, 9, 2, 3);
    LY[1].l2 = 30;
    LY[2].l2 = 20;
    LY[5].l2 = 160;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(!truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    LY[5].l2 = 161;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* NaN in a mid layer */
    r = mk(NULL, 6, 2, 3);
    LY[3].has_nan = 1;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* no early l2: the fallback threshold 1000 */
    r = mk(NULL, 3, 2, 3);
    LY[0].l2 = NAN;
    LY[1].l2 = 1000;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(!truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    LY[1].l2 = 1000.5;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    cv_health_run_free(r);

    /* L < 3: never */
    r = mk(NULL, 2, 2, 3);
    LY[1].l2 = 1e9;
    LY[1].has_nan = 1;
    quiet(r);
    f = cv_health_flags_json(r);
    ck_assert(!truth(f, "mid_layer_anomaly_detected"));
    cJSON_Delete(f);
    cv_health_run_free(r);
}
END_TEST

/* ---- attention collapse ---- */

/* a run of n steps whose layer 0 has cc[i] collapsed heads (the other layers none) */
static cv_health_run *collapse_run(int L, int H, const int *cc, int n) {
    cv_health_run *r = mk(NULL, L, H, 2);
    for (int i = 0; i < n; i++) {
        lay_reset(10.0);
        LY[0].collapsed_heads = cc[i];
        quiet(r);
    }
    lay_reset(10.0);
    return r;
}

START_TEST(test_attention_collapse) {
    /* n = 4: early window max(1, min(5, 4/3)) = 1; r = cc/8; dev = .25 > .15 -> severity .2 */
    int a[] = {0, 0, 0, 2};
    cv_health_run *r = collapse_run(2, 4, a, 4);
    cJSON *ext = finish(r);
    ck_assert(truth(ext, "health_flags.attention_collapse_detected"));
    EQ(num(ext, "health_flags.attention_collapse_severity"), 0.2);
    EQ(cv_health_risk_now(r), 0.2);
    char buf[512];
    factors_of(ext, buf, sizeof buf);
    ck_assert_str_eq(buf, "attention_collapse");
    const cJSON *d = at(ext, "risk.attention_collapse_detail");
    EQ(num(d, "mean_collapse_rate"), 0.0625);
    ck_assert(truth(d, "trend_detected"));
    EQ(num(d, "trend_peak_deviation"), 0.25);
    ck_assert_int_eq(size(d, "trend_layers"), 1);
    EQ(num(d, "trend_layers.0"), 0);
    ck_assert(!truth(d, "catastrophic"));
    ck_assert(!truth(d, "calibration_anomaly"));
    ck_assert_int_eq(size(d, "calibration_anomaly_layers"), 0);
    ck_assert_int_eq(size(d, "per_layer_mean_collapse_rate"), 2);
    EQ(num(d, "per_layer_mean_collapse_rate.0"), 0.125);
    EQ(num(d, "per_layer_mean_collapse_rate.1"), 0.0);
    warnings_of(ext, buf, sizeof buf);
    ck_assert_str_eq(buf, "attention_collapse");
    EQ(num(ext, "early_warning.failure_risk"), 0.4);
    EQ(num(ext, "fingerprint.vector.17"), 1.0);
    cJSON_Delete(ext);
    cv_health_run_free(r);

    /* dev = .125: no trend, severity null */
    int b[] = {0, 0, 0, 1};
    r = collapse_run(2, 4, b, 4);
    ext = finish(r);
    ck_assert(!truth(ext, "health_flags.attention_collapse_detected"));
    ck_assert(cJSON_IsNull(at(ext, "health_flags.attention_collapse_severity")));
    ck_assert(!truth(ext, "risk.attention_collapse_detail.trend_detected"));
    EQ(num(ext, "risk.attention_collapse_detail.trend_peak_deviation"), 0.0);
    ck_assert_int_eq(size(ext, "risk.attention_collapse_detail.trend_layers"), 0);
    EQ(num(ext, "fingerprint.vector.17"), 0.0);
    EQ(cv_health_risk_now(r), 0.0);
    cJSON_Delete(ext);
    cv_health_run_free(r);

    /* dev = .375 > .25: .4 */
    int c[] = {0, 0, 0, 3};
    r = collapse_run(2, 4, c, 4);
    EQ(cv_health_risk_now(r), 0.4);
    cv_health_run_free(r);

    /* decision 10: dev .25004 rounds to .25 -> .2; .25006 -> .2501 -> .4 */
    int d1[] = {0, 0, 0, 25004}, d2[] = {0, 0, 0, 25006};
    r = collapse_run(1, 100000, d1, 4);
    EQ(cv_health_risk_now(r), 0.2);
    ext = finish(r);
    EQ(num(ext, "risk.attention_collapse_detail.trend_peak_deviation"), 0.25);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = collapse_run(1, 100000, d2, 4);
    EQ(cv_health_risk_now(r), 0.4);
    cv_health_run_free(r);

    /* n = 3: no trend */
    int e[] = {0, 0, 3};
    r = collapse_run(2, 4, e, 3);
    EQ(cv_health_risk_now(r), 0.0);
    cv_health_run_free(r);

    /* n = 6: early window 2, mean(0, .5) = .25, dev = .25 -> .2 (a window of 1 would give .4) */
    int w[] = {0, 1, 1, 1, 1, 1};
    r = collapse_run(1, 2, w, 6);
    EQ(cv_health_risk_now(r), 0.2);
    cv_health_run_free(r);

    /* catastrophic: mean rate .8 > .7 -> .8; .7 is not above */
    int k8[] = {8}, k7[] = {7};
    r = collapse_run(1, 10, k8, 1);
    ext = finish(r);
    ck_assert(truth(ext, "risk.attention_collapse_detail.catastrophic"));
    EQ(num(ext, "risk.attention_collapse_detail.mean_collapse_rate"), 0.8);
    EQ(num(ext, "health_flags.attention_collapse_severity"), 0.8);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = collapse_run(1, 10, k7, 1);
    EQ(cv_health_risk_now(r), 0.0);
    cv_health_run_free(r);

    /* a step without attention information (attn_valid 0) is left out of the series: three
     * valid steps remain, too few for the trend; counted as r = 0 it would make four */
    r = mk(NULL, 2, 4, 2);
    quiet(r);
    LY[0].attn_valid = LY[1].attn_valid = 0;
    LY[0].collapsed_heads = LY[1].collapsed_heads = 4;
    quiet(r);
    lay_reset(10.0);
    quiet(r);
    LY[0].collapsed_heads = 3;
    quiet(r);
    lay_reset(10.0);
    EQ(cv_health_risk_now(r), 0.0);
    ext = finish(r);
    EQ(num(ext, "risk.attention_collapse_detail.mean_collapse_rate"), 0.125);
    EQ(num(ext, "risk.attention_collapse_detail.per_layer_mean_collapse_rate.0"), 0.25);
    cJSON_Delete(ext);
    quiet(r); /* a fourth valid step: now the trend fires (dev .375) */
    EQ(cv_health_risk_now(r), 0.4);
    cv_health_run_free(r);

    /* no steps / no heads: insufficient_data; no valid step: no_attention_data */
    r = mk(NULL, 2, 4, 2);
    ext = finish(r);
    ck_assert_str_eq(str(ext, "risk.attention_collapse_detail.reason"), "insufficient_data");
    cJSON_Delete(ext);
    LY[0].attn_valid = LY[1].attn_valid = 0;
    quiet(r);
    ext = finish(r);
    ck_assert_str_eq(str(ext, "risk.attention_collapse_detail.reason"), "no_attention_data");
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = mk(NULL, 2, 0, 2);
    quiet(r);
    ext = finish(r);
    ck_assert_str_eq(str(ext, "risk.attention_collapse_detail.reason"), "insufficient_data");
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- risk v2 terms ---- */

static double risk_of(const double *H, const double *m, const double *S, const double *A, int n,
                      char *factors, size_t fn) {
    cv_health_run *r = mk(NULL, 3, 2, 1);
    for (int i = 0; i < n; i++) step(r, H[i], m[i], S[i], A[i], .1);
    double v = cv_health_risk_now(r);
    cJSON *ext = finish(r);
    EQ(num(ext, "risk.risk_score"), v);
    factors_of(ext, factors, fn);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    return v;
}

START_TEST(test_risk_terms) {
    char f[512];
    const double one[] = {1, 1, 1, 1, 1, 1}, zero[] = {0, 0, 0, 0, 0, 0},
                 nine[] = {.9, .9, .9, .9, .9, .9};
    /* elevated_entropy: .3 * min(1, H/8) > .05 */
    double h1[] = {1.34}, h2[] = {1.33}, h3[] = {9}, m3[] = {.3};
    EQ(risk_of(h1, one, zero, nine, 1, f, sizeof f), 0.05025);
    ck_assert_str_eq(f, "elevated_entropy");
    EQ(risk_of(h2, one, zero, nine, 1, f, sizeof f), 0.0);
    ck_assert_str_eq(f, "");
    EQ(risk_of(h3, m3, zero, nine, 1, f, sizeof f), 0.3);
    ck_assert_str_eq(f, "elevated_entropy");

    /* entropy_rising: n >= 6, last third > 1.3 * first third, min(.2, .1 (l - f) / f) */
    double r1[] = {.1, .1, .1, .2, .2, .2}, r2[] = {.1, .1, .1, 1, 1, 1};
    double r3[] = {.1, .1, .1, .2, .2}, r4[] = {1, 1, 1, 1, 1.3, 1.3}, r5[] = {0, 0, 0, 1, 1, 1};
    EQ(risk_of(r1, one, zero, nine, 6, f, sizeof f), 0.1);
    ck_assert_str_eq(f, "entropy_rising");
    EQ(risk_of(r2, one, zero, nine, 6, f, sizeof f), 0.2);
    ck_assert_str_eq(f, "entropy_rising");
    EQ(risk_of(r3, one, zero, nine, 5, f, sizeof f), 0.0);
    EQ(risk_of(r4, one, zero, nine, 6, f, sizeof f), 0.0); /* 1.3 f is not above 1.3 f */
    EQ(risk_of(r5, one, zero, nine, 6, f, sizeof f), 0.0); /* f = 0 */

    /* low_confidence_margin: .2 * max(0, 1 - 5 m) > .05 */
    double p5[] = {.5}, mA[] = {.149}, mB[] = {.15}, mC[] = {0};
    EQ(risk_of(p5, mA, zero, nine, 1, f, sizeof f), 0.051000000000000004);
    ck_assert_str_eq(f, "low_confidence_margin");
    EQ(risk_of(p5, mB, zero, nine, 1, f, sizeof f), 0.0);
    EQ(risk_of(p5, mC, zero, nine, 1, f, sizeof f), 0.2);

    /* low_topk_mass: .15 (1 - mass) > .03 */
    double aA[] = {.79}, aB[] = {.8};
    EQ(risk_of(p5, one, zero, aA, 1, f, sizeof f), 0.03149999999999999);
    ck_assert_str_eq(f, "low_topk_mass");
    EQ(risk_of(p5, one, zero, aB, 1, f, sizeof f), 0.0);

    /* elevated_surprisal: min(.1, S / 10) > .02 */
    double sA[] = {.21}, sB[] = {.2}, sC[] = {5};
    EQ(risk_of(p5, one, sA, nine, 1, f, sizeof f), 0.020999999999999998);
    ck_assert_str_eq(f, "elevated_surprisal");
    EQ(risk_of(p5, one, sB, nine, 1, f, sizeof f), 0.0);
    EQ(risk_of(p5, one, sC, nine, 1, f, sizeof f), 0.1);

    /* the terms add up, in factor order */
    double hh[] = {4.0}, mm[] = {0.1}, aa[] = {.7}, ss[] = {.3};
    /* .15 + .1 + .045 + .03; confident_confusion needs H > 4 */
    EQ(risk_of(hh, mm, ss, aa, 1, f, sizeof f), 0.15 + 0.1 + 0.045 + 0.03);
    ck_assert_str_eq(f, "elevated_entropy,low_confidence_margin,low_topk_mass,elevated_surprisal");

    /* compound severities are added: .3 * 5/8 + .5 */
    double c5[] = {5, 5, 5, 5, 5}, c4[] = {.4, .4, .4, .4, .4};
    EQ(risk_of(c5, c4, zero, nine, 5, f, sizeof f), 0.6875);
    ck_assert_str_eq(f, "elevated_entropy,compound:confident_confusion");

    /* ceilings: max, then the terms; capped at 1 */
    cv_health_run *r = mk(NULL, 3, 2, 1);
    step(r, .5, 1, .5, .9, NAN);
    for (int i = 0; i < 3; i++) step(r, .5, 1, .5, .9, .99999);
    EQ(cv_health_risk_now(r), 0.9 + 0.05);
    cJSON *ext = finish(r);
    factors_of(ext, f, sizeof f);
    ck_assert_str_eq(f, "repetition_loop,elevated_surprisal");
    cJSON_Delete(ext);
    LY[3 / 3].l2 = 1e5; /* the mid layer of 3 */
    step(r, .5, 1, .5, .9, .99999);
    EQ(cv_health_risk_now(r), 0.95); /* max(.9, .7) + .05 */
    ext = finish(r);
    factors_of(ext, f, sizeof f);
    ck_assert_str_eq(f, "repetition_loop,mid_layer_anomaly,elevated_surprisal");
    cJSON_Delete(ext);
    for (int i = 0; i < 3; i++) step(r, .5, 1, 5, .9, .99999);
    EQ(cv_health_risk_now(r), 1.0);
    cv_health_run_free(r);

    /* no steps: 0 */
    r = mk(NULL, 3, 2, 1);
    EQ(cv_health_risk_now(r), 0.0);
    ext = finish(r);
    factors_of(ext, f, sizeof f);
    ck_assert_str_eq(f, "");
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- layer blame ---- */

START_TEST(test_blame) {
    /* collapse in > 50% of steps: 3 of 4 (75%) fires, 2 of 4 (50%) does not; 2 of 3 = 67% */
    cv_health_run *r = mk(NULL, 2, 4, 1);
    const int c0[] = {1, 1, 0, 0}, c1[] = {1, 1, 1, 0};
    for (int i = 0; i < 4; i++) {
        LY[0].collapsed_heads = c0[i];
        LY[1].collapsed_heads = c1[i];
        quiet(r);
    }
    cJSON *ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 1);
    EQ(num(ext, "risk.blamed_layers.0.layer"), 1);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"),
                     "Attention collapse in 75% of steps");
    EQ(num(ext, "risk.blamed_layers.0.severity"), 0.4);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = mk(NULL, 1, 4, 1);
    for (int i = 0; i < 3; i++) {
        LY[0].collapsed_heads = i < 2;
        quiet(r);
    }
    ext = finish(r);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"),
                     "Attention collapse in 67% of steps");
    cJSON_Delete(ext);
    cv_health_run_free(r);

    /* z > 2.5: 9 layers, one at 100 and eight at 10: z = 80 / 30 = 2.67; with 8 layers the
     * largest possible z is 7 / sqrt(8) = 2.47 */
    r = mk(NULL, 9, 2, 1);
    LY[8].l2 = 100;
    quiet(r);
    quiet(r);
    ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 1);
    EQ(num(ext, "risk.blamed_layers.0.layer"), 8);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"), "L2 norm outlier (z=2.7)");
    EQ(num(ext, "risk.blamed_layers.0.severity"), 0.5);
    cJSON_Delete(ext);
    cv_health_headline h;
    cv_health_headline_of(r, &h);
    ck_assert_int_eq(h.blamed_layer, 8);
    cv_health_run_free(r);
    r = mk(NULL, 8, 2, 1);
    LY[7].l2 = 100;
    quiet(r);
    ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 0);
    cJSON_Delete(ext);
    cv_health_headline_of(r, &h);
    ck_assert_int_eq(h.blamed_layer, -1);
    cv_health_run_free(r);

    /* CV > .5 with >= 3 steps: [1, 1, 4] gives sqrt(3)/2 = .87; [1, 2, 3] gives exactly .5;
     * [1, 4] has too few steps. NaN steps are left out (NaN-safe), the NaN still blamed. */
    const double a[] = {1, 1, 4}, b[] = {1, 2, 3};
    r = mk(NULL, 3, 2, 1);
    for (int i = 0; i < 3; i++) {
        LY[2].l2 = a[i];
        LY[0].l2 = b[i] * 10;
        quiet(r);
    }
    ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 1);
    EQ(num(ext, "risk.blamed_layers.0.layer"), 2);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"), "Unstable L2 norms (CV=0.87)");
    EQ(num(ext, "risk.blamed_layers.0.severity"), 0.3);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = mk(NULL, 3, 2, 1);
    LY[2].l2 = 1;
    quiet(r);
    LY[2].l2 = 4;
    quiet(r);
    ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 0);
    cJSON_Delete(ext);
    LY[2].l2 = NAN;
    LY[2].has_nan = 1;
    quiet(r);
    lay_reset(10.0);
    LY[2].l2 = 1;
    quiet(r);
    ext = finish(r);
    ck_assert_int_eq(size(ext, "risk.blamed_layers.0.reasons"), 2);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"), "NaN/Inf detected");
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.1"), "Unstable L2 norms (CV=0.87)");
    EQ(num(ext, "risk.blamed_layers.0.severity"), 1.0);
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- compound signals ---- */

static cJSON *compound_run(const double *H, const double *m, const double *S, const double *A,
                           int n, const double *basins, int nb, char *names, size_t nn) {
    cv_health_run *r = mk(NULL, 2, 2, 1);
    if (basins) ck_assert_int_eq(cv_health_run_set_basins(r, basins, nb / 2, 2), 0);
    for (int i = 0; i < n; i++) step(r, H[i], m[i], S[i], A[i], .1);
    cJSON *ext = finish(r);
    compounds_of(ext, names, nn);
    cv_health_run_free(r);
    return ext;
}

START_TEST(test_compound_signals) {
    char n[512];
    const double H5[] = {5, 5, 5, 5, 5, 5}, m2[] = {.2, .2, .2, .2, .2, .2},
                 m4[] = {.4, .4, .4, .4, .4, .4}, m3[] = {.3, .3, .3, .3, .3, .3},
                 z[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                 a9[] = {.9, .9, .9, .9, .9, .9, .9, .9, .9, .9, .9};
    /* context_loss: last-5 entropy > 4 and mean basin < .3 */
    const double lo[] = {.2, .2, .2, .2}, at3[] = {.3, .3, .3, .3};
    cJSON *ext = compound_run(H5, m2, z, a9, 5, lo, 4, n, sizeof n);
    ck_assert_str_eq(n, "context_loss");
    EQ(num(ext, "compound_signals.0.severity"), 0.75);
    ck_assert_str_eq(str(ext, "compound_signals.0.description"),
                     "Model is losing track of context: high entropy combined with low basin "
                     "scores suggests middle-context tokens are being ignored.");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"),
                     "Mean entropy (last 5 steps): 5.00");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Mean basin score: 0.20");
    char f[512];
    factors_of(ext, f, sizeof f);
    ck_assert_str_eq(f, "elevated_entropy,compound:context_loss");
    EQ(num(ext, "risk.risk_score"), 0.3 * 5 / 8 + 0.75);
    cJSON_Delete(ext);
    ext = compound_run(H5, m2, z, a9, 5, at3, 4, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);
    ext = compound_run(H5, m2, z, a9, 5, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);

    /* confident_confusion: last-5 entropy > 4 and last-5 margin > .3; the window is the last 5 */
    const double H6[] = {0, 5, 5, 5, 5, 5};
    ext = compound_run(H6, m4, z, a9, 6, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "confident_confusion");
    EQ(num(ext, "compound_signals.0.severity"), 0.5);
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"), "Mean entropy (last 5): 5.00");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Mean margin (last 5): 0.40");
    cJSON_Delete(ext);
    ext = compound_run(H5, m3, z, a9, 5, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);

    /* degenerating_generation: n >= 10, slopes H > .05, margin < -.01, S > .05 */
    double dh[10], dm[10], ds[10], flat[10];
    for (int i = 0; i < 10; i++) {
        dh[i] = 1 + .1 * i;
        dm[i] = .5 - .02 * i;
        ds[i] = .1 + .1 * i;
        flat[i] = .5;
    }
    ext = compound_run(dh, dm, ds, a9, 10, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "degenerating_generation");
    EQ(num(ext, "compound_signals.0.severity"), 0.7);
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"), "Entropy slope: +0.100/step");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Margin slope: -0.020/step");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.2"), "Surprisal slope: +0.100/step");
    cJSON_Delete(ext);
    ext = compound_run(dh, dm, ds, a9, 9, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);
    ext = compound_run(dh, flat, ds, a9, 10, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);

    /* attention_bottleneck: min(1, sum cc / sum max(cc, fc, 1)) > .2 and mean entropy > 3.5 */
    const double H4[] = {4, 4, 4}, H35[] = {3.5, 3.5, 3.5};
    const struct {
        int fc;
        const double *H;
        const char *want, *rate;
    } bn[] = {{0, H4, "attention_bottleneck", "Collapse rate: 100.0% of observed heads"},
              {4, H4, "attention_bottleneck", "Collapse rate: 25.0% of observed heads"},
              {5, H4, "", NULL},
              {0, H35, "", NULL}};
    for (size_t k = 0; k < sizeof bn / sizeof bn[0]; k++) {
        cv_health_run *r = mk(NULL, 2, 4, 1);
        for (int i = 0; i < 3; i++) {
            LY[0].collapsed_heads = LY[1].collapsed_heads = 1;
            LY[0].focused_heads = LY[1].focused_heads = bn[k].fc;
            step(r, bn[k].H[i], .2, 0, .9, .1);
        }
        ext = finish(r);
        compounds_of(ext, n, sizeof n);
        ck_assert_str_eq(n, bn[k].want);
        if (bn[k].rate) {
            EQ(num(ext, "compound_signals.0.severity"), 0.65);
            ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"), bn[k].rate);
            ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Mean entropy: 4.00");
        }
        cJSON_Delete(ext);
        cv_health_run_free(r);
    }

    /* a layer without collapsed or focused heads still counts 1: 1 / 5 = .2 is not above .2 */
    {
        cv_health_run *r = mk(NULL, 5, 4, 1);
        for (int i = 0; i < 3; i++) {
            LY[0].collapsed_heads = 1;
            step(r, 4, .2, 0, .9, .1);
        }
        ext = finish(r);
        compounds_of(ext, n, sizeof n);
        ck_assert_str_eq(n, "");
        cJSON_Delete(ext);
        cv_health_run_free(r);
    }

    /* confident_repetition_risk: last-5 H < 2, S < 1, mass > .95 */
    const double h1[] = {1, 1, 1, 1, 1}, s5[] = {.5, .5, .5, .5, .5}, s1[] = {1, 1, 1, 1, 1},
                 a96[] = {.96, .96, .96, .96, .96}, a95[] = {.95, .95, .95, .95, .95};
    ext = compound_run(h1, m2, s5, a96, 5, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "confident_repetition_risk");
    EQ(num(ext, "compound_signals.0.severity"), 0.4);
    ck_assert_str_eq(str(ext, "compound_signals.0.description"),
                     "Model is extremely confident with near-unanimous token selection — may be "
                     "locked into a repetitive pattern.");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"), "Mean entropy: 1.00");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Mean surprisal: 0.50");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.2"), "Mean voter agreement: 0.96");
    cJSON_Delete(ext);
    ext = compound_run(h1, m2, s5, a95, 5, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);
    ext = compound_run(h1, m2, s1, a96, 5, NULL, 0, n, sizeof n);
    ck_assert_str_eq(n, "");
    cJSON_Delete(ext);
}
END_TEST

/* ---- early warning ---- */

static cJSON *ew_run(const char *arch, const double *H, const double *m, const double *S, int n,
                     char *w, size_t wn) {
    cv_health_run *r = mk(arch, 3, 2, 1);
    for (int i = 0; i < n; i++) step(r, H[i], m[i], S[i], .9, .1);
    cJSON *ext = finish(r);
    warnings_of(ext, w, wn);
    cv_health_run_free(r);
    return ext;
}

START_TEST(test_early_warning) {
    char w[512];
    double acc[10], dec[10], ones[12], m1[12], z[12];
    for (int i = 0; i < 12; i++) {
        ones[i] = 1;
        m1[i] = 1;
        z[i] = 0;
    }
    for (int i = 0; i < 10; i++) {
        acc[i] = .01 * i * i;
        dec[i] = 3 - .01 * i * i;
    }
    /* entropy_accelerating: n >= 10, the last 3 deltas of the window means > 0 and growing */
    cJSON *ext = ew_run(NULL, acc, m1, z, 10, w, sizeof w);
    ck_assert_str_eq(w, "entropy_accelerating");
    EQ(num(ext, "early_warning.failure_risk"), 0.7);
    cJSON_Delete(ext);
    ext = ew_run(NULL, acc, m1, z, 9, w, sizeof w);
    ck_assert_str_eq(w, "");
    EQ(num(ext, "early_warning.failure_risk"), 0.0);
    cJSON_Delete(ext);
    ext = ew_run(NULL, dec, m1, z, 10, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    double lin[10]; /* equal deltas (exact): the last is not above the first */
    double m2[10];  /* margin .2: no divergence, no collapse */
    for (int i = 0; i < 10; i++) {
        lin[i] = i;
        m2[i] = .2;
    }
    ext = ew_run(NULL, lin, m2, z, 10, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);

    /* margin_collapsed: the last 5 margins all < .1 */
    const double mc[] = {.09, .09, .09, .09, .09}, mn[] = {.09, .09, .09, .09, .1};
    ext = ew_run(NULL, ones, mc, z, 5, w, sizeof w);
    ck_assert_str_eq(w, "margin_collapsed");
    EQ(num(ext, "early_warning.failure_risk"), 0.6);
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, mn, z, 5, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);

    /* margin_declining: n >= 10, last-5 / first-5 < .3 (.14 / .5 = .28; .15 / .5 = .3) */
    const double md[] = {.5, .5, .5, .5, .5, .14, .14, .14, .14, .14},
                 mq[] = {.5, .5, .5, .5, .5, .15, .15, .15, .15, .15},
                 mx[] = {.5, .5, .5, .5, .5, .05, .05, .05, .05, .05};
    ext = ew_run(NULL, ones, md, z, 10, w, sizeof w);
    ck_assert_str_eq(w, "margin_declining");
    EQ(num(ext, "early_warning.failure_risk"), 0.5);
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, mq, z, 10, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, md, z, 9, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, mx, z, 10, w, sizeof w); /* collapsed wins */
    ck_assert_str_eq(w, "margin_collapsed");
    cJSON_Delete(ext);

    /* surprisal_volatile: last-5 std / mean > 1.5 */
    const double sv[] = {0, 0, 0, 0, 10}, sq[] = {1, 1, 1, 1, 2};
    ext = ew_run(NULL, ones, m1, sv, 5, w, sizeof w);
    ck_assert_str_eq(w, "surprisal_volatile");
    EQ(num(ext, "early_warning.failure_risk"), 0.5);
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, m1, sq, 5, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, m1, z, 5, w, sizeof w); /* mean 0 */
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    const double s0[] = {-1, 1, -1, 1, 0}; /* mean 0: std / mean would be inf */
    ext = ew_run(NULL, ones, m1, s0, 5, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);
    ext = ew_run(NULL, ones, m1, sv, 4, w, sizeof w);
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);

    /* entropy_margin_divergence: last-5 H > the profile's threshold, last-5 margin > .3 */
    const double h5[] = {5, 5, 5, 5, 5}, m4[] = {.4, .4, .4, .4, .4};
    ext = ew_run(NULL, h5, m4, z, 5, w, sizeof w);
    ck_assert_str_eq(w, "entropy_margin_divergence");
    EQ(num(ext, "early_warning.failure_risk"), 0.55);
    cJSON_Delete(ext);
    ext = ew_run("GPT2LMHeadModel", h5, m4, z, 5, w, sizeof w); /* threshold 5 */
    ck_assert_str_eq(w, "");
    cJSON_Delete(ext);

    /* flags, after the trend signals; failure_risk is the max */
    cv_health_run *r = mk(NULL, 3, 2, 1);
    step(r, .5, .09, 0, .9, NAN);
    for (int i = 0; i < 4; i++) step(r, .5, .09, 0, .9, .99999);
    LY[1].l2 = 1e5;
    step(r, .5, .09, 0, .9, .99999);
    ext = finish(r);
    warnings_of(ext, w, sizeof w);
    ck_assert_str_eq(w, "margin_collapsed,repetition_loop,mid_layer_anomaly");
    EQ(num(ext, "early_warning.failure_risk"), 0.9);
    EQ(num(ext, "fingerprint.vector.18"), 1.0);
    EQ(num(ext, "fingerprint.vector.19"), 1.0);
    cJSON_Delete(ext);
    cv_health_run_free(r);
    r = mk(NULL, 6, 2, 1);
    LY[2].has_nan = 1;
    quiet(r);
    ext = finish(r);
    warnings_of(ext, w, sizeof w);
    ck_assert_str_eq(w, "mid_layer_anomaly");
    EQ(num(ext, "early_warning.failure_risk"), 0.6);
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- a degrading run against upstream's Python (risk.py, compound_signals.py,
 * early_warning.py, fingerprint.py, narrative.py run on the same series) ---- */

static cv_health_run *degrading_run(void) {
    cv_health_run *r = mk(NULL, 9, 4, 5);
    for (int i = 0; i < 12; i++) {
        lay_reset(10.0);
        LY[8].l2 = 100;
        LY[4].l2 = i % 2 ? 40 : 5;
        LY[1].collapsed_heads = i >= 3;
        char tok[8];
        snprintf(tok, sizeof tok, "w%d", i);
        step_tok(r, 1 + .05 * i * i, .5 - .04 * i, .5 + .2 * i, .9 - .02 * i, i ? .5 : NAN, tok);
    }
    lay_reset(10.0);
    return r;
}

START_TEST(test_degrading_run_vs_upstream) {
    cv_health_run *r = degrading_run();
    cJSON *ext = finish(r);
    EQ(num(ext, "risk.risk_score"), 1.0);
    char f[512];
    factors_of(ext, f, sizeof f);
    ck_assert_str_eq(f, "elevated_entropy,entropy_rising,low_topk_mass,elevated_surprisal,"
                        "compound:degenerating_generation");
    ck_assert_int_eq(size(ext, "risk.blamed_layers"), 3);
    EQ(num(ext, "risk.blamed_layers.0.layer"), 1);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.0.reasons.0"),
                     "Attention collapse in 75% of steps");
    EQ(num(ext, "risk.blamed_layers.1.layer"), 4);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.1.reasons.0"), "Unstable L2 norms (CV=0.81)");
    EQ(num(ext, "risk.blamed_layers.1.severity"), 0.3);
    EQ(num(ext, "risk.blamed_layers.2.layer"), 8);
    ck_assert_str_eq(str(ext, "risk.blamed_layers.2.reasons.0"), "L2 norm outlier (z=2.6)");
    EQ(num(ext, "health_flags.high_entropy_steps"), 4);
    const cJSON *d = at(ext, "risk.attention_collapse_detail");
    EQ(num(d, "mean_collapse_rate"), 0.0208);
    EQ(num(d, "per_layer_mean_collapse_rate.1"), 0.1875);
    ck_assert_int_eq(size(d, "per_layer_mean_collapse_rate"), 9);
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.0"), "Entropy slope: +0.550/step");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.1"), "Margin slope: -0.040/step");
    ck_assert_str_eq(str(ext, "compound_signals.0.evidence.2"), "Surprisal slope: +0.200/step");
    char w[256];
    warnings_of(ext, w, sizeof w);
    ck_assert_str_eq(w, "entropy_accelerating");
    EQ(num(ext, "early_warning.failure_risk"), 0.7);
    static const double fp[25] = {3.108333333333333,
                                  2.058114023404275,
                                  1.0,
                                  7.050000000000001,
                                  0.55,
                                  0.27999999999999997,
                                  0.1442220510185596,
                                  -0.04,
                                  1.5999999999999999,
                                  0.7211102550927979,
                                  0.2,
                                  0.79,
                                  0.0721110255092798,
                                  1.0,
                                  0.23529411764705882,
                                  0.0,
                                  0.0,
                                  0.0,
                                  0.0,
                                  0.0,
                                  -0.963529318081743,
                                  0.6621278359477561,
                                  1.0833333333333333,
                                  6.033333333333334,
                                  0.0};
    for (int i = 0; i < 25; i++) {
        char p[32];
        snprintf(p, sizeof p, "fingerprint.vector.%d", i);
        ck_assert_msg(fabs(num(ext, p) - fp[i]) <= 1e-12, "fingerprint[%d] %.17g != %.17g", i,
                      num(ext, p), fp[i]);
    }
    EQ(num(ext, "fingerprint.version"), 2);
    ck_assert_str_eq(
        str(ext, "narrative.summary"),
        "High risk (score: 1.00), driven by elevated output uncertainty. Peak entropy of 7.1 bits "
        "at step 16 (mean: 3.1); the model was most uncertain when generating \"w11\". Entropy "
        "rose from ~1.1 to ~6.0 bits over the course of generation, suggesting progressive "
        "degradation. Output quality is degrading over time: entropy and surprisal are rising "
        "while confidence margin is falling. Layer 8: L2 norm outlier (z=2.6). Layer 1: "
        "Attention collapse in 75% of steps. Layer 4: Unstable L2 norms (CV=0.81). Consider: "
        "refine the prompt for clarity, provide more context, or try a model better suited to "
        "this domain.");
    char *nar = cv_health_narrative(r);
    ck_assert_str_eq(nar, str(ext, "narrative.summary"));
    free(nar);
    /* the headline: the largest contribution is the compound signal's .7 */
    cv_health_headline h;
    cv_health_headline_of(r, &h);
    EQ(h.risk, 1.0);
    ck_assert_str_eq(h.main_factor, "compound:degenerating_generation");
    ck_assert_int_eq(h.blamed_layer, 8);
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

START_TEST(test_fingerprint_small) {
    /* empty run: every entry 0 */
    cv_health_run *r = mk(NULL, 3, 2, 4);
    cJSON *ext = finish(r);
    ck_assert_int_eq(size(ext, "fingerprint.vector"), 25);
    for (int i = 0; i < 25; i++) {
        char p[32];
        snprintf(p, sizeof p, "fingerprint.vector.%d", i);
        EQ(num(ext, p), 0.0);
    }
    cJSON_Delete(ext);
    /* 4 steps: H 1 2 3 6 (mean 3, std sqrt(14/3), slope 1.6), margin 1 .5 .5 0 */
    const double H[] = {1, 2, 3, 6}, m[] = {1, .5, .5, 0};
    for (int i = 0; i < 4; i++) step(r, H[i], m[i], 1, .9, .1);
    ext = finish(r);
    EQ(num(ext, "fingerprint.vector.0"), 3.0);
    EQ(num(ext, "fingerprint.vector.1"), sqrt(14.0 / 3.0));
    EQ(num(ext, "fingerprint.vector.2"), 1.0);
    EQ(num(ext, "fingerprint.vector.3"), 6.0);
    EQ(num(ext, "fingerprint.vector.4"), 1.6);
    EQ(num(ext, "fingerprint.vector.5"), 0.5);
    EQ(num(ext, "fingerprint.vector.6"), sqrt(0.5 / 3.0));
    EQ(num(ext, "fingerprint.vector.7"), -0.3);
    EQ(num(ext, "fingerprint.vector.8"), 1.0);
    EQ(num(ext, "fingerprint.vector.9"), 0.0);
    EQ(num(ext, "fingerprint.vector.10"), 0.0);
    EQ(num(ext, "fingerprint.vector.11"), 0.9);
    EQ(num(ext, "fingerprint.vector.14"), 1.0 / 8.0); /* one step above 4 bits, P + G = 8 */
    /* Pearson: cov -2.5 / sqrt(14 * .5) */
    EQ(num(ext, "fingerprint.vector.20"), -2.5 / sqrt(7.0));
    EQ(num(ext, "fingerprint.vector.21"), sqrt(14.0 / 3.0) / 3.0);
    EQ(num(ext, "fingerprint.vector.22"), 1.0);
    EQ(num(ext, "fingerprint.vector.23"), 6.0);
    EQ(num(ext, "fingerprint.vector.13"), num(ext, "risk.risk_score"));
    cJSON_Delete(ext);
    cv_health_run_free(r);
    /* 3 steps: no quarter means; constant entropy: no correlation, CV 0 */
    r = mk(NULL, 3, 2, 0);
    for (int i = 0; i < 3; i++) step(r, 2, m[i], 1, .9, .1);
    ext = finish(r);
    EQ(num(ext, "fingerprint.vector.20"), 0.0);
    EQ(num(ext, "fingerprint.vector.21"), 0.0);
    EQ(num(ext, "fingerprint.vector.22"), 0.0);
    EQ(num(ext, "fingerprint.vector.23"), 0.0);
    EQ(num(ext, "fingerprint.vector.14"), 0.0);
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- narrative ---- */

static char *narrative_of(cv_health_run *r) {
    char *s = cv_health_narrative(r);
    ck_assert_ptr_nonnull(s);
    return s;
}
#define NARR(r, want)                                                                              \
    do {                                                                                           \
        char *s_ = narrative_of(r);                                                                \
        ck_assert_str_eq(s_, want);                                                                \
        free(s_);                                                                                  \
    } while (0)

START_TEST(test_narrative) {
    cv_health_run *r = mk(NULL, 3, 2, 2);
    NARR(r, "Low risk (score: 0.00). No significant anomalies detected.");
    quiet(r);
    NARR(r, "Low risk (score: 0.00). No significant anomalies detected.");
    cv_health_run_free(r);

    /* a factor below .3: the mild-signals variant */
    r = mk(NULL, 3, 2, 2);
    step(r, 1.34, 1, 0, .9, .1);
    NARR(r, "Low risk (score: 0.05), though some mild signals were observed.");
    cv_health_run_free(r);

    /* risk .3 is not above .3; peak entropy above 4 gets its sentence, the token in quotes */
    r = mk(NULL, 3, 2, 2);
    step_tok(r, 9, .3, 0, .9, .1, " the");
    NARR(r, "Low risk (score: 0.30), though some mild signals were observed. Peak entropy of 9.0 "
            "bits at step 2 (mean: 9.0); the model was most uncertain when generating \" the\".");
    cv_health_run_free(r);

    /* peak entropy exactly 4: no sentence; the first step at the peak, "?" for an empty token */
    r = mk(NULL, 3, 2, 2);
    step_tok(r, 4, .2, 0, .9, .1, "a");
    NARR(r, "Low risk (score: 0.15), though some mild signals were observed.");
    step_tok(r, 5, .2, 0, .9, .1, "");
    step_tok(r, 5, .2, 0, .9, .1, "b");
    NARR(r, "Low risk (score: 0.18), though some mild signals were observed. Peak entropy of 5.0 "
            "bits at step 3 (mean: 4.7); the model was most uncertain when generating \"?\".");
    cv_health_run_free(r);

    /* moderate with a compound description */
    r = mk(NULL, 3, 2, 2);
    for (int i = 0; i < 5; i++) step(r, 5, .4, 0, .9, .1);
    NARR(r, "Moderate risk (score: 0.69). Peak entropy of 5.0 bits at step 2 (mean: 5.0); the "
            "model was most uncertain when generating \"x\". Model shows high overall "
            "uncertainty but still has a dominant token choice — may produce plausible-looking "
            "but unreliable output.");
    cv_health_run_free(r);

    /* high, repetition: advice */
    r = mk(NULL, 3, 2, 2);
    step(r, .5, 1, 0, .9, NAN);
    for (int i = 0; i < 3; i++) step(r, .5, 1, 0, .9, .99999);
    NARR(r, "High risk (score: 0.90), driven by a repetition loop in the last generated tokens. "
            "Consider: lower temperature, add repetition penalty, or shorten max_new_tokens.");
    cv_health_run_free(r);

    /* mid-layer: .7 alone is moderate; with a surprisal term .721 it is high */
    r = mk(NULL, 3, 2, 2);
    LY[1].l2 = 1e5;
    quiet(r);
    NARR(r, "Moderate risk (score: 0.70).");
    cv_health_run_free(r);
    r = mk(NULL, 3, 2, 2);
    LY[1].l2 = 1e5;
    step(r, .5, 1, .21, .9, .1);
    NARR(r, "High risk (score: 0.72), driven by anomalous behavior in middle transformer layers. "
            "Consider: check input encoding, try different precision (fp32 vs fp16), or use a "
            "different model.");
    cv_health_run_free(r);

    /* three compound signals: only two descriptions; four blamed layers: the top three */
    r = mk(NULL, 4, 4, 2);
    const double basins[] = {.1, .1, .1, .1};
    ck_assert_int_eq(cv_health_run_set_basins(r, basins, 2, 2), 0);
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 4; j++) LY[j].collapsed_heads = 1;
        step(r, 5, .4, 0, .9, .1);
    }
    char *s = narrative_of(r);
    ck_assert_ptr_nonnull(strstr(s, "Model is losing track of context"));
    ck_assert_ptr_nonnull(strstr(s, "Model shows high overall uncertainty"));
    ck_assert_ptr_null(strstr(s, "Widespread attention collapse"));
    free(s);
    cJSON *ext = finish(r);
    char n[256];
    compounds_of(ext, n, sizeof n);
    ck_assert_str_eq(n, "context_loss,confident_confusion,attention_bottleneck");
    cJSON_Delete(ext);
    cv_health_run_free(r);

    r = mk(NULL, 4, 2, 2);
    for (int j = 0; j < 4; j++) LY[j].has_nan = 1;
    quiet(r);
    NARR(r, "High risk (score: 1.00), driven by numerical instability (NaN/Inf). Layer 0: NaN/Inf "
            "detected. Layer 1: NaN/Inf detected. Layer 2: NaN/Inf detected.");
    cv_health_run_free(r);

    /* entropy rose: with entropy_accelerating and >= 6 finite entropies */
    r = mk(NULL, 3, 2, 2);
    for (int i = 0; i < 10; i++) step(r, .01 * i * i, 1, 0, .9, .1);
    s = narrative_of(r);
    ck_assert_ptr_nonnull(strstr(s, "Entropy rose from ~0.0 to ~0.6 bits over the course of "
                                    "generation, suggesting progressive degradation."));
    free(s);
    cv_health_run_free(r);
    r = mk(NULL, 3, 2, 2);
    for (int i = 0; i < 9; i++) step(r, .01 * i * i, 1, 0, .9, .1);
    s = narrative_of(r);
    ck_assert_ptr_null(strstr(s, "Entropy rose"));
    free(s);
    cv_health_run_free(r);
}
END_TEST

/* ---- the extensions objects ---- */

START_TEST(test_extensions_shape) {
    cv_health_run *r = mk("LlamaForCausalLM", 3, 2, 2);
    quiet(r);
    cJSON *ext = cJSON_CreateObject();
    ck_assert_int_eq(cv_health_finish(r, "Hello", "gpt2", ext), 0);
    ck_assert_int_eq(cv_health_finish(r, "Hello", "gpt2", ext), 0); /* replaces, no duplicates */
    ck_assert_int_eq(cJSON_GetArraySize(ext), 7);
    ck_assert_str_eq(str(ext, "health_profile.key"), "llama");
    ck_assert_str_eq(str(ext, "health_profile.logits_basis"), "raw");
    EQ(num(ext, "health_profile.thresholds.high_entropy_threshold_bits"), 3.5);
    EQ(num(ext, "health_profile.thresholds.repetition_cosine_threshold"), 0.9998);
    EQ(num(ext, "health_profile.thresholds.l2_explosion_multiplier"), 10.0);
    EQ(num(ext, "health_profile.thresholds.focused_head_concentration_threshold"), 0.85);
    static const char *const fk[] = {"nan_detected",
                                     "inf_detected",
                                     "attention_collapse_detected",
                                     "attention_collapse_severity",
                                     "high_entropy_steps",
                                     "repetition_loop_detected",
                                     "mid_layer_anomaly_detected",
                                     "repetition_first_step"};
    const cJSON *fl = at(ext, "health_flags");
    ck_assert_int_eq(cJSON_GetArraySize(fl), 8);
    int i = 0;
    for (const cJSON *x = fl->child; x; x = x->next, i++) ck_assert_str_eq(x->string, fk[i]);
    static const char *const rk[] = {"risk_score", "risk_factors", "blamed_layers",
                                     "blamed_layers_flat", "attention_collapse_detail"};
    i = 0;
    for (const cJSON *x = at(ext, "risk")->child; x; x = x->next, i++)
        ck_assert_str_eq(x->string, rk[i]);
    ck_assert_int_eq(i, 5);
    char *raw = cJSON_PrintUnformatted(at(ext, "risk.risk_score"));
    ck_assert_str_eq(raw, "0.0");
    free(raw);
    ck_assert(cJSON_IsArray(at(ext, "compound_signals")));
    ck_assert(cJSON_IsArray(at(ext, "early_warning.warning_signals")));
    ck_assert_str_eq(str(ext, "fingerprint.prompt_hash"),
                     "c64e93a19b2a77c8bc267755e5b0db1fd361eedb0456f8af3990841081c2c5e1");
    ck_assert(cJSON_IsString(at(ext, "narrative.summary")));
    cJSON_Delete(ext);
    cv_health_run_free(r);
}
END_TEST

/* ---- prompt_hash (expected values from CPython 3.11 hashlib) ---- */

START_TEST(test_prompt_hash) {
    static const struct {
        const char *prompt, *hf, *want;
    } v[] = {
        {"  H\xc3\xa9llo WORLD\n", "gpt2",
         "a3154ba400c35bf13eb586bcbaa98aaf1e6e213290450f15b433e266d30fbe5e"},
        {"", "gpt2", "991c3b04e6077dcb579f784d53ffbaa9d6b8d7ebd0579ed2c299925dfa3657e5"},
        /* U+3000 U+0085 ... U+2029 stripped; U+0130 -> i U+0307; final sigma */
        {"\xe3\x80\x80\xc2\x85 \xc4\xb0STANBUL \xce\x9f\xce\x94\xce\x9f\xce\xa3 "
         "\xce\xa3\xce\x91\xce\xa3\xe2\x80\xa9",
         "meta-llama/Llama-2-7b-hf",
         "627d4d2750971ed54d0523f5c4098bca8ab9c58f88d8891d48abf570e1848888"},
        /* sigma next to case-ignorable '.' and '\'' */
        {"\xc3\x80\xc3\x89 \xce\xa3.\xce\xa3'\xce\xa3 x", "m",
         "9dcf2b0f0c8ed62a3b36c72e08b67c3ae761fbc1bd656531d847b56d8b407f90"},
    };
    char out[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ck_assert_int_eq(cv_health_prompt_hash(v[i].prompt, v[i].hf, out), 0);
        ck_assert_str_eq(out, v[i].want);
    }
    ck_assert_int_eq(cv_health_prompt_hash("\xff", "gpt2", out), -1);
    ck_assert_int_eq(cv_health_prompt_hash("\xed\xa0\x80", "gpt2", out), -1); /* surrogate */
}
END_TEST

int main(void) {
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_profiles);
    tcase_add_test(tc, test_high_entropy_steps);
    tcase_add_test(tc, test_repetition_online);
    tcase_add_test(tc, test_nan_inf);
    tcase_add_test(tc, test_mid_layer_anomaly);
    tcase_add_test(tc, test_attention_collapse);
    tcase_add_test(tc, test_risk_terms);
    tcase_add_test(tc, test_blame);
    tcase_add_test(tc, test_compound_signals);
    tcase_add_test(tc, test_early_warning);
    tcase_add_test(tc, test_degrading_run_vs_upstream);
    tcase_add_test(tc, test_fingerprint_small);
    tcase_add_test(tc, test_narrative);
    tcase_add_test(tc, test_extensions_shape);
    tcase_add_test(tc, test_prompt_hash);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
