/* hub.c — model name resolution, Hugging Face cache and downloads (include/corevital/hub.h).
 *
 * This reimplements the parts of huggingface_hub's hf_hub_download that CoreVital needs, so the
 * two share one cache in both directions (layout in docs/hub.md):
 *   <cache>/models--ORG--NAME/refs/<revision>            text file holding the commit hash
 *   <cache>/models--ORG--NAME/blobs/<etag>               file contents (etag = sha256 for LFS)
 *   <cache>/models--ORG--NAME/snapshots/<commit>/<file>  relative symlink ../../blobs/<etag>
 *   <cache>/models--ORG--NAME/.no_exist/<commit>/<file>  marker: file known not to exist
 *   <cache>/.locks/models--ORG--NAME/<etag>.lock          flock()ed while a blob downloads
 * Per file: HEAD {endpoint}/{repo}/resolve/{rev}/{file}, following redirects only on the same
 * origin (renamed repos), gives X-Repo-Commit, the etag and the size; a cached blob is linked,
 * otherwise the file is fetched with GET (redirects followed; libcurl drops the Authorization
 * header when the host changes) into blobs/<etag>.incomplete, resumed with Range, checked (size,
 * sha256) and renamed into place. The token is only ever put in a request header. */
#define _GNU_SOURCE
#include "corevital/hub.h"
#include "corevital/log.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUB_PATH 4096
#define HUB_URL  8192

/* Everything one resolution needs; the token lives only here and in the curl header list. */
typedef struct {
    char model[128];     /* repo id as given: "org/name" or "name" */
    char revision[256];  /* branch, tag or commit as given ("main" by default) */
    char commit[64];     /* resolved commit ("" until the first HEAD answers) */
    char endpoint[1024]; /* HF_ENDPOINT without trailing '/' */
    char cache[HUB_PATH];
    char folder[HUB_PATH];          /* <cache>/models--ORG--NAME */
    char locks[HUB_PATH];           /* <cache>/.locks/models--ORG--NAME */
    char token[1024];               /* "" when no token */
    char token_from[HUB_PATH + 16]; /* where the token came from, for messages (never the token) */
    char token_path[HUB_PATH];
    int offline;
    int progress;    /* draw a progress bar (stderr is a terminal) */
    int downloaded;  /* some blob was downloaded */
    int answered;    /* the endpoint answered at least one request */
    int unreachable; /* the first request failed to connect: a cached snapshot may be used */
    long head_timeout, download_timeout;
    CURL *curl;
} hub_ctx;

/* Response metadata of the last response in a request (reset at each status line, so after
 * followed redirects it describes the final response). */
typedef struct {
    char commit[96];
    char etag[192];
    char linked_etag[192];
    long long linked_size;
    long long content_length;
    long long range_start; /* first byte of a 206 Content-Range, -1 if none */
    char location[HUB_URL];
    char error_code[64];
    char error_msg[256];
} http_meta;

/* ------------------------------------------------------------------------------------------- */
/* Environment                                                                                   */

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* huggingface_hub's _is_true: "1", "ON", "YES", "TRUE" in any case. */
static int env_truthy(const char *name) {
    const char *v = getenv(name);
    if (!v) return 0;
    static const char *yes[] = {"1", "ON", "YES", "TRUE"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(v, yes[i]) == 0) return 1;
    return 0;
}

static long env_seconds(const char *name, long fallback) {
    const char *v = env_nonempty(name);
    if (!v) return fallback;
    char *end = NULL;
    double d = strtod(v, &end);
    return (end && *end == '\0' && d > 0 && d < 1e6) ? (long)(d + 0.999) : fallback;
}

/* Copy `in` to `out`, replacing a leading "~" by $HOME. */
static cv_status expand_home(const char *in, char *out, size_t outsz, cv_error *err) {
    int n;
    if (in[0] == '~' && (in[1] == '/' || in[1] == '\0')) {
        const char *home = env_nonempty("HOME");
        if (!home) return cv_fail(err, CV_ERR_IO, "cannot expand '%s': HOME is not set", in);
        n = snprintf(out, outsz, "%s%s", home, in + 1);
    } else {
        n = snprintf(out, outsz, "%s", in);
    }
    if (n < 0 || (size_t)n >= outsz) return cv_fail(err, CV_ERR_IO, "path too long: %s", in);
    return CV_OK;
}

/* HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
static cv_status hf_home(char *out, size_t outsz, cv_error *err) {
    const char *v = env_nonempty("HF_HOME");
    if (v) return expand_home(v, out, outsz, err);
    char base[HUB_PATH];
    const char *xdg = env_nonempty("XDG_CACHE_HOME");
    cv_status st = expand_home(xdg ? xdg : "~/.cache", base, sizeof base, err);
    if (st != CV_OK) return st;
    return cv_path_join(out, outsz, base, "huggingface", err);
}

cv_status cv_hub_cache_dir(char *out, size_t outsz, cv_error *err) {
    const char *v = env_nonempty("HF_HUB_CACHE");
    if (!v) v = env_nonempty("HUGGINGFACE_HUB_CACHE"); /* legacy name, still honoured upstream */
    if (v) return expand_home(v, out, outsz, err);
    char home[HUB_PATH];
    cv_status st = hf_home(home, sizeof home, err);
    if (st != CV_OK) return st;
    return cv_path_join(out, outsz, home, "hub", err);
}

static void strip_whitespace(char *s) {
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i])) i++;
    if (i) memmove(s, s + i, n - i + 1);
}

/* HF_TOKEN (legacy HUGGING_FACE_HUB_TOKEN), else the token file; none when
 * HF_HUB_DISABLE_IMPLICIT_TOKEN is set. Only where it came from is ever printed. */
