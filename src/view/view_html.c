/* view_html.c — `corevital report`: one self-contained HTML page (inline CSS, inline SVG written
 * here, no script, nothing fetched) showing where a run was uncertain and in which layer
 * something changed; and the HTML form of `corevital compare`.
 *
 * Charts over steps use at most MAX_COLS columns: a longer run is averaged into buckets of
 * consecutive steps (cv_view_downsample), and the page says so. Every string from the trace is
 * HTML-escaped (token texts are arbitrary model output). */
#include "corevital/view.h"
#include "view_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLS   300 /* heatmap columns */
#define MAX_POINTS 800 /* line chart points */

void cv_html_escape(FILE *out, const char *s) {
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "&#x%x;", *p < 0x20 ? 0x2400 + *p : 0x2421); /* control pictures */
            else
                fputc(*p, out);
        }
    }
}

/* A perceptually ordered ramp (dark blue -> teal -> yellow), t in [0, 1]; grey for NaN. */
void cv_color_ramp(double t, char *buf, size_t n) {
    static const double stops[5][3] = {
        {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!isfinite(t)) {
        snprintf(buf, n, "#d0d0d0");
        return;
    }
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    double x = t * 4;
    int i = x >= 4 ? 3 : (int)x;
    double f = x - i;
    int rgb[3];
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
    snprintf(buf, n, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

static void fmt_num(double x, char *buf, size_t n) {
    if (isfinite(x))
        snprintf(buf, n, "%.4g", x);
    else
        snprintf(buf, n, "null");
}

/* Line chart of one series over steps. */
void cv_svg_line_chart(FILE *out, const char *id, const char *title, const double *x, int n,
                       int step0) {
    const int W = 900, H = 160, PAD = 40;
    double *pts = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    int k = pts ? cv_view_downsample(x, n, MAX_POINTS, pts) : 0;
    double lo = 0, hi = 1;
    int any = cv_view_range(pts, k, &lo, &hi);
    if (hi <= lo) hi = lo + 1;
    char a[32], b[32];
    fmt_num(lo, a, sizeof a);
    fmt_num(hi, b, sizeof b);
    fprintf(out, "<figure class=\"chart line\" id=\"%s\"><figcaption>", id);
    cv_html_escape(out, title);
    fprintf(out,
            "%s</figcaption>\n<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
            "role=\"img\">",
            k < n ? " (each point averages consecutive steps)" : "", W, H, W, H);
    fprintf(out,
            "<rect x=\"%d\" y=\"10\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#ccc\"/>",
            PAD, W - PAD - 10, H - 40);
    fprintf(out,
            "<text x=\"2\" y=\"18\" class=\"ax\">%s</text><text x=\"2\" y=\"%d\" "
            "class=\"ax\">%s</text>",
            b, H - 30, a);
    fprintf(out,
            "<text x=\"%d\" y=\"%d\" class=\"ax\">step %d</text><text x=\"%d\" y=\"%d\" "
            "class=\"ax\" text-anchor=\"end\">step %d</text>",
            PAD, H - 12, step0, W - 10, H - 12, step0 + (n > 0 ? n - 1 : 0));
    if (any) {
        fputs("<polyline class=\"series\" fill=\"none\" stroke=\"#3b528b\" stroke-width=\"1.5\" "
              "points=\"",
              out);
        for (int i = 0; i < k; i++) {
            if (!isfinite(pts[i])) continue;
            double px = PAD + (k > 1 ? (double)i / (k - 1) : 0.5) * (W - PAD - 10);
            double py = 10 + (1 - (pts[i] - lo) / (hi - lo)) * (H - 40);
            fprintf(out, "%.1f,%.1f ", px, py);
        }
        fputs("\"/>", out);
    } else {
        fprintf(out, "<text x=\"%d\" y=\"%d\">no values (disabled or non-finite)</text>",
                W / 2 - 100, H / 2);
    }
    fputs("</svg></figure>\n", out);
    free(pts);
}

/* Heatmap rows x n (row-major, rows = layers), columns downsampled to MAX_COLS. */
void cv_svg_heatmap(FILE *out, const char *id, const char *title, const double *m, int rows, int n,
                    int step0) {
    const int CW = 3, RH = 14, LEFT = 60;
    int k = n < MAX_COLS ? n : MAX_COLS;
    double *cells =
        malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1) * (size_t)(k > 0 ? k : 1));
    if (!cells || k == 0 || rows == 0) {
        free(cells);
        return;
    }
    for (int r = 0; r < rows; r++)
        cv_view_downsample(m + (size_t)r * (size_t)n, n, k, cells + (size_t)r * (size_t)k);
    double lo = 0, hi = 1;
    cv_view_range(cells, rows * k, &lo, &hi);
    int cw = k < 100 ? (CW * 100) / (k > 0 ? k : 1) : CW;
    if (cw < CW) cw = CW;
    int W = LEFT + k * cw + 10, H = rows * RH + 30;
    char a[32], b[32], col[16];
    fmt_num(lo, a, sizeof a);
    fmt_num(hi, b, sizeof b);
    fprintf(out, "<figure class=\"chart heatmap\" id=\"%s\"><figcaption>", id);
    cv_html_escape(out, title);
    fprintf(out,
            " <span class=\"scale\">values %s .. %s; each row coloured on its own range (a "
            "change within a layer shows even when layers differ in scale; hover for values)%s"
            "</span></figcaption>\n",
            a, b, k < n ? "; columns average consecutive steps" : "");
    fprintf(out, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">", W, H, W, H);
    for (int r = 0; r < rows; r++) {
        fprintf(out, "<text x=\"2\" y=\"%d\" class=\"ax\">layer %d</text>", r * RH + 11, r);
        double rlo = 0, rhi = 1;
        int rany = cv_view_range(cells + (size_t)r * (size_t)k, k, &rlo, &rhi);
        double span = rhi > rlo ? rhi - rlo : 0;
        for (int c = 0; c < k; c++) {
            double v = cells[(size_t)r * (size_t)k + (size_t)c];
            /* a constant row sits mid-ramp */
            cv_color_ramp(!rany      ? NAN
                          : span > 0 ? (v - rlo) / span
                                     : (isfinite(v) ? 0.5 : NAN),
                          col, sizeof col);
            long s0 = (long)c * n / k, s1 = (long)(c + 1) * n / k - 1;
            char val[32], range[32] = "";
            fmt_num(v, val, sizeof val);
            if (s1 > s0) snprintf(range, sizeof range, "-%ld", step0 + s1);
            fprintf(out,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
                    "<title>layer %d, step %ld%s: %s</title></rect>",
                    LEFT + c * cw, r * RH, cw, RH - 1, col, r, step0 + s0, range, val);
        }
    }
    fprintf(out,
            "<text x=\"%d\" y=\"%d\" class=\"ax\">step %d</text><text x=\"%d\" y=\"%d\" "
            "class=\"ax\" text-anchor=\"end\">step %d</text>",
            LEFT, H - 6, step0, W - 10, H - 6, step0 + n - 1);
    fputs("</svg></figure>\n", out);
    free(cells);
}

static void fact(FILE *out, const char *name, const cJSON *v) {
    fputs("<tr><th>", out);
    cv_html_escape(out, name);
    fputs("</th><td>", out);
    if (cJSON_IsString(v))
        cv_html_escape(out, v->valuestring);
    else if (v && !cJSON_IsNull(v)) {
        char *s = cJSON_PrintUnformatted(v);
        cv_html_escape(out, s);
        free(s);
    } else {
        fputs("null", out);
    }
    fputs("</td></tr>\n", out);
}

void cv_html_head(FILE *out, const char *title) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>", out);
    cv_html_escape(out, title);
    fputs(
        "</title>\n<style>\n"
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\n"
        "h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}\n"
        "table.facts th{text-align:left;padding-right:12px;color:#555;font-weight:normal}\n"
        "table.facts td{font-family:monospace}\n"
        ".strip{font-family:monospace;line-height:1.9;white-space:pre-wrap;word-break:break-all}\n"
        ".strip .tok{padding:1px 0;border-radius:2px}.strip .prompt{color:#666}\n"
        "figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}\n"
        ".ax{font-size:10px;fill:#555}.scale{font-weight:normal;color:#666;font-size:12px}\n"
        ".warn{color:#a40000}.flag-on{color:#a40000;font-weight:600}.note{color:#666}\n"
        ".legend span{display:inline-block;width:40px;height:10px}\n"
        "</style></head><body>\n",
        out);
}

