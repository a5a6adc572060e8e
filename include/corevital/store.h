/* store.h — the run store: one SQLite file that records every run (`--store PATH.db`,
 * `store.path` in YAML), queried by `corevital runs ls|show|export|merge`.
 *
 * Tables (schema 1, meta.schema_version):
 *   runs    one row per trace: trace_id (primary key), created_at (the trace's created_at_utc,
 *           so text order is time order), model, revision, architecture, dtype, device,
 *           quantization, prompt_hash (extensions.fingerprint.prompt_hash), prompt and output
 *           text, token counts, elapsed_ms, warnings, risk (extensions.risk.risk_score), flags
 *           (the names of the health flags that fired, comma-separated) and health_flags (the
 *           JSON object), trace_path, stored_at. Indexed by time, model + time, prompt hash, risk.
 *   steps   one narrow row per timeline step: trace_id, step (step_index), token id and text,
 *           logits entropy and margin (nats, schema 0.2.0), and the step's health values
 *           (timeline[i].extensions.health: entropy_bits, perplexity, surprisal_bits,
 *           top_k_margin, topk_mass, cos_prev). Primary key (trace_id, step).
 *   traces  the trace file's exact bytes, gzip-compressed (zlib): `runs export` gives back a
 *           file byte-identical to the one the local sink wrote.
 * Concurrency: WAL journal, a 60 s busy timeout and one BEGIN IMMEDIATE transaction per run, so
 * several batch processes can write one store; synchronous=FULL, so a crash loses at most the
 * run whose transaction had not committed. */
#ifndef COREVITAL_STORE_H
#define COREVITAL_STORE_H

#include "corevital/common.h"

#include <stdio.h>
#include <time.h>

typedef struct cv_store cv_store;

/* Open a store. create = 1 makes the file (and its schema) when missing; create = 0 requires an
 * existing CoreVital store (CV_ERR_IO when the file is missing, CV_ERR_FORMAT when it is not a
 * SQLite database or has no runs table). */
cv_status cv_store_open(const char *path, int create, cv_store **out, cv_error *err);
void cv_store_close(cv_store *s); /* NULL is fine */

/* Record one run from the trace file's bytes exactly as written (json, len) and where they were
 * written. The columns are read from the JSON; a run already in the store is replaced. One
 * transaction: the run, its steps and the compressed trace appear together or not at all. */
cv_status cv_store_add_trace(cv_store *s, const char *json, size_t len, const char *trace_path,
                             cv_error *err);

/* `runs ls` filters: model (exact hf_id) and since_utc ("YYYY-MM-DDTHH:MM:SSZ") may be NULL;
 * limit <= 0 means no limit. Newest first. */
typedef struct {
    const char *model;
    const char *since_utc;
    long limit;
} cv_store_query;

/* Print matching runs as a table (one line each); *n_out receives their number. */
cv_status cv_store_list(cv_store *s, const cv_store_query *q, FILE *out, size_t *n_out,
                        cv_error *err);

/* Resolve an id or a unique prefix of one to the full trace id (37 bytes). CV_ERR_RUNTIME with
 * "no run ..." or "... is ambiguous (N runs)" otherwise. */
cv_status cv_store_resolve(cv_store *s, const char *id_prefix, char id[37], cv_error *err);

/* Print one run: every column, then its steps. */
cv_status cv_store_show(cv_store *s, const char *id, FILE *out, cv_error *err);

/* The trace's bytes, decompressed (malloc'd; *len bytes plus a NUL). */
cv_status cv_store_export(cv_store *s, const char *id, char **json, size_t *len, cv_error *err);

/* Copy every run of the stores srcs[0..n) into dst (created when missing). A trace id already in
 * dst is kept as it is. *added receives the number of runs copied. */
cv_status cv_store_merge(const char *dst, const char *const *srcs, size_t n, size_t *added,
                         cv_error *err);

/* `--since`: "30m", "2h", "1d", "1w" (before now), "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS[Z]"
 * (UTC) into "YYYY-MM-DDTHH:MM:SSZ". Returns 0, or -1 for anything else. */
int cv_store_parse_since(const char *s, time_t now, char out[21]);

/* gzip (RFC 1952) a buffer and back, with zlib. Outputs are malloc'd. */
cv_status cv_gzip(const void *in, size_t n, unsigned char **out, size_t *out_n, cv_error *err);
cv_status cv_gunzip(const void *in, size_t n, size_t expect, char **out, size_t *out_n,
                    cv_error *err);

#endif
