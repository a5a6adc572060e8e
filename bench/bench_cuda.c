/* bench_cuda.c — the CUDA backend's ladder: for each kernel and shape, every version is first
 * checked against its CPU twin (max abs error vs a stated tolerance), then timed with cudaEvents
 * on the backend's stream (mean of calls each timed alone after overwriting a 2 x L2 buffer, so
 * inputs come from HBM), and reported as time,
 * GB/s of compulsory traffic and its share of the card's bandwidth (2 x memory clock x bus width,
 * or 3350 GB/s, H100 SXM, when the driver does not say). Then end-to-end: a GPT-2-small-shaped
 * random checkpoint (cv_synth_gpt2, F32 and BF16) decoded greedily on CUDA with the statistics on
 * and off, tokens/s next to the weight-bandwidth bound, and a short CPU run of the same prompt
 * whose greedy tokens must match.
 *
 * Built in every build. Without CUDA compiled in, or without a GPU, it prints "CUDA not
 * available" and exits 0. usage: bench_cuda [--small] [workdir]  (default runs/bench-cuda-models;
 * the checkpoints are left there so bench/compare_pytorch.py can run the same weights; --small
 * shrinks every shape for a seconds-long smoke test of the bench itself). */
#include "bench_common.h"

#include "corevital/backend.h"
#include "corevital/dtype.h"
#include "corevital/stats.h"

#ifndef CV_HAVE_CUDA
int main(void) {
    printf("CUDA not available (this build was compiled without nvcc)\n");
    return 0;
}
#else

#include "corevital/model.h"
#include "corevital/synth.h"

#include <cuda_runtime_api.h>
#include <sys/stat.h>

/* kernels/backend_cuda.cu */

static cv_backend *G, *H;
static double peak_gbs;
static int small; /* --small: tiny shapes, a smoke test of the whole bench in seconds */

static float *rand_vec(size_t n, unsigned seed, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    if (!v) exit(1);
    for (size_t i = 0; i < n; i++) v[i] = bench_frand(&seed) * scale;
    return v;
}
static void *dev_copy(const void *h, size_t bytes) {
    void *d = G->alloc(G, bytes);
    if (!d) {
        fprintf(stderr, "bench_cuda: out of device memory\n");
        exit(1);
    }
    G->upload(G, d, h, bytes);
    return d;
}
static double max_abs_diff(const float *dev, const float *host, size_t n) {
    float *g = malloc(sizeof(float) * n);
    G->download(G, g, dev, sizeof(float) * n);
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - host[i]);
        if (isnan(e) || e > m) m = isnan(e) ? INFINITY : e;
    }
    free(g);
    return m;
}

/* A buffer twice the size of L2 (50 MB on H100 / H200), overwritten before every timed call so
 * the call reads its inputs from HBM, as a decode step does with weights that are far larger
 * than L2: otherwise back-to-back calls on the same few MB would be served from L2 and "% of
 * HBM" would overstate. */
static void *l2_flush;
static size_t l2_flush_bytes;

