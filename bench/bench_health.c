/* bench_health.c — what the health layer costs (HEALTH.md, issue 16): the same binary and the
 * same tokens with health.enabled true and false, the 0.2.0 statistics on in both, a report
 * filled as `corevital run` fills it (every extension object built).
 *
 *   decode:  wall time per step of the decode loop (DECODE steps after a short prompt: forward,
 *            sampling, report filling, health finalization), health on / off alternating within
 *            each repetition, median of REPS (>= 15) with the min-max spread;
 *   prefill: PREFILL prompt tokens with the prompt analysis (prompt surprisals through the LM
 *            head in chunks, layer-transformation cosines, basin sums) against without.
 *
 * Model: a random Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 query / 3 KV heads,
 * head_dim 64, ffn 1536, vocab 49152, BF16 weights) generated into the work directory, or the
 * directory given as argv[2] (e.g. .cache/smollm2-135m from scripts/get-smollm2.sh).
 *
 * usage: bench_health [workdir] [model_dir]   env: CV_BENCH_REPS, CV_BENCH_PREFILL */
#include "bench_common.h"

#include "corevital/generate.h"
#include "corevital/synth.h"

#include <unistd.h>

#define DECODE 32
#define PROMPT 16

/* prefill time, and the decode loop's wall time: every step whole, the report filling and the
 * health finalization included (what a user waits for), not only the forward pass */
typedef struct {
    double t0, t1, prefill_ms, loop_ms, decode_ms;
    int steps;
} phase_times;
static void on_begin(void *u, const char *name) {
    if (strcmp(name, "prefill") == 0) ((phase_times *)u)->t0 = bench_now_ms();
    if (strcmp(name, "decode_loop") == 0) ((phase_times *)u)->t1 = bench_now_ms();
}
static void on_end(void *u, const char *name) {
    phase_times *p = u;
    if (strcmp(name, "prefill") == 0) p->prefill_ms = bench_now_ms() - p->t0;
    if (strcmp(name, "decode_loop") == 0) p->loop_ms = bench_now_ms() - p->t1;
}
static void on_step(void *u, double ms) {
    phase_times *p = u;
    p->decode_ms += ms;
    p->steps++;
}

/* One generation with a report, as `corevital run` does; returns 0 and the phase times. */
static int one_run(cv_session *s, cv_config *cfg, const int32_t *prompt, int P, phase_times *pt) {
    cv_report rep;
    cv_error err = {0};
    memset(pt, 0, sizeof *pt);
    cv_gen_hooks hooks = {pt, on_begin, on_end, on_step};
    if (cv_report_init(&rep, &err) != CV_OK) return -1;
    cv_status st = cv_session_fill_report(s, cfg, "bench", prompt, (size_t)P, &rep, &err);
    if (st == CV_OK)
        st =
            cv_session_generate(s, cfg, prompt, (size_t)P, 1, &rep, NULL, NULL, NULL, &hooks, &err);
    cv_report_free(&rep);
    if (st != CV_OK) fprintf(stderr, "bench_health: %s\n", err.msg);
    return st == CV_OK ? 0 : -1;
}

static void minmax(const double *v, int n, double *lo, double *hi) {
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) {
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
}

