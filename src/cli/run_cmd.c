/* run_cmd.c — the `corevital` command line: top-level dispatch, `run` option parsing and
 * validation, the feature table, and the run itself (config -> cv_run -> sinks -> summary).
 *
 * Everything that can be checked without loading a model is checked first (SPEC §1): option
 * syntax, value types and choices, required options, the YAML/env configuration, ranges and
 * features missing from this build. Those are usage errors: one `error: ...` line, exit 2.
 * Failures after that (model load, generation, sink) exit 1. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/cli.h"
#include "corevital/batch.h"
#include "corevital/calibration.h"
#include "corevital/generate.h"
#include "corevital/store.h"
#include "corevital/remote_sinks.h"

#include "corevital/log.h"
#include "corevital/perf.h"
#include "corevital/run.h"
#include "corevital/sinks.h"

#include <errno.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- features ---- */

int cv_feature_available(const char *feature) {
    static const struct {
        const char *name;
        int available;
    } features[] = {
#ifdef CV_HAVE_CUDA
        {"cuda", 1},
#else
        {"cuda", 0},
#endif
        {"quantize", 1},                                /* NF4 / int8 weights */
        {"http", 1},                                    /* remote sinks */
        {"prometheus", 1}, {"datadog", 1}, {"perf", 1}, /* --perf monitoring */
    };
    for (size_t i = 0; i < sizeof features / sizeof features[0]; i++)
        if (strcmp(features[i].name, feature) == 0) return features[i].available;
    return 0;
}

/* ---- help ---- */

static void top_help(FILE *f) {
    fputs("usage: corevital [--help] [--version] <command> [options]\n"
          "\n"
          "CoreVital: run a transformer and record per-step internal statistics as a JSON "
          "trace.\n"
          "\n"
          "commands:\n"
          "  run        generate from a prompt and write the trace (corevital run --help)\n"
          "  tokenize   print the token ids of a text (corevital tokenize --help)\n"
          "  report     write the HTML report of a trace (corevital report --help)\n"
          "  summary    print a terminal summary of a trace\n"
          "  compare    compare two traces (first divergence, per-layer differences)\n"
          "  validate   check a trace against schema 0.2.0, listing every problem\n"
          "  calibrate  run a prompt set and write a baseline of normal (corevital calibrate "
          "--help)\n"
          "  runs       list, show, export and merge the runs of a store (corevital runs "
          "--help)\n"
          "\n"
          "options:\n"
          "  -h, --help   show this help and exit\n"
          "  --version    print the version and exit\n",
          f);
}

static void run_help(FILE *f) {
    fputs(
        "usage: corevital run --model ID_OR_DIR --prompt TEXT [options]\n"
        "       corevital run --model ID_OR_DIR --prompts FILE [batch options] [options]\n"
        "\n"
        "Generate from PROMPT with fused statistics and write the trace (schema " CV_SCHEMA_VERSION
        ").\n"
        "\n"
        "options:\n"
        "  --model ID_OR_DIR        model directory (config.json, *.safetensors, tokenizer) or\n"
        "                           Hugging Face id (required)\n"
        "  --prompt TEXT            prompt text, UTF-8 (this or --prompts is required)\n"
        "  --prompts FILE|-         a batch: JSONL ({\"prompt\", \"id\", \"max_new_tokens\",\n"
        "                           \"seed\"} per line) or plain text (one prompt per line),\n"
        "                           - = stdin; the model loads once, each prompt gets its trace\n"
        "                           <out>/<id>.json and a line in <out>/index.jsonl\n"
        "  --store PATH.db          record every run in this SQLite store (store.path);\n"
        "                           see corevital runs --help\n"
        "  --calibration FILE       compare with a baseline from corevital calibrate\n"
        "                           (extensions.calibration); refused for another model\n"
        "  --max_new_tokens N       tokens to generate, >= 1 (default 20)\n"
        "  --device {auto,cpu,cuda} (default auto)\n"
        "  --seed N                 sampling seed (default 42)\n"
        "  --temperature T          >= 0; 0 = greedy (default 0.8)\n"
        "  --top_k K                0 disables (default 50)\n"
        "  --top_p P                in (0, 1]; 1 disables (default 0.95)\n"
        "  --quantize-4             NF4 weights\n"
        "  --quantize-8             int8 weights\n"
        "  --kv-dtype fp32|bf16     KV cache dtype (default fp32; bf16 halves its bytes, CPU)\n"
        "  --prefill-dtype fp32|bf16\n"
        "                           prompt matmuls (default fp32, exact; bf16 rounds x and W\n"
        "                           and uses BF16 dot products: faster, not exact; CPU)\n"
        "  --quiet                  print only the generated text (no summary block)\n"
        "  --report                 also write the HTML report beside the trace (.html)\n"
        "  --stop-on LIST           stop generating when one holds: repetition, nan, risk>X\n"
        "                           (e.g. repetition,nan,risk>0.8); the trace says which\n"
        "  --stream FILE|-          one JSON line per step as it finishes (- = stdout)\n"
        "  --no-health              no health layer (extensions, health line); 0.2.0 stats stay\n"
        "  --prompt-heads           also the prompt's sparse attention per head (CPU; slower)\n"
        "  --out PATH               output directory (default runs/); a path ending in .json\n"
        "                           is the trace file itself\n"
        "  --remote_sink {none,http,prometheus,datadog}\n"
        "                           also send the trace there (default none)\n"
        "  --remote_url URL         required with a remote sink\n"
        "  --config FILE            YAML configuration (keys of configs/default.yaml)\n"
        "  --log_level {DEBUG,INFO,WARNING,ERROR}\n"
        "                           log level, logs go to stderr (default INFO)\n"
        "  --perf [{summary,detailed,strict}]\n"
        "                           performance monitoring (bare flag = summary)\n"
        "  --revision REV           model revision (branch, tag or commit) for hub ids\n"
        "  --threads N              CPU threads (OpenMP), 0 = all cores (default 0)\n"
        "  -h, --help               show this help and exit\n"
        "\n"
        "batch options (with --prompts; --out is then a directory):\n"
        "  --shard K/N              run only the prompts at 0-based positions p with\n"
        "                           p % N == K-1 (one machine of N)\n"
        "  --index PATH             the batch index (default <out>/index.jsonl)\n"
        "  --resume                 continue an index: skip the ids it has finished\n"
        "\n"
        "Precedence: built-in defaults < configs/default.yaml < --config < COREVITAL_*\n"
        "environment (e.g. COREVITAL_GENERATION_MAX_NEW_TOKENS=5) < options given here.\n"
        "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (also a baseline\n"
        "made for another model), 3 a batch finished but some prompts failed (see the index),\n"
        "130/143 interrupted by SIGINT/SIGTERM (finished traces and the index are kept).\n",
        f);
}

