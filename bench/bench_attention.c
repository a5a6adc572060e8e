/* bench_attention.c — one-token decode attention over 128..4096 cached keys (GPT-2 small: 12
 * heads of 64; Llama 1B: 32 query heads over 8 kv heads of 64), with the fused entropy /
 * concentration statistics on and off, checked against the naive twin first. Reported in GB/s of
 * K and V cache read, next to the measured read bandwidth. */
#include "bench_common.h"

#include "corevital/backend.h"
#include "corevital/stats.h"

typedef struct {
    cv_backend *be;
    cv_attn_args a;
} at_arg;

static void run_at(void *p) {
    at_arg *x = p;
    if (x->a.stats) cv_attn_record_reset(x->a.stats);
    x->be->attention(x->be, &x->a);
}

int main(void) {
    struct {
        const char *model;
        int H, KVH, hd;
    } shapes[] = {{"gpt2-small", 12, 12, 64}, {"llama-1b", 32, 8, 64}};
    int keys[] = {128, 512, 1024, 2048, 4096};
    double bw = bench_read_bandwidth_gbs();
    int threads = omp_get_max_threads();
    printf("machine: %d threads, read bandwidth %.1f GB/s\n", threads, bw);
    printf("%-11s %6s %-6s %9s %8s %7s\n", "model", "keys", "stats", "us", "GB/s", "%bw");
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 2;
    char json[400];
    for (int si = 0; si < 2; si++)
        for (int ki = 0; ki < 5; ki++) {
            int H = shapes[si].H, KVH = shapes[si].KVH, hd = shapes[si].hd, NK = keys[ki];
            int qs = H * hd, ks = KVH * hd;
            float *q = malloc(sizeof(float) * qs), *k = malloc(sizeof(float) * NK * ks);
            float *v = malloc(sizeof(float) * NK * ks), *o = malloc(sizeof(float) * qs);
            float *o2 = malloc(sizeof(float) * qs);
            for (int i = 0; i < qs; i++) q[i] = bench_frand(&seed);
            for (int i = 0; i < NK * ks; i++) k[i] = bench_frand(&seed), v[i] = bench_frand(&seed);
            double rec[CV_AS_SIZE], rec2[CV_AS_SIZE];
            at_arg x = {be,
                        {.out = o,
                         .q = q,
                         .k = k,
                         .v = v,
                         .q_stride = qs,
                         .kv_stride = ks,
                         .out_stride = qs,
                         .T = 1,
                         .n_keys = NK,
                         .q_pos0 = NK - 1,
                         .n_heads = H,
                         .n_kv_heads = KVH,
                         .head_dim = hd,
                         .causal = 1,
                         .scale = 0.125f,
                         .stats = rec}};
            run_at(&x);
            cv_attn_args naive = x.a;
            naive.out = o2;
            naive.stats = rec2;
            cv_attn_record_reset(rec2);
            cv_attention_naive(&naive);
            double err = 0;
            for (int i = 0; i < qs; i++) err = fmax(err, fabs(o[i] - o2[i]));
            if (err > 1e-4 || fabs(rec[CV_AS_ESUM] - rec2[CV_AS_ESUM]) > 1e-4 * rec2[CV_AS_ESUM]) {
                fprintf(stderr, "FAILED check: attention %s keys %d err %g\n", shapes[si].model, NK,
                        err);
                return 1;
            }
            for (int st = 1; st >= 0; st--) {
                x.a.stats = st ? rec : NULL;
                double ms = bench_time_ms(run_at, &x, 15);
                double gbs = 2.0 * NK * ks * sizeof(float) / (ms * 1e6);
                printf("%-11s %6d %-6s %9.1f %8.1f %6.1f%%\n", shapes[si].model, NK,
                       st ? "on" : "off", ms * 1e3, gbs, 100 * gbs / bw);
                snprintf(
                    json, sizeof json,
                    "{\"bench\":\"attention_decode\",\"model\":\"%s\",\"keys\":%d,\"stats\":%s,"
                    "\"threads\":%d,\"us\":%.2f,\"gbs\":%.2f,\"pct_bw\":%.1f}",
                    shapes[si].model, NK, st ? "true" : "false", threads, ms * 1e3, gbs,
                    100 * gbs / bw);
                bench_json("attention", json);
            }
            free(q), free(k), free(v), free(o), free(o2);
        }
    be->destroy(be);
    return 0;
}
