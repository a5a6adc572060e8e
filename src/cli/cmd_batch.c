/* cmd_batch.c — many prompts through one loaded model: `run --prompts FILE` and `calibrate`.
 *
 * The model and tokenizer load once (cv_session_open); each selected prompt is tokenized,
 * generated and finalized into its own report exactly as a single `run` would, written by the
 * same sinks to <out>/<id>.json, recorded in the store when there is one, and appended to the
 * index. A prompt that fails (too long for the context, a tokenizer error) is an index line with
 * its error; the batch goes on and exits 3. Before anything loads, the prompt file, the shard,
 * the index (and --resume), the baseline and the store are checked (exit 2).
 *
 * Interruption: the first SIGINT / SIGTERM lets the prompt in progress finish its current step;
 * its partial trace is written and indexed as "interrupted" (--resume runs it again) and the
 * batch stops (exit 130 / 143). The trace, the store row and the index line of a prompt are
 * written with the signals blocked, so a finished prompt is always complete in all three. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/batch.h"
#include "corevital/calibration.h"
#include "corevital/cli.h"
#include "corevital/generate.h"
#include "corevital/log.h"
#include "corevital/sinks.h"
#include "corevital/store.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What one batch does besides running: where traces go, what it compares with or pools into. */
typedef struct {
    const cv_run_args *args;
    cv_config *cfg;
    const char *out_dir; /* NULL: no traces (calibrate without --out) */
    char index_path[4096];
    int shard_k, shard_n;
    char **done_ids; /* --resume */
    size_t n_done;
    cv_store *store;
    cv_baseline *apply;   /* run --calibration */
    cv_baseline *collect; /* calibrate */
} batch_ctx;

/* Counters and the progress display. */
typedef struct {
    size_t total, finished, ok, failed;
    int64_t tokens;
    double t0;
    int tty;
    int quiet;
} progress;

static void progress_show(progress *p, const char *id, const char *status, int64_t tokens,
                          int64_t ms, double risk) {
    double secs = (cv_now_ms() - p->t0) / 1000.0;
    double tps = secs > 0 ? (double)p->tokens / secs : 0;
    if (p->tty) {
        double eta =
            p->finished ? secs / (double)p->finished * (double)(p->total - p->finished) : 0;
        fprintf(stderr, "\r\033[K[%zu/%zu] %.1f tok/s, ETA %d:%02d:%02d  %s %s", p->finished,
                p->total, tps, (int)(eta / 3600), (int)fmod(eta / 60, 60), (int)fmod(eta, 60), id,
                status);
        if (p->failed) fprintf(stderr, " (%zu failed)", p->failed);
        if (p->finished == p->total) fputc('\n', stderr);
    } else if (!p->quiet) {
        fprintf(stderr, "batch [%zu/%zu] %s: %s, %lld tokens, %lld ms", p->finished, p->total, id,
                status, (long long)tokens, (long long)ms);
        if (isfinite(risk)) fprintf(stderr, ", risk %.2f", risk);
        fprintf(stderr, " (%.1f tok/s)\n", tps);
    }
    fflush(stderr);
}

static double report_risk(const cv_report *rep) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(rep->extensions, "risk"), "risk_score");
    return cv_json_number(r, NAN);
}

