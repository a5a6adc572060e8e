/* test_health_ref.c — the health layer against tests/ref/gen_health.py, which computes every
 * metric of HEALTH.md in numpy (double) on Hugging Face's own tensors.
 *
 * 1. End to end (tests/fixtures/health/<model>.p<i>.json): our run of the same model, prompt and
 *    greedy length gives the same tokens, and every health value of the trace — per step, per
 *    layer (self- and cross-attention, hidden), encoder layers, prompt analysis, flags, risk,
 *    blame, compound signals, early warning, fingerprint, narrative, profile — equals the
 *    reference: strings, booleans, nulls and counts exactly, numbers within TOL_E2E relative
 *    (the forward passes differ by ~1e-5 on the logits, see test_parity_*).
 * 2. On HF's tensors (ref.safetensors of the parity fixtures): our metric code fed HF's own
 *    logits, attention probabilities and hidden states matches the reference to TOL_HF absolute.
 * 3. Edge cases (edge.json): one key, a NaN row, unnormalized rows, ties, -inf / NaN / +inf
 *    logits, clipped and non-finite hidden states, a zero vector's cosine. */
#include "corevital/backend.h"
#include "corevital/config.h"
#include "corevital/health.h"
#include "corevital/report.h"
#include "corevital/run.h"
#include "corevital/stats.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_E2E 2e-5 /* relative to max(1, |ref|); measured max 7.8e-6 (prompt surprisal) */
#define TOL_HF  1e-6 /* absolute */

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static double num_of(const cJSON *j) {
    if (cJSON_IsRaw(j)) return strtod(j->valuestring, NULL);
    return j->valuedouble;
}

/* ---- a recursive comparison of the reference's shape against ours --------------------------- */

static int g_fail;
static double g_slack; /* > 0 while comparing a rounded value against the reference's raw one */
static double g_worst;
static char g_worst_at[256];

/* Keys of the reference that are its own bookkeeping, not trace fields. */
static int skipped_key(const char *k) {
    size_t n = strlen(k);
    return (n > 4 && strcmp(k + n - 4, "_raw") == 0) || strcmp(k, "token_text") == 0 ||
           strcmp(k, "logits_nan") == 0 || strcmp(k, "logits_inf") == 0 || strcmp(k, "l2") == 0;
}

static void mismatch(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mismatch(const char *path, const char *fmt, ...) {
    if (g_fail++ < 20) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  %s: ", path);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static void cmp(const char *path, const cJSON *r, const cJSON *o) {
    char sub[512];
    if (cJSON_IsNull(r)) {
        if (o && !cJSON_IsNull(o)) mismatch(path, "reference null, ours not");
    } else if (cJSON_IsBool(r)) {
        if (!cJSON_IsBool(o) || cJSON_IsTrue(r) != cJSON_IsTrue(o)) mismatch(path, "bool differs");
    } else if (cJSON_IsString(r)) {
        if (!cJSON_IsString(o) || strcmp(r->valuestring, o->valuestring) != 0)
            mismatch(path, "'%s' vs '%s'", r->valuestring,
                     cJSON_IsString(o) ? o->valuestring : "(not a string)");
    } else if (cJSON_IsNumber(r)) {
        if (!cJSON_IsNumber(o) && !cJSON_IsRaw(o)) {
            mismatch(path, "number %.17g vs non-number", r->valuedouble);
            return;
        }
        double a = r->valuedouble, b = num_of(o), d = fabs(a - b) / fmax(1.0, fabs(a));
        if (g_slack > 0) { /* ours is rounded, a is not: half a unit of the last place apart */
            d = fabs(a - b) - g_slack;
            d = d > 0 ? d / fmax(1.0, fabs(a)) : 0;
        }
        if (d > g_worst) {
            g_worst = d;
            snprintf(g_worst_at, sizeof g_worst_at, "%s", path);
        }
        if (!(d <= TOL_E2E)) mismatch(path, "%.17g vs %.17g", a, b);
    } else if (cJSON_IsArray(r)) {
        if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != cJSON_GetArraySize(r)) {
            mismatch(path, "array of %d vs %d", cJSON_GetArraySize(r),
                     cJSON_IsArray(o) ? cJSON_GetArraySize(o) : -1);
            return;
        }
        int i = 0;
        for (const cJSON *a = r->child, *b = o->child; a && b; a = a->next, b = b->next, i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            cmp(sub, a, b);
        }
    } else if (cJSON_IsObject(r)) {
        if (!cJSON_IsObject(o)) {
            mismatch(path, "object vs non-object");
            return;
        }
        for (const cJSON *a = r->child; a; a = a->next) {
            if (skipped_key(a->string)) continue;
            snprintf(sub, sizeof sub, "%s.%s", path, a->string);
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, a->string);
            /* a value the reference rounds (rN) comes with its unrounded twin "<key>_raw": ours
             * is compared with that, within half a unit of the 4th decimal (the coarsest rN), so
             * a value on a rounding boundary is not a failure */
            char rawk[128];
            snprintf(rawk, sizeof rawk, "%s_raw", a->string);
            const cJSON *raw = cJSON_GetObjectItemCaseSensitive(r, rawk);
            if (!b && !cJSON_IsNull(a)) { /* a null the reference writes may be absent in ours */
                mismatch(sub, "missing in our trace");
            } else if (b && raw) {
                g_slack = 5e-5;
                cmp(sub, raw, b);
                g_slack = 0;
            } else if (b) {
                cmp(sub, a, b);
            }
        }
    }
}

