/* test_cuda_ops.c — every CUDA op against its CPU twin on random inputs of awkward sizes
 * (make test-cuda; needs a GPU). T in {1, 3, 17}, C in {64, 67, 768}, GQA, causal and not,
 * bias, queries in the middle of the cache, caches too long for shared memory, ties and
 * non-finite logits. Statistic records are compared field by field.
 *
 * Tolerances (inputs uniform in [-1, 1] unless said otherwise):
 *   matmul fp32 paths           1e-5 * sqrt(K) + 1e-6 (fp32 accumulation in different orders)
 *   matmul cuBLAS on F16 / BF16 4e-3 / 3e-2 * sqrt(K)   (activations rounded to the weight dtype)
 *   matmul INT8 / NF4           2e-5 * sqrt(K) + 1e-6 (same dequantized values, fp32 sums)
 *   norms, residual, attention  2e-5 abs on the outputs; records 1e-5 relative (they are sums of
 *                               those outputs, accumulated in double on both sides)
 *   activations, RoPE           2e-6 relative + 1e-6 (libm vs CUDA math: a few ulp)
 *   embedding, T5 bias, argmax, top-k ids     exact
 *   logits entropy / probs      1e-9 (same floats, double sums in another order)
 *
 * Without a GPU the suite prints "SKIP: no CUDA device" and exits 77 (the automake skip code),
 * which `make test-cuda` counts as a failure: a GPU suite that did not run has not passed. */
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

#ifdef CV_HAVE_CUDA
#endif

#include "cuda_testutil.h"

/* ---- matmul ------------------------------------------------------------------------------- */

static void *make_weight_host(cv_dtype dt, int N, int K, unsigned *seed) {
    void *buf = malloc(4 * (size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++) {
        float v = frand(seed);
        if (dt == CV_DT_F32) ((float *)buf)[i] = v;
        if (dt == CV_DT_BF16) ((uint16_t *)buf)[i] = cv_f32_to_bf16(v);
        if (dt == CV_DT_F16) ((uint16_t *)buf)[i] = cv_f32_to_f16(v);
    }
    return buf;
}

static void check_matmul(int variant) {
    const int Ts[] = {1, 3, 17};
    const int NK[][2] = {{64, 64}, {67, 67}, {768, 768}, {33, 100}, {50, 768}, {1, 17}};
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16, CV_DT_F16};
    unsigned seed = 7;
#ifdef CV_HAVE_CUDA
    ck_assert_int_eq(cv_cuda_set_variant(G, "matmul", variant), 0);
#endif
    for (size_t di = 0; di < 3; di++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < sizeof NK / sizeof NK[0]; b++)
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    int T = Ts[a], N = NK[b][0], K = NK[b][1];
                    void *wh = make_weight_host(dts[di], N, K, &seed);
                    float *x = rand_vec((size_t)T * K, &seed, 1.0f),
                          *bias = rand_vec(N, &seed, 1.0f);
                    cv_weight wc, wg;
                    cv_error err = {0};
                    ck_assert_int_eq(H->weight_upload(H, &wc, wh, dts[di], N, K, &err), CV_OK);
                    ck_assert_int_eq(G->weight_upload(G, &wg, wh, dts[di], N, K, &err), CV_OK);
                    float *want = malloc(sizeof(float) * T * N);
                    H->matmul(H, want, x, &wc, with_bias ? bias : NULL, T);
                    float *dx = dev_copy(x, sizeof(float) * T * K),
                          *db = dev_copy(bias, sizeof(float) * N);
                    float *dout = G->alloc(G, sizeof(float) * T * N);
                    G->matmul(G, dout, dx, &wg, with_bias ? db : NULL, T);
                    float *got = host_copy(dout, sizeof(float) * T * N);
                    double tol = 1e-5 * sqrt(K) + 1e-6;
                    if (variant == 2 && dts[di] == CV_DT_BF16) tol = 3e-2 * sqrt(K);
                    if (variant == 2 && dts[di] == CV_DT_F16) tol = 4e-3 * sqrt(K);
                    char what[128];
                    snprintf(what, sizeof what, "matmul v%d %s T=%d N=%d K=%d bias=%d", variant,
                             cv_dtype_name(dts[di]), T, N, K, with_bias);
                    ck_assert_msg(tu_check_close(what, got, want, (size_t)T * N, tol), "%s", what);
                    tu_record_max("matmul", tu_compare(got, want, (size_t)T * N).max_abs / sqrt(K));
                    G->weight_free(G, &wg);
                    H->weight_free(H, &wc);
                    G->free(G, dx), G->free(G, db), G->free(G, dout);
                    free(got), free(want), free(x), free(bias), free(wh);
                }
#ifdef CV_HAVE_CUDA
    cv_cuda_set_variant(G, "matmul", 0);
#endif
}

START_TEST(test_matmul_auto) {
    check_matmul(0);
}
END_TEST
START_TEST(test_matmul_kernel_all_dtypes) {
    check_matmul(1);
}
END_TEST
START_TEST(test_matmul_cublas_all_dtypes) {
    check_matmul(2);
}
END_TEST

/* gate_up_silu: the fused decode launch (T = 1, dense) and the three-op route (T = 3) against
 * the CPU twin (matmul, matmul, silu_mul), every dtype, vector and scalar paths (K = 67), and the
 * fused launch against the CUDA backend's own three ops: the same per-row arithmetic, so the
 * same bits are expected (a difference is reported with its size). Tolerance against the CPU:
 * 1e-5 K (outputs silu(g) u are products of two K-term dot products of values in [-1, 1]). */
