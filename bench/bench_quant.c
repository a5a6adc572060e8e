/* bench_quant.c — decode speed and memory of fp32, int8 and NF4 weights on a GPT-2-small shape.
 *
 * A random-weight GPT-2 checkpoint (n_embd 768, 12 layers, 12 heads, vocab 50257, n_positions
 * 1024; fp32, Conv1D layout like the real one) is written to a temporary directory at bench time
 * (cv_st_write + config.json). Each mode then runs in its own child process, so that peak RSS is
 * that mode's alone: load (cv_model_load_quant: F32 / INT8 / NF4 block linears; embeddings, norms
 * and the tied lm_head stay fp32, as transformers does), a 32-token prompt prefill, 64 greedy
 * decode steps (forward with T = 1).
 *
 * Modes: fp32, int8 (fp32 activations), int8a (the same int8 weights with activations quantized
 * per row to int8, VNNI dot products: cv_quant_set_int8_activations), nf4.
 * Printed per mode: decode tokens/s (median step), prefill ms, peak RSS (getrusage) and RSS at the
 * end of decode (/proc/self/statm), resident weight bytes (every uploaded matrix: data + scales),
 * bytes of weights read per decoded token (the block linears + lm_head; the embedding reads one
 * row) and the bandwidth bound = measured read bandwidth (bench_read_bandwidth_gbs) / bytes per
 * token, plus how many of the 64 greedy tokens equal the fp32 run's.
 * RSS is also split at the end of decode into anonymous memory (what the model allocated) and
 * file-backed pages (the mmapped checkpoint). Today the loader keeps every source the quantizer
 * read: the mmapped fp32 pages stay mapped, and GPT-2's Conv1D matrices are transposed into fp32
 * host buffers the model holds until it is freed, so a quantized GPT-2 is not yet smaller in RSS
 * than the fp32 one; "weights MiB" is what the quantized model itself needs. */
#include "bench_common.h"
#include "corevital/model.h"
#include "corevital/synth.h"
#include "corevital/quant.h"

#include <sys/wait.h>
#include <unistd.h>

#define C_EMBD   768
#define N_LAYER  12
#define N_HEAD   12
#define VOCAB    50257
#define N_POS    1024
#define PROMPT   32
#define N_DECODE 64

/* The GPT-2 small shape with random weights (std 0.02, like GPT-2's initializer). */
static int write_checkpoint(const char *dir) {
    cv_synth_shape sh = {VOCAB,     C_EMBD, N_LAYER, N_HEAD, N_HEAD, 4 * C_EMBD, N_POS, 1,
                         CV_DT_F32, 0.02f,  11,      50256,  50256,  0,          0};
    cv_error err = {0};
    if (cv_synth_gpt2(dir, &sh, &err) != CV_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return -1;
    }
    return 0;
}

typedef struct {
    int ok;
    double load_ms, prefill_ms, decode_tok_s, peak_rss_mib, anon_mib, file_mib, weight_mib;
    int32_t tokens[N_DECODE];
} result;

/* Resident memory now from /proc/self/status, MiB: anonymous (heap: weights the model holds) and
 * file-backed (pages of the mmapped checkpoint). */
static void rss_now_mib(double *anon, double *file) {
    *anon = *file = NAN;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1) *anon = kb / 1024.0;
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1) *file = kb / 1024.0;
    }
    fclose(f);
}

/* Bytes every uploaded matrix occupies (data + scales). */
static double weight_bytes(const cv_model *m) {
    double total = 0;
    for (size_t i = 0; i < m->n_weights; i++) {
        const cv_weight *w = m->weights[i];
        total += w->format == CV_WFMT_DENSE
                     ? (double)w->rows * w->cols * cv_dtype_size(w->dtype)
                     : (double)cv_quant_weight_bytes(w->format, w->rows, w->cols, w->block);
    }
    return total;
}

