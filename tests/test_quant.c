/* test_quant.c — int8 / NF4 weight quantization (src/quant, issue 11).
 *
 *  - NF4 against tests/fixtures/quant/nf4_ref.safetensors (tests/ref/gen_nf4_ref.py: bitsandbytes'
 *    CUDA algorithm re-implemented in numpy): packed codes and absmax bit-exact, dequantized values
 *    within one fp32 rounding; cases cover rows aligned with blocks, blocks spanning rows with an
 *    odd element count, values exactly on the decision thresholds, an all-zero block, rows = 1.
 *  - int8 against the same fixture (codes exact) and the round-trip bound |w - dq| <= scale / 2.
 *  - the nibble order (first value in the high nibble).
 *  - quantized matmul: AVX-512 path vs portable vs naive twin vs dequantize-then-dense matmul;
 *    the opt-in int8-activation VNNI path equal to its naive twin and within the activation
 *    rounding bound of the fp32-activation result.
 *  - every decoder fixture family (gpt2-tiny, llama-tiny, llama-tiny-tied-bf16) loaded with INT8
 *    and NF4, on the first reference prompt (prefill, logits at every position, statistic records):
 *    (1) against the fp32 run of a copy of the checkpoint whose block linears hold their
 *        quantize-dequantize values: equal up to fp32 summation order (max |dlogit| <= 1e-4 of
 *        max |logit|; measured ~5e-6 absolute), which proves that every block linear and nothing
 *        else goes through the quantized path, and that the path is right;
 *    (2) against the fp32 run of the original weights: the quantization error itself, bounded by
 *        the tolerances below (about 1.5-2x what was measured when they were chosen: int8
 *        max|dlogit|/max|logit| 0.020, top-1 100%, hidden stats 0.0074, attention entropy 0.0011,
 *        logits entropy 0.049; int8 with int8 activations (VNNI, opt-in) 0.048, 100%, 0.021,
 *        0.0025, 0.072; NF4 0.30, top-1 42-92%, 0.17, 0.024, 0.57).
 *    NF4 rounds Gaussian weights with ~9% relative RMS error (int8: ~0.6%, measured with
 *    tests/ref/gen_nf4_ref.py's functions); on these 64-wide, 2-layer random models that moves
 *    logits by up to 30% of their range and flips near-tied argmaxes, so the NF4 bounds are loose
 *    by necessity; (1) is the exactness check.
 *    Hidden statistics error = max over layers of |dmean| / std and the relative error of std,
 *    mean row L2 norm and max |x|; attention = |d entropy mean|, |d entropy min| (nats). */
#include "corevital/model.h"
#include "corevital/quant.h"
#include "testutil.h"

#include "backend/cpu_internal.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_PATH "tests/fixtures/quant/nf4_ref.safetensors"

/* quantized vs fp32 (see above): max|dlogit| as a fraction of max|logit|, minimum share of
 * positions whose argmax agrees, hidden statistics, attention entropies (nats), logits entropy */
#define INT8_LOGIT_TOL      0.04
#define INT8_TOP1_MIN       0.9
#define INT8_HIDDEN_TOL     0.02
#define INT8_ATTN_TOL       0.005
#define INT8_ENTROPY_TOL    0.1
#define INT8ACT_LOGIT_TOL   0.08
#define INT8ACT_TOP1_MIN    0.9
#define INT8ACT_HIDDEN_TOL  0.04
#define INT8ACT_ATTN_TOL    0.005
#define INT8ACT_ENTROPY_TOL 0.15
#define NF4_LOGIT_TOL       0.45
#define NF4_TOP1_MIN        0.35
#define NF4_HIDDEN_TOL      0.3
#define NF4_ATTN_TOL        0.05
#define NF4_ENTROPY_TOL     1.0

static uint32_t rng_state = 12345u;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0)) - 1.0f;
}
static float grand(void) { /* roughly Gaussian, variance 1 */
    float s = 0;
    for (int i = 0; i < 4; i++) s += frand();
    return s * 0.866f;
}

static const void *ref_raw(const cv_st *ref, const char *name, cv_dtype dt, size_t *numel) {
    const cv_st_tensor *t = cv_st_find(ref, name);
    ck_assert_msg(t != NULL, "fixture tensor %s missing", name);
    ck_assert_msg(t->dtype == dt, "fixture tensor %s has dtype %s", name, cv_dtype_name(t->dtype));
    if (numel) *numel = t->numel;
    return t->data;
}

/* ---- NF4 and int8 against the reference fixture --------------------------------------------- */

