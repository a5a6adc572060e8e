/* perf.c — the `--perf` operation timer and its two outputs (SPEC §6): the summary stored in
 * extensions.performance and the nested breakdown written to <trace>_performance_detailed.json.
 *
 * The arithmetic follows the Python reference's PerformanceMonitor (12d4250) exactly: durations
 * are kept raw, every printed ms / pct is round(x, 2) of the raw value, unaccounted time is
 * total - sum(raw parents) (minus warm-up and baseline in strict mode), and corevital_overhead_ms
 * subtracts the *rounded* model_load and tokenize values, as the reference does. One deliberate
 * difference: children that share a name are all kept ("x", "x#1", ...) where the reference's
 * dict silently kept only the last. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/perf.h"
#include "corevital/stats.h"

#include "corevital/log.h"
#include "corevital/sinks.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[CV_PERF_NAME_MAX + 1];
    int first_child, last_child, next_sibling; /* node indices, -1 = none */
    double start_ms, dur_ms;
    int64_t n_samples; /* per-step samples: running count / min / max / sum */
    double s_min, s_max, s_sum;
} perf_node;

struct cv_perf {
    cv_perf_mode mode;
    perf_node *nodes;
    int n, cap;
    int first_root, last_root;
    int stack[CV_PERF_MAX_DEPTH];
    int depth;
    int dropped; /* begins that could not be recorded (too deep / out of memory), still open */
    double run_start, run_end;
    int ended;
    int has_strict;
    cv_perf_strict strict;
    int warned;
};

static const char *const k_mode_names[] = {"summary", "detailed", "strict"};

cv_status cv_perf_parse_mode(const char *s, cv_perf_mode *out, cv_error *err) {
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, k_mode_names[i]) == 0) {
            *out = (cv_perf_mode)i;
            return CV_OK;
        }
    return cv_fail(err, CV_ERR_CONFIG,
                   "performance.mode: invalid choice: '%s' (choose from 'summary', 'detailed', "
                   "'strict')",
                   s ? s : "null");
}

const char *cv_perf_mode_name(cv_perf_mode m) {
    return (unsigned)m < 3 ? k_mode_names[m] : "?";
}

cv_status cv_perf_create(const char *mode, double run_start_ms, cv_perf **out, cv_error *err) {
    *out = NULL;
    cv_perf_mode m = CV_PERF_SUMMARY;
    cv_status st = cv_perf_parse_mode(mode, &m, err);
    if (st != CV_OK) return st;
    cv_perf *p = calloc(1, sizeof *p);
    if (!p) return cv_fail(err, CV_ERR_NOMEM, "out of memory for the performance monitor");
    p->mode = m;
    p->first_root = p->last_root = -1;
    p->run_start = run_start_ms != 0.0 ? run_start_ms : cv_now_ms();
    *out = p;
    return CV_OK;
}

void cv_perf_free(cv_perf *p) {
    if (!p) return;
    free(p->nodes);
    free(p);
}

cv_perf_mode cv_perf_get_mode(const cv_perf *p) {
    return p->mode;
}

/* ---- the timer ---- */

void cv_perf_begin_at(cv_perf *p, const char *name, double t_ms) {
    if (!p) return;
    if (p->dropped || p->depth == CV_PERF_MAX_DEPTH) {
        p->dropped++;
        return;
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        perf_node *nn = realloc(p->nodes, sizeof *nn * (size_t)cap);
        if (!nn) {
            p->dropped++;
            return;
        }
        p->nodes = nn;
        p->cap = cap;
    }
    int id = p->n++;
    perf_node *nd = &p->nodes[id];
    /* A plain bounded copy: snprintf alone would triple the cost of a begin. */
    size_t len = 0;
    if (name)
        while (len < CV_PERF_NAME_MAX && name[len]) len++;
    memcpy(nd->name, name ? name : "", len);
    nd->name[len] = '\0';
    nd->first_child = nd->last_child = nd->next_sibling = -1;
    nd->start_ms = t_ms;
    nd->dur_ms = 0.0;
    nd->n_samples = 0;
    nd->s_min = nd->s_max = nd->s_sum = 0.0;
    if (p->depth > 0) {
        perf_node *parent = &p->nodes[p->stack[p->depth - 1]];
        if (parent->last_child >= 0)
            p->nodes[parent->last_child].next_sibling = id;
        else
            parent->first_child = id;
        parent->last_child = id;
    } else {
        if (p->last_root >= 0)
            p->nodes[p->last_root].next_sibling = id;
        else
            p->first_root = id;
        p->last_root = id;
    }
    p->stack[p->depth++] = id;
}

