/* generate.c — the product's main job: resolve and load the model, tokenize, prefill, decode
 * with the KV cache while the ops fill statistic records, sample, and build the report.
 *
 * One step i of the timeline (SPEC §3-§4): the forward pass over the step's input (the prompt at
 * step 0, generated token i-1 after) fills one arena of records — hidden stats of every block,
 * attention stats of every layer, logits stats of the next-token row — which is copied back
 * once, finalized into the report, and the next token is chosen from the same logits. */
#include "corevital/generate.h"
#include "gen_health.h"
#include "corevital/log.h"
#include "corevital/run.h"
#include "corevital/sampler.h"

#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* from this many decode steps (generation.max_new_tokens) on, the session asks for the weights'
 * huge-page arena (cv_model_opts.weights_arena): it saves up to ~1.2 ms a step (none where the
 * page cache already holds the checkpoint in large folios) and costs 0.1-2 s of load on this
 * project's VMs (docs/perf.md) */
#define CV_ARENA_MIN_STEPS 1024

/* Set from a signal handler: plain sig_atomic_t store, read once per step. */
static volatile sig_atomic_t g_stop_signal = 0;

void cv_generate_request_stop(int signo) {
    g_stop_signal = (sig_atomic_t)(signo > 0 ? signo : SIGINT);
}
int cv_generate_stop_signal(void) {
    return (int)g_stop_signal;
}
void cv_generate_reset_stop(void) {
    g_stop_signal = 0;
}

static const char *signal_name(int signo) {
    return signo == SIGTERM ? "SIGTERM" : signo == SIGINT ? "SIGINT" : "a signal";
}

static void hook_begin(const cv_gen_hooks *h, const char *name) {
    if (h && h->begin) h->begin(h->user, name);
}
static void hook_end(const cv_gen_hooks *h, const char *name) {
    if (h && h->end) h->end(h->user, name);
}

/* The backend's sticky failure (backend.h: status), if it has one, as this run's error. Ops
 * return nothing and a GPU runs them asynchronously, so this is checked once per step after the
 * step's downloads, after the encoder, and after the weights are loaded. */
static cv_status backend_check(cv_backend *be, cv_error *err) {
    return be->status ? be->status(be, err) : CV_OK;
}

/* The host buffer the step downloads into: the backend's own kind when it has one (pinned),
 * else (or when that fails, e.g. on a backend already failed) plain malloc; *own says which. */
static void *host_buf(cv_backend *be, size_t bytes, int *own) {
    void *p = be->host_alloc && be->host_free ? be->host_alloc(be, bytes) : NULL;
    *own = p != NULL;
    return p ? p : malloc(bytes);
}
static void host_buf_free(cv_backend *be, void *p, int own) {
    if (own)
        be->host_free(be, p);
    else
        free(p);
}

int cv_step_on_device_enabled(void) {
    const char *v = getenv("CV_STEP_ON_DEVICE");
    return !(v && strcmp(v, "0") == 0);
}

static cv_backend *pick_backend(const cv_config *cfg, const char **device, cv_error *err) {
    const char *req = cfg->device.requested ? cfg->device.requested : "auto";
    if (strcmp(req, "cpu") != 0) {
        /* loads the CUDA module (src/backend/cuda_loader.c) only now, when a GPU is wanted */
        cv_backend *b = cv_backend_cuda_create(0, err);
        if (b) {
            *device = "cuda";
            return b;
        }
        if (strcmp(req, "cuda") == 0)
            CV_WARN("CUDA requested but not available: %s; falling back to CPU", err->msg);
        else
            CV_INFO("Device auto: %s, using the CPU", err->msg);
        err->code = CV_OK;
        err->msg[0] = '\0';
    }
    *device = "cpu";
    cv_backend *b = cv_backend_cpu_create();
    if (!b) cv_fail(err, CV_ERR_NOMEM, "out of memory creating the CPU backend");
    return b;
}

/* model.kv_dtype / model.prefill_dtype (config checked: float32, bfloat16, fp32, bf16) */
static cv_dtype reduced_dtype(const char *v) {
    return v && (strcmp(v, "bfloat16") == 0 || strcmp(v, "bf16") == 0) ? CV_DT_BF16 : CV_DT_F32;
}

