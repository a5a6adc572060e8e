/* cpu_attention.c — scaled dot-product attention over a KV cache, with the attention
 * statistics taken from the softmax's own running sums (SPEC §4):
 *   m = max_k s_k,  z = sum_k e^(s_k - m),  t = sum_k e^(s_k - m) (s_k - m)
 *   entropy = ln z - t / z,  largest weight = 1 / z
 * so no probability row is re-read or stored to summarize it. Handles causal and bidirectional
 * masks, GQA (query head h reads kv head h / (H / H_kv)), and an additive position bias (T5).
 * cv_attention_naive is the double-precision oracle. */
#include "cpu_internal.h"
#include "corevital/stats.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>

static inline float dot_f32(const float *a, const float *b, int n) {
#ifdef CV_CPU_AVX512
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
#else
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
#endif
}

static inline int keys_visible(const cv_attn_args *a, int t) {
    if (!a->causal) return a->n_keys;
    int kend = a->q_pos0 + t + 1;
    return kend < a->n_keys ? kend : a->n_keys;
}

void cv_cpu_attention(cv_backend *b, const cv_attn_args *a) {
    const int H = a->n_heads, T = a->T, hd = a->head_dim, NK = a->n_keys;
    const int rep = a->n_heads / a->n_kv_heads;
    const int rows = H * T;
    int nt = omp_get_max_threads();
    float *scores_all = cv_cpu_scratch_flt(b, (size_t)nt * (size_t)(NK + hd));
    const int want_rows = a->stats || a->heads || a->basin;
    double *row_z = want_rows ? cv_cpu_scratch_dbl(b, 4 * (size_t)rows) : NULL;

#pragma omp parallel if ((size_t)rows * NK * hd > 16384)
    {
        float *s = scores_all + (size_t)omp_get_thread_num() * (size_t)(NK + hd);
        float *acc = s + NK;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            int h = r / T, t = r % T, g = h / rep;
            int kend = keys_visible(a, t);
            const float *qv = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
            const float *bias = a->bias ? a->bias + ((size_t)h * T + t) * NK : NULL;
            float m = -FLT_MAX;
            for (int k = 0; k < kend; k++) {
                const float *kv = a->k + (size_t)k * a->kv_stride + (size_t)g * hd;
                float sc = dot_f32(qv, kv, hd) * a->scale + (bias ? bias[k] : 0.0f);
                s[k] = sc;
                if (sc > m) m = sc;
            }
            double z = 0.0, tt = 0.0;
            for (int k = 0; k < kend; k++) {
                float d = s[k] - m;
                float e = expf(d);
                s[k] = e;
                z += e;
                tt += (double)e * d;
            }
            float inv = (float)(1.0 / z);
            for (int i = 0; i < hd; i++) acc[i] = 0.0f;
            for (int k = 0; k < kend; k++) {
                const float *vv = a->v + (size_t)k * a->kv_stride + (size_t)g * hd;
                float p = s[k] * inv;
                for (int i = 0; i < hd; i++) acc[i] += p * vv[i];
            }
            float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
            for (int i = 0; i < hd; i++) o[i] = acc[i];
            if (a->probs) {
                float *pr = a->probs + ((size_t)h * T + t) * NK;
                for (int k = 0; k < kend; k++) pr[k] = s[k] * inv;
                for (int k = kend; k < NK; k++) pr[k] = 0.0f;
            }
            if (row_z) {
                double mid = 0.0, off = 0.0;
                if (a->basin)
                    for (int k = 0; k < kend; k++) {
                        double p = s[k] * inv;
                        if (k >= a->basin_lo && k < a->basin_hi)
                            mid += p;
                        else
                            off += p;
                    }
                row_z[4 * r] = z;
                row_z[4 * r + 1] = tt;
                row_z[4 * r + 2] = mid;
                row_z[4 * r + 3] = off;
            }
        }
    }
    /* rows merge in a fixed order: deterministic whatever the thread count */
    if (row_z) cv_attn_merge_rows(a, row_z);
}

void cv_attn_merge_rows(const cv_attn_args *a, const double *row_z) {
    const int T = a->T, rows = a->n_heads * a->T;
    for (int r = 0; r < rows; r++) {
        int h = r / T, t = r % T;
        const double *q = row_z + 4 * (size_t)r;
        if (a->stats) cv_attn_record_add_row(a->stats, q[0], q[1]);
        if (a->heads && t >= a->heads_from)
            cv_head_record_add_row(a->heads + (size_t)h * CV_AH_SIZE, q[0], q[1],
                                   keys_visible(a, t));
        if (a->basin) {
            a->basin[2 * h] += q[2];
            a->basin[2 * h + 1] += q[3];
        }
    }
}

void cv_attention_naive(const cv_attn_args *a) {
    const int H = a->n_heads, T = a->T, hd = a->head_dim, NK = a->n_keys;
    const int rep = a->n_heads / a->n_kv_heads;
    double *sc = malloc(sizeof(double) * (size_t)(NK > 0 ? NK : 1));
    double *row_z = malloc(sizeof(double) * 4 * (size_t)(H * T > 0 ? H * T : 1));
    if (!sc || !row_z) {
        free(sc);
        free(row_z);
        return;
    }
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            int g = h / rep, kend = keys_visible(a, t);
            const float *qv = a->q + (size_t)t * a->q_stride + (size_t)h * hd;
            double m = -INFINITY, z = 0.0, tt = 0.0;
            for (int k = 0; k < kend; k++) {
                const float *kv = a->k + (size_t)k * a->kv_stride + (size_t)g * hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)qv[i] * kv[i];
                sc[k] = d * a->scale + (a->bias ? a->bias[((size_t)h * T + t) * NK + k] : 0.0);
                if (sc[k] > m) m = sc[k];
            }
            for (int k = 0; k < kend; k++) {
                double e = exp(sc[k] - m);
                z += e;
                tt += e * (sc[k] - m);
                sc[k] = e;
            }
            float *o = a->out + (size_t)t * a->out_stride + (size_t)h * hd;
            for (int i = 0; i < hd; i++) {
                double acc = 0.0;
                for (int k = 0; k < kend; k++)
                    acc += sc[k] / z * a->v[(size_t)k * a->kv_stride + (size_t)g * hd + i];
                o[i] = (float)acc;
            }
            if (a->probs) {
                float *pr = a->probs + ((size_t)h * T + t) * NK;
                for (int k = 0; k < NK; k++) pr[k] = k < kend ? (float)(sc[k] / z) : 0.0f;
            }
            double *q = row_z + 4 * ((size_t)h * T + t);
            q[0] = z;
            q[1] = tt;
            q[2] = q[3] = 0.0;
            for (int k = 0; k < kend; k++)
                q[k >= a->basin_lo && k < a->basin_hi ? 2 : 3] += sc[k] / z;
        }
    cv_attn_merge_rows(a, row_z);
    free(sc);
    free(row_z);
}
