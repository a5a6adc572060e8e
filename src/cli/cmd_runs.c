/* cmd_runs.c — `corevital runs ls|show|export|merge`: the run store (store.h) from the command
 * line. The store is --store PATH, else store.path from the configuration (configs/default.yaml,
 * COREVITAL_STORE_PATH). Exit codes: 0 ok; 1 runtime failure (no such run, an ambiguous id
 * prefix, a corrupt row, an I/O error); 2 usage error (bad option or value, no store given, a
 * store file that is missing or not a CoreVital store). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/cli.h"
#include "corevital/config.h"
#include "corevital/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void runs_help(FILE *f) {
    fputs(
        "usage: corevital runs ls [--store PATH] [--model M] [--since T] [--limit N]\n"
        "       corevital runs show ID [--store PATH]\n"
        "       corevital runs export ID [--store PATH] [-o FILE]\n"
        "       corevital runs merge A.db B.db ... -o C.db\n"
        "\n"
        "The run store: a SQLite file that run --store / store.path records every run in.\n"
        "\n"
        "  ls       the runs, newest first: id (first 8 of the trace id), time, model, prompt and\n"
        "           generated tokens, elapsed ms, risk, health flags, prompt\n"
        "           --model M   only this model (its hf_id or directory, as given to run)\n"
        "           --since T   only runs since T: 30m, 2h, 1d, 1w ago, or an ISO date / time\n"
        "                       in UTC (2026-01-31, 2026-01-31T12:00:00Z)\n"
        "           --limit N   at most N runs\n"
        "  show     one run's columns and steps; ID may be a unique prefix of the trace id\n"
        "  export   the run's trace, byte-identical to the file run wrote (stdout or -o FILE)\n"
        "  merge    copy the runs of several stores (e.g. one per shard) into C.db; a trace id\n"
        "           already in C.db is kept\n"
        "\n"
        "  --store PATH   the store (default: store.path from the configuration)\n"
        "\n"
        "Exit codes: 0 ok, 1 no such run / ambiguous prefix / I/O failure, 2 usage error\n"
        "(including a missing store or a file that is not a CoreVital store).\n",
        f);
}

typedef struct {
    const char *store, *model, *since, *limit, *out;
    const char *pos[256];
    int n_pos;
    int help;
} runs_args;

static int parse(int argc, char **argv, runs_args *a, cv_error *err) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            a->help = 1;
            return 0;
        }
        const char **dst = strcmp(arg, "--store") == 0                                ? &a->store
                           : strcmp(arg, "--model") == 0                              ? &a->model
                           : strcmp(arg, "--since") == 0                              ? &a->since
                           : strcmp(arg, "--limit") == 0                              ? &a->limit
                           : (strcmp(arg, "-o") == 0 || strcmp(arg, "--output") == 0) ? &a->out
                                                                                      : NULL;
        if (dst) {
            if (i + 1 >= argc)
                return cv_fail(err, CV_ERR_USAGE, "argument %s: expected one argument", arg), -1;
            *dst = argv[++i];
        } else if (arg[0] == '-' && arg[1]) {
            return cv_fail(err, CV_ERR_USAGE, "unrecognized arguments: %s", arg), -1;
        } else {
            if (a->n_pos == (int)(sizeof a->pos / sizeof a->pos[0]))
                return cv_fail(err, CV_ERR_USAGE, "too many arguments"), -1;
            a->pos[a->n_pos++] = arg;
        }
    }
    return 0;
}

/* The store path: --store, else store.path of the configuration. */
static int store_path(const runs_args *a, char *buf, size_t n, cv_error *err) {
    if (a->store) {
        snprintf(buf, n, "%s", a->store);
        return 0;
    }
    cv_config cfg;
    if (cv_config_load(&cfg, NULL, NULL, err) != CV_OK) return -1;
    int ok = cfg.store.path != NULL;
    if (ok) snprintf(buf, n, "%s", cfg.store.path);
    cv_config_free(&cfg);
    if (!ok)
        cv_fail(err, CV_ERR_USAGE,
                "no store given: use --store PATH (or store.path in the configuration, "
                "COREVITAL_STORE_PATH)");
    return ok ? 0 : -1;
}

static int fail(const cv_error *err, int rc) {
    fprintf(stderr, "error: %s\n", err->msg);
    return rc;
}

static int exit_of(const cv_error *err) {
    return err->code == CV_ERR_USAGE ? CV_EXIT_USAGE : CV_EXIT_RUNTIME;
}

static int write_all(FILE *f, const char *data, size_t n) {
    return fwrite(data, 1, n, f) == n && fflush(f) == 0 ? 0 : -1;
}

