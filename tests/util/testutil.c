/* testutil.c — see testutil.h. */
#define _DEFAULT_SOURCE
#include "testutil.h"

#include "corevital/dtype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tu_diff tu_compare(const float *a, const float *b, size_t n) {
    tu_diff d = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) != isnan(b[i])) e = INFINITY;
        if (i == 0 || e > d.max_abs) {
            d.max_abs = e;
            d.worst = i;
            d.a = a[i];
            d.b = b[i];
        }
    }
    return d;
}

int tu_check_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    tu_diff d = tu_compare(got, want, n);
    int ok = d.max_abs <= tol;
    if (!ok)
        fprintf(stderr, "MISMATCH %s: max abs err %.3g > tol %.3g at [%zu] (got %.9g, want %.9g)\n",
                what, d.max_abs, tol, d.worst, d.a, d.b);
    return ok;
}

float *tu_ref_f32(const cv_st *ref, const char *name, size_t *n) {
    const cv_st_tensor *t = cv_st_find(ref, name);
    if (!t) return NULL;
    float *out = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    if (!out) return NULL;
    cv_convert_to_f32(out, t->data, t->dtype, t->numel);
    if (n) *n = t->numel;
    return out;
}

int32_t *tu_ref_ids(const cv_st *ref, const char *name, size_t *n) {
    const cv_st_tensor *t = cv_st_find(ref, name);
    if (!t) return NULL;
    int32_t *out = malloc(sizeof(int32_t) * (t->numel ? t->numel : 1));
    if (!out) return NULL;
    for (size_t i = 0; i < t->numel; i++) {
        if (t->dtype == CV_DT_I64) {
            int64_t v;
            memcpy(&v, (const char *)t->data + 8 * i, 8);
            out[i] = (int32_t)v;
        } else if (t->dtype == CV_DT_I32) {
            memcpy(&out[i], (const char *)t->data + 4 * i, 4);
        } else {
            free(out);
            return NULL;
        }
    }
    if (n) *n = t->numel;
    return out;
}

#define TU_MAX_KINDS 64
static struct {
    char kind[64];
    double err;
} g_max[TU_MAX_KINDS];
static int g_nmax;

void tu_record_max(const char *kind, double err) {
    for (int i = 0; i < g_nmax; i++)
        if (strcmp(g_max[i].kind, kind) == 0) {
            if (err > g_max[i].err) g_max[i].err = err;
            return;
        }
    if (g_nmax < TU_MAX_KINDS) {
        snprintf(g_max[g_nmax].kind, sizeof g_max[g_nmax].kind, "%s", kind);
        g_max[g_nmax++].err = err;
    }
}

void tu_print_max(const char *suite) {
    for (int i = 0; i < g_nmax; i++)
        printf("%s: max abs error %-28s %.3g\n", suite, g_max[i].kind, g_max[i].err);
}

const char *tu_tmpdir(const char *tag) {
    static char buf[512];
    const char *base = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/cv-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    return mkdtemp(buf);
}

void tu_rmtree(const char *path) {
    if (!path || strlen(path) < 8) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

const char *tu_tok(const char *rel) {
    static char bufs[8][1024];
    static int next;
    const char *dir = getenv("CV_TOKENIZERS_DIR");
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir && *dir ? dir : "build/tokenizers", rel);
    return b;
}
