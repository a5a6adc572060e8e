/* bench_head.c — the prompt surprisals' LM head (HEALTH.md §5): ln p(next token) for every prompt
 * row, i.e. a (T x V) product and a log-softmax over each row, at the vocabulary-sized heads of
 * SmolLM2-135M (49152 x 576) and GPT-2 small (50257 x 768).
 *
 * Versions: "sliced" is the health layer's path where a backend has no fused op: the head cut
 * into slices of 8M logits (gen_health.c SLICE_FLOATS), each slice's logits stored by the matmul
 * and read back by logprob_accum; "fused" is head_logprob, the packed matmul folding each tile
 * into the rows' running log-sum-exp with no logits stored (cpu_matmul.c mm_tile_lse). Both run
 * with the exact fp32 panels and with the bf16 ones (model.prefill_dtype bfloat16); every
 * version is checked against the other before it is timed (where the fused op declines, below
 * its row threshold, only the sliced path is timed: it is what the health layer runs there). Rates
 * are the product's FLOPs (2 T V C) over the whole op's time, against the measured fp32 FMA and
 * BF16 dot peaks.
 *
 * usage: bench_head   env: BENCH_TS=64,128,512,2048 (the rows; default 128,512,2048) */
#include "bench_common.h"

#include "backend/cpu_internal.h"
#include "corevital/dtype.h"

#define SLICE_FLOATS (8u << 20)

typedef struct {
    cv_backend *be;
    const cv_weight *w;
    const float *x;
    const int32_t *y;
    double *out, *state;
    float *buf;
    int T, fused;
} head_arg;

static void run_sliced(head_arg *a) {
    size_t V = (size_t)a->w->rows, C = (size_t)a->w->cols, R = (size_t)a->T;
    size_t vs = SLICE_FLOATS / R;
    vs = vs < 256 ? 256 : vs > V ? V : vs & ~(size_t)15;
    for (size_t t = 0; t < R; t++)
        a->state[3 * t] = -INFINITY, a->state[3 * t + 1] = 0.0, a->state[3 * t + 2] = NAN;
    size_t es = cv_dtype_size(a->w->dtype);
    for (size_t c0 = 0; c0 < V; c0 += vs) {
        size_t n = V - c0 < vs ? V - c0 : vs;
        cv_weight slice = *a->w;
        slice.data = (const char *)a->w->data + c0 * C * es;
        slice.rows = (int64_t)n;
        a->be->matmul(a->be, a->buf, a->x, &slice, NULL, a->T);
        a->be->logprob_accum(a->be, a->state, a->buf, a->T, (int)n, (int)c0, a->y);
    }
    for (size_t t = 0; t < R; t++)
        a->out[t] = a->state[3 * t + 2] - (a->state[3 * t] + log(a->state[3 * t + 1]));
}

static void run_head(void *p) {
    head_arg *a = p;
    if (a->fused) {
        if (!a->be->head_logprob(a->be, a->out, a->x, a->w, a->T, a->y)) a->out[0] = NAN;
    } else {
        run_sliced(a);
    }
}

