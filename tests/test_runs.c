/* test_runs.c — many runs (issue 18): batches through one session (`run --prompts`) with a
 * failing prompt, the index, --resume, shards that are disjoint and cover the file, the SQLite
 * store (ls / show / export byte-identical / merge, real files in a temp dir), two processes
 * writing one store at once, SIGINT in a batch, and calibration: a run on the calibration
 * prompts stays near the baseline, a model with one layer's weights scaled up is flagged at that
 * layer, and a baseline of another model is refused. The parsers (prompt files, --shard,
 * --since) are checked directly. The binary is $CV_TEST_BIN (set by make test) or ./corevital. */
#define _DEFAULT_SOURCE
#include "corevital/batch.h"
#include "corevital/report.h"
#include "corevital/safetensors.h"
#include "corevital/store.h"
#include "corevital/synth.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *bin(void) {
    const char *b = getenv("CV_TEST_BIN");
    return b && *b ? b : "./corevital";
}

/* Run the binary with args (NULL-terminated); stdout to out_path (NULL: /dev/null), stderr to
 * /dev/null. Returns the exit code. */
static pid_t spawn(const char *const *args, const char *out_path) {
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[64];
        int n = 0;
        argv[n++] = bin();
        for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
        argv[n] = NULL;
        if (!freopen(out_path ? out_path : "/dev/null", "w", stdout) ||
            !freopen("/dev/null", "w", stderr))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}
