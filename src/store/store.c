/* store.c — the SQLite run store (store.h): schema, one transaction per run, the queries behind
 * `corevital runs`, and merging stores written by separate shards.
 *
 * The store is fed the trace file's bytes, not the report struct: what is stored (and exported)
 * is exactly what the local sink wrote, and the columns come from the same JSON any other reader
 * sees. Every statement is prepared with bound parameters; nothing from a trace or the command
 * line is pasted into SQL. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/store.h"
#include "corevital/report.h" /* cv_utc_timestamp */

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define STORE_SCHEMA_VERSION "1"
#define BUSY_TIMEOUT_MS      60000

struct cv_store {
    sqlite3 *db;
    char path[1024];
};

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS runs ("
    "  trace_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, model TEXT, revision TEXT,"
    "  architecture TEXT, dtype TEXT, device TEXT, quantization TEXT, prompt_hash TEXT,"
    "  prompt_text TEXT, output_text TEXT, prompt_tokens INTEGER, generated_tokens INTEGER,"
    "  elapsed_ms INTEGER, warnings INTEGER, risk REAL, flags TEXT, health_flags TEXT,"
    "  trace_path TEXT, stored_at TEXT);"
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);"
    "CREATE INDEX IF NOT EXISTS runs_model ON runs (model, created_at);"
    "CREATE INDEX IF NOT EXISTS runs_prompt_hash ON runs (prompt_hash);"
    "CREATE INDEX IF NOT EXISTS runs_risk ON runs (risk);"
    "CREATE TABLE IF NOT EXISTS steps ("
    "  trace_id TEXT NOT NULL, step INTEGER NOT NULL, token_id INTEGER, token_text TEXT,"
    "  entropy REAL, margin REAL, entropy_bits REAL, perplexity REAL, surprisal_bits REAL,"
    "  top_k_margin REAL, topk_mass REAL, cos_prev REAL,"
    "  PRIMARY KEY (trace_id, step)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS traces ("
    "  trace_id TEXT PRIMARY KEY, json_len INTEGER NOT NULL, json_gz BLOB NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES ('schema_version', '" STORE_SCHEMA_VERSION "');";

static cv_status db_fail(cv_store *s, cv_status code, const char *what, cv_error *err) {
    return cv_fail(err, code, "store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static cv_status exec(cv_store *s, const char *sql, const char *what, cv_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) == SQLITE_OK) return CV_OK;
    cv_status st = cv_fail(err, CV_ERR_IO, "store %s: %s: %s", s->path, what,
                           msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return st;
}

/* A file that holds a runs table of ours. */
static cv_status check_is_store(cv_store *s, cv_error *err) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &q,
                           NULL) != SQLITE_OK)
        return cv_fail(err, CV_ERR_FORMAT, "%s is not a CoreVital run store (%s)", s->path,
                       sqlite3_errmsg(s->db));
    int rc = sqlite3_step(q);
    const char *v = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
    cv_status st = CV_OK;
    if (!v)
        st = cv_fail(err, CV_ERR_FORMAT, "%s is not a CoreVital run store (no schema version)",
                     s->path);
    else if (strcmp(v, STORE_SCHEMA_VERSION) != 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: store schema %s, this build reads schema %s", s->path,
                     v, STORE_SCHEMA_VERSION);
    sqlite3_finalize(q);
    return st;
}