static cv_status load_token(hub_ctx *c, cv_error *err) {
    c->token[0] = '\0';
    const char *tp = env_nonempty("HF_TOKEN_PATH");
    cv_status st;
    if (tp) {
        st = expand_home(tp, c->token_path, sizeof c->token_path, err);
    } else {
        char home[HUB_PATH];
        st = hf_home(home, sizeof home, err);
        if (st == CV_OK) st = cv_path_join(c->token_path, sizeof c->token_path, home, "token", err);
    }
    if (st != CV_OK) return st;
    if (env_truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN")) return CV_OK;
    const char *names[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = env_nonempty(names[i]);
        if (!v) continue;
        snprintf(c->token, sizeof c->token, "%s", v);
        strip_whitespace(c->token);
        snprintf(c->token_from, sizeof c->token_from, "%s", names[i]);
        if (c->token[0]) return CV_OK;
    }
    char *text = NULL;
    if (cv_is_file(c->token_path) && cv_read_file(c->token_path, &text, NULL, NULL) == CV_OK) {
        snprintf(c->token, sizeof c->token, "%s", text);
        strip_whitespace(c->token);
        snprintf(c->token_from, sizeof c->token_from, "the token file %s", c->token_path);
        free(text);
    }
    return CV_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Names and paths                                                                              */

static int is_word_char(char ch) {
    return isalnum((unsigned char)ch) || ch == '_';
}

/* huggingface_hub's validate_repo_id: one optional '/', [\w.-] characters, each part starting and
 * ending with a word character, no "--" or "..", not ending in ".git", at most 96 characters. */
int cv_hub_valid_repo_id(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 96) return 0;
    int slashes = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '/') {
            if (++slashes > 1 || i == 0 || !is_word_char(s[i - 1]) || !is_word_char(s[i + 1]))
                return 0;
        } else if (!is_word_char(ch) && ch != '-' && ch != '.') {
            return 0;
        }
    }
    if (!is_word_char(s[0]) || !is_word_char(s[n - 1])) return 0;
    if (strstr(s, "--") || strstr(s, "..")) return 0;
    return !(n >= 4 && strcmp(s + n - 4, ".git") == 0);
}

static int is_commit_hash(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!isdigit((unsigned char)s[n]) && !(s[n] >= 'a' && s[n] <= 'f')) return 0;
    return n == 40;
}

/* A name used as one path component in the cache (etag, commit). */
static int safe_component(const char *s) {
    if (!s[0] || s[0] == '.') return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') return 0;
    return 1;
}

/* A relative path inside a repo or refs/ (file names, shard names, revisions like refs/pr/1):
 * no absolute path, no "." or ".." component, no empty component, no control characters. */
static int safe_relpath(const char *s) {
    if (!s[0] || s[0] == '/') return 0;
    const char *p = s;
    while (*p) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == '\\') return 0;
        if (!q) break;
        p = q + 1;
    }
    return 1;
}

static cv_status fmt_path(char *out, size_t outsz, cv_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cv_status fmt_path(char *out, size_t outsz, cv_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outsz, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= outsz) return cv_fail(err, CV_ERR_IO, "path too long: %s", out);
    return CV_OK;
}

/* mkdir -p for the directory `dir`. */
static cv_status make_dirs(const char *dir, cv_error *err) {
    char buf[HUB_PATH];
    if (fmt_path(buf, sizeof buf, err, "%s", dir) != CV_OK) return CV_ERR_IO;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return cv_fail(err, CV_ERR_IO, "cannot create directory %s: %s", buf,
                               strerror(errno));
            *p = saved;
            if (saved == '\0') break;
        }
    }
    if (!cv_is_dir(dir)) return cv_fail(err, CV_ERR_IO, "%s exists but is not a directory", dir);
    return CV_OK;
}

/* mkdir -p for the parent directory of `path`. */
static cv_status make_parent_dirs(const char *path, cv_error *err) {
    char dir[HUB_PATH];
    if (fmt_path(dir, sizeof dir, err, "%s", path) != CV_OK) return CV_ERR_IO;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return CV_OK;
    *slash = '\0';
    return make_dirs(dir, err);
}

/* Write a small file atomically (temp file + rename). */
static cv_status write_file_atomic(const char *path, const char *text, cv_error *err) {
    char tmp[HUB_PATH];
    if (fmt_path(tmp, sizeof tmp, err, "%s.tmp-%ld", path, (long)getpid()) != CV_OK)
        return CV_ERR_IO;
    FILE *f = fopen(tmp, "wb");
    if (!f) return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", path, strerror(saved));
    }
    return CV_OK;
}

static int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0; /* follows symlinks: a dangling pointer does not count */
}

static cv_status snapshot_file(const hub_ctx *c, const char *commit, const char *file, char *out,
                               size_t outsz, cv_error *err) {
    return fmt_path(out, outsz, err, "%s/snapshots/%s/%s", c->folder, commit, file);
}

/* ------------------------------------------------------------------------------------------- */
/* HTTP                                                                                          */

static void copy_value(char *dst, size_t dstsz, const char *src, size_t len) {
    if (len >= dstsz) len = dstsz - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
    http_meta *m = userdata;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) { /* a new response (e.g. after a redirect) */
        memset(m, 0, sizeof *m);
        m->linked_size = m->content_length = m->range_start = -1;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon) return n;
    size_t name_len = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vlen = (size_t)(end - v);
    char num[32];
#define HDR(name) (name_len == strlen(name) && strncasecmp(buf, name, name_len) == 0)
    if (HDR("X-Repo-Commit"))
        copy_value(m->commit, sizeof m->commit, v, vlen);
    else if (HDR("ETag"))
        copy_value(m->etag, sizeof m->etag, v, vlen);
    else if (HDR("X-Linked-Etag"))
        copy_value(m->linked_etag, sizeof m->linked_etag, v, vlen);
    else if (HDR("Location"))
        copy_value(m->location, sizeof m->location, v, vlen);
    else if (HDR("X-Error-Code"))
        copy_value(m->error_code, sizeof m->error_code, v, vlen);
    else if (HDR("X-Error-Message"))
        copy_value(m->error_msg, sizeof m->error_msg, v, vlen);
    else if (HDR("X-Linked-Size")) {
        copy_value(num, sizeof num, v, vlen);
        m->linked_size = strtoll(num, NULL, 10);
    } else if (HDR("Content-Length")) {
        copy_value(num, sizeof num, v, vlen);
        m->content_length = strtoll(num, NULL, 10);
    } else if (HDR("Content-Range") && vlen > 6 && strncasecmp(v, "bytes ", 6) == 0) {
        copy_value(num, sizeof num, v + 6, vlen - 6);
        m->range_start = isdigit((unsigned char)num[0]) ? strtoll(num, NULL, 10) : -1;
    }
#undef HDR
    return n;
}

