/* view_load.c — a trace file read back into per-step series and layer x step matrices
 * (cv_trace_view), and the data reductions the charts use (downsampling, ranges, medians). */
#include "corevital/report.h"
#include "corevital/view.h"
#include "view_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_metric_names[CV_VM_COUNT] = {
    "hidden_summary.mean",
    "hidden_summary.std",
    "hidden_summary.l2_norm_mean",
    "hidden_summary.max_abs",
    "attention_summary.entropy_mean",
    "attention_summary.entropy_min",
    "attention_summary.concentration_max",
    "cross_attention.entropy_mean",
    "cross_attention.entropy_min",
    "cross_attention.concentration_max",
};

const char *cv_view_metric_name(cv_view_metric m) {
    return m >= 0 && m < CV_VM_COUNT ? k_metric_names[m] : "?";
}

const cJSON *cv_json_at(const cJSON *o, const char *path) {
    const cJSON *cur = o;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        char key[64];
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = cJSON_GetObjectItemCaseSensitive(cur, key);
        path += n + (dot != NULL);
    }
    return cur;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(n) ? n->valuedouble : NAN;
}

/* One layer summary's statistics into out[CV_VM_COUNT]. */
static void layer_values(const cJSON *layer, double *out) {
    static const char *const parts[3] = {"hidden_summary", "attention_summary", "cross_attention"};
    static const char *const hidden[4] = {"mean", "std", "l2_norm_mean", "max_abs"};
    static const char *const attn[3] = {"entropy_mean", "entropy_min", "concentration_max"};
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(layer, parts[0]);
    for (int i = 0; i < 4; i++) out[CV_VM_MEAN + i] = num(h, hidden[i]);
    for (int p = 1; p < 3; p++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(layer, parts[p]);
        for (int i = 0; i < 3; i++)
            out[(p == 1 ? CV_VM_ATT_ENT_MEAN : CV_VM_X_ENT_MEAN) + i] = num(a, attn[i]);
    }
}

void cv_view_free(cv_trace_view *v) {
    if (!v) return;
    cJSON_Delete(v->root);
    free(v->token_text);
    free(v->token_id);
    free(v->entropy);
    free(v->margin);
    free(v->surprisal);
    free(v->risk);
    for (int m = 0; m < CV_VM_COUNT; m++) {
        free(v->layer[m]);
        free(v->enc[m]);
    }
    memset(v, 0, sizeof *v);
}

