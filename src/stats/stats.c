/* stats.c — statistic records (stats.h): accumulate, merge, finalize into SPEC §4 numbers; the
 * one-pass logits statistics; and the full-tensor reference implementations used as oracles.
 *
 * Hidden records keep (rows, sum, M2, sum of row norms, max |x|, column sums). M2 merges with
 * Chan et al.'s pairwise formula, so the variance is as accurate as a two-pass computation even
 * when the mean is large (GPT-2's residual stream has a few huge dimensions). */
#include "corevital/stats.h"

#include <math.h>
#include <stdio.h>
#if defined(CV_AVX512_EMU)
#include "avx512emu.h" /* make test-avx512emu (cpu_internal.h) */
#elif defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

double cv_round_decimals(double x, int d) {
    if (!isfinite(x)) return x;
    char buf[400]; /* room for "%.*f" of the largest double */
    snprintf(buf, sizeof buf, "%.*f", d, x);
    return strtod(buf, NULL);
}

void cv_stats_layout_init(cv_stats_layout *lay, int n_layers, int dim, int has_cross, int topk) {
    lay->n_layers = n_layers;
    lay->dim = dim;
    lay->has_cross = has_cross;
    lay->topk = topk;
    lay->hidden_off = 0;
    lay->attn_off = (size_t)n_layers * cv_hidden_record_size(dim);
    lay->cross_off = lay->attn_off + (size_t)n_layers * CV_AS_SIZE;
    lay->logits_off = lay->cross_off + (has_cross ? (size_t)n_layers * CV_AS_SIZE : 0);
    lay->step_off = lay->logits_off + cv_logits_record_size(topk);
    lay->total = lay->step_off + CV_STEP_SLOTS;
    lay->health = lay->n_heads = lay->heads_last_row = lay->prompt_P = lay->sparse = 0;
    lay->heads_off = lay->cross_heads_off = lay->basin_off = lay->ltrans_off = lay->sparse_off = 0;
}

void cv_stats_layout_health(cv_stats_layout *lay, int n_heads, int heads_last_row, int prompt_P) {
    size_t L = (size_t)lay->n_layers, H = (size_t)n_heads, at = lay->total;
    lay->health = 1;
    lay->n_heads = n_heads;
    lay->heads_last_row = heads_last_row;
    lay->prompt_P = prompt_P;
    lay->heads_off = at;
    at += L * H * CV_AH_SIZE;
    lay->cross_heads_off = at;
    if (lay->has_cross) at += L * H * CV_AH_SIZE;
    if (prompt_P > 0) {
        lay->basin_off = at;
        at += L * H * 2;
        lay->ltrans_off = at;
        at += L;
    }
    lay->total = at;
}

void cv_stats_layout_sparse(cv_stats_layout *lay) {
    if (!lay->health || lay->prompt_P <= 0 || lay->sparse) return;
    lay->sparse = 1;
    lay->sparse_off = lay->total;
    lay->total += (size_t)lay->n_layers * lay->n_heads * CV_SPARSE_SLOTS;
}

void cv_head_record_reset(double *rec) {
    memset(rec, 0, CV_AH_SIZE * sizeof *rec);
    rec[CV_AH_CMIN] = INFINITY;
}

void cv_hidden_record_reset(double *rec, int D) {
    memset(rec, 0, cv_hidden_record_size(D) * sizeof *rec);
}

void cv_attn_record_reset(double *rec) {
    rec[CV_AS_ROWS] = 0.0;
    rec[CV_AS_ESUM] = 0.0;
    rec[CV_AS_EMIN] = INFINITY;
    rec[CV_AS_WMAX] = 0.0;
}

void cv_stats_arena_reset(double *base, const cv_stats_layout *l) {
    for (int i = 0; i < l->n_layers; i++) {
        cv_hidden_record_reset(cv_stats_hidden(base, l, i), l->dim);
        cv_attn_record_reset(cv_stats_attn(base, l, i));
        if (l->has_cross) cv_attn_record_reset(cv_stats_cross(base, l, i));
    }
    memset(cv_stats_logits(base, l), 0, cv_logits_record_size(l->topk) * sizeof(double));
    memset(cv_stats_step(base, l), 0, CV_STEP_SLOTS * sizeof(double));
    if (!l->health) return;
    for (int i = 0; i < l->n_layers; i++)
        for (int h = 0; h < l->n_heads; h++) {
            cv_head_record_reset(cv_stats_heads(base, l, i) + (size_t)h * CV_AH_SIZE);
            if (l->has_cross)
                cv_head_record_reset(cv_stats_cross_heads(base, l, i) + (size_t)h * CV_AH_SIZE);
        }
    if (l->prompt_P > 0) memset(base + l->basin_off, 0, (l->total - l->basin_off) * sizeof(double));
}

