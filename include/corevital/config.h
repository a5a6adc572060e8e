/* config.h — the run configuration (SPEC §2): built-in defaults, configs/default.yaml, a
 * --config YAML file, COREVITAL_* environment variables and command-line flags, merged in that
 * order of precedence (lowest first).
 *
 * Every setting has a dotted key ("generation.max_new_tokens") in one key table (config.c). YAML,
 * the environment and the CLI all set values through cv_config_set(), so type checks, choices and
 * error messages are the same whatever the source. Strings are heap-allocated and owned by the
 * config (cv_config_free). NULL strings mean YAML null. */
#ifndef COREVITAL_CONFIG_H
#define COREVITAL_CONFIG_H

#include "corevital/common.h"

#include <stdint.h>

#define CV_CONFIG_MAX_STATS 8

/* An ordered list of statistic names, e.g. [mean, std, l2_norm_mean, max_abs]. */
typedef struct {
    char *items[CV_CONFIG_MAX_STATS];
    size_t n;
} cv_stat_list;

struct cv_config {
    struct {
        char *hf_id;           /* "gpt2" */
        char *revision;        /* NULL = latest / unknown */
        char *dtype;           /* auto, float32, float16, bfloat16 */
        char *kv_dtype;        /* self-attention KV cache: float32 (default) or bfloat16 (bf16) */
        char *prefill_dtype;   /* products over several rows: float32 (default) or bfloat16 */
        int trust_remote_code; /* accepted for compatibility with Python configs; never used */
        int load_in_4bit;
        int load_in_8bit;
    } model;
    struct {
        char *requested; /* auto, cpu, cuda */
    } device;
    struct {
        int max_new_tokens; /* >= 1 */
        int do_sample;      /* 0 = greedy; also forced to 0 by temperature 0 */
        double temperature; /* >= 0; 0 = greedy (our addition) */
        int top_k;          /* >= 0; 0 disables */
        double top_p;       /* (0, 1]; 1 disables */
        int64_t seed;
    } generation;
    struct {
        struct {
            int enabled;
            cv_stat_list stats; /* subset of mean, std, l2_norm_mean, max_abs */
            struct {
                char *method; /* randproj, or none (no sketch) */
                int dim;      /* >= 0 */
                int64_t seed; /* 0 .. 2^32-1 (numpy legacy seed) */
            } sketch;
        } hidden;
        struct {
            int enabled;
            cv_stat_list stats; /* subset of entropy_mean, entropy_min, concentration_max */
        } attention;
        struct {
            int enabled;
            cv_stat_list stats; /* subset of entropy, top1_top2_margin, topk_probs */
            int topk;           /* >= 1 */
        } logits;
    } summaries;
    struct {
        char *type;                /* local_file, http, datadog, prometheus */
        char *output_dir;          /* "runs" */
        char *remote_url;          /* NULL unless a remote sink is used */
        char *prometheus_textfile; /* prometheus: textfile-collector output path, or NULL */
        int http_gzip;             /* http: gzip the request body */
    } sink;
    struct {
        char *level;  /* DEBUG, INFO, WARNING, ERROR */
        char *format; /* accepted for compatibility with Python configs; our format is fixed */
    } logging;
    struct {
        char *mode; /* NULL (off), summary, detailed, strict */
    } performance;
    struct {
        int enabled;      /* the health layer (HEALTH.md): extensions, console line; default on */
        char *stop_on;    /* NULL, or conditions "repetition,nan,risk>0.8" (cv_stop_on_parse) */
        char *stream;     /* NULL, a file path, or "-" (stdout): one JSON line per step */
        int prompt_heads; /* prompt_analysis.layers[l].heads: sparse prompt attention (CPU) */
    } health;
    struct {
        char *path; /* NULL, or the SQLite run store every run is recorded in (store.h) */
    } store;

