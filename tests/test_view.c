/* test_view.c — the trace views: chart data reductions, the summary text (golden files), the
 * validate command's exit codes and problem lists, compare, and the HTML report, which a real
 * browser (Debian's chromium, headless) loads: the expected charts are in its DOM, nothing is
 * fetched, and a screenshot is not blank. Covered: a decoder trace, a seq2seq trace, a trace
 * with null (non-finite) statistics and warnings, and a 4,000-step trace.
 * Fixture traces (tests/fixtures/view/) were written by the binary on gpt2-tiny and t5-tiny;
 * regenerate the goldens with `corevital summary T > T.summary.txt` when the format changes. */
#define _DEFAULT_SOURCE
#include "corevital/report.h"
#include "corevital/view.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FIX "tests/fixtures/view/"

static const char *bin(void) {
    const char *b = getenv("CV_TEST_BIN");
    return b && *b ? b : "./corevital";
}

static char *slurp(const char *path) {
    char *text = NULL;
    size_t n;
    cv_error err = {0};
    ck_assert_msg(cv_read_file(path, &text, &n, &err) == CV_OK, "%s", err.msg);
    return text;
}

static void spit(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Run a shell command; its exit code (stdout into out when given). */
static int sh(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t k = 0;
    if (out) {
        size_t r;
        while (k + 1 < n && (r = fread(out + k, 1, n - 1 - k, p)) > 0) k += r;
        out[k] = '\0';
    } else {
        char buf[4096];
        while (fread(buf, 1, sizeof buf, p) > 0) {
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ---- reductions ---- */

START_TEST(downsample_buckets_and_nan) {
    double x[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, out[10];
    ck_assert_int_eq(cv_view_downsample(x, 10, 20, out), 10); /* no reduction needed */
    ck_assert(out[9] == 10);
    ck_assert_int_eq(cv_view_downsample(x, 10, 4, out), 4); /* buckets [0,2) [2,5) [5,7) [7,10) */
    ck_assert(fabs(out[0] - 1.5) < 1e-12 && fabs(out[1] - 4) < 1e-12);
    ck_assert(fabs(out[2] - 6.5) < 1e-12 && fabs(out[3] - 9) < 1e-12);
    double y[6] = {NAN, NAN, 1, NAN, INFINITY, 3};
    ck_assert_int_eq(cv_view_downsample(y, 6, 3, out), 3);
    ck_assert(isnan(out[0])); /* a bucket of nulls stays null (grey) */
    ck_assert(out[1] == 1);   /* non-finite values are left out of the mean */
    ck_assert(out[2] == 3);
    ck_assert_int_eq(cv_view_downsample(y, 0, 3, out), 0);
    double lo, hi;
    ck_assert_int_eq(cv_view_range(y, 6, &lo, &hi), 1);
    ck_assert(lo == 1 && hi == 3);
    ck_assert_int_eq(cv_view_range(y, 2, &lo, &hi), 0);
    ck_assert(cv_view_median(x, 10) == 5.5);
    ck_assert(cv_view_median(y, 6) == 2);
    ck_assert(isnan(cv_view_median(y, 2)));
}
END_TEST

/* ---- summary ---- */

static void summary_matches_golden(const char *trace, const char *golden) {
    cv_trace_view v;
    cv_error err = {0};
    ck_assert_msg(cv_view_load(trace, &v, &err) == CV_OK, "%s", err.msg);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cv_view_summary(f, &v, 0);
    fclose(f);
    char *want = slurp(golden);
    ck_assert_str_eq(buf, want);
    ck_assert_ptr_null(strchr(buf, '\033')); /* no colour when not asked */
    int lines = 0;
    for (char *p = buf; *p; p++) lines += *p == '\n';
    ck_assert_int_le(lines, 40); /* under a screen */
    free(want);
    free(buf);
    cv_view_free(&v);
}

START_TEST(summary_golden_decoder_and_seq2seq) {
    summary_matches_golden(FIX "gpt2.json", FIX "gpt2.summary.txt");
    summary_matches_golden(FIX "t5.json", FIX "t5.summary.txt");
}
END_TEST

/* A layer far above the others is named; warnings are listed. */
START_TEST(summary_names_outlier_layer_and_warnings) {
    const char *tmp = tu_tmpdir("view-sum");
    char *text = slurp(FIX "gpt2.json");
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *tl = cJSON_GetObjectItem(j, "timeline");
    for (cJSON *s = tl->child; s; s = s->next) {
        cJSON *h = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "layers"), 0),
                                       "hidden_summary");
        cJSON_ReplaceItemInObject(h, "l2_norm_mean", cJSON_CreateNumber(1e4));
    }
    cJSON *w = cJSON_CreateObject();
    cJSON_AddStringToObject(w, "code", "NON_FINITE_VALUE");
    cJSON_AddStringToObject(w, "message", "timeline[1].layers[1].hidden_summary.std is NaN");
    cJSON_AddItemToArray(cJSON_GetObjectItem(j, "warnings"), w);
    char path[600];
    snprintf(path, sizeof path, "%s/t.json", tmp);
    char *out = cJSON_Print(j);
    spit(path, out);
    free(out);
    cJSON_Delete(j);
    cv_trace_view v;
    cv_error err = {0};
    ck_assert_msg(cv_view_load(path, &v, &err) == CV_OK, "%s", err.msg);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cv_view_summary(f, &v, 0);
    fclose(f);
    ck_assert_msg(strstr(buf, "layer 0   L2 norm 1e+04 = ") != NULL, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "warnings (1)"));
    ck_assert_ptr_nonnull(strstr(buf, "[NON_FINITE_VALUE] timeline[1]"));
    free(buf);
    cv_view_free(&v);
    tu_rmtree(tmp);
}
END_TEST

/* ---- validate ---- */

START_TEST(validate_exit_codes_and_every_problem) {
    const char *tmp = tu_tmpdir("view-val");
    char cmd[1400], out[8192], path[600];
    snprintf(cmd, sizeof cmd, "%s validate " FIX "gpt2.json", bin());
    ck_assert_int_eq(sh(cmd, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "valid schema 0.2.0 trace"));
    /* three problems in one file: all three are listed */
    char *text = slurp(FIX "gpt2.json");
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "summary"), "elapsed_ms",
                              cJSON_CreateString("slow"));
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(j, "model"), "dtype");
    cJSON *sk = cJSON_GetObjectItem(
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(
                cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 2),
                                    "layers"),
                1),
            "hidden_summary"),
        "sketch");
    cJSON_ReplaceItemInArray(sk, 0, cJSON_CreateNull());
    snprintf(path, sizeof path, "%s/bad.json", tmp);
    char *s = cJSON_Print(j);
    spit(path, s);
    free(s);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "%s validate %s", bin(), path);
    ck_assert_int_eq(sh(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "model.dtype: missing key") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "summary.elapsed_ms: expected an integer, found a string"), "%s",
                  out);
    ck_assert_msg(strstr(out, "timeline[2].layers[1].hidden_summary.sketch[0]: expected a number"),
                  "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "3 problems"));
    /* not JSON at all; a missing file; no argument */
    snprintf(path, sizeof path, "%s/nojson.json", tmp);
    spit(path, "{\"schema_version\": ");
    snprintf(cmd, sizeof cmd, "%s validate %s", bin(), path);
    ck_assert_int_eq(sh(cmd, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "not valid JSON"));
    snprintf(cmd, sizeof cmd, "%s validate %s/missing.json 2>/dev/null", bin(), tmp);
    ck_assert_int_eq(sh(cmd, NULL, 0), 1);
    snprintf(cmd, sizeof cmd, "%s validate 2>/dev/null", bin());
    ck_assert_int_eq(sh(cmd, NULL, 0), 2);
    tu_rmtree(tmp);
}
END_TEST

