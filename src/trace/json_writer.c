/* json_writer.c — the trace JSON writer (report.h).
 *
 * Writes exactly what Python's json.dumps(report, indent=2, ensure_ascii=False) writes for the
 * reference's pydantic model: keys in SPEC §3 order, nulls kept, [] and {} for empty
 * containers, raw UTF-8, floats as Python repr (shortest round-trip), ints as ints. We write the
 * text directly rather than through cJSON_Print because cJSON's layout (tabs, "%1.15g" then
 * "%1.17g" numbers, no '.0' on integral floats) differs from Python's; cJSON is used only for the
 * free-form `extensions` objects, which are walked here with the same rules.
 *
 * Deliberate difference (SPEC FIX): a non-finite number is written as null, and the report gets
 * a NON_FINITE_VALUE warning naming the field path, e.g. timeline[3].layers[1].hidden_summary.std.
 */
#define _POSIX_C_SOURCE 200809L
#include "corevital/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* At most this many NON_FINITE_VALUE warnings name a field; the rest are counted in one more. */
#define MAX_NONFINITE_WARNINGS 20
#define MAX_DEPTH              64

/* ---- Python float repr ---- */

void cv_format_double(double v, char *buf, size_t n) {
    if (!isfinite(v)) {
        snprintf(buf, n, "null");
        return;
    }
    if (v == 0) {
        snprintf(buf, n, "%s", signbit(v) ? "-0.0" : "0.0");
        return;
    }
    /* Shortest precision that reads back as the same double (what repr's dtoa mode 0 gives).
     * Reading back is monotonic in the digit count (glibc rounds correctly, so more digits only
     * come closer), so the shortest is found by bisection: 17 always reads back; most values of a
     * trace need 16 or 17, settled in two tries, and short ones like 0.5 in about five. */
    char sci[40];
    int lo = 1, hi = 17; /* hi reads back; every p < lo does not */
    for (int p = 16; lo < hi; p = (lo + hi) / 2) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, v);
        if (strtod(sci, NULL) == v)
            hi = p;
        else
            lo = p + 1;
        if (p == 16 && hi == 16) { /* 16 reads back: is 15 enough? (otherwise 16 it is) */
            snprintf(sci, sizeof sci, "%.*e", 14, v);
            if (strtod(sci, NULL) != v)
                lo = 16;
            else
                hi = 15;
        }
    }
    snprintf(sci, sizeof sci, "%.*e", hi - 1, v);
    /* sci = [-]d[.ddd]e[+-]XX: collect the digits and the decimal exponent. */
    const char *s = sci;
    int neg = *s == '-';
    if (neg) s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int exp10 = atoi(s + 1);

    char out[48];
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (exp10 < -4 || exp10 >= 16) {
        /* Python: '1e-05', '1.2345678901234568e+17' (at least two exponent digits). */
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++) out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++) out[o++] = i < nd ? digits[i] : '0';
        out[o++] = '.';
        if (nd > exp10 + 1)
            for (int i = exp10 + 1; i < nd; i++) out[o++] = digits[i];
        else
            out[o++] = '0';
        out[o] = '\0';
    } else {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -exp10 - 1; i++) out[o++] = '0';
        for (int i = 0; i < nd; i++) out[o++] = digits[i];
        out[o] = '\0';
    }
    snprintf(buf, n, "%s", out);
}

double cv_json_number(const cJSON *j, double dflt) {
    if (cJSON_IsNumber(j)) return j->valuedouble;
    if (cJSON_IsRaw(j) && j->valuestring && strcmp(j->valuestring, "null") != 0)
        return strtod(j->valuestring, NULL);
    return dflt;
}

cJSON *cv_json_float_lazy(double v) {
    if (!isfinite(v)) return cJSON_CreateRaw("null");
    cJSON *j = cJSON_CreateNumber(v);
    if (j) j->type |= CV_CJSON_FLOAT;
    return j;
}

