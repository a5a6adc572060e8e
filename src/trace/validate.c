/* validate.c — cv_trace_validate: parse a trace (cJSON) and check it against SPEC §3, schema
 * 0.2.0: every key present, no extra keys, keys in order, every value of the right type, plus
 * the count invariants (num_tokens = len(token_ids), total_steps = prompt + generated).
 *
 * The schema is a small static tree below; each problem is reported with its JSON path (the
 * first one by cv_trace_validate, every one by cv_trace_validate_all).
 * Float fields accept null as well, because our writer turns non-finite values into null (SPEC
 * FIX). Integers are checked to be integral (cJSON keeps no int/float distinction). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef enum {
    S_STR,    /* string */
    S_NSTR,   /* string or null */
    S_INT,    /* integral number */
    S_FLOAT,  /* number or null (null = non-finite) */
    S_RFLOAT, /* a number, never null (members of List[float]) */
    S_BOOL,   /* true/false */
    S_OBJ,    /* object with exactly `fields`, in order */
    S_NOBJ,   /* S_OBJ or null */
    S_ARR,    /* array of `elem` */
    S_NARR,   /* S_ARR or null */
    S_ANYOBJ, /* any object (extensions) */
} skind;

struct field;
typedef struct schema {
    skind kind;
    const struct field *fields;
    size_t n_fields;
    const struct schema *elem;
} schema;
typedef struct field {
    const char *name;
    const schema *s;
} field;

#define N(a) (sizeof(a) / sizeof(a)[0])
static const schema s_str = {S_STR, NULL, 0, NULL};
static const schema s_nstr = {S_NSTR, NULL, 0, NULL};
static const schema s_int = {S_INT, NULL, 0, NULL};
static const schema s_float = {S_FLOAT, NULL, 0, NULL};
static const schema s_bool = {S_BOOL, NULL, 0, NULL};
static const schema s_anyobj = {S_ANYOBJ, NULL, 0, NULL};
static const schema s_ints = {S_ARR, NULL, 0, &s_int};
static const schema s_strs = {S_ARR, NULL, 0, &s_str};
static const schema s_rfloat = {S_RFLOAT, NULL, 0, NULL};
static const schema s_floats = {S_ARR, NULL, 0, &s_rfloat}; /* List[float]: null is rejected */

static const field f_quant[] = {{"enabled", &s_bool}, {"method", &s_nstr}};
static const schema s_quant = {S_OBJ, f_quant, N(f_quant), NULL};
static const field f_model[] = {{"hf_id", &s_str},           {"revision", &s_nstr},
                                {"architecture", &s_str},    {"num_layers", &s_int},
                                {"hidden_size", &s_int},     {"num_attention_heads", &s_int},
                                {"tokenizer_hf_id", &s_str}, {"dtype", &s_nstr},
                                {"device", &s_str},          {"quantization", &s_quant}};
static const schema s_model = {S_OBJ, f_model, N(f_model), NULL};

static const field f_gen[] = {
    {"do_sample", &s_bool}, {"temperature", &s_float}, {"top_k", &s_int}, {"top_p", &s_float}};
static const schema s_gen = {S_OBJ, f_gen, N(f_gen), NULL};
static const field f_sketch_cfg[] = {{"method", &s_str}, {"dim", &s_int}, {"seed", &s_int}};
static const schema s_sketch_cfg = {S_OBJ, f_sketch_cfg, N(f_sketch_cfg), NULL};
static const field f_hcfg[] = {{"enabled", &s_bool}, {"stats", &s_strs}, {"sketch", &s_sketch_cfg}};
static const schema s_hcfg = {S_OBJ, f_hcfg, N(f_hcfg), NULL};
static const field f_acfg[] = {{"enabled", &s_bool}, {"stats", &s_strs}};
static const schema s_acfg = {S_OBJ, f_acfg, N(f_acfg), NULL};
static const field f_lcfg[] = {{"enabled", &s_bool}, {"stats", &s_strs}, {"topk", &s_int}};
static const schema s_lcfg = {S_OBJ, f_lcfg, N(f_lcfg), NULL};
static const field f_sums[] = {{"hidden", &s_hcfg}, {"attention", &s_acfg}, {"logits", &s_lcfg}};
static const schema s_sums = {S_OBJ, f_sums, N(f_sums), NULL};
static const field f_sink[] = {{"type", &s_str}, {"target", &s_str}};
static const schema s_sink = {S_OBJ, f_sink, N(f_sink), NULL};
static const field f_runcfg[] = {{"seed", &s_int},           {"device_requested", &s_str},
                                 {"max_new_tokens", &s_int}, {"generation", &s_gen},
                                 {"summaries", &s_sums},     {"sink", &s_sink}};
static const schema s_runcfg = {S_OBJ, f_runcfg, N(f_runcfg), NULL};