/* ---- compare ---- */

START_TEST(compare_divergence_and_layers) {
    cv_trace_view a, b;
    cv_error err = {0};
    ck_assert_int_eq(cv_view_load(FIX "gpt2.json", &a, &err), CV_OK);
    ck_assert_int_eq(cv_view_load(FIX "gpt2_sampled.json", &b, &err), CV_OK);
    int div = -1;
    for (int i = 0; i < a.n_steps && i < b.n_steps && div < 0; i++)
        if (a.token_id[i] != b.token_id[i]) div = i;
    ck_assert_int_ge(div, 0); /* greedy and sampled runs of the same prompt diverge */
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ck_assert_int_eq(cv_view_compare(f, NULL, &a, &a, &err), CV_OK);
    fclose(f);
    ck_assert_msg(strstr(buf, "tokens: identical over all 8 steps") != NULL, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "layer 1            0 / 0"));
    free(buf);
    f = open_memstream(&buf, &n);
    ck_assert_int_eq(cv_view_compare(f, NULL, &a, &b, &err), CV_OK);
    fclose(f);
    char want[128];
    snprintf(want, sizeof want, "first divergence at step %d (generated token %d)",
             a.prompt_tokens + div, div);
    ck_assert_msg(strstr(buf, want) != NULL, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "hidden_summary.l2_norm_mean"));
    free(buf);
    /* different depths: tokens and logits still compared, layers refused with the reason */
    b.n_layers = 1;
    f = open_memstream(&buf, &n);
    ck_assert_int_eq(cv_view_compare(f, NULL, &a, &b, &err), CV_OK);
    fclose(f);
    ck_assert_msg(strstr(buf, "layers: not compared (A has 2 layers, B has 1)") != NULL, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "logits entropy"));
    free(buf);
    b.n_layers = 2;
    cv_view_free(&a);
    cv_view_free(&b);
}
END_TEST

