/* t5.c — T5ForConditionalGeneration (original T5, T5 v1.1, flan-t5) on the op table.
 *
 * Encoder, run once per prompt by encode():
 *   x = shared[tokens]                                    (P, C), no sqrt(C) scaling
 *   bias = position_bias(encoder block 0 table, bidirectional)   shared by all blocks, held as
 *          one diagonal per head (H, 2P - 1): it depends on key - query only (backend.h)
 *   for each block l:
 *       x = x + o(attention(rmsnorm(x)))  no 1/sqrt(d_kv) scaling, + bias
 *       x = x + ff(rmsnorm(x))            hidden stats of block l
 *   e = rmsnorm(x)                         encoder.final_layer_norm: stats of the last block
 *   for each decoder layer l: K_l = e . EncDecAttention.k^T, V_l = e . EncDecAttention.v^T
 *       — the cross-attention keys / values are computed here ONCE, not at every decoder step.
 *
 * Decoder, forward() on T decoder tokens at pos0.. (generation: one token per call):
 *   x = shared[tokens]
 *   bias = position_bias(decoder block 0 table, causal, query positions pos0..)  (H, T + pos0+T -
 * 1) for each block l: x = x + o(attention(rmsnorm(x)))  causal, against the self-attention KV
 * cache, + bias x = x + o'(attention(rmsnorm(x), K_l, V_l))   cross-attention: no bias, not causal
 *       x = x + ff(rmsnorm(x))            hidden stats of block l
 *   h = rmsnorm(x)                         decoder.final_layer_norm: stats of the last block
 *   logits = (h * d_model^-0.5) . shared^T when tie_word_embeddings, else h . lm_head^T
 *            (the rescale follows "scale_decoder_outputs" instead when config.json has it)
 *
 * ff: relu (DenseReluDense.wi, wo) or gated (wi_0, wi_1, wo: act(wi_0 x) * wi_1 x, act gelu_new
 * or silu). The inner attention width H * d_kv may differ from d_model (flan-t5-small). Tensor
 * names are the top-level Hugging Face ones; shared.weight may be stored as
 * encoder.embed_tokens.weight instead. Every linear layer has no bias. */
#include "corevital/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T5_FF_RELU, T5_FF_GATED_GELU, T5_FF_GATED_SILU } t5_ff_kind;

typedef struct {
    float *ln_self, *ln_cross, *ln_ff; /* ln_cross: decoder only */
    cv_weight q, k, v, o;              /* self-attention (C -> inner, inner -> C) */
    cv_weight cq, ck, cv, co;          /* cross-attention: decoder only */
    cv_weight wi, wi1, wo;             /* wi = wi (relu) or wi_0 (gate); wi1 = wi_1 (up, gated) */
} t5_layer;

typedef struct {
    cv_weight shared, lm_head;
    float *enc_table, *dec_table; /* relative_attention_bias (num_buckets, H), backend memory */
    float *enc_norm, *dec_norm;
    float *dec_norm_lm; /* dec_norm * d_model^-0.5 when the output is rescaled, else NULL */
    t5_layer *enc, *dec;
    t5_ff_kind ff;
    int inner; /* num_heads * d_kv */
    /* activations: max_T rows */
    float *x, *n, *q, *ek, *ev, *att, *o, *ff1, *ff2, *logits;
    int mlp_rows;       /* rows of ff1 and ff2 (cv_model_mlp_rows) */
    float *bias;        /* position bias, (H, T + n_keys - 1): one diagonal per head */
    size_t bias_cap;    /* floats */
    float *probs;       /* attention probabilities for captures (tests) */
    size_t probs_cap;   /* floats */
    cv_kv_cache kv;     /* decoder self-attention (L_dec, n_ctx, inner) */
    float *ckey, *cval; /* cross-attention (L_dec, max_T, inner), filled by encode() */
} t5;

/* ---- loading ------------------------------------------------------------------------------ */