/* {endpoint}/{repo}/resolve/{quote(revision, safe="")}/{quote(file, safe="/")} */
static cv_status build_url(hub_ctx *c, const char *rev, const char *file, char *out, size_t outsz,
                           cv_error *err) {
    char *qrev = curl_easy_escape(c->curl, rev, 0);
    if (!qrev) return cv_fail(err, CV_ERR_NOMEM, "out of memory escaping a URL");
    int n = snprintf(out, outsz, "%s/%s/resolve/%s", c->endpoint, c->model, qrev);
    curl_free(qrev);
    const char *p = file;
    while (n >= 0 && (size_t)n < outsz && *p) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char *part = curl_easy_escape(c->curl, p, (int)len);
        if (!part) return cv_fail(err, CV_ERR_NOMEM, "out of memory escaping a URL");
        n += snprintf(out + n, outsz - (size_t)n, "/%s", part);
        curl_free(part);
        p = q ? q + 1 : p + len;
    }
    if (n < 0 || (size_t)n >= outsz) return cv_fail(err, CV_ERR_NET, "URL too long for %s", file);
    return CV_OK;
}

/* Options shared by HEAD and GET; returns the header list to free after the request. */
static struct curl_slist *setup_request(hub_ctx *c, const char *url, http_meta *m, int head) {
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "corevital/" COREVITAL_VERSION "; hf_hub/compatible");
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, m);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->head_timeout);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    struct curl_slist *hdrs = NULL;
    if (c->token[0]) {
        /* Custom Authorization headers are not sent to another host on redirects unless
         * CURLOPT_UNRESTRICTED_AUTH is set (it is explicitly off here): the CDN never sees it. */
        char auth[sizeof c->token + 32];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
        memset(auth, 0, sizeof auth);
        curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
    }
    if (head) {
        /* As huggingface_hub: no redirects (an LFS file answers 302 with its metadata), and the
         * identity encoding so Content-Length is the real size. */
        hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, c->head_timeout);
    } else {
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
        curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        /* A stalled transfer (under 1 byte/s for the download timeout) is an error. */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->download_timeout);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    return hdrs;
}

static int is_unreachable(CURLcode rc) {
    return rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_COULDNT_RESOLVE_PROXY;
}

static cv_status transport_error(hub_ctx *c, CURLcode rc, const char *errbuf, cv_error *err) {
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (is_unreachable(rc)) {
        if (!c->answered) c->unreachable = 1;
        return cv_fail(err, CV_ERR_NET,
                       "cannot reach %s: %s; set HF_HUB_OFFLINE=1 to use the cache only",
                       c->endpoint, why);
    }
    return cv_fail(err, CV_ERR_NET, "request to %s failed: %s", c->endpoint, why);
}

/* Message for an HTTP error status on `file`. */
static cv_status http_error(hub_ctx *c, long status, const http_meta *m, const char *file,
                            cv_error *err) {
    char detail[400] = "";
    if (m->error_code[0] || m->error_msg[0])
        snprintf(detail, sizeof detail, ": %s%s%s", m->error_code, m->error_code[0] ? " " : "",
                 m->error_msg);
    if (status == 401 || status == 403) {
        if (!c->token[0])
            return cv_fail(err, CV_ERR_NET,
                           "model '%s' on %s needs authentication (HTTP %ld%s): it is gated or "
                           "private, or does not exist; set HF_TOKEN to a token with access (or "
                           "save one in %s)",
                           c->model, c->endpoint, status, detail, c->token_path);
        return cv_fail(err, CV_ERR_NET,
                       "access to model '%s' on %s was refused with the token from %s (HTTP "
                       "%ld%s): request access on the model's page (gated models need their "
                       "license accepted) or use a token that has it",
                       c->model, c->endpoint, c->token_from, status, detail);
    }
    if (status == 404) {
        if (strcmp(m->error_code, "RevisionNotFound") == 0)
            return cv_fail(err, CV_ERR_NET,
                           "revision '%s' of model '%s' not found on %s (HTTP 404)", c->revision,
                           c->model, c->endpoint);
        return cv_fail(err, CV_ERR_NET, "model '%s' not found on %s (HTTP 404)", c->model,
                       c->endpoint);
    }
    return cv_fail(err, CV_ERR_NET, "%s/%s: HTTP %ld from %s%s", c->model, file, status,
                   c->endpoint, detail);
}

/* Length of "scheme://host[:port]" at the start of url, 0 if it has none. */
static size_t origin_len(const char *url) {
    const char *host = strstr(url, "://");
    if (!host) return 0;
    const char *path = strpbrk(host + 3, "/?#");
    return path ? (size_t)(path - url) : strlen(url);
}

/* 1 if both absolute URLs have the same scheme, host (any case) and port (defaults filled in). */
static int same_origin(const char *a, const char *b) {
    char oa[2][512];
    const char *urls[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        size_t n = origin_len(urls[i]);
        if (n == 0 || n >= sizeof oa[i]) return 0;
        memcpy(oa[i], urls[i], n);
        oa[i][n] = '\0';
        for (char *p = oa[i]; *p; p++) *p = (char)tolower((unsigned char)*p);
        char *host = strstr(oa[i], "://") + 3;
        if (!strchr(host, ':') && n + 5 < sizeof oa[i])
            strcat(oa[i], strncmp(oa[i], "https:", 6) == 0 ? ":443" : ":80");
    }
    return strcmp(oa[0], oa[1]) == 0;
}

/* Where a redirect from url to location leads: a relative location keeps url's
 * scheme://host[:port]; an absolute one on the same origin is followed; another origin is not
 * (*follow = 0). */
static cv_status redirect_target(const char *url, const char *location, char *next, size_t n,
                                 int *follow, cv_error *err) {
    *follow = 0;
    if (location[0] == '/') {
        size_t origin = origin_len(url);
        if (!origin) return cv_fail(err, CV_ERR_NET, "cannot follow redirect from %s", url);
        if (fmt_path(next, n, err, "%.*s%s", (int)origin, url, location) != CV_OK)
            return CV_ERR_NET;
        *follow = 1;
    } else if (same_origin(url, location)) {
        if (fmt_path(next, n, err, "%s", location) != CV_OK) return CV_ERR_NET;
        *follow = 1;
    }
    return CV_OK;
}

/* HEAD the resolve URL of `file` at `rev`. As huggingface_hub, redirects are followed only while
 * they stay on the same origin (renamed repos answer with a relative redirect); a redirect to
 * another host (an LFS file's CDN URL) is where the metadata is read. */