START_TEST(test_nf4_tables) {
    cv_st *ref;
    cv_error err = {0};
    ck_assert_msg(cv_st_open(REF_PATH, &ref, &err) == CV_OK, "%s", err.msg);
    float *code = tu_ref_f32(ref, "nf4.code", NULL), *thr = tu_ref_f32(ref, "nf4.threshold", NULL);
    ck_assert_int_eq(memcmp(code, cv_nf4_code, sizeof cv_nf4_code), 0);
    ck_assert_int_eq(memcmp(thr, cv_nf4_threshold, sizeof cv_nf4_threshold), 0);
    ck_assert(cv_nf4_code[7] == 0.0f);
    /* the tree is monotone and maps every code value to itself */
    for (int i = 0; i < 16; i++) ck_assert_int_eq(cv_nf4_index(cv_nf4_code[i]), i);
    for (int i = 0; i < 15; i++) {
        ck_assert_int_eq(cv_nf4_index(cv_nf4_threshold[i]), i); /* strict '>': lower code */
        ck_assert_int_eq(cv_nf4_index(nextafterf(cv_nf4_threshold[i], 2.0f)), i + 1);
    }
    ck_assert_int_eq(cv_nf4_index(NAN), 0);
    free(code);
    free(thr);
    cv_st_close(ref);
}
END_TEST

START_TEST(test_nf4_reference) {
    cv_st *ref;
    cv_error err = {0};
    ck_assert_msg(cv_st_open(REF_PATH, &ref, &err) == CV_OK, "%s", err.msg);
    const char *cases[] = {"a", "b", "c", "d"};
    char key[64];
    for (size_t ci = 0; ci < 4; ci++) {
        const char *c = cases[ci];
        const cv_st_tensor *wt = cv_st_find(ref, (snprintf(key, sizeof key, "%s.w", c), key));
        ck_assert_ptr_nonnull(wt);
        int64_t n = (int64_t)wt->numel;
        float *w = tu_ref_f32(ref, key, NULL);
        size_t nbytes, nblk, ndq;
        const uint8_t *codes =
            ref_raw(ref, (snprintf(key, sizeof key, "%s.codes", c), key), CV_DT_U8, &nbytes);
        float *absmax = tu_ref_f32(ref, (snprintf(key, sizeof key, "%s.absmax", c), key), &nblk);
        float *dq = tu_ref_f32(ref, (snprintf(key, sizeof key, "%s.dq", c), key), &ndq);
        ck_assert_uint_eq(nbytes, cv_nf4_bytes(n));
        ck_assert_uint_eq(nblk, cv_nf4_blocks(n, CV_NF4_BLOCK));
        uint8_t *packed = malloc(nbytes);
        float *am = malloc(nblk * sizeof(float)), *back = malloc((size_t)n * sizeof(float));
        cv_quantize_nf4(packed, am, w, n, CV_NF4_BLOCK);
        for (size_t i = 0; i < nbytes; i++)
            ck_assert_msg(packed[i] == codes[i], "case %s byte %zu: got 0x%02x want 0x%02x", c, i,
                          packed[i], codes[i]);
        ck_assert_msg(memcmp(am, absmax, nblk * sizeof(float)) == 0, "case %s absmax differs", c);
        cv_dequantize_nf4(back, packed, am, n, CV_NF4_BLOCK);
        double worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = fabs((double)back[i] - dq[i]);
            worst = fmax(worst, d);
            ck_assert_msg(d <= FLT_EPSILON * fabs(dq[i]), "case %s elem %lld: %g vs %g", c,
                          (long long)i, back[i], dq[i]);
        }
        printf("nf4 reference case %s: %lld values, %zu blocks, codes and absmax exact, max |dq "
               "err| %g\n",
               c, (long long)n, nblk, worst);
        free(w), free(absmax), free(dq), free(packed), free(am), free(back);
    }
    cv_st_close(ref);
}
END_TEST

START_TEST(test_int8_reference) {
    cv_st *ref;
    cv_error err = {0};
    ck_assert_msg(cv_st_open(REF_PATH, &ref, &err) == CV_OK, "%s", err.msg);
    const char *cases[] = {"a", "b", "c", "d"};
    char key[64];
    for (size_t ci = 0; ci < 4; ci++) {
        const char *c = cases[ci];
        const cv_st_tensor *wt = cv_st_find(ref, (snprintf(key, sizeof key, "%s.w", c), key));
        ck_assert_ptr_nonnull(wt);
        int64_t rows = wt->shape[0], cols = wt->shape[1];
        float *w = tu_ref_f32(ref, key, NULL);
        const int8_t *q8 =
            ref_raw(ref, (snprintf(key, sizeof key, "%s.q8", c), key), CV_DT_I8, NULL);
        float *scb = tu_ref_f32(ref, (snprintf(key, sizeof key, "%s.scb", c), key), NULL);
        int8_t *q = malloc((size_t)(rows * cols));
        float *sc = malloc((size_t)rows * sizeof(float));
        cv_quantize_int8(q, sc, w, rows, cols);
        ck_assert_msg(memcmp(q, q8, (size_t)(rows * cols)) == 0, "case %s int8 codes differ", c);
        for (int64_t r = 0; r < rows; r++) ck_assert(sc[r] == scb[r] / 127.0f);
        free(w), free(scb), free(q), free(sc);
    }
    cv_st_close(ref);
}
END_TEST

