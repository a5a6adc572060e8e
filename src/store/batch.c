/* batch.c — the prompt file of `run --prompts` / `calibrate`, shard selection and the batch
 * index (batch.h). The prompt file is hostile input like every other parser's: each line is
 * checked and a problem names the file and line before any model is loaded. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/batch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cv_batch_free(cv_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].id);
        free(b->items[i].prompt);
    }
    free(b->items);
    memset(b, 0, sizeof *b);
}

static int id_ok(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > CV_BATCH_ID_MAX || id[0] == '.') return 0;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static cv_status push(cv_batch *b, size_t *cap, cv_batch_item *it, cv_error *err) {
    if (b->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        cv_batch_item *p = realloc(b->items, nc * sizeof *p);
        if (!p) return cv_fail(err, CV_ERR_NOMEM, "out of memory reading the prompts");
        b->items = p;
        *cap = nc;
    }
    b->items[b->n++] = *it;
    return CV_OK;
}

/* One JSONL object into it (strings malloc'd). */
static cv_status parse_object(const char *line, size_t len, const char *name, size_t lineno,
                              cv_batch_item *it, cv_error *err) {
    cJSON *o = cJSON_ParseWithLength(line, len);
    cv_status st = CV_OK;
    if (!cJSON_IsObject(o)) {
        st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: not a JSON object (JSONL: one object per line)",
                     name, lineno);
        goto done;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *mnt = cJSON_GetObjectItemCaseSensitive(o, "max_new_tokens");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (!cJSON_IsString(p)) {
        st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: \"prompt\" is missing or not a string", name,
                     lineno);
        goto done;
    }
    if (id && !cJSON_IsNull(id)) {
        char buf[64];
        if (cJSON_IsString(id)) {
            it->id = strdup(id->valuestring);
        } else if (cJSON_IsNumber(id) && id->valuedouble == floor(id->valuedouble) &&
                   fabs(id->valuedouble) < 9e15) {
            snprintf(buf, sizeof buf, "%.0f", id->valuedouble);
            it->id = strdup(buf);
        } else {
            st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: \"id\" must be a string or an integer", name,
                         lineno);
            goto done;
        }
        if (!it->id) {
            st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    if (mnt && !cJSON_IsNull(mnt)) {
        if (!cJSON_IsNumber(mnt) || mnt->valuedouble != floor(mnt->valuedouble) ||
            mnt->valuedouble < 1 || mnt->valuedouble > 1e9) {
            st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: \"max_new_tokens\" must be an integer >= 1",
                         name, lineno);
            goto done;
        }
        it->max_new_tokens = (int)mnt->valuedouble;
    }
    if (seed && !cJSON_IsNull(seed)) {
        if (!cJSON_IsNumber(seed) || seed->valuedouble != floor(seed->valuedouble) ||
            fabs(seed->valuedouble) > 9e15) {
            st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: \"seed\" must be an integer", name, lineno);
            goto done;
        }
        it->has_seed = 1;
        it->seed = (int64_t)seed->valuedouble;
    }
    it->prompt = strdup(p->valuestring);
    if (!it->prompt) st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
done:
    cJSON_Delete(o);
    return st;
}

/* Sorted copy of the ids, to find duplicates in n log n. */
static int cmp_item_id(const void *a, const void *b) {
    return strcmp((*(cv_batch_item *const *)a)->id, (*(cv_batch_item *const *)b)->id);
}

