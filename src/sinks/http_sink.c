/* http_sink.c — the HTTP remote sink: POST the trace JSON to --remote_url (optionally gzipped,
 * optionally with a bearer token read from an environment variable), with timeouts and retries
 * (remote_common.c). The location is the server's Location header, "<url>/<id>" when the server
 * answers JSON {"id": ...}, else the URL itself. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "corevital/log.h"
#include "sinks/remote_internal.h"

/* gzip (RFC 1952) of data; malloc'd into *out. */
static cv_status gzip_buffer(const char *data, size_t len, unsigned char **out, size_t *out_len,
                             cv_error *err) {
    *out = NULL;
    *out_len = 0;
    if (len > (size_t)UINT32_MAX)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "http sink: trace too large to gzip (%zu bytes)",
                       len);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* windowBits 15 + 16 selects the gzip wrapper instead of zlib's. */
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return cv_fail(err, CV_ERR_RUNTIME, "http sink: deflateInit2 failed");
    uLong bound = deflateBound(&zs, (uLong)len);
    unsigned char *buf = malloc(bound);
    if (!buf) {
        deflateEnd(&zs);
        return cv_fail(err, CV_ERR_NOMEM, "http sink: out of memory gzipping %zu bytes", len);
    }
    zs.next_in = (Bytef *)(uintptr_t)data; /* zlib's API is not const-correct */
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)bound;
    int rc = deflate(&zs, Z_FINISH);
    size_t produced = zs.total_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        free(buf);
        return cv_fail(err, CV_ERR_RUNTIME, "http sink: gzip failed (zlib code %d)", rc);
    }
    *out = buf;
    *out_len = produced;
    return CV_OK;
}

/* "<shown url without query>/<id>" from a JSON {"id": "..."} or {"id": 123} answer; 0 if there is
 * none. */
static int location_from_id(const cv_http_response *r, const char *shown, char *location,
                            size_t location_size) {
    if (!r->body) return 0;
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    int ok = 0;
    size_t sl = strcspn(shown, "?#"); /* the id goes on the path, before any query */
    const char *sep = sl > 0 && shown[sl - 1] == '/' ? "" : "/";
    if (cJSON_IsString(id) && id->valuestring[0]) {
        snprintf(location, location_size, "%.*s%s%s", (int)sl, shown, sep, id->valuestring);
        ok = 1;
    } else if (cJSON_IsNumber(id)) {
        snprintf(location, location_size, "%.*s%s%.0f", (int)sl, shown, sep, id->valuedouble);
        ok = 1;
    }
    cJSON_Delete(j);
    return ok;
}

cv_status cv_http_sink_send(const cv_remote_opts *o, const char *trace_json, char *location,
                            size_t location_size, cv_error *err) {
    cv_net_limits lim = cv_remote_limits(o);
    const char *token_env =
        o->token_env && o->token_env[0] ? o->token_env : CV_REMOTE_DEFAULT_TOKEN_ENV;
    const char *token = getenv(token_env);
    if (token && !token[0]) token = NULL;

    size_t json_len = strlen(trace_json);
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    if (o->gzip) {
        cv_status st = gzip_buffer(trace_json, json_len, &gz, &gz_len, err);
        if (st != CV_OK) return st;
    }

    char *auth = NULL;
    if (token) {
        size_t n = strlen(token) + 32;
        auth = malloc(n);
        if (!auth) {
            free(gz);
            return cv_fail(err, CV_ERR_NOMEM, "http sink: out of memory");
        }
        snprintf(auth, n, "Authorization: Bearer %s", token);
    }
    const char *headers[5];
    size_t nh = 0;
    headers[nh++] = "Content-Type: application/json";
    headers[nh++] = "Accept: application/json";
    if (gz) headers[nh++] = "Content-Encoding: gzip";
    if (auth) headers[nh++] = auth;
    headers[nh] = NULL;

    cv_http_request rq = {.what = "http sink",
                          .method = "POST",
                          .url = o->url,
                          .headers = headers,
                          .body = gz ? (const void *)gz : (const void *)trace_json,
                          .body_len = gz ? gz_len : json_len,
                          .connect_timeout_ms = lim.connect_timeout_ms,
                          .total_timeout_ms = lim.total_timeout_ms,
                          .backoff_ms = lim.backoff_ms,
                          .max_retries = lim.max_retries,
                          .secret = token};
    cv_http_response resp;
    char shown[1024];
    cv_redact_url(o->url, shown, sizeof shown);
    CV_DEBUG("http sink: POST %s (%zu bytes%s%s)", shown, rq.body_len, gz ? ", gzip" : "",
             token ? ", bearer token" : "");
    cv_status st = cv_http_perform(&rq, &resp, err);
    if (st == CV_OK) {
        if (resp.location[0]) {
            char loc[1024];
            cv_redact_url(resp.location, loc, sizeof loc);
            cv_copy_str(location, location_size, loc);
        } else if (!location_from_id(&resp, shown, location, location_size)) {
            cv_copy_str(location, location_size, shown);
        }
        CV_INFO("http sink: delivered the trace to %s (HTTP %ld)", shown, resp.status);
    }
    cv_http_response_free(&resp);
    if (auth) {
        /* Do not leave the token lying around in freed heap memory. */
        volatile char *p = auth;
        while (*p) *p++ = 0;
        free(auth);
    }
    free(gz);
    return st;
}