START_TEST(test_int8_round_trip) {
    const int64_t shapes[][2] = {{1, 1}, {1, 64}, {3, 45}, {7, 100}, {16, 768}, {2, 17}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        float *w = malloc((size_t)n * sizeof(float)), *back = malloc((size_t)n * sizeof(float));
        float *sc = malloc((size_t)rows * sizeof(float));
        int8_t *q = malloc((size_t)n);
        for (int64_t i = 0; i < n; i++) w[i] = grand() * 0.05f;
        if (rows > 1) memset(w, 0, (size_t)cols * sizeof(float)); /* an all-zero row */
        cv_quantize_int8(q, sc, w, rows, cols);
        cv_dequantize_int8(back, q, sc, rows, cols);
        double worst_ratio = 0;
        for (int64_t r = 0; r < rows; r++) {
            float amax = 0;
            int hit127 = 0;
            for (int64_t c = 0; c < cols; c++) {
                size_t i = (size_t)(r * cols + c);
                amax = fmaxf(amax, fabsf(w[i]));
                double d = fabs((double)w[i] - back[i]);
                /* half a step, plus the two fp32 roundings of w * 127/amax and q * scale */
                double bound = sc[r] * 0.5 * (1 + 1e-5) + 2 * FLT_EPSILON * fabs(w[i]);
                ck_assert_msg(d <= bound, "(%lld, %lld) at (%lld, %lld): |%g - %g| > %g",
                              (long long)rows, (long long)cols, (long long)r, (long long)c, w[i],
                              back[i], bound);
                if (sc[r] > 0) worst_ratio = fmax(worst_ratio, d / sc[r]);
                hit127 |= q[i] == 127 || q[i] == -127;
            }
            ck_assert(sc[r] == amax / 127.0f);
            ck_assert(amax == 0 || hit127); /* the row's absmax maps to +-127 */
        }
        printf("int8 round trip (%lld, %lld): max |w - dq| = %.4f scale\n", (long long)rows,
               (long long)cols, worst_ratio);
        free(w), free(back), free(sc), free(q);
    }
}
END_TEST

START_TEST(test_nibble_order) {
    const float w[4] = {1.0f, -1.0f, -1.0f, 0.07958029955625534f};
    uint8_t packed[2];
    float absmax;
    cv_quantize_nf4(packed, &absmax, w, 4, CV_NF4_BLOCK);
    ck_assert_uint_eq(packed[0], 0xF0); /* element 0 (code 15) high, element 1 (code 0) low */
    ck_assert_uint_eq(packed[1], 0x08);
    ck_assert(cv_nf4_elem(packed, &absmax, CV_NF4_BLOCK, 0) == 1.0f);
    ck_assert(cv_nf4_elem(packed, &absmax, CV_NF4_BLOCK, 1) == -1.0f);
    /* odd count: the pad nibble is the code of 0.0 (7) */
    const float w3[3] = {0.5f, -0.5f, 0.5f};
    cv_quantize_nf4(packed, &absmax, w3, 3, CV_NF4_BLOCK);
    ck_assert_uint_eq(packed[1], 0xF7);
    /* blocks of the flattened matrix: block 1 starts at element 64 whatever the row length */
    float w2[130];
    for (int i = 0; i < 130; i++) w2[i] = i < 64 ? 0.25f : (i < 128 ? 2.0f : -8.0f);
    uint8_t p2[65];
    float am2[3];
    cv_quantize_nf4(p2, am2, w2, 130, CV_NF4_BLOCK);
    ck_assert(am2[0] == 0.25f && am2[1] == 2.0f && am2[2] == 8.0f);
}
END_TEST

/* ---- matmul paths --------------------------------------------------------------------------- */