static cv_status head_file(hub_ctx *c, const char *rev, const char *file, http_meta *m,
                           long *status, cv_error *err) {
    char url[HUB_URL];
    cv_status st = build_url(c, rev, file, url, sizeof url, err);
    if (st != CV_OK) return st;
    for (int hop = 0; hop < 10; hop++) {
        memset(m, 0, sizeof *m);
        m->linked_size = m->content_length = m->range_start = -1;
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *hdrs = setup_request(c, url, m, 1);
        curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
        CV_DEBUG("hub: HEAD %s", url);
        CURLcode rc = curl_easy_perform(c->curl);
        curl_slist_free_all(hdrs);
        if (rc != CURLE_OK) return transport_error(c, rc, errbuf, err);
        c->answered = 1;
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
        if (*status < 300 || *status >= 400 || !m->location[0]) return CV_OK;
        char next[HUB_URL];
        int follow = 0;
        if ((st = redirect_target(url, m->location, next, sizeof next, &follow, err)) != CV_OK)
            return st;
        if (!follow) return CV_OK; /* another host (a CDN): the metadata is on this response */
        memcpy(url, next, sizeof url);
    }
    return cv_fail(err, CV_ERR_NET, "too many redirects for %s/%s on %s", c->model, file,
                   c->endpoint);
}

/* Strip a weak-validator prefix and surrounding quotes, as huggingface_hub does. */
static void normalize_etag(const char *in, char *out, size_t outsz) {
    if (strncmp(in, "W/", 2) == 0) in += 2;
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '"' && in[n - 1] == '"') {
        in++;
        n -= 2;
    }
    copy_value(out, outsz, in, n);
}

/* ------------------------------------------------------------------------------------------- */
/* Download                                                                                      */

typedef struct {
    hub_ctx *c;
    const char *name;
    int fd;
    long long base;    /* bytes already in the .incomplete file when the transfer started */
    long long written; /* bytes written by this transfer */
    long long total;   /* expected size, -1 if unknown */
    const http_meta *meta;
    int status_checked;
    int write_errno;
    int bad_range;
    int drawn;
    double last_draw;
    long long last_done;
} download;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    download *d = userdata;
    size_t n = size * nmemb;
    if (!d->status_checked) {
        d->status_checked = 1;
        long code = 0;
        curl_easy_getinfo(d->c->curl, CURLINFO_RESPONSE_CODE, &code);
        if (d->base > 0 && code == 200) { /* the server ignored Range: start from zero */
            if (ftruncate(d->fd, 0) != 0) {
                d->write_errno = errno;
                return 0;
            }
            d->base = 0;
        } else if (d->base > 0 && code == 206 && d->meta->range_start != d->base) {
            d->bad_range = 1;
            return 0;
        }
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(d->fd, ptr + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            d->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    d->written += (long long)n;
    return n;
}

/* "12.3 MB" style size for the progress bar. */
static void human_size(long long n, char *out, size_t outsz) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(out, outsz, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)ultotal, (void)ulnow;
    download *d = userdata;
    long long total = d->total > 0 ? d->total : d->base + (long long)dltotal;
    long long done = d->base + (long long)dlnow;
    double now = cv_now_ms();
    /* redraw at most every 100 ms, and once more when complete */
    if (dlnow == 0 || done == d->last_done || (now - d->last_draw < 100 && done != total)) return 0;
    d->last_draw = now;
    d->last_done = done;
    int pct = total > 0 ? (int)(100.0 * (double)done / (double)total) : 0;
    if (pct > 100) pct = 100;
    char bar[31], sdone[32], stotal[32];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    human_size(done, sdone, sizeof sdone);
    human_size(total, stotal, sizeof stotal);
    fprintf(stderr, "\r%-32.32s [%s] %3d%% %s / %s   ", d->name, bar, pct, sdone, stotal);
    d->drawn = 1;
    return 0;
}

static cv_status sha256_file(const char *path, char hex[65], cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_fail(err, CV_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 16);
    cv_status st = CV_OK;
    if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        st = cv_fail(err, CV_ERR_NOMEM, "cannot start sha256 of %s", path);
    } else {
        size_t n;
        while ((n = fread(buf, 1, 1 << 16, f)) > 0) EVP_DigestUpdate(md, buf, n);
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (ferror(f))
            st = cv_fail(err, CV_ERR_IO, "error reading %s", path);
        else if (EVP_DigestFinal_ex(md, digest, &len) != 1 || len != 32)
            st = cv_fail(err, CV_ERR_RUNTIME, "sha256 of %s failed", path);
        else
            for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    free(buf);
    EVP_MD_CTX_free(md);
    fclose(f);
    return st;
}

static int is_sha256_hex(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!isxdigit((unsigned char)s[n])) return 0;
    return n == 64;
}

/* GET `file` at the resolved commit into <blob>.incomplete (resuming it), verify it, and rename
 * it to <blob>. Called with the blob's lock held. */
