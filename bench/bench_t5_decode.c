/* bench_t5_decode.c — T5 decode cost per generated token as the output grows.
 *
 * A random-weight checkpoint with the shape of flan-t5-small's blocks (d_model 512, 6 heads x 64,
 * d_ff 1024 gated-gelu, untied lm_head, vocab 32128; 6 encoder + 6 decoder layers) is written
 * to a temporary directory at bench time (cv_st_write + a config.json), loaded through the normal
 * path (cv_model_load), the encoder runs once over a 64-token prompt, and then the decoder
 * generates 256 tokens one at a time with the self-attention KV cache and the cross-attention
 * K/V computed once by encode().
 *
 * Printed at output lengths N = 16, 64, 128, 256: the mean decode cost per token over steps
 * 1..N, the median over steps N-15..N (the cost of a token at that length), and, for
 * comparison, the cost of ONE full decoder forward over N tokens — what a
 * runtime without a KV cache (the Python reference recomputes the decoder at every step) pays at
 * step N alone. The cached per-token cost stays flat; the recompute cost grows with N. Every
 * figure is a median over REPS repetitions (a busy machine inflates single steps); results are
 * also appended to runs/bench_t5_decode.jsonl. Then the encoder alone over long prompts
 * (BENCH_T5_ENC tokens, default 512,2048,4096): its time and the process's peak RSS. */
#include "bench_common.h"
#include "corevital/model.h"
#include "corevital/synth.h"

#include <unistd.h>

#define D_MODEL  512
#define N_HEADS  6
#define D_KV     64
#define D_FF     1024
#define N_LAYERS 6
#define VOCAB    32128
#define PROMPT   64
#define MAX_NEW  256
#define REPS     3