static void check_matmul(cv_weight_format fmt, int N, int K, int T) {
    cv_backend *be = cv_backend_cpu_create();
    ck_assert_ptr_nonnull(be);
    size_t nw = (size_t)N * K;
    float *w = malloc(nw * sizeof(float)), *x = malloc((size_t)T * K * sizeof(float));
    float *bias = malloc((size_t)N * sizeof(float));
    for (size_t i = 0; i < nw; i++) w[i] = grand() * 0.05f;
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = grand();
    for (int i = 0; i < N; i++) bias[i] = frand();
    /* through the bf16 conversion too: quantize from a BF16 host copy for NF4 */
    cv_weight qw;
    cv_error err = {0};
    cv_status s;
    if (fmt == CV_WFMT_NF4) {
        uint16_t *wb = malloc(nw * sizeof(uint16_t));
        for (size_t i = 0; i < nw; i++) {
            wb[i] = cv_f32_to_bf16(w[i]);
            w[i] = cv_bf16_to_f32(wb[i]);
        }
        s = cv_weight_quantize(be, &qw, wb, CV_DT_BF16, N, K, fmt, &err);
        free(wb);
    } else {
        s = cv_weight_quantize(be, &qw, w, CV_DT_F32, N, K, fmt, &err);
    }
    ck_assert_msg(s == CV_OK, "%s", err.msg);
    ck_assert_int_eq(qw.format, fmt);
    /* dense copy of the dequantized weight */
    float *dq = malloc(nw * sizeof(float));
    if (fmt == CV_WFMT_INT8)
        cv_dequantize_int8(dq, qw.data, qw.scales, N, K);
    else
        cv_dequantize_nf4(dq, qw.data, qw.scales, (int64_t)nw, qw.block);
    cv_weight dw = {.data = dq, .dtype = CV_DT_F32, .format = CV_WFMT_DENSE, .rows = N, .cols = K};
    size_t no = (size_t)T * N;
    float *o_fast = malloc(no * sizeof(float)), *o_port = malloc(no * sizeof(float));
    float *o_naive = malloc(no * sizeof(float)), *o_dense = malloc(no * sizeof(float));
    be->matmul(be, o_fast, x, &qw, bias, T);
    cv_matmul_quant_portable(o_port, x, &qw, bias, T);
    cv_matmul_quant_naive(o_naive, x, &qw, bias, T);
    cv_matmul_naive(o_dense, x, &dw, bias, T);
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double mag = fabs(bias[n]);
            for (int k = 0; k < K; k++)
                mag += fabs((double)x[(size_t)t * K + k] * dq[(size_t)n * K + k]);
            double tol = 2e-6 * mag + 1e-6; /* fp32 sums of K terms in different orders */
            size_t i = (size_t)t * N + n;
            double e = fmax(fabs(o_fast[i] - o_naive[i]),
                            fmax(fabs(o_port[i] - o_naive[i]), fabs(o_dense[i] - o_naive[i])));
            worst = fmax(worst, e / (mag + 1e-30));
            ck_assert_msg(e <= tol,
                          "%s N=%d K=%d T=%d (%d,%d): fast %g portable %g naive %g dense %g",
                          fmt == CV_WFMT_INT8 ? "int8" : "nf4", N, K, T, t, n, o_fast[i], o_port[i],
                          o_naive[i], o_dense[i]);
        }
    tu_record_max(fmt == CV_WFMT_INT8 ? "int8 matmul rel err" : "nf4 matmul rel err", worst);
    be->weight_free(be, &qw);
    be->destroy(be);
    free(w), free(x), free(bias), free(dq), free(o_fast), free(o_port), free(o_naive),
        free(o_dense);
}

