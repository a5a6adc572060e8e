/* test_trace_json.c — the trace JSON writer, the validator and the local sink.
 *
 * The oracle for layout and number formatting is Python's json module itself:
 * tests/fixtures/golden/make_golden.py serializes the same report (json.dumps(indent=2,
 * ensure_ascii=False), as the reference does) and a list of random doubles with their repr().
 * Volatile fields (trace_id, created_at_utc, elapsed_ms, sink.target) are masked in both. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/config.h"
#include "corevital/report.h"
#include "corevital/sinks.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOLDEN_DIR "tests/fixtures/golden/"

/* ---- helpers ---- */

static char *slurp(const char *path) {
    char *s;
    size_t n;
    cv_error e;
    if (cv_read_file(path, &s, &n, &e) != CV_OK) return NULL;
    return s;
}

/* Replace the value after `"key": ` (a string or a number) with "MASKED", everywhere. */
static char *mask(char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    for (char *p = strstr(text, pat); p; p = strstr(p + 1, pat)) {
        char *v = p + strlen(pat), *end = v;
        if (*v == '"') {
            end = v + 1;
            while (*end && *end != '"') end += *end == '\\' ? 2 : 1;
            end++;
        } else {
            while (*end && *end != ',' && *end != '\n' && *end != '}') end++;
        }
        size_t head = (size_t)(v - text), tail = strlen(end);
        char *out = malloc(head + 8 + tail + 1);
        memcpy(out, text, head);
        memcpy(out + head, "\"MASKED\"", 8);
        memcpy(out + head + 8, end, tail + 1);
        p = out + (p - text);
        free(text);
        text = out;
    }
    return text;
}

static void expect_same_text(const char *got, const char *want, const char *what) {
    size_t i = 0;
    while (got[i] && got[i] == want[i]) i++;
    if (got[i] != want[i]) {
        ck_abort_msg("%s differs at offset %zu:\n got: ...%.60s\nwant: ...%.60s", what, i,
                     got + (i > 20 ? i - 20 : 0), want + (i > 20 ? i - 20 : 0));
    }
}

static void set_layer(cv_layer_summary *l, int j, double scale, int cross) {
    cv_error e;
    l->layer_index = j;
    l->hidden_summary.mean = cv_num_of(-0.0001 * scale);
    l->hidden_summary.std = cv_num_of(0.0012 * scale);
    l->hidden_summary.l2_norm_mean = cv_num_of(2.3143553733825684 * scale);
    l->hidden_summary.max_abs = cv_num_of(100.0 * scale);
    ck_assert_int_eq(cv_hidden_alloc_sketch(&l->hidden_summary, 4, &e), CV_OK);
    const double sk[4] = {0.0, -0.0, 1.25, -3.5};
    memcpy(l->hidden_summary.sketch, sk, sizeof sk);
    l->attention_summary.entropy_mean = cv_num_of(0.3465735912322998);
    l->attention_summary.entropy_min = cv_num_of(2.302585092994046e-09);
    l->attention_summary.concentration_max = cv_num_of(1.0);
    if (cross) {
        l->has_cross_attention = 1;
        l->cross_attention.entropy_mean = cv_num_of(1e-05);
        l->cross_attention.concentration_max = cv_num_of(0.5);
    }
}