static cv_status download_blob(hub_ctx *c, const char *file, const char *etag, long long expected,
                               const char *blob, cv_error *err) {
    char url[HUB_URL], part[HUB_PATH];
    cv_status st = build_url(c, c->commit, file, url, sizeof url, err);
    if (st != CV_OK) return st;
    if (fmt_path(part, sizeof part, err, "%s.incomplete", blob) != CV_OK) return CV_ERR_IO;

    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(part, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
        if (fd < 0) return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", part, strerror(errno));
        struct stat sb;
        long long have = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? (long long)sb.st_size : 0;
        if (expected >= 0 && have > expected) { /* not a prefix of this file: start over */
            if (ftruncate(fd, 0) != 0)
                have = -1;
            else
                have = 0;
        }
        http_meta meta;
        download d = {
            .c = c, .name = file, .fd = fd, .base = have, .total = expected, .meta = &meta};
        CURLcode rc = CURLE_OK;
        char errbuf[CURL_ERROR_SIZE] = "";
        long status = 0;
        if (have < 0) {
            d.write_errno = errno;
            rc = CURLE_WRITE_ERROR;
        } else if (expected < 0 || have < expected) {
            memset(&meta, 0, sizeof meta);
            struct curl_slist *hdrs = setup_request(c, url, &meta, 0);
            char range[64];
            if (have > 0) {
                snprintf(range, sizeof range, "Range: bytes=%lld-", have);
                hdrs = curl_slist_append(hdrs, range);
                curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
                CV_INFO("hub: resuming %s/%s at byte %lld", c->model, file, have);
            } else {
                CV_INFO("hub: downloading %s/%s (%lld bytes)", c->model, file, expected);
            }
            curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &d);
            curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
            if (c->progress) {
                curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
                curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
                curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, &d);
            }
            rc = curl_easy_perform(c->curl);
            curl_slist_free_all(hdrs);
            curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
            if (d.drawn) fputc('\n', stderr);
            if (d.written > 0) c->downloaded = 1;
        }
        int close_errno = close(fd) != 0 ? errno : 0;
        if (rc == CURLE_OK && close_errno) {
            d.write_errno = close_errno;
            rc = CURLE_WRITE_ERROR;
        }
        if (rc == CURLE_WRITE_ERROR && d.write_errno) {
            if (d.write_errno == ENOSPC || d.write_errno == EDQUOT)
                return cv_fail(err, CV_ERR_IO,
                               "disk full while downloading %s/%s into %s (%lld of %lld bytes "
                               "written); free some space and run again to resume",
                               c->model, file, part, d.base + d.written, expected);
            return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", part, strerror(d.write_errno));
        }
        if (d.bad_range) {
            unlink(part);
            return cv_fail(err, CV_ERR_NET,
                           "%s/%s: the server resumed at the wrong offset "
                           "(asked for byte %lld); the partial file was deleted, run again",
                           c->model, file, d.base);
        }
        if (rc == CURLE_HTTP_RETURNED_ERROR && status == 416 && have > 0 && attempt == 0) {
            unlink(part); /* the partial file does not fit the server's file: restart */
            continue;
        }
        if (rc == CURLE_HTTP_RETURNED_ERROR) {
            http_meta none;
            memset(&none, 0, sizeof none);
            return http_error(c, status, &none, file, err);
        }
        if (rc != CURLE_OK) {
            if (is_unreachable(rc) && !(rc == CURLE_OPERATION_TIMEDOUT && d.written > 0))
                return transport_error(c, rc, errbuf, err);
            return cv_fail(err, CV_ERR_NET,
                           "download of %s/%s from %s was interrupted after %lld of %lld bytes "
                           "(%s); the partial file %s is kept and the next run resumes it",
                           c->model, file, c->endpoint, d.base + d.written, expected,
                           errbuf[0] ? errbuf : curl_easy_strerror(rc), part);
        }
        /* Complete: check size and, for LFS files (etag = sha256), the content hash. */
        long long got = stat(part, &sb) == 0 ? (long long)sb.st_size : -1;
        if (expected >= 0 && got != expected) {
            unlink(part);
            return cv_fail(err, CV_ERR_NET,
                           "download of %s/%s is corrupt: expected %lld bytes, got %lld; the "
                           "file was deleted and not linked into the cache",
                           c->model, file, expected, got);
        }
        if (is_sha256_hex(etag)) {
            char hex[65];
            st = sha256_file(part, hex, err);
            if (st != CV_OK) return st;
            if (strcasecmp(hex, etag) != 0) {
                unlink(part);
                return cv_fail(err, CV_ERR_NET,
                               "download of %s/%s is corrupt: sha256 %s does not match the "
                               "expected %s; the file was deleted and not linked into the cache",
                               c->model, file, hex, etag);
            }
        }
        if (rename(part, blob) != 0)
            return cv_fail(err, CV_ERR_IO, "cannot rename %s to %s: %s", part, blob,
                           strerror(errno));
        return CV_OK;
    }
    return cv_fail(err, CV_ERR_NET, "%s/%s: cannot resume the partial download", c->model, file);
}

/* snapshots/<commit>/<file> -> ../../blobs/<etag> (one more ../ per directory in file). */
static cv_status link_pointer(hub_ctx *c, const char *file, const char *etag, cv_error *err) {
    char pointer[HUB_PATH], target[HUB_PATH] = "../../", tmp[HUB_PATH];
    cv_status st = snapshot_file(c, c->commit, file, pointer, sizeof pointer, err);
    if (st == CV_OK) st = make_parent_dirs(pointer, err);
    if (st != CV_OK) return st;
    size_t used = strlen(target);
    for (const char *p = file; *p; p++)
        if (*p == '/' && used + 3 < sizeof target) {
            memcpy(target + used, "../", 4);
            used += 3;
        }
    if (fmt_path(target + used, sizeof target - used, err, "blobs/%s", etag) != CV_OK ||
        fmt_path(tmp, sizeof tmp, err, "%s.tmp-%ld", pointer, (long)getpid()) != CV_OK)
        return CV_ERR_IO;
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, pointer) != 0) {
        int e = errno;
        unlink(tmp);
        return cv_fail(err, CV_ERR_IO, "cannot create the symlink %s -> %s: %s", pointer, target,
                       strerror(e));
    }
    return CV_OK;
}

/* refs/<revision> holds the commit (no newline), for offline use; not written for a commit. */
static cv_status write_ref(hub_ctx *c, cv_error *err) {
    if (strcmp(c->revision, c->commit) == 0) return CV_OK;
    char path[HUB_PATH];
    if (fmt_path(path, sizeof path, err, "%s/refs/%s", c->folder, c->revision) != CV_OK)
        return CV_ERR_IO;
    char *old = NULL;
    if (cv_is_file(path) && cv_read_file(path, &old, NULL, NULL) == CV_OK) {
        strip_whitespace(old);
        int same = strcmp(old, c->commit) == 0;
        free(old);
        if (same) return CV_OK;
    }
    cv_status st = make_parent_dirs(path, err);
    return st != CV_OK ? st : write_file_atomic(path, c->commit, err);
}

static void mark_missing(hub_ctx *c, const char *commit, const char *file) {
    char path[HUB_PATH];
    if (fmt_path(path, sizeof path, NULL, "%s/.no_exist/%s/%s", c->folder, commit, file) != CV_OK)
        return;
    if (make_parent_dirs(path, NULL) != CV_OK) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0) close(fd);
}

/* Take the per-blob lock <cache>/.locks/models--ORG--NAME/<etag>.lock (huggingface_hub's
 * filelock uses flock() on the same path, so the two tools exclude each other). */