/* Write model.safetensors + config.json (flan-t5-small block shape) into dir. */
static int write_checkpoint(const char *dir) {
    cv_synth_shape sh = {VOCAB,     D_MODEL, N_LAYERS, N_HEADS, N_HEADS, D_FF, 0,       0,
                         CV_DT_F32, 0.05f,   7,        0,       1,       D_KV, N_LAYERS};
    cv_error err = {0};
    if (cv_synth_t5(dir, &sh, &err) != CV_OK) {
        fprintf(stderr, "bench_t5_decode: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Decode n tokens greedily from the start token; per-step wall times into ms[]. */
static int decode(cv_model *m, int n, double *ms) {
    cv_error err = {0};
    int32_t cur = m->cfg.decoder_start_token_id;
    for (int i = 0; i < n; i++) {
        double t0 = bench_now_ms();
        float *logits;
        if (m->ops->forward(m, &cur, 1, i, NULL, NULL, NULL, 0, &logits, &err) != CV_OK) {
            fprintf(stderr, "bench_t5_decode: %s\n", err.msg);
            return -1;
        }
        cur = m->be->argmax(m->be, logits, VOCAB);
        ms[i] = bench_now_ms() - t0;
    }
    return 0;
}

/* The encoder over long prompts (BENCH_T5_ENC, default 512,2048,4096 tokens): the median of 3
 * encode() calls and the peak RSS from the reservation at that length on. The position bias is
 * held as one diagonal per head, 2P - 1 floats (backend.h); a dense (H, P, P) bias, the form
 * before, was 6 x 4096^2 x 4 bytes = 384 MiB at 4,096 tokens of this shape. */
static int encoder_lengths(cv_model *m) {
    const char *env = getenv("BENCH_T5_ENC");
    int lens[8], n = bench_parse_ints(env && *env ? env : "512,2048,4096", lens, 8);
    cv_error err = {0};
    printf("\nencoder over long prompts (peak RSS from the reservation at that length on)\n");
    printf("%8s %12s %10s %14s\n", "tokens P", "encode ms", "tok/s", "peak RSS MiB");
    int32_t *prompt = NULL;
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        int P = lens[i];
        unsigned seed = 5;
        int32_t *np = realloc(prompt, sizeof(int32_t) * (size_t)P);
        if (!np) return -1;
        prompt = np;
        for (int t = 0; t < P; t++)
            prompt[t] = 3 + (int32_t)((bench_frand(&seed) + 1.0f) * 15000.0f);
        prompt[P - 1] = 1; /* </s> */
        bench_reset_peak_rss();
        if (m->ops->reserve(m, P, 16, 1, &err) != CV_OK) {
            fprintf(stderr, "bench_t5_decode: reserve %d: %s\n", P, err.msg);
            rc = -1;
            break;
        }
        double t[3];
        for (int r = 0; rc == 0 && r < 3; r++) {
            double t0 = bench_now_ms();
            if (m->ops->encode(m, prompt, P, NULL, NULL, NULL, &err) != CV_OK) {
                fprintf(stderr, "bench_t5_decode: encode %d: %s\n", P, err.msg);
                rc = -1;
            }
            t[r] = bench_now_ms() - t0;
        }
        if (rc) break;
        double ms = bench_median(t, 3), rss = bench_peak_rss_mib();
        printf("%8d %12.1f %10.1f %14.1f\n", P, ms, P / ms * 1e3, rss);
        char json[256];
        snprintf(json, sizeof json,
                 "{\"bench\":\"t5_encode\",\"threads\":%d,\"tokens\":%d,\"encode_ms\":%.3f,"
                 "\"peak_rss_mib\":%.1f}",
                 omp_get_max_threads(), P, ms, rss);
        bench_json("t5_decode", json);
    }
    free(prompt);
    return rc;
}

int main(void) {
    char dir[512];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cv-bench-t5-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    double t0 = bench_now_ms();
    int rc = write_checkpoint(dir);
    double t_write = bench_now_ms() - t0;
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m = NULL;
    cv_error err = {0};
    if (rc == 0 && cv_model_load(dir, be, &m, &err) != CV_OK) {
        fprintf(stderr, "bench_t5_decode: %s\n", err.msg);
        rc = -1;
    }
    const int lens[] = {16, 64, 128, 256};
    double *ms = malloc(sizeof(double) * MAX_NEW);
    int32_t prompt[PROMPT], dec_in[MAX_NEW];
    unsigned seed = 3;
    for (int i = 0; i < PROMPT; i++)
        prompt[i] = 3 + (int32_t)((bench_frand(&seed) + 1.0f) * 15000.0f);
    prompt[PROMPT - 1] = 1; /* </s> */
    for (int i = 0; i < MAX_NEW; i++)
        dec_in[i] = 3 + (int32_t)((bench_frand(&seed) + 1.0f) * 15000.0f);
    if (rc == 0 && (!ms || m->ops->reserve(m, MAX_NEW, MAX_NEW, 1, &err) != CV_OK)) {
        fprintf(stderr, "bench_t5_decode: reserve: %s\n", err.msg);
        rc = -1;
    }
    double t_enc = 0;
    if (rc == 0) {
        t0 = bench_now_ms();
        if (m->ops->encode(m, prompt, PROMPT, NULL, NULL, NULL, &err) != CV_OK) {
            fprintf(stderr, "bench_t5_decode: encode: %s\n", err.msg);
            rc = -1;
        }
        t_enc = bench_now_ms() - t0;
    }
    if (rc == 0) {
        printf("t5 decode (flan-t5-small blocks: d_model %d, %dx%d heads, d_ff %d gated-gelu, "
               "%d+%d layers, vocab %d, fp32), %d threads\n",
               D_MODEL, N_HEADS, D_KV, D_FF, N_LAYERS, N_LAYERS, VOCAB, omp_get_max_threads());
        printf("checkpoint written in %.0f ms; encoder over %d tokens once: %.1f ms\n", t_write,
               PROMPT, t_enc);
        printf("%8s %16s %28s %26s %8s\n", "tokens N", "cached ms/token",
               "cached median steps N-15..N", "no-cache recompute step N", "ratio");
        if (decode(m, 8, ms)) rc = -1; /* warm-up */
    }
    /* REPS 256-token decodes; each step's cost is its median over the repetitions (a busy
     * machine inflates single steps), read at N = 16, 64, 128, 256 */
    double *runs = malloc(sizeof(double) * REPS * MAX_NEW);
    if (rc == 0 && !runs) rc = -1;
    for (int r = 0; rc == 0 && r < REPS; r++)
        if (decode(m, MAX_NEW, runs + (size_t)r * MAX_NEW)) rc = -1;
    for (int i = 0; rc == 0 && i < MAX_NEW; i++) {
        double v[REPS];
        for (int r = 0; r < REPS; r++) v[r] = runs[(size_t)r * MAX_NEW + i];
        ms[i] = bench_median(v, REPS);
    }
    free(runs);
    char json[512];
    for (size_t k = 0; rc == 0 && k < sizeof lens / sizeof lens[0]; k++) {
        int n = lens[k];
        double all = 0, win[16];
        for (int i = 0; i < n; i++) all += ms[i];
        for (int i = 0; i < 16; i++) win[i] = ms[n - 16 + i];
        double last = bench_median(win, 16);
        /* one decoder forward over all n tokens: what step n costs without a KV cache */
        double rt[REPS];
        for (int r = 0; rc == 0 && r < REPS; r++) {
            float *logits;
            double r0 = bench_now_ms();
            if (m->ops->forward(m, dec_in, n, 0, NULL, NULL, NULL, 0, &logits, &err) != CV_OK) {
                fprintf(stderr, "bench_t5_decode: %s\n", err.msg);
                rc = -1;
            }
            rt[r] = bench_now_ms() - r0;
        }
        if (rc) break;
        double recompute = bench_median(rt, REPS);
        printf("%8d %16.2f %28.2f %26.2f %7.1fx\n", n, all / n, last, recompute, recompute / last);
        snprintf(
            json, sizeof json,
            "{\"bench\":\"t5_decode\",\"threads\":%d,\"tokens\":%d,\"ms_per_token\":%.3f,"
            "\"ms_per_token_median_last16\":%.3f,\"recompute_step_ms\":%.3f,\"encode_ms\":%.3f}",
            omp_get_max_threads(), n, all / n, last, recompute, t_enc);
        bench_json("t5_decode", json);
    }
    if (rc == 0 && encoder_lengths(m)) rc = -1;
    free(ms);
    cv_model_free(m);
    be->destroy(be);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    return rc ? 1 : 0;
}