cv_status cv_store_open(const char *path, int create, cv_store **out, cv_error *err) {
    *out = NULL;
    if (!create && !cv_is_file(path))
        return cv_fail(err, CV_ERR_IO, "store %s does not exist", path);
    cv_store *s = calloc(1, sizeof *s);
    if (!s) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
    cv_status st;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        st = s->db ? db_fail(s, CV_ERR_IO, "cannot open", err)
                   : cv_fail(err, CV_ERR_NOMEM, "store %s: out of memory", path);
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* WAL: readers never block the writer and writers queue on the busy timeout. Switching a
     * database to WAL is persistent and needs a moment of exclusive access, which the busy
     * timeout covers when several processes open a new store together. */
    /* The switch can also answer SQLITE_BUSY at once, without the busy handler (two connections
     * escalating their locks together: SQLite refuses one rather than deadlock), so it is retried
     * here for up to the busy timeout. */
    int rc = SQLITE_BUSY;
    for (int waited = 0; rc == SQLITE_BUSY && waited <= BUSY_TIMEOUT_MS; waited += 10) {
        if (waited) sqlite3_sleep(10);
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &q, NULL) != SQLITE_OK) {
            st = db_fail(s, CV_ERR_FORMAT, "not a SQLite database", err);
            goto fail;
        }
        rc = sqlite3_step(q);
        sqlite3_finalize(q);
    }
    if (rc != SQLITE_ROW) {
        st = db_fail(s, CV_ERR_FORMAT, "cannot use as a run store", err);
        goto fail;
    }
    if ((st = exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF", "pragma", err)))
        goto fail;
    if (create) {
        if ((st = exec(s, "BEGIN IMMEDIATE", "begin", err))) goto fail;
        if ((st = exec(s, k_schema, "create the schema", err))) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if ((st = exec(s, "COMMIT", "commit the schema", err))) goto fail;
    }
    if ((st = check_is_store(s, err)) != CV_OK) goto fail;
    *out = s;
    return CV_OK;
fail:
    cv_store_close(s);
    return st;
}

void cv_store_close(cv_store *s) {
    if (!s) return;
    sqlite3_close(s->db);
    free(s);
}

/* ---- reading a trace ---- */

static const cJSON *jget(const cJSON *o, const char *path) { /* "a.b.c" */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

static void bind_str(sqlite3_stmt *q, int i, const cJSON *v) {
    if (cJSON_IsString(v))
        sqlite3_bind_text(q, i, v->valuestring, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, i);
}

static void bind_num(sqlite3_stmt *q, int i, const cJSON *v) {
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
        sqlite3_bind_double(q, i, v->valuedouble);
    else
        sqlite3_bind_null(q, i);
}

static void bind_int(sqlite3_stmt *q, int i, const cJSON *v) {
    if (cJSON_IsNumber(v))
        sqlite3_bind_int64(q, i, (sqlite3_int64)v->valuedouble);
    else
        sqlite3_bind_null(q, i);
}

/* The health flags that fired: true booleans, and high_entropy_steps when > 0. */
static void fired_flags(const cJSON *flags, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (const cJSON *f = flags ? flags->child : NULL; f; f = f->next) {
        int fired = cJSON_IsTrue(f) || (strcmp(f->string, "high_entropy_steps") == 0 &&
                                        cJSON_IsNumber(f) && f->valuedouble > 0);
        if (!fired) continue;
        int w = snprintf(buf + used, n - used, "%s%s", used ? "," : "", f->string);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

static cv_status insert_run(cv_store *s, const cJSON *doc, const char *trace_path, cv_error *err) {
    static const char sql[] =
        "INSERT OR REPLACE INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
        "?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)";
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "prepare", err);
    const cJSON *ext = jget(doc, "extensions");
    bind_str(q, 1, jget(doc, "trace_id"));
    bind_str(q, 2, jget(doc, "created_at_utc"));
    bind_str(q, 3, jget(doc, "model.hf_id"));
    bind_str(q, 4, jget(doc, "model.revision"));
    bind_str(q, 5, jget(doc, "model.architecture"));
    bind_str(q, 6, jget(doc, "model.dtype"));
    bind_str(q, 7, jget(doc, "model.device"));
    const cJSON *qm = jget(doc, "model.quantization.method");
    if (cJSON_IsTrue(jget(doc, "model.quantization.enabled")) && cJSON_IsString(qm))
        bind_str(q, 8, qm);
    else
        sqlite3_bind_text(q, 8, "none", -1, SQLITE_STATIC);
    bind_str(q, 9, jget(ext, "fingerprint.prompt_hash"));
    bind_str(q, 10, jget(doc, "prompt.text"));
    bind_str(q, 11, jget(doc, "generated.output_text"));
    bind_int(q, 12, jget(doc, "summary.prompt_tokens"));
    bind_int(q, 13, jget(doc, "summary.generated_tokens"));
    bind_int(q, 14, jget(doc, "summary.elapsed_ms"));
    sqlite3_bind_int(q, 15, cJSON_GetArraySize(jget(doc, "warnings")));
    bind_num(q, 16, jget(ext, "risk.risk_score"));
    const cJSON *hf = jget(ext, "health_flags");
    char flags[512], *hf_text = hf ? cJSON_PrintUnformatted(hf) : NULL;
    fired_flags(hf, flags, sizeof flags);
    sqlite3_bind_text(q, 17, flags, -1, SQLITE_TRANSIENT);
    if (hf_text)
        sqlite3_bind_text(q, 18, hf_text, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, 18);
    free(hf_text);
    sqlite3_bind_text(q, 19, trace_path ? trace_path : "", -1, SQLITE_TRANSIENT);
    char now[21];
    cv_utc_timestamp(now);
    sqlite3_bind_text(q, 20, now, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? CV_OK : db_fail(s, CV_ERR_IO, "insert the run", err);
}

static cv_status insert_steps(cv_store *s, const cJSON *doc, const char *id, cv_error *err) {
    static const char sql[] = "INSERT OR REPLACE INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                              "?8, ?9, ?10, ?11, ?12)";
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "prepare", err);
    /* replacing a run replaces all of its steps, even when the new trace has fewer */
    sqlite3_stmt *d;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM steps WHERE trace_id = ?1", -1, &d, NULL) !=
        SQLITE_OK) {
        sqlite3_finalize(q);
        return db_fail(s, CV_ERR_IO, "prepare", err);
    }
    sqlite3_bind_text(d, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(d);
    sqlite3_finalize(d);
    if (rc != SQLITE_DONE) {
        sqlite3_finalize(q);
        return db_fail(s, CV_ERR_IO, "replace the steps", err);
    }
    static const char *const health[] = {"entropy_bits", "perplexity", "surprisal_bits",
                                         "top_k_margin", "topk_mass",  "cos_prev"};
    for (const cJSON *t = jget(doc, "timeline") ? jget(doc, "timeline")->child : NULL; t;
         t = t->next) {
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        bind_int(q, 2, jget(t, "step_index"));
        bind_int(q, 3, jget(t, "token.token_id"));
        bind_str(q, 4, jget(t, "token.token_text"));
        bind_num(q, 5, jget(t, "logits_summary.entropy"));
        bind_num(q, 6, jget(t, "logits_summary.top1_top2_margin"));
        const cJSON *h = jget(t, "extensions.health");
        for (int k = 0; k < 6; k++)
            bind_num(q, 7 + k, cJSON_GetObjectItemCaseSensitive(h, health[k]));
        if (sqlite3_step(q) != SQLITE_DONE) {
            cv_status st = db_fail(s, CV_ERR_IO, "insert a step", err);
            sqlite3_finalize(q);
            return st;
        }
    }
    sqlite3_finalize(q);
    return CV_OK;
}

static cv_status insert_blob(cv_store *s, const char *id, const char *json, size_t len,
                             cv_error *err) {
    unsigned char *gz;
    size_t gz_n;
    cv_status st = cv_gzip(json, len, &gz, &gz_n, err);
    if (st != CV_OK) return st;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO traces VALUES (?1, ?2, ?3)", -1, &q,
                           NULL) != SQLITE_OK) {
        free(gz);
        return db_fail(s, CV_ERR_IO, "prepare", err);
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)len);
    sqlite3_bind_blob64(q, 3, gz, gz_n, free); /* sqlite frees gz */
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? CV_OK : db_fail(s, CV_ERR_IO, "insert the trace", err);
}

