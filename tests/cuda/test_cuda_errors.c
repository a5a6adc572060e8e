/* test_cuda_errors.c — CUDA failures are never silent (backend.h: status; kernels/common.cuh:
 * the sticky failure state): needs a GPU, run by `make test-cuda`.
 *
 *  - a failing scratch allocation (the "fail_scratch" test hook of cv_cuda_debug) puts the backend
 *    in the failed state blamed on the op that needed the scratch, argmax answers -1, later ops
 *    do nothing, and a fresh backend works (the out-of-memory answer left no error behind);
 *  - the same fault through the generation loop: cv_session_generate fails at step 0 with the
 *    message instead of generating token 0 forever;
 *  - two backends on two GPUs (when there are two) interleaved: each op selects its device;
 *  - last, because it kills the process's CUDA context: an out-of-bounds kernel (relu on an
 *    unmapped device address) with the "sync" hook, reported as
 *    "relu: cudaStreamSynchronize: cudaErrorIllegalAddress (...)", first error winning.
 * Without a GPU: prints "SKIP: no CUDA device" and exits 77, like the other CUDA suites. */
#include "cuda_suite.h"
#include "corevital/backend.h"
#include "corevital/config.h"
#include "corevital/generate.h"

#include <check.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_contains(const char *msg, const char *part) {
    ck_assert_msg(strstr(msg, part) != NULL, "'%s' does not contain '%s'", msg, part);
}

START_TEST(test_scratch_failure_is_sticky) {
    cv_error err = {CV_OK, ""};
    cv_backend *g = cv_backend_cuda_create(0, &err);
    ck_assert_ptr_nonnull(g);
    const int V = 5000;
    float *x = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) x[i] = (float)((i * 37) % 101);
    x[4321] = 500.0f;
    float *d = g->alloc(g, sizeof(float) * V);
    g->upload(g, d, x, sizeof(float) * V);
    ck_assert_int_eq(g->status(g, &err), CV_OK);
    ck_assert_int_eq(cv_cuda_debug(g, "fail_scratch", 1), 0);
    ck_assert_int_eq(g->argmax(g, d, V), -1); /* argmax needs scratch: no made-up token */
    ck_assert_int_eq(g->status(g, &err), CV_ERR_RUNTIME);
    assert_contains(err.msg, "argmax: cudaMalloc (scratch): cudaErrorMemoryAllocation");
    char first[sizeof err.msg];
    snprintf(first, sizeof first, "%s", err.msg);
    /* sticky: later ops do nothing, and the message stays the first one */
    float back[4] = {-1, -1, -1, -1};
    g->download(g, back, d, sizeof back);
    ck_assert(back[0] == -1.0f);
    ck_assert_int_eq(g->argmax(g, d, V), -1);
    ck_assert_int_eq(g->status(g, &err), CV_ERR_RUNTIME);
    ck_assert_str_eq(err.msg, first);
    g->free(g, d);
    g->destroy(g);
    /* a new backend is healthy: the out-of-memory answer was not left for a later launch */
    g = cv_backend_cuda_create(0, &err);
    ck_assert_ptr_nonnull(g);
    d = g->alloc(g, sizeof(float) * V);
    g->upload(g, d, x, sizeof(float) * V);
    ck_assert_int_eq(g->argmax(g, d, V), 4321);
    ck_assert_int_eq(g->status(g, &err), CV_OK);
    g->free(g, d);
    g->destroy(g);
    free(x);
}
END_TEST

START_TEST(test_generation_stops_on_failure) {
    cv_config c;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "model.hf_id", "tests/fixtures/gpt2-tiny", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "device.requested", "cuda", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.max_new_tokens", "8", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.temperature", "0", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(&c, &e), CV_OK);
    cv_session *s;
    ck_assert_int_eq(cv_session_open(&c, &s, NULL, &e), CV_OK);
    ck_assert_str_eq(s->device, "cuda");
    int32_t *ids, *gen = NULL;
    size_t P, n = 0;
    ck_assert_int_eq(cv_session_tokenize(s, "The quick brown fox", &ids, &P, &e), CV_OK);
    /* the prefill's first op that needs scratch fails */
    ck_assert_int_eq(cv_cuda_debug(s->be, "fail_scratch", 1), 0);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, &e), CV_OK);
    cv_status st = cv_session_generate(s, &c, ids, P, 1, &rep, &gen, &n, NULL, NULL, &e);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    char want[64];
    snprintf(want, sizeof want, "generation step %zu: cuda device 0: ", P);
    ck_assert_msg(strncmp(e.msg, want, strlen(want)) == 0, "'%s'", e.msg);
    assert_contains(e.msg, "cudaMalloc (scratch): cudaErrorMemoryAllocation");
    ck_assert_ptr_null(gen);
    cv_report_free(&rep);
    free(ids);
    cv_session_close(s);
    cv_config_free(&c);
}
END_TEST

