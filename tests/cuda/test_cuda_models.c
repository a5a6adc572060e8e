/* test_cuda_models.c — every model family end to end on CUDA against the CPU backend (make
 * test-cuda; needs a GPU). For each fixture of tests/fixtures present (gpt2-tiny, llama-tiny,
 * llama-tiny-tied-bf16, llama-tiny-rope3, llama-tiny-linear, t5-tiny, t5v11-tiny) the model is
 * loaded twice, on the CPU and on CUDA, and:
 *   decoder-only: the prompt p0.input_ids runs through forward with statistics; the logits of
 *     every position and the whole statistics arena (hidden, attention, logits records) are
 *     compared; then 16 greedy tokens are decoded on both, with statistics at every step, and
 *     must be identical token for token (fp32 / bf16 weights with fp32 arithmetic on both).
 *   seq2seq (T5): encode the prompt (encoder records compared), then 16 greedy decoder steps from
 *     decoder_start_token_id, records and tokens compared at every step.
 * Tolerances: logits 2e-4 absolute; records 1e-4 relative to max(|value|, a floor: for sums,
 * the element count times the rms element size from the CPU record; 0.1 for attention values);
 * top-k ids identical, top-k probabilities 1e-5 absolute.
 * Without a GPU: prints "SKIP: no CUDA device" and exits 77 (make test-cuda reports a failure). */
#include "cuda_suite.h"
#include "corevital/model.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GREEDY_STEPS 16
#define TOL_LOGITS   2e-4

static cv_backend *G, *H;

typedef struct {
    const char *name;
    cv_model *mc, *mg; /* CPU, CUDA */
    cv_st *ref;
    int L, C, V;
} pair;

static int pair_open(pair *p, const char *name) {
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (access(path, R_OK) != 0) return 0;
    memset(p, 0, sizeof *p);
    p->name = name;
    cv_error err = {0};
    cv_status s = cv_model_load(dir, H, &p->mc, &err);
    ck_assert_msg(s == CV_OK, "cpu load %s: %s", dir, err.msg);
    s = cv_model_load(dir, G, &p->mg, &err);
    ck_assert_msg(s == CV_OK, "cuda load %s: %s", dir, err.msg);
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    s = cv_st_open(path, &p->ref, &err);
    ck_assert_msg(s == CV_OK, "open %s: %s", path, err.msg);
    p->L = cv_model_num_layers(p->mc);
    p->C = p->mc->cfg.hidden_size;
    p->V = cv_model_vocab(p->mc);
    return 1;
}

static void pair_close(pair *p) {
    cv_model_free(p->mc);
    cv_model_free(p->mg);
    cv_st_close(p->ref);
}

/* A statistics arena on each side: host for the CPU, device for CUDA, both reset. */
typedef struct {
    cv_stats_layout lay;
    double *host, *cpu, *dev;
    size_t bytes;
} arenas;

static void arenas_init(arenas *a, int L, int C, int has_cross, int topk) {
    cv_stats_layout_init(&a->lay, L, C, has_cross, topk);
    a->bytes = a->lay.total * sizeof(double);
    a->host = malloc(a->bytes);
    a->cpu = malloc(a->bytes);
    a->dev = G->alloc(G, a->bytes);
    ck_assert(a->host && a->cpu && a->dev);
}
static void arenas_reset(arenas *a) {
    cv_stats_arena_reset(a->cpu, &a->lay);
    G->upload(G, a->dev, a->cpu, a->bytes);
}
static void arenas_free(arenas *a) {
    free(a->host);
    free(a->cpu);
    G->free(G, a->dev);
}

static void close_field(const char *what, int layer, const char *field, double got, double want,
                        double rel, double floor) {
    if (isnan(want) || isnan(got)) {
        ck_assert_msg(isnan(want) && isnan(got), "%s layer %d %s: got %.10g want %.10g", what,
                      layer, field, got, want);
        return;
    }
    double tol = rel * fmax(fabs(want), floor);
    tu_record_max(field, fabs(got - want) / fmax(fabs(want), floor));
    ck_assert_msg(fabs(got - want) <= tol, "%s layer %d %s: got %.10g want %.10g (tol %.3g)", what,
                  layer, field, got, want, tol);
}

