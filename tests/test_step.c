/* test_step.c — the decode step boundary on the CPU backend (backend.h CV_SP_*): greedy decoding
 * of a decoder-only model keeps the chosen token and its position on the backend between steps
 * (pick_greedy writes them, the next forward reads them), which must change nothing that a run
 * reports. CV_STEP_ON_DEVICE=0 passes the token from the host as before; both loops must give the
 * same tokens and the same timeline (every statistic, health included), bit for bit, for GPT-2
 * and Llama, with and without statistics.
 *
 * The CPU backend is the reference implementation of the ops' semantics (backend memory is host
 * memory there), so the same loop the GPU runs is checked here; a wrapper around the CPU op table
 * also checks the step words themselves: before the pick of step i they hold the position
 * P - 1 + i and the token chosen by step i - 1, after it the new choice at P + i. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/config.h"
#include "corevital/generate.h"
#include "corevital/model.h"
#include "cJSON.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PICKS 64

typedef struct {
    cv_backend b; /* first: the op table generate.c calls */
    cv_backend *inner;
    int picks, with_step;
    int32_t pos_before[MAX_PICKS], tok_before[MAX_PICKS], tok_after[MAX_PICKS],
        pos_after[MAX_PICKS];
    int32_t slot_tok[MAX_PICKS];
} spy_backend;

static void spy_pick_greedy(cv_backend *b, const float *logits, int V, double *slot,
                            int32_t *step) {
    spy_backend *s = (spy_backend *)b;
    int k = s->picks++;
    ck_assert_int_lt(k, MAX_PICKS);
    if (step) {
        s->with_step++;
        s->pos_before[k] = step[CV_SP_POS];
        s->tok_before[k] = step[CV_SP_TOKEN];
    }
    s->inner->pick_greedy(s->inner, logits, V, slot, step);
    s->slot_tok[k] = slot ? (int32_t)slot[CV_STEP_TOKEN] : -2;
    if (step) {
        s->tok_after[k] = step[CV_SP_TOKEN];
        s->pos_after[k] = step[CV_SP_POS];
    }
}

typedef struct {
    int32_t *ids;
    size_t n, P;
    cJSON *timeline, *generated;
} run_out;

/* Greedy run of G tokens on the CPU through the spy; on_device sets CV_STEP_ON_DEVICE. */
static void gen(const char *model, int G, int instrumented, int health, int on_device,
                spy_backend *spy, run_out *out) {
    setenv("CV_STEP_ON_DEVICE", on_device ? "1" : "0", 1);
    cv_config c;
    cv_session *s;
    cv_error e;
    char g[16];
    snprintf(g, sizeof g, "%d", G);
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "model.hf_id", model, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "device.requested", "cpu", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.max_new_tokens", g, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.temperature", "0", &e), CV_OK);
    if (!health) ck_assert_int_eq(cv_config_set(&c, "health.enabled", "false", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(&c, &e), CV_OK);
    c.threads = 1;
    ck_assert_msg(cv_session_open(&c, &s, NULL, &e) == CV_OK, "%s", e.msg);
    cv_backend *cpu = s->be;
    memset(spy, 0, sizeof *spy);
    spy->b = *cpu;
    spy->b.pick_greedy = spy_pick_greedy;
    spy->inner = cpu;
    s->be = &spy->b;
    s->m->be = &spy->b; /* the forward's ops go through the same table */
    const char *prompt = "The quick brown fox";
    int32_t *pids = NULL;
    ck_assert_int_eq(cv_session_tokenize(s, prompt, &pids, &out->P, &e), CV_OK);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, &e), CV_OK);
    ck_assert_int_eq(cv_session_fill_report(s, &c, prompt, pids, out->P, &rep, &e), CV_OK);
    cv_status st =
        cv_session_generate(s, &c, pids, out->P, instrumented, instrumented ? &rep : NULL,
                            &out->ids, &out->n, NULL, NULL, &e);
    ck_assert_msg(st == CV_OK, "%s", e.msg);
    ck_assert_ptr_null(s->m->step); /* the loop's step words are gone with the loop */
    free(pids);
    out->timeline = out->generated = NULL;
    if (instrumented) {
        char *json = NULL;
        size_t len = 0;
        ck_assert_int_eq(cv_report_fill_run_config(&rep, &c, &e), CV_OK);
        ck_assert_int_eq(cv_report_to_json(&rep, 0, &json, &len, &e), CV_OK);
        cJSON *doc = cJSON_Parse(json);
        ck_assert_ptr_nonnull(doc);
        out->timeline = cJSON_DetachItemFromObject(doc, "timeline");
        out->generated = cJSON_DetachItemFromObject(doc, "generated");
        cJSON_Delete(doc);
        free(json);
    }
    cv_report_free(&rep);
    s->be = cpu;
    s->m->be = cpu;
    cv_session_close(s);
    cv_config_free(&c);
    unsetenv("CV_STEP_ON_DEVICE");
}

