/* config.c — cv_config: defaults, the key table, YAML (libyaml), COREVITAL_* environment.
 *
 * One table lists every key with its type, its place in struct cv_config and its allowed values.
 * All sources (YAML, env, CLI flags) go through cv_config_set(), so a value is checked the same
 * way wherever it comes from. Precedence is the caller's order of application (cv_config_load,
 * then the CLI's flags). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/config.h"
#include "corevital/stats.h" /* CV_TOPK_MAX */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert(CV_TOPK_MAX == 64, "update the summaries.logits.topk message");
#include <yaml.h>

extern char **environ;

typedef enum { KT_STR, KT_NSTR, KT_BOOL, KT_INT, KT_I64, KT_FLOAT, KT_LIST } key_type;

typedef struct {
    const char *key;
    key_type type;
    size_t off;
    const char *const *choices; /* NULL-terminated allowed values (strings and list items) */
} key_def;

static const char *const k_dtypes[] = {"auto", "float32", "float16", "bfloat16", NULL};
static const char *const k_kv_dtypes[] = {"float32", "bfloat16", "fp32", "bf16", NULL};
static const char *const k_devices[] = {"auto", "cpu", "cuda", NULL};
static const char *const k_methods[] = {"randproj", "none", NULL};
static const char *const k_sinks[] = {"local_file", "http", "datadog", "prometheus", NULL};
static const char *const k_levels[] = {"DEBUG", "INFO", "WARNING", "ERROR", NULL};
static const char *const k_perf[] = {"summary", "detailed", "strict", NULL};
static const char *const k_hidden_stats[] = {"mean", "std", "l2_norm_mean", "max_abs", NULL};
static const char *const k_attn_stats[] = {"entropy_mean", "entropy_min", "concentration_max",
                                           NULL};
static const char *const k_logit_stats[] = {"entropy", "top1_top2_margin", "topk_probs", NULL};

#define OFF(m) offsetof(struct cv_config, m)
static const key_def k_keys[] = {
    {"model.hf_id", KT_STR, OFF(model.hf_id), NULL},
    {"model.revision", KT_NSTR, OFF(model.revision), NULL},
    {"model.trust_remote_code", KT_BOOL, OFF(model.trust_remote_code), NULL},
    {"model.dtype", KT_STR, OFF(model.dtype), k_dtypes},
    {"model.kv_dtype", KT_STR, OFF(model.kv_dtype), k_kv_dtypes},
    {"model.prefill_dtype", KT_STR, OFF(model.prefill_dtype), k_kv_dtypes},
    {"model.load_in_4bit", KT_BOOL, OFF(model.load_in_4bit), NULL},
    {"model.load_in_8bit", KT_BOOL, OFF(model.load_in_8bit), NULL},
    {"device.requested", KT_STR, OFF(device.requested), k_devices},
    {"generation.max_new_tokens", KT_INT, OFF(generation.max_new_tokens), NULL},
    {"generation.do_sample", KT_BOOL, OFF(generation.do_sample), NULL},
    {"generation.temperature", KT_FLOAT, OFF(generation.temperature), NULL},
    {"generation.top_k", KT_INT, OFF(generation.top_k), NULL},
    {"generation.top_p", KT_FLOAT, OFF(generation.top_p), NULL},
    {"generation.seed", KT_I64, OFF(generation.seed), NULL},
    {"summaries.hidden.enabled", KT_BOOL, OFF(summaries.hidden.enabled), NULL},
    {"summaries.hidden.stats", KT_LIST, OFF(summaries.hidden.stats), k_hidden_stats},
    {"summaries.hidden.sketch.method", KT_STR, OFF(summaries.hidden.sketch.method), k_methods},
    {"summaries.hidden.sketch.dim", KT_INT, OFF(summaries.hidden.sketch.dim), NULL},
    {"summaries.hidden.sketch.seed", KT_I64, OFF(summaries.hidden.sketch.seed), NULL},
    {"summaries.attention.enabled", KT_BOOL, OFF(summaries.attention.enabled), NULL},
    {"summaries.attention.stats", KT_LIST, OFF(summaries.attention.stats), k_attn_stats},
    {"summaries.logits.enabled", KT_BOOL, OFF(summaries.logits.enabled), NULL},
    {"summaries.logits.stats", KT_LIST, OFF(summaries.logits.stats), k_logit_stats},
    {"summaries.logits.topk", KT_INT, OFF(summaries.logits.topk), NULL},
    {"sink.type", KT_STR, OFF(sink.type), k_sinks},
    {"sink.output_dir", KT_STR, OFF(sink.output_dir), NULL},
    {"sink.remote_url", KT_NSTR, OFF(sink.remote_url), NULL},
    {"sink.prometheus_textfile", KT_NSTR, OFF(sink.prometheus_textfile), NULL},
    {"sink.http_gzip", KT_BOOL, OFF(sink.http_gzip), NULL},
    {"logging.level", KT_STR, OFF(logging.level), k_levels},
    {"logging.format", KT_STR, OFF(logging.format), NULL},
    {"performance.mode", KT_NSTR, OFF(performance.mode), k_perf},
    {"health.enabled", KT_BOOL, OFF(health.enabled), NULL},
    {"health.stop_on", KT_NSTR, OFF(health.stop_on), NULL},
    {"health.stream", KT_NSTR, OFF(health.stream), NULL},
    {"health.prompt_heads", KT_BOOL, OFF(health.prompt_heads), NULL},
    {"store.path", KT_NSTR, OFF(store.path), NULL},
};
#undef OFF
#define N_KEYS (sizeof k_keys / sizeof k_keys[0])