/* Compare the downloaded CUDA arena with the CPU one: every record of every layer. */
static void compare_arenas(arenas *a, int T, const char *what) {
    G->download(G, a->host, a->dev, a->bytes);
    const cv_stats_layout *l = &a->lay;
    const int C = l->dim;
    const double n = (double)T * C;
    for (int i = 0; i < l->n_layers; i++) {
        const double *g = cv_stats_hidden(a->host, l, i), *c = cv_stats_hidden(a->cpu, l, i);
        ck_assert_msg(g[CV_HS_ROWS] == c[CV_HS_ROWS], "%s layer %d hidden rows %g vs %g", what, i,
                      g[CV_HS_ROWS], c[CV_HS_ROWS]);
        /* floors from the record's own scale (rms of an element): a sum that cancels to near 0
         * carries the float noise of its terms, ~1e-6 of rms each, not 1e-4 of itself */
        const double rms =
            c[CV_HS_ROWS] > 0 ? c[CV_HS_L2SUM] / c[CV_HS_ROWS] / sqrt((double)C) : 1.0;
        close_field(what, i, "hidden sum", g[CV_HS_SUM], c[CV_HS_SUM], 1e-4, 0.1 * n * rms);
        close_field(what, i, "hidden M2", g[CV_HS_M2], c[CV_HS_M2], 1e-4, 0.01 * n * rms * rms);
        close_field(what, i, "hidden l2 sum", g[CV_HS_L2SUM], c[CV_HS_L2SUM], 1e-4, 1e-3);
        close_field(what, i, "hidden max|x|", g[CV_HS_MAXABS], c[CV_HS_MAXABS], 1e-4, 1e-3);
        for (int d = 0; d < C; d++)
            close_field(what, i, "hidden column sum", g[CV_HS_FIXED + d], c[CV_HS_FIXED + d], 1e-4,
                        (double)T * rms);
        const double *ga = cv_stats_attn(a->host, l, i), *ca = cv_stats_attn(a->cpu, l, i);
        ck_assert_msg(ga[CV_AS_ROWS] == ca[CV_AS_ROWS], "%s layer %d attention rows", what, i);
        close_field(what, i, "attention entropy sum", ga[CV_AS_ESUM], ca[CV_AS_ESUM], 1e-4, 0.1);
        close_field(what, i, "attention entropy min", ga[CV_AS_EMIN], ca[CV_AS_EMIN], 1e-4, 0.1);
        close_field(what, i, "attention max weight", ga[CV_AS_WMAX], ca[CV_AS_WMAX], 1e-4, 0.1);
        if (l->has_cross) {
            ga = cv_stats_cross(a->host, l, i), ca = cv_stats_cross(a->cpu, l, i);
            ck_assert_msg(ga[CV_AS_ROWS] == ca[CV_AS_ROWS], "%s layer %d cross rows", what, i);
            close_field(what, i, "cross entropy sum", ga[CV_AS_ESUM], ca[CV_AS_ESUM], 1e-4, 0.1);
            close_field(what, i, "cross entropy min", ga[CV_AS_EMIN], ca[CV_AS_EMIN], 1e-4, 0.1);
            close_field(what, i, "cross max weight", ga[CV_AS_WMAX], ca[CV_AS_WMAX], 1e-4, 0.1);
        }
    }
    if (l->topk <= 0) return;
    const double *gl = cv_stats_logits(a->host, l), *cl = cv_stats_logits(a->cpu, l);
    ck_assert_msg(gl[CV_LS_V] == cl[CV_LS_V] && gl[CV_LS_K] == cl[CV_LS_K], "%s logits V / k",
                  what);
    close_field(what, -1, "logits entropy", gl[CV_LS_ENTROPY], cl[CV_LS_ENTROPY], 1e-5, 0.1);
    for (int j = 0; j < (int)cl[CV_LS_K]; j++) {
        ck_assert_msg(gl[CV_LS_FIXED + 2 * j] == cl[CV_LS_FIXED + 2 * j], "%s top-%d id %g vs %g",
                      what, j, gl[CV_LS_FIXED + 2 * j], cl[CV_LS_FIXED + 2 * j]);
        close_field(what, -1, "top-k prob", gl[CV_LS_FIXED + 2 * j + 1],
                    cl[CV_LS_FIXED + 2 * j + 1], 1e-5, 1.0);
    }
}

