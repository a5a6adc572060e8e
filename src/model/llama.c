/* llama.c — LlamaForCausalLM (and Mistral / Qwen2 configs that only differ in supported fields)
 * on the op table.
 *
 *   x = embed_tokens[tokens]                                          (T, C)
 *   for each block l:
 *       n = rmsnorm(x)                 input_layernorm
 *       q, k, v = n . Wq^T, n . Wk^T, n . Wv^T     (T, H*hd), (T, KV*hd) x2 (k, v into the cache)
 *       rope(q), rope(k)               rotate-half pairs (i, i + hd/2), HF convention
 *       x = x + o_proj(attention(q, k, v))          GQA: head h reads kv head h / (H / KV)
 *       n = rmsnorm(x)                 post_attention_layernorm
 *       x = x + down(silu(gate(n)) * up(n))         hidden stats of block l
 *   h = rmsnorm(x)                     model.norm: stats of the last block
 *   logits = h . lm_head^T             (embed_tokens when tied)                (V)
 */
#include "corevital/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *in_norm, *post_norm, *bq, *bk, *bv, *bo;
    cv_weight wq, wk, wv, wo, wg, wu, wd;
} llama_layer;

typedef struct {
    cv_weight embed, lm_head;
    float *norm, *inv_freq;
    llama_layer *layers;
    int hd, qdim, kvdim;
    float *x, *n, *q, *att, *o, *gate, *up, *logits, *probs;
    size_t probs_cap;
    int mlp_rows;   /* rows of gate and up (cv_model_mlp_rows) */
    cv_kv_cache kv; /* (L, n_ctx, kvdim) */
} llama;

/* inv_freq[j] = 1 / theta^(2j/d) in fp32 as transformers computes it, then the rope_scaling
 * adjustment ("linear" divides by factor; "llama3" scales by wavelength band). */
static void rope_inv_freq(const cv_model_config *c, int hd, float *inv) {
    int half = hd / 2;
    for (int j = 0; j < half; j++) {
        float e = (float)(2 * j) / (float)hd;
        inv[j] = 1.0f / powf((float)c->rope_theta, e);
    }
    if (c->rope_type == CV_ROPE_LINEAR) {
        for (int j = 0; j < half; j++) inv[j] = inv[j] / (float)c->rope_factor;
    } else if (c->rope_type == CV_ROPE_LLAMA3) {
        double orig = c->rope_original_max_positions, lo = c->rope_low_freq_factor,
               hi = c->rope_high_freq_factor, factor = c->rope_factor;
        double low_wavelen = orig / lo, high_wavelen = orig / hi;
        for (int j = 0; j < half; j++) {
            double wavelen = 2.0 * 3.14159265358979323846 / inv[j];
            if (wavelen > low_wavelen) {
                inv[j] = (float)(inv[j] / factor);
            } else if (wavelen >= high_wavelen) { /* medium band: smooth interpolation */
                double s = (orig / wavelen - lo) / (hi - lo);
                inv[j] = (float)((1.0 - s) * inv[j] / factor + s * inv[j]);
            }
        }
    }
}

static cv_status load_layer(cv_model *m, llama *g, llama_layer *L, int l, cv_error *err) {
    const cv_model_config *c = &m->cfg;
    int C = c->hidden_size, F = c->intermediate_size;
    char n[160];
    cv_status s;
#define NAME(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
    if ((s = cv_model_vector(m, &L->in_norm, NAME("input_layernorm.weight"), C, err)) ||
        (s = cv_model_vector(m, &L->post_norm, NAME("post_attention_layernorm.weight"), C, err)) ||
        (s = cv_model_linear(m, &L->wq, NAME("self_attn.q_proj.weight"), g->qdim, C, 0, err)) ||
        (s = cv_model_linear(m, &L->wk, NAME("self_attn.k_proj.weight"), g->kvdim, C, 0, err)) ||
        (s = cv_model_linear(m, &L->wv, NAME("self_attn.v_proj.weight"), g->kvdim, C, 0, err)) ||
        (s = cv_model_linear(m, &L->wo, NAME("self_attn.o_proj.weight"), C, g->qdim, 0, err)) ||
        (s = cv_model_linear(m, &L->wg, NAME("mlp.gate_proj.weight"), F, C, 0, err)) ||
        (s = cv_model_linear(m, &L->wu, NAME("mlp.up_proj.weight"), F, C, 0, err)) ||
        (s = cv_model_linear(m, &L->wd, NAME("mlp.down_proj.weight"), C, F, 0, err)))
        return s;
    if (c->attention_bias &&
        ((s = cv_model_vector(m, &L->bq, NAME("self_attn.q_proj.bias"), g->qdim, err)) ||
         (s = cv_model_vector(m, &L->bk, NAME("self_attn.k_proj.bias"), g->kvdim, err)) ||
         (s = cv_model_vector(m, &L->bv, NAME("self_attn.v_proj.bias"), g->kvdim, err))))
        return s;
    /* Llama's attention_bias also biases o_proj; Qwen2's q/k/v biases do not */
    if (c->attention_out_bias &&
        (s = cv_model_vector(m, &L->bo, NAME("self_attn.o_proj.bias"), C, err)))
        return s;
#undef NAME
    return CV_OK;
}

