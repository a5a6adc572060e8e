/* gpt2.c — GPT2LMHeadModel on the op table.
 *
 *   x = wte[tokens] + wpe[positions]                                  (T, C)
 *   for each block l:
 *       a = attention(ln_1(x))   q, k, v from c_attn (Conv1D, stored (C, 3C): transposed at load)
 *       x = x + c_proj(a)
 *       x = x + mlp(ln_2(x))     mlp = c_proj(gelu_new(c_fc(.)))      hidden stats of block l
 *   h = ln_f(x)                                                       stats of the last block
 *   logits = h . wte^T                                                (tied lm_head)
 *
 * Weights: Hugging Face names, with or without the "transformer." prefix; the attn.bias /
 * masked_bias buffers of old checkpoints are ignored. */
#include "corevital/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    cv_weight wq, wk, wv, wo, wfc, wproj;
    float *bqkv, *bo, *bfc, *bproj; /* bqkv (3C): q, k, v biases back to back */
} gpt2_layer;

typedef struct {
    cv_weight wte, wpe;
    float *lnf_w, *lnf_b;
    gpt2_layer *layers;
    /* activations (max_T rows) */
    float *x, *ln, *q, *att, *proj, *fc, *logits, *probs;
    size_t probs_cap;
    cv_kv_cache kv; /* (L, n_ctx, C) */
} gpt2;

static cv_status load_layer(cv_model *m, gpt2_layer *L, int l, cv_error *err) {
    int C = m->cfg.hidden_size, F = m->cfg.intermediate_size;
    char n[160];
    cv_status s;
#define NAME(fmt) (snprintf(n, sizeof n, "transformer.h.%d." fmt, l), n)
    if ((s = cv_model_vector(m, &L->ln1_w, NAME("ln_1.weight"), C, err)) ||
        (s = cv_model_vector(m, &L->ln1_b, NAME("ln_1.bias"), C, err)) ||
        (s = cv_model_vector(m, &L->ln2_w, NAME("ln_2.weight"), C, err)) ||
        (s = cv_model_vector(m, &L->ln2_b, NAME("ln_2.bias"), C, err)) ||
        (s = cv_model_vector(m, &L->bqkv, NAME("attn.c_attn.bias"), 3 * C, err)) ||
        (s = cv_model_vector(m, &L->bo, NAME("attn.c_proj.bias"), C, err)) ||
        (s = cv_model_vector(m, &L->bfc, NAME("mlp.c_fc.bias"), F, err)) ||
        (s = cv_model_vector(m, &L->bproj, NAME("mlp.c_proj.bias"), C, err)) ||
        (s = cv_model_linear(m, &L->wo, NAME("attn.c_proj.weight"), C, C, 1, err)) ||
        (s = cv_model_linear(m, &L->wfc, NAME("mlp.c_fc.weight"), F, C, 1, err)) ||
        (s = cv_model_linear(m, &L->wproj, NAME("mlp.c_proj.weight"), C, F, 1, err)))
        return s;
    /* c_attn (C, 3C) transposed to (3C, C): rows [0,C) are q, [C,2C) k, [2C,3C) v */
    const void *host;
    cv_dtype dt;
    if ((s = cv_model_host_matrix(m, NAME("attn.c_attn.weight"), 3 * C, C, 1, &host, &dt, err)))
        return s;
#undef NAME
    size_t rowb = (size_t)C * cv_dtype_size(dt);
    if ((s = cv_model_upload_linear(m, &L->wq, host, dt, C, C, err)) ||
        (s = cv_model_upload_linear(m, &L->wk, (const char *)host + rowb * C, dt, C, C, err)) ||
        (s = cv_model_upload_linear(m, &L->wv, (const char *)host + 2 * rowb * C, dt, C, C, err)))
        return s;
    if (m->quant != CV_WFMT_DENSE) cv_model_release_host(m, host); /* q, k, v were copied */
    return CV_OK;
}