/* The report of make_golden.py's report(), built through the public API. */
static void build_report(cv_report *r) {
    cv_error e;
    ck_assert_int_eq(cv_report_init(r, &e), CV_OK);
    cv_config cfg;
    ck_assert_int_eq(cv_config_init(&cfg, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&cfg, "generation.max_new_tokens", "2", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&cfg, "summaries.hidden.sketch.dim", "4", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&cfg, "summaries.logits.topk", "2", &e), CV_OK);
    ck_assert_int_eq(cv_report_fill_run_config(r, &cfg, &e), CV_OK);
    cv_config_free(&cfg);

    cv_model_info *m = &r->model;
    cv_report_set_str(&m->hf_id, "tiny/gpt2", &e);
    cv_report_set_str(&m->architecture, "GPT2LMHeadModel", &e);
    m->num_layers = 2;
    m->hidden_size = 4;
    m->num_attention_heads = 2;
    cv_report_set_str(&m->tokenizer_hf_id, "tiny/gpt2", &e);
    cv_report_set_str(&m->dtype, "float32", &e);
    cv_report_set_str(&m->device, "cpu", &e);

    cv_report_set_str(&r->prompt.text,
                      "Hi \"there\"\n\tna\xC3\xAFve caf\xC3\xA9 \xF0\x9F\x99\x82 \\ \x01\x7f", &e);
    const int64_t pids[] = {17250, 612}, gids[] = {0, 50256};
    ck_assert_int_eq(cv_report_set_ids(&r->prompt.token_ids, &r->prompt.n_token_ids, pids, 2, &e),
                     CV_OK);
    ck_assert_int_eq(
        cv_report_set_ids(&r->generated.token_ids, &r->generated.n_token_ids, gids, 2, &e), CV_OK);
    cv_report_set_str(&r->generated.output_text, "!", &e);

    ck_assert_int_eq(cv_report_alloc_timeline(r, 2, 2, &e), CV_OK);
    for (int i = 0; i < 2; i++) {
        cv_timeline_step *s = &r->timeline[i];
        s->step_index = 2 + i;
        s->token_id = gids[i];
        cv_report_set_str(&s->token_text, i == 0 ? "!" : "<|endoftext|>", &e);
        s->logits_summary.entropy = cv_num_of(3.9101712703704834 + i);
        if (i == 0) {
            s->logits_summary.top1_top2_margin = cv_num_of(0.0002868175506591797);
            ck_assert_int_eq(cv_logits_alloc_topk(&s->logits_summary, 2, &e), CV_OK);
            s->logits_summary.topk[0].token_id = 0;
            cv_report_set_str(&s->logits_summary.topk[0].token_text, "!", &e);
            s->logits_summary.topk[0].prob = 0.021;
            s->logits_summary.topk[1].token_id = 1;
            cv_report_set_str(&s->logits_summary.topk[1].token_text, "\"", &e);
            s->logits_summary.topk[1].prob = 0.02;
        }
        for (int j = 0; j < 2; j++) set_layer(&s->layers[j], j, j + 1, i == 1);
    }
    r->summary.prompt_tokens = 2;
    r->summary.generated_tokens = 2;
    r->summary.total_steps = 4;
    r->summary.elapsed_ms = 41;
    ck_assert_int_eq(
        cv_report_add_warning(r, "TEST_WARNING", "a warning with %s and \"quotes\"", "\xC3\xA9"),
        CV_OK);
    cJSON *perf = cJSON_CreateObject();
    cJSON_AddItemToObject(perf, "total_wall_time_ms", cv_json_float(1234.5));
    cJSON_AddNumberToObject(perf, "count", 3);
    cJSON_AddItemToObject(perf, "ratio", cv_json_float(100.0));
    const char *tags[] = {"a", "b"};
    cJSON_AddItemToObject(perf, "tags", cJSON_CreateStringArray(tags, 2));
    cJSON_AddItemToObject(perf, "empty", cJSON_CreateObject());
    cJSON_AddItemToObject(perf, "none", cJSON_CreateArray());
    r->extensions = cJSON_CreateObject();
    cJSON_AddItemToObject(r->extensions, "performance", perf);
}

static char *masked_json(cv_report *r, int indent) {
    char *json;
    size_t len;
    cv_error e;
    ck_assert_int_eq(cv_report_to_json(r, indent, &json, &len, &e), CV_OK);
    ck_assert_uint_eq(len, strlen(json));
    json = mask(json, "trace_id");
    json = mask(json, "created_at_utc");
    json = mask(json, "elapsed_ms");
    json = mask(json, "target");
    return json;
}

/* ---- tests ---- */

