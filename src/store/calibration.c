/* calibration.c — baselines (calibration.h): streaming pools over calibration runs, the baseline
 * file, the model identity check, and a run's z-scores and divergence (HEALTH.md §8 plus the
 * per-layer and per-step views upstream leaves unused).
 *
 * Everything is read from the finished report (layers[j] summaries, timeline[i].extensions.health)
 * like every other consumer of the finalized records; no forward-pass code is involved. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/calibration.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BASELINE_FORMAT  "corevital-baseline"
#define BASELINE_VERSION 1
#define Z_ANOMALY        3.0 /* HEALTH.md §8: |z| > 3 is an anomaly */
#define Z_STD_MIN        1e-10

const char *const cv_cal_layer_stat_names[CV_CAL_LAYER_STATS] = {"hidden.mean",
                                                                 "hidden.std",
                                                                 "hidden.l2_norm_mean",
                                                                 "hidden.max_abs",
                                                                 "attention.entropy_mean",
                                                                 "attention.entropy_min",
                                                                 "attention.concentration_max"};
const char *const cv_cal_step_metric_names[CV_CAL_STEP_METRICS] = {"entropy", "margin",
                                                                   "surprisal"};
/* the step metrics' keys in timeline[i].extensions.health */
static const char *const k_health_keys[CV_CAL_STEP_METRICS] = {"entropy_bits", "top_k_margin",
                                                               "surprisal_bits"};

/* One pooled quantity: Welford count / mean / M2, range, and a reservoir for quantiles. A loaded
 * pool has the summary numbers only (res NULL). */
typedef struct {
    int64_t n;
    double mean, m2, min, max;
    double *res;
    size_t n_res;
    uint64_t rng;
    double std, p5, median, p95; /* filled by pool_finish or the loader */
} cal_pool;

struct cv_baseline {
    char *hf_id, *revision, *dtype, *architecture;
    int num_layers, hidden_size, heads;
    size_t num_runs;
    int64_t num_steps;
    cal_pool *layers; /* num_layers * CV_CAL_LAYER_STATS */
    cal_pool steps[CV_CAL_STEP_METRICS];
};

