/* synth.c — random-weight GPT-2 and Llama checkpoints (synth.h). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/synth.h"
#include "corevital/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    cv_st_write_entry *e;
    size_t n, cap;
    uint64_t rng;
    const cv_synth_shape *s;
    int failed;
} builder;

static float rnd(builder *b) { /* uniform in [-1, 1) from a 64-bit LCG, scaled to unit variance */
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(b->rng >> 40) / 16777216.0f * 2.0f - 1.0f) * 1.7320508f;
}

/* kind: 0 random (std), 1 ones, 2 zeros */
static void add(builder *b, const char *name, int64_t d0, int64_t d1, int kind) {
    if (b->failed) return;
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        cv_st_write_entry *ne = realloc(b->e, nc * sizeof *ne);
        if (!ne) {
            b->failed = 1;
            return;
        }
        b->e = ne;
        b->cap = nc;
    }
    size_t numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    cv_dtype dt = b->s->dtype;
    size_t es = cv_dtype_size(dt);
    void *data = malloc(numel * es);
    char *nm = strdup(name);
    if (!data || !nm) {
        free(data);
        free(nm);
        b->failed = 1;
        return;
    }
    for (size_t i = 0; i < numel; i++) {
        float v = kind == 0 ? rnd(b) * b->s->std : (kind == 1 ? 1.0f : 0.0f);
        if (dt == CV_DT_F32)
            ((float *)data)[i] = v;
        else if (dt == CV_DT_BF16)
            ((uint16_t *)data)[i] = cv_f32_to_bf16(v);
        else
            ((uint16_t *)data)[i] = cv_f32_to_f16(v);
    }
    cv_st_write_entry *e = &b->e[b->n++];
    memset(e, 0, sizeof *e);
    e->name = nm;
    e->dtype = dt;
    e->ndim = d1 > 0 ? 2 : 1;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->data = data;
}

static cv_status finish(builder *b, const char *dir, const char *config_json, cv_error *err) {
    cv_status st = CV_OK;
    char path[4096];
    if (b->failed) st = cv_fail(err, CV_ERR_NOMEM, "out of memory building a synthetic checkpoint");
    if (st == CV_OK && mkdir(dir, 0755) != 0 && !cv_is_dir(dir))
        st = cv_fail(err, CV_ERR_IO, "%s: cannot create directory", dir);
    if (st == CV_OK &&
        (st = cv_path_join(path, sizeof path, dir, "model.safetensors", err)) == CV_OK) {
        const char *meta[] = {"format", "pt", NULL};
        st = cv_st_write(path, b->e, b->n, meta, err);
    }
    if (st == CV_OK && (st = cv_path_join(path, sizeof path, dir, "config.json", err)) == CV_OK) {
        FILE *f = fopen(path, "w");
        if (!f || fputs(config_json, f) < 0 || fclose(f) != 0)
            st = cv_fail(err, CV_ERR_IO, "%s: cannot write", path);
    }
    for (size_t i = 0; i < b->n; i++) {
        free((void *)b->e[i].name);
        free((void *)b->e[i].data);
    }
    free(b->e);
    return st;
}

cv_status cv_synth_gpt2(const char *dir, const cv_synth_shape *s, cv_error *err) {
    builder b = {.rng = s->seed * 2654435761ull + 1, .s = s};
    int C = s->hidden, F = s->intermediate ? s->intermediate : 4 * s->hidden;
    char n[128];
    add(&b, "wte.weight", s->vocab, C, 0);
    add(&b, "wpe.weight", s->max_positions, C, 0);
    for (int l = 0; l < s->layers; l++) {
#define A(suffix, d0, d1, kind)                                                                    \
    (snprintf(n, sizeof n, "h.%d.%s", l, suffix), add(&b, n, d0, d1, kind))
        A("ln_1.weight", C, 0, 1);
        A("ln_1.bias", C, 0, 2);
        A("attn.c_attn.weight", C, 3 * C, 0);
        A("attn.c_attn.bias", 3 * C, 0, 2);
        A("attn.c_proj.weight", C, C, 0);
        A("attn.c_proj.bias", C, 0, 2);
        A("ln_2.weight", C, 0, 1);
        A("ln_2.bias", C, 0, 2);
        A("mlp.c_fc.weight", C, F, 0);
        A("mlp.c_fc.bias", F, 0, 2);
        A("mlp.c_proj.weight", F, C, 0);
        A("mlp.c_proj.bias", C, 0, 2);
#undef A
    }
    add(&b, "ln_f.weight", C, 0, 1);
    add(&b, "ln_f.bias", C, 0, 2);
    char cfg[1024];
    snprintf(
        cfg, sizeof cfg,
        "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
        "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_head\": %d,\n"
        "  \"n_inner\": %d,\n  \"n_positions\": %d,\n  \"activation_function\": \"gelu_new\",\n"
        "  \"layer_norm_epsilon\": 1e-05,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
        "  \"torch_dtype\": \"%s\"\n}\n",
        s->vocab, C, s->layers, s->heads, F, s->max_positions, s->bos_id, s->eos_id,
        cv_dtype_torch_name(s->dtype));
    return finish(&b, dir, cfg, err);
}

