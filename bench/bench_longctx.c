/* bench_longctx.c — long-context speed: prefill tok/s and decode ms/step at 512..8192 tokens of
 * context on a Llama-family checkpoint (SmolLM2-135M from scripts/get-smollm2.sh, else a
 * random-weight model of the same shape written here), statistics on and off, plus the attention
 * kernels alone at that shape (the one-row-at-a-time kernel vs the tiled prefill / split-key
 * decode), each checked against the naive twin before it is timed.
 *
 * usage: bench_longctx [model_dir] [lens (default 512,2048,4096)] [reps (default 3)]
 *        BENCH_DECODE=n decode steps per run (default 8); BENCH_KERNELS=0 skips the kernel part
 *        (BENCH_PREFILL=0 its prefill kernels; BENCH_LAYERS=n decode over n layers' caches,
 *        default 30: 1 keeps a 4K-token cache in L3, the kernel's compute without DRAM),
 *        BENCH_E2E=0 the end-to-end part; BENCH_DTYPE=bfloat16 holds the weights in bf16
 *        (model.dtype), BENCH_KV=bf16 the KV cache (model.kv_dtype), BENCH_PREFILL_DTYPE=bf16
 *        the prompt's products (model.prefill_dtype), BENCH_MODES=all,off the modes
 *        (default all,stats,off; reps up to 16, >= 5 prints the decode spread);
 *        BENCH_DEPTH=32,4096 instead times the decode step at the two depths alternated within
 *        each repetition and prints long / short paired by repetition. After the
 * end-to-end part it prints the process's peak RSS against the weights + the KV cache of the
 * longest context. Built with -DBENCH_BASELINE against an older libcorevital (no kernel ladder),
 * the same source measures the "before" of a change in the same session. */
#include "bench_common.h"

#include "corevital/generate.h"
#include "corevital/stats.h"
#include "corevital/synth.h"
#ifndef BENCH_BASELINE
#include "backend/cpu_internal.h"
#endif

#include <unistd.h>

typedef struct {
    double t0, prefill_ms, decode_ms[64];
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
    if (p->steps < 64) p->decode_ms[p->steps] = ms;
    p->steps++;
}

static const char *const mode_name[] = {"off", "stats", "all"};

/* The median decode step of one run (ms), over the steps on_step kept. */
static double decode_median(phase_times *pt) {
    int ns = pt->steps < 64 ? pt->steps : 64;
    return ns ? bench_median(pt->decode_ms, ns) : NAN;
}

/* One greedy run of P prompt tokens in mode inst (0 off, 1 stats, 2 all): its phase times. */
static cv_status gen_once(cv_session *s, cv_config *cfg, const int32_t *prompt, int P, int inst,
                          phase_times *pt, cv_error *err) {
    cv_gen_hooks hooks = {pt, on_begin, on_end, on_step};
    int32_t *ids = NULL;
    size_t n = 0;
    memset(pt, 0, sizeof *pt);
    cv_config_set(cfg, "health.enabled", inst == 2 ? "true" : "false", err);
    cv_status st =
        cv_session_generate(s, cfg, prompt, (size_t)P, inst > 0, NULL, &ids, &n, NULL, &hooks, err);
    free(ids);
    return st;
}

static int32_t *bench_prompt(int P) {
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)P);
    for (int i = 0; prompt && i < P; i++) prompt[i] = 100 + (i * 37) % 5000; /* no EOS */
    return prompt;
}

/* BENCH_DEPTH=short,long: the decode step at the two depths, alternated within each repetition
 * (after a warm-up of both), and long / short paired by repetition: the two runs of a pair see
 * one state of a noisy host. Mode inst; returns 0 or 1 on a failed run. */
