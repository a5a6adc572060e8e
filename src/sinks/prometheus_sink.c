/* prometheus_sink.c — the Prometheus remote sink: the trace's metrics in the text exposition
 * format 0.0.4, PUT to a Pushgateway group {url}/metrics/job/corevital/trace_id/<id> and/or
 * written atomically (temp file + rename) for node_exporter's textfile collector. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corevital/log.h"
#include "sinks/remote_internal.h"

/* Label values escape backslash, double quote and newline (exposition format 0.0.4). */
static void append_label_value(cv_sb *b, const char *v) {
    for (; *v; v++) {
        if (*v == '\\')
            cv_sb_append(b, "\\\\");
        else if (*v == '"')
            cv_sb_append(b, "\\\"");
        else if (*v == '\n')
            cv_sb_append(b, "\\n");
        else
            cv_sb_appendn(b, v, 1);
    }
}

/* HELP text escapes backslash and newline. */
static void append_help(cv_sb *b, const char *v) {
    for (; *v; v++) {
        if (*v == '\\')
            cv_sb_append(b, "\\\\");
        else if (*v == '\n')
            cv_sb_append(b, "\\n");
        else
            cv_sb_appendn(b, v, 1);
    }
}

static char *render_set(const cv_metric_set *set) {
    cv_sb b = {0};
    for (size_t i = 0; i < set->n; i++) {
        const cv_metric *m = &set->v[i];
        /* One HELP/TYPE block per metric family; members of a family are consecutive. */
        if (i == 0 || strcmp(set->v[i - 1].prom, m->prom) != 0) {
            cv_sb_printf(&b, "# HELP %s ", m->prom);
            append_help(&b, m->help);
            cv_sb_printf(&b, "\n# TYPE %s gauge\n", m->prom);
        }
        cv_sb_printf(&b, "%s{model=\"", m->prom);
        append_label_value(&b, set->model);
        cv_sb_append(&b, "\",device=\"");
        append_label_value(&b, set->device);
        cv_sb_append(&b, "\",trace_id=\"");
        append_label_value(&b, set->trace_id);
        cv_sb_append(&b, "\"");
        if (m->stat) cv_sb_printf(&b, ",stat=\"%s\"", m->stat);
        cv_sb_append(&b, "} ");
        cv_sb_double(&b, m->value);
        cv_sb_append(&b, "\n");
    }
    return cv_sb_finish(&b);
}

char *cv_prometheus_render(const cJSON *trace) {
    cv_metric_set set;
    if (cv_trace_metrics(trace, &set, NULL) != CV_OK) return NULL;
    char *text = render_set(&set);
    cv_metric_set_free(&set);
    return text;
}

