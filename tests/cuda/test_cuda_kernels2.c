/* test_cuda_kernels2.c — issue 20's CUDA kernels against their CPU twins (make test-cuda; needs a
 * GPU): flash-decoding (keys split across blocks, chunk partials merged per head) at 1, 100,
 * 4097, 12K and 57K keys with GQA / MQA, tiled prefill attention at T = 2..300 (causal or not,
 * bias, queries continuing a cache), the NF4 / INT8 dequant-GEMV at real sizes (4096 x 4096 and
 * 128256 x 4096), and the cublasGemmEx prefill routes (dense F16 / BF16 with T > 128, quantized
 * prefill in bounded row tiles). Records (attention, per-head health records, basin sums) are
 * compared field by field.
 *
 * Tolerances (inputs uniform in [-1, 1] unless said otherwise):
 *   attention outputs            2e-5 abs; records, head records, basin sums 1e-5 relative
 *                                (floor 0.1), as in test_cuda_ops.c
 *   flash-decoding determinism   two runs bit-identical
 *   INT8 / NF4 GEMV, fp32 tiles  2e-5 * sqrt(K) + 1e-6 (same dequantized values, fp32 sums)
 *   GemmEx BF16 (x rounded)      2^-8 * sqrt(K)      (docs/cuda.md: relative 2^-8 per product,
 *   GemmEx F16 (x rounded)       2^-11 * sqrt(K)      random signs, so ~ sqrt(K) growth; the
 *   quantized bf16 tiles         2^-8 * sqrt(2 K)     bound is ~7 standard deviations; bf16
 *                                                     tiles round the weights too)
 *
 * Without a GPU the suite prints "SKIP: no CUDA device" and exits 77. */
#include "cuda_suite.h"
#include "corevital/backend.h"
#include "corevital/dtype.h"
#include "corevital/quant.h"
#include "corevital/stats.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_testutil.h"

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    int H, KVH, hd, T, NK, q_pos0, causal, bias;
} attn_case;