static void l2_flush_init(void) {
    int l2 = 0;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
    l2_flush_bytes = 2 * (size_t)(l2 > 0 ? l2 : 50 << 20);
    if (cudaMalloc(&l2_flush, l2_flush_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        l2_flush = NULL;
        printf("note: no memory for the L2 flush buffer: timings are with a warm L2\n");
    }
}

/* Mean microseconds per call of fn over `iters` calls, each timed alone with cudaEvents on the op
 * stream right after the L2 flush (the flush, a ~40 us memset, also hides the launch latency). */
static double gpu_us(void (*fn)(void *), void *arg, int iters) {
    cudaStream_t st = (cudaStream_t)cv_cuda_stream(G);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    if (small) iters = 2; /* a smoke test: the numbers are not the point */
    for (int i = 0; i < (small ? 1 : 3); i++) fn(arg); /* warm-up */
    double total_ms = 0;
    for (int i = 0; i < iters; i++) {
        if (l2_flush) cudaMemsetAsync(l2_flush, i & 0xff, l2_flush_bytes, st);
        cudaEventRecord(a, st);
        fn(arg);
        cudaEventRecord(b, st);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        total_ms += ms;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 1e3 * total_ms / iters;
}

static void report(const char *kernel, const char *shape, const char *version, double err,
                   double tol, double us, double bytes, double flops) {
    double gbs = bytes / (us * 1e-6) / 1e9;
    printf("%-14s %-30s %-14s err %8.2e %-4s %9.2f us %8.1f GB/s %5.1f%%", kernel, shape, version,
           err, err <= tol ? "ok" : "BAD", us, gbs, 100.0 * gbs / peak_gbs);
    if (flops > 0) printf(" %8.1f GFLOP/s", flops / (us * 1e-6) / 1e9);
    printf("\n");
    FILE *f = fopen("runs/bench_cuda.jsonl", "a");
    if (f) {
        fprintf(f,
                "{\"kernel\":\"%s\",\"shape\":\"%s\",\"version\":\"%s\",\"max_err\":%.3g,"
                "\"ok\":%s,\"us\":%.3f,\"gbs\":%.1f,\"peak_gbs\":%.0f}\n",
                kernel, shape, version, err, err <= tol ? "true" : "false", us, gbs, peak_gbs);
        fclose(f);
    }
}

/* ---- matmul ------------------------------------------------------------------------------- */

typedef struct {
    float *out;
    const float *x, *bias;
    const cv_weight *w;
    int T;
} mm_arg;
static void mm_run(void *p) {
    mm_arg *a = p;
    G->matmul(G, a->out, a->x, a->w, a->bias, a->T);
}

static void ladder_matmul(int T, int N, int K, cv_dtype dt) {
    size_t nw = (size_t)N * K, es = cv_dtype_size(dt);
    float *wf = rand_vec(nw, (unsigned)(N + K), 0.05f), *x = rand_vec((size_t)T * K, 3, 1.0f);
    float *bias = rand_vec(N, 5, 0.1f);
    void *wh = wf;
    if (dt != CV_DT_F32) {
        uint16_t *h = malloc(nw * 2);
        for (size_t i = 0; i < nw; i++)
            h[i] = dt == CV_DT_BF16 ? cv_f32_to_bf16(wf[i]) : cv_f32_to_f16(wf[i]);
        wh = h;
    }
    cv_weight wc, wg;
    cv_error err = {0};
    if (H->weight_upload(H, &wc, wh, dt, N, K, &err) ||
        G->weight_upload(G, &wg, wh, dt, N, K, &err)) {
        fprintf(stderr, "bench_cuda: %s\n", err.msg);
        exit(1);
    }
    float *want = malloc(sizeof(float) * T * N);
    H->matmul(H, want, x, &wc, bias, T);
    float *dx = dev_copy(x, sizeof(float) * T * K), *db = dev_copy(bias, sizeof(float) * N);
    float *dout = G->alloc(G, sizeof(float) * T * N);
    char shape[64];
    snprintf(shape, sizeof shape, "%s T=%d N=%d K=%d", cv_dtype_name(dt), T, N, K);
    static const char *names[] = {"auto", "kernel", "cublas"};
    for (int v = 0; v < 3; v++) {
        cv_cuda_set_variant(G, "matmul", v);
        mm_arg a = {dout, dx, db, &wg, T};
        mm_run(&a);
        double e = max_abs_diff(dout, want, (size_t)T * N);
        double tol = (v == 2 && dt != CV_DT_F32) ? 3e-2 * sqrt(K) * 0.05 : 1e-5 * sqrt(K);
        double us = gpu_us(mm_run, &a, T == 1 ? 200 : 20);
        report("matmul", shape, names[v], e, tol, us, (double)nw * es + 4.0 * T * (K + N),
               2.0 * T * N * K);
    }
    cv_cuda_set_variant(G, "matmul", 0);
    G->weight_free(G, &wg);
    G->free(G, dx), G->free(G, db), G->free(G, dout);
    free(want), free(x), free(bias);
    if (wh != wf) free(wh);
    free(wf);
}

/* ---- norms -------------------------------------------------------------------------------- */

typedef struct {
    int op, T, C;
    float *out, *x, *y, *w, *b;
    double *rec;
} norm_arg;
static void norm_run(void *p) {
    norm_arg *a = p;
    if (a->op == 0) G->layernorm(G, a->out, a->x, a->w, a->b, a->T, a->C, 1e-5f, a->rec);
    if (a->op == 1) G->rmsnorm(G, a->out, a->x, a->w, a->T, a->C, 1e-5f, a->rec);
    if (a->op == 2) G->residual_add(G, a->x, a->y, a->T, a->C, a->rec);
}

static void ladder_norm(int op, int T, int C, int stats) {
    size_t n = (size_t)T * C, rs = cv_hidden_record_size(C);
    float *x = rand_vec(n, 9, 2.0f), *y = rand_vec(n, 10, 1.0f), *w = rand_vec(C, 11, 1.0f);
    float *b = rand_vec(C, 12, 0.1f), *out = malloc(sizeof(float) * n);
    double *rec = malloc(sizeof(double) * rs);
    cv_hidden_record_reset(rec, C);
    norm_arg a = {op,
                  T,
                  C,
                  G->alloc(G, sizeof(float) * n),
                  dev_copy(x, sizeof(float) * n),
                  dev_copy(y, sizeof(float) * n),
                  dev_copy(w, sizeof(float) * C),
                  dev_copy(b, sizeof(float) * C),
                  stats ? dev_copy(rec, sizeof(double) * rs) : NULL};
    double *rc = stats ? rec : NULL;
    if (op == 0) H->layernorm(H, out, x, w, b, T, C, 1e-5f, rc);
    if (op == 1) H->rmsnorm(H, out, x, w, T, C, 1e-5f, rc);
    if (op == 2) H->residual_add(H, x, y, T, C, rc), memcpy(out, x, sizeof(float) * n);
    norm_run(&a);
    double e = max_abs_diff(op == 2 ? a.x : a.out, out, n);
    if (stats) { /* the record too: its max|x| and l2 sum, relative */
        double *g = malloc(sizeof(double) * rs);
        G->download(G, g, a.rec, sizeof(double) * rs);
        e = fmax(e, fabs(g[CV_HS_L2SUM] - rec[CV_HS_L2SUM]) / rec[CV_HS_L2SUM]);
        free(g);
    }
    static const char *names[] = {"layernorm", "rmsnorm", "residual_add"};
    char shape[64];
    snprintf(shape, sizeof shape, "T=%d C=%d", T, C);
    double us = gpu_us(norm_run, &a, 200);
    report(names[op], shape, stats ? "fused-stats" : "no-stats", e, 2e-5, us,
           4.0 * n * (op == 2 ? 3 : 2), 0);
    G->free(G, a.out), G->free(G, a.x), G->free(G, a.y), G->free(G, a.w), G->free(G, a.b);
    if (a.rec) G->free(G, a.rec);
    free(x), free(y), free(w), free(b), free(out), free(rec);
}

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    cv_attn_args a;
} attn_arg;
static void attn_run(void *p) {
    G->attention(G, &((attn_arg *)p)->a);
}

static void ladder_attention(int Hh, int KVH, int hd, int T, int NK, int stats) {
    int qs = Hh * hd, kvs = KVH * hd;
    float *q = rand_vec((size_t)T * qs, 21, 1.0f), *k = rand_vec((size_t)NK * kvs, 22, 1.0f);
    float *v = rand_vec((size_t)NK * kvs, 23, 1.0f), *out = malloc(sizeof(float) * T * qs);
    double rec[CV_AS_SIZE];
    cv_attn_record_reset(rec);
    cv_attn_args a = {.out = out,
                      .q = q,
                      .k = k,
                      .v = v,
                      .q_stride = qs,
                      .kv_stride = kvs,
                      .out_stride = qs,
                      .T = T,
                      .n_keys = NK,
                      .q_pos0 = NK - T,
                      .n_heads = Hh,
                      .n_kv_heads = KVH,
                      .head_dim = hd,
                      .causal = 1,
                      .scale = 1.0f / sqrtf((float)hd),
                      .bias = NULL,
                      .stats = stats ? rec : NULL,
                      .probs = NULL};
    H->attention(H, &a);
    attn_arg g = {a};
    g.a.out = G->alloc(G, sizeof(float) * T * qs);
    g.a.q = dev_copy(q, sizeof(float) * T * qs);
    g.a.k = dev_copy(k, sizeof(float) * NK * kvs);
    g.a.v = dev_copy(v, sizeof(float) * NK * kvs);
    g.a.stats = stats ? dev_copy(rec, sizeof rec) : NULL;
    attn_run(&g);
    double e = max_abs_diff(g.a.out, out, (size_t)T * qs);
    char shape[64];
    snprintf(shape, sizeof shape, "H=%d KV=%d hd=%d T=%d keys=%d", Hh, KVH, hd, T, NK);
    double us = gpu_us(attn_run, &g, 200);
    report("attention", shape, stats ? "fused-stats" : "no-stats", e, 2e-5, us,
           4.0 * (2.0 * NK * kvs + 2.0 * T * qs), 4.0 * T * NK * qs);
    G->free(G, g.a.out), G->free(G, (void *)g.a.q), G->free(G, (void *)g.a.k),
        G->free(G, (void *)g.a.v);
    if (g.a.stats) G->free(G, g.a.stats);
    free(q), free(k), free(v), free(out);
}

/* ---- logits ------------------------------------------------------------------------------- */

typedef struct {
    double *rec;
    const float *x;
    int V, k;
} lg_arg;
static void lg_run(void *p) {
    lg_arg *a = p;
    G->logits_stats(G, a->rec, a->x, a->V, a->k);
}

static void ladder_logits(int V, int k) {
    float *x = rand_vec((size_t)V, 31, 6.0f);
    size_t rs = cv_logits_record_size(CV_TOPK_MAX);
    double *want = calloc(rs, sizeof(double)), *got = calloc(rs, sizeof(double));
    H->logits_stats(H, want, x, V, k);
    lg_arg a = {dev_copy(got, sizeof(double) * rs), dev_copy(x, sizeof(float) * V), V, k};
    lg_run(&a);
    G->download(G, got, a.rec, sizeof(double) * rs);
    double e = fabs(got[CV_LS_ENTROPY] - want[CV_LS_ENTROPY]);
    for (int i = 0; i < (int)want[CV_LS_K]; i++) {
        if (got[CV_LS_FIXED + 2 * i] != want[CV_LS_FIXED + 2 * i]) e = INFINITY;
        e = fmax(e, fabs(got[CV_LS_FIXED + 2 * i + 1] - want[CV_LS_FIXED + 2 * i + 1]));
    }
    char shape[64];
    snprintf(shape, sizeof shape, "V=%d k=%d", V, k);
    report("logits_stats", shape, "2-stage", e, 1e-9, gpu_us(lg_run, &a, 200), 4.0 * V, 0);
    /* argmax: wall time per call, the 4-byte copy and the stream sync included */
    int32_t ga = G->argmax(G, a.x, V), ha = H->argmax(H, x, V);
    double t0 = bench_now_ms();
    const int n_am = small ? 2 : 200;
    for (int i = 0; i < n_am; i++) ga = G->argmax(G, a.x, V);
    double us = (bench_now_ms() - t0) * 1e3 / n_am;
    report("argmax", shape, "1-block+copy", ga == ha ? 0.0 : INFINITY, 0.0, us, 4.0 * V, 0);
    G->free(G, a.rec), G->free(G, (void *)a.x);
    free(x), free(want), free(got);
}

/* ---- element-wise ------------------------------------------------------------------------- */

typedef struct {
    float *x;
    size_t n;
} ew_arg;
static void gelu_run(void *p) {
    G->gelu_tanh(G, ((ew_arg *)p)->x, ((ew_arg *)p)->n);
}

static void ladder_gelu(size_t n) {
    float *x = rand_vec(n, 41, 3.0f);
    ew_arg a = {dev_copy(x, sizeof(float) * n), n};
    H->gelu_tanh(H, x, n);
    gelu_run(&a);
    double e = max_abs_diff(a.x, x, n);
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu", n);
    /* the timed runs keep applying gelu to the same buffer: time only, values irrelevant */
    report("gelu_tanh", shape, "grid-stride", e, 1e-5, gpu_us(gelu_run, &a, 200), 8.0 * n, 0);
    G->free(G, a.x);
    free(x);
}

/* ---- end to end --------------------------------------------------------------------------- */

typedef struct {
    double prefill_ms, decode_tok_s;
    int32_t tokens[64];
    int n;
} e2e_result;

static int e2e_run(cv_backend *be, const char *dir, int P, int steps, int stats, e2e_result *r) {
    cv_error err = {0};
    cv_model *m;
    if (cv_model_load(dir, be, &m, &err) != CV_OK) {
        fprintf(stderr, "bench_cuda: load %s on %s: %s\n", dir, be->name, err.msg);
        return -1;
    }
    int L = cv_model_num_layers(m), C = m->cfg.hidden_size, V = cv_model_vocab(m);
    if (m->ops->reserve(m, P, P + steps + 1, 1, &err) != CV_OK) {
        fprintf(stderr, "bench_cuda: reserve: %s\n", err.msg);
        cv_model_free(m);
        return -1;
    }
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 0, 10);
    size_t bytes = lay.total * sizeof(double);
    double *host = malloc(bytes), *dev = stats ? be->alloc(be, bytes) : NULL;
    int32_t *prompt = malloc(sizeof(int32_t) * P);
    for (int i = 0; i < P; i++) prompt[i] = (i * 7919 + 13) % V;
    float *logits;
    if (dev) cv_stats_arena_reset(host, &lay), be->upload(be, dev, host, bytes);
    double t0 = bench_now_ms();
    m->ops->forward(m, prompt, P, 0, dev, &lay, NULL, 0, &logits, &err);
    int32_t tok = be->argmax(be, logits, V);
    if (dev) be->download(be, host, dev, bytes);
    r->prefill_ms = bench_now_ms() - t0;
    r->n = 0;
    t0 = bench_now_ms();
    for (int i = 0; i < steps; i++) {
        if (r->n < 64) r->tokens[r->n++] = tok;
        if (dev) cv_stats_arena_reset(host, &lay), be->upload(be, dev, host, bytes);
        m->ops->forward(m, &tok, 1, P + i, dev, &lay, NULL, 0, &logits, &err);
        tok = be->argmax(be, logits, V);
        if (dev) be->download(be, host, dev, bytes);
    }
    r->decode_tok_s = steps / ((bench_now_ms() - t0) * 1e-3);
    if (dev) be->free(be, dev);
    free(host), free(prompt);
    cv_model_free(m);
    return 0;
}