static int wait_rc(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
static int run_to(const char *const *args, const char *out_path) {
    return wait_rc(spawn(args, out_path));
}
static int run(const char *const *args) {
    return run_to(args, NULL);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path, size_t *n) {
    char *t;
    size_t len;
    cv_error err = {0};
    ck_assert_msg(cv_read_file(path, &t, &len, &err) == CV_OK, "%s", err.msg);
    if (n) *n = len;
    return t;
}

/* The index as cJSON objects, one per line (all lines must parse). */
static cJSON *load_index(const char *path) {
    char *t = slurp(path, NULL);
    cJSON *arr = cJSON_CreateArray();
    for (char *save = NULL, *line = strtok_r(t, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        ck_assert_msg(o != NULL, "index line does not parse: %s", line);
        cJSON_AddItemToArray(arr, o);
    }
    free(t);
    return arr;
}

static const cJSON *index_find(const cJSON *idx, const char *id) {
    const cJSON *found = NULL; /* the last line for the id wins */
    for (const cJSON *o = idx->child; o; o = o->next)
        if (strcmp(cJSON_GetObjectItem(o, "id")->valuestring, id) == 0) found = o;
    return found;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void check_valid_trace(const char *path) {
    char *t = slurp(path, NULL);
    cv_error err = {0};
    ck_assert_msg(cv_trace_validate(t, &err) == CV_OK, "%s: %s", path, err.msg);
    free(t);
}

static long long sql_count(const char *db, const char *sql) {
    sqlite3 *h;
    ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    ck_assert_msg(sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(h));
    ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
    long long n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return n;
}

static const char *GPT2 = "tests/fixtures/gpt2-tiny";

/* ---- parsers ---- */

START_TEST(test_prompt_file_parsing) {
    cv_batch b;
    cv_error err = {0};
    const char *jl =
        "{\"prompt\": \"a\", \"id\": \"x1\"}\n\n{\"prompt\": \"b\", \"max_new_tokens\": "
        "3, \"seed\": 9, \"id\": 17}\r\n{\"prompt\": \"c\"}\n";
    ck_assert_int_eq(cv_batch_parse(jl, strlen(jl), "p.jsonl", &b, &err), CV_OK);
    ck_assert(b.jsonl);
    ck_assert_int_eq(b.n, 3);
    ck_assert_str_eq(b.items[0].id, "x1");
    ck_assert_str_eq(b.items[1].id, "17");
    ck_assert_int_eq(b.items[1].max_new_tokens, 3);
    ck_assert(b.items[1].has_seed && b.items[1].seed == 9);
    ck_assert_str_eq(b.items[2].id, "000002"); /* position, not line */
    ck_assert_int_eq(b.items[2].line, 4);
    cv_batch_free(&b);
    const char *txt = "first prompt\n\n  second {x}\nthird\n";
    ck_assert_int_eq(cv_batch_parse(txt, strlen(txt), "p.txt", &b, &err), CV_OK);
    ck_assert(!b.jsonl);
    ck_assert_int_eq(b.n, 3);
    ck_assert_str_eq(b.items[1].prompt, "  second {x}");
    cv_batch_free(&b);
    /* errors name the file and line */
    const char *bad[] = {"{\"prompt\": 1}\n",
                         "{\"prompt\": \"a\"}\n[1]\n",
                         "{\"prompt\": \"a\", \"id\": \"../x\"}\n",
                         "{\"prompt\": \"a\", \"id\": \"d\"}\n{\"prompt\": \"b\", \"id\": \"d\"}\n",
                         "{\"prompt\": \"a\", \"max_new_tokens\": 0}\n",
                         "\n\n"};
    const char *want[] = {"p:1", "p:2", "p:1", "p:2", "p:1", "no prompts"};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_ne(cv_batch_parse(bad[i], strlen(bad[i]), "p", &b, &err), CV_OK);
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "case %d: %s", i, err.msg);
    }
    int k, n;
    ck_assert_int_eq(cv_shard_parse("2/8", &k, &n), 0);
    ck_assert(k == 2 && n == 8);
    const char *bad_shards[] = {"0/2", "3/2", "1/0", "a/b", "1/", "/2", "1/2x", "-1/2", ""};
    for (size_t i = 0; i < sizeof bad_shards / sizeof *bad_shards; i++)
        ck_assert_int_eq(cv_shard_parse(bad_shards[i], &k, &n), -1);
    char since[21];
    time_t now = 86400 * 365; /* 1971-01-01T00:00:00Z */
    ck_assert_int_eq(cv_store_parse_since("1d", now, since), 0);
    ck_assert_str_eq(since, "1970-12-31T00:00:00Z");
    ck_assert_int_eq(cv_store_parse_since("2h", now, since), 0);
    ck_assert_str_eq(since, "1970-12-31T22:00:00Z");
    ck_assert_int_eq(cv_store_parse_since("2026-01-31", now, since), 0);
    ck_assert_str_eq(since, "2026-01-31T00:00:00Z");
    ck_assert_int_eq(cv_store_parse_since("2026-01-31T12:30:00Z", now, since), 0);
    ck_assert_str_eq(since, "2026-01-31T12:30:00Z");
    const char *bad_since[] = {"",         "1x", "d", "-1d", "2026-13-01", "2026-01-31T25:00:00",
                               "yesterday"};
    for (size_t i = 0; i < sizeof bad_since / sizeof *bad_since; i++)
        ck_assert_msg(cv_store_parse_since(bad_since[i], now, since) == -1, "%s", bad_since[i]);
}
END_TEST

/* ---- batch ---- */

START_TEST(test_batch_with_failing_prompt) {
    const char *tmp = tu_tmpdir("runs-batch");
    char prompts[600], out[600], idx[700], db[600], trace[800];
    snprintf(prompts, sizeof prompts, "%s/p.jsonl", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(idx, sizeof idx, "%s/index.jsonl", out);
    snprintf(db, sizeof db, "%s/runs.db", tmp);
    /* "long" exceeds gpt2-tiny's 128 positions: it fails, the batch goes on */
    char *text = malloc(20000);
    strcpy(text, "{\"id\": \"a\", \"prompt\": \"Hello world\"}\n"
                 "{\"id\": \"b\", \"prompt\": \"The quick brown fox\", \"max_new_tokens\": 3, "
                 "\"seed\": 7}\n{\"id\": \"long\", \"prompt\": \"");
    for (int i = 0; i < 1000; i++) strcat(text, "word ");
    strcat(text, "\"}\n{\"prompt\": \"Another one\"}\n");
    write_text(prompts, text);
    free(text);
    const char *args[] = {"run", "--model", GPT2, "--prompts",        prompts, "--out",
                          out,   "--store", db,   "--max_new_tokens", "4",     NULL};
    ck_assert_int_eq(run(args), 3); /* finished, with a failed prompt */
    cJSON *ix = load_index(idx);
    ck_assert_int_eq(cJSON_GetArraySize(ix), 4);
    const char *ok_ids[] = {"a", "b", "000003"};
    const int want_gen[] = {4, 3, 4};
    for (int i = 0; i < 3; i++) {
        const cJSON *r = index_find(ix, ok_ids[i]);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(jstr(r, "status"), "ok");
        snprintf(trace, sizeof trace, "%s/%s.json", out, ok_ids[i]);
        ck_assert_str_eq(jstr(r, "trace"), trace);
        check_valid_trace(trace);
        ck_assert_int_eq(cJSON_GetObjectItem(r, "generated_tokens")->valueint, want_gen[i]);
        ck_assert_int_ge(cJSON_GetObjectItem(r, "prompt_tokens")->valueint, 1);
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(r, "elapsed_ms")));
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(r, "risk")));
        ck_assert_int_eq(strlen(jstr(r, "trace_id")), 36);
        ck_assert(cJSON_IsNull(cJSON_GetObjectItem(r, "error")));
    }
    const cJSON *bad = index_find(ix, "long");
    ck_assert_str_eq(jstr(bad, "status"), "error");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(bad, "trace")));
    ck_assert_msg(strstr(jstr(bad, "error"), "context") != NULL, "%s", jstr(bad, "error"));
    snprintf(trace, sizeof trace, "%s/long.json", out);
    ck_assert(!cv_is_file(trace));
    /* per-prompt options reach the trace: b used seed 7 and 3 tokens */
    snprintf(trace, sizeof trace, "%s/b.json", out);
    char *bt = slurp(trace, NULL);
    cJSON *bdoc = cJSON_Parse(bt);
    free(bt);
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(bdoc, "run_config"), "seed")->valueint,
                     7);
    cJSON_Delete(bdoc);
    /* the store has the three runs and their steps */
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM runs"), 3);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM steps"), 4 + 3 + 4);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM traces"), 3);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM runs WHERE risk IS NOT NULL AND "
                                   "prompt_hash IS NOT NULL AND dtype = 'float32'"),
                     3);
    /* the same out again without --resume would mix two batches: refused */
    ck_assert_int_eq(run(args), 2);
    cJSON_Delete(ix);
    tu_rmtree(tmp);
}
END_TEST