cv_status cv_batch_parse(const char *text, size_t len, const char *name, cv_batch *b,
                         cv_error *err) {
    memset(b, 0, sizeof *b);
    size_t cap = 0, lineno = 0;
    const char *p = text, *end = text + len;
    int decided = 0;
    cv_status st = CV_OK;
    while (p < end && st == CV_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r') n--; /* CRLF files */
        if (memchr(p, '\0', n)) {
            st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: NUL byte in the prompt file", name, lineno);
            break;
        }
        size_t lead = 0;
        while (lead < n && (p[lead] == ' ' || p[lead] == '\t')) lead++;
        if (lead < n) {
            if (!decided) {
                b->jsonl = p[lead] == '{';
                decided = 1;
            }
            cv_batch_item it;
            memset(&it, 0, sizeof it);
            it.position = b->n;
            it.line = lineno;
            if (b->jsonl) {
                st = parse_object(p, n, name, lineno, &it, err);
            } else {
                it.prompt = malloc(n + 1);
                if (!it.prompt)
                    st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
                else {
                    memcpy(it.prompt, p, n);
                    it.prompt[n] = '\0';
                }
            }
            if (st == CV_OK && !it.id) {
                char buf[32];
                snprintf(buf, sizeof buf, "%06zu", it.position);
                if (!(it.id = strdup(buf))) st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
            }
            if (st == CV_OK && !id_ok(it.id))
                st = cv_fail(err, CV_ERR_FORMAT,
                             "%s:%zu: id '%.64s' is not usable as a file name (1-%d characters "
                             "of A-Z a-z 0-9 . _ -, not starting with '.')",
                             name, lineno, it.id, CV_BATCH_ID_MAX);
            if (st == CV_OK) st = push(b, &cap, &it, err);
            if (st != CV_OK) {
                free(it.id);
                free(it.prompt);
            }
        }
        p = nl ? nl + 1 : end;
    }
    if (st == CV_OK && b->n == 0) st = cv_fail(err, CV_ERR_FORMAT, "%s: no prompts", name);
    if (st == CV_OK) {
        cv_batch_item **sorted = malloc(b->n * sizeof *sorted);
        if (!sorted) {
            st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < b->n; i++) sorted[i] = &b->items[i];
            qsort(sorted, b->n, sizeof *sorted, cmp_item_id);
            for (size_t i = 1; i < b->n && st == CV_OK; i++)
                if (strcmp(sorted[i - 1]->id, sorted[i]->id) == 0) {
                    size_t l1 = sorted[i - 1]->line, l2 = sorted[i]->line;
                    st = cv_fail(err, CV_ERR_FORMAT, "%s:%zu: id '%s' repeats line %zu", name,
                                 l1 > l2 ? l1 : l2, sorted[i]->id, l1 > l2 ? l2 : l1);
                }
            free(sorted);
        }
    }
    if (st != CV_OK) cv_batch_free(b);
    return st;
}

cv_status cv_batch_load(const char *path, cv_batch *b, cv_error *err) {
    memset(b, 0, sizeof *b);
    if (strcmp(path, "-") != 0) {
        char *text;
        size_t len;
        cv_status st = cv_read_file(path, &text, &len, err);
        if (st != CV_OK) return cv_error_prefix(err, "--prompts");
        st = cv_batch_parse(text, len, path, b, err);
        free(text);
        return st;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    if (!text) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    for (;;) {
        if (len == cap) {
            char *t = cap < ((size_t)1 << 34) ? realloc(text, cap * 2) : NULL;
            if (!t) {
                free(text);
                return cv_fail(err, CV_ERR_NOMEM, "out of memory reading the prompts from stdin");
            }
            text = t;
            cap *= 2;
        }
        size_t got = fread(text + len, 1, cap - len, stdin);
        len += got;
        if (got == 0) break;
    }
    cv_status st = ferror(stdin) ? cv_fail(err, CV_ERR_IO, "cannot read the prompts from stdin")
                                 : cv_batch_parse(text, len, "<stdin>", b, err);
    free(text);
    return st;
}

int cv_shard_parse(const char *s, int *k, int *n) {
    char *e1, *e2;
    errno = 0;
    long a = strtol(s, &e1, 10);
    if (e1 == s || *e1 != '/' || s[0] == '-' || s[0] == '+') return -1;
    long c = strtol(e1 + 1, &e2, 10);
    if (e2 == e1 + 1 || *e2 || e1[1] == '-' || e1[1] == '+' || errno) return -1;
    if (c < 1 || c > 1000000 || a < 1 || a > c) return -1;
    *k = (int)a;
    *n = (int)c;
    return 0;
}

/* ---- the index ---- */

cv_status cv_index_append(const char *path, const cv_index_record *r, cv_error *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
#define STR_OR_NULL(k, v) ((v) ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k))
    STR_OR_NULL("id", r->id);
    cJSON_AddNumberToObject(o, "position", (double)r->position);
    STR_OR_NULL("status", r->status);
    STR_OR_NULL("trace", r->trace);
    STR_OR_NULL("trace_id", r->trace_id);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)r->prompt_tokens);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)r->generated_tokens);
    cJSON_AddNumberToObject(o, "elapsed_ms", (double)r->elapsed_ms);
    if (r->has_risk && isfinite(r->risk))
        cJSON_AddNumberToObject(o, "risk", r->risk);
    else
        cJSON_AddNullToObject(o, "risk");
    STR_OR_NULL("error", r->error);