static cv_status load_ff(cv_model *m, t5 *g, t5_layer *L, const char *pre, cv_error *err) {
    const int C = m->cfg.hidden_size, F = m->cfg.d_ff;
    char n[192];
    cv_status s;
    if (g->ff == T5_FF_RELU) {
        snprintf(n, sizeof n, "%s.DenseReluDense.wi.weight", pre);
        if ((s = cv_model_linear(m, &L->wi, n, F, C, 0, err))) return s;
    } else {
        snprintf(n, sizeof n, "%s.DenseReluDense.wi_0.weight", pre);
        if ((s = cv_model_linear(m, &L->wi, n, F, C, 0, err))) return s;
        snprintf(n, sizeof n, "%s.DenseReluDense.wi_1.weight", pre);
        if ((s = cv_model_linear(m, &L->wi1, n, F, C, 0, err))) return s;
    }
    snprintf(n, sizeof n, "%s.DenseReluDense.wo.weight", pre);
    if ((s = cv_model_linear(m, &L->wo, n, C, F, 0, err))) return s;
    snprintf(n, sizeof n, "%s.layer_norm.weight", pre);
    return cv_model_vector(m, &L->ln_ff, n, C, err);
}

/* One attention sublayer: <pre>.<kind>.{q,k,v,o}.weight and <pre>.layer_norm.weight. */
static cv_status load_attn(cv_model *m, t5 *g, const char *pre, const char *kind, cv_weight *q,
                           cv_weight *k, cv_weight *v, cv_weight *o, float **ln, cv_error *err) {
    const int C = m->cfg.hidden_size, I = g->inner;
    char n[192];
    cv_status s;
#define NAME(w) (snprintf(n, sizeof n, "%s.%s.%s.weight", pre, kind, w), n)
    if ((s = cv_model_linear(m, q, NAME("q"), I, C, 0, err)) ||
        (s = cv_model_linear(m, k, NAME("k"), I, C, 0, err)) ||
        (s = cv_model_linear(m, v, NAME("v"), I, C, 0, err)) ||
        (s = cv_model_linear(m, o, NAME("o"), C, I, 0, err)))
        return s;
#undef NAME
    snprintf(n, sizeof n, "%s.layer_norm.weight", pre);
    return cv_model_vector(m, ln, n, C, err);
}

/* relative_attention_bias.weight (num_buckets, H) of block 0, as fp32 in backend memory. */
static cv_status load_table(cv_model *m, float **dst, const char *stack, cv_error *err) {
    const int NB = m->cfg.rel_num_buckets, H = m->cfg.num_heads;
    char n[192];
    snprintf(n, sizeof n, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", stack);
    const cv_st_tensor *t = cv_model_tensor(m, n);
    if (!t)
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' not found in the checkpoint", m->dir,
                       n);
    if (t->ndim != 2 || t->shape[0] != NB || t->shape[1] != H)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: tensor '%s' must have shape [%d, %d] "
                       "(relative_attention_num_buckets, num_heads)",
                       m->dir, n, NB, H);
    if (t->dtype != CV_DT_F32 && t->dtype != CV_DT_F16 && t->dtype != CV_DT_BF16)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", m->dir, n,
                       cv_dtype_name(t->dtype));
    size_t count = (size_t)NB * (size_t)H;
    float *host = malloc(sizeof(float) * count);
    if (!host) return cv_fail(err, CV_ERR_NOMEM, "out of memory for tensor '%s'", n);
    cv_convert_to_f32(host, t->data, t->dtype, count);
    *dst = cv_model_alloc(m, sizeof(float) * count, err);
    if (*dst) m->be->upload(m->be, *dst, host, sizeof(float) * count);
    free(host);
    return *dst ? CV_OK : CV_ERR_NOMEM;
}

/* transformers >= 5.17 saves "scale_decoder_outputs", which decides the d_model^-0.5 rescale
 * before the lm_head when present; older configs derive it from tie_word_embeddings (the
 * default passed in *scale). Read here because cv_model_config does not carry the key. */
static cv_status read_scale_flag(const cv_model *m, int *scale, cv_error *err) {
    char path[4200], *text = NULL;
    size_t len = 0;
    cv_status s = cv_path_join(path, sizeof path, m->dir, "config.json", err);
    if (s == CV_OK) s = cv_read_file(path, &text, &len, err);
    if (s != CV_OK) return s;
    cJSON *root = cJSON_Parse(text);
    const cJSON *v = root ? cJSON_GetObjectItemCaseSensitive(root, "scale_decoder_outputs") : NULL;
    if (v && !cJSON_IsBool(v) && !cJSON_IsNull(v))
        s = cv_fail(err, CV_ERR_CONFIG, "%s: key 'scale_decoder_outputs' must be true or false",
                    path);
    else if (cJSON_IsBool(v))
        *scale = cJSON_IsTrue(v);
    cJSON_Delete(root);
    free(text);
    return s;
}