START_TEST(test_batch_usage_errors) {
    const char *tmp = tu_tmpdir("runs-usage");
    char prompts[600], bad[600], out[600];
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    write_text(prompts, "one\ntwo\n");
    write_text(bad, "{\"prompt\": \"ok\"}\n{\"prompt\": \n");
    const char *a1[] = {"run", "--model", GPT2, "--prompts", bad, "--out", out, NULL};
    const char *a2[] = {"run", "--model", GPT2, "--prompts", prompts, "--shard", "0/2", NULL};
    const char *a3[] = {"run", "--model", GPT2, "--prompts", prompts, "--out", "x.json", NULL};
    const char *a4[] = {"run", "--model", GPT2, "--prompt", "x", "--prompts", prompts, NULL};
    const char *a5[] = {"run", "--model", GPT2, "--prompt", "x", "--resume", NULL};
    const char *a6[] = {"run", "--model", GPT2, "--prompts", "/nonexistent/p.txt", NULL};
    const char *a7[] = {"calibrate", "--model", GPT2, "--prompts", prompts, NULL}; /* no -o */
    const char *a8[] = {"run", "--model", GPT2, "--prompt", "x", "--calibration", prompts, NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5, a6, a7, a8};
    for (int i = 0; i < 8; i++) ck_assert_msg(run(all[i]) == 2, "case %d", i + 1);
    ck_assert(!cv_is_dir(out)); /* nothing was run */
    tu_rmtree(tmp);
}
END_TEST

START_TEST(test_resume_and_shards) {
    const char *tmp = tu_tmpdir("runs-shard");
    char prompts[600];
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    const int N = 10, S = 3;
    char text[2000] = "";
    for (int i = 0; i < N; i++) {
        char line[64];
        snprintf(line, sizeof line, "%sprompt number %d\n", i == 4 ? "\n" : "", i);
        strcat(text, line); /* a blank line does not count as a position */
    }
    write_text(prompts, text);
    /* each shard: its own out dir (index) and its own store */
    int seen[10] = {0};
    char dbs[3][600];
    for (int k = 1; k <= S; k++) {
        char out[600], shard[16], idx[700];
        snprintf(out, sizeof out, "%s/shard%d", tmp, k);
        snprintf(dbs[k - 1], sizeof dbs[k - 1], "%s/shard%d.db", tmp, k);
        snprintf(shard, sizeof shard, "%d/%d", k, S);
        const char *args[] = {"run", "--model", GPT2, "--prompts", prompts,    "--shard",
                              shard, "--out",   out,  "--store",   dbs[k - 1], "--max_new_tokens",
                              "2",   NULL};
        ck_assert_int_eq(run(args), 0);
        snprintf(idx, sizeof idx, "%s/index.jsonl", out);
        cJSON *ix = load_index(idx);
        for (const cJSON *r = ix->child; r; r = r->next) {
            int p = cJSON_GetObjectItem(r, "position")->valueint;
            ck_assert_int_eq(p % S, k - 1);
            char want_id[16];
            snprintf(want_id, sizeof want_id, "%06d", p);
            ck_assert_str_eq(jstr(r, "id"), want_id);
            seen[p]++;
        }
        ck_assert_int_eq(sql_count(dbs[k - 1], "SELECT count(*) FROM runs"),
                         cJSON_GetArraySize(ix));
        cJSON_Delete(ix);
    }
    for (int p = 0; p < N; p++)
        ck_assert_msg(seen[p] == 1, "position %d seen %d times", p, seen[p]);
    /* merging the shards' stores gives every run once; merging again adds nothing */
    char merged[600];
    snprintf(merged, sizeof merged, "%s/all.db", tmp);
    const char *m[] = {"runs", "merge", dbs[0], dbs[1], dbs[2], "-o", merged, NULL};
    ck_assert_int_eq(run(m), 0);
    ck_assert_int_eq(sql_count(merged, "SELECT count(*) FROM runs"), N);
    ck_assert_int_eq(sql_count(merged, "SELECT count(*) FROM steps"), 2 * N);
    ck_assert_int_eq(run(m), 0);
    ck_assert_int_eq(sql_count(merged, "SELECT count(*) FROM runs"), N);
    const char *mbad[] = {"runs", "merge", dbs[0], prompts, "-o", merged, NULL};
    ck_assert_int_eq(run(mbad), 2); /* not a store */

    /* --resume: shard 1's index, then the whole file: only the others run */
    char out1[600], idx1[700];
    snprintf(out1, sizeof out1, "%s/shard1", tmp);
    snprintf(idx1, sizeof idx1, "%s/index.jsonl", out1);
    const char *res[] = {"run",      "--model",          GPT2, "--prompts", prompts, "--out", out1,
                         "--resume", "--max_new_tokens", "2",  NULL};
    ck_assert_int_eq(run(res), 0);
    cJSON *ix = load_index(idx1);
    ck_assert_int_eq(cJSON_GetArraySize(ix), N); /* each id exactly once */
    for (int p = 0; p < N; p++) {
        char id[16];
        snprintf(id, sizeof id, "%06d", p);
        ck_assert_ptr_nonnull(index_find(ix, id));
    }
    cJSON_Delete(ix);
    ck_assert_int_eq(run(res), 0); /* nothing left: a no-op */
    ix = load_index(idx1);
    ck_assert_int_eq(cJSON_GetArraySize(ix), N);
    cJSON_Delete(ix);
    tu_rmtree(tmp);
}
END_TEST