static cv_status llama_load(cv_model *m, cv_error *err) {
    const cv_model_config *c = &m->cfg;
    llama *g = calloc(1, sizeof *g);
    if (!g) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    m->impl = g;
    if (strcmp(c->hidden_act, "silu") != 0)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu only)",
                       m->dir, c->hidden_act);
    if (c->mlp_bias)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported", m->dir);
    if (c->rope_type == CV_ROPE_DYNAMIC)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "%s: rope_scaling type 'dynamic' is not supported "
                       "(none, linear and llama3 are)",
                       m->dir);
    if (c->partial_rotary_factor != 0.0 && c->partial_rotary_factor != 1.0)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "%s: partial_rotary_factor %g is not supported",
                       m->dir, c->partial_rotary_factor);
    g->hd = c->head_dim;
    g->qdim = c->num_heads * g->hd;
    g->kvdim = c->num_kv_heads * g->hd;
    if (g->hd % 2 || c->num_heads % c->num_kv_heads)
        return cv_fail(err, CV_ERR_CONFIG,
                       "%s: head_dim must be even and num_attention_heads a multiple of "
                       "num_key_value_heads",
                       m->dir);
    g->layers = calloc((size_t)c->num_layers, sizeof *g->layers);
    if (!g->layers) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    cv_status s;
    if ((s = cv_model_matrix(m, &g->embed, "model.embed_tokens.weight", c->vocab_size,
                             c->hidden_size, 0, err)) ||
        (s = cv_model_vector(m, &g->norm, "model.norm.weight", c->hidden_size, err)))
        return s;
    if (!c->tie_word_embeddings || cv_model_tensor(m, "lm_head.weight")) {
        if ((s = cv_model_matrix(m, &g->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size, 0,
                                 err)))
            return s;
    } else {
        g->lm_head = g->embed;
    }
    for (int l = 0; l < c->num_layers; l++)
        if ((s = load_layer(m, g, &g->layers[l], l, err))) return s;
    float *inv = malloc(sizeof(float) * (size_t)(g->hd / 2));
    if (!inv) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    rope_inv_freq(c, g->hd, inv);
    g->inv_freq = cv_model_alloc(m, sizeof(float) * (size_t)(g->hd / 2), err);
    if (g->inv_freq) m->be->upload(m->be, g->inv_freq, inv, sizeof(float) * (size_t)(g->hd / 2));
    free(inv);
    return g->inv_freq ? CV_OK : CV_ERR_NOMEM;
}

static void llama_free(cv_model *m) {
    llama *g = m->impl;
    if (!g) return;
    free(g->layers);
    free(g);
    m->impl = NULL;
}

static cv_status llama_reserve(cv_model *m, int max_T, int n_ctx, int logit_rows, cv_error *err) {
    llama *g = m->impl;
    const cv_model_config *c = &m->cfg;
    size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size, L = (size_t)c->num_layers;
    size_t T = (size_t)max_T, Q = (size_t)g->qdim;
    g->mlp_rows = cv_model_mlp_rows(max_T);
    size_t R = (size_t)g->mlp_rows;
    float **bufs[] = {&g->x, &g->n, &g->q, &g->att, &g->o, &g->gate, &g->up, &g->logits};
    size_t sizes[] = {T * C, T * C, T * Q, T * Q,
                      T * C, R * F, R * F, (size_t)logit_rows * c->vocab_size};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        cv_model_release(m, *bufs[i]);
        if (!(*bufs[i] = cv_model_alloc(m, sizes[i] * sizeof(float), err))) return CV_ERR_NOMEM;
    }
    if (cv_kv_reserve(m, &g->kv, (int)L, n_ctx, max_T, c->num_kv_heads, g->hd, err))
        return CV_ERR_NOMEM;
    m->max_T = max_T;
    m->n_ctx = n_ctx;
    m->logit_rows = logit_rows;
    return CV_OK;
}