static int depth_pairs(cv_session *s, cv_config *cfg, const char *spec, int reps, int inst) {
    int d[2] = {32, 4096};
    if (bench_parse_ints(spec, d, 2) != 2) {
        fprintf(stderr, "bench_longctx: BENCH_DEPTH wants two lengths (short,long): %s\n", spec);
        return 1;
    }
    double ms[2][16], ratio[16];
    cv_error err = {0};
    int32_t *prompt[2] = {bench_prompt(d[0]), bench_prompt(d[1])};
    int failed = !prompt[0] || !prompt[1];
    if (failed) fprintf(stderr, "bench_longctx: out of memory\n");
    for (int r = 0; r <= reps && !failed; r++) /* r = 0: warm-up */
        for (int j = 0; j < 2 && !failed; j++) {
            phase_times pt;
            if (gen_once(s, cfg, prompt[j], d[j], inst, &pt, &err) != CV_OK) {
                fprintf(stderr, "bench_longctx: %s\n", err.msg);
                failed = 1;
            } else if (r > 0) {
                ms[j][r - 1] = decode_median(&pt);
            }
        }
    free(prompt[0]), free(prompt[1]);
    if (failed) return 1;
    for (int r = 0; r < reps; r++) ratio[r] = ms[1][r] / ms[0][r];
    double lo = ratio[0], hi = ratio[0];
    for (int r = 1; r < reps; r++) lo = fmin(lo, ratio[r]), hi = fmax(hi, ratio[r]);
    printf("\ndecode step at depth %d against %d (%s, alternated, %d repetitions):\n", d[1], d[0],
           mode_name[inst], reps);
    for (int r = 0; r < reps; r++)
        printf("  rep %2d: %7.2f -> %7.2f ms (%.3fx)\n", r + 1, ms[0][r], ms[1][r], ratio[r]);
    const double med = bench_median(ratio, reps);
    printf("  paired ratio: median %.3fx, min %.3fx, max %.3fx; medians %.2f -> %.2f ms\n", med, lo,
           hi, bench_median(ms[0], reps), bench_median(ms[1], reps));
    char json[256];
    snprintf(json, sizeof json,
             "{\"bench\":\"longctx_depth\",\"short\":%d,\"long\":%d,\"mode\":\"%s\","
             "\"reps\":%d,\"ratio_median\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f}",
             d[0], d[1], mode_name[inst], reps, med, lo, hi);
    bench_json("longctx", json);
    return 0;
}

#ifndef BENCH_BASELINE
/* One timed attention call. Decode calls walk through `layers` distinct caches (as a model's
 * layers do), so the keys and values come from DRAM, not from the 32 MiB L3 that one 4K-token
 * cache (6 MiB) would sit in. */
typedef struct {
    cv_backend *be;
    cv_attn_args a;
    int version; /* 1 rows, 2 tiled / split-key */
    int layers, layer;
    const float *k0, *v0;
    const uint16_t *k16, *v16; /* bf16 copies, or NULL */
    size_t layer_elems;
} at_arg;
static void run_at(void *p) {
    at_arg *x = p;
    size_t off = (size_t)x->layer * x->layer_elems;
    x->layer = (x->layer + 1) % x->layers;
    if (x->k16)
        x->a.k = x->a.v = NULL, x->a.k16 = x->k16 + off, x->a.v16 = x->v16 + off;
    else
        x->a.k = x->k0 + off, x->a.v = x->v0 + off, x->a.k16 = x->a.v16 = NULL;
    if (x->a.stats) cv_attn_record_reset(x->a.stats);
    if (x->version == 1)
        cv_cpu_attention_rows(x->be, &x->a);
    else
        x->be->attention(x->be, &x->a);
}

/* The attention kernels alone at SmolLM2's shape (9 query / 3 kv heads of 64), over an fp32 and
 * a bf16 cache laid out head-major as the CPU model keeps it (kv_head_stride). */