START_TEST(golden_indent2) {
    cv_report r;
    build_report(&r);
    char *json = masked_json(&r, 2);
    char *want = slurp(GOLDEN_DIR "trace_small.json");
    ck_assert_ptr_nonnull(want);
    expect_same_text(json, want, "indent=2 trace");
    free(json);
    free(want);
    cv_report_free(&r);
}
END_TEST

START_TEST(golden_compact) {
    cv_report r;
    build_report(&r);
    char *json = masked_json(&r, 0);
    char *want = slurp(GOLDEN_DIR "trace_small_compact.json");
    ck_assert_ptr_nonnull(want);
    expect_same_text(json, want, "compact trace");
    free(json);
    free(want);
    cv_report_free(&r);
}
END_TEST

START_TEST(volatile_fields) {
    cv_report r;
    build_report(&r);
    /* trace_id is a UUID v4, created_at_utc YYYY-MM-DDTHH:MM:SSZ, target names the id. */
    ck_assert_uint_eq(strlen(r.trace_id), 36);
    ck_assert_int_eq(r.trace_id[14], '4');
    ck_assert(strchr("89ab", r.trace_id[19]) != NULL);
    for (int i = 0; i < 36; i++)
        ck_assert(i == 8 || i == 13 || i == 18 || i == 23
                      ? r.trace_id[i] == '-'
                      : strchr("0123456789abcdef", r.trace_id[i]) != NULL);
    int y, mo, d, h, mi, s;
    char z;
    ck_assert_int_eq(
        sscanf(r.created_at_utc, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &z), 7);
    ck_assert_int_eq(z, 'Z');
    ck_assert_uint_eq(strlen(r.created_at_utc), 20);
    char want[64];
    snprintf(want, sizeof want, "runs/trace_%.8s.json", r.trace_id);
    ck_assert_str_eq(r.run_config.sink.target, want);
    cv_report r2;
    build_report(&r2);
    ck_assert_str_ne(r.trace_id, r2.trace_id);
    cv_report_free(&r);
    cv_report_free(&r2);
}
END_TEST

START_TEST(float_repr_cases) {
    const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.8, "0.8"},
        {100.0, "100.0"},
        {1e-05, "1e-05"},
        {2.3143553733825684, "2.3143553733825684"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {1e16, "1e+16"},
        {123456789012345680.0, "1.2345678901234568e+17"},
        {9999999999999998.0, "9999999999999998.0"},
        {0.0001, "0.0001"},
        {0.00012345, "0.00012345"},
        {1.5e-10, "1.5e-10"},
        {0.1 + 0.2, "0.30000000000000004"},
        {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {-2.5, "-2.5"},
        {1e22, "1e+22"},
        {123.0, "123.0"},
    };
    char buf[40];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cv_format_double(cases[i].v, buf, sizeof buf);
        ck_assert_msg(strcmp(buf, cases[i].want) == 0, "%.17g: got %s want %s", cases[i].v, buf,
                      cases[i].want);
    }
    cv_format_double(NAN, buf, sizeof buf);
    ck_assert_str_eq(buf, "null");
    cv_format_double(-INFINITY, buf, sizeof buf);
    ck_assert_str_eq(buf, "null");
}
END_TEST

START_TEST(float_repr_python_fixture) {
    FILE *f = fopen(GOLDEN_DIR "float_repr.txt", "r");
    ck_assert_ptr_nonnull(f);
    char line[128], want[64], buf[40];
    unsigned long long bits;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        ck_assert_int_eq(sscanf(line, "%llx %63s", &bits, want), 2);
        double v;
        uint64_t b = bits;
        memcpy(&v, &b, sizeof v);
        cv_format_double(v, buf, sizeof buf);
        ck_assert_msg(strcmp(buf, want) == 0, "bits %016llx: got %s, Python repr %s", bits, buf,
                      want);
        ck_assert(strtod(buf, NULL) == v);
        n++;
    }
    fclose(f);
    ck_assert_int_ge(n, 250);
}
END_TEST