/* Write text to path atomically: a temp file in the same directory, fsync, rename. */
static cv_status write_atomic(const char *path, const char *text, cv_error *err) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return cv_fail(err, CV_ERR_NOMEM, "prometheus sink: out of memory");
    /* node_exporter only reads *.prom, so the temp name (suffix .tmp.<pid>) is never half-read. */
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        cv_status st =
            cv_fail(err, CV_ERR_IO, "prometheus sink: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    int saved = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        remove(tmp);
        free(tmp);
        return cv_fail(err, CV_ERR_IO, "prometheus sink: cannot write %s: %s", path,
                       strerror(saved ? saved : errno));
    }
    if (rename(tmp, path) != 0) {
        cv_status st = cv_fail(err, CV_ERR_IO, "prometheus sink: cannot rename %s to %s: %s", tmp,
                               path, strerror(errno));
        remove(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return CV_OK;
}

/* {base}/metrics/job/corevital/trace_id/<id> (base without trailing slashes). A trace id made of
 * URL-safe characters goes in as is (the UUID case); anything else uses the Pushgateway's
 * "trace_id@base64/<base64url>" form, since a percent-encoded '/' would split the path. */
static cv_status group_url(const char *base, const char *trace_id, char *out, size_t outsz,
                           cv_error *err) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    int plain = trace_id[0] != '\0';
    for (const char *p = trace_id; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._~", *p)) plain = 0;
    char enc[400];
    if (plain) {
        if (cv_copy_str(enc, sizeof enc, trace_id))
            return cv_fail(err, CV_ERR_USAGE, "prometheus sink: trace_id too long");
    } else {
        const unsigned char *s = (const unsigned char *)trace_id;
        size_t len = strlen(trace_id), j = 0;
        if ((len + 2) / 3 * 4 + 1 > sizeof enc)
            return cv_fail(err, CV_ERR_USAGE, "prometheus sink: trace_id too long");
        for (size_t i = 0; i < len; i += 3) {
            unsigned v = (unsigned)s[i] << 16 | (i + 1 < len ? (unsigned)s[i + 1] << 8 : 0) |
                         (i + 2 < len ? s[i + 2] : 0);
            enc[j++] = b64[v >> 18 & 63];
            enc[j++] = b64[v >> 12 & 63];
            enc[j++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
            enc[j++] = i + 2 < len ? b64[v & 63] : '=';
        }
        enc[j] = '\0';
    }
    int n = snprintf(out, outsz, "%.*s/metrics/job/corevital/trace_id%s/%s", (int)bl, base,
                     plain ? "" : "@base64", enc);
    if (n < 0 || (size_t)n >= outsz)
        return cv_fail(err, CV_ERR_USAGE, "prometheus sink: Pushgateway URL too long");
    return CV_OK;
}

cv_status cv_prometheus_sink_send(const cv_remote_opts *o, const cJSON *trace, char *location,
                                  size_t location_size, cv_error *err) {
    cv_metric_set set;
    cv_status st = cv_trace_metrics(trace, &set, err);
    if (st != CV_OK) return cv_error_prefix(err, "prometheus sink");
    char *text = render_set(&set);
    char trace_id[256];
    cv_copy_str(trace_id, sizeof trace_id, set.trace_id);
    cv_metric_set_free(&set);
    if (!text) return cv_fail(err, CV_ERR_NOMEM, "prometheus sink: out of memory rendering");

    location[0] = '\0';
    /* The local textfile first: it is the part that cannot fail for network reasons. */
    if (o->textfile_path && o->textfile_path[0]) {
        st = write_atomic(o->textfile_path, text, err);
        if (st != CV_OK) {
            free(text);
            return st;
        }
        cv_copy_str(location, location_size, o->textfile_path);
        CV_INFO("prometheus sink: wrote %s", o->textfile_path);
    }
    if (o->url && o->url[0]) {
        char url[2048];
        st = group_url(o->url, trace_id, url, sizeof url, err);
        if (st == CV_OK) {
            cv_net_limits lim = cv_remote_limits(o);
            const char *headers[] = {"Content-Type: text/plain; version=0.0.4; charset=utf-8",
                                     NULL};
            /* PUT replaces the whole group, so a re-sent trace never leaves stale series. */
            cv_http_request rq = {.what = "prometheus sink",
                                  .method = "PUT",
                                  .url = url,
                                  .headers = headers,
                                  .body = text,
                                  .body_len = strlen(text),
                                  .connect_timeout_ms = lim.connect_timeout_ms,
                                  .total_timeout_ms = lim.total_timeout_ms,
                                  .backoff_ms = lim.backoff_ms,
                                  .max_retries = lim.max_retries,
                                  .secret = NULL};
            cv_http_response resp;
            st = cv_http_perform(&rq, &resp, err);
            cv_http_response_free(&resp);
            if (st == CV_OK) {
                char shown[1024];
                cv_redact_url(url, shown, sizeof shown);
                size_t used = strlen(location);
                snprintf(location + used, location_size - used, "%s%s", used ? ", " : "", shown);
                CV_INFO("prometheus sink: pushed to %s", shown);
            }
        }
    }
    free(text);
    return st;
}