/* A row's own sums (the row as "b") merged into the record: Chan et al.'s M2 update, the norms,
 * max |x| (NaN sticks) and the non-finite counts. m2_b is the row's sum of (x - its mean)^2. */
static void hidden_row_commit(double *rec, int D, double sum, double sq, double sq_clamped,
                              double m2_b, double mx, int nnan, int ninf, int nclip) {
    double mean_b = sum / D, n_a = rec[CV_HS_ROWS] * D, n_b = D;
    if (n_a > 0) {
        double delta = mean_b - rec[CV_HS_SUM] / n_a;
        m2_b += delta * delta * n_a * n_b / (n_a + n_b);
    }
    rec[CV_HS_NNAN] += nnan;
    rec[CV_HS_NINF] += ninf;
    rec[CV_HS_NCLIP] += nclip;
    rec[CV_HS_L2CLAMP] += sqrt(sq_clamped);
    rec[CV_HS_M2] += m2_b;
    rec[CV_HS_SUM] += sum;
    rec[CV_HS_ROWS] += 1.0;
    rec[CV_HS_L2SUM] += sqrt(sq);
    rec[CV_HS_MAXABS] = mx;
}

#if defined(__AVX512F__)
/* One row whose every |x| is within the clamp (no NaN, no inf: the common case), on 8 double
 * lanes: the same sums as the scalar loop below, summed in another order (double, so about
 * 1e-16 apart). Returns 0, touching nothing, when the row has a value out of range. */
static int hidden_row_avx512(double *rec, double *colsum, const float *x, int D) {
    const __m512 lim = _mm512_set1_ps((float)CV_CLIP_LIMIT);
    __mmask16 out = 0;
    __m512 mx = _mm512_setzero_ps();
    for (int d = 0; d < D; d += 16) {
        __mmask16 m = D - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (D - d)) - 1u);
        __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + d));
        out |= _mm512_mask_cmp_ps_mask(m, a, lim, _CMP_NLE_UQ); /* > limit, or NaN */
        mx = _mm512_max_ps(mx, a);
    }
    /* 1e6 as a float is 1e6 exactly, so this is the scalar loop's a <= CV_CLIP_LIMIT */
    if (out) return 0;
    __m512d sum = _mm512_setzero_pd(), sq = sum;
    for (int d = 0; d < D; d += 8) {
        __mmask8 m = D - d >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (D - d)) - 1u);
        __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + d));
        sum = _mm512_add_pd(sum, v);
        sq = _mm512_fmadd_pd(v, v, sq);
        _mm512_mask_storeu_pd(colsum + d, m,
                              _mm512_add_pd(_mm512_maskz_loadu_pd(m, colsum + d), v));
    }
    double s = _mm512_reduce_add_pd(sum), q = _mm512_reduce_add_pd(sq);
    __m512d mb = _mm512_set1_pd(s / D), m2v = _mm512_setzero_pd();
    for (int d = 0; d < D; d += 8) {
        __mmask8 m = D - d >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (D - d)) - 1u);
        __m512d dv = _mm512_maskz_sub_pd(m, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + d)), mb);
        m2v = _mm512_fmadd_pd(dv, dv, m2v);
    }
    double rmx = _mm512_reduce_max_ps(mx), pmx = rec[CV_HS_MAXABS];
    hidden_row_commit(rec, D, s, q, q, _mm512_reduce_add_pd(m2v),
                      isnan(pmx) || pmx >= rmx ? pmx : rmx, 0, 0, 0);
    return 1;
}
#elif defined(__AVX2__) && defined(__FMA__)
/* The same on AVX2 (8 floats a step, widened to two 4-lane doubles) for D a multiple of 8; 0
 * (the scalar loop takes the row) for other widths or when a value is out of the clamp range. */