static cv_status gpt2_load(cv_model *m, cv_error *err) {
    const cv_model_config *c = &m->cfg;
    gpt2 *g = calloc(1, sizeof *g);
    if (!g) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    m->impl = g;
    if (strcmp(c->hidden_act, "gelu_new") != 0 && strcmp(c->hidden_act, "gelu_pytorch_tanh") != 0)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "%s: GPT-2 activation_function '%s' is not supported (gelu_new only)",
                       m->dir, c->hidden_act);
    /* reorder_and_upcast_attn only changes fp16 operation order in HF: the same in fp32 */
    g->layers = calloc((size_t)c->num_layers, sizeof *g->layers);
    if (!g->layers) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    cv_status s;
    if ((s = cv_model_matrix(m, &g->wte, "transformer.wte.weight", c->vocab_size, c->hidden_size, 0,
                             err)) ||
        (s = cv_model_matrix(m, &g->wpe, "transformer.wpe.weight", c->max_positions, c->hidden_size,
                             0, err)) ||
        (s = cv_model_vector(m, &g->lnf_w, "transformer.ln_f.weight", c->hidden_size, err)) ||
        (s = cv_model_vector(m, &g->lnf_b, "transformer.ln_f.bias", c->hidden_size, err)))
        return s;
    for (int l = 0; l < c->num_layers; l++)
        if ((s = load_layer(m, &g->layers[l], l, err))) return s;
    return CV_OK;
}

static void gpt2_free(cv_model *m) {
    gpt2 *g = m->impl;
    if (!g) return;
    free(g->layers);
    free(g);
    m->impl = NULL;
}

static cv_status gpt2_reserve(cv_model *m, int max_T, int n_ctx, int logit_rows, cv_error *err) {
    gpt2 *g = m->impl;
    const cv_model_config *c = &m->cfg;
    size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size, L = (size_t)c->num_layers;
    if (n_ctx > c->max_positions)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "context of %d tokens exceeds the model's n_positions %d", n_ctx,
                       c->max_positions);
    float **bufs[] = {&g->x, &g->ln, &g->q, &g->att, &g->proj, &g->fc, &g->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        cv_model_release(m, *bufs[i]);
        *bufs[i] = NULL;
    }
    size_t T = (size_t)max_T;
    size_t sizes[] = {T * C, T * C, T * C, T * C, T * C, T * F, (size_t)logit_rows * c->vocab_size};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = cv_model_alloc(m, sizes[i] * sizeof(float), err))) return CV_ERR_NOMEM;
    if (cv_kv_reserve(m, &g->kv, (int)L, n_ctx, max_T, c->num_heads, (int)C / c->num_heads, err))
        return CV_ERR_NOMEM;
    m->max_T = max_T;
    m->n_ctx = n_ctx;
    m->logit_rows = logit_rows;
    return CV_OK;
}

/* Probabilities buffer for captures (tests only). */
static float *probs_buffer(cv_model *m, gpt2 *g, size_t n, cv_error *err) {
    if (n > g->probs_cap) {
        cv_model_release(m, g->probs);
        g->probs = cv_model_alloc(m, n * sizeof(float), err);
        g->probs_cap = g->probs ? n : 0;
    }
    return g->probs;
}