/* The generation loop's greedy step (src/model/generate.c): the token and its position stay on
 * the device (step words, backend.h CV_SP_*), the arena is reset on the device, the choice is
 * written beside the records, and the step ends in one download. graph = 1: decode step 2 is
 * recorded as a CUDA graph and replayed from then on (backend.h graph_*). */
static int e2e_run_step(cv_backend *be, const char *dir, int P, int steps, int stats, int graph,
                        e2e_result *r) {
    cv_error err = {0};
    cv_model *m;
    if (cv_model_load(dir, be, &m, &err) != CV_OK) {
        fprintf(stderr, "bench_cuda: load %s on %s: %s\n", dir, be->name, err.msg);
        return -1;
    }
    int L = cv_model_num_layers(m), C = m->cfg.hidden_size, V = cv_model_vocab(m);
    if (m->ops->reserve(m, P, P + steps + 1, 1, &err) != CV_OK) {
        fprintf(stderr, "bench_cuda: reserve: %s\n", err.msg);
        cv_model_free(m);
        return -1;
    }
    cv_stats_layout lay;
    cv_stats_layout_init(&lay, L, C, 0, 10);
    size_t bytes = lay.total * sizeof(double);
    double *host = be->host_alloc ? be->host_alloc(be, bytes) : NULL;
    double *dev = stats ? be->alloc(be, bytes) : NULL;
    int32_t *step = be->alloc(be, sizeof(int32_t) * CV_SP_WORDS);
    int32_t *prompt = malloc(sizeof(int32_t) * P);
    if (!host || !step || (stats && !dev) || !prompt) {
        fprintf(stderr, "bench_cuda: out of memory\n");
        return -1;
    }
    for (int i = 0; i < P; i++) prompt[i] = (i * 7919 + 13) % V;
    int32_t init[CV_SP_WORDS] = {prompt[P - 1], P - 1, 0, 0}, tok = 0;
    be->upload(be, step, init, sizeof init);
    m->step = step;
    float *logits;
    double t0 = bench_now_ms();
    if (dev) be->stats_reset(be, dev, &lay);
    m->ops->forward(m, prompt, P, 0, dev, &lay, NULL, 0, &logits, &err);
    be->pick_greedy(be, logits, V, dev ? cv_stats_step(dev, &lay) : NULL, step);
    be->download(be, host, dev ? (const void *)dev : (const void *)step, dev ? bytes : 4);
    r->prefill_ms = bench_now_ms() - t0;
    r->n = 0;
    int ready = 0, tried = 0;
    t0 = bench_now_ms();
    for (int i = 0; i < steps; i++) {
        tok = dev ? (int32_t)cv_stats_step(host, &lay)[CV_STEP_TOKEN] : *(int32_t *)host;
        if (r->n < 64) r->tokens[r->n++] = tok;
        int issued = ready && be->graph_launch(be);
        int rec = !issued && graph && !tried && i >= 1 && be->graph_begin && be->graph_begin(be);
        if (!issued) {
            if (dev) be->stats_reset(be, dev, &lay);
            m->ops->forward(m, NULL, 1, P + i, dev, &lay, NULL, 0, &logits, &err);
            be->pick_greedy(be, logits, V, dev ? cv_stats_step(dev, &lay) : NULL, step);
        }
        if (rec) {
            tried = 1;
            ready = be->graph_end(be);
            if (!(ready && be->graph_launch(be))) { /* not recorded: run it plainly */
                if (dev) be->stats_reset(be, dev, &lay);
                m->ops->forward(m, NULL, 1, P + i, dev, &lay, NULL, 0, &logits, &err);
                be->pick_greedy(be, logits, V, dev ? cv_stats_step(dev, &lay) : NULL, step);
            }
        }
        be->download(be, host, dev ? (const void *)dev : (const void *)step, dev ? bytes : 4);
    }
    r->decode_tok_s = steps / ((bench_now_ms() - t0) * 1e-3);
    if (graph && !ready) fprintf(stderr, "bench_cuda: the decode step was not captured\n");
    if (be->graph_reset) be->graph_reset(be);
    m->step = NULL;
    be->free(be, step);
    if (dev) be->free(be, dev);
    be->host_free(be, host);
    free(prompt);
    cv_model_free(m);
    return 0;
}

