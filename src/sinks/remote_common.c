/* remote_common.c — shared machinery of the remote sinks: sink kind parsing, validation before the
 * run, dispatch, one libcurl request with timeouts and retries, URL redaction, a growable string
 * and the metric list both metric sinks (Prometheus, Datadog) publish. */
#define _POSIX_C_SOURCE 200809L
#include "sinks/remote_internal.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "corevital/log.h"

/* ------------------------------------------------------------------ growable string */

static int sb_reserve(cv_sb *b, size_t extra) {
    if (b->oom) return 0;
    size_t need;
    if (!cv_add_size(b->len, extra + 1, &need)) {
        b->oom = 1;
        return 0;
    }
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (!cv_mul_size(cap, 2, &cap)) {
            b->oom = 1;
            return 0;
        }
    }
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return 0;
    }
    b->s = s;
    b->cap = cap;
    return 1;
}

void cv_sb_appendn(cv_sb *b, const char *s, size_t n) {
    if (!sb_reserve(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void cv_sb_append(cv_sb *b, const char *s) {
    cv_sb_appendn(b, s, strlen(s));
}

void cv_sb_printf(cv_sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void cv_sb_double(cv_sb *b, double v) {
    char buf[40];
    if (v == floor(v) && fabs(v) < 9007199254740992.0) { /* integers: no exponent form */
        snprintf(buf, sizeof buf, "%.0f", v);
        cv_sb_append(b, buf);
        return;
    }
    /* The first precision whose text reads back exactly is the shortest round-trip form. */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    cv_sb_append(b, buf);
}

char *cv_sb_finish(cv_sb *b) {
    if (b->oom) {
        free(b->s);
        b->s = NULL;
        return NULL;
    }
    if (!b->s && !sb_reserve(b, 0)) return NULL;
    return b->s;
}

/* ------------------------------------------------------------------ small helpers */

int cv_copy_str(char *dst, size_t n, const char *src) {
    if (n == 0) return 1;
    size_t len = strlen(src);
    if (len >= n) {
        memcpy(dst, src, n - 1);
        dst[n - 1] = '\0';
        return 1;
    }
    memcpy(dst, src, len + 1);
    return 0;
}

/* curl_global_init is not thread-safe; run it exactly once. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init_once(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int cv_url_is_http(const char *url) {
    if (!url) return 0;
    const char *rest = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    if (!rest || !*rest || *rest == '/' || *rest == '?' || *rest == '#') return 0;
    /* Then libcurl's own parser: spaces, bad ports and the like fail here, before the run. */
    pthread_once(&curl_once, curl_init_once);
    CURLU *h = curl_url();
    int ok = h && curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK;
    if (h) curl_url_cleanup(h);
    return ok;
}

cv_net_limits cv_remote_limits(const cv_remote_opts *o) {
    cv_net_limits l;
    l.connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : CV_REMOTE_DEFAULT_CONNECT_TIMEOUT_MS;
    l.total_timeout_ms =
        o->total_timeout_ms > 0 ? o->total_timeout_ms : CV_REMOTE_DEFAULT_TOTAL_TIMEOUT_MS;
    l.backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : CV_REMOTE_DEFAULT_BACKOFF_MS;
    l.max_retries = o->max_retries > 0   ? o->max_retries
                    : o->max_retries < 0 ? 0
                                         : CV_REMOTE_DEFAULT_MAX_RETRIES;
    return l;
}

void cv_redact_url(const char *url, char *out, size_t outsz) {
    if (outsz == 0) return;
    out[0] = '\0';
    if (!url) return;
    pthread_once(&curl_once, curl_init_once);
    CURLU *h = curl_url();
    char *clean = NULL;
    if (h && curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK) {
        char *q = NULL;
        curl_url_set(h, CURLUPART_USER, NULL, 0);
        curl_url_set(h, CURLUPART_PASSWORD, NULL, 0);
        curl_url_set(h, CURLUPART_OPTIONS, NULL, 0);
        if (curl_url_get(h, CURLUPART_QUERY, &q, 0) == CURLUE_OK && q && *q)
            curl_url_set(h, CURLUPART_QUERY, "redacted", 0);
        curl_free(q);
        if (curl_url_get(h, CURLUPART_URL, &clean, 0) != CURLUE_OK) clean = NULL;
    }
    if (clean) {
        cv_copy_str(out, outsz, clean);
        curl_free(clean);
    } else {
        /* Unparseable: keep only "scheme://host" up to any '@', '/', '?'. */
        const char *p = strstr(url, "://");
        size_t keep = p ? (size_t)(p - url) + 3 : 0;
        const char *host = url + keep;
        const char *at = strpbrk(host, "@/?#");
        if (at && *at == '@') host = at + 1, at = strpbrk(host, "/?#");
        snprintf(out, outsz, "%.*s%.*s", (int)keep, url,
                 (int)(at ? (size_t)(at - host) : strlen(host)), host);
    }
    if (h) curl_url_cleanup(h);
}

/* Replace every occurrence of secret in msg by "***", in place ("***" is never longer than a
 * scrubbed secret, so msg only shrinks). */
static void scrub_secret(char *msg, const char *secret) {
    if (!secret || strlen(secret) < 4) return; /* too short to scrub meaningfully */
    size_t sl = strlen(secret);
    char *p;
    while ((p = strstr(msg, secret)) != NULL) {
        size_t tail = strlen(p + sl);
        memmove(p + 3, p + sl, tail + 1);
        memcpy(p, "***", 3);
    }
}

/* ------------------------------------------------------------------ HTTP with retries */

#define RESP_BODY_CAP (64 * 1024)

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp) {
    cv_http_response *r = userp;
    size_t n = size * nmemb;
    size_t room = r->body_len < RESP_BODY_CAP ? RESP_BODY_CAP - r->body_len : 0;
    size_t take = n < room ? n : room; /* keep reading past the cap, just stop storing */
    if (take > 0) {
        char *b = realloc(r->body, r->body_len + take + 1);
        if (!b) return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        memcpy(b + r->body_len, data, take);
        r->body = b;
        r->body_len += take;
        r->body[r->body_len] = '\0';
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp) {
    cv_http_response *r = userp;
    size_t n = size * nmemb;
    if (n > 9 && strncasecmp(data, "location:", 9) == 0) {
        const char *v = data + 9;
        size_t len = n - 9;
        while (len > 0 && (*v == ' ' || *v == '\t')) v++, len--;
        while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ')) len--;
        if (len >= sizeof r->location) len = sizeof r->location - 1;
        memcpy(r->location, v, len);
        r->location[len] = '\0';
    }
    return n;
}

/* Resolve a (possibly relative) Location value against the request URL, in place. */
static void resolve_location(cv_http_response *r, const char *base) {
    if (!r->location[0]) return;
    CURLU *h = curl_url();
    char *abs = NULL;
    if (h && curl_url_set(h, CURLUPART_URL, base, 0) == CURLUE_OK &&
        curl_url_set(h, CURLUPART_URL, r->location, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_URL, &abs, 0) == CURLUE_OK)
        cv_copy_str(r->location, sizeof r->location, abs);
    curl_free(abs);
    if (h) curl_url_cleanup(h);
}

static int curl_error_retryable(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int status_retryable(long status) {
    return status >= 500 || status == 408 || status == 429;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A short printable excerpt of a response body for error messages. */
static void body_excerpt(const cv_http_response *r, char *out, size_t outsz) {
    size_t j = 0;
    for (size_t i = 0; r->body && i < r->body_len && j + 4 < outsz && i < 200; i++) {
        unsigned char c = (unsigned char)r->body[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
    }
    if (r->body && r->body_len > 200 && j + 4 < outsz)
        out[j++] = '.', out[j++] = '.', out[j++] = '.';
    out[j] = '\0';
}

void cv_http_response_free(cv_http_response *resp) {
    if (!resp) return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

cv_status cv_http_perform(const cv_http_request *rq, cv_http_response *resp, cv_error *err) {
    memset(resp, 0, sizeof *resp);
    char shown[1024];
    cv_redact_url(rq->url, shown, sizeof shown);
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return cv_fail(err, CV_ERR_NET, "%s: libcurl initialisation failed: %s", rq->what,
                       curl_easy_strerror(curl_init_rc));
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL, *tmp;
    if (!c) return cv_fail(err, CV_ERR_NET, "%s: curl_easy_init failed", rq->what);
    for (const char *const *h = rq->headers; h && *h; h++) {
        if (!(tmp = curl_slist_append(hdrs, *h))) goto oom;
        hdrs = tmp;
    }
    /* No "Expect: 100-continue" round trip: it adds a delay against servers that ignore it. */
    if (!(tmp = curl_slist_append(hdrs, "Expect:"))) goto oom;
    hdrs = tmp;

    char errbuf[CURL_ERROR_SIZE];
    curl_easy_setopt(c, CURLOPT_URL, rq->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(rq->body ? rq->body_len : 0));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "corevital/" COREVITAL_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* timeouts without SIGALRM: thread-safe */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, rq->total_timeout_ms);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION,
                     0L); /* a redirected POST is reported, not replayed */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif

    cv_status st = CV_ERR_NET;
    char why[512] = "";
    int total = rq->max_retries + 1;
    for (int attempt = 1; attempt <= total; attempt++) {
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
        resp->location[0] = '\0';
        resp->status = 0;
        errbuf[0] = '\0';
        resp->attempts = attempt;
        CURLcode rc = curl_easy_perform(c);
        int retry;
        if (rc != CURLE_OK) {
            snprintf(why, sizeof why, "%s%s%s", curl_easy_strerror(rc), errbuf[0] ? ": " : "",
                     errbuf);
            retry = curl_error_retryable(rc);
        } else {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
            if (resp->status >= 200 && resp->status < 300) {
                resolve_location(resp, rq->url);
                st = CV_OK;
                break;
            }
            char excerpt[256];
            body_excerpt(resp, excerpt, sizeof excerpt);
            snprintf(why, sizeof why, "HTTP %ld%s%s", resp->status, excerpt[0] ? ": " : "",
                     excerpt);
            retry = status_retryable(resp->status);
        }
        scrub_secret(why, rq->secret);
        if (!retry || attempt == total) break;
        long wait = rq->backoff_ms;
        for (int i = 1; i < attempt && wait < 10000; i++) wait *= 2;
        if (wait > 10000) wait = 10000;
        CV_WARN("%s: %s %s: attempt %d of %d failed (%s); retrying in %ld ms", rq->what, rq->method,
                shown, attempt, total, why, wait);
        sleep_ms(wait);
    }
    if (st != CV_OK) {
        cv_fail(err, CV_ERR_NET, "%s: %s %s failed after %d attempt%s: %s", rq->what, rq->method,
                shown, resp->attempts, resp->attempts == 1 ? "" : "s", why);
        if (err) scrub_secret(err->msg, rq->secret);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return st;
oom:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory building request headers", rq->what);
}

/* ------------------------------------------------------------------ metrics of a trace */

static void metric_add(cv_metric_set *set, const char *prom, const char *dd, const char *help,
                       const char *stat, double value) {
    if (set->oom || !isfinite(value)) return;
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 32;
        cv_metric *v = realloc(set->v, cap * sizeof *v);
        if (!v) {
            set->oom = 1;
            return;
        }
        set->v = v;
        set->cap = cap;
    }
    cv_metric *m = &set->v[set->n++];
    cv_copy_str(m->prom, sizeof m->prom, prom);
    cv_copy_str(m->dd, sizeof m->dd, dd ? dd : "");
    cv_copy_str(m->help, sizeof m->help, help);
    m->stat = stat;
    m->value = value;
}

typedef struct {
    double sum, min, max;
    size_t n;
} agg;

static void agg_add(agg *a, const cJSON *item) {
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) return; /* null = not computed */
    double v = item->valuedouble;
    if (a->n == 0 || v < a->min) a->min = v;
    if (a->n == 0 || v > a->max) a->max = v;
    a->sum += v;
    a->n++;
}

static void add_agg(cv_metric_set *set, const char *prom, const char *dd, const char *help,
                    const agg *a) {
    if (a->n == 0) return;
    metric_add(set, prom, dd, help, "mean", a->sum / (double)a->n);
    metric_add(set, prom, dd, help, "min", a->min);
    metric_add(set, prom, dd, help, "max", a->max);
}

static void add_number(cv_metric_set *set, const char *prom, const char *dd, const char *help,
                       const cJSON *item, double scale) {
    if (cJSON_IsNumber(item)) metric_add(set, prom, dd, help, NULL, item->valuedouble * scale);
}

static const char *label_of(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) && it->valuestring[0] ? it->valuestring : "unknown";
}

/* "YYYY-MM-DDTHH:MM:SSZ" to Unix seconds; -1 if it does not parse. */
static double parse_utc(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, mo, d, h, mi, se;
    char z = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &se, &z) != 7 ||
        z != 'Z')
        return -1;
    /* Days from the civil date (proleptic Gregorian), avoiding the non-standard timegm. */
    int yy = y - (mo <= 2);
    long era = (yy >= 0 ? yy : yy - 399) / 400;
    long yoe = yy - era * 400;
    long doy = (153L * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468;
    return (double)days * 86400.0 + h * 3600.0 + mi * 60.0 + se;
}

/* Prometheus-safe suffix from a JSON key: [a-zA-Z0-9_], others become '_'. */
static void sanitize_key(const char *key, char *out, size_t outsz) {
    size_t j = 0;
    for (size_t i = 0; key[i] && j + 1 < outsz; i++)
        out[j++] = (isalnum((unsigned char)key[i]) || key[i] == '_') ? key[i] : '_';
    out[j] = '\0';
}

/* Health flags (HEAD schema form: bools and counts) become corevital_health_<key>. */
static void add_health(cv_metric_set *set, const cJSON *flags) {
    const cJSON *f;
    cJSON_ArrayForEach(f, flags) {
        if (!f->string) continue;
        char key[64], prom[96], dd[96], help[192];
        sanitize_key(f->string, key, sizeof key);
        snprintf(prom, sizeof prom, "corevital_health_%s", key);
        snprintf(dd, sizeof dd, "corevital.health.%s", key);
        if (cJSON_IsBool(f)) {
            snprintf(help, sizeof help, "Health flag %s of the run (1 = raised).", key);
            metric_add(set, prom, dd, help, NULL, cJSON_IsTrue(f) ? 1.0 : 0.0);
        } else if (cJSON_IsNumber(f)) {
            snprintf(help, sizeof help, "Health value %s of the run.", key);
            metric_add(set, prom, dd, help, NULL, f->valuedouble);
        }
    }
}

cv_status cv_trace_metrics(const cJSON *trace, cv_metric_set *set, cv_error *err) {
    memset(set, 0, sizeof *set);
    if (!cJSON_IsObject(trace))
        return cv_fail(err, CV_ERR_FORMAT, "trace: expected a JSON object at the top level");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(trace, "model");
    set->model = label_of(model, "hf_id");
    set->device = label_of(model, "device");
    set->trace_id = label_of(trace, "trace_id");

    const cJSON *summary = cJSON_GetObjectItemCaseSensitive(trace, "summary");
    add_number(set, "corevital_prompt_tokens", "corevital.prompt_tokens",
               "Prompt tokens of the run.",
               cJSON_GetObjectItemCaseSensitive(summary, "prompt_tokens"), 1.0);
    add_number(set, "corevital_generated_tokens", "corevital.generated_tokens",
               "Tokens generated by the run.",
               cJSON_GetObjectItemCaseSensitive(summary, "generated_tokens"), 1.0);
    add_number(set, "corevital_total_steps", "corevital.total_steps",
               "Prompt plus generated tokens of the run.",
               cJSON_GetObjectItemCaseSensitive(summary, "total_steps"), 1.0);
    add_number(set, "corevital_generation_elapsed_seconds", "corevital.generation.elapsed_seconds",
               "Wall time of the generation loop in seconds.",
               cJSON_GetObjectItemCaseSensitive(summary, "elapsed_ms"), 1e-3);
    double created =
        parse_utc(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(trace, "created_at_utc")));
    /* Prometheus only: Datadog points carry their own timestamp. */
    if (created >= 0)
        metric_add(set, "corevital_run_created_timestamp_seconds", NULL,
                   "Unix time the trace was created (created_at_utc).", NULL, created);
    const cJSON *warnings = cJSON_GetObjectItemCaseSensitive(trace, "warnings");
    if (cJSON_IsArray(warnings))
        metric_add(set, "corevital_trace_warnings", "corevital.trace.warnings",
                   "Warnings recorded in the trace.", NULL, (double)cJSON_GetArraySize(warnings));

    agg logit_ent = {0}, margin = {0}, att_ent = {0}, att_conc = {0}, hid_std = {0}, hid_l2 = {0};
    const cJSON *step;
    cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(trace, "timeline")) {
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(step, "logits_summary");
        agg_add(&logit_ent, cJSON_GetObjectItemCaseSensitive(ls, "entropy"));
        agg_add(&margin, cJSON_GetObjectItemCaseSensitive(ls, "top1_top2_margin"));
        const cJSON *layer;
        cJSON_ArrayForEach(layer, cJSON_GetObjectItemCaseSensitive(step, "layers")) {
            const cJSON *as = cJSON_GetObjectItemCaseSensitive(layer, "attention_summary");
            agg_add(&att_ent, cJSON_GetObjectItemCaseSensitive(as, "entropy_mean"));
            agg_add(&att_conc, cJSON_GetObjectItemCaseSensitive(as, "concentration_max"));
            const cJSON *hs = cJSON_GetObjectItemCaseSensitive(layer, "hidden_summary");
            agg_add(&hid_std, cJSON_GetObjectItemCaseSensitive(hs, "std"));
            agg_add(&hid_l2, cJSON_GetObjectItemCaseSensitive(hs, "l2_norm_mean"));
        }
    }
    add_agg(set, "corevital_logits_entropy_nats", "corevital.logits.entropy_nats",
            "Next-token entropy over the full vocabulary in nats, aggregated over the steps.",
            &logit_ent);
    add_agg(set, "corevital_logits_top1_top2_margin_ratio", "corevital.logits.top1_top2_margin",
            "Probability margin between the top two tokens, aggregated over the steps.", &margin);
    add_agg(set, "corevital_attention_entropy_nats", "corevital.attention.entropy_nats",
            "Per-layer mean attention entropy in nats, aggregated over steps and layers.",
            &att_ent);
    add_agg(set, "corevital_attention_concentration_ratio", "corevital.attention.concentration",
            "Per-layer maximum attention weight, aggregated over steps and layers.", &att_conc);
    add_agg(set, "corevital_hidden_std", "corevital.hidden.std",
            "Hidden-state standard deviation, aggregated over steps and layers.", &hid_std);
    add_agg(set, "corevital_hidden_l2_norm", "corevital.hidden.l2_norm",
            "Mean hidden-state row L2 norm, aggregated over steps and layers.", &hid_l2);

    /* Later schema versions put health flags at the top level; ours go under extensions. */
    const cJSON *ext = cJSON_GetObjectItemCaseSensitive(trace, "extensions");
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
    if (!cJSON_IsObject(flags)) flags = cJSON_GetObjectItemCaseSensitive(trace, "health_flags");
    if (cJSON_IsObject(flags)) add_health(set, flags);
    const cJSON *risk = cJSON_GetObjectItemCaseSensitive(ext, "risk");
    add_number(set, "corevital_risk_score", "corevital.risk_score", "Risk score of the run (0-1).",
               cJSON_GetObjectItemCaseSensitive(risk, "risk_score"), 1.0);
    const cJSON *perf = cJSON_GetObjectItemCaseSensitive(ext, "performance");
    add_number(set, "corevital_run_wall_seconds", "corevital.run.wall_seconds",
               "Total wall time of the run measured by --perf, in seconds.",
               cJSON_GetObjectItemCaseSensitive(perf, "total_wall_time_ms"), 1e-3);

    if (set->oom) {
        cv_metric_set_free(set);
        return cv_fail(err, CV_ERR_NOMEM, "trace metrics: out of memory");
    }
    return CV_OK;
}

