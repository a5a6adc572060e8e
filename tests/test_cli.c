/* test_cli.c — the command line: every usage-error path with its exit code and one-line
 * message, help/version, the option parser's forms (--opt value, --opt=value, bare --perf), the
 * runtime-failure exit code and the success block's text.
 *
 * Each case runs cv_cli_main (the whole program, main.c only calls it) in a forked child with
 * stdout and stderr captured to files and its own environment, so exit codes and output are
 * exactly what the binary gives. When the built binary is found (./corevital, or $CV_TEST_BIN)
 * it is also run for --version. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/cli.h"
#include "corevital/report.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    int rc;
    char out[8192];
    char err[8192];
} result;

static void read_back(FILE *f, char *buf, size_t n) {
    rewind(f);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
}

/* Run cv_cli_main(argv) in a child. env: NULL-terminated "NAME=value" list added to a copy of
 * the environment from which every COREVITAL_* variable was removed. */
static result run_cli(const char *const *env, int argc, ...) {
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "corevital";
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;

    FILE *fo = tmpfile(), *fe = tmpfile();
    ck_assert(fo && fe);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fileno(fo), 1);
        dup2(fileno(fe), 2);
        for (;;) { /* drop inherited COREVITAL_* settings */
            char **e = environ;
            while (*e && strncmp(*e, "COREVITAL_", 10) != 0) e++;
            if (!*e) break;
            char name[256];
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof name, "%.*s", (int)n, *e);
            unsetenv(name);
        }
        for (const char *const *e = env; e && *e; e++) {
            char name[256];
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof name, "%.*s", (int)n, *e);
            setenv(name, *e + n + 1, 1);
        }
        int rc = cv_cli_main(argc, argv);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    result r;
    ck_assert(WIFEXITED(status));
    r.rc = WEXITSTATUS(status);
    read_back(fo, r.out, sizeof r.out);
    read_back(fe, r.err, sizeof r.err);
    fclose(fo);
    fclose(fe);
    return r;
}

/* A fresh name under $TMPDIR (or the system temp directory): tmpl receives "<dir>/<tag>XXXXXX". */
static void tmp_template(char *tmpl, size_t n, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpl, n, "%s/%sXXXXXX", base && *base ? base : "/tmp", tag);
}

/* A usage error: exit 2, nothing on stdout, exactly one stderr line "error: ...needle...". */
static void expect_usage(result r, const char *needle) {
    ck_assert_msg(r.rc == 2, "exit %d (want 2), stderr: %s", r.rc, r.err);
    ck_assert_str_eq(r.out, "");
    ck_assert_msg(strncmp(r.err, "error: ", 7) == 0, "stderr: %s", r.err);
    ck_assert_msg(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    ck_assert_msg(strstr(r.err, needle) != NULL, "'%s' lacks '%s'", r.err, needle);
}

#define M "--model", "tests/fixtures/no-such-model"
#define P "--prompt", "hi"

START_TEST(top_level) {
    result r = run_cli(NULL, 1);
    ck_assert_int_eq(r.rc, 2); /* no command: a usage error, usage on stderr */
    ck_assert_str_eq(r.out, "");
    ck_assert_ptr_nonnull(strstr(r.err, "usage: corevital"));
    r = run_cli(NULL, 2, "--version");
    ck_assert_int_eq(r.rc, 0);
    ck_assert_str_eq(r.out, "corevital " COREVITAL_VERSION "\n");
    ck_assert_str_eq(COREVITAL_VERSION, "0.2.0");
    r = run_cli(NULL, 2, "--help");
    ck_assert_int_eq(r.rc, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "run"));
    ck_assert_ptr_nonnull(strstr(r.out, "tokenize"));
    r = run_cli(NULL, 2, "-h");
    ck_assert_int_eq(r.rc, 0);
    expect_usage(run_cli(NULL, 2, "runn"), "invalid choice: 'runn'");
    expect_usage(run_cli(NULL, 2, "--verbose"), "unrecognized arguments: --verbose");
}
END_TEST