static void e2e(const char *workdir) {
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16};
    mkdir(workdir, 0755);
    for (int d = 0; d < 2; d++) {
        cv_synth_shape s = {.vocab = 50257,
                            .hidden = 768,
                            .layers = 12,
                            .heads = 12,
                            .kv_heads = 12,
                            .intermediate = 3072,
                            .max_positions = 1024,
                            .tie_embeddings = 1,
                            .dtype = dts[d],
                            .std = 0.02f,
                            .seed = 1,
                            .bos_id = 50256,
                            .eos_id = 50256};
        if (small) {
            s.vocab = 1000, s.hidden = 64, s.layers = 2, s.heads = 4, s.kv_heads = 4;
            s.intermediate = 256, s.max_positions = 512, s.bos_id = s.eos_id = 0;
        }
        char dir[512];
        snprintf(dir, sizeof dir, "%s/gpt2-%s-%s", workdir, small ? "tiny" : "small",
                 d ? "bf16" : "f32");
        cv_error err = {0};
        if (cv_synth_gpt2(dir, &s, &err) != CV_OK) {
            fprintf(stderr, "bench_cuda: synth %s: %s\n", dir, err.msg);
            continue;
        }
        /* weights read per decoded token: the blocks' matrices and the tied lm_head */
        double wbytes =
            ((double)s.layers * (4.0 * s.hidden * s.hidden + 2.0 * s.hidden * s.intermediate) +
             (double)s.vocab * s.hidden) *
            (double)cv_dtype_size(dts[d]);
        const int P = small ? 16 : 128, steps = small ? 16 : 128;
        e2e_result on, off, cpu;
        if (e2e_run(G, dir, P, steps, 1, &on) || e2e_run(G, dir, P, steps, 0, &off)) continue;
        printf("e2e gpt2-%s %-4s cuda: prefill %d tokens %.1f ms; decode %.1f tok/s with stats, "
               "%.1f tok/s without; weight-bandwidth bound %.0f tok/s (%.0f MB/token)\n",
               small ? "tiny" : "small", d ? "bf16" : "f32", P, on.prefill_ms, on.decode_tok_s,
               off.decode_tok_s, peak_gbs * 1e9 / wbytes, wbytes / 1e6);
        e2e_result st_on, st_off, gr_on, gr_off;
        if (e2e_run_step(G, dir, P, steps, 1, 0, &st_on) == 0 &&
            e2e_run_step(G, dir, P, steps, 0, 0, &st_off) == 0 &&
            e2e_run_step(G, dir, P, steps, 1, 1, &gr_on) == 0 &&
            e2e_run_step(G, dir, P, steps, 0, 1, &gr_off) == 0) {
            int same = 0;
            while (same < on.n && same < gr_on.n && on.tokens[same] == gr_on.tokens[same] &&
                   on.tokens[same] == st_on.tokens[same])
                same++;
            printf("e2e gpt2-%s %-4s cuda, device step: plain launches %.1f tok/s with stats, "
                   "%.1f without; CUDA graph %.1f tok/s with stats, %.1f without; tokens "
                   "identical to the host-token loop for %d of %d\n",
                   small ? "tiny" : "small", d ? "bf16" : "f32", st_on.decode_tok_s,
                   st_off.decode_tok_s, gr_on.decode_tok_s, gr_off.decode_tok_s, same, on.n);
        }
        if (e2e_run(H, dir, P, 16, 1, &cpu) == 0) {
            int same = 0;
            while (same < cpu.n && same < on.n && cpu.tokens[same] == on.tokens[same]) same++;
            printf("e2e gpt2-%s %-4s cpu:  prefill %.1f ms; decode %.1f tok/s; greedy tokens "
                   "identical to cuda for %d of %d\n",
                   small ? "tiny" : "small", d ? "bf16" : "f32", cpu.prefill_ms, cpu.decode_tok_s,
                   same, cpu.n);
        }
    }
}