static void token_strip(FILE *out, const cv_trace_view *v) {
    const double *signal = v->surprisal ? v->surprisal : v->entropy;
    const char *sig_name = v->surprisal ? "surprisal (bits)" : "logits entropy (nats)";
    double lo = 0, hi = 1;
    int any = cv_view_range(signal, v->n_steps, &lo, &hi);
    if (hi <= lo) hi = lo + 1;
    fprintf(out,
            "<h2>Tokens</h2>\n<p class=\"note\">Each generated token is coloured by its "
            "step's %s: dark = low, yellow = high. Hover a token for its step, the value "
            "and the top-k alternatives.</p>\n<div class=\"legend\">",
            sig_name);
    char col[16];
    for (int i = 0; i <= 4; i++) {
        cv_color_ramp(i / 4.0, col, sizeof col);
        fprintf(out, "<span style=\"background:%s\"></span>", col);
    }
    fprintf(out,
            " %.3g .. %.3g</div>\n<div class=\"strip\" id=\"token-strip\"><span "
            "class=\"prompt\">",
            lo, hi);
    const cJSON *ptext = cv_json_at(v->root, "prompt.text");
    cv_html_escape(out, cJSON_IsString(ptext) ? ptext->valuestring : "");
    fputs("</span>", out);
    const cJSON *tl = cv_json_at(v->root, "timeline");
    int i = 0;
    for (const cJSON *s = tl->child; s; s = s->next, i++) {
        cv_color_ramp(any ? (signal[i] - lo) / (hi - lo) : NAN, col, sizeof col);
        double t = any && isfinite(signal[i]) ? (signal[i] - lo) / (hi - lo) : 0;
        fprintf(out, "<span class=\"tok\" style=\"background:%s;color:%s\" title=\"step %d; %s ",
                col, t > 0.55 ? "#000" : "#fff", v->prompt_tokens + i, sig_name);
        char val[32];
        fmt_num(signal[i], val, sizeof val);
        fputs(val, out);
        fputs("; top-k:", out);
        const cJSON *topk = cv_json_at(s, "logits_summary.topk");
        for (const cJSON *t2 = topk ? topk->child : NULL; t2; t2 = t2->next) {
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(t2, "token_text");
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(t2, "prob");
            fputs(" '", out);
            cv_html_escape(out, cJSON_IsString(tt) ? tt->valuestring : "");
            fprintf(out, "' %.3f", cJSON_IsNumber(p) ? p->valuedouble : NAN);
        }
        fputs("\">", out);
        cv_html_escape(out, v->token_text[i]);
        fputs("</span>", out);
    }
    fputs("</div>\n", out);
}

