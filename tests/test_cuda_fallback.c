/* test_cuda_fallback.c — the CUDA entry points on a machine without a usable GPU (runs in the
 * normal `make test`, GPU or not): cv_cuda_available() says 0 and cv_backend_cuda_create returns
 * NULL with a status and a message naming the cause, so callers can fall back to the CPU.
 *
 * The CUDA backend is a module loaded on demand (src/backend/cuda_loader.c). The suite points
 * CV_CUDA_MODULE at the build's libcorevital_cuda.so (beside this binary's folder: build/) and
 * hides every device with CUDA_VISIBLE_DEVICES=-1 before the first CUDA call, so it tests the
 * module's no-GPU path even on a GPU machine; it also checks a missing module and (without an
 * NVIDIA driver) the driver probe that spares `--device auto` the module load. In a build without
 * nvcc the loader answers the same way (with a message saying CUDA is not compiled in). */
#define _DEFAULT_SOURCE /* setenv, readlink */
#include "corevital/backend.h"

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The build's module: <dir of this binary>/../libcorevital_cuda.so */
static void use_build_module(void) {
    char exe[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return; /* the tests then fail on the loader's message */
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(path, sizeof path, "%s/../libcorevital_cuda.so", exe);
    setenv("CV_CUDA_MODULE", path, 1);
}

START_TEST(test_missing_module) {
    setenv("CV_CUDA_MODULE", "/nonexistent/libcorevital_cuda.so", 1);
    cv_error err = {CV_OK, ""};
    ck_assert_ptr_null(cv_backend_cuda_create(0, &err));
    ck_assert_int_ne(err.code, CV_OK);
#ifdef CV_HAVE_CUDA
    ck_assert_msg(strstr(err.msg, "/nonexistent/libcorevital_cuda.so could not be loaded") != NULL,
                  "missing module: '%s'", err.msg);
#endif
    ck_assert_int_eq(cv_cuda_available(), 0);
    unsetenv("CV_CUDA_MODULE");
    /* no driver: the module is not even looked for */
    if (access("/dev/nvidiactl", F_OK) != 0 && access("/dev/dxg", F_OK) != 0) {
        ck_assert_ptr_null(cv_backend_cuda_create(0, &err));
#ifdef CV_HAVE_CUDA
        ck_assert_msg(strstr(err.msg, "no CUDA device available (no NVIDIA driver") != NULL,
                      "no driver: '%s'", err.msg);
#endif
    }
    use_build_module();
}
END_TEST

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
    use_build_module();
    Suite *s = suite_create("cuda_fallback");
    TCase *tc = tcase_create("no_gpu");
    tcase_add_test(tc, test_missing_module); /* first: a loaded module stays loaded */
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
