/* report.c — cv_report life cycle: init (trace id, timestamp), free, warnings, allocation
 * helpers for the timeline and layers, and the run_config copy from cv_config (report.h). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cv_status cv_report_init(cv_report *rep, cv_error *err) {
    memset(rep, 0, sizeof *rep);
    snprintf(rep->schema_version, sizeof rep->schema_version, "%s", CV_SCHEMA_VERSION);
    cv_utc_timestamp(rep->created_at_utc);
    return cv_uuid_v4(rep->trace_id, err);
}

static void free_layer(cv_layer_summary *l) {
    free(l->hidden_summary.sketch);
    cJSON_Delete(l->extensions);
}

static void free_layers(cv_layer_summary *layers, size_t n) {
    if (!layers) return;
    for (size_t i = 0; i < n; i++) free_layer(&layers[i]);
    free(layers);
}

static void free_step(cv_timeline_step *s) {
    free(s->token_text);
    for (size_t k = 0; k < s->logits_summary.n_topk; k++)
        free(s->logits_summary.topk[k].token_text);
    free(s->logits_summary.topk);
    free_layers(s->layers, s->n_layers);
    cJSON_Delete(s->extensions);
}

static void free_strs(cv_str_array *a) {
    for (size_t i = 0; i < a->n; i++) free(a->items[i]);
    free(a->items);
    a->items = NULL;
    a->n = 0;
}

static void free_run_config(cv_run_config *r) {
    free(r->device_requested);
    free_strs(&r->summaries.hidden.stats);
    free(r->summaries.hidden.sketch.method);
    free_strs(&r->summaries.attention.stats);
    free_strs(&r->summaries.logits.stats);
    free(r->sink.type);
    free(r->sink.target);
    memset(r, 0, sizeof *r);
}

void cv_report_free(cv_report *rep) {
    if (!rep) return;
    cv_model_info *m = &rep->model;
    free(m->hf_id);
    free(m->revision);
    free(m->architecture);
    free(m->tokenizer_hf_id);
    free(m->dtype);
    free(m->device);
    free(m->quantization.method);
    free_run_config(&rep->run_config);
    free(rep->prompt.text);
    free(rep->prompt.token_ids);
    free(rep->generated.output_text);
    free(rep->generated.token_ids);
    for (size_t i = 0; i < rep->n_timeline; i++) free_step(&rep->timeline[i]);
    free(rep->timeline);
    for (size_t i = 0; i < rep->n_warnings; i++) {
        free(rep->warnings[i].code);
        free(rep->warnings[i].message);
    }
    free(rep->warnings);
    free_layers(rep->encoder_layers, rep->n_encoder_layers);
    cJSON_Delete(rep->extensions);
    memset(rep, 0, sizeof *rep);
}

cv_status cv_report_set_str(char **dst, const char *src, cv_error *err) {
    char *dup = NULL;
    if (src) {
        dup = strdup(src);
        if (!dup) return cv_fail(err, CV_ERR_NOMEM, "out of memory copying a report string");
    }
    free(*dst);
    *dst = dup;
    return CV_OK;
}

cv_status cv_report_set_ids(int64_t **dst, size_t *n_dst, const int64_t *ids, size_t n,
                            cv_error *err) {
    int64_t *copy = NULL;
    if (n) {
        copy = malloc(n * sizeof *copy);
        if (!copy) return cv_fail(err, CV_ERR_NOMEM, "out of memory copying %zu token ids", n);
        memcpy(copy, ids, n * sizeof *copy);
    }
    free(*dst);
    *dst = copy;
    *n_dst = n;
    return CV_OK;
}

cv_status cv_report_add_warning(cv_report *rep, const char *code, const char *fmt, ...) {
    if (rep->n_warnings == rep->cap_warnings) {
        size_t cap = rep->cap_warnings ? rep->cap_warnings * 2 : 8;
        cv_warning *w = realloc(rep->warnings, cap * sizeof *w);
        if (!w) return CV_ERR_NOMEM;
        rep->warnings = w;
        rep->cap_warnings = cap;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *c = strdup(code), *m = strdup(msg);
    if (!c || !m) {
        free(c);
        free(m);
        return CV_ERR_NOMEM;
    }
    rep->warnings[rep->n_warnings].code = c;
    rep->warnings[rep->n_warnings].message = m;
    rep->n_warnings++;
    return CV_OK;
}

static cv_status alloc_layers(cv_layer_summary **out, size_t n, cv_error *err) {
    *out = NULL;
    if (!n) return CV_OK;
    cv_layer_summary *l = calloc(n, sizeof *l);
    if (!l) return cv_fail(err, CV_ERR_NOMEM, "out of memory allocating %zu layer summaries", n);
    for (size_t i = 0; i < n; i++) l[i].layer_index = (int)i;
    *out = l;
    return CV_OK;
}

cv_status cv_report_alloc_timeline(cv_report *rep, size_t n_steps, size_t n_layers, cv_error *err) {
    for (size_t i = 0; i < rep->n_timeline; i++) free_step(&rep->timeline[i]);
    free(rep->timeline);
    rep->timeline = NULL;
    rep->n_timeline = 0;
    if (!n_steps) return CV_OK;
    cv_timeline_step *s = calloc(n_steps, sizeof *s);
    if (!s)
        return cv_fail(err, CV_ERR_NOMEM, "out of memory allocating %zu timeline steps", n_steps);
    rep->timeline = s;
    rep->n_timeline = n_steps;
    for (size_t i = 0; i < n_steps; i++) {
        cv_status st = alloc_layers(&s[i].layers, n_layers, err);
        if (st != CV_OK) return st; /* cv_report_free releases what was allocated */
        s[i].n_layers = n_layers;
    }
    return CV_OK;
}

