/* perf.h — the `--perf` performance monitor (SPEC §6): a nested operation timer on the monotonic
 * clock, per-step statistics for repeated work, the extensions.performance summary, the
 * `<trace>_performance_detailed.json` breakdown, and cv_run_perf, the timed version of cv_run
 * (with the cold-load / warm-up / baseline procedure of strict mode).
 *
 * The timer is a tree of operations. cv_perf_begin opens a child of the innermost open operation
 * (a root operation — a "parent" in the summary — when none is open), cv_perf_end closes it.
 * Repeated work that would make thousands of nodes (decode steps) is recorded as samples on the
 * open operation instead (cv_perf_sample): count / min / max / avg, kept as running values, so a
 * sample costs no allocation. Siblings may share a name; the detailed file keeps every one of
 * them (the second "x" becomes "x#1", the third "x#2", ...).
 *
 * Cost: begin + end is two clock reads and a few stores (no allocation once the node array has
 * grown); cv_perf_self_overhead_ns measures it, docs/perf.md states the measured figure.
 *
 * Typical use (the CLI): remember t0 = cv_now_ms() before loading the configuration, create the
 * monitor with that start, record the config_load / setup_logging intervals it measured, then
 * cv_run_perf + cv_perf_attach. Single-threaded: call it from the thread that runs the job. */
#ifndef COREVITAL_PERF_H
#define COREVITAL_PERF_H

#include "corevital/common.h"
#include "corevital/generate.h"
#include "corevital/report.h"

#include <cjson/cJSON.h>
#include <stdint.h>

typedef enum { CV_PERF_SUMMARY = 0, CV_PERF_DETAILED, CV_PERF_STRICT } cv_perf_mode;

typedef struct cv_perf cv_perf;

/* Operation names longer than this are truncated. */
#define CV_PERF_NAME_MAX 63
/* Deepest nesting of open operations; deeper begins are counted but not recorded. */
#define CV_PERF_MAX_DEPTH 32

/* "summary", "detailed" or "strict" -> mode; anything else is CV_ERR_CONFIG. */
cv_status cv_perf_parse_mode(const char *s, cv_perf_mode *out, cv_error *err);
const char *cv_perf_mode_name(cv_perf_mode m);

/* New monitor for `mode` ("summary" / "detailed" / "strict"). The run clock starts at
 * run_start_ms (a cv_now_ms() value taken by the caller, e.g. at CLI start), or now when it is 0.
 */
cv_status cv_perf_create(const char *mode, double run_start_ms, cv_perf **out, cv_error *err);
void cv_perf_free(cv_perf *p);
cv_perf_mode cv_perf_get_mode(const cv_perf *p);

/* Open / close an operation now. cv_perf_end closes the innermost open operation named `name`
 * (NULL = the innermost one), closing anything still open inside it at the same instant — what
 * happens when an error skips inner ends. An end that matches no open operation is ignored
 * and logged once as a warning. Safe with p == NULL (no-ops), so callers need no `if`. */
void cv_perf_begin(cv_perf *p, const char *name);
void cv_perf_end(cv_perf *p, const char *name);
/* The same with explicit cv_now_ms()-scale times (tests, intervals measured by a caller). */
void cv_perf_begin_at(cv_perf *p, const char *name, double t_ms);
void cv_perf_end_at(cv_perf *p, const char *name, double t_ms);
/* A completed operation [start_ms, end_ms] under the innermost open one (e.g. config_load,
 * measured before the monitor existed). */
void cv_perf_record(cv_perf *p, const char *name, double start_ms, double end_ms);
/* One per-step duration on the innermost open operation (ignored when none is open). */
void cv_perf_sample(cv_perf *p, double ms);

/* Stop the run clock (end_ms 0 = now); operations still open are closed at that instant.
 * total_wall_time_ms = end - start. Only the first call counts. */
void cv_perf_mark_end(cv_perf *p, double end_ms);

/* Strict-mode measurements (SPEC §6): the cold load, the two warm-ups together, the
 * uninstrumented baseline and the instrumented inference. In the summary the model_load parent
 * reports original_model_load_ms (as the Python reference does). */
typedef struct {
    double original_model_load_ms;
    double warmup_ms;
    double baseline_ms;
    double instrumented_inference_ms;
} cv_perf_strict;
void cv_perf_set_strict(cv_perf *p, const cv_perf_strict *s);

/* Generation hooks (generate.h) that forward begin / end / step to this monitor. */
void cv_perf_hooks(cv_perf *p, cv_gen_hooks *out);

/* ---- results ---- */

/* extensions.performance: {total_wall_time_ms, parent_operations [{name, ms, pct}],
 * unaccounted_time {ms, pct}, detailed_file (string or null), + in strict mode
 * original_model_load_ms, warmup_ms, baseline_ms, instrumented_inference_ms,
 * inference_overhead_ms, inference_overhead_pct, corevital_overhead_ms, corevital_overhead_pct}.
 * ms and pct are rounded to 2 decimals like Python's round(). NULL when out of memory. */
cJSON *cv_perf_summary_json(const cv_perf *p, const char *detailed_file);
/* The detailed file's object: {total_wall_time_ms, breakdown {name: {ms, pct, per_step?,
 * children?}}, trace_id (first 8 characters)}. NULL when out of memory. */
cJSON *cv_perf_detailed_json(const cv_perf *p, const char *trace_id);
/* "<trace path without .json>_performance_detailed.json". */
cv_status cv_perf_detailed_path(const char *trace_path, char *out, size_t out_size, cv_error *err);

/* Finish the monitor (cv_perf_mark_end if not done) and store the summary in
 * rep->extensions.performance. In detailed / strict mode first write the detailed file next to
 * the trace (directory created if missing) and put its path in detailed_file. trace_path is
 * the trace file's path; NULL = rep->run_config.sink.target. */
cv_status cv_perf_attach(cv_perf *p, cv_report *rep, const char *trace_path, cv_error *err);

/* The monitor's own cost: average nanoseconds of one empty begin + end pair, over `pairs` pairs
 * on a scratch monitor. */
double cv_perf_self_overhead_ns(int pairs);

/* ---- the timed run (perf_run.c) ---- */

/* cv_run with the monitor on: model_load (children resolve, backend_init, tokenizer_load,
 * weights_load), tokenize, model_inference (children prefill / encoder_forward, decode_loop with
 * per-step samples), report_build (model, prompt and run_config parts of the report), then the
 * run clock stops. Strict mode adds, after tokenize, two warm-up generations and one
 * uninstrumented baseline with the same seed, and fails (CV_ERR_RUNTIME) if the instrumented
 * run's tokens differ from the baseline's. The caller creates `p` (and may already have
 * recorded config_load / setup_logging), then calls cv_perf_attach. */
cv_status cv_run_perf(const cv_config *cfg, const char *prompt, cv_report *out, cv_perf *p,
                      cv_error *err);

/* Strict mode's check: CV_OK when the baseline's and the instrumented run's generated ids are
 * identical, else CV_ERR_RUNTIME naming the first difference. */
cv_status cv_perf_same_tokens(const int32_t *baseline, size_t n_baseline,
                              const int32_t *instrumented, size_t n_instrumented, cv_error *err);

#endif