/* Mappings that may appear in YAML (everything else must be a leaf key). */
static const char *const k_sections[] = {"model",
                                         "device",
                                         "generation",
                                         "summaries",
                                         "summaries.hidden",
                                         "summaries.hidden.sketch",
                                         "summaries.attention",
                                         "summaries.logits",
                                         "sink",
                                         "logging",
                                         "performance",
                                         "health",
                                         "store",
                                         NULL};

/* COREVITAL_* variables that are not settings (so they are not "unknown key" errors): the
 * default.yaml directory here, and the remote sinks' secrets/test endpoints (remote_sinks.h).
 * A module that reads a new COREVITAL_* variable adds it to this list. */
static const char *const k_env_not_settings[] = {"CONFIG_DIR", "SINK_TOKEN", "DATADOG_URL", NULL};

static const key_def *find_key(const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].key, key) == 0) return &k_keys[i];
    return NULL;
}

int cv_config_is_key(const char *key) {
    return find_key(key) != NULL;
}

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

static void format_choices(const char *const *choices, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (const char *const *c = choices; *c; c++) {
        int w = snprintf(buf + used, n - used, "%s'%s'", c == choices ? "" : ", ", *c);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

static void stat_list_clear(cv_stat_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    l->n = 0;
}

void cv_config_free(cv_config *c) {
    if (!c) return;
    for (size_t i = 0; i < N_KEYS; i++) {
        void *p = (char *)c + k_keys[i].off;
        if (k_keys[i].type == KT_STR || k_keys[i].type == KT_NSTR) {
            free(*(char **)p);
            *(char **)p = NULL;
        } else if (k_keys[i].type == KT_LIST) {
            stat_list_clear((cv_stat_list *)p);
        }
    }
    free(c->out_path);
    c->out_path = NULL;
}

cv_status cv_config_init(cv_config *c, cv_error *err) {
    memset(c, 0, sizeof *c);
    /* The built-in defaults, written as key/value text so they pass the same checks. */
    static const char *const defaults[][2] = {
        {"model.hf_id", "gpt2"},
        {"model.dtype", "auto"},
        {"model.kv_dtype", "float32"},
        {"model.prefill_dtype", "float32"},
        {"device.requested", "auto"},
        {"generation.max_new_tokens", "20"},
        {"generation.do_sample", "true"},
        {"generation.temperature", "0.8"},
        {"generation.top_k", "50"},
        {"generation.top_p", "0.95"},
        {"generation.seed", "42"},
        {"summaries.hidden.enabled", "true"},
        {"summaries.hidden.stats", "mean,std,l2_norm_mean,max_abs"},
        {"summaries.hidden.sketch.method", "randproj"},
        {"summaries.hidden.sketch.dim", "32"},
        {"summaries.hidden.sketch.seed", "0"},
        {"summaries.attention.enabled", "true"},
        {"summaries.attention.stats", "entropy_mean,entropy_min,concentration_max"},
        {"summaries.logits.enabled", "true"},
        {"summaries.logits.stats", "entropy,top1_top2_margin,topk_probs"},
        {"summaries.logits.topk", "5"},
        {"sink.type", "local_file"},
        {"sink.output_dir", "runs"},
        {"health.enabled", "true"},
        {"logging.level", "INFO"},
        {"logging.format", "%(asctime)s - %(name)s - %(levelname)s - %(message)s"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        cv_status st = cv_config_set(c, defaults[i][0], defaults[i][1], err);
        if (st != CV_OK) {
            cv_config_free(c);
            return st;
        }
    }
    return CV_OK;
}

/* ---- value parsing ---- */

static int parse_bool(const char *s, int *out) {
    static const char *const t[] = {"true", "yes", "on", "1", NULL};
    static const char *const f[] = {"false", "no", "off", "0", NULL};
    for (int i = 0; t[i]; i++)
        if (strcasecmp(s, t[i]) == 0) return *out = 1, 0;
    for (int i = 0; f[i]; i++)
        if (strcasecmp(s, f[i]) == 0) return *out = 0, 0;
    return -1;
}

static int parse_i64(const char *s, int64_t *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_double(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    /* Hex floats, nan and inf are not configuration values. */
    if (errno || *end || !isfinite(v) || strpbrk(s, "xX")) return -1;
    *out = v;
    return 0;
}

static cv_status set_list_items(cv_stat_list *dst, const key_def *k, const char *const *items,
                                size_t n, cv_error *err) {
    if (n > CV_CONFIG_MAX_STATS)
        return cv_fail(err, CV_ERR_CONFIG, "%s: too many entries (%zu, at most %d)", k->key, n,
                       CV_CONFIG_MAX_STATS);
    for (size_t i = 0; i < n; i++) {
        if (!in_list(k->choices, items[i])) {
            char ch[256];
            format_choices(k->choices, ch, sizeof ch);
            return cv_fail(err, CV_ERR_CONFIG, "%s: unknown statistic '%s' (choose from %s)",
                           k->key, items[i], ch);
        }
    }
    cv_stat_list tmp = {{0}, 0};
    for (size_t i = 0; i < n; i++) {
        tmp.items[i] = strdup(items[i]);
        if (!tmp.items[i]) {
            stat_list_clear(&tmp);
            return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", k->key);
        }
        tmp.n = i + 1;
    }
    stat_list_clear(dst);
    *dst = tmp;
    return CV_OK;
}

cv_status cv_config_set_list(cv_config *c, const char *key, const char *const *items, size_t n,
                             cv_error *err) {
    const key_def *k = find_key(key);
    if (!k) return cv_fail(err, CV_ERR_CONFIG, "unknown configuration key '%s'", key);
    if (k->type != KT_LIST)
        return cv_fail(err, CV_ERR_CONFIG, "%s: expected a single value, got a list", key);
    return set_list_items((cv_stat_list *)((char *)c + k->off), k, items, n, err);
}

/* Split "a, b,c" or "[a, b]" into trimmed items (in place in a copy). */
static cv_status set_list_text(cv_config *c, const key_def *k, const char *value, cv_error *err) {
    char *copy = strdup(value);
    if (!copy) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", k->key);
    char *s = copy;
    while (isspace((unsigned char)*s)) s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1])) s[--len] = '\0';
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s[len - 1] = '\0';
        s++;
    }
    const char *items[CV_CONFIG_MAX_STATS + 1];
    size_t n = 0;
    int empty = 1;
    for (const char *p = s; *p; p++)
        if (!isspace((unsigned char)*p)) empty = 0;
    if (!empty) {
        char *save = NULL;
        for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (isspace((unsigned char)*tok)) tok++;
            size_t tl = strlen(tok);
            while (tl && isspace((unsigned char)tok[tl - 1])) tok[--tl] = '\0';
            if (n > CV_CONFIG_MAX_STATS) break; /* set_list_items reports "too many" */
            items[n++] = tok;
        }
    }
    cv_status st = set_list_items((cv_stat_list *)((char *)c + k->off), k, items, n, err);
    free(copy);
    return st;
}