cv_status cv_store_add_trace(cv_store *s, const char *json, size_t len, const char *trace_path,
                             cv_error *err) {
    cJSON *doc = cJSON_ParseWithLength(json, len);
    if (!doc) return cv_fail(err, CV_ERR_FORMAT, "store: %s is not valid JSON", trace_path);
    const cJSON *tid = jget(doc, "trace_id");
    if (!cJSON_IsString(tid) || strlen(tid->valuestring) != 36 ||
        !cJSON_IsString(jget(doc, "created_at_utc"))) {
        cJSON_Delete(doc);
        return cv_fail(err, CV_ERR_FORMAT, "store: %s has no trace_id / created_at_utc",
                       trace_path);
    }
    char id[37];
    snprintf(id, sizeof id, "%s", tid->valuestring);
    /* IMMEDIATE takes the write lock now (waiting on the busy timeout), so two writers never
     * deadlock upgrading read locks; a crash before COMMIT leaves the store as it was. */
    cv_status st = exec(s, "BEGIN IMMEDIATE", "begin", err);
    if (st == CV_OK) st = insert_run(s, doc, trace_path, err);
    if (st == CV_OK) st = insert_steps(s, doc, id, err);
    if (st == CV_OK) st = insert_blob(s, id, json, len, err);
    if (st == CV_OK) st = exec(s, "COMMIT", "commit", err);
    if (st != CV_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    cJSON_Delete(doc);
    return st;
}

/* ---- queries ---- */

static const char *col_text(sqlite3_stmt *q, int i) {
    const unsigned char *t = sqlite3_column_text(q, i);
    return t ? (const char *)t : "";
}

/* One line of at most n display characters of s: newlines shown as spaces, cut at a UTF-8
 * character boundary with "..." when longer. */
static void one_line(const char *s, size_t n, char *out, size_t outsz) {
    size_t o = 0, chars = 0;
    for (const char *p = s; *p && o + 8 < outsz; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c & 0xC0) != 0x80) {
            if (chars == n) {
                memcpy(out + o, "...", 3);
                o += 3;
                break;
            }
            chars++;
        }
        out[o++] = (c == '\n' || c == '\r' || c == '\t') ? ' ' : (char)c;
    }
    out[o] = '\0';
}

