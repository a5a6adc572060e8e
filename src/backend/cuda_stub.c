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