/* Our health object of a layer, or of a step. */
static const cJSON *health_of(const cJSON *x) {
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(x, "extensions"),
                                            "health");
}

static const char *const k_cases[] = {"gpt2-tiny.p0",
                                      "gpt2-tiny.p1",
                                      "llama-tiny.p0",
                                      "llama-tiny.p1",
                                      "llama-tiny-tied-bf16.p0",
                                      "llama-tiny-tied-bf16.p1",
                                      "t5-tiny.p0",
                                      "t5-tiny.p1"};

START_TEST(test_end_to_end) {
    const char *name = k_cases[_i];
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/health/%s.json", name);
    cJSON *ref = load_json(path);
    ck_assert_msg(ref, "cannot read %s", path);
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(ref, "steps");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(ref, "generated_ids");
    char G[16];
    snprintf(G, sizeof G, "%d", cJSON_GetArraySize(gen));

    cv_config cfg;
    cv_error err = {0};
    ck_assert_int_eq(cv_config_init(&cfg, &err), CV_OK);
    const char *kv[][2] = {
        {"model.hf_id", cJSON_GetObjectItemCaseSensitive(ref, "hf_id")->valuestring},
        {"device.requested", "cpu"},
        {"generation.max_new_tokens", G},
        {"generation.temperature", "0"},
        {"health.prompt_heads", "true"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        ck_assert_msg(cv_config_set(&cfg, kv[i][0], kv[i][1], &err) == CV_OK, "%s", err.msg);
    ck_assert_msg(cv_config_validate(&cfg, &err) == CV_OK, "%s", err.msg);
    cv_report rep;
    const char *prompt = cJSON_GetObjectItemCaseSensitive(ref, "prompt")->valuestring;
    ck_assert_msg(cv_run(&cfg, prompt, &rep, &err) == CV_OK, "cv_run: %s", err.msg);
    char *text = NULL;
    size_t len = 0;
    ck_assert_int_eq(cv_report_to_json(&rep, 2, &text, &len, &err), CV_OK);
    cJSON *ours = cJSON_Parse(text);
    free(text);
    ck_assert(ours);

    g_fail = 0;
    g_worst = 0;
    g_worst_at[0] = '\0';
    /* tokens first: every later comparison assumes the same continuation */
    const cJSON *og = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ours, "generated"), "token_ids");
    cmp("generated_ids", gen, og);
    ck_assert_msg(g_fail == 0, "%s: the greedy continuation differs", name);

    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(ours, "timeline");
    ck_assert_int_eq(cJSON_GetArraySize(tl), cJSON_GetArraySize(steps));
    char p[256];
    int i = 0;
    for (const cJSON *rs = steps->child, *os = tl->child; rs && os;
         rs = rs->next, os = os->next, i++) {
        snprintf(p, sizeof p, "steps[%d].step_index", i);
        cmp(p, cJSON_GetObjectItemCaseSensitive(rs, "step_index"),
            cJSON_GetObjectItemCaseSensitive(os, "step_index"));
        const cJSON *h = health_of(os);
        static const char *const keys[] = {"entropy_bits", "perplexity", "surprisal_bits",
                                           "top_k_margin", "topk_mass",  "cos_prev"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            snprintf(p, sizeof p, "steps[%d].%s", i, keys[k]);
            cmp(p, cJSON_GetObjectItemCaseSensitive(rs, keys[k]),
                cJSON_GetObjectItemCaseSensitive(h, keys[k]));
        }
        const cJSON *rl = cJSON_GetObjectItemCaseSensitive(rs, "layers");
        const cJSON *ol = cJSON_GetObjectItemCaseSensitive(os, "layers");
        int j = 0;
        for (const cJSON *a = rl->child, *b = ol->child; a && b; a = a->next, b = b->next, j++) {
            snprintf(p, sizeof p, "steps[%d].layers[%d]", i, j);
            cmp(p, a, health_of(b));
        }
    }
    const cJSON *renc = cJSON_GetObjectItemCaseSensitive(ref, "encoder_layers");
    if (renc) {
        const cJSON *oenc = cJSON_GetObjectItemCaseSensitive(ours, "encoder_layers");
        int j = 0;
        for (const cJSON *a = renc->child, *b = oenc ? oenc->child : NULL; a;
             a = a->next, b = b ? b->next : NULL, j++) {
            snprintf(p, sizeof p, "encoder_layers[%d]", j);
            cmp(p, a, health_of(b));
        }
    }
    static const char *const run_keys[] = {"prompt_analysis",  "health_flags",  "risk",
                                           "compound_signals", "early_warning", "fingerprint",
                                           "narrative",        "health_profile"};
    const cJSON *ext = cJSON_GetObjectItemCaseSensitive(ours, "extensions");
    for (size_t k = 0; k < sizeof run_keys / sizeof run_keys[0]; k++)
        cmp(run_keys[k], cJSON_GetObjectItemCaseSensitive(ref, run_keys[k]),
            cJSON_GetObjectItemCaseSensitive(ext, run_keys[k]));
    fprintf(stderr, "%s: worst relative difference %.3g at %s\n", name, g_worst, g_worst_at);
    tu_record_max("end to end (relative)", g_worst);
    ck_assert_msg(g_fail == 0, "%s: %d health values differ from the reference", name, g_fail);

    cJSON_Delete(ours);
    cJSON_Delete(ref);
    cv_report_free(&rep);
    cv_config_free(&cfg);
}
END_TEST