static void check_attention(const attn_case *tc) {
    unsigned seed = (unsigned)(tc->H * 131 + tc->T * 17 + tc->NK + tc->hd * 7 + tc->causal);
    int qs = tc->H * tc->hd + 3, kvs = tc->KVH * tc->hd + 5, os = tc->H * tc->hd + 1;
    size_t nq = (size_t)tc->T * qs, nkv = (size_t)tc->NK * kvs, no = (size_t)tc->T * os;
    size_t nb = (size_t)tc->H * (size_t)(tc->T + tc->NK - 1); /* the bias diagonals */
    /* q scaled up so the softmax is not flat (max weights well above 1 / K) */
    float *q = rand_vec(nq, &seed, 3.0f), *k = rand_vec(nkv, &seed, 1.0f),
          *v = rand_vec(nkv, &seed, 1.0f);
    float *bias = tc->bias ? rand_vec(nb, &seed, 2.0f) : NULL;
    float *out = calloc(no, sizeof(float));
    double rc[CV_AS_SIZE];
    cv_attn_record_reset(rc);
    float *dq = dev_copy(q, sizeof(float) * nq), *dk = dev_copy(k, sizeof(float) * nkv);
    float *dv = dev_copy(v, sizeof(float) * nkv),
          *dbias = bias ? dev_copy(bias, sizeof(float) * nb) : NULL;
    float *dout = dev_copy(out, sizeof(float) * no), *dout2 = dev_copy(out, sizeof(float) * no);
    double *drec = dev_copy(rc, sizeof rc);
    size_t nh = (size_t)tc->H * CV_AH_SIZE, nbas = (size_t)tc->H * 2;
    double *hh = malloc(sizeof(double) * nh), *hb = calloc(nbas, sizeof(double));
    for (int h = 0; h < tc->H; h++) cv_head_record_reset(hh + (size_t)h * CV_AH_SIZE);
    double *dhh = dev_copy(hh, sizeof(double) * nh), *dhb = dev_copy(hb, sizeof(double) * nbas);
    cv_attn_args a = {.out = out,
                      .q = q,
                      .k = k,
                      .v = v,
                      .q_stride = qs,
                      .kv_stride = kvs,
                      .out_stride = os,
                      .T = tc->T,
                      .n_keys = tc->NK,
                      .q_pos0 = tc->q_pos0,
                      .n_heads = tc->H,
                      .n_kv_heads = tc->KVH,
                      .head_dim = tc->hd,
                      .causal = tc->causal,
                      .scale = 1.0f / sqrtf((float)tc->hd),
                      .bias = bias,
                      .stats = rc,
                      .heads = hh,
                      .heads_from = tc->T / 2,
                      .basin = hb,
                      .basin_lo = tc->NK / 3,
                      .basin_hi = 2 * tc->NK / 3};
    cv_attn_args ga = a;
    ga.out = dout, ga.q = dq, ga.k = dk, ga.v = dv, ga.bias = dbias, ga.stats = drec,
    ga.heads = dhh, ga.basin = dhb;
    for (int rep = 0; rep < 2; rep++) { /* twice: the records accumulate */
        H->attention(H, &a);
        if (rep == 1) ga.out = dout2;
        G->attention(G, &ga);
    }
    float *got = host_copy(dout, sizeof(float) * no), *got2 = host_copy(dout2, sizeof(float) * no);
    double *grec = host_copy(drec, sizeof rc);
    char what[160];
    snprintf(what, sizeof what, "attention H=%d KVH=%d hd=%d T=%d NK=%d q0=%d causal=%d bias=%d",
             tc->H, tc->KVH, tc->hd, tc->T, tc->NK, tc->q_pos0, tc->causal, tc->bias);
    ck_assert_msg(tu_check_close(what, got, out, no, 2e-5), "%s output", what);
    ck_assert_msg(memcmp(got, got2, sizeof(float) * no) == 0, "%s: two runs differ", what);
    tu_record_max("attention output", tu_compare(got, out, no).max_abs);
    ck_assert_msg(grec[CV_AS_ROWS] == rc[CV_AS_ROWS], "%s rows", what);
    ck_assert_msg(rec_close(what, grec, rc, CV_AS_SIZE, 1e-5, 0.1), "%s record", what);
    double *ghh = host_copy(dhh, sizeof(double) * nh), *ghb = host_copy(dhb, sizeof(double) * nbas);
    for (int h = 0; h < tc->H; h++) {
        const double *gr = ghh + (size_t)h * CV_AH_SIZE, *cr = hh + (size_t)h * CV_AH_SIZE;
        char hw[200];
        snprintf(hw, sizeof hw, "%s head %d", what, h);
        ck_assert_msg(gr[CV_AH_ROWS] == cr[CV_AH_ROWS], "%s rows", hw);
        ck_assert_msg(gr[CV_AH_NBAD] == cr[CV_AH_NBAD], "%s non-finite rows", hw);
        ck_assert_msg(gr[CV_AH_ONEKEY] == cr[CV_AH_ONEKEY], "%s one-key rows", hw);
        ck_assert_msg(rec_close(hw, gr, cr, CV_AH_SIZE, 1e-5, 0.1), "%s head record", hw);
        ck_assert_msg(rec_close(hw, ghb + 2 * h, hb + 2 * h, 2, 1e-5, 0.1), "%s basin", hw);
    }
    G->free(G, dhh), G->free(G, dhb);
    free(hh), free(hb), free(ghh), free(ghb);
    G->free(G, dq), G->free(G, dk), G->free(G, dv), G->free(G, dout), G->free(G, dout2);
    G->free(G, drec);
    if (dbias) G->free(G, dbias);
    free(q), free(k), free(v), free(bias), free(out), free(got), free(got2), free(grec);
}

START_TEST(test_flash_decoding) {
    const attn_case cases[] = {
        {32, 8, 128, 1, 1, 0, 1, 0},         /* one key: one chunk of one */
        {32, 8, 128, 1, 100, 99, 1, 0},      /* two 64-key chunks, the last partial */
        {32, 8, 128, 1, 4097, 4096, 1, 0},   /* one key past a power of two */
        {32, 8, 128, 1, 12288, 12287, 1, 1}, /* 12K keys with a bias */
        {32, 8, 128, 1, 57344, 57343, 1, 0}, /* 57K keys */
        {64, 8, 128, 1, 57344, 20000, 1, 0}, /* query mid-cache: causal cut at 20001 */
        {16, 1, 64, 1, 4097, 4096, 1, 0},    /* MQA, 16 heads per kv head: two head groups */
        {12, 12, 64, 1, 37, 36, 1, 0},       /* GPT-2 decode step */
        {6, 6, 8, 1, 100, 0, 0, 1},          /* bidirectional + bias, tiny head_dim */
        {12, 4, 96, 1, 777, 776, 1, 0},      /* head_dim not a power of two */
        {2, 1, 512, 1, 3000, 2999, 1, 0},    /* head_dim 512: the largest decode tile */
        {40, 8, 128, 1, 12289, 12288, 1, 0}, /* rep 5: a partial head group */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_attention(&cases[i]);
}
END_TEST

START_TEST(test_tiled_prefill) {
    const int Ts[] = {2, 3, 7, 8, 31, 32, 33, 64, 100, 255, 256, 300};
    const int hds[] = {64, 128, 80, 256, 8};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int bias = 0; bias < 2; bias++) {
                int T = Ts[ti], hd = hds[(ti + causal + bias) % 5];
                int q0 = (ti & 1) ? 37 : 0; /* prefill continuing a cache, or from the start */
                int NK = causal ? q0 + T : T + 50;
                attn_case c = {8, 2, hd, T, NK, causal ? q0 : 0, causal, bias};
                check_attention(&c);
            }
    /* MQA, a long cache behind a short prefill, and head_dim above the tiled kernel (rows path) */
    const attn_case more[] = {{4, 1, 128, 17, 5017, 5000, 1, 0}, {2, 2, 320, 9, 40, 31, 1, 1}};
    for (size_t i = 0; i < 2; i++) check_attention(&more[i]);
}
END_TEST