/* Before timing: the first quantized matrix through the backend's matmul against its naive twin. */
static int check_against_twin(cv_backend *be, const cv_model *m, int actq) {
    const cv_weight *w = NULL;
    for (size_t i = 0; i < m->n_weights && !w; i++)
        if (m->weights[i]->format != CV_WFMT_DENSE) w = m->weights[i];
    if (!w) return 0;
    size_t N = (size_t)w->rows, K = (size_t)w->cols;
    float *x = malloc(K * sizeof(float)), *got = malloc(N * sizeof(float));
    float *want = malloc(N * sizeof(float));
    if (!x || !got || !want) return -1;
    unsigned seed = 9;
    for (size_t k = 0; k < K; k++) x[k] = bench_frand(&seed);
    be->matmul(be, got, x, w, NULL, 1);
    if (actq)
        cv_matmul_int8_actq_naive(want, x, w, NULL, 1);
    else
        cv_matmul_quant_naive(want, x, w, NULL, 1);
    double worst = 0, mag = 0;
    for (size_t n = 0; n < N; n++) {
        worst = fmax(worst, fabs(got[n] - want[n]));
        mag = fmax(mag, fabs(want[n]));
    }
    free(x), free(got), free(want);
    if (worst > 1e-4 * mag + 1e-6) {
        fprintf(stderr, "bench_quant: %s matmul differs from its naive twin by %g\n",
                cv_matmul_quant_path(w), worst);
        return -1;
    }
    return 0;
}