    /* Set only from the command line (not YAML keys). */
    char *out_path; /* --out FILE.json: the trace file itself (NULL =
                       <sink.output_dir>/trace_<id8>.json) */
    int threads;    /* --threads N: OpenMP threads, 0 = the OpenMP default */
};

typedef struct cv_config cv_config;

/* health.stop_on: stop generating when a condition first holds after a step. */
typedef struct {
    int repetition; /* the repetition_loop flag (HEALTH.md §6, evaluated at every step) */
    int nan;        /* a NaN or Inf anywhere (hidden states, attention, logits) */
    double risk;    /* risk > this (risk v2 over the steps so far); < 0 = off */
} cv_stop_on;
/* Parse "repetition,nan,risk>0.8" (any subset, any order, spaces allowed). Returns 0, or -1 with
 * a message naming the bad item in msg. NULL or "" gives no conditions. */
int cv_stop_on_parse(const char *s, cv_stop_on *out, char *msg, size_t n);

/* Fill `c` with the built-in defaults (SPEC §2). Returns CV_ERR_NOMEM on allocation failure. */
cv_status cv_config_init(cv_config *c, cv_error *err);
void cv_config_free(cv_config *c);

/* Set one key from its text form. `value` NULL means null (allowed only for nullable keys:
 * model.revision, sink.remote_url, performance.mode, store.path, ...). List keys
 * (summaries.*.stats) take a comma-separated list, optionally in brackets: "mean,std" or "[mean,
 * std]". Errors name the key and the value ("generation.top_k: invalid int value: 'x'"). */
cv_status cv_config_set(cv_config *c, const char *key, const char *value, cv_error *err);
/* Set a list key from separate items (YAML sequences). */
cv_status cv_config_set_list(cv_config *c, const char *key, const char *const *items, size_t n,
                             cv_error *err);
/* 1 if `key` is a known leaf key. */
int cv_config_is_key(const char *key);

/* Merge a YAML file / YAML text into `c`. Unknown keys, wrong types and malformed YAML are
 * CV_ERR_CONFIG errors naming the file, line and key. */
cv_status cv_config_load_yaml_file(cv_config *c, const char *path, cv_error *err);
cv_status cv_config_load_yaml_string(cv_config *c, const char *text, size_t len, const char *name,
                                     cv_error *err);

/* Apply COREVITAL_<SECTION>_<KEY> variables from `envp` (NULL = the process environment).
 * KEY may contain underscores: the rest of the name is matched against the full key table
 * (COREVITAL_GENERATION_MAX_NEW_TOKENS, COREVITAL_SUMMARIES_HIDDEN_SKETCH_DIM). Aliases:
 * COREVITAL_DEVICE = device.requested, COREVITAL_SEED = generation.seed (a full name wins over
 * its alias). COREVITAL_CONFIG_DIR, COREVITAL_SINK_TOKEN and COREVITAL_DATADOG_URL are not
 * settings (read elsewhere) and are skipped. Any other COREVITAL_*
 * variable, or a bad value, is a CV_ERR_CONFIG error naming the variable. */
cv_status cv_config_apply_env(cv_config *c, char *const *envp, cv_error *err);

/* Look up an environment variable in `envp` (NULL = the process environment). */
const char *cv_config_getenv(char *const *envp, const char *name);

/* The whole chain below the command line: defaults < default.yaml < config_path < env.
 * default.yaml is $COREVITAL_CONFIG_DIR/default.yaml when that variable is set (it must then
 * exist), else configs/default.yaml relative to the current directory when present (else the
 * built-in defaults alone). config_path may be NULL; when given, the file must exist. */
cv_status cv_config_load(cv_config *c, const char *config_path, char *const *envp, cv_error *err);

/* Check ranges and cross-field rules after everything is merged, and normalize:
 * temperature 0 forces do_sample = 0 (greedy). Errors are CV_ERR_CONFIG naming the key. */
cv_status cv_config_validate(cv_config *c, cv_error *err);

/* 1 if `name` is in the list. */
int cv_config_has_stat(const cv_stat_list *l, const char *name);

#endif