START_TEST(test_gate_up_silu) {
    const int Ts[] = {1, 3};
    const int NK[][2] = {{64, 64}, {67, 67}, {688, 256}};
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16, CV_DT_F16};
    unsigned seed = 17;
    for (size_t di = 0; di < 3; di++)
        for (size_t a = 0; a < 2; a++)
            for (size_t b = 0; b < sizeof NK / sizeof NK[0]; b++) {
                int T = Ts[a], N = NK[b][0], K = NK[b][1];
                void *hg = make_weight_host(dts[di], N, K, &seed),
                     *hu = make_weight_host(dts[di], N, K, &seed);
                float *x = rand_vec((size_t)T * K, &seed, 1.0f);
                cv_weight cg, cu, gg, gu;
                cv_error err = {0};
                ck_assert_int_eq(H->weight_upload(H, &cg, hg, dts[di], N, K, &err), CV_OK);
                ck_assert_int_eq(H->weight_upload(H, &cu, hu, dts[di], N, K, &err), CV_OK);
                ck_assert_int_eq(G->weight_upload(G, &gg, hg, dts[di], N, K, &err), CV_OK);
                ck_assert_int_eq(G->weight_upload(G, &gu, hu, dts[di], N, K, &err), CV_OK);
                size_t n = (size_t)T * N;
                float *want = malloc(sizeof(float) * n), *ws = malloc(sizeof(float) * n);
                H->gate_up_silu(H, want, ws, x, &cg, &cu, T);
                float *dx = dev_copy(x, sizeof(float) * T * K);
                float *d1 = G->alloc(G, sizeof(float) * n), *d2 = G->alloc(G, sizeof(float) * n);
                float *d3 = G->alloc(G, sizeof(float) * n), *d4 = G->alloc(G, sizeof(float) * n);
                G->gate_up_silu(G, d1, d2, dx, &gg, &gu, T);
                G->matmul(G, d3, dx, &gg, NULL, T);
                G->matmul(G, d4, dx, &gu, NULL, T);
                G->silu_mul(G, d3, d4, n);
                float *got = host_copy(d1, sizeof(float) * n),
                      *ref = host_copy(d3, sizeof(float) * n);
                char what[128];
                snprintf(what, sizeof what, "gate_up_silu %s T=%d N=%d K=%d",
                         cv_dtype_name(dts[di]), T, N, K);
                ck_assert_msg(tu_check_close(what, got, want, n, 1e-5 * K + 1e-6), "%s", what);
                tu_diff cmp = tu_compare(got, ref, n);
                ck_assert_msg(cmp.max_abs == 0.0, "%s: fused vs unfused CUDA differ by %g", what,
                              cmp.max_abs);
                G->weight_free(G, &gg), G->weight_free(G, &gu);
                H->weight_free(H, &cg), H->weight_free(H, &cu);
                G->free(G, dx), G->free(G, d1), G->free(G, d2), G->free(G, d3), G->free(G, d4);
                free(want), free(ws), free(got), free(ref), free(x), free(hg), free(hu);
            }
}
END_TEST

/* INT8 / NF4 weights (weight_upload_quant through cv_weight_quantize on both backends): the
 * dequant-GEMV for T <= 64, dequantize + SGEMM above; K = 100 leaves the vector paths and makes
 * NF4 blocks span rows. */
START_TEST(test_matmul_quantized) {
    const int Ts[] = {1, 3, 17, 100};
    const int NK[][2] = {{64, 64}, {67, 128}, {33, 100}};
    const cv_weight_format fmts[] = {CV_WFMT_INT8, CV_WFMT_NF4};
    unsigned seed = 17;
    for (size_t f = 0; f < 2; f++)
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < 3; b++) {
                int T = Ts[a], N = NK[b][0], K = NK[b][1], with_bias = (int)((a + b) & 1);
                float *w = rand_vec((size_t)N * K, &seed, 1.0f),
                      *x = rand_vec((size_t)T * K, &seed, 1.0f);
                float *bias = rand_vec(N, &seed, 1.0f);
                cv_weight wc, wg;
                cv_error err = {0};
                ck_assert_msg(cv_weight_quantize(H, &wc, w, CV_DT_F32, N, K, fmts[f], &err) ==
                                  CV_OK,
                              "%s", err.msg);
                ck_assert_msg(cv_weight_quantize(G, &wg, w, CV_DT_F32, N, K, fmts[f], &err) ==
                                  CV_OK,
                              "%s", err.msg);
                ck_assert_int_eq(wg.format, fmts[f]);
                float *want = malloc(sizeof(float) * T * N);
                H->matmul(H, want, x, &wc, with_bias ? bias : NULL, T);
                float *dx = dev_copy(x, sizeof(float) * T * K),
                      *db = dev_copy(bias, sizeof(float) * N);
                float *dout = G->alloc(G, sizeof(float) * T * N);
                G->matmul(G, dout, dx, &wg, with_bias ? db : NULL, T);
                float *got = host_copy(dout, sizeof(float) * T * N);
                char what[128];
                snprintf(what, sizeof what, "quantized matmul %s T=%d N=%d K=%d bias=%d",
                         fmts[f] == CV_WFMT_INT8 ? "INT8" : "NF4", T, N, K, with_bias);
                ck_assert_msg(tu_check_close(what, got, want, (size_t)T * N, 2e-5 * sqrt(K) + 1e-6),
                              "%s", what);
                G->weight_free(G, &wg);
                H->weight_free(H, &wc);
                G->free(G, dx), G->free(G, db), G->free(G, dout);
                free(w), free(x), free(bias), free(want), free(got);
            }
}
END_TEST

/* ---- norms and residual add with hidden statistics ---------------------------------------- */

enum { NORM_LN, NORM_RMS, NORM_RES };

/* Run op twice into the same record (rows of a first call, then more rows): the second call
 * must merge into what the record holds. */
