/* common.h — status codes, the error record every library function fills, small helpers.
 *
 * Library code never exits or aborts: a function that can fail returns cv_status and, on
 * failure, writes a one-line message with context (file, tensor, key, offset) into a cv_error
 * supplied by the caller. The CLI turns that into `error: <msg>` and an exit code (SPEC §1). */
#ifndef COREVITAL_COMMON_H
#define COREVITAL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define COREVITAL_VERSION "0.2.0"

typedef enum {
    CV_OK = 0,
    CV_ERR_IO,          /* file missing, unreadable, short read, disk full */
    CV_ERR_FORMAT,      /* malformed input: safetensors, JSON, YAML, tokenizer.json */
    CV_ERR_CONFIG,      /* bad configuration value or key */
    CV_ERR_UNSUPPORTED, /* valid input we do not handle (architecture, dtype, feature) */
    CV_ERR_NOMEM,       /* allocation failed */
    CV_ERR_NET,         /* HTTP / network failure */
    CV_ERR_USAGE,       /* command-line usage error (exit 2) */
    CV_ERR_RUNTIME      /* anything else that went wrong while running */
} cv_status;

typedef struct {
    cv_status code;
    char msg[1024];
} cv_error;

/* Record an error (printf-style) and return `code`, so callers can write
 *   return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' ...", path, name);
 * `err` may be NULL (the message is then dropped). */
cv_status cv_fail(cv_error *err, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing error message with more context: "ctx: old message". */
cv_status cv_error_prefix(cv_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Human-readable name of a status code ("io error", "format error", ...). */
const char *cv_status_name(cv_status s);

/* Checked size arithmetic: return 0 on overflow, 1 on success. */
static inline int cv_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline int cv_add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Read a whole file into a NUL-terminated heap buffer (caller frees). */
cv_status cv_read_file(const char *path, char **out, size_t *len, cv_error *err);

/* Join two path parts with '/', into out (size outsz); fails if it does not fit. */
cv_status cv_path_join(char *out, size_t outsz, const char *a, const char *b, cv_error *err);

/* 1 if path exists and is a regular file / directory. */
int cv_is_file(const char *path);
int cv_is_dir(const char *path);

/* Host memory for large, long-lived buffers the CPU streams (weights, KV caches): 64-byte
 * aligned, not zero-filled, released with free(); from 2 MiB up it is 2 MiB aligned and asks
 * the kernel for huge pages (src/core/hostmem.c), unless CV_HUGEPAGES=0. NULL on failure. */
void *cv_host_alloc(size_t bytes);
int cv_hugepages_enabled(void); /* 0 when the environment sets CV_HUGEPAGES=0 */
int cv_hugepages_env(void);     /* CV_HUGEPAGES: 0 ("0"), 1 ("1"), -1 (unset or other) */

/* A bump arena in one anonymous reservation of cap bytes, 2 MiB aligned and asking for huge
 * pages; pages are backed when first written. take: 64-byte aligned, NULL when full; the memory
 * is released all at once by cv_host_arena_free. reserve returns 0, or -1 (a left zeroed). */
typedef struct {
    void *map;
    size_t map_len;
    char *base;
    size_t cap, used;
} cv_host_arena;
int cv_host_arena_reserve(cv_host_arena *a, size_t cap);
void *cv_host_arena_take(cv_host_arena *a, size_t bytes);
int cv_host_arena_owns(const cv_host_arena *a, const void *p);
void cv_host_arena_free(cv_host_arena *a);

/* Monotonic clock in milliseconds (double). */
double cv_now_ms(void);

#endif