START_TEST(test_two_devices) {
    int n = 0;
    ck_assert_int_eq(cudaGetDeviceCount(&n), cudaSuccess);
    if (n < 2) {
        printf("test_cuda_errors: one GPU: the two-device test is not run\n");
        return;
    }
    cv_error err;
    cv_backend *g[2] = {cv_backend_cuda_create(0, &err), cv_backend_cuda_create(1, &err)};
    ck_assert_ptr_nonnull(g[0]);
    ck_assert_ptr_nonnull(g[1]);
    enum { N = 1 << 16 };
    float *x = malloc(sizeof(float) * N), *back = malloc(sizeof(float) * N);
    float *d[2];
    for (int i = 0; i < N; i++) x[i] = (float)(i % 7) - 3.0f;
    for (int k = 0; k < 2; k++) d[k] = g[k]->alloc(g[k], sizeof(float) * N);
    /* interleaved, and with the current device pointing at the other GPU before each op */
    for (int k = 0; k < 2; k++) {
        cudaSetDevice(1 - k);
        g[k]->upload(g[k], d[k], x, sizeof(float) * N);
    }
    for (int k = 0; k < 2; k++) {
        cudaSetDevice(1 - k);
        g[k]->relu(g[k], d[k], N);
    }
    for (int k = 0; k < 2; k++) {
        cudaSetDevice(1 - k);
        g[k]->download(g[k], back, d[k], sizeof(float) * N);
        for (int i = 0; i < N; i++) ck_assert(back[i] == (x[i] > 0.0f ? x[i] : 0.0f));
        ck_assert_int_eq(g[k]->argmax(g[k], d[k], N), 6); /* first 3.0f */
        ck_assert_int_eq(g[k]->status(g[k], &err), CV_OK);
    }
    for (int k = 0; k < 2; k++) {
        g[k]->free(g[k], d[k]);
        g[k]->destroy(g[k]);
    }
    free(x), free(back);
}
END_TEST

/* Must run last: an illegal address is sticky for the whole CUDA context of the process. */
START_TEST(test_illegal_address_blamed_on_its_op) {
    cv_error err;
    cv_backend *g = cv_backend_cuda_create(0, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(cv_cuda_debug(g, "sync", 1), 0); /* blame the op whose kernel faulted */
    float *unmapped = (float *)(uintptr_t)64;         /* the null page of the device space */
    g->relu(g, unmapped, 1 << 20);
    ck_assert_int_eq(g->status(g, &err), CV_ERR_RUNTIME);
    assert_contains(err.msg, "cuda device 0: relu: cudaStreamSynchronize: cudaErrorIllegalAddress");
    char first[sizeof err.msg];
    snprintf(first, sizeof first, "%s", err.msg);
    float *d = g->alloc(g, 64); /* NULL or not: nothing may hide the first failure */
    ck_assert_int_eq(g->argmax(g, d ? d : unmapped, 16), -1);
    ck_assert_int_eq(g->status(g, &err), CV_ERR_RUNTIME);
    ck_assert_str_eq(err.msg, first);
    if (d) g->free(g, d);
    g->destroy(g);
}
END_TEST

int main(void) {
    int skip = cuda_suite_skip("test_cuda_errors");
    if (skip) return skip;
    Suite *s = suite_create("cuda_errors");
    TCase *tc = tcase_create("sticky");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_scratch_failure_is_sticky);
    tcase_add_test(tc, test_generation_stops_on_failure);
    tcase_add_test(tc, test_two_devices);
    tcase_add_test(tc, test_illegal_address_blamed_on_its_op); /* last: kills the context */
    suite_add_tcase(s, tc);
    int failed = cuda_suite_run(s);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
