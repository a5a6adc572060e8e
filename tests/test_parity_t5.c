/* test_parity_t5.c — T5ForConditionalGeneration (src/model/t5.c) against Hugging Face
 * transformers (fp32, eager attention) on the tiny fixtures tests/fixtures/t5-tiny (relu FF, tied
 * lm_head with the d_model^-0.5 rescale) and t5v11-tiny (gated-gelu FF, untied lm_head, inner
 * attention width 96 != d_model 64, 3 decoder layers vs 2 encoder layers).
 *
 * For every prompt of every fixture:
 *   - encoder: every hidden state and attention probability tensor, and the statistics fused
 *     into encode() against cv_hidden_stats_ref / cv_attn_stats_ref on HF's tensors;
 *   - teacher-forced decoder pass (decoder_input_ids = [start] + greedy_ids[:-1], all G tokens at
 *     once from position 0): every decoder hidden state, self- and cross-attention
 *     probabilities, logits, and the fused statistics of that pass;
 *   - greedy decoding one token per call with the self-attention KV cache (cross K/V from
 *     encode()): identical tokens, per-step logits equal to HF's, every step's fused statistics
 *     equal to those of HF's rows, and the cached decode equal to the teacher-forced full pass.
 * End to end (cv_run on t5-tiny, greedy): a seq2seq trace that passes the trace validator, with
 * encoder_layers and per-step cross_attention whose numbers match HF's tensors. Also: the
 * "scale_decoder_outputs" config key (transformers >= 5.17) overriding tie_word_embeddings, and
 * misuse (decode before encode, prompt or position beyond the reserved sizes) reported as errors.
 * Tolerance: TOL_ABS absolute on every tensor (fp32, different summation order). */
#define _DEFAULT_SOURCE /* realpath, symlink */
#include "corevital/config.h"
#include "corevital/model.h"
#include "corevital/report.h"
#include "corevital/run.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL_ABS    1e-4
#define TOL_CACHE  2e-5 /* KV-cache decode vs the full pass of the same code */
#define SKETCH_DIM 32

typedef struct {
    cv_backend *be;
    cv_model *m;
    cv_st *ref;
    int n_prompts;
    const char *name;
} fixture;

static void fixture_open(fixture *f, const char *name) {
    cv_error err = {0};
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    f->name = name;
    f->be = cv_backend_cpu_create();
    ck_assert_ptr_nonnull(f->be);
    cv_status s = cv_model_load(dir, f->be, &f->m, &err);
    ck_assert_msg(s == CV_OK, "load %s: %s", dir, err.msg);
    ck_assert_ptr_nonnull(f->m->ops->encode);
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    s = cv_st_open(path, &f->ref, &err);
    ck_assert_msg(s == CV_OK, "open %s: %s", path, err.msg);
    const char *np = cv_st_metadata(f->ref, "num_prompts");
    f->n_prompts = np ? atoi(np) : 0;
    ck_assert_int_gt(f->n_prompts, 0);
}

static void fixture_close(fixture *f) {
    cv_model_free(f->m);
    cv_st_close(f->ref);
    f->be->destroy(f->be);
}