START_TEST(test_matmul_paths) {
    const int shapes[][3] = {{5, 64, 1},   {13, 128, 3}, {8, 192, 4}, {17, 256, 7}, {1, 64, 1},
                             {64, 768, 1}, {64, 768, 5}, {3, 45, 2},  {7, 100, 5},  {2, 10, 1},
                             {33, 320, 9}, {4, 16, 4},   {6, 33, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        check_matmul(CV_WFMT_INT8, shapes[i][0], shapes[i][1], shapes[i][2]);
        check_matmul(CV_WFMT_NF4, shapes[i][0], shapes[i][1], shapes[i][2]);
    }
    cv_weight aligned = {.format = CV_WFMT_NF4, .rows = 4, .cols = 128, .block = 64};
    cv_weight odd = {.format = CV_WFMT_NF4, .rows = 4, .cols = 100, .block = 64};
    printf("quant matmul paths: nf4 (4,128) -> %s, nf4 (4,100) -> %s\n",
           cv_matmul_quant_path(&aligned), cv_matmul_quant_path(&odd));
}
END_TEST

/* INT8 with quantized activations: the VNNI path equals its naive twin, and both stay within the
 * activation rounding bound of the fp32-activation result: |dy| <= sum_k (absmax_x / 254) |w_k|. */
static void check_matmul_actq(int N, int K, int T) {
    cv_backend *be = cv_backend_cpu_create();
    size_t nw = (size_t)N * K;
    float *w = malloc(nw * sizeof(float)), *x = malloc((size_t)T * K * sizeof(float));
    float *bias = malloc((size_t)N * sizeof(float));
    for (size_t i = 0; i < nw; i++) w[i] = grand() * 0.05f;
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = grand();
    if (T > 1) memset(x + K, 0, (size_t)K * sizeof(float)); /* an all-zero activation row */
    for (int i = 0; i < N; i++) bias[i] = frand();
    cv_weight qw;
    cv_error err = {0};
    ck_assert_int_eq(cv_weight_quantize(be, &qw, w, CV_DT_F32, N, K, CV_WFMT_INT8, &err), CV_OK);
    size_t no = (size_t)T * N;
    float *o_fast = malloc(no * sizeof(float)), *o_twin = malloc(no * sizeof(float));
    float *o_fp = malloc(no * sizeof(float));
    cv_quant_set_int8_activations(1);
    be->matmul(be, o_fast, x, &qw, bias, T);
    /* without VNNI in the build the mode does not apply (quant.h): fp32 activations */
    const int vnni = strcmp(cv_matmul_quant_path(&qw), "int8-vnni-actq") == 0;
    if (N == 5) printf("int8 with quantized activations: path %s\n", cv_matmul_quant_path(&qw));
    cv_quant_set_int8_activations(0);
    cv_matmul_int8_actq_naive(o_twin, x, &qw, bias, T);
    cv_matmul_quant_naive(o_fp, x, &qw, bias, T);
    for (int t = 0; t < T; t++) {
        float amax = 0;
        for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[(size_t)t * K + k]));
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)t * N + n;
            double bound = 0;
            for (int k = 0; k < K; k++)
                bound += amax / 254.0 *
                         fabs(((const int8_t *)qw.data)[(size_t)n * K + k] * qw.scales[n]);
            if (vnni)
                ck_assert_msg(o_fast[i] == o_twin[i],
                              "actq N=%d K=%d T=%d (%d,%d): %.9g vs twin %.9g", N, K, T, t, n,
                              o_fast[i], o_twin[i]);
            else
                ck_assert_msg(fabs(o_fast[i] - o_fp[i]) <= 1e-5 * (1 + fabs(o_fp[i])),
                              "no VNNI: N=%d K=%d T=%d (%d,%d): %.9g vs fp32 activations %.9g", N,
                              K, T, t, n, o_fast[i], o_fp[i]);
            ck_assert_msg(fabs(o_twin[i] - o_fp[i]) <= bound * (1 + 1e-5) + 1e-5,
                          "actq N=%d K=%d T=%d (%d,%d): %g vs fp32 activations %g (bound %g)", N, K,
                          T, t, n, o_twin[i], o_fp[i], bound);
        }
    }
    be->weight_free(be, &qw);
    be->destroy(be);
    free(w), free(x), free(bias), free(o_fast), free(o_twin), free(o_fp);
}