static cv_status t5_load(cv_model *m, cv_error *err) {
    const cv_model_config *c = &m->cfg;
    t5 *g = calloc(1, sizeof *g);
    if (!g) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    m->impl = g;
    const char *act = c->hidden_act;
    int gelu_tanh = strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0;
    if (!c->is_gated_act && strcmp(act, "relu") == 0) {
        g->ff = T5_FF_RELU;
    } else if (c->is_gated_act && gelu_tanh) {
        g->ff = T5_FF_GATED_GELU;
    } else if (c->is_gated_act && (strcmp(act, "silu") == 0 || strcmp(act, "swish") == 0)) {
        g->ff = T5_FF_GATED_SILU;
    } else {
        return cv_fail(
            err, CV_ERR_UNSUPPORTED,
            "%s: T5 feed_forward_proj '%s%s' is not supported (relu, gated-gelu, gated-silu are)",
            m->dir, c->is_gated_act ? "gated-" : "", act);
    }
    if (c->num_heads <= 0 || c->d_kv <= 0 || c->d_ff <= 0 || c->num_layers <= 0 ||
        c->num_decoder_layers <= 0 || c->rel_num_buckets <= 0 || c->rel_max_distance <= 0)
        return cv_fail(err, CV_ERR_CONFIG,
                       "%s: T5 config needs positive num_heads, d_kv, d_ff, num_layers, "
                       "num_decoder_layers and relative_attention_* values",
                       m->dir);
    g->inner = c->num_heads * c->d_kv;
    /* the reference's fallback when the config has no decoder_start_token_id: pad, else 0 */
    if (m->cfg.decoder_start_token_id < 0)
        m->cfg.decoder_start_token_id = c->pad_token_id >= 0 ? c->pad_token_id : 0;
    g->enc = calloc((size_t)c->num_layers, sizeof *g->enc);
    g->dec = calloc((size_t)c->num_decoder_layers, sizeof *g->dec);
    if (!g->enc || !g->dec) return cv_fail(err, CV_ERR_NOMEM, "out of memory");

    cv_status s;
    const char *emb =
        cv_model_tensor(m, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
    if ((s = cv_model_matrix(m, &g->shared, emb, c->vocab_size, c->hidden_size, 0, err)) ||
        (s = cv_model_vector(m, &g->enc_norm, "encoder.final_layer_norm.weight", c->hidden_size,
                             err)) ||
        (s = cv_model_vector(m, &g->dec_norm, "decoder.final_layer_norm.weight", c->hidden_size,
                             err)) ||
        (s = load_table(m, &g->enc_table, "encoder", err)) ||
        (s = load_table(m, &g->dec_table, "decoder", err)))
        return s;
    int scale = c->tie_word_embeddings;
    if ((s = read_scale_flag(m, &scale, err))) return s;
    if (c->tie_word_embeddings) {
        g->lm_head = g->shared;
    } else if ((s = cv_model_matrix(m, &g->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size,
                                    0, err))) {
        return s;
    }
    if (scale) {
        /* HF: sequence_output * model_dim**-0.5 before the lm_head. The rescale is folded into a
         * second copy of the final norm weight, so the hidden statistics (of the unscaled norm
         * output, as HF reports them) and the logits come from one pass each. */
        float *w = malloc(sizeof(float) * (size_t)c->hidden_size);
        if (!w) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
        m->be->download(m->be, w, g->dec_norm, sizeof(float) * (size_t)c->hidden_size);
        float sc = (float)pow((double)c->hidden_size, -0.5); /* Python float, then fp32 */
        for (int i = 0; i < c->hidden_size; i++) w[i] *= sc;
        g->dec_norm_lm = cv_model_alloc(m, sizeof(float) * (size_t)c->hidden_size, err);
        if (g->dec_norm_lm)
            m->be->upload(m->be, g->dec_norm_lm, w, sizeof(float) * (size_t)c->hidden_size);
        free(w);
        if (!g->dec_norm_lm) return CV_ERR_NOMEM;
    }
    char pre[96];
    for (int l = 0; l < c->num_layers; l++) {
        t5_layer *L = &g->enc[l];
        snprintf(pre, sizeof pre, "encoder.block.%d.layer.0", l);
        if ((s = load_attn(m, g, pre, "SelfAttention", &L->q, &L->k, &L->v, &L->o, &L->ln_self,
                           err)))
            return s;
        snprintf(pre, sizeof pre, "encoder.block.%d.layer.1", l);
        if ((s = load_ff(m, g, L, pre, err))) return s;
    }
    for (int l = 0; l < c->num_decoder_layers; l++) {
        t5_layer *L = &g->dec[l];
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.0", l);
        if ((s = load_attn(m, g, pre, "SelfAttention", &L->q, &L->k, &L->v, &L->o, &L->ln_self,
                           err)))
            return s;
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.1", l);
        if ((s = load_attn(m, g, pre, "EncDecAttention", &L->cq, &L->ck, &L->cv, &L->co,
                           &L->ln_cross, err)))
            return s;
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.2", l);
        if ((s = load_ff(m, g, L, pre, err))) return s;
    }
    return CV_OK;
}

static void t5_free(cv_model *m) {
    t5 *g = m->impl;
    if (!g) return;
    free(g->enc);
    free(g->dec);
    free(g);
    m->impl = NULL;
}

/* ---- buffers ------------------------------------------------------------------------------ */

/* max_T bounds both the encoder length (encode) and the decoder tokens of one forward call;
 * n_ctx is the decoder's self-attention KV cache. */
static cv_status t5_reserve(cv_model *m, int max_T, int n_ctx, int logit_rows, cv_error *err) {
    t5 *g = m->impl;
    const cv_model_config *c = &m->cfg;
    if (max_T < 1 || n_ctx < 1 || logit_rows < 1)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "t5: reserve needs positive sizes (max_T %d, n_ctx %d, rows %d)", max_T,
                       n_ctx, logit_rows);
    size_t C = (size_t)c->hidden_size, F = (size_t)c->d_ff, I = (size_t)g->inner,
           H = (size_t)c->num_heads;
    size_t LD = (size_t)c->num_decoder_layers, T = (size_t)max_T,
           K = (size_t)(max_T > n_ctx ? max_T : n_ctx);
    g->mlp_rows = cv_model_mlp_rows(max_T);
    struct {
        float **p;
        size_t n; /* floats */
    } bufs[] = {
        {&g->x, T * C},
        {&g->n, T * C},
        {&g->q, T * I},
        {&g->ek, T * I},
        {&g->ev, T * I},
        {&g->att, T * I},
        {&g->o, T * C},
        {&g->ff1, (size_t)g->mlp_rows * F},
        {&g->ff2, (size_t)g->mlp_rows * F},
        {&g->bias, H * (T + K - 1)}, /* encoder (H, 2P - 1), decoder (H, T + n_keys - 1) */
        {&g->logits, (size_t)logit_rows * c->vocab_size},
        {&g->ckey, LD * T * I}, /* cross-attention K, V from encode() */
        {&g->cval, LD * T * I},
    };
    const size_t nb = sizeof bufs / sizeof bufs[0];
    for (size_t i = 0; i < nb; i++) {
        cv_model_release(m, *bufs[i].p);
        *bufs[i].p = NULL;
    }
    for (size_t i = 0; i < nb; i++)
        if (!(*bufs[i].p = cv_model_alloc(m, bufs[i].n * sizeof(float), err))) return CV_ERR_NOMEM;
    if (cv_kv_reserve(m, &g->kv, (int)LD, n_ctx, max_T, c->num_heads, c->d_kv, err))
        return CV_ERR_NOMEM;
    g->bias_cap = H * (T + K - 1);
    m->max_T = max_T;
    m->n_ctx = n_ctx;
    m->logit_rows = logit_rows;
    m->enc_len = 0; /* the cross-attention cache was reallocated: encode() again */
    return CV_OK;
}