static void calibrate_help(FILE *f) {
    fputs("usage: corevital calibrate --model ID_OR_DIR --prompts FILE -o BASELINE.json "
          "[options]\n"
          "\n"
          "Run a prompt set (the model loads once) and write a baseline of normal for this model:\n"
          "per layer and statistic (hidden mean/std/l2_norm_mean/max_abs, attention entropy_mean/\n"
          "entropy_min/concentration_max) and per step metric (entropy, margin, surprisal) the\n"
          "count, mean, sample std, min, max, p5, median and p95, with the model's identity.\n"
          "Use it with corevital run --calibration BASELINE.json.\n"
          "\n"
          "options:\n"
          "  --model ID_OR_DIR        the model (required)\n"
          "  --prompts FILE|-         the prompt set, as for run --prompts (required)\n"
          "  -o, --output FILE        the baseline file to write (required)\n"
          "  --out DIR                also write each prompt's trace and an index there\n"
          "  --store PATH.db          also record the runs in a store\n"
          "  --shard K/N, --index PATH, --resume   as for run --prompts\n"
          "  every other run option (--max_new_tokens, --temperature, --seed, --device, ...)\n"
          "\n"
          "Exit codes: 0 ok, 1 runtime failure (or no prompt succeeded), 2 usage error, 3 some\n"
          "prompts failed (the baseline holds the others), 130/143 interrupted (no baseline).\n",
          f);
}

/* ---- parsing ---- */

typedef enum { O_VALUE, O_FLAG, O_OPTVALUE } opt_kind;

typedef struct {
    const char *name;
    const char *key; /* config key, or NULL for options handled specially */
    opt_kind kind;
    const char *implicit; /* value of a flag / bare optional-value option */
} opt_def;