cv_status cv_store_list(cv_store *s, const cv_store_query *qr, FILE *out, size_t *n_out,
                        cv_error *err) {
    static const char sql[] =
        "SELECT trace_id, created_at, model, prompt_tokens, generated_tokens, elapsed_ms, risk, "
        "flags, prompt_text FROM runs WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR "
        "created_at >= ?2) ORDER BY created_at DESC, trace_id LIMIT ?3";
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "list", err);
    if (qr->model) sqlite3_bind_text(q, 1, qr->model, -1, SQLITE_STATIC);
    if (qr->since_utc) sqlite3_bind_text(q, 2, qr->since_utc, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, qr->limit > 0 ? qr->limit : -1);
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n++ == 0)
            fprintf(out, "%-8s  %-20s  %-24s  %5s  %5s  %7s  %5s  %-20s  %s\n", "id", "created",
                    "model", "in", "out", "ms", "risk", "flags", "prompt");
        char model[64], prompt[200], risk[16] = "-";
        one_line(col_text(q, 2), 24, model, sizeof model);
        one_line(col_text(q, 8), 40, prompt, sizeof prompt);
        if (sqlite3_column_type(q, 6) != SQLITE_NULL)
            snprintf(risk, sizeof risk, "%.2f", sqlite3_column_double(q, 6));
        const char *flags = col_text(q, 7);
        fprintf(out, "%.8s  %-20s  %-24s  %5lld  %5lld  %7lld  %5s  %-20s  %s\n", col_text(q, 0),
                col_text(q, 1), model, (long long)sqlite3_column_int64(q, 3),
                (long long)sqlite3_column_int64(q, 4), (long long)sqlite3_column_int64(q, 5), risk,
                *flags ? flags : "-", prompt);
    }
    cv_status st = rc == SQLITE_DONE ? CV_OK : db_fail(s, CV_ERR_IO, "list", err);
    sqlite3_finalize(q);
    if (n_out) *n_out = n;
    return st;
}

cv_status cv_store_resolve(cv_store *s, const char *prefix, char id[37], cv_error *err) {
    size_t n = strlen(prefix);
    if (n == 0 || n > 36 || strspn(prefix, "0123456789abcdefABCDEF-") != n)
        return cv_fail(err, CV_ERR_USAGE, "'%s' is not a trace id or a prefix of one", prefix);
    sqlite3_stmt *q;
    /* a prefix range on the primary key (uses its index, no LIKE escaping needed) */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT trace_id FROM runs WHERE trace_id >= ?1 AND "
                           "substr(trace_id, 1, ?2) = ?1 ORDER BY trace_id LIMIT 2",
                           -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "look up", err);
    char low[37];
    for (size_t i = 0; i <= n; i++) /* trace ids are lower-case hex */
        low[i] = (char)(prefix[i] >= 'A' && prefix[i] <= 'F' ? prefix[i] + 32 : prefix[i]);
    sqlite3_bind_text(q, 1, low, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, (int)n);
    int found = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (found++ == 0) snprintf(id, 37, "%s", col_text(q, 0));
    }
    sqlite3_finalize(q);
    if (found == 0) return cv_fail(err, CV_ERR_RUNTIME, "no run %s in store %s", prefix, s->path);
    if (found > 1)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "run id prefix %s is ambiguous in store %s (give more characters)", prefix,
                       s->path);
    return CV_OK;
}