static void compare_logits(const float *dev_logits, const float *cpu_logits, size_t n,
                           const char *what) {
    float *got = malloc(sizeof(float) * n);
    G->download(G, got, dev_logits, sizeof(float) * n);
    tu_record_max("logits", tu_compare(got, cpu_logits, n).max_abs);
    ck_assert_msg(tu_check_close(what, got, cpu_logits, n, TOL_LOGITS), "%s", what);
    free(got);
}

static void run_decoder(pair *p) {
    cv_error err = {0};
    size_t T;
    int32_t *ids = tu_ref_ids(p->ref, "p0.input_ids", &T);
    ck_assert_ptr_nonnull(ids);
    int total = (int)T + GREEDY_STEPS;
    if (total > p->mc->cfg.max_positions) total = p->mc->cfg.max_positions;
    const int steps = total - (int)T;
    ck_assert_int_gt(steps, 0);
    ck_assert_int_eq(p->mc->ops->reserve(p->mc, total, total, total, &err), CV_OK);
    ck_assert_msg(p->mg->ops->reserve(p->mg, total, total, total, &err) == CV_OK, "%s", err.msg);
    arenas a;
    arenas_init(&a, p->L, p->C, 0, 10);
    char what[160];

    /* prompt forward: every position's logits and the step's records */
    float *lc, *lg;
    arenas_reset(&a);
    ck_assert_int_eq(p->mc->ops->forward(p->mc, ids, (int)T, 0, a.cpu, &a.lay, NULL, 1, &lc, &err),
                     CV_OK);
    cv_status s = p->mg->ops->forward(p->mg, ids, (int)T, 0, a.dev, &a.lay, NULL, 1, &lg, &err);
    ck_assert_msg(s == CV_OK, "%s", err.msg);
    snprintf(what, sizeof what, "%s prompt (T=%zu) logits", p->name, T);
    compare_logits(lg, lc, T * (size_t)p->V, what);
    snprintf(what, sizeof what, "%s prompt records", p->name);
    compare_arenas(&a, (int)T, what);

    /* greedy decode with the KV cache, statistics at every step */
    int32_t tc = p->mc->be->argmax(p->mc->be, lc + (T - 1) * p->V, p->V);
    int32_t tg = G->argmax(G, lg + (T - 1) * p->V, p->V);
    ck_assert_msg(tc == tg, "%s prefill greedy token: cpu %d, cuda %d", p->name, tc, tg);
    for (int i = 0; i < steps - 1; i++) {
        arenas_reset(&a);
        int pos = (int)T + i;
        ck_assert_int_eq(p->mc->ops->forward(p->mc, &tc, 1, pos, a.cpu, &a.lay, NULL, 0, &lc, &err),
                         CV_OK);
        s = p->mg->ops->forward(p->mg, &tg, 1, pos, a.dev, &a.lay, NULL, 0, &lg, &err);
        ck_assert_msg(s == CV_OK, "%s", err.msg);
        snprintf(what, sizeof what, "%s decode step %d logits", p->name, i);
        compare_logits(lg, lc, (size_t)p->V, what);
        snprintf(what, sizeof what, "%s decode step %d records", p->name, i);
        compare_arenas(&a, 1, what);
        tc = p->mc->be->argmax(p->mc->be, lc, p->V);
        tg = G->argmax(G, lg, p->V);
        ck_assert_msg(tc == tg, "%s greedy step %d: cpu %d, cuda %d", p->name, i, tc, tg);
    }
    arenas_free(&a);
    free(ids);
}