static const opt_def k_opts[] = {
    {"--model", "model.hf_id", O_VALUE, NULL},
    {"--prompt", NULL, O_VALUE, NULL},
    {"--max_new_tokens", "generation.max_new_tokens", O_VALUE, NULL},
    {"--device", "device.requested", O_VALUE, NULL},
    {"--seed", "generation.seed", O_VALUE, NULL},
    {"--temperature", "generation.temperature", O_VALUE, NULL},
    {"--top_k", "generation.top_k", O_VALUE, NULL},
    {"--top_p", "generation.top_p", O_VALUE, NULL},
    {"--quantize-4", "model.load_in_4bit", O_FLAG, "true"},
    {"--quantize-8", "model.load_in_8bit", O_FLAG, "true"},
    {"--kv-dtype", "model.kv_dtype", O_VALUE, NULL},
    {"--prefill-dtype", "model.prefill_dtype", O_VALUE, NULL},
    {"--out", NULL, O_VALUE, NULL},
    {"--remote_sink", "sink.type", O_VALUE, NULL},
    {"--remote_url", "sink.remote_url", O_VALUE, NULL},
    {"--config", NULL, O_VALUE, NULL},
    {"--log_level", "logging.level", O_VALUE, NULL},
    {"--perf", "performance.mode", O_OPTVALUE, "summary"},
    {"--revision", "model.revision", O_VALUE, NULL},
    {"--threads", NULL, O_VALUE, NULL},
    {"--quiet", NULL, O_FLAG, "true"},
    {"--report", NULL, O_FLAG, "true"},
    {"--stop-on", "health.stop_on", O_VALUE, NULL},
    {"--stream", "health.stream", O_VALUE, NULL},
    {"--no-health", "health.enabled", O_FLAG, "false"},
    {"--prompt-heads", "health.prompt_heads", O_FLAG, "true"},
    {"--prompts", NULL, O_VALUE, NULL},
    {"--store", "store.path", O_VALUE, NULL},
    {"--calibration", NULL, O_VALUE, NULL},
    {"--shard", NULL, O_VALUE, NULL},
    {"--index", NULL, O_VALUE, NULL},
    {"--resume", NULL, O_FLAG, "true"},
    {"--output", NULL, O_VALUE, NULL}, /* calibrate only; also -o */
};

static const opt_def *find_opt(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof k_opts / sizeof k_opts[0]; i++)
        if (strlen(k_opts[i].name) == len && strncmp(k_opts[i].name, name, len) == 0)
            return &k_opts[i];
    return NULL;
}

/* --remote_sink choices map to sink.type values. */
static const char *remote_sink_type(const char *v) {
    if (strcmp(v, "none") == 0) return "local_file";
    if (strcmp(v, "http") == 0 || strcmp(v, "prometheus") == 0 || strcmp(v, "datadog") == 0)
        return v;
    return NULL;
}

/* Check one value by setting it on a scratch config: the same checks YAML and env get. */
static cv_status check_value(const char *option, const char *key, const char *value,
                             cv_error *err) {
    cv_config scratch;
    cv_status st = cv_config_init(&scratch, err);
    if (st != CV_OK) return st;
    cv_error e;
    st = cv_config_set(&scratch, key, value, &e);
    cv_config_free(&scratch);
    if (st == CV_OK) return CV_OK;
    /* "generation.top_k: invalid int value: 'x'" -> "argument --top_k: invalid int value: 'x'" */
    const char *msg = e.msg;
    size_t kl = strlen(key);
    if (strncmp(msg, key, kl) == 0 && msg[kl] == ':') msg += kl + 2;
    return cv_fail(err, CV_ERR_USAGE, "argument %s: %s", option, msg);
}

static int parse_threads(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 4096) return -1;
    *out = (int)v;
    return 0;
}

static cv_status add_setting(cv_run_args *a, const char *option, const char *key, const char *value,
                             cv_error *err) {
    if (a->n_settings == CV_CLI_MAX_SETTINGS) return cv_fail(err, CV_ERR_USAGE, "too many options");
    cv_cli_setting *s = &a->settings[a->n_settings++];
    s->option = option;
    s->key = key;
    s->value = value;
    return CV_OK;
}