cv_status cv_store_show(cv_store *s, const char *id, FILE *out, cv_error *err) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT * FROM runs WHERE trace_id = ?1", -1, &q, NULL) !=
        SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "show", err);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return cv_fail(err, CV_ERR_RUNTIME, "no run %s in store %s", id, s->path);
    }
    for (int i = 0; i < sqlite3_column_count(q); i++) {
        const char *name = sqlite3_column_name(q, i);
        if (sqlite3_column_type(q, i) == SQLITE_NULL)
            fprintf(out, "%-17s null\n", name);
        else if (sqlite3_column_type(q, i) == SQLITE_FLOAT)
            fprintf(out, "%-17s %.6g\n", name, sqlite3_column_double(q, i));
        else
            fprintf(out, "%-17s %s\n", name, col_text(q, i));
    }
    sqlite3_finalize(q);
    if (sqlite3_prepare_v2(s->db,
                           "SELECT step, token_id, token_text, entropy, margin, surprisal_bits, "
                           "top_k_margin FROM steps WHERE trace_id = ?1 ORDER BY step",
                           -1, &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "show", err);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    fprintf(out, "\n%5s  %7s  %-16s  %8s  %8s  %9s\n", "step", "token", "text", "entropy", "margin",
            "surprisal");
    while (sqlite3_step(q) == SQLITE_ROW) {
        char text[80];
        one_line(col_text(q, 2), 16, text, sizeof text);
        char e[3][24];
        for (int k = 0; k < 3; k++) {
            int c = k == 2 ? 5 : 3 + k;
            if (sqlite3_column_type(q, c) == SQLITE_NULL)
                snprintf(e[k], sizeof e[k], "-");
            else
                snprintf(e[k], sizeof e[k], "%.4f", sqlite3_column_double(q, c));
        }
        fprintf(out, "%5lld  %7lld  %-16s  %8s  %8s  %9s\n", (long long)sqlite3_column_int64(q, 0),
                (long long)sqlite3_column_int64(q, 1), text, e[0], e[1], e[2]);
    }
    sqlite3_finalize(q);
    return CV_OK;
}

cv_status cv_store_export(cv_store *s, const char *id, char **json, size_t *len, cv_error *err) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT json_len, json_gz FROM traces WHERE trace_id = ?1", -1,
                           &q, NULL) != SQLITE_OK)
        return db_fail(s, CV_ERR_IO, "export", err);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    cv_status st;
    if (sqlite3_step(q) != SQLITE_ROW)
        st = cv_fail(err, CV_ERR_RUNTIME, "run %s has no stored trace in %s", id, s->path);
    else
        st = cv_gunzip(sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1),
                       (size_t)sqlite3_column_int64(q, 0), json, len, err);
    sqlite3_finalize(q);
    return st;
}

