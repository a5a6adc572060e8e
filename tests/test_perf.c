/* test_perf.c — the `--perf` monitor (SPEC §6): the summary's shape and arithmetic (parents +
 * unaccounted = total, percentages, Python round() to 2 decimals), nesting, per-step
 * aggregation, duplicate names in the detailed breakdown, the detailed file's path and layout,
 * strict mode's overhead fields and its same-tokens guarantee, and whole timed runs of the
 * bundled tiny GPT-2 in all three modes.
 *
 * Unit tests drive the timer with explicit times (cv_perf_begin_at / cv_perf_record) whose
 * differences are exact in binary, so every expected number is computed by hand. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/config.h"
#include "corevital/generate.h"
#include "corevital/perf.h"
#include "corevital/report.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1024.0 /* a run start whose sums with small binary fractions stay exact */

/* Serialize (raw floats verbatim) and parse back, so numbers can be read as doubles. */
static cJSON *reparse(const cJSON *j, char **text) {
    char *s = cJSON_PrintUnformatted(j);
    ck_assert_ptr_nonnull(s);
    cJSON *r = cJSON_Parse(s);
    ck_assert_msg(r != NULL, "unparsable JSON: %s", s);
    if (text)
        *text = s;
    else
        free(s);
    return r;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "key '%s' is not a number", key);
    return v->valuedouble;
}

static const cJSON *obj(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(v != NULL, "key '%s' missing", key);
    return v;
}

/* The keys of an object, comma-joined, for order checks. */
static void keys_of(const cJSON *o, char *buf, size_t n) {
    buf[0] = '\0';
    for (const cJSON *c = o->child; c; c = c->next) {
        if (buf[0]) strncat(buf, ",", n - strlen(buf) - 1);
        strncat(buf, c->string, n - strlen(buf) - 1);
    }
}

static void assert_keys(const cJSON *o, const char *want) {
    char buf[1024];
    keys_of(o, buf, sizeof buf);
    ck_assert_str_eq(buf, want);
}

#define SUMMARY_KEYS "total_wall_time_ms,parent_operations,unaccounted_time,detailed_file"
#define STRICT_KEYS                                                                                \
    SUMMARY_KEYS ",original_model_load_ms,warmup_ms,baseline_ms,instrumented_inference_ms,"        \
                 "inference_overhead_ms,inference_overhead_pct,corevital_overhead_ms,"             \
                 "corevital_overhead_pct"

/* ---- unit: summary arithmetic ---- */

/* The reference's own case: parents 100 + 500 + 10, total 620 -> 10 ms unaccounted. */
START_TEST(summary_reference_case) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("summary", T0, &p, NULL), CV_OK);
    cv_perf_record(p, "model_load", T0, T0 + 100);
    cv_perf_record(p, "model_inference", T0 + 102, T0 + 602);
    cv_perf_record(p, "decode_generated_text", T0 + 605, T0 + 615);
    cv_perf_mark_end(p, T0 + 620);
    cv_perf_mark_end(p, T0 + 9999); /* only the first end counts */
    cJSON *s = cv_perf_summary_json(p, NULL);
    char *text;
    cJSON *r = reparse(s, &text);
    assert_keys(r, SUMMARY_KEYS);
    ck_assert(strstr(text, "\"total_wall_time_ms\":620.0") != NULL); /* Python float form */
    ck_assert(strstr(text, "\"detailed_file\":null") != NULL);
    ck_assert(num(r, "total_wall_time_ms") == 620.0);
    const cJSON *po = obj(r, "parent_operations");
    ck_assert_int_eq(cJSON_GetArraySize(po), 3);
    const char *names[] = {"model_load", "model_inference", "decode_generated_text"};
    const double ms[] = {100.0, 500.0, 10.0}, pct[] = {16.13, 80.65, 1.61};
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(po, i);
        assert_keys(e, "name,ms,pct");
        ck_assert_str_eq(obj(e, "name")->valuestring, names[i]);
        ck_assert(num(e, "ms") == ms[i]);
        ck_assert_msg(num(e, "pct") == pct[i], "pct %g", num(e, "pct"));
    }
    const cJSON *u = obj(r, "unaccounted_time");
    assert_keys(u, "ms,pct");
    ck_assert(num(u, "ms") == 10.0);
    ck_assert(num(u, "pct") == 1.61);
    free(text);
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* round(x, 2) as Python does it: exact binary ties go to even (0.125 -> 0.12, 0.375 -> 0.38),
 * percentages are computed from raw values, and parents + unaccounted = total. */