cv_status cv_config_set(cv_config *c, const char *key, const char *value, cv_error *err) {
    const key_def *k = find_key(key);
    if (!k) return cv_fail(err, CV_ERR_CONFIG, "unknown configuration key '%s'", key);
    void *p = (char *)c + k->off;
    if (!value) {
        if (k->type != KT_NSTR) return cv_fail(err, CV_ERR_CONFIG, "%s: must not be null", key);
        free(*(char **)p);
        *(char **)p = NULL;
        return CV_OK;
    }
    switch (k->type) {
    case KT_STR:
    case KT_NSTR: {
        if (k->choices && !in_list(k->choices, value)) {
            char ch[256];
            format_choices(k->choices, ch, sizeof ch);
            return cv_fail(err, CV_ERR_CONFIG, "%s: invalid choice: '%s' (choose from %s)", key,
                           value, ch);
        }
        char *dup = strdup(value);
        if (!dup) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", key);
        free(*(char **)p);
        *(char **)p = dup;
        return CV_OK;
    }
    case KT_BOOL: {
        int b;
        if (parse_bool(value, &b) != 0)
            return cv_fail(err, CV_ERR_CONFIG,
                           "%s: invalid boolean value: '%s' (use true or false)", key, value);
        *(int *)p = b;
        return CV_OK;
    }
    case KT_INT: {
        int64_t v;
        if (parse_i64(value, &v) != 0 || v < INT_MIN || v > INT_MAX)
            return cv_fail(err, CV_ERR_CONFIG, "%s: invalid int value: '%s'", key, value);
        *(int *)p = (int)v;
        return CV_OK;
    }
    case KT_I64: {
        int64_t v;
        if (parse_i64(value, &v) != 0)
            return cv_fail(err, CV_ERR_CONFIG, "%s: invalid int value: '%s'", key, value);
        *(int64_t *)p = v;
        return CV_OK;
    }
    case KT_FLOAT: {
        double v;
        if (parse_double(value, &v) != 0)
            return cv_fail(err, CV_ERR_CONFIG, "%s: invalid float value: '%s'", key, value);
        *(double *)p = v;
        return CV_OK;
    }
    case KT_LIST:
        return set_list_text(c, k, value, err);
    }
    return cv_fail(err, CV_ERR_CONFIG, "%s: unhandled key type", key);
}