/* A reference tensor by formatted name, checked to hold expect_n values (caller frees). */
static float *ref_f32(fixture *f, size_t expect_n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static float *ref_f32(fixture *f, size_t expect_n, const char *fmt, ...) {
    char key[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    size_t n = 0;
    float *x = tu_ref_f32(f->ref, key, &n);
    ck_assert_msg(x != NULL, "%s: reference tensor %s missing", f->name, key);
    ck_assert_msg(n == expect_n, "%s: reference %s has %zu values, expected %zu", f->name, key, n,
                  expect_n);
    return x;
}

static void compare(fixture *f, const char *kind, const char *what, const float *got,
                    const float *want, size_t n, double tol) {
    char label[200];
    snprintf(label, sizeof label, "%s %s", f->name, what);
    tu_record_max(kind, tu_compare(got, want, n).max_abs);
    ck_assert_msg(tu_check_close(label, got, want, n, tol), "%s", label);
}

/* Fused hidden-state record vs the statistics of HF's tensor X (S, C). */
static void check_hidden_record(fixture *f, const double *rec, const float *X, int S,
                                const cv_sketch *sk, const char *what) {
    int C = f->m->cfg.hidden_size;
    cv_hidden_stats got, want;
    cv_hidden_finalize(rec, C, sk, &got);
    cv_hidden_stats_ref(X, S, C, sk, &want);
    double e =
        fmax(fmax(fabs(got.mean - want.mean), fabs(got.std - want.std)),
             fmax(fabs(got.l2_norm_mean - want.l2_norm_mean), fabs(got.max_abs - want.max_abs)));
    tu_record_max("hidden stats vs HF tensors", e);
    ck_assert_msg(e < TOL_ABS, "%s %s: hidden stats differ by %g", f->name, what, e);
    for (int j = 0; j < SKETCH_DIM; j++)
        ck_assert_msg(fabs(got.sketch[j] - want.sketch[j]) <= 0.0101, "%s %s: sketch[%d] %g vs %g",
                      f->name, what, j, got.sketch[j], want.sketch[j]);
}

/* Fused attention record vs the statistics of HF's probabilities A (rows, K). */
static void check_attn_record(fixture *f, const double *rec, const float *A, int rows, int K,
                              const char *kind, const char *what) {
    cv_attn_stats got, want;
    cv_attn_finalize(rec, &got);
    cv_attn_stats_ref(A, rows, K, &want);
    double e = fmax(fabs(got.entropy_mean - want.entropy_mean),
                    fmax(fabs(got.entropy_min - want.entropy_min),
                         fabs(got.concentration_max - want.concentration_max)));
    tu_record_max(kind, e);
    ck_assert_msg(e < TOL_ABS, "%s %s: attention stats differ by %g", f->name, what, e);
}

static void check_logits_record(fixture *f, const double *rec, const float *row, const char *what) {
    cv_logit_stats got, want;
    cv_logits_finalize(rec, &got);
    cv_logits_stats_ref(row, f->m->cfg.vocab_size, 5, &want);
    double e = fmax(fabs(got.entropy - want.entropy), fabs(got.margin - want.margin));
    for (int i = 0; i < 5; i++) e = fmax(e, fabs(got.probs[i] - want.probs[i]));
    tu_record_max("logits stats vs HF tensors", e);
    ck_assert_msg(e < TOL_ABS, "%s %s: logits stats differ by %g", f->name, what, e);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(got.ids[i], want.ids[i]);
}

/* Encoder: hidden states, attention probabilities and fused statistics. */
static void check_encoder(fixture *f, int p, const int32_t *ids, int P, const cv_sketch *sk) {
    const cv_model_config *c = &f->m->cfg;
    const int L = c->num_layers, C = c->hidden_size, H = c->num_heads;
    char what[160];
    float **hidden = calloc((size_t)L + 1, sizeof *hidden),
          **attn = calloc((size_t)L, sizeof *attn);
    for (int j = 0; j <= L; j++) hidden[j] = malloc(sizeof(float) * P * C);
    for (int l = 0; l < L; l++) attn[l] = malloc(sizeof(float) * H * P * P);
    cv_capture cap = {.hidden = hidden, .attn = attn, .cross = NULL};
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 0, 1);
    double *stats = malloc(sizeof(double) * lay.total);
    cv_stats_arena_reset(stats, &lay);
    cv_error err = {0};
    cv_status s = f->m->ops->encode(f->m, ids, P, stats, &lay, &cap, &err);
    ck_assert_msg(s == CV_OK, "%s encode: %s", f->name, err.msg);
    ck_assert_int_eq(f->m->enc_len, P);

    for (int j = 0; j <= L; j++) {
        float *want = ref_f32(f, (size_t)P * C, "p%d.enc_hidden.%d", p, j);
        snprintf(what, sizeof what, "p%d enc_hidden.%d", p, j);
        compare(f, "encoder hidden states", what, hidden[j], want, (size_t)P * C, TOL_ABS);
        if (j > 0) check_hidden_record(f, cv_stats_hidden(stats, &lay, j - 1), want, P, sk, what);
        free(want);
    }
    for (int l = 0; l < L; l++) {
        float *want = ref_f32(f, (size_t)H * P * P, "p%d.enc_attn.%d", p, l);
        snprintf(what, sizeof what, "p%d enc_attn.%d", p, l);
        compare(f, "encoder attention probs", what, attn[l], want, (size_t)H * P * P, TOL_ABS);
        check_attn_record(f, cv_stats_attn(stats, &lay, l), want, H * P, P,
                          "encoder attn stats vs HF", what);
        free(want);
    }
    for (int j = 0; j <= L; j++) free(hidden[j]);
    for (int l = 0; l < L; l++) free(attn[l]);
    free(hidden);
    free(attn);
    free(stats);
}

/* Teacher-forced decoder pass over all G decoder inputs at once. Returns the (G, V) logits. */
static float *check_teacher_forced(fixture *f, int p, const int32_t *dec_in, int G, int P,
                                   const cv_sketch *sk) {
    const cv_model_config *c = &f->m->cfg;
    const int L = c->num_decoder_layers, C = c->hidden_size, H = c->num_heads, V = c->vocab_size;
    char what[160];
    float **hidden = calloc((size_t)L + 1, sizeof *hidden),
          **attn = calloc((size_t)L, sizeof *attn), **cross = calloc((size_t)L, sizeof *cross);
    for (int j = 0; j <= L; j++) hidden[j] = malloc(sizeof(float) * G * C);
    for (int l = 0; l < L; l++) {
        attn[l] = malloc(sizeof(float) * H * G * G);
        cross[l] = malloc(sizeof(float) * H * G * P);
    }
    cv_capture cap = {.hidden = hidden, .attn = attn, .cross = cross};
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 1, 5);
    double *stats = malloc(sizeof(double) * lay.total);
    cv_stats_arena_reset(stats, &lay);
    cv_error err = {0};
    float *logits;
    cv_status s = f->m->ops->forward(f->m, dec_in, G, 0, stats, &lay, &cap, 1, &logits, &err);
    ck_assert_msg(s == CV_OK, "%s forward: %s", f->name, err.msg);
    float *out = malloc(sizeof(float) * G * V);
    memcpy(out, logits, sizeof(float) * G * V);

    float *want = ref_f32(f, (size_t)G * V, "p%d.dec_logits", p);
    snprintf(what, sizeof what, "p%d dec_logits", p);
    compare(f, "decoder logits", what, out, want, (size_t)G * V, TOL_ABS);
    check_logits_record(f, cv_stats_logits(stats, &lay), want + (size_t)(G - 1) * V, what);
    free(want);
    for (int j = 0; j <= L; j++) {
        want = ref_f32(f, (size_t)G * C, "p%d.dec_hidden.%d", p, j);
        snprintf(what, sizeof what, "p%d dec_hidden.%d", p, j);
        compare(f, "decoder hidden states", what, hidden[j], want, (size_t)G * C, TOL_ABS);
        if (j > 0) check_hidden_record(f, cv_stats_hidden(stats, &lay, j - 1), want, G, sk, what);
        free(want);
    }
    for (int l = 0; l < L; l++) {
        want = ref_f32(f, (size_t)H * G * G, "p%d.dec_attn.%d", p, l);
        snprintf(what, sizeof what, "p%d dec_attn.%d", p, l);
        compare(f, "decoder self-attention probs", what, attn[l], want, (size_t)H * G * G, TOL_ABS);
        check_attn_record(f, cv_stats_attn(stats, &lay, l), want, H * G, G,
                          "decoder attn stats vs HF", what);
        free(want);
        want = ref_f32(f, (size_t)H * G * P, "p%d.cross_attn.%d", p, l);
        snprintf(what, sizeof what, "p%d cross_attn.%d", p, l);
        compare(f, "cross-attention probs", what, cross[l], want, (size_t)H * G * P, TOL_ABS);
        check_attn_record(f, cv_stats_cross(stats, &lay, l), want, H * G, P,
                          "cross attn stats vs HF", what);
        free(want);
    }
    for (int j = 0; j <= L; j++) free(hidden[j]);
    for (int l = 0; l < L; l++) {
        free(attn[l]);
        free(cross[l]);
    }
    free(hidden);
    free(attn);
    free(cross);
    free(stats);
    return out;
}