START_TEST(summary_rounding) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("summary", T0, &p, NULL), CV_OK);
    cv_perf_record(p, "a", T0, T0 + 0.125);          /* ms 0.12 */
    cv_perf_record(p, "b", T0 + 1, T0 + 1.375);      /* ms 0.38 */
    cv_perf_record(p, "c", T0 + 2, T0 + 5);          /* pct 100*3/800 = 0.375 -> 0.38 */
    cv_perf_record(p, "d", T0 + 8, T0 + 9);          /* pct 0.125 -> 0.12 */
    cv_perf_record(p, "e", T0 + 10, T0 + 10.628125); /* ms 0.628125 -> 0.63 */
    cv_perf_mark_end(p, T0 + 800);
    cJSON *s = cv_perf_summary_json(p, NULL);
    cJSON *r = reparse(s, NULL);
    const cJSON *po = obj(r, "parent_operations");
    const double ms[] = {0.12, 0.38, 3.0, 1.0, 0.63};
    const double pct[] = {0.02, 0.05, 0.38, 0.12, 0.08};
    double sum_raw = 0.125 + 0.375 + 3 + 1 + 0.628125;
    for (int i = 0; i < 5; i++) {
        const cJSON *e = cJSON_GetArrayItem(po, i);
        ck_assert_msg(num(e, "ms") == ms[i], "%d: ms %.17g", i, num(e, "ms"));
        ck_assert_msg(num(e, "pct") == pct[i], "%d: pct %.17g", i, num(e, "pct"));
    }
    const cJSON *u = obj(r, "unaccounted_time");
    char want[32];
    snprintf(want, sizeof want, "%.2f", 800 - sum_raw);
    ck_assert_msg(num(u, "ms") == strtod(want, NULL), "unaccounted %.17g", num(u, "ms"));
    snprintf(want, sizeof want, "%.2f", 100 * (800 - sum_raw) / 800);
    ck_assert(num(u, "pct") == strtod(want, NULL));
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* No run end: the total is the sum of the parents, unaccounted 0. */
START_TEST(summary_total_falls_back_to_parents) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("detailed", T0, &p, NULL), CV_OK);
    cv_perf_record(p, "x", T0, T0 + 30);
    cv_perf_record(p, "y", T0 + 40, T0 + 50);
    cJSON *s = cv_perf_summary_json(p, "runs/trace_12345678_performance_detailed.json");
    cJSON *r = reparse(s, NULL);
    ck_assert(num(r, "total_wall_time_ms") == 40.0);
    ck_assert(num(obj(r, "unaccounted_time"), "ms") == 0.0);
    ck_assert(num(cJSON_GetArrayItem(obj(r, "parent_operations"), 0), "pct") == 75.0);
    ck_assert_str_eq(obj(r, "detailed_file")->valuestring,
                     "runs/trace_12345678_performance_detailed.json");
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* The reference's strict case: cached model_load 1 ms reported as the cold 1500 ms. */
START_TEST(summary_strict_fields) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("strict", T0, &p, NULL), CV_OK);
    double t = T0;
    const char *names[] = {"config_load", "setup_logging",   "model_load",
                           "tokenize",    "model_inference", "report_build"};
    const double dur[] = {3, 1, 1, 5, 200, 50};
    for (int i = 0; i < 6; i++) {
        cv_perf_record(p, names[i], t, t + dur[i]);
        t += dur[i] + 1;
    }
    cv_perf_mark_end(p, T0 + 2245);
    cv_perf_strict sv = {1500, 300, 180, 200};
    cv_perf_set_strict(p, &sv);
    cJSON *s = cv_perf_summary_json(p, "d.json");
    char *text;
    cJSON *r = reparse(s, &text);
    assert_keys(r, STRICT_KEYS);
    const cJSON *ml = cJSON_GetArrayItem(obj(r, "parent_operations"), 2);
    ck_assert_str_eq(obj(ml, "name")->valuestring, "model_load");
    ck_assert(num(ml, "ms") == 1500.0);
    ck_assert(num(ml, "pct") == 66.82); /* 100 * 1500 / 2245 = 66.815... */
    /* 2245 - (3+1+1500+5+200+50) - (300+180) */
    ck_assert(num(obj(r, "unaccounted_time"), "ms") == 6.0);
    ck_assert(num(r, "original_model_load_ms") == 1500.0);
    ck_assert(num(r, "warmup_ms") == 300.0);
    ck_assert(num(r, "baseline_ms") == 180.0);
    ck_assert(num(r, "instrumented_inference_ms") == 200.0);
    ck_assert(num(r, "inference_overhead_ms") == 20.0);
    ck_assert(num(r, "inference_overhead_pct") == 11.11);
    /* (1759 - 1500 - 5) - 180 */
    ck_assert(num(r, "corevital_overhead_ms") == 74.0);
    ck_assert(num(r, "corevital_overhead_pct") == 41.11);
    ck_assert(strstr(text, "\"inference_overhead_ms\":20.0") != NULL);
    free(text);
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* A zero baseline gives 0.0 percentages instead of a division by zero. */
START_TEST(summary_strict_zero_baseline) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("strict", T0, &p, NULL), CV_OK);
    cv_perf_record(p, "model_inference", T0, T0 + 4);
    cv_perf_mark_end(p, T0 + 8);
    cv_perf_strict sv = {0, 0, 0, 4};
    cv_perf_set_strict(p, &sv);
    cJSON *s = cv_perf_summary_json(p, NULL);
    cJSON *r = reparse(s, NULL);
    ck_assert(num(r, "inference_overhead_ms") == 4.0);
    ck_assert(num(r, "inference_overhead_pct") == 0.0);
    ck_assert(num(r, "corevital_overhead_pct") == 0.0);
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* ---- unit: the tree ---- */

