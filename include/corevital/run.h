/* run.h — the product's main job as one library call: load the model named by the config,
 * tokenize the prompt, generate with fused statistics, and fill a report (SPEC §3).
 * The CLI (src/cli) parses options into a cv_config, calls cv_run, then hands the report to the
 * sinks. struct cv_config is defined in config.h, struct cv_report in report.h. */
#ifndef COREVITAL_RUN_H
#define COREVITAL_RUN_H

#include "corevital/common.h"

typedef struct cv_config cv_config;
typedef struct cv_report cv_report;

/* Run generation for `prompt` with `cfg`; on success `out` holds the complete report (the caller
 * frees it with cv_report_free). On failure returns a status with err filled (exit code 1). */
cv_status cv_run(const cv_config *cfg, const char *prompt, cv_report *out, cv_error *err);

#endif