START_TEST(test_matmul_int8_actq) {
    const int shapes[][3] = {{5, 64, 1}, {13, 128, 3}, {17, 256, 7}, {64, 768, 1}, {64, 768, 5},
                             {3, 45, 2}, {7, 100, 5},  {2, 10, 1},   {33, 320, 9}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_matmul_actq(shapes[i][0], shapes[i][1], shapes[i][2]);
}
END_TEST

START_TEST(test_upload_quant_copies) {
    cv_backend *be = cv_backend_cpu_create();
    int8_t q[6] = {1, -2, 3, 127, -127, 0};
    float sc[2] = {0.5f, 0.25f};
    cv_weight w;
    cv_error err = {0};
    ck_assert_int_eq(be->weight_upload_quant(be, &w, q, sc, CV_WFMT_INT8, 2, 3, 0, &err), CV_OK);
    q[0] = 9, sc[0] = 9.0f; /* the weight holds its own copy */
    ck_assert_int_eq(((const int8_t *)w.data)[0], 1);
    ck_assert(w.scales[0] == 0.5f && w.scales[1] == 0.25f);
    ck_assert_ptr_nonnull(w.owned);
    ck_assert_int_eq(w.dtype, CV_DT_I8);
    float x[3] = {1, 1, 1}, out[2];
    be->matmul(be, out, x, &w, NULL, 1);
    ck_assert(out[0] == 1.0f && out[1] == 0.0f); /* (1 - 2 + 3) * 0.5, (127 - 127 + 0) * 0.25 */
    be->weight_free(be, &w);
    ck_assert_int_ne(be->weight_upload_quant(be, &w, q, sc, CV_WFMT_NF4, 2, 3, 3, &err), CV_OK);
    be->destroy(be);
}
END_TEST

/* ---- whole models: quantized run vs fp32 run ------------------------------------------------ */

/* A block linear layer of the fixture families; *transpose for GPT-2 Conv1D (stored (in, out)). */
static int is_block_linear(const char *name, int *transpose) {
    static const char *conv1d[] = {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                                   "mlp.c_proj.weight"};
    static const char *linear[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                   "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                   "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                   "mlp.down_proj.weight"};
    for (size_t i = 0; i < 4; i++)
        if (strstr(name, conv1d[i])) return *transpose = 1;
    for (size_t i = 0; i < 7; i++)
        if (strstr(name, linear[i])) return (*transpose = 0), 1;
    return 0;
}

/* Write a copy of the fixture checkpoint whose block linears hold their quantize-then-dequantize
 * values (fp32), everything else untouched; returns the temporary directory. Loaded as fp32, it
 * is exactly what the quantized model computes with, up to summation order. */
static const char *write_dequantized_copy(const char *dir, cv_weight_format fmt) {
    static char out[512];
    const char *tmp = tu_tmpdir("quantdq");
    ck_assert_ptr_nonnull(tmp);
    snprintf(out, sizeof out, "%s", tmp);
    cv_error err = {0};
    cv_st *st;
    ck_assert_msg(cv_st_open(dir, &st, &err) == CV_OK, "%s", err.msg);
    size_t n = cv_st_count(st);
    cv_st_write_entry *e = calloc(n, sizeof *e);
    float **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        const cv_st_tensor *t = cv_st_at(st, i);
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        e[i].data = t->data;
        int tr;
        if (t->ndim != 2 || !is_block_linear(t->name, &tr)) continue;
        int64_t d0 = t->shape[0], d1 = t->shape[1], rows = tr ? d1 : d0, cols = tr ? d0 : d1;
        size_t cnt = (size_t)(d0 * d1);
        float *f = malloc(cnt * sizeof(float)), *w = malloc(cnt * sizeof(float));
        cv_convert_to_f32(f, t->data, t->dtype, cnt);
        for (int64_t r = 0; r < rows; r++) /* nn.Linear layout (rows = out, cols = in) */
            for (int64_t c = 0; c < cols; c++)
                w[r * cols + c] = tr ? f[c * rows + r] : f[r * cols + c];
        if (fmt == CV_WFMT_INT8) {
            int8_t *q = malloc(cnt);
            float *sc = malloc((size_t)rows * sizeof(float));
            cv_quantize_int8(q, sc, w, rows, cols);
            cv_dequantize_int8(w, q, sc, rows, cols);
            free(q), free(sc);
        } else {
            uint8_t *q = malloc(cv_nf4_bytes((int64_t)cnt));
            float *am = malloc(cv_nf4_blocks((int64_t)cnt, CV_NF4_BLOCK) * sizeof(float));
            cv_quantize_nf4(q, am, w, (int64_t)cnt, CV_NF4_BLOCK);
            cv_dequantize_nf4(w, q, am, (int64_t)cnt, CV_NF4_BLOCK);
            free(q), free(am);
        }
        for (int64_t r = 0; r < rows; r++) /* back to the stored layout */
            for (int64_t c = 0; c < cols; c++)
                f[tr ? c * rows + r : r * cols + c] = w[r * cols + c];
        free(w);
        bufs[i] = f;
        e[i].dtype = CV_DT_F32;
        e[i].data = f;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    ck_assert_msg(cv_st_write(path, e, n, NULL, &err) == CV_OK, "%s", err.msg);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs), free(e);
    cv_st_close(st);
    char *cfg;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_msg(cv_read_file(path, &cfg, &len, &err) == CV_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/config.json", out);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cfg, 1, len, f), len);
    fclose(f);
    free(cfg);
    return out;
}

typedef struct {
    double max_dlogit, max_logit, top1, hid_rel, attn_abs, logit_entropy;
} qerr;

typedef struct {
    float *logits;
    double *stats;
} run_out;

static run_out run_prompt(const char *dir, cv_weight_format fmt, const int32_t *ids, int T,
                          const cv_stats_layout *lay, int *n_quantized) {
    cv_error err = {0};
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m;
    ck_assert_msg(cv_model_load_quant(dir, be, fmt, &m, &err) == CV_OK, "%s: %s", dir, err.msg);
    *n_quantized = m->n_quantized;
    ck_assert_int_eq(m->ops->reserve(m, T, T, T, &err), CV_OK);
    float *logits;
    run_out r = {malloc(sizeof(float) * (size_t)T * cv_model_vocab(m)),
                 malloc(sizeof(double) * lay->total)};
    cv_stats_arena_reset(r.stats, lay);
    cv_status s = m->ops->forward(m, ids, T, 0, r.stats, lay, NULL, 1, &logits, &err);
    ck_assert_msg(s == CV_OK, "%s", err.msg);
    memcpy(r.logits, logits, sizeof(float) * (size_t)T * cv_model_vocab(m));
    cv_model_free(m);
    be->destroy(be);
    return r;
}

static double rel(double a, double b) {
    return fabs(a - b) / fmax(fabs(b), 1e-6);
}

/* How far run q is from run r: logits, greedy top-1 per position, every layer's statistics
 * (hidden: |dmean| / std, and the relative error of std, mean row L2 and max |x|; attention:
 * entropy mean and min, nats), the last row's logits entropy. */
static qerr diff_runs(const run_out *q, const run_out *r, int T, int V, int L, int C,
                      const cv_stats_layout *lay) {
    qerr e = {0};
    int agree = 0;
    for (int t = 0; t < T; t++) {
        int a = 0, b = 0;
        for (int v = 0; v < V; v++) {
            size_t i = (size_t)t * V + v;
            e.max_dlogit = fmax(e.max_dlogit, fabs(q->logits[i] - r->logits[i]));
            e.max_logit = fmax(e.max_logit, fabs(r->logits[i]));
            if (r->logits[i] > r->logits[(size_t)t * V + a]) a = v;
            if (q->logits[i] > q->logits[(size_t)t * V + b]) b = v;
        }
        agree += a == b;
    }
    e.top1 = (double)agree / T;
    cv_sketch sk;
    ck_assert_int_eq(cv_sketch_init(&sk, C, 32, 0), 0);
    for (int l = 0; l < L; l++) {
        cv_hidden_stats hr, hq;
        cv_hidden_finalize(cv_stats_hidden(r->stats, lay, l), C, &sk, &hr);
        cv_hidden_finalize(cv_stats_hidden(q->stats, lay, l), C, &sk, &hq);
        double h = fmax(fabs(hq.mean - hr.mean) / hr.std, rel(hq.std, hr.std));
        h = fmax(h, fmax(rel(hq.l2_norm_mean, hr.l2_norm_mean), rel(hq.max_abs, hr.max_abs)));
        e.hid_rel = fmax(e.hid_rel, h);
        cv_attn_stats ar, aq;
        cv_attn_finalize(cv_stats_attn(r->stats, lay, l), &ar);
        cv_attn_finalize(cv_stats_attn(q->stats, lay, l), &aq);
        e.attn_abs = fmax(e.attn_abs, fmax(fabs(aq.entropy_mean - ar.entropy_mean),
                                           fabs(aq.entropy_min - ar.entropy_min)));
    }
    cv_logit_stats lr, lq;
    cv_logits_finalize(cv_stats_logits(r->stats, lay), &lr);
    cv_logits_finalize(cv_stats_logits(q->stats, lay), &lq);
    e.logit_entropy = fabs(lq.entropy - lr.entropy);
    cv_sketch_free(&sk);
    return e;
}

/* The quantized run against (1) the fp32 run of the dequantized weights — equal up to fp32
 * summation order, which proves every block linear (and nothing else) went through the quantized
 * path correctly — and (2) the fp32 run of the original weights: the quantization error itself,
 * returned for the family-specific tolerances. */
static qerr compare_family(const char *dir, cv_weight_format fmt) {
    int actq = fmt == CV_WFMT_INT8 && cv_quant_int8_activations();
    const char *fname =
        fmt == CV_WFMT_INT8 ? (actq ? "int8 (activations int8, VNNI)" : "int8") : "nf4";
    cv_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    cv_st *ref;
    ck_assert_msg(cv_st_open(path, &ref, &err) == CV_OK, "%s", err.msg);
    size_t T;
    int32_t *ids = tu_ref_ids(ref, "p0.input_ids", &T);
    ck_assert_ptr_nonnull(ids);
    cv_st_close(ref);
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m;
    ck_assert_msg(cv_model_load(dir, be, &m, &err) == CV_OK, "%s", err.msg);
    int L = cv_model_num_layers(m), C = m->cfg.hidden_size, V = cv_model_vocab(m);
    int per_layer = m->cfg.family == CV_FAMILY_GPT2 ? 6 : 7;
    cv_model_free(m);
    be->destroy(be);
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 0, 5);
    int nq_fp32, nq_q, nq_dq;
    run_out fp = run_prompt(dir, CV_WFMT_DENSE, ids, (int)T, &lay, &nq_fp32);
    run_out qr = run_prompt(dir, fmt, ids, (int)T, &lay, &nq_q);
    const char *dqdir = write_dequantized_copy(dir, fmt);
    run_out dq = run_prompt(dqdir, CV_WFMT_DENSE, ids, (int)T, &lay, &nq_dq);
    tu_rmtree(dqdir);
    /* transformers quantizes the blocks' linear layers only: GPT-2 q, k, v (c_attn split), c_proj,
     * c_fc, mlp c_proj = 6 per layer; LLaMA q, k, v, o, gate, up, down = 7 */
    ck_assert_int_eq(nq_q, per_layer * L);
    ck_assert_int_eq(nq_fp32, 0);

    qerr x = diff_runs(&qr, &dq, (int)T, V, L, C, &lay);
    printf("%s %s vs fp32 of the dequantized weights: max|dlogit| %.2e, hidden stats %.2e, "
           "attention entropy %.2e\n",
           dir, fname, x.max_dlogit, x.hid_rel, x.attn_abs);
    /* with quantized activations the twin differs by the activation rounding: not checked */
    ck_assert_msg(actq || x.max_dlogit <= 1e-4 * x.max_logit + 1e-5,
                  "%s %s: quantized run departs from "
                  "its dequantized fp32 twin by %g",
                  dir, fname, x.max_dlogit);
    ck_assert_msg(actq || (x.hid_rel <= 1e-4 && x.attn_abs <= 1e-5 && x.top1 == 1.0),
                  "%s %s: statistics depart from the dequantized twin", dir, fname);

    qerr e = diff_runs(&qr, &fp, (int)T, V, L, C, &lay);
    printf("%s %s vs fp32: T=%zu max|dlogit| %.4f (max|logit| %.3f, ratio %.4f), top-1 agreement "
           "%.0f%%, hidden stats rel err %.4f, attention entropy err %.5f, last-row logits entropy "
           "err %.4f\n",
           dir, fname, T, e.max_dlogit, e.max_logit, e.max_dlogit / e.max_logit, 100 * e.top1,
           e.hid_rel, e.attn_abs, e.logit_entropy);
    tu_record_max(fmt == CV_WFMT_INT8
                      ? (actq ? "int8-actq max|dlogit|/max|logit|" : "int8 max|dlogit|/max|logit|")
                      : "nf4 max|dlogit|/max|logit|",
                  e.max_dlogit / e.max_logit);
    free(ids);
    free(fp.logits), free(fp.stats), free(qr.logits), free(qr.stats), free(dq.logits),
        free(dq.stats);
    return e;
}

