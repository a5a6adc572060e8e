/* report.h — the trace as plain C structs (SPEC §3, schema 0.2.0), their allocation helpers, the
 * JSON writer (Python json.dumps(indent=2, ensure_ascii=False) layout) and the validator.
 *
 * Ownership: every string and array hanging off a cv_report is heap-allocated and owned by it;
 * cv_report_free releases everything and is safe on a zeroed or partially filled report.
 * Nullable numbers are cv_num {v, present}: present == 0 prints null. cJSON* extension objects are
 * owned too; NULL prints as {}. Field order in the structs follows the JSON key order. */
#ifndef COREVITAL_REPORT_H
#define COREVITAL_REPORT_H

#include "corevital/common.h"
#include "corevital/config.h"

#include <cjson/cJSON.h>
#include <stdint.h>

#define CV_SCHEMA_VERSION "0.2.0"

/* A number that may be null. */
typedef struct {
    double v;
    int present;
} cv_num;

static inline cv_num cv_num_of(double v) {
    cv_num n = {v, 1};
    return n;
}

typedef struct {
    int64_t token_id;
    char *token_text;
    double prob; /* rounded to 3 decimals by the producer */
} cv_topk_item;

typedef struct {
    cv_num entropy;
    cv_num top1_top2_margin;
    cv_topk_item *topk; /* n_topk items; [] when disabled */
    size_t n_topk;
} cv_logits_summary;

typedef struct {
    cv_num mean, std, l2_norm_mean, max_abs;
    double *sketch; /* n_sketch values rounded to 2 decimals; [] when disabled */
    size_t n_sketch;
} cv_hidden_summary;

typedef struct {
    cv_num entropy_mean, entropy_min, concentration_max;
} cv_attention_summary;

typedef struct {
    int layer_index;
    cv_hidden_summary hidden_summary;
    cv_attention_summary attention_summary;
    int has_cross_attention; /* 0: "cross_attention": null (decoder-only, encoder layers) */
    cv_attention_summary cross_attention;
    cJSON *extensions; /* NULL = {} */
} cv_layer_summary;

typedef struct {
    int64_t step_index;
    int64_t token_id;
    char *token_text;
    int is_prompt_token;
    cv_logits_summary logits_summary;
    cv_layer_summary *layers;
    size_t n_layers;
    cJSON *extensions; /* NULL = {} */
} cv_timeline_step;

typedef struct {
    char *hf_id;
    char *revision; /* NULL = null */
    char *architecture;
    int num_layers;
    int hidden_size;
    int num_attention_heads;
    char *tokenizer_hf_id;
    char *dtype; /* NULL = null */
    char *device;
    struct {
        int enabled;
        char *method; /* "4-bit", "8-bit" or NULL */
    } quantization;
} cv_model_info;

typedef struct {
    char **items;
    size_t n;
} cv_str_array;

typedef struct {
    int64_t seed;
    char *device_requested;
    int max_new_tokens;
    struct {
        int do_sample;
        double temperature;
        int top_k;
        double top_p;
    } generation;
    struct {
        struct {
            int enabled;
            cv_str_array stats;
            struct {
                char *method;
                int dim;
                int64_t seed;
            } sketch;
        } hidden;
        struct {
            int enabled;
            cv_str_array stats;
        } attention;
        struct {
            int enabled;
            cv_str_array stats;
            int topk;
        } logits;
    } summaries;
    struct {
        char *type;
        char *target;
    } sink;
} cv_run_config;

typedef struct {
    char *text;
    int64_t *token_ids; /* num_tokens = n_token_ids */
    size_t n_token_ids;
} cv_prompt_info;

typedef struct {
    char *output_text;
    int64_t *token_ids; /* num_tokens = n_token_ids */
    size_t n_token_ids;
} cv_generated_info;

typedef struct {
    int64_t prompt_tokens;
    int64_t generated_tokens;
    int64_t total_steps;
    int64_t elapsed_ms;
} cv_summary;

typedef struct {
    char *code;
    char *message;
} cv_warning;

struct cv_report {
    char schema_version[16];
    char trace_id[37];
    char created_at_utc[21];
    cv_model_info model;
    cv_run_config run_config;
    cv_prompt_info prompt;
    cv_generated_info generated;
    cv_timeline_step *timeline;
    size_t n_timeline;
    cv_summary summary;
    cv_warning *warnings;
    size_t n_warnings, cap_warnings;
    int has_encoder_layers; /* 0: "encoder_layers": null */
    cv_layer_summary *encoder_layers;
    size_t n_encoder_layers;
    cJSON *extensions;     /* NULL = {}; e.g. {"performance": ...} */
    int nonfinite_checked; /* the writer added NON_FINITE_VALUE warnings already */
    /* set when generation failed after it started: the report holds the steps completed before
     * the failure and a GENERATION_FAILED warning, and is still written (never a lost trace) */
    int partial;
};