START_TEST(detailed_nesting_and_per_step) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("detailed", T0, &p, NULL), CV_OK);
    cv_perf_begin_at(p, "model_inference", T0);
    cv_perf_record(p, "prefill", T0, T0 + 8);
    cv_perf_begin_at(p, "decode_loop", T0 + 8);
    cv_perf_sample(p, 1.0);
    cv_perf_sample(p, 3.5);
    cv_perf_sample(p, 2.0);
    cv_perf_record(p, "inner", T0 + 9, T0 + 10); /* grandchild */
    cv_perf_end_at(p, "decode_loop", T0 + 15);
    cv_perf_end_at(p, "model_inference", T0 + 16);
    cv_perf_mark_end(p, T0 + 32);
    cJSON *d = cv_perf_detailed_json(p, "0123456789abcdef");
    char *text;
    cJSON *r = reparse(d, &text);
    assert_keys(r, "total_wall_time_ms,breakdown,trace_id");
    ck_assert_str_eq(obj(r, "trace_id")->valuestring, "01234567");
    ck_assert(num(r, "total_wall_time_ms") == 32.0);
    const cJSON *mi = obj(obj(r, "breakdown"), "model_inference");
    assert_keys(mi, "ms,pct,children");
    ck_assert(num(mi, "ms") == 16.0);
    ck_assert(num(mi, "pct") == 50.0);
    const cJSON *ch = obj(mi, "children");
    assert_keys(ch, "prefill,decode_loop");
    assert_keys(obj(ch, "prefill"), "ms,pct"); /* no per_step, no children */
    const cJSON *dl = obj(ch, "decode_loop");
    assert_keys(dl, "ms,pct,per_step,children");
    ck_assert(num(dl, "ms") == 7.0);
    ck_assert(num(dl, "pct") == 21.88); /* 21.875 */
    const cJSON *ps = obj(dl, "per_step");
    assert_keys(ps, "count,min_ms,max_ms,avg_ms");
    ck_assert(strstr(text, "\"count\":3,") != NULL); /* an int, not 3.0 */
    ck_assert(num(ps, "min_ms") == 1.0);
    ck_assert(num(ps, "max_ms") == 3.5);
    ck_assert(num(ps, "avg_ms") == 2.17);
    ck_assert(num(obj(obj(dl, "children"), "inner"), "ms") == 1.0);
    free(text);
    cJSON_Delete(r);
    cJSON_Delete(d);
    cv_perf_free(p);
}
END_TEST

/* Repeated names are all kept: a repeat gets "#k" with the smallest k not taken (a literal
 * "x#1" sibling keeps its name), also at the root; the summary's parent list keeps every root
 * operation in order. */