#undef STR_OR_NULL
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the NUL: the line is written with one write(2) */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    cv_status st = CV_OK;
    if (fd < 0) {
        st = cv_fail(err, CV_ERR_IO, "cannot open the index %s: %s", path, strerror(errno));
    } else {
        ssize_t w;
        do w = write(fd, line, n + 1);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)(n + 1) || fsync(fd) != 0)
            st = cv_fail(err, CV_ERR_IO, "cannot write the index %s: %s", path,
                         w < 0 ? strerror(errno) : "short write");
        close(fd);
    }
    free(line);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cv_index_has(char *const *ids, size_t n, const char *id) {
    return n && bsearch(&id, ids, n, sizeof *ids, cmp_str) != NULL;
}

void cv_index_free(char **ids, size_t n) {
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

typedef struct {
    char *id;
    size_t order; /* line order: the last record of an id wins */
    int done;
} index_rec;

static int cmp_rec(const void *a, const void *b) {
    const index_rec *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

cv_status cv_index_load_done(const char *path, char ***ids_out, size_t *n_out, size_t *n_bad,
                             cv_error *err) {
    *ids_out = NULL;
    *n_out = 0;
    *n_bad = 0;
    if (!cv_is_file(path)) return CV_OK;
    char *text;
    size_t len;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st != CV_OK) return st;
    index_rec *recs = NULL;
    size_t n = 0, cap = 0;
    for (char *p = text, *end = text + len; p < end && st == CV_OK;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        if (le > p) {
            cJSON *o = cJSON_ParseWithLength(p, (size_t)(le - p));
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
            const cJSON *status = cJSON_GetObjectItemCaseSensitive(o, "status");
            if (!cJSON_IsString(id) || !cJSON_IsString(status)) {
                (*n_bad)++; /* e.g. a line cut short by a crash */
            } else {
                if (n == cap) {
                    size_t nc = cap ? cap * 2 : 256;
                    index_rec *nr = realloc(recs, nc * sizeof *nr);
                    if (nr) {
                        recs = nr;
                        cap = nc;
                    } else {
                        st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
                    }
                }
                if (st == CV_OK) {
                    recs[n].id = strdup(id->valuestring);
                    recs[n].order = n;
                    recs[n].done = strcmp(status->valuestring, "ok") == 0 ||
                                   strcmp(status->valuestring, "error") == 0;
                    if (!recs[n].id)
                        st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
                    else
                        n++;
                }
            }
            cJSON_Delete(o);
        }
        p = nl ? nl + 1 : end;
    }
    free(text);
    if (n) qsort(recs, n, sizeof *recs, cmp_rec); /* by id, then line order */
    char **out = st == CV_OK ? malloc((n ? n : 1) * sizeof *out) : NULL;
    if (st == CV_OK && !out) st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int last = i + 1 == n || strcmp(recs[i].id, recs[i + 1].id) != 0;
        if (st == CV_OK && last && recs[i].done)
            out[k++] = recs[i].id; /* already in sorted order */
        else
            free(recs[i].id);
    }
    free(recs);
    if (st != CV_OK) {
        free(out);
        return st;
    }
    *ids_out = out;
    *n_out = k;
    return CV_OK;
}
