/* gen_health.h — the generation loop's side of the health layer (HEALTH.md): what the loop does
 * on the backend after each forward (cos_prev against the previous step's final vector, the
 * prompt surprisals from the prefill's final-norm rows), and the finalization of each step's
 * health records into the trace's `extensions` and the run-level accumulators (src/health/).
 * Internal to src/model/generate.c. */
#ifndef COREVITAL_GEN_HEALTH_H
#define COREVITAL_GEN_HEALTH_H

#include "corevital/health.h"
#include "corevital/generate.h"

typedef struct cv_gen_health cv_gen_health;

/* NULL *out (and CV_OK) when health is off (cfg->health.enabled 0 or not instrumented). */
cv_status cv_gen_health_open(cv_gen_health **out, cv_session *s, const cv_config *cfg, int P,
                             int instrumented, cv_error *err);
void cv_gen_health_close(cv_gen_health *g);

/* The health records of a pass: prompt_pass for the prefill (decoder-only) or the encoder. */
void cv_gen_health_layout(const cv_gen_health *g, cv_stats_layout *lay, int prompt_pass);

/* After the forward of step i (backend side, before the arena is downloaded): prompt surprisals
 * into the arena (prompt pass), cos_prev against the previous step's vector. A prompt run in
 * chunks (model.h cv_prefill_chunks) calls it after each chunk's forward, row0 the chunk's first
 * prompt row (0 otherwise); the last chunk's call is the step's. */
cv_status cv_gen_health_after_forward(cv_gen_health *g, int i, double *dev_arena,
                                      const cv_stats_layout *lay, const int32_t *prompt, int row0,
                                      cv_error *err);

/* Finalize step i from its downloaded records: the chosen token and its raw logit, the step's
 * timeline entry (extensions filled; may be NULL when no report is kept). *stop gets the name of
 * a --stop-on condition that now holds, or NULL. */
cv_status cv_gen_health_step(cv_gen_health *g, int i, const double *host,
                             const cv_stats_layout *lay, int32_t token, float token_logit,
                             cv_timeline_step *step, const char **stop, cv_error *err);

/* The encoder's records (seq2seq): encoder layers' extensions, the prompt analysis. */
cv_status cv_gen_health_encoder(cv_gen_health *g, const double *host, const cv_stats_layout *lay,
                                cv_report *rep, cv_error *err);

/* Run-level extensions (prompt_analysis, flags, risk, ..., and health_stop when --stop-on fired
 * at step_index stop_step). */
cv_status cv_gen_health_finish(cv_gen_health *g, cv_report *rep, const char *prompt,
                               const char *stop, int64_t stop_step, cv_error *err);

#endif