cv_status cv_session_open(const cv_config *cfg, cv_session **out, const cv_gen_hooks *hooks,
                          cv_error *err) {
    *out = NULL;
    cv_session *s = calloc(1, sizeof *s);
    if (!s) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    if (cfg->threads > 0) omp_set_num_threads(cfg->threads);
    cv_status st;
    hook_begin(hooks, "resolve");
    st = cv_hub_resolve(cfg->model.hf_id, cfg->model.revision, &s->hub, err);
    hook_end(hooks, "resolve");
    if (st != CV_OK) goto fail;
    hook_begin(hooks, "backend_init");
    s->be = pick_backend(cfg, &s->device, err);
    hook_end(hooks, "backend_init");
    if (!s->be) {
        st = CV_ERR_NOMEM;
        goto fail;
    }
    hook_begin(hooks, "tokenizer_load");
    st = cv_tokenizer_load_dir(s->hub.dir, &s->tok, err);
    hook_end(hooks, "tokenizer_load");
    if (st != CV_OK) goto fail;
    /* the weights' huge-page arena: asked for where the generation is long enough to pay */
    cv_model_opts mo = {CV_WFMT_DENSE, CV_DT_COUNT, reduced_dtype(cfg->model.kv_dtype),
                        reduced_dtype(cfg->model.prefill_dtype),
                        cfg->generation.max_new_tokens >= CV_ARENA_MIN_STEPS};
    if (cfg->model.load_in_4bit) {
        if (cfg->model.load_in_8bit)
            CV_WARN("both 4-bit and 8-bit quantization requested: using 4-bit (NF4)");
        mo.quant = CV_WFMT_NF4;
    } else if (cfg->model.load_in_8bit) {
        mo.quant = CV_WFMT_INT8;
    }
    if (cfg->model.dtype && strcmp(cfg->model.dtype, "auto") != 0 &&
        (cv_dtype_parse_torch(cfg->model.dtype, &mo.dtype) != 0 ||
         (mo.dtype != CV_DT_F32 && mo.dtype != CV_DT_F16 && mo.dtype != CV_DT_BF16))) {
        st = cv_fail(err, CV_ERR_CONFIG,
                     "model.dtype '%s' is not one of auto, float32, float16, bfloat16",
                     cfg->model.dtype);
        goto fail;
    }
    hook_begin(hooks, "weights_load");
    st = cv_model_load_opts(s->hub.dir, s->be, &mo, &s->m, err);
    if (st == CV_OK && (st = backend_check(s->be, err)) != CV_OK)
        cv_error_prefix(err, "loading the weights");
    hook_end(hooks, "weights_load");
    if (st != CV_OK) goto fail;
    int dim = cfg->summaries.hidden.sketch.method &&
                      strcmp(cfg->summaries.hidden.sketch.method, "randproj") == 0
                  ? cfg->summaries.hidden.sketch.dim
                  : 0;
    if (cv_sketch_init(&s->sketch, s->m->cfg.hidden_size, dim,
                       (uint32_t)cfg->summaries.hidden.sketch.seed)) {
        st = cv_fail(err, CV_ERR_CONFIG,
                     "summaries.hidden.sketch.dim %d is too large (at most 256)", dim);
        goto fail;
    }
    *out = s;
    return CV_OK;
fail:
    cv_session_close(s);
    return st;
}

void cv_session_close(cv_session *s) {
    if (!s) return;
    cv_model_free(s->m);
    cv_tokenizer_free(s->tok);
    cv_sketch_free(&s->sketch);
    if (s->be) s->be->destroy(s->be);
    free(s);
}

cv_status cv_session_tokenize(cv_session *s, const char *prompt, int32_t **ids, size_t *n,
                              cv_error *err) {
    cv_status st = cv_tokenizer_encode(s->tok, prompt, strlen(prompt), 1, ids, n, err);
    if (st != CV_OK) return st;
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return cv_fail(err, CV_ERR_RUNTIME, "the prompt is empty after tokenization");
    }
    for (size_t i = 0; i < *n; i++)
        if ((*ids)[i] < 0 || (*ids)[i] >= s->m->cfg.vocab_size) {
            int32_t bad = (*ids)[i];
            free(*ids);
            *ids = NULL;
            return cv_fail(err, CV_ERR_RUNTIME,
                           "token id %d from the tokenizer is outside the model's "
                           "vocabulary of %d",
                           bad, s->m->cfg.vocab_size);
        }
    return CV_OK;
}

/* ---- report filling ----------------------------------------------------------------------- */