/* Step i's slice of HF's teacher-forced tensors: row i of every head of A (H, G, K), first n keys.
 */
static void head_rows(const float *A, int H, int G, int K, int i, int n, float *out) {
    for (int h = 0; h < H; h++)
        memcpy(out + (size_t)h * n, A + ((size_t)h * G + i) * K, sizeof(float) * n);
}

/* Greedy decoding, one token per call with the KV cache, with one step's stats arena as
 * generate.c uses it. */
static void check_greedy(fixture *f, int p, const int32_t *gref, const float *glog,
                         const float *tf_logits, int G, int P, const cv_sketch *sk) {
    const cv_model_config *c = &f->m->cfg;
    const int L = c->num_decoder_layers, C = c->hidden_size, H = c->num_heads, V = c->vocab_size;
    char what[160];
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 1, 5);
    double *stats = malloc(sizeof(double) * lay.total);
    float *step_logits = malloc(sizeof(float) * G * V),
          *rows = malloc(sizeof(float) * H * (G > P ? G : P));
    float **hid = calloc((size_t)L, sizeof *hid), **sat = calloc((size_t)L, sizeof *sat),
          **cat = calloc((size_t)L, sizeof *cat);
    for (int l = 0; l < L; l++) {
        hid[l] = ref_f32(f, (size_t)G * C, "p%d.dec_hidden.%d", p, l + 1);
        sat[l] = ref_f32(f, (size_t)H * G * G, "p%d.dec_attn.%d", p, l);
        cat[l] = ref_f32(f, (size_t)H * G * P, "p%d.cross_attn.%d", p, l);
    }
    int32_t cur = c->decoder_start_token_id;
    cv_error err = {0};
    for (int i = 0; i < G; i++) {
        cv_stats_arena_reset(stats, &lay);
        float *logits;
        cv_status s = f->m->ops->forward(f->m, &cur, 1, i, stats, &lay, NULL, 0, &logits, &err);
        ck_assert_msg(s == CV_OK, "%s step %d: %s", f->name, i, err.msg);
        memcpy(step_logits + (size_t)i * V, logits, sizeof(float) * V);
        int32_t next = f->m->be->argmax(f->m->be, logits, V);
        ck_assert_msg(next == gref[i], "%s p%d greedy token %d: got %d, want %d", f->name, p, i,
                      next, gref[i]);
        for (int l = 0; l < L; l++) {
            snprintf(what, sizeof what, "p%d step %d layer %d", p, i, l);
            check_hidden_record(f, cv_stats_hidden(stats, &lay, l), hid[l] + (size_t)i * C, 1, sk,
                                what);
            head_rows(sat[l], H, G, G, i, i + 1, rows);
            check_attn_record(f, cv_stats_attn(stats, &lay, l), rows, H, i + 1,
                              "decoder attn stats vs HF", what);
            head_rows(cat[l], H, G, P, i, P, rows);
            check_attn_record(f, cv_stats_cross(stats, &lay, l), rows, H, P,
                              "cross attn stats vs HF", what);
        }
        snprintf(what, sizeof what, "p%d step %d logits", p, i);
        check_logits_record(f, cv_stats_logits(stats, &lay), glog + (size_t)i * V, what);
        cur = next;
    }
    snprintf(what, sizeof what, "p%d greedy per-step logits", p);
    compare(f, "greedy step logits", what, step_logits, glog, (size_t)G * V, TOL_ABS);
    snprintf(what, sizeof what, "p%d KV-cache decode vs teacher-forced pass", p);
    compare(f, "cache vs full pass", what, step_logits, tf_logits, (size_t)G * V, TOL_CACHE);
    for (int l = 0; l < L; l++) {
        free(hid[l]);
        free(sat[l]);
        free(cat[l]);
    }
    free(hid);
    free(sat);
    free(cat);
    free(rows);
    free(step_logits);
    free(stats);
}