static int hidden_row_avx2(double *rec, double *colsum, const float *x, int D) {
    if (D % 8) return 0;
    const __m256 lim = _mm256_set1_ps((float)CV_CLIP_LIMIT);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 out = _mm256_setzero_ps(), mx = out;
    for (int d = 0; d < D; d += 8) {
        __m256 a = _mm256_and_ps(absm, _mm256_loadu_ps(x + d));
        out = _mm256_or_ps(out, _mm256_cmp_ps(a, lim, _CMP_NLE_UQ)); /* > limit, or NaN */
        mx = _mm256_max_ps(mx, a);
    }
    if (_mm256_movemask_ps(out)) return 0;
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    for (int d = 0; d < D; d += 8) {
        __m256 v = _mm256_loadu_ps(x + d);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_add_pd(s0, lo), s1 = _mm256_add_pd(s1, hi);
        q0 = _mm256_fmadd_pd(lo, lo, q0), q1 = _mm256_fmadd_pd(hi, hi, q1);
        _mm256_storeu_pd(colsum + d, _mm256_add_pd(_mm256_loadu_pd(colsum + d), lo));
        _mm256_storeu_pd(colsum + d + 4, _mm256_add_pd(_mm256_loadu_pd(colsum + d + 4), hi));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    double sum = (t[0] + t[1]) + (t[2] + t[3]);
    _mm256_storeu_pd(t, _mm256_add_pd(q0, q1));
    double sq = (t[0] + t[1]) + (t[2] + t[3]);
    __m256d mb = _mm256_set1_pd(sum / D), m0 = _mm256_setzero_pd(), m1 = m0;
    for (int d = 0; d < D; d += 8) {
        __m256 v = _mm256_loadu_ps(x + d);
        __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), mb);
        __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), mb);
        m0 = _mm256_fmadd_pd(lo, lo, m0), m1 = _mm256_fmadd_pd(hi, hi, m1);
    }
    _mm256_storeu_pd(t, _mm256_add_pd(m0, m1));
    double m2 = (t[0] + t[1]) + (t[2] + t[3]);
    float f[8];
    _mm256_storeu_ps(f, mx);
    double rmx = f[0];
    for (int i = 1; i < 8; i++) rmx = f[i] > rmx ? f[i] : rmx;
    double pmx = rec[CV_HS_MAXABS];
    hidden_row_commit(rec, D, sum, sq, sq, m2, isnan(pmx) || pmx >= rmx ? pmx : rmx, 0, 0, 0);
    return 1;
}
#endif

void cv_hidden_record_add_rows(double *rec, const float *X, int S, int D) {
    double *colsum = rec + CV_HS_FIXED;
    for (int s = 0; s < S; s++) {
        const float *x = X + (size_t)s * D;
#if defined(__AVX512F__)
        if (hidden_row_avx512(rec, colsum, x, D)) continue;
#elif defined(__AVX2__) && defined(__FMA__)
        if (hidden_row_avx2(rec, colsum, x, D)) continue;
#endif
        double sum = 0.0, sq = 0.0, sq_big = 0.0, mx = rec[CV_HS_MAXABS];
        int nclip = 0, nnan = 0, ninf = 0;
        for (int d = 0; d < D; d++) {
            double v = x[d];
            double a = fabs(v);
            sum += v;
            colsum[d] += v;
            if (a <= CV_CLIP_LIMIT) {
                sq += v * v;
            } else { /* rare: out of the clamp range, infinite or NaN */
                sq_big += v * v;
                nnan += isnan(v);
                ninf += isinf(v);
                nclip += !isnan(v);
            }
            if (a > mx || isnan(v)) mx = isnan(v) ? NAN : (isnan(mx) ? mx : a);
        }
        /* sq keeps the in-range squares only, so the clamped norm needs no cancellation */
        double sq_clamped = nnan ? NAN : sq + (double)nclip * CV_CLIP_LIMIT * CV_CLIP_LIMIT;
        if (nclip || nnan) sq += sq_big;
        double mean_b = sum / D, m2_b = 0.0;
        for (int d = 0; d < D; d++) {
            double dv = x[d] - mean_b;
            m2_b += dv * dv;
        }
        hidden_row_commit(rec, D, sum, sq, sq_clamped, m2_b, mx, nnan, ninf, nclip);
    }
}