void cv_perf_end_at(cv_perf *p, const char *name, double t_ms) {
    if (!p) return;
    if (p->dropped) { /* the innermost begin was not recorded: this end is its own */
        p->dropped--;
        return;
    }
    int k = p->depth - 1;
    if (name)
        while (k >= 0 && strncmp(p->nodes[p->stack[k]].name, name, CV_PERF_NAME_MAX) != 0) k--;
    if (k < 0) {
        if (!p->warned)
            CV_WARN("perf: end of operation '%s' that is not open (ignored)", name ? name : "");
        p->warned = 1;
        return;
    }
    /* Close the match and everything opened inside it that was left open. */
    for (int i = p->depth - 1; i >= k; i--) {
        perf_node *nd = &p->nodes[p->stack[i]];
        nd->dur_ms = t_ms - nd->start_ms;
    }
    p->depth = k;
}

void cv_perf_begin(cv_perf *p, const char *name) {
    if (p) cv_perf_begin_at(p, name, cv_now_ms());
}

void cv_perf_end(cv_perf *p, const char *name) {
    if (p) cv_perf_end_at(p, name, cv_now_ms());
}

void cv_perf_record(cv_perf *p, const char *name, double start_ms, double end_ms) {
    cv_perf_begin_at(p, name, start_ms);
    cv_perf_end_at(p, name, end_ms);
}

void cv_perf_sample(cv_perf *p, double ms) {
    if (!p || p->depth == 0 || p->dropped) return;
    perf_node *nd = &p->nodes[p->stack[p->depth - 1]];
    if (nd->n_samples == 0 || ms < nd->s_min) nd->s_min = ms;
    if (nd->n_samples == 0 || ms > nd->s_max) nd->s_max = ms;
    nd->s_sum += ms;
    nd->n_samples++;
}

void cv_perf_mark_end(cv_perf *p, double end_ms) {
    if (!p || p->ended) return;
    p->run_end = end_ms != 0.0 ? end_ms : cv_now_ms();
    p->dropped = 0;
    for (int i = p->depth - 1; i >= 0; i--) {
        perf_node *nd = &p->nodes[p->stack[i]];
        nd->dur_ms = p->run_end - nd->start_ms;
    }
    p->depth = 0;
    p->ended = 1;
}

void cv_perf_set_strict(cv_perf *p, const cv_perf_strict *s) {
    if (!p) return;
    p->strict = *s;
    p->has_strict = 1;
}

static void hook_begin(void *user, const char *name) {
    cv_perf_begin((cv_perf *)user, name);
}
static void hook_end(void *user, const char *name) {
    cv_perf_end((cv_perf *)user, name);
}
static void hook_step(void *user, double ms) {
    cv_perf_sample((cv_perf *)user, ms);
}

void cv_perf_hooks(cv_perf *p, cv_gen_hooks *out) {
    out->user = p;
    out->begin = hook_begin;
    out->end = hook_end;
    out->step = hook_step;
}

double cv_perf_self_overhead_ns(int pairs) {
    cv_perf *p;
    if (pairs <= 0 || cv_perf_create("summary", 0, &p, NULL) != CV_OK) return 0.0;
    /* Batches of up to 1000 pairs under one parent, the tree emptied between batches: the
     * steady-state cost of a begin + end in a run (a few dozen operations), not the cost of
     * growing the node array to `pairs` entries. */
    double spent = 0.0;
    for (int done = 0; done < pairs;) {
        int batch = pairs - done < 1000 ? pairs - done : 1000;
        p->n = 0;
        p->depth = 0;
        p->first_root = p->last_root = -1;
        cv_perf_begin(p, "outer");
        double t0 = cv_now_ms();
        for (int i = 0; i < batch; i++) {
            cv_perf_begin(p, "op");
            cv_perf_end(p, "op");
        }
        spent += cv_now_ms() - t0;
        done += batch;
    }
    cv_perf_free(p);
    return spent * 1e6 / pairs;
}