/* ---- YAML ---- */

static int yaml_is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static cv_status yaml_walk(cv_config *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                           const char *name, cv_error *err) {
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(doc, pr->value);
        if (!kn || !vn) return cv_fail(err, CV_ERR_FORMAT, "%s: malformed YAML document", name);
        unsigned long line = (unsigned long)kn->start_mark.line + 1;
        if (kn->type != YAML_SCALAR_NODE)
            return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: keys must be plain names", name, line);
        /* libyaml keeps both of two equal keys; a silent last-one-wins hides typos */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
            yaml_node_t *qk = yaml_document_get_node(doc, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE &&
                qk->data.scalar.length == kn->data.scalar.length &&
                memcmp(qk->data.scalar.value, kn->data.scalar.value, kn->data.scalar.length) == 0)
                return cv_fail(
                    err, CV_ERR_CONFIG, "%s:%lu: duplicate key '%s%s%s' (first given on line %lu)",
                    name, line, prefix, *prefix ? "." : "", (const char *)kn->data.scalar.value,
                    (unsigned long)qk->start_mark.line + 1);
        }
        char path[256];
        int w = snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "",
                         (const char *)kn->data.scalar.value);
        if (w < 0 || (size_t)w >= sizeof path)
            return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: key too long", name, line);
        if (in_list(k_sections, path)) {
            if (yaml_is_null(vn)) continue; /* "performance:" with nothing under it */
            if (vn->type != YAML_MAPPING_NODE)
                return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: '%s' must be a mapping of keys", name,
                               line, path);
            cv_status st = yaml_walk(c, doc, vn, path, name, err);
            if (st != CV_OK) return st;
            continue;
        }
        const key_def *k = find_key(path);
        if (!k) return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: unknown key '%s'", name, line, path);
        cv_status st;
        if (k->type == KT_LIST) {
            if (vn->type != YAML_SEQUENCE_NODE)
                return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: %s: expected a list of names", name,
                               line, path);
            const char *items[CV_CONFIG_MAX_STATS + 1];
            size_t n = 0;
            for (yaml_node_item_t *it = vn->data.sequence.items.start;
                 it < vn->data.sequence.items.top; it++) {
                yaml_node_t *in = yaml_document_get_node(doc, *it);
                if (!in || in->type != YAML_SCALAR_NODE)
                    return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: %s: list entries must be names",
                                   name, line, path);
                if (n > CV_CONFIG_MAX_STATS)
                    return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: %s: too many entries", name, line,
                                   path);
                items[n++] = (const char *)in->data.scalar.value;
            }
            st = cv_config_set_list(c, path, items, n, err);
        } else if (vn->type != YAML_SCALAR_NODE) {
            return cv_fail(err, CV_ERR_CONFIG, "%s:%lu: %s: expected a single value, not a %s",
                           name, line, path, vn->type == YAML_MAPPING_NODE ? "mapping" : "list");
        } else if (yaml_is_null(vn)) {
            st = cv_config_set(c, path, NULL, err);
        } else {
            st = cv_config_set(c, path, (const char *)vn->data.scalar.value, err);
        }
        if (st != CV_OK) {
            /* cv_config_set messages start with the key; add the file and line. */
            char old[sizeof err->msg];
            memcpy(old, err->msg, sizeof old);
            return cv_fail(err, st, "%s:%lu: %s", name, line, old);
        }
    }
    return CV_OK;
}