static int kernel_ladder(const int *lens, int nl, double peak, double bw) {
    const int H = 9, KVH = 3, hd = 64, qs = H * hd, ks = hd;
    const int NL = getenv("BENCH_LAYERS") && atoi(getenv("BENCH_LAYERS")) > 0
                       ? atoi(getenv("BENCH_LAYERS"))
                       : 30; /* 1: one cache, L3-resident at 4K keys (the kernel's compute) */
    const int only_decode = getenv("BENCH_PREFILL") && !atoi(getenv("BENCH_PREFILL"));
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 5;
    char json[512];
    printf("\nattention kernels, SmolLM2 shape (H 9, KV 3, hd 64), stats on; decode cycles through "
           "%d layers' caches (from DRAM)\n",
           NL);
    printf("%-8s %6s %-11s %10s %10s %7s\n", "phase", "keys", "version", "ms", "rate", "%limit");
    for (int li = 0; li < nl; li++) {
        int T = lens[li], NK = lens[li];
        size_t le = (size_t)NK * KVH * hd;
        float *q = malloc(sizeof(float) * T * qs), *k = malloc(sizeof(float) * le * NL);
        float *v = malloc(sizeof(float) * le * NL), *o = malloc(sizeof(float) * T * qs);
        float *o2 = malloc(sizeof(float) * T * qs);
        uint16_t *k16 = malloc(sizeof(uint16_t) * le * NL),
                 *v16 = malloc(sizeof(uint16_t) * le * NL);
        if (!q || !k || !v || !o || !o2 || !k16 || !v16) {
            fprintf(stderr, "bench_longctx: out of memory at %d keys\n", NK);
            return 1;
        }
        for (int i = 0; i < T * qs; i++) q[i] = bench_frand(&seed);
        for (size_t i = 0; i < le; i++) k[i] = bench_frand(&seed), v[i] = bench_frand(&seed);
        for (int l = 1; l < NL; l++)
            memcpy(k + l * le, k, le * sizeof(float)), memcpy(v + l * le, v, le * sizeof(float));
        for (size_t i = 0; i < le * NL; i++)
            k16[i] = cv_f32_to_bf16(k[i]), v16[i] = cv_f32_to_bf16(v[i]);
        double rec[CV_AS_SIZE];
        for (int phase = only_decode; phase < 2; phase++) { /* 0 prefill (T = NK), 1 decode */
            int Tq = phase ? 1 : T;
            for (int kvb = 0; kvb < 2; kvb++) {
                at_arg x = {be,
                            {.out = o,
                             .q = phase ? q + (size_t)(T - 1) * qs : q,
                             .q_stride = qs,
                             .kv_stride = ks,
                             .kv_head_stride = NK * hd,
                             .out_stride = qs,
                             .T = Tq,
                             .n_keys = NK,
                             .q_pos0 = NK - Tq,
                             .n_heads = H,
                             .n_kv_heads = KVH,
                             .head_dim = hd,
                             .causal = 1,
                             .scale = 0.125f,
                             .stats = rec},
                            2,
                            phase ? NL : 1,
                            0,
                            k,
                            v,
                            kvb ? k16 : NULL,
                            kvb ? v16 : NULL,
                            le};
                /* check the last query rows against the naive twin over the same cache */
                run_at(&x);
                cv_attn_args nv = x.a;
                int tail = Tq < 4 ? Tq : 4;
                nv.q = x.a.q + (size_t)(Tq - tail) * qs, nv.T = tail, nv.q_pos0 = NK - tail;
                nv.out = o2, nv.stats = NULL;
                cv_attention_naive(&nv);
                double err = 0;
                for (int i = 0; i < tail * qs; i++)
                    err = fmax(err, fabs(o[(size_t)(Tq - tail) * qs + i] - o2[i]));
                if (err > 1e-4) {
                    fprintf(stderr, "FAILED check: attention keys %d phase %d kv %s err %g\n", NK,
                            phase, kvb ? "bf16" : "fp32", err);
                    return 1;
                }
                for (int ver = kvb ? 2 : 1; ver <= 2; ver++) {
                    x.version = ver;
                    x.layer = 0;
                    double ms = bench_time_ms(run_at, &x, phase ? 30 : 3);
                    /* prefill: causal QK^T and PV flops; decode: K and V bytes read */
                    double flops = 4.0 * H * hd * ((double)T * (T + 1) / 2);
                    double bytes = 2.0 * le * (kvb ? sizeof(uint16_t) : sizeof(float));
                    double rate = phase ? bytes / (ms * 1e6) : flops / (ms * 1e6);
                    double pct = 100 * rate / (phase ? bw : peak);
                    char vname[16];
                    snprintf(vname, sizeof vname, "%s%s",
                             ver == 1 ? "rows"
                             : phase  ? "split"
                                      : "tiled",
                             kvb ? "-bf16" : "");
                    printf("%-8s %6d %-11s %10.3f %7.1f %-2s %6.1f%%\n",
                           phase ? "decode" : "prefill", NK, vname, ms, rate,
                           phase ? "GB/s" : "GF/s", pct);
                    snprintf(json, sizeof json,
                             "{\"bench\":\"longctx_attention\",\"phase\":\"%s\",\"keys\":%d,"
                             "\"version\":\"%s\",\"threads\":%d,\"ms\":%.4f,\"rate\":%.2f,"
                             "\"unit\":\"%s\",\"pct_limit\":%.1f}",
                             phase ? "decode" : "prefill", NK, vname, omp_get_max_threads(), ms,
                             rate, phase ? "GB/s" : "GFLOP/s", pct);
                    bench_json("longctx", json);
                }
            }
        }
        free(q), free(k), free(v), free(o), free(o2), free(k16), free(v16);
    }
    be->destroy(be);
    return 0;
}
#endif

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".cache/smollm2/model";
    int lens[8] = {512, 2048, 4096}, nl = 3;
    if (argc > 2) nl = bench_parse_ints(argv[2], lens, 8);
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (reps < 1) reps = 1;
    if (reps > 16) reps = 16;
    int decode = getenv("BENCH_DECODE") ? atoi(getenv("BENCH_DECODE")) : 8;
    if (decode < 1) decode = 1;
    if (decode > 64) decode = 64;
    int threads = omp_get_max_threads();
    double bw = bench_read_bandwidth_gbs(), peak = bench_peak_gflops();
    printf("machine: %d threads, read bandwidth %.1f GB/s, fp32 FMA peak %.0f GFLOP/s\n", threads,
           bw, peak);
    char cfgpath[1100];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
    cv_error err = {0};
    if (access(cfgpath, R_OK) != 0) { /* no checkpoint: SmolLM2-135M's shape, random weights */
        dir = "runs/bench-models/smollm2-shape";
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
        mkdir("runs", 0755);
        mkdir("runs/bench-models", 0755);
        cv_synth_shape sh = {49152, 576, 30, 9, 3, 1536, 8192, 1, CV_DT_F32, 0.02f, 3, 1, 2, 0, 0};
        if (access(cfgpath, R_OK) != 0 && cv_synth_llama(dir, &sh, &err) != CV_OK) {
            fprintf(stderr, "bench_longctx: %s\n", err.msg);
            return 1;
        }
        if (bench_link_tokenizer("bench_longctx", dir) != 0) return 1;
        printf("model: random-weight SmolLM2-135M shape at %s (Llama 2 tokenizer linked)\n", dir);
    } else {
        printf("model: %s\n", dir);
    }
    puts(bench_weights_arena());