cv_status cv_store_merge(const char *dst, const char *const *srcs, size_t n, size_t *added,
                         cv_error *err) {
    *added = 0;
    for (size_t i = 0; i < n; i++) { /* every source is a store, checked before dst changes */
        cv_store *src;
        cv_status st = cv_store_open(srcs[i], 0, &src, err);
        cv_store_close(src);
        if (st != CV_OK) return st;
    }
    cv_store *d;
    cv_status st = cv_store_open(dst, 1, &d, err);
    if (st != CV_OK) return st;
    for (size_t i = 0; i < n && st == CV_OK; i++) {
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(d->db, "ATTACH DATABASE ?1 AS src", -1, &q, NULL) != SQLITE_OK) {
            st = db_fail(d, CV_ERR_IO, "attach", err);
            break;
        }
        sqlite3_bind_text(q, 1, srcs[i], -1, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) {
            st =
                cv_fail(err, CV_ERR_IO, "cannot read store %s: %s", srcs[i], sqlite3_errmsg(d->db));
            break;
        }
        /* runs first: only the trace ids dst lacks, then their steps and traces */
        st = exec(d,
                  "BEGIN IMMEDIATE;"
                  "CREATE TEMP TABLE IF NOT EXISTS merge_new (trace_id TEXT PRIMARY KEY);"
                  "DELETE FROM merge_new;"
                  "INSERT INTO merge_new SELECT trace_id FROM src.runs WHERE trace_id NOT IN "
                  "(SELECT trace_id FROM main.runs);"
                  "INSERT INTO main.runs SELECT * FROM src.runs WHERE trace_id IN merge_new;"
                  "INSERT OR IGNORE INTO main.steps SELECT * FROM src.steps WHERE trace_id IN "
                  "merge_new;"
                  "INSERT OR IGNORE INTO main.traces SELECT * FROM src.traces WHERE trace_id "
                  "IN merge_new;",
                  srcs[i], err);
        if (st == CV_OK) {
            sqlite3_stmt *c;
            if (sqlite3_prepare_v2(d->db, "SELECT count(*) FROM merge_new", -1, &c, NULL) ==
                    SQLITE_OK &&
                sqlite3_step(c) == SQLITE_ROW)
                *added += (size_t)sqlite3_column_int64(c, 0);
            sqlite3_finalize(c);
            st = exec(d, "COMMIT", "commit", err);
        }
        if (st != CV_OK) sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_exec(d->db, "DETACH DATABASE src", NULL, NULL, NULL);
    }
    cv_store_close(d);
    return st;
}

/* ---- --since ---- */

int cv_store_parse_since(const char *s, time_t now, char out[21]) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end != s && end[0] && !end[1] && v >= 0 && errno == 0 && s[0] != '-' && s[0] != '+') {
        long long unit = end[0] == 's'   ? 1
                         : end[0] == 'm' ? 60
                         : end[0] == 'h' ? 3600
                         : end[0] == 'd' ? 86400
                         : end[0] == 'w' ? 604800
                                         : 0;
        if (!unit || v > 100000LL * 86400 / unit) return -1;
        time_t t = now - (time_t)(v * unit);
        struct tm tm;
        if (!gmtime_r(&t, &tm)) return -1;
        strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
        return 0;
    }
    int y, mo, d, h = 0, mi = 0, se = 0, used = 0;
    size_t n = strlen(s);
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) return -1;
    if (n > 10) {
        int u2 = 0;
        if ((s[10] != 'T' && s[10] != ' ') ||
            sscanf(s + 11, "%2d:%2d:%2d%n", &h, &mi, &se, &u2) != 3 || u2 != 8)
            return -1;
        const char *rest = s + 19;
        if (*rest == 'Z') rest++;
        if (*rest) return -1;
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 60 || h < 0 || mi < 0 || se < 0)
        return -1;
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, se);
    memcpy(out, buf, 21); /* the ranges above make it exactly 20 characters */
    return 0;
}

/* ---- gzip ---- */

cv_status cv_gzip(const void *in, size_t n, unsigned char **out, size_t *out_n, cv_error *err) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return cv_fail(err, CV_ERR_NOMEM, "zlib: cannot start compression");
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&z);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory compressing a trace");
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END || n > 0xFFFFFFFFu) {
        free(buf);
        return cv_fail(err, CV_ERR_RUNTIME, "zlib: compression failed (%d)", rc);
    }
    *out = buf;
    *out_n = got;
    return CV_OK;
}

cv_status cv_gunzip(const void *in, size_t n, size_t expect, char **out, size_t *out_n,
                    cv_error *err) {
    if (expect > ((size_t)1 << 32))
        return cv_fail(err, CV_ERR_FORMAT, "stored trace length %zu is implausible", expect);
    char *buf = malloc(expect + 1);
    if (!buf) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK) {
        free(buf);
        return cv_fail(err, CV_ERR_NOMEM, "zlib: cannot start decompression");
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)expect;
    int rc = inflate(&z, Z_FINISH);
    size_t got = expect - z.avail_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || got != expect) {
        free(buf);
        return cv_fail(err, CV_ERR_FORMAT, "stored trace is corrupt (zlib %d, %zu of %zu bytes)",
                       rc, got, expect);
    }
    buf[got] = '\0';
    *out = buf;
    *out_n = got;
    return CV_OK;
}