int main(int argc, char **argv) {
    const char *workdir = "runs/bench-cuda-models";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--small") == 0)
            small = 1;
        else
            workdir = argv[i];
    }
    if (!cv_cuda_available()) {
        printf("CUDA not available (no usable GPU)\n");
        return 0;
    }
    cv_error err = {0};
    G = cv_backend_cuda_create(0, &err);
    H = cv_backend_cpu_create();
    if (!G || !H) {
        printf("CUDA not available (%s)\n", err.msg);
        return 0;
    }
    struct cudaDeviceProp prop;
    int clk = 0, bus = 0;
    cudaGetDeviceProperties(&prop, 0);
    cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, 0);
    cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0);
    peak_gbs = clk > 0 && bus > 0 ? 2.0 * clk * 1e3 * (bus / 8.0) / 1e9 : 3350.0;
    printf("device: %s, %d SMs, memory clock %d kHz, bus %d bits: peak %.0f GB/s\n", prop.name,
           prop.multiProcessorCount, clk, bus, peak_gbs);
    l2_flush_init();
    mkdir("runs", 0755);

    const int C = small ? 64 : 768, F = small ? 256 : 3072, V = small ? 5000 : 50257;
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16};
    for (int d = 0; d < 2; d++) {
        ladder_matmul(1, C, C, dts[d]);
        ladder_matmul(1, F, C, dts[d]);
        ladder_matmul(1, C, F, dts[d]);
        ladder_matmul(1, V, C, dts[d]);
        ladder_matmul(128, F, C, dts[d]);
    }
    for (int op = 0; op < 3; op++) {
        ladder_norm(op, 1, C, 0);
        ladder_norm(op, 1, C, 1);
        ladder_norm(op, 128, C, 1);
    }
    const int S = small ? 8 : 1; /* shrink the attention shapes in --small */
    ladder_attention(12, 12, 64, 1, 128 / S, 1);
    ladder_attention(12, 12, 64, 1, 1024 / S, 0);
    ladder_attention(12, 12, 64, 1, 1024 / S, 1);
    ladder_attention(32 / S, 8 / S, 128, 1, 4096 / S, 1);
    ladder_attention(12, 12, 64, 128 / S, 128 / S, 1);
    ladder_logits(V, 10);
    ladder_logits(V, 64);
    ladder_logits(small ? 9000 : 128256, 10);
    ladder_gelu((size_t)F);
    ladder_gelu((size_t)128 * F);
    e2e(workdir);
    G->destroy(G);
    H->destroy(H);
    return 0;
}
#endif
