/* test_ops.c — each CPU op against its naive twin on random inputs of awkward sizes:
 * the matmul for F32 / F16 / BF16 weights (vector tails, partial tiles), attention (causal and
 * not, GQA, position bias, queries starting mid-cache; the tiled and split-key kernels at 2,000+
 * keys with their statistic records), RoPE against the closed form, the fused LM head against
 * the stored logits, the activations against double-precision formulas, the one-pass products of
 * one x (q / k / v, the gated MLP) against one op per product. */
#include "backend/cpu_internal.h"
#include "corevital/backend.h"
#include "corevital/dtype.h"
#include "corevital/stats.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static void make_weight(cv_weight *w, void *buf, cv_dtype dt, int N, int K, unsigned *seed) {
    for (int i = 0; i < N * K; i++) {
        float v = frand(seed);
        if (dt == CV_DT_F32) ((float *)buf)[i] = v;
        if (dt == CV_DT_BF16) ((uint16_t *)buf)[i] = cv_f32_to_bf16(v);
        if (dt == CV_DT_F16) ((uint16_t *)buf)[i] = cv_f32_to_f16(v);
    }
    memset(w, 0, sizeof *w);
    w->data = buf;
    w->dtype = dt;
    w->rows = N;
    w->cols = K;
}

/* One random matmul case: weight (N, K) of dtype dt, x (T, K), bias (N), outputs o1 / o2
 * (T, N) for the kernel and its oracle; drawn from *seed in that order. */
typedef struct {
    float *x, *bias, *o1, *o2;
    void *wb;
    cv_weight w;
} mm_case;

static void mm_case_make(mm_case *c, cv_dtype dt, int T, int N, int K, unsigned *seed) {
    c->x = malloc(sizeof(float) * T * K), c->bias = malloc(sizeof(float) * N);
    c->o1 = malloc(sizeof(float) * T * N), c->o2 = malloc(sizeof(float) * T * N);
    c->wb = malloc(4 * (size_t)N * K);
    ck_assert(c->x && c->bias && c->o1 && c->o2 && c->wb);
    make_weight(&c->w, c->wb, dt, N, K, seed);
    for (int i = 0; i < T * K; i++) c->x[i] = frand(seed);
    for (int i = 0; i < N; i++) c->bias[i] = frand(seed);
}

static void mm_case_free(mm_case *c) {
    free(c->x), free(c->bias), free(c->o1), free(c->o2), free(c->wb);
}

START_TEST(test_matmul_vs_naive) {
    cv_backend *be = cv_backend_cpu_create();
    /* T 192 and 517 take the packed-panel prefill kernel (MM_PACK_T), ragged in rows and panels */
    const int Ts[] = {1, 3, 4, 5, 17, 192, 517}, Ns[] = {1, 5, 8, 70},
              Ks[] = {1, 15, 16, 17, 45, 100};
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16, CV_DT_F16};
    unsigned seed = 1;
    for (size_t di = 0; di < 3; di++)
        for (size_t a = 0; a < 7; a++)
            for (size_t b = 0; b < 4; b++)
                for (size_t c = 0; c < 6; c++) { /* K 45: 32-, 8- and partial steps of a row */
                    int T = Ts[a], N = Ns[b], K = Ks[c];
                    mm_case m;
                    mm_case_make(&m, dts[di], T, N, K, &seed);
                    be->matmul(be, m.o1, m.x, &m.w, (b & 1) ? m.bias : NULL, T);
                    cv_matmul_naive(m.o2, m.x, &m.w, (b & 1) ? m.bias : NULL, T);
                    char what[96];
                    snprintf(what, sizeof what, "matmul %s T=%d N=%d K=%d", cv_dtype_name(dts[di]),
                             T, N, K);
                    ck_assert_msg(
                        tu_check_close(what, m.o1, m.o2, (size_t)T * N, 1e-5 * sqrt(K) + 1e-6),
                        "%s", what);
                    mm_case_free(&m);
                }
    /* long prefills take the packed-panel kernel (T >= 512): ragged panels and rows, odd K; K 600
     * and 1,100 with panels larger than L1 */
    const int Ls[][3] = {
        {600, 70, 100}, {517, 64, 33}, {1030, 130, 16}, {517, 70, 600}, {200, 17, 1100}};
    for (size_t di = 0; di < 3; di++)
        for (size_t li = 0; li < 5; li++) {
            int T = Ls[li][0], N = Ls[li][1], K = Ls[li][2];
            mm_case m;
            mm_case_make(&m, dts[di], T, N, K, &seed);
            be->matmul(be, m.o1, m.x, &m.w, li == 1 ? NULL : m.bias, T);
            cv_matmul_naive(m.o2, m.x, &m.w, li == 1 ? NULL : m.bias, T);
            char what[96];
            snprintf(what, sizeof what, "packed matmul %s T=%d N=%d K=%d", cv_dtype_name(dts[di]),
                     T, N, K);
            ck_assert_msg(tu_check_close(what, m.o1, m.o2, (size_t)T * N, 1e-5 * sqrt(K) + 1e-6),
                          "%s", what);
            mm_case_free(&m);
        }
    be->destroy(be);
}
END_TEST