static void fill_hidden(cv_hidden_summary *h, const double *rec, const cv_session *s,
                        const cv_config *cfg, cv_error *err) {
    const cv_stat_list *l = &cfg->summaries.hidden.stats;
    if (!cfg->summaries.hidden.enabled) return;
    cv_hidden_stats st;
    cv_hidden_finalize(rec, s->m->cfg.hidden_size, &s->sketch, &st);
    if (cv_config_has_stat(l, "mean")) h->mean = cv_num_of(st.mean);
    if (cv_config_has_stat(l, "std")) h->std = cv_num_of(st.std);
    if (cv_config_has_stat(l, "l2_norm_mean")) h->l2_norm_mean = cv_num_of(st.l2_norm_mean);
    if (cv_config_has_stat(l, "max_abs")) h->max_abs = cv_num_of(st.max_abs);
    if (st.sketch_dim > 0 && cv_hidden_alloc_sketch(h, (size_t)st.sketch_dim, err) == CV_OK)
        memcpy(h->sketch, st.sketch, sizeof(double) * (size_t)st.sketch_dim);
}

static void fill_attn(cv_attention_summary *a, const double *rec, const cv_config *cfg) {
    const cv_stat_list *l = &cfg->summaries.attention.stats;
    if (!cfg->summaries.attention.enabled) return;
    cv_attn_stats st;
    cv_attn_finalize(rec, &st);
    if (cv_config_has_stat(l, "entropy_mean")) a->entropy_mean = cv_num_of(st.entropy_mean);
    if (cv_config_has_stat(l, "entropy_min")) a->entropy_min = cv_num_of(st.entropy_min);
    if (cv_config_has_stat(l, "concentration_max"))
        a->concentration_max = cv_num_of(st.concentration_max);
}

static cv_status fill_logits(cv_logits_summary *o, const double *rec, const cv_session *s,
                             const cv_config *cfg, cv_error *err) {
    const cv_stat_list *l = &cfg->summaries.logits.stats;
    if (!cfg->summaries.logits.enabled) return CV_OK;
    cv_logit_stats st;
    cv_logits_finalize(rec, &st);
    if (cv_config_has_stat(l, "entropy")) o->entropy = cv_num_of(st.entropy);
    if (cv_config_has_stat(l, "top1_top2_margin")) o->top1_top2_margin = cv_num_of(st.margin);
    if (cv_config_has_stat(l, "topk_probs") && st.k > 0) {
        int k = st.k < cfg->summaries.logits.topk ? st.k : cfg->summaries.logits.topk;
        cv_status rc = cv_logits_alloc_topk(o, (size_t)k, err);
        if (rc != CV_OK) return rc;
        for (int i = 0; i < k; i++) {
            o->topk[i].token_id = st.ids[i];
            o->topk[i].token_text = cv_tokenizer_decode(s->tok, &st.ids[i], 1, 0, 0);
            o->topk[i].prob =
                isfinite(st.probs[i]) ? cv_round_decimals(st.probs[i], 3) : st.probs[i];
            if (!o->topk[i].token_text) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
        }
    }
    return CV_OK;
}

static void fill_layers(cv_layer_summary *layers, int n, double *host, const cv_stats_layout *lay,
                        const cv_session *s, const cv_config *cfg, cv_error *err) {
    for (int j = 0; j < n; j++) {
        fill_hidden(&layers[j].hidden_summary, cv_stats_hidden(host, lay, j), s, cfg, err);
        fill_attn(&layers[j].attention_summary, cv_stats_attn(host, lay, j), cfg);
        if (lay->has_cross) {
            layers[j].has_cross_attention = 1;
            fill_attn(&layers[j].cross_attention, cv_stats_cross(host, lay, j), cfg);
        }
    }
}

/* extensions.<key> = {"dtype": <torch name>} */
static cv_status add_dtype_ext(cv_report *rep, const char *key, cv_dtype dt, cv_error *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "dtype", cv_dtype_torch_name(dt)) ||
        (!rep->extensions && !(rep->extensions = cJSON_CreateObject()))) {
        cJSON_Delete(o);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(rep->extensions, key, o);
    return CV_OK;
}

static int is_eos(const cv_session *s, int32_t id) {
    const cv_model_config *c = &s->m->cfg;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return 1;
    return c->n_eos == 0 && id == cv_tokenizer_eos_id(s->tok);
}

