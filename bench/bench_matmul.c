/* bench_matmul.c — the CPU matmul ladder at the shapes of GPT-2 small and a 1B Llama.
 *
 * For each weight dtype (F32, BF16) and shape, every version is first checked against the naive
 * double-precision twin, then timed: decode (T = 1) is reported in GB/s of weight bytes read,
 * next to the measured read bandwidth; prefill (T = 128) in GFLOP/s next to the measured FMA
 * peak (%limit: the median of 7 rounds' ratios to a peak measured just before each round).
 * Versions: 1 portable (compiler-vectorized, one row at a time), 2 AVX-512 4x4 tiles (the runtime's
 * matmul: 4x4 dot-product tiles, packed-panel outer products from T = 192), (avx2 where the build
 * has AVX2 but not AVX-512: cpu_avx2.c's dot-product tiles and 6 x 16 packed panels), 3 bf16dot
 * (model.prefill_dtype bfloat16: x and W rounded to bf16, packed panels on the BF16 dot-product
 * instruction; T > 1 only, reported against the measured vdpbf16ps peak too).
 * BENCH_TS=1,128,512,4096 picks the row counts (default 1,128); the portable version is timed at T
 * = 128 only. BENCH_MODELS=smollm2 (a substring of the model column) keeps those shapes only.
 */
#include "bench_common.h"

#if defined(__AVX512F__)
#define BENCH_SIMD "avx512"
#elif defined(__AVX2__)
#define BENCH_SIMD "avx2"
#else
#define BENCH_SIMD "simd"
#endif

#include "backend/cpu_internal.h"
#include "corevital/dtype.h"

typedef struct {
    const char *model, *name;
    int N, K;
} shape;

typedef struct {
    int version, T;
    float *out;
    const float *x;
    const cv_weight *w;
    cv_backend *be;
} mm_arg;

static void run_mm(void *p) {
    mm_arg *a = p;
    if (a->version == 1)
        cv_cpu_matmul_portable(a->out, a->x, a->w, NULL, a->T);
    else
        a->be->matmul(a->be, a->out, a->x, a->w, NULL, a->T);
}

/* A prefill row's time, and its share of the FMA peak measured beside it: ROUNDS rounds of
 * (the peak, then the kernel's median of 3). This host's speed moves +-20% within minutes, so a
 * ratio to a peak measured once at the start moves with it; the median of the rounds' own
 * ratios is what the %limit column reports. Returns the median time (ms). */
#define ROUNDS 7
static double paired_ms(mm_arg *a, double flops, double *pct) {
    double ms[ROUNDS], ratio[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double peak = bench_peak_gflops();
        ms[r] = bench_time_ms(run_mm, a, 3);
        ratio[r] = 100.0 * flops / (ms[r] * 1e6) / peak;
    }
    *pct = bench_median(ratio, ROUNDS);
    return bench_median(ms, ROUNDS);
}

