/* error.c — cv_error helpers and small file/path/time utilities (common.h). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

cv_status cv_fail(cv_error *err, cv_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

cv_status cv_error_prefix(cv_error *err, const char *fmt, ...) {
    if (!err) return CV_ERR_RUNTIME;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* "prefix: old message", truncated to the buffer */
    size_t pl = strlen(prefix), cap = sizeof err->msg;
    if (pl + 2 >= cap) pl = cap - 3;
    size_t ol = strlen(err->msg);
    if (pl + 2 + ol >= cap) ol = cap - pl - 3;
    memmove(err->msg + pl + 2, err->msg, ol);
    memcpy(err->msg, prefix, pl);
    err->msg[pl] = ':';
    err->msg[pl + 1] = ' ';
    err->msg[pl + 2 + ol] = '\0';
    return err->code;
}

const char *cv_status_name(cv_status s) {
    switch (s) {
    case CV_OK:
        return "ok";
    case CV_ERR_IO:
        return "io error";
    case CV_ERR_FORMAT:
        return "format error";
    case CV_ERR_CONFIG:
        return "configuration error";
    case CV_ERR_UNSUPPORTED:
        return "unsupported";
    case CV_ERR_NOMEM:
        return "out of memory";
    case CV_ERR_NET:
        return "network error";
    case CV_ERR_USAGE:
        return "usage error";
    case CV_ERR_RUNTIME:
        return "runtime error";
    }
    return "unknown error";
}

cv_status cv_read_file(const char *path, char **out, size_t *len, cv_error *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return cv_fail(err, CV_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return cv_fail(err, CV_ERR_IO, "%s: cannot determine size", path);
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory reading %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return cv_fail(err, CV_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, n);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = (size_t)n;
    return CV_OK;
}

cv_status cv_path_join(char *out, size_t outsz, const char *a, const char *b, cv_error *err) {
    size_t la = strlen(a);
    int sep = la > 0 && a[la - 1] != '/';
    int n = snprintf(out, outsz, "%s%s%s", a, sep ? "/" : "", b);
    if (n < 0 || (size_t)n >= outsz) return cv_fail(err, CV_ERR_IO, "path too long: %s/%s", a, b);
    return CV_OK;
}

int cv_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cv_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

double cv_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
