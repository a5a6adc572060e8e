/* test_e2e.c — the `corevital run` binary end to end: a valid trace (every key, type and order,
 * checked by cv_trace_validate) from GPT-2 and Llama fixtures, greedy tokens identical to
 * Hugging Face's greedy continuation, the real Llama 2 and Llama 3 tokenizers (tests/data) attached
 * to tiny random Llama models, reproducible sampling per seed, and the --out forms. The binary is
 * $CV_TEST_BIN (set by make test) or ./corevital. */
#define _DEFAULT_SOURCE
#include "corevital/backend.h"
#include "corevital/report.h"
#include "corevital/safetensors.h"
#include "corevital/synth.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *bin(void) {
    const char *b = getenv("CV_TEST_BIN");
    return b && *b ? b : "./corevital";
}

/* Run the binary with args (NULL-terminated), stdout into out_path, stderr to /dev/null; return
 * the exit code. */
static int run_to(const char *const *args, const char *out_path) {
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[64];
        int n = 0;
        argv[n++] = bin();
        for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
        argv[n] = NULL;
        if (!freopen(out_path, "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int run(const char *const *args) {
    return run_to(args, "/dev/null");
}

static cJSON *load_valid_trace(const char *path) {
    char *text;
    size_t n;
    cv_error err = {0};
    ck_assert_msg(cv_read_file(path, &text, &n, &err) == CV_OK, "%s", err.msg);
    cv_status s = cv_trace_validate(text, &err);
    ck_assert_msg(s == CV_OK, "%s: %s", path, err.msg);
    cJSON *doc = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

static const cJSON *get(const cJSON *o, const char *path) { /* "a.b.c" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

/* Greedy run of prompt p0 of a fixture: tokens equal HF's greedy ids. */
static void greedy_matches_hf(const char *fixture, int n_tokens, int seq2seq) {
    char dir[256], refp[300], out[600];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", fixture);
    snprintf(refp, sizeof refp, "%s/ref.safetensors", dir);
    cv_st *ref;
    cv_error err = {0};
    ck_assert_int_eq(cv_st_open(refp, &ref, &err), CV_OK);
    const char *text = cv_st_metadata(ref, "p0.text");
    size_t G;
    int32_t *want = tu_ref_ids(ref, "p0.greedy_ids", &G);
    size_t P;
    int32_t *want_prompt = tu_ref_ids(ref, "p0.input_ids", &P);
    const char *tmp = tu_tmpdir("e2e");
    snprintf(out, sizeof out, "%s/trace.json", tmp);
    char nt[16];
    snprintf(nt, sizeof nt, "%d", n_tokens);
    const char *args[] = {"run", "--model",          dir, "--prompt", text, "--temperature",
                          "0",   "--max_new_tokens", nt,  "--out",    out,  NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    const cJSON *pids = get(doc, "prompt.token_ids");
    ck_assert_int_eq(cJSON_GetArraySize(pids), (int)P);
    for (size_t i = 0; i < P; i++)
        ck_assert_int_eq(cJSON_GetArrayItem(pids, (int)i)->valueint, want_prompt[i]);
    const cJSON *ids = get(doc, "generated.token_ids");
    int n = cJSON_GetArraySize(ids);
    ck_assert_int_ge(n, 1);
    for (int i = 0; i < n && i < (int)G; i++)
        ck_assert_msg(cJSON_GetArrayItem(ids, i)->valueint == want[i], "%s token %d: %d vs HF %d",
                      fixture, i, cJSON_GetArrayItem(ids, i)->valueint, want[i]);
    const cJSON *tl = get(doc, "timeline");
    ck_assert_int_eq(cJSON_GetArraySize(tl), n);
    ck_assert_int_eq(get(cJSON_GetArrayItem(tl, 0), "step_index")->valueint, (int)P);
    ck_assert_int_eq(get(doc, "summary.total_steps")->valueint, (int)P + n);
    if (!seq2seq) {
        ck_assert(cJSON_IsNull(get(doc, "encoder_layers")));
        ck_assert(cJSON_IsNull(get(cJSON_GetArrayItem(get(cJSON_GetArrayItem(tl, 0), "layers"), 0),
                                   "cross_attention")));
    } else { /* one summary per encoder layer; every decoder layer has cross-attention */
        const cJSON *enc = get(doc, "encoder_layers");
        ck_assert_int_eq(cJSON_GetArraySize(enc), get(doc, "model.num_layers")->valueint);
        ck_assert(cJSON_IsNull(get(cJSON_GetArrayItem(enc, 0), "cross_attention")));
        for (int i = 0; i < n; i++) {
            const cJSON *layers = get(cJSON_GetArrayItem(tl, i), "layers");
            for (int j = 0; j < cJSON_GetArraySize(layers); j++) {
                const cJSON *x = get(cJSON_GetArrayItem(layers, j), "cross_attention");
                ck_assert(cJSON_IsObject(x));
                ck_assert(cJSON_IsNumber(get(x, "entropy_mean")));
            }
        }
    }
    cJSON_Delete(doc);
    free(want);
    free(want_prompt);
    cv_st_close(ref);
    tu_rmtree(tmp);
}

START_TEST(test_gpt2_greedy_trace) {
    greedy_matches_hf("gpt2-tiny", 32, 0);
}
END_TEST
START_TEST(test_llama_greedy_trace) {
    greedy_matches_hf("llama-tiny", 32, 0);
}
END_TEST
START_TEST(test_t5_greedy_trace) {
    greedy_matches_hf("t5-tiny", 16, 1);
}
END_TEST
START_TEST(test_t5v11_greedy_trace) {
    greedy_matches_hf("t5v11-tiny", 16, 1);
}
END_TEST

/* A random Llama of shape sh written to dir, with a real tokenizer (tests/data/tokenizers)
 * linked in. */
/* Symlink files of a tokenizer directory into a model directory. */
static void link_files(const char *dir, const char *from, const char *const *files, int n) {
    for (int i = 0; i < n; i++) {
        char src[800], dst[800];
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        char *abs = realpath(src, NULL);
        ck_assert_msg(abs != NULL, "missing %s", src);
        ck_assert_int_eq(symlink(abs, dst), 0);
        free(abs);
    }
}

static void synth_llama_with_tokenizer(const char *dir, const cv_synth_shape *sh, const char *tok) {
    cv_error err = {0};
    ck_assert_msg(cv_synth_llama(dir, sh, &err) == CV_OK, "%s", err.msg);
    const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    link_files(dir, tu_tok(tok), files, 2);
}

/* A tiny random Llama with a real tokenizer attached. */
static void real_tokenizer_run(const char *tok, int vocab, int bos_id, int eos_id, int expect_bos) {
    const char *tmp = tu_tmpdir("e2e-tok");
    char dir[700], out[800];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    cv_synth_shape sh = {vocab, 32, 1, 2, 1, 32, 256, 1, CV_DT_BF16, 0.5f, 3, bos_id, eos_id, 0, 0};
    synth_llama_with_tokenizer(dir, &sh, tok);
    snprintf(out, sizeof out, "%s/trace.json", tmp);
    const char *args[] = {"run",
                          "--model",
                          dir,
                          "--prompt",
                          "Hello world, this is CoreVital!",
                          "--max_new_tokens",
                          "6",
                          "--seed",
                          "7",
                          "--out",
                          out,
                          NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    const cJSON *pids = get(doc, "prompt.token_ids");
    /* the ids Hugging Face gives for this text (transformers 5.24 AutoTokenizer) */
    static const int llama2[] = {1, 22557, 1526, 28725, 456, 349, 12197, 28790, 1803, 28808};
    static const int llama3[] = {9906, 1917, 11, 420, 374, 9708, 53, 2223, 0};
    const int *want = expect_bos ? llama2 : llama3;
    int nwant = expect_bos ? 10 : 9;
    ck_assert_int_eq(cJSON_GetArraySize(pids), nwant);
    for (int i = 0; i < nwant; i++)
        ck_assert_int_eq(cJSON_GetArrayItem(pids, i)->valueint, want[i]);
    ck_assert_str_eq(get(doc, "model.architecture")->valuestring, "LlamaForCausalLM");
    ck_assert_str_eq(get(doc, "model.dtype")->valuestring, "bfloat16");
    const cJSON *tl = get(doc, "timeline");
    ck_assert_int_ge(cJSON_GetArraySize(tl), 1);
    const cJSON *topk = get(cJSON_GetArrayItem(tl, 0), "logits_summary.topk");
    ck_assert_int_eq(cJSON_GetArraySize(topk), 5);
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}

START_TEST(test_llama2_tokenizer_run) {
    real_tokenizer_run("llama2", 32000, 1, 2, 1);
}
END_TEST
START_TEST(test_llama3_tokenizer_run) {
    real_tokenizer_run("llama3", 128256, 128000, 128001, 0);
}
END_TEST

static char *generated_ids(const char *path) {
    cJSON *doc = load_valid_trace(path);
    char *s = cJSON_PrintUnformatted(get(doc, "generated.token_ids"));
    cJSON_Delete(doc);
    return s;
}

START_TEST(test_sampling_reproducible_and_out_forms) {
    const char *tmp = tu_tmpdir("e2e-seed");
    char a[600], b[600], c[600], d[600];
    snprintf(a, sizeof a, "%s/a.json", tmp);
    snprintf(b, sizeof b, "%s/b.json", tmp);
    snprintf(c, sizeof c, "%s/c.json", tmp);
    snprintf(d, sizeof d, "%s/dir", tmp);
    const char *m = "tests/fixtures/gpt2-tiny";
    const char *r1[] = {"run",
                        "--model",
                        m,
                        "--prompt",
                        "In 1969, the moon",
                        "--seed",
                        "11",
                        "--temperature",
                        "1.5",
                        "--max_new_tokens",
                        "24",
                        "--out",
                        a,
                        NULL};
    const char *r2[] = {"run",
                        "--model",
                        m,
                        "--prompt",
                        "In 1969, the moon",
                        "--seed",
                        "11",
                        "--temperature",
                        "1.5",
                        "--max_new_tokens",
                        "24",
                        "--out",
                        b,
                        NULL};
    const char *r3[] = {"run",
                        "--model",
                        m,
                        "--prompt",
                        "In 1969, the moon",
                        "--seed",
                        "12",
                        "--temperature",
                        "1.5",
                        "--max_new_tokens",
                        "24",
                        "--out",
                        c,
                        NULL};
    ck_assert_int_eq(run(r1), 0);
    ck_assert_int_eq(run(r2), 0);
    ck_assert_int_eq(run(r3), 0);
    char *ta = generated_ids(a), *tb = generated_ids(b), *tc = generated_ids(c);
    ck_assert_str_eq(ta, tb);
    ck_assert_str_ne(ta, tc); /* 24 draws at temperature 1.5: another seed diverges */
    free(ta), free(tb), free(tc);
    /* --out DIR: the trace is DIR/trace_<id8>.json */
    const char *r4[] = {"run", "--model", m, "--prompt", "hi", "--max_new_tokens",
                        "2",   "--out",   d, NULL};
    ck_assert_int_eq(run(r4), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s/trace_*.json >/dev/null 2>&1", d);
    ck_assert_int_eq(system(cmd), 0);
    tu_rmtree(tmp);
}
END_TEST

START_TEST(test_runtime_errors_exit_1) {
    const char *tmp = tu_tmpdir("e2e-err");
    char out[600];
    snprintf(out, sizeof out, "%s/x.json", tmp);
    /* a missing model directory that is not a valid repo id either */
    const char *a1[] = {"run", "--model", "./no/such/dir", "--prompt", "x", "--out", out, NULL};
    ck_assert_int_eq(run(a1), 1);
    /* prompt + max_new_tokens beyond the context (gpt2-tiny has n_positions 128) */
    const char *a2[] = {"run",      "--model", "tests/fixtures/gpt2-tiny",
                        "--prompt", "x",       "--max_new_tokens",
                        "500",      "--out",   out,
                        NULL};
    ck_assert_int_eq(run(a2), 1);
    ck_assert_int_ne(access(out, F_OK), 0); /* no partial trace */
    tu_rmtree(tmp);
}
END_TEST

/* A remote sink that cannot be reached: exit 0, the local trace written, SINK_FAILED in it. */
START_TEST(test_remote_failure_keeps_local_trace) {
    const char *tmp = tu_tmpdir("e2e-sink");
    char out[600];
    snprintf(out, sizeof out, "%s/t.json", tmp);
    const char *args[] = {"run",
                          "--model",
                          "tests/fixtures/gpt2-tiny",
                          "--prompt",
                          "hi",
                          "--max_new_tokens",
                          "2",
                          "--remote_sink",
                          "http",
                          "--remote_url",
                          "http://127.0.0.1:9/traces",
                          "--out",
                          out,
                          NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    const cJSON *w = get(doc, "warnings");
    int found = 0;
    for (int i = 0; i < cJSON_GetArraySize(w); i++)
        found |= strcmp(get(cJSON_GetArrayItem(w, i), "code")->valuestring, "SINK_FAILED") == 0;
    ck_assert_msg(found, "no SINK_FAILED warning in the local trace");
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}
END_TEST

static int has_warning(const cJSON *doc, const char *code, const char *needle) {
    const cJSON *w = get(doc, "warnings");
    for (int i = 0; i < cJSON_GetArraySize(w); i++) {
        const cJSON *it = cJSON_GetArrayItem(w, i);
        if (strcmp(get(it, "code")->valuestring, code) == 0 &&
            (!needle || strstr(get(it, "message")->valuestring, needle)))
            return 1;
    }
    return 0;
}

/* Generation that ends at EOS before --max_new_tokens: the unused timeline steps are freed
 * (under make test-asan a leak makes the binary exit non-zero) and the trace has only the
 * generated steps. Seed 3 at temperature 5 draws EOS at step 83 of 100 on gpt2-tiny. */
START_TEST(test_eos_early_no_leak) {
    const char *tmp = tu_tmpdir("e2e-eos");
    char out[600];
    snprintf(out, sizeof out, "%s/t.json", tmp);
    const char *args[] = {"run",
                          "--model",
                          "tests/fixtures/gpt2-tiny",
                          "--prompt",
                          "The quick brown fox",
                          "--temperature",
                          "5",
                          "--top_k",
                          "0",
                          "--top_p",
                          "1",
                          "--seed",
                          "3",
                          "--max_new_tokens",
                          "100",
                          "--out",
                          out,
                          NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    int n = cJSON_GetArraySize(get(doc, "timeline"));
    ck_assert_int_lt(n, 100);
    ck_assert_int_eq(get(doc, "summary.generated_tokens")->valueint, n);
    const cJSON *ids = get(doc, "generated.token_ids");
    ck_assert_int_eq(cJSON_GetArrayItem(ids, n - 1)->valueint, 0); /* gpt2-tiny's EOS */
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}
END_TEST

/* Both quantization flags: 4-bit wins, and the trace says so in its warnings. */
START_TEST(test_quantize_conflict_warning_in_trace) {
    const char *tmp = tu_tmpdir("e2e-q");
    char out[600];
    snprintf(out, sizeof out, "%s/t.json", tmp);
    const char *args[] = {"run",
                          "--model",
                          "tests/fixtures/llama-tiny",
                          "--prompt",
                          "hi",
                          "--max_new_tokens",
                          "2",
                          "--quantize-4",
                          "--quantize-8",
                          "--out",
                          out,
                          NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    ck_assert(has_warning(doc, "QUANTIZATION_CONFLICT", "4-bit"));
    ck_assert_str_eq(get(doc, "model.quantization.method")->valuestring, "4-bit");
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}
END_TEST

/* --kv-dtype bf16 and --prefill-dtype bf16 on each family (T5: its decoder self-attention
 * cache, and the encoder's products; its cross-attention keys stay fp32): a valid trace stating
 * the option in extensions.kv_cache / extensions.prefill; a default run carries neither; a dtype
 * other than fp32 / bf16 is refused with exit 2 before loading. Numbers are checked against HF
 * in test_parity_decoder (test_kv_bf16, test_prefill_bf16). */
START_TEST(test_reduced_dtypes) {
    const char *tmp = tu_tmpdir("e2e-kv");
    char out[600];
    snprintf(out, sizeof out, "%s/t.json", tmp);
    const char *models[] = {"tests/fixtures/gpt2-tiny", "tests/fixtures/llama-tiny",
                            "tests/fixtures/t5-tiny"};
    const char *opts[][2] = {{"--kv-dtype", "extensions.kv_cache.dtype"},
                             {"--prefill-dtype", "extensions.prefill.dtype"}};
    cv_backend *be = cv_backend_cpu_create();
    int n_opts = be->prefill_bf16 ? 2 : 1; /* without AVX512-BF16 the CPU refuses bf16 prefill */
    be->destroy(be);
    for (int o = 0; o < n_opts; o++)
        for (int i = 0; i < 3; i++) {
            const char *args[] = {"run",         "--model",
                                  models[i],     "--prompt",
                                  "hello there", "--temperature",
                                  "0",           "--max_new_tokens",
                                  "6",           opts[o][0],
                                  "bf16",        "--out",
                                  out,           NULL};
            ck_assert_msg(run(args) == 0, "%s %s", models[i], opts[o][0]);
            cJSON *doc = load_valid_trace(out);
            const cJSON *kd = get(doc, opts[o][1]);
            ck_assert_msg(cJSON_IsString(kd) && strcmp(kd->valuestring, "bfloat16") == 0, "%s %s",
                          models[i], opts[o][0]);
            ck_assert_int_ge(cJSON_GetArraySize(get(doc, "timeline")), 1);
            cJSON_Delete(doc);
        }
    const char *plain[] = {"run",      "--model", "tests/fixtures/llama-tiny",
                           "--prompt", "hi",      "--max_new_tokens",
                           "2",        "--out",   out,
                           NULL};
    ck_assert_int_eq(run(plain), 0);
    cJSON *doc = load_valid_trace(out);
    ck_assert_ptr_null(get(doc, "extensions.kv_cache"));
    ck_assert_ptr_null(get(doc, "extensions.prefill"));
    cJSON_Delete(doc);
    for (int o = 0; o < 2; o++) {
        const char *bad[] = {"run",      "--model", "tests/fixtures/llama-tiny",
                             "--prompt", "hi",      opts[o][0],
                             "int8",     "--out",   out,
                             NULL};
        ck_assert_int_eq(run(bad), 2);
    }
    tu_rmtree(tmp);
}
END_TEST

/* --out is checked before the model loads: exit 2, nothing written. */
START_TEST(test_out_checked_before_load) {
    const char *tmp = tu_tmpdir("e2e-out");
    char file[600], under_file[700], dir_json[600];
    snprintf(file, sizeof file, "%s/plain", tmp);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(under_file, sizeof under_file, "%s/sub/t.json", file); /* parent is a file */
    snprintf(dir_json, sizeof dir_json, "%s/d.json", tmp);
    ck_assert_int_eq(mkdir(dir_json, 0755), 0); /* a .json path that is a directory */
    /* the model does not exist: a 2 (not 1) proves the check ran before loading */
    const char *a1[] = {"run", "--model", "no/such-model", "--prompt",
                        "x",   "--out",   under_file,      NULL};
    ck_assert_int_eq(run(a1), 2);
    const char *a2[] = {"run", "--model", "no/such-model", "--prompt",
                        "x",   "--out",   dir_json,        NULL};
    ck_assert_int_eq(run(a2), 2);
    const char *a3[] = {"run", "--model", "no/such-model", "--prompt", "x", "--out", file, NULL};
    ck_assert_int_eq(run(a3), 2); /* an output directory that is a file */
    /* a directory that does not exist yet under a writable one is fine (created on write) */
    char fresh[700];
    snprintf(fresh, sizeof fresh, "%s/new/deeper/t.json", tmp);
    const char *a4[] = {"run",      "--model", "tests/fixtures/gpt2-tiny",
                        "--prompt", "x",       "--max_new_tokens",
                        "1",        "--out",   fresh,
                        NULL};
    ck_assert_int_eq(run(a4), 0);
    ck_assert_int_eq(access(fresh, F_OK), 0);
    tu_rmtree(tmp);
}
END_TEST

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* SIGINT / SIGTERM during generation: the steps so far are written as a valid trace with
 * GENERATION_INTERRUPTED, exit 130 / 143, and no temporary file is left in the directory. */
static void interrupt_run(int signo, int want_rc) {
    const char *tmp = tu_tmpdir("e2e-sig");
    char dir[600], outdir[700];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    snprintf(outdir, sizeof outdir, "%s/out", tmp);
    /* slow enough to be interrupted: 4,000 steps over a growing cache (several seconds: a 4-layer
     * 128-wide model decoded too fast, since decode attention streams its cache, and finished
     * within the 1.5 s wait) */
    cv_synth_shape sh = {4096, 192, 8, 4, 4, 768, 4200, 1, CV_DT_F32, 0.5f, 7, 1, 4095, 0, 0};
    /* the Llama 2 tokenizer: the prompt's ids are all below 4096 */
    synth_llama_with_tokenizer(dir, &sh, "llama2");
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execl(bin(), bin(), "run", "--model", dir, "--prompt", "a b c", "--temperature", "0",
              "--max_new_tokens", "4000", "--out", outdir, (char *)NULL);
        _exit(127);
    }
    double t0 = now_s();
    int st, done = 0;
    while (now_s() - t0 < 1.5) { /* let it load and start generating */
        if (waitpid(pid, &st, WNOHANG) == pid) {
            done = 1;
            break;
        }
        usleep(20000);
    }
    ck_assert_msg(!done, "the run finished before it could be interrupted");
    kill(pid, signo);
    waitpid(pid, &st, 0);
    ck_assert_msg(WIFEXITED(st), "killed by signal %d instead of stopping cleanly",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    ck_assert_int_eq(WEXITSTATUS(st), want_rc);
    DIR *d = opendir(outdir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    char trace[1024] = "";
    int n_files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        n_files++;
        ck_assert_msg(strncmp(e->d_name, "trace_", 6) == 0, "stray file %s", e->d_name);
        snprintf(trace, sizeof trace, "%s/%s", outdir, e->d_name);
    }
    closedir(d);
    ck_assert_int_eq(n_files, 1);
    cJSON *doc = load_valid_trace(trace);
    int n = cJSON_GetArraySize(get(doc, "timeline"));
    ck_assert_int_ge(n, 1);
    ck_assert_int_lt(n, 4000);
    ck_assert_int_eq(get(doc, "summary.generated_tokens")->valueint, n);
    ck_assert(has_warning(doc, "GENERATION_INTERRUPTED", signo == SIGINT ? "SIGINT" : "SIGTERM"));
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}

START_TEST(test_sigint_writes_partial_trace) {
    interrupt_run(SIGINT, 130);
}
END_TEST

START_TEST(test_sigterm_writes_partial_trace) {
    interrupt_run(SIGTERM, 143);
}
END_TEST

/* ---- the health layer: --stop-on, --stream, --no-health ----------------------------------- */

/* A Llama whose blocks add next to nothing (std 1e-4) and whose head is the tied embedding: the
 * next token is the current one, forever, and the final vector repeats (cos_prev -> 1), so the
 * repetition rule holds from the third repeated pair on. */
START_TEST(test_stop_on_repetition) {
    const char *tmp = tu_tmpdir("e2e-rep");
    char dir[700], out[800], stream[800];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    cv_synth_shape sh = {50257, 64, 2, 2, 1, 64, 256, 1, CV_DT_F32, 1e-4f, 5, 50256, 50256, 0, 0};
    cv_error err = {0};
    ck_assert_msg(cv_synth_llama(dir, &sh, &err) == CV_OK, "%s", err.msg);
    const char *files[] = {"vocab.json", "merges.txt"}; /* GPT-2's original tokenizer files */
    link_files(dir, tu_tok("gpt2"), files, 2);
    snprintf(out, sizeof out, "%s/full.json", tmp);
    const char *full[] = {
        "run", "--model", dir, "--prompt", "the the the", "--temperature", "0", "--max_new_tokens",
        "12",  "--out",   out, "--quiet",  NULL};
    ck_assert_int_eq(run(full), 0);
    cJSON *doc = load_valid_trace(out);
    ck_assert(cJSON_IsTrue(get(doc, "extensions.health_flags.repetition_loop_detected")));
    int first = get(doc, "extensions.health_flags.repetition_first_step")->valueint;
    int P = cJSON_GetArraySize(get(doc, "prompt.token_ids"));
    /* cos_prev exists from step 1: the third pair over tau closes at step P + 3 at the earliest */
    ck_assert_int_ge(first, P + 3);
    ck_assert_int_lt(first, P + 12);
    cJSON_Delete(doc);

    /* --stop-on repetition stops right there; --stream wrote one line per step */
    snprintf(out, sizeof out, "%s/stop.json", tmp);
    snprintf(stream, sizeof stream, "%s/steps.jsonl", tmp);
    const char *stop[] = {
        "run",       "--model",          dir,        "--prompt", "the the the", "--temperature",
        "0",         "--max_new_tokens", "12",       "--out",    out,           "--quiet",
        "--stop-on", "nan, repetition",  "--stream", stream,     NULL};
    ck_assert_int_eq(run(stop), 0);
    doc = load_valid_trace(out);
    int n = cJSON_GetArraySize(get(doc, "timeline"));
    ck_assert_int_eq(n, first - P + 1);
    ck_assert_str_eq(get(doc, "extensions.health_stop.condition")->valuestring, "repetition");
    ck_assert_int_eq(get(doc, "extensions.health_stop.step_index")->valueint, first);
    ck_assert(has_warning(doc, "HEALTH_STOP", "repetition"));
    cJSON_Delete(doc);
    char *text;
    size_t len;
    ck_assert_msg(cv_read_file(stream, &text, &len, &err) == CV_OK, "%s", err.msg);
    int lines = 0;
    char *save = NULL; /* get() uses strtok itself */
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save), lines++) {
        cJSON *o = cJSON_Parse(line);
        ck_assert_msg(o, "stream line %d is not JSON: %s", lines, line);
        ck_assert_int_eq(get(o, "step_index")->valueint, P + lines);
        ck_assert(cJSON_IsNumber(get(o, "health.entropy_bits")));
        ck_assert(cJSON_IsBool(get(o, "flags.repetition_loop_detected")));
        cJSON_Delete(o);
    }
    ck_assert_int_eq(lines, n);
    free(text);
    tu_rmtree(tmp);
}
END_TEST

/* Weights large enough to overflow: NaN/Inf reach the hidden states, risk is 1.0 with
 * nan_or_inf, and --stop-on nan stops after the first step. */
START_TEST(test_stop_on_nan) {
    const char *tmp = tu_tmpdir("e2e-nan");
    char dir[700], out[800];
    snprintf(dir, sizeof dir, "%s/model", tmp);
    cv_synth_shape sh = {512, 32, 2, 2, 1, 32, 64, 0, CV_DT_F32, 1e18f, 3, 1, 2, 0, 0};
    cv_error err = {0};
    ck_assert_msg(cv_synth_gpt2(dir, &sh, &err) == CV_OK, "%s", err.msg);
    const char *files[] = {"tokenizer.json"};
    link_files(dir, "tests/fixtures/gpt2-tiny", files, 1);
    snprintf(out, sizeof out, "%s/t.json", tmp);
    const char *args[] = {"run", "--model", dir, "--prompt", "We're going", "--max_new_tokens",
                          "8",   "--out",   out, "--quiet",  "--stop-on",   "nan",
                          NULL};
    ck_assert_int_eq(run(args), 0);
    cJSON *doc = load_valid_trace(out);
    /* the run stops at the first step with a NaN / Inf, whichever it is */
    int P = cJSON_GetArraySize(get(doc, "prompt.token_ids"));
    int at = get(doc, "extensions.health_stop.step_index")->valueint;
    const cJSON *tl = get(doc, "timeline");
    ck_assert_int_eq(cJSON_GetArraySize(tl), at - P + 1);
    int i = 0;
    for (const cJSON *st = tl->child; st; st = st->next, i++) {
        int bad = 0;
        for (const cJSON *l = get(st, "layers")->child; l; l = l->next)
            bad |= cJSON_IsTrue(get(l, "extensions.health.has_nan")) ||
                   cJSON_IsTrue(get(l, "extensions.health.has_inf"));
        ck_assert_int_eq(bad, st->next == NULL); /* only the last step */
    }
    ck_assert(cJSON_IsTrue(get(doc, "extensions.health_flags.nan_detected")) ||
              cJSON_IsTrue(get(doc, "extensions.health_flags.inf_detected")));
    const cJSON *risk = get(doc, "extensions.risk.risk_score");
    ck_assert(risk && cJSON_IsNumber(risk) && risk->valuedouble == 1.0);
    ck_assert_str_eq(cJSON_GetArrayItem(get(doc, "extensions.risk.risk_factors"), 0)->valuestring,
                     "nan_or_inf");
    ck_assert(cJSON_IsArray(get(doc, "extensions.fingerprint.vector")));
    ck_assert_str_eq(get(doc, "extensions.health_stop.condition")->valuestring, "nan");
    cJSON_Delete(doc);
    tu_rmtree(tmp);
}
END_TEST

/* --no-health: no health keys anywhere, and every 0.2.0 statistic is the same as with it. */
START_TEST(test_no_health_same_statistics) {
    const char *tmp = tu_tmpdir("e2e-nohealth");
    char a[600], b[600], con[600];
    snprintf(a, sizeof a, "%s/a.json", tmp);
    snprintf(b, sizeof b, "%s/b.json", tmp);
    snprintf(con, sizeof con, "%s/console.txt", tmp);
    const char *on[] = {"run",
                        "--model",
                        "tests/fixtures/llama-tiny",
                        "--prompt",
                        "In 1969, the moon",
                        "--max_new_tokens",
                        "6",
                        "--seed",
                        "5",
                        "--out",
                        a,
                        NULL};
    const char *off[] = {"run",
                         "--model",
                         "tests/fixtures/llama-tiny",
                         "--prompt",
                         "In 1969, the moon",
                         "--max_new_tokens",
                         "6",
                         "--seed",
                         "5",
                         "--out",
                         b,
                         "--no-health",
                         NULL};
    ck_assert_int_eq(run_to(on, con), 0);
    ck_assert_int_eq(run(off), 0);
    char *text;
    size_t len;
    cv_error err = {0};
    ck_assert_msg(cv_read_file(con, &text, &len, &err) == CV_OK, "%s", err.msg);
    ck_assert_msg(strstr(text, "\nHealth: risk "), "no health line in:\n%s", text);
    free(text);
    cJSON *da = load_valid_trace(a), *db = load_valid_trace(b);
    ck_assert_ptr_null(get(db, "extensions.risk"));
    ck_assert_ptr_nonnull(get(da, "extensions.risk"));
    const cJSON *ta = get(da, "timeline"), *tb = get(db, "timeline");
    ck_assert_int_eq(cJSON_GetArraySize(ta), cJSON_GetArraySize(tb));
    for (const cJSON *x = ta->child, *y = tb->child; x && y; x = x->next, y = y->next) {
        ck_assert_ptr_null(get(y, "extensions.health"));
        cJSON *lx = cJSON_Duplicate(get(x, "logits_summary"), 1);
        ck_assert(cJSON_Compare(lx, get(y, "logits_summary"), 1));
        cJSON_Delete(lx);
        const cJSON *la = get(x, "layers"), *lb = get(y, "layers");
        for (const cJSON *p = la->child, *q = lb->child; p && q; p = p->next, q = q->next) {
            ck_assert(cJSON_Compare(get(p, "hidden_summary"), get(q, "hidden_summary"), 1));
            ck_assert(cJSON_Compare(get(p, "attention_summary"), get(q, "attention_summary"), 1));
        }
    }
    cJSON_Delete(da);
    cJSON_Delete(db);
    /* a bad condition is a usage error, before loading */
    const char *bad[] = {"run",      "--model", "tests/fixtures/llama-tiny",
                         "--prompt", "x",       "--stop-on",
                         "risk>2",   NULL};
    ck_assert_int_eq(run(bad), 2);
    tu_rmtree(tmp);
}
END_TEST

int main(void) {
    Suite *s = suite_create("e2e");
    TCase *tc = tcase_create("binary");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gpt2_greedy_trace);
    tcase_add_test(tc, test_llama_greedy_trace);
    tcase_add_test(tc, test_t5_greedy_trace);
    tcase_add_test(tc, test_t5v11_greedy_trace);
    tcase_add_test(tc, test_llama2_tokenizer_run);
    tcase_add_test(tc, test_llama3_tokenizer_run);
    tcase_add_test(tc, test_sampling_reproducible_and_out_forms);
    tcase_add_test(tc, test_runtime_errors_exit_1);
    tcase_add_test(tc, test_remote_failure_keeps_local_trace);
    tcase_add_test(tc, test_eos_early_no_leak);
    tcase_add_test(tc, test_quantize_conflict_warning_in_trace);
    tcase_add_test(tc, test_out_checked_before_load);
    tcase_add_test(tc, test_reduced_dtypes);
    tcase_add_test(tc, test_sigint_writes_partial_trace);
    tcase_add_test(tc, test_sigterm_writes_partial_trace);
    tcase_add_test(tc, test_stop_on_repetition);
    tcase_add_test(tc, test_stop_on_nan);
    tcase_add_test(tc, test_no_health_same_statistics);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
