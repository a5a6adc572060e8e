/* view_text.c — `corevital summary` and the text half of `corevital compare`: what a person
 * reads in a terminal, under a screen. */
#include "corevital/view.h"
#include "view_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *str_at(const cJSON *o, const char *path) {
    const cJSON *s = cv_json_at(o, path);
    return cJSON_IsString(s) ? s->valuestring : NULL;
}

/* Print a token or text on one line: control characters shown as escapes, cut at max bytes
 * (on a UTF-8 boundary). */
static void put_clean(FILE *out, const char *s, size_t max) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++, n++) {
        if (n >= max && (*p & 0xC0) != 0x80) {
            fputs("...", out);
            return;
        }
        if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
}

/* Indices of the k largest finite values of x (descending; ties: the earlier step first). */
static int top_indices(const double *x, int n, int k, int *idx) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        int pos = m < k ? m++ : k;
        while (pos > 0 && x[idx[pos - 1]] < x[i]) {
            if (pos < k) idx[pos] = idx[pos - 1];
            pos--;
        }
        if (pos < k) idx[pos] = i;
    }
    return m;
}

static const char *bold(int color) {
    return color ? "\033[1m" : "";
}
static const char *plain(int color) {
    return color ? "\033[0m" : "";
}

void cv_view_summary(FILE *out, const cv_trace_view *v, int color) {
    const cJSON *r = v->root;
    fprintf(out, "%sCoreVital trace%s %s\n", bold(color), plain(color), v->path);
    fprintf(out, "model     %s (%s, %s, %s", str_at(r, "model.hf_id"),
            str_at(r, "model.architecture"),
            str_at(r, "model.dtype") ? str_at(r, "model.dtype") : "?", str_at(r, "model.device"));
    const char *q = str_at(r, "model.quantization.method");
    fprintf(out, "%s%s), %d layers\n", q ? ", " : "", q ? q : "", v->n_layers);
    fputs("prompt    ", out);
    put_clean(out, str_at(r, "prompt.text"), 200);
    fprintf(out, "\noutput    ");
    put_clean(out, str_at(r, "generated.output_text"), 300);
    fprintf(out, "\nsteps     %d prompt tokens + %d generated, %d ms\n", v->prompt_tokens,
            v->n_steps, (int)cv_json_at(r, "summary.elapsed_ms")->valuedouble);

    const cJSON *ext = cv_json_at(r, "extensions");
    const cJSON *risk = cJSON_GetObjectItemCaseSensitive(ext, "risk");
    const cJSON *narr = cJSON_GetObjectItemCaseSensitive(ext, "narrative");
    if (risk) {
        const cJSON *score =
            cJSON_IsNumber(risk) ? risk : cJSON_GetObjectItemCaseSensitive(risk, "risk_score");
        if (cJSON_IsNumber(score)) fprintf(out, "risk      %.2f\n", score->valuedouble);
    }
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
    if (cJSON_IsObject(flags)) {
        fputs("flags    ", out);
        int any = 0;
        for (const cJSON *f = flags->child; f; f = f->next)
            if (cJSON_IsTrue(f) || (cJSON_IsNumber(f) && f->valuedouble > 0)) {
                fprintf(out, " %s", f->string);
                any = 1;
            }
        fputs(any ? "\n" : " none\n", out);
    }
    /* the narrative is {"summary": text} (older drafts wrote the text itself) */
    const cJSON *ntext =
        cJSON_IsString(narr) ? narr : cJSON_GetObjectItemCaseSensitive(narr, "summary");
    if (cJSON_IsString(ntext)) {
        fputs("narrative ", out);
        put_clean(out, ntext->valuestring, 400);
        fputc('\n', out);
    }

    int idx[5];
    int k = top_indices(v->entropy, v->n_steps, 5, idx);
    if (k) {
        fprintf(out, "\n%sworst steps by entropy%s (nats, the logits over the full vocabulary)\n",
                bold(color), plain(color));
        for (int i = 0; i < k && i < 5; i++) {
            int s = idx[i];
            fprintf(out, "  step %-6d %7.3f  margin %5.3f  token '", v->prompt_tokens + s,
                    v->entropy[s], v->margin[s]);
            put_clean(out, v->token_text[s], 24);
            fputs("'\n", out);
        }
    }
    if (v->surprisal && (k = top_indices(v->surprisal, v->n_steps, 5, idx)) > 0) {
        fprintf(out, "%sworst steps by surprisal%s (bits)\n", bold(color), plain(color));
        for (int i = 0; i < k && i < 5; i++) {
            int s = idx[i];
            fprintf(out, "  step %-6d %7.3f  token '", v->prompt_tokens + s, v->surprisal[s]);
            put_clean(out, v->token_text[s], 24);
            fputs("'\n", out);
        }
    }

    /* Layers that stand out: a layer's mean over steps far from the median layer. */
    if (v->n_layers >= 2 && v->n_steps > 0) {
        static const struct {
            cv_view_metric m;
            const char *what;
        } watch[] = {{CV_VM_L2, "L2 norm"}, {CV_VM_MAXABS, "max |x|"}, {CV_VM_STD, "std"}};
        double *mean = malloc(sizeof(double) * (size_t)v->n_layers);
        int printed = 0;
        for (size_t w = 0; mean && w < sizeof watch / sizeof watch[0]; w++) {
            for (int j = 0; j < v->n_layers; j++) {
                double one;
                cv_view_downsample(v->layer[watch[w].m] + (size_t)j * (size_t)v->n_steps,
                                   v->n_steps, 1, &one);
                mean[j] = one;
            }
            for (int j = 0; j < v->n_layers; j++) {
                /* against the median of the other layers (with 2 layers: the other one) */
                double keep = mean[j];
                mean[j] = NAN;
                double med = cv_view_median(mean, v->n_layers);
                mean[j] = keep;
                if (!(isfinite(med) && med > 0 && isfinite(keep) && keep > 3 * med)) continue;
                {
                    if (!printed++)
                        fprintf(out,
                                "\n%slayers that stand out%s (mean over steps vs the "
                                "other layers)\n",
                                bold(color), plain(color));
                    fprintf(out,
                            "  layer %-3d %s %.4g = %.1fx the median %.4g of the other layers\n", j,
                            watch[w].what, keep, keep / med, med);
                }
            }
        }
        free(mean);
        if (!printed)
            fputs("\nno layer stands out (each layer's mean L2 / max|x| / std within 3x the median "
                  "of the "
                  "other layers)\n",
                  out);
    }

    const cJSON *ws = cv_json_at(r, "warnings");
    int nw = cJSON_GetArraySize(ws);
    if (nw) {
        fprintf(out, "\n%swarnings (%d)%s\n", bold(color), nw, plain(color));
        int i = 0;
        for (const cJSON *w = ws->child; w && i < 8; w = w->next, i++) {
            fprintf(out, "  [%s] ", str_at(w, "code"));
            put_clean(out, str_at(w, "message"), 110);
            fputc('\n', out);
        }
        if (nw > 8) fprintf(out, "  ... and %d more\n", nw - 8);
    }
}