static const field f_prompt[] = {{"text", &s_str}, {"token_ids", &s_ints}, {"num_tokens", &s_int}};
static const schema s_prompt = {S_OBJ, f_prompt, N(f_prompt), NULL};
static const field f_gend[] = {
    {"output_text", &s_str}, {"token_ids", &s_ints}, {"num_tokens", &s_int}};
static const schema s_gend = {S_OBJ, f_gend, N(f_gend), NULL};

static const field f_token[] = {
    {"token_id", &s_int}, {"token_text", &s_str}, {"is_prompt_token", &s_bool}};
static const schema s_token = {S_OBJ, f_token, N(f_token), NULL};
static const field f_topk_item[] = {
    {"token_id", &s_int}, {"token_text", &s_str}, {"prob", &s_rfloat}};
static const schema s_topk_item = {S_OBJ, f_topk_item, N(f_topk_item), NULL};
static const schema s_topk = {S_ARR, NULL, 0, &s_topk_item};
static const field f_logits[] = {
    {"entropy", &s_float}, {"top1_top2_margin", &s_float}, {"topk", &s_topk}};
static const schema s_logits = {S_OBJ, f_logits, N(f_logits), NULL};
static const field f_hidden[] = {{"mean", &s_float},
                                 {"std", &s_float},
                                 {"l2_norm_mean", &s_float},
                                 {"max_abs", &s_float},
                                 {"sketch", &s_floats}};
static const schema s_hidden = {S_OBJ, f_hidden, N(f_hidden), NULL};
static const field f_attn[] = {
    {"entropy_mean", &s_float}, {"entropy_min", &s_float}, {"concentration_max", &s_float}};
static const schema s_attn = {S_OBJ, f_attn, N(f_attn), NULL};
static const schema s_nattn = {S_NOBJ, f_attn, N(f_attn), NULL};
static const field f_layer[] = {{"layer_index", &s_int},
                                {"hidden_summary", &s_hidden},
                                {"attention_summary", &s_attn},
                                {"cross_attention", &s_nattn},
                                {"extensions", &s_anyobj}};
static const schema s_layer = {S_OBJ, f_layer, N(f_layer), NULL};
static const schema s_layers = {S_ARR, NULL, 0, &s_layer};
static const schema s_nlayers = {S_NARR, NULL, 0, &s_layer};
static const field f_step[] = {{"step_index", &s_int},
                               {"token", &s_token},
                               {"logits_summary", &s_logits},
                               {"layers", &s_layers},
                               {"extensions", &s_anyobj}};
static const schema s_step = {S_OBJ, f_step, N(f_step), NULL};
static const schema s_timeline = {S_ARR, NULL, 0, &s_step};
static const field f_summary[] = {{"prompt_tokens", &s_int},
                                  {"generated_tokens", &s_int},
                                  {"total_steps", &s_int},
                                  {"elapsed_ms", &s_int}};
static const schema s_summary = {S_OBJ, f_summary, N(f_summary), NULL};
static const field f_warning[] = {{"code", &s_str}, {"message", &s_str}};
static const schema s_warning = {S_OBJ, f_warning, N(f_warning), NULL};
static const schema s_warnings = {S_ARR, NULL, 0, &s_warning};

static const field f_report[] = {
    {"schema_version", &s_str}, {"trace_id", &s_str},           {"created_at_utc", &s_str},
    {"model", &s_model},        {"run_config", &s_runcfg},      {"prompt", &s_prompt},
    {"generated", &s_gend},     {"timeline", &s_timeline},      {"summary", &s_summary},
    {"warnings", &s_warnings},  {"encoder_layers", &s_nlayers}, {"extensions", &s_anyobj}};
static const schema s_report = {S_OBJ, f_report, N(f_report), NULL};

static const char *type_name(const cJSON *j) {
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "an unknown value";
}

/* Where problems go: the first one into err (cv_trace_validate), or each one to fn
 * (cv_trace_validate_all). stop = 1 once the caller wants no more. */
typedef struct {
    cv_error *err;
    cv_trace_problem_fn fn;
    void *user;
    size_t count;
    int stop;
} vctx;