static int lock_blob(hub_ctx *c, const char *etag, cv_error *err) {
    char path[HUB_PATH];
    if (make_dirs(c->locks, err) != CV_OK) return -1;
    if (fmt_path(path, sizeof path, err, "%s/%s.lock", c->locks, etag) != CV_OK) return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        cv_fail(err, CV_ERR_IO, "cannot open lock file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        CV_INFO("hub: waiting for another process downloading into the cache (lock %s)", path);
        while (flock(fd, LOCK_EX) != 0) {
            if (errno == EINTR) continue;
            cv_fail(err, CV_ERR_IO, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void unlock_blob(int fd) {
    flock(fd, LOCK_UN);
    close(fd);
}

/* Newer huggingface_hub marks its cache for backup tools (https://bford.info/cachedir/); same
 * text, best effort. */
static void write_cachedir_tag(hub_ctx *c) {
    char path[HUB_PATH];
    if (fmt_path(path, sizeof path, NULL, "%s/CACHEDIR.TAG", c->cache) != CV_OK ||
        path_exists(path) || make_dirs(c->cache, NULL) != CV_OK)
        return;
    write_file_atomic(path,
                      "Signature: 8a477f597d28d172789f06886806bc55\n"
                      "# This file is a cache directory tag created by huggingface_hub.\n"
                      "# For information about cache directory tags, see:\n"
                      "#\thttps://bford.info/cachedir/\n",
                      NULL);
}

typedef enum { FILE_REQUIRED, FILE_OPTIONAL, FILE_PROBE } fetch_mode;

/* Make snapshots/<commit>/<file> present (hf_hub_download). *found = 0 when the repo has no such
 * file (an error for FILE_REQUIRED). FILE_PROBE only asks whether it exists. */
static cv_status fetch_file(hub_ctx *c, const char *file, fetch_mode mode, int *found,
                            cv_error *err) {
    *found = 0;
    char path[HUB_PATH];
    cv_status st;
    if (c->commit[0]) { /* files of a known commit never change: use the cache without asking */
        if (snapshot_file(c, c->commit, file, path, sizeof path, err) != CV_OK) return CV_ERR_IO;
        if (path_exists(path)) {
            *found = 1;
            return CV_OK;
        }
        if (fmt_path(path, sizeof path, err, "%s/.no_exist/%s/%s", c->folder, c->commit, file) !=
            CV_OK)
            return CV_ERR_IO;
        if (path_exists(path) && mode != FILE_REQUIRED) return CV_OK;
    }
    http_meta m;
    long status = 0;
    st = head_file(c, c->commit[0] ? c->commit : c->revision, file, &m, &status, err);
    if (st != CV_OK) return st;
    if (status == 404 && (m.commit[0] || strcmp(m.error_code, "EntryNotFound") == 0)) {
        if (safe_component(m.commit)) mark_missing(c, m.commit, file);
        if (mode == FILE_REQUIRED)
            return cv_fail(err, CV_ERR_IO, "model '%s' (revision '%s') has no file '%s' on %s",
                           c->model, c->revision, file, c->endpoint);
        return CV_OK;
    }
    if (status >= 400) return http_error(c, status, &m, file, err);
    if (status < 200)
        return cv_fail(err, CV_ERR_NET, "%s/%s: unexpected HTTP %ld from %s", c->model, file,
                       status, c->endpoint);
    if (!m.commit[0] || !safe_component(m.commit))
        return cv_fail(err, CV_ERR_NET,
                       "%s/%s: the response from %s has no valid X-Repo-Commit header; is "
                       "HF_ENDPOINT a Hugging Face Hub?",
                       c->model, file, c->endpoint);
    char etag[192];
    normalize_etag(m.linked_etag[0] ? m.linked_etag : m.etag, etag, sizeof etag);
    if (!safe_component(etag))
        return cv_fail(err, CV_ERR_NET, "%s/%s: the response from %s has no usable ETag", c->model,
                       file, c->endpoint);
    long long size = m.linked_size >= 0 ? m.linked_size : status < 300 ? m.content_length : -1;

    if (!c->commit[0]) {
        if (strlen(m.commit) >= sizeof c->commit)
            return cv_fail(err, CV_ERR_NET, "%s/%s: X-Repo-Commit from %s is too long", c->model,
                           file, c->endpoint);
        memcpy(c->commit, m.commit, strlen(m.commit) + 1);
        st = write_ref(c, err);
        if (st != CV_OK) return st;
    } else if (strcmp(c->commit, m.commit) != 0) {
        return cv_fail(err, CV_ERR_NET, "%s/%s: %s answered commit %s while resolving commit %s",
                       c->model, file, c->endpoint, m.commit, c->commit);
    }
    *found = 1;
    if (mode == FILE_PROBE) return CV_OK;
    if (snapshot_file(c, c->commit, file, path, sizeof path, err) != CV_OK) return CV_ERR_IO;
    if (path_exists(path)) return CV_OK;

    char blob[HUB_PATH];
    if (fmt_path(blob, sizeof blob, err, "%s/blobs/%s", c->folder, etag) != CV_OK) return CV_ERR_IO;
    if (!cv_is_file(blob)) {
        write_cachedir_tag(c);
        st = make_parent_dirs(blob, err);
        if (st != CV_OK) return st;
        int lock = lock_blob(c, etag, err);
        if (lock < 0) return err ? err->code : CV_ERR_IO;
        /* another process may have finished it while we waited for the lock */
        st = cv_is_file(blob) ? CV_OK : download_blob(c, file, etag, size, blob, err);
        unlock_blob(lock);
        if (st != CV_OK) return st;
    }
    return link_pointer(c, file, etag, err);
}

/* ------------------------------------------------------------------------------------------- */
/* Resolution                                                                                    */

/* The distinct shard names listed in model.safetensors.index.json's weight_map. */
static cv_status read_index_text(const char *text, const char *path, char ***names, size_t *count,
                                 cv_error *err) {
    *names = NULL;
    *count = 0;
    cv_status st = CV_OK;
    cJSON *root = cJSON_Parse(text);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return cv_fail(err, CV_ERR_FORMAT, "%s: not JSON with a \"weight_map\" object", path);
    }
    char **list = NULL;
    size_t n = 0;
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, map) {
        if (!cJSON_IsString(item) || !safe_relpath(item->valuestring)) {
            st = cv_fail(err, CV_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a valid file name",
                         path, item->string ? item->string : "?");
            break;
        }
        size_t i = 0;
        while (i < n && strcmp(list[i], item->valuestring) != 0) i++;
        if (i < n) continue;
        char **grown = realloc(list, (n + 1) * sizeof *list);
        char *dup = grown ? strdup(item->valuestring) : NULL;
        if (grown) list = grown;
        if (!dup) {
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        list[n++] = dup;
    }
    cJSON_Delete(root);
    if (st == CV_OK && n == 0) st = cv_fail(err, CV_ERR_FORMAT, "%s: weight_map is empty", path);
    if (st != CV_OK) {
        for (size_t i = 0; i < n; i++) free(list[i]);
        free(list);
        return st;
    }
    *names = list;
    *count = n;
    return CV_OK;
}

static cv_status read_index(const char *path, char ***names, size_t *count, cv_error *err) {
    char *text = NULL;
    cv_status st = cv_read_file(path, &text, NULL, err);
    if (st != CV_OK) return st;
    st = read_index_text(text, path, names, count, err);
    free(text);
    return st;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static cv_status bin_only(const hub_ctx *c, cv_error *err) {
    return cv_fail(err, CV_ERR_UNSUPPORTED,
                   "model '%s' has only PyTorch .bin (pickle) weights, which CoreVital does not "
                   "load; convert to safetensors (transformers: model.save_pretrained(dir, "
                   "safe_serialization=True)) or choose a repo with model.safetensors",
                   c->model);
}

/* Check that a snapshot directory has config.json and complete safetensors weights. */
static cv_status check_snapshot(const hub_ctx *c, const char *dir, cv_error *err) {
    char path[HUB_PATH];
    if (cv_path_join(path, sizeof path, dir, "config.json", err) != CV_OK) return CV_ERR_IO;
    if (!cv_is_file(path))
        return cv_fail(err, CV_ERR_IO, "model '%s': %s is missing", c->model, path);
    if (cv_path_join(path, sizeof path, dir, "model.safetensors", err) != CV_OK) return CV_ERR_IO;
    if (cv_is_file(path)) return CV_OK;
    if (cv_path_join(path, sizeof path, dir, "model.safetensors.index.json", err) != CV_OK)
        return CV_ERR_IO;
    if (cv_is_file(path)) {
        char **shards;
        size_t n;
        cv_status st = read_index(path, &shards, &n, err);
        if (st != CV_OK) return st;
        for (size_t i = 0; i < n && st == CV_OK; i++) {
            char shard[HUB_PATH];
            st = cv_path_join(shard, sizeof shard, dir, shards[i], err);
            if (st == CV_OK && !cv_is_file(shard))
                st = cv_fail(err, CV_ERR_IO, "model '%s': shard %s is missing", c->model, shard);
        }
        free_names(shards, n);
        return st;
    }
    const char *bins[] = {"pytorch_model.bin", "pytorch_model.bin.index.json"};
    for (size_t i = 0; i < 2; i++) {
        if (cv_path_join(path, sizeof path, dir, bins[i], err) != CV_OK) return CV_ERR_IO;
        if (cv_is_file(path)) return bin_only(c, err);
    }
    return cv_fail(err, CV_ERR_IO,
                   "model '%s': %s has no model.safetensors or model.safetensors.index.json",
                   c->model, dir);
}

/* Resolve from the cache only: refs/<revision> (or the commit itself) -> snapshots/<commit>. */
static cv_status resolve_cached(hub_ctx *c, cv_hub_result *out, cv_error *err) {
    char commit[64] = "", path[HUB_PATH];
    if (is_commit_hash(c->revision)) {
        memcpy(commit, c->revision, 41);
    } else {
        char *text = NULL;
        if (fmt_path(path, sizeof path, err, "%s/refs/%s", c->folder, c->revision) != CV_OK)
            return CV_ERR_IO;
        if (cv_is_file(path) && cv_read_file(path, &text, NULL, NULL) == CV_OK) {
            strip_whitespace(text);
            if (safe_component(text)) snprintf(commit, sizeof commit, "%s", text);
            free(text);
        }
    }
    char dir[HUB_PATH] = "";
    if (commit[0] && fmt_path(dir, sizeof dir, err, "%s/snapshots/%s", c->folder, commit) != CV_OK)
        return CV_ERR_IO;
    if (!commit[0] || !cv_is_dir(dir))
        return cv_fail(err, CV_ERR_IO,
                       "model '%s' (revision '%s') is not in the Hugging Face cache %s", c->model,
                       c->revision, c->cache);
    cv_status st = check_snapshot(c, dir, err);
    if (st != CV_OK) return st;
    snprintf(out->dir, sizeof out->dir, "%s", dir);
    snprintf(out->commit, sizeof out->commit, "%s", commit);
    out->from_network = 0;
    return CV_OK;
}

static cv_status fetch_all(hub_ctx *c, cv_error *err) {
    int found = 0;
    cv_status st = fetch_file(c, "config.json", FILE_REQUIRED, &found, err);
    if (st != CV_OK) return st;
    st = fetch_file(c, "model.safetensors", FILE_OPTIONAL, &found, err);
    if (st != CV_OK) return st;
    if (!found) {
        st = fetch_file(c, "model.safetensors.index.json", FILE_OPTIONAL, &found, err);
        if (st != CV_OK) return st;
        if (found) {
            char index[HUB_PATH];
            char **shards;
            size_t n;
            st = snapshot_file(c, c->commit, "model.safetensors.index.json", index, sizeof index,
                               err);
            if (st == CV_OK) st = read_index(index, &shards, &n, err);
            if (st != CV_OK) return st;
            for (size_t i = 0; i < n && st == CV_OK; i++)
                st = fetch_file(c, shards[i], FILE_REQUIRED, &found, err);
            free_names(shards, n);
            if (st != CV_OK) return st;
        } else {
            const char *bins[] = {"pytorch_model.bin", "pytorch_model.bin.index.json"};
            for (size_t i = 0; i < 2; i++) {
                st = fetch_file(c, bins[i], FILE_PROBE, &found, err);
                if (st != CV_OK) return st;
                if (found) return bin_only(c, err);
            }
            return cv_fail(err, CV_ERR_IO,
                           "model '%s' (revision '%s') on %s has no model.safetensors or "
                           "model.safetensors.index.json",
                           c->model, c->revision, c->endpoint);
        }
    }
    static const char *optional[] = {
        "generation_config.json",  "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.json",     "merges.txt",
        "tokenizer.model"};
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
        st = fetch_file(c, optional[i], FILE_OPTIONAL, &found, err);
        if (st != CV_OK) return st;
    }
    return CV_OK;
}

cv_status cv_hub_resolve(const char *model, const char *revision, cv_hub_result *out,
                         cv_error *err) {
    memset(out, 0, sizeof *out);
    if (!model || !model[0]) return cv_fail(err, CV_ERR_USAGE, "no model given");
    if (cv_is_dir(model)) {
        if (fmt_path(out->dir, sizeof out->dir, err, "%s", model) != CV_OK) return CV_ERR_IO;
        return CV_OK;
    }
    if (!cv_hub_valid_repo_id(model))
        return cv_fail(err, CV_ERR_IO,
                       "model '%s' is neither a local directory nor a Hugging Face repo id "
                       "(\"org/name\" or \"name\")",
                       model);
    const char *rev = revision && revision[0] ? revision : "main";
    if (strlen(rev) >= 256 || !safe_relpath(rev))
        return cv_fail(err, CV_ERR_USAGE, "invalid revision '%s'", rev);

    hub_ctx *c = calloc(1, sizeof *c);
    if (!c) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    snprintf(c->model, sizeof c->model, "%s", model);
    snprintf(c->revision, sizeof c->revision, "%s", rev);
    const char *endpoint = env_nonempty("HF_ENDPOINT");
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint ? endpoint : "https://huggingface.co");
    for (size_t n = strlen(c->endpoint); n > 0 && c->endpoint[n - 1] == '/'; n--)
        c->endpoint[n - 1] = '\0';
    c->offline = env_truthy("HF_HUB_OFFLINE") || env_truthy("TRANSFORMERS_OFFLINE");
    c->progress = isatty(STDERR_FILENO);
    c->head_timeout = env_seconds("HF_HUB_ETAG_TIMEOUT", 10);
    c->download_timeout = env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10);

    char folder_name[160] = "models--";
    for (const char *p = model; *p; p++) {
        size_t len = strlen(folder_name);
        if (*p == '/')
            memcpy(folder_name + len, "--", 3);
        else {
            folder_name[len] = *p;
            folder_name[len + 1] = '\0';
        }
    }
    cv_status st = cv_hub_cache_dir(c->cache, sizeof c->cache, err);
    if (st == CV_OK) st = cv_path_join(c->folder, sizeof c->folder, c->cache, folder_name, err);
    if (st == CV_OK)
        st = fmt_path(c->locks, sizeof c->locks, err, "%s/.locks/%s", c->cache, folder_name);
    if (st == CV_OK) st = load_token(c, err);
    if (st != CV_OK) goto done;

    if (c->offline) {
        st = resolve_cached(c, out, err);
        if (st == CV_ERR_IO) /* not (completely) cached */
            cv_error_prefix(err, "HF_HUB_OFFLINE=1 forbids downloading (unset it to download)");
        goto done;
    }

    static int curl_ready = 0;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            st = cv_fail(err, CV_ERR_NET, "libcurl initialisation failed");
            goto done;
        }
        curl_ready = 1;
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        st = cv_fail(err, CV_ERR_NET, "libcurl initialisation failed");
        goto done;
    }
    if (is_commit_hash(c->revision)) memcpy(c->commit, c->revision, 41);
    st = fetch_all(c, err);
    if (st == CV_OK) {
        if (snapshot_file(c, c->commit, "", out->dir, sizeof out->dir, err) != CV_OK) {
            st = CV_ERR_IO;
            goto done;
        }
        out->dir[strlen(out->dir) - 1] = '\0'; /* drop the trailing '/' */
        st = check_snapshot(c, out->dir, err);
        snprintf(out->commit, sizeof out->commit, "%s", c->commit);
        out->from_network = c->downloaded;
    } else if (c->unreachable) {
        /* huggingface_hub falls back to the cache when the Hub cannot be reached */
        cv_error cached;
        c->commit[0] = '\0';
        if (resolve_cached(c, out, &cached) == CV_OK) {
            CV_WARN("%s; using the cached snapshot %s", err ? err->msg : "cannot reach the hub",
                    out->dir);
            st = CV_OK;
        }
    }
