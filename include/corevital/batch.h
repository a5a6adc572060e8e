/* batch.h — many prompts through one loaded model: the prompt file, shards, and the batch index.
 *
 * Prompt file (`--prompts FILE`, `-` = stdin): JSONL when its first non-blank line starts with
 * '{' — one object per line with a string "prompt" and optional "id" (string or integer),
 * "max_new_tokens" (>= 1) and "seed" (integer) — otherwise plain text, one prompt per non-blank
 * line. A prompt's position p is its 0-based place among the prompts (blank lines do not count);
 * its id defaults to p written as six digits ("000012"). Ids name the trace files, so they are
 * 1-128 characters of [A-Za-z0-9._-], not starting with '.', and unique within the file.
 *
 * Index (`<out>/index.jsonl` or --index): one JSON line per finished prompt, appended and
 * fsync'ed as the prompt finishes: {"id", "position", "status" ("ok", "error" or "interrupted"),
 * "trace" (path or null), "trace_id", "prompt_tokens", "generated_tokens", "elapsed_ms", "risk"
 * (extensions.risk.risk_score or null), "error" (message or null)}. A later line for the same id
 * wins. `--resume` skips ids whose last line is "ok" or "error"; "interrupted" ones run again. */
#ifndef COREVITAL_BATCH_H
#define COREVITAL_BATCH_H

#include "corevital/common.h"

#include <stdint.h>

#define CV_BATCH_ID_MAX 128

typedef struct {
    char *id;
    char *prompt;
    size_t position;    /* 0-based among the prompts */
    size_t line;        /* 1-based line in the file, for messages */
    int max_new_tokens; /* 0 = the configuration's */
    int has_seed;
    int64_t seed;
} cv_batch_item;

typedef struct {
    cv_batch_item *items;
    size_t n;
    int jsonl; /* the file was JSONL */
} cv_batch;

/* Read and parse a prompt file (path "-" = stdin). Errors name the file and line (CV_ERR_FORMAT,
 * CV_ERR_IO); an empty file is an error too. */
cv_status cv_batch_load(const char *path, cv_batch *b, cv_error *err);
cv_status cv_batch_parse(const char *text, size_t len, const char *name, cv_batch *b,
                         cv_error *err);
void cv_batch_free(cv_batch *b);

/* "K/N" with 1 <= K <= N <= 1000000: shard K of N runs the prompts at positions p with
 * p % N == K - 1. Returns 0, or -1 when s is not of that form. */
int cv_shard_parse(const char *s, int *k, int *n);
static inline int cv_shard_has(size_t position, int k, int n) {
    return n <= 1 || (int)(position % (size_t)n) == k - 1;
}

/* One index line. Strings may be NULL (null). */
typedef struct {
    const char *id;
    size_t position;
    const char *status;
    const char *trace;
    const char *trace_id;
    int64_t prompt_tokens, generated_tokens, elapsed_ms;
    int has_risk;
    double risk;
    const char *error;
} cv_index_record;

/* Append one record as one line with one write(2), then fsync (O_APPEND: lines of concurrent
 * writers never interleave). */
cv_status cv_index_append(const char *path, const cv_index_record *r, cv_error *err);

/* The ids an index says are done (last status "ok" or "error"), malloc'd array of malloc'd
 * strings, sorted (for cv_index_has). A missing index is an empty list. Lines that do not parse
 * (a line cut short by a crash) are skipped; their number goes to *n_bad. */
cv_status cv_index_load_done(const char *path, char ***ids, size_t *n, size_t *n_bad,
                             cv_error *err);
int cv_index_has(char *const *ids, size_t n, const char *id);
void cv_index_free(char **ids, size_t n);

#endif