static void run_fixture(const char *name) {
    fixture f;
    fixture_open(&f, name);
    const cv_model_config *c = &f.m->cfg;
    ck_assert_int_eq(cv_model_num_layers(f.m), c->num_decoder_layers);
    cv_sketch sk;
    ck_assert_int_eq(cv_sketch_init(&sk, c->hidden_size, SKETCH_DIM, 0), 0);
    char key[128];
    for (int p = 0; p < f.n_prompts; p++) {
        size_t P, G, GD;
        int32_t *ids = tu_ref_ids(f.ref, (snprintf(key, sizeof key, "p%d.input_ids", p), key), &P);
        int32_t *gref =
            tu_ref_ids(f.ref, (snprintf(key, sizeof key, "p%d.greedy_ids", p), key), &G);
        ck_assert(ids && gref && P > 0 && G > 0);
        float *glog = ref_f32(&f, G * (size_t)c->vocab_size, "p%d.greedy_logits", p);
        /* decoder_input_ids of the teacher-forced pass: [start] + greedy_ids[:-1] */
        int32_t *dec_in = malloc(sizeof(int32_t) * G);
        dec_in[0] = c->decoder_start_token_id;
        for (size_t i = 1; i < G; i++) dec_in[i] = gref[i - 1];
        int32_t *dref =
            tu_ref_ids(f.ref, (snprintf(key, sizeof key, "p%d.dec_input_ids", p), key), &GD);
        if (dref) { /* the fixture's own record of what HF was fed, when present */
            ck_assert_int_eq((int)GD, (int)G);
            for (size_t i = 0; i < G; i++) ck_assert_int_eq(dref[i], dec_in[i]);
            free(dref);
        }
        cv_error err = {0};
        int maxT = (int)(P > G ? P : G);
        ck_assert_int_eq(f.m->ops->reserve(f.m, maxT, (int)G, (int)G, &err), CV_OK);
        check_encoder(&f, p, ids, (int)P, &sk);
        float *tf = check_teacher_forced(&f, p, dec_in, (int)G, (int)P, &sk);
        check_greedy(&f, p, gref, glog, tf, (int)G, (int)P, &sk);
        free(tf);
        free(dec_in);
        free(glog);
        free(ids);
        free(gref);
    }
    cv_sketch_free(&sk);
    fixture_close(&f);
}

