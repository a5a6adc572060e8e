/* testutil.h — helpers shared by the Check suites: tensor comparison with a report of the worst
 * element, reference tensors from a fixture's ref.safetensors, temporary directories. */
#ifndef COREVITAL_TESTUTIL_H
#define COREVITAL_TESTUTIL_H

#include "corevital/safetensors.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double max_abs; /* max |a - b| */
    size_t worst;   /* index of that element */
    double a, b;    /* the two values there */
} tu_diff;

tu_diff tu_compare(const float *a, const float *b, size_t n);
/* Print "<what>: max abs err E at i (a vs b)" and return 1 if within tol, else 0. */
int tu_check_close(const char *what, const float *got, const float *want, size_t n, double tol);

/* Reference tensors: a fresh fp32 / int32 copy (caller frees), NULL if absent. */
float *tu_ref_f32(const cv_st *ref, const char *name, size_t *n);
int32_t *tu_ref_ids(const cv_st *ref, const char *name, size_t *n);

/* Track the largest error seen per tensor kind across a suite, printed at the end. */
void tu_record_max(const char *kind, double err);
void tu_print_max(const char *suite);

/* mkdtemp under $TMPDIR or /tmp; returns a static buffer path. */
const char *tu_tmpdir(const char *tag);
/* rm -rf a directory created by tu_tmpdir. */
void tu_rmtree(const char *path);
/* Path of a real tokenizer directory or file ("gpt2", "llama2/tokenizer.json"): the copies in
 * tests/data/tokenizers that `make test` unpacks into $CV_TOKENIZERS_DIR (default
 * build/tokenizers). Returns one of 8 rotating static buffers. */
const char *tu_tok(const char *rel);

#endif
