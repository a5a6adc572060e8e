/* test_config.c — configuration: built-in defaults, configs/default.yaml, YAML errors,
 * COREVITAL_* environment parsing and the precedence chain (SPEC §2), including the FIX that
 * absent command-line flags do not overwrite YAML values. YAML inputs are written to a temp
 * directory by each test; the environment is passed as an explicit envp array. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/cli.h"
#include "corevital/config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_tmp[256];
static char g_files[8][512];
static int g_nfiles;

static void setup(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/cv_config_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
    g_nfiles = 0;
}

static void teardown(void) {
    for (int i = 0; i < g_nfiles; i++) unlink(g_files[i]);
    rmdir(g_tmp);
}

/* Write text to <tmp>/name; returns the path (valid until teardown). */
static const char *write_file(const char *name, const char *text) {
    ck_assert_int_lt(g_nfiles, 8);
    char *path = g_files[g_nfiles++];
    snprintf(path, 512, "%s/%s", g_tmp, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static cv_status load_yaml_text(cv_config *c, const char *text, cv_error *e) {
    ck_assert_int_eq(cv_config_init(c, e), CV_OK);
    return cv_config_load_yaml_string(c, text, strlen(text), "test.yaml", e);
}

/* Load YAML that must fail; the message must contain every needle. */
static void expect_yaml_error(const char *text, cv_status code, const char *n1, const char *n2) {
    cv_config c;
    cv_error e = {CV_OK, ""};
    ck_assert_int_eq(load_yaml_text(&c, text, &e), code);
    ck_assert_msg(strstr(e.msg, n1) != NULL, "'%s' lacks '%s'", e.msg, n1);
    if (n2) ck_assert_msg(strstr(e.msg, n2) != NULL, "'%s' lacks '%s'", e.msg, n2);
    cv_config_free(&c);
}

static void expect_spec_defaults(const cv_config *c) {
    ck_assert_str_eq(c->model.hf_id, "gpt2");
    ck_assert_ptr_null(c->model.revision);
    ck_assert_str_eq(c->model.dtype, "auto");
    ck_assert_int_eq(c->model.load_in_4bit, 0);
    ck_assert_int_eq(c->model.load_in_8bit, 0);
    ck_assert_str_eq(c->device.requested, "auto");
    ck_assert_int_eq(c->generation.max_new_tokens, 20);
    ck_assert_int_eq(c->generation.do_sample, 1);
    ck_assert_double_eq(c->generation.temperature, 0.8);
    ck_assert_int_eq(c->generation.top_k, 50);
    ck_assert_double_eq(c->generation.top_p, 0.95);
    ck_assert_int_eq(c->generation.seed, 42);
    ck_assert_int_eq(c->summaries.hidden.enabled, 1);
    ck_assert_uint_eq(c->summaries.hidden.stats.n, 4);
    ck_assert_str_eq(c->summaries.hidden.stats.items[0], "mean");
    ck_assert_str_eq(c->summaries.hidden.stats.items[3], "max_abs");
    ck_assert_str_eq(c->summaries.hidden.sketch.method, "randproj");
    ck_assert_int_eq(c->summaries.hidden.sketch.dim, 32);
    ck_assert_int_eq(c->summaries.hidden.sketch.seed, 0);
    ck_assert_uint_eq(c->summaries.attention.stats.n, 3);
    ck_assert_str_eq(c->summaries.attention.stats.items[2], "concentration_max");
    ck_assert_uint_eq(c->summaries.logits.stats.n, 3);
    ck_assert_str_eq(c->summaries.logits.stats.items[2], "topk_probs");
    ck_assert_int_eq(c->summaries.logits.topk, 5);
    ck_assert_str_eq(c->sink.type, "local_file");
    ck_assert_str_eq(c->sink.output_dir, "runs");
    ck_assert_ptr_null(c->sink.remote_url);
    ck_assert_str_eq(c->logging.level, "INFO");
    ck_assert_ptr_null(c->performance.mode);
    ck_assert_ptr_null(c->out_path);
}

START_TEST(builtin_defaults_match_spec) {
    cv_config c;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    expect_spec_defaults(&c);
    ck_assert_int_eq(cv_config_validate(&c, &e), CV_OK);
    cv_config_free(&c);
}
END_TEST

START_TEST(repo_default_yaml_matches_spec) {
    cv_config c;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    /* Start from different values so that the file really sets each key. */
    ck_assert_int_eq(cv_config_set(&c, "generation.top_k", "7", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "summaries.hidden.stats", "mean", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "model.revision", "abc", &e), CV_OK);
    ck_assert_int_eq(cv_config_load_yaml_file(&c, "configs/default.yaml", &e), CV_OK);
    expect_spec_defaults(&c);
    cv_config_free(&c);
}
END_TEST

START_TEST(python_reference_yaml_loads) {
    /* The reference's default.yaml has two keys we accept for compatibility. */
    cv_config c;
    cv_error e;
    const char *y = "model: {hf_id: \"gpt2\", revision: null, trust_remote_code: false, dtype: "
                    "\"auto\", load_in_4bit: false, load_in_8bit: false}\n"
                    "logging: {level: \"DEBUG\", format: \"%(asctime)s - %(message)s\"}\n"
                    "performance:\n";
    ck_assert_int_eq(load_yaml_text(&c, y, &e), CV_OK);
    ck_assert_str_eq(c.logging.level, "DEBUG");
    cv_config_free(&c);
}
END_TEST

START_TEST(yaml_values_and_types) {
    cv_config c;
    cv_error e;
    const char *y = "generation:\n  max_new_tokens: 7\n  do_sample: no\n  temperature: 1\n"
                    "  seed: -3\n"
                    "summaries:\n  hidden:\n    stats: [std]\n    sketch: {dim: 0, method: none}\n"
                    "  logits:\n    stats: []\n"
                    "model:\n  revision: \"null\"\nsink:\n  remote_url: ~\n";
    ck_assert_int_eq(load_yaml_text(&c, y, &e), CV_OK);
    ck_assert_int_eq(c.generation.max_new_tokens, 7);
    ck_assert_int_eq(c.generation.do_sample, 0);
    ck_assert_double_eq(c.generation.temperature, 1.0);
    ck_assert_int_eq(c.generation.seed, -3);
    ck_assert_uint_eq(c.summaries.hidden.stats.n, 1);
    ck_assert_str_eq(c.summaries.hidden.stats.items[0], "std");
    ck_assert_int_eq(c.summaries.hidden.sketch.dim, 0);
    ck_assert_str_eq(c.summaries.hidden.sketch.method, "none");
    ck_assert_uint_eq(c.summaries.logits.stats.n, 0);
    ck_assert_str_eq(c.model.revision, "null"); /* quoted: a string, not null */
    ck_assert_ptr_null(c.sink.remote_url);
    ck_assert(cv_config_has_stat(&c.summaries.hidden.stats, "std"));
    ck_assert(!cv_config_has_stat(&c.summaries.hidden.stats, "mean"));
    cv_config_free(&c);
}
END_TEST

START_TEST(yaml_errors) {
    expect_yaml_error("generation:\n  max_tokens: 5\n", CV_ERR_CONFIG, "test.yaml:2",
                      "unknown key 'generation.max_tokens'");
    expect_yaml_error("modell:\n  hf_id: x\n", CV_ERR_CONFIG, "unknown key 'modell'", NULL);
    expect_yaml_error("generation:\n  max_new_tokens: abc\n", CV_ERR_CONFIG,
                      "generation.max_new_tokens", "invalid int value: 'abc'");
    expect_yaml_error("generation:\n  temperature: [1]\n", CV_ERR_CONFIG, "generation.temperature",
                      "expected a single value");
    expect_yaml_error("generation:\n  do_sample: maybe\n", CV_ERR_CONFIG, "generation.do_sample",
                      "invalid boolean");
    expect_yaml_error("summaries:\n  hidden:\n    stats: mean\n", CV_ERR_CONFIG,
                      "summaries.hidden.stats", "expected a list");
    expect_yaml_error("summaries:\n  attention:\n    stats: [entropy_max]\n", CV_ERR_CONFIG,
                      "unknown statistic 'entropy_max'", NULL);
    expect_yaml_error("device:\n  requested: tpu\n", CV_ERR_CONFIG, "device.requested",
                      "invalid choice: 'tpu'");
    expect_yaml_error("generation: 5\n", CV_ERR_CONFIG, "'generation' must be a mapping", NULL);
    expect_yaml_error("model:\n  hf_id: null\n", CV_ERR_CONFIG, "model.hf_id: must not be null",
                      NULL);
    expect_yaml_error("generation:\n  top_k: 5\n   bad: [\n", CV_ERR_FORMAT,
                      "test.yaml:", "malformed YAML");
    expect_yaml_error("- a\n- b\n", CV_ERR_CONFIG, "top level must be a mapping", NULL);
    /* a repeated key is an error naming both lines, not a silent last-one-wins */
    expect_yaml_error("generation:\n  top_k: 5\n  top_p: 0.9\n  top_k: 7\n", CV_ERR_CONFIG,
                      "test.yaml:4: duplicate key 'generation.top_k'", "first given on line 2");
    expect_yaml_error("model:\n  hf_id: a\nmodel:\n  hf_id: b\n", CV_ERR_CONFIG,
                      "test.yaml:3: duplicate key 'model'", NULL);
    expect_yaml_error("generation: {top_k: 1}\n---\ngeneration: {top_k: 2}\n", CV_ERR_CONFIG,
                      "more than one YAML document", NULL);
    /* An empty file is fine (nothing changes). */
    cv_config c;
    cv_error e;
    ck_assert_int_eq(load_yaml_text(&c, "", &e), CV_OK);
    expect_spec_defaults(&c);
    cv_config_free(&c);
}
END_TEST

START_TEST(missing_config_file) {
    cv_config c;
    cv_error e;
    char path[600];
    snprintf(path, sizeof path, "%s/nope.yaml", g_tmp);
    ck_assert_int_eq(cv_config_load(&c, path, (char *const[]){NULL}, &e), CV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(e.msg, "config file not found"));
    ck_assert_ptr_nonnull(strstr(e.msg, "nope.yaml"));
    /* COREVITAL_CONFIG_DIR must contain default.yaml when set. */
    char var[600];
    snprintf(var, sizeof var, "COREVITAL_CONFIG_DIR=%s", g_tmp);
    char *env[] = {var, NULL};
    ck_assert_int_eq(cv_config_load(&c, NULL, env, &e), CV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(e.msg, "COREVITAL_CONFIG_DIR"));
}
END_TEST

START_TEST(env_parsing) {
    cv_config c;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    char *env[] = {"PATH=/bin",
                   "COREVITAL_GENERATION_MAX_NEW_TOKENS=5",
                   "COREVITAL_SUMMARIES_HIDDEN_SKETCH_DIM=8",
                   "COREVITAL_SINK_OUTPUT_DIR=out dir",
                   "COREVITAL_GENERATION_DO_SAMPLE=false",
                   "COREVITAL_SUMMARIES_LOGITS_STATS=entropy, topk_probs",
                   "COREVITAL_MODEL_HF_ID=org/model",
                   "COREVITAL_DEVICE=cpu",
                   "COREVITAL_SEED=7",
                   "COREVITAL_CONFIG_DIR=ignored-here",
                   "COREVITAL_SINK_TOKEN=secret",
                   NULL};
    ck_assert_int_eq(cv_config_apply_env(&c, env, &e), CV_OK);
    ck_assert_int_eq(c.generation.max_new_tokens, 5);
    ck_assert_int_eq(c.summaries.hidden.sketch.dim, 8);
    ck_assert_str_eq(c.sink.output_dir, "out dir");
    ck_assert_int_eq(c.generation.do_sample, 0);
    ck_assert_uint_eq(c.summaries.logits.stats.n, 2);
    ck_assert_str_eq(c.summaries.logits.stats.items[1], "topk_probs");
    ck_assert_str_eq(c.model.hf_id, "org/model");
    ck_assert_str_eq(c.device.requested, "cpu");
    ck_assert_int_eq(c.generation.seed, 7);

    /* A full name wins over its alias, whatever the order in the environment. */
    char *env2[] = {"COREVITAL_GENERATION_SEED=9", "COREVITAL_SEED=8",
                    "COREVITAL_MODEL_REVISION=", NULL};
    ck_assert_int_eq(cv_config_set(&c, "model.revision", "x", &e), CV_OK);
    ck_assert_int_eq(cv_config_apply_env(&c, env2, &e), CV_OK);
    ck_assert_int_eq(c.generation.seed, 9);
    ck_assert_ptr_null(c.model.revision); /* empty = null for nullable keys */
    cv_config_free(&c);
}
END_TEST

static void expect_env_error(const char *var, const char *n1, const char *n2) {
    cv_config c;
    cv_error e = {CV_OK, ""};
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", var);
    char *env[] = {buf, NULL};
    ck_assert_int_eq(cv_config_apply_env(&c, env, &e), CV_ERR_CONFIG);
    ck_assert_msg(strstr(e.msg, n1) != NULL, "'%s' lacks '%s'", e.msg, n1);
    if (n2) ck_assert_msg(strstr(e.msg, n2) != NULL, "'%s' lacks '%s'", e.msg, n2);
    cv_config_free(&c);
}

START_TEST(env_errors) {
    expect_env_error("COREVITAL_GENERATION_MAXTOKENS=5", "COREVITAL_GENERATION_MAXTOKENS",
                     "unknown setting");
    expect_env_error("COREVITAL_GENERATION=5", "COREVITAL_GENERATION", "unknown setting");
    expect_env_error("COREVITAL_generation_top_k=5", "COREVITAL_generation_top_k", "unknown");
    expect_env_error("COREVITAL_GENERATION_TOP_K=five", "COREVITAL_GENERATION_TOP_K",
                     "invalid int value: 'five'");
    expect_env_error("COREVITAL_GENERATION_TOP_P=0.5x", "COREVITAL_GENERATION_TOP_P",
                     "invalid float");
    expect_env_error("COREVITAL_GENERATION_TEMPERATURE=nan", "COREVITAL_GENERATION_TEMPERATURE",
                     "invalid float");
    expect_env_error("COREVITAL_DEVICE=tpu", "COREVITAL_DEVICE", "invalid choice: 'tpu'");
    expect_env_error("COREVITAL_SUMMARIES_HIDDEN_STATS=mean,bogus",
                     "COREVITAL_SUMMARIES_HIDDEN_STATS", "unknown statistic 'bogus'");
    expect_env_error("COREVITAL_GENERATION_MAX_NEW_TOKENS=", "COREVITAL_GENERATION_MAX_NEW_TOKENS",
                     "empty value");
    expect_env_error("COREVITAL_GENERATION_MAX_NEW_TOKENS=99999999999",
                     "COREVITAL_GENERATION_MAX_NEW_TOKENS", "invalid int value");
}
END_TEST

START_TEST(validate_ranges) {
    const struct {
        const char *key, *value, *needle;
    } bad[] = {
        {"generation.max_new_tokens", "0", "max_new_tokens"},
        {"generation.temperature", "-0.1", "temperature"},
        {"generation.top_k", "-1", "top_k"},
        {"generation.top_p", "0", "top_p"},
        {"generation.top_p", "1.01", "top_p"},
        {"summaries.hidden.sketch.dim", "-1", "sketch.dim"},
        {"summaries.hidden.sketch.seed", "4294967296", "sketch.seed"},
        {"summaries.logits.topk", "0", "topk"},
        {"summaries.logits.topk", "65", "must be <= 64"}, /* refused, never silently clamped */
        {"sink.type", "http", "remote_url"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_config c;
        cv_error e = {CV_OK, ""};
        ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
        ck_assert_int_eq(cv_config_set(&c, bad[i].key, bad[i].value, &e), CV_OK);
        ck_assert_msg(cv_config_validate(&c, &e) == CV_ERR_CONFIG, "%s=%s accepted", bad[i].key,
                      bad[i].value);
        ck_assert_msg(strstr(e.msg, bad[i].needle) != NULL, "'%s' lacks '%s'", e.msg,
                      bad[i].needle);
        cv_config_free(&c);
    }
    /* Edge values that are fine; temperature 0 means greedy. */
    cv_config c;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.top_p", "1", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.top_k", "0", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.max_new_tokens", "1", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.temperature", "0", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(&c, &e), CV_OK);
    ck_assert_int_eq(c.generation.do_sample, 0);
    cv_config_free(&c);
}
END_TEST

/* ---- precedence through the CLI's own builder ---- */

static cv_status build(int argc, char **argv, char **env, cv_config *cfg, cv_error *e) {
    cv_run_args a;
    cv_status st = cv_cli_parse_run(argc, argv, &a, e);
    if (st != CV_OK) return st;
    return cv_cli_build_config(&a, env, cfg, e);
}

START_TEST(precedence_each_level_wins) {
    write_file("default.yaml", "generation:\n  top_k: 10\n  top_p: 0.5\n");
    const char *user = write_file("user.yaml", "generation:\n  top_k: 20\n");
    char dirvar[600];
    snprintf(dirvar, sizeof dirvar, "COREVITAL_CONFIG_DIR=%s", g_tmp);
    char *argv_flag[] = {"run",      "--model",    "m",       "--prompt", "p",
                         "--config", (char *)user, "--top_k", "40"};
    char *argv_cfg[] = {"run", "--model", "m", "--prompt", "p", "--config", (char *)user};
    char *argv_none[] = {"run", "--model", "m", "--prompt", "p"};
    char *env_all[] = {dirvar, "COREVITAL_GENERATION_TOP_K=30", NULL};
    char *env_dir[] = {dirvar, NULL};
    char *env_empty[] = {NULL};
    cv_config c;
    cv_error e;

    ck_assert_int_eq(build(9, argv_flag, env_all, &c, &e), CV_OK); /* flag > env */
    ck_assert_int_eq(c.generation.top_k, 40);
    ck_assert_double_eq(c.generation.top_p, 0.5); /* from default.yaml, nothing above it */
    cv_config_free(&c);
    ck_assert_int_eq(build(7, argv_cfg, env_all, &c, &e), CV_OK); /* env > --config */
    ck_assert_int_eq(c.generation.top_k, 30);
    cv_config_free(&c);
    ck_assert_int_eq(build(7, argv_cfg, env_dir, &c, &e), CV_OK); /* --config > default.yaml */
    ck_assert_int_eq(c.generation.top_k, 20);
    cv_config_free(&c);
    ck_assert_int_eq(build(5, argv_none, env_dir, &c, &e), CV_OK); /* default.yaml > built-in */
    ck_assert_int_eq(c.generation.top_k, 10);
    cv_config_free(&c);
    /* Without COREVITAL_CONFIG_DIR: configs/default.yaml of the current directory (repo root). */
    ck_assert_int_eq(build(5, argv_none, env_empty, &c, &e), CV_OK);
    ck_assert_int_eq(c.generation.top_k, 50);
    ck_assert_str_eq(c.model.hf_id, "m"); /* the flag */
    cv_config_free(&c);
}
END_TEST

START_TEST(absent_flags_keep_yaml_values) {
    const char *user =
        write_file("user.yaml", "generation: {max_new_tokens: 7, temperature: 0.5, top_k: 3, "
                                "top_p: 0.25, seed: 11}\n"
                                "device: {requested: cpu}\nlogging: {level: DEBUG}\n"
                                "model: {load_in_4bit: false}\nsink: {output_dir: elsewhere}\n");
    char *argv[] = {"run", "--model", "m", "--prompt", "p", "--config", (char *)user};
    char *env[] = {NULL};
    cv_config c;
    cv_error e;
    ck_assert_int_eq(build(7, argv, env, &c, &e), CV_OK);
    ck_assert_int_eq(c.generation.max_new_tokens, 7);
    ck_assert_double_eq(c.generation.temperature, 0.5);
    ck_assert_int_eq(c.generation.top_k, 3);
    ck_assert_double_eq(c.generation.top_p, 0.25);
    ck_assert_int_eq(c.generation.seed, 11);
    ck_assert_str_eq(c.device.requested, "cpu");
    ck_assert_str_eq(c.logging.level, "DEBUG");
    ck_assert_str_eq(c.sink.output_dir, "elsewhere");
    ck_assert_ptr_null(c.out_path);
    cv_config_free(&c);
}
END_TEST

START_TEST(out_flag_directory_or_file) {
    char *env[] = {NULL};
    cv_config c;
    cv_error e;
    char *a1[] = {"run", "--model", "m", "--prompt", "p", "--out", "traces/x"};
    ck_assert_int_eq(build(7, a1, env, &c, &e), CV_OK);
    ck_assert_str_eq(c.sink.output_dir, "traces/x");
    ck_assert_ptr_null(c.out_path);
    cv_config_free(&c);
    char *a2[] = {"run", "--model", "m", "--prompt", "p", "--out=traces/t.json"};
    ck_assert_int_eq(build(6, a2, env, &c, &e), CV_OK);
    ck_assert_str_eq(c.out_path, "traces/t.json");
    ck_assert_str_eq(c.sink.output_dir, "runs");
    cv_config_free(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, builtin_defaults_match_spec);
    tcase_add_test(tc, repo_default_yaml_matches_spec);
    tcase_add_test(tc, python_reference_yaml_loads);
    tcase_add_test(tc, yaml_values_and_types);
    tcase_add_test(tc, yaml_errors);
    tcase_add_test(tc, missing_config_file);
    tcase_add_test(tc, env_parsing);
    tcase_add_test(tc, env_errors);
    tcase_add_test(tc, validate_ranges);
    tcase_add_test(tc, precedence_each_level_wins);
    tcase_add_test(tc, absent_flags_keep_yaml_values);
    tcase_add_test(tc, out_flag_directory_or_file);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