int main(void) {
    const shape shapes[] = {
        {"gpt2-small", "attn.c_attn (qkv)", 2304, 768},
        {"gpt2-small", "mlp.c_fc", 3072, 768},
        {"gpt2-small", "mlp.c_proj", 768, 3072},
        {"gpt2-small", "lm_head", 50257, 768},
        {"llama-1b", "q_proj", 2048, 2048},
        {"llama-1b", "k_proj", 512, 2048},
        {"llama-1b", "gate_proj", 8192, 2048},
        {"llama-1b", "down_proj", 2048, 8192},
        {"smollm2-135m", "q_proj", 576, 576},
        {"smollm2-135m", "k_proj", 192, 576},
        {"smollm2-135m", "gate_proj", 1536, 576},
        {"smollm2-135m", "down_proj", 576, 1536},
    };
    int Ts[8] = {1, 128}, nT = 2;
    if (getenv("BENCH_TS")) nT = bench_parse_ints(getenv("BENCH_TS"), Ts, 8);
    const cv_dtype dts[] = {CV_DT_F32, CV_DT_BF16};
    int threads = omp_get_max_threads();
    double bw = bench_read_bandwidth_gbs(), peak = bench_peak_gflops();
    double peak16 = bench_peak_bf16_gflops();
    printf("machine: %d threads, read bandwidth %.1f GB/s, fp32 FMA peak %.0f GFLOP/s, BF16 dot "
           "peak %.0f GFLOP/s\n",
           threads, bw, peak, peak16);
    printf("%-12s %-18s %-5s %4s %-9s %9s %9s %7s %7s\n", "model", "op", "dtype", "T", "version",
           "ms", "GB/s|GF/s", "%limit", "%bf16pk");
    cv_backend *be = cv_backend_cpu_create();
    unsigned seed = 1;
    char json[512];
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t di = 0; di < 2; di++) {
            const shape *s = &shapes[si];
            if (getenv("BENCH_MODELS") && !strstr(s->model, getenv("BENCH_MODELS"))) continue;
            size_t es = cv_dtype_size(dts[di]);
            void *wb = aligned_alloc(64, ((size_t)s->N * s->K * es + 63) / 64 * 64);
            for (size_t i = 0; i < (size_t)s->N * s->K; i++) {
                float v = bench_frand(&seed) * 0.05f;
                if (dts[di] == CV_DT_F32)
                    ((float *)wb)[i] = v;
                else
                    ((uint16_t *)wb)[i] = cv_f32_to_bf16(v);
            }
            cv_weight w = {.data = wb, .dtype = dts[di], .rows = s->N, .cols = s->K};
            for (int ti = 0; ti < nT; ti++) {
                int T = Ts[ti];
                float *x = malloc(sizeof(float) * T * s->K), *o = malloc(sizeof(float) * T * s->N);
                float *ref = malloc(sizeof(float) * s->N);
                for (int i = 0; i < T * s->K; i++) x[i] = bench_frand(&seed);
                /* check row 0 of every version against the naive twin before timing */
                cv_matmul_naive(ref, x, &w, NULL, 1);
                for (int v = 1; v <= 3; v++) {
                    if (v == 3 && (T == 1 || !be->prefill_bf16)) continue;
                    cv_weight wv = w;
                    wv.prefill_bf16 = v == 3;
                    mm_arg a = {v, T, o, x, &wv, be};
                    run_mm(&a);
                    double maxerr = 0;
                    for (int n = 0; n < s->N; n++) maxerr = fmax(maxerr, fabs(o[n] - ref[n]));
                    if (maxerr > (v == 3 ? 3e-2 : 1e-3)) { /* v3: x and W rounded to bf16 */
                        fprintf(stderr, "FAILED check: %s v%d max err %g\n", s->name, v, maxerr);
                        return 1;
                    }
                    if (v == 1 && T > 1 && (s->N > 10000 || T != 128))
                        continue; /* the slow version: at T = 128 and below the biggest shape */
                    double bytes = (double)s->N * s->K * es, flops = 2.0 * T * s->N * s->K;
                    double ms, rate, pct;
                    if (T == 1) {
                        ms = bench_time_ms(run_mm, &a, 9);
                        rate = bytes / (ms * 1e6);
                        pct = 100.0 * rate / bw;
                    } else {
                        ms = paired_ms(&a, flops, &pct);
                        rate = flops / (ms * 1e6);
                    }
                    double pct16 = T > 1 && peak16 > 0 ? 100.0 * rate / peak16 : 0.0;
                    printf("%-12s %-18s %-5s %4d %-9s %9.3f %9.1f %6.1f%% %6.1f%%\n", s->model,
                           s->name, cv_dtype_name(dts[di]), T,
                           v == 1   ? "portable"
                           : v == 2 ? BENCH_SIMD
                                    : "bf16dot",
                           ms, rate, pct, pct16);
                    snprintf(
                        json, sizeof json,
                        "{\"bench\":\"matmul\",\"model\":\"%s\",\"op\":\"%s\",\"dtype\":\"%s\","
                        "\"T\":%d,"
                        "\"version\":%d,\"threads\":%d,\"ms\":%.4f,\"rate\":%.2f,\"unit\":\"%s\","
                        "\"pct_limit\":%.1f,\"pct_bf16_peak\":%.1f}",
                        s->model, s->name, cv_dtype_name(dts[di]), T, v, threads, ms, rate,
                        T == 1 ? "GB/s" : "GFLOP/s", pct, pct16);
                    bench_json("matmul", json);
                }
                free(x), free(o), free(ref);
            }
            free(wb);
        }
    be->destroy(be);
    return 0;
}