cJSON *cv_json_float(double v) {
    char buf[40];
    cv_format_double(v, buf, sizeof buf);
    return cJSON_CreateRaw(buf);
}

/* ---- output buffer and layout ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
    int indent;              /* 0 = compact */
    int depth;               /* open containers */
    size_t count[MAX_DEPTH]; /* items written in each open container */
} jw;

static void put(jw *w, const char *s, size_t n) {
    if (w->oom) return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (w->len + n + 1 > cap) cap *= 2;
        char *p = realloc(w->s, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        w->s = p;
        w->cap = cap;
    }
    memcpy(w->s + w->len, s, n);
    w->len += n;
    w->s[w->len] = '\0';
}

static void puts_(jw *w, const char *s) {
    put(w, s, strlen(s));
}

static void newline_indent(jw *w, int depth) {
    put(w, "\n", 1);
    for (int i = 0; i < depth * w->indent; i++) put(w, " ", 1);
}

/* Called before each item of the innermost container. */
static void item(jw *w) {
    if (w->depth == 0) return;
    if (w->count[w->depth - 1]++) put(w, w->indent ? "," : ", ", w->indent ? 1 : 2);
    if (w->indent) newline_indent(w, w->depth);
}

static void open_(jw *w, char c) {
    put(w, &c, 1);
    if (w->depth >= MAX_DEPTH) {
        w->oom = 1; /* reported as "too deeply nested" below */
        return;
    }
    w->count[w->depth++] = 0;
}

static void close_(jw *w, char c) {
    if (w->depth == 0) return;
    w->depth--;
    if (w->count[w->depth] && w->indent) newline_indent(w, w->depth);
    put(w, &c, 1);
}

/* JSON string with Python's escapes (ensure_ascii=False): \" \\ \n \r \t \b \f, other control
 * characters as \u00XX; non-ASCII raw. Invalid UTF-8 becomes U+FFFD so the file stays valid. */
static void str_raw(jw *w, const char *s) {
    put(w, "\"", 1);
    if (!s) s = "";
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        if (c < 0x80) {
            char esc[8];
            switch (c) {
            case '"':
                puts_(w, "\\\"");
                break;
            case '\\':
                puts_(w, "\\\\");
                break;
            case '\n':
                puts_(w, "\\n");
                break;
            case '\r':
                puts_(w, "\\r");
                break;
            case '\t':
                puts_(w, "\\t");
                break;
            case '\b':
                puts_(w, "\\b");
                break;
            case '\f':
                puts_(w, "\\f");
                break;
            default:
                if (c < 0x20) {
                    snprintf(esc, sizeof esc, "\\u%04x", c);
                    puts_(w, esc);
                } else {
                    put(w, (const char *)p, 1);
                }
            }
            p++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        if (n <= 0) {
            puts_(w, "\xEF\xBF\xBD");
            p++;
        } else {
            put(w, (const char *)p, (size_t)n);
            p += n;
        }
    }
    put(w, "\"", 1);
}

static void key(jw *w, const char *k) {
    item(w);
    str_raw(w, k);
    put(w, ": ", 2);
}

static void v_str(jw *w, const char *s) {
    if (s)
        str_raw(w, s);
    else
        puts_(w, "null");
}
static void v_int(jw *w, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    puts_(w, b);
}
static void v_bool(jw *w, int b) {
    puts_(w, b ? "true" : "false");
}
static void v_float(jw *w, double v) {
    char b[40];
    cv_format_double(v, b, sizeof b);
    puts_(w, b);
}
static void v_num(jw *w, cv_num n) {
    if (n.present)
        v_float(w, n.v);
    else
        puts_(w, "null");
}

static void k_str(jw *w, const char *k, const char *s) {
    key(w, k);
    v_str(w, s);
}
static void k_int(jw *w, const char *k, int64_t v) {
    key(w, k);
    v_int(w, v);
}
static void k_bool(jw *w, const char *k, int v) {
    key(w, k);
    v_bool(w, v);
}
static void k_float(jw *w, const char *k, double v) {
    key(w, k);
    v_float(w, v);
}
static void k_num(jw *w, const char *k, cv_num v) {
    key(w, k);
    v_num(w, v);
}