static cv_status parse_args(int argc, char **argv, cv_run_args *a, int calibrate, cv_error *err) {
    memset(a, 0, sizeof *a);
    a->calibrate = calibrate;
    /* --help wins wherever it is, like argparse. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            a->help = 1;
            return CV_OK;
        }
    int have_model = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (calibrate && strcmp(arg, "-o") == 0) arg = "--output";
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return cv_fail(err, CV_ERR_USAGE, "unrecognized arguments: %s", arg);
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const opt_def *o = find_opt(arg, nlen);
        if (!o) return cv_fail(err, CV_ERR_USAGE, "unrecognized arguments: %.*s", (int)nlen, arg);
        const char *value = NULL;
        if (o->kind == O_FLAG) {
            if (eq)
                return cv_fail(err, CV_ERR_USAGE, "argument %s: ignored explicit argument '%s'",
                               o->name, eq + 1);
            value = o->implicit;
        } else if (eq) {
            value = eq + 1;
        } else if (o->kind == O_OPTVALUE) {
            /* A following word that is not an option is the value (argparse nargs='?'). */
            if (i + 1 < argc && argv[i + 1][0] != '-')
                value = argv[++i];
            else
                value = o->implicit;
        } else {
            if (i + 1 >= argc)
                return cv_fail(err, CV_ERR_USAGE, "argument %s: expected one argument", o->name);
            value = argv[++i];
        }

        if (strcmp(o->name, "--prompt") == 0) {
            if (calibrate)
                return cv_fail(err, CV_ERR_USAGE,
                               "argument --prompt: calibrate takes a prompt set (--prompts FILE)");
            a->prompt = value;
        } else if (strcmp(o->name, "--prompts") == 0) {
            if (!*value) return cv_fail(err, CV_ERR_USAGE, "argument --prompts: empty path");
            a->prompts = value;
        } else if (strcmp(o->name, "--calibration") == 0) {
            if (calibrate)
                return cv_fail(err, CV_ERR_USAGE,
                               "argument --calibration: not with calibrate (it writes a baseline)");
            a->calibration = value;
        } else if (strcmp(o->name, "--shard") == 0) {
            int k, n;
            if (cv_shard_parse(value, &k, &n) != 0)
                return cv_fail(err, CV_ERR_USAGE,
                               "argument --shard: invalid value: '%s' (K/N with 1 <= K <= N, "
                               "e.g. 2/8)",
                               value);
            a->shard = value;
        } else if (strcmp(o->name, "--index") == 0) {
            if (!*value) return cv_fail(err, CV_ERR_USAGE, "argument --index: empty path");
            a->index = value;
        } else if (strcmp(o->name, "--resume") == 0) {
            a->resume = 1;
        } else if (strcmp(o->name, "--output") == 0) {
            if (!calibrate)
                return cv_fail(err, CV_ERR_USAGE,
                               "unrecognized arguments: %s (-o/--output is calibrate's; run "
                               "writes to --out)",
                               argv[i]);
            if (!*value) return cv_fail(err, CV_ERR_USAGE, "argument --output: empty path");
            a->output = value;
        } else if (strcmp(o->name, "--quiet") == 0) {
            a->quiet = 1;
        } else if (strcmp(o->name, "--report") == 0) {
            a->report = 1;
        } else if (strcmp(o->name, "--config") == 0) {
            a->config_path = value;
        } else if (strcmp(o->name, "--out") == 0) {
            if (!*value) return cv_fail(err, CV_ERR_USAGE, "argument --out: empty path");
            a->out = value;
        } else if (strcmp(o->name, "--threads") == 0) {
            int t;
            if (parse_threads(value, &t) != 0)
                return cv_fail(err, CV_ERR_USAGE,
                               "argument --threads: invalid value: '%s' (an integer 0..4096)",
                               value);
            a->threads = value;
        } else if (strcmp(o->name, "--remote_sink") == 0) {
            const char *type = remote_sink_type(value);
            if (!type)
                return cv_fail(err, CV_ERR_USAGE,
                               "argument --remote_sink: invalid choice: '%s' (choose from 'none', "
                               "'http', 'prometheus', 'datadog')",
                               value);
            cv_status st = add_setting(a, o->name, o->key, type, err);
            if (st != CV_OK) return st;
        } else {
            cv_status st = check_value(o->name, o->key, value, err);
            if (st == CV_OK) st = add_setting(a, o->name, o->key, value, err);
            if (st != CV_OK) return st;
            if (strcmp(o->name, "--model") == 0) have_model = 1;
        }
    }
    if (calibrate) {
        if (!have_model || !a->prompts || !a->output)
            return cv_fail(err, CV_ERR_USAGE, "the following arguments are required: %s%s%s",
                           have_model ? "" : "--model ", a->prompts ? "" : "--prompts ",
                           a->output ? "" : "-o/--output");
        return CV_OK;
    }
    if (a->prompt && a->prompts)
        return cv_fail(err, CV_ERR_USAGE,
                       "argument --prompts: not allowed with argument --prompt (one prompt or a "
                       "prompt file)");
    if (!a->prompts && (a->shard || a->index || a->resume))
        return cv_fail(err, CV_ERR_USAGE, "argument %s: only with --prompts (a batch)",
                       a->shard   ? "--shard"
                       : a->index ? "--index"
                                  : "--resume");
    if (!have_model || (!a->prompt && !a->prompts))
        return cv_fail(err, CV_ERR_USAGE, "the following arguments are required: %s%s%s",
                       have_model ? "" : "--model", !have_model && !a->prompt ? ", " : "",
                       a->prompt || a->prompts ? "" : "--prompt (or --prompts)");
    return CV_OK;
}

cv_status cv_cli_parse_run(int argc, char **argv, cv_run_args *a, cv_error *err) {
    return parse_args(argc, argv, a, 0, err);
}

cv_status cv_cli_parse_calibrate(int argc, char **argv, cv_run_args *a, cv_error *err) {
    return parse_args(argc, argv, a, 1, err);
}

static int ends_with_json(const char *s) {
    size_t n = strlen(s);
    return n > 5 && strcmp(s + n - 5, ".json") == 0;
}

