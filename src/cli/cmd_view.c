/* cmd_view.c — the commands that read a trace back: `report` (HTML), `summary` (terminal),
 * `compare` (two runs) and `validate` (schema 0.2.0, every problem listed).
 * Exit codes: 0 ok (validate: the trace is valid), 1 a trace that cannot be read or is invalid,
 * 2 a usage error. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/cli.h"
#include "corevital/report.h"
#include "corevital/view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(const char *msg, const char *text) {
    if (msg) fprintf(stderr, "error: %s\n", msg);
    fputs(text, msg ? stderr : stdout);
    return msg ? CV_EXIT_USAGE : CV_EXIT_OK;
}

/* Parse "CMD FILE... [-o OUT]" with exactly n_files files. */
static int parse_files(int argc, char **argv, int n_files, const char **files, const char **out,
                       const char *help) {
    int nf = 0;
    *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return usage(NULL, help) + 100;
        if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--out") == 0) {
            if (i + 1 >= argc) return usage("argument -o: expected one argument", help);
            *out = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unrecognized arguments: %s", argv[i]);
            return usage(msg, help);
        } else if (nf < n_files) {
            files[nf++] = argv[i];
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unrecognized arguments: %s", argv[i]);
            return usage(msg, help);
        }
    }
    if (nf < n_files)
        return usage(n_files == 1 ? "a trace file is required" : "two trace files are required",
                     help);
    return -1; /* parsed */
}

/* report.html next to trace.json (trace_x.json -> trace_x.html). */
static void default_html_path(const char *trace, char *buf, size_t n) {
    size_t len = strlen(trace);
    if (len > 5 && strcmp(trace + len - 5, ".json") == 0)
        snprintf(buf, n, "%.*s.html", (int)(len - 5), trace);
    else
        snprintf(buf, n, "%s.html", trace);
}

int cv_view_write_report(const char *trace, const char *html_path, char *written, size_t n) {
    cv_trace_view v;
    cv_error err = {CV_OK, ""};
    char def[4096];
    if (!html_path) {
        default_html_path(trace, def, sizeof def);
        html_path = def;
    }
    if (cv_view_load(trace, &v, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_RUNTIME;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", html_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", tmp);
        cv_view_free(&v);
        return CV_EXIT_RUNTIME;
    }
    cv_status st = cv_view_report_html(f, &v, &err);
    if (fclose(f) != 0 && st == CV_OK) st = cv_fail(&err, CV_ERR_IO, "error writing %s", tmp);
    cv_view_free(&v);
    if (st != CV_OK || rename(tmp, html_path) != 0) {
        fprintf(stderr, "error: %s\n", st != CV_OK ? err.msg : "cannot rename the report");
        unlink(tmp);
        return CV_EXIT_RUNTIME;
    }
    if (written) snprintf(written, n, "%s", html_path);
    return CV_EXIT_OK;
}

static const char k_report_help[] =
    "usage: corevital report TRACE.json [-o REPORT.html]\n\n"
    "Write one self-contained HTML page (no network) for a trace: run facts, warnings, health\n"
    "results when present, the tokens coloured by uncertainty with their top-k alternatives,\n"
    "charts over steps and layer x step heatmaps. Default output: TRACE.html.\n";

int cv_cmd_report(int argc, char **argv) {
    const char *files[1], *out;
    int rc = parse_files(argc, argv, 1, files, &out, k_report_help);
    if (rc >= 100) return rc - 100;
    if (rc >= 0) return rc;
    char written[4096];
    rc = cv_view_write_report(files[0], out, written, sizeof written);
    if (rc == CV_EXIT_OK) printf("%s\n", written);
    return rc;
}

static const char k_summary_help[] =
    "usage: corevital summary TRACE.json\n\n"
    "Print a summary of a trace in under a screen: model, prompt, output, the worst steps,\n"
    "layers that stand out, warnings (colours only on a terminal).\n";

int cv_cmd_summary(int argc, char **argv) {
    const char *files[1], *out;
    int rc = parse_files(argc, argv, 1, files, &out, k_summary_help);
    if (rc >= 100) return rc - 100;
    if (rc >= 0) return rc;
    if (out) return usage("summary writes to stdout (no -o)", k_summary_help);
    cv_trace_view v;
    cv_error err = {CV_OK, ""};
    if (cv_view_load(files[0], &v, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_RUNTIME;
    }
    cv_view_summary(stdout, &v, isatty(STDOUT_FILENO) && !getenv("NO_COLOR"));
    cv_view_free(&v);
    return CV_EXIT_OK;
}

static const char k_compare_help[] =
    "usage: corevital compare A.json B.json [-o DIFF.html]\n\n"
    "Compare two runs: the first step where the generated tokens diverge, and per-step and\n"
    "per-layer differences of every statistic (max and mean |A - B|). Traces with different\n"
    "layer counts are compared on tokens and logits only.\n";

int cv_cmd_compare(int argc, char **argv) {
    const char *files[2], *out;
    int rc = parse_files(argc, argv, 2, files, &out, k_compare_help);
    if (rc >= 100) return rc - 100;
    if (rc >= 0) return rc;
    cv_trace_view a, b;
    cv_error err = {CV_OK, ""};
    if (cv_view_load(files[0], &a, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_RUNTIME;
    }
    if (cv_view_load(files[1], &b, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        cv_view_free(&a);
        return CV_EXIT_RUNTIME;
    }
    FILE *html = out ? fopen(out, "w") : NULL;
    if (out && !html) {
        fprintf(stderr, "error: cannot write %s\n", out);
        rc = CV_EXIT_RUNTIME;
    } else {
        rc = cv_view_compare(stdout, html, &a, &b, &err) == CV_OK ? CV_EXIT_OK : CV_EXIT_RUNTIME;
        if (rc != CV_EXIT_OK) fprintf(stderr, "error: %s\n", err.msg);
        if (html && fclose(html) != 0) rc = CV_EXIT_RUNTIME;
        if (html && rc == CV_EXIT_OK) printf("\nwrote %s\n", out);
    }
    cv_view_free(&a);
    cv_view_free(&b);
    return rc;
}

static const char k_validate_help[] =
    "usage: corevital validate TRACE.json\n\n"
    "Check a trace against schema 0.2.0: exit 0 when valid; otherwise exit 1 and list every\n"
    "problem, one per line, as 'path: what is wrong'.\n";

static void print_problem(void *user, const char *msg) {
    fprintf(stdout, "%s: %s\n", (const char *)user, msg);
}

int cv_cmd_validate(int argc, char **argv) {
    const char *files[1], *out;
    int rc = parse_files(argc, argv, 1, files, &out, k_validate_help);
    if (rc >= 100) return rc - 100;
    if (rc >= 0) return rc;
    if (out) return usage("validate takes no -o", k_validate_help);
    char *text = NULL;
    size_t len;
    cv_error err = {CV_OK, ""};
    if (cv_read_file(files[0], &text, &len, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_RUNTIME;
    }
    if (strlen(text) != len) {
        printf("%s: the file contains a NUL byte at offset %zu\n", files[0], strlen(text));
        free(text);
        return CV_EXIT_RUNTIME;
    }
    size_t n = cv_trace_validate_all(text, print_problem, (void *)files[0]);
    free(text);
    if (n == 0) {
        printf("%s: valid schema %s trace\n", files[0], CV_SCHEMA_VERSION);
        return CV_EXIT_OK;
    }
    printf("%s: %zu problem%s\n", files[0], n, n == 1 ? "" : "s");
    return CV_EXIT_RUNTIME;
}