START_TEST(detailed_duplicate_names) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("detailed", T0, &p, NULL), CV_OK);
    cv_perf_begin_at(p, "outer", T0);
    cv_perf_record(p, "x", T0, T0 + 1);
    cv_perf_record(p, "x#1", T0 + 1, T0 + 3);
    cv_perf_record(p, "x", T0 + 3, T0 + 6);
    cv_perf_record(p, "x", T0 + 6, T0 + 10);
    cv_perf_end_at(p, "outer", T0 + 10);
    cv_perf_record(p, "outer", T0 + 10, T0 + 15);
    cv_perf_mark_end(p, T0 + 20);
    cJSON *d = cv_perf_detailed_json(p, "abc");
    cJSON *r = reparse(d, NULL);
    const cJSON *bd = obj(r, "breakdown");
    assert_keys(bd, "outer,outer#1");
    ck_assert(num(obj(bd, "outer#1"), "ms") == 5.0);
    const cJSON *ch = obj(obj(bd, "outer"), "children");
    assert_keys(ch, "x,x#1,x#2,x#3");
    ck_assert(num(obj(ch, "x"), "ms") == 1.0);
    ck_assert(num(obj(ch, "x#1"), "ms") == 2.0); /* the literal one keeps its name */
    ck_assert(num(obj(ch, "x#2"), "ms") == 3.0); /* the second "x" */
    ck_assert(num(obj(ch, "x#3"), "ms") == 4.0); /* the third "x" */
    ck_assert_str_eq(obj(r, "trace_id")->valuestring, "abc");
    cJSON_Delete(r);
    cJSON_Delete(d);
    cJSON *s = cv_perf_summary_json(p, NULL);
    r = reparse(s, NULL);
    ck_assert_int_eq(cJSON_GetArraySize(obj(r, "parent_operations")), 2);
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

/* Ending an outer operation closes inner ones left open (an error skipped their ends); an end
 * that matches nothing is ignored; the run end closes what is still open. */
START_TEST(unbalanced_ends) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("detailed", T0, &p, NULL), CV_OK);
    cv_perf_begin_at(p, "a", T0);
    cv_perf_begin_at(p, "b", T0 + 1);
    cv_perf_begin_at(p, "c", T0 + 2);
    cv_perf_end_at(p, "nope", T0 + 3); /* ignored */
    cv_perf_end_at(p, "b", T0 + 4);    /* closes c and b */
    cv_perf_sample(p, 5.0);            /* lands on a */
    cv_perf_begin_at(p, "d", T0 + 6);
    cv_perf_mark_end(p, T0 + 10); /* closes d and a */
    cv_perf_end(p, "a");          /* after the end: nothing open, ignored */
    cJSON *d = cv_perf_detailed_json(p, "t");
    cJSON *r = reparse(d, NULL);
    const cJSON *a = obj(obj(r, "breakdown"), "a");
    ck_assert(num(a, "ms") == 10.0);
    ck_assert_int_eq((int)num(obj(a, "per_step"), "count"), 1);
    const cJSON *ach = obj(a, "children");
    assert_keys(ach, "b,d");
    ck_assert(num(obj(ach, "b"), "ms") == 3.0);
    ck_assert(num(obj(obj(obj(ach, "b"), "children"), "c"), "ms") == 2.0);
    ck_assert(num(obj(ach, "d"), "ms") == 4.0);
    cJSON_Delete(r);
    cJSON_Delete(d);
    cv_perf_free(p);
}
END_TEST

/* Deeper than CV_PERF_MAX_DEPTH: the extra levels are not recorded, but their ends still pair
 * with their begins, so the outer levels stay correct. */
START_TEST(depth_limit) {
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("summary", T0, &p, NULL), CV_OK);
    for (int i = 0; i < CV_PERF_MAX_DEPTH + 5; i++) cv_perf_begin_at(p, "lvl", T0 + i);
    for (int i = CV_PERF_MAX_DEPTH + 4; i >= 0; i--) cv_perf_end_at(p, "lvl", T0 + 100 - i);
    cv_perf_record(p, "next", T0 + 100, T0 + 101);
    cv_perf_mark_end(p, T0 + 128);
    cJSON *s = cv_perf_summary_json(p, NULL);
    cJSON *r = reparse(s, NULL);
    const cJSON *po = obj(r, "parent_operations");
    ck_assert_int_eq(cJSON_GetArraySize(po), 2);
    ck_assert(num(cJSON_GetArrayItem(po, 0), "ms") == 100.0);
    ck_assert_str_eq(obj(cJSON_GetArrayItem(po, 1), "name")->valuestring, "next");
    cJSON_Delete(r);
    cJSON_Delete(s);
    cv_perf_free(p);
}
END_TEST