/* ---- the store ---- */

START_TEST(test_store_commands) {
    const char *tmp = tu_tmpdir("runs-store");
    char db[600], trace[600], lsout[600], exp[600], showout[600];
    snprintf(db, sizeof db, "%s/s.db", tmp);
    snprintf(trace, sizeof trace, "%s/t.json", tmp);
    snprintf(lsout, sizeof lsout, "%s/ls.txt", tmp);
    snprintf(exp, sizeof exp, "%s/export.json", tmp);
    snprintf(showout, sizeof showout, "%s/show.txt", tmp);
    const char *r1[] = {"run",         "--model",          GPT2, "--prompt",
                        "Hello store", "--max_new_tokens", "3",  "--out",
                        trace,         "--store",          db,   NULL};
    ck_assert_int_eq(run(r1), 0);
    char *t = slurp(trace, NULL);
    cJSON *doc = cJSON_Parse(t);
    char id[37];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(doc, "trace_id")->valuestring);
    cJSON_Delete(doc);
    free(t);
    /* ls: the run, with filters */
    const char *ls[] = {"runs", "ls", "--store", db, NULL};
    ck_assert_int_eq(run_to(ls, lsout), 0);
    char *l = slurp(lsout, NULL);
    char id8[9];
    snprintf(id8, sizeof id8, "%.8s", id);
    ck_assert_msg(strstr(l, id8) && strstr(l, "Hello store"), "%s", l);
    free(l);
    const char *ls2[] = {"runs", "ls", "--store", db, "--model", "other", NULL};
    ck_assert_int_eq(run_to(ls2, lsout), 0);
    l = slurp(lsout, NULL);
    ck_assert_ptr_null(strstr(l, id8));
    free(l);
    const char *ls3[] = {"runs",    "ls", "--store", db,   "--since", "1h",
                         "--limit", "1",  "--model", GPT2, NULL};
    ck_assert_int_eq(run_to(ls3, lsout), 0);
    l = slurp(lsout, NULL);
    ck_assert_ptr_nonnull(strstr(l, id8));
    free(l);
    const char *ls4[] = {"runs", "ls", "--store", db, "--since", "2999-01-01", NULL};
    ck_assert_int_eq(run_to(ls4, lsout), 0);
    l = slurp(lsout, NULL);
    ck_assert_ptr_null(strstr(l, id8));
    free(l);
    /* show by prefix; export gives the file back byte for byte */
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%.6s", id);
    const char *sh[] = {"runs", "show", prefix, "--store", db, NULL};
    ck_assert_int_eq(run_to(sh, showout), 0);
    l = slurp(showout, NULL);
    ck_assert_msg(strstr(l, id) && strstr(l, "risk") && strstr(l, "prompt_hash"), "%s", l);
    free(l);
    const char *ex[] = {"runs", "export", prefix, "--store", db, NULL};
    ck_assert_int_eq(run_to(ex, exp), 0);
    size_t n1, n2;
    char *a = slurp(trace, &n1), *b = slurp(exp, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert(memcmp(a, b, n1) == 0);
    free(a);
    free(b);
    /* errors: no such run 1, not an id 2, missing store 2, bad --since 2, no store 2 */
    const char *e1[] = {"runs", "show", "ffffffff", "--store", db, NULL};
    const char *e2[] = {"runs", "show", "zz", "--store", db, NULL};
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.db", tmp);
    const char *e3[] = {"runs", "ls", "--store", missing, NULL};
    const char *e4[] = {"runs", "ls", "--store", db, "--since", "soon", NULL};
    const char *e5[] = {"runs", "export", "--store", db, NULL};
    const char *e6[] = {"runs", "frobnicate", NULL};
    ck_assert_int_eq(run(e1), 1);
    ck_assert_int_eq(run(e2), 2);
    ck_assert_int_eq(run(e3), 2);
    ck_assert(!cv_is_file(missing)); /* reading never creates a store */
    ck_assert_int_eq(run(e4), 2);
    ck_assert_int_eq(run(e5), 2);
    ck_assert_int_eq(run(e6), 2);
    ck_assert_int_eq(sql_count(db, "PRAGMA journal_mode") >= 0, 1);
    tu_rmtree(tmp);
}
END_TEST