static void check_norm(int op, int T, int C, int with_bias, int inject_nan) {
    unsigned seed = (unsigned)(op * 1000 + T * 10 + C);
    size_t n = (size_t)T * C;
    float *x = rand_vec(n, &seed, 3.0f), *y = rand_vec(n, &seed, 1.0f);
    float *w = rand_vec(C, &seed, 1.0f), *bias = rand_vec(C, &seed, 0.5f);
    for (int c = 0; c < C; c++) x[c] += 2.0f; /* a row with a non-zero mean */
    if (inject_nan) y[n / 2] = NAN;
    size_t rs = cv_hidden_record_size(C);
    double *rc = malloc(sizeof(double) * rs);
    cv_hidden_record_reset(rc, C);
    double *drec = dev_copy(rc, sizeof(double) * rs);
    float *dx = dev_copy(x, sizeof(float) * n), *dy = dev_copy(y, sizeof(float) * n);
    float *dw = dev_copy(w, sizeof(float) * C), *dbias = dev_copy(bias, sizeof(float) * C);
    float *dout = G->alloc(G, sizeof(float) * n);
    float *out = malloc(sizeof(float) * n);
    const float eps = 1e-5f;
    for (int rep = 0; rep < 2; rep++) {
        switch (op) {
        case NORM_LN:
            H->layernorm(H, out, x, w, with_bias ? bias : NULL, T, C, eps, rc);
            G->layernorm(G, dout, dx, dw, with_bias ? dbias : NULL, T, C, eps, drec);
            break;
        case NORM_RMS:
            H->rmsnorm(H, out, x, w, T, C, eps, rc);
            G->rmsnorm(G, dout, dx, dw, T, C, eps, drec);
            break;
        default: /* in place on x: the second round adds y again */
            H->residual_add(H, x, y, T, C, rc);
            G->residual_add(G, dx, dy, T, C, drec);
            memcpy(out, x, sizeof(float) * n);
            G->copy(G, dout, dx, sizeof(float) * n);
        }
    }
    float *got = host_copy(dout, sizeof(float) * n);
    double *grec = host_copy(drec, sizeof(double) * rs);
    char what[128];
    snprintf(what, sizeof what, "%s T=%d C=%d bias=%d nan=%d",
             op == NORM_LN    ? "layernorm"
             : op == NORM_RMS ? "rmsnorm"
                              : "residual_add",
             T, C, with_bias, inject_nan);
    ck_assert_msg(tu_check_close(what, got, out, n, 2e-5 * (op == NORM_RES ? 4 : 1)), "%s output",
                  what);
    ck_assert_msg(grec[CV_HS_ROWS] == 2.0 * T, "%s rows %g", what, grec[CV_HS_ROWS]);
    /* floor: 1% of the element count, so a sum that happens to be near 0 is not held to 1e-5
     * of itself (its float noise is ~1e-7 per element; a wrong row is off by ~1 per element) */
    ck_assert_msg(rec_close(what, grec, rc, CV_HS_FIXED, 1e-5, 0.02 * (double)n), "%s record",
                  what);
    ck_assert_msg(rec_close(what, grec + CV_HS_FIXED, rc + CV_HS_FIXED, (size_t)C, 1e-5, T),
                  "%s column sums", what);
    if (inject_nan) ck_assert(isnan(grec[CV_HS_MAXABS]));
    /* the finalized numbers the trace reports */
    cv_hidden_stats hg, hc;
    cv_hidden_finalize(grec, C, NULL, &hg);
    cv_hidden_finalize(rc, C, NULL, &hc);
    if (!inject_nan) {
        tu_record_max("hidden stats (finalized)", fabs(hg.std - hc.std) / fmax(hc.std, 1e-3));
        ck_assert_msg(fabs(hg.mean - hc.mean) <= 1e-5 * fmax(fabs(hc.mean), 1e-2), "%s mean", what);
        ck_assert_msg(fabs(hg.std - hc.std) <= 1e-5 * fmax(hc.std, 1e-3), "%s std", what);
        ck_assert_msg(fabs(hg.l2_norm_mean - hc.l2_norm_mean) <= 1e-5 * hc.l2_norm_mean, "%s l2",
                      what);
    }
    G->free(G, drec), G->free(G, dx), G->free(G, dy), G->free(G, dw), G->free(G, dbias),
        G->free(G, dout);
    free(x), free(y), free(w), free(bias), free(rc), free(out), free(got), free(grec);
}

START_TEST(test_norms_with_stats) {
    const int Ts[] = {1, 3, 17}, Cs[] = {64, 67, 768};
    for (int op = 0; op < 3; op++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) check_norm(op, Ts[a], Cs[b], (a + b) & 1, 0);
    check_norm(NORM_LN, 3, 67, 1, 0);
    check_norm(NORM_LN, 2, 3000, 1, 0); /* rows wider than the block */
    check_norm(NORM_RES, 3, 67, 0, 1);  /* NaN: max|x| becomes NaN on both */
}
END_TEST

START_TEST(test_norms_without_stats) {
    unsigned seed = 3;
    int T = 17, C = 67;
    size_t n = (size_t)T * C;
    float *x = rand_vec(n, &seed, 2.0f), *w = rand_vec(C, &seed, 1.0f),
          *out = malloc(sizeof(float) * n);
    float *dx = dev_copy(x, sizeof(float) * n), *dw = dev_copy(w, sizeof(float) * C);
    float *dout = G->alloc(G, sizeof(float) * n);
    H->rmsnorm(H, out, x, w, T, C, 1e-6f, NULL);
    G->rmsnorm(G, dout, dx, dw, T, C, 1e-6f, NULL);
    float *got = host_copy(dout, sizeof(float) * n);
    ck_assert(tu_check_close("rmsnorm no stats", got, out, n, 2e-5));
    G->free(G, dx), G->free(G, dw), G->free(G, dout);
    free(x), free(w), free(out), free(got);
}
END_TEST

/* ---- element-wise ------------------------------------------------------------------------- */

