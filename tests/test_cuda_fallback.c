/* test_cuda_fallback.c — the CUDA entry points on a machine without a usable GPU (runs in the
 * normal `make test`, GPU or not): cv_cuda_available() says 0 and cv_backend_cuda_create returns
 * NULL with a status and a message naming the cause, so callers can fall back to the CPU.
 *
 * The suite hides every device with CUDA_VISIBLE_DEVICES=-1 before the first CUDA call, so it
 * tests the no-GPU path even on a GPU machine. In a build without nvcc the stub answers the same
 * way (with a message saying CUDA is not compiled in). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "corevital/backend.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_not_available) {
    ck_assert_int_eq(cv_cuda_available(), 0);
    /* asking twice gives the same answer: a failed probe leaves no sticky error behind */
    ck_assert_int_eq(cv_cuda_available(), 0);
}
END_TEST

START_TEST(test_create_fails_with_message) {
    const int devices[] = {0, 1, -1};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        cv_error err;
        memset(&err, 0, sizeof err);
        err.code = CV_OK;
        cv_backend *b = cv_backend_cuda_create(devices[i], &err);
        ck_assert_ptr_null(b);
        ck_assert_int_ne(err.code, CV_OK);
        ck_assert_msg(strlen(err.msg) > 0, "device %d: empty error message", devices[i]);
#ifdef CV_HAVE_CUDA
        ck_assert_msg(strstr(err.msg, "no CUDA device") != NULL,
                      "device %d: message does not name the cause: '%s'", devices[i], err.msg);
#else
        ck_assert_msg(strstr(err.msg, "not available in this build") != NULL,
                      "device %d: stub message unexpected: '%s'", devices[i], err.msg);
#endif
    }
}
END_TEST

START_TEST(test_null_error_is_fine) {
    ck_assert_ptr_null(cv_backend_cuda_create(0, NULL));
}
END_TEST

START_TEST(test_cpu_still_works) {
    /* the fallback target: a CPU backend after the failed CUDA attempts */
    cv_backend *b = cv_backend_cpu_create();
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->name, "cpu");
    float x[5] = {0.5f, -2.0f, 3.0f, 3.0f, 1.0f};
    ck_assert_int_eq(b->argmax(b, x, 5), 2);
    b->destroy(b);
}
END_TEST

int main(void) {
    /* must precede the first CUDA runtime call of the process */
    setenv("CUDA_VISIBLE_DEVICES", "-1", 1);
    Suite *s = suite_create("cuda_fallback");
    TCase *tc = tcase_create("no_gpu");
    tcase_add_test(tc, test_not_available);
    tcase_add_test(tc, test_create_fails_with_message);
    tcase_add_test(tc, test_null_error_is_fine);
    tcase_add_test(tc, test_cpu_still_works);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