START_TEST(test_attention_vs_naive) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 9;
    struct {
        int H, KVH, hd, T, pos0, causal, bias;
    } cases[] = {{4, 4, 16, 7, 0, 1, 0},
                 {4, 2, 16, 1, 12, 1, 0},
                 {6, 3, 20, 5, 3, 1, 1},
                 {4, 1, 8, 9, 0, 0, 1},
                 {2, 2, 33, 3, 0, 0, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int H = cases[ci].H, KVH = cases[ci].KVH, hd = cases[ci].hd, T = cases[ci].T;
        int NK = cases[ci].pos0 + T;
        int qs = H * hd + 3, ks = KVH * hd + 5; /* strides wider than the heads */
        float *q = malloc(sizeof(float) * T * qs), *k = malloc(sizeof(float) * NK * ks);
        const int nb = H * (T + NK - 1); /* the bias's diagonals (backend.h) */
        float *v = malloc(sizeof(float) * NK * ks), *bias = malloc(sizeof(float) * nb);
        float *o1 = calloc((size_t)T * qs, sizeof(float)),
              *o2 = calloc((size_t)T * qs, sizeof(float));
        float *p1 = malloc(sizeof(float) * H * T * NK), *p2 = malloc(sizeof(float) * H * T * NK);
        for (int i = 0; i < T * qs; i++) q[i] = 2 * frand(&seed);
        for (int i = 0; i < NK * ks; i++) k[i] = 2 * frand(&seed), v[i] = frand(&seed);
        for (int i = 0; i < nb; i++) bias[i] = frand(&seed);
        double r1[CV_AS_SIZE] = {0, 0, INFINITY, 0}, r2[CV_AS_SIZE] = {0, 0, INFINITY, 0};
        /* health: per-head records from row heads_from on, basin sums over the middle third */
        int from = cases[ci].causal ? T - 1 : 0, lo = NK / 3, hi = 2 * NK / 3;
        double h1[8 * CV_AH_SIZE], h2[8 * CV_AH_SIZE], h3[8 * CV_AH_SIZE];
        double b1[16] = {0}, b2[16] = {0}, b3[16] = {0};
        double *sp1 = calloc((size_t)H * CV_SPARSE_SLOTS, sizeof(double));
        double *sp2 = calloc((size_t)H * CV_SPARSE_SLOTS, sizeof(double));
        for (int h = 0; h < H; h++) {
            cv_head_record_reset(h1 + h * CV_AH_SIZE);
            cv_head_record_reset(h2 + h * CV_AH_SIZE);
            cv_head_record_reset(h3 + h * CV_AH_SIZE);
        }
        cv_attn_args a = {.out = o1,
                          .q = q,
                          .k = k,
                          .v = v,
                          .q_stride = qs,
                          .kv_stride = ks,
                          .out_stride = qs,
                          .T = T,
                          .n_keys = NK,
                          .q_pos0 = cases[ci].pos0,
                          .n_heads = H,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = cases[ci].causal,
                          .scale = 1.0f / sqrtf((float)hd),
                          .bias = cases[ci].bias ? bias : NULL,
                          .stats = r1,
                          .probs = p1,
                          .heads = h1,
                          .heads_from = from,
                          .basin = b1,
                          .basin_lo = lo,
                          .basin_hi = hi,
                          .sparse = sp1};
        be->attention(be, &a);
        a.out = o2, a.stats = r2, a.probs = p2, a.heads = h2, a.basin = b2, a.sparse = sp2;
        cv_attention_naive(&a);
        /* a third oracle from the naive probabilities themselves (HEALTH.md §3, §5) */
        double *row = malloc(sizeof(double) * NK);
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int kend = cases[ci].causal ? cases[ci].pos0 + t + 1 : NK;
                for (int kk = 0; kk < NK; kk++) row[kk] = p2[((size_t)h * T + t) * NK + kk];
                for (int kk = 0; kk < kend; kk++)
                    b3[2 * h + (kk >= lo && kk < hi ? 0 : 1)] += row[kk];
                if (t >= from) cv_head_record_add_probs(h3 + h * CV_AH_SIZE, row, 1, kend);
            }
        free(row);
        for (int i = 0; i < H * CV_AH_SIZE; i++) {
            ck_assert_double_eq_tol(h1[i], h2[i], 1e-5 * fmax(1, fabs(h2[i])));
            ck_assert_double_eq_tol(h1[i], h3[i], 1e-5 * fmax(1, fabs(h3[i])));
        }
        for (int i = 0; i < 2 * H; i++) {
            ck_assert_double_eq_tol(b1[i], b2[i], 1e-5);
            ck_assert_double_eq_tol(b1[i], b3[i], 1e-5);
        }
        /* sparse prompt attention: the same (q, k) lists, weights to float rounding */
        for (int h = 0; h < H; h++) {
            const double *x = sp1 + (size_t)h * CV_SPARSE_SLOTS,
                         *y = sp2 + (size_t)h * CV_SPARSE_SLOTS;
            ck_assert_int_eq((int)x[0], (int)y[0]);
            ck_assert_int_le((int)x[0], CV_SPARSE_CAP);
            for (int j = 0; j < (int)x[0]; j++) {
                ck_assert_int_eq((int)x[1 + 3 * j], (int)y[1 + 3 * j]);
                ck_assert_int_eq((int)x[2 + 3 * j], (int)y[2 + 3 * j]);
                ck_assert_double_eq_tol(x[3 + 3 * j], y[3 + 3 * j], 1e-6);
                ck_assert(x[3 + 3 * j] > CV_SPARSE_MIN);
                if (j) /* row-major */
                    ck_assert(x[1 + 3 * j] > x[3 * j - 2] ||
                              (x[1 + 3 * j] == x[3 * j - 2] && x[2 + 3 * j] > x[3 * j - 1]));
            }
        }
        free(sp1), free(sp2);
        ck_assert(tu_check_close("attention out", o1, o2, (size_t)T * qs, 1e-5));
        ck_assert(tu_check_close("attention probs", p1, p2, (size_t)H * T * NK, 1e-6));
        for (int i = 0; i < CV_AS_SIZE; i++)
            ck_assert_double_eq_tol(r1[i], r2[i], 1e-5 * fmax(1, fabs(r2[i])));
        free(q), free(k), free(v), free(bias), free(o1), free(o2), free(p1), free(p2);
    }
    be->destroy(be);
}
END_TEST

/* A weight of more than 16M elements at prefill length (a vocabulary-sized head) through the
 * packed kernel, which went through it in row chunks of 16M / K rows while all its panels were
 * packed at once: the columns around 4,096 (that boundary at K = 4,096), the first and the last,
 * checked row by row against double dot products. */
START_TEST(test_matmul_packed_chunks) {
    cv_backend *be = cv_backend_cpu_create();
    const int T = 192, K = 4096, N = 4096 + 70;
    unsigned seed = 9;
    uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)N * K);
    float *x = malloc(sizeof(float) * T * K), *bias = malloc(sizeof(float) * N);
    float *o = malloc(sizeof(float) * (size_t)T * N);
    ck_assert(wb && x && bias && o);
    cv_weight w;
    make_weight(&w, wb, CV_DT_BF16, N, K, &seed);
    for (int i = 0; i < T * K; i++) x[i] = frand(&seed);
    for (int i = 0; i < N; i++) bias[i] = frand(&seed);
    be->matmul(be, o, x, &w, bias, T);
    const int cols[] = {0, 63, 4095, 4096, 4097, 4159, N - 1};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
        for (int t = 0; t < T; t++) {
            int n = cols[c];
            double acc = bias[n];
            for (int k = 0; k < K; k++)
                acc += (double)x[(size_t)t * K + k] * cv_bf16_to_f32(wb[(size_t)n * K + k]);
            ck_assert_msg(fabs(o[(size_t)t * N + n] - acc) <= 1e-5 * sqrt(K) + 1e-6,
                          "row %d col %d: %.9g vs %.9g", t, n, o[(size_t)t * N + n], acc);
        }
    free(wb), free(x), free(bias), free(o);
    be->destroy(be);
}
END_TEST

/* model.prefill_dtype bfloat16 (cv_weight.prefill_bf16): every product over more than one row
 * rounds x and W to bf16 (nearest even) and accumulates their exact products in fp32. Oracle:
 * the same rounded values in double; tolerance as for fp32 (only the summation differs). An
 * fp32 kernel that ignored the flag would be off by ~1e-2 (bf16's 8 bits), far outside it. One
 * row (decode) stays the exact fp32 product. Ragged panels and rows, odd K (a zero-padded pair),
 * K over 32 (the pair blocks), and a 16M+ weight. */
static float bf16_round(float v) {
    return cv_bf16_to_f32(cv_f32_to_bf16(v));
}

START_TEST(test_matmul_prefill_bf16) {
    cv_backend *be = cv_backend_cpu_create();
    if (!be->prefill_bf16) { /* a build without AVX512-BF16: model load refuses the option */
        be->destroy(be);
        return;
    }
    const int Ts[] = {1, 2, 7, 192, 517}, Ns[] = {5, 70, 130}, Ks[] = {1, 16, 17, 33, 100};
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16, CV_DT_F16};
    unsigned seed = 5;
    for (size_t di = 0; di < 3; di++)
        for (size_t a = 0; a < 5; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t c = 0; c < 5; c++) {
                    int T = Ts[a], N = Ns[b], K = Ks[c];
                    mm_case m;
                    mm_case_make(&m, dts[di], T, N, K, &seed);
                    m.w.prefill_bf16 = 1;
                    const float *bs = (c & 1) ? m.bias : NULL;
                    be->matmul(be, m.o1, m.x, &m.w, bs, T);
                    if (T == 1) {
                        cv_matmul_naive(m.o2, m.x, &m.w, bs, T);
                    } else {
                        for (int t = 0; t < T; t++)
                            for (int n = 0; n < N; n++) {
                                const void *row =
                                    (const char *)m.wb + (size_t)n * K * cv_dtype_size(dts[di]);
                                double acc = bs ? bs[n] : 0.0;
                                for (int k = 0; k < K; k++)
                                    acc += (double)bf16_round(m.x[(size_t)t * K + k]) *
                                           bf16_round(cv_elem_f32(row, dts[di], (size_t)k));
                                m.o2[(size_t)t * N + n] = (float)acc;
                            }
                    }
                    char what[96];
                    snprintf(what, sizeof what, "bf16 prefill matmul %s T=%d N=%d K=%d",
                             cv_dtype_name(dts[di]), T, N, K);
                    ck_assert_msg(
                        tu_check_close(what, m.o1, m.o2, (size_t)T * N, 1e-5 * sqrt(K) + 1e-6),
                        "%s", what);
                    mm_case_free(&m);
                }
    /* a weight over 16M elements (a vocabulary-sized head), around column 4,096 */
    const int T = 7, K = 4096, N = 4096 + 70;
    uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)N * K);
    float *x = malloc(sizeof(float) * T * K), *o = malloc(sizeof(float) * (size_t)T * N);
    ck_assert(wb && x && o);
    cv_weight w;
    make_weight(&w, wb, CV_DT_BF16, N, K, &seed);
    w.prefill_bf16 = 1;
    for (int i = 0; i < T * K; i++) x[i] = frand(&seed);
    be->matmul(be, o, x, &w, NULL, T);
    const int cols[] = {0, 4095, 4096, N - 1};
    for (size_t ci = 0; ci < 4; ci++)
        for (int t = 0; t < T; t++) {
            int n = cols[ci];
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)bf16_round(x[(size_t)t * K + k]) *
                       cv_bf16_to_f32(wb[(size_t)n * K + k]);
            ck_assert_msg(fabs(o[(size_t)t * N + n] - acc) <= 1e-5 * sqrt(K) + 1e-6,
                          "row %d col %d: %.9g vs %.9g", t, n, o[(size_t)t * N + n], acc);
        }
    free(wb), free(x), free(o);
    be->destroy(be);
}
END_TEST