static int close_rel(const char *what, const float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double tol = 2e-6 * fabs(want[i]) + 1e-6;
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            fprintf(stderr, "MISMATCH %s at %zu: got %.9g want %.9g\n", what, i, got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

START_TEST(test_activations) {
    const size_t ns[] = {1, 3 * 67, 17 * 768 + 5};
    for (size_t a = 0; a < 3; a++) {
        size_t n = ns[a];
        unsigned seed = (unsigned)n;
        float *x = rand_vec(n, &seed, 6.0f), *u = rand_vec(n, &seed, 2.0f);
        for (int act = 0; act < 4; act++) {
            float *hx = malloc(sizeof(float) * n);
            memcpy(hx, x, sizeof(float) * n);
            float *dx = dev_copy(x, sizeof(float) * n), *du = dev_copy(u, sizeof(float) * n);
            const char *name = "gelu_tanh";
            if (act == 0) H->gelu_tanh(H, hx, n), G->gelu_tanh(G, dx, n);
            if (act == 1) name = "relu", H->relu(H, hx, n), G->relu(G, dx, n);
            if (act == 2) name = "silu_mul", H->silu_mul(H, hx, u, n), G->silu_mul(G, dx, du, n);
            if (act == 3) name = "gelu_mul", H->gelu_mul(H, hx, u, n), G->gelu_mul(G, dx, du, n);
            float *got = host_copy(dx, sizeof(float) * n);
            char what[64];
            snprintf(what, sizeof what, "%s n=%zu", name, n);
            ck_assert_msg(close_rel(what, got, hx, n), "%s", what);
            G->free(G, dx), G->free(G, du);
            free(hx), free(got);
        }
        free(x), free(u);
    }
}
END_TEST

START_TEST(test_rope) {
    const int Ts[] = {1, 3, 17}, pos0s[] = {0, 5, 3000};
    const int cfg[][2] = {{4, 64}, {3, 18}, {2, 128}}; /* heads, head_dim */
    for (int a = 0; a < 3; a++)
        for (int p = 0; p < 3; p++)
            for (int c = 0; c < 3; c++) {
                int T = Ts[a], nh = cfg[c][0], hd = cfg[c][1], stride = nh * hd + 5;
                unsigned seed = (unsigned)(a * 100 + p * 10 + c);
                size_t n = (size_t)T * stride;
                float *x = rand_vec(n, &seed, 1.0f), *inv = malloc(sizeof(float) * (hd / 2));
                for (int j = 0; j < hd / 2; j++) inv[j] = (float)pow(10000.0, -2.0 * j / hd);
                float *dx = dev_copy(x, sizeof(float) * n),
                      *dinv = dev_copy(inv, sizeof(float) * (hd / 2));
                float *dx2 = dev_copy(x, sizeof(float) * n);
                int32_t *dpos = dev_copy(&pos0s[p], sizeof(int32_t));
                H->rope(H, x, T, stride, nh, hd, inv, pos0s[p], NULL);
                G->rope(G, dx, T, stride, nh, hd, dinv, pos0s[p], NULL);
                G->rope(G, dx2, T, stride, nh, hd, dinv, 1, dpos); /* pos0 ignored */
                float *got = host_copy(dx, sizeof(float) * n),
                      *got2 = host_copy(dx2, sizeof(float) * n);
                char what[96];
                snprintf(what, sizeof what, "rope T=%d heads=%d hd=%d pos0=%d", T, nh, hd,
                         pos0s[p]);
                ck_assert_msg(close_rel(what, got, x, n), "%s", what);
                ck_assert_msg(memcmp(got, got2, sizeof(float) * n) == 0, "%s: device position",
                              what);
                G->free(G, dx), G->free(G, dinv), G->free(G, dx2), G->free(G, dpos);
                free(x), free(inv), free(got), free(got2);
            }
}
END_TEST

START_TEST(test_t5_position_bias) {
    const int Ts[] = {1, 3, 17}, Ks[] = {1, 17, 40, 700}, q0s[] = {0, 7, 650};
    int Hh = 4, nb = 32, md = 128;
    unsigned seed = 11;
    float *table = rand_vec((size_t)nb * Hh, &seed, 1.0f);
    float *dtable = dev_copy(table, sizeof(float) * nb * Hh);
    for (int bidir = 0; bidir < 2; bidir++)
        for (int a = 0; a < 3; a++)
            for (int k = 0; k < 4; k++)
                for (int q = 0; q < 3; q++) {
                    int T = Ts[a], K = Ks[k];
                    size_t n = (size_t)Hh * (size_t)(T + K - 1); /* diagonals */
                    float *want = malloc(sizeof(float) * n);
                    float *dout = G->alloc(G, sizeof(float) * n);
                    H->t5_position_bias(H, want, table, Hh, T, K, q0s[q], bidir, nb, md);
                    G->t5_position_bias(G, dout, dtable, Hh, T, K, q0s[q], bidir, nb, md);
                    float *got = host_copy(dout, sizeof(float) * n);
                    ck_assert_msg(memcmp(got, want, sizeof(float) * n) == 0,
                                  "t5 bias differs: bidir=%d T=%d K=%d q0=%d", bidir, T, K, q0s[q]);
                    G->free(G, dout);
                    free(want), free(got);
                }
    G->free(G, dtable);
    free(table);
}
END_TEST

START_TEST(test_embedding) {
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16, CV_DT_F16};
    const int Ts[] = {1, 3, 17}, Cs[] = {64, 67};
    int V = 50, P = 40;
    for (size_t d = 0; d < 3; d++)
        for (int a = 0; a < 3; a++)
            for (int c = 0; c < 2; c++)
                for (int with_wpe = 0; with_wpe < 2; with_wpe++)
                    for (int tokens_on_device = 0; tokens_on_device < 2; tokens_on_device++) {
                        int T = Ts[a], C = Cs[c];
                        unsigned seed = (unsigned)(d * 7 + a * 3 + c);
                        void *wh = make_weight_host(dts[d], V, C, &seed);
                        float *ph = rand_vec((size_t)P * C, &seed, 1.0f);
                        int32_t tok[17];
                        for (int t = 0; t < T; t++) tok[t] = (t * 17 + 3) % V;
                        cv_weight hw, hp, gw, gp;
                        cv_error err = {0};
                        ck_assert_int_eq(H->weight_upload(H, &hw, wh, dts[d], V, C, &err), CV_OK);
                        ck_assert_int_eq(H->weight_upload(H, &hp, ph, CV_DT_F32, P, C, &err),
                                         CV_OK);
                        ck_assert_int_eq(G->weight_upload(G, &gw, wh, dts[d], V, C, &err), CV_OK);
                        ck_assert_int_eq(G->weight_upload(G, &gp, ph, CV_DT_F32, P, C, &err),
                                         CV_OK);
                        float scale = with_wpe ? 1.0f : 2.5f;
                        float *want = malloc(sizeof(float) * T * C);
                        H->embedding(H, want, tok, T, &hw, with_wpe ? &hp : NULL, 3, NULL, scale);
                        int32_t *dtok =
                            tokens_on_device ? dev_copy(tok, sizeof(int32_t) * T) : NULL;
                        /* device tokens come with a device position (the decode step's words):
                         * the host pos0 (0) must then be ignored */
                        const int32_t three = 3;
                        int32_t *dpos = dtok ? dev_copy(&three, sizeof three) : NULL;
                        float *dout = G->alloc(G, sizeof(float) * T * C);
                        G->embedding(G, dout, dtok ? dtok : tok, T, &gw, with_wpe ? &gp : NULL,
                                     dpos ? 0 : 3, dpos, scale);
                        if (dpos) G->free(G, dpos);
                        float *got = host_copy(dout, sizeof(float) * T * C);
                        ck_assert_msg(memcmp(got, want, sizeof(float) * T * C) == 0,
                                      "embedding %s T=%d C=%d wpe=%d dev_tokens=%d differs",
                                      cv_dtype_name(dts[d]), T, C, with_wpe, tokens_on_device);
                        if (dtok) G->free(G, dtok);
                        G->free(G, dout);
                        G->weight_free(G, &gw), G->weight_free(G, &gp);
                        H->weight_free(H, &hw), H->weight_free(H, &hp);
                        free(wh), free(ph), free(want), free(got);
                    }
}
END_TEST

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    int H, KVH, hd, T, NK, q_pos0, causal, bias;
    int offset; /* q, k, v and out start this many floats into their buffers (misalignment) */
} attn_case;

