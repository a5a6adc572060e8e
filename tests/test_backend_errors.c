/* test_backend_errors.c — a backend failure is never silent (backend.h: status): the generation
 * loop checks the backend's sticky status once per step, after the step's downloads, and after
 * the encoder; a failure stops the run at that step with the backend's message, and a token
 * that a failed backend's argmax makes up (-1) is never used.
 *
 * No GPU needed: a fake backend wraps the CPU backend's op table (same ctx, so the model loaded
 * on the CPU runs unchanged) and reports a CUDA-like failure from its k-th status call. The
 * session is opened on the CPU and the fake swapped in as the session's backend, so every call
 * generate.c makes (argmax, downloads, status) goes through it. The same checks on a real GPU
 * fault are in tests/cuda/test_cuda_errors.c. */
#include "corevital/config.h"
#include "corevital/generate.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MSG                                                                                   \
    "fake: attention: cudaErrorIllegalAddress (an illegal memory access was encountered)"

typedef struct {
    cv_backend b; /* first: the op table generate.c calls */
    cv_backend *inner;
    int status_calls, argmax_calls;
    int fail_at;       /* the status call (0-based) from which status reports the failure */
    int argmax_bad;    /* once failed, argmax answers -1 as the CUDA backend does */
    int argmax_bad_at; /* >= 0: argmax answers -1 at that call with status still OK (a bug) */
    int failed;
} fake_backend;

static fake_backend *fake_of(cv_backend *b) {
    return (fake_backend *)b; /* b is the first member */
}

static cv_status fake_status(cv_backend *b, cv_error *err) {
    fake_backend *f = fake_of(b);
    if (f->status_calls++ >= f->fail_at) f->failed = 1;
    return f->failed ? cv_fail(err, CV_ERR_RUNTIME, "%s", FAKE_MSG) : CV_OK;
}

static int32_t fake_argmax(cv_backend *b, const float *logits, int V) {
    fake_backend *f = fake_of(b);
    int call = f->argmax_calls++;
    if (f->argmax_bad_at >= 0 && call == f->argmax_bad_at) return -1;
    /* the fault of "this step" is raised by its kernels, before argmax copies the token back */
    if (f->argmax_bad && f->status_calls >= f->fail_at) return -1;
    return f->inner->argmax(f->inner, logits, V);
}

/* The greedy choice kept on the backend goes through the same fake argmax: the CPU's op does
 * the bookkeeping (the step words' position), then the fake's answer replaces its choice, in the
 * arena's slots and as the next step's device token alike. */
static void fake_pick_greedy(cv_backend *b, const float *logits, int V, double *slot,
                             int32_t *step) {
    fake_backend *f = fake_of(b);
    int32_t id = fake_argmax(b, logits, V);
    f->inner->pick_greedy(f->inner, logits, V, slot, step);
    if (slot) {
        slot[CV_STEP_TOKEN] = id;
        slot[CV_STEP_LOGIT] = id >= 0 && id < V ? logits[id] : 0.0;
    }
    if (step) step[CV_SP_TOKEN] = id;
}

static void fake_wrap(fake_backend *f, cv_backend *inner, int fail_at) {
    memset(f, 0, sizeof *f);
    f->b = *inner; /* every op and the ctx: the CPU ops run on the CPU backend's state */
    f->b.name = "fake";
    f->b.status = fake_status;
    f->b.argmax = fake_argmax;
    f->b.pick_greedy = fake_pick_greedy;
    f->inner = inner;
    f->fail_at = fail_at;
    f->argmax_bad_at = -1;
}

