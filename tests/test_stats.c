/* test_stats.c — statistic records and their finalization against full-tensor references:
 * the numpy-compatible sketch stream, fused hidden / attention / logits statistics vs the
 * reference implementations (1e-6 relative), including on Hugging Face tensors from the
 * fixtures, and the one-pass logits pass edge cases. */
#include "corevital/backend.h"
#include "corevital/stats.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REL             1e-6
#define close_rel(a, b) (fabs((a) - (b)) <= REL * fmax(1.0, fmax(fabs(a), fabs(b))))

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

START_TEST(test_numpy_gauss_stream) {
    cv_np_random r;
    cv_np_seed(&r, 0);
    const double want[] = {1.764052345967664, 0.4001572083672233, 0.9787379841057392,
                           2.240893199201458, 1.8675579901499675};
    for (int i = 0; i < 5; i++) ck_assert_double_eq_tol(cv_np_gauss(&r), want[i], 1e-15);
    /* D=768, dim=32: R_raw[1][0] and the last element, from numpy itself */
    cv_sketch sk;
    ck_assert_int_eq(cv_sketch_init(&sk, 768, 32, 0), 0);
    double s = sqrt(768.0);
    ck_assert_double_eq_tol(sk.R[32] * s, -0.8877857476301128, 1e-13);
    ck_assert_double_eq_tol(sk.R[768 * 32 - 1] * s, -1.0648605774056636, 1e-13);
    cv_sketch_free(&sk);
}
END_TEST

/* D 67 takes the scalar row loop, D 64 the vector one (AVX-512 / AVX2 builds) */
START_TEST(test_hidden_fused_vs_ref) {
    unsigned seed = 7;
    int S = 13, D = _i ? 64 : 67;
    float *X = malloc(sizeof(float) * S * D);
    for (int i = 0; i < S * D; i++) X[i] = frand(&seed) * 3.0f + (i % D == 5 ? 40.0f : 0.5f);
    cv_sketch sk;
    ck_assert_int_eq(cv_sketch_init(&sk, D, 32, 0), 0);
    /* records built by rows in two halves then merged, like two threads */
    double *a = calloc(cv_hidden_record_size(D), sizeof(double));
    double *b = calloc(cv_hidden_record_size(D), sizeof(double));
    cv_hidden_record_reset(a, D);
    cv_hidden_record_reset(b, D);
    cv_hidden_record_add_rows(a, X, 6, D);
    cv_hidden_record_add_rows(b, X + 6 * D, S - 6, D);
    cv_hidden_record_merge(a, b, D);
    cv_hidden_stats got, want;
    cv_hidden_finalize(a, D, &sk, &got);
    cv_hidden_stats_ref(X, S, D, &sk, &want);
    ck_assert(close_rel(got.mean, want.mean));
    ck_assert(close_rel(got.std, want.std));
    ck_assert(close_rel(got.l2_norm_mean, want.l2_norm_mean));
    ck_assert(close_rel(got.max_abs, want.max_abs));
    ck_assert_int_eq(got.sketch_dim, 32);
    for (int j = 0; j < 32; j++) ck_assert_double_eq(got.sketch[j], want.sketch[j]);
    free(a);
    free(b);
    free(X);
    cv_sketch_free(&sk);
}
END_TEST

/* The CPU ops' fused statistics equal the reference over the op's full output. */
START_TEST(test_ops_fused_hidden_stats) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 3;
    int T = 9, C = 80;
    float *x = malloc(sizeof(float) * T * C), *y = malloc(sizeof(float) * T * C);
    float *w = malloc(sizeof(float) * C), *bias = malloc(sizeof(float) * C),
          *out = malloc(sizeof(float) * T * C);
    for (int i = 0; i < T * C; i++) x[i] = frand(&seed), y[i] = frand(&seed);
    for (int i = 0; i < C; i++) w[i] = 1.0f + 0.1f * frand(&seed), bias[i] = 0.1f * frand(&seed);
    double *rec = calloc(cv_hidden_record_size(C), sizeof(double));
    cv_hidden_stats got, want;
    for (int op = 0; op < 3; op++) {
        cv_hidden_record_reset(rec, C);
        if (op == 0) be->layernorm(be, out, x, w, bias, T, C, 1e-5f, rec);
        if (op == 1) be->rmsnorm(be, out, x, w, T, C, 1e-6f, rec);
        if (op == 2) {
            memcpy(out, x, sizeof(float) * T * C);
            be->residual_add(be, out, y, T, C, rec);
        }
        cv_hidden_finalize(rec, C, NULL, &got);
        cv_hidden_stats_ref(out, T, C, NULL, &want);
        ck_assert_msg(close_rel(got.mean, want.mean), "op %d mean %.17g vs %.17g", op, got.mean,
                      want.mean);
        ck_assert(close_rel(got.std, want.std));
        ck_assert(close_rel(got.l2_norm_mean, want.l2_norm_mean));
        ck_assert(close_rel(got.max_abs, want.max_abs));
    }
    free(x), free(y), free(w), free(bias), free(out), free(rec);
    be->destroy(be);
}
END_TEST

