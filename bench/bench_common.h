/* bench_common.h — timing and reporting helpers shared by the benchmarks, plus the machine's
 * limits measured by the bench itself: read bandwidth (a streaming sum over a buffer much larger
 * than the caches) and peak fp32 FMA throughput (independent FMA chains in registers).
 *
 * Every figure is the median of `reps` runs after a warm-up; results are printed as a table and
 * appended as JSON lines to runs/bench_<name>.jsonl so later changes can be compared. */
#ifndef COREVITAL_BENCH_COMMON_H
#define COREVITAL_BENCH_COMMON_H

#define _DEFAULT_SOURCE /* realpath, symlink, mkdir */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "corevital/common.h"

static inline double bench_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* The benches' random values: a 32-bit LCG, uniform in [-1, 1) (every bench's inputs derive
 * from a seed, so two runs time the same data). */
static inline float bench_frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median wall time (ms) of fn(arg) over reps runs after one warm-up. */
static inline double bench_time_ms(void (*fn)(void *), void *arg, int reps) {
    double t[64] = {0};
    if (reps > 64) reps = 64;
    if (reps < 1) reps = 1;
    fn(arg);
    for (int i = 0; i < reps; i++) {
        double t0 = bench_now_ms();
        fn(arg);
        t[i] = bench_now_ms() - t0;
    }
    return bench_median(t, reps);
}

/* Where the benches' sessions hold the weights: in place in the mmap unless CV_HUGEPAGES=1
 * forces the huge-page arena (cv_model_opts.weights_arena; a session asks for it only from
 * 1,024 decode steps on). Returns the line to print. */
static inline const char *bench_weights_arena(void) {
    return cv_hugepages_env() == 1 ? "weights: copied into the huge-page arena (CV_HUGEPAGES=1)"
                                   : "weights: read in place from the mmap (CV_HUGEPAGES=1: the "
                                     "huge-page arena)";
}

/* Peak resident set size of this process, MiB, since the last bench_reset_peak_rss: Linux's
 * VmHWM (/proc/self/status), else getrusage's maximum over the whole process. */
static inline double bench_peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long kb = -1;
        while (kb < 0 && fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %ld kB", &kb) != 1) kb = -1;
        fclose(f);
        if (kb >= 0) return kb / 1024.0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* Resets the peak that bench_peak_rss_mib reports to the current RSS (Linux: "5" written to
 * /proc/self/clear_refs; elsewhere a no-op, and the peak stays the whole process's). */
static inline void bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return;
    fputs("5", f);
    fclose(f);
}

/* ---- machine limits ------------------------------------------------------------------------ */

typedef struct {
    float *buf;
    size_t n;
    double sink;
} bw_arg;

/* Each thread streams its own contiguous chunk with 8 independent accumulators: one sequential
 * stream per thread is the pattern the hardware prefetchers serve fastest (measured against 2,
 * 4 and 8 interleaved streams), so this is the practical ceiling for reading weights. */
static void bw_read(void *p) {
    bw_arg *a = p;
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        size_t chunk = a->n / (size_t)nt / 128 * 128, lo = (size_t)t * chunk;
#if defined(__AVX512F__)
        __m512 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
        for (size_t i = lo; i < lo + chunk; i += 128)
            for (int j = 0; j < 8; j++)
                acc[j] = _mm512_add_ps(acc[j], _mm512_load_ps(a->buf + i + 16 * j));
        for (int j = 0; j < 8; j++) total += _mm512_reduce_add_ps(acc[j]);
#elif defined(__AVX2__)
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (size_t i = lo; i < lo + chunk; i += 64)
            for (int j = 0; j < 8; j++)
                acc[j] = _mm256_add_ps(acc[j], _mm256_load_ps(a->buf + i + 8 * j));
        float lanes[8];
        for (int j = 1; j < 8; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
        _mm256_storeu_ps(lanes, acc[0]);
        for (int j = 0; j < 8; j++) total += lanes[j];
#else
        float s = 0;
        for (size_t i = lo; i < lo + chunk; i++) s += a->buf[i];
        total += s;
#endif
    }
    a->sink = total;
}

/* Read bandwidth in GB/s with the current OpenMP thread count (512 MiB buffer, best of 9). */
static inline double bench_read_bandwidth_gbs(void) {
    bw_arg a = {0};
    a.n = (size_t)128 << 20; /* floats */
    a.buf = aligned_alloc(64, a.n * sizeof(float));
    if (!a.buf) return NAN;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a.n; i++) a.buf[i] = 1.0f;
    /* the limit is the best of 9 passes (a shared host's bandwidth varies run to run) */
    double ms = 1e300;
    bw_read(&a);
    for (int i = 0; i < 9; i++) {
        double t0 = bench_now_ms();
        bw_read(&a);
        double t = bench_now_ms() - t0;
        if (t < ms) ms = t;
    }
    free(a.buf);
    /* the 512 MiB probe is gone: it must not be the peak RSS a bench reports for its model */
    bench_reset_peak_rss();
    return (double)a.n * sizeof(float) / (ms * 1e6);
}