/* ---- compare ---- */

cv_status cv_view_compare(FILE *out, FILE *html, const cv_trace_view *a, const cv_trace_view *b,
                          cv_error *err) {
    if (a->n_steps == 0 || b->n_steps == 0)
        return cv_fail(err, CV_ERR_FORMAT, "nothing to compare: %s has no steps",
                       a->n_steps == 0 ? a->path : b->path);
    const cJSON *ra = a->root, *rb = b->root;
    fprintf(out, "A  %s: %s, %d layers, %d steps\n", a->path, str_at(ra, "model.hf_id"),
            a->n_layers, a->n_steps);
    fprintf(out, "B  %s: %s, %d layers, %d steps\n", b->path, str_at(rb, "model.hf_id"),
            b->n_layers, b->n_steps);
    int n = a->n_steps < b->n_steps ? a->n_steps : b->n_steps;
    int div = -1;
    for (int i = 0; i < n && div < 0; i++)
        if (a->token_id[i] != b->token_id[i]) div = i;
    if (div < 0 && a->n_steps == b->n_steps)
        fprintf(out, "tokens: identical over all %d steps\n", n);
    else if (div < 0)
        fprintf(out, "tokens: identical over the %d shared steps (lengths %d and %d)\n", n,
                a->n_steps, b->n_steps);
    else {
        fprintf(out, "tokens: first divergence at step %d (generated token %d): A '",
                a->prompt_tokens + div, div);
        put_clean(out, a->token_text[div], 24);
        fputs("' vs B '", out);
        put_clean(out, b->token_text[div], 24);
        fputs("'\n", out);
    }
    /* After a divergence the two runs see different inputs: the numbers compare positions. */
    fprintf(out, "\nper-step differences over %d steps |A - B| (max / mean)\n", n);
    double *da = malloc(sizeof(double) * (size_t)n);
    if (!da) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    const struct {
        const char *name;
        const double *x, *y;
    } series[] = {{"logits entropy", a->entropy, b->entropy},
                  {"top1-top2 margin", a->margin, b->margin}};
    for (size_t s = 0; s < sizeof series / sizeof series[0]; s++) {
        double mx = 0, sum = 0;
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            double d = fabs(series[s].x[i] - series[s].y[i]);
            if (!isfinite(d)) continue;
            if (d > mx) mx = d;
            sum += d;
            cnt++;
        }
        fprintf(out, "  %-34s %10.4g / %-10.4g\n", series[s].name, mx, cnt ? sum / cnt : NAN);
    }
    if (a->n_layers != b->n_layers) {
        fprintf(out,
                "\nlayers: not compared (A has %d layers, B has %d): per-layer statistics need "
                "the same depth; tokens and logits above are compared\n",
                a->n_layers, b->n_layers);
        free(da);
        return html ? cv_view_compare_html(html, a, b, div, err) : CV_OK;
    }
    fprintf(out,
            "\nper-layer differences |A - B| over the shared steps (max / mean; worst step)\n");
    for (int m = 0; m < CV_VM_COUNT; m++) {
        if (m >= CV_VM_X_ENT_MEAN && !(a->has_cross && b->has_cross)) continue;
        fprintf(out, "  %s\n", cv_view_metric_name((cv_view_metric)m));
        for (int j = 0; j < a->n_layers; j++) {
            double mx = 0, sum = 0;
            int cnt = 0, worst = -1;
            for (int i = 0; i < n; i++) {
                double d = fabs(a->layer[m][(size_t)j * (size_t)a->n_steps + (size_t)i] -
                                b->layer[m][(size_t)j * (size_t)b->n_steps + (size_t)i]);
                if (!isfinite(d)) continue;
                if (d > mx || worst < 0) {
                    mx = d;
                    worst = i;
                }
                sum += d;
                cnt++;
            }
            if (cnt)
                fprintf(out, "    layer %-3d %10.4g / %-10.4g step %d\n", j, mx, sum / cnt,
                        a->prompt_tokens + worst);
            else
                fprintf(out, "    layer %-3d (no values)\n", j);
        }
    }
    free(da);
    return html ? cv_view_compare_html(html, a, b, div, err) : CV_OK;
}