/* Probabilities buffer for captures (tests only). */
static float *probs_buffer(cv_model *m, t5 *g, size_t n, cv_error *err) {
    if (n > g->probs_cap) {
        cv_model_release(m, g->probs);
        g->probs = cv_model_alloc(m, n * sizeof(float), err);
        g->probs_cap = g->probs ? n : 0;
    }
    return g->probs;
}

static int want_probs(float **arr, int l) {
    return arr && arr[l];
}

/* ---- shared pieces ------------------------------------------------------------------------ */

/* x (T, C) += ff(rmsnorm(x)); hstats (may be NULL) summarizes the residual sum. */
static void feed_forward(cv_model *m, t5 *g, const t5_layer *L, int T, double *hstats) {
    cv_backend *be = m->be;
    const int C = m->cfg.hidden_size, F = m->cfg.d_ff;
    be->rmsnorm(be, g->n, g->x, L->ln_ff, T, C, (float)m->cfg.norm_eps, NULL);
    for (int i = 0, nch = cv_mlp_chunks(T, g->mlp_rows); i < nch; i++) { /* model.h */
        const int r0 = cv_mlp_chunk_start(T, nch, i), R = cv_mlp_chunk_start(T, nch, i + 1) - r0;
        const float *n = g->n + (size_t)r0 * C;
        be->matmul(be, g->ff1, n, &L->wi, NULL, R); /* (R, F) */
        if (g->ff == T5_FF_RELU) {
            be->relu(be, g->ff1, (size_t)R * F);
        } else {
            be->matmul(be, g->ff2, n, &L->wi1, NULL, R);
            if (g->ff == T5_FF_GATED_GELU)
                be->gelu_mul(be, g->ff1, g->ff2, (size_t)R * F);
            else
                be->silu_mul(be, g->ff1, g->ff2, (size_t)R * F);
        }
        be->matmul(be, g->o + (size_t)r0 * C, g->ff1, &L->wo, NULL, R);
    }
    be->residual_add(be, g->x, g->o, T, C, hstats);
}