static void k_ids(jw *w, const char *k, const int64_t *ids, size_t n) {
    key(w, k);
    open_(w, '[');
    for (size_t i = 0; i < n; i++) {
        item(w);
        v_int(w, ids[i]);
    }
    close_(w, ']');
}

static void k_strs(jw *w, const char *k, const cv_str_array *a) {
    key(w, k);
    open_(w, '[');
    for (size_t i = 0; i < a->n; i++) {
        item(w);
        v_str(w, a->items[i]);
    }
    close_(w, ']');
}

/* cJSON value (extensions): same layout rules. Raw nodes are written verbatim (cv_json_float). */
static void v_cjson(jw *w, const cJSON *j) {
    if (!j || cJSON_IsNull(j)) {
        puts_(w, "null");
    } else if (cJSON_IsTrue(j)) {
        puts_(w, "true");
    } else if (cJSON_IsFalse(j)) {
        puts_(w, "false");
    } else if (cJSON_IsRaw(j)) {
        puts_(w, j->valuestring ? j->valuestring : "null");
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (!(j->type & CV_CJSON_FLOAT) && isfinite(d) && d == floor(d) &&
            fabs(d) < 9007199254740992.0)
            v_int(w, (int64_t)d);
        else
            v_float(w, d);
    } else if (cJSON_IsString(j)) {
        str_raw(w, j->valuestring);
    } else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        int obj = cJSON_IsObject(j);
        open_(w, obj ? '{' : '[');
        for (const cJSON *c = j->child; c; c = c->next) {
            if (obj)
                key(w, c->string ? c->string : "");
            else
                item(w);
            v_cjson(w, c);
        }
        close_(w, obj ? '}' : ']');
    } else {
        puts_(w, "null");
    }
}

static void k_ext(jw *w, const char *k, const cJSON *ext) {
    key(w, k);
    if (ext)
        v_cjson(w, ext);
    else
        puts_(w, "{}");
}

static void w_attention(jw *w, const cv_attention_summary *a) {
    open_(w, '{');
    k_num(w, "entropy_mean", a->entropy_mean);
    k_num(w, "entropy_min", a->entropy_min);
    k_num(w, "concentration_max", a->concentration_max);
    close_(w, '}');
}

static void w_layer(jw *w, const cv_layer_summary *l) {
    open_(w, '{');
    k_int(w, "layer_index", l->layer_index);
    key(w, "hidden_summary");
    open_(w, '{');
    k_num(w, "mean", l->hidden_summary.mean);
    k_num(w, "std", l->hidden_summary.std);
    k_num(w, "l2_norm_mean", l->hidden_summary.l2_norm_mean);
    k_num(w, "max_abs", l->hidden_summary.max_abs);
    key(w, "sketch");
    open_(w, '[');
    for (size_t i = 0; i < l->hidden_summary.n_sketch; i++) {
        item(w);
        v_float(w, l->hidden_summary.sketch[i]);
    }
    close_(w, ']');
    close_(w, '}');
    key(w, "attention_summary");
    w_attention(w, &l->attention_summary);
    key(w, "cross_attention");
    if (l->has_cross_attention)
        w_attention(w, &l->cross_attention);
    else
        puts_(w, "null");
    k_ext(w, "extensions", l->extensions);
    close_(w, '}');
}

static void w_layers(jw *w, const cv_layer_summary *l, size_t n) {
    open_(w, '[');
    for (size_t i = 0; i < n; i++) {
        item(w);
        w_layer(w, &l[i]);
    }
    close_(w, ']');
}