START_TEST(run_help) {
    result r = run_cli(NULL, 3, "run", "--help");
    ck_assert_int_eq(r.rc, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "usage: corevital run --model"));
    const char *opts[] = {
        "--model",       "--prompt",      "--max_new_tokens", "--device",     "--seed",
        "--temperature", "--top_k",       "--top_p",          "--quantize-4", "--quantize-8",
        "--out",         "--remote_sink", "--remote_url",     "--config",     "--log_level",
        "--perf",        "--threads",     "--revision"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        ck_assert_msg(strstr(r.out, opts[i]) != NULL, "help lacks %s", opts[i]);
    /* --help wins over anything else on the line, as with argparse. */
    r = run_cli(NULL, 4, "run", "--bogus", "-h");
    ck_assert_int_eq(r.rc, 0);
}
END_TEST

START_TEST(missing_and_unknown) {
    expect_usage(run_cli(NULL, 2, "run"),
                 "the following arguments are required: --model, --prompt");
    expect_usage(run_cli(NULL, 4, "run", M), "required: --prompt");
    expect_usage(run_cli(NULL, 4, "run", P), "required: --model");
    expect_usage(run_cli(NULL, 7, "run", M, P, "--bogus"), "unrecognized arguments: --bogus");
    expect_usage(run_cli(NULL, 7, "run", M, P, "stray"), "unrecognized arguments: stray");
    expect_usage(run_cli(NULL, 7, "run", M, P, "--bogus=1"), "unrecognized arguments: --bogus");
    expect_usage(run_cli(NULL, 5, "run", P, "--model"), "argument --model: expected one argument");
}
END_TEST

START_TEST(bad_values) {
    expect_usage(run_cli(NULL, 8, "run", M, P, "--max_new_tokens", "abc"),
                 "argument --max_new_tokens: invalid int value: 'abc'");
    expect_usage(run_cli(NULL, 7, "run", M, P, "--max_new_tokens=2.5"),
                 "argument --max_new_tokens: invalid int value: '2.5'");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--max_new_tokens", "0"),
                 "argument --max_new_tokens: must be >= 1");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--temperature", "warm"),
                 "argument --temperature: invalid float value: 'warm'");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--temperature", "-1"),
                 "argument --temperature: must be >= 0");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--top_k", "-1"), "argument --top_k: must be >= 0");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--top_k", "5x"), "argument --top_k: invalid int");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--top_p", "1.5"),
                 "argument --top_p: must be in (0, 1]");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--top_p", "0"), "argument --top_p");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--seed", "x"), "argument --seed: invalid int");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--device", "tpu"),
                 "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--log_level", "TRACE"),
                 "argument --log_level: invalid choice: 'TRACE'");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--perf", "foo"),
                 "argument --perf: invalid choice: 'foo' (choose from 'summary', 'detailed', "
                 "'strict')");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--remote_sink", "ftp"),
                 "argument --remote_sink: invalid choice: 'ftp'");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--threads", "-2"), "argument --threads");
    expect_usage(run_cli(NULL, 7, "run", M, P, "--quantize-4=yes"),
                 "argument --quantize-4: ignored explicit argument 'yes'");
    expect_usage(run_cli(NULL, 8, "run", M, P, "--out", ""), "argument --out: empty path");
}
END_TEST