int main(int argc, char **argv) {
    const char *work = argc > 1 ? argv[1] : "runs/bench-models";
    const char *given = argc > 2 ? argv[2] : NULL;
    const char *e = getenv("CV_BENCH_REPS");
    int reps = e && atoi(e) >= 3 ? atoi(e) : 15;
    e = getenv("CV_BENCH_PREFILL");
    int prefill = e && atoi(e) >= 16 ? atoi(e) : 2048;
    int prefill_reps = reps < 5 ? reps : 5;
    char dir[1024];
    cv_error err = {0};
    if (given) {
        snprintf(dir, sizeof dir, "%s", given);
    } else {
        mkdir("runs", 0755);
        mkdir(work, 0755);
        snprintf(dir, sizeof dir, "%s/smollm2-shape", work);
        char cfgpath[1100];
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
        cv_synth_shape sh = {49152, 576, 30, 9, 3, 1536, 8192, 1, CV_DT_BF16, 0.02f, 7, 1, 2, 0, 0};
        if (access(cfgpath, R_OK) != 0 && cv_synth_llama(dir, &sh, &err) != CV_OK) {
            fprintf(stderr, "bench_health: %s\n", err.msg);
            return 1;
        }
        if (bench_link_tokenizer("bench_health", dir) != 0) return 1;
    }
    cv_config cfg;
    if (cv_config_init(&cfg, &err) != CV_OK) return 1;
    char nt[16];
    snprintf(nt, sizeof nt, "%d", DECODE + 1);
    const char *kv[][2] = {{"model.hf_id", dir},
                           {"device.requested", "cpu"},
                           {"generation.do_sample", "false"},
                           {"generation.max_new_tokens", nt}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (cv_config_set(&cfg, kv[i][0], kv[i][1], &err) != CV_OK) {
            fprintf(stderr, "bench_health: %s\n", err.msg);
            return 1;
        }
    cv_session *s;
    if (cv_session_open(&cfg, &s, NULL, &err) != CV_OK) {
        fprintf(stderr, "bench_health: %s\n", err.msg);
        return 1;
    }
    const cv_model_config *mc = &s->m->cfg;
    int threads = omp_get_max_threads();
    printf("model %s (%s, %d layers, hidden %d, vocab %d), %d threads\n", dir,
           cv_dtype_torch_name(s->m->weight_dtype), mc->num_layers, mc->hidden_size, mc->vocab_size,
           threads);
    if (prefill + 1 > mc->max_positions) prefill = mc->max_positions - 1;
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)prefill);
    for (int i = 0; i < prefill; i++) prompt[i] = 100 + (i * 37) % 5000; /* avoids EOS */

    /* decode: health on (1) / off (0) alternate; the first repetition warms up */
    double *dec[2] = {calloc((size_t)reps, sizeof(double)), calloc((size_t)reps, sizeof(double))};
    for (int r = 0; r <= reps; r++)
        for (int h = 1; h >= 0; h--) {
            cfg.health.enabled = h;
            phase_times pt;
            if (one_run(s, &cfg, prompt, PROMPT, &pt)) return 1;
            if (r > 0) dec[h][r - 1] = pt.loop_ms / pt.steps;
        }
    double med[2], lo[2], hi[2];
    for (int h = 0; h < 2; h++) {
        minmax(dec[h], reps, &lo[h], &hi[h]);
        med[h] = bench_median(dec[h], reps);
    }
    printf("decode ms/step, median of %d (min-max): health on %.3f (%.3f-%.3f), off %.3f "
           "(%.3f-%.3f): on/off %.4f\n",
           reps, med[1], lo[1], hi[1], med[0], lo[0], hi[0], med[1] / med[0]);
    char json[2048];
    snprintf(json, sizeof json,
             "{\"bench\":\"health_decode\",\"model\":\"%s\",\"threads\":%d,\"reps\":%d,"
             "\"on_ms\":%.4f,\"on_min\":%.4f,\"on_max\":%.4f,\"off_ms\":%.4f,\"off_min\":%.4f,"
             "\"off_max\":%.4f,\"ratio\":%.4f}",
             dir, threads, reps, med[1], lo[1], hi[1], med[0], lo[0], hi[0], med[1] / med[0]);
    bench_json("health", json);

    /* prefill of `prefill` tokens, one decode step after it */
    cv_config_set(&cfg, "generation.max_new_tokens", "1", &err);
    double *pre[2] = {calloc((size_t)prefill_reps, sizeof(double)),
                      calloc((size_t)prefill_reps, sizeof(double))};
    for (int r = 0; r <= prefill_reps; r++)
        for (int h = 1; h >= 0; h--) {
            cfg.health.enabled = h;
            phase_times pt;
            if (one_run(s, &cfg, prompt, prefill, &pt)) return 1;
            if (r > 0) pre[h][r - 1] = prefill / (pt.prefill_ms / 1e3);
        }
    for (int h = 0; h < 2; h++) {
        minmax(pre[h], prefill_reps, &lo[h], &hi[h]);
        med[h] = bench_median(pre[h], prefill_reps);
    }
    printf("prefill %d tokens, tok/s median of %d (min-max): health on %.1f (%.1f-%.1f), off "
           "%.1f (%.1f-%.1f): on/off %.4f\n",
           prefill, prefill_reps, med[1], lo[1], hi[1], med[0], lo[0], hi[0], med[1] / med[0]);
    snprintf(json, sizeof json,
             "{\"bench\":\"health_prefill\",\"model\":\"%s\",\"threads\":%d,\"tokens\":%d,"
             "\"reps\":%d,\"on_tok_s\":%.2f,\"off_tok_s\":%.2f,\"ratio\":%.4f}",
             dir, threads, prefill, prefill_reps, med[1], med[0], med[1] / med[0]);
    bench_json("health", json);
    printf("peak RSS %.1f MiB\n", bench_peak_rss_mib());
    for (int h = 0; h < 2; h++) free(dec[h]), free(pre[h]);
    free(prompt);
    cv_session_close(s);
    cv_config_free(&cfg);
    return 0;
}
