/* cuda_testutil.h — helpers shared by the CUDA suites that compare an op on the GPU (G) with its
 * CPU twin (H): deterministic random inputs, copies to and from the device, and the field by
 * field comparison of statistic records. Static: each suite is one translation unit. */
#ifndef COREVITAL_CUDA_TESTUTIL_H
#define COREVITAL_CUDA_TESTUTIL_H

#include "corevital/backend.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static cv_backend *G, *H; /* GPU under test, CPU twin */

static unsigned lcg(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s;
}
static float frand(unsigned *s) {
    return ((float)(lcg(s) >> 8) / 16777216.0f) * 2.0f - 1.0f;
}
static float *rand_vec(size_t n, unsigned *seed, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++) v[i] = frand(seed) * scale;
    return v;
}
static void *dev_copy(const void *h, size_t bytes) {
    void *d = G->alloc(G, bytes);
    ck_assert_ptr_nonnull(d);
    G->upload(G, d, h, bytes);
    return d;
}
static void *host_copy(const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    ck_assert_ptr_nonnull(h);
    G->download(G, h, d, bytes);
    return h;
}

/* got vs want, each field within rel * max(|want|, floor) (NaN must match NaN). */
static int rec_close(const char *what, const double *got, const double *want, size_t n, double rel,
                     double floor) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isnan(want[i])) {
            if (isnan(got[i]) != isnan(want[i])) {
                fprintf(stderr, "MISMATCH %s: field %zu got %.17g want %.17g\n", what, i, got[i],
                        want[i]);
                ok = 0;
            }
            continue;
        }
        double tol = rel * fmax(fabs(want[i]), floor);
        if (!(fabs(got[i] - want[i]) <= tol) && !(got[i] == want[i])) {
            fprintf(stderr, "MISMATCH %s: field %zu got %.17g want %.17g (tol %.3g)\n", what, i,
                    got[i], want[i], tol);
            ok = 0;
        }
    }
    return ok;
}

#endif
