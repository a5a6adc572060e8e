/* generate.h — the generation loop as a reusable session: load once (cv_session_open), then
 * generate as many times as needed (warm-ups, an uninstrumented baseline and the instrumented run
 * of `--perf strict`, benchmarks) with the statistics on or off. cv_run (run.h) is
 * open + tokenize + one instrumented generation + the report. */
#ifndef COREVITAL_GENERATE_H
#define COREVITAL_GENERATE_H

#include "corevital/config.h"
#include "corevital/hub.h"
#include "corevital/model.h"
#include "corevital/report.h"
#include "corevital/tokenizer.h"

typedef struct {
    cv_backend *be;
    cv_model *m;
    cv_tokenizer *tok;
    cv_hub_result hub;
    cv_sketch sketch;   /* built once for the model's hidden size */
    const char *device; /* "cpu" or "cuda": what actually runs */
} cv_session;

/* Optional per-phase timing callbacks (the --perf monitor hooks in here); all may be NULL. */
typedef struct {
    void *user;
    void (*begin)(void *user, const char *name);
    void (*end)(void *user, const char *name);
    void (*step)(void *user, double ms); /* one decode step's duration */
} cv_gen_hooks;

cv_status cv_session_open(const cv_config *cfg, cv_session **out, const cv_gen_hooks *hooks,
                          cv_error *err);
void cv_session_close(cv_session *s);

/* Tokenize the prompt with the tokenizer's default special tokens (malloc'd ids). */
cv_status cv_session_tokenize(cv_session *s, const char *prompt, int32_t **ids, size_t *n,
                              cv_error *err);

/* Generate from prompt ids. instrumented = 0 runs the same ops with no statistic records (the
 * baseline). When rep is not NULL the timeline, generated info and summary are filled in.
 * out_ids (optional) receives the generated ids (malloc'd), out_n their count. */
cv_status cv_session_generate(cv_session *s, const cv_config *cfg, const int32_t *prompt, size_t P,
                              int instrumented, cv_report *rep, int32_t **out_ids, size_t *out_n,
                              double *elapsed_ms, const cv_gen_hooks *hooks, cv_error *err);

/* Greedy decoding of decoder-only models keeps the chosen token (and its position) on the
 * backend between steps (backend.h CV_SP_*): 1 unless the environment has CV_STEP_ON_DEVICE=0,
 * which passes each token from the host as before (for comparisons; results are the same). */
int cv_step_on_device_enabled(void);

/* Interruption (SIGINT / SIGTERM in the CLI): a signal handler stores the signal number with
 * cv_generate_request_stop (async-signal-safe); the loop finishes the step it is in, stops, and
 * records GENERATION_INTERRUPTED with the step in the report, which is complete and valid.
 * cv_generate_stop_signal returns the stored signal (0: none); cv_generate_reset_stop clears it. */
void cv_generate_request_stop(int signo);
int cv_generate_stop_signal(void);
void cv_generate_reset_stop(void);

/* Fill rep->model and rep->prompt for this session. */
cv_status cv_session_fill_report(cv_session *s, const cv_config *cfg, const char *prompt,
                                 const int32_t *ids, size_t P, cv_report *rep, cv_error *err);

#endif