static void check_attention(const attn_case *tc, int with_probs) {
    unsigned seed = (unsigned)(tc->H * 131 + tc->T * 17 + tc->NK + tc->hd);
    int qs = tc->H * tc->hd + 3, kvs = tc->KVH * tc->hd + 5, os = tc->H * tc->hd + 1;
    const size_t off = (size_t)tc->offset;
    size_t nq = (size_t)tc->T * qs + off, nkv = (size_t)tc->NK * kvs + off,
           no = (size_t)tc->T * os + off;
    size_t nb = (size_t)tc->H * (size_t)(tc->T + tc->NK - 1); /* the bias diagonals */
    float *q = rand_vec(nq, &seed, 1.0f), *k = rand_vec(nkv, &seed, 1.0f),
          *v = rand_vec(nkv, &seed, 1.0f);
    float *bias = tc->bias ? rand_vec(nb, &seed, 2.0f) : NULL;
    float *out = calloc(no, sizeof(float)), *probs = with_probs ? calloc(nb, sizeof(float)) : NULL;
    double rc[CV_AS_SIZE], *grec;
    cv_attn_record_reset(rc);
    float *dq = dev_copy(q, sizeof(float) * nq), *dk = dev_copy(k, sizeof(float) * nkv);
    float *dv = dev_copy(v, sizeof(float) * nkv),
          *dbias = bias ? dev_copy(bias, sizeof(float) * nb) : NULL;
    float *dout = dev_copy(out, sizeof(float) * no),
          *dprobs = with_probs ? G->alloc(G, sizeof(float) * nb) : NULL;
    double *drec = dev_copy(rc, sizeof rc);
    /* health records: per-head (the last row when causal, every row otherwise) and basins */
    size_t nh = (size_t)tc->H * CV_AH_SIZE, nbas = (size_t)tc->H * 2;
    double *hh = malloc(sizeof(double) * nh), *hb = calloc(nbas, sizeof(double));
    for (int h = 0; h < tc->H; h++) cv_head_record_reset(hh + (size_t)h * CV_AH_SIZE);
    double *dhh = dev_copy(hh, sizeof(double) * nh), *dhb = dev_copy(hb, sizeof(double) * nbas);
    cv_attn_args a = {.out = out + off,
                      .q = q + off,
                      .k = k + off,
                      .v = v + off,
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
                      .probs = probs,
                      .heads = hh,
                      .heads_from = tc->causal ? tc->T - 1 : 0,
                      .basin = hb,
                      .basin_lo = tc->NK / 3,
                      .basin_hi = 2 * tc->NK / 3};
    cv_attn_args ga = a;
    ga.out = dout + off, ga.q = dq + off, ga.k = dk + off, ga.v = dv + off, ga.bias = dbias,
    ga.stats = drec, ga.probs = dprobs, ga.heads = dhh, ga.basin = dhb;
    for (int rep = 0; rep < 2; rep++) { /* twice: the record accumulates */
        H->attention(H, &a);
        G->attention(G, &ga);
    }
    float *got = host_copy(dout, sizeof(float) * no);
    grec = host_copy(drec, sizeof rc);
    char what[160];
    snprintf(what, sizeof what,
             "attention H=%d KVH=%d hd=%d T=%d NK=%d q0=%d causal=%d bias=%d probs=%d off=%d",
             tc->H, tc->KVH, tc->hd, tc->T, tc->NK, tc->q_pos0, tc->causal, tc->bias, with_probs,
             tc->offset);
    ck_assert_msg(tu_check_close(what, got, out, no, 2e-5), "%s output", what);
    tu_record_max("attention output", tu_compare(got, out, no).max_abs);
    if (with_probs) {
        float *gp = host_copy(dprobs, sizeof(float) * nb);
        ck_assert_msg(tu_check_close(what, gp, probs, nb, 2e-6), "%s probs", what);
        free(gp);
    }
    ck_assert_msg(grec[CV_AS_ROWS] == rc[CV_AS_ROWS], "%s rows", what);
    ck_assert_msg(rec_close(what, grec, rc, CV_AS_SIZE, 1e-5, 0.1), "%s record", what);
    double *ghh = host_copy(dhh, sizeof(double) * nh), *ghb = host_copy(dhb, sizeof(double) * nbas);
    ck_assert_msg(rec_close(what, ghh, hh, nh, 1e-5, 0.1), "%s head records", what);
    ck_assert_msg(rec_close(what, ghb, hb, nbas, 1e-5, 0.1), "%s basin sums", what);
    G->free(G, dhh), G->free(G, dhb);
    free(hh), free(hb), free(ghh), free(ghb);
    G->free(G, dq), G->free(G, dk), G->free(G, dv), G->free(G, dout), G->free(G, drec);
    if (dbias) G->free(G, dbias);
    if (dprobs) G->free(G, dprobs);
    free(q), free(k), free(v), free(bias), free(out), free(probs), free(got), free(grec);
}

START_TEST(test_attention) {
    const attn_case cases[] = {
        {12, 12, 64, 1, 37, 36, 1, 0, 0}, /* GPT-2 decode step */
        {8, 2, 32, 17, 17, 0, 1, 0, 0},   /* GQA prefill */
        {4, 1, 16, 3, 20, 17, 1, 0, 0},   /* MQA, queries mid-cache */
        {6, 6, 8, 5, 9, 0, 0, 1, 0},      /* bidirectional + T5 bias, tiny head_dim */
        {6, 3, 96, 3, 67, 64, 1, 1, 0},   /* causal + bias, head_dim not dividing the block */
        {2, 2, 128, 3, 1000, 0, 0, 0, 0}, /* long non-causal */
        {2, 1, 512, 1, 5, 4, 1, 0, 0},    /* head_dim above the block size */
        {4, 4, 64, 17, 40, 23, 1, 0, 0},  /* prefill continuing a cache */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_attention(&cases[i], 0);
        check_attention(&cases[i], 1);
    }
}
END_TEST

/* A decode step at a device position (cv_attn_args.dpos): the launch is sized for the whole
 * cache (n_keys = capacity), the kernels read the step's position on the device, the chunks past
 * it do nothing (the cache holds NaN there, so a key read beyond the step would show). Against
 * the CPU at the host position; kv_store appends the step's rows at the device position. */