cv_status cv_config_load_yaml_string(cv_config *c, const char *text, size_t len, const char *name,
                                     cv_error *err) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return cv_fail(err, CV_ERR_NOMEM, "%s: cannot initialize the YAML parser", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        cv_status st = cv_fail(err, CV_ERR_FORMAT, "%s:%lu:%lu: malformed YAML: %s", name,
                               (unsigned long)parser.problem_mark.line + 1,
                               (unsigned long)parser.problem_mark.column + 1,
                               parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        return st;
    }
    cv_status st = CV_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !yaml_is_null(root)) {
        if (root->type != YAML_MAPPING_NODE)
            st = cv_fail(err, CV_ERR_CONFIG, "%s: the top level must be a mapping of sections",
                         name);
        else
            st = yaml_walk(c, &doc, root, "", name, err);
    }
    /* A second document in the stream is almost certainly a mistake. */
    if (st == CV_OK) {
        yaml_document_t extra;
        if (yaml_parser_load(&parser, &extra)) {
            if (yaml_document_get_root_node(&extra))
                st = cv_fail(err, CV_ERR_CONFIG, "%s: more than one YAML document", name);
            yaml_document_delete(&extra);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return st;
}

cv_status cv_config_load_yaml_file(cv_config *c, const char *path, cv_error *err) {
    char *text;
    size_t len;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st != CV_OK) {
        cv_error_prefix(err, "config file");
        return st;
    }
    st = cv_config_load_yaml_string(c, text, len, path, err);
    free(text);
    return st;
}

/* ---- environment ---- */