/* ---- 2. our metric code on HF's own tensors ----------------------------------------------- */

static const char *const k_hf_models[] = {"gpt2-tiny", "llama-tiny", "llama-tiny-tied-bf16"};

static void close_hf(const char *what, double got, const cJSON *want) {
    double w = cJSON_IsNumber(want) ? want->valuedouble : NAN;
    double d = fabs(got - w);
    tu_record_max(what, d);
    ck_assert_msg(d <= TOL_HF, "%s: %.17g vs reference %.17g", what, got, w);
}

START_TEST(test_on_hf_tensors) {
    const char *model = k_hf_models[_i];
    char path[512];
    for (int pi = 0; pi < 2; pi++) {
        snprintf(path, sizeof path, "tests/fixtures/health/%s.p%d.json", model, pi);
        cJSON *ref = load_json(path);
        ck_assert_msg(ref, "cannot read %s", path);
        snprintf(path, sizeof path, "tests/fixtures/%s/ref.safetensors", model);
        cv_st *st = NULL;
        cv_error err = {0};
        ck_assert_msg(cv_st_open(path, &st, &err) == CV_OK, "%s", err.msg);
        int V = cJSON_GetObjectItemCaseSensitive(ref, "vocab_size")->valueint;
        int L = cJSON_GetObjectItemCaseSensitive(ref, "num_layers")->valueint;
        int H = cJSON_GetObjectItemCaseSensitive(ref, "num_heads")->valueint;
        char name[64];
        size_t n, P;
        snprintf(name, sizeof name, "p%d.input_ids", pi);
        int32_t *ids = tu_ref_ids(st, name, &P);
        snprintf(name, sizeof name, "p%d.greedy_ids", pi);
        int32_t *gid = tu_ref_ids(st, name, &n);
        snprintf(name, sizeof name, "p%d.greedy_logits", pi);
        float *gl = tu_ref_f32(st, name, &n);
        ck_assert(ids && gid && gl);
        const cJSON *steps = cJSON_GetObjectItemCaseSensitive(ref, "steps");
        double *rec = malloc(sizeof(double) * cv_logits_record_size(10));
        int i = 0;
        /* per-step logit values from HF's raw greedy logits */
        for (const cJSON *s = steps->child; s; s = s->next, i++) {
            const float *row = gl + (size_t)i * V;
            cv_logits_stats_row(rec, row, V, 10);
            cv_logit_health lh;
            cv_logit_health_of(rec, gid[i], row[gid[i]], &lh);
            close_hf("HF entropy_bits", lh.entropy_bits,
                     cJSON_GetObjectItemCaseSensitive(s, "entropy_bits"));
            close_hf("HF surprisal_bits", lh.surprisal_bits,
                     cJSON_GetObjectItemCaseSensitive(s, "surprisal_bits"));
            close_hf("HF top_k_margin", lh.top_k_margin,
                     cJSON_GetObjectItemCaseSensitive(s, "top_k_margin"));
            close_hf("HF topk_mass", lh.topk_mass,
                     cJSON_GetObjectItemCaseSensitive(s, "topk_mass"));
        }
        free(rec);
        /* prompt surprisals: the CPU op on HF's prompt logits */
        snprintf(name, sizeof name, "p%d.logits", pi);
        float *pl = tu_ref_f32(st, name, &n);
        ck_assert(pl && P >= 2);
        cv_backend *be = cv_backend_cpu_create();
        double *lp = malloc(sizeof(double) * P);
        be->target_logprob(be, lp, pl, (int)P - 1, V, ids + 1);
        const cJSON *pa = cJSON_GetObjectItemCaseSensitive(ref, "prompt_analysis");
        const cJSON *psr = cJSON_GetObjectItemCaseSensitive(pa, "prompt_surprisals_raw");
        ck_assert_int_eq(cJSON_GetArraySize(psr), (int)P - 1);
        for (int t = 0; t < (int)P - 1; t++)
            close_hf("HF prompt surprisal", -lp[t] / log(2.0), cJSON_GetArrayItem(psr, t));
        /* step 0's attention: the last query row of each head of HF's prompt attention */
        const cJSON *l0 = cJSON_GetObjectItemCaseSensitive(steps->child, "layers");
        for (int l = 0; l < L; l++) {
            snprintf(name, sizeof name, "p%d.attn.%d", pi, l);
            float *A = tu_ref_f32(st, name, &n);
            ck_assert(A && n == (size_t)H * P * P);
            double *heads = malloc(sizeof(double) * CV_AH_SIZE * (size_t)H);
            double *row = malloc(sizeof(double) * P);
            for (int h = 0; h < H; h++) {
                cv_head_record_reset(heads + (size_t)h * CV_AH_SIZE);
                for (size_t k = 0; k < P; k++) row[k] = A[((size_t)h * P + P - 1) * P + k];
                cv_head_record_add_probs(heads + (size_t)h * CV_AH_SIZE, row, 1, (int)P);
            }
            cv_attn_health ah;
            cv_attn_health_finalize(heads, H, 0.9, &ah);
            const cJSON *ra =
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(l0, l), "attention");
            close_hf("HF attention entropy_mean", ah.entropy_mean,
                     cJSON_GetObjectItemCaseSensitive(ra, "entropy_mean"));
            close_hf("HF attention entropy_mean_normalized", ah.entropy_mean_normalized,
                     cJSON_GetObjectItemCaseSensitive(ra, "entropy_mean_normalized"));
            close_hf("HF attention entropy_min", ah.entropy_min,
                     cJSON_GetObjectItemCaseSensitive(ra, "entropy_min"));
            close_hf("HF attention entropy_max", ah.entropy_max,
                     cJSON_GetObjectItemCaseSensitive(ra, "entropy_max"));
            close_hf("HF attention concentration_max", ah.concentration_max,
                     cJSON_GetObjectItemCaseSensitive(ra, "concentration_max"));
            close_hf("HF attention concentration_min", ah.concentration_min,
                     cJSON_GetObjectItemCaseSensitive(ra, "concentration_min"));
            ck_assert_int_eq(
                ah.collapsed_head_count,
                cJSON_GetObjectItemCaseSensitive(ra, "collapsed_head_count")->valueint);
            ck_assert_int_eq(ah.focused_head_count,
                             cJSON_GetObjectItemCaseSensitive(ra, "focused_head_count")->valueint);
            /* hidden: the clamped l2 of HF's block output l (all P rows at step 0) */
            snprintf(name, sizeof name, "p%d.hidden.%d", pi, l + 1);
            size_t nh;
            float *X = tu_ref_f32(st, name, &nh);
            int C = (int)(nh / P);
            double *hrec = malloc(sizeof(double) * cv_hidden_record_size(C));
            cv_hidden_record_reset(hrec, C);
            cv_hidden_record_add_rows(hrec, X, (int)P, C);
            cv_hidden_health hh;
            cv_hidden_health_finalize(hrec, C, &hh);
            close_hf("HF hidden l2 (clamped)", hh.l2,
                     cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(l0, l), "l2"));
            free(hrec);
            free(X);
            free(heads);
            free(row);
            free(A);
        }
        free(lp);
        be->destroy(be);
        free(pl);
        free(ids);
        free(gid);
        free(gl);
        cv_st_close(st);
        cJSON_Delete(ref);
    }
}
END_TEST