static void run_seq2seq(pair *p) {
    cv_error err = {0};
    size_t P;
    int32_t *ids = tu_ref_ids(p->ref, "p0.input_ids", &P);
    ck_assert_ptr_nonnull(ids);
    const cv_model_config *c = &p->mc->cfg;
    ck_assert_int_eq(p->mc->ops->reserve(p->mc, (int)P, GREEDY_STEPS, 1, &err), CV_OK);
    ck_assert_msg(p->mg->ops->reserve(p->mg, (int)P, GREEDY_STEPS, 1, &err) == CV_OK, "%s",
                  err.msg);
    char what[160];

    arenas e;
    arenas_init(&e, c->num_layers, p->C, 0, 0);
    arenas_reset(&e);
    ck_assert_int_eq(p->mc->ops->encode(p->mc, ids, (int)P, e.cpu, &e.lay, NULL, &err), CV_OK);
    cv_status s = p->mg->ops->encode(p->mg, ids, (int)P, e.dev, &e.lay, NULL, &err);
    ck_assert_msg(s == CV_OK, "%s", err.msg);
    snprintf(what, sizeof what, "%s encoder records", p->name);
    compare_arenas(&e, (int)P, what);
    arenas_free(&e);

    arenas a;
    arenas_init(&a, p->L, p->C, 1, 10);
    int32_t tc = c->decoder_start_token_id, tg = tc;
    for (int i = 0; i < GREEDY_STEPS; i++) {
        float *lc, *lg;
        arenas_reset(&a);
        ck_assert_int_eq(p->mc->ops->forward(p->mc, &tc, 1, i, a.cpu, &a.lay, NULL, 0, &lc, &err),
                         CV_OK);
        s = p->mg->ops->forward(p->mg, &tg, 1, i, a.dev, &a.lay, NULL, 0, &lg, &err);
        ck_assert_msg(s == CV_OK, "%s", err.msg);
        snprintf(what, sizeof what, "%s decoder step %d logits", p->name, i);
        compare_logits(lg, lc, (size_t)p->V, what);
        snprintf(what, sizeof what, "%s decoder step %d records", p->name, i);
        compare_arenas(&a, 1, what);
        tc = p->mc->be->argmax(p->mc->be, lc, p->V);
        tg = G->argmax(G, lg, p->V);
        ck_assert_msg(tc == tg, "%s greedy step %d: cpu %d, cuda %d", p->name, i, tc, tg);
    }
    arenas_free(&a);
    free(ids);
}

static void run_fixture(const char *name) {
    pair p;
    if (!pair_open(&p, name)) {
        printf("test_cuda_models: %s not present, skipped\n", name);
        return;
    }
    if (p.mc->ops->encode)
        run_seq2seq(&p);
    else
        run_decoder(&p);
    pair_close(&p);
}

START_TEST(test_gpt2_tiny) {
    run_fixture("gpt2-tiny");
}
END_TEST
START_TEST(test_llama_tiny) {
    run_fixture("llama-tiny");
}
END_TEST
START_TEST(test_llama_tiny_tied_bf16) {
    run_fixture("llama-tiny-tied-bf16");
}
END_TEST
START_TEST(test_llama_tiny_rope3) {
    run_fixture("llama-tiny-rope3");
}
END_TEST
START_TEST(test_llama_tiny_linear) {
    run_fixture("llama-tiny-linear");
}
END_TEST
START_TEST(test_t5_tiny) {
    run_fixture("t5-tiny");
}
END_TEST
START_TEST(test_t5v11_tiny) {
    run_fixture("t5v11-tiny");
}
END_TEST

int main(void) {
    int skip = cuda_suite_skip("test_cuda_models");
    if (skip) return skip;
    if (cuda_suite_backends("test_cuda_models", &G, &H)) return EXIT_FAILURE;
    Suite *s = suite_create("cuda_models");
    TCase *tc = tcase_create("cpu_vs_cuda");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gpt2_tiny);
    tcase_add_test(tc, test_llama_tiny);
    tcase_add_test(tc, test_llama_tiny_tied_bf16);
    tcase_add_test(tc, test_llama_tiny_rope3);
    tcase_add_test(tc, test_llama_tiny_linear);
    tcase_add_test(tc, test_t5_tiny);
    tcase_add_test(tc, test_t5v11_tiny);
    suite_add_tcase(s, tc);
    int failed = cuda_suite_run(s);
    tu_print_max("cuda_models");
    G->destroy(G);
    H->destroy(H);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