cv_status cv_session_fill_report(cv_session *s, const cv_config *cfg, const char *prompt,
                                 const int32_t *ids, size_t P, cv_report *rep, cv_error *err) {
    const cv_model_config *c = &s->m->cfg;
    cv_model_info *mi = &rep->model;
    cv_status st;
    const char *rev = s->hub.commit[0] ? s->hub.commit : cfg->model.revision;
    /* what was actually applied: packed NF4 is reported as uint8 and int8 as int8, like
     * transformers + bitsandbytes; otherwise the dtype the matrices are held in */
    int quantized = s->m->n_quantized > 0;
    const char *dtype_name = !quantized                   ? cv_dtype_torch_name(s->m->weight_dtype)
                             : s->m->quant == CV_WFMT_NF4 ? "uint8"
                                                          : "int8";
    if ((st = cv_report_set_str(&mi->hf_id, cfg->model.hf_id, err)) ||
        (st = cv_report_set_str(&mi->revision, rev, err)) ||
        (st = cv_report_set_str(&mi->architecture, c->architecture, err)) ||
        (st = cv_report_set_str(&mi->tokenizer_hf_id, cfg->model.hf_id, err)) ||
        (st = cv_report_set_str(&mi->dtype, dtype_name, err)) ||
        (st = cv_report_set_str(&mi->device, s->device, err)) ||
        (st = cv_report_set_str(&rep->prompt.text, prompt, err)))
        return st;
    if (cfg->model.load_in_4bit && cfg->model.load_in_8bit &&
        (st = cv_report_add_warning(rep, "QUANTIZATION_CONFLICT",
                                    "both 4-bit and 8-bit quantization were requested "
                                    "(--quantize-4 and --quantize-8): 4-bit (NF4) was applied")))
        return st;
    mi->num_layers = c->num_layers;
    mi->hidden_size = c->hidden_size;
    mi->num_attention_heads = c->num_heads;
    mi->quantization.enabled = quantized;
    if (quantized && (st = cv_report_set_str(&mi->quantization.method,
                                             s->m->quant == CV_WFMT_NF4 ? "4-bit" : "8-bit", err)))
        return st;
    /* a non-default KV cache or prefill precision is stated (the default traces stay as the
     * Python tool writes them) */
    if (s->m->kv_dtype != CV_DT_F32 && (st = add_dtype_ext(rep, "kv_cache", s->m->kv_dtype, err)))
        return st;
    if (s->m->prefill_dtype != CV_DT_F32 &&
        (st = add_dtype_ext(rep, "prefill", s->m->prefill_dtype, err)))
        return st;
    int64_t *ids64 = malloc(sizeof(int64_t) * (P ? P : 1));
    if (!ids64) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < P; i++) ids64[i] = ids[i];
    st = cv_report_set_ids(&rep->prompt.token_ids, &rep->prompt.n_token_ids, ids64, P, err);
    free(ids64);
    return st;
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* The ops of one step, in order: the arena reset (on the backend when it can), the forward pass,
 * the health ops on its output, and in the device-step loop (dstep) the greedy choice written
 * to the arena's step slots and the step words. In the device-step loop every decode step is
 * this same sequence with the same arguments, which is what lets it be recorded once as a
 * graph and replayed (backend.h graph_*). */
static cv_status issue_step(cv_session *s, cv_gen_health *gh, int i, const int32_t *in, int T,
                            int pos, int cap, double *dev, double *host, const cv_stats_layout *ly,
                            const int32_t *prompt, int32_t *dstep, float **logits, cv_error *err) {
    cv_backend *be = s->be;
    cv_model *m = s->m;
    if (dev && be->stats_reset) { /* reset where the arena lives: no upload */
        be->stats_reset(be, dev, ly);
    } else if (dev) {
        cv_stats_arena_reset(host, ly);
        be->upload(be, dev, host, ly->total * sizeof(double));
    }
    /* a long prompt in row chunks (model.h cv_prefill_chunks; cap 0: one call): each extends the
     * cache and adds its rows to the same records; only the last computes the LM head's row */
    cv_status st = CV_OK;
    const int n = cv_prefill_chunks(T, cap);
    for (int c = 0; c < n && st == CV_OK; c++) {
        const int r0 = cv_prefill_chunk_start(T, cap, n, c),
                  R = cv_prefill_chunk_start(T, cap, n, c + 1) - r0;
        m->head_skip = c < n - 1;
        st = m->ops->forward(m, in ? in + r0 : NULL, R, pos + r0, dev, ly, NULL, 0, logits, err);
        m->head_skip = 0;
        if (st == CV_OK) st = cv_gen_health_after_forward(gh, i, dev, ly, prompt, r0, err);
    }
    if (st == CV_OK && dstep)
        be->pick_greedy(be, *logits, m->cfg.vocab_size, dev ? cv_stats_step(dev, ly) : NULL, dstep);
    return st;
}