/* ---- 3. edge cases ------------------------------------------------------------------------ */

static const cJSON *edge_case(const cJSON *edge, const char *name) {
    for (const cJSON *c = edge->child; c; c = c->next)
        if (strcmp(cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring, name) == 0) return c;
    ck_abort_msg("edge.json has no case %s", name);
    return NULL;
}

/* edge.json writes NaN as null and infinities as "inf" / "-inf". */
static double edge_num(const cJSON *j) {
    if (cJSON_IsString(j)) return j->valuestring[0] == '-' ? -INFINITY : INFINITY;
    if (cJSON_IsNumber(j)) return j->valuedouble;
    return NAN;
}

static void expect_num(const char *what, double got, const cJSON *want) {
    if (cJSON_IsNull(want) || !want) {
        ck_assert_msg(!isfinite(got), "%s: %.17g, expected null", what, got);
        return;
    }
    double w = edge_num(want);
    if (isinf(w)) {
        ck_assert_msg(got == w, "%s: %.17g vs %g", what, got, w);
        return;
    }
    ck_assert_msg(fabs(got - w) <= TOL_HF, "%s: %.17g vs %.17g", what, got, w);
}

static void expect_int(const char *what, int got, const cJSON *want) {
    int w = cJSON_IsBool(want) ? cJSON_IsTrue(want) : want->valueint;
    ck_assert_msg(got == w, "%s: %d vs %d", what, got, w);
}