START_TEST(test_concurrent_writers) {
    const char *tmp = tu_tmpdir("runs-conc");
    char prompts[600], db[600], o1[600], o2[600];
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    snprintf(db, sizeof db, "%s/shared.db", tmp);
    snprintf(o1, sizeof o1, "%s/o1", tmp);
    snprintf(o2, sizeof o2, "%s/o2", tmp);
    char text[4000] = "";
    const int N = 12;
    for (int i = 0; i < N; i++) {
        char line[64];
        snprintf(line, sizeof line, "concurrent prompt %d\n", i);
        strcat(text, line);
    }
    write_text(prompts, text);
    /* two processes, one store, started together (the first one creates it) */
    const char *a1[] = {"run", "--model", GPT2, "--prompts",        prompts, "--out",
                        o1,    "--store", db,   "--max_new_tokens", "3",     NULL};
    const char *a2[] = {"run", "--model", GPT2, "--prompts",        prompts, "--out",
                        o2,    "--store", db,   "--max_new_tokens", "3",     NULL};
    pid_t p1 = spawn(a1, NULL), p2 = spawn(a2, NULL);
    ck_assert_int_eq(wait_rc(p1), 0);
    ck_assert_int_eq(wait_rc(p2), 0);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM runs"), 2 * N);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM traces"), 2 * N);
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM steps"),
                     sql_count(db, "SELECT sum(generated_tokens) FROM runs"));
    ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM pragma_integrity_check WHERE "
                                   "integrity_check = 'ok'"),
                     1);
    tu_rmtree(tmp);
}
END_TEST

/* A random Llama with the llama-tiny fixture's tokenizer (vocab 512). */
static void synth_llama_fixture_tok(const char *dir, const cv_synth_shape *sh) {
    cv_error err = {0};
    ck_assert_msg(cv_synth_llama(dir, sh, &err) == CV_OK, "%s", err.msg);
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char src[800], dst[800];
        snprintf(src, sizeof src, "tests/fixtures/llama-tiny/%s", files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        char *t = slurp(src, NULL);
        write_text(dst, t);
        free(t);
    }
}

START_TEST(test_sigint_in_batch_keeps_index) {
    const char *tmp = tu_tmpdir("runs-int");
    char dir[600], prompts[600], out[600], idx[700];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(idx, sizeof idx, "%s/index.jsonl", out);
    /* an EOS id the model cannot emit and long generations: the signal lands inside a prompt */
    cv_synth_shape sh = {512, 64, 2, 4, 2, 128, 4096, 0, CV_DT_F32, 0.1f, 5, 1, 4000, 0, 0};
    synth_llama_fixture_tok(dir, &sh);
    char text[4000] = "";
    for (int i = 0; i < 40; i++) strcat(text, "a b c d\n");
    write_text(prompts, text);
    const char *args[] = {"run", "--model",       dir, "--prompts",        prompts, "--out",
                          out,   "--temperature", "0", "--max_new_tokens", "3000",  NULL};
    /* Land the signal inside a prompt's generation, not in the trace writing that follows it: a
     * fixed delay from the start depends on how long startup takes. Once the first prompt is
     * indexed the second one starts generating (3000 tokens: a few hundred ms), so signal 50 ms
     * after the index gets its first line. On a loaded host the signal can still land between
     * two prompts (the batch then stops with nothing in progress, and the last entry is "ok"):
     * that case is a valid stop but not the one under test, so the run is repeated (3 tries). */
    cJSON *ix = NULL;
    int n = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        if (ix) cJSON_Delete(ix);
        tu_rmtree(out);
        pid_t pid = spawn(args, NULL);
        for (int waited = 0; waited < 30000; waited += 5) {
            char *t = NULL;
            size_t len;
            cv_error e = {0};
            int ready = cv_read_file(idx, &t, &len, &e) == CV_OK && strchr(t, '\n') != NULL;
            free(t);
            if (ready) break;
            usleep(5000);
        }
        usleep(50000);
        kill(pid, SIGINT);
        ck_assert_int_eq(wait_rc(pid), 130);
        ix = load_index(idx);
        n = cJSON_GetArraySize(ix);
        if (n >= 1 && strcmp(jstr(cJSON_GetArrayItem(ix, n - 1), "status"), "interrupted") == 0)
            break;
    }
    ck_assert_int_ge(n, 1);
    ck_assert_int_lt(n, 40);
    for (const cJSON *r = ix->child; r; r = r->next) { /* every indexed trace is complete */
        ck_assert(strcmp(jstr(r, "status"), "ok") == 0 ||
                  strcmp(jstr(r, "status"), "interrupted") == 0);
        check_valid_trace(jstr(r, "trace"));
    }
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(ix, n - 1), "status"), "interrupted");
    cJSON_Delete(ix);
    /* --resume finishes the rest, the interrupted prompt included */
    const char *res[] = {"run", "--model",       dir, "--prompts",        prompts, "--out",
                         out,   "--temperature", "0", "--max_new_tokens", "5",     "--resume",
                         NULL};
    ck_assert_int_eq(run(res), 0);
    ix = load_index(idx);
    for (int p = 0; p < 40; p++) {
        char id[16];
        snprintf(id, sizeof id, "%06d", p);
        const cJSON *r = index_find(ix, id);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(jstr(r, "status"), "ok");
    }
    cJSON_Delete(ix);
    tu_rmtree(tmp);
}
END_TEST