/* CV_CUDA_GRAPH=0 turns the step graphs off (the backend reads it too; checked here so that the
 * loop does not even try). */
static int graphs_enabled(void) {
    const char *v = getenv("CV_CUDA_GRAPH");
    return !(v && strcmp(v, "0") == 0);
}

/* The report's generated part from the n tokens kept: the timeline cut to them (the loop stopped
 * early, or failed after them), the ids, the text and the summary counts. */
static cv_status finish_report(cv_session *s, cv_report *rep, int instrumented, const int32_t *gen,
                               int n, size_t P, double elapsed, cv_error *err) {
    if (instrumented) cv_report_truncate_timeline(rep, (size_t)n);
    int64_t *ids64 = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    char *text = cv_tokenizer_decode(s->tok, gen, (size_t)n, 1, 1);
    if (!ids64 || !text) {
        free(ids64);
        free(text);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) ids64[i] = gen[i];
    cv_status st = cv_report_set_ids(&rep->generated.token_ids, &rep->generated.n_token_ids, ids64,
                                     (size_t)n, err);
    free(ids64);
    free(rep->generated.output_text);
    rep->generated.output_text = text;
    rep->summary.prompt_tokens = (int64_t)P;
    rep->summary.generated_tokens = n;
    rep->summary.total_steps = (int64_t)P + n;
    rep->summary.elapsed_ms = (int64_t)elapsed;
    return st;
}