static cJSON *g_edge;

static void edge_attention(const char *name) {
    const cJSON *c = edge_case(g_edge, name), *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(in, "shape");
    int H = cJSON_GetArrayItem(shape, 0)->valueint, Q = cJSON_GetArrayItem(shape, 1)->valueint,
        K = cJSON_GetArrayItem(shape, 2)->valueint;
    double focus = cJSON_GetObjectItemCaseSensitive(in, "focus_threshold")->valuedouble;
    /* A is nested [H][Q][K] */
    double *A = malloc(sizeof(double) * (size_t)H * Q * K);
    size_t at = 0;
    for (const cJSON *h = cJSON_GetObjectItemCaseSensitive(in, "A")->child; h; h = h->next)
        for (const cJSON *q = h->child; q; q = q->next)
            for (const cJSON *k = q->child; k; k = k->next) A[at++] = edge_num(k);
    ck_assert_int_eq((int)at, H * Q * K);
    double *heads = malloc(sizeof(double) * CV_AH_SIZE * (size_t)H);
    for (int h = 0; h < H; h++) {
        cv_head_record_reset(heads + (size_t)h * CV_AH_SIZE);
        cv_head_record_add_probs(heads + (size_t)h * CV_AH_SIZE, A + (size_t)h * Q * K, Q, K);
    }
    cv_attn_health ah;
    cv_attn_health_finalize(heads, H, focus, &ah);
    char w[128];
#define EXP(field)                                                                                 \
    snprintf(w, sizeof w, "%s " #field, name);                                                     \
    expect_num(w, ah.field, cJSON_GetObjectItemCaseSensitive(ex, #field))
    EXP(entropy_mean);
    EXP(entropy_mean_normalized);
    EXP(entropy_min);
    EXP(entropy_max);
    EXP(concentration_max);
    EXP(concentration_min);
    EXP(collapsed_head_rate);
#undef EXP
    expect_int(name, ah.collapsed_head_count,
               cJSON_GetObjectItemCaseSensitive(ex, "collapsed_head_count"));
    expect_int(name, ah.focused_head_count,
               cJSON_GetObjectItemCaseSensitive(ex, "focused_head_count"));
    expect_int(name, ah.valid, cJSON_GetObjectItemCaseSensitive(ex, "valid"));
    expect_int(name, ah.has_nan, cJSON_GetObjectItemCaseSensitive(ex, "has_nan"));
    free(A);
    free(heads);
}

START_TEST(test_edge_attention) {
    edge_attention("attention_k1");
    edge_attention("attention_nan_row");
    edge_attention("attention_unnormalized");
    edge_attention("attention_collapsed_and_focused");
}
END_TEST

static void edge_logits(const char *name) {
    const cJSON *c = edge_case(g_edge, name), *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
    const cJSON *lj = cJSON_GetObjectItemCaseSensitive(in, "logits");
    int V = cJSON_GetArraySize(lj), y = cJSON_GetObjectItemCaseSensitive(in, "token_id")->valueint;
    float *l = malloc(sizeof(float) * (size_t)V);
    int i = 0;
    for (const cJSON *x = lj->child; x; x = x->next) l[i++] = (float)edge_num(x);
    double *rec = malloc(sizeof(double) * cv_logits_record_size(10));
    cv_logits_stats_row(rec, l, V, 10);
    cv_logit_health lh;
    cv_logit_health_of(rec, y, y >= 0 && y < V ? l[y] : 0.0f, &lh);
    char w[128];
#define EXP(field)                                                                                 \
    snprintf(w, sizeof w, "%s " #field, name);                                                     \
    expect_num(w, lh.field, cJSON_GetObjectItemCaseSensitive(ex, #field))
    EXP(entropy_bits);
    EXP(perplexity);
    EXP(surprisal_bits);
    EXP(top_k_margin);
    EXP(topk_mass);
#undef EXP
    expect_int(name, lh.nan, cJSON_GetObjectItemCaseSensitive(ex, "logits_nan"));
    expect_int(name, lh.inf, cJSON_GetObjectItemCaseSensitive(ex, "logits_inf"));
    free(l);
    free(rec);
}

START_TEST(test_edge_logits) {
    edge_logits("logits_tied_top2");
    edge_logits("logits_neg_inf");
    edge_logits("logits_nan");
    edge_logits("logits_pos_inf");
    edge_logits("logits_v1");
}
END_TEST

static void edge_hidden(const char *name) {
    const cJSON *c = edge_case(g_edge, name), *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
    const cJSON *X = cJSON_GetObjectItemCaseSensitive(in, "X");
    int S = cJSON_GetArraySize(X), D = cJSON_GetArraySize(X->child);
    float *x = malloc(sizeof(float) * (size_t)S * D);
    size_t at = 0;
    for (const cJSON *r = X->child; r; r = r->next)
        for (const cJSON *v = r->child; v; v = v->next) x[at++] = (float)edge_num(v);
    double *rec = malloc(sizeof(double) * cv_hidden_record_size(D));
    cv_hidden_record_reset(rec, D);
    cv_hidden_record_add_rows(rec, x, S, D);
    cv_hidden_health hh;
    cv_hidden_health_finalize(rec, D, &hh);
    char w[128];
    snprintf(w, sizeof w, "%s clip_fraction", name);
    expect_num(w, hh.clip_fraction, cJSON_GetObjectItemCaseSensitive(ex, "clip_fraction"));
    snprintf(w, sizeof w, "%s clip_max_before", name);
    /* the trace writes an infinite max as null, like the reference */
    expect_num(w, hh.clip_max_before, cJSON_GetObjectItemCaseSensitive(ex, "clip_max_before"));
    snprintf(w, sizeof w, "%s l2", name);
    expect_num(w, hh.l2, cJSON_GetObjectItemCaseSensitive(ex, "l2"));
    expect_int(name, hh.clipped, cJSON_GetObjectItemCaseSensitive(ex, "clipped"));
    expect_int(name, hh.has_nan, cJSON_GetObjectItemCaseSensitive(ex, "has_nan"));
    expect_int(name, hh.has_inf, cJSON_GetObjectItemCaseSensitive(ex, "has_inf"));
    free(x);
    free(rec);
}

START_TEST(test_edge_hidden) {
    edge_hidden("hidden_plain");
    edge_hidden("hidden_clip_inf");
    edge_hidden("hidden_clip_nan");
}
END_TEST

START_TEST(test_edge_cos_zero_vector) {
    const cJSON *c = edge_case(g_edge, "cos_prev_zero_vector");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(in, "a");
    const cJSON *jb = cJSON_GetObjectItemCaseSensitive(in, "b");
    int C = cJSON_GetArraySize(ja);
    float *a = malloc(sizeof(float) * (size_t)C), *b = malloc(sizeof(float) * (size_t)C);
    for (int i = 0; i < C; i++) {
        a[i] = (float)edge_num(cJSON_GetArrayItem(ja, i));
        b[i] = (float)edge_num(cJSON_GetArrayItem(jb, i));
    }
    cv_backend *be = cv_backend_cpu_create();
    double acc = 0.0;
    be->row_cos(be, &acc, a, b, 1, C);
    expect_num(
        "cos of a zero vector", acc,
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "expect"), "cos"));
    be->destroy(be);
    free(a);
    free(b);
}
END_TEST

/* ---- run-level rules on the reference's constructed series -------------------------------- */

/* A run of the default profile fed `n` steps: per-step values from the named series of `in`
 * (absent ones benign), layers from `layer_fn`. */
typedef void (*layer_fn)(const cJSON *in, int step, int L, cv_health_layer_step *out);

static double series_at(const cJSON *in, const char *name, int i, double dflt) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(in, name);
    return a ? edge_num(cJSON_GetArrayItem(a, i)) : dflt;
}

static cJSON *run_series(const cJSON *in, int n, int L, int H, int P, layer_fn lf) {
    cv_health_run *r = cv_health_run_new(cv_health_profile_for("EdgeCase"), L, H, P);
    ck_assert_ptr_nonnull(r);
    const cJSON *bas = cJSON_GetObjectItemCaseSensitive(in, "basin_scores");
    if (cJSON_GetArraySize(bas) > 0) {
        int bl = cJSON_GetArraySize(bas), bh = cJSON_GetArraySize(bas->child);
        double *b = malloc(sizeof(double) * (size_t)bl * bh);
        for (int l = 0; l < bl; l++)
            for (int h = 0; h < bh; h++)
                b[l * bh + h] = cJSON_GetArrayItem(cJSON_GetArrayItem(bas, l), h)->valuedouble;
        ck_assert_int_eq(cv_health_run_set_basins(r, b, bl, bh), 0);
        free(b);
    }
    cv_health_layer_step *ls = calloc((size_t)L, sizeof *ls);
    for (int i = 0; i < n; i++) {
        cv_health_step st = {.step_index = P + i, .token_text = "x"};
        st.entropy_bits = series_at(in, "entropy_bits", i, 1.0);
        st.perplexity = pow(2.0, st.entropy_bits);
        st.top_k_margin = series_at(in, "top_k_margin", i, 0.5);
        st.surprisal_bits = series_at(in, "surprisal_bits", i, 1.0);
        st.topk_mass = series_at(in, "topk_mass", i, 0.9);
        st.cos_prev = series_at(in, "cos_prev", i, NAN);
        for (int l = 0; l < L; l++) {
            ls[l] = (cv_health_layer_step){.l2 = 10.0, .attn_valid = 1, .entropy_mean = 1.0};
            if (lf) lf(in, i, l, &ls[l]);
        }
        ck_assert_int_eq(cv_health_run_add_step(r, &st, ls), 0);
    }
    free(ls);
    cJSON *ext = cJSON_CreateObject();
    ck_assert_int_eq(cv_health_finish(r, "edge", "edge", ext), 0);
    cv_health_run_free(r);
    /* through our writer and back, so numbers compare as the trace carries them */
    cv_report rep;
    cv_error err = {0};
    ck_assert_int_eq(cv_report_init(&rep, &err), CV_OK);
    rep.extensions = ext;
    char *text = NULL;
    size_t len;
    ck_assert_int_eq(cv_report_to_json(&rep, 0, &text, &len, &err), CV_OK);
    cJSON *doc = cJSON_Parse(text);
    free(text);
    cv_report_free(&rep);
    cJSON *out = cJSON_DetachItemFromObjectCaseSensitive(doc, "extensions");
    cJSON_Delete(doc);
    return out;
}

static void expect_json(const char *what, const cJSON *want, const cJSON *got) {
    g_fail = 0;
    cmp(what, want, got);
    ck_assert_msg(g_fail == 0, "%s differs from the reference", what);
}

START_TEST(test_edge_repetition) {
    static const char *const names[] = {"repetition_series", "repetition_nan_resets"};
    for (int k = 0; k < 2; k++) {
        const cJSON *c = edge_case(g_edge, names[k]);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(in, "cos_prev"));
        int P = cJSON_GetObjectItemCaseSensitive(in, "prompt_tokens")->valueint;
        cJSON *ext = run_series(in, n, 1, 1, P, NULL);
        const cJSON *fl = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
        for (const cJSON *e = ex->child; e; e = e->next)
            expect_json(e->string, e, cJSON_GetObjectItemCaseSensitive(fl, e->string));
        cJSON_Delete(ext);
    }
}
END_TEST

static void collapse_layers(const cJSON *in, int step, int l, cv_health_layer_step *out) {
    const cJSON *cc =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(in, "collapsed_counts"), step);
    out->collapsed_heads = cJSON_GetArrayItem(cc, l)->valueint;
    out->attn_valid =
        cJSON_IsTrue(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(in, "valid"), step));
    if (!out->attn_valid) out->collapsed_heads = 0;
}