/* ---- results ---- */

static double parent_ms(const cv_perf *p, const perf_node *nd) {
    if (p->mode == CV_PERF_STRICT && p->has_strict && strcmp(nd->name, "model_load") == 0)
        return p->strict.original_model_load_ms;
    return nd->dur_ms;
}

/* The reference's total: the run clock, or the sum of the parents when it is 0. */
static double total_ms(const cv_perf *p) {
    double total = p->ended ? p->run_end - p->run_start : 0.0;
    if (total == 0.0)
        for (int i = p->first_root; i >= 0; i = p->nodes[i].next_sibling)
            total += p->nodes[i].dur_ms;
    return total;
}

static double pct_of(double ms, double total) {
    return total != 0.0 ? cv_round_decimals(100.0 * ms / total, 2) : 0.0;
}

/* Add a float rounded to 2 decimals; returns 0 on allocation failure. */
static int add_ms(cJSON *o, const char *key, double v) {
    cJSON *n = cv_json_float(cv_round_decimals(v, 2));
    if (!n) return 0;
    if (!cJSON_AddItemToObject(o, key, n)) {
        cJSON_Delete(n);
        return 0;
    }
    return 1;
}

static int add_raw_float(cJSON *o, const char *key, double v) {
    cJSON *n = cv_json_float(v);
    if (!n) return 0;
    if (!cJSON_AddItemToObject(o, key, n)) {
        cJSON_Delete(n);
        return 0;
    }
    return 1;
}

