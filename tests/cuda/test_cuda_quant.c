/* test_cuda_quant.c — the CUDA kernels over quantized weights (kernels/quant.cu) against their CPU
 * twins (src/quant): needs a GPU, run by `make test-cuda`.
 *
 *  - dequant INT8 / NF4 to fp32: bit-exact against cv_dequantize_int8 / cv_dequantize_nf4 (the same
 *    single fp32 multiply per element);
 *  - dequant to bf16: bit-exact against the CPU fp32 values rounded with cv_f32_to_bf16;
 *  - the fused dequant-GEMV for T = 1, 3, 8 against cv_matmul_quant_naive (double accumulation),
 *    within 2e-6 of sum |x * w| (fp32 sums of K terms in another order), on shapes that take the
 *    vector path (K % 16 == 0) and the scalar path (K = 45, 100: NF4 blocks spanning rows).
 * Without a GPU: prints "SKIP: no CUDA device" and exits 77, like test_cuda_ops / _models. */
#include "corevital/quant.h"
#include "corevital/quant_cuda.h"

#include <check.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 99u;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) * (1.0 / 8388608.0)) - 1.0f;
}

static void *dev_copy(const void *host, size_t bytes) {
    void *d = NULL;
    ck_assert_int_eq(cudaMalloc(&d, bytes ? bytes : 1), cudaSuccess);
    if (bytes) ck_assert_int_eq(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}
static void host_copy(void *host, const void *dev, size_t bytes) {
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

static void check_shape(cv_weight_format fmt, int N, int K) {
    const char *fname = fmt == CV_WFMT_INT8 ? "int8" : "nf4";
    size_t n = (size_t)N * K;
    float *w = malloc(n * sizeof(float)), *dq = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) w[i] = frand() * 0.05f;
    size_t data_bytes = fmt == CV_WFMT_INT8 ? n : cv_nf4_bytes((int64_t)n);
    size_t n_scales = fmt == CV_WFMT_INT8 ? (size_t)N : cv_nf4_blocks((int64_t)n, CV_NF4_BLOCK);
    void *q = malloc(data_bytes);
    float *sc = malloc(n_scales * sizeof(float));
    if (fmt == CV_WFMT_INT8) {
        cv_quantize_int8(q, sc, w, N, K);
        cv_dequantize_int8(dq, q, sc, N, K);
    } else {
        cv_quantize_nf4(q, sc, w, (int64_t)n, CV_NF4_BLOCK);
        cv_dequantize_nf4(dq, q, sc, (int64_t)n, CV_NF4_BLOCK);
    }
    void *d_q = dev_copy(q, data_bytes);
    float *d_sc = dev_copy(sc, n_scales * sizeof(float));

    /* dequant to fp32 and to bf16 */
    float *d_f32, *got = malloc(n * sizeof(float));
    uint16_t *d_b16, *gotb = malloc(n * sizeof(uint16_t));
    ck_assert_int_eq(cudaMalloc((void **)&d_f32, n * sizeof(float)), cudaSuccess);
    ck_assert_int_eq(cudaMalloc((void **)&d_b16, n * sizeof(uint16_t)), cudaSuccess);
    int rc = fmt == CV_WFMT_INT8
                 ? cv_cuda_dequant_int8_f32(d_f32, d_q, d_sc, N, K, NULL)
                 : cv_cuda_dequant_nf4_f32(d_f32, d_q, d_sc, (int64_t)n, CV_NF4_BLOCK, NULL);
    ck_assert_int_eq(rc, 0);
    rc = fmt == CV_WFMT_INT8
             ? cv_cuda_dequant_int8_bf16(d_b16, d_q, d_sc, N, K, NULL)
             : cv_cuda_dequant_nf4_bf16(d_b16, d_q, d_sc, (int64_t)n, CV_NF4_BLOCK, NULL);
    ck_assert_int_eq(rc, 0);
    host_copy(got, d_f32, n * sizeof(float));
    host_copy(gotb, d_b16, n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(got[i] == dq[i], "%s (%d, %d) dequant f32 elem %zu: %g vs %g", fname, N, K, i,
                      got[i], dq[i]);
        ck_assert_msg(gotb[i] == cv_f32_to_bf16(dq[i]), "%s (%d, %d) dequant bf16 elem %zu", fname,
                      N, K, i);
    }

    /* fused GEMV */
    const int Ts[] = {1, 3, 8};
    for (size_t ti = 0; ti < 3; ti++) {
        int T = Ts[ti];
        float *x = malloc((size_t)T * K * sizeof(float)), *bias = malloc((size_t)N * sizeof(float));
        for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
        for (int i = 0; i < N; i++) bias[i] = frand();
        cv_weight hw = {.data = q,
                        .scales = sc,
                        .format = fmt,
                        .rows = N,
                        .cols = K,
                        .block = fmt == CV_WFMT_NF4 ? CV_NF4_BLOCK : 0};
        float *want = malloc((size_t)T * N * sizeof(float)),
              *out = malloc((size_t)T * N * sizeof(float));
        cv_matmul_quant_naive(want, x, &hw, bias, T);
        float *d_x = dev_copy(x, (size_t)T * K * sizeof(float));
        float *d_bias = dev_copy(bias, (size_t)N * sizeof(float)), *d_out;
        ck_assert_int_eq(cudaMalloc((void **)&d_out, (size_t)T * N * sizeof(float)), cudaSuccess);
        ck_assert_int_eq(cv_cuda_quant_gemv(d_out, d_x, d_q, d_sc, d_bias, (int)fmt, T, N, K,
                                            CV_NF4_BLOCK, NULL),
                         0);
        host_copy(out, d_out, (size_t)T * N * sizeof(float));
        double worst = 0;
        for (int t = 0; t < T; t++)
            for (int r = 0; r < N; r++) {
                double mag = fabs(bias[r]);
                for (int k = 0; k < K; k++)
                    mag += fabs((double)x[(size_t)t * K + k] * dq[(size_t)r * K + k]);
                size_t i = (size_t)t * N + r;
                double e = fabs((double)out[i] - want[i]);
                worst = fmax(worst, e / mag);
                ck_assert_msg(e <= 2e-6 * mag + 1e-6, "%s gemv N=%d K=%d T=%d (%d, %d): %g vs %g",
                              fname, N, K, T, t, r, out[i], want[i]);
            }
        printf("%s gemv N=%d K=%d T=%d: max rel err %.2e\n", fname, N, K, T, worst);
        cudaFree(d_x), cudaFree(d_bias), cudaFree(d_out);
        free(x), free(bias), free(want), free(out);
    }
    cudaFree(d_q), cudaFree(d_sc), cudaFree(d_f32), cudaFree(d_b16);
    free(w), free(dq), free(q), free(sc), free(got), free(gotb);
}

static const int SHAPES[][2] = {{64, 768}, {257, 1024}, {5, 64},   {13, 100},
                                {3, 45},   {1, 10},     {96, 3072}};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

START_TEST(test_int8) {
    check_shape(CV_WFMT_INT8, SHAPES[_i][0], SHAPES[_i][1]);
}
END_TEST

START_TEST(test_nf4) {
    check_shape(CV_WFMT_NF4, SHAPES[_i][0], SHAPES[_i][1]);
}
END_TEST

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIP: no CUDA device\n");
        return 77; /* the skip code of the other CUDA suites: never a silent pass */
    }
    Suite *s = suite_create("cuda_quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_int8, 0, (int)N_SHAPES);
    tcase_add_loop_test(tc, test_nf4, 0, (int)N_SHAPES);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* one CUDA context for the whole suite */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