/* One attention call of the T queries in g->q against n_keys cached keys / values. */
/* k, v: fp32 keys and values (the encoder's, cross-attention's), or NULL with kv: the decoder's
 * self-attention cache, layer l */
static cv_status attend(cv_model *m, t5 *g, const float *k, const float *v, const cv_kv_cache *kv,
                        int T, int n_keys, int q_pos0, int causal, const float *bias, double *stats,
                        float *capture, double *arena, const cv_stats_layout *lay, int l, int cross,
                        cv_error *err) {
    cv_backend *be = m->be;
    const int H = m->cfg.num_heads;
    float *probs = NULL;
    if (capture && !(probs = probs_buffer(m, g, (size_t)H * T * n_keys, err))) return CV_ERR_NOMEM;
    cv_attn_args a = {.out = g->att,
                      .q = g->q,
                      .k = k,
                      .v = v,
                      .q_stride = g->inner,
                      .kv_stride = g->inner,
                      .out_stride = g->inner,
                      .T = T,
                      .n_keys = n_keys,
                      .q_pos0 = q_pos0,
                      .n_heads = H,
                      .n_kv_heads = H,
                      .head_dim = m->cfg.d_kv,
                      .causal = causal,
                      .scale = 1.0f, /* T5 folds 1/sqrt(d_kv) into its init */
                      .bias = bias,
                      .stats = stats,
                      .probs = probs};
    if (kv) cv_kv_bind(kv, l, &a);
    cv_model_attn_health(&a, arena, lay, l, cross);
    be->attention(be, &a);
    if (probs) be->download(be, capture, probs, sizeof(float) * H * T * n_keys);
    return CV_OK;
}

/* ---- encoder ------------------------------------------------------------------------------ */