#ifndef BENCH_BASELINE
    if (!getenv("BENCH_KERNELS") || atoi(getenv("BENCH_KERNELS")))
        if (kernel_ladder(lens, nl, peak, bw)) return 1;
#endif
    if (getenv("BENCH_E2E") && !atoi(getenv("BENCH_E2E"))) return 0;
    cv_config cfg;
    if (cv_config_init(&cfg, &err) != CV_OK) return 1;
    cv_config_set(&cfg, "model.hf_id", dir, &err);
    cv_config_set(&cfg, "device.requested", "cpu", &err);
    cv_config_set(&cfg, "generation.do_sample", "false", &err);
    char nt[16];
    snprintf(nt, sizeof nt, "%d", decode + 1);
    cv_config_set(&cfg, "generation.max_new_tokens", nt, &err);
    const char *wdt = getenv("BENCH_DTYPE"), *kvdt = getenv("BENCH_KV");
    const char *pdt = getenv("BENCH_PREFILL_DTYPE");
    if ((wdt && cv_config_set(&cfg, "model.dtype", wdt, &err) != CV_OK) ||
        (kvdt && cv_config_set(&cfg, "model.kv_dtype", kvdt, &err) != CV_OK)
#ifndef BENCH_BASELINE
        || (pdt && cv_config_set(&cfg, "model.prefill_dtype", pdt, &err) != CV_OK)
#endif
    ) {
        fprintf(stderr, "bench_longctx: %s\n", err.msg);
        return 1;
    }
    cv_session *s;
    if (cv_session_open(&cfg, &s, NULL, &err) != CV_OK) {
        fprintf(stderr, "bench_longctx: %s\n", err.msg);
        return 1;
    }
