/* bench_e2e.c — end-to-end prefill and decode speed of `corevital run`'s generation loop on
 * random-weight checkpoints generated here (never committed): a GPT-2 small shape (124M, F32)
 * and a Llama of about 100M parameters (BF16 weights, fp32 compute), with the statistics on
 * and off (same binary, same tokens), plus the bytes of weights read per decoded token and the
 * bandwidth-limited bound. The PyTorch side runs bench/compare_pytorch.py on the same
 * directories (bench/run.sh), so both read identical weights.
 *
 * usage: bench_e2e [workdir]   (default: runs/bench-models; left in place for the PyTorch run) */
#include "bench_common.h"

#include "corevital/generate.h"
#include "corevital/synth.h"

#include <unistd.h>

#define PROMPT_TOKENS 128
#define DECODE_TOKENS 64
#define REPS          3

typedef struct {
    const char *name, *tokenizer_src, *family;
    cv_synth_shape shape;
} bench_model;

/* prefill and per-step decode times from the generation loop's hooks */
typedef struct {
    double t0, prefill_ms, decode_ms;
    int steps;
} phase_times;
static void on_begin(void *u, const char *name) {
    if (strcmp(name, "prefill") == 0) ((phase_times *)u)->t0 = bench_now_ms();
}
static void on_end(void *u, const char *name) {
    phase_times *p = u;
    if (strcmp(name, "prefill") == 0) p->prefill_ms = bench_now_ms() - p->t0;
}
static void on_step(void *u, double ms) {
    phase_times *p = u;
    p->decode_ms += ms;
    p->steps++;
}