/* ---- matmul: quantized GEMV at real sizes, GemmEx prefill --------------------------------- */

/* Random quantized weights built directly (no fp32 copy of a 128256 x 4096 matrix): INT8 codes
 * with scale 1/127, or NF4 codes with absmax 1 — weights in [-1, 1] either way. */
static void make_quant(cv_backend *b, cv_weight *w, cv_weight_format fmt, int N, int K,
                       unsigned seed) {
    size_t n = (size_t)N * K, bytes = fmt == CV_WFMT_INT8 ? n : (n + 1) / 2;
    size_t ns = fmt == CV_WFMT_INT8 ? (size_t)N : (n + CV_NF4_BLOCK - 1) / CV_NF4_BLOCK;
    unsigned char *data = malloc(bytes);
    float *scales = malloc(sizeof(float) * ns);
    ck_assert_ptr_nonnull(data);
    ck_assert_ptr_nonnull(scales);
    for (size_t i = 0; i < bytes; i++) {
        unsigned r = lcg(&seed) >> 24;
        data[i] = (unsigned char)(fmt == CV_WFMT_INT8 && r == 128 ? 127 : r); /* no -128 code */
    }
    for (size_t i = 0; i < ns; i++)
        scales[i] = fmt == CV_WFMT_INT8 ? 1.0f / 127.0f : 0.5f + 0.5f * fabsf(frand(&seed));
    cv_error err = {0};
    ck_assert_msg(b->weight_upload_quant(b, w, data, scales, fmt, N, K, CV_NF4_BLOCK, &err) ==
                      CV_OK,
                  "%s", err.msg);
    free(data);
    free(scales);
}

static void check_quant(cv_weight_format fmt, int T, int N, int K, double tol) {
    unsigned seed = (unsigned)(N + K + T + fmt);
    cv_weight wc, wg;
    make_quant(H, &wc, fmt, N, K, 99u + (unsigned)N);
    make_quant(G, &wg, fmt, N, K, 99u + (unsigned)N);
    float *x = rand_vec((size_t)T * K, &seed, 1.0f), *bias = rand_vec((size_t)N, &seed, 1.0f);
    float *want = malloc(sizeof(float) * (size_t)T * N);
    ck_assert_ptr_nonnull(want);
    H->matmul(H, want, x, &wc, bias, T);
    float *dx = dev_copy(x, sizeof(float) * (size_t)T * K), *db = dev_copy(bias, sizeof(float) * N);
    float *dout = G->alloc(G, sizeof(float) * (size_t)T * N);
    ck_assert_ptr_nonnull(dout);
    G->matmul(G, dout, dx, &wg, db, T);
    float *got = host_copy(dout, sizeof(float) * (size_t)T * N);
    char what[128];
    snprintf(what, sizeof what, "quantized matmul %s T=%d N=%d K=%d",
             fmt == CV_WFMT_INT8 ? "INT8" : "NF4", T, N, K);
    ck_assert_msg(tu_check_close(what, got, want, (size_t)T * N, tol), "%s", what);
    tu_record_max(T > 128 ? "quantized bf16 tiles / sqrt(K)" : "quantized fp32 / sqrt(K)",
                  tu_compare(got, want, (size_t)T * N).max_abs / sqrt(K));
    G->weight_free(G, &wg);
    H->weight_free(H, &wc);
    G->free(G, dx), G->free(G, db), G->free(G, dout);
    free(x), free(bias), free(want), free(got);
}

START_TEST(test_quant_gemv_real_sizes) {
    const cv_weight_format fmts[] = {CV_WFMT_INT8, CV_WFMT_NF4};
    for (int f = 0; f < 2; f++) {
        check_quant(fmts[f], 1, 4096, 4096, 2e-5 * sqrt(4096) + 1e-6);
        check_quant(fmts[f], 5, 4096, 4096, 2e-5 * sqrt(4096) + 1e-6);
        check_quant(fmts[f], 1, 128256, 4096, 2e-5 * sqrt(4096) + 1e-6); /* Llama-3 lm head */
    }
}
END_TEST

