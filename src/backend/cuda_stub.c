/* cuda_stub.c — the CUDA entry points in a build without nvcc: CUDA is reported absent. */
#include "corevital/backend.h"

#include <stddef.h>

cv_backend *cv_backend_cuda_create(int device, cv_error *err) {
    (void)device;
    cv_fail(err, CV_ERR_UNSUPPORTED, "CUDA is not available in this build (compiled without nvcc)");
    return NULL;
}

int cv_cuda_available(void) {
    return 0;
}

int cv_cuda_set_variant(cv_backend *b, const char *op, int v) {
    (void)b, (void)op, (void)v;
    return -1;
}

void *cv_cuda_stream(cv_backend *b) {
    (void)b;
    return NULL;
}

int cv_cuda_debug(cv_backend *b, const char *what, int v) {
    (void)b, (void)what, (void)v;
    return -1;
}