int main(void) {
    const struct {
        const char *model;
        int V, C;
    } heads[] = {{"smollm2-135m", 49152, 576}, {"gpt2-small", 50257, 768}};
    int Ts[8] = {128, 512, 2048}, nT = 3;
    if (getenv("BENCH_TS")) nT = bench_parse_ints(getenv("BENCH_TS"), Ts, 8);
    int threads = omp_get_max_threads();
    double peak = bench_peak_gflops(), peak16 = bench_peak_bf16_gflops();
    printf("machine: %d threads, fp32 FMA peak %.0f GFLOP/s, BF16 dot peak %.0f GFLOP/s\n", threads,
           peak, peak16);
    printf("%-12s %-5s %-5s %5s %-7s %9s %8s %7s %7s %9s\n", "model", "W", "panel", "T", "version",
           "ms", "GFLOP/s", "%fma", "%bf16", "max|diff|");
    cv_backend *be = cv_backend_cpu_create();
    if (!be->head_logprob) {
        fprintf(stderr, "bench_head: this backend has no fused head\n");
        return 1;
    }
    const cv_dtype dts[] = {CV_DT_BF16, CV_DT_F32};
    unsigned seed = 3;
    char json[512];
    for (size_t hi = 0; hi < 2; hi++)
        for (size_t di = 0; di < 2; di++) {
            int V = heads[hi].V, C = heads[hi].C;
            size_t es = cv_dtype_size(dts[di]);
            void *wb = aligned_alloc(64, ((size_t)V * C * es + 63) / 64 * 64);
            for (size_t i = 0; i < (size_t)V * C; i++) {
                float v = bench_frand(&seed) * 0.15f;
                if (dts[di] == CV_DT_F32)
                    ((float *)wb)[i] = v;
                else
                    ((uint16_t *)wb)[i] = cv_f32_to_bf16(v);
            }
            for (int ti = 0; ti < nT; ti++) {
                int T = Ts[ti];
                float *x = malloc(sizeof(float) * (size_t)T * C);
                int32_t *y = malloc(sizeof(int32_t) * T);
                double *o1 = malloc(sizeof(double) * T), *o2 = malloc(sizeof(double) * T);
                double *state = malloc(sizeof(double) * 3 * T);
                size_t vs = SLICE_FLOATS / (size_t)T;
                vs = vs < 256 ? 256 : vs > (size_t)V ? (size_t)V : vs & ~(size_t)15;
                float *buf = malloc(sizeof(float) * (size_t)T * vs);
                for (size_t i = 0; i < (size_t)T * C; i++) x[i] = bench_frand(&seed);
                for (int t = 0; t < T; t++) y[t] = (int32_t)((t * 7919u + 13u) % (unsigned)V);
                for (int bf = 0; bf <= (be->prefill_bf16 ? 1 : 0); bf++) {
                    cv_weight w = {.data = wb, .dtype = dts[di], .rows = V, .cols = C};
                    w.prefill_bf16 = bf;
                    head_arg a = {be, &w, x, y, o1, state, buf, T, 0};
                    head_arg f = a;
                    f.fused = 1;
                    f.out = o2;
                    run_head(&a);
                    /* below its row threshold the fused op declines: the health layer slices */
                    int fused_ok = be->head_logprob(be, o2, x, &w, T, y);
                    double md = 0.0;
                    for (int t = 0; t < T && fused_ok; t++) md = fmax(md, fabs(o1[t] - o2[t]));
                    if (!(md <= 1e-3)) {
                        fprintf(stderr, "FAILED check: %s %s T=%d fused vs sliced %g\n",
                                heads[hi].model, cv_dtype_name(dts[di]), T, md);
                        return 1;
                    }
                    if (!fused_ok)
                        printf("%-12s %-5s %-5s %5d fused   declined (below its row threshold)\n",
                               heads[hi].model, cv_dtype_name(dts[di]), bf ? "bf16" : "fp32", T);
                    for (int v = 0; v < 1 + fused_ok; v++) {
                        double ms = bench_time_ms(run_head, v ? &f : &a, 3);
                        double rate = 2.0 * T * V * C / (ms * 1e6);
                        printf("%-12s %-5s %-5s %5d %-7s %9.2f %8.1f %6.1f%% %6.1f%% %9.2g\n",
                               heads[hi].model, cv_dtype_name(dts[di]), bf ? "bf16" : "fp32", T,
                               v ? "fused" : "sliced", ms, rate, 100.0 * rate / peak,
                               peak16 > 0 ? 100.0 * rate / peak16 : 0.0, md);
                        snprintf(json, sizeof json,
                                 "{\"bench\":\"head_logprob\",\"model\":\"%s\",\"dtype\":\"%s\","
                                 "\"panels\":\"%s\",\"T\":%d,\"version\":\"%s\",\"threads\":%d,"
                                 "\"ms\":%.3f,\"gflops\":%.2f,\"max_diff\":%.3g}",
                                 heads[hi].model, cv_dtype_name(dts[di]), bf ? "bf16" : "fp32", T,
                                 v ? "fused" : "sliced", threads, ms, rate, md);
                        bench_json("head", json);
                    }
                }
                free(x), free(y), free(o1), free(o2), free(state), free(buf);
            }
            free(wb);
        }
    be->destroy(be);
    return 0;
}