START_TEST(modes_and_paths) {
    cv_perf_mode m;
    cv_error e;
    ck_assert_int_eq(cv_perf_parse_mode("strict", &m, &e), CV_OK);
    ck_assert_int_eq(m, CV_PERF_STRICT);
    ck_assert_int_eq(cv_perf_parse_mode("fast", &m, &e), CV_ERR_CONFIG);
    ck_assert(strstr(e.msg, "'fast'") != NULL);
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create(NULL, 0, &p, &e), CV_ERR_CONFIG);
    ck_assert_ptr_null(p);
    char out[64];
    ck_assert_int_eq(cv_perf_detailed_path("runs/trace_ab12cd34.json", out, sizeof out, &e), CV_OK);
    ck_assert_str_eq(out, "runs/trace_ab12cd34_performance_detailed.json");
    ck_assert_int_eq(cv_perf_detailed_path("out/run", out, sizeof out, &e), CV_OK);
    ck_assert_str_eq(out, "out/run_performance_detailed.json");
    ck_assert_int_eq(cv_perf_detailed_path("a/very/long/directory/name/trace.json", out, 40, &e),
                     CV_ERR_IO);
    ck_assert_int_eq(cv_perf_detailed_path(".json", out, sizeof out, &e), CV_ERR_CONFIG);
}
END_TEST

START_TEST(same_tokens_check) {
    const int32_t a[] = {5, 6, 7}, b[] = {5, 9, 7};
    cv_error e;
    ck_assert_int_eq(cv_perf_same_tokens(a, 3, a, 3, &e), CV_OK);
    ck_assert_int_eq(cv_perf_same_tokens(a, 3, b, 3, &e), CV_ERR_RUNTIME);
    ck_assert_msg(strstr(e.msg, "index 1") && strstr(e.msg, "9") && strstr(e.msg, "baseline"), "%s",
                  e.msg);
    ck_assert_int_eq(cv_perf_same_tokens(a, 3, a, 2, &e), CV_ERR_RUNTIME);
    ck_assert(strstr(e.msg, "2 tokens") != NULL);
}
END_TEST

/* The monitor's own cost: an empty begin + end pair (two clock reads and a few stores) must stay
 * far below 5 us, which catches an allocation or a scan per call; the figure is printed for
 * docs/perf.md. */
START_TEST(self_overhead) {
    double ns = cv_perf_self_overhead_ns(20000);
    for (int i = 0; i < 4; i++) { /* the least disturbed of 5 measurements (shared machines) */
        double again = cv_perf_self_overhead_ns(20000);
        if (again < ns) ns = again;
    }
    printf("perf: one empty begin+end pair costs %.1f ns\n", ns);
    ck_assert(ns > 0.0);
    ck_assert_msg(ns < 5000.0, "begin+end pair took %.1f ns", ns);
}
END_TEST

/* ---- whole runs on the bundled tiny GPT-2 ---- */

static char g_dir[512];

static void run_setup(void) {
    snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir("perf"));
}
static void run_teardown(void) {
    tu_rmtree(g_dir);
}