START_TEST(test_attention_fused_vs_ref) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 11;
    int H = 4, KVH = 2, hd = 16, T = 7, NK = 7;
    size_t qs = (size_t)H * hd, ks = (size_t)KVH * hd;
    float *q = malloc(sizeof(float) * T * qs), *k = malloc(sizeof(float) * NK * ks);
    float *v = malloc(sizeof(float) * NK * ks), *o = malloc(sizeof(float) * T * qs);
    float *probs = malloc(sizeof(float) * H * T * NK);
    for (size_t i = 0; i < T * qs; i++) q[i] = 2.0f * frand(&seed);
    for (size_t i = 0; i < NK * ks; i++) k[i] = 2.0f * frand(&seed), v[i] = frand(&seed);
    double rec[CV_AS_SIZE];
    for (int causal = 0; causal < 2; causal++) {
        cv_attn_record_reset(rec);
        cv_attn_args a = {.out = o,
                          .q = q,
                          .k = k,
                          .v = v,
                          .q_stride = (int)qs,
                          .kv_stride = (int)ks,
                          .out_stride = (int)qs,
                          .T = T,
                          .n_keys = NK,
                          .q_pos0 = 0,
                          .n_heads = H,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = causal,
                          .scale = 0.25f,
                          .stats = rec,
                          .probs = probs};
        be->attention(be, &a);
        cv_attn_stats got, want;
        cv_attn_finalize(rec, &got);
        cv_attn_stats_ref(probs, H * T, NK, &want);
        /* the reference's ln(a + 1e-10) differs from ln a by at most K * 1e-10 per row */
        ck_assert_double_eq_tol(got.entropy_mean, want.entropy_mean,
                                1e-6 * fmax(1, want.entropy_mean));
        ck_assert_double_eq_tol(got.entropy_min, want.entropy_min, 1e-6);
        ck_assert_double_eq_tol(got.concentration_max, want.concentration_max, 1e-6);
    }
    free(q), free(k), free(v), free(o), free(probs);
    be->destroy(be);
}
END_TEST

/* Attention statistics from Hugging Face's own probabilities (gpt2-tiny fixture) equal the
 * statistics our fused kernel produced for the same layer. */
START_TEST(test_attention_stats_on_hf_tensors) {
    cv_error err = {0};
    cv_st *ref;
    ck_assert_int_eq(cv_st_open("tests/fixtures/gpt2-tiny/ref.safetensors", &ref, &err), CV_OK);
    const cv_st_tensor *t = cv_st_find(ref, "p0.attn.0");
    ck_assert_ptr_nonnull(t);
    int H = (int)t->shape[0], T = (int)t->shape[1], K = (int)t->shape[2];
    float *A = tu_ref_f32(ref, "p0.attn.0", NULL);
    /* rebuild running sums from the probabilities themselves: z = 1 / max, t from ln a */
    double rec[CV_AS_SIZE];
    cv_attn_record_reset(rec);
    for (int r = 0; r < H * T; r++) {
        double pmax = 0;
        for (int k = 0; k < K; k++) pmax = fmax(pmax, A[(size_t)r * K + k]);
        /* with m the row max: e_k = a_k / a_max, z = 1 / a_max, t = sum e_k ln e_k */
        double z = 1.0 / pmax, tt = 0;
        for (int k = 0; k < K; k++) {
            double e = A[(size_t)r * K + k] / pmax;
            if (e > 0) tt += e * log(e);
        }
        cv_attn_record_add_row(rec, z, tt);
    }
    cv_attn_stats got, want;
    cv_attn_finalize(rec, &got);
    cv_attn_stats_ref(A, H * T, K, &want);
    ck_assert_double_eq_tol(got.entropy_mean, want.entropy_mean, 1e-6);
    ck_assert_double_eq_tol(got.entropy_min, want.entropy_min, 1e-6);
    ck_assert_double_eq_tol(got.concentration_max, want.concentration_max, 1e-7);
    free(A);
    cv_st_close(ref);
}
END_TEST

START_TEST(test_logits_one_pass_vs_ref) {
    unsigned seed = 5;
    int V = 50257;
    float *l = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = 4.0f * frand(&seed);
    l[123] = 9.0f, l[40000] = 8.5f, l[7] = 8.5f; /* a tie: lower id first */
    double rec[CV_LS_FIXED + 2 * CV_TOPK_MAX];
    cv_logits_stats_row(rec, l, V, 5);
    cv_logit_stats got, want;
    cv_logits_finalize(rec, &got);
    cv_logits_stats_ref(l, V, 5, &want);
    ck_assert(close_rel(got.entropy, want.entropy));
    ck_assert(close_rel(got.margin, want.margin));
    ck_assert_int_eq(got.k, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(got.ids[i], want.ids[i]);
        ck_assert(close_rel(got.probs[i], want.probs[i]));
    }
    ck_assert_int_eq(got.ids[0], 123);
    ck_assert_int_eq(got.ids[1], 7);
    ck_assert_int_eq(got.ids[2], 40000);
    /* k larger than V is clamped; -inf entries are masked tokens with probability 0 */
    float small[3] = {1.0f, -INFINITY, 1.0f};
    cv_logits_stats_row(rec, small, 3, 50);
    cv_logits_finalize(rec, &got);
    ck_assert_int_eq(got.k, 2);
    ck_assert_double_eq_tol(got.entropy, log(2.0), 1e-12);
    ck_assert_double_eq_tol(got.margin, 0.0, 1e-15);
    /* NaN poisons the summary (reported as null + warning by the trace) */
    small[1] = NAN;
    cv_logits_stats_row(rec, small, 3, 2);
    cv_logits_finalize(rec, &got);
    ck_assert(isnan(got.entropy));
    free(l);
}
END_TEST

int main(void) {
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_numpy_gauss_stream);
    tcase_add_loop_test(tc, test_hidden_fused_vs_ref, 0, 2);
    tcase_add_test(tc, test_ops_fused_hidden_stats);
    tcase_add_test(tc, test_attention_fused_vs_ref);
    tcase_add_test(tc, test_attention_stats_on_hf_tensors);
    tcase_add_test(tc, test_logits_one_pass_vs_ref);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