static void free_out(run_out *o) {
    free(o->ids);
    cJSON_Delete(o->timeline);
    cJSON_Delete(o->generated);
}

/* Device-token loop vs host-token loop: the same tokens and the same timeline. */
static void same_as_host(const char *model, int instrumented, int health) {
    const int G = 12;
    spy_backend a, b;
    run_out da, ho;
    gen(model, G, instrumented, health, 1, &a, &da);
    gen(model, G, instrumented, health, 0, &b, &ho);
    ck_assert_int_eq((int)da.n, (int)ho.n);
    ck_assert_int_gt((int)da.n, 1);
    for (size_t i = 0; i < da.n; i++) ck_assert_int_eq(da.ids[i], ho.ids[i]);
    if (instrumented) {
        ck_assert_int_eq(cJSON_GetArraySize(da.timeline), (int)da.n);
        ck_assert_msg(cJSON_Compare(da.timeline, ho.timeline, 1), "%s: timelines differ", model);
        ck_assert(cJSON_Compare(da.generated, ho.generated, 1));
    }
    /* the host loop never hands step words to pick_greedy */
    ck_assert_int_eq(b.with_step, 0);
    /* the device loop does at every step: position P - 1 + i before, P + i after */
    ck_assert_int_eq(a.with_step, (int)da.n);
    for (int i = 0; i < (int)da.n; i++) {
        ck_assert_int_eq(a.pos_before[i], (int)da.P - 1 + i);
        ck_assert_int_eq(a.pos_after[i], (int)da.P + i);
        ck_assert_int_eq(a.tok_after[i], da.ids[i]);
        if (i > 0) ck_assert_int_eq(a.tok_before[i], da.ids[i - 1]);
        if (instrumented) ck_assert_int_eq(a.slot_tok[i], da.ids[i]);
    }
    free_out(&da);
    free_out(&ho);
}

START_TEST(test_gpt2_device_token_same_trace) {
    same_as_host("tests/fixtures/gpt2-tiny", 1, 1);
    same_as_host("tests/fixtures/gpt2-tiny", 1, 0);
    same_as_host("tests/fixtures/gpt2-tiny", 0, 0);
}
END_TEST

START_TEST(test_llama_device_token_same_trace) {
    same_as_host("tests/fixtures/llama-tiny", 1, 1);
    same_as_host("tests/fixtures/llama-tiny", 1, 0);
    same_as_host("tests/fixtures/llama-tiny", 0, 0);
}
END_TEST

/* T5 (encoder-decoder) keeps the host token: its forward has no device-token path. */
START_TEST(test_t5_keeps_host_token) {
    spy_backend a;
    run_out o;
    gen("tests/fixtures/t5-tiny", 6, 1, 1, 1, &a, &o);
    ck_assert_int_gt((int)o.n, 0);
    ck_assert_int_eq(a.with_step, 0);
    free_out(&o);
}
END_TEST

/* A forward asked for a device token without step words, or with T > 1, refuses. */
START_TEST(test_forward_device_token_needs_step) {
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m = NULL;
    cv_error e;
    ck_assert_int_eq(cv_model_load("tests/fixtures/gpt2-tiny", be, &m, &e), CV_OK);
    ck_assert_int_eq(m->ops->reserve(m, 4, 16, 1, &e), CV_OK);
    float *logits = NULL;
    ck_assert_int_eq(m->ops->forward(m, NULL, 1, 0, NULL, NULL, NULL, 0, &logits, &e),
                     CV_ERR_RUNTIME);
    int32_t *step = be->alloc(be, sizeof(int32_t) * CV_SP_WORDS);
    m->step = step;
    ck_assert_int_eq(m->ops->forward(m, NULL, 2, 0, NULL, NULL, NULL, 0, &logits, &e),
                     CV_ERR_RUNTIME);
    step[CV_SP_TOKEN] = 3;
    step[CV_SP_POS] = 0;
    ck_assert_int_eq(m->ops->forward(m, NULL, 1, 0, NULL, NULL, NULL, 0, &logits, &e), CV_OK);
    int V = m->cfg.vocab_size;
    float *dev_row = malloc(sizeof(float) * (size_t)V);
    memcpy(dev_row, logits, sizeof(float) * (size_t)V);
    /* the same token from the host at the same position: the same logits */
    int32_t tok = 3;
    ck_assert_int_eq(m->ops->forward(m, &tok, 1, 0, NULL, NULL, NULL, 0, &logits, &e), CV_OK);
    ck_assert_int_eq(memcmp(dev_row, logits, sizeof(float) * (size_t)V), 0);
    m->step = NULL;
    be->free(be, step);
    free(dev_row);
    cv_model_free(m);
    be->destroy(be);
}
END_TEST

int main(void) {
    Suite *s = suite_create("step");
    TCase *tc = tcase_create("device_step");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gpt2_device_token_same_trace);
    tcase_add_test(tc, test_llama_device_token_same_trace);
    tcase_add_test(tc, test_t5_keeps_host_token);
    tcase_add_test(tc, test_forward_device_token_needs_step);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