static void model_config(cv_config *c, const char *model, int do_sample, int G) {
    cv_error e;
    ck_assert_int_eq(cv_config_init(c, &e), CV_OK);
    char g[16];
    snprintf(g, sizeof g, "%d", G);
    ck_assert_int_eq(cv_config_set(c, "model.hf_id", model, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "device.requested", "cpu", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.max_new_tokens", g, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.temperature", do_sample ? "0.8" : "0", &e),
                     CV_OK);
    ck_assert_int_eq(cv_config_set(c, "sink.output_dir", g_dir, &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(c, &e), CV_OK);
    c->threads = 1;
}

static void tiny_config(cv_config *c, int do_sample, int G) {
    model_config(c, "tests/fixtures/gpt2-tiny", do_sample, G);
}

/* Run the timed job like the CLI does; returns the parsed extensions.performance. */
static cJSON *timed_run(const cv_config *c, const char *mode, cv_report *rep) {
    cv_error e = {CV_OK, ""};
    cv_perf *p;
    double t0 = cv_now_ms();
    ck_assert_int_eq(cv_perf_create(mode, t0, &p, &e), CV_OK);
    cv_perf_record(p, "config_load", t0, cv_now_ms());
    double t1 = cv_now_ms();
    cv_perf_record(p, "setup_logging", t1, cv_now_ms());
    cv_status st = cv_run_perf(c, "The quick brown fox", rep, p, &e);
    ck_assert_msg(st == CV_OK, "cv_run_perf: %s", e.msg);
    st = cv_perf_attach(p, rep, NULL, &e);
    ck_assert_msg(st == CV_OK, "cv_perf_attach: %s", e.msg);
    cv_perf_free(p);
    /* The trace with the performance extension is still a valid trace. */
    char *json;
    size_t len;
    ck_assert_int_eq(cv_report_to_json(rep, 2, &json, &len, &e), CV_OK);
    ck_assert_msg(cv_trace_validate(json, &e) == CV_OK, "%s", e.msg);
    cJSON *doc = cJSON_Parse(json);
    free(json);
    ck_assert_ptr_nonnull(doc);
    cJSON *ext = cJSON_GetObjectItemCaseSensitive(doc, "extensions");
    ck_assert_ptr_nonnull(ext);
    cJSON *perf = cJSON_DetachItemFromObjectCaseSensitive(ext, "performance");
    cJSON_Delete(doc);
    ck_assert_ptr_nonnull(perf);
    return perf;
}

static const char *const k_parents[] = {"config_load", "setup_logging",   "model_load",
                                        "tokenize",    "model_inference", "report_build"};

/* parents + unaccounted = total (each rounded to 0.01), parents in the documented order. */
static void check_summary(const cJSON *perf, int strict) {
    const cJSON *po = obj(perf, "parent_operations");
    ck_assert_int_eq(cJSON_GetArraySize(po), 6);
    double total = num(perf, "total_wall_time_ms"), sum = 0.0;
    ck_assert(total > 0.0);
    for (int i = 0; i < 6; i++) {
        const cJSON *e = cJSON_GetArrayItem(po, i);
        ck_assert_str_eq(obj(e, "name")->valuestring, k_parents[i]);
        ck_assert(num(e, "ms") >= 0.0);
        /* pct is computed from the raw ms and total: allow their rounding (0.005 each). */
        double ms = num(e, "ms"), pct = num(e, "pct");
        double lo = 100.0 * fmax(ms - 0.005, 0.0) / (total + 0.005);
        double hi = 100.0 * (ms + 0.005) / (total - 0.005);
        ck_assert_msg(pct >= lo - 0.006 && pct <= hi + 0.006, "%s pct %g, ms %g of %g",
                      k_parents[i], pct, ms, total);
        sum += num(e, "ms");
    }
    double un = num(obj(perf, "unaccounted_time"), "ms");
    if (strict) sum += num(perf, "warmup_ms") + num(perf, "baseline_ms");
    ck_assert_msg(fabs(sum + un - total) <= 0.01 * 9, "parents %g + unaccounted %g != total %g",
                  sum, un, total);
    /* The parents are disjoint intervals inside the run: nothing is counted twice. */
    ck_assert_msg(un >= -0.01, "unaccounted %g of %g", un, total);
}

START_TEST(run_summary_mode) {
    cv_config c;
    tiny_config(&c, 0, 6);
    cv_report rep;
    cJSON *perf = timed_run(&c, "summary", &rep);
    assert_keys(perf, SUMMARY_KEYS);
    ck_assert(cJSON_IsNull(obj(perf, "detailed_file")));
    check_summary(perf, 0);
    cJSON_Delete(perf);
    cv_report_free(&rep);
    cv_config_free(&c);
}
END_TEST

/* Detailed mode: the file sits next to the trace, is named after it, carries the nested
 * breakdown with the decode loop's per-step statistics (one sample per decode step). */
START_TEST(run_detailed_mode) {
    cv_config c;
    tiny_config(&c, 0, 6);
    cv_report rep;
    cJSON *perf = timed_run(&c, "detailed", &rep);
    assert_keys(perf, SUMMARY_KEYS);
    check_summary(perf, 0);
    char want[1024];
    snprintf(want, sizeof want, "%s/trace_%.8s_performance_detailed.json", g_dir, rep.trace_id);
    ck_assert_str_eq(obj(perf, "detailed_file")->valuestring, want);

    char *text;
    size_t len;
    cv_error e;
    ck_assert_int_eq(cv_read_file(want, &text, &len, &e), CV_OK);
    ck_assert(strncmp(text, "{\n  \"total_wall_time_ms\": ", 26) == 0); /* indent=2 layout */
    ck_assert(text[len - 1] == '}');                                    /* no trailing newline */
    cJSON *d = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(d);
    assert_keys(d, "total_wall_time_ms,breakdown,trace_id");
    char id8[9];
    memcpy(id8, rep.trace_id, 8);
    id8[8] = '\0';
    ck_assert_str_eq(obj(d, "trace_id")->valuestring, id8);
    ck_assert(num(d, "total_wall_time_ms") == num(perf, "total_wall_time_ms"));
    const cJSON *bd = obj(d, "breakdown");
    assert_keys(bd, "config_load,setup_logging,model_load,tokenize,model_inference,report_build");
    assert_keys(obj(obj(bd, "model_load"), "children"),
                "resolve,backend_init,tokenizer_load,weights_load");
    const cJSON *mi = obj(bd, "model_inference");
    ck_assert(num(mi, "ms") == num(cJSON_GetArrayItem(obj(perf, "parent_operations"), 4), "ms"));
    const cJSON *ch = obj(mi, "children");
    assert_keys(ch, "prefill,decode_loop");
    const cJSON *ps = obj(obj(ch, "decode_loop"), "per_step");
    ck_assert_int_eq((int)num(ps, "count"), (int)rep.generated.n_token_ids - 1);
    ck_assert(num(ps, "min_ms") <= num(ps, "avg_ms") && num(ps, "avg_ms") <= num(ps, "max_ms"));
    ck_assert(num(ps, "avg_ms") * num(ps, "count") <= num(obj(ch, "decode_loop"), "ms") + 0.05);
    ck_assert(num(obj(ch, "prefill"), "ms") + num(obj(ch, "decode_loop"), "ms") <=
              num(mi, "ms") + 0.02);
    cJSON_Delete(d);
    cJSON_Delete(perf);
    cv_report_free(&rep);
    cv_config_free(&c);
}
END_TEST

/* Strict mode: all overhead fields, consistent with each other, and the instrumented tokens
 * equal those of an independent uninstrumented generation with the same seed (sampling on, so
 * the seed matters). */
START_TEST(run_strict_mode) {
    cv_config c;
    tiny_config(&c, 1, 10);
    cv_report rep;
    cJSON *perf = timed_run(&c, "strict", &rep);
    assert_keys(perf, STRICT_KEYS);
    check_summary(perf, 1);
    ck_assert(cJSON_IsString(obj(perf, "detailed_file")));
    double base = num(perf, "baseline_ms"), inst = num(perf, "instrumented_inference_ms");
    ck_assert(base > 0.0 && inst > 0.0 && num(perf, "warmup_ms") > 0.0);
    ck_assert(fabs(num(perf, "inference_overhead_ms") - (inst - base)) <= 0.011);
    /* pct * baseline / 100 = overhead, within what rounding each of the three values allows */
    double pct = num(perf, "inference_overhead_pct");
    ck_assert_msg(fabs(pct / 100.0 * base - num(perf, "inference_overhead_ms")) <=
                      0.006 + 1e-4 * (base + fabs(pct)),
                  "pct %g, baseline %g, overhead %g", pct, base,
                  num(perf, "inference_overhead_ms"));
    const cJSON *po = obj(perf, "parent_operations");
    ck_assert(num(cJSON_GetArrayItem(po, 2), "ms") == num(perf, "original_model_load_ms"));
    ck_assert(num(cJSON_GetArrayItem(po, 4), "ms") >= inst - 0.011);
    double cv_ops = 0.0;
    for (int i = 0; i < 6; i++)
        if (i != 2 && i != 3) cv_ops += num(cJSON_GetArrayItem(po, i), "ms");
    ck_assert(fabs(num(perf, "corevital_overhead_ms") - (cv_ops - base)) <= 0.05);
    printf("perf strict (gpt2-tiny, 10 tokens): baseline %.2f ms, instrumented %.2f ms, "
           "overhead %.2f%%\n",
           base, inst, num(perf, "inference_overhead_pct"));

    cv_error e;
    cv_session *s;
    ck_assert_int_eq(cv_session_open(&c, &s, NULL, &e), CV_OK);
    int32_t *ids, *gen;
    size_t P, n;
    ck_assert_int_eq(cv_session_tokenize(s, "The quick brown fox", &ids, &P, &e), CV_OK);
    ck_assert_int_eq(cv_session_generate(s, &c, ids, P, 0, NULL, &gen, &n, NULL, NULL, &e), CV_OK);
    ck_assert_uint_eq(n, rep.generated.n_token_ids);
    for (size_t i = 0; i < n; i++) ck_assert_int_eq(gen[i], (int32_t)rep.generated.token_ids[i]);
    free(ids);
    free(gen);
    cv_session_close(s);
    cJSON_Delete(perf);
    cv_report_free(&rep);
    cv_config_free(&c);
}
END_TEST

/* Encoder-decoder: model_inference has encoder_forward and decode_loop, and every generated
 * token is a decode step. Also checks strict mode on the seq2seq loop. */
START_TEST(run_seq2seq_strict) {
    cv_config c;
    model_config(&c, "tests/fixtures/t5-tiny", 0, 6);
    cv_report rep;
    cJSON *perf = timed_run(&c, "strict", &rep);
    assert_keys(perf, STRICT_KEYS);
    check_summary(perf, 1);
    char *text;
    size_t len;
    cv_error e;
    ck_assert_int_eq(cv_read_file(obj(perf, "detailed_file")->valuestring, &text, &len, &e), CV_OK);
    cJSON *d = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(d);
    const cJSON *ch = obj(obj(obj(d, "breakdown"), "model_inference"), "children");
    assert_keys(ch, "encoder_forward,decode_loop");
    const cJSON *ps = obj(obj(ch, "decode_loop"), "per_step");
    ck_assert_int_eq((int)num(ps, "count"), (int)rep.generated.n_token_ids);
    cJSON_Delete(d);
    cJSON_Delete(perf);
    cv_report_free(&rep);
    cv_config_free(&c);
}
END_TEST

/* A failing load: the error comes back and the monitor stays usable. */
START_TEST(run_failure) {
    cv_config c;
    tiny_config(&c, 0, 2);
    cv_error e;
    ck_assert_int_eq(cv_config_set(&c, "model.hf_id", "tests/fixtures/golden", &e), CV_OK);
    cv_perf *p;
    ck_assert_int_eq(cv_perf_create("strict", 0, &p, &e), CV_OK);
    cv_report rep;
    ck_assert_int_ne(cv_run_perf(&c, "hi", &rep, p, &e), CV_OK);
    ck_assert(e.msg[0] != '\0');
    cJSON *s = cv_perf_summary_json(p, NULL);
    ck_assert_ptr_nonnull(s);
    cJSON_Delete(s);
    cv_perf_free(p);
    cv_report_free(&rep);
    cv_config_free(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("perf");
    TCase *u = tcase_create("monitor");
    tcase_add_test(u, summary_reference_case);
    tcase_add_test(u, summary_rounding);
    tcase_add_test(u, summary_total_falls_back_to_parents);
    tcase_add_test(u, summary_strict_fields);
    tcase_add_test(u, summary_strict_zero_baseline);
    tcase_add_test(u, detailed_nesting_and_per_step);
    tcase_add_test(u, detailed_duplicate_names);
    tcase_add_test(u, unbalanced_ends);
    tcase_add_test(u, depth_limit);
    tcase_add_test(u, modes_and_paths);
    tcase_add_test(u, same_tokens_check);
    tcase_add_test(u, self_overhead);
    suite_add_tcase(s, u);
    TCase *r = tcase_create("runs");
    tcase_add_checked_fixture(r, run_setup, run_teardown);
    tcase_set_timeout(r, 60);
    tcase_add_test(r, run_summary_mode);
    tcase_add_test(r, run_detailed_mode);
    tcase_add_test(r, run_strict_mode);
    tcase_add_test(r, run_seq2seq_strict);
    tcase_add_test(r, run_failure);
    suite_add_tcase(s, r);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