static cv_status t5_encode(cv_model *m, const int32_t *tokens, int P, double *stats,
                           const cv_stats_layout *lay, cv_capture *cap, cv_error *err) {
    t5 *g = m->impl;
    cv_backend *be = m->be;
    const cv_model_config *c = &m->cfg;
    const int C = c->hidden_size, H = c->num_heads, I = g->inner, NL = c->num_layers,
              V = c->vocab_size;
    const float eps = (float)c->norm_eps;
    if (!g->x) return cv_fail(err, CV_ERR_RUNTIME, "t5: encode() called before reserve()");
    if (P < 1 || P > m->max_T)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "t5: encoder input of %d tokens does not fit the reserved %d "
                       "(call reserve with max_T >= the prompt length)",
                       P, m->max_T);
    if ((size_t)H * (2 * (size_t)P - 1) > g->bias_cap)
        return cv_fail(err, CV_ERR_RUNTIME, "t5: position bias buffer too small for %d tokens", P);
    for (int t = 0; t < P; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return cv_fail(err, CV_ERR_RUNTIME, "token id %d is outside the vocabulary (%d)",
                           tokens[t], V);
    m->enc_len = 0;
    cv_status s;

    be->embedding(be, g->x, tokens, P, &g->shared, NULL, 0, NULL, 1.0f);
    if (cap && cap->hidden && cap->hidden[0])
        be->download(be, cap->hidden[0], g->x, sizeof(float) * P * C);
    /* computed once from block 0's table; HF passes the same tensor to every block */
    be->t5_position_bias(be, g->bias, g->enc_table, H, P, P, 0, 1, c->rel_num_buckets,
                         c->rel_max_distance);

    for (int l = 0; l < NL; l++) {
        const t5_layer *L = &g->enc[l];
        be->rmsnorm(be, g->n, g->x, L->ln_self, P, C, eps, NULL);
        float *const qkv[3] = {g->q, g->ek, g->ev}; /* (P, I) each */
        const cv_weight *const wqkv[3] = {&L->q, &L->k, &L->v};
        cv_matmul3(be, qkv, g->n, wqkv, NULL, P);
        cv_model_ltrans_keep(m, stats, lay, l, g->x, P);
        if ((s = attend(m, g, g->ek, g->ev, NULL, P, P, 0, 0, g->bias, cv_stats_attn(stats, lay, l),
                        cap && want_probs(cap->attn, l) ? cap->attn[l] : NULL, stats, lay, l, 0,
                        err)))
            return s;
        be->matmul(be, g->o, g->att, &L->o, NULL, P);
        be->residual_add(be, g->x, g->o, P, C, NULL);
        /* the last block's summary is taken after the final norm, as HF reports hidden_states[L] */
        feed_forward(m, g, L, P, l < NL - 1 ? cv_stats_hidden(stats, lay, l) : NULL);
        if (l < NL - 1) cv_model_ltrans_add(m, stats, lay, l, g->x, P);
        if (cap && cap->hidden && cap->hidden[l + 1] && l < NL - 1)
            be->download(be, cap->hidden[l + 1], g->x, sizeof(float) * P * C);
    }
    be->rmsnorm(be, g->n, g->x, g->enc_norm, P, C, eps, cv_stats_hidden(stats, lay, NL - 1));
    cv_model_ltrans_add(m, stats, lay, NL - 1, g->n, P);
    if (cap && cap->hidden && cap->hidden[NL])
        be->download(be, cap->hidden[NL], g->n, sizeof(float) * P * C);

    /* cross-attention keys and values of every decoder layer, once per prompt */
    for (int l = 0; l < c->num_decoder_layers; l++) {
        const t5_layer *L = &g->dec[l];
        size_t off = (size_t)l * m->max_T * I;
        be->matmul(be, g->ckey + off, g->n, &L->ck, NULL, P);
        be->matmul(be, g->cval + off, g->n, &L->cv, NULL, P);
    }
    m->enc_len = P;
    return CV_OK;
}

/* ---- decoder ------------------------------------------------------------------------------ */