/* Refuse settings whose feature is not in this build (SPEC §1, exit 2). */
static cv_status check_features(const cv_config *c, cv_error *err) {
    if (strcmp(c->device.requested, "cuda") == 0 && !cv_feature_available("cuda"))
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "device 'cuda' (--device / device.requested) is not available in this build "
                       "yet: built without CUDA");
    if ((c->model.load_in_4bit || c->model.load_in_8bit) && !cv_feature_available("quantize"))
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "quantization (%s / model.load_in_%s) is not available in this build yet",
                       c->model.load_in_4bit ? "--quantize-4" : "--quantize-8",
                       c->model.load_in_4bit ? "4bit" : "8bit");
    if (strcmp(c->sink.type, "local_file") != 0 && !cv_feature_available(c->sink.type))
        return cv_fail(
            err, CV_ERR_UNSUPPORTED,
            "remote sink '%s' (--remote_sink / sink.type) is not available in this build "
            "yet",
            c->sink.type);
    if (strcmp(c->sink.type, "local_file") != 0) { /* the remote sink is checked before loading */
        cv_remote_opts ro;
        cv_status st = cv_remote_opts_from_config(c, &ro, err);
        if (st == CV_OK) st = cv_remote_validate(&ro, err);
        if (st != CV_OK) return st;
    }
    if (c->performance.mode && !cv_feature_available("perf"))
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "--perf (performance.mode '%s') is not available in this build yet",
                       c->performance.mode);
    return CV_OK;
}

cv_status cv_cli_build_config(const cv_run_args *a, char *const *envp, cv_config *cfg,
                              cv_error *err) {
    cv_status st = cv_config_load(cfg, a->config_path, envp, err);
    if (st != CV_OK) return st; /* cfg already freed */
    for (size_t i = 0; i < a->n_settings && st == CV_OK; i++) {
        st = cv_config_set(cfg, a->settings[i].key, a->settings[i].value, err);
        if (st != CV_OK) cv_error_prefix(err, "argument %s", a->settings[i].option);
    }
    if (st == CV_OK && a->out) {
        if (ends_with_json(a->out)) {
            cfg->out_path = strdup(a->out);
            if (!cfg->out_path) st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
        } else {
            st = cv_config_set(cfg, "sink.output_dir", a->out, err);
        }
    }
    if (st == CV_OK && a->threads) cfg->threads = atoi(a->threads);
    if (st == CV_OK) {
        st = cv_config_validate(cfg, err);
        /* Name the flag when the bad value came from the command line. */
        for (size_t i = 0; st != CV_OK && err && i < a->n_settings; i++) {
            size_t kl = strlen(a->settings[i].key);
            if (strncmp(err->msg, a->settings[i].key, kl) == 0 && err->msg[kl] == ':') {
                char rest[sizeof err->msg];
                snprintf(rest, sizeof rest, "%s", err->msg + kl + 1);
                cv_fail(err, st, "argument %s:%s", a->settings[i].option, rest);
                break;
            }
        }
    }
    if (st == CV_OK) st = check_features(cfg, err);
    if (st == CV_OK) st = cv_cli_check_out(cfg, err);
    if (st != CV_OK) cv_config_free(cfg);
    return st;
}

/* ---- the output path ---- */

/* dir exists as a writable directory, or can be created: its nearest existing ancestor is a
 * writable directory. */