typedef struct cv_report cv_report;

/* Zero the report, set schema_version, a fresh UUID v4 trace_id and created_at_utc (now).
 * cv_run calls this on its output first. */
cv_status cv_report_init(cv_report *rep, cv_error *err);
void cv_report_free(cv_report *rep);

/* Copy the run configuration into rep->run_config; sink.target becomes
 * "<sink.output_dir>/trace_<id8>.json" (or cfg->out_path); the local sink rewrites it to the
 * path it actually writes. */
cv_status cv_report_fill_run_config(cv_report *rep, const cv_config *cfg, cv_error *err);

/* Append a warning (message printf-style). Returns CV_ERR_NOMEM on allocation failure. */
cv_status cv_report_add_warning(cv_report *rep, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocate n_steps timeline steps, each with n_layers zeroed layers (layer_index set, every
 * number null, cross_attention null). Replaces any existing timeline. */
cv_status cv_report_alloc_timeline(cv_report *rep, size_t n_steps, size_t n_layers, cv_error *err);
/* Keep the first n timeline steps and free the rest (generation ended early: EOS, a stop). */
void cv_report_truncate_timeline(cv_report *rep, size_t n);
/* Allocate n encoder layers (has_encoder_layers = 1). */
cv_status cv_report_alloc_encoder_layers(cv_report *rep, size_t n, cv_error *err);
/* Allocate the sketch (n zeros) / top-k items (n empty) of one summary. */
cv_status cv_hidden_alloc_sketch(cv_hidden_summary *h, size_t n, cv_error *err);
cv_status cv_logits_alloc_topk(cv_logits_summary *l, size_t n, cv_error *err);
/* Replace *dst by a copy of src (NULL allowed). */
cv_status cv_report_set_str(char **dst, const char *src, cv_error *err);
/* Copy n token ids into the prompt / generated info. */
cv_status cv_report_set_ids(int64_t **dst, size_t *n_dst, const int64_t *ids, size_t n,
                            cv_error *err);

/* UUID v4 from the kernel's random source, 36 characters + NUL. */
cv_status cv_uuid_v4(char out[37], cv_error *err);
/* Current UTC time as "YYYY-MM-DDTHH:MM:SSZ". */
void cv_utc_timestamp(char out[21]);

/* ---- JSON (json_writer.c) ---- */

/* Serialize the report. indent 2 = the trace file layout (Python json.dumps(indent=2,
 * ensure_ascii=False)); indent 0 = one line with Python's default ", " / ": " separators.
 * Before the first serialization, every non-finite number is recorded as a NON_FINITE_VALUE
 * warning naming its path (that is why rep is not const); it is written as null.
 * *out is malloc'd, NUL-terminated, without a trailing newline (like json.dumps). */
cv_status cv_report_to_json(cv_report *rep, int indent, char **out, size_t *len, cv_error *err);

/* Python repr() of a double: shortest round-trip digits, '1e-05', '100.0', '-0.0', '1e+16'.
 * Non-finite values give "null". buf needs 32 bytes. */
void cv_format_double(double v, char *buf, size_t n);

/* A cJSON number that keeps Python float formatting (100.0 stays "100.0") when serialized by
 * cv_report_to_json inside extensions. Plain cJSON numbers print as ints when integral. */
cJSON *cv_json_float(double v);
/* The same, formatted only when cv_report_to_json writes it (a number node carrying the
 * CV_CJSON_FLOAT mark, a bit cJSON never uses): for the many values built inside the generation
 * loop. cJSON's own printers see a plain number. Non-finite values become null. */
cJSON *cv_json_float_lazy(double v);
#define CV_CJSON_FLOAT (1 << 14)
/* The value of a number in an extension object, whichever way it was built (a cJSON number,
 * cv_json_float's raw text), or dflt when j is absent, null or not a number. */
double cv_json_number(const cJSON *j, double dflt);

/* ---- validation (validate.c) ---- */

/* Parse a trace and check every key, its order and its type against SPEC §3 (schema 0.2.0).
 * Returns CV_ERR_FORMAT with the path of the first problem ("timeline[0].layers[1]: ..."). */
cv_status cv_trace_validate(const char *json, cv_error *err);
/* Every problem, each passed to fn as one line "path: what is wrong"; returns their number
 * (0 = a valid trace). */
typedef void (*cv_trace_problem_fn)(void *user, const char *problem);
size_t cv_trace_validate_all(const char *json, cv_trace_problem_fn fn, void *user);

#endif