#ifdef BENCH_BASELINE
    (void)pdt;
    const char *pname = "float32";
#else
    const char *pname = cv_dtype_torch_name(s->m->prefill_dtype);
#endif
    /* the prompt and the decode must fit the model's positions: SmolLM2's 8,192 is run as 8,175
     * prompt tokens (llama-bench's pp8192 needs no room for the decode) */
    const int room = s->m->cfg.max_positions - (decode + 1);
    for (int li = 0; li < nl; li++)
        if (!s->m->ops->encode && lens[li] > room) {
            printf("note: %d prompt tokens run as %d (the model has %d positions, %d decode)\n",
                   lens[li], room, s->m->cfg.max_positions, decode + 1);
            lens[li] = room;
        }
    printf("\nend to end (greedy, %d decode steps after the prompt; medians of %d; weights %s, KV "
           "cache %s, prefill products %s)\n",
           decode, reps, cv_dtype_torch_name(s->m->weight_dtype),
           cv_dtype_torch_name(s->m->kv_dtype), pname);
    printf("modes: all = the 0.2.0 statistics + the health layer (corevital run's default), stats "
           "= statistics only (--no-health), off = uninstrumented\n");
#ifndef BENCH_BASELINE
    printf("prompt: the forward over chunks of %d rows (CV_PREFILL_ROWS; 0: one call)\n",
           cv_model_prefill_rows());