int cv_cmd_runs(int argc, char **argv) {
    cv_error err = {CV_OK, ""};
    runs_args a;
    if (parse(argc, argv, &a, &err) != 0) return fail(&err, CV_EXIT_USAGE);
    if (a.help || a.n_pos == 0) {
        runs_help(a.help ? stdout : stderr);
        return a.help ? CV_EXIT_OK : CV_EXIT_USAGE;
    }
    const char *sub = a.pos[0];
    int is_ls = strcmp(sub, "ls") == 0, is_show = strcmp(sub, "show") == 0;
    int is_export = strcmp(sub, "export") == 0, is_merge = strcmp(sub, "merge") == 0;
    if (!is_ls && !is_show && !is_export && !is_merge) {
        fprintf(stderr,
                "error: invalid choice: '%s' (choose from 'ls', 'show', 'export', 'merge')\n", sub);
        return CV_EXIT_USAGE;
    }
    if (!is_ls && (a.model || a.since || a.limit)) {
        fprintf(stderr, "error: --model, --since and --limit are options of runs ls\n");
        return CV_EXIT_USAGE;
    }
    if (is_merge) {
        if (a.n_pos < 2 || !a.out) {
            fprintf(stderr, "error: usage: corevital runs merge A.db B.db ... -o C.db\n");
            return CV_EXIT_USAGE;
        }
        if (a.store) {
            fprintf(stderr, "error: runs merge takes its stores as arguments, not --store\n");
            return CV_EXIT_USAGE;
        }
        size_t added;
        cv_status st = cv_store_merge(a.out, a.pos + 1, (size_t)(a.n_pos - 1), &added, &err);
        if (st != CV_OK)
            return fail(&err,
                        st == CV_ERR_IO || st == CV_ERR_FORMAT ? CV_EXIT_USAGE : CV_EXIT_RUNTIME);
        printf("merged %zu run(s) from %d store(s) into %s\n", added, a.n_pos - 1, a.out);
        return CV_EXIT_OK;
    }
    if (is_ls ? a.n_pos != 1 : a.n_pos != 2) {
        fprintf(stderr, "error: usage: corevital runs %s%s [--store PATH]%s\n", sub,
                is_ls ? "" : " ID", is_export ? " [-o FILE]" : "");
        return CV_EXIT_USAGE;
    }
    if (a.out && !is_export) {
        fprintf(stderr, "error: -o is an option of runs export and runs merge\n");
        return CV_EXIT_USAGE;
    }
    cv_store_query q = {a.model, NULL, 0};
    char since[21];
    if (a.since) {
        if (cv_store_parse_since(a.since, time(NULL), since) != 0) {
            fprintf(stderr,
                    "error: argument --since: invalid value: '%s' (e.g. 30m, 2h, 1d, 1w, "
                    "2026-01-31 or 2026-01-31T12:00:00Z)\n",
                    a.since);
            return CV_EXIT_USAGE;
        }
        q.since_utc = since;
    }
    if (a.limit) {
        char *end;
        errno = 0;
        long v = strtol(a.limit, &end, 10);
        if (!*a.limit || *end || v < 1 || errno) {
            fprintf(stderr, "error: argument --limit: invalid value: '%s' (an integer >= 1)\n",
                    a.limit);
            return CV_EXIT_USAGE;
        }
        q.limit = v;
    }
    char path[4096];
    if (store_path(&a, path, sizeof path, &err) != 0) return fail(&err, CV_EXIT_USAGE);
    cv_store *s;
    if (cv_store_open(path, 0, &s, &err) != CV_OK) return fail(&err, CV_EXIT_USAGE);
    int rc = CV_EXIT_OK;
    char id[37];
    if (is_ls) {
        size_t n;
        if (cv_store_list(s, &q, stdout, &n, &err) != CV_OK)
            rc = fail(&err, CV_EXIT_RUNTIME);
        else if (n == 0)
            fprintf(stderr, "no runs in %s match\n", path);
    } else if (cv_store_resolve(s, a.pos[1], id, &err) != CV_OK) {
        rc = fail(&err, exit_of(&err));
    } else if (is_show) {
        if (cv_store_show(s, id, stdout, &err) != CV_OK) rc = fail(&err, CV_EXIT_RUNTIME);
    } else {
        char *json;
        size_t len;
        if (cv_store_export(s, id, &json, &len, &err) != CV_OK) {
            rc = fail(&err, CV_EXIT_RUNTIME);
        } else {
            FILE *f = a.out ? fopen(a.out, "wb") : stdout;
            if (!f || write_all(f, json, len) != 0) {
                fprintf(stderr, "error: cannot write %s: %s\n", a.out ? a.out : "stdout",
                        strerror(errno));
                rc = CV_EXIT_RUNTIME;
            }
            if (f && f != stdout && fclose(f) != 0 && rc == CV_EXIT_OK) {
                fprintf(stderr, "error: cannot write %s: %s\n", a.out, strerror(errno));
                rc = CV_EXIT_RUNTIME;
            }
            free(json);
        }
    }
    fflush(stdout);
    cv_store_close(s);
    return rc;
}
