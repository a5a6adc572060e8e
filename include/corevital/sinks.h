/* sinks.h — where a finished report goes (SPEC §7): the local trace file, always, and the
 * dispatcher the CLI calls. Remote sinks (HTTP, Prometheus, Datadog) are in remote_sinks.h.
 *
 * LocalFile: <output_dir>/trace_<first 8 of trace_id>.json, or the --out path when it ends in
 * .json. Writes are atomic (temp file in the same directory, fsync, then link/rename), so a
 * reader never sees half a trace. An automatically named file never replaces another run's
 * file: if trace_<id8>.json exists, trace_<id8>-1.json, -2, ... is used. An explicit .json path
 * is replaced (atomically): that is what the user asked for. */
#ifndef COREVITAL_SINKS_H
#define COREVITAL_SINKS_H

#include "corevital/common.h"
#include "corevital/config.h"
#include "corevital/remote_sinks.h"
#include "corevital/report.h"

/* Write the trace. Exactly one of output_dir / out_file is used: out_file when non-NULL, else
 * output_dir (created with its parents if missing). rep->run_config.sink.target is set to the
 * path written. location receives that path. */
cv_status cv_local_sink_write(const char *output_dir, const char *out_file, cv_report *rep,
                              char *location, size_t location_size, cv_error *err);

/* Create a directory and its parents (mkdir -p). */
cv_status cv_mkdir_p(const char *path, cv_error *err);

/* The sinks configured in cfg: the local file first (cfg->out_path or cfg->sink.output_dir).
 * location receives the local path. Remote sink types are not dispatched here yet
 * (CV_ERR_UNSUPPORTED); the CLI rejects them before the run. */
cv_status cv_sinks_write(const cv_config *cfg, cv_report *rep, char *location, size_t location_size,
                         cv_error *err);

/* The remote sink settings of a config (sink.type, remote_url, prometheus_textfile, http_gzip). */
cv_status cv_remote_opts_from_config(const cv_config *cfg, cv_remote_opts *ro, cv_error *err);

#endif