/* The products of one x in one pass (matmul3: attention's q, k, v; gate_up_silu: the gated
 * MLP's first half with the up product folded into the gate's tiles) against the ops they stand
 * for, one call each, over fp32 and bf16 panels, decode (one row), short (unpacked: the fallback)
 * and long (packed) prompts, ragged panels and odd K. matmul3 runs the same tiles as three calls,
 * so it must be bit-equal; the gated MLP equal too where N is a multiple of 16 (silu_mul's scalar
 * tail rounds within an ulp of its vector lanes, which the fused epilogue uses for every column).
 */
START_TEST(test_matmul3_gate_up_vs_ops) {
    cv_backend *be = cv_backend_cpu_create();
    /* (T, K, N of q, k, v): 9 + 3 + 3 panels like SmolLM2's; ragged widths, odd K, bias or not */
    const int cases[][5] = {{5, 48, 576, 192, 192},
                            {517, 576, 576, 192, 192},
                            {200, 33, 70, 5, 130},
                            {40, 100, 64, 64, 200},
                            {300, 17, 1, 100, 16},
                            /* decode (T 1): one region over all rows (AVX2 matvec_n) */
                            {1, 576, 576, 192, 192},
                            {1, 45, 70, 5, 131}};
    unsigned seed = 11;
    for (int bf = 0; bf <= (be->prefill_bf16 ? 1 : 0); bf++)
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            int T = cases[ci][0], K = cases[ci][1];
            mm_case m[3];
            float *o3[3];
            const cv_weight *w3[3];
            const float *b3[3];
            for (int i = 0; i < 3; i++) {
                mm_case_make(&m[i], i == 1 ? CV_DT_BF16 : CV_DT_F32, T, cases[ci][2 + i], K, &seed);
                memcpy(m[i].x, m[0].x, sizeof(float) * T * K); /* one x */
                m[i].w.prefill_bf16 = bf;
                o3[i] = m[i].o1, w3[i] = &m[i].w, b3[i] = ci % 2 ? m[i].bias : NULL;
            }
            cv_matmul3(be, o3, m[0].x, w3, b3, T);
            for (int i = 0; i < 3; i++) {
                be->matmul(be, m[i].o2, m[0].x, w3[i], b3[i], T);
                size_t n = (size_t)T * cases[ci][2 + i];
                ck_assert_msg(memcmp(m[i].o1, m[i].o2, sizeof(float) * n) == 0,
                              "matmul3 product %d differs from its matmul (T=%d K=%d bf=%d)", i, T,
                              K, bf);
            }
            /* the gated MLP over the first two shapes' widths: gate (T, N) */
            int N = ci % 2 ? cases[ci][4] : cases[ci][2];
            mm_case g, u;
            mm_case_make(&g, CV_DT_BF16, T, N, K, &seed);
            mm_case_make(&u, CV_DT_F32, T, N, K, &seed);
            g.w.prefill_bf16 = u.w.prefill_bf16 = bf;
            memcpy(g.x, m[0].x, sizeof(float) * T * K);
            be->gate_up_silu(be, g.o1, u.o1, g.x, &g.w, &u.w, T);
            be->matmul(be, g.o2, g.x, &g.w, NULL, T);
            be->matmul(be, u.o2, g.x, &u.w, NULL, T);
            be->silu_mul(be, g.o2, u.o2, (size_t)T * N);
            char what[96];
            snprintf(what, sizeof what, "gate_up_silu T=%d N=%d K=%d bf=%d", T, N, K, bf);
            if (N % 16 == 0)
                ck_assert_msg(memcmp(g.o1, g.o2, sizeof(float) * T * N) == 0, "%s differs", what);
            else
                ck_assert_msg(tu_check_close(what, g.o1, g.o2, (size_t)T * N, 1e-6), "%s", what);
            mm_case_free(&g), mm_case_free(&u);
            for (int i = 0; i < 3; i++) mm_case_free(&m[i]);
        }
    be->destroy(be);
}
END_TEST

/* The tiled prefill kernel and the split-key decode kernel (taken whenever probs is NULL) against
 * the double oracle at 2,000+ keys: causal and not, with and without the position bias, GQA,
 * head_dim 64 and odd widths, queries starting mid-cache, plus every per-row record the kernels
 * feed (attention record, per-head records, basin masses). Tolerances: outputs 2e-5 absolute
 * (values are weighted means of V in [-1, 1]); sums over rows 1e-5 relative (fp32 scores and
 * exponentials, double accumulation across key tiles), per-row extremes (min entropy, largest
 * weight) likewise: the fp32 scores (|s| up to ~40 here) carry ~1e-6 relative error into 1/z.
 * Run four times: over an fp32 cache, and (_i odd) over a bf16 cache (--kv-dtype bf16), where
 * the oracle reads the same bf16 values, the one-row kernel is checked too (for the shorter
 * cases), and the bf16 cache's own error is bounded against the fp32 oracle: 2e-2 absolute on
 * outputs and entropies (bf16 keeps 8 bits: keys in [-2, 2] move scores by up to ~0.1 here);
 * and (_i >= 2) with the kernels reading a head-major copy of the cache (kv_head_stride, the CPU
 * model's own layout) while the oracle reads the interleaved one. */