void cv_metric_set_free(cv_metric_set *set) {
    free(set->v);
    set->v = NULL;
    set->n = set->cap = 0;
}

/* ------------------------------------------------------------------ kinds, validation, dispatch */

static const char *const kind_names[] = {"none", "http", "prometheus", "datadog"};

int cv_remote_kind_parse(const char *s, cv_remote_kind *out) {
    for (size_t i = 0; s && i < sizeof kind_names / sizeof kind_names[0]; i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (cv_remote_kind)i;
            return 0;
        }
    }
    return -1;
}

const char *cv_remote_kind_name(cv_remote_kind kind) {
    return (unsigned)kind < sizeof kind_names / sizeof kind_names[0] ? kind_names[kind] : "?";
}

cv_status cv_remote_validate(const cv_remote_opts *o, cv_error *err) {
    const char *url = o->url && o->url[0] ? o->url : NULL;
    switch (o->kind) {
    case CV_REMOTE_NONE:
        return CV_OK;
    case CV_REMOTE_HTTP:
        if (!url)
            return cv_fail(err, CV_ERR_USAGE, "--remote_url is required with --remote_sink http");
        if (!cv_url_is_http(url))
            return cv_fail(err, CV_ERR_USAGE,
                           "--remote_url must start with http:// or https:// and name a host");
        return CV_OK;
    case CV_REMOTE_PROMETHEUS:
        if (!url && !(o->textfile_path && o->textfile_path[0]))
            return cv_fail(err, CV_ERR_USAGE,
                           "--remote_sink prometheus needs --remote_url (the Pushgateway, e.g. "
                           "http://localhost:9091) or a textfile path");
        if (url && !cv_url_is_http(url))
            return cv_fail(err, CV_ERR_USAGE,
                           "--remote_url (Pushgateway) must start with http:// or https:// and "
                           "name a host");
        return CV_OK;
    case CV_REMOTE_DATADOG: {
        const char *key = getenv("DD_API_KEY");
        if (!key || !key[0])
            return cv_fail(err, CV_ERR_CONFIG,
                           "--remote_sink datadog needs the environment variable DD_API_KEY "
                           "(your Datadog API key); it is not set");
        const char *site = getenv("DD_SITE");
        if (site && site[0] && !cv_datadog_site_known(site))
            return cv_fail(err, CV_ERR_CONFIG,
                           "DD_SITE '%.100s' is not a Datadog site (expected one of datadoghq.com, "
                           "us3.datadoghq.com, us5.datadoghq.com, datadoghq.eu, ap1.datadoghq.com, "
                           "ap2.datadoghq.com, ddog-gov.com)",
                           site);
        const char *over = getenv("COREVITAL_DATADOG_URL");
        if (over && over[0] && !cv_url_is_http(over))
            return cv_fail(err, CV_ERR_CONFIG,
                           "COREVITAL_DATADOG_URL must start with http:// or https:// and name a "
                           "host");
        if (url)
            CV_WARN("--remote_url is not used by the datadog sink (the site comes from DD_SITE)");
        return CV_OK;
    }
    }
    return cv_fail(err, CV_ERR_USAGE, "unknown remote sink kind %d", (int)o->kind);
}