static cv_status gpt2_forward(cv_model *m, const int32_t *tokens, int T, int pos0, double *stats,
                              const cv_stats_layout *lay, cv_capture *cap, int all_logits,
                              float **logits, cv_error *err) {
    gpt2 *g = m->impl;
    cv_backend *be = m->be;
    const cv_model_config *c = &m->cfg;
    const int C = c->hidden_size, F = c->intermediate_size, H = c->num_heads, hd = C / H;
    const int NL = c->num_layers, V = c->vocab_size, n_keys = pos0 + T;
    if (T > m->max_T || n_keys > m->n_ctx || (all_logits && T > m->logit_rows))
        return cv_fail(err, CV_ERR_RUNTIME,
                       "gpt2: %d tokens at position %d exceed the reserved capacity", T, pos0);
    if (!tokens && (T != 1 || !m->step))
        return cv_fail(err, CV_ERR_RUNTIME, "%s: a device token needs T = 1 and step parameters",
                       c->architecture);
    /* host tokens are checked here; a device token (m->step) was checked by the generation loop
     * on the copy it downloaded with the step that chose it, before this step was started */
    for (int t = 0; tokens && t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return cv_fail(err, CV_ERR_RUNTIME, "token id %d is outside the vocabulary (%d)",
                           tokens[t], V);
    const int32_t *tok = tokens ? tokens : m->step + CV_SP_TOKEN;
    /* a device token's step reads its position on the backend too (the same launches at every
     * position): the new key / value rows are staged and stored at dpos[0] (cv_kv_commit) */
    const int32_t *dpos = tokens ? NULL : m->step + CV_SP_POS;
    g->kv.dpos = dpos;

    be->embedding(be, g->x, tok, T, &g->wte, &g->wpe, pos0, dpos, 1.0f);
    if (cap && cap->hidden && cap->hidden[0])
        be->download(be, cap->hidden[0], g->x, sizeof(float) * T * C);

    for (int l = 0; l < NL; l++) {
        gpt2_layer *L = &g->layers[l];
        cv_model_ltrans_keep(m, stats, lay, l, g->x, T);
        be->layernorm(be, g->ln, g->x, L->ln1_w, L->ln1_b, T, C, (float)c->norm_eps, NULL);
        /* q (T, C), and the new keys / values into the cache */
        float *const qkv[3] = {g->q, cv_kv_new_k(&g->kv, l, pos0), cv_kv_new_v(&g->kv, l, pos0)};
        const cv_weight *const wqkv[3] = {&L->wq, &L->wk, &L->wv};
        const float *const bqkv[3] = {L->bqkv, L->bqkv + C, L->bqkv + 2 * C};
        cv_matmul3(be, qkv, g->ln, wqkv, bqkv, T);
        cv_kv_commit(m, &g->kv, l, pos0, T);
        float scale = c->scale_attn_weights ? 1.0f / sqrtf((float)hd) : 1.0f;
        if (c->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
        float *probs = NULL;
        if (cap && cap->attn && cap->attn[l] &&
            !(probs = probs_buffer(m, g, (size_t)H * T * n_keys, err)))
            return CV_ERR_NOMEM;
        cv_attn_args a = {.out = g->att,
                          .q = g->q,
                          .q_stride = C,
                          .out_stride = C,
                          .T = T,
                          .n_keys = n_keys,
                          .q_pos0 = pos0,
                          .n_heads = H,
                          .n_kv_heads = H,
                          .head_dim = hd,
                          .causal = 1,
                          .scale = scale,
                          .bias = NULL,
                          .stats = cv_stats_attn(stats, lay, l),
                          .probs = probs};
        cv_kv_bind(&g->kv, l, &a);
        cv_model_attn_health(&a, stats, lay, l, 0);
        cv_model_attn_step(&a, dpos, m->n_ctx);
        be->attention(be, &a);
        if (probs) be->download(be, cap->attn[l], probs, sizeof(float) * H * T * n_keys);
        be->matmul(be, g->proj, g->att, &L->wo, L->bo, T);
        be->residual_add(be, g->x, g->proj, T, C, NULL);
        be->layernorm(be, g->ln, g->x, L->ln2_w, L->ln2_b, T, C, (float)c->norm_eps, NULL);
        be->matmul(be, g->fc, g->ln, &L->wfc, L->bfc, T); /* (T, F) */
        be->gelu_tanh(be, g->fc, (size_t)T * F);
        be->matmul(be, g->proj, g->fc, &L->wproj, L->bproj, T);
        /* the last block's summary is taken after ln_f, as HF reports hidden_states[L] */
        be->residual_add(be, g->x, g->proj, T, C,
                         l < NL - 1 ? cv_stats_hidden(stats, lay, l) : NULL);
        if (l < NL - 1) cv_model_ltrans_add(m, stats, lay, l, g->x, T);
        if (cap && cap->hidden && cap->hidden[l + 1] && l < NL - 1)
            be->download(be, cap->hidden[l + 1], g->x, sizeof(float) * T * C);
    }
    be->layernorm(be, g->ln, g->x, g->lnf_w, g->lnf_b, T, C, (float)c->norm_eps,
                  cv_stats_hidden(stats, lay, NL - 1));
    cv_model_ltrans_add(m, stats, lay, NL - 1, g->ln, T);
    m->head_in = g->ln;
    m->head_rows = T;
    m->head_w = &g->wte;
    if (cap && cap->hidden && cap->hidden[NL])
        be->download(be, cap->hidden[NL], g->ln, sizeof(float) * T * C);
    *logits = g->logits;
    if (m->head_skip) return CV_OK; /* a prompt chunk before the last */
    if (all_logits) {
        be->matmul(be, g->logits, g->ln, &g->wte, NULL, T); /* (T, V) */
    } else {
        be->matmul(be, g->logits, g->ln + (size_t)(T - 1) * C, &g->wte, NULL, 1); /* (1, V) */
    }
    if (stats)
        be->logits_stats(be, cv_stats_logits(stats, lay),
                         g->logits + (all_logits ? (size_t)(T - 1) * V : 0), V, lay->topk);
    return CV_OK;
}

const cv_family_ops cv_gpt2_ops = {
    .name = "gpt2",
    .load = gpt2_load,
    .free = gpt2_free,
    .reserve = gpt2_reserve,
    .encode = NULL,
    .forward = gpt2_forward,
    .step_on_device = 1,
};