static void w_step(jw *w, const cv_timeline_step *s) {
    open_(w, '{');
    k_int(w, "step_index", s->step_index);
    key(w, "token");
    open_(w, '{');
    k_int(w, "token_id", s->token_id);
    k_str(w, "token_text", s->token_text ? s->token_text : "");
    k_bool(w, "is_prompt_token", s->is_prompt_token);
    close_(w, '}');
    key(w, "logits_summary");
    open_(w, '{');
    k_num(w, "entropy", s->logits_summary.entropy);
    k_num(w, "top1_top2_margin", s->logits_summary.top1_top2_margin);
    key(w, "topk");
    open_(w, '[');
    for (size_t k = 0; k < s->logits_summary.n_topk; k++) {
        const cv_topk_item *t = &s->logits_summary.topk[k];
        item(w);
        open_(w, '{');
        k_int(w, "token_id", t->token_id);
        k_str(w, "token_text", t->token_text ? t->token_text : "");
        k_float(w, "prob", t->prob);
        close_(w, '}');
    }
    close_(w, ']');
    close_(w, '}');
    key(w, "layers");
    w_layers(w, s->layers, s->n_layers);
    k_ext(w, "extensions", s->extensions);
    close_(w, '}');
}

static void w_report(jw *w, const cv_report *r) {
    open_(w, '{');
    k_str(w, "schema_version", r->schema_version);
    k_str(w, "trace_id", r->trace_id);
    k_str(w, "created_at_utc", r->created_at_utc);

    const cv_model_info *m = &r->model;
    key(w, "model");
    open_(w, '{');
    k_str(w, "hf_id", m->hf_id ? m->hf_id : "");
    k_str(w, "revision", m->revision);
    k_str(w, "architecture", m->architecture ? m->architecture : "");
    k_int(w, "num_layers", m->num_layers);
    k_int(w, "hidden_size", m->hidden_size);
    k_int(w, "num_attention_heads", m->num_attention_heads);
    k_str(w, "tokenizer_hf_id", m->tokenizer_hf_id ? m->tokenizer_hf_id : "");
    k_str(w, "dtype", m->dtype);
    k_str(w, "device", m->device ? m->device : "");
    key(w, "quantization");
    open_(w, '{');
    k_bool(w, "enabled", m->quantization.enabled);
    k_str(w, "method", m->quantization.method);
    close_(w, '}');
    close_(w, '}');

    const cv_run_config *rc = &r->run_config;
    key(w, "run_config");
    open_(w, '{');
    k_int(w, "seed", rc->seed);
    k_str(w, "device_requested", rc->device_requested ? rc->device_requested : "");
    k_int(w, "max_new_tokens", rc->max_new_tokens);
    key(w, "generation");
    open_(w, '{');
    k_bool(w, "do_sample", rc->generation.do_sample);
    k_float(w, "temperature", rc->generation.temperature);
    k_int(w, "top_k", rc->generation.top_k);
    k_float(w, "top_p", rc->generation.top_p);
    close_(w, '}');
    key(w, "summaries");
    open_(w, '{');
    key(w, "hidden");
    open_(w, '{');
    k_bool(w, "enabled", rc->summaries.hidden.enabled);
    k_strs(w, "stats", &rc->summaries.hidden.stats);
    key(w, "sketch");
    open_(w, '{');
    k_str(w, "method",
          rc->summaries.hidden.sketch.method ? rc->summaries.hidden.sketch.method : "");
    k_int(w, "dim", rc->summaries.hidden.sketch.dim);
    k_int(w, "seed", rc->summaries.hidden.sketch.seed);
    close_(w, '}');
    close_(w, '}');
    key(w, "attention");
    open_(w, '{');
    k_bool(w, "enabled", rc->summaries.attention.enabled);
    k_strs(w, "stats", &rc->summaries.attention.stats);
    close_(w, '}');
    key(w, "logits");
    open_(w, '{');
    k_bool(w, "enabled", rc->summaries.logits.enabled);
    k_strs(w, "stats", &rc->summaries.logits.stats);
    k_int(w, "topk", rc->summaries.logits.topk);
    close_(w, '}');
    close_(w, '}');
    key(w, "sink");
    open_(w, '{');
    k_str(w, "type", rc->sink.type ? rc->sink.type : "");
    k_str(w, "target", rc->sink.target ? rc->sink.target : "");
    close_(w, '}');
    close_(w, '}');

    key(w, "prompt");
    open_(w, '{');
    k_str(w, "text", r->prompt.text ? r->prompt.text : "");
    k_ids(w, "token_ids", r->prompt.token_ids, r->prompt.n_token_ids);
    k_int(w, "num_tokens", (int64_t)r->prompt.n_token_ids);
    close_(w, '}');

    key(w, "generated");
    open_(w, '{');
    k_str(w, "output_text", r->generated.output_text ? r->generated.output_text : "");
    k_ids(w, "token_ids", r->generated.token_ids, r->generated.n_token_ids);
    k_int(w, "num_tokens", (int64_t)r->generated.n_token_ids);
    close_(w, '}');

    key(w, "timeline");
    open_(w, '[');
    for (size_t i = 0; i < r->n_timeline; i++) {
        item(w);
        w_step(w, &r->timeline[i]);
    }
    close_(w, ']');

    key(w, "summary");
    open_(w, '{');
    k_int(w, "prompt_tokens", r->summary.prompt_tokens);
    k_int(w, "generated_tokens", r->summary.generated_tokens);
    k_int(w, "total_steps", r->summary.total_steps);
    k_int(w, "elapsed_ms", r->summary.elapsed_ms);
    close_(w, '}');

    key(w, "warnings");
    open_(w, '[');
    for (size_t i = 0; i < r->n_warnings; i++) {
        item(w);
        open_(w, '{');
        k_str(w, "code", r->warnings[i].code ? r->warnings[i].code : "");
        k_str(w, "message", r->warnings[i].message ? r->warnings[i].message : "");
        close_(w, '}');
    }
    close_(w, ']');

    key(w, "encoder_layers");
    if (r->has_encoder_layers)
        w_layers(w, r->encoder_layers, r->n_encoder_layers);
    else
        puts_(w, "null");
    k_ext(w, "extensions", r->extensions);
    close_(w, '}');
}