cv_status cv_synth_llama(const char *dir, const cv_synth_shape *s, cv_error *err) {
    builder b = {.rng = s->seed * 2654435761ull + 7, .s = s};
    int C = s->hidden, F = s->intermediate, hd = s->hidden / s->heads;
    int kv = s->kv_heads ? s->kv_heads : s->heads;
    char n[128];
    add(&b, "model.embed_tokens.weight", s->vocab, C, 0);
    for (int l = 0; l < s->layers; l++) {
#define A(suffix, d0, d1, kind)                                                                    \
    (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), add(&b, n, d0, d1, kind))
        A("input_layernorm.weight", C, 0, 1);
        A("self_attn.q_proj.weight", s->heads * hd, C, 0);
        A("self_attn.k_proj.weight", kv * hd, C, 0);
        A("self_attn.v_proj.weight", kv * hd, C, 0);
        A("self_attn.o_proj.weight", C, s->heads * hd, 0);
        A("post_attention_layernorm.weight", C, 0, 1);
        A("mlp.gate_proj.weight", F, C, 0);
        A("mlp.up_proj.weight", F, C, 0);
        A("mlp.down_proj.weight", C, F, 0);
#undef A
    }
    add(&b, "model.norm.weight", C, 0, 1);
    if (!s->tie_embeddings) add(&b, "lm_head.weight", s->vocab, C, 0);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
             "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
             "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"max_position_embeddings\": %d,\n"
             "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n  \"hidden_act\": \"silu\",\n"
             "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
             "  \"torch_dtype\": \"%s\"\n}\n",
             s->vocab, C, F, s->layers, s->heads, kv, s->max_positions,
             s->tie_embeddings ? "true" : "false", s->bos_id, s->eos_id,
             cv_dtype_torch_name(s->dtype));
    return finish(&b, dir, cfg, err);
}

cv_status cv_synth_t5(const char *dir, const cv_synth_shape *s, cv_error *err) {
    builder b = {.rng = s->seed * 2654435761ull + 13, .s = s};
    int C = s->hidden, F = s->intermediate, inner = s->heads * s->d_kv;
    int dec_layers = s->decoder_layers ? s->decoder_layers : s->layers;
    char n[160];
    add(&b, "shared.weight", s->vocab, C, 0);
    add(&b, "lm_head.weight", s->vocab, C, 0);
    add(&b, "encoder.final_layer_norm.weight", C, 0, 1);
    add(&b, "decoder.final_layer_norm.weight", C, 0, 1);
    for (int dec = 0; dec < 2; dec++) {
        const char *stack = dec ? "decoder" : "encoder";
        int L = dec ? dec_layers : s->layers;
        snprintf(n, sizeof n, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 stack);
        add(&b, n, 32, s->heads, 0);
        for (int l = 0; l < L; l++) {
            /* layer.0 self-attention, (decoder) layer.1 cross-attention, then the MLP */
            for (int part = 0; part < (dec ? 2 : 1); part++) {
                const char *kind = part ? "EncDecAttention" : "SelfAttention";
                const char *proj[] = {"q", "k", "v", "o"};
                for (int p = 0; p < 4; p++) {
                    snprintf(n, sizeof n, "%s.block.%d.layer.%d.%s.%s.weight", stack, l, part, kind,
                             proj[p]);
                    if (p < 3)
                        add(&b, n, inner, C, 0);
                    else
                        add(&b, n, C, inner, 0);
                }
                snprintf(n, sizeof n, "%s.block.%d.layer.%d.layer_norm.weight", stack, l, part);
                add(&b, n, C, 0, 1);
            }
            int ff = dec ? 2 : 1;
            snprintf(n, sizeof n, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight", stack, l, ff);
            add(&b, n, F, C, 0);
            snprintf(n, sizeof n, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight", stack, l, ff);
            add(&b, n, F, C, 0);
            snprintf(n, sizeof n, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", stack, l, ff);
            add(&b, n, C, F, 0);
            snprintf(n, sizeof n, "%s.block.%d.layer.%d.layer_norm.weight", stack, l, ff);
            add(&b, n, C, 0, 1);
        }
    }
    char cfg[1024];
    snprintf(
        cfg, sizeof cfg,
        "{\n  \"architectures\": [\"T5ForConditionalGeneration\"],\n  \"model_type\": \"t5\",\n"
        "  \"d_model\": %d,\n  \"d_kv\": %d,\n  \"d_ff\": %d,\n  \"num_heads\": %d,\n"
        "  \"num_layers\": %d,\n  \"num_decoder_layers\": %d,\n  \"vocab_size\": %d,\n"
        "  \"relative_attention_num_buckets\": 32,\n  \"relative_attention_max_distance\": 128,\n"
        "  \"layer_norm_epsilon\": 1e-06,\n  \"feed_forward_proj\": \"gated-gelu\",\n"
        "  \"tie_word_embeddings\": false,\n  \"decoder_start_token_id\": 0,\n"
        "  \"pad_token_id\": 0,\n  \"eos_token_id\": %d,\n  \"is_encoder_decoder\": true,\n"
        "  \"torch_dtype\": \"%s\"\n}\n",
        C, s->d_kv, F, s->heads, s->layers, dec_layers, s->vocab, s->eos_id,
        cv_dtype_torch_name(s->dtype));
    return finish(&b, dir, cfg, err);
}