static const char *FAMILIES[] = {"tests/fixtures/gpt2-tiny", "tests/fixtures/llama-tiny",
                                 "tests/fixtures/llama-tiny-tied-bf16"};

START_TEST(test_family_int8) {
    qerr e = compare_family(FAMILIES[_i], CV_WFMT_INT8);
    ck_assert_msg(e.max_dlogit <= INT8_LOGIT_TOL * e.max_logit, "int8 logits drift %g",
                  e.max_dlogit);
    ck_assert_msg(e.top1 >= INT8_TOP1_MIN, "int8 top-1 agreement %g", e.top1);
    ck_assert_msg(e.hid_rel <= INT8_HIDDEN_TOL, "int8 hidden stats %g", e.hid_rel);
    ck_assert_msg(e.attn_abs <= INT8_ATTN_TOL, "int8 attention stats %g", e.attn_abs);
    ck_assert_msg(e.logit_entropy <= INT8_ENTROPY_TOL, "int8 logits entropy %g", e.logit_entropy);
}
END_TEST

START_TEST(test_family_int8_actq) {
    cv_quant_set_int8_activations(1);
    qerr e = compare_family(FAMILIES[_i], CV_WFMT_INT8);
    cv_quant_set_int8_activations(0);
    ck_assert_msg(e.max_dlogit <= INT8ACT_LOGIT_TOL * e.max_logit, "int8-actq logits drift %g",
                  e.max_dlogit);
    ck_assert_msg(e.top1 >= INT8ACT_TOP1_MIN, "int8-actq top-1 agreement %g", e.top1);
    ck_assert_msg(e.hid_rel <= INT8ACT_HIDDEN_TOL, "int8-actq hidden stats %g", e.hid_rel);
    ck_assert_msg(e.attn_abs <= INT8ACT_ATTN_TOL, "int8-actq attention stats %g", e.attn_abs);
    ck_assert_msg(e.logit_entropy <= INT8ACT_ENTROPY_TOL, "int8-actq logits entropy %g",
                  e.logit_entropy);
}
END_TEST