static void problem(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(vctx *v, const char *fmt, ...) {
    char msg[sizeof v->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->count++;
    if (v->fn) {
        v->fn(v->user, msg);
    } else {
        cv_fail(v->err, CV_ERR_FORMAT, "%s", msg);
        v->stop = 1;
    }
}

static void check(const cJSON *j, const schema *s, const char *path, vctx *v) {
    const char *want = NULL;
    if (v->stop) return;
    switch (s->kind) {
    case S_STR:
        if (!cJSON_IsString(j)) want = "a string";
        break;
    case S_NSTR:
        if (!cJSON_IsString(j) && !cJSON_IsNull(j)) want = "a string or null";
        break;
    case S_INT:
        if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble)) want = "an integer";
        break;
    case S_FLOAT:
        if (!cJSON_IsNumber(j) && !cJSON_IsNull(j)) want = "a number or null";
        break;
    case S_RFLOAT:
        if (!cJSON_IsNumber(j)) want = "a number (null is not allowed here)";
        break;
    case S_BOOL:
        if (!cJSON_IsBool(j)) want = "a boolean";
        break;
    case S_ANYOBJ:
        if (!cJSON_IsObject(j)) want = "an object";
        break;
    case S_NOBJ:
    case S_NARR:
        if (cJSON_IsNull(j)) return;
        /* fall through */
    case S_OBJ:
    case S_ARR: {
        int obj = s->kind == S_OBJ || s->kind == S_NOBJ;
        if (obj ? !cJSON_IsObject(j) : !cJSON_IsArray(j)) {
            want = obj ? "an object" : "an array";
            break;
        }
        char sub[512];
        if (!obj) {
            int i = 0;
            for (const cJSON *c = j->child; c && !v->stop; c = c->next, i++) {
                snprintf(sub, sizeof sub, "%s[%d]", path, i);
                check(c, s->elem, sub, v);
            }
            return;
        }
        /* Keys in order: walk the expected fields against the object's members. When a key is
         * out of place, say so and still check its value (found by name), so one misplaced key
         * does not hide the problems after it. */
        const cJSON *c = j->child;
        for (size_t i = 0; i < s->n_fields && !v->stop; i++) {
            const char *name = s->fields[i].name;
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", name);
            if (c && c->string && strcmp(c->string, name) == 0) {
                check(c, s->fields[i].s, sub, v);
                c = c->next;
                continue;
            }
            const cJSON *named = cJSON_GetObjectItemCaseSensitive(j, name);
            if (named) {
                problem(v, "%s: key out of order (found '%s' here)", sub,
                        c && c->string ? c->string : "end of object");
                check(named, s->fields[i].s, sub, v);
            } else {
                problem(v, "%s: missing key", sub);
            }
        }
        for (const cJSON *m = j->child; m && !v->stop; m = m->next) {
            int known = 0;
            for (size_t i = 0; i < s->n_fields && !known; i++)
                known = m->string && strcmp(m->string, s->fields[i].name) == 0;
            if (!known)
                problem(v, "%s%s%s: unexpected key", path, *path ? "." : "",
                        m->string ? m->string : "?");
        }
        return;
    }
    }
    if (want) problem(v, "%s: expected %s, found %s", *path ? path : "trace", want, type_name(j));
}

static double num_or_nan(const cJSON *o, const char *key) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(n) ? n->valuedouble : NAN;
}

static void check_counts(const cJSON *root, vctx *v) {
    const char *parts[] = {"prompt", "generated"};
    double counts[2];
    for (int i = 0; i < 2 && !v->stop; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, parts[i]);
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "token_ids"));
        counts[i] = num_or_nan(o, "num_tokens");
        if (isfinite(counts[i]) && counts[i] != n)
            problem(v, "%s.num_tokens: %.0f but token_ids has %d entries", parts[i], counts[i], n);
    }
    if (v->stop) return;
    double total = num_or_nan(cJSON_GetObjectItemCaseSensitive(root, "summary"), "total_steps");
    if (isfinite(total) && isfinite(counts[0] + counts[1]) && total != counts[0] + counts[1])
        problem(v, "summary.total_steps: %.0f, expected prompt + generated tokens = %.0f", total,
                counts[0] + counts[1]);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "schema_version");
    if (!v->stop && cJSON_IsString(ver) && strcmp(ver->valuestring, CV_SCHEMA_VERSION) != 0)
        problem(v, "schema_version: '%s', expected '%s'", ver->valuestring, CV_SCHEMA_VERSION);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "trace_id");
    if (!v->stop && cJSON_IsString(id) && strlen(id->valuestring) != 36)
        problem(v, "trace_id: '%s' is not a UUID", id->valuestring);
}

static size_t validate(const char *json, vctx *v) {
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        problem(v, "trace is not valid JSON (near offset %ld)", at ? (long)(at - json) : -1L);
        return v->count;
    }
    check(root, &s_report, "", v);
    if (!v->stop && cJSON_IsObject(root)) check_counts(root, v);
    cJSON_Delete(root);
    return v->count;
}

size_t cv_trace_validate_all(const char *json, cv_trace_problem_fn fn, void *user) {
    cv_error scratch;
    vctx v = {&scratch, fn, user, 0, 0};
    return validate(json, &v);
}

cv_status cv_trace_validate(const char *json, cv_error *err) {
    cv_error scratch;
    vctx v = {err ? err : &scratch, NULL, NULL, 0, 0};
    return validate(json, &v) ? CV_ERR_FORMAT : CV_OK;
}
