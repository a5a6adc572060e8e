/* remote_internal.h — helpers shared by the remote sinks (remote_common.c): one libcurl request
 * with timeouts and retries, URL redaction, a growable string, and the list of metrics extracted
 * from a trace that both the Prometheus and the Datadog sink publish. Not a public header. */
#ifndef COREVITAL_SINKS_REMOTE_INTERNAL_H
#define COREVITAL_SINKS_REMOTE_INTERNAL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "corevital/common.h"
#include "corevital/remote_sinks.h"

/* ---- growable string ---- */
typedef struct {
    char *s;
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends are no-ops */
} cv_sb;

void cv_sb_append(cv_sb *b, const char *s);
void cv_sb_appendn(cv_sb *b, const char *s, size_t n);
void cv_sb_printf(cv_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Shortest decimal text that reads back as the same double (like Python repr). */
void cv_sb_double(cv_sb *b, double v);
/* Returns the string (caller frees) or NULL after an allocation failure. */
char *cv_sb_finish(cv_sb *b);

/* ---- HTTP with retries ---- */
typedef struct {
    const char *what;           /* message prefix, e.g. "http sink" */
    const char *method;         /* "POST" or "PUT" */
    const char *url;            /* never printed as is: see cv_redact_url */
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const void *body;
    size_t body_len;
    long connect_timeout_ms, total_timeout_ms, backoff_ms;
    int max_retries;
    const char *secret; /* token / API key: replaced by "***" in any message, may be NULL */
} cv_http_request;

typedef struct {
    long status;  /* last HTTP status; 0 when no response arrived */
    int attempts; /* requests made */
    char *body;   /* last response body (NUL-terminated, capped at 64 KiB), or NULL */
    size_t body_len;
    char location[2048]; /* the Location response header resolved against the URL, or "" */
} cv_http_response;

/* Perform the request. 2xx: CV_OK. 5xx, 408, 429 and connection-level failures (refused,
 * timeout, dropped connection, DNS) are retried with exponential backoff; any other status fails
 * at once. On failure err (CV_ERR_NET) names the method, the redacted URL, the attempts and the
 * last status or curl error. resp is filled in both cases; release with cv_http_response_free. */
cv_status cv_http_perform(const cv_http_request *rq, cv_http_response *resp, cv_error *err);
void cv_http_response_free(cv_http_response *resp);

/* url without user:password and with the query replaced by "redacted" (tokens sometimes ride
 * in either), into out. Falls back to the scheme and host only when the URL does not parse. */
void cv_redact_url(const char *url, char *out, size_t outsz);

/* 1 if url starts with http:// or https:// and has a host. */
int cv_url_is_http(const char *url);

/* Effective option values (defaults applied). */
typedef struct {
    long connect_timeout_ms, total_timeout_ms, backoff_ms;
    int max_retries;
} cv_net_limits;
cv_net_limits cv_remote_limits(const cv_remote_opts *o);

/* Copy src into dst (size n), always NUL-terminated; returns 1 if it was truncated. */
int cv_copy_str(char *dst, size_t n, const char *src);

/* ---- metrics extracted from a trace ---- */
typedef struct {
    char prom[96];    /* Prometheus name, e.g. corevital_logits_entropy_nats */
    char dd[96];      /* Datadog name, e.g. corevital.logits.entropy_nats; "" = not sent */
    char help[192];   /* Prometheus HELP text */
    const char *stat; /* "mean", "min", "max" or NULL */
    double value;
} cv_metric;

typedef struct {
    cv_metric *v;
    size_t n, cap;
    int oom;
    /* label values, pointing into the trace tree ("unknown" when absent) */
    const char *model, *device, *trace_id;
} cv_metric_set;

/* Extract the run's metrics (docs/sinks.md lists them). Metrics sharing a Prometheus name are
 * consecutive. Missing or null statistics are skipped. */
cv_status cv_trace_metrics(const cJSON *trace, cv_metric_set *out, cv_error *err);
void cv_metric_set_free(cv_metric_set *set);

/* Sink implementations (dispatched by cv_remote_send). */
cv_status cv_http_sink_send(const cv_remote_opts *o, const char *trace_json, char *location,
                            size_t location_size, cv_error *err);
cv_status cv_prometheus_sink_send(const cv_remote_opts *o, const cJSON *trace, char *location,
                                  size_t location_size, cv_error *err);
cv_status cv_datadog_sink_send(const cv_remote_opts *o, const cJSON *trace, char *location,
                               size_t location_size, cv_error *err);
/* The series endpoint: COREVITAL_DATADOG_URL + "/api/v2/series" when that is set, else
 * "https://api.<DD_SITE or datadoghq.com>/api/v2/series". */
cv_status cv_datadog_endpoint(char *out, size_t outsz, cv_error *err);
/* 1 if site is one of Datadog's sites (datadoghq.com, us3.datadoghq.com, ...). */
int cv_datadog_site_known(const char *site);

#endif
