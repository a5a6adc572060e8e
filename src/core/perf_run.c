/* perf_run.c — cv_run_perf: the main job (run.h's cv_run) with the performance monitor on, and
 * the strict-mode procedure of SPEC §6.
 *
 * Parents, in order: [config_load, setup_logging: recorded by the caller], model_load (children
 * from cv_session_open's hooks: resolve, backend_init, tokenizer_load, weights_load), tokenize,
 * model_inference (the generation call: prefill / encoder_forward, decode_loop with one
 * per-step sample per decode step), report_build (model, prompt and run_config sections; the
 * timeline itself is filled inside the decode loop, the statistics being fused).
 *
 * Strict mode: the model_load above *is* the cold load (we keep the session, so there is no
 * second cached load to time); after tokenize come two uninstrumented warm-up generations and
 * one uninstrumented baseline. Our sampler is re-seeded from generation.seed at every
 * generation, so the baseline and the instrumented run draw the same random numbers; their
 * token ids are compared and a difference is an error, since the overhead would then compare
 * different work. Baseline and instrumented inference are timed the same way: wall time around
 * one cv_session_generate call. */
#include "corevital/generate.h"
#include "corevital/log.h"
#include "corevital/perf.h"

#include <stdlib.h>
#include <string.h>

/* Generate without statistics or hooks; *ms = wall time of the call. */
static cv_status plain_generate(cv_session *s, const cv_config *cfg, const int32_t *ids, size_t P,
                                int32_t **out_ids, size_t *out_n, double *ms, cv_error *err) {
    double t0 = cv_now_ms();
    cv_status st = cv_session_generate(s, cfg, ids, P, 0, NULL, out_ids, out_n, NULL, NULL, err);
    *ms = cv_now_ms() - t0;
    return st;
}

cv_status cv_perf_same_tokens(const int32_t *base, size_t nb, const int32_t *inst, size_t ni,
                              cv_error *err) {
    size_t n = nb < ni ? nb : ni;
    for (size_t i = 0; i < n; i++)
        if (base[i] != inst[i])
            return cv_fail(err, CV_ERR_RUNTIME,
                           "perf strict: the instrumented run generated token %d at new-token "
                           "index %zu where the uninstrumented baseline (same seed) generated %d; "
                           "the overhead comparison would not compare the same work",
                           inst[i], i, base[i]);
    if (nb != ni)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "perf strict: the instrumented run generated %zu tokens, the "
                       "uninstrumented baseline (same seed) %zu",
                       ni, nb);
    return CV_OK;
}

cv_status cv_run_perf(const cv_config *cfg, const char *prompt, cv_report *out, cv_perf *p,
                      cv_error *err) {
    const int strict = cv_perf_get_mode(p) == CV_PERF_STRICT;
    cv_gen_hooks hooks;
    cv_perf_hooks(p, &hooks);
    cv_session *s = NULL;
    int32_t *ids = NULL, *base_ids = NULL, *inst_ids = NULL;
    size_t P = 0, n_base = 0, n_inst = 0;
    cv_perf_strict sv = {0, 0, 0, 0};

    cv_status st = cv_report_init(out, err);
    if (st != CV_OK) return st;

    double t0 = cv_now_ms();
    cv_perf_begin(p, "model_load");
    st = cv_session_open(cfg, &s, &hooks, err);
    cv_perf_end(p, "model_load");
    sv.original_model_load_ms = cv_now_ms() - t0;
    if (st != CV_OK) goto done;

    cv_perf_begin(p, "tokenize");
    st = cv_session_tokenize(s, prompt, &ids, &P, err);
    cv_perf_end(p, "tokenize");
    if (st != CV_OK) goto done;

    if (strict) {
        double ms;
        for (int w = 0; w < 2 && st == CV_OK; w++) {
            st = plain_generate(s, cfg, ids, P, NULL, NULL, &ms, err);
            sv.warmup_ms += ms;
        }
        if (st == CV_OK)
            st = plain_generate(s, cfg, ids, P, &base_ids, &n_base, &sv.baseline_ms, err);
        if (st != CV_OK) {
            cv_error_prefix(err, "perf strict: warm-up / baseline generation");
            goto done;
        }
    }

    cv_perf_begin(p, "model_inference");
    t0 = cv_now_ms(); /* timed exactly like the baseline: around the generation call */
    st = cv_session_generate(s, cfg, ids, P, 1, out, &inst_ids, &n_inst, NULL, &hooks, err);
    sv.instrumented_inference_ms = cv_now_ms() - t0;
    cv_perf_end(p, "model_inference");
    if (st != CV_OK) goto done;
    if (strict && (st = cv_perf_same_tokens(base_ids, n_base, inst_ids, n_inst, err)) != CV_OK)
        goto done;

    cv_perf_begin(p, "report_build");
    st = cv_session_fill_report(s, cfg, prompt, ids, P, out, err);
    if (st == CV_OK) st = cv_report_fill_run_config(out, cfg, err);
    cv_perf_end(p, "report_build");
    if (st != CV_OK) goto done;

    cv_perf_mark_end(p, 0);
    if (strict) {
        cv_perf_set_strict(p, &sv);
        CV_INFO("perf strict: baseline %.2f ms, instrumented %.2f ms (%+.2f%%)", sv.baseline_ms,
                sv.instrumented_inference_ms,
                sv.baseline_ms > 0
                    ? 100.0 * (sv.instrumented_inference_ms - sv.baseline_ms) / sv.baseline_ms
                    : 0.0);
    }
done:
    free(ids);
    free(base_ids);
    free(inst_ids);
    cv_session_close(s);
    return st;
}