START_TEST(test_attention_long_vs_naive) {
    const int bf = _i & 1, hm = _i >> 1;
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 21;
    struct {
        int H, KVH, hd, T, NK, pos0, causal, bias;
    } cases[] = {{3, 1, 64, 2048, 2048, 0, 1, 0},   /* prefill, GQA 3:1 (SmolLM2's ratio) */
                 {4, 2, 64, 300, 2100, 1800, 1, 1}, /* a chunk mid-cache, with bias */
                 {4, 2, 64, 299, 2100, 1801, 1, 0}, /* rows of a 4-row group see no key */
                 {6, 3, 40, 37, 2050, 0, 0, 1},     /* cross-attention shape, odd width */
                 {4, 4, 64, 129, 2001, 0, 0, 0},    /* bidirectional, ragged tiles */
                 {9, 3, 64, 1, 3001, 3000, 1, 0},   /* decode */
                 {4, 2, 20, 1, 2500, 2499, 1, 1},   /* decode, odd width, bias */
                 {2, 1, 64, 1, 700, 0, 0, 0},       /* decode, not causal */
                 {8, 2, 40, 1, 2049, 2048, 1, 1}, /* decode, 4 heads a group, hd 40, 1-key chunk */
                 {2, 2, 64, 1, 1030, 1029, 1, 0}, /* decode, no GQA, 6-key tail */
                 {9, 3, 64, 1, 257, 256, 1, 1}};  /* decode, just past one chunk */
    /* the chunks and tails named are those of 256-key chunks; both decode kernels split into a
     * multiple of 4 near-equal chunks (att_dec_split): tails of 229, 157, 106, 53 keys */
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int H = cases[ci].H, KVH = cases[ci].KVH, hd = cases[ci].hd, T = cases[ci].T;
        int NK = cases[ci].NK;
        int qs = H * hd + 3, ks = KVH * hd + 5;
        float *q = malloc(sizeof(float) * T * qs), *k = malloc(sizeof(float) * NK * ks);
        float *v = malloc(sizeof(float) * NK * ks);
        const int nb = H * (T + NK - 1); /* the bias's diagonals (backend.h) */
        float *bias = cases[ci].bias ? malloc(sizeof(float) * nb) : NULL;
        float *o1 = calloc((size_t)T * qs, sizeof(float)),
              *o2 = calloc((size_t)T * qs, sizeof(float));
        for (int i = 0; i < T * qs; i++) q[i] = 3 * frand(&seed);
        for (int i = 0; i < NK * ks; i++) k[i] = 2 * frand(&seed), v[i] = frand(&seed);
        if (bias)
            for (int i = 0; i < nb; i++) bias[i] = 2 * frand(&seed);
        uint16_t *k16 = NULL, *v16 = NULL;
        if (bf) {
            k16 = malloc(sizeof(uint16_t) * NK * ks), v16 = malloc(sizeof(uint16_t) * NK * ks);
            for (int i = 0; i < NK * ks; i++)
                k16[i] = cv_f32_to_bf16(k[i]), v16[i] = cv_f32_to_bf16(v[i]);
        }
        double r1[CV_AS_SIZE], r2[CV_AS_SIZE];
        double *h1 = malloc(sizeof(double) * H * CV_AH_SIZE),
               *h2 = malloc(sizeof(double) * H * CV_AH_SIZE);
        double *b1 = calloc(2 * (size_t)H, sizeof(double)),
               *b2 = calloc(2 * (size_t)H, sizeof(double));
        cv_attn_record_reset(r1), cv_attn_record_reset(r2);
        for (int h = 0; h < H; h++)
            cv_head_record_reset(h1 + h * CV_AH_SIZE), cv_head_record_reset(h2 + h * CV_AH_SIZE);
        cv_attn_args a = {.out = o1,
                          .q = q,
                          .k = k,
                          .v = v,
                          .q_stride = qs,
                          .kv_stride = ks,
                          .out_stride = qs,
                          .T = T,
                          .n_keys = NK,
                          .q_pos0 = cases[ci].pos0,
                          .n_heads = H,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = cases[ci].causal,
                          .scale = 1.0f / sqrtf((float)hd),
                          .bias = bias,
                          .stats = r1,
                          .heads = h1,
                          .heads_from = T / 2,
                          .basin = b1,
                          .basin_lo = NK / 3,
                          .basin_hi = 2 * NK / 3};
        if (bf) a.k = a.v = NULL, a.k16 = k16, a.v16 = v16;
        float *khm = NULL, *vhm = NULL; /* head-major copies: (KVH, NK, hd) */
        uint16_t *k16hm = NULL, *v16hm = NULL;
        cv_attn_args kern = a;
        if (hm) {
            size_t n = (size_t)KVH * NK * hd;
            khm = malloc(sizeof(float) * n), vhm = malloc(sizeof(float) * n);
            k16hm = malloc(sizeof(uint16_t) * n), v16hm = malloc(sizeof(uint16_t) * n);
            for (int g = 0; g < KVH; g++)
                for (int kk = 0; kk < NK; kk++)
                    for (int d = 0; d < hd; d++) {
                        size_t src = (size_t)kk * ks + (size_t)g * hd + d;
                        size_t dst = ((size_t)g * NK + kk) * hd + d;
                        khm[dst] = k[src], vhm[dst] = v[src];
                        k16hm[dst] = cv_f32_to_bf16(k[src]), v16hm[dst] = cv_f32_to_bf16(v[src]);
                    }
            kern.kv_stride = hd, kern.kv_head_stride = NK * hd;
            if (bf)
                kern.k16 = k16hm, kern.v16 = v16hm;
            else
                kern.k = khm, kern.v = vhm;
        }
        be->attention(be, &kern);
        a.out = o2, a.stats = r2, a.heads = h2, a.basin = b2;
        cv_attention_naive(&a);
        char what[64];
        snprintf(what, sizeof what, "long attention case %zu%s%s out", ci,
                 bf ? " (bf16 cache)" : "", hm ? " (head-major)" : "");
        if (bf) {
            /* the bf16 cache against the fp32 one: its rounding error, bounded */
            float *o3 = calloc((size_t)T * qs, sizeof(float));
            double r3[CV_AS_SIZE];
            cv_attn_record_reset(r3);
            cv_attn_args f = a;
            f.k = k, f.v = v, f.k16 = f.v16 = NULL, f.out = o3, f.stats = r3;
            f.heads = NULL, f.basin = NULL;
            cv_attention_naive(&f);
            ck_assert_msg(tu_check_close("bf16 cache vs fp32", o3, o2, (size_t)T * qs, 2e-2),
                          "case %zu", ci);
            ck_assert_double_eq_tol(r3[CV_AS_ESUM] / r3[CV_AS_ROWS],
                                    r2[CV_AS_ESUM] / r2[CV_AS_ROWS], 2e-2);
            free(o3);
            if (T <= 129) { /* the one-row kernel reads the bf16 cache too */
                float *o4 = calloc((size_t)T * qs, sizeof(float));
                double r4[CV_AS_SIZE];
                cv_attn_record_reset(r4);
                cv_attn_args w = kern;
                w.out = o4, w.stats = r4, w.heads = NULL, w.basin = NULL;
                cv_cpu_attention_rows(be, &w);
                ck_assert_msg(
                    tu_check_close("rows kernel, bf16 cache", o4, o2, (size_t)T * qs, 2e-5),
                    "case %zu", ci);
                ck_assert_double_eq_tol(r4[CV_AS_ESUM], r2[CV_AS_ESUM],
                                        1e-5 * fabs(r2[CV_AS_ESUM]) + 1e-9);
                free(o4);
            }
        }
        ck_assert_msg(tu_check_close(what, o1, o2, (size_t)T * qs, 2e-5), "%s", what);
        ck_assert_double_eq(r1[CV_AS_ROWS], r2[CV_AS_ROWS]);
        ck_assert_double_eq_tol(r1[CV_AS_ESUM], r2[CV_AS_ESUM], 1e-5 * fabs(r2[CV_AS_ESUM]) + 1e-9);
        ck_assert_double_eq_tol(r1[CV_AS_EMIN], r2[CV_AS_EMIN], 1e-5 * fabs(r2[CV_AS_EMIN]) + 1e-9);
        ck_assert_double_eq_tol(r1[CV_AS_WMAX], r2[CV_AS_WMAX], 1e-5 * fabs(r2[CV_AS_WMAX]) + 1e-9);
        for (int h = 0; h < H; h++) {
            const double *x = h1 + h * CV_AH_SIZE, *y = h2 + h * CV_AH_SIZE;
            for (int f = 0; f < CV_AH_SIZE; f++) {
                double tol = 1e-5 * fabs(y[f]) + 1e-9;
                ck_assert_msg(fabs(x[f] - y[f]) <= tol, "case %zu head %d field %d: %.17g vs %.17g",
                              ci, h, f, x[f], y[f]);
            }
            for (int f = 0; f < 2; f++)
                ck_assert_msg(fabs(b1[2 * h + f] - b2[2 * h + f]) <=
                                  1e-5 * fabs(b2[2 * h + f]) + 1e-9,
                              "case %zu head %d basin %d: %.17g vs %.17g", ci, h, f, b1[2 * h + f],
                              b2[2 * h + f]);
        }
        free(q), free(k), free(v), free(bias), free(o1), free(o2), free(h1), free(h2), free(b1),
            free(b2), free(k16), free(v16), free(khm), free(vhm), free(k16hm), free(v16hm);
    }
    be->destroy(be);
}
END_TEST

/* The split-key decode's results do not depend on the thread count: its cut of the keys and its
 * merge order depend on the key count only (att_dec_split), so 1, 2, 3 and 4 threads give
 * bit-identical outputs and records. Over the CPU's head-major cache (where the kernels also
 * prefetch), fp32 and bf16, at 4,113 keys (20 chunks of 208) and 1,030 (8 of 132), with a
 * bias, per-head records and basin masses. */