/* ---- non-finite scan ---- */

typedef struct {
    cv_report *rep;
    size_t found;
    int oom;
} scan;

static void nonfinite(scan *s, double v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void nonfinite(scan *s, double v, const char *fmt, ...) {
    if (isfinite(v)) return;
    if (++s->found > MAX_NONFINITE_WARNINGS) return;
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    const char *what = isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
    if (cv_report_add_warning(s->rep, "NON_FINITE_VALUE", "%s is %s; written as null", path,
                              what) != CV_OK)
        s->oom = 1;
}

static void scan_num(scan *s, cv_num n, const char *path, const char *field) {
    if (n.present) nonfinite(s, n.v, "%s.%s", path, field);
}

static void scan_attn(scan *s, const cv_attention_summary *a, const char *path) {
    scan_num(s, a->entropy_mean, path, "entropy_mean");
    scan_num(s, a->entropy_min, path, "entropy_min");
    scan_num(s, a->concentration_max, path, "concentration_max");
}

/* 1 when some of the n values is NaN or infinite. */
static int any_nonfinite(const double *v, size_t n, size_t stride) {
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k * stride])) return 1;
    return 0;
}

/* A list typed List[float] upstream (the sketch, the top-k probabilities) cannot hold null:
 * a list with a non-finite member is written empty, with one warning naming it. */
static void drop_nonfinite_list(scan *s, size_t *n, const char *path, const char *field) {
    s->found++;
    if (s->found <= MAX_NONFINITE_WARNINGS &&
        cv_report_add_warning(s->rep, "NON_FINITE_VALUE",
                              "%s.%s has non-finite values; written as []", path, field) != CV_OK)
        s->oom = 1;
    *n = 0;
}

