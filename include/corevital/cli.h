/* cli.h — the `corevital` command line (SPEC §1): the top-level dispatcher, the `run` command's
 * option parser, the feature table and the subcommand entry points.
 *
 * Exit codes: 0 ok; 1 runtime failure (model load, generation, sink) and "no command given"
 * (help is printed, like the Python reference); 2 usage or configuration error, detected before
 * anything is loaded (unknown option, bad value, missing required option, bad YAML/env, a
 * feature not in this build). Every error is one line `error: ...` on stderr. */
#ifndef COREVITAL_CLI_H
#define COREVITAL_CLI_H

#include "corevital/common.h"
#include "corevital/config.h"
#include "corevital/report.h"

#include <stdio.h>

/* CV_EXIT_PARTIAL: a batch (run --prompts, calibrate) finished but at least one prompt failed;
 * the failures are in the index with their errors. */
enum { CV_EXIT_OK = 0, CV_EXIT_RUNTIME = 1, CV_EXIT_USAGE = 2, CV_EXIT_PARTIAL = 3 };

/* The whole program: `corevital <command> ...` (main.c only calls this). */
int cv_cli_main(int argc, char **argv);

/* Subcommands; argv[0] is the command name. */
int cv_cmd_run(int argc, char **argv);
int cv_cmd_tokenize(int argc, char **argv); /* src/cli/cmd_tokenize.c */
/* Trace views (src/cli/cmd_view.c): argv[0] is the command name. */
int cv_cmd_report(int argc, char **argv);
int cv_cmd_summary(int argc, char **argv);
int cv_cmd_compare(int argc, char **argv);
int cv_cmd_validate(int argc, char **argv);
/* Many runs (src/cli/cmd_batch.c, src/cli/cmd_runs.c). */
int cv_cmd_calibrate(int argc, char **argv);
int cv_cmd_runs(int argc, char **argv);
/* Write the HTML report of a trace file to html_path (NULL: beside it, .json -> .html); the
 * path written goes to `written`. Returns an exit code; errors are printed on stderr. */
int cv_view_write_report(const char *trace, const char *html_path, char *written, size_t n);

/* Capability table: 1 if this build can do `feature`. Features: "cuda", "quantize", "http",
 * "prometheus", "datadog", "perf". Options needing a missing feature are refused with
 * "error: ... not available in this build yet" (exit 2) before anything loads. The table is in
 * run_cmd.c; the issue that delivers a feature flips its entry. */
int cv_feature_available(const char *feature);

/* One setting from the command line, applied with cv_config_set in command-line order. */
typedef struct {
    const char *option; /* "--top_k", for messages */
    const char *key;    /* config key */
    const char *value;  /* text form; NULL = null */
} cv_cli_setting;

#define CV_CLI_MAX_SETTINGS 64

/* The parsed `run` command line. Strings point into argv. */
typedef struct {
    const char *prompt;
    const char *config_path; /* --config */
    const char *out;         /* --out (a directory, or the trace file when it ends in .json) */
    const char *threads;     /* --threads */
    int help;                /* --help / -h given: print help, exit 0 */
    int quiet;               /* --quiet: print only the generated text, no banner */
    int report;              /* --report: also write the HTML report beside the trace */
    const char *prompts;     /* --prompts FILE|-: a batch (JSONL or one prompt per line) */
    const char *calibration; /* --calibration baseline.json: compare the run(s) with it */
    const char *shard;       /* --shard K/N (batch only) */
    const char *index;       /* --index PATH (batch only; default <out>/index.jsonl) */
    int resume;              /* --resume: skip the ids the index has finished (batch only) */
    const char *output;      /* calibrate -o/--output: the baseline file */
    int calibrate;           /* parsed as `calibrate` (run options + --prompts + -o) */
    cv_cli_setting settings[CV_CLI_MAX_SETTINGS];
    size_t n_settings;
} cv_run_args;

/* Parse `run` options (argv[0] = "run"). Accepts `--opt value` and `--opt=value`; `--perf`
 * takes an optional value (bare = summary). Checks types and choices of every value (so
 * `--top_k abc` fails here) and the required options. CV_ERR_USAGE with a message on error. */
cv_status cv_cli_parse_run(int argc, char **argv, cv_run_args *args, cv_error *err);
/* The same for `calibrate`: --prompts and -o/--output required, --prompt not accepted. */
cv_status cv_cli_parse_calibrate(int argc, char **argv, cv_run_args *args, cv_error *err);

/* The batch behind `run --prompts` and `calibrate` (cmd_batch.c), with the configuration built
 * from args (owned by the caller). Returns the exit code. */
int cv_cli_run_batch(const cv_run_args *args, cv_config *cfg);

/* Build the effective configuration: cv_config_load (defaults < default.yaml < --config <
 * environment from envp, NULL = process environment), then the flags that were given, then
 * cv_config_validate and the feature checks. On error cfg is freed and err says why
 * (CV_ERR_CONFIG / CV_ERR_USAGE / CV_ERR_UNSUPPORTED: all exit 2). */
cv_status cv_cli_build_config(const cv_run_args *args, char *const *envp, cv_config *cfg,
                              cv_error *err);

/* Check where the trace will go before anything loads: the trace file's directory (or the output
 * directory) exists and is writable, or can be created under a writable ancestor; a .json path
 * is not an existing directory. CV_ERR_USAGE naming the path otherwise. */
cv_status cv_cli_check_out(const cv_config *cfg, cv_error *err);

/* The success block printed to stdout (the Python reference's text, plus the step count's
 * meaning and the generated text). */
void cv_cli_print_summary(FILE *out, const cv_report *rep, const char *location);
/* The health line and narrative from the trace's extensions (nothing when the health layer was
 * off). */
void cv_cli_print_health(FILE *out, const cv_report *rep);

/* The signal plumbing shared by `run` and the batch (run_cmd.c): the first SIGINT / SIGTERM asks
 * the generation loop to stop after its step; writes happen with the signals blocked. */
void cv_cli_install_stop_handlers(void);
void cv_cli_block_stop_signals(void *old_sigset);
void cv_cli_restore_signals(const void *old_sigset);

#endif