START_TEST(test_attention_decode_threads) {
    cv_backend *be = cv_backend_cpu_create();
    const int H = 9, KVH = 3, hd = 64, lens[2] = {4113, 1030}, nt0 = omp_get_max_threads();
    unsigned seed = 5;
    for (int li = 0; li < 2; li++)
        for (int bf = 0; bf < 2; bf++) {
            const int NK = lens[li];
            const size_t n = (size_t)KVH * NK * hd;
            float *q = malloc(sizeof(float) * H * hd), *k = malloc(sizeof(float) * n),
                  *v = malloc(sizeof(float) * n), *bias = malloc(sizeof(float) * H * NK);
            uint16_t *k16 = malloc(sizeof(uint16_t) * n), *v16 = malloc(sizeof(uint16_t) * n);
            for (int i = 0; i < H * hd; i++) q[i] = 3 * frand(&seed);
            for (size_t i = 0; i < n; i++) {
                k[i] = 2 * frand(&seed), v[i] = frand(&seed);
                k16[i] = cv_f32_to_bf16(k[i]), v16[i] = cv_f32_to_bf16(v[i]);
            }
            for (int i = 0; i < H * NK; i++) bias[i] = frand(&seed);
            float out[4][9 * 64];
            double rec[4][CV_AS_SIZE], heads[4][9 * CV_AH_SIZE], basin[4][18];
            for (int r = 0; r < 4; r++) {
                cv_attn_record_reset(rec[r]);
                for (int h = 0; h < H; h++) cv_head_record_reset(heads[r] + h * CV_AH_SIZE);
                memset(basin[r], 0, sizeof basin[r]);
                cv_attn_args a = {.out = out[r],
                                  .q = q,
                                  .k = bf ? NULL : k,
                                  .v = bf ? NULL : v,
                                  .k16 = bf ? k16 : NULL,
                                  .v16 = bf ? v16 : NULL,
                                  .q_stride = H * hd,
                                  .kv_stride = hd,
                                  .kv_head_stride = NK * hd,
                                  .out_stride = H * hd,
                                  .T = 1,
                                  .n_keys = NK,
                                  .q_pos0 = NK - 1,
                                  .n_heads = H,
                                  .n_kv_heads = KVH,
                                  .head_dim = hd,
                                  .causal = 1,
                                  .scale = 0.125f,
                                  .bias = bias,
                                  .stats = rec[r],
                                  .heads = heads[r],
                                  .basin = basin[r],
                                  .basin_lo = NK / 3,
                                  .basin_hi = 2 * NK / 3};
                omp_set_num_threads(r + 1);
                be->attention(be, &a);
            }
            omp_set_num_threads(nt0);
            for (int r = 1; r < 4; r++) {
                ck_assert_msg(!memcmp(out[r], out[0], sizeof out[0]),
                              "%d keys%s: outputs with %d threads differ from 1 thread's", NK,
                              bf ? " (bf16)" : "", r + 1);
                ck_assert_msg(!memcmp(rec[r], rec[0], sizeof rec[0]) &&
                                  !memcmp(heads[r], heads[0], sizeof heads[0]) &&
                                  !memcmp(basin[r], basin[0], sizeof basin[0]),
                              "%d keys%s: records with %d threads differ", NK, bf ? " (bf16)" : "",
                              r + 1);
            }
            ck_assert(rec[0][CV_AS_ROWS] == 9 && basin[0][0] > 0);
            free(q), free(k), free(v), free(bias), free(k16), free(v16);
        }
    be->destroy(be);
}
END_TEST

/* Prompt surprisals: the vocabulary-sliced running log-softmax equals the one-row op, whatever
 * the slicing (a slice of 1 column, uneven slices, the whole row), NaN and +inf rows included. */
START_TEST(test_logprob_accum_vs_rows) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 21;
    const int T = 7, V = 1037;
    float *l = malloc(sizeof(float) * T * V);
    int32_t tg[7];
    for (int i = 0; i < T * V; i++) l[i] = 12 * frand(&seed);
    for (int t = 0; t < T; t++) tg[t] = (t * 311 + 5) % V;
    l[2 * V + 900] = NAN;
    l[4 * V + 3] = INFINITY;
    l[5 * V + 17] = -INFINITY; /* a masked token: fine */
    double want[7];
    be->target_logprob(be, want, l, T, V, tg);
    const int slices[] = {1, 100, 333, 1037, 4096};
    float *buf = malloc(sizeof(float) * T * 4096);
    for (size_t si = 0; si < sizeof slices / sizeof slices[0]; si++) {
        double st[21];
        for (int t = 0; t < T; t++) st[3 * t] = -INFINITY, st[3 * t + 1] = 0, st[3 * t + 2] = NAN;
        for (int c0 = 0; c0 < V; c0 += slices[si]) {
            int n = V - c0 < slices[si] ? V - c0 : slices[si];
            for (int t = 0; t < T; t++)
                memcpy(buf + (size_t)t * n, l + (size_t)t * V + c0, sizeof(float) * n);
            be->logprob_accum(be, st, buf, T, n, c0, tg);
        }
        for (int t = 0; t < T; t++) {
            double got = st[3 * t + 2] - (st[3 * t] + log(st[3 * t + 1]));
            if (isnan(want[t]))
                ck_assert_msg(isnan(got), "slice %d row %d: %g, want NaN", slices[si], t, got);
            else
                ck_assert_msg(fabs(got - want[t]) <= 1e-9 * fmax(1, fabs(want[t])),
                              "slice %d row %d: %.17g vs %.17g", slices[si], t, got, want[t]);
        }
    }
    ck_assert(isnan(want[2]) && isnan(want[4]) && isfinite(want[5]));
    free(l);
    free(buf);
    be->destroy(be);
}
END_TEST

/* The fused LM head (head_logprob) against the stored logits: the same matmul, then the
 * one-row log-softmax. Rows from T = 32 / 192 (where it applies) to uneven T, a vocabulary with
 * a ragged last panel, fp32 and bf16 panels over F32 / BF16 weights; a NaN row, a row with +inf
 * logits, targets outside the vocabulary (NaN) and at its last column. Too few rows: it declines
 * (returns 0) and the caller slices. */
START_TEST(test_head_logprob_vs_rows) {
    cv_backend *be = cv_backend_cpu_create();
    if (!be->head_logprob) { /* a portable build: the health layer slices the head */
        be->destroy(be);
        return;
    }
    unsigned seed = 31;
    const int V = 64 * 37 + 21, K = 70;
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16};
    for (int di = 0; di < 2; di++)
        for (int bf = 0; bf <= (be->prefill_bf16 ? 1 : 0); bf++) {
            const int Ts[] = {bf ? 32 : 192, 203};
            for (int ti = 0; ti < 2; ti++) {
                int T = Ts[ti];
                mm_case m;
                mm_case_make(&m, dts[di], T, V, K, &seed);
                free(m.o1), free(m.o2);
                m.o1 = malloc(sizeof(float) * (size_t)T * V), m.o2 = NULL;
                for (int i = 0; i < T * K; i++) m.x[i] *= 3.0f; /* a peaked softmax */
                for (int k = 0; k < K; k++) m.x[1 * K + k] = k == 5 ? NAN : m.x[1 * K + k];
                for (int k = 0; k < K; k++) m.x[2 * K + k] = k ? 0.0f : INFINITY; /* +-inf */
                m.w.prefill_bf16 = bf;
                int32_t *y = malloc(sizeof(int32_t) * T);
                for (int t = 0; t < T; t++) y[t] = (int32_t)((t * 977u + 3u) % (unsigned)V);
                y[3] = -1, y[4] = V, y[5] = V - 1, y[6] = 0;
                double *want = malloc(sizeof(double) * T), *got = malloc(sizeof(double) * T);
                be->matmul(be, m.o1, m.x, &m.w, NULL, T);
                be->target_logprob(be, want, m.o1, T, V, y);
                ck_assert_int_eq(be->head_logprob(be, got, m.x, &m.w, T, y), 1);
                ck_assert(isnan(want[1]) && isnan(want[2]) && isnan(want[3]) && isnan(want[4]));
                for (int t = 0; t < T; t++) {
                    if (isnan(want[t])) {
                        ck_assert_msg(isnan(got[t]), "T=%d row %d: %g, want NaN", T, t, got[t]);
                        continue;
                    }
                    /* the same products (bf16: the same panels, bit for bit; fp32 at T < 192
                     * the matmul's dot tiles sum in another order), fp32 exps, double sums */
                    ck_assert_msg(fabs(got[t] - want[t]) <= 2e-5 * fmax(1.0, fabs(want[t])),
                                  "%s %s T=%d row %d: %.9g vs %.9g", cv_dtype_name(dts[di]),
                                  bf ? "bf16" : "fp32", T, t, got[t], want[t]);
                }
                free(y), free(want), free(got);
                mm_case_free(&m);
            }
        }
    /* too few rows for the fused head: declined, nothing written */
    {
        mm_case m;
        mm_case_make(&m, CV_DT_F32, 8, 100, 16, &seed);
        int32_t y[8] = {0};
        double out[8] = {7, 7, 7, 7, 7, 7, 7, 7};
        ck_assert_int_eq(be->head_logprob(be, out, m.x, &m.w, 8, y), 0);
        ck_assert(out[0] == 7 && out[7] == 7);
        mm_case_free(&m);
    }
    be->destroy(be);
}
END_TEST