void cv_hidden_record_merge(double *dst, const double *src, int D) {
    double rows_b = src[CV_HS_ROWS];
    if (rows_b <= 0) return;
    double n_a = dst[CV_HS_ROWS] * D, n_b = rows_b * D;
    double m2 = src[CV_HS_M2];
    if (n_a > 0) {
        double delta = src[CV_HS_SUM] / n_b - dst[CV_HS_SUM] / n_a;
        m2 += delta * delta * n_a * n_b / (n_a + n_b);
    }
    dst[CV_HS_M2] += m2;
    dst[CV_HS_SUM] += src[CV_HS_SUM];
    dst[CV_HS_ROWS] += rows_b;
    dst[CV_HS_L2SUM] += src[CV_HS_L2SUM];
    dst[CV_HS_NNAN] += src[CV_HS_NNAN];
    dst[CV_HS_NINF] += src[CV_HS_NINF];
    dst[CV_HS_NCLIP] += src[CV_HS_NCLIP];
    dst[CV_HS_L2CLAMP] += src[CV_HS_L2CLAMP];
    if (isnan(src[CV_HS_MAXABS]) || src[CV_HS_MAXABS] > dst[CV_HS_MAXABS])
        dst[CV_HS_MAXABS] = src[CV_HS_MAXABS];
    for (int d = 0; d < D; d++) dst[CV_HS_FIXED + d] += src[CV_HS_FIXED + d];
}

void cv_attn_record_merge(double *dst, const double *src) {
    dst[CV_AS_ROWS] += src[CV_AS_ROWS];
    dst[CV_AS_ESUM] += src[CV_AS_ESUM];
    if (src[CV_AS_EMIN] < dst[CV_AS_EMIN]) dst[CV_AS_EMIN] = src[CV_AS_EMIN];
    if (src[CV_AS_WMAX] > dst[CV_AS_WMAX]) dst[CV_AS_WMAX] = src[CV_AS_WMAX];
}

/* ---- numpy legacy RandomState ------------------------------------------------------------- */

void cv_np_seed(cv_np_random *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = 624;
    r->has_gauss = 0;
    r->gauss = 0.0;
}

