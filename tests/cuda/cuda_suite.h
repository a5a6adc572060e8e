/* cuda_suite.h — the start and the run of a CUDA suite, shared by every tests/cuda/ program:
 * skip with 77 when no CUDA device can be had, make the GPU backend and its CPU twin, run the
 * suite without forking (a CUDA context does not survive fork()). */
#ifndef COREVITAL_CUDA_SUITE_H
#define COREVITAL_CUDA_SUITE_H

#include "corevital/backend.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* 77 (the automake "skipped" code), with the reason on stdout, when this build or machine has
 * no usable CUDA device; 0 otherwise. */
static inline int cuda_suite_skip(const char *name) {
    if (cv_cuda_available()) return 0;
    cv_error err = {0};
    cv_backend *b = cv_backend_cuda_create(0, &err);
    if (b) b->destroy(b);
    printf("%s: SKIP: no CUDA device (%s)\n", name, err.msg);
    return 77;
}

/* The GPU backend under test (device 0) and its CPU twin; 0, or -1 with the reason on stderr. */
static inline int cuda_suite_backends(const char *name, cv_backend **gpu, cv_backend **cpu) {
    cv_error err = {0};
    *gpu = cv_backend_cuda_create(0, &err);
    *cpu = cv_backend_cpu_create();
    if (*gpu && *cpu) return 0;
    fprintf(stderr, "%s: cannot create the backends: %s\n", name, err.msg);
    return -1;
}

/* Run the suite in this process; the number of failed tests. */
static inline int cuda_suite_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

#endif