/* SiLU x mul and GELU (tanh) against their double-precision formulas, at lengths with vector
 * tails and at the extremes (exp overflow / underflow, NaN). */
#ifdef CV_CPU_AVX2
/* The AVX2 exps against double exp: cv_exp256 over [-100, 100], cv_exp256_neg (the softmax's,
 * x <= 0) over [-100, 0], each within 2 ulp (relative 2.4e-7) from -87.3 to 88 (2^n overflows
 * from 88.38, a little before FLT_MAX), 0 below -87.3 and at -inf, NaN for NaN, inf above 88.7. */
START_TEST(test_exp256_vs_double) {
    float x[8], y[8];
    double worst = 0;
    for (int i = 0; i <= 400000; i += 8) {
        for (int l = 0; l < 8; l++) x[l] = -100.0f + 200.0f * (float)(i + l) / 400000.0f;
        _mm256_storeu_ps(y, cv_exp256(_mm256_loadu_ps(x)));
        for (int l = 0; l < 8; l++) {
            if (x[l] < -87.3f)
                ck_assert_float_eq(y[l], 0.0f);
            else if (x[l] > 88.7f)
                ck_assert(isinf(y[l]));
            else if (x[l] <= 88.0f)
                worst = fmax(worst, fabs(y[l] - exp(x[l])) / exp(x[l]));
        }
        for (int l = 0; l < 8; l++) x[l] = -100.0f * (float)(i + l) / 400000.0f;
        _mm256_storeu_ps(y, cv_exp256_neg(_mm256_loadu_ps(x)));
        for (int l = 0; l < 8; l++) {
            if (x[l] < -87.3f)
                ck_assert_float_eq(y[l], 0.0f);
            else
                worst = fmax(worst, fabs(y[l] - exp(x[l])) / exp(x[l]));
        }
    }
    ck_assert_msg(worst < 2.4e-7, "exp relative error %g", worst);
    const float edge[8] = {-INFINITY, NAN, -87.29f, -0.0f, 0.0f, -1e-30f, -87.31f, -0.3465736f};
    _mm256_storeu_ps(y, cv_exp256_neg(_mm256_loadu_ps(edge)));
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert(isnan(y[1]));
    ck_assert(y[2] > 0.0f && isnormal(y[2]));
    ck_assert_float_eq(y[3], 1.0f);
    ck_assert_float_eq(y[4], 1.0f);
    ck_assert_float_eq(y[5], 1.0f);
    ck_assert_float_eq(y[6], 0.0f);
    ck_assert(fabs(y[7] - exp(-0.3465736)) < 1.2e-7);
    _mm256_storeu_ps(y, cv_exp256(_mm256_loadu_ps(edge)));
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert(isnan(y[1]));
}
END_TEST
#endif

#ifdef CV_CPU_AVX512
/* The AVX-512 intrinsics the kernels rely on, against answers worked out by hand from Intel's
 * SDM: rounding ties, NaN and denormal handling, the signedness of the VNNI product, the lane
 * selections of the shuffles, and masked loads that read only their lanes (a 3-float buffer;
 * ASan would report more). On an AVX-512 CPU this checks the hardware; in make test-avx512emu
 * the emulation (tests/avx512emu/avx512emu.h) against the same answers. */
static uint32_t u32_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
START_TEST(test_avx512_known_answers) {
    float a16[16], b16[16], o[16];
    for (int l = 0; l < 16; l++) a16[l] = (float)l, b16[l] = 100.0f + (float)l;
#ifdef __AVX512BF16__
    /* bf16: ties to even (1 + 2^-8 -> 1.0, 1 + 3 * 2^-8 -> 1 + 2^-6), a signalling NaN quieted,
     * denormals to signed zero; the second operand gives the low half */
    float cv[16] = {1.0f, 1.00390625f, 1.01171875f, 0, 1e-40f, -1e-40f};
    uint32_t snan = 0x7fa00000u;
    memcpy(&cv[3], &snan, 4);
    uint16_t h[32];
    __m512i pb = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(a16), _mm512_loadu_ps(cv));
    _mm512_storeu_si512(h, pb);
    ck_assert_uint_eq(h[0], 0x3f80);
    ck_assert_uint_eq(h[1], 0x3f80);
    ck_assert_uint_eq(h[2], 0x3f82);
    ck_assert_uint_eq(h[3], 0x7fe0);
    ck_assert_uint_eq(h[4], 0x0000);
    ck_assert_uint_eq(h[5], 0x8000);
    ck_assert_uint_eq(h[16 + 3], 0x4040); /* 3.0 from the first operand, in the high half */
    /* vdpbf16ps: 2 * 3 + 0.5 * 4 added to 1 */
    uint32_t pa = 0x40003f00u, pw = 0x40404080u; /* (0.5, 2) and (4, 3) as (even, odd) pairs */
    float d[16];
    _mm512_storeu_ps(d, _mm512_dpbf16_ps(_mm512_set1_ps(1.0f), (__m512bh)_mm512_set1_epi32((int)pa),
                                         (__m512bh)_mm512_set1_epi32((int)pw)));
    ck_assert(d[0] == 9.0f && d[15] == 9.0f);
#endif
#ifdef __AVX512VNNI__
    /* vpdpbusd: unsigned bytes of a times signed bytes of b: 4 * (255 * -1) + 5 */
    int32_t r32[16];
    _mm512_storeu_si512(r32, _mm512_dpbusd_epi32(_mm512_set1_epi32(5), _mm512_set1_epi32(-1),
                                                 _mm512_set1_epi32(-1)));
    ck_assert_int_eq(r32[0], -1015);