START_TEST(cross_field_and_features) {
    expect_usage(run_cli(NULL, 8, "run", M, P, "--remote_sink", "http"), "--remote_url");
    /* both quantize flags are accepted: 4-bit wins with a warning at load (issue 11) */
    expect_usage(run_cli(NULL, 8, "run", M, P, "--remote_sink", "prometheus"), "--remote_url");
    {
        const char *env[] = {"DD_API_KEY=", NULL};
        expect_usage(run_cli(env, 8, "run", M, P, "--remote_sink", "datadog"), "DD_API_KEY");
    }
    if (!cv_feature_available("http"))
        expect_usage(run_cli(NULL, 10, "run", M, P, "--remote_sink", "http", "--remote_url",
                             "http://127.0.0.1:9/x"),
                     "remote sink 'http' (--remote_sink / sink.type) is not available in this "
                     "build yet");
    if (!cv_feature_available("quantize"))
        expect_usage(run_cli(NULL, 7, "run", M, P, "--quantize-8"),
                     "quantization (--quantize-8 / model.load_in_8bit) is not available in this "
                     "build yet");
    if (!cv_feature_available("perf")) {
        /* Bare --perf followed by another option. */
        expect_usage(run_cli(NULL, 7, "run", "--perf", M, P),
                     "--perf (performance.mode 'summary') is not available in this build yet");
        expect_usage(run_cli(NULL, 7, "run", M, P, "--perf=strict"), "'strict'");
    }
    if (!cv_feature_available("cuda"))
        expect_usage(run_cli(NULL, 8, "run", M, P, "--device", "cuda"),
                     "device 'cuda' (--device / device.requested) is not available in this build "
                     "yet");
    /* Features are refused wherever the setting comes from. */
    if (!cv_feature_available("cuda")) {
        const char *env[] = {"COREVITAL_DEVICE=cuda", NULL};
        expect_usage(run_cli(env, 6, "run", M, P), "not available in this build yet");
    }
    ck_assert_int_eq(cv_feature_available("no-such-feature"), 0);
#ifdef CV_HAVE_CUDA
    ck_assert_int_eq(cv_feature_available("cuda"), 1);
#else
    ck_assert_int_eq(cv_feature_available("cuda"), 0);
#endif
}
END_TEST

START_TEST(config_and_env_errors) {
    expect_usage(run_cli(NULL, 8, "run", M, P, "--config", "tests/fixtures/no-such.yaml"),
                 "config file not found: tests/fixtures/no-such.yaml");
    char path[512];
    tmp_template(path, sizeof path, "cv_cli_yaml_");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char bad[] = "generation:\n  temperature: hot\n";
    ck_assert_int_eq(write(fd, bad, sizeof bad - 1), (ssize_t)(sizeof bad - 1));
    close(fd);
    expect_usage(run_cli(NULL, 8, "run", M, P, "--config", path),
                 "generation.temperature: invalid float value: 'hot'");
    unlink(path);
    const char *e1[] = {"COREVITAL_BOGUS=1", NULL};
    expect_usage(run_cli(e1, 6, "run", M, P), "environment variable COREVITAL_BOGUS");
    const char *e2[] = {"COREVITAL_GENERATION_TOP_K=x", NULL};
    expect_usage(run_cli(e2, 6, "run", M, P),
                 "COREVITAL_GENERATION_TOP_K: generation.top_k: invalid int");
    /* A bad environment value is overridden by... nothing: the flag wins only for its own key. */
    const char *e3[] = {"COREVITAL_GENERATION_TOP_P=2", NULL};
    expect_usage(run_cli(e3, 6, "run", M, P), "generation.top_p: must be in (0, 1]");
    result r = run_cli(e3, 8, "run", M, P, "--top_p", "0.5");
    ck_assert_int_ne(r.rc, 2); /* the flag fixed it: the run proceeds (and fails at load) */
}
END_TEST

