/* log.h — leveled logging to stderr (SPEC §1 --log_level). */
#ifndef COREVITAL_LOG_H
#define COREVITAL_LOG_H

typedef enum {
    CV_LOG_DEBUG = 10,
    CV_LOG_INFO = 20,
    CV_LOG_WARNING = 30,
    CV_LOG_ERROR = 40
} cv_log_level;

void cv_log_set_level(cv_log_level level);
cv_log_level cv_log_get_level(void);
/* Parse "DEBUG", "INFO", "WARNING", "ERROR"; returns 0 on success. */
int cv_log_parse_level(const char *s, cv_log_level *out);
void cv_log(cv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CV_DEBUG(...) cv_log(CV_LOG_DEBUG, __VA_ARGS__)
#define CV_INFO(...)  cv_log(CV_LOG_INFO, __VA_ARGS__)
#define CV_WARN(...)  cv_log(CV_LOG_WARNING, __VA_ARGS__)
#define CV_ERROR(...) cv_log(CV_LOG_ERROR, __VA_ARGS__)

#endif