static cJSON *parse_ok(const char *json) {
    cJSON *j = cJSON_Parse(json);
    ck_assert_ptr_nonnull(j);
    return j;
}

START_TEST(nonfinite_becomes_null_with_warning) {
    cv_report r;
    build_report(&r);
    r.timeline[1].layers[1].hidden_summary.std = cv_num_of(NAN);
    r.timeline[0].layers[0].hidden_summary.sketch[2] = INFINITY;
    r.timeline[0].logits_summary.entropy = cv_num_of(-INFINITY);
    size_t before = r.n_warnings;
    char *json;
    cv_error e;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    /* No bare NaN/Infinity tokens (the reference writes them; cJSON, like any strict parser,
     * would reject the file). */
    ck_assert_ptr_null(strstr(json, ": NaN"));
    ck_assert_ptr_null(strstr(json, "Infinity,"));
    cJSON *j = parse_ok(json);
    cJSON *tl = cJSON_GetObjectItem(j, "timeline");
    cJSON *std = cJSON_GetObjectItem(
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(tl, 1), "layers"), 1),
            "hidden_summary"),
        "std");
    ck_assert(cJSON_IsNull(std));
    cJSON *sk = cJSON_GetObjectItem(
        cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(tl, 0), "layers"), 0),
            "hidden_summary"),
        "sketch");
    /* List[float] upstream: a sketch with a NaN is written empty, never with a null inside */
    ck_assert(cJSON_IsArray(sk));
    ck_assert_int_eq(cJSON_GetArraySize(sk), 0);
    ck_assert_uint_eq(r.n_warnings, before + 3);
    const char *paths[] = {"timeline[0].logits_summary.entropy",
                           "timeline[0].layers[0].hidden_summary.sketch has non-finite",
                           "timeline[1].layers[1].hidden_summary.std"};
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(r.warnings[before + i].code, "NON_FINITE_VALUE");
        ck_assert_msg(strstr(r.warnings[before + i].message, paths[i]) != NULL, "%s lacks %s",
                      r.warnings[before + i].message, paths[i]);
    }
    /* The warnings are in the written trace, and the trace is still valid. */
    cJSON *ws = cJSON_GetObjectItem(j, "warnings");
    ck_assert_int_eq(cJSON_GetArraySize(ws), (int)before + 3);
    ck_assert_int_eq(cv_trace_validate(json, &e), CV_OK);
    cJSON_Delete(j);
    free(json);
    /* A second serialization does not add them again. */
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    ck_assert_uint_eq(r.n_warnings, before + 3);
    free(json);
    cv_report_free(&r);
}
END_TEST

START_TEST(nonfinite_warnings_are_capped) {
    cv_report r;
    cv_error e;
    ck_assert_int_eq(cv_report_init(&r, &e), CV_OK);
    ck_assert_int_eq(cv_report_alloc_timeline(&r, 30, 1, &e), CV_OK);
    for (int i = 0; i < 30; i++) r.timeline[i].logits_summary.entropy = cv_num_of(NAN);
    char *json;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    ck_assert_uint_eq(r.n_warnings, 21);
    ck_assert_ptr_nonnull(strstr(r.warnings[20].message, "10 more"));
    free(json);
    cv_report_free(&r);
}
END_TEST