START_TEST(test_quant_prefill_tiles) {
    const cv_weight_format fmts[] = {CV_WFMT_INT8, CV_WFMT_NF4};
    for (int f = 0; f < 2; f++) {
        /* 5000 x 4096 is two row tiles; 4200 x 4100 two NF4 tiles of a 16-row step */
        const int NK[][2] = {{5000, 4096}, {4200, 4100}, {67, 130}};
        for (int i = 0; i < 3; i++) {
            int N = NK[i][0], K = NK[i][1];
            check_quant(fmts[f], 100, N, K, 2e-5 * sqrt(K) + 1e-6);          /* fp32 tiles */
            check_quant(fmts[f], 200, N, K, ldexp(1.0, -8) * sqrt(2.0 * K)); /* bf16 tiles */
        }
    }
}
END_TEST

static void check_dense(cv_dtype dt, int T, int N, int K, double tol) {
    unsigned seed = (unsigned)(T * 3 + N + K + dt);
    void *wh = malloc(2 * (size_t)N * K);
    ck_assert_ptr_nonnull(wh);
    for (size_t i = 0; i < (size_t)N * K; i++) {
        float v = frand(&seed);
        ((uint16_t *)wh)[i] = dt == CV_DT_BF16 ? cv_f32_to_bf16(v) : cv_f32_to_f16(v);
    }
    float *x = rand_vec((size_t)T * K, &seed, 1.0f), *bias = rand_vec((size_t)N, &seed, 1.0f);
    cv_weight wc, wg;
    cv_error err = {0};
    ck_assert_int_eq(H->weight_upload(H, &wc, wh, dt, N, K, &err), CV_OK);
    ck_assert_int_eq(G->weight_upload(G, &wg, wh, dt, N, K, &err), CV_OK);
    float *want = malloc(sizeof(float) * (size_t)T * N);
    ck_assert_ptr_nonnull(want);
    H->matmul(H, want, x, &wc, bias, T);
    float *dx = dev_copy(x, sizeof(float) * (size_t)T * K), *db = dev_copy(bias, sizeof(float) * N);
    float *dout = G->alloc(G, sizeof(float) * (size_t)T * N);
    G->matmul(G, dout, dx, &wg, db, T);
    float *got = host_copy(dout, sizeof(float) * (size_t)T * N);
    char what[128];
    snprintf(what, sizeof what, "dense matmul %s T=%d N=%d K=%d", cv_dtype_name(dt), T, N, K);
    ck_assert_msg(tu_check_close(what, got, want, (size_t)T * N, tol), "%s", what);
    if (T > 128)
        tu_record_max(dt == CV_DT_BF16 ? "GemmEx bf16 / sqrt(K)" : "GemmEx f16 / sqrt(K)",
                      tu_compare(got, want, (size_t)T * N).max_abs / sqrt(K));
    G->weight_free(G, &wg);
    H->weight_free(H, &wc);
    G->free(G, dx), G->free(G, db), G->free(G, dout);
    free(wh), free(x), free(bias), free(want), free(got);
}

START_TEST(test_gemmex_prefill) {
    /* T = 128 is still the fp32-activation kernel (CPU arithmetic); T > 128 takes GemmEx */
    check_dense(CV_DT_BF16, 128, 512, 4096, 1e-5 * sqrt(4096) + 1e-6);
    check_dense(CV_DT_BF16, 129, 512, 4096, ldexp(1.0, -8) * sqrt(4096));
    check_dense(CV_DT_BF16, 300, 1000, 4096, ldexp(1.0, -8) * sqrt(4096));
    check_dense(CV_DT_BF16, 200, 67, 77, ldexp(1.0, -8) * sqrt(77));
    check_dense(CV_DT_F16, 300, 1000, 4096, ldexp(1.0, -11) * sqrt(4096));
    check_dense(CV_DT_F16, 129, 33, 100, ldexp(1.0, -11) * sqrt(100));
}
END_TEST

int main(void) {
    int skip = cuda_suite_skip("test_cuda_kernels2");
    if (skip) return skip;
    if (cuda_suite_backends("test_cuda_kernels2", &G, &H)) return EXIT_FAILURE;
    Suite *s = suite_create("cuda_kernels2");
    TCase *tc = tcase_create("vs_cpu");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_flash_decoding);
    tcase_add_test(tc, test_tiled_prefill);
    tcase_add_test(tc, test_quant_gemv_real_sizes);
    tcase_add_test(tc, test_quant_prefill_tiles);
    tcase_add_test(tc, test_gemmex_prefill);
    suite_add_tcase(s, tc);
    int failed = cuda_suite_run(s);
    tu_print_max("cuda_kernels2");
    G->destroy(G);
    H->destroy(H);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