static cv_status t5_forward(cv_model *m, const int32_t *tokens, int T, int pos0, double *stats,
                            const cv_stats_layout *lay, cv_capture *cap, int all_logits,
                            float **logits, cv_error *err) {
    t5 *g = m->impl;
    cv_backend *be = m->be;
    const cv_model_config *c = &m->cfg;
    const int C = c->hidden_size, H = c->num_heads, I = g->inner, NL = c->num_decoder_layers;
    const int V = c->vocab_size, n_keys = pos0 + T, P = m->enc_len;
    const float eps = (float)c->norm_eps;
    if (!g->x) return cv_fail(err, CV_ERR_RUNTIME, "t5: forward() called before reserve()");
    if (P <= 0)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "t5: forward() needs encode() first (no encoder output)");
    if (T < 1 || pos0 < 0 || T > m->max_T || n_keys > m->n_ctx ||
        (all_logits && T > m->logit_rows) || (size_t)H * ((size_t)T + n_keys - 1) > g->bias_cap)
        return cv_fail(err, CV_ERR_RUNTIME,
                       "t5: %d decoder tokens at position %d exceed the reserved capacity", T,
                       pos0);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return cv_fail(err, CV_ERR_RUNTIME, "token id %d is outside the vocabulary (%d)",
                           tokens[t], V);
    cv_status s;
    m->head_in = NULL; /* set below when the final norm's full output is computed */
    m->head_w = NULL;

    be->embedding(be, g->x, tokens, T, &g->shared, NULL, 0, NULL, 1.0f);
    if (cap && cap->hidden && cap->hidden[0])
        be->download(be, cap->hidden[0], g->x, sizeof(float) * T * C);
    /* causal buckets; the queries sit at pos0.. (HF's cache_position) */
    be->t5_position_bias(be, g->bias, g->dec_table, H, T, n_keys, pos0, 0, c->rel_num_buckets,
                         c->rel_max_distance);

    for (int l = 0; l < NL; l++) {
        const t5_layer *L = &g->dec[l];
        /* self-attention over the decoder prefix, new keys / values appended to the cache */
        be->rmsnorm(be, g->n, g->x, L->ln_self, T, C, eps, NULL);
        float *const qkv[3] = {g->q, cv_kv_new_k(&g->kv, l, pos0), cv_kv_new_v(&g->kv, l, pos0)};
        const cv_weight *const wqkv[3] = {&L->q, &L->k, &L->v};
        cv_matmul3(be, qkv, g->n, wqkv, NULL, T);
        cv_kv_commit(m, &g->kv, l, pos0, T);
        if ((s = attend(m, g, NULL, NULL, &g->kv, T, n_keys, pos0, 1, g->bias,
                        cv_stats_attn(stats, lay, l),
                        cap && want_probs(cap->attn, l) ? cap->attn[l] : NULL, stats, lay, l, 0,
                        err)))
            return s;
        be->matmul(be, g->o, g->att, &L->o, NULL, T);
        be->residual_add(be, g->x, g->o, T, C, NULL);
        /* cross-attention over the encoder output (keys / values from encode()) */
        size_t off = (size_t)l * m->max_T * I;
        be->rmsnorm(be, g->n, g->x, L->ln_cross, T, C, eps, NULL);
        be->matmul(be, g->q, g->n, &L->cq, NULL, T);
        if ((s = attend(m, g, g->ckey + off, g->cval + off, NULL, T, P, 0, 0, NULL,
                        cv_stats_cross(stats, lay, l),
                        cap && want_probs(cap->cross, l) ? cap->cross[l] : NULL, stats, lay, l, 1,
                        err)))
            return s;
        be->matmul(be, g->o, g->att, &L->co, NULL, T);
        be->residual_add(be, g->x, g->o, T, C, NULL);
        feed_forward(m, g, L, T, l < NL - 1 ? cv_stats_hidden(stats, lay, l) : NULL);
        if (cap && cap->hidden && cap->hidden[l + 1] && l < NL - 1)
            be->download(be, cap->hidden[l + 1], g->x, sizeof(float) * T * C);
    }
    /* rows fed to the lm_head: all T, or only the last */
    int rows = all_logits ? T : 1;
    size_t first = all_logits ? 0 : (size_t)(T - 1) * C;
    int want_hidden = cap && cap->hidden && cap->hidden[NL];
    double *hs = cv_stats_hidden(stats, lay, NL - 1);
    if (g->dec_norm_lm && !hs && !want_hidden) {
        /* rescaled output, nothing to summarize: only the rescaled rows are needed */
        be->rmsnorm(be, g->n, g->x + first, g->dec_norm_lm, rows, C, eps, NULL);
        be->matmul(be, g->logits, g->n, &g->lm_head, NULL, rows);
    } else {
        be->rmsnorm(be, g->n, g->x, g->dec_norm, T, C, eps, hs);
        m->head_in = g->n;
        m->head_rows = T;
        if (want_hidden) be->download(be, cap->hidden[NL], g->n, sizeof(float) * T * C);
        if (g->dec_norm_lm) {
            /* the final norm output times d_model^-0.5 (HF), into the free o rows */
            be->rmsnorm(be, g->o, g->x + first, g->dec_norm_lm, rows, C, eps, NULL);
            be->matmul(be, g->logits, g->o, &g->lm_head, NULL, rows);
        } else {
            be->matmul(be, g->logits, g->n + first, &g->lm_head, NULL, rows);
        }
    }
    if (stats)
        be->logits_stats(be, cv_stats_logits(stats, lay),
                         g->logits + (all_logits ? (size_t)(T - 1) * V : 0), V, lay->topk);
    *logits = g->logits;
    return CV_OK;
}

const cv_family_ops cv_t5_ops = {
    .name = "t5",
    .load = t5_load,
    .free = t5_free,
    .reserve = t5_reserve,
    .encode = t5_encode,
    .forward = t5_forward,
};
