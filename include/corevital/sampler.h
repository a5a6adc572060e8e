/* sampler.h — choosing the next token (SPEC §5): greedy argmax, or temperature -> top-k (ties
 * at the k-th value kept) -> top-p (nucleus; the most likely token always kept) -> a draw from a
 * seeded MT19937 stream, so the same seed gives the same tokens. */
#ifndef COREVITAL_SAMPLER_H
#define COREVITAL_SAMPLER_H

#include "corevital/stats.h"

#include <stdint.h>

typedef struct {
    int do_sample;
    double temperature; /* > 0 when sampling */
    int top_k;          /* 0 disables; > V means V */
    double top_p;       /* (0, 1]; 1 disables */
} cv_sampling;

typedef struct {
    cv_sampling params;
    cv_np_random rng;
    int V;
    float *vals;  /* (V) scratch */
    int32_t *idx; /* (V) scratch */
} cv_sampler;

int cv_sampler_init(cv_sampler *s, const cv_sampling *p, uint64_t seed, int V); /* 0 ok */
void cv_sampler_free(cv_sampler *s);
/* Next token from a row of V raw logits (host memory). */
int32_t cv_sampler_next(cv_sampler *s, const float *logits);
/* Which tokens survive the warpers (for tests): writes their ids sorted by descending logit and
 * returns how many. */
int cv_sampler_candidates(cv_sampler *s, const float *logits, int32_t *out);

#endif