static void health_section(FILE *out, const cv_trace_view *v) {
    const cJSON *ext = cv_json_at(v->root, "extensions");
    const cJSON *risk = cJSON_GetObjectItemCaseSensitive(ext, "risk");
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
    const cJSON *narr = cJSON_GetObjectItemCaseSensitive(ext, "narrative");
    fputs("<h2>Health</h2>\n<div id=\"health\">", out);
    if (!risk && !flags && !narr) {
        fputs("<p class=\"note\">This trace carries no health-layer results (a plain schema "
              "0.2.0 trace).</p></div>\n",
              out);
        return;
    }
    if (risk) {
        const cJSON *score =
            cJSON_IsNumber(risk) ? risk : cJSON_GetObjectItemCaseSensitive(risk, "risk_score");
        if (cJSON_IsNumber(score)) fprintf(out, "<p>Risk <b>%.2f</b>", score->valuedouble);
        const cJSON *factors = cJSON_GetObjectItemCaseSensitive(risk, "risk_factors");
        int i = 0;
        for (const cJSON *f = factors ? factors->child : NULL; f; f = f->next, i++)
            if (cJSON_IsString(f)) {
                fputs(i ? ", " : " &mdash; ", out);
                cv_html_escape(out, f->valuestring);
            }
        fputs("</p>", out);
        const cJSON *blamed = cJSON_GetObjectItemCaseSensitive(risk, "blamed_layers");
        if (cJSON_GetArraySize(blamed) > 0) {
            fputs("<ul class=\"blame\" id=\"blamed-layers\">", out);
            for (const cJSON *b = blamed->child; b; b = b->next) {
                const cJSON *ly = cJSON_GetObjectItemCaseSensitive(b, "layer");
                const cJSON *sv = cJSON_GetObjectItemCaseSensitive(b, "severity");
                fprintf(out,
                        "<li>layer %d (severity %.2f): ", cJSON_IsNumber(ly) ? ly->valueint : -1,
                        cJSON_IsNumber(sv) ? sv->valuedouble : 0.0);
                const cJSON *rs = cJSON_GetObjectItemCaseSensitive(b, "reasons");
                for (const cJSON *r = rs ? rs->child : NULL; r; r = r->next)
                    if (cJSON_IsString(r)) {
                        cv_html_escape(out, r->valuestring);
                        if (r->next) fputs("; ", out);
                    }
                fputs("</li>", out);
            }
            fputs("</ul>", out);
        }
    }
    const cJSON *sigs = cJSON_GetObjectItemCaseSensitive(ext, "compound_signals");
    for (const cJSON *c = sigs ? sigs->child : NULL; c; c = c->next) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "description");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "name");
        fputs("<p class=\"signal\">", out);
        if (cJSON_IsString(n)) cv_html_escape(out, n->valuestring);
        if (cJSON_IsString(d)) {
            fputs(": ", out);
            cv_html_escape(out, d->valuestring);
        }
        fputs("</p>", out);
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(ext, "health_stop");
    const cJSON *cond = cJSON_GetObjectItemCaseSensitive(stop, "condition");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(stop, "step_index");
    if (cJSON_IsString(cond) && cJSON_IsNumber(at)) {
        fputs("<p class=\"stop\" id=\"health-stop\">Stopped by --stop-on ", out);
        cv_html_escape(out, cond->valuestring);
        fprintf(out, " at step %d</p>", at->valueint);
    }
    if (cJSON_IsObject(flags)) {
        fputs("<ul class=\"flags\">", out);
        for (const cJSON *f = flags->child; f; f = f->next) {
            int on = cJSON_IsTrue(f) || (cJSON_IsNumber(f) && f->valuedouble > 0);
            fprintf(out, "<li class=\"%s\">", on ? "flag-on" : "flag-off");
            cv_html_escape(out, f->string);
            fputs(": ", out);
            char *s = cJSON_PrintUnformatted(f);
            cv_html_escape(out, s);
            free(s);
            fputs("</li>", out);
        }
        fputs("</ul>", out);
    }
    /* the narrative is {"summary": text} (older drafts wrote the text itself) */
    const cJSON *ntext =
        cJSON_IsString(narr) ? narr : cJSON_GetObjectItemCaseSensitive(narr, "summary");
    if (cJSON_IsString(ntext)) {
        fputs("<p class=\"narrative\">", out);
        cv_html_escape(out, ntext->valuestring);
        fputs("</p>", out);
    }
    fputs("</div>\n", out);
}