static cv_status check_dir_usable(const char *dir, const char *what, cv_error *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return cv_fail(err, CV_ERR_USAGE, "%s: path too long", what);
    struct stat sb;
    if (stat(buf, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return cv_fail(err, CV_ERR_USAGE, "%s: %s exists and is not a directory", what, buf);
        if (access(buf, W_OK | X_OK) != 0)
            return cv_fail(err, CV_ERR_USAGE, "%s: directory %s is not writable", what, buf);
        return CV_OK;
    }
    if (errno != ENOENT)
        return cv_fail(err, CV_ERR_USAGE, "%s: cannot use %s: %s", what, buf, strerror(errno));
    /* walk up to the nearest existing ancestor */
    for (;;) {
        char *slash = strrchr(buf, '/');
        while (slash && slash > buf && slash[1] == '\0') { /* trailing slashes */
            *slash = '\0';
            slash = strrchr(buf, '/');
        }
        const char *parent = ".";
        if (slash == buf)
            parent = "/";
        else if (slash) {
            *slash = '\0';
            parent = buf;
        }
        if (stat(parent, &sb) == 0) {
            if (!S_ISDIR(sb.st_mode))
                return cv_fail(err, CV_ERR_USAGE,
                               "%s: cannot create %s: %s exists and is not a directory", what, dir,
                               parent);
            if (access(parent, W_OK | X_OK) != 0)
                return cv_fail(err, CV_ERR_USAGE,
                               "%s: cannot create %s: directory %s is not writable", what, dir,
                               parent);
            return CV_OK;
        }
        if (errno != ENOENT)
            return cv_fail(err, CV_ERR_USAGE, "%s: cannot use %s: %s", what, parent,
                           strerror(errno));
        if (parent != buf) return CV_OK; /* "." or "/" missing cannot happen; be permissive */
    }
}

cv_status cv_cli_check_out(const cv_config *cfg, cv_error *err) {
    if (cfg->out_path) {
        struct stat sb;
        if (stat(cfg->out_path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return cv_fail(err, CV_ERR_USAGE,
                           "argument --out: %s is an existing directory, not a trace file (drop "
                           "the .json to write a trace inside it)",
                           cfg->out_path);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", cfg->out_path);
        char *slash = strrchr(dir, '/');
        if (!slash) return check_dir_usable(".", "argument --out", err);
        if (slash == dir)
            slash[1] = '\0';
        else
            *slash = '\0';
        return check_dir_usable(dir, "argument --out", err);
    }
    return check_dir_usable(cfg->sink.output_dir, "output directory (--out / sink.output_dir)",
                            err);
}

/* ---- output ---- */

void cv_cli_print_summary(FILE *out, const cv_report *rep, const char *location) {
    static const char rule[] = "============================================================";
    fprintf(out, "\n%s\n\xE2\x9C\x93 Monitoring Complete\n%s\n", rule, rule);
    fprintf(out, "Model:           %s\n", rep->model.hf_id ? rep->model.hf_id : "");
    fprintf(out, "Total steps:     %lld (%lld prompt tokens + %lld generated tokens)\n",
            (long long)rep->summary.total_steps, (long long)rep->summary.prompt_tokens,
            (long long)rep->summary.generated_tokens);
    fprintf(out, "Elapsed time:    %lldms\n", (long long)rep->summary.elapsed_ms);
    fprintf(out, "Output file:     %s\n", location);
    if (rep->n_warnings) {
        fprintf(out, "\nWarnings (%zu):\n", rep->n_warnings);
        for (size_t i = 0; i < rep->n_warnings; i++)
            fprintf(out, "  - [%s] %s\n", rep->warnings[i].code, rep->warnings[i].message);
    }
    fprintf(out, "%s\n\n", rule);
    fprintf(out, "Generated text:\n%s\n",
            rep->generated.output_text ? rep->generated.output_text : "");
    cv_cli_print_health(out, rep);
    cv_calibration_print(out, rep);
}

/* One health line (risk and its main factor, flags that fired, the most blamed layer), then the
 * narrative, read back from the trace's extensions (nothing printed when health was off). */
void cv_cli_print_health(FILE *out, const cv_report *rep) {
    const cJSON *ext = rep->extensions;
    const cJSON *risk = cJSON_GetObjectItemCaseSensitive(ext, "risk");
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(risk, "risk_score");
    if (!risk || !score) return;
    double r = cv_json_number(score, NAN);
    const cJSON *factors = cJSON_GetObjectItemCaseSensitive(risk, "risk_factors");
    const cJSON *f0 = cJSON_GetArrayItem(factors, 0);
    fprintf(out, "\nHealth: risk %.2f%s%s%s", r, cJSON_IsString(f0) ? " (" : "",
            cJSON_IsString(f0) ? f0->valuestring : "", cJSON_IsString(f0) ? ")" : "");
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(ext, "health_flags");
    static const char *const names[][2] = {{"nan_detected", "nan"},
                                           {"inf_detected", "inf"},
                                           {"repetition_loop_detected", "repetition"},
                                           {"mid_layer_anomaly_detected", "mid-layer anomaly"},
                                           {"attention_collapse_detected", "attention collapse"}};
    int any = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(flags, names[i][0]))) {
            fprintf(out, "%s%s", any++ ? ", " : "; flags: ", names[i][1]);
            if (i == 2) {
                const cJSON *fs = cJSON_GetObjectItemCaseSensitive(flags, "repetition_first_step");
                if (cJSON_IsNumber(fs)) fprintf(out, " from step %d", fs->valueint);
            }
        }
    const cJSON *he = cJSON_GetObjectItemCaseSensitive(flags, "high_entropy_steps");
    if (cJSON_IsNumber(he) && he->valueint > 0)
        fprintf(out, "%s%d high-entropy steps", any++ ? ", " : "; flags: ", he->valueint);
    if (!any) fputs("; no flags", out);
    /* the most severe blamed layer (blamed_layers is sorted by layer index) */
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(risk, "blamed_layers"), *best = NULL;
    double best_sev = -1;
    for (const cJSON *b = bl ? bl->child : NULL; b; b = b->next) {
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(b, "severity");
        double v = cv_json_number(sv, 0.0);
        if (v > best_sev) best_sev = v, best = b;
    }
    if (best) {
        const cJSON *ly = cJSON_GetObjectItemCaseSensitive(best, "layer");
        const cJSON *rs = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(best, "reasons"), 0);
        fprintf(out, "; most blamed: layer %d%s%s%s", cJSON_IsNumber(ly) ? ly->valueint : -1,
                cJSON_IsString(rs) ? " (" : "", cJSON_IsString(rs) ? rs->valuestring : "",
                cJSON_IsString(rs) ? ")" : "");
    }
    fputc('\n', out);
    const cJSON *nar = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ext, "narrative"), "summary");
    if (cJSON_IsString(nar) && *nar->valuestring) fprintf(out, "%s\n", nar->valuestring);
}