const char *cv_config_getenv(char *const *envp, const char *name) {
    if (!envp) return getenv(name);
    size_t n = strlen(name);
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

#define ENV_PREFIX "COREVITAL_"

/* Map the part after COREVITAL_ to a key: "GENERATION_MAX_NEW_TOKENS" -> generation.max_new_tokens.
 * Matching is against the whole table with '.' read as '_', so keys with underscores work. */
static const key_def *env_key(const char *rest, size_t len, int *is_alias) {
    *is_alias = 0;
    if (len == 6 && strncmp(rest, "DEVICE", 6) == 0)
        return *is_alias = 1, find_key("device.requested");
    if (len == 4 && strncmp(rest, "SEED", 4) == 0)
        return *is_alias = 1, find_key("generation.seed");
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *k = k_keys[i].key;
        if (strlen(k) != len) continue;
        size_t j = 0;
        for (; j < len; j++) {
            char want = k[j] == '.' ? '_' : (char)toupper((unsigned char)k[j]);
            if (rest[j] != want) break;
        }
        if (j == len) return &k_keys[i];
    }
    return NULL;
}

cv_status cv_config_apply_env(cv_config *c, char *const *envp, cv_error *err) {
    char *const *env = envp ? envp : environ;
    if (!env) return CV_OK;
    const size_t plen = strlen(ENV_PREFIX);
    /* Two passes: aliases first, so that a full name wins over its alias. */
    for (int pass = 0; pass < 2; pass++) {
        for (char *const *e = env; *e; e++) {
            if (strncmp(*e, ENV_PREFIX, plen) != 0) continue;
            const char *rest = *e + plen;
            const char *eq = strchr(rest, '=');
            if (!eq) continue;
            size_t len = (size_t)(eq - rest);
            const char *value = eq + 1;
            int skip = 0;
            for (const char *const *ns = k_env_not_settings; *ns; ns++)
                if (strlen(*ns) == len && strncmp(*ns, rest, len) == 0) skip = 1;
            if (skip) continue;
            int alias;
            const key_def *k = env_key(rest, len, &alias);
            if (!k)
                return cv_fail(
                    err, CV_ERR_CONFIG,
                    "environment variable %.*s: unknown setting (expected "
                    "COREVITAL_<SECTION>_<KEY>, e.g. COREVITAL_GENERATION_MAX_NEW_TOKENS)",
                    (int)(len + plen), *e);
            if (alias != (pass == 0)) continue;
            cv_status st;
            if (!*value && k->type == KT_NSTR)
                st = cv_config_set(c, k->key, NULL, err);
            else if (!*value)
                st = cv_fail(err, CV_ERR_CONFIG, "%s: empty value", k->key);
            else
                st = cv_config_set(c, k->key, value, err);
            if (st != CV_OK) {
                char old[sizeof err->msg];
                memcpy(old, err->msg, sizeof old);
                return cv_fail(err, st, "environment variable %.*s: %s", (int)(len + plen), *e,
                               old);
            }
        }
    }
    return CV_OK;
}

/* ---- the chain ---- */

cv_status cv_config_load(cv_config *c, const char *config_path, char *const *envp, cv_error *err) {
    cv_status st = cv_config_init(c, err);
    if (st != CV_OK) return st;
    const char *dir = cv_config_getenv(envp, ENV_PREFIX "CONFIG_DIR");
    char def[4096];
    if (dir && *dir) {
        st = cv_path_join(def, sizeof def, dir, "default.yaml", err);
        if (st == CV_OK && !cv_is_file(def))
            st = cv_fail(err, CV_ERR_CONFIG, "COREVITAL_CONFIG_DIR: %s does not exist", def);
        if (st == CV_OK) st = cv_config_load_yaml_file(c, def, err);
    } else if (cv_is_file("configs/default.yaml")) {
        st = cv_config_load_yaml_file(c, "configs/default.yaml", err);
    }
    if (st == CV_OK && config_path) {
        if (!cv_is_file(config_path))
            st = cv_fail(err, CV_ERR_CONFIG, "config file not found: %s", config_path);
        else
            st = cv_config_load_yaml_file(c, config_path, err);
    }
    if (st == CV_OK) st = cv_config_apply_env(c, envp, err);
    if (st != CV_OK) cv_config_free(c);
    return st;
}