uint32_t cv_np_genrand(cv_np_random *r) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    if (r->mti >= 624) {
        int kk;
        uint32_t y;
        for (kk = 0; kk < 624 - 397; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + 397] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < 623; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[623] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[623] = r->mt[396] ^ (y >> 1) ^ mag01[y & 1u];
        r->mti = 0;
    }
    uint32_t y = r->mt[r->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

double cv_np_random_double(cv_np_random *r) {
    uint32_t a = cv_np_genrand(r) >> 5, b = cv_np_genrand(r) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

double cv_np_gauss(cv_np_random *r) {
    if (r->has_gauss) {
        r->has_gauss = 0;
        return r->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * cv_np_random_double(r) - 1.0;
        x2 = 2.0 * cv_np_random_double(r) - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    r->gauss = f * x1;
    r->has_gauss = 1;
    return f * x2;
}

/* ---- sketch ------------------------------------------------------------------------------- */

int cv_sketch_init(cv_sketch *sk, int D, int dim, uint32_t seed) {
    memset(sk, 0, sizeof *sk);
    if (dim > (int)(sizeof(((cv_hidden_stats *)0)->sketch) / sizeof(double))) return -1;
    sk->D = D;
    sk->dim = dim;
    sk->seed = seed;
    if (dim == 0) return 0;
    sk->R = malloc(sizeof(double) * (size_t)D * (size_t)dim);
    if (!sk->R) return -1;
    cv_np_random rng;
    cv_np_seed(&rng, seed);
    double inv = 1.0 / sqrt((double)D);
    for (size_t i = 0; i < (size_t)D * (size_t)dim; i++) sk->R[i] = cv_np_gauss(&rng) * inv;
    return 0;
}

void cv_sketch_free(cv_sketch *sk) {
    free(sk->R);
    sk->R = NULL;
}

static void sketch_project(const double *v, const cv_sketch *sk, cv_hidden_stats *out) {
    out->sketch_dim = sk ? sk->dim : 0;
    if (!sk || !sk->R) return;
    /* rows of R in order (contiguous): each output keeps the d-ascending summation order */
    double acc[256] = {0};
    for (int d = 0; d < sk->D; d++) {
        const double *r = sk->R + (size_t)d * sk->dim;
        for (int j = 0; j < sk->dim; j++) acc[j] += v[d] * r[j];
    }
    for (int j = 0; j < sk->dim; j++) out->sketch[j] = cv_round_decimals(acc[j], 2);
}

void cv_hidden_finalize(const double *rec, int D, const cv_sketch *sk, cv_hidden_stats *out) {
    double rows = rec[CV_HS_ROWS], n = rows * D;
    memset(out, 0, sizeof *out);
    out->mean = n > 0 ? rec[CV_HS_SUM] / n : NAN;
    out->std = n > 1 ? sqrt(rec[CV_HS_M2] / (n - 1)) : NAN;
    out->l2_norm_mean = rows > 0 ? rec[CV_HS_L2SUM] / rows : NAN;
    out->max_abs = rows > 0 ? rec[CV_HS_MAXABS] : NAN;
    if (sk && sk->R && sk->D == D && rows > 0) {
        /* v = mean over rows in float32 (the reference's X.mean(0)), then the projection in double
         */
        double *v = malloc(sizeof(double) * (size_t)D);
        if (!v) return;
        for (int d = 0; d < D; d++) v[d] = (double)(float)(rec[CV_HS_FIXED + d] / rows);
        sketch_project(v, sk, out);
        free(v);
    }
}

void cv_attn_finalize(const double *rec, cv_attn_stats *out) {
    double rows = rec[CV_AS_ROWS];
    out->entropy_mean = rows > 0 ? rec[CV_AS_ESUM] / rows : NAN;
    out->entropy_min = rows > 0 ? rec[CV_AS_EMIN] : NAN;
    out->concentration_max = rows > 0 ? rec[CV_AS_WMAX] : NAN;
}

void cv_attn_health_finalize(const double *heads, int H, double focus, cv_attn_health *out) {
    memset(out, 0, sizeof *out);
    out->n_heads = H;
    double esum = 0.0, nsum = 0.0, emin = INFINITY, emax = -INFINITY;
    double cmax = -INFINITY, cmin = INFINITY;
    int counted = 0;
    for (int h = 0; h < H; h++) {
        const double *r = heads + (size_t)h * CV_AH_SIZE;
        double rows = r[CV_AH_ROWS];
        if (rows <= 0) continue;
        counted++;
        double e = r[CV_AH_ESUM] / rows, n = r[CV_AH_NSUM] / rows, c = r[CV_AH_CSUM] / rows;
        if (r[CV_AH_NBAD] > 0) out->has_nan = 1, e = n = c = NAN;
        esum += e;
        nsum += n;
        /* NaN-sticky min / max, like torch's */
        if (e < emin || isnan(e)) emin = isnan(emin) ? emin : e;
        if (e > emax || isnan(e)) emax = isnan(emax) ? emax : e;
        double wmax = r[CV_AH_NBAD] > 0 ? NAN : r[CV_AH_WMAX];
        double wmin = r[CV_AH_NBAD] > 0 ? NAN : r[CV_AH_CMIN];
        if (wmax > cmax || isnan(wmax)) cmax = isnan(cmax) ? cmax : wmax;
        if (wmin < cmin || isnan(wmin)) cmin = isnan(cmin) ? cmin : wmin;
        if (r[CV_AH_ONEKEY] >= rows) continue; /* decision 3: one key carries no information */
        out->valid = 1;
        if (n < 0.03) out->collapsed_head_count++;
        if (c > focus) out->focused_head_count++;
    }
    if (!counted) {
        out->entropy_mean = out->entropy_mean_normalized = out->entropy_min = out->entropy_max =
            out->concentration_max = out->concentration_min = NAN;
        return;
    }
    out->entropy_mean = esum / counted;
    out->entropy_mean_normalized = nsum / counted;
    out->entropy_min = emin;
    out->entropy_max = emax;
    out->concentration_max = cmax;
    out->concentration_min = cmin;
    out->collapsed_head_rate =
        cv_round_decimals((double)out->collapsed_head_count / (H > 1 ? H : 1), 4);
}

void cv_head_record_add_probs(double *rec, const double *A, int Q, int K) {
    int renorm = 0;
    for (int q = 0; q < Q; q++) {
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += A[(size_t)q * K + k];
        if (fabs(sum - 1.0) > 1e-3 + 1e-5) renorm = 1;
    }
    for (int q = 0; q < Q; q++) {
        const double *a = A + (size_t)q * K;
        double sum = 0.0, e = 0.0, w = -INFINITY;
        int bad = 0;
        for (int k = 0; k < K; k++) sum += a[k];
        double div = renorm ? (sum > 1e-10 ? sum : 1e-10) : 1.0;
        for (int k = 0; k < K; k++) {
            double v = a[k] / div;
            bad |= !isfinite(v);
            e -= v * log(v > 1e-10 ? v : 1e-10);
            if (v > w || isnan(v)) w = isnan(w) ? w : v;
        }
        rec[CV_AH_ROWS] += 1.0;
        if (bad) rec[CV_AH_NBAD] += 1.0;
        if (K <= 1) rec[CV_AH_ONEKEY] += 1.0;
        rec[CV_AH_ESUM] += e;
        rec[CV_AH_NSUM] += K > 1 ? e / log((double)K) : e;
        rec[CV_AH_CSUM] += w;
        if (w > rec[CV_AH_WMAX] || isnan(w)) rec[CV_AH_WMAX] = w;
        if (w < rec[CV_AH_CMIN] || isnan(w)) rec[CV_AH_CMIN] = w;
    }
}

void cv_logit_health_of(const double *rec, int token, float token_logit, cv_logit_health *out) {
    cv_logit_stats ls;
    cv_logits_finalize(rec, &ls);
    const double ln2 = 0.69314718055994530942;
    out->nan = ls.n_nan > 0;
    out->inf = ls.n_pinf > 0 || ls.n_ninf > 0;
    out->entropy_bits = ls.entropy / ln2;
    out->perplexity = pow(2.0, out->entropy_bits);
    out->surprisal_bits = token >= 0 && token < (int)rec[CV_LS_V] && isfinite(token_logit)
                              ? (ls.lse - (double)token_logit) / ln2
                              : NAN;
    out->top_k_margin = ls.k >= 2 ? ls.probs[0] - ls.probs[1] : (ls.k == 1 ? 0.0 : NAN);
    double mass = 0.0;
    for (int k = 0; k < ls.k && k < 10; k++) mass += ls.probs[k];
    out->topk_mass = ls.k > 0 ? mass : NAN;
}

void cv_hidden_health_finalize(const double *rec, int D, cv_hidden_health *out) {
    memset(out, 0, sizeof *out);
    double rows = rec[CV_HS_ROWS], n = rows * D;
    out->has_nan = rec[CV_HS_NNAN] > 0;
    out->has_inf = rec[CV_HS_NINF] > 0;
    out->clipped = rec[CV_HS_NCLIP] > 0 || out->has_nan;
    out->clip_fraction =
        out->clipped && n > 0 ? rec[CV_HS_NCLIP] / n : NAN;        /* null unless clipped */
    out->clip_max_before = out->clipped ? rec[CV_HS_MAXABS] : NAN; /* null unless clipped */
    out->l2 = rows > 0 ? rec[CV_HS_L2CLAMP] / rows : NAN;
}

void cv_logits_finalize(const double *rec, cv_logit_stats *out) {
    memset(out, 0, sizeof *out);
    out->entropy = rec[CV_LS_ENTROPY];
    out->lse = rec[CV_LS_LSE];
    out->n_nan = (int)rec[CV_LS_NNAN];
    out->n_pinf = (int)rec[CV_LS_NPINF];
    out->n_ninf = (int)rec[CV_LS_NNINF];
    out->k = (int)rec[CV_LS_K];
    for (int i = 0; i < out->k; i++) {
        out->ids[i] = (int32_t)rec[CV_LS_FIXED + 2 * i];
        out->probs[i] = rec[CV_LS_FIXED + 2 * i + 1];
    }
    out->margin = out->k >= 2 ? out->probs[0] - out->probs[1] : (out->k == 1 ? out->probs[0] : NAN);
}

/* ---- the logits pass ---------------------------------------------------------------------- */

void cv_logits_stats_row(double *rec, const float *logits, int V, int k) {
    if (k > CV_TOPK_MAX) k = CV_TOPK_MAX;
    if (k > V) k = V;
    float best[CV_TOPK_MAX];
    int32_t best_id[CV_TOPK_MAX];
    int nbest = 0;
    double m = -INFINITY, z = 0.0, t = 0.0;
    int nonfinite = 0, nnan = 0, npinf = 0, nninf = 0;
    for (int i = 0; i < V; i++) {
        float l = logits[i];
        if (!isfinite(l)) {
            nnan += isnan(l);
            npinf += isinf(l) && l > 0;
            nninf += isinf(l) && l < 0;
            if (isnan(l) || l > 0) nonfinite = 1;
            continue; /* -inf: a masked token, probability 0 */
        }
        if (l > m) { /* rescale the running sums to the new maximum */
            double r = exp(m - l);
            if (z > 0) t = r * (t + (m - l) * z), z = r * z;
            m = l;
        }
        double d = l - m, e = exp(d);
        z += e;
        t += e * d;
        /* insertion into the k-best list, descending; ties keep the lower id first */
        if (k > 0 && (nbest < k || l > best[nbest - 1])) {
            int pos = nbest < k ? nbest++ : k - 1;
            while (pos > 0 && best[pos - 1] < l) {
                best[pos] = best[pos - 1];
                best_id[pos] = best_id[pos - 1];
                pos--;
            }
            best[pos] = l;
            best_id[pos] = i;
        }
    }
    rec[CV_LS_V] = V;
    rec[CV_LS_ENTROPY] = nonfinite || z <= 0 ? NAN : log(z) - t / z;
    rec[CV_LS_K] = nbest;
    rec[CV_LS_LSE] = nonfinite || z <= 0 ? NAN : m + log(z);
    rec[CV_LS_NNAN] = nnan;
    rec[CV_LS_NPINF] = npinf;
    rec[CV_LS_NNINF] = nninf;
    for (int i = 0; i < nbest; i++) {
        rec[CV_LS_FIXED + 2 * i] = best_id[i];
        rec[CV_LS_FIXED + 2 * i + 1] = nonfinite ? NAN : exp((double)best[i] - m) / z;
    }
}

/* ---- reference implementations over full tensors (oracles) -------------------------------- */

void cv_hidden_stats_ref(const float *X, int S, int D, const cv_sketch *sk, cv_hidden_stats *out) {
    size_t n = (size_t)S * D;
    double sum = 0.0, mx = 0.0, l2 = 0.0;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        sum += X[i];
        if (fabs(X[i]) > mx) mx = fabs(X[i]);
    }
    double mean = sum / (double)n, ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (X[i] - mean) * (X[i] - mean);
    for (int s = 0; s < S; s++) {
        double r = 0.0;
        for (int d = 0; d < D; d++) r += (double)X[(size_t)s * D + d] * X[(size_t)s * D + d];
        l2 += sqrt(r);
    }
    out->mean = mean;
    out->std = n > 1 ? sqrt(ss / (double)(n - 1)) : NAN;
    out->l2_norm_mean = l2 / S;
    out->max_abs = mx;
    if (sk && sk->R) {
        double *v = calloc((size_t)D, sizeof *v);
        if (!v) return;
        for (int d = 0; d < D; d++) {
            double c = 0.0;
            for (int s = 0; s < S; s++) c += X[(size_t)s * D + d];
            v[d] = (double)(float)(c / S);
        }
        sketch_project(v, sk, out);
        free(v);
    }
}

void cv_attn_stats_ref(const float *A, int rows, int K, cv_attn_stats *out) {
    double esum = 0.0, emin = INFINITY, wmax = 0.0;
    for (int r = 0; r < rows; r++) {
        double e = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[(size_t)r * K + k];
            e -= a * log(a + CV_ATTN_EPS);
            if (a > wmax) wmax = a;
        }
        esum += e;
        if (e < emin) emin = e;
    }
    out->entropy_mean = esum / rows;
    out->entropy_min = emin;
    out->concentration_max = wmax;
}

void cv_logits_stats_ref(const float *logits, int V, int k, cv_logit_stats *out) {
    memset(out, 0, sizeof *out);
    double m = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > m) m = logits[i];
    double z = 0.0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - m);
    double h = 0.0;
    for (int i = 0; i < V; i++) {
        double p = exp((double)logits[i] - m) / z;
        if (p > 0) h -= p * log(p);
    }
    out->entropy = h;
    if (k > V) k = V;
    if (k > CV_TOPK_MAX) k = CV_TOPK_MAX;
    out->k = k;
    /* selection by repeated scans: simple and obviously right */
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < V; i++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= out->ids[q] == i;
            if (!taken && (best < 0 || logits[i] > logits[best])) best = i;
        }
        out->ids[j] = best;
        out->probs[j] = exp((double)logits[best] - m) / z;
    }
    out->margin = k >= 2 ? out->probs[0] - out->probs[1] : NAN;
}
