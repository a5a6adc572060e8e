/* datadog_sink.c — the Datadog remote sink: the trace's metrics as gauges in a metrics API v2
 * series payload, POSTed to https://api.<DD_SITE>/api/v2/series with the DD-API-KEY header.
 * COREVITAL_DATADOG_URL replaces "https://api.<DD_SITE>" (tests point it at a local server). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corevital/log.h"
#include "sinks/remote_internal.h"

/* Metric type 3 is "gauge" in the v2 series API (0 unspecified, 1 count, 2 rate). */
#define DD_TYPE_GAUGE 3

static const char *const dd_sites[] = {"datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com",
                                       "datadoghq.eu",  "ap1.datadoghq.com", "ap2.datadoghq.com",
                                       "ddog-gov.com"};

int cv_datadog_site_known(const char *site) {
    for (size_t i = 0; i < sizeof dd_sites / sizeof dd_sites[0]; i++)
        if (strcmp(site, dd_sites[i]) == 0) return 1;
    return 0;
}

cv_status cv_datadog_endpoint(char *out, size_t outsz, cv_error *err) {
    const char *over = getenv("COREVITAL_DATADOG_URL");
    int n;
    if (over && over[0]) {
        size_t bl = strlen(over);
        while (bl > 0 && over[bl - 1] == '/') bl--;
        n = snprintf(out, outsz, "%.*s/api/v2/series", (int)bl, over);
    } else {
        const char *site = getenv("DD_SITE");
        if (!site || !site[0]) site = "datadoghq.com";
        n = snprintf(out, outsz, "https://api.%s/api/v2/series", site);
    }
    if (n < 0 || (size_t)n >= outsz)
        return cv_fail(err, CV_ERR_CONFIG, "datadog sink: endpoint URL too long");
    return CV_OK;
}

static int add_tag(cJSON *tags, const char *name, const char *value) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s:%s", name, value);
    cJSON *s = cJSON_CreateString(buf);
    return s && cJSON_AddItemToArray(tags, s);
}

static cJSON *build_series(const cv_metric_set *set, long timestamp_s) {
    cJSON *root = cJSON_CreateObject();
    cJSON *series = root ? cJSON_AddArrayToObject(root, "series") : NULL;
    if (!series) goto fail;
    for (size_t i = 0; i < set->n; i++) {
        const cv_metric *m = &set->v[i];
        if (!m->dd[0]) continue; /* Prometheus-only metric */
        cJSON *s = cJSON_CreateObject();
        if (!s || !cJSON_AddItemToArray(series, s)) {
            cJSON_Delete(s);
            goto fail;
        }
        cJSON *points, *pt, *tags;
        if (!cJSON_AddStringToObject(s, "metric", m->dd) ||
            !cJSON_AddNumberToObject(s, "type", DD_TYPE_GAUGE) ||
            !(points = cJSON_AddArrayToObject(s, "points")) || !(pt = cJSON_CreateObject()) ||
            !cJSON_AddItemToArray(points, pt) ||
            !cJSON_AddNumberToObject(pt, "timestamp", (double)timestamp_s) ||
            !cJSON_AddNumberToObject(pt, "value", m->value) ||
            !(tags = cJSON_AddArrayToObject(s, "tags")) || !add_tag(tags, "model", set->model) ||
            !add_tag(tags, "device", set->device) || !add_tag(tags, "trace_id", set->trace_id) ||
            (m->stat && !add_tag(tags, "stat", m->stat)))
            goto fail;
    }
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

char *cv_datadog_render(const cJSON *trace, long timestamp_s) {
    cv_metric_set set;
    if (cv_trace_metrics(trace, &set, NULL) != CV_OK) return NULL;
    cJSON *root = build_series(&set, timestamp_s);
    cv_metric_set_free(&set);
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

cv_status cv_datadog_sink_send(const cv_remote_opts *o, const cJSON *trace, char *location,
                               size_t location_size, cv_error *err) {
    const char *key = getenv("DD_API_KEY");
    if (!key || !key[0]) return cv_fail(err, CV_ERR_CONFIG, "datadog sink: DD_API_KEY is not set");
    char url[2048];
    cv_status st = cv_datadog_endpoint(url, sizeof url, err);
    if (st != CV_OK) return st;
    char *body = cv_datadog_render(trace, (long)time(NULL));
    if (!body) {
        if (!cJSON_IsObject(trace))
            return cv_fail(err, CV_ERR_FORMAT, "datadog sink: the trace is not a JSON object");
        return cv_fail(err, CV_ERR_NOMEM, "datadog sink: out of memory rendering the series");
    }
    size_t hn = strlen(key) + 16;
    char *key_header = malloc(hn);
    if (!key_header) {
        free(body);
        return cv_fail(err, CV_ERR_NOMEM, "datadog sink: out of memory");
    }
    snprintf(key_header, hn, "DD-API-KEY: %s", key);
    const char *headers[] = {"Content-Type: application/json", "Accept: application/json",
                             key_header, NULL};
    cv_net_limits lim = cv_remote_limits(o);
    cv_http_request rq = {.what = "datadog sink",
                          .method = "POST",
                          .url = url,
                          .headers = headers,
                          .body = body,
                          .body_len = strlen(body),
                          .connect_timeout_ms = lim.connect_timeout_ms,
                          .total_timeout_ms = lim.total_timeout_ms,
                          .backoff_ms = lim.backoff_ms,
                          .max_retries = lim.max_retries,
                          .secret = key};
    cv_http_response resp;
    st = cv_http_perform(&rq, &resp, err);
    char shown[1024];
    cv_redact_url(url, shown, sizeof shown);
    if (st == CV_OK) {
        /* 202 with {"errors": [...]} means accepted but partly rejected: say so, keep going. */
        cJSON *j = resp.body ? cJSON_Parse(resp.body) : NULL;
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
        if (cJSON_IsArray(errs) && cJSON_GetArraySize(errs) > 0) {
            char *e = cJSON_PrintUnformatted(errs);
            CV_WARN("datadog sink: %s accepted the series with errors: %.300s", shown, e ? e : "?");
            free(e);
        }
        cJSON_Delete(j);
        cv_copy_str(location, location_size, shown);
        CV_INFO("datadog sink: sent the series to %s (HTTP %ld)", shown, resp.status);
    }
    cv_http_response_free(&resp);
    volatile char *p = key_header;
    while (*p) *p++ = 0;
    free(key_header);
    free(body);
    return st;
}