START_TEST(test_attention_device_position) {
    const int cases[][5] = {/* H, KVH, hd, keys, capacity */
                            {12, 12, 64, 37, 1024},
                            {32, 8, 128, 3000, 4096},
                            {8, 1, 64, 1, 300},
                            {4, 4, 32, 700, 701}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int Hh = cases[ci][0], KVH = cases[ci][1], hd = cases[ci][2], NK = cases[ci][3],
                  cap = cases[ci][4], kvn = KVH * hd;
        unsigned seed = (unsigned)(ci * 7 + 1);
        float *q = rand_vec((size_t)Hh * hd, &seed, 1.0f);
        float *k = rand_vec((size_t)cap * kvn, &seed, 1.0f),
              *v = rand_vec((size_t)cap * kvn, &seed, 1.0f);
        for (size_t i = (size_t)NK * kvn; i < (size_t)cap * kvn; i++) k[i] = v[i] = NAN;
        /* the last key arrives through kv_store */
        float *kn = rand_vec((size_t)kvn, &seed, 1.0f), *vn = rand_vec((size_t)kvn, &seed, 1.0f);
        float *dk = dev_copy(k, sizeof(float) * cap * kvn),
              *dv = dev_copy(v, sizeof(float) * cap * kvn);
        float *dkn = dev_copy(kn, sizeof(float) * kvn), *dvn = dev_copy(vn, sizeof(float) * kvn);
        memcpy(k + (size_t)(NK - 1) * kvn, kn, sizeof(float) * kvn);
        memcpy(v + (size_t)(NK - 1) * kvn, vn, sizeof(float) * kvn);
        int32_t pos = NK - 1, *dpos = dev_copy(&pos, sizeof pos);
        G->kv_store(G, dk, CV_DT_F32, dkn, 1, KVH, hd, cap, 0,
                    dpos); /* interleaved, pos0 ignored */
        G->kv_store(G, dv, CV_DT_F32, dvn, 1, KVH, hd, cap, 0, dpos);
        float *gk = host_copy(dk, sizeof(float) * cap * kvn);
        ck_assert_int_eq(memcmp(gk + (size_t)pos * kvn, kn, sizeof(float) * kvn), 0);
        free(gk);
        float *out = calloc((size_t)Hh * hd, sizeof(float));
        double rc[CV_AS_SIZE], hh[64 * CV_AH_SIZE];
        cv_attn_record_reset(rc);
        for (int h = 0; h < Hh; h++) cv_head_record_reset(hh + (size_t)h * CV_AH_SIZE);
        float *dq = dev_copy(q, sizeof(float) * Hh * hd),
              *dout = G->alloc(G, sizeof(float) * Hh * hd);
        double *drec = dev_copy(rc, sizeof rc),
               *dhh = dev_copy(hh, sizeof(double) * Hh * CV_AH_SIZE);
        cv_attn_args a = {.out = out,
                          .q = q,
                          .k = k,
                          .v = v,
                          .q_stride = Hh * hd,
                          .kv_stride = kvn,
                          .out_stride = Hh * hd,
                          .T = 1,
                          .n_keys = NK,
                          .q_pos0 = NK - 1,
                          .n_heads = Hh,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = 1,
                          .scale = 1.0f / sqrtf((float)hd),
                          .stats = rc,
                          .heads = hh};
        H->attention(H, &a);
        cv_attn_args ga = a;
        ga.out = dout, ga.q = dq, ga.k = dk, ga.v = dv, ga.stats = drec, ga.heads = dhh;
        ga.dpos = dpos, ga.n_keys = cap, ga.q_pos0 = cap - 1;
        G->attention(G, &ga);
        float *got = host_copy(dout, sizeof(float) * Hh * hd);
        double *grec = host_copy(drec, sizeof rc),
               *ghh = host_copy(dhh, sizeof(double) * Hh * CV_AH_SIZE);
        char what[128];
        snprintf(what, sizeof what,
                 "attention at a device position H=%d KVH=%d hd=%d keys=%d cap=%d", Hh, KVH, hd, NK,
                 cap);
        ck_assert_msg(tu_check_close(what, got, out, (size_t)Hh * hd, 2e-5), "%s output", what);
        ck_assert_msg(rec_close(what, grec, rc, CV_AS_SIZE, 1e-5, 0.1), "%s record", what);
        ck_assert_msg(rec_close(what, ghh, hh, (size_t)Hh * CV_AH_SIZE, 1e-5, 0.1), "%s heads",
                      what);
        G->free(G, dk), G->free(G, dv), G->free(G, dkn), G->free(G, dvn), G->free(G, dpos);
        G->free(G, dq), G->free(G, dout), G->free(G, drec), G->free(G, dhh);
        free(q), free(k), free(v), free(kn), free(vn), free(out), free(got), free(grec), free(ghh);
    }
}
END_TEST

START_TEST(test_attention_long_cache) {
    /* scores no longer fit in shared memory: the kernel keeps them in global scratch */
    const attn_case c = {2, 1, 64, 1, 70000, 69999, 1, 0, 0};
    check_attention(&c, 1);
}
END_TEST

/* 12K-57K keys: the row's scores in dynamic shared memory above the 48 KiB default (12,288 fp32
 * scores; cudaFuncSetAttribute opt-in), up to the opt-in limit (227 KiB on H100 / H200: about
 * 57,600 keys at head_dim 64), and just past it into global scratch; decode and a 3-row prefill
 * (rows x n_keys scores in scratch), GQA, with statistics and probabilities. */