/* ---- HTML ---- */

/* Write trace `j` to dir/name.json and its report; returns the report path (static). */
static const char *report_of(cJSON *j, const char *dir, const char *name, double *seconds) {
    static char html[700];
    char path[600];
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    char *s = cJSON_Print(j);
    spit(path, s);
    free(s);
    snprintf(html, sizeof html, "%s/%s.html", dir, name);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "%s report %s -o %s", bin(), path, html);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(sh(cmd, NULL, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (seconds) *seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    return html;
}

static cJSON *load_json(const char *path) {
    char *t = slurp(path);
    cJSON *j = cJSON_Parse(t);
    free(t);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* The NaN case: null statistics with their warnings, and a hostile token text. */
static cJSON *nan_trace(void) {
    cJSON *j = load_json(FIX "gpt2.json");
    cJSON *s1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 1);
    cJSON *h = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s1, "layers"), 1),
                                   "hidden_summary");
    cJSON_ReplaceItemInObject(h, "std", cJSON_CreateNull());
    cJSON_ReplaceItemInObject(h, "sketch", cJSON_CreateArray());
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(s1, "logits_summary"), "entropy",
                              cJSON_CreateNull());
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(s1, "token"), "token_text",
                              cJSON_CreateString("<script>alert(1)</script>&\""));
    cJSON *w = cJSON_CreateObject();
    cJSON_AddStringToObject(w, "code", "NON_FINITE_VALUE");
    cJSON_AddStringToObject(w, "message",
                            "timeline[1].layers[1].hidden_summary.std is NaN; "
                            "written as null");
    cJSON_AddItemToArray(cJSON_GetObjectItem(j, "warnings"), w);
    return j;
}

/* 4,000 steps over 8 layers, built from the fixture's steps. */
static cJSON *large_trace(void) {
    cJSON *j = load_json(FIX "gpt2.json");
    cJSON *tl = cJSON_GetObjectItem(j, "timeline");
    int base = cJSON_GetArraySize(tl),
        P = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "summary"), "prompt_tokens")->valueint;
    cJSON *big = cJSON_CreateArray(), *ids = cJSON_CreateArray();
    for (int i = 0; i < 4000; i++) {
        cJSON *s = cJSON_Duplicate(cJSON_GetArrayItem(tl, i % base), 1);
        cJSON_ReplaceItemInObject(s, "step_index", cJSON_CreateNumber(P + i));
        cJSON *layers = cJSON_GetObjectItem(s, "layers");
        for (int l = 2; l < 8; l++) {
            cJSON *layer = cJSON_Duplicate(cJSON_GetArrayItem(layers, l % 2), 1);
            cJSON_ReplaceItemInObject(layer, "layer_index", cJSON_CreateNumber(l));
            cJSON_AddItemToArray(layers, layer);
        }
        cJSON_AddItemToArray(
            ids,
            cJSON_CreateNumber(
                cJSON_GetObjectItem(cJSON_GetObjectItem(s, "token"), "token_id")->valuedouble));
        cJSON_AddItemToArray(big, s);
    }
    cJSON_ReplaceItemInObject(j, "timeline", big);
    cJSON *gen = cJSON_GetObjectItem(j, "generated");
    cJSON_ReplaceItemInObject(gen, "token_ids", ids);
    cJSON_ReplaceItemInObject(gen, "num_tokens", cJSON_CreateNumber(4000));
    cJSON *sum = cJSON_GetObjectItem(j, "summary");
    cJSON_ReplaceItemInObject(sum, "generated_tokens", cJSON_CreateNumber(4000));
    cJSON_ReplaceItemInObject(sum, "total_steps", cJSON_CreateNumber(P + 4000));
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "num_layers", cJSON_CreateNumber(8));
    return j;
}

