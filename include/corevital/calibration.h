/* calibration.h — baselines of "normal" for one model (`corevital calibrate`) and the divergence
 * of a run from them (`run --calibration baseline.json`, HEALTH.md §8).
 *
 * A baseline pools, over every step of every calibration run:
 *   - per layer j and statistic s (hidden mean, std, l2_norm_mean, max_abs; attention
 *     entropy_mean, entropy_min, concentration_max): the per-step values of layers[j];
 *   - per step-level metric (entropy = entropy_bits, margin = top_k_margin, surprisal =
 *     surprisal_bits, from timeline[i].extensions.health): the per-step values.
 * Each pool keeps a streaming Welford count / mean / M2 (sample std), min, max, and a uniform
 * reservoir of CV_CAL_RESERVOIR values for p5 / median / p95 (exact while count <= the
 * reservoir; HEALTH.md §8's percentile(p) = sorted[min(floor(n p / 100), n - 1)]). The baseline
 * carries the model's identity (hf_id, revision, dtype, architecture, num_layers, hidden_size,
 * num_attention_heads) and is refused for any other model.
 *
 * Applying it writes extensions.calibration = {divergence_score, anomalies, baseline_model_id,
 * baseline_num_runs} exactly as HEALTH.md §8 (z over the step metrics, |z| > 3 anomalies
 * "Step {step_index}: <metric> z-score {z:.1f}", divergence_score = min(1, mean|z| / 6)), then
 * ours: layers [{layer_index, z {stat: mean over steps of the step's z}, max_abs_z, divergence}],
 * flagged_layers (layers with a statistic whose mean z is beyond +-3), layer_anomalies ("Layer j:
 * <stat> z-score z"), and per_step [{step_index, z {metric: z}, layer_mean_abs_z, divergence}]
 * with a step's divergence = min(1, mean |z| over its step metrics and layer statistics / 6).
 * z = (v - mean) / std, 0 when std < 1e-10 (HEALTH.md §8). */
#ifndef COREVITAL_CALIBRATION_H
#define COREVITAL_CALIBRATION_H

#include "corevital/common.h"
#include "corevital/report.h"

#include <stdio.h>

#define CV_CAL_RESERVOIR    4096
#define CV_CAL_LAYER_STATS  7
#define CV_CAL_STEP_METRICS 3

extern const char *const cv_cal_layer_stat_names[CV_CAL_LAYER_STATS];   /* "hidden.mean", ... */
extern const char *const cv_cal_step_metric_names[CV_CAL_STEP_METRICS]; /* "entropy", ... */

typedef struct cv_baseline cv_baseline;

/* An empty baseline for the model a report describes (rep->model), to accumulate runs into. */
cv_status cv_baseline_new(const cv_model_info *model, cv_baseline **out, cv_error *err);
/* Pool one finished run (its timeline and step health). A run of another model is refused. */
cv_status cv_baseline_add_run(cv_baseline *b, const cv_report *rep, cv_error *err);
size_t cv_baseline_num_runs(const cv_baseline *b);
/* Write the baseline as JSON (atomically: temp file + rename). */
cv_status cv_baseline_write(const cv_baseline *b, const char *path, cv_error *err);
/* Read a baseline file (CV_ERR_FORMAT naming what is wrong with it). */
cv_status cv_baseline_load(const char *path, cv_baseline **out, cv_error *err);
void cv_baseline_free(cv_baseline *b);

/* CV_ERR_USAGE naming the first difference when the baseline was made for another model. */
cv_status cv_baseline_check_model(const cv_baseline *b, const cv_model_info *model, cv_error *err);
/* Add extensions.calibration to the report (replacing one already there). */
cv_status cv_baseline_apply(const cv_baseline *b, cv_report *rep, cv_error *err);

/* The console lines for a report that has extensions.calibration: divergence, the layers and
 * steps furthest from the baseline (nothing when there is none). */
void cv_calibration_print(FILE *out, const cv_report *rep);

#endif