cv_status cv_remote_send(const cv_remote_opts *o, const char *trace_json, const cJSON *trace,
                         char *location, size_t location_size, cv_error *err) {
    char dummy[8];
    if (!location || location_size == 0) location = dummy, location_size = sizeof dummy;
    location[0] = '\0';
    cv_status st = cv_remote_validate(o, err);
    if (st != CV_OK || o->kind == CV_REMOTE_NONE) return st;
    if (o->kind == CV_REMOTE_HTTP) {
        if (!trace_json) return cv_fail(err, CV_ERR_USAGE, "http sink: no trace JSON text to send");
        return cv_http_sink_send(o, trace_json, location, location_size, err);
    }
    cJSON *parsed = NULL;
    if (!trace) {
        if (!trace_json) return cv_fail(err, CV_ERR_USAGE, "remote sink: no trace to send");
        parsed = cJSON_Parse(trace_json);
        if (!parsed)
            return cv_fail(err, CV_ERR_FORMAT, "remote sink: the trace JSON does not parse");
        trace = parsed;
    }
    if (o->kind == CV_REMOTE_PROMETHEUS)
        st = cv_prometheus_sink_send(o, trace, location, location_size, err);
    else
        st = cv_datadog_sink_send(o, trace, location, location_size, err);
    cJSON_Delete(parsed);
    return st;
}