START_TEST(report_html_content) {
    const char *tmp = tu_tmpdir("view-html");
    cJSON *j = nan_trace();
    const char *html = report_of(j, tmp, "nan", NULL);
    cJSON_Delete(j);
    char *page = slurp(html);
    ck_assert_ptr_null(strstr(page, "<script>")); /* the token text is escaped */
    ck_assert_ptr_nonnull(strstr(page, "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;"));
    ck_assert_ptr_null(strstr(page, "src=")); /* self-contained: nothing to load */
    ck_assert_ptr_null(strstr(page, "href="));
    ck_assert_ptr_null(strstr(page, "@import"));
    ck_assert_ptr_nonnull(strstr(page, "fill=\"#d0d0d0\"")); /* the null cell is grey */
    ck_assert_ptr_nonnull(strstr(page, "hidden_summary.std is NaN"));
    ck_assert_ptr_nonnull(strstr(page, "plain schema 0.2.0 trace"));
    free(page);
    /* the seq2seq report has the cross-attention heatmaps and the encoder panel */
    j = load_json(FIX "t5.json");
    html = report_of(j, tmp, "t5", NULL);
    cJSON_Delete(j);
    page = slurp(html);
    ck_assert_ptr_nonnull(strstr(page, "id=\"heat-cross-mean\""));
    ck_assert_ptr_nonnull(strstr(page, "id=\"encoder-layers\""));
    free(page);
    /* corevital run --report writes the page next to the trace */
    char cmd[1600], trace[700], html2[700];
    snprintf(trace, sizeof trace, "%s/run.json", tmp);
    snprintf(html2, sizeof html2, "%s/run.html", tmp);
    snprintf(cmd, sizeof cmd,
             "%s run --model tests/fixtures/gpt2-tiny --prompt hi --max_new_tokens 3 --out %s "
             "--report >/dev/null 2>&1",
             bin(), trace);
    ck_assert_int_eq(sh(cmd, NULL, 0), 0);
    ck_assert_int_eq(access(html2, F_OK), 0);
    /* 4,000 steps: a few seconds at most, a few MB at most, and it says it averaged */
    double secs;
    j = large_trace();
    html = report_of(j, tmp, "large", &secs);
    cJSON_Delete(j);
    struct stat sb;
    ck_assert_int_eq(stat(html, &sb), 0);
    fprintf(stderr, "view: 4,000-step report %.2f s, %.2f MB\n", secs, sb.st_size / 1e6);
    ck_assert_int_lt(sb.st_size, 4 * 1000 * 1000);
    page = slurp(html);
    ck_assert_ptr_nonnull(strstr(page, "columns average consecutive steps"));
    free(page);
    tu_rmtree(tmp);
}
END_TEST

/* Chromium, headless: each report loads without console errors or requests, its charts are in
 * the DOM, and the screenshot is not blank. */
static int have_chromium(void) {
    return sh("command -v chromium >/dev/null 2>&1", NULL, 0) == 0;
}