START_TEST(test_edge_collapse) {
    static const char *const names[] = {"collapse_trend_not_catastrophic", "collapse_trend_low",
                                        "collapse_catastrophic", "collapse_dev_boundary"};
    for (int k = 0; k < 4; k++) {
        const cJSON *c = edge_case(g_edge, names[k]);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
        const cJSON *cc = cJSON_GetObjectItemCaseSensitive(in, "collapsed_counts");
        int n = cJSON_GetArraySize(cc), L = cJSON_GetArraySize(cc->child);
        int H = cJSON_GetObjectItemCaseSensitive(in, "num_heads")->valueint;
        cJSON *ext = run_series(in, n, L, H, 5, collapse_layers);
        const cJSON *fl = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
        char what[128];
        snprintf(what, sizeof what, "%s detected", names[k]);
        expect_json(what, cJSON_GetObjectItemCaseSensitive(ex, "attention_collapse_detected"),
                    cJSON_GetObjectItemCaseSensitive(fl, "attention_collapse_detected"));
        snprintf(what, sizeof what, "%s severity", names[k]);
        expect_json(what, cJSON_GetObjectItemCaseSensitive(ex, "attention_collapse_severity"),
                    cJSON_GetObjectItemCaseSensitive(fl, "attention_collapse_severity"));
        snprintf(what, sizeof what, "%s detail", names[k]);
        expect_json(what, cJSON_GetObjectItemCaseSensitive(ex, "detail"),
                    cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ext, "risk"),
                                                     "attention_collapse_detail"));
        cJSON_Delete(ext);
    }
}
END_TEST