static void open_session(cv_config *c, cv_session **s, const char *model, int G, int sample) {
    cv_error e;
    char g[16];
    snprintf(g, sizeof g, "%d", G);
    ck_assert_int_eq(cv_config_init(c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "model.hf_id", model, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "device.requested", "cpu", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.max_new_tokens", g, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.temperature", sample ? "0.8" : "0", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(c, &e), CV_OK);
    c->threads = 1;
    ck_assert_int_eq(cv_session_open(c, s, NULL, &e), CV_OK);
}

/* What the last failed run left in its report: a partial trace of the completed steps. */
static int g_partial;
static size_t g_partial_steps;

/* Generate G tokens through the fake; returns the status, err filled. */
static cv_status run_fake(const char *model, int G, int sample, fake_backend *f, int fail_at,
                          int argmax_bad, size_t *P_out, cv_error *err) {
    cv_config c;
    cv_session *s;
    open_session(&c, &s, model, G, sample);
    cv_backend *cpu = s->be;
    fake_wrap(f, cpu, fail_at);
    f->argmax_bad = argmax_bad;
    s->be = &f->b;
    int32_t *ids, *gen = NULL;
    size_t P, n = 0;
    ck_assert_int_eq(cv_session_tokenize(s, "The quick brown fox", &ids, &P, err), CV_OK);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, err), CV_OK);
    memset(err, 0, sizeof *err);
    ck_assert_int_eq(cv_session_fill_report(s, &c, "The quick brown fox", ids, P, &rep, err),
                     CV_OK);
    cv_status st = cv_session_generate(s, &c, ids, P, 1, &rep, &gen, &n, NULL, NULL, err);
    if (st != CV_OK) ck_assert_ptr_null(gen); /* no output ids from a failed run */
    g_partial = rep.partial;
    g_partial_steps = rep.n_timeline;
    if (st != CV_OK && rep.partial) { /* the steps before the failure form a valid trace */
        cv_error e2 = {CV_OK, ""};
        ck_assert_int_eq(cv_report_fill_run_config(&rep, &c, &e2), CV_OK);
        char *json = NULL;
        size_t len = 0;
        ck_assert_int_eq(cv_report_to_json(&rep, 2, &json, &len, &e2), CV_OK);
        ck_assert_msg(cv_trace_validate(json, &e2) == CV_OK, "%s", e2.msg);
        ck_assert(strstr(json, "GENERATION_FAILED") != NULL);
        ck_assert_int_eq((int)rep.generated.n_token_ids, (int)rep.n_timeline);
        free(json);
    }
    free(gen);
    free(ids);
    cv_report_free(&rep);
    s->be = cpu;
    cv_session_close(s);
    cv_config_free(&c);
    *P_out = P;
    return st;
}

/* The failure at step k stops the loop there with the backend's message, for k = 0 (the
 * prefill), a decode step, and the last step. Greedy, with argmax answering -1 like CUDA. */
START_TEST(test_fails_at_step_k) {
    const int ks[] = {0, 3, 7};
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
        int k = ks[j];
        fake_backend f;
        cv_error err;
        size_t P;
        cv_status st = run_fake("tests/fixtures/gpt2-tiny", 8, 0, &f, k, 1, &P, &err);
        ck_assert_int_eq(st, CV_ERR_RUNTIME);
        char want[256];
        snprintf(want, sizeof want, "generation step %zu: %s", P + (size_t)k, FAKE_MSG);
        ck_assert_str_eq(err.msg, want);
        /* argmax of step k was the last call: the loop did not go on to step k + 1 */
        ck_assert_int_eq(f.argmax_calls, k + 1);
        ck_assert_int_eq(f.status_calls, k + 1); /* argmax's -1 sent the loop to status */
        /* the k steps completed before the failure are kept for the trace */
        ck_assert(g_partial);
        ck_assert_int_eq((int)g_partial_steps, k);
    }
}
END_TEST

/* A backend whose argmax looks fine but whose status fails: caught after the downloads. */
START_TEST(test_status_only_failure) {
    fake_backend f;
    cv_error err;
    size_t P;
    cv_status st = run_fake("tests/fixtures/gpt2-tiny", 8, 0, &f, 2, 0, &P, &err);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    char want[256];
    snprintf(want, sizeof want, "generation step %zu: %s", P + 2, FAKE_MSG);
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(f.argmax_calls, 3);
    ck_assert_int_eq(f.status_calls, 3);
}
END_TEST