START_TEST(empty_containers_and_nulls) {
    cv_report r;
    cv_error e;
    ck_assert_int_eq(cv_report_init(&r, &e), CV_OK);
    char *json;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    ck_assert_ptr_nonnull(strstr(json, "\"timeline\": [],\n"));
    ck_assert_ptr_nonnull(strstr(json, "\"warnings\": [],\n"));
    ck_assert_ptr_nonnull(strstr(json, "\"encoder_layers\": null,\n"));
    ck_assert_ptr_nonnull(strstr(json, "\"extensions\": {}\n}"));
    ck_assert_ptr_nonnull(strstr(json, "\"stats\": [],\n"));
    ck_assert_int_ne(json[strlen(json) - 1], '\n'); /* json.dumps has no trailing newline */
    free(json);
    /* Seq2seq: encoder_layers is a list; a layer with cross-attention prints an object. */
    ck_assert_int_eq(cv_report_alloc_encoder_layers(&r, 1, &e), CV_OK);
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    cJSON *j = parse_ok(json);
    cJSON *enc = cJSON_GetObjectItem(j, "encoder_layers");
    ck_assert(cJSON_IsArray(enc));
    cJSON *l0 = cJSON_GetArrayItem(enc, 0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(l0, "hidden_summary"), "mean")));
    ck_assert(
        cJSON_IsArray(cJSON_GetObjectItem(cJSON_GetObjectItem(l0, "hidden_summary"), "sketch")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(l0, "cross_attention")));
    cJSON_Delete(j);
    free(json);
    cv_report_free(&r);
}
END_TEST

START_TEST(invalid_utf8_is_replaced) {
    cv_report r;
    cv_error e;
    ck_assert_int_eq(cv_report_init(&r, &e), CV_OK);
    cv_report_set_str(&r.prompt.text,
                      "a\xFF"
                      "b\xC3",
                      &e);
    char *json;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    ck_assert_ptr_nonnull(strstr(json, "\"text\": \"a\xEF\xBF\xBD"
                                       "b\xEF\xBF\xBD\""));
    free(json);
    cv_report_free(&r);
}
END_TEST

/* ---- validator ---- */

static char *valid_trace(void) {
    cv_report r;
    build_report(&r);
    char *json;
    cv_error e;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    cv_report_free(&r);
    return json;
}

static void expect_invalid(cJSON *j, const char *needle) {
    char *txt = cJSON_Print(j);
    cv_error e = {CV_OK, ""};
    ck_assert_int_eq(cv_trace_validate(txt, &e), CV_ERR_FORMAT);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
    free(txt);
}

START_TEST(validator_accepts_writer_output) {
    char *json = valid_trace();
    cv_error e;
    ck_assert_int_eq(cv_trace_validate(json, &e), CV_OK);
    free(json);
}
END_TEST

START_TEST(validator_rejects_wrong_order) {
    char *json = valid_trace();
    cJSON *j = parse_ok(json);
    cJSON *model = cJSON_DetachItemFromObject(j, "model");
    cJSON_AddItemToObject(j, "model", model); /* now last */
    expect_invalid(j, "model: key out of order");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON *layer = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 1), "layers"),
        0);
    cJSON *hs = cJSON_DetachItemFromObject(layer, "hidden_summary");
    cJSON_AddItemToObject(layer, "hidden_summary", hs);
    expect_invalid(j, "timeline[1].layers[0].hidden_summary: key out of order");
    cJSON_Delete(j);
    free(json);
}
END_TEST

START_TEST(validator_rejects_wrong_type) {
    char *json = valid_trace();
    cJSON *j = parse_ok(json);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "summary"), "elapsed_ms",
                              cJSON_CreateString("41"));
    expect_invalid(j, "summary.elapsed_ms: expected an integer, found a string");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "num_layers",
                              cJSON_CreateNumber(2.5));
    expect_invalid(j, "model.num_layers: expected an integer");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON_ReplaceItemInObject(j, "encoder_layers", cJSON_CreateObject());
    expect_invalid(j, "encoder_layers: expected an array");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON *tok =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 0), "token");
    cJSON_ReplaceItemInObject(tok, "is_prompt_token", cJSON_CreateNumber(0));
    expect_invalid(j, "timeline[0].token.is_prompt_token: expected a boolean");
    cJSON_Delete(j);
    /* upstream types sketch List[float] and top-k prob float: null inside is rejected there,
     * so here too */
    j = parse_ok(json);
    cJSON *layer0 = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 0), "layers"),
        0);
    cJSON *sk = cJSON_GetObjectItem(cJSON_GetObjectItem(layer0, "hidden_summary"), "sketch");
    ck_assert_int_gt(cJSON_GetArraySize(sk), 1);
    cJSON_ReplaceItemInArray(sk, 1, cJSON_CreateNull());
    expect_invalid(j, "timeline[0].layers[0].hidden_summary.sketch[1]: expected a number (null");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON *topk = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "timeline"), 0),
                            "logits_summary"),
        "topk");
    ck_assert_int_gt(cJSON_GetArraySize(topk), 0);
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(topk, 0), "prob", cJSON_CreateNull());
    expect_invalid(j, "timeline[0].logits_summary.topk[0].prob: expected a number");
    cJSON_Delete(j);
    free(json);
}
END_TEST