START_TEST(test_edge_risk_and_early_warning) {
    const cJSON *c = edge_case(g_edge, "risk_v2_series");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(in, "entropy_bits"));
    cJSON *ext = run_series(in, n, 2, 4, 5, NULL);
    const cJSON *risk = cJSON_GetObjectItemCaseSensitive(ext, "risk");
    const cJSON *ew = cJSON_GetObjectItemCaseSensitive(ext, "early_warning");
    expect_json("risk_score", cJSON_GetObjectItemCaseSensitive(ex, "risk_score"),
                cJSON_GetObjectItemCaseSensitive(risk, "risk_score"));
    expect_json("risk_factors", cJSON_GetObjectItemCaseSensitive(ex, "risk_factors"),
                cJSON_GetObjectItemCaseSensitive(risk, "risk_factors"));
    expect_json("failure_risk", cJSON_GetObjectItemCaseSensitive(ex, "failure_risk"),
                cJSON_GetObjectItemCaseSensitive(ew, "failure_risk"));
    expect_json("warning_signals", cJSON_GetObjectItemCaseSensitive(ex, "warning_signals"),
                cJSON_GetObjectItemCaseSensitive(ew, "warning_signals"));
    cJSON_Delete(ext);
}
END_TEST

static void compound_layers(const cJSON *in, int step, int l, cv_health_layer_step *out) {
    (void)step, (void)l;
    out->collapsed_heads = cJSON_GetObjectItemCaseSensitive(in, "collapsed_head_count")->valueint;
    out->focused_heads = cJSON_GetObjectItemCaseSensitive(in, "focused_head_count")->valueint;
}