/* ---- pools ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int pool_add(cal_pool *p, double v) {
    if (!isfinite(v)) return 0; /* a NaN run is the health layer's business, not "normal" */
    p->n++;
    double d = v - p->mean;
    p->mean += d / (double)p->n;
    p->m2 += d * (v - p->mean);
    if (p->n == 1 || v < p->min) p->min = v;
    if (p->n == 1 || v > p->max) p->max = v;
    if (!p->res) {
        p->res = malloc(CV_CAL_RESERVOIR * sizeof(double));
        if (!p->res) return -1;
    }
    if (p->n_res < CV_CAL_RESERVOIR) {
        p->res[p->n_res++] = v;
    } else { /* Algorithm R: every value seen so far is kept with equal probability */
        uint64_t j = splitmix64(&p->rng) % (uint64_t)p->n;
        if (j < CV_CAL_RESERVOIR) p->res[j] = v;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* HEALTH.md §8: percentile(p) = sorted[min(floor(n p / 100), n - 1)]. */
static double percentile(const double *sorted, size_t n, double p) {
    size_t i = (size_t)floor((double)n * p / 100.0);
    return sorted[i < n - 1 ? i : n - 1];
}

static void pool_finish(cal_pool *p) {
    p->std = p->n > 1 ? sqrt(p->m2 / (double)(p->n - 1)) : 0.0; /* sample std */
    if (p->n_res) {
        qsort(p->res, p->n_res, sizeof(double), cmp_double);
        p->p5 = percentile(p->res, p->n_res, 5);
        p->median = p->n_res % 2 ? p->res[p->n_res / 2]
                                 : 0.5 * (p->res[p->n_res / 2 - 1] + p->res[p->n_res / 2]);
        p->p95 = percentile(p->res, p->n_res, 95);
    }
}

/* z against a pool; 0 when the pool has no spread (HEALTH.md §8). usable: >= 2 values. */
static int pool_usable(const cal_pool *p) {
    return p->n >= 2;
}
static double pool_z(const cal_pool *p, double v) {
    return p->std < Z_STD_MIN ? 0.0 : (v - p->mean) / p->std;
}

/* ---- reading a report ---- */

static double json_num(const cJSON *j, int *ok) {
    double v = cv_json_number(j, NAN);
    *ok = !isnan(v) || cJSON_IsNumber(j); /* a number that is NaN still counts as present */
    return *ok ? v : 0.0;
}

/* Step i's value of layer statistic s at layer j (0 when absent: *ok = 0). */
static double layer_value(const cv_layer_summary *l, int s, int *ok) {
    const cv_num *n[CV_CAL_LAYER_STATS] = {&l->hidden_summary.mean,
                                           &l->hidden_summary.std,
                                           &l->hidden_summary.l2_norm_mean,
                                           &l->hidden_summary.max_abs,
                                           &l->attention_summary.entropy_mean,
                                           &l->attention_summary.entropy_min,
                                           &l->attention_summary.concentration_max};
    *ok = n[s]->present && isfinite(n[s]->v);
    return n[s]->v;
}

static double step_value(const cv_timeline_step *t, int m, int *ok) {
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(t->extensions, "health");
    double v = json_num(cJSON_GetObjectItemCaseSensitive(h, k_health_keys[m]), ok);
    if (*ok && !isfinite(v)) *ok = 0;
    return v;
}

/* ---- the baseline ---- */

static char *dup_or_null(const char *s) {
    return s ? strdup(s) : NULL;
}

void cv_baseline_free(cv_baseline *b) {
    if (!b) return;
    free(b->hf_id);
    free(b->revision);
    free(b->dtype);
    free(b->architecture);
    if (b->layers)
        for (int i = 0; i < b->num_layers * CV_CAL_LAYER_STATS; i++) free(b->layers[i].res);
    for (int m = 0; m < CV_CAL_STEP_METRICS; m++) free(b->steps[m].res);
    free(b->layers);
    free(b);
}

static cv_status baseline_alloc(int num_layers, cv_baseline **out, cv_error *err) {
    *out = NULL;
    if (num_layers < 1 || num_layers > 100000)
        return cv_fail(err, CV_ERR_FORMAT, "baseline: num_layers %d is out of range", num_layers);
    cv_baseline *b = calloc(1, sizeof *b);
    if (b) b->layers = calloc((size_t)num_layers * CV_CAL_LAYER_STATS, sizeof(cal_pool));
    if (!b || !b->layers) {
        free(b);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    b->num_layers = num_layers;
    for (int i = 0; i < num_layers * CV_CAL_LAYER_STATS; i++)
        b->layers[i].rng = 1000u + (uint64_t)i;
    for (int m = 0; m < CV_CAL_STEP_METRICS; m++) b->steps[m].rng = 7u + (uint64_t)m;
    *out = b;
    return CV_OK;
}

cv_status cv_baseline_new(const cv_model_info *mi, cv_baseline **out, cv_error *err) {
    cv_status st = baseline_alloc(mi->num_layers, out, err);
    if (st != CV_OK) return st;
    cv_baseline *b = *out;
    b->hf_id = dup_or_null(mi->hf_id);
    b->revision = dup_or_null(mi->revision);
    b->dtype = dup_or_null(mi->dtype);
    b->architecture = dup_or_null(mi->architecture);
    b->hidden_size = mi->hidden_size;
    b->heads = mi->num_attention_heads;
    if ((mi->hf_id && !b->hf_id) || (mi->revision && !b->revision) || (mi->dtype && !b->dtype) ||
        (mi->architecture && !b->architecture)) {
        cv_baseline_free(b);
        *out = NULL;
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    return CV_OK;
}

size_t cv_baseline_num_runs(const cv_baseline *b) {
    return b->num_runs;
}

static int str_eq(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

cv_status cv_baseline_check_model(const cv_baseline *b, const cv_model_info *mi, cv_error *err) {
    const char *what = NULL;
    char have[512] = "", want[512] = "";
#define CHECK_STR(name, x, y)                                                                      \
    if (!what && !str_eq(x, y)) {                                                                  \
        what = name;                                                                               \
        snprintf(have, sizeof have, "%s", (x) ? (x) : "null");                                     \
        snprintf(want, sizeof want, "%s", (y) ? (y) : "null");                                     \
    }
#define CHECK_INT(name, x, y)                                                                      \
    if (!what && (x) != (y)) {                                                                     \
        what = name;                                                                               \
        snprintf(have, sizeof have, "%d", x);                                                      \
        snprintf(want, sizeof want, "%d", y);                                                      \
    }
    CHECK_STR("hf_id", b->hf_id, mi->hf_id);
    CHECK_STR("revision", b->revision, mi->revision);
    CHECK_STR("dtype", b->dtype, mi->dtype);
    CHECK_STR("architecture", b->architecture, mi->architecture);
    CHECK_INT("num_layers", b->num_layers, mi->num_layers);
    CHECK_INT("hidden_size", b->hidden_size, mi->hidden_size);
    CHECK_INT("num_attention_heads", b->heads, mi->num_attention_heads);
#undef CHECK_STR
#undef CHECK_INT
    if (!what) return CV_OK;
    return cv_fail(err, CV_ERR_USAGE,
                   "the calibration baseline was made for another model: its %s is %s, this "
                   "run's is %s (a baseline applies only to the model it was made with)",
                   what, have, want);
}

cv_status cv_baseline_add_run(cv_baseline *b, const cv_report *rep, cv_error *err) {
    cv_status st = cv_baseline_check_model(b, &rep->model, err);
    if (st != CV_OK) return st;
    for (size_t i = 0; i < rep->n_timeline; i++) {
        const cv_timeline_step *t = &rep->timeline[i];
        int ok, bad = 0;
        for (size_t j = 0; j < t->n_layers && (int)j < b->num_layers; j++)
            for (int s = 0; s < CV_CAL_LAYER_STATS; s++) {
                double v = layer_value(&t->layers[j], s, &ok);
                if (ok) bad |= pool_add(&b->layers[j * CV_CAL_LAYER_STATS + (size_t)s], v);
            }
        for (int m = 0; m < CV_CAL_STEP_METRICS; m++) {
            double v = step_value(t, m, &ok);
            if (ok) bad |= pool_add(&b->steps[m], v);
        }
        if (bad) return cv_fail(err, CV_ERR_NOMEM, "out of memory pooling the baseline");
        b->num_steps++;
    }
    b->num_runs++;
    return CV_OK;
}

/* ---- the file ---- */

static cJSON *num_or_null(double v, int present) {
    return present && isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *pool_to_json(cal_pool *p) {
    pool_finish(p);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int have = p->n > 0;
    cJSON_AddNumberToObject(o, "count", (double)p->n);
    cJSON_AddItemToObject(o, "mean", num_or_null(p->mean, have));
    cJSON_AddItemToObject(o, "std", num_or_null(p->std, have));
    cJSON_AddItemToObject(o, "min", num_or_null(p->min, have));
    cJSON_AddItemToObject(o, "max", num_or_null(p->max, have));
    cJSON_AddItemToObject(o, "p5", num_or_null(p->p5, have));
    cJSON_AddItemToObject(o, "median", num_or_null(p->median, have));
    cJSON_AddItemToObject(o, "p95", num_or_null(p->p95, have));
    cJSON_AddItemToObject(o, "m2", num_or_null(p->m2, have)); /* so baselines can be merged */
    return o;
}

static void add_str(cJSON *o, const char *k, const char *v) {
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

cv_status cv_baseline_write(const cv_baseline *bc, const char *path, cv_error *err) {
    cv_baseline *b = (cv_baseline *)bc; /* pool_finish sorts the reservoirs in place */
    cJSON *root = cJSON_CreateObject();
    if (!root) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(root, "format", BASELINE_FORMAT);
    cJSON_AddNumberToObject(root, "version", BASELINE_VERSION);
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    add_str(m, "hf_id", b->hf_id);
    add_str(m, "revision", b->revision);
    add_str(m, "dtype", b->dtype);
    add_str(m, "architecture", b->architecture);
    cJSON_AddNumberToObject(m, "num_layers", b->num_layers);
    cJSON_AddNumberToObject(m, "hidden_size", b->hidden_size);
    cJSON_AddNumberToObject(m, "num_attention_heads", b->heads);
    cJSON_AddNumberToObject(root, "num_runs", (double)b->num_runs);
    cJSON_AddNumberToObject(root, "num_steps", (double)b->num_steps);
    cJSON *sm = cJSON_AddObjectToObject(root, "step_metrics");
    for (int k = 0; k < CV_CAL_STEP_METRICS; k++)
        cJSON_AddItemToObject(sm, cv_cal_step_metric_names[k], pool_to_json(&b->steps[k]));
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int j = 0; j < b->num_layers; j++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddItemToArray(layers, l);
        cJSON_AddNumberToObject(l, "layer_index", j);
        cJSON *stats = cJSON_AddObjectToObject(l, "stats");
        for (int s = 0; s < CV_CAL_LAYER_STATS; s++)
            cJSON_AddItemToObject(
                stats, cv_cal_layer_stat_names[s],
                pool_to_json(&b->layers[(size_t)j * CV_CAL_LAYER_STATS + (size_t)s]));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cv_fail(err, CV_ERR_NOMEM, "out of memory writing the baseline");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    cv_status st = CV_OK;
    if (!f) {
        st = cv_fail(err, CV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    } else {
        int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
        bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, path) != 0) {
            st = cv_fail(err, CV_ERR_IO, "cannot write %s: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    free(text);
    return st;
}

static cv_status load_pool(const cJSON *o, const char *where, const char *path, cal_pool *p,
                           cv_error *err) {
    if (!cJSON_IsObject(o))
        return cv_fail(err, CV_ERR_FORMAT, "%s: %s is missing or not an object", path, where);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "count");
    if (!cJSON_IsNumber(n) || n->valuedouble < 0 || n->valuedouble > 9e15)
        return cv_fail(err, CV_ERR_FORMAT, "%s: %s.count is missing or not a count", path, where);
    p->n = (int64_t)n->valuedouble;
    if (p->n == 0) return CV_OK;
    static const char *const keys[] = {"mean", "std", "min", "max", "p5", "median", "p95", "m2"};
    double *dst[] = {&p->mean, &p->std, &p->min, &p->max, &p->p5, &p->median, &p->p95, &p->m2};
    for (int k = 0; k < 8; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (!cJSON_IsNumber(v) || (k == 1 && v->valuedouble < 0))
            return cv_fail(err, CV_ERR_FORMAT, "%s: %s.%s is missing or not a number", path, where,
                           keys[k]);
        *dst[k] = v->valuedouble;
    }
    return CV_OK;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static int jint(const cJSON *o, const char *k, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 1e9)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

cv_status cv_baseline_load(const char *path, cv_baseline **out, cv_error *err) {
    *out = NULL;
    char *text;
    size_t len;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st != CV_OK) return cv_error_prefix(err, "--calibration");
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a JSON object (a corevital calibrate file)",
                       path);
    }
    const char *fmt = jstr(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    int nl = 0, hs = 0, heads = 0, runs = 0;
    if (!fmt || strcmp(fmt, BASELINE_FORMAT) != 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: \"format\" is not \"%s\"", path, BASELINE_FORMAT);
    else if (!cJSON_IsNumber(ver) || ver->valueint != BASELINE_VERSION)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: baseline version is not %d", path, BASELINE_VERSION);
    else if (!cJSON_IsObject(model) || jint(model, "num_layers", &nl) ||
             jint(model, "hidden_size", &hs) || jint(model, "num_attention_heads", &heads))
        st = cv_fail(err, CV_ERR_FORMAT,
                     "%s: \"model\" lacks num_layers / hidden_size / "
                     "num_attention_heads",
                     path);
    else if (jint(root, "num_runs", &runs))
        st = cv_fail(err, CV_ERR_FORMAT, "%s: \"num_runs\" is missing", path);
    else if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != nl)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: \"layers\" must hold num_layers (%d) entries", path,
                     nl);
    cv_baseline *b = NULL;
    if (st == CV_OK) st = baseline_alloc(nl, &b, err);
    if (st == CV_OK) {
        b->hidden_size = hs;
        b->heads = heads;
        b->num_runs = (size_t)runs;
        b->hf_id = dup_or_null(jstr(model, "hf_id"));
        b->revision = dup_or_null(jstr(model, "revision"));
        b->dtype = dup_or_null(jstr(model, "dtype"));
        b->architecture = dup_or_null(jstr(model, "architecture"));
        const cJSON *sm = cJSON_GetObjectItemCaseSensitive(root, "step_metrics");
        char where[128];
        for (int k = 0; k < CV_CAL_STEP_METRICS && st == CV_OK; k++) {
            snprintf(where, sizeof where, "step_metrics.%s", cv_cal_step_metric_names[k]);
            st = load_pool(cJSON_GetObjectItemCaseSensitive(sm, cv_cal_step_metric_names[k]), where,
                           path, &b->steps[k], err);
        }
        int j = 0;
        for (const cJSON *l = layers->child; l && st == CV_OK; l = l->next, j++) {
            const cJSON *stats = cJSON_GetObjectItemCaseSensitive(l, "stats");
            for (int s = 0; s < CV_CAL_LAYER_STATS && st == CV_OK; s++) {
                snprintf(where, sizeof where, "layers[%d].stats.%s", j, cv_cal_layer_stat_names[s]);
                st = load_pool(cJSON_GetObjectItemCaseSensitive(stats, cv_cal_layer_stat_names[s]),
                               where, path, &b->layers[(size_t)j * CV_CAL_LAYER_STATS + (size_t)s],
                               err);
            }
        }
    }
    cJSON_Delete(root);
    if (st != CV_OK) {
        cv_baseline_free(b);
        return st;
    }
    *out = b;
    return CV_OK;
}

/* ---- applying ---- */

cv_status cv_baseline_apply(const cv_baseline *b, cv_report *rep, cv_error *err) {
    cv_status st = cv_baseline_check_model(b, &rep->model, err);
    if (st != CV_OK) return st;
    const size_t NL = (size_t)b->num_layers, NS = CV_CAL_LAYER_STATS;
    double *zsum = calloc(NL * NS, sizeof(double)), *zmax = calloc(NL, sizeof(double));
    int64_t *zn = calloc(NL * NS, sizeof(int64_t));
    cJSON *cal = cJSON_CreateObject(), *anomalies = cJSON_CreateArray();
    cJSON *per_step = cJSON_CreateArray();
    if (!zsum || !zmax || !zn || !cal || !anomalies || !per_step) {
        st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
        goto done;
    }
    double step_abs = 0;
    int64_t step_n = 0;
    for (size_t i = 0; i < rep->n_timeline; i++) {
        const cv_timeline_step *t = &rep->timeline[i];
        cJSON *ps = cJSON_CreateObject();
        cJSON_AddItemToArray(per_step, ps);
        cJSON_AddNumberToObject(ps, "step_index", (double)t->step_index);
        cJSON *zo = cJSON_AddObjectToObject(ps, "z");
        double all_abs = 0, layer_abs = 0;
        int64_t all_n = 0, layer_n = 0;
        for (int m = 0; m < CV_CAL_STEP_METRICS; m++) {
            int ok;
            double v = step_value(t, m, &ok);
            if (!ok || !pool_usable(&b->steps[m])) {
                cJSON_AddNullToObject(zo, cv_cal_step_metric_names[m]);
                continue;
            }
            double z = pool_z(&b->steps[m], v);
            cJSON_AddItemToObject(zo, cv_cal_step_metric_names[m], cv_json_float(z));
            step_abs += fabs(z), step_n++;
            all_abs += fabs(z), all_n++;
            if (fabs(z) > Z_ANOMALY) {
                char msg[160];
                snprintf(msg, sizeof msg, "Step %lld: %s z-score %.1f", (long long)t->step_index,
                         cv_cal_step_metric_names[m], z);
                cJSON_AddItemToArray(anomalies, cJSON_CreateString(msg));
            }
        }
        for (size_t j = 0; j < t->n_layers && j < NL; j++)
            for (size_t s = 0; s < NS; s++) {
                int ok;
                double v = layer_value(&t->layers[j], (int)s, &ok);
                const cal_pool *p = &b->layers[j * NS + s];
                if (!ok || !pool_usable(p)) continue;
                double z = pool_z(p, v);
                zsum[j * NS + s] += z;
                zn[j * NS + s]++;
                if (fabs(z) > zmax[j]) zmax[j] = fabs(z);
                layer_abs += fabs(z), layer_n++;
                all_abs += fabs(z), all_n++;
            }
        cJSON_AddItemToObject(ps, "layer_mean_abs_z",
                              layer_n ? cv_json_float(layer_abs / (double)layer_n)
                                      : cJSON_CreateNull());
        double dv = all_n ? fmin(1.0, all_abs / (double)all_n / 6.0) : 0.0;
        cJSON_AddItemToObject(ps, "divergence", cv_json_float(dv));
    }
    /* HEALTH.md §8's four fields first, in its order */
    cJSON_AddItemToObject(cal, "divergence_score",
                          cv_json_float(step_n ? fmin(1.0, step_abs / (double)step_n / 6.0) : 0.0));
    cJSON_AddItemToObject(cal, "anomalies", anomalies);
    anomalies = NULL;
    if (b->hf_id)
        cJSON_AddStringToObject(cal, "baseline_model_id", b->hf_id);
    else
        cJSON_AddNullToObject(cal, "baseline_model_id");
    cJSON_AddNumberToObject(cal, "baseline_num_runs", (double)b->num_runs);
    cJSON *layers = cJSON_AddArrayToObject(cal, "layers");
    cJSON *flagged = cJSON_CreateArray(), *lanom = cJSON_CreateArray();
    for (size_t j = 0; j < NL; j++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddItemToArray(layers, l);
        cJSON_AddNumberToObject(l, "layer_index", (double)j);
        cJSON *zo = cJSON_AddObjectToObject(l, "z");
        double abs_sum = 0;
        int n = 0, is_flagged = 0;
        for (size_t s = 0; s < NS; s++) {
            if (!zn[j * NS + s]) {
                cJSON_AddNullToObject(zo, cv_cal_layer_stat_names[s]);
                continue;
            }
            double z = zsum[j * NS + s] / (double)zn[j * NS + s];
            cJSON_AddItemToObject(zo, cv_cal_layer_stat_names[s], cv_json_float(z));
            abs_sum += fabs(z), n++;
            if (fabs(z) > Z_ANOMALY) {
                char msg[160];
                snprintf(msg, sizeof msg, "Layer %zu: %s z-score %.1f", j,
                         cv_cal_layer_stat_names[s], z);
                cJSON_AddItemToArray(lanom, cJSON_CreateString(msg));
                is_flagged = 1;
            }
        }
        cJSON_AddItemToObject(l, "max_abs_z", cv_json_float(zmax[j]));
        cJSON_AddItemToObject(l, "divergence",
                              cv_json_float(n ? fmin(1.0, abs_sum / n / 6.0) : 0.0));
        if (is_flagged) cJSON_AddItemToArray(flagged, cJSON_CreateNumber((double)j));
    }
    cJSON_AddItemToObject(cal, "flagged_layers", flagged);
    cJSON_AddItemToObject(cal, "layer_anomalies", lanom);
    cJSON_AddItemToObject(cal, "per_step", per_step);
    per_step = NULL;
    if (!rep->extensions && !(rep->extensions = cJSON_CreateObject())) {
        st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
        goto done;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(rep->extensions, "calibration");
    cJSON_AddItemToObject(rep->extensions, "calibration", cal);
    cal = NULL;
done:
    cJSON_Delete(cal);
    cJSON_Delete(anomalies);
    cJSON_Delete(per_step);
    free(zsum);
    free(zmax);
    free(zn);
    return st;
}

/* ---- console ---- */

static double jnum(const cJSON *o, const char *k) {
    int ok;
    double v = json_num(cJSON_GetObjectItemCaseSensitive(o, k), &ok);
    return ok ? v : NAN;
}

void cv_calibration_print(FILE *out, const cv_report *rep) {
    const cJSON *cal = cJSON_GetObjectItemCaseSensitive(rep->extensions, "calibration");
    if (!cal) return;
    fprintf(out, "Calibration: divergence %.2f against %d baseline runs",
            jnum(cal, "divergence_score"), (int)jnum(cal, "baseline_num_runs"));
    /* the three layers with the largest |mean z| of one statistic */
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(cal, "layers");
    struct {
        int layer;
        const char *stat;
        double z;
    } top[3] = {{-1, NULL, 0}, {-1, NULL, 0}, {-1, NULL, 0}};
    for (const cJSON *l = layers ? layers->child : NULL; l; l = l->next) {
        const cJSON *zo = cJSON_GetObjectItemCaseSensitive(l, "z");
        const char *best = NULL;
        double bz = 0;
        for (const cJSON *z = zo ? zo->child : NULL; z; z = z->next) {
            int ok;
            double v = json_num(z, &ok);
            if (ok && fabs(v) > fabs(bz)) bz = v, best = z->string;
        }
        if (!best) continue;
        for (int k = 0; k < 3; k++)
            if (top[k].layer < 0 || fabs(bz) > fabs(top[k].z)) {
                for (int m = 2; m > k; m--) top[m] = top[m - 1];
                top[k].layer = (int)jnum(l, "layer_index");
                top[k].stat = best;
                top[k].z = bz;
                break;
            }
    }
    for (int k = 0; k < 3 && top[k].layer >= 0; k++)
        fprintf(out, "%s%d (%s z %+.1f)", k ? ", " : "; furthest layers: ", top[k].layer,
                top[k].stat, top[k].z);
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(cal, "per_step");
    struct {
        long long step;
        double d;
    } ts[3] = {{-1, -1}, {-1, -1}, {-1, -1}};
    for (const cJSON *s = steps ? steps->child : NULL; s; s = s->next) {
        double d = jnum(s, "divergence");
        if (!isfinite(d)) continue;
        for (int k = 0; k < 3; k++)
            if (ts[k].step < 0 || d > ts[k].d) {
                for (int m = 2; m > k; m--) ts[m] = ts[m - 1];
                ts[k].step = (long long)jnum(s, "step_index");
                ts[k].d = d;
                break;
            }
    }
    for (int k = 0; k < 3 && ts[k].step >= 0; k++)
        fprintf(out, "%s%lld (%.2f)", k ? ", " : "; furthest steps: ", ts[k].step, ts[k].d);
    fputc('\n', out);
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(cal, "flagged_layers");
    if (cJSON_GetArraySize(fl) > 0) {
        fputs("Layers outside the baseline (|z| > 3):", out);
        for (const cJSON *x = fl->child; x; x = x->next) fprintf(out, " %d", x->valueint);
        fputc('\n', out);
    }
}