cv_status cv_session_generate(cv_session *s, const cv_config *cfg, const int32_t *prompt, size_t P,
                              int instrumented, cv_report *rep, int32_t **out_ids, size_t *out_n,
                              double *elapsed_ms, const cv_gen_hooks *hooks, cv_error *err) {
    cv_model *m = s->m;
    cv_backend *be = s->be;
    const cv_model_config *c = &m->cfg;
    const int V = c->vocab_size, G = cfg->generation.max_new_tokens;
    const int seq2seq = m->ops->encode != NULL;
    const int L = cv_model_num_layers(m);
    const int ctx = c->max_positions;
    if (!seq2seq && (int)P + G > ctx)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "the prompt (%zu tokens) plus max_new_tokens (%d) exceeds the "
                       "model's context of %d positions",
                       P, G, ctx);
    /* A session keeps its buffers from one generation to the next and reserves only when this
     * one needs more than they hold, growing each capacity to the larger of the two. Freeing and
     * reallocating them for every prompt of a batch made each long prompt first-touch its KV
     * cache and activations again (about 0.3 GB at 4,096 tokens of SmolLM2). The capacities in
     * use then exceed this generation's: the forward checks against them, and the cache's row
     * strides follow them, not the prompt. */
    /* a decoder-only prompt on the CPU runs in row chunks (model.h), unless the sparse prompt
     * attention is asked for: its per-head lists are kept from one call over the prompt */
    const int cap = !seq2seq && strcmp(be->name, "cpu") == 0 && !cfg->health.prompt_heads
                        ? cv_model_prefill_rows()
                        : 0;
    const int need_T = cv_prefill_chunk_max((int)P, cap), need_ctx = seq2seq ? G : (int)P + G;
    cv_status st = CV_OK;
    if (need_T > m->max_T || need_ctx > m->n_ctx || m->logit_rows < 1)
        st = m->ops->reserve(m, need_T > m->max_T ? need_T : m->max_T,
                             need_ctx > m->n_ctx ? need_ctx : m->n_ctx, 1, err);
    if (st != CV_OK) { /* buffers may be half released: the next generation reserves anew */
        m->max_T = m->n_ctx = m->logit_rows = 0;
        return st;
    }

    /* before any goto done: the failure path reads them */
    double t0 = cv_now_ms();
    int n_gen = 0, n_done = 0, loop_started = 0;
    int32_t *dstep = NULL;
    cv_gen_health *gh = NULL;
    if ((st = cv_gen_health_open(&gh, s, cfg, (int)P, instrumented, err)) != CV_OK) return st;
    /* lay: a decode step's records; lay0: the prefill's, with the prompt analysis (health) */
    int topk = cfg->summaries.logits.topk;
    if (gh && topk < 10) topk = 10; /* topk_mass sums the top 10 */
    cv_stats_layout lay, lay0;
    cv_stats_layout_init(&lay, L, c->hidden_size, seq2seq, topk);
    lay0 = lay;
    cv_gen_health_layout(gh, &lay, 0);
    cv_gen_health_layout(gh, &lay0, !seq2seq);
    size_t bytes = (lay0.total > lay.total ? lay0.total : lay.total) * sizeof(double);
    int host_own = 0;
    double *host = host_buf(be, bytes, &host_own),
           *dev = instrumented ? be->alloc(be, bytes) : NULL;
    const char *stop = NULL;
    int64_t stop_step = -1;
    float *row = malloc(sizeof(float) * (size_t)V);
    int32_t *gen = malloc(sizeof(int32_t) * (size_t)(G > 0 ? G : 1));
    cv_sampler sampler;
    cv_sampling sp = {cfg->generation.do_sample, cfg->generation.temperature, cfg->generation.top_k,
                      cfg->generation.top_p};
    int sampler_ok = cv_sampler_init(&sampler, &sp, (uint64_t)cfg->generation.seed, V) == 0;
    if (!host || (instrumented && !dev) || !row || !gen || !sampler_ok) {
        st = cv_fail(err, CV_ERR_NOMEM, "out of memory for the generation loop");
        goto done;
    }
    if (rep && instrumented && (st = cv_report_alloc_timeline(rep, (size_t)G, (size_t)L, err)))
        goto done;

    t0 = cv_now_ms();
    if (seq2seq) { /* encoder once; its layers are summarized once */
        hook_begin(hooks, "encoder_forward");
        cv_stats_layout elay;
        cv_stats_layout_init(&elay, c->num_layers, c->hidden_size, 0, 1);
        cv_gen_health_layout(gh, &elay, 1);
        double *eh = malloc(elay.total * sizeof(double));
        double *ed = instrumented ? be->alloc(be, elay.total * sizeof(double)) : NULL;
        if (!eh || (instrumented && !ed)) {
            free(eh);
            if (ed) be->free(be, ed);
            st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (ed) {
            cv_stats_arena_reset(eh, &elay);
            be->upload(be, ed, eh, elay.total * sizeof(double));
        }
        st = m->ops->encode(m, prompt, (int)P, ed, &elay, NULL, err);
        if (st == CV_OK && ed) be->download(be, eh, ed, elay.total * sizeof(double));
        if (st == CV_OK && (st = backend_check(be, err)) != CV_OK) cv_error_prefix(err, "encoder");
        if (st == CV_OK && ed && rep &&
            (st = cv_report_alloc_encoder_layers(rep, (size_t)c->num_layers, err)) == CV_OK)
            fill_layers(rep->encoder_layers, c->num_layers, eh, &elay, s, cfg, err);
        if (st == CV_OK && ed) st = cv_gen_health_encoder(gh, eh, &elay, rep, err);
        free(eh);
        if (ed) be->free(be, ed);
        hook_end(hooks, "encoder_forward");
        if (st != CV_OK) goto done;
    }

    /* Greedy decoding of a decoder-only family keeps the chosen token on the backend: the step
     * parameters (backend.h CV_SP_*) hold the next input token and its position, pick_greedy
     * writes them and the next forward reads them (tokens NULL), so a step uploads nothing. They
     * are set once here: the prompt's last token at P - 1, which pick_greedy moves on to P.
     * CV_STEP_ON_DEVICE=0 passes the token from the host instead (same tokens, same trace). */
    if (!seq2seq && !cfg->generation.do_sample && P > 0 && be->pick_greedy && be->kv_store &&
        m->ops->step_on_device && cv_step_on_device_enabled()) {
        if (!(dstep = be->alloc(be, sizeof(int32_t) * CV_SP_WORDS))) {
            st = cv_fail(err, CV_ERR_NOMEM, "out of memory for the step parameters");
            goto done;
        }
        int32_t init[CV_SP_WORDS] = {prompt[P - 1], (int32_t)P - 1, 0, 0};
        be->upload(be, dstep, init, sizeof init);
        m->step = dstep;
    }

    /* Graphs (backend.h graph_*: CUDA graphs; the CPU has none): in the device-step loop every
     * decode step is the same launches with the same arguments, so decode step 2 (i == 2) is
     * recorded once and every later step replays it, one launch instead of ~16 per layer. Step 1
     * runs plainly first, so the scratch has grown to the step's needs before the recording
     * (nothing may allocate inside it). A failed recording is logged once by the backend and the
     * loop keeps plain launches (graph_state -1). */
    const int try_graph =
        dstep && be->graph_begin && be->graph_end && be->graph_launch && graphs_enabled();
    int graph_state = 0; /* 0: not recorded yet, 1: ready, -1: plain launches for good */
    float *logits = NULL;

    int pos = 0, loop_open = 0;
    int32_t cur = seq2seq ? c->decoder_start_token_id : 0;
    for (int i = 0; i < G; i++) {
        double ts = cv_now_ms();
        loop_started = 1;
        if (i == 0) hook_begin(hooks, seq2seq ? "decode_loop" : "prefill");
        if (i == 1 && !seq2seq) hook_begin(hooks, "decode_loop");
        if (i == 0 ? seq2seq : i == 1 && !seq2seq) loop_open = 1;
        const cv_stats_layout *ly = i == 0 && !seq2seq ? &lay0 : &lay;
        size_t ybytes = ly->total * sizeof(double);
        const int32_t *in = seq2seq ? &cur : i == 0 ? prompt : dstep ? NULL : &cur;
        int T = seq2seq ? 1 : (i == 0 ? (int)P : 1);
        int issued = 0;
        if (try_graph && graph_state == 1 && !(issued = be->graph_launch(be)))
            graph_state = 0; /* dropped by the backend (memory it used was freed): record again */
        if (!issued && try_graph && i >= 2 && graph_state == 0) {
            if (be->graph_begin(be)) { /* record the step; nothing runs until graph_launch */
                st = issue_step(s, gh, i, in, T, pos, cap, dev, host, ly, prompt, dstep, &logits,
                                err);
                graph_state = be->graph_end(be) ? 1 : -1;
                if (st != CV_OK) goto done;
                issued = graph_state == 1 && be->graph_launch(be);
            } else {
                graph_state = -1;
            }
        }
        if (!issued) { /* plain launches (and the fallback of a failed recording) */
            st = issue_step(s, gh, i, in, T, pos, cap, dev, host, ly, prompt, dstep, &logits, err);
            if (st != CV_OK) goto done;
        }
        pos += T;
        int32_t next = 0;
        float next_logit = 0.0f;
        /* greedy with statistics: the choice is written beside the records on the backend and
         * comes back with them in the step's one download */
        const int picked = !cfg->generation.do_sample && dev && be->pick_greedy;
        if (cfg->generation.do_sample) {
            be->download(be, row, logits, sizeof(float) * (size_t)V);
            next = cv_sampler_next(&sampler, row);
            next_logit = row[next];
        } else if (dstep && picked) {
            /* issue_step picked it: it comes back with the arena */
        } else if (picked) {
            be->pick_greedy(be, logits, V, cv_stats_step(dev, ly), NULL);
        } else if (dstep) { /* no statistics: the token alone comes back (into host: pinned) */
            be->download(be, host, dstep + CV_SP_TOKEN, sizeof next);
            memcpy(&next, host, sizeof next);
            if (gh && next >= 0 && next < V)
                be->download(be, &next_logit, logits + next, sizeof(float));
        } else {
            next = be->argmax(be, logits, V);
            if (gh && next >= 0 && next < V)
                be->download(be, &next_logit, logits + next, sizeof(float));
        }
        if (dev) be->download(be, host, dev, ybytes);
        /* what was copied back (token, row, records) is only trusted once the backend says so */
        if ((st = backend_check(be, err)) != CV_OK) {
            cv_error_prefix(err, "generation step %lld", (long long)((int64_t)P + i));
            goto done;
        }
        if (picked) {
            const double *slot = cv_stats_step(host, ly);
            next = (int32_t)slot[CV_STEP_TOKEN];
            next_logit = (float)slot[CV_STEP_LOGIT];
        }
        if (next < 0 || next >= V) { /* a failed backend answers -1: never use it */
            st = cv_fail(err, CV_ERR_RUNTIME,
                         "argmax returned token %d, outside the vocabulary of %d", next, V);
            cv_error_prefix(err, "generation step %lld", (long long)((int64_t)P + i));
            goto done;
        }
        if (i == 0 && !seq2seq)
            hook_end(hooks, "prefill");
        else if (hooks && hooks->step)
            hooks->step(hooks->user, cv_now_ms() - ts);
        gen[n_gen++] = next;
        cur = next;
        if (rep && dev) {
            cv_timeline_step *step = &rep->timeline[i];
            step->step_index = (int64_t)P + i;
            step->token_id = next;
            step->is_prompt_token = 0;
            step->token_text = cv_tokenizer_decode(s->tok, &next, 1, 0, 0);
            if (!step->token_text) {
                st = cv_fail(err, CV_ERR_NOMEM, "out of memory");
                goto done;
            }
            if ((st = fill_logits(&step->logits_summary, cv_stats_logits(host, ly), s, cfg, err)))
                goto done;
            fill_layers(step->layers, L, host, ly, s, cfg, err);
        }
        if (gh && (st = cv_gen_health_step(gh, i, host, ly, next, next_logit,
                                           rep ? &rep->timeline[i] : NULL, &stop, err)) != CV_OK)
            goto done;
        n_done = i + 1; /* step i is complete in the report */
        if (stop) {     /* --stop-on: the step is complete and recorded */
            stop_step = (int64_t)P + i;
            break;
        }
        if (is_eos(s, next)) break;
        int sig = cv_generate_stop_signal();
        if (sig && i + 1 < G) { /* the step is complete; stop before the next one */
            if (rep && (st = cv_report_add_warning(
                            rep, "GENERATION_INTERRUPTED",
                            "generation interrupted by %s after step %lld (%d of "
                            "%d new tokens generated)",
                            signal_name(sig), (long long)((int64_t)P + i), n_gen, G)))
                goto done;
            break;
        }
    }
    if (loop_open) hook_end(hooks, "decode_loop");
    double elapsed = cv_now_ms() - t0;
    if (elapsed_ms) *elapsed_ms = elapsed;

    if (rep && (st = finish_report(s, rep, instrumented, gen, n_gen, P, elapsed, err)) == CV_OK)
        st = cv_gen_health_finish(gh, rep, rep->prompt.text ? rep->prompt.text : "", stop,
                                  stop_step, err);
    if (out_ids) {
        *out_ids = gen;
        gen = NULL;
    }
    if (out_n) *out_n = (size_t)n_gen;
done:
    if (st != CV_OK && loop_started && rep && instrumented) {
        /* Keep what was measured: the steps completed before the failure, the reason as a
         * warning, the run-level health of those steps; the caller writes it and still fails. */
        cv_error e2 = {CV_OK, ""}; /* err keeps the failure */
        if (finish_report(s, rep, 1, gen, n_done, P, cv_now_ms() - t0, &e2) == CV_OK &&
            cv_report_add_warning(rep, "GENERATION_FAILED",
                                  "generation failed after %d of %d new tokens: %s", n_done, G,
                                  err->msg) == CV_OK) {
            if (n_done > 0)
                cv_gen_health_finish(gh, rep, rep->prompt.text ? rep->prompt.text : "", NULL, -1,
                                     &e2);
            rep->partial = 1;
        }
    }
    cv_gen_health_close(gh);
    cv_sampler_free(&sampler);
    if (be->graph_reset) be->graph_reset(be); /* before freeing what it points into */
    host_buf_free(be, host, host_own);
    if (dev) be->free(be, dev);
    if (dstep) {
        m->step = NULL;
        be->free(be, dstep);
    }
    free(row);
    free(gen);
    return st;
}

cv_status cv_run(const cv_config *cfg, const char *prompt, cv_report *out, cv_error *err) {
    cv_session *s = NULL;
    int32_t *ids = NULL;
    size_t P = 0;
    cv_status st = cv_report_init(out, err);
    if (st == CV_OK) st = cv_session_open(cfg, &s, NULL, err);
    if (st == CV_OK) st = cv_session_tokenize(s, prompt, &ids, &P, err);
    if (st == CV_OK) st = cv_session_fill_report(s, cfg, prompt, ids, P, out, err);
    if (st == CV_OK) st = cv_session_generate(s, cfg, ids, P, 1, out, NULL, NULL, NULL, NULL, err);
    free(ids);
    cv_session_close(s);
    return st;
}