START_TEST(test_edge_compound_signals) {
    static const char *const names[] = {"compound_series", "compound_confident_repetition"};
    for (int k = 0; k < 2; k++) {
        const cJSON *c = edge_case(g_edge, names[k]);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(in, "entropy_bits"));
        int L = cJSON_GetObjectItemCaseSensitive(in, "num_layers")->valueint;
        cJSON *ext = run_series(in, n, L, 8, 5, compound_layers);
        expect_json(names[k], cJSON_GetObjectItemCaseSensitive(ex, "compound_signals"),
                    cJSON_GetObjectItemCaseSensitive(ext, "compound_signals"));
        cJSON_Delete(ext);
    }
}
END_TEST

static void blame_layers(const cJSON *in, int step, int l, cv_health_layer_step *out) {
    const cJSON *x = cJSON_GetArrayItem(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(in, "steps"), step), l);
    out->l2 = cJSON_GetObjectItemCaseSensitive(x, "l2")->valuedouble;
    out->collapsed_heads = cJSON_GetObjectItemCaseSensitive(x, "collapsed_head_count")->valueint;
    out->has_nan = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "has_nan"));
    out->has_inf = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "has_inf"));
    out->attn_valid = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "valid"));
}

START_TEST(test_edge_blame_and_mid_layer) {
    const cJSON *c = edge_case(g_edge, "blame_and_mid_layer");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "expect");
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(in, "steps"));
    int L = cJSON_GetObjectItemCaseSensitive(in, "num_layers")->valueint;
    cJSON *ext = run_series(in, n, L, 4, 5, blame_layers);
    expect_json("blamed_layers", cJSON_GetObjectItemCaseSensitive(ex, "blamed_layers"),
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ext, "risk"),
                                                 "blamed_layers"));
    expect_json(
        "mid_layer_anomaly_detected",
        cJSON_GetObjectItemCaseSensitive(ex, "mid_layer_anomaly_detected"),
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ext, "health_flags"),
                                         "mid_layer_anomaly_detected"));
    cJSON_Delete(ext);
}
END_TEST

START_TEST(test_edge_prompt_hash) {
    const cJSON *c = edge_case(g_edge, "prompt_hash_unicode");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    char h[65];
    ck_assert_int_eq(
        cv_health_prompt_hash(cJSON_GetObjectItemCaseSensitive(in, "prompt")->valuestring,
                              cJSON_GetObjectItemCaseSensitive(in, "hf_id")->valuestring, h),
        0);
    ck_assert_str_eq(h, cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(c, "expect"), "prompt_hash")
                            ->valuestring);
}
END_TEST

static void edge_setup(void) {
    g_edge = load_json("tests/fixtures/health/edge.json");
    ck_assert_msg(g_edge, "cannot read tests/fixtures/health/edge.json");
}
static void edge_teardown(void) {
    cJSON_Delete(g_edge);
}

int main(void) {
    Suite *s = suite_create("health_ref");
    TCase *e2e = tcase_create("end_to_end");
    tcase_set_timeout(e2e, 120);
    tcase_add_loop_test(e2e, test_end_to_end, 0, (int)(sizeof k_cases / sizeof k_cases[0]));
    tcase_add_loop_test(e2e, test_on_hf_tensors, 0,
                        (int)(sizeof k_hf_models / sizeof k_hf_models[0]));
    suite_add_tcase(s, e2e);
    TCase *edge = tcase_create("edge");
    tcase_add_checked_fixture(edge, edge_setup, edge_teardown);
    tcase_add_test(edge, test_edge_attention);
    tcase_add_test(edge, test_edge_logits);
    tcase_add_test(edge, test_edge_hidden);
    tcase_add_test(edge, test_edge_cos_zero_vector);
    tcase_add_test(edge, test_edge_repetition);
    tcase_add_test(edge, test_edge_collapse);
    tcase_add_test(edge, test_edge_risk_and_early_warning);
    tcase_add_test(edge, test_edge_compound_signals);
    tcase_add_test(edge, test_edge_blame_and_mid_layer);
    tcase_add_test(edge, test_edge_prompt_hash);
    suite_add_tcase(s, edge);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    tu_print_max("health_ref");
    return failed ? 1 : 0;
}