/* Write the trace, store it and index it, with the signals blocked. */
static cv_status publish(batch_ctx *c, const cv_batch_item *it, cv_report *rep, const char *status,
                         char *location, size_t locsz, cv_error *err) {
    cv_status st = CV_OK;
    location[0] = '\0';
    if (c->out_dir) {
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s.json", c->out_dir, it->id) >= sizeof path)
            return cv_fail(err, CV_ERR_IO, "path too long for %s", it->id);
        free(c->cfg->out_path);
        c->cfg->out_path = strdup(path);
        if (!c->cfg->out_path) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
        st = cv_sinks_write(c->cfg, rep, location, locsz, err);
        free(c->cfg->out_path);
        c->cfg->out_path = NULL;
    }
    if (st == CV_OK && c->store) {
        char *json = NULL;
        size_t len = 0;
        /* the file's exact bytes; without a file (calibrate, no --out), the same serialization */
        st = location[0] ? cv_read_file(location, &json, &len, err)
                         : cv_report_to_json(rep, 2, &json, &len, err);
        if (st == CV_OK) st = cv_store_add_trace(c->store, json, len, location, err);
        free(json);
    }
    if (st == CV_OK && c->index_path[0]) {
        cv_index_record r = {it->id,
                             it->position,
                             status,
                             location[0] ? location : NULL,
                             rep->trace_id,
                             rep->summary.prompt_tokens,
                             rep->summary.generated_tokens,
                             rep->summary.elapsed_ms,
                             0,
                             0,
                             NULL};
        double risk = report_risk(rep);
        r.has_risk = isfinite(risk);
        r.risk = risk;
        st = cv_index_append(c->index_path, &r, err);
    }
    return st;
}

static cv_status index_failure(batch_ctx *c, const cv_batch_item *it, const char *msg,
                               cv_error *err) {
    if (!c->index_path[0]) return CV_OK;
    cv_index_record r = {it->id, it->position, "error", NULL, NULL, 0, 0, 0, 0, 0, msg};
    return cv_index_append(c->index_path, &r, err);
}

/* One prompt, start to finish. Returns CV_OK when it ran (ok or interrupted), the prompt's own
 * error in perr when it failed (the batch goes on), or a batch-fatal status in err (the index or
 * store could not be written). */
static cv_status run_one(batch_ctx *c, cv_session *s, const cv_batch_item *it, progress *pg,
                         cv_error *perr, cv_error *err) {
    cv_config *cfg = c->cfg;
    int saved_mnt = cfg->generation.max_new_tokens;
    int64_t saved_seed = cfg->generation.seed;
    if (it->max_new_tokens) cfg->generation.max_new_tokens = it->max_new_tokens;
    if (it->has_seed) cfg->generation.seed = it->seed;
    cv_report rep;
    int32_t *ids = NULL;
    size_t P = 0;
    perr->msg[0] = '\0';
    cv_status pst = cv_report_init(&rep, perr);
    if (pst == CV_OK) pst = cv_session_tokenize(s, it->prompt, &ids, &P, perr);
    if (pst == CV_OK) pst = cv_session_fill_report(s, cfg, it->prompt, ids, P, &rep, perr);
    if (pst == CV_OK)
        pst = cv_session_generate(s, cfg, ids, P, 1, &rep, NULL, NULL, NULL, NULL, perr);
    if (pst == CV_OK) pst = cv_report_fill_run_config(&rep, cfg, perr);
    if (pst == CV_OK && c->apply) pst = cv_baseline_apply(c->apply, &rep, perr);
    free(ids);
    int interrupted = cv_generate_stop_signal() != 0;
    const char *status = interrupted ? "interrupted" : "ok";
    if (pst == CV_OK && c->collect && !interrupted)
        pst = cv_baseline_add_run(c->collect, &rep, perr);
    cv_status st = CV_OK;
    char location[4096] = "";
    sigset_t old;
    cv_cli_block_stop_signals(&old);
    if (pst == CV_OK) {
        st = publish(c, it, &rep, status, location, sizeof location, err);
    } else {
        st = index_failure(c, it, perr->msg, err);
    }
    cv_cli_restore_signals(&old);
    pg->finished++;
    if (pst == CV_OK) {
        pg->ok += !interrupted;
        pg->tokens += rep.summary.generated_tokens;
        progress_show(pg, it->id, status, rep.summary.generated_tokens, rep.summary.elapsed_ms,
                      report_risk(&rep));
        if (c->apply && !pg->tty && !pg->quiet) { /* which layers / steps left the baseline */
            fputs("  ", stderr);
            cv_calibration_print(stderr, &rep);
        }
    } else {
        pg->failed++;
        if (pg->tty) fputs("\r\033[K", stderr);
        fprintf(stderr, "error: prompt %s (line %zu): %s\n", it->id, it->line, perr->msg);
        progress_show(pg, it->id, "error", 0, 0, NAN);
    }
    cv_report_free(&rep);
    cfg->generation.max_new_tokens = saved_mnt;
    cfg->generation.seed = saved_seed;
    if (pst != CV_OK && perr->code == CV_OK) perr->code = pst;
    return st;
}