START_TEST(validator_rejects_missing_and_extra_keys) {
    char *json = valid_trace();
    cJSON *j = parse_ok(json);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(j, "run_config"), "sink");
    expect_invalid(j, "run_config.sink: missing key");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON_AddStringToObject(j, "performance", "top-level metrics belong in extensions");
    expect_invalid(j, "performance: unexpected key");
    cJSON_Delete(j);
    j = parse_ok(json);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "prompt"), "num_tokens",
                              cJSON_CreateNumber(3));
    expect_invalid(j, "prompt.num_tokens");
    cJSON_Delete(j);
    cv_error e;
    ck_assert_int_eq(cv_trace_validate("{\"schema_version\": ", &e), CV_ERR_FORMAT);
    free(json);
}
END_TEST

/* ---- local sink ---- */

static char g_tmp[256];

static void make_tmp(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/cv_trace_json_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
}

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

START_TEST(local_sink_writes_and_never_clobbers) {
    make_tmp();
    char dir[512], loc[1024], want[1024];
    snprintf(dir, sizeof dir, "%s/a/b", g_tmp); /* created with its parents */
    cv_report r;
    build_report(&r);
    cv_error e;
    ck_assert_int_eq(cv_local_sink_write(dir, NULL, &r, loc, sizeof loc, &e), CV_OK);
    snprintf(want, sizeof want, "%s/trace_%.8s.json", dir, r.trace_id);
    ck_assert_str_eq(loc, want);
    char *first = slurp(loc);
    ck_assert_ptr_nonnull(first);
    ck_assert_int_eq(cv_trace_validate(first, &e), CV_OK);
    /* The file is exactly the serialization, and names itself as the target. */
    char *json;
    ck_assert_int_eq(cv_report_to_json(&r, 2, &json, NULL, &e), CV_OK);
    ck_assert_str_eq(first, json);
    free(json);
    cJSON *j = parse_ok(first);
    ck_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "run_config"), "sink"),
                            "target")
            ->valuestring,
        loc);
    cJSON_Delete(j);
    struct stat st;
    ck_assert_int_eq(stat(loc, &st), 0);
    ck_assert((st.st_mode & 0044) != 0 || (st.st_mode & 0400) != 0);

    /* Same trace id again (another run with a colliding id8): a new name, old file untouched. */
    cv_report_set_str(&r.prompt.text, "second run", &e);
    char loc2[1024];
    ck_assert_int_eq(cv_local_sink_write(dir, NULL, &r, loc2, sizeof loc2, &e), CV_OK);
    snprintf(want, sizeof want, "%s/trace_%.8s-1.json", dir, r.trace_id);
    ck_assert_str_eq(loc2, want);
    char *again = slurp(loc);
    ck_assert_str_eq(again, first);
    char *second = slurp(loc2);
    ck_assert_ptr_nonnull(strstr(second, "second run"));
    ck_assert_ptr_nonnull(strstr(second, "-1.json\""));
    ck_assert_int_eq(count_entries(dir), 2); /* no temp files left behind */
    free(first);
    free(again);
    free(second);

    /* An explicit .json path is the file itself, replaced if it exists. */
    char file[512];
    snprintf(file, sizeof file, "%s/out/my.json", g_tmp);
    ck_assert_int_eq(cv_local_sink_write(dir, file, &r, loc, sizeof loc, &e), CV_OK);
    ck_assert_str_eq(loc, file);
    cv_report_set_str(&r.prompt.text, "third", &e);
    ck_assert_int_eq(cv_local_sink_write(dir, file, &r, loc, sizeof loc, &e), CV_OK);
    char *third = slurp(file);
    ck_assert_ptr_nonnull(strstr(third, "\"third\""));
    free(third);
    snprintf(want, sizeof want, "%s/out", g_tmp);
    ck_assert_int_eq(count_entries(want), 1);
    cv_report_free(&r);
    rm_tree(g_tmp);
}
END_TEST