START_TEST(runtime_failure_exits_1) {
    char dir[512];
    tmp_template(dir, sizeof dir, "cv_cli_out_");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    result r = run_cli(NULL, 10, "run", M, P, "--log_level", "ERROR", "--out", dir);
    ck_assert_msg(r.rc == 1, "exit %d, stderr %s", r.rc, r.err);
    ck_assert_str_eq(r.out, "");
    ck_assert_msg(strncmp(r.err, "error: ", 7) == 0, "stderr: %s", r.err);
    ck_assert_msg(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    ck_assert_int_eq(rmdir(dir), 0); /* empty: no trace was written for a failed run */
}
END_TEST

START_TEST(parser_forms) {
    cv_run_args a;
    cv_error e;
    char *v1[] = {"run", "--perf", "--model", "m", "--prompt=a=b", "--top_k=3", "--top_k", "4"};
    ck_assert_int_eq(cv_cli_parse_run(8, v1, &a, &e), CV_OK);
    ck_assert_str_eq(a.prompt, "a=b");
    ck_assert_uint_eq(a.n_settings, 4);
    ck_assert_str_eq(a.settings[0].key, "performance.mode");
    ck_assert_str_eq(a.settings[0].value, "summary"); /* bare --perf */
    ck_assert_str_eq(a.settings[1].key, "model.hf_id");
    ck_assert_str_eq(a.settings[3].value, "4"); /* last one wins when applied in order */
    char *v2[] = {"run", "--model", "m", "--prompt", "p", "--perf", "detailed"};
    ck_assert_int_eq(cv_cli_parse_run(7, v2, &a, &e), CV_OK);
    ck_assert_str_eq(a.settings[1].value, "detailed");
    char *v3[] = {"run", "--model", "m", "--prompt", "p", "--perf"};
    ck_assert_int_eq(cv_cli_parse_run(6, v3, &a, &e), CV_OK);
    ck_assert_str_eq(a.settings[1].value, "summary");
    char *v4[] = {"run",           "--model", "m",         "--prompt", "p",
                  "--remote_sink", "none",    "--threads", "3"};
    ck_assert_int_eq(cv_cli_parse_run(9, v4, &a, &e), CV_OK);
    ck_assert_str_eq(a.settings[1].key, "sink.type");
    ck_assert_str_eq(a.settings[1].value, "local_file");
    ck_assert_str_eq(a.threads, "3");
    /* A prompt that looks like a number or starts with '-' is still the prompt's value. */
    char *v5[] = {"run", "--model", "m", "--prompt", "-5 degrees"};
    ck_assert_int_eq(cv_cli_parse_run(5, v5, &a, &e), CV_OK);
    ck_assert_str_eq(a.prompt, "-5 degrees");
}
END_TEST

START_TEST(summary_block) {
    cv_report r;
    cv_error e;
    ck_assert_int_eq(cv_report_init(&r, &e), CV_OK);
    cv_report_set_str(&r.model.hf_id, "gpt2", &e);
    r.summary.total_steps = 25;
    r.summary.prompt_tokens = 5;
    r.summary.generated_tokens = 20;
    r.summary.elapsed_ms = 1234;
    cv_report_set_str(&r.generated.output_text, " jumps over", &e);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cv_cli_print_summary(f, &r, "runs/trace_abcd1234.json");
    fclose(f);
    const char *rule = "============================================================";
    char want[1024];
    snprintf(want, sizeof want,
             "\n%s\n\xE2\x9C\x93 Monitoring Complete\n%s\nModel:           gpt2\n"
             "Total steps:     25 (5 prompt tokens + 20 generated tokens)\n"
             "Elapsed time:    1234ms\n"
             "Output file:     runs/trace_abcd1234.json\n%s\n\nGenerated text:\n jumps over\n",
             rule, rule, rule);
    ck_assert_str_eq(buf, want);
    ck_assert_uint_eq(strlen(rule), 60);
    free(buf);
    cv_report_add_warning(&r, "NON_FINITE_VALUE", "timeline[0].logits_summary.entropy is NaN");
    f = open_memstream(&buf, &n);
    cv_cli_print_summary(f, &r, "x.json");
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "Output file:     x.json\n\nWarnings (1):\n  - "
                                      "[NON_FINITE_VALUE] timeline[0].logits_summary"
                                      ".entropy is NaN\n===="));
    free(buf);
    cv_report_free(&r);
}
END_TEST

START_TEST(binary_version) {
    const char *bin = getenv("CV_TEST_BIN");
    if (!bin) bin = "./corevital";
    if (access(bin, X_OK) != 0) return; /* not built in this configuration */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --version", bin);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char line[128] = "";
    ck_assert_ptr_nonnull(fgets(line, sizeof line, p));
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_str_eq(line, "corevital " COREVITAL_VERSION "\n");
}
END_TEST

int main(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, top_level);
    tcase_add_test(tc, run_help);
    tcase_add_test(tc, missing_and_unknown);
    tcase_add_test(tc, bad_values);
    tcase_add_test(tc, cross_field_and_features);
    tcase_add_test(tc, config_and_env_errors);
    tcase_add_test(tc, runtime_failure_exits_1);
    tcase_add_test(tc, parser_forms);
    tcase_add_test(tc, summary_block);
    tcase_add_test(tc, binary_version);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