START_TEST(test_attention_12k_57k_keys) {
    const attn_case cases[] = {
        {2, 1, 64, 1, 12000, 11999, 1, 0, 0}, /* under 48 KiB */
        {2, 1, 64, 1, 12400, 12399, 1, 0, 0}, /* just over 48 KiB: the opt-in */
        {4, 2, 64, 1, 30000, 29999, 1, 0, 0}, /* mid-range */
        {2, 1, 64, 3, 57000, 56997, 1, 0, 0}, /* near the opt-in limit, prefill rows */
        {2, 1, 64, 3, 57800, 57797, 1, 0, 0}, /* just past it: global scratch, 3 rows */
        {2, 2, 128, 1, 56000, 0, 0, 0, 0},    /* head_dim 128 (larger base): global scratch */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_attention(&cases[i], 1);
}
END_TEST

/* ---- misaligned pointers ------------------------------------------------------------------ */

/* The families hand ops pointers into the middle of buffers (head h of q at h * head_dim, the
 * thirds of a fused qkv row), so no op may assume more than 4-byte alignment of an activation:
 * every pointer here starts 1 float (or 3) into its buffer, vs the CPU twin at the same offsets.
 * Weights come from weight_upload and stay aligned. */
START_TEST(test_misaligned_pointers) {
    unsigned seed = 4242;
    cv_error err;
    const int K = 68, N = 67, C = 67;
    float *wh = rand_vec((size_t)N * K, &seed, 0.1f);
    cv_weight gw, hw;
    ck_assert_int_eq(G->weight_upload(G, &gw, wh, CV_DT_F32, N, K, &err), CV_OK);
    ck_assert_int_eq(H->weight_upload(H, &hw, wh, CV_DT_F32, N, K, &err), CV_OK);
    const int Ts[] = {1, 3, 17}; /* decode kernel, its multi-row pass, cuBLAS */
    for (int off = 1; off <= 3; off += 2)
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti];
            size_t nx = (size_t)T * K + off, no = (size_t)T * N + off;
            float *x = rand_vec(nx, &seed, 1.0f), *bias = rand_vec((size_t)N + off, &seed, 0.5f);
            float *want = calloc(no, sizeof(float));
            float *dx = dev_copy(x, nx * sizeof(float)), *db = dev_copy(bias, (N + off) * 4u);
            float *dout = G->alloc(G, no * sizeof(float));
            H->matmul(H, want + off, x + off, &hw, bias + off, T);
            G->matmul(G, dout + off, dx + off, &gw, db + off, T);
            float *got = host_copy(dout, no * sizeof(float));
            char what[96];
            snprintf(what, sizeof what, "misaligned matmul T=%d off=%d", T, off);
            ck_assert_msg(tu_check_close(what, got + off, want + off, no - off, 1e-5), "%s", what);
            free(got);

            /* layernorm / rmsnorm / residual_add over (T, C) rows at the same offset */
            size_t nc = (size_t)T * C + off;
            float *y = rand_vec(nc, &seed, 1.0f), *g = rand_vec((size_t)C + off, &seed, 1.0f);
            float *hn = calloc(nc, sizeof(float));
            float *dy = dev_copy(y, nc * 4), *dg = dev_copy(g, (C + off) * 4u);
            float *dn = G->alloc(G, nc * 4);
            H->layernorm(H, hn + off, y + off, g + off, g + off, T, C, 1e-5f, NULL);
            G->layernorm(G, dn + off, dy + off, dg + off, dg + off, T, C, 1e-5f, NULL);
            got = host_copy(dn, nc * 4);
            snprintf(what, sizeof what, "misaligned layernorm T=%d off=%d", T, off);
            ck_assert_msg(tu_check_close(what, got + off, hn + off, nc - off, 1e-5), "%s", what);
            free(got);
            H->rmsnorm(H, hn + off, y + off, g + off, T, C, 1e-6f, NULL);
            G->rmsnorm(G, dn + off, dy + off, dg + off, T, C, 1e-6f, NULL);
            got = host_copy(dn, nc * 4);
            snprintf(what, sizeof what, "misaligned rmsnorm T=%d off=%d", T, off);
            ck_assert_msg(tu_check_close(what, got + off, hn + off, nc - off, 1e-5), "%s", what);
            free(got);
            H->residual_add(H, hn + off, y + off, T, C, NULL);
            G->residual_add(G, dn + off, dy + off, T, C, NULL);
            got = host_copy(dn, nc * 4);
            snprintf(what, sizeof what, "misaligned residual_add T=%d off=%d", T, off);
            ck_assert_msg(tu_check_close(what, got + off, hn + off, nc - off, 1e-6), "%s", what);
            free(got);

            /* argmax over a row that starts off the 16-byte grid */
            int V = 5001 + T;
            float *lg = rand_vec((size_t)V + off, &seed, 4.0f);
            float *dl = dev_copy(lg, ((size_t)V + off) * 4);
            ck_assert_int_eq(G->argmax(G, dl + off, V), H->argmax(H, lg + off, V));
            G->free(G, dl), free(lg);
            G->free(G, dx), G->free(G, db), G->free(G, dout), G->free(G, dy), G->free(G, dg);
            G->free(G, dn);
            free(x), free(bias), free(want), free(y), free(g), free(hn);
        }
    G->weight_free(G, &gw), H->weight_free(H, &hw);
    free(wh);
    /* attention with q, k, v and out one and three floats into their buffers */
    const attn_case cases[] = {
        {12, 12, 64, 1, 37, 36, 1, 0, 1},
        {8, 2, 32, 17, 17, 0, 1, 0, 3},
        {6, 3, 96, 3, 67, 64, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_attention(&cases[i], 1);
    ck_assert_int_eq(G->status(G, &err), CV_OK);
}
END_TEST

/* ---- health ops --------------------------------------------------------------------------- */

START_TEST(test_row_cos_and_target_logprob) {
    unsigned seed = 99;
    const int T = 17, C = 67, V = 5003;
    float *a = rand_vec((size_t)T * C, &seed, 1.0f), *b = rand_vec((size_t)T * C, &seed, 1.0f);
    for (int c = 0; c < C; c++) a[c] = 0.0f; /* a zero row: the 1e-8 floor */
    double want = 0.5, *dacc = dev_copy(&want, sizeof want);
    float *da = dev_copy(a, sizeof(float) * T * C), *db = dev_copy(b, sizeof(float) * T * C);
    H->row_cos(H, &want, a, b, T, C);
    G->row_cos(G, dacc, da, db, T, C);
    double *got = host_copy(dacc, sizeof(double));
    ck_assert_msg(fabs(*got - want) <= 1e-12, "row_cos %.17g vs %.17g", *got, want);
    float *l = rand_vec((size_t)T * V, &seed, 8.0f);
    int32_t tg[17];
    for (int t = 0; t < T; t++) tg[t] = (t * 977) % V;
    l[3 * V + 5] = NAN; /* a NaN row gives NaN */
    double wl[17], *dout = G->alloc(G, sizeof(double) * T);
    float *dl = dev_copy(l, sizeof(float) * T * V);
    H->target_logprob(H, wl, l, T, V, tg);
    G->target_logprob(G, dout, dl, T, V, tg);
    double *gl = host_copy(dout, sizeof(double) * T);
    for (int t = 0; t < T; t++)
        ck_assert_msg(isnan(wl[t]) ? isnan(gl[t]) : fabs(gl[t] - wl[t]) <= 1e-6,
                      "target_logprob row %d: %.17g vs %.17g", t, gl[t], wl[t]);
    ck_assert(isnan(gl[3]));
    G->free(G, dacc), G->free(G, da), G->free(G, db), G->free(G, dout), G->free(G, dl);
    free(a), free(b), free(got), free(l), free(gl);
}
END_TEST

/* ---- step boundary: the arena reset and the greedy choice on the device -------------------- */

START_TEST(test_stats_reset_and_pick_greedy) {
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, 5, 67, 1, 10);
    cv_stats_layout_health(&lay, 6, 1, 40);
    size_t n = lay.total;
    double *junk = malloc(sizeof(double) * n), *want = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) junk[i] = (double)i * 0.5 - 3.0;
    memcpy(want, junk, sizeof(double) * n);
    cv_stats_arena_reset(want, &lay);
    double *d = dev_copy(junk, sizeof(double) * n);
    G->stats_reset(G, d, &lay);
    double *got = host_copy(d, sizeof(double) * n);
    ck_assert_msg(memcmp(got, want, sizeof(double) * n) == 0, "stats_reset differs from the CPU");
    unsigned seed = 5;
    const int V = 50257;
    float *l = rand_vec(V, &seed, 4.0f);
    l[777] = 9.0f, l[778] = 9.0f; /* a tie: the lower id */
    float *dl = dev_copy(l, sizeof(float) * V);
    double hs[CV_STEP_SLOTS] = {0}, *ds = dev_copy(hs, sizeof hs);
    int32_t hstep[CV_SP_WORDS] = {5, 41, 0, 0}, *dstep = dev_copy(hstep, sizeof hstep);
    H->pick_greedy(H, l, V, hs, hstep);
    G->pick_greedy(G, dl, V, ds, dstep);
    double *gs = host_copy(ds, sizeof hs);
    int32_t *gstep = host_copy(dstep, sizeof hstep);
    ck_assert_int_eq((int)gs[CV_STEP_TOKEN], 777);
    ck_assert_int_eq((int)gs[CV_STEP_TOKEN], (int)hs[CV_STEP_TOKEN]);
    ck_assert(gs[CV_STEP_LOGIT] == hs[CV_STEP_LOGIT]);
    /* the device-token loop: the choice becomes the next input, one position on */
    ck_assert_int_eq(gstep[CV_SP_TOKEN], 777);
    ck_assert_int_eq(gstep[CV_SP_POS], 42);
    ck_assert_int_eq(hstep[CV_SP_TOKEN], 777);
    ck_assert_int_eq(hstep[CV_SP_POS], 42);
    /* no arena (greedy without statistics): only the step words */
    G->pick_greedy(G, dl, V, NULL, dstep);
    free(gstep);
    gstep = host_copy(dstep, sizeof hstep);
    ck_assert_int_eq(gstep[CV_SP_TOKEN], 777);
    ck_assert_int_eq(gstep[CV_SP_POS], 43);
    G->free(G, d), G->free(G, dl), G->free(G, ds), G->free(G, dstep);
    free(junk), free(want), free(got), free(l), free(gs), free(gstep);
}
END_TEST

