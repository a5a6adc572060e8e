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
 * also appended to runs/bench_t5_decode.jsonl. */
#include "bench_common.h"
#include "corevital/model.h"

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

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

typedef struct {
    cv_st_write_entry *e;
    float **data;
    size_t n, cap;
} ckpt;

/* Add a random tensor (rows, cols) — cols 0 for a vector — with values in [-scale, scale]. */
static int add(ckpt *c, const char *name, int64_t rows, int64_t cols, float scale, float offset,
               unsigned *seed) {
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 256;
        cv_st_write_entry *ne = realloc(c->e, nc * sizeof *ne);
        if (!ne) return -1;
        c->e = ne;
        float **nd = realloc(c->data, nc * sizeof *nd);
        if (!nd) return -1;
        c->data = nd;
        c->cap = nc;
    }
    size_t count = (size_t)rows * (size_t)(cols ? cols : 1);
    float *d = malloc(count * sizeof(float));
    char *nm = strdup(name);
    if (!d || !nm) {
        free(d);
        free(nm);
        return -1;
    }
    for (size_t i = 0; i < count; i++) d[i] = offset + scale * frand(seed);
    cv_st_write_entry *w = &c->e[c->n];
    memset(w, 0, sizeof *w);
    w->name = nm;
    w->dtype = CV_DT_F32;
    w->ndim = cols ? 2 : 1;
    w->shape[0] = rows;
    w->shape[1] = cols;
    w->data = d;
    c->data[c->n++] = d;
    return 0;
}

static int add_block_attn(ckpt *c, const char *pre, unsigned *seed) {
    const char *names[] = {"q", "k", "v", "o"};
    char n[160];
    int rc = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.%s.weight", pre, names[i]);
        rc |= i < 3 ? add(c, n, N_HEADS * D_KV, D_MODEL, 0.05f, 0, seed)
                    : add(c, n, D_MODEL, N_HEADS * D_KV, 0.05f, 0, seed);
    }
    return rc;
}

static int add_ff(ckpt *c, const char *pre, unsigned *seed) {
    char n[160];
    int rc = 0;
    snprintf(n, sizeof n, "%s.DenseReluDense.wi_0.weight", pre);
    rc |= add(c, n, D_FF, D_MODEL, 0.05f, 0, seed);
    snprintf(n, sizeof n, "%s.DenseReluDense.wi_1.weight", pre);
    rc |= add(c, n, D_FF, D_MODEL, 0.05f, 0, seed);
    snprintf(n, sizeof n, "%s.DenseReluDense.wo.weight", pre);
    rc |= add(c, n, D_MODEL, D_FF, 0.05f, 0, seed);
    snprintf(n, sizeof n, "%s.layer_norm.weight", pre);
    rc |= add(c, n, D_MODEL, 0, 0.1f, 1.0f, seed);
    return rc;
}

/* Write model.safetensors + config.json into dir. */
static int write_checkpoint(const char *dir) {
    ckpt c = {0};
    unsigned seed = 7;
    char n[160], pre[96];
    int rc = add(&c, "shared.weight", VOCAB, D_MODEL, 0.5f, 0, &seed);
    rc |= add(&c, "lm_head.weight", VOCAB, D_MODEL, 0.05f, 0, &seed);
    rc |= add(&c, "encoder.final_layer_norm.weight", D_MODEL, 0, 0.1f, 1.0f, &seed);
    rc |= add(&c, "decoder.final_layer_norm.weight", D_MODEL, 0, 0.1f, 1.0f, &seed);
    for (int s = 0; s < 2; s++) {
        const char *stack = s ? "decoder" : "encoder";
        snprintf(n, sizeof n, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 stack);
        rc |= add(&c, n, 32, N_HEADS, 0.5f, 0, &seed);
        for (int l = 0; l < N_LAYERS; l++) {
            snprintf(pre, sizeof pre, "%s.block.%d.layer.0.SelfAttention", stack, l);
            rc |= add_block_attn(&c, pre, &seed);
            snprintf(n, sizeof n, "%s.block.%d.layer.0.layer_norm.weight", stack, l);
            rc |= add(&c, n, D_MODEL, 0, 0.1f, 1.0f, &seed);
            if (s) {
                snprintf(pre, sizeof pre, "decoder.block.%d.layer.1.EncDecAttention", l);
                rc |= add_block_attn(&c, pre, &seed);
                snprintf(n, sizeof n, "decoder.block.%d.layer.1.layer_norm.weight", l);
                rc |= add(&c, n, D_MODEL, 0, 0.1f, 1.0f, &seed);
            }
            snprintf(pre, sizeof pre, "%s.block.%d.layer.%d", stack, l, s ? 2 : 1);
            rc |= add_ff(&c, pre, &seed);
        }
    }
    char path[1024];
    cv_error err = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0 && cv_st_write(path, c.e, c.n, NULL, &err) != CV_OK) {
        fprintf(stderr, "bench_t5_decode: %s\n", err.msg);
        rc = -1;
    }
    for (size_t i = 0; i < c.n; i++) {
        free((void *)c.e[i].name);
        free(c.data[i]);
    }
    free(c.e);
    free(c.data);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(
        f,
        "{\"architectures\": [\"T5ForConditionalGeneration\"], \"model_type\": \"t5\",\n"
        " \"d_model\": %d, \"d_kv\": %d, \"d_ff\": %d, \"num_heads\": %d, \"num_layers\": %d,\n"
        " \"num_decoder_layers\": %d, \"vocab_size\": %d, \"relative_attention_num_buckets\": 32,\n"
        " \"relative_attention_max_distance\": 128, \"layer_norm_epsilon\": 1e-06,\n"
        " \"feed_forward_proj\": \"gated-gelu\", \"dense_act_fn\": \"gelu_new\", \"is_gated_act\": "
        "true,\n"
        " \"tie_word_embeddings\": false, \"decoder_start_token_id\": 0, \"pad_token_id\": 0,\n"
        " \"eos_token_id\": 1, \"is_encoder_decoder\": true, \"dtype\": \"float32\"}\n",
        D_MODEL, D_KV, D_FF, N_HEADS, N_LAYERS, N_LAYERS, VOCAB);
    return fclose(f) ? -1 : 0;
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
    for (int i = 0; i < PROMPT; i++) prompt[i] = 3 + (int32_t)((frand(&seed) + 1.0f) * 15000.0f);
    prompt[PROMPT - 1] = 1; /* </s> */
    for (int i = 0; i < MAX_NEW; i++) dec_in[i] = 3 + (int32_t)((frand(&seed) + 1.0f) * 15000.0f);
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