static void encoder_panel(FILE *out, const cv_trace_view *v) {
    fputs("<h2>Encoder layers</h2>\n<table class=\"facts\" id=\"encoder-layers\"><tr><th>layer"
          "</th>",
          out);
    for (int m = 0; m < CV_VM_X_ENT_MEAN; m++)
        fprintf(out, "<th>%s</th>", cv_view_metric_name((cv_view_metric)m));
    fputs("</tr>\n", out);
    for (int j = 0; j < v->n_enc; j++) {
        fprintf(out, "<tr><td>%d</td>", j);
        for (int m = 0; m < CV_VM_X_ENT_MEAN; m++) {
            char val[32];
            fmt_num(v->enc[m][j], val, sizeof val);
            fprintf(out, "<td>%s</td>", val);
        }
        fputs("</tr>\n", out);
    }
    fputs("</table>\n", out);
}

cv_status cv_view_report_html(FILE *out, const cv_trace_view *v, cv_error *err) {
    const cJSON *r = v->root;
    cv_html_head(out, "CoreVital report");
    fputs("<h1>CoreVital report</h1>\n<table class=\"facts\" id=\"facts\">\n", out);
    static const char *const facts[] = {"trace_id",
                                        "created_at_utc",
                                        "model.hf_id",
                                        "model.architecture",
                                        "model.num_layers",
                                        "model.dtype",
                                        "model.device",
                                        "model.quantization",
                                        "run_config.generation",
                                        "run_config.seed",
                                        "run_config.max_new_tokens",
                                        "summary"};
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++)
        fact(out, facts[i], cv_json_at(r, facts[i]));
    const cJSON *perf = cv_json_at(r, "extensions.performance");
    if (perf) fact(out, "performance (--perf)", perf);
    fputs("</table>\n", out);
    const cJSON *ws = cv_json_at(r, "warnings");
    fprintf(out, "<h2>Warnings (%d)</h2>\n<ul id=\"warnings\">", cJSON_GetArraySize(ws));
    int nw = 0;
    for (const cJSON *w = ws ? ws->child : NULL; w && nw < 50; w = w->next, nw++) {
        fputs("<li class=\"warn\">[", out);
        cv_html_escape(out, cv_json_at(w, "code")->valuestring);
        fputs("] ", out);
        cv_html_escape(out, cv_json_at(w, "message")->valuestring);
        fputs("</li>", out);
    }
    if (cJSON_GetArraySize(ws) > nw)
        fprintf(out, "<li>... and %d more</li>", cJSON_GetArraySize(ws) - nw);
    fputs("</ul>\n", out);
    health_section(out, v);
    token_strip(out, v);
    fputs("<h2>Logits over steps</h2>\n", out);
    cv_svg_line_chart(out, "chart-entropy", "Logits entropy (nats, full vocabulary)", v->entropy,
                      v->n_steps, v->prompt_tokens);
    cv_svg_line_chart(out, "chart-margin", "Top-1 / top-2 probability margin", v->margin,
                      v->n_steps, v->prompt_tokens);
    if (v->surprisal)
        cv_svg_line_chart(out, "chart-surprisal", "Surprisal of the chosen token (bits)",
                          v->surprisal, v->n_steps, v->prompt_tokens);
    fputs("<h2>Layers over steps</h2>\n<p class=\"note\">Rows are layers (block outputs; the last "
          "after the final norm), columns are steps. The first step (the prefill) summarizes "
          "every prompt position. Grey cells: null (disabled or non-finite).</p>\n",
          out);
    static const struct {
        cv_view_metric m;
        const char *id, *title;
    } maps[] = {
        {CV_VM_L2, "heat-l2", "Hidden state: mean row L2 norm"},
        {CV_VM_STD, "heat-std", "Hidden state: std"},
        {CV_VM_MAXABS, "heat-maxabs", "Hidden state: max |x|"},
        {CV_VM_ATT_ENT_MEAN, "heat-attn-mean", "Attention entropy: mean over heads and rows"},
        {CV_VM_ATT_ENT_MIN, "heat-attn-min", "Attention entropy: min over heads and rows"},
        {CV_VM_X_ENT_MEAN, "heat-cross-mean", "Cross-attention entropy: mean"},
        {CV_VM_X_ENT_MIN, "heat-cross-min", "Cross-attention entropy: min"},
    };
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        if (maps[i].m >= CV_VM_X_ENT_MEAN && !v->has_cross) continue;
        cv_svg_heatmap(out, maps[i].id, maps[i].title, v->layer[maps[i].m], v->n_layers, v->n_steps,
                       v->prompt_tokens);
    }
    if (v->n_enc) encoder_panel(out, v);
    fputs("<p class=\"note\">Written by corevital report from ", out);
    cv_html_escape(out, v->path);
    fputs(".</p>\n</body></html>\n", out);
    if (ferror(out)) return cv_fail(err, CV_ERR_IO, "error writing the report");
    return CV_OK;
}

