/* test_cuda_step.c — the greedy decode step on CUDA (make test-cuda; needs a GPU): the chosen
 * token and its position stay on the device (backend.h CV_SP_*), and the decode step is recorded
 * once as a CUDA graph and replayed (backend.h graph_*). For gpt2-tiny, llama-tiny and two
 * synthesized checkpoints (a GPT-2 of 4 x 256, F32; a GQA Llama of 4 x 256, BF16), each run
 * through cv_session_generate on the GPU for 16 tokens with statistics and health:
 *   graphs on vs CV_CUDA_GRAPH=0: identical tokens and identical timelines (every statistic bit
 *     for bit: the replay runs the very kernels with the very arguments of the plain launches);
 *   device token vs CV_STEP_ON_DEVICE=0 (host token, host position): identical tokens (the
 *     statistics may differ in the last bits: the device-position attention splits the keys by
 *     the cache capacity, the host one by the step's key count);
 *   kernel launches per decode step (cv_cuda_debug "launches", read at every step hook): constant
 *     over the plain steps, and exactly 1 (the graph launch) from decode step 3 on with graphs;
 *     the counts are printed.
 * Without a GPU: prints "SKIP: no CUDA device" and exits 77 (make test-cuda reports a failure). */
#define _XOPEN_SOURCE 700
#include "cuda_suite.h"
#include "corevital/config.h"
#include "corevital/generate.h"
#include "corevital/synth.h"
#include "cJSON.h"
#include "testutil.h"

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STEPS 16

typedef struct {
    cv_backend *be;
    int n;
    int per_step[STEPS + 1]; /* [k]: launches of decode step k + 1 */
} launch_log;

static void on_step(void *user, double ms) {
    (void)ms;
    launch_log *l = user;
    int k = cv_cuda_debug(l->be, "launches", 1);
    if (l->n <= STEPS) l->per_step[l->n] = k;
    l->n++;
}

typedef struct {
    int32_t *ids;
    size_t n;
    cJSON *timeline;
    launch_log launches;
} run_out;