START_TEST(test_family_nf4) {
    qerr e = compare_family(FAMILIES[_i], CV_WFMT_NF4);
    ck_assert_msg(e.max_dlogit <= NF4_LOGIT_TOL * e.max_logit, "nf4 logits drift %g", e.max_dlogit);
    ck_assert_msg(e.top1 >= NF4_TOP1_MIN, "nf4 top-1 agreement %g", e.top1);
    ck_assert_msg(e.hid_rel <= NF4_HIDDEN_TOL, "nf4 hidden stats %g", e.hid_rel);
    ck_assert_msg(e.attn_abs <= NF4_ATTN_TOL, "nf4 attention stats %g", e.attn_abs);
    ck_assert_msg(e.logit_entropy <= NF4_ENTROPY_TOL, "nf4 logits entropy %g", e.logit_entropy);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_nf4_tables);
    tcase_add_test(tc, test_nf4_reference);
    tcase_add_test(tc, test_int8_reference);
    tcase_add_test(tc, test_int8_round_trip);
    tcase_add_test(tc, test_nibble_order);
    tcase_add_test(tc, test_matmul_paths);
    tcase_add_test(tc, test_matmul_int8_actq);
    tcase_add_test(tc, test_upload_quant_copies);
    tcase_add_loop_test(tc, test_family_int8, 0, 3);
    tcase_add_loop_test(tc, test_family_int8_actq, 0, 3);
    tcase_add_loop_test(tc, test_family_nf4, 0, 3);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tu_print_max("quant");
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