static void run_mode(const char *dir, cv_weight_format fmt, int actq, result *r) {
    memset(r, 0, sizeof *r);
    cv_quant_set_int8_activations(actq);
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m = NULL;
    cv_error err = {0};
    double t0 = bench_now_ms();
    if (cv_model_load_quant(dir, be, fmt, &m, &err) != CV_OK ||
        m->ops->reserve(m, PROMPT, PROMPT + N_DECODE, 1, &err) != CV_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    r->load_ms = bench_now_ms() - t0;
    if (check_against_twin(be, m, actq)) return;
    r->weight_mib = weight_bytes(m) / (1024.0 * 1024.0);
    int32_t prompt[PROMPT];
    unsigned seed = 5;
    for (int i = 0; i < PROMPT; i++)
        prompt[i] = (int32_t)((bench_frand(&seed) + 1.0f) * 0.5f * (VOCAB - 1));
    float *logits;
    t0 = bench_now_ms();
    if (m->ops->forward(m, prompt, PROMPT, 0, NULL, NULL, NULL, 0, &logits, &err) != CV_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    int32_t cur = be->argmax(be, logits, VOCAB);
    r->prefill_ms = bench_now_ms() - t0;
    double ms[N_DECODE];
    for (int i = 0; i < N_DECODE; i++) {
        r->tokens[i] = cur;
        t0 = bench_now_ms();
        if (m->ops->forward(m, &cur, 1, PROMPT + i, NULL, NULL, NULL, 0, &logits, &err) != CV_OK) {
            fprintf(stderr, "bench_quant: %s\n", err.msg);
            return;
        }
        cur = be->argmax(be, logits, VOCAB);
        ms[i] = bench_now_ms() - t0;
    }
    r->decode_tok_s = 1000.0 / bench_median(ms, N_DECODE);
    rss_now_mib(&r->anon_mib, &r->file_mib);
    r->peak_rss_mib = bench_peak_rss_mib();
    r->ok = 1;
    cv_model_free(m);
    be->destroy(be);
}

/* Run one mode in a child process (its own peak RSS); the result comes back through a pipe. */
static int run_child(const char *dir, cv_weight_format fmt, int actq, result *r) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        result res;
        run_mode(dir, fmt, actq, &res);
        ssize_t wr = write(fd[1], &res, sizeof res);
        _exit(wr == (ssize_t)sizeof res ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t k = read(fd[0], (char *)r + got, sizeof *r - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return got == sizeof *r && r->ok ? 0 : -1;
}

int main(void) {
    char dir[512];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cv-bench-quant-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    double t0 = bench_now_ms();
    int rc = write_checkpoint(dir);
    printf("bench_quant: GPT-2-small shape (C %d, %d layers, V %d), fp32 checkpoint written in "
           "%.0f ms, "
           "%d threads\n",
           C_EMBD, N_LAYER, VOCAB, bench_now_ms() - t0, omp_get_max_threads());
    /* weights read per decoded token: 12 C^2 per layer in the block linears + the lm_head (V, C)
     * fp32 (biases, norms and the KV cache are < 1% here) */
    double lin = 12.0 * C_EMBD * C_EMBD * N_LAYER, head = 4.0 * VOCAB * C_EMBD;
    const struct {
        const char *name;
        cv_weight_format fmt;
        int actq;
        double bytes_per_token;
    } modes[] = {
        {"fp32", CV_WFMT_DENSE, 0, 4.0 * lin + head},
        /* int8 scales: one per output row, 9 C rows per layer (q, k, v, o: 4 C; c_fc 4 C; c_proj C)
         */
        {"int8", CV_WFMT_INT8, 0, lin + 4.0 * N_LAYER * 9 * C_EMBD + head},
        /* the same weights, activations quantized per row to int8 and multiplied with VNNI */
        {"int8a", CV_WFMT_INT8, 1, lin + 4.0 * N_LAYER * 9 * C_EMBD + head},
        {"nf4", CV_WFMT_NF4, 0, lin / 2 + 4.0 * lin / CV_NF4_BLOCK + head},
    };
    /* Children first: libgomp's thread pool does not survive fork(), so the parent runs no
     * OpenMP region (the bandwidth measurement) until every child is done. */
    result res[4];
    int n_done = 0;
    for (int i = 0; i < 4 && rc == 0; i++, n_done++)
        if (run_child(dir, modes[i].fmt, modes[i].actq, &res[i])) {
            fprintf(stderr, "bench_quant: mode %s failed\n", modes[i].name);
            rc = 1;
        }
    double bw = bench_read_bandwidth_gbs();
    printf("measured read bandwidth: %.1f GB/s\n\n", bw);
    printf("%-5s %9s %10s %10s %10s %11s %12s %10s %14s %8s\n", "mode", "load ms", "prefill ms",
           "decode t/s", "bound t/s", "weights MiB", "read MB/tok", "peak RSS", "RSS anon+file",
           "=fp32");
    for (int i = 0; i < n_done && rc == 0; i++) {
        const result *r = &res[i];
        double bound = bw * 1e9 / modes[i].bytes_per_token;
        int same = 0;
        for (int k = 0; k < N_DECODE; k++) same += r->tokens[k] == res[0].tokens[k];
        printf("%-5s %9.0f %10.1f %10.1f %10.1f %11.1f %12.1f %9.0fM %6.0fM+%4.0fM %5d/%d\n",
               modes[i].name, r->load_ms, r->prefill_ms, r->decode_tok_s, bound, r->weight_mib,
               modes[i].bytes_per_token / 1e6, r->peak_rss_mib, r->anon_mib, r->file_mib, same,
               N_DECODE);
        char json[512];
        snprintf(json, sizeof json,
                 "{\"mode\":\"%s\",\"threads\":%d,\"load_ms\":%.1f,\"prefill_ms\":%.2f,"
                 "\"decode_tok_s\":%.2f,\"bound_tok_s\":%.2f,\"bandwidth_gbs\":%.2f,"
                 "\"weight_mib\":%.1f,\"bytes_per_token\":%.0f,\"peak_rss_mib\":%.1f,"
                 "\"rss_anon_mib\":%.1f,\"rss_file_mib\":%.1f,\"tokens_equal_fp32\":%d}",
                 modes[i].name, omp_get_max_threads(), r->load_ms, r->prefill_ms, r->decode_tok_s,
                 bound, bw, r->weight_mib, modes[i].bytes_per_token, r->peak_rss_mib, r->anon_mib,
                 r->file_mib, same);
        bench_json("quant", json);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    return rc;
}