static int link_tokenizer(const char *dir, const char *src) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"};
    char from[1100], to[1100];
    for (size_t i = 0; i < 4; i++) {
        snprintf(from, sizeof from, "%s/%s", src, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        if (access(from, R_OK) != 0) continue;
        unlink(to);
        char *abs = realpath(from, NULL);
        if (!abs || symlink(abs, to) != 0) {
            free(abs);
            return -1;
        }
        free(abs);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *work = argc > 1 ? argv[1] : "runs/bench-models";
    bench_model models[] = {
        {"gpt2-small-124M",
         "build/tokenizers/gpt2",
         "gpt2",
         {50257, 768, 12, 12, 12, 3072, 1024, 1, CV_DT_F32, 0.02f, 1, 50256, 50256, 0, 0}},
        {"llama-100M",
         "build/tokenizers/llama2",
         "llama",
         {32000, 768, 12, 12, 4, 2048, 1024, 1, CV_DT_BF16, 0.02f, 2, 1, 2, 0, 0}},
    };
    mkdir("runs", 0755);
    mkdir(work, 0755);
    int threads = omp_get_max_threads();
    double bw = bench_read_bandwidth_gbs();
    printf("machine: %d threads, read bandwidth %.1f GB/s\n%s\n", threads, bw,
           bench_weights_arena());
    printf("%-16s %-5s %6s %12s %12s %10s %9s %8s\n", "model", "stats", "dtype", "prefill tok/s",
           "decode tok/s", "MB/token", "bound t/s", "%bound");
    char json[1024];
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        bench_model *bm = &models[mi];
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", work, bm->name);
        cv_error err = {0};
        char cfgpath[1100];
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
        if (access(cfgpath, R_OK) != 0) {
            cv_status st = strcmp(bm->family, "gpt2") == 0 ? cv_synth_gpt2(dir, &bm->shape, &err)
                                                           : cv_synth_llama(dir, &bm->shape, &err);
            if (st != CV_OK) {
                fprintf(stderr, "bench_e2e: %s\n", err.msg);
                return 1;
            }
        }
        if (link_tokenizer(dir, bm->tokenizer_src) != 0) {
            fprintf(stderr, "bench_e2e: cannot link tokenizer files from %s\n", bm->tokenizer_src);
            return 1;
        }
        cv_config cfg;
        if (cv_config_init(&cfg, &err) != CV_OK) return 1;
        cv_config_set(&cfg, "model.hf_id", dir, &err);
        cv_config_set(&cfg, "device.requested", "cpu", &err);
        cv_config_set(&cfg, "generation.do_sample", "false", &err);
        char nt[16];
        snprintf(nt, sizeof nt, "%d", DECODE_TOKENS + 1);
        cv_config_set(&cfg, "generation.max_new_tokens", nt, &err);
        cv_session *s;
        if (cv_session_open(&cfg, &s, NULL, &err) != CV_OK) {
            fprintf(stderr, "bench_e2e: %s\n", err.msg);
            return 1;
        }
        /* a fixed prompt of PROMPT_TOKENS ids that avoids EOS */
        int32_t prompt[PROMPT_TOKENS];
        for (int i = 0; i < PROMPT_TOKENS; i++) prompt[i] = 100 + (i * 37) % 5000;
        /* weight bytes read per decoded token: every matrix once (lm_head included) */
        double bytes = 0;
        for (size_t w = 0; w < s->m->n_weights; w++)
            bytes += (double)s->m->weights[w]->rows * s->m->weights[w]->cols *
                     cv_dtype_size(s->m->weights[w]->dtype);
        if (strcmp(bm->family, "gpt2") == 0) /* wpe rows are read once per token, not whole */
            bytes -=
                (double)bm->shape.max_positions * bm->shape.hidden * cv_dtype_size(bm->shape.dtype);
        /* statistics on and off alternate within each repetition, so drift on a shared machine
         * hits both alike; the first repetition is the warm-up */
        double pre_all[2][REPS], dec_all[2][REPS];
        for (int r = 0; r < REPS + 1; r++)
            for (int instrumented = 1; instrumented >= 0; instrumented--) {
                phase_times pt = {0};
                cv_gen_hooks hooks = {&pt, on_begin, on_end, on_step};
                int32_t *ids = NULL;
                size_t n = 0;
                cv_status st = cv_session_generate(s, &cfg, prompt, PROMPT_TOKENS, instrumented,
                                                   NULL, &ids, &n, NULL, &hooks, &err);
                free(ids);
                if (st != CV_OK) {
                    fprintf(stderr, "bench_e2e: %s\n", err.msg);
                    return 1;
                }
                if (r == 0) continue;
                pre_all[instrumented][r - 1] = PROMPT_TOKENS / (pt.prefill_ms / 1e3);
                dec_all[instrumented][r - 1] = pt.steps / (pt.decode_ms / 1e3);
            }
        for (int instrumented = 1; instrumented >= 0; instrumented--) {
            double *pre = pre_all[instrumented], *dec = dec_all[instrumented];
            double p = bench_median(pre, REPS), d = bench_median(dec, REPS);
            double bound = bw * 1e9 / bytes;
            printf("%-16s %-5s %6s %12.1f %12.2f %10.1f %9.2f %7.1f%%\n", bm->name,
                   instrumented ? "on" : "off", cv_dtype_torch_name(bm->shape.dtype), p, d,
                   bytes / 1e6, bound, 100 * d / bound);
            snprintf(
                json, sizeof json,
                "{\"bench\":\"e2e\",\"model\":\"%s\",\"dtype\":\"%s\",\"stats\":%s,\"threads\":%d,"
                "\"prompt_tokens\":%d,\"decode_tokens\":%d,\"prefill_tok_s\":%.2f,\"decode_tok_s\":"
                "%.3f,"
                "\"bytes_per_token\":%.0f,\"read_bw_gbs\":%.2f,\"pct_bound\":%.1f,\"peak_rss_mib\":"
                "%.1f}",
                bm->name, cv_dtype_torch_name(bm->shape.dtype), instrumented ? "true" : "false",
                threads, PROMPT_TOKENS, DECODE_TOKENS, p, d, bytes, bw, 100 * d / bound,
                bench_peak_rss_mib());
            bench_json("e2e", json);
        }
        cv_session_close(s);
        cv_config_free(&cfg);
    }
    printf("peak RSS %.1f MiB (whole process, both models)\n", bench_peak_rss_mib());
    return 0;
}
