/* remote_sinks.h — remote trace sinks: HTTP (POST the trace JSON), Prometheus (Pushgateway push
 * and/or textfile-collector file) and Datadog (metrics API v2 series), all over libcurl.
 *
 * The sinks are decoupled from the report structs: they take the finished trace JSON text and,
 * for the metric sinks, its parsed cJSON tree (SPEC §3 layout). The caller always writes the
 * local trace file first; a remote failure is reported through cv_error (CV_ERR_NET) so the CLI
 * can turn it into a warning (docs/sinks.md). Nothing here logs a bearer token or an API key. */
#ifndef COREVITAL_REMOTE_SINKS_H
#define COREVITAL_REMOTE_SINKS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "corevital/common.h"

typedef enum {
    CV_REMOTE_NONE,
    CV_REMOTE_HTTP,
    CV_REMOTE_PROMETHEUS,
    CV_REMOTE_DATADOG
} cv_remote_kind;

/* Defaults applied when the corresponding field is 0. */
#define CV_REMOTE_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define CV_REMOTE_DEFAULT_TOTAL_TIMEOUT_MS   30000L
#define CV_REMOTE_DEFAULT_MAX_RETRIES        3
#define CV_REMOTE_DEFAULT_BACKOFF_MS         100L
#define CV_REMOTE_DEFAULT_TOKEN_ENV          "COREVITAL_SINK_TOKEN"

typedef struct {
    cv_remote_kind kind;
    /* http: target URL; prometheus: Pushgateway base URL (may be NULL when only a textfile is
     * written); datadog: unused (the site comes from DD_SITE, tests override with
     * COREVITAL_DATADOG_URL). */
    const char *url;
    const char *textfile_path; /* prometheus textfile-collector output, or NULL */
    /* http: name of the env var holding a bearer token, or NULL (CV_REMOTE_DEFAULT_TOKEN_ENV). */
    const char *token_env;
    int gzip; /* http: gzip the body (Content-Encoding: gzip) */
    /* Per attempt: connect timeout and whole-request timeout. max_retries counts the retries
     * after the first attempt; a negative value means no retries. The wait before retry n
     * (1-based) is backoff_ms * 2^(n-1). Zero selects the defaults above. */
    long connect_timeout_ms, total_timeout_ms;
    int max_retries;
    long backoff_ms;
} cv_remote_opts;

/* Parse "none|http|prometheus|datadog" (exact, lower case); returns 0 on success, -1 otherwise. */
int cv_remote_kind_parse(const char *s, cv_remote_kind *out);

/* The name of a kind ("none", "http", ...). */
const char *cv_remote_kind_name(cv_remote_kind kind);

/* Validate before any model loads: http needs an http(s):// URL; prometheus needs a URL
 * (http(s)://) or a textfile path; datadog needs DD_API_KEY set and, if set, a known DD_SITE.
 * Returns CV_ERR_USAGE for problems with the flags (URL) and CV_ERR_CONFIG for problems with the
 * environment (DD_API_KEY, DD_SITE, COREVITAL_DATADOG_URL). */
cv_status cv_remote_validate(const cv_remote_opts *o, cv_error *err);

/* Deliver a finished trace. trace_json is the trace text (what the http sink POSTs); trace is its
 * parsed tree, or NULL to have it parsed from trace_json. On return location (if non-NULL) holds:
 *   http:       the URL, or the server's Location header (absolute), or "<url>/<id>" when the
 *               server answered JSON {"id": ...};
 *   prometheus: the Pushgateway group URL and/or the textfile path, joined by ", ";
 *   datadog:    the series API URL.
 * On failure location still names what was delivered (e.g. the textfile when the push failed). */
cv_status cv_remote_send(const cv_remote_opts *o, const char *trace_json, const cJSON *trace,
                         char *location, size_t location_size, cv_error *err);

/* The Prometheus text exposition (format 0.0.4) of a trace; malloc'd, caller frees; NULL on
 * allocation failure or when trace is not an object. */
char *cv_prometheus_render(const cJSON *trace);

/* The Datadog metrics API v2 body {"series":[...]} for a trace, all points at timestamp_s;
 * malloc'd (compact JSON), caller frees; NULL on allocation failure or a non-object trace. */
char *cv_datadog_render(const cJSON *trace, long timestamp_s);

#endif