/* ---- calibration ---- */

static void write_prompt_set(const char *path, int n) {
    static const char *const words[] = {"the", "a",    "cat",   "dog",  "runs", "fast",  "slow",
                                        "red", "blue", "house", "tree", "sky",  "water", "light"};
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    unsigned s = 12345;
    for (int i = 0; i < n; i++) {
        int len = 3 + i % 7;
        for (int w = 0; w < len; w++) {
            s = s * 1103515245u + 12345u;
            fprintf(f, "%s%s", w ? " " : "", words[(s >> 16) % 14]);
        }
        fputc('\n', f);
    }
    fclose(f);
}

/* extensions.calibration of a trace file (owned by *doc). */
static const cJSON *calibration_of(const char *trace, cJSON **doc) {
    char *t = slurp(trace, NULL);
    *doc = cJSON_Parse(t);
    free(t);
    ck_assert_ptr_nonnull(*doc);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(*doc, "extensions"), "calibration");
    ck_assert_msg(c != NULL, "%s has no extensions.calibration", trace);
    return c;
}

static double max_abs_layer_z(const cJSON *cal, int layer) {
    const cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItem(cal, "layers"), layer);
    double m = 0;
    for (const cJSON *z = cJSON_GetObjectItem(l, "z")->child; z; z = z->next)
        if (cJSON_IsNumber(z) && fabs(z->valuedouble) > m) m = fabs(z->valuedouble);
    return m;
}

START_TEST(test_calibration_same_prompts_near_baseline) {
    const char *tmp = tu_tmpdir("runs-cal");
    char prompts[600], base[600], out[600], idx[700];
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    snprintf(base, sizeof base, "%s/baseline.json", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(idx, sizeof idx, "%s/index.jsonl", out);
    write_prompt_set(prompts, 16);
    const char *M = "tests/fixtures/llama-tiny";
    const char *cal[] = {"calibrate", "--model",       M,   "--prompts",        prompts, "-o",
                         base,        "--temperature", "0", "--max_new_tokens", "6",     NULL};
    ck_assert_int_eq(run(cal), 0);
    char *bt = slurp(base, NULL);
    cJSON *b = cJSON_Parse(bt);
    free(bt);
    ck_assert_int_eq(cJSON_GetObjectItem(b, "num_runs")->valueint, 16);
    const cJSON *bm = cJSON_GetObjectItem(b, "model");
    ck_assert_str_eq(jstr(bm, "hf_id"), M);
    ck_assert_int_eq(cJSON_GetObjectItem(bm, "num_layers")->valueint, 2);
    const cJSON *ent = cJSON_GetObjectItem(cJSON_GetObjectItem(b, "step_metrics"), "entropy");
    ck_assert_int_ge(cJSON_GetObjectItem(ent, "count")->valueint, 16);
    ck_assert(cJSON_GetObjectItem(ent, "p5")->valuedouble <=
              cJSON_GetObjectItem(ent, "median")->valuedouble);
    ck_assert(cJSON_GetObjectItem(ent, "median")->valuedouble <=
              cJSON_GetObjectItem(ent, "p95")->valuedouble);
    cJSON_Delete(b);
    /* the same prompts again, compared with the baseline: nothing far from normal */
    const char *run_args[] = {
        "run", "--model",       M,   "--prompts",        prompts, "--out", out, "--calibration",
        base,  "--temperature", "0", "--max_new_tokens", "6",     NULL};
    ck_assert_int_eq(run(run_args), 0);
    cJSON *ix = load_index(idx);
    for (const cJSON *r = ix->child; r; r = r->next) {
        cJSON *doc;
        const cJSON *c = calibration_of(jstr(r, "trace"), &doc);
        ck_assert_str_eq(jstr(c, "baseline_model_id"), M);
        ck_assert_int_eq(cJSON_GetObjectItem(c, "baseline_num_runs")->valueint, 16);
        double d = cJSON_GetObjectItem(c, "divergence_score")->valuedouble;
        ck_assert(d >= 0 && d < 0.5);
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "flagged_layers")), 0);
        for (int j = 0; j < 2; j++)
            ck_assert_msg(max_abs_layer_z(c, j) < 3, "layer %d |z| %g", j, max_abs_layer_z(c, j));
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "per_step")),
                         cJSON_GetArraySize(cJSON_GetObjectItem(doc, "timeline")));
        cJSON_Delete(doc);
    }
    cJSON_Delete(ix);
    /* another model: refused (exit 2), no trace written */
    char other[600];
    snprintf(other, sizeof other, "%s/other.json", tmp);
    const char *wrong[] = {"run", "--model", GPT2,  "--prompt",         "the cat", "--calibration",
                           base,  "--out",   other, "--max_new_tokens", "2",       NULL};
    ck_assert_int_eq(run(wrong), 2);
    ck_assert(!cv_is_file(other));
    char out2[600];
    snprintf(out2, sizeof out2, "%s/out2", tmp);
    const char *wrongb[] = {"run", "--model", GPT2, "--prompts",        prompts, "--calibration",
                            base,  "--out",   out2, "--max_new_tokens", "2",     NULL};
    ck_assert_int_eq(run(wrongb), 2);
    tu_rmtree(tmp);
}
END_TEST