/* Everything checked before the model loads. Returns an exit code (0 = go on). */
static int prepare(batch_ctx *c, const cv_batch *b, size_t *n_selected, cv_error *err) {
    const cv_run_args *a = c->args;
    if (c->cfg->out_path) {
        cv_fail(err, CV_ERR_USAGE,
                "argument --out: with --prompts, --out is a directory (each prompt's trace is "
                "<out>/<id>.json), not %s",
                c->cfg->out_path);
        return CV_EXIT_USAGE;
    }
    c->shard_k = c->shard_n = 1;
    if (a->shard) cv_shard_parse(a->shard, &c->shard_k, &c->shard_n);
    /* calibrate writes traces (and an index) only when --out was given */
    int traces = !a->calibrate || a->out;
    c->out_dir = traces ? c->cfg->sink.output_dir : NULL;
    c->index_path[0] = '\0';
    if (a->index)
        snprintf(c->index_path, sizeof c->index_path, "%s", a->index);
    else if (c->out_dir &&
             cv_path_join(c->index_path, sizeof c->index_path, c->out_dir, "index.jsonl", err))
        return CV_EXIT_USAGE;
    if (c->index_path[0]) {
        FILE *f = fopen(c->index_path, "r");
        int nonempty = f && fgetc(f) != EOF;
        if (f) fclose(f);
        if (nonempty && !a->resume) {
            cv_fail(err, CV_ERR_USAGE,
                    "the index %s already exists: add --resume to continue that batch, or use "
                    "another --out / --index",
                    c->index_path);
            return CV_EXIT_USAGE;
        }
        size_t bad = 0;
        if (a->resume &&
            cv_index_load_done(c->index_path, &c->done_ids, &c->n_done, &bad, err) != CV_OK)
            return CV_EXIT_USAGE;
        if (bad)
            CV_WARN("%s: %zu unreadable line(s) skipped (a write cut short?)", c->index_path, bad);
    }
    size_t sel = 0, skipped = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!cv_shard_has(b->items[i].position, c->shard_k, c->shard_n)) continue;
        if (cv_index_has(c->done_ids, c->n_done, b->items[i].id))
            skipped++;
        else
            sel++;
    }
    *n_selected = sel;
    if (skipped)
        CV_INFO("--resume: %zu prompt(s) already in %s are skipped", skipped, c->index_path);
    if (a->calibration && cv_baseline_load(a->calibration, &c->apply, err) != CV_OK)
        return CV_EXIT_USAGE;
    if (c->cfg->store.path && cv_store_open(c->cfg->store.path, 1, &c->store, err) != CV_OK) {
        cv_error_prefix(err, "--store / store.path");
        return CV_EXIT_USAGE;
    }
    if (c->out_dir && cv_mkdir_p(c->out_dir, err) != CV_OK) return CV_EXIT_USAGE;
    return CV_EXIT_OK;
}