static void fma_peak(void *p) {
    double *out = p;
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
#if defined(__AVX512F__)
        __m512 acc[12];
        const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
        for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps((float)j);
        for (int i = 0; i < 2000000; i++)
            for (int j = 0; j < 12; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
        for (int j = 0; j < 12; j++) total += _mm512_reduce_add_ps(acc[j]);
#elif defined(__AVX2__) && defined(__FMA__)
        __m256 acc[12];
        const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps((float)j);
        for (int i = 0; i < 2000000; i++)
            for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, c);
        float lanes[8];
        for (int j = 1; j < 12; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
        _mm256_storeu_ps(lanes, acc[0]);
        for (int j = 0; j < 8; j++) total += lanes[j];
#else
        float acc[8] = {0};
        for (int i = 0; i < 2000000; i++)
            for (int j = 0; j < 8; j++) acc[j] = acc[j] * 0.999999f + 1e-7f;
        for (int j = 0; j < 8; j++) total += acc[j];
#endif
    }
    *out = total;
}

/* Peak fp32 GFLOP/s from register-resident FMA chains (2 flops per lane per FMA). */
static inline double bench_peak_gflops(void) {
    double sink;
    double ms = bench_time_ms(fma_peak, &sink, 3);
    int threads = omp_get_max_threads();
#if defined(__AVX512F__)
    double flops = 2.0 * 16 * 12 * 2000000.0 * threads;
#elif defined(__AVX2__) && defined(__FMA__)
    double flops = 2.0 * 8 * 12 * 2000000.0 * threads;
#else
    double flops = 2.0 * 8 * 2000000.0 * threads;
#endif
    return flops / (ms * 1e6);
}

#if defined(__AVX512BF16__)
static void bf16_peak(void *p) {
    double *out = p, total = 0;
#pragma omp parallel reduction(+ : total)
    {
        __m512 acc[12];
        const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), c = a; /* (1.0, 1.0) pairs */
        for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps((float)j);
        for (int i = 0; i < 2000000; i++)
            for (int j = 0; j < 12; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, c);
        for (int j = 0; j < 12; j++) total += _mm512_reduce_add_ps(acc[j]);
    }
    *out = total;
}

/* Peak GFLOP/s of the BF16 dot-product instruction (vdpbf16ps: two multiply-adds per fp32
 * lane, 4 flops), from register-resident chains like bench_peak_gflops; 0 without it. */
static inline double bench_peak_bf16_gflops(void) {
    double sink;
    double ms = bench_time_ms(bf16_peak, &sink, 3);
    return 4.0 * 16 * 12 * 2000000.0 * omp_get_max_threads() / (ms * 1e6);
}
#else
static inline double bench_peak_bf16_gflops(void) {
    return 0.0;
}
#endif

/* Append one JSON line to runs/bench_<name>.jsonl (the directory is created). */
/* A comma-separated list of integers ("128,512,4096") into out, at most max; returns the count. */
static inline int bench_parse_ints(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

/* A random-weight model written by the bench gets a tokenizer by links to the unpacked Llama 2
 * one (build/tokenizers/llama2, made by make): any BPE tokenizer serves, since the benches feed
 * token ids and only decode the generated ones (ids below 32,000). 0, or -1 with a message. */
static inline int bench_link_tokenizer(const char *who, const char *model_dir) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char from[1100], to[1100];
        snprintf(from, sizeof from, "build/tokenizers/llama2/%s", files[i]);
        snprintf(to, sizeof to, "%s/%s", model_dir, files[i]);
        char *abs = realpath(from, NULL);
        unlink(to);
        if (!abs || symlink(abs, to) != 0) {
            fprintf(stderr, "%s: cannot link %s (run make first)\n", who, from);
            free(abs);
            return -1;
        }
        free(abs);
    }
    return 0;
}

static inline void bench_json(const char *name, const char *json_object) {
    mkdir("runs", 0755);
    char path[256];
    snprintf(path, sizeof path, "runs/bench_%s.jsonl", name);
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", json_object);
    fclose(f);
}

#endif