/* Sampling downloads the row instead of calling argmax: the status check covers it too. */
START_TEST(test_sampling_failure) {
    fake_backend f;
    cv_error err;
    size_t P;
    cv_status st = run_fake("tests/fixtures/gpt2-tiny", 8, 1, &f, 4, 0, &P, &err);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    char want[256];
    snprintf(want, sizeof want, "generation step %zu: %s", P + 4, FAKE_MSG);
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(f.argmax_calls, 0);
    ck_assert_int_eq(f.status_calls, 5);
}
END_TEST

/* Encoder-decoder: status call 0 is the encoder's, then one per decoder step. */
START_TEST(test_seq2seq_encoder_and_step) {
    fake_backend f;
    cv_error err;
    size_t P;
    cv_status st = run_fake("tests/fixtures/t5-tiny", 6, 0, &f, 0, 0, &P, &err);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    ck_assert_str_eq(err.msg, "encoder: " FAKE_MSG);
    ck_assert_int_eq(f.argmax_calls, 0);
    st = run_fake("tests/fixtures/t5-tiny", 6, 0, &f, 3, 0, &P, &err);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    char want[256];
    snprintf(want, sizeof want, "generation step %zu: %s", P + 2, FAKE_MSG);
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(f.argmax_calls, 3);
}
END_TEST

/* A made-up token (-1) with no reported failure is still refused, with a message. */
START_TEST(test_bad_token_refused) {
    cv_config c;
    cv_session *s;
    open_session(&c, &s, "tests/fixtures/gpt2-tiny", 8, 0);
    cv_backend *cpu = s->be;
    fake_backend f;
    fake_wrap(&f, cpu, 1000);
    f.argmax_bad_at = 2;
    s->be = &f.b;
    cv_error err;
    int32_t *ids;
    size_t P;
    ck_assert_int_eq(cv_session_tokenize(s, "The quick brown fox", &ids, &P, &err), CV_OK);
    cv_status st = cv_session_generate(s, &c, ids, P, 0, NULL, NULL, NULL, NULL, NULL, &err);
    ck_assert_int_eq(st, CV_ERR_RUNTIME);
    char want[256];
    snprintf(want, sizeof want,
             "generation step %zu: argmax returned token -1, outside the vocabulary of %d", P + 2,
             s->m->cfg.vocab_size);
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(f.argmax_calls, 3);
    free(ids);
    s->be = cpu;
    cv_session_close(s);
    cv_config_free(&c);
}
END_TEST

/* The CPU backend's status is always CV_OK, and a full run through the fake with no failure
 * gives the CPU's tokens (the wrapper itself changes nothing). */
START_TEST(test_no_failure_is_transparent) {
    cv_backend *cpu = cv_backend_cpu_create();
    cv_error err;
    ck_assert_ptr_nonnull(cpu->status);
    ck_assert_int_eq(cpu->status(cpu, &err), CV_OK);
    cpu->destroy(cpu);
    fake_backend f;
    size_t P;
    ck_assert_int_eq(run_fake("tests/fixtures/gpt2-tiny", 8, 0, &f, 1000, 1, &P, &err), CV_OK);
    ck_assert_int_le(f.argmax_calls, 8);
    ck_assert_int_eq(f.status_calls, f.argmax_calls);
}
END_TEST

int main(void) {
    Suite *s = suite_create("backend_errors");
    TCase *tc = tcase_create("sticky_status");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fails_at_step_k);
    tcase_add_test(tc, test_status_only_failure);
    tcase_add_test(tc, test_sampling_failure);
    tcase_add_test(tc, test_seq2seq_encoder_and_step);
    tcase_add_test(tc, test_bad_token_refused);
    tcase_add_test(tc, test_no_failure_is_transparent);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