/* ---- signals ---- */

/* First SIGINT / SIGTERM: ask the generation loop to stop after its current step (the trace of
 * the steps so far is written). A second one: the default action, at once. */
static void on_stop_signal(int signo) {
    cv_generate_request_stop(signo);
    signal(signo, SIG_DFL);
    signal(signo == SIGINT ? SIGTERM : SIGINT, SIG_DFL);
}

void cv_cli_install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* While the trace is written (temp file + rename) the signals wait, so an interruption never
 * leaves a partial temporary file; they are delivered when the write is done. */
void cv_cli_block_stop_signals(void *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, (sigset_t *)old);
}

void cv_cli_restore_signals(const void *old) {
    sigprocmask(SIG_SETMASK, (const sigset_t *)old, NULL);
}

/* ---- commands ---- */

int cv_cmd_run(int argc, char **argv) {
    cv_run_args args;
    cv_error err = {CV_OK, ""};
    if (cv_cli_parse_run(argc, argv, &args, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    if (args.help) {
        run_help(stdout);
        return CV_EXIT_OK;
    }
    cv_config cfg;
    double t_start = cv_now_ms(); /* --perf: the run clock and config_load start here */
    if (cv_cli_build_config(&args, NULL, &cfg, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    double t_config = cv_now_ms();
    cv_log_level level;
    if (cv_log_parse_level(cfg.logging.level, &level) == 0) cv_log_set_level(level);
    double t_logging = cv_now_ms();
    if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
    CV_INFO("Starting CoreVital v%s", COREVITAL_VERSION);
    CV_INFO("Model: %s", cfg.model.hf_id);
    CV_INFO("Device: %s", cfg.device.requested);
    if (args.prompts) { /* a batch: src/cli/cmd_batch.c */
        int brc = cv_cli_run_batch(&args, &cfg);
        cv_config_free(&cfg);
        return brc;
    }
    /* The baseline and the store are checked before the model loads (exit 2). */
    cv_baseline *baseline = NULL;
    cv_store *store = NULL;
    if (args.calibration && cv_baseline_load(args.calibration, &baseline, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        cv_config_free(&cfg);
        return CV_EXIT_USAGE;
    }
    if (cfg.store.path && cv_store_open(cfg.store.path, 1, &store, &err) != CV_OK) {
        fprintf(stderr, "error: --store / store.path: %s\n", err.msg);
        cv_baseline_free(baseline);
        cv_config_free(&cfg);
        return CV_EXIT_USAGE;
    }

    cv_report rep;
    memset(&rep, 0, sizeof rep);
    int rc = CV_EXIT_OK;
    cv_generate_reset_stop();
    cv_cli_install_stop_handlers();
    char location[4096];
    cv_status st;
    if (cfg.performance.mode) {
        cv_perf *perf = NULL;
        st = cv_perf_create(cfg.performance.mode, t_start, &perf, &err);
        if (st == CV_OK) {
            cv_perf_record(perf, "config_load", t_start, t_config);
            cv_perf_record(perf, "setup_logging", t_config, t_logging);
            st = cv_run_perf(&cfg, args.prompt, &rep, perf, &err);
        }
        /* Summary into extensions.performance; detailed / strict also write the breakdown
         * file next to rep.run_config.sink.target (filled by cv_run_perf). */
        if (st == CV_OK) st = cv_perf_attach(perf, &rep, NULL, &err);
        cv_perf_free(perf);
    } else {
        st = cv_run(&cfg, args.prompt, &rep, &err);
    }
    if (st == CV_OK && !rep.trace_id[0]) {
        /* cv_run is expected to cv_report_init its output; cover a producer that did not. */
        snprintf(rep.schema_version, sizeof rep.schema_version, "%s", CV_SCHEMA_VERSION);
        cv_utc_timestamp(rep.created_at_utc);
        st = cv_uuid_v4(rep.trace_id, &err);
    }
    /* run_config mirrors the effective configuration, whoever produced the rest. */
    if (st == CV_OK) st = cv_report_fill_run_config(&rep, &cfg, &err);
    if (st == CV_OK && baseline) {
        /* a baseline of another model is a usage error, reported before any trace is written */
        st = cv_baseline_apply(baseline, &rep, &err);
        if (st == CV_ERR_USAGE) rc = CV_EXIT_USAGE;
    }
    if (st != CV_OK && rep.partial && rc == CV_EXIT_OK) {
        /* generation failed part way: the steps measured before the failure are still written
         * (with a GENERATION_FAILED warning), then the run fails */
        fprintf(stderr, "error: %s\n", err.msg);
        cv_error werr = {CV_OK, ""};
        sigset_t old;
        cv_cli_block_stop_signals(&old);
        if (cv_report_fill_run_config(&rep, &cfg, &werr) == CV_OK &&
            cv_sinks_write(&cfg, &rep, location, sizeof location, &werr) == CV_OK)
            fprintf(stderr, "the trace of the %lld steps completed before the failure is %s\n",
                    (long long)rep.summary.generated_tokens, location);
        else
            fprintf(stderr, "error: the partial trace could not be written either: %s\n", werr.msg);
        sigprocmask(SIG_SETMASK, &old, NULL);
        rc = CV_EXIT_RUNTIME;
    } else if (st != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        if (rc == CV_EXIT_OK) rc = CV_EXIT_RUNTIME;
    } else {
        sigset_t old;
        cv_cli_block_stop_signals(&old);
        st = cv_sinks_write(&cfg, &rep, location, sizeof location, &err);
        int sig = cv_generate_stop_signal();
        if (st == CV_OK && store) { /* the file's exact bytes, so `runs export` gives it back */
            char *json = NULL;
            size_t len = 0;
            st = cv_read_file(location, &json, &len, &err);
            if (st == CV_OK) st = cv_store_add_trace(store, json, len, location, &err);
            if (st != CV_OK)
                cv_error_prefix(&err, "the trace %s is written, but the store", location);
            free(json);
        }
        if (st != CV_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            rc = CV_EXIT_RUNTIME;
        } else {
            if (args.quiet)
                printf("%s\n", rep.generated.output_text ? rep.generated.output_text : "");
            else
                cv_cli_print_summary(stdout, &rep, location);
            if (args.report) {
                char html[4096];
                if (cv_view_write_report(location, NULL, html, sizeof html) == CV_EXIT_OK) {
                    if (!args.quiet) printf("Report:          %s\n", html);
                } else {
                    rc = CV_EXIT_RUNTIME;
                }
            }
            if (sig) {
                fprintf(stderr, "interrupted: the trace of the steps generated so far is %s\n",
                        location);
                rc = 128 + sig; /* 130 for SIGINT, 143 for SIGTERM, like a shell */
            }
            fflush(stdout);
        }
        fflush(stderr);
        /* a second signal that arrived during the write takes effect here */
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    cv_report_free(&rep);
    cv_config_free(&cfg);
    cv_baseline_free(baseline);
    cv_store_close(store);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return rc;
}

int cv_cmd_calibrate(int argc, char **argv) {
    cv_run_args args;
    cv_error err = {CV_OK, ""};
    if (cv_cli_parse_calibrate(argc, argv, &args, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    if (args.help) {
        calibrate_help(stdout);
        return CV_EXIT_OK;
    }
    cv_config cfg;
    if (cv_cli_build_config(&args, NULL, &cfg, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    cv_log_level level;
    if (cv_log_parse_level(cfg.logging.level, &level) == 0) cv_log_set_level(level);
    if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
    int rc = cv_cli_run_batch(&args, &cfg);
    cv_config_free(&cfg);
    return rc;
}

int cv_cli_main(int argc, char **argv) {
    if (argc < 2) {
        top_help(stderr);
        return CV_EXIT_USAGE; /* no command is a usage error */
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0) {
        printf("corevital %s\n", COREVITAL_VERSION);
        return CV_EXIT_OK;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        top_help(stdout);
        return CV_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0) return cv_cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cv_cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0) return cv_cmd_report(argc - 1, argv + 1);
    if (strcmp(cmd, "summary") == 0) return cv_cmd_summary(argc - 1, argv + 1);
    if (strcmp(cmd, "compare") == 0) return cv_cmd_compare(argc - 1, argv + 1);
    if (strcmp(cmd, "validate") == 0) return cv_cmd_validate(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0) return cv_cmd_calibrate(argc - 1, argv + 1);
    if (strcmp(cmd, "runs") == 0) return cv_cmd_runs(argc - 1, argv + 1);
    if (cmd[0] == '-')
        fprintf(stderr, "error: unrecognized arguments: %s (see corevital --help)\n", cmd);
    else
        fprintf(stderr,
                "error: invalid choice: '%s' (choose from 'run', 'tokenize', 'report', "
                "'summary', 'compare', 'validate', 'calibrate', 'runs')\n",
                cmd);
    return CV_EXIT_USAGE;
}
