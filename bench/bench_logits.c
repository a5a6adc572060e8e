/* bench_logits.c — the one-pass logits statistics (entropy, margin, top-5 over the full
 * vocabulary) over 50k (GPT-2) and 128k (Llama 3) vocabularies, checked against the reference
 * implementation first; GB/s of logits read next to the measured read bandwidth. */
#include "bench_common.h"

#include "corevital/stats.h"

typedef struct {
    double *rec;
    const float *l;
    int V;
} lg_arg;

static void run_lg(void *p) {
    lg_arg *a = p;
    cv_logits_stats_row(a->rec, a->l, a->V, 5);
}

int main(void) {
    int vocabs[] = {50257, 128256};
    double bw = bench_read_bandwidth_gbs();
    printf("read bandwidth %.1f GB/s (the logits pass runs on one thread)\n", bw);
    printf("%8s %9s %8s\n", "V", "us", "GB/s");
    char json[256];
    for (int vi = 0; vi < 2; vi++) {
        int V = vocabs[vi];
        float *l = malloc(sizeof(float) * V);
        unsigned s = 3;
        for (int i = 0; i < V; i++) {
            s = s * 1664525u + 1013904223u;
            l[i] = (float)(s >> 8) / 16777216.0f * 20.0f - 10.0f;
        }
        double rec[CV_LS_FIXED + 2 * CV_TOPK_MAX];
        lg_arg a = {rec, l, V};
        run_lg(&a);
        cv_logit_stats got, want;
        cv_logits_finalize(rec, &got);
        cv_logits_stats_ref(l, V, 5, &want);
        if (fabs(got.entropy - want.entropy) > 1e-9 * want.entropy || got.ids[0] != want.ids[0]) {
            fprintf(stderr, "FAILED check: logits V=%d\n", V);
            return 1;
        }
        double ms = bench_time_ms(run_lg, &a, 21);
        double gbs = V * sizeof(float) / (ms * 1e6);
        printf("%8d %9.1f %8.2f\n", V, ms * 1e3, gbs);
        snprintf(json, sizeof json,
                 "{\"bench\":\"logits_stats\",\"V\":%d,\"us\":%.2f,\"gbs\":%.3f}", V, ms * 1e3,
                 gbs);
        bench_json("logits", json);
        free(l);
    }
    return 0;
}