static void browser_check(const char *html, const char *const *ids, size_t n_ids) {
    char cmd[4000], dom_path[900], log_path[900], png[900];
    snprintf(dom_path, sizeof dom_path, "%s.dom", html);
    snprintf(log_path, sizeof log_path, "%s.log", html);
    snprintf(png, sizeof png, "%s.png", html);
    const char *flags = "--headless --no-sandbox --disable-gpu --no-first-run "
                        "--disable-background-networking --enable-logging=stderr --v=0";
    snprintf(cmd, sizeof cmd, "timeout 90 chromium %s --dump-dom file://%s >%s 2>%s", flags, html,
             dom_path, log_path);
    ck_assert_int_eq(sh(cmd, NULL, 0), 0);
    char *dom = slurp(dom_path), *log = slurp(log_path);
    for (size_t i = 0; i < n_ids; i++) {
        char want[128];
        snprintf(want, sizeof want, "id=\"%s\"", ids[i]);
        ck_assert_msg(strstr(dom, want) != NULL, "%s: %s not in the DOM", html, ids[i]);
    }
    ck_assert_ptr_nonnull(strstr(dom, "<svg"));
    ck_assert_msg(strstr(log, "CONSOLE") == NULL, "console output: %s", log);
    ck_assert_msg(strstr(log, "net::ERR") == NULL, "a request failed: %s", log);
    free(dom);
    free(log);
    snprintf(cmd, sizeof cmd,
             "timeout 90 chromium %s --hide-scrollbars --window-size=1200,1600 --screenshot=%s "
             "file://%s >/dev/null 2>&1",
             flags, png, html);
    ck_assert_int_eq(sh(cmd, NULL, 0), 0);
    struct stat sb;
    ck_assert_int_eq(stat(png, &sb), 0);
    /* a blank 1200x1600 page compresses to a few KB; charts and text make it far larger */
    ck_assert_msg(sb.st_size > 40000, "%s: screenshot of %ld bytes looks blank", png,
                  (long)sb.st_size);
}

START_TEST(report_in_real_browser) {
    if (!have_chromium()) {
        /* install-test-deps.sh installs it; only a machine where that failed gets here */
        fprintf(stderr, "view: SKIPPED the browser checks: chromium is not installed "
                        "(apt-get install -y chromium)\n");
        return;
    }
    const char *tmp = tu_tmpdir("view-browser");
    char dir[700];
    ck_assert_ptr_nonnull(realpath(tmp, dir));
    static const char *const dec_ids[] = {
        "facts",   "warnings", "token-strip", "chart-entropy",  "chart-margin",
        "heat-l2", "heat-std", "heat-maxabs", "heat-attn-mean", "heat-attn-min"};
    static const char *const s2s_ids[] = {"token-strip", "heat-l2", "heat-cross-mean",
                                          "heat-cross-min", "encoder-layers"};
    cJSON *j = load_json(FIX "gpt2.json");
    char html[800];
    snprintf(html, sizeof html, "%s", report_of(j, dir, "decoder", NULL));
    cJSON_Delete(j);
    browser_check(html, dec_ids, sizeof dec_ids / sizeof dec_ids[0]);
    j = load_json(FIX "t5.json");
    snprintf(html, sizeof html, "%s", report_of(j, dir, "seq2seq", NULL));
    cJSON_Delete(j);
    browser_check(html, s2s_ids, sizeof s2s_ids / sizeof s2s_ids[0]);
    j = nan_trace();
    snprintf(html, sizeof html, "%s", report_of(j, dir, "nan", NULL));
    cJSON_Delete(j);
    browser_check(html, dec_ids, sizeof dec_ids / sizeof dec_ids[0]);
    j = large_trace();
    snprintf(html, sizeof html, "%s", report_of(j, dir, "large", NULL));
    cJSON_Delete(j);
    browser_check(html, dec_ids, sizeof dec_ids / sizeof dec_ids[0]);
    /* compare -o: the divergence and the |A - B| heatmaps */
    static const char *const cmp_ids[] = {"facts", "divergence", "chart-entropy-diff",
                                          "heat-diff-0", "heat-diff-2"};
    char cmd[2000];
    snprintf(html, sizeof html, "%s/diff.html", dir);
    snprintf(cmd, sizeof cmd, "%s compare " FIX "gpt2.json " FIX "gpt2_sampled.json -o %s", bin(),
             html);
    ck_assert_int_eq(sh(cmd, NULL, 0), 0);
    browser_check(html, cmp_ids, sizeof cmp_ids / sizeof cmp_ids[0]);
    tu_rmtree(tmp);
}
END_TEST

int main(void) {
    Suite *s = suite_create("view");
    TCase *tc = tcase_create("view");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, downsample_buckets_and_nan);
    tcase_add_test(tc, summary_golden_decoder_and_seq2seq);
    tcase_add_test(tc, summary_names_outlier_layer_and_warnings);
    tcase_add_test(tc, validate_exit_codes_and_every_problem);
    tcase_add_test(tc, compare_divergence_and_layers);
    tcase_add_test(tc, report_html_content);
    tcase_add_test(tc, report_in_real_browser);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