int cv_config_has_stat(const cv_stat_list *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], name) == 0) return 1;
    return 0;
}

cv_status cv_config_validate(cv_config *c, cv_error *err) {
    const struct {
        int bad;
        const char *msg;
    } checks[] = {
        {c->generation.max_new_tokens < 1, "generation.max_new_tokens: must be >= 1"},
        {!(c->generation.temperature >= 0), "generation.temperature: must be >= 0 (0 = greedy)"},
        {c->generation.top_k < 0, "generation.top_k: must be >= 0 (0 disables top-k)"},
        {!(c->generation.top_p > 0 && c->generation.top_p <= 1),
         "generation.top_p: must be in (0, 1]"},
        {c->summaries.hidden.sketch.dim < 0, "summaries.hidden.sketch.dim: must be >= 0"},
        {c->summaries.hidden.sketch.dim > 256, "summaries.hidden.sketch.dim: must be <= 256"},
        {c->summaries.hidden.sketch.seed < 0 || c->summaries.hidden.sketch.seed > 4294967295LL,
         "summaries.hidden.sketch.seed: must be in [0, 2^32-1] (numpy seed)"},
        {c->summaries.logits.topk < 1, "summaries.logits.topk: must be >= 1"},
        {c->summaries.logits.topk > CV_TOPK_MAX,
         "summaries.logits.topk: must be <= 64 (the largest top-k list the logits pass keeps)"},
        {c->threads < 0, "--threads: must be >= 0 (0 = OpenMP default)"},
        {!c->model.hf_id || !*c->model.hf_id, "model.hf_id: must not be empty"},
        {!c->sink.output_dir || !*c->sink.output_dir, "sink.output_dir: must not be empty"},
        {strcmp(c->sink.type, "http") == 0 && (!c->sink.remote_url || !*c->sink.remote_url),
         "sink.remote_url: required when the sink type is http (--remote_url)"},
        {strcmp(c->sink.type, "prometheus") == 0 && (!c->sink.remote_url || !*c->sink.remote_url) &&
             (!c->sink.prometheus_textfile || !*c->sink.prometheus_textfile),
         "sink.remote_url: the prometheus sink needs a Pushgateway URL (--remote_url) or "
         "sink.prometheus_textfile"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i].bad) return cv_fail(err, CV_ERR_CONFIG, "%s", checks[i].msg);
    cv_stop_on so;
    char why[160];
    if (cv_stop_on_parse(c->health.stop_on, &so, why, sizeof why))
        return cv_fail(err, CV_ERR_CONFIG, "health.stop_on (--stop-on): %s", why);
    if (c->generation.temperature == 0) c->generation.do_sample = 0;
    return CV_OK;
}

int cv_stop_on_parse(const char *s, cv_stop_on *out, char *msg, size_t n) {
    out->repetition = out->nan = 0;
    out->risk = -1.0;
    if (!s) return 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']') p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ',' && *q != ']') q++;
        size_t len = (size_t)(q - p);
        while (len && p[len - 1] == ' ') len--;
        char item[64];
        if (len >= sizeof item) len = sizeof item - 1;
        memcpy(item, p, len);
        item[len] = '\0';
        char *end = NULL;
        if (strcmp(item, "repetition") == 0) {
            out->repetition = 1;
        } else if (strcmp(item, "nan") == 0) {
            out->nan = 1;
        } else if (strncmp(item, "risk>", 5) == 0 && item[5] &&
                   (out->risk = strtod(item + 5, &end), end && *end == '\0') && out->risk >= 0 &&
                   out->risk < 1) {
            /* accepted */
        } else {
            snprintf(msg, n,
                     "unknown condition '%s' (expected repetition, nan or risk>X with X in "
                     "[0, 1))",
                     item);
            return -1;
        }
        p = q;
    }
    return 0;
}