int cv_cli_run_batch(const cv_run_args *a, cv_config *cfg) {
    cv_error err = {CV_OK, ""};
    cv_batch b;
    if (cv_batch_load(a->prompts, &b, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    batch_ctx c;
    memset(&c, 0, sizeof c);
    c.args = a;
    c.cfg = cfg;
    size_t n_sel = 0;
    cv_session *s = NULL;
    int rc = prepare(&c, &b, &n_sel, &err);
    if (rc != CV_EXIT_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    cv_generate_reset_stop();
    cv_cli_install_stop_handlers();
    if (cv_session_open(cfg, &s, NULL, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        rc = CV_EXIT_RUNTIME;
        goto done;
    }
    { /* the model's identity, for the baseline check (or the new baseline) */
        cv_report probe;
        cv_status st = cv_report_init(&probe, &err);
        if (st == CV_OK) st = cv_session_fill_report(s, cfg, "", NULL, 0, &probe, &err);
        if (st == CV_OK && c.apply) {
            st = cv_baseline_check_model(c.apply, &probe.model, &err);
            if (st != CV_OK) rc = CV_EXIT_USAGE;
        }
        if (st == CV_OK && a->calibrate) st = cv_baseline_new(&probe.model, &c.collect, &err);
        cv_report_free(&probe);
        if (st != CV_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            if (rc == CV_EXIT_OK) rc = CV_EXIT_RUNTIME;
            goto done;
        }
    }
    progress pg = {n_sel, 0, 0, 0, 0, cv_now_ms(), isatty(STDERR_FILENO), a->quiet};
    CV_INFO("Batch: %zu prompt(s) to run%s%s", n_sel, a->shard ? " in shard " : "",
            a->shard ? a->shard : "");
    for (size_t i = 0; i < b.n && rc == CV_EXIT_OK; i++) {
        const cv_batch_item *it = &b.items[i];
        if (!cv_shard_has(it->position, c.shard_k, c.shard_n) ||
            cv_index_has(c.done_ids, c.n_done, it->id))
            continue;
        if (cv_generate_stop_signal()) break; /* arrived between prompts */
        cv_error perr = {CV_OK, ""};
        if (run_one(&c, s, it, &pg, &perr, &err) != CV_OK) {
            fprintf(stderr, "error: %s\n", err.msg); /* the index or store failed: stop */
            rc = CV_EXIT_RUNTIME;
        }
        if (cv_generate_stop_signal()) break;
    }
    int sig = cv_generate_stop_signal();
    if (pg.tty && pg.finished && pg.finished < pg.total) fputc('\n', stderr);
    double secs = (cv_now_ms() - pg.t0) / 1000.0;
    if (rc == CV_EXIT_OK && c.collect && !sig) {
        if (cv_baseline_num_runs(c.collect) == 0) {
            fprintf(stderr, "error: no prompt ran successfully; no baseline written\n");
            rc = CV_EXIT_RUNTIME;
        } else if (cv_baseline_write(c.collect, a->output, &err) != CV_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            rc = CV_EXIT_RUNTIME;
        }
    }
    if (!a->quiet) {
        printf("Batch: %zu prompt(s) run, %zu ok, %zu failed", pg.finished, pg.ok, pg.failed);
        if (c.n_done) printf(", skipped %zu finished before (--resume)", c.n_done);
        if (a->shard) printf(" [shard %s]", a->shard);
        printf("\n%lld tokens generated in %.1f s (%.1f tok/s, %.1f prompts/s)\n",
               (long long)pg.tokens, secs, secs > 0 ? (double)pg.tokens / secs : 0.0,
               secs > 0 ? (double)pg.finished / secs : 0.0);
        if (c.index_path[0]) printf("Index:           %s\n", c.index_path);
        if (c.store) printf("Store:           %s\n", cfg->store.path);
        if (c.collect && rc == CV_EXIT_OK && !sig)
            printf("Baseline:        %s (%zu runs)\n", a->output, cv_baseline_num_runs(c.collect));
    }
    fflush(stdout);
    if (sig) {
        fprintf(stderr, "interrupted: %zu prompt(s) finished and indexed; --resume continues\n",
                pg.finished);
        rc = 128 + sig;
    } else if (rc == CV_EXIT_OK && pg.failed) {
        rc = CV_EXIT_PARTIAL;
    }
done:
    cv_session_close(s);
    cv_store_close(c.store);
    cv_baseline_free(c.apply);
    cv_baseline_free(c.collect);
    cv_index_free(c.done_ids, c.n_done);
    cv_batch_free(&b);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return rc;
}
