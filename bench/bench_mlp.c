/* bench_mlp.c — a long prompt's MLP whole against in row chunks (model.h, cv_model_mlp_rows).
 *
 * The Llama MLP of one layer (gate_up_silu, then the down product) over T prompt rows, as the
 * family's forward issues it: in one call over all T rows, and in cv_mlp_chunks(T, R) calls of
 * at most R rows, for SmolLM2-135M's and Llama-3.2-1B's shapes, fp32 random weights. The
 * outputs of the two must be the same bit for bit (checked before timing). Printed: the median
 * of 9 interleaved repetitions of each (whole, chunked, whole, ...), their ratio, and the bytes
 * of the (rows, F) gate and up activations each needs.
 *
 * usage: bench_mlp [T list (default 1024,4096,8192)] [R (default cv_model_mlp_rows's 1,024)] */
#include "bench_common.h"

#include "corevital/backend.h"
#include "corevital/model.h"

#define REPS 9

typedef struct {
    const char *name;
    int C, F;
} mlp_shape;

static float *rand_buf(size_t n, unsigned *s, float scale) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; p && i < n; i++) p[i] = bench_frand(s) * scale;
    return p;
}

typedef struct {
    cv_backend *be;
    const cv_weight *wg, *wu, *wd;
    const float *x;
    float *o, *gate, *up;
    int T, C, rows;
} mlp_run;

static void run_mlp(const mlp_run *r) {
    for (int i = 0, n = cv_mlp_chunks(r->T, r->rows); i < n; i++) {
        const int r0 = cv_mlp_chunk_start(r->T, n, i), r1 = cv_mlp_chunk_start(r->T, n, i + 1);
        const size_t off = (size_t)r0 * r->C;
        r->be->gate_up_silu(r->be, r->gate, r->up, r->x + off, r->wg, r->wu, r1 - r0);
        r->be->matmul(r->be, r->o + off, r->gate, r->wd, NULL, r1 - r0);
    }
}

static int bench_shape(cv_backend *be, const mlp_shape *sh, int T, int R) {
    const size_t C = (size_t)sh->C, F = (size_t)sh->F;
    unsigned seed = 7;
    float *wg = rand_buf(F * C, &seed, 0.05f), *wu = rand_buf(F * C, &seed, 0.05f),
          *wd = rand_buf(C * F, &seed, 0.05f), *x = rand_buf((size_t)T * C, &seed, 1.0f);
    float *o1 = malloc(sizeof(float) * T * C), *o2 = malloc(sizeof(float) * T * C);
    float *gate = malloc(sizeof(float) * T * F), *up = malloc(sizeof(float) * T * F);
    int rc = 0;
    if (!wg || !wu || !wd || !x || !o1 || !o2 || !gate || !up) {
        fprintf(stderr, "bench_mlp: out of memory at %s T %d\n", sh->name, T);
        rc = 1;
    }
    cv_weight Wg = {.data = wg, .dtype = CV_DT_F32, .rows = sh->F, .cols = sh->C};
    cv_weight Wu = {.data = wu, .dtype = CV_DT_F32, .rows = sh->F, .cols = sh->C};
    cv_weight Wd = {.data = wd, .dtype = CV_DT_F32, .rows = sh->C, .cols = sh->F};
    mlp_run whole = {be, &Wg, &Wu, &Wd, x, o1, gate, up, T, sh->C, T};
    mlp_run chunked = whole;
    chunked.o = o2, chunked.rows = R;
    if (rc == 0) {
        run_mlp(&whole), run_mlp(&chunked);
        if (memcmp(o1, o2, sizeof(float) * T * C) != 0) {
            fprintf(stderr, "bench_mlp: %s T %d: chunks of %d rows differ from one call\n",
                    sh->name, T, R);
            rc = 1;
        }
    }
    if (rc == 0) {
        double tw[REPS], tc[REPS], ratio[REPS];
        for (int i = 0; i < REPS; i++) { /* interleaved: the host's speed drifts */
            double t0 = bench_now_ms();
            run_mlp(&whole);
            tw[i] = bench_now_ms() - t0;
            t0 = bench_now_ms();
            run_mlp(&chunked);
            tc[i] = bench_now_ms() - t0;
            ratio[i] = tc[i] / tw[i];
        }
        double r = bench_median(ratio, REPS), w = bench_median(tw, REPS),
               c = bench_median(tc, REPS);
        double gf = 2.0 * 3.0 * (double)T * C * F * 1e-6; /* GFLOP x 1e3 / ms = GFLOP/s */
        const int rows = T < R ? T : R;
        printf("%-10s %6d %5d %10.1f %8.1f %10.1f %8.1f %9.3f %10.1f %9.1f\n", sh->name, T, R, w,
               gf / w, c, gf / c, r, 2.0 * T * F * 4 / 1048576.0, 2.0 * rows * F * 4 / 1048576.0);
        char json[320];
        snprintf(json, sizeof json,
                 "{\"bench\":\"mlp\",\"shape\":\"%s\",\"threads\":%d,\"T\":%d,\"rows\":%d,"
                 "\"whole_ms\":%.3f,\"chunked_ms\":%.3f,\"paired_ratio\":%.4f}",
                 sh->name, omp_get_max_threads(), T, R, w, c, r);
        bench_json("mlp", json);
    }
    free(wg), free(wu), free(wd), free(x), free(o1), free(o2), free(gate), free(up);
    return rc;
}

int main(int argc, char **argv) {
    int Ts[8], nT = bench_parse_ints(argc > 1 ? argv[1] : "1024,4096,8192", Ts, 8);
    const int R = argc > 2 ? atoi(argv[2]) : cv_model_mlp_rows(1 << 30);
    if (nT < 1 || R < 1) {
        fprintf(stderr, "usage: bench_mlp [T list] [rows per chunk]\n");
        return 2;
    }
    const mlp_shape shapes[] = {{"smollm2", 576, 1536}, {"llama-1b", 2048, 8192}};
    cv_backend *be = cv_backend_cpu_create();
    printf("the Llama MLP (gate_up_silu + down, fp32) whole vs in chunks of <= R rows, %d threads; "
           "medians of %d interleaved repetitions\n",
           omp_get_max_threads(), REPS);
    printf("%-10s %6s %5s %10s %8s %10s %8s %9s %10s %9s\n", "shape", "T", "R", "whole ms",
           "GFLOP/s", "chunks ms", "GFLOP/s", "paired", "gate+up", "chunked");
    printf("%-10s %6s %5s %10s %8s %10s %8s %9s %10s %9s\n", "", "", "", "", "", "", "", "c / w",
           "MiB whole", "MiB");
    int rc = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int i = 0; i < nT && rc == 0; i++)
            if (!(s == 1 && Ts[i] > 4096)) rc = bench_shape(be, &shapes[s], Ts[i], R);
    be->destroy(be);
    return rc;
}