START_TEST(local_sink_reports_errors) {
    make_tmp();
    char blocker[512], loc[1024];
    snprintf(blocker, sizeof blocker, "%s/file", g_tmp);
    FILE *f = fopen(blocker, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    cv_report r;
    build_report(&r);
    cv_error e = {CV_OK, ""};
    /* The output "directory" is a regular file. */
    ck_assert_int_eq(cv_local_sink_write(blocker, NULL, &r, loc, sizeof loc, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, blocker));
    cv_report_free(&r);
    rm_tree(g_tmp);
}
END_TEST

START_TEST(dispatcher_uses_config) {
    make_tmp();
    cv_config cfg;
    cv_error e;
    ck_assert_int_eq(cv_config_init(&cfg, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&cfg, "sink.output_dir", g_tmp, &e), CV_OK);
    cv_report r;
    build_report(&r);
    char loc[1024], want[1024];
    ck_assert_int_eq(cv_sinks_write(&cfg, &r, loc, sizeof loc, &e), CV_OK);
    snprintf(want, sizeof want, "%s/trace_%.8s.json", g_tmp, r.trace_id);
    ck_assert_str_eq(loc, want);
    /* A remote sink that fails (here: no URL to reach) never loses the local file: it is written
     * first, the failure becomes a SINK_FAILED warning inside it, and the call succeeds. */
    ck_assert_int_eq(cv_config_set(&cfg, "sink.type", "http", &e), CV_OK);
    size_t warnings_before = r.n_warnings;
    ck_assert_int_eq(cv_sinks_write(&cfg, &r, loc, sizeof loc, &e), CV_OK);
    ck_assert_int_eq(count_entries(g_tmp), 2);
    ck_assert_uint_eq(r.n_warnings, warnings_before + 1);
    ck_assert_str_eq(r.warnings[r.n_warnings - 1].code, "SINK_FAILED");
    cv_report_free(&r);
    cv_config_free(&cfg);
    rm_tree(g_tmp);
}
END_TEST

int main(void) {
    Suite *s = suite_create("trace_json");
    TCase *tc = tcase_create("writer");
    tcase_add_test(tc, golden_indent2);
    tcase_add_test(tc, golden_compact);
    tcase_add_test(tc, volatile_fields);
    tcase_add_test(tc, float_repr_cases);
    tcase_add_test(tc, float_repr_python_fixture);
    tcase_add_test(tc, nonfinite_becomes_null_with_warning);
    tcase_add_test(tc, nonfinite_warnings_are_capped);
    tcase_add_test(tc, empty_containers_and_nulls);
    tcase_add_test(tc, invalid_utf8_is_replaced);
    suite_add_tcase(s, tc);
    TCase *tv = tcase_create("validator");
    tcase_add_test(tv, validator_accepts_writer_output);
    tcase_add_test(tv, validator_rejects_wrong_order);
    tcase_add_test(tv, validator_rejects_wrong_type);
    tcase_add_test(tv, validator_rejects_missing_and_extra_keys);
    suite_add_tcase(s, tv);
    TCase *ts = tcase_create("local_sink");
    tcase_add_test(ts, local_sink_writes_and_never_clobbers);
    tcase_add_test(ts, local_sink_reports_errors);
    tcase_add_test(ts, dispatcher_uses_config);
    suite_add_tcase(s, ts);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