START_TEST(test_t5_tiny_relu_tied) {
    run_fixture("t5-tiny");
}
END_TEST
START_TEST(test_t5v11_tiny_gated_untied) {
    run_fixture("t5v11-tiny");
}
END_TEST

/* Misuse is reported, not crashed on: decoding before encode(), a prompt longer than the
 * reserved encoder capacity, a decoder position past the KV cache. */
START_TEST(test_t5_errors) {
    fixture f;
    fixture_open(&f, "t5-tiny");
    cv_error err = {0};
    int32_t ids[8] = {5, 6, 7, 8, 9, 10, 11, 1};
    float *logits;
    ck_assert_int_eq(f.m->ops->reserve(f.m, 4, 4, 1, &err), CV_OK);
    ck_assert_int_ne(f.m->ops->forward(f.m, ids, 1, 0, NULL, NULL, NULL, 0, &logits, &err), CV_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "encode"));
    ck_assert_int_ne(f.m->ops->encode(f.m, ids, 8, NULL, NULL, NULL, &err), CV_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "8 tokens"));
    ck_assert_int_eq(f.m->ops->encode(f.m, ids, 4, NULL, NULL, NULL, &err), CV_OK);
    ck_assert_int_eq(f.m->ops->forward(f.m, ids, 1, 3, NULL, NULL, NULL, 0, &logits, &err), CV_OK);
    ck_assert_int_ne(f.m->ops->forward(f.m, ids, 1, 4, NULL, NULL, NULL, 0, &logits, &err), CV_OK);
    int32_t bad = f.m->cfg.vocab_size;
    ck_assert_int_ne(f.m->ops->forward(f.m, &bad, 1, 0, NULL, NULL, NULL, 0, &logits, &err), CV_OK);
    fixture_close(&f);
}
END_TEST

/* transformers >= 5.17 writes "scale_decoder_outputs"; when present it decides the d_model^-0.5
 * rescale before the lm_head instead of tie_word_embeddings. t5v11-tiny (untied, unscaled) with
 * the key set true must give HF's logits times 64^-0.5 = 1/8 (the lm_head is linear, no bias). */