cv_status cv_view_load(const char *path, cv_trace_view *v, cv_error *err) {
    memset(v, 0, sizeof *v);
    char *text = NULL;
    size_t len = 0;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st != CV_OK) return st;
    if ((st = cv_trace_validate(text, err)) != CV_OK) {
        free(text);
        return cv_error_prefix(err,
                               "%s is not a valid trace (corevital validate lists every "
                               "problem)",
                               path);
    }
    v->root = cJSON_Parse(text);
    free(text);
    if (!v->root) return cv_fail(err, CV_ERR_NOMEM, "out of memory parsing %s", path);
    v->path = path;
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(v->root, "timeline");
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(v->root, "encoder_layers");
    v->n_steps = cJSON_GetArraySize(tl);
    v->prompt_tokens =
        (int)num(cJSON_GetObjectItemCaseSensitive(v->root, "summary"), "prompt_tokens");
    for (const cJSON *s = tl ? tl->child : NULL; s; s = s->next) {
        int nl = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(s, "layers"));
        if (nl > v->n_layers) v->n_layers = nl;
    }
    v->n_enc = cJSON_IsArray(enc) ? cJSON_GetArraySize(enc) : 0;
    size_t S = (size_t)(v->n_steps ? v->n_steps : 1),
           LS = S * (size_t)(v->n_layers ? v->n_layers : 1);
    v->token_text = calloc(S, sizeof *v->token_text);
    v->token_id = calloc(S, sizeof *v->token_id);
    v->entropy = malloc(S * sizeof(double));
    v->margin = malloc(S * sizeof(double));
    int ok = v->token_text && v->token_id && v->entropy && v->margin;
    for (int m = 0; m < CV_VM_COUNT && ok; m++) {
        v->layer[m] = malloc(LS * sizeof(double));
        ok = v->layer[m] != NULL;
        for (size_t i = 0; ok && i < LS; i++) v->layer[m][i] = NAN;
        if (ok && v->n_enc) {
            v->enc[m] = malloc((size_t)v->n_enc * sizeof(double));
            ok = v->enc[m] != NULL;
        }
    }
    if (!ok) {
        cv_view_free(v);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory reading %s", path);
    }
    int i = 0;
    for (const cJSON *s = tl ? tl->child : NULL; s; s = s->next, i++) {
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(s, "token");
        const cJSON *tt = cJSON_GetObjectItemCaseSensitive(tok, "token_text");
        v->token_text[i] = cJSON_IsString(tt) ? tt->valuestring : "";
        v->token_id[i] = (int)num(tok, "token_id");
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(s, "logits_summary");
        v->entropy[i] = num(ls, "entropy");
        v->margin[i] = num(ls, "top1_top2_margin");
        /* the health layer's per-step values, when this trace has them */
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(s, "extensions"), "health");
        if (cJSON_IsObject(h)) {
            if (!v->surprisal) { /* the first step with health values: earlier ones unknown */
                v->surprisal = malloc(S * sizeof(double));
                v->risk = malloc(S * sizeof(double));
                if (!v->surprisal || !v->risk) {
                    cv_view_free(v);
                    return cv_fail(err, CV_ERR_NOMEM, "out of memory reading %s", path);
                }
                for (int k = 0; k < i; k++) v->surprisal[k] = v->risk[k] = NAN;
            }
            v->surprisal[i] = num(h, "surprisal_bits");
            v->risk[i] = num(h, "risk");
        } else if (v->surprisal) {
            v->surprisal[i] = v->risk[i] = NAN;
        }
        int j = 0;
        double vals[CV_VM_COUNT];
        for (const cJSON *l = cJSON_GetObjectItemCaseSensitive(s, "layers")->child; l;
             l = l->next, j++) {
            layer_values(l, vals);
            if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(l, "cross_attention")))
                v->has_cross = 1;
            for (int m = 0; m < CV_VM_COUNT; m++) v->layer[m][(size_t)j * S + (size_t)i] = vals[m];
        }
    }
    int j = 0;
    for (const cJSON *l = v->n_enc ? enc->child : NULL; l; l = l->next, j++) {
        double vals[CV_VM_COUNT];
        layer_values(l, vals);
        for (int m = 0; m < CV_VM_COUNT; m++) v->enc[m][j] = vals[m];
    }
    return CV_OK;
}

int cv_view_downsample(const double *x, int n, int max_out, double *out) {
    if (n <= 0 || max_out <= 0) return 0;
    int k = n < max_out ? n : max_out;
    for (int b = 0; b < k; b++) {
        long lo = (long)b * n / k, hi = (long)(b + 1) * n / k;
        double sum = 0;
        int cnt = 0;
        for (long t = lo; t < hi; t++)
            if (isfinite(x[t])) {
                sum += x[t];
                cnt++;
            }
        out[b] = cnt ? sum / cnt : NAN;
    }
    return k;
}

int cv_view_range(const double *x, int n, double *lo, double *hi) {
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        if (!found || x[i] < *lo) *lo = x[i];
        if (!found || x[i] > *hi) *hi = x[i];
        found = 1;
    }
    return found;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double cv_view_median(const double *x, int n) {
    double *tmp = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!tmp) return NAN;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) tmp[k++] = x[i];
    double med = NAN;
    if (k) {
        qsort(tmp, (size_t)k, sizeof *tmp, cmp_double);
        med = k % 2 ? tmp[k / 2] : 0.5 * (tmp[k / 2 - 1] + tmp[k / 2]);
    }
    free(tmp);
    return med;
}