void cv_report_truncate_timeline(cv_report *rep, size_t n) {
    for (size_t i = n; i < rep->n_timeline; i++) free_step(&rep->timeline[i]);
    if (n < rep->n_timeline) rep->n_timeline = n;
}

cv_status cv_report_alloc_encoder_layers(cv_report *rep, size_t n, cv_error *err) {
    free_layers(rep->encoder_layers, rep->n_encoder_layers);
    rep->encoder_layers = NULL;
    rep->n_encoder_layers = 0;
    cv_status st = alloc_layers(&rep->encoder_layers, n, err);
    if (st != CV_OK) return st;
    rep->n_encoder_layers = n;
    rep->has_encoder_layers = 1;
    return CV_OK;
}

cv_status cv_hidden_alloc_sketch(cv_hidden_summary *h, size_t n, cv_error *err) {
    free(h->sketch);
    h->sketch = NULL;
    h->n_sketch = 0;
    if (!n) return CV_OK;
    h->sketch = calloc(n, sizeof *h->sketch);
    if (!h->sketch)
        return cv_fail(err, CV_ERR_NOMEM, "out of memory allocating a sketch of %zu", n);
    h->n_sketch = n;
    return CV_OK;
}

cv_status cv_logits_alloc_topk(cv_logits_summary *l, size_t n, cv_error *err) {
    for (size_t k = 0; k < l->n_topk; k++) free(l->topk[k].token_text);
    free(l->topk);
    l->topk = NULL;
    l->n_topk = 0;
    if (!n) return CV_OK;
    l->topk = calloc(n, sizeof *l->topk);
    if (!l->topk) return cv_fail(err, CV_ERR_NOMEM, "out of memory allocating %zu top-k items", n);
    l->n_topk = n;
    return CV_OK;
}

static cv_status copy_stats(cv_str_array *dst, const cv_stat_list *src, cv_error *err) {
    dst->items = NULL;
    dst->n = 0;
    if (!src->n) return CV_OK;
    dst->items = calloc(src->n, sizeof *dst->items);
    if (!dst->items) return cv_fail(err, CV_ERR_NOMEM, "out of memory copying stats names");
    for (size_t i = 0; i < src->n; i++) {
        dst->items[i] = strdup(src->items[i]);
        if (!dst->items[i]) return cv_fail(err, CV_ERR_NOMEM, "out of memory copying stats names");
        dst->n = i + 1;
    }
    return CV_OK;
}

cv_status cv_report_fill_run_config(cv_report *rep, const cv_config *cfg, cv_error *err) {
    cv_run_config *r = &rep->run_config;
    free_run_config(r);
    r->seed = cfg->generation.seed;
    r->max_new_tokens = cfg->generation.max_new_tokens;
    r->generation.do_sample = cfg->generation.do_sample;
    r->generation.temperature = cfg->generation.temperature;
    r->generation.top_k = cfg->generation.top_k;
    r->generation.top_p = cfg->generation.top_p;
    r->summaries.hidden.enabled = cfg->summaries.hidden.enabled;
    r->summaries.hidden.sketch.dim = cfg->summaries.hidden.sketch.dim;
    r->summaries.hidden.sketch.seed = cfg->summaries.hidden.sketch.seed;
    r->summaries.attention.enabled = cfg->summaries.attention.enabled;
    r->summaries.logits.enabled = cfg->summaries.logits.enabled;
    r->summaries.logits.topk = cfg->summaries.logits.topk;

    char target[4096];
    if (cfg->out_path) {
        snprintf(target, sizeof target, "%s", cfg->out_path);
    } else {
        char name[64];
        snprintf(name, sizeof name, "trace_%.8s.json", rep->trace_id);
        if (cv_path_join(target, sizeof target, cfg->sink.output_dir, name, err) != CV_OK)
            return err ? err->code : CV_ERR_IO;
    }
    cv_status st;
    if ((st = cv_report_set_str(&r->device_requested, cfg->device.requested, err)) != CV_OK ||
        (st = cv_report_set_str(&r->summaries.hidden.sketch.method,
                                cfg->summaries.hidden.sketch.method, err)) != CV_OK ||
        (st = cv_report_set_str(&r->sink.type, cfg->sink.type, err)) != CV_OK ||
        (st = cv_report_set_str(&r->sink.target, target, err)) != CV_OK ||
        (st = copy_stats(&r->summaries.hidden.stats, &cfg->summaries.hidden.stats, err)) != CV_OK ||
        (st = copy_stats(&r->summaries.attention.stats, &cfg->summaries.attention.stats, err)) !=
            CV_OK ||
        (st = copy_stats(&r->summaries.logits.stats, &cfg->summaries.logits.stats, err)) != CV_OK)
        return st;
    return CV_OK;
}
