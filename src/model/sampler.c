/* sampler.c — see sampler.h. The warpers follow transformers' TemperatureLogitsWarper,
 * TopKLogitsWarper and TopPLogitsWarper in that order; the random stream is our own (torch's
 * cannot be reproduced), seeded from generation.seed. */
#include "corevital/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cv_sampler_init(cv_sampler *s, const cv_sampling *p, uint64_t seed, int V) {
    memset(s, 0, sizeof *s);
    s->params = *p;
    s->V = V;
    cv_np_seed(&s->rng, (uint32_t)(seed ^ (seed >> 32)));
    s->vals = malloc(sizeof(float) * (size_t)V);
    s->idx = malloc(sizeof(int32_t) * (size_t)V);
    if (!s->vals || !s->idx) {
        cv_sampler_free(s);
        return -1;
    }
    return 0;
}

void cv_sampler_free(cv_sampler *s) {
    free(s->vals);
    free(s->idx);
    s->vals = NULL;
    s->idx = NULL;
}

static const float *g_sort_vals; /* qsort has no context argument in C11 */
static int by_value_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_sort_vals[i], y = g_sort_vals[j];
    if (x != y) return x > y ? -1 : 1;
    return (i > j) - (i < j);
}

/* k-th largest value of v (n entries, 1 <= k <= n), by quickselect on a copy in tmp. */
static float kth_largest(const float *v, int n, int k, float *tmp) {
    memcpy(tmp, v, sizeof(float) * (size_t)n);
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = tmp[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (tmp[i] > pivot) i++;
            while (tmp[j] < pivot) j--;
            if (i <= j) {
                float t = tmp[i];
                tmp[i++] = tmp[j];
                tmp[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return tmp[want];
}

int cv_sampler_candidates(cv_sampler *s, const float *logits, int32_t *out) {
    const cv_sampling *p = &s->params;
    int V = s->V, n = 0;
    float inv_t = (float)(1.0 / p->temperature);
    for (int i = 0; i < V; i++) s->vals[i] = logits[i] * inv_t;
    float kth = -INFINITY;
    if (p->top_k > 0 && p->top_k < V) {
        float *tmp = malloc(sizeof(float) * (size_t)V);
        if (tmp) {
            kth = kth_largest(s->vals, V, p->top_k, tmp);
            free(tmp);
        }
    }
    for (int i = 0; i < V; i++)
        if (s->vals[i] >= kth && !isnan(s->vals[i]) && s->vals[i] > -INFINITY) out[n++] = i;
    g_sort_vals = s->vals;
    qsort(out, (size_t)n, sizeof *out, by_value_desc);
    if (p->top_p < 1.0 && n > 1) {
        double m = s->vals[out[0]], z = 0.0, cum = 0.0;
        for (int i = 0; i < n; i++) z += exp((double)s->vals[out[i]] - m);
        int keep = n;
        for (int i = 0; i < n; i++) {
            if (i > 0 &&
                cum > p->top_p) { /* probability mass before token i already exceeds top_p */
                keep = i;
                break;
            }
            cum += exp((double)s->vals[out[i]] - m) / z;
        }
        n = keep;
    }
    return n;
}

int32_t cv_sampler_next(cv_sampler *s, const float *logits) {
    if (!s->params.do_sample) {
        int32_t best = 0;
        for (int i = 1; i < s->V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    int n = cv_sampler_candidates(s, logits, s->idx);
    if (n <= 0) return 0;
    double m = s->vals[s->idx[0]], z = 0.0;
    for (int i = 0; i < n; i++) z += exp((double)s->vals[s->idx[i]] - m);
    double r = cv_np_random_double(&s->rng) * z, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp((double)s->vals[s->idx[i]] - m);
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