#endif
    /* vrndscaleps to nearest even; -0.4 rounds to -0 */
    float rv[16] = {2.5f, 3.5f, -2.5f, -0.4f, INFINITY}, ro[16];
    _mm512_storeu_ps(ro, _mm512_roundscale_ps(_mm512_loadu_ps(rv),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    ck_assert(ro[0] == 2.0f && ro[1] == 4.0f && ro[2] == -2.0f && isinf(ro[4]));
    ck_assert_uint_eq(u32_of(ro[3]), 0x80000000u);
    /* vscalefps: a * 2^floor(b), infinities as the SDM says */
    float sa[16] = {3.0f, 1.0f, 1.0f, 0.0f}, sb[16] = {2.7f, -INFINITY, INFINITY, INFINITY}, so[16];
    _mm512_storeu_ps(so, _mm512_scalef_ps(_mm512_loadu_ps(sa), _mm512_loadu_ps(sb)));
    ck_assert(so[0] == 12.0f && so[1] == 0.0f && isinf(so[2]) && isnan(so[3]));
    /* lane selections */
    _mm512_storeu_ps(o, _mm512_shuffle_f32x4(_mm512_loadu_ps(a16), _mm512_loadu_ps(b16), 0x4e));
    ck_assert(o[0] == 8.0f && o[4] == 12.0f && o[8] == 100.0f && o[12] == 104.0f);
    _mm512_storeu_ps(o, _mm512_shuffle_ps(_mm512_loadu_ps(a16), _mm512_loadu_ps(b16), 0x1b));
    ck_assert(o[0] == 3.0f && o[1] == 2.0f && o[2] == 101.0f && o[3] == 100.0f && o[4] == 7.0f);
    _mm512_storeu_ps(o, _mm512_permutex2var_ps(_mm512_loadu_ps(a16),
                                               _mm512_setr_epi32(17, 3, 31, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                 0, 0, 0, 0, 32 + 5),
                                               _mm512_loadu_ps(b16)));
    ck_assert(o[0] == 101.0f && o[1] == 3.0f && o[2] == 115.0f && o[15] == 5.0f);
    _mm512_storeu_ps(o, _mm512_permutexvar_ps(_mm512_set1_epi32(16 + 7), _mm512_loadu_ps(a16)));
    ck_assert(o[0] == 7.0f);
    /* compares: NLE_UQ is true on NaN, EQ_OQ false; lanes outside the mask clear */
    __m512 nan = _mm512_set1_ps(NAN), one = _mm512_set1_ps(1.0f);
    ck_assert_uint_eq(_mm512_cmp_ps_mask(nan, one, _CMP_NLE_UQ), 0xffff);
    ck_assert_uint_eq(_mm512_cmp_ps_mask(nan, nan, _CMP_EQ_OQ), 0);
    ck_assert_uint_eq(_mm512_mask_cmp_ps_mask(0x00f0, nan, one, _CMP_UNORD_Q), 0x00f0);
    ck_assert(_mm512_reduce_add_ps(_mm512_loadu_ps(a16)) == 120.0f);
    ck_assert(_mm512_reduce_max_ps(_mm512_loadu_ps(b16)) == 115.0f);
    /* a masked load of 3 floats reads 3 floats */
    float *three = malloc(3 * sizeof(float));
    three[0] = 1, three[1] = 2, three[2] = 3;
    _mm512_storeu_ps(o, _mm512_maskz_loadu_ps(0x7, three));
    ck_assert(o[0] == 1.0f && o[2] == 3.0f && o[3] == 0.0f && o[15] == 0.0f);
    free(three);
}
END_TEST
#endif

START_TEST(test_activations_vs_double) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 17;
    const size_t ns[] = {1, 15, 16, 17, 40000 + 7};
    for (size_t ni = 0; ni < 5; ni++) {
        size_t n = ns[ni];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
        float *x = malloc(sizeof(float) * n), *g0 = malloc(sizeof(float) * n);
        const float edge[] = {0.0f, -0.0f, 1e-30f, -89.0f, 89.0f, -104.5f, 200.0f, -1000.0f, NAN};
        for (size_t i = 0; i < n; i++) {
            g[i] = i < 9 && n > 16 ? edge[i] : 12.0f * frand(&seed);
            u[i] = frand(&seed);
            x[i] = g[i];
            g0[i] = g[i];
        }
        be->silu_mul(be, g, u, n);
        be->gelu_tanh(be, x, n);
        for (size_t i = 0; i < n; i++) {
            double v = g0[i];
            double s = v / (1.0 + exp(-v)) * u[i];
            /* 0.5 v (1 + tanh(y)) = v sigmoid(2y): the sigmoid form keeps the far negative tail,
             * where 1 + tanh(y) rounds to 0 even in double */
            double a2 = 2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v);
            double ge = v / (1.0 + exp(-a2));
            if (isnan(v)) {
                ck_assert(isnan(g[i]) && isnan(x[i]));
                continue;
            }
            ck_assert_msg(fabs(g[i] - s) <= 1e-6 * fabs(s) + 1e-30,
                          "silu_mul(%.9g) = %.9g, want %.9g", v, g[i], s);
            /* fp32 rounds the exp's argument (2y) too: e^-2y is off by about |2y| ulp */
            ck_assert_msg(fabs(x[i] - ge) <= (1e-6 + 2.4e-7 * fabs(a2)) * fabs(ge) + 1e-30,
                          "gelu_tanh(%.9g) = %.9g, want %.9g", v, x[i], ge);
        }
        free(g), free(u), free(x), free(g0);
    }
    be->destroy(be);
}
END_TEST

/* RoPE against the closed form; the backend keeps the angles of its last call (every layer's q
 * and k share them), so the calls alternate positions, lengths and frequencies to show that the
 * kept table is only reused for the same ones. */
START_TEST(test_rope_closed_form) {
    cv_backend *be = cv_backend_cpu_create();
    enum { TM = 700, H = 2, hd = 8, stride = H * hd };
    float *x = malloc(sizeof(float) * TM * stride), *y = malloc(sizeof(float) * TM * stride);
    float inv[4];
    unsigned seed = 4;
    const struct {
        int T, pos0;
        float base;
    } calls[] = {{3, 5, 10000.0f},   {3, 5, 10000.0f},   {3, 6, 10000.0f}, {3, 6, 500000.0f},
                 {TM, 0, 500000.0f}, {TM, 0, 500000.0f}, {2, 0, 500000.0f}};
    for (size_t ci = 0; ci < sizeof calls / sizeof calls[0]; ci++) {
        int T = calls[ci].T, p0 = calls[ci].pos0;
        for (int i = 0; i < T * stride; i++) x[i] = y[i] = frand(&seed);
        for (int j = 0; j < hd / 2; j++) inv[j] = 1.0f / powf(calls[ci].base, (float)(2 * j) / hd);
        be->rope(be, y, T, stride, H, hd, inv, p0, NULL);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int j = 0; j < hd / 2; j++) {
                    double ang = (double)(float)((float)(p0 + t) * inv[j]);
                    const float *xv = x + t * stride + h * hd;
                    const float *yv = y + t * stride + h * hd;
                    ck_assert_msg(fabs(yv[j] - (xv[j] * cos(ang) - xv[j + hd / 2] * sin(ang))) <=
                                      1e-5,
                                  "call %zu t=%d j=%d", ci, t, j);
                    ck_assert_msg(fabs(yv[j + hd / 2] -
                                       (xv[j + hd / 2] * cos(ang) + xv[j] * sin(ang))) <= 1e-5,
                                  "call %zu t=%d j=%d", ci, t, j);
                }
    }
    free(x), free(y);
    be->destroy(be);
}
END_TEST

/* The step's position in backend memory (backend.h dpos): every op that takes one gives exactly
 * what the host position gives, whatever host position comes with it; the attention's host
 * n_keys / q_pos0 are then only the capacity bounds (keys beyond dpos[0] + T are never read:
 * they hold NaN here). kv_store writes the rows at dpos[0] (the CPU's head-major cache). */