cv_status cv_view_compare_html(FILE *out, const cv_trace_view *a, const cv_trace_view *b, int div,
                               cv_error *err) {
    cv_html_head(out, "CoreVital compare");
    fputs("<h1>CoreVital compare</h1>\n<table class=\"facts\" id=\"facts\">", out);
    fact(out, "A", cv_json_at(a->root, "model"));
    fact(out, "B", cv_json_at(b->root, "model"));
    fputs("</table>\n<p id=\"divergence\">", out);
    if (div < 0)
        fputs("The generated tokens are identical over the shared steps.", out);
    else
        fprintf(out, "The generated tokens first diverge at step %d.", a->prompt_tokens + div);
    fputs("</p>\n", out);
    int n = a->n_steps < b->n_steps ? a->n_steps : b->n_steps;
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1) *
                       (size_t)(a->n_layers > 0 ? a->n_layers : 1));
    if (!d) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) d[i] = fabs(a->entropy[i] - b->entropy[i]);
    cv_svg_line_chart(out, "chart-entropy-diff", "|entropy A - entropy B|", d, n, a->prompt_tokens);
    if (a->n_layers == b->n_layers) {
        static const cv_view_metric ms[] = {CV_VM_L2, CV_VM_MAXABS, CV_VM_ATT_ENT_MEAN};
        for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) {
            for (int j = 0; j < a->n_layers; j++)
                for (int i = 0; i < n; i++)
                    d[(size_t)j * (size_t)n + (size_t)i] =
                        fabs(a->layer[ms[k]][(size_t)j * (size_t)a->n_steps + (size_t)i] -
                             b->layer[ms[k]][(size_t)j * (size_t)b->n_steps + (size_t)i]);
            char title[128], id[32];
            snprintf(title, sizeof title, "|A - B| of %s", cv_view_metric_name(ms[k]));
            snprintf(id, sizeof id, "heat-diff-%zu", k);
            cv_svg_heatmap(out, id, title, d, a->n_layers, n, a->prompt_tokens);
        }
    } else {
        fprintf(out, "<p class=\"warn\">Layers not compared: A has %d layers, B has %d.</p>\n",
                a->n_layers, b->n_layers);
    }
    free(d);
    fputs("</body></html>\n", out);
    return ferror(out) ? cv_fail(err, CV_ERR_IO, "error writing the comparison") : CV_OK;
}