cJSON *cv_perf_summary_json(const cv_perf *p, const char *detailed_file) {
    const double total = total_ms(p);
    const int strict = p->mode == CV_PERF_STRICT;
    cJSON *out = cJSON_CreateObject();
    cJSON *parents = cJSON_CreateArray();
    int ok = out && parents;
    double sum = 0.0;
    for (int i = p->first_root; ok && i >= 0; i = p->nodes[i].next_sibling) {
        double ms = parent_ms(p, &p->nodes[i]);
        sum += ms;
        cJSON *po = cJSON_CreateObject();
        ok = po && cJSON_AddItemToArray(parents, po);
        if (!ok) {
            cJSON_Delete(po);
            break;
        }
        ok = cJSON_AddStringToObject(po, "name", p->nodes[i].name) && add_ms(po, "ms", ms) &&
             add_raw_float(po, "pct", pct_of(ms, total));
    }
    double unaccounted = total - sum;
    if (strict) unaccounted -= p->has_strict ? p->strict.warmup_ms + p->strict.baseline_ms : 0.0;
    cJSON *un = ok ? cJSON_CreateObject() : NULL;
    ok = ok && add_ms(out, "total_wall_time_ms", total);
    if (ok && cJSON_AddItemToObject(out, "parent_operations", parents))
        parents = NULL;
    else
        ok = 0;
    if (ok && un && cJSON_AddItemToObject(out, "unaccounted_time", un)) {
        ok = add_ms(un, "ms", unaccounted) && add_raw_float(un, "pct", pct_of(unaccounted, total));
        un = NULL;
    } else {
        ok = 0;
    }
    if (ok)
        ok = detailed_file ? cJSON_AddStringToObject(out, "detailed_file", detailed_file) != NULL
                           : cJSON_AddNullToObject(out, "detailed_file") != NULL;
    if (ok && strict && p->has_strict) {
        const cv_perf_strict *s = &p->strict;
        double inf_over = s->instrumented_inference_ms - s->baseline_ms;
        /* Parents other than model_load and tokenize (their rounded ms), minus the baseline. */
        double cv_ops = sum;
        for (int i = p->first_root; i >= 0; i = p->nodes[i].next_sibling)
            if (strcmp(p->nodes[i].name, "model_load") == 0 ||
                strcmp(p->nodes[i].name, "tokenize") == 0)
                cv_ops -= cv_round_decimals(parent_ms(p, &p->nodes[i]), 2);
        double cv_over = cv_ops - s->baseline_ms;
        int has_base = s->baseline_ms != 0.0;
        ok = add_ms(out, "original_model_load_ms", s->original_model_load_ms) &&
             add_ms(out, "warmup_ms", s->warmup_ms) && add_ms(out, "baseline_ms", s->baseline_ms) &&
             add_ms(out, "instrumented_inference_ms", s->instrumented_inference_ms) &&
             add_ms(out, "inference_overhead_ms", inf_over) &&
             add_ms(out, "inference_overhead_pct",
                    has_base ? 100.0 * inf_over / s->baseline_ms : 0.0) &&
             add_ms(out, "corevital_overhead_ms", cv_over) &&
             add_ms(out, "corevital_overhead_pct",
                    has_base ? 100.0 * cv_over / s->baseline_ms : 0.0);
    }
    cJSON_Delete(parents);
    cJSON_Delete(un);
    if (!ok) {
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

/* Add `item` under `name`, or under "name#1", "name#2", ... when a sibling already took it. */
static int add_unique(cJSON *obj, const char *name, cJSON *item) {
    char key[CV_PERF_NAME_MAX + 16];
    snprintf(key, sizeof key, "%s", name);
    for (int k = 1; cJSON_GetObjectItemCaseSensitive(obj, key); k++)
        snprintf(key, sizeof key, "%s#%d", name, k);
    return cJSON_AddItemToObject(obj, key, item);
}

static cJSON *node_json(const cv_perf *p, const perf_node *nd, double ms, double total, int depth) {
    cJSON *o = cJSON_CreateObject();
    int ok = o && add_ms(o, "ms", ms) && add_raw_float(o, "pct", pct_of(ms, total));
    if (ok && nd->n_samples > 0) {
        cJSON *ps = cJSON_CreateObject();
        ok = ps && cJSON_AddItemToObject(o, "per_step", ps);
        if (!ok) cJSON_Delete(ps);
        ok = ok && cJSON_AddNumberToObject(ps, "count", (double)nd->n_samples) &&
             add_ms(ps, "min_ms", nd->s_min) && add_ms(ps, "max_ms", nd->s_max) &&
             add_ms(ps, "avg_ms", nd->s_sum / (double)nd->n_samples);
    }
    if (ok && nd->first_child >= 0 && depth < CV_PERF_MAX_DEPTH) {
        cJSON *ch = cJSON_CreateObject();
        ok = ch && cJSON_AddItemToObject(o, "children", ch);
        if (!ok) cJSON_Delete(ch);
        for (int c = nd->first_child; ok && c >= 0; c = p->nodes[c].next_sibling) {
            const perf_node *cn = &p->nodes[c];
            cJSON *cj = node_json(p, cn, cn->dur_ms, total, depth + 1);
            ok = cj && add_unique(ch, cn->name, cj);
            if (!ok) cJSON_Delete(cj);
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cv_perf_detailed_json(const cv_perf *p, const char *trace_id) {
    const double total = total_ms(p);
    cJSON *out = cJSON_CreateObject();
    cJSON *bd = cJSON_CreateObject();
    int ok = out && bd && add_ms(out, "total_wall_time_ms", total) &&
             cJSON_AddItemToObject(out, "breakdown", bd);
    if (!ok) cJSON_Delete(bd);
    for (int i = p->first_root; ok && i >= 0; i = p->nodes[i].next_sibling) {
        const perf_node *nd = &p->nodes[i];
        cJSON *nj = node_json(p, nd, parent_ms(p, nd), total, 1);
        ok = nj && add_unique(bd, nd->name, nj);
        if (!ok) cJSON_Delete(nj);
    }
    if (ok) {
        char id8[9];
        snprintf(id8, sizeof id8, "%s", trace_id ? trace_id : "");
        ok = cJSON_AddStringToObject(out, "trace_id", id8) != NULL;
    }
    if (!ok) {
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

cv_status cv_perf_detailed_path(const char *trace_path, char *out, size_t out_size, cv_error *err) {
    static const char suffix[] = "_performance_detailed.json";
    size_t n = strlen(trace_path);
    if (n >= 5 && strcmp(trace_path + n - 5, ".json") == 0) n -= 5;
    if (n == 0) return cv_fail(err, CV_ERR_CONFIG, "perf: empty trace path '%s'", trace_path);
    if (n + sizeof suffix > out_size)
        return cv_fail(err, CV_ERR_IO, "perf: detailed file path too long for '%s'", trace_path);
    memcpy(out, trace_path, n);
    memcpy(out + n, suffix, sizeof suffix);
    return CV_OK;
}

/* ---- the detailed file: Python json.dump(indent=2, ensure_ascii=False) layout ---- */

static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        default:
            if (*c < 0x20)
                fprintf(f, "\\u%04x", *c);
            else
                fputc(*c, f);
        }
    }
    fputc('"', f);
}

static void put_value(FILE *f, const cJSON *j, int depth) {
    if (cJSON_IsRaw(j)) {
        fputs(j->valuestring, f);
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0) {
            fprintf(f, "%lld", (long long)d);
        } else {
            char buf[40];
            cv_format_double(d, buf, sizeof buf);
            fputs(buf, f);
        }
    } else if (cJSON_IsString(j)) {
        put_string(f, j->valuestring);
    } else if (cJSON_IsTrue(j) || cJSON_IsFalse(j)) {
        fputs(cJSON_IsTrue(j) ? "true" : "false", f);
    } else if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        int obj = cJSON_IsObject(j);
        if (!j->child) {
            fputs(obj ? "{}" : "[]", f);
            return;
        }
        fputc(obj ? '{' : '[', f);
        for (const cJSON *c = j->child; c; c = c->next) {
            fprintf(f, "%s\n%*s", c == j->child ? "" : ",", 2 * (depth + 1), "");
            if (obj) {
                put_string(f, c->string ? c->string : "");
                fputs(": ", f);
            }
            put_value(f, c, depth + 1);
        }
        fprintf(f, "\n%*s%c", 2 * depth, "", obj ? '}' : ']');
    } else {
        fputs("null", f);
    }
}

static cv_status write_json_file(const char *path, const cJSON *j, cv_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return cv_fail(err, CV_ERR_IO, "perf: cannot write %s: %s", path, strerror(errno));
    put_value(f, j, 0);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return cv_fail(err, CV_ERR_IO, "perf: error writing %s: %s", path, strerror(errno));
    return CV_OK;
}

cv_status cv_perf_attach(cv_perf *p, cv_report *rep, const char *trace_path, cv_error *err) {
    cv_perf_mark_end(p, 0);
    char detailed[4096] = "";
    if (p->mode != CV_PERF_SUMMARY) {
        const char *tp = trace_path ? trace_path : rep->run_config.sink.target;
        if (!tp)
            return cv_fail(err, CV_ERR_CONFIG,
                           "perf: no trace path to name the detailed file after (%s mode)",
                           cv_perf_mode_name(p->mode));
        cv_status st = cv_perf_detailed_path(tp, detailed, sizeof detailed, err);
        if (st != CV_OK) return st;
        char *slash = strrchr(detailed, '/');
        if (slash && slash != detailed) {
            *slash = '\0';
            st = cv_mkdir_p(detailed, err);
            *slash = '/';
            if (st != CV_OK) return st;
        }
        cJSON *dj = cv_perf_detailed_json(p, rep->trace_id);
        if (!dj) return cv_fail(err, CV_ERR_NOMEM, "out of memory building the perf breakdown");
        st = write_json_file(detailed, dj, err);
        cJSON_Delete(dj);
        if (st != CV_OK) return st;
        CV_INFO("Performance detailed written to %s", detailed);
    }
    cJSON *sum = cv_perf_summary_json(p, detailed[0] ? detailed : NULL);
    if (!sum) return cv_fail(err, CV_ERR_NOMEM, "out of memory building the perf summary");
    if (!rep->extensions && !(rep->extensions = cJSON_CreateObject())) {
        cJSON_Delete(sum);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(rep->extensions, "performance");
    if (!cJSON_AddItemToObject(rep->extensions, "performance", sum)) {
        cJSON_Delete(sum);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    return CV_OK;
}