START_TEST(test_t5_scale_decoder_outputs_key) {
    const char *src = "tests/fixtures/t5v11-tiny";
    const char *dir = tu_tmpdir("t5scale");
    ck_assert_ptr_nonnull(dir);
    char tmp[512], path[600], target[600], *text = NULL;
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t len = 0;
    cv_error err = {0};
    snprintf(path, sizeof path, "%s/config.json", src);
    ck_assert_int_eq(cv_read_file(path, &text, &len, &err), CV_OK);
    char *brace = strchr(text, '{');
    ck_assert_ptr_nonnull(brace);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fprintf(fp, "{\"scale_decoder_outputs\": true, %s", brace + 1);
    fclose(fp);
    free(text);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    ck_assert(realpath("tests/fixtures/t5v11-tiny/model.safetensors", target) != NULL);
    ck_assert_int_eq(symlink(target, path), 0);

    fixture f;
    fixture_open(&f, "t5v11-tiny");
    cv_model *m = NULL;
    ck_assert_msg(cv_model_load(tmp, f.be, &m, &err) == CV_OK, "%s", err.msg);
    const int V = m->cfg.vocab_size;
    ck_assert_int_eq(m->cfg.hidden_size, 64);
    size_t P, G;
    int32_t *ids = tu_ref_ids(f.ref, "p0.input_ids", &P);
    int32_t *dec = tu_ref_ids(f.ref, "p0.dec_input_ids", &G);
    ck_assert(ids && dec);
    float *want = ref_f32(&f, G * (size_t)V, "p0.dec_logits");
    for (size_t i = 0; i < G * (size_t)V; i++) want[i] *= 0.125f;
    ck_assert_int_eq(m->ops->reserve(m, (int)(P > G ? P : G), (int)G, (int)G, &err), CV_OK);
    ck_assert_int_eq(m->ops->encode(m, ids, (int)P, NULL, NULL, NULL, &err), CV_OK);
    float *logits;
    ck_assert_int_eq(m->ops->forward(m, dec, (int)G, 0, NULL, NULL, NULL, 1, &logits, &err), CV_OK);
    compare(&f, "decoder logits", "scale_decoder_outputs=true logits", logits, want, G * (size_t)V,
            TOL_ABS);
    free(want);
    free(ids);
    free(dec);
    cv_model_free(m);
    fixture_close(&f);
    tu_rmtree(tmp);
}
END_TEST

/* cv_run end to end on t5-tiny (tokenizer, encoder once, cached decoder, report): the trace is a
 * valid seq2seq trace, and its numbers are those of HF's tensors for the same prompt. */