START_TEST(test_device_position_ops) {
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 21;
    enum { V = 11, C = 24, P = 40, H = 4, KVH = 2, hd = 6, kvn = KVH * hd };
    float *wte = malloc(sizeof(float) * V * C), *wpe = malloc(sizeof(float) * P * C);
    for (int i = 0; i < V * C; i++) wte[i] = frand(&seed);
    for (int i = 0; i < P * C; i++) wpe[i] = frand(&seed);
    cv_weight ww = {.data = wte, .dtype = CV_DT_F32, .rows = V, .cols = C};
    cv_weight wp = {.data = wpe, .dtype = CV_DT_F32, .rows = P, .cols = C};
    float inv[3] = {1.0f, 0.1f, 0.01f};
    for (int pos = 0; pos < 37; pos += 6) {
        int32_t step[CV_SP_WORDS] = {7, pos, 0, 0};
        float e1[C], e2[C];
        be->embedding(be, e1, &step[CV_SP_TOKEN], 1, &ww, &wp, pos, NULL, 1.0f);
        be->embedding(be, e2, &step[CV_SP_TOKEN], 1, &ww, &wp, 0, &step[CV_SP_POS], 1.0f);
        ck_assert_int_eq(memcmp(e1, e2, sizeof e1), 0);
        float r1[H * hd], r2[H * hd];
        for (int i = 0; i < H * hd; i++) r1[i] = r2[i] = frand(&seed);
        be->rope(be, r1, 1, H * hd, H, hd, inv, pos, NULL);
        be->rope(be, r2, 1, H * hd, H, hd, inv, 0, &step[CV_SP_POS]);
        ck_assert_int_eq(memcmp(r1, r2, sizeof r1), 0);
        /* a head-major cache (KVH, P, hd) of P positions; the step's key / value stored at pos
         * (host pos0 0 ignored), NaN past it */
        float *kc = malloc(sizeof(float) * P * kvn), *vc = malloc(sizeof(float) * P * kvn);
        for (int i = 0; i < P * kvn; i++) kc[i] = vc[i] = NAN;
        for (int g = 0; g < KVH; g++)
            for (int i = 0; i < pos * hd; i++)
                kc[(size_t)g * P * hd + i] = frand(&seed),
                                        vc[(size_t)g * P * hd + i] = frand(&seed);
        float kn[KVH * hd], vn[KVH * hd];
        for (int i = 0; i < kvn; i++) kn[i] = frand(&seed), vn[i] = frand(&seed);
        be->kv_store(be, kc, CV_DT_F32, kn, 1, KVH, hd, P, 0, &step[CV_SP_POS]);
        be->kv_store(be, vc, CV_DT_F32, vn, 1, KVH, hd, P, 0, &step[CV_SP_POS]);
        for (int g = 0; g < KVH; g++) {
            size_t at = ((size_t)g * P + pos) * hd;
            ck_assert_int_eq(memcmp(kc + at, kn + g * hd, sizeof(float) * hd), 0);
            ck_assert_int_eq(memcmp(vc + at, vn + g * hd, sizeof(float) * hd), 0);
            if (pos + 1 < P) ck_assert(isnan(kc[at + hd]));
        }
        float o1[H * hd], o2[H * hd], o3[H * hd];
        double s1[CV_AS_SIZE], s2[CV_AS_SIZE], s3[CV_AS_SIZE];
        double h1[H * CV_AH_SIZE], h2[H * CV_AH_SIZE];
        cv_attn_record_reset(s1), cv_attn_record_reset(s2), cv_attn_record_reset(s3);
        for (int h = 0; h < H; h++) {
            cv_head_record_reset(h1 + h * CV_AH_SIZE);
            cv_head_record_reset(h2 + h * CV_AH_SIZE);
        }
        cv_attn_args a = {.out = o1,
                          .q = r1,
                          .k = kc,
                          .v = vc,
                          .q_stride = H * hd,
                          .kv_stride = hd,
                          .kv_head_stride = P * hd,
                          .out_stride = H * hd,
                          .T = 1,
                          .n_keys = pos + 1,
                          .q_pos0 = pos,
                          .n_heads = H,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = 1,
                          .scale = 0.4f,
                          .stats = s1,
                          .heads = h1};
        be->attention(be, &a);
        cv_attn_args b = a;
        b.out = o2, b.stats = s2, b.heads = h2;
        b.dpos = &step[CV_SP_POS], b.n_keys = P, b.q_pos0 = P - 1; /* bounds only */
        be->attention(be, &b);
        ck_assert_int_eq(memcmp(o1, o2, sizeof o1), 0);
        ck_assert_int_eq(memcmp(s1, s2, sizeof s1), 0);
        ck_assert_int_eq(memcmp(h1, h2, sizeof h1), 0);
        b.out = o3, b.stats = s3, b.heads = NULL;
        cv_attention_naive(&b); /* the oracle reads the position too */
        ck_assert(tu_check_close("attention at the step", o3, o1, (size_t)H * hd, 1e-5));
        free(kc), free(vc);
    }
    /* gate_up_silu is exactly its three ops */
    {
        enum { N = 10, K = 24, T = 3 };
        float wg[N * K], wu[N * K], x[T * K], g1[T * N], u1[T * N], g2[T * N], u2[T * N];
        for (int i = 0; i < N * K; i++) wg[i] = frand(&seed), wu[i] = frand(&seed);
        for (int i = 0; i < T * K; i++) x[i] = frand(&seed);
        cv_weight a = {.data = wg, .dtype = CV_DT_F32, .rows = N, .cols = K};
        cv_weight u = {.data = wu, .dtype = CV_DT_F32, .rows = N, .cols = K};
        be->matmul(be, g1, x, &a, NULL, T);
        be->matmul(be, u1, x, &u, NULL, T);
        be->silu_mul(be, g1, u1, (size_t)T * N);
        be->gate_up_silu(be, g2, u2, x, &a, &u, T);
        ck_assert_int_eq(memcmp(g1, g2, sizeof g1), 0);
    }
    /* pick_greedy moves the step words on: the token chosen, one position later */
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)(i % 5);
    int32_t step[CV_SP_WORDS] = {1, 9, 0, 0};
    double slot[CV_STEP_SLOTS] = {0};
    be->pick_greedy(be, logits, V, slot, step);
    ck_assert_int_eq(step[CV_SP_TOKEN], 4);
    ck_assert_int_eq(step[CV_SP_POS], 10);
    ck_assert_int_eq((int)slot[CV_STEP_TOKEN], 4);
    be->pick_greedy(be, logits, V, NULL, step);
    ck_assert_int_eq(step[CV_SP_POS], 11);
    free(wte), free(wpe);
    be->destroy(be);
}
END_TEST

/* T5's position bias is held as one diagonal per head, (H, T + K - 1) (backend.h): through
 * cv_attn_bias_row, every (head, query, key) reads table[bucket(k - (q_pos0 + t))][h], as HF's
 * dense (H, T, K) compute_bias does, and the op writes exactly H (T + K - 1) floats (a canary
 * after them stays). Encoder shapes (bidirectional, T = K, q_pos0 0), a prefill of the decoder,
 * and decode steps (T 1) far into a cache, where the buckets saturate at max_distance. */
START_TEST(test_t5_bias_diagonals) {
    cv_backend *be = cv_backend_cpu_create();
    const int H = 3, nb = 32, md = 128;
    unsigned seed = 5;
    float table[32 * 3];
    for (int i = 0; i < nb * H; i++) table[i] = frand(&seed);
    const struct {
        int T, K, q0, bidir;
    } cases[] = {{1, 1, 0, 1},  {9, 9, 0, 1},     {300, 300, 0, 1}, {7, 7, 0, 0},
                 {5, 12, 7, 0}, {1, 700, 699, 0}, {1, 41, 40, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int T = cases[ci].T, K = cases[ci].K, q0 = cases[ci].q0, bi = cases[ci].bidir;
        const size_t n = (size_t)H * (size_t)(T + K - 1);
        float *out = malloc(sizeof(float) * (n + 1));
        out[n] = 12345.0f;
        be->t5_position_bias(be, out, table, H, T, K, q0, bi, nb, md);
        ck_assert(out[n] == 12345.0f);
        cv_attn_args a = {.T = T, .n_keys = K, .n_heads = H, .bias = out};
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *row = cv_attn_bias_row(&a, h, t);
                for (int k = 0; k < K; k++) {
                    int bk = cv_t5_bucket(k - (q0 + t), bi, nb, md);
                    ck_assert_msg(row[k] == table[bk * H + h], "T %d K %d q0 %d: h %d t %d k %d", T,
                                  K, q0, h, t, k);
                }
            }
        free(out);
    }
    be->destroy(be);
}
END_TEST

int main(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("cpu_vs_naive");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_matmul_vs_naive);
    tcase_add_test(tc, test_matmul_packed_chunks);
    tcase_add_test(tc, test_matmul_prefill_bf16);
    tcase_add_test(tc, test_matmul3_gate_up_vs_ops);
    tcase_add_test(tc, test_attention_vs_naive);
    tcase_add_loop_test(tc, test_attention_long_vs_naive, 0, 4);
    tcase_add_test(tc, test_attention_decode_threads);
#ifdef CV_CPU_AVX512
    tcase_add_test(tc, test_avx512_known_answers);
#endif
    tcase_add_test(tc, test_rope_closed_form);
    tcase_add_test(tc, test_logprob_accum_vs_rows);
    tcase_add_test(tc, test_head_logprob_vs_rows);
    tcase_add_test(tc, test_activations_vs_double);
#ifdef CV_CPU_AVX2
    tcase_add_test(tc, test_exp256_vs_double);
#endif
    tcase_add_test(tc, test_device_position_ops);
    tcase_add_test(tc, test_t5_bias_diagonals);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