/* Rewrite dir/model.safetensors with every tensor of block `layer` whose name contains one of
 * `which` multiplied by `factor` (f32 weights). */
static void scale_layer(const char *dir, int layer, const char *const *which, size_t n_which,
                        float factor) {
    char path[800], tmp[820];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    cv_st *st;
    cv_error err = {0};
    ck_assert_int_eq(cv_st_open(path, &st, &err), CV_OK);
    size_t n = cv_st_count(st);
    cv_st_write_entry *e = calloc(n, sizeof *e);
    float **bufs = calloc(n, sizeof *bufs);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "model.layers.%d.", layer);
    int scaled = 0;
    for (size_t i = 0; i < n; i++) {
        const cv_st_tensor *t = cv_st_at(st, i);
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        e[i].data = t->data;
        int hit = strncmp(t->name, prefix, strlen(prefix)) == 0;
        int match = 0;
        for (size_t w = 0; w < n_which; w++) match |= strstr(t->name, which[w]) != NULL;
        if (hit && match) {
            ck_assert_int_eq(t->dtype, CV_DT_F32);
            bufs[i] = malloc(t->nbytes);
            memcpy(bufs[i], t->data, t->nbytes);
            for (size_t k = 0; k < t->numel; k++) bufs[i][k] *= factor;
            e[i].data = bufs[i];
            scaled++;
        }
    }
    ck_assert_int_eq(scaled, (int)n_which);
    ck_assert_msg(cv_st_write(tmp, e, n, NULL, &err) == CV_OK, "%s", err.msg);
    cv_st_close(st);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    ck_assert_int_eq(rename(tmp, path), 0);
}

START_TEST(test_calibration_flags_scaled_layer) {
    const char *tmp = tu_tmpdir("runs-cal2");
    char dir[600], prompts[600], base[600], trace[600], stdout_path[600];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    snprintf(prompts, sizeof prompts, "%s/p.txt", tmp);
    snprintf(base, sizeof base, "%s/baseline.json", tmp);
    snprintf(trace, sizeof trace, "%s/t.json", tmp);
    snprintf(stdout_path, sizeof stdout_path, "%s/stdout.txt", tmp);
    cv_synth_shape sh = {512, 64, 4, 4, 2, 128, 256, 0, CV_DT_F32, 0.05f, 11, 1, 2, 0, 0};
    synth_llama_fixture_tok(dir, &sh);
    write_prompt_set(prompts, 16);
    const char *cal[] = {"calibrate", "--model",       dir, "--prompts",        prompts, "-o",
                         base,        "--temperature", "0", "--max_new_tokens", "6",     NULL};
    ck_assert_int_eq(run(cal), 0);
    /* the same checkpoint (same path, same identity) with block 1's output projections x8 */
    const char *which[] = {"self_attn.o_proj.weight", "mlp.down_proj.weight"};
    scale_layer(dir, 1, which, 2, 8.0f);
    const char *r[] = {"run",
                       "--model",
                       dir,
                       "--prompt",
                       "the cat runs fast",
                       "--calibration",
                       base,
                       "--out",
                       trace,
                       "--temperature",
                       "0",
                       "--max_new_tokens",
                       "6",
                       NULL};
    ck_assert_int_eq(run_to(r, stdout_path), 0);
    cJSON *doc;
    const cJSON *c = calibration_of(trace, &doc);
    const cJSON *fl = cJSON_GetObjectItem(c, "flagged_layers");
    ck_assert_int_ge(cJSON_GetArraySize(fl), 1);
    ck_assert_int_eq(cJSON_GetArrayItem(fl, 0)->valueint, 1); /* the first one is layer 1 */
    ck_assert_msg(max_abs_layer_z(c, 0) < 3, "layer 0 |z| %g", max_abs_layer_z(c, 0));
    ck_assert_msg(max_abs_layer_z(c, 1) > 3, "layer 1 |z| %g", max_abs_layer_z(c, 1));
    const cJSON *la = cJSON_GetObjectItem(c, "layer_anomalies");
    ck_assert_msg(strncmp(cJSON_GetArrayItem(la, 0)->valuestring, "Layer 1:", 8) == 0, "%s",
                  cJSON_GetArrayItem(la, 0)->valuestring);
    cJSON_Delete(doc);
    /* the console names it */
    char *so = slurp(stdout_path, NULL);
    ck_assert_msg(strstr(so, "Calibration: divergence") && strstr(so, "outside the baseline"), "%s",
                  so);
    free(so);
    tu_rmtree(tmp);
}
END_TEST