done:
    if (c->curl) curl_easy_cleanup(c->curl);
    memset(c->token, 0, sizeof c->token);
    free(c);
    if (st != CV_OK) {
        memset(out, 0, sizeof *out);
        /* The name could have meant either: say what was tried both ways. */
        cv_error_prefix(err, "no directory %s, and the Hub", model);
    }
    return st;
}

/* ------------------------------------------------------------------------------------------- */
/* Untrusted server input, in one call (tests/fuzz/fuzz_hub.c)                                   */

cv_status cv_hub_parse_untrusted(const char *headers, size_t n_headers, const char *body,
                                 const char *url, cv_error *err) {
    http_meta m;
    memset(&m, 0, sizeof m);
    m.linked_size = m.content_length = m.range_start = -1;
    /* libcurl hands the header callback one line at a time, CRLF included */
    for (size_t i = 0; i < n_headers;) {
        const char *nl = memchr(headers + i, '\n', n_headers - i);
        size_t len = nl ? (size_t)(nl - (headers + i)) + 1 : n_headers - i;
        char line[HUB_URL + 64];
        if (len < sizeof line) { /* libcurl caps a header line too (CURL_MAX_HTTP_HEADER) */
            memcpy(line, headers + i, len);
            line[len] = '\0';
            on_header(line, 1, len, &m);
        }
        i += len;
    }
    char etag[sizeof m.etag];
    normalize_etag(m.linked_etag[0] ? m.linked_etag : m.etag, etag, sizeof etag);
    if (m.location[0]) {
        char next[HUB_URL];
        int follow;
        cv_status st = redirect_target(url, m.location, next, sizeof next, &follow, err);
        if (st != CV_OK) return st;
    }
    if (body) {
        char **names;
        size_t count;
        cv_status st = read_index_text(body, "model.safetensors.index.json", &names, &count, err);
        if (st != CV_OK) return st;
        free_names(names, count);
    }
    return CV_OK;
}