static void scan_layers(scan *s, cv_layer_summary *l, size_t n, const char *prefix) {
    char path[400];
    for (size_t j = 0; j < n; j++) {
        cv_hidden_summary *h = &l[j].hidden_summary;
        snprintf(path, sizeof path, "%s[%zu].hidden_summary", prefix, j);
        scan_num(s, h->mean, path, "mean");
        scan_num(s, h->std, path, "std");
        scan_num(s, h->l2_norm_mean, path, "l2_norm_mean");
        scan_num(s, h->max_abs, path, "max_abs");
        if (any_nonfinite(h->sketch, h->n_sketch, 1))
            drop_nonfinite_list(s, &h->n_sketch, path, "sketch");
        snprintf(path, sizeof path, "%s[%zu].attention_summary", prefix, j);
        scan_attn(s, &l[j].attention_summary, path);
        if (l[j].has_cross_attention) {
            snprintf(path, sizeof path, "%s[%zu].cross_attention", prefix, j);
            scan_attn(s, &l[j].cross_attention, path);
        }
    }
}

static void scan_cjson(scan *s, const cJSON *j, const char *path) {
    if (!j) return;
    if (cJSON_IsNumber(j)) nonfinite(s, j->valuedouble, "%s", path);
    int i = 0;
    for (const cJSON *c = j->child; c; c = c->next, i++) {
        char sub[512];
        if (cJSON_IsObject(j))
            snprintf(sub, sizeof sub, "%s.%s", path, c->string ? c->string : "");
        else
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
        scan_cjson(s, c, sub);
    }
}

static int scan_report(cv_report *r) {
    scan s = {r, 0, 0};
    nonfinite(&s, r->run_config.generation.temperature, "run_config.generation.temperature");
    nonfinite(&s, r->run_config.generation.top_p, "run_config.generation.top_p");
    char path[256];
    for (size_t i = 0; i < r->n_timeline; i++) {
        cv_timeline_step *st = &r->timeline[i];
        snprintf(path, sizeof path, "timeline[%zu].logits_summary", i);
        scan_num(&s, st->logits_summary.entropy, path, "entropy");
        scan_num(&s, st->logits_summary.top1_top2_margin, path, "top1_top2_margin");
        for (size_t k = 0; k < st->logits_summary.n_topk; k++)
            if (!isfinite(st->logits_summary.topk[k].prob)) {
                drop_nonfinite_list(&s, &st->logits_summary.n_topk, path, "topk");
                break;
            }
        snprintf(path, sizeof path, "timeline[%zu].layers", i);
        scan_layers(&s, st->layers, st->n_layers, path);
        snprintf(path, sizeof path, "timeline[%zu].extensions", i);
        scan_cjson(&s, st->extensions, path);
    }
    if (r->has_encoder_layers)
        scan_layers(&s, r->encoder_layers, r->n_encoder_layers, "encoder_layers");
    scan_cjson(&s, r->extensions, "extensions");
    if (s.found > MAX_NONFINITE_WARNINGS &&
        cv_report_add_warning(r, "NON_FINITE_VALUE",
                              "%zu more non-finite values were written as null",
                              s.found - MAX_NONFINITE_WARNINGS) != CV_OK)
        s.oom = 1;
    return s.oom ? -1 : 0;
}

cv_status cv_report_to_json(cv_report *rep, int indent, char **out, size_t *len, cv_error *err) {
    *out = NULL;
    if (len) *len = 0;
    if (!rep->nonfinite_checked) {
        if (scan_report(rep) != 0)
            return cv_fail(err, CV_ERR_NOMEM, "out of memory recording non-finite warnings");
        rep->nonfinite_checked = 1;
    }
    jw w;
    memset(&w, 0, sizeof w);
    w.indent = indent > 0 ? indent : 0;
    w_report(&w, rep);
    if (w.oom || w.depth != 0) {
        free(w.s);
        return cv_fail(err, CV_ERR_NOMEM,
                       "out of memory (or extensions nested deeper than %d) "
                       "serializing the trace",
                       MAX_DEPTH);
    }
    *out = w.s;
    if (len) *len = w.len;
    return CV_OK;
}