static cv_status llama_forward(cv_model *m, const int32_t *tokens, int T, int pos0, double *stats,
                               const cv_stats_layout *lay, cv_capture *cap, int all_logits,
                               float **logits, cv_error *err) {
    llama *g = m->impl;
    cv_backend *be = m->be;
    const cv_model_config *c = &m->cfg;
    const int C = c->hidden_size, H = c->num_heads, KVH = c->num_kv_heads;
    const int hd = g->hd, NL = c->num_layers, V = c->vocab_size, n_keys = pos0 + T;
    const float eps = (float)c->norm_eps;
    if (T > m->max_T || n_keys > m->n_ctx || (all_logits && T > m->logit_rows))
        return cv_fail(err, CV_ERR_RUNTIME,
                       "llama: %d tokens at position %d exceed the reserved capacity", T, pos0);
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

    be->embedding(be, g->x, tok, T, &g->embed, NULL, pos0, dpos, 1.0f);
    if (cap && cap->hidden && cap->hidden[0])
        be->download(be, cap->hidden[0], g->x, sizeof(float) * T * C);

    for (int l = 0; l < NL; l++) {
        llama_layer *L = &g->layers[l];
        float *knew = cv_kv_new_k(&g->kv, l, pos0), *vnew = cv_kv_new_v(&g->kv, l, pos0);
        cv_model_ltrans_keep(m, stats, lay, l, g->x, T);
        be->rmsnorm(be, g->n, g->x, L->in_norm, T, C, eps, NULL);
        /* q (T, H*hd); k and v (T, KV*hd) into the cache */
        float *const qkv[3] = {g->q, knew, vnew};
        const cv_weight *const wqkv[3] = {&L->wq, &L->wk, &L->wv};
        const float *const bqkv[3] = {L->bq, L->bk, L->bv};
        cv_matmul3(be, qkv, g->n, wqkv, bqkv, T);
        be->rope(be, g->q, T, g->qdim, H, hd, g->inv_freq, pos0, dpos);
        be->rope(be, knew, T, g->kvdim, KVH, hd, g->inv_freq, pos0, dpos);
        cv_kv_commit(m, &g->kv, l, pos0, T);
        float *probs = NULL;
        if (cap && cap->attn && cap->attn[l]) {
            size_t need = (size_t)H * T * n_keys;
            if (need > g->probs_cap) {
                cv_model_release(m, g->probs);
                if (!(g->probs = cv_model_alloc(m, need * sizeof(float), err))) return CV_ERR_NOMEM;
                g->probs_cap = need;
            }
            probs = g->probs;
        }
        cv_attn_args a = {.out = g->att,
                          .q = g->q,
                          .q_stride = g->qdim,
                          .out_stride = g->qdim,
                          .T = T,
                          .n_keys = n_keys,
                          .q_pos0 = pos0,
                          .n_heads = H,
                          .n_kv_heads = KVH,
                          .head_dim = hd,
                          .causal = 1,
                          .scale = 1.0f / sqrtf((float)hd),
                          .bias = NULL,
                          .stats = cv_stats_attn(stats, lay, l),
                          .probs = probs};
        cv_kv_bind(&g->kv, l, &a);
        cv_model_attn_health(&a, stats, lay, l, 0);
        cv_model_attn_step(&a, dpos, m->n_ctx);
        be->attention(be, &a);
        if (probs) be->download(be, cap->attn[l], probs, sizeof(float) * H * T * n_keys);
        be->matmul(be, g->o, g->att, &L->wo, L->bo, T);
        be->residual_add(be, g->x, g->o, T, C, NULL);
        be->rmsnorm(be, g->n, g->x, L->post_norm, T, C, eps, NULL);
        /* the MLP in row chunks (model.h): gate and up hold (rows, F) */
        for (int i = 0, nch = cv_mlp_chunks(T, g->mlp_rows); i < nch; i++) {
            const int r0 = cv_mlp_chunk_start(T, nch, i),
                      R = cv_mlp_chunk_start(T, nch, i + 1) - r0;
            const size_t off = (size_t)r0 * C;
            be->gate_up_silu(be, g->gate, g->up, g->n + off, &L->wg, &L->wu, R);
            be->matmul(be, g->o + off, g->gate, &L->wd, NULL, R);
        }
        be->residual_add(be, g->x, g->o, T, C, l < NL - 1 ? cv_stats_hidden(stats, lay, l) : NULL);
        if (l < NL - 1) cv_model_ltrans_add(m, stats, lay, l, g->x, T);
        if (cap && cap->hidden && cap->hidden[l + 1] && l < NL - 1)
            be->download(be, cap->hidden[l + 1], g->x, sizeof(float) * T * C);
    }
    be->rmsnorm(be, g->n, g->x, g->norm, T, C, eps, cv_stats_hidden(stats, lay, NL - 1));
    cv_model_ltrans_add(m, stats, lay, NL - 1, g->n, T);
    m->head_in = g->n;
    m->head_rows = T;
    m->head_w = &g->lm_head;
    if (cap && cap->hidden && cap->hidden[NL])
        be->download(be, cap->hidden[NL], g->n, sizeof(float) * T * C);
    *logits = g->logits;
    if (m->head_skip) return CV_OK; /* a prompt chunk before the last */
    if (all_logits)
        be->matmul(be, g->logits, g->n, &g->lm_head, NULL, T);
    else
        be->matmul(be, g->logits, g->n + (size_t)(T - 1) * C, &g->lm_head, NULL, 1);
    if (stats)
        be->logits_stats(be, cv_stats_logits(stats, lay),
                         g->logits + (all_logits ? (size_t)(T - 1) * V : 0), V, lay->topk);
    return CV_OK;
}

const cv_family_ops cv_llama_ops = {
    .name = "llama",
    .load = llama_load,
    .free = llama_free,
    .reserve = llama_reserve,
    .encode = NULL,
    .forward = llama_forward,
    .step_on_device = 1,
};