/* One greedy run on CUDA; env: the variables to set for it (NULL-terminated name, value pairs). */
static void run_cuda(const char *model, const char *const *env, run_out *out) {
    for (int i = 0; env && env[i]; i += 2) setenv(env[i], env[i + 1], 1);
    cv_config c;
    cv_session *s;
    cv_error e = {0};
    char g[16];
    snprintf(g, sizeof g, "%d", STEPS);
    ck_assert_int_eq(cv_config_init(&c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "model.hf_id", model, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "device.requested", "cuda", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.max_new_tokens", g, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(&c, "generation.temperature", "0", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(&c, &e), CV_OK);
    memset(out, 0, sizeof *out);
    cv_gen_hooks hooks = {.user = &out->launches, .step = on_step};
    ck_assert_msg(cv_session_open(&c, &s, &hooks, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(s->device, "cuda");
    out->launches.be = s->be;
    const char *prompt = "The quick brown fox";
    int32_t *pids = NULL;
    size_t P = 0;
    ck_assert_int_eq(cv_session_tokenize(s, prompt, &pids, &P, &e), CV_OK);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, &e), CV_OK);
    ck_assert_int_eq(cv_session_fill_report(s, &c, prompt, pids, P, &rep, &e), CV_OK);
    cv_status st =
        cv_session_generate(s, &c, pids, P, 1, &rep, &out->ids, &out->n, NULL, &hooks, &e);
    ck_assert_msg(st == CV_OK, "%s: %s", model, e.msg);
    char *json = NULL;
    size_t len = 0;
    ck_assert_int_eq(cv_report_fill_run_config(&rep, &c, &e), CV_OK);
    ck_assert_int_eq(cv_report_to_json(&rep, 0, &json, &len, &e), CV_OK);
    cJSON *doc = cJSON_Parse(json);
    ck_assert_ptr_nonnull(doc);
    out->timeline = cJSON_DetachItemFromObject(doc, "timeline");
    cJSON_Delete(doc);
    free(json);
    free(pids);
    cv_report_free(&rep);
    cv_session_close(s);
    cv_config_free(&c);
    for (int i = 0; env && env[i]; i += 2) unsetenv(env[i]);
}

static void free_out(run_out *o) {
    free(o->ids);
    cJSON_Delete(o->timeline);
}

static void check_model(const char *model) {
    static const char *const plain_env[] = {"CV_CUDA_GRAPH", "0", NULL};
    static const char *const host_env[] = {"CV_STEP_ON_DEVICE", "0", NULL};
    run_out gr, pl, ho;
    run_cuda(model, NULL, &gr);
    run_cuda(model, plain_env, &pl);
    run_cuda(model, host_env, &ho);
    ck_assert_int_eq((int)gr.n, (int)pl.n);
    ck_assert_int_eq((int)gr.n, (int)ho.n);
    for (size_t i = 0; i < gr.n; i++) {
        ck_assert_msg(gr.ids[i] == pl.ids[i], "%s: graph token %zu: %d vs %d", model, i, gr.ids[i],
                      pl.ids[i]);
        ck_assert_msg(gr.ids[i] == ho.ids[i], "%s: device-token token %zu: %d vs host %d", model, i,
                      gr.ids[i], ho.ids[i]);
    }
    ck_assert_msg(cJSON_Compare(gr.timeline, pl.timeline, 1),
                  "%s: graph replay and plain launches give different statistics", model);
    /* launches: the step hook runs after each decode step i >= 1, so per_step[k] counts the
     * launches of decode step k + 1 (per_step[0] also holds the prefill's) */
    const int n = pl.launches.n < STEPS ? pl.launches.n : STEPS;
    ck_assert_int_ge(n, 4);
    printf("%s: kernel launches per decode step: plain %d | graph run: step 2 (recorded, then "
           "launched) %d, step 3 %d\n",
           model, pl.launches.per_step[1], gr.launches.per_step[1], gr.launches.per_step[2]);
    for (int k = 2; k < n; k++)
        ck_assert_msg(pl.launches.per_step[k] == pl.launches.per_step[1],
                      "%s: plain decode step %d: %d launches, step 2 had %d", model, k + 1,
                      pl.launches.per_step[k], pl.launches.per_step[1]);
    ck_assert_int_eq(gr.launches.per_step[1], pl.launches.per_step[1] + 1);
    for (int k = 2; k < (gr.launches.n < STEPS ? gr.launches.n : STEPS); k++)
        ck_assert_msg(gr.launches.per_step[k] == 1, "%s: replayed step %d: %d launches", model,
                      k + 1, gr.launches.per_step[k]);
    free_out(&gr), free_out(&pl), free_out(&ho);
}

static void link_tokenizer(const char *dir, const char *fixture) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char src[600], dst[800];
        snprintf(src, sizeof src, "tests/fixtures/%s/%s", fixture, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        char *abs = realpath(src, NULL);
        ck_assert_msg(abs != NULL, "missing %s", src);
        ck_assert_int_eq(symlink(abs, dst), 0);
        free(abs);
    }
}

START_TEST(test_fixtures_graph_and_device_token) {
    check_model("tests/fixtures/gpt2-tiny");
    check_model("tests/fixtures/llama-tiny");
}
END_TEST

START_TEST(test_synth_graph_and_device_token) {
    const char *tmp = tu_tmpdir("cuda-step");
    char dir[700];
    cv_error err = {0};
    cv_synth_shape g2 = {.vocab = 512,
                         .hidden = 256,
                         .layers = 4,
                         .heads = 4,
                         .kv_heads = 4,
                         .intermediate = 1024,
                         .max_positions = 512,
                         .tie_embeddings = 1,
                         .dtype = CV_DT_F32,
                         .std = 0.05f,
                         .seed = 7,
                         .bos_id = 0,
                         .eos_id = 511};
    snprintf(dir, sizeof dir, "%s/gpt2", tmp);
    ck_assert_msg(cv_synth_gpt2(dir, &g2, &err) == CV_OK, "%s", err.msg);
    link_tokenizer(dir, "gpt2-tiny");
    check_model(dir);
    cv_synth_shape ll = g2;
    ll.heads = 8, ll.kv_heads = 2, ll.intermediate = 688, ll.dtype = CV_DT_BF16, ll.seed = 9;
    ll.tie_embeddings = 0, ll.bos_id = 1;
    snprintf(dir, sizeof dir, "%s/llama", tmp);
    ck_assert_msg(cv_synth_llama(dir, &ll, &err) == CV_OK, "%s", err.msg);
    link_tokenizer(dir, "llama-tiny");
    check_model(dir);
    tu_rmtree(tmp);
}
END_TEST

int main(void) {
    int skip = cuda_suite_skip("test_cuda_step");
    if (skip) return skip;
    Suite *s = suite_create("cuda_step");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fixtures_graph_and_device_token);
    tcase_add_test(tc, test_synth_graph_and_device_token);
    suite_add_tcase(s, tc);
    int failed = cuda_suite_run(s);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