START_TEST(test_t5_end_to_end_trace) {
    fixture f;
    fixture_open(&f, "t5-tiny");
    const cv_model_config *c = &f.m->cfg;
    const int C = c->hidden_size, V = c->vocab_size, G = 6;
    size_t P, GR;
    int32_t *ids = tu_ref_ids(f.ref, "p0.input_ids", &P);
    int32_t *gref = tu_ref_ids(f.ref, "p0.greedy_ids", &GR);
    const char *text = cv_st_metadata(f.ref, "p0.text");
    ck_assert(ids && gref && text && GR >= (size_t)G);
    cv_config cfg;
    cv_error err = {0};
    ck_assert_int_eq(cv_config_init(&cfg, &err), CV_OK);
    const char *kv[][2] = {{"model.hf_id", "tests/fixtures/t5-tiny"},
                           {"device.requested", "cpu"},
                           {"generation.max_new_tokens", "6"},
                           {"generation.temperature", "0"},
                           {"summaries.hidden.sketch.dim", "8"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        ck_assert_msg(cv_config_set(&cfg, kv[i][0], kv[i][1], &err) == CV_OK, "%s", err.msg);
    ck_assert_msg(cv_config_validate(&cfg, &err) == CV_OK, "%s", err.msg);
    cv_report rep;
    cv_status s = cv_run(&cfg, text, &rep, &err);
    ck_assert_msg(s == CV_OK, "cv_run: %s", err.msg);

    /* the prompt as HF tokenized it, the greedy continuation up to EOS */
    ck_assert_int_eq((int)rep.prompt.n_token_ids, (int)P);
    for (size_t i = 0; i < P; i++) ck_assert_int_eq((int)rep.prompt.token_ids[i], ids[i]);
    ck_assert_int_ge((int)rep.generated.n_token_ids, 1);
    for (size_t i = 0; i < rep.generated.n_token_ids; i++)
        ck_assert_int_eq((int)rep.generated.token_ids[i], gref[i]);
    ck_assert_int_eq((int)rep.n_timeline, (int)rep.generated.n_token_ids);

    /* encoder_layers: one summary per encoder layer over all P positions */
    ck_assert(rep.has_encoder_layers);
    ck_assert_int_eq((int)rep.n_encoder_layers, c->num_layers);
    for (int j = 0; j < c->num_layers; j++) {
        const cv_layer_summary *ls = &rep.encoder_layers[j];
        ck_assert(!ls->has_cross_attention);
        float *want = ref_f32(&f, P * (size_t)C, "p0.enc_hidden.%d", j + 1);
        cv_hidden_stats hs;
        cv_hidden_stats_ref(want, (int)P, C, NULL, &hs);
        ck_assert(ls->hidden_summary.mean.present && ls->hidden_summary.std.present);
        ck_assert_msg(fabs(ls->hidden_summary.mean.v - hs.mean) < TOL_ABS &&
                          fabs(ls->hidden_summary.std.v - hs.std) < TOL_ABS,
                      "encoder layer %d hidden summary", j);
        free(want);
    }
    /* decoder steps: L_dec layers each with a cross_attention summary over the P encoder keys */
    for (size_t i = 0; i < rep.n_timeline; i++) {
        const cv_timeline_step *st = &rep.timeline[i];
        ck_assert_int_eq((int)st->step_index, (int)(P + i));
        ck_assert_int_eq((int)st->n_layers, c->num_decoder_layers);
        for (int l = 0; l < c->num_decoder_layers; l++) {
            const cv_layer_summary *ls = &st->layers[l];
            ck_assert(ls->has_cross_attention && ls->cross_attention.entropy_mean.present);
            float *A = ref_f32(&f, (size_t)c->num_heads * GR * P, "p0.cross_attn.%d", l);
            float *rows = malloc(sizeof(float) * c->num_heads * P);
            head_rows(A, c->num_heads, (int)GR, (int)P, (int)i, (int)P, rows);
            cv_attn_stats as;
            cv_attn_stats_ref(rows, c->num_heads, (int)P, &as);
            ck_assert_msg(fabs(ls->cross_attention.entropy_mean.v - as.entropy_mean) < TOL_ABS,
                          "step %zu layer %d cross-attention entropy", i, l);
            free(rows);
            free(A);
        }
    }
    float *glog = ref_f32(&f, GR * (size_t)V, "p0.greedy_logits");
    cv_logit_stats lsr;
    cv_logits_stats_ref(glog, V, 5, &lsr);
    ck_assert(rep.timeline[0].logits_summary.entropy.present);
    ck_assert(fabs(rep.timeline[0].logits_summary.entropy.v - lsr.entropy) < TOL_ABS);
    free(glog);

    char *json = NULL;
    size_t len = 0;
    ck_assert_msg(cv_report_to_json(&rep, 2, &json, &len, &err) == CV_OK, "%s", err.msg);
    ck_assert_msg(cv_trace_validate(json, &err) == CV_OK, "trace invalid: %s", err.msg);
    ck_assert_ptr_nonnull(strstr(json, "\"encoder_layers\": ["));
    free(json);
    cv_report_free(&rep);
    cv_config_free(&cfg);
    free(ids);
    free(gref);
    fixture_close(&f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("parity_t5");
    TCase *tc = tcase_create("hf");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_t5_tiny_relu_tied);
    tcase_add_test(tc, test_t5v11_tiny_gated_untied);
    tcase_add_test(tc, test_t5_errors);
    tcase_add_test(tc, test_t5_end_to_end_trace);
    tcase_add_test(tc, test_t5_scale_decoder_outputs_key);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tu_print_max("parity_t5");
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