#endif
    int want_mode[3] = {1, 1, 1}; /* off, stats, all; BENCH_MODES=all,off picks */
    if (getenv("BENCH_MODES")) {
        const char *ms = getenv("BENCH_MODES");
        want_mode[0] = strstr(ms, "off") != NULL;
        want_mode[1] = strstr(ms, "stats") != NULL;
        want_mode[2] = strstr(ms, "all") != NULL;
    }
    char json[1024];
    if (getenv("BENCH_DEPTH")) /* the paired depth ratio instead of the lengths' table */
        return depth_pairs(s, &cfg, getenv("BENCH_DEPTH"), reps,
                           want_mode[2]   ? 2
                           : want_mode[1] ? 1
                                          : 0);
    printf("%6s %-5s %14s %14s\n", "ctx", "mode", "prefill tok/s", "decode ms/step");
    for (int li = 0; li < nl; li++) {
        int P = lens[li];
        int32_t *prompt = bench_prompt(P);
        if (!prompt) return 1;
        double pre[3][16], dec[3][16];
        /* the modes alternate within each repetition; the first is a warm-up (unless reps is 1:
         * long contexts are slow) */
        const int warm = reps > 1;
        for (int r = 0; r < reps + warm; r++)
            for (int inst = 2; inst >= 0; inst--) {
                if (!want_mode[inst]) continue;
                phase_times pt;
                cv_status st = gen_once(s, &cfg, prompt, P, inst, &pt, &err);
                if (st != CV_OK) {
                    fprintf(stderr, "bench_longctx: %s\n", err.msg);
                    return 1;
                }
                if (r < warm) continue;
                int ri = r - warm;
                pre[inst][ri] = P / (pt.prefill_ms / 1e3);
                dec[inst][ri] = decode_median(&pt);
            }
        /* each repetition runs the modes back to back, so a ratio within one repetition sees
         * one state of a noisy host: the median of those is the steadier number (taken before
         * bench_median sorts the arrays) */
        double pair_p[3] = {0}, pair_d[3] = {0};
        for (int inst = 1; inst <= 2 && want_mode[0]; inst++) {
            if (!want_mode[inst]) continue;
            double rp[16], rd[16];
            for (int r = 0; r < reps; r++)
                rp[r] = pre[inst][r] / pre[0][r], rd[r] = dec[inst][r] / dec[0][r];
            pair_p[inst] = bench_median(rp, reps), pair_d[inst] = bench_median(rd, reps);
        }
        for (int inst = 2; inst >= 0; inst--) {
            if (!want_mode[inst]) continue;
            double p = bench_median(pre[inst], reps), d = bench_median(dec[inst], reps);
            double dlo = dec[inst][0], dhi = dec[inst][0], plo = pre[inst][0], phi = plo;
            for (int r = 1; r < reps; r++) {
                dlo = fmin(dlo, dec[inst][r]), dhi = fmax(dhi, dec[inst][r]);
                plo = fmin(plo, pre[inst][r]), phi = fmax(phi, pre[inst][r]);
            }
            if (reps >= 5) {
                printf("%6d %-5s decode ms/step over %d repetitions: median %.2f, min %.2f, max "
                       "%.2f\n",
                       P, mode_name[inst], reps, d, dlo, dhi);
                printf("%6d %-5s prefill tok/s over %d repetitions: median %.1f, min %.1f, max "
                       "%.1f\n",
                       P, mode_name[inst], reps, p, plo, phi);
                if (pair_p[inst] > 0)
                    printf("%6d %-5s against off, paired by repetition (medians): prefill speed "
                           "%.3fx, decode time %.3fx\n",
                           P, mode_name[inst], pair_p[inst], pair_d[inst]);
            }
            printf("%6d %-5s %14.1f %14.2f\n", P, mode_name[inst], p, d);
            snprintf(json, sizeof json,
                     "{\"bench\":\"longctx_e2e\",\"model\":\"%s\",\"ctx\":%d,\"mode\":\"%s\","
                     "\"threads\":%d,\"weights\":\"%s\",\"kv\":\"%s\",\"prefill\":\"%s\","
                     "\"build\":\"%s\","
                     "\"prefill_tok_s\":%.2f,\"decode_ms_step\":%.3f,\"reps\":%d}",
                     dir, P, mode_name[inst], threads, cv_dtype_torch_name(s->m->weight_dtype),
                     cv_dtype_torch_name(s->m->kv_dtype), pname,
#ifdef BENCH_BASELINE
                     "baseline",
#else
                     "current",
#endif
                     p, d, reps);
            bench_json("longctx", json);
        }
        free(prompt);
    }
    /* memory: what the weights and the cache need, against what the process peaked at */
    double wbytes = 0;
    for (size_t i = 0; i < s->m->n_weights; i++) {
        const cv_weight *w = s->m->weights[i];
        wbytes += (double)w->rows * (double)w->cols * (double)cv_dtype_size(w->dtype);
    }
    const cv_model_config *mc = &s->m->cfg;
    int maxlen = 0;
    for (int li = 0; li < nl; li++) maxlen = lens[li] > maxlen ? lens[li] : maxlen;
    double kvbytes = 2.0 * mc->num_layers * (maxlen + decode + 1) * mc->num_kv_heads *
                     (mc->hidden_size / mc->num_heads) * cv_dtype_size(s->m->kv_dtype);
    double rss = bench_peak_rss_mib();
    printf("\nmemory: peak RSS %.0f MiB; weights %.0f MiB + KV cache %.0f MiB at %d tokens = %.0f "
           "MiB (%.2fx)\n",
           rss, wbytes / 1048576, kvbytes / 1048576, maxlen + decode + 1,
           (wbytes + kvbytes) / 1048576, rss / ((wbytes + kvbytes) / 1048576));
    snprintf(json, sizeof json,
             "{\"bench\":\"longctx_memory\",\"ctx\":%d,\"peak_rss_mib\":%.1f,"
             "\"weights_mib\":%.1f,\"kv_mib\":%.1f}",
             maxlen, rss, wbytes / 1048576, kvbytes / 1048576);
    bench_json("longctx", json);
    cv_session_close(s);
    cv_config_free(&cfg);
    return 0;
}