/* ---- logits ------------------------------------------------------------------------------- */

static void check_logits(const float *x, int V, int k, const char *what) {
    size_t rsz = cv_logits_record_size(CV_TOPK_MAX);
    double *want = calloc(rsz, sizeof(double)), *zero = calloc(rsz, sizeof(double));
    H->logits_stats(H, want, x, V, k);
    float *dx = dev_copy(x, sizeof(float) * V);
    double *drec = dev_copy(zero, sizeof(double) * rsz);
    G->logits_stats(G, drec, dx, V, k);
    double *got = host_copy(drec, sizeof(double) * rsz);
    ck_assert_msg(got[CV_LS_V] == want[CV_LS_V], "%s: V", what);
    ck_assert_msg(got[CV_LS_K] == want[CV_LS_K], "%s: k %g vs %g", what, got[CV_LS_K],
                  want[CV_LS_K]);
    ck_assert_msg(rec_close(what, got + CV_LS_ENTROPY, want + CV_LS_ENTROPY, 1, 1e-9, 1e-3),
                  "%s: entropy", what);
    for (int i = 0; i < (int)want[CV_LS_K]; i++) {
        ck_assert_msg(got[CV_LS_FIXED + 2 * i] == want[CV_LS_FIXED + 2 * i], "%s: id %d: %g vs %g",
                      what, i, got[CV_LS_FIXED + 2 * i], want[CV_LS_FIXED + 2 * i]);
        ck_assert_msg(rec_close(what, got + CV_LS_FIXED + 2 * i + 1, want + CV_LS_FIXED + 2 * i + 1,
                                1, 1e-9, 1e-12),
                      "%s: prob %d", what, i);
    }
    int32_t ga = G->argmax(G, dx, V), ha = H->argmax(H, x, V);
    ck_assert_msg(ga == ha, "%s: argmax %d vs %d", what, ga, ha);
    G->free(G, dx), G->free(G, drec);
    free(want), free(zero), free(got);
}

START_TEST(test_logits_stats_and_argmax) {
    const int Vs[] = {1, 7, 4096, 4097, 50257, 128256, 300000};
    const int ks[] = {0, 1, 5, 64};
    for (size_t a = 0; a < sizeof Vs / sizeof Vs[0]; a++) {
        int V = Vs[a];
        unsigned seed = (unsigned)V;
        float *x = rand_vec((size_t)V, &seed, 8.0f);
        float *tied = malloc(sizeof(float) * V);
        for (int i = 0; i < V; i++) tied[i] = roundf(x[i] * 2.0f) * 0.25f; /* many exact ties */
        for (size_t b = 0; b < 4; b++) {
            char what[96];
            snprintf(what, sizeof what, "logits V=%d k=%d", V, ks[b]);
            check_logits(x, V, ks[b], what);
            snprintf(what, sizeof what, "logits (ties) V=%d k=%d", V, ks[b]);
            check_logits(tied, V, ks[b], what);
        }
        free(x), free(tied);
    }
}
END_TEST

START_TEST(test_logits_nonfinite) {
    int V = 9000;
    unsigned seed = 5;
    float *x = rand_vec((size_t)V, &seed, 4.0f);
    for (int i = 0; i < V; i += 3) x[i] = -INFINITY; /* masked tokens: never listed */
    check_logits(x, V, 64, "logits with -inf");
    float few[7] = {-INFINITY, 1.0f, -INFINITY, 1.0f, -0.0f, 0.0f, -INFINITY};
    check_logits(few, 7, 64, "fewer finite logits than k"); /* also -0 / +0 and a tie */
    x[4500] = NAN;
    check_logits(x, V, 10, "logits with NaN");
    x[4500] = INFINITY;
    check_logits(x, V, 10, "logits with +inf");
    x[0] = NAN; /* argmax: the CPU loop keeps index 0 */
    check_logits(x, V, 3, "NaN at index 0");
    float all_masked[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    check_logits(all_masked, 5, 3, "all masked");
    free(x);
}
END_TEST

int main(void) {
    int skip = cuda_suite_skip("test_cuda_ops");
    if (skip) return skip;
    if (cuda_suite_backends("test_cuda_ops", &G, &H)) return EXIT_FAILURE;
    Suite *s = suite_create("cuda_ops");
    TCase *tc = tcase_create("vs_cpu");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_matmul_auto);
    tcase_add_test(tc, test_matmul_kernel_all_dtypes);
    tcase_add_test(tc, test_matmul_cublas_all_dtypes);
    tcase_add_test(tc, test_matmul_quantized);
    tcase_add_test(tc, test_gate_up_silu);
    tcase_add_test(tc, test_norms_with_stats);
    tcase_add_test(tc, test_norms_without_stats);
    tcase_add_test(tc, test_activations);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_t5_position_bias);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_attention);
    tcase_add_test(tc, test_attention_long_cache);
    tcase_add_test(tc, test_attention_12k_57k_keys);
    tcase_add_test(tc, test_misaligned_pointers);
    tcase_add_test(tc, test_logits_stats_and_argmax);
    tcase_add_test(tc, test_logits_nonfinite);
    tcase_add_test(tc, test_row_cos_and_target_logprob);
    tcase_add_test(tc, test_stats_reset_and_pick_greedy);
    tcase_add_test(tc, test_attention_device_position);
    suite_add_tcase(s, tc);
    int failed = cuda_suite_run(s);
    tu_print_max("cuda_ops");
    G->destroy(G);
    H->destroy(H);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