/* Runs are comparable across machines: the same prompt, seed and model give the same trace
 * whatever the thread count (1, 2 or 3), every statistic bit for bit; only the trace id, the
 * times and the output path differ. The model is wide enough (a 534-token prompt of a 256-wide
 * Llama) that every parallel kernel splits its work: norms with hidden statistics, packed
 * matmuls, the tiled prefill attention, and the split-key decode over 4 chunks of keys. */
START_TEST(test_trace_same_for_any_thread_count) {
    const char *tmp = tu_tmpdir("runs-threads");
    char dir[600], out[3][600];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    cv_synth_shape sh = {512, 256, 2, 4, 2, 512, 1024, 0, CV_DT_F32, 0.05f, 11, 1, 4000, 0, 0};
    synth_llama_fixture_tok(dir, &sh);
    char prompt[4000] = "";
    for (int i = 0; i < 100; i++) strcat(prompt, i % 3 ? "the cat sat " : "on a mat ");
    cJSON *doc[3];
    const char *nthreads[3] = {"1", "2", "3"};
    const char *old = getenv("OMP_NUM_THREADS");
    char *saved = old ? strdup(old) : NULL;
    for (int r = 0; r < 3; r++) {
        snprintf(out[r], sizeof out[r], "%s/t%d.json", tmp, r);
        const char *args[] = {"run", "--model", dir,    "--prompt",         prompt, "--seed",
                              "9",   "--out",   out[r], "--max_new_tokens", "24",   NULL};
        setenv("OMP_NUM_THREADS", nthreads[r], 1);
        ck_assert_int_eq(run(args), 0);
        char *t = slurp(out[r], NULL);
        doc[r] = cJSON_Parse(t);
        free(t);
        ck_assert_ptr_nonnull(doc[r]);
        /* what differs by design between two runs */
        cJSON_DeleteItemFromObject(doc[r], "trace_id");
        cJSON_DeleteItemFromObject(doc[r], "created_at_utc");
        cJSON_DeleteItemFromObject(cJSON_GetObjectItem(doc[r], "summary"), "elapsed_ms");
        cJSON *rc = cJSON_GetObjectItem(doc[r], "run_config");
        cJSON_DeleteItemFromObject(cJSON_GetObjectItem(rc, "sink"), "target");
    }
    if (saved)
        setenv("OMP_NUM_THREADS", saved, 1), free(saved);
    else
        unsetenv("OMP_NUM_THREADS");
    const cJSON *tl = cJSON_GetObjectItem(doc[0], "timeline");
    ck_assert_int_eq(cJSON_GetArraySize(tl), 24);
    for (int r = 1; r < 3; r++) {
        char *a = cJSON_PrintUnformatted(doc[0]), *b = cJSON_PrintUnformatted(doc[r]);
        size_t i = 0;
        while (a[i] && a[i] == b[i]) i++;
        ck_assert_msg(cJSON_Compare(doc[0], doc[r], 1),
                      "the trace with %s threads differs from 1 thread's at byte %zu: ...%.80s",
                      nthreads[r], i, a + (i > 40 ? i - 40 : 0));
        free(a), free(b);
    }
    for (int r = 0; r < 3; r++) cJSON_Delete(doc[r]);
    tu_rmtree(tmp);
}
END_TEST

int main(void) {
    Suite *s = suite_create("runs");
    TCase *tc = tcase_create("runs");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_prompt_file_parsing);
    tcase_add_test(tc, test_batch_with_failing_prompt);
    tcase_add_test(tc, test_batch_usage_errors);
    tcase_add_test(tc, test_resume_and_shards);
    tcase_add_test(tc, test_store_commands);
    tcase_add_test(tc, test_concurrent_writers);
    tcase_add_test(tc, test_sigint_in_batch_keeps_index);
    tcase_add_test(tc, test_calibration_same_prompts_near_baseline);
    tcase_add_test(tc, test_calibration_flags_scaled_layer);
    tcase_add_test(tc, test_trace_same_for_any_thread_count);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
