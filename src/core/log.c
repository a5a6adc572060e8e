/* log.c — leveled logging to stderr with a timestamp, like Python's logging.basicConfig. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static cv_log_level g_level = CV_LOG_INFO;

void cv_log_set_level(cv_log_level level) {
    g_level = level;
}
cv_log_level cv_log_get_level(void) {
    return g_level;
}

int cv_log_parse_level(const char *s, cv_log_level *out) {
    static const struct {
        const char *name;
        cv_log_level level;
    } names[] = {{"DEBUG", CV_LOG_DEBUG},
                 {"INFO", CV_LOG_INFO},
                 {"WARNING", CV_LOG_WARNING},
                 {"ERROR", CV_LOG_ERROR}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    return -1;
}

static const char *level_name(cv_log_level l) {
    switch (l) {
    case CV_LOG_DEBUG:
        return "DEBUG";
    case CV_LOG_INFO:
        return "INFO";
    case CV_LOG_WARNING:
        return "WARNING";
    case CV_LOG_ERROR:
        return "ERROR";
    }
    return "?";
}

void cv_log(cv_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s - corevital - %s - ", when, level_name(level));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
