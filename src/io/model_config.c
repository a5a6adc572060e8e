/* model_config.c — config.json parsing and family detection (model_config.h).
 *
 * Values come from transformers' config classes: a key that is missing (or JSON null where the
 * class accepts None) takes the class default; a key of the wrong type, a negative size or an
 * inconsistent combination is an error naming the key. Unknown keys are ignored, as
 * transformers does. */
#include "corevital/model_config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parsing context: the source name for messages and the error record. */
typedef struct {
    const char *src;
    cv_error *err;
} ctx;

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* The item for key, or NULL when absent or JSON null (both mean "use the default"). */
static const cJSON *item(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* An integral JSON number within int range; `what` is the key as shown in messages. */
static cv_status as_int(ctx *c, const cJSON *v, const char *what, int *out) {
    if (!cJSON_IsNumber(v))
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be an integer, got %s", c->src,
                       what, json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)INT_MIN || d > (double)INT_MAX)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be an integer, got %g", c->src,
                       what, d);
    *out = (int)d;
    return CV_OK;
}

static cv_status get_int(ctx *c, const cJSON *obj, const char *key, int def, int *out) {
    const cJSON *v = item(obj, key);
    if (!v) {
        *out = def;
        return CV_OK;
    }
    return as_int(c, v, key, out);
}

/* A size: integer > 0. */
static cv_status get_pos(ctx *c, const cJSON *obj, const char *key, int def, int *out) {
    cv_status s = get_int(c, obj, key, def, out);
    if (s == CV_OK && *out <= 0)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a positive integer, got %d",
                       c->src, key, *out);
    return s;
}

/* A token id: integer >= 0, or -1 for "none". Unlike sizes, an explicit null does not mean the
 * class default here: it is None, "no such token". */
static cv_status get_token(ctx *c, const cJSON *obj, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    cv_status s = CV_OK;
    if (!v)
        *out = def;
    else if (cJSON_IsNull(v))
        *out = -1;
    else
        s = as_int(c, v, key, out);
    if (s == CV_OK && *out < -1)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a token id, got %d", c->src,
                       key, *out);
    return s;
}

static cv_status as_double(ctx *c, const cJSON *v, const char *what, double *out) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a number, got %s", c->src, what,
                       json_type_name(v));
    *out = v->valuedouble;
    return CV_OK;
}

static cv_status get_double(ctx *c, const cJSON *obj, const char *key, double def, double *out) {
    const cJSON *v = item(obj, key);
    if (!v) {
        *out = def;
        return CV_OK;
    }
    return as_double(c, v, key, out);
}

/* A JSON boolean (0 and 1 are tolerated, as Python's truthiness would). */
static cv_status get_bool(ctx *c, const cJSON *obj, const char *key, int def, int *out) {
    const cJSON *v = item(obj, key);
    if (!v) {
        *out = def;
        return CV_OK;
    }
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v) ? 1 : 0;
        return CV_OK;
    }
    if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) {
        *out = v->valuedouble != 0;
        return CV_OK;
    }
    return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be true or false, got %s", c->src, key,
                   json_type_name(v));
}

static cv_status get_str(ctx *c, const cJSON *obj, const char *key, const char *def, char *buf,
                         size_t size) {
    const cJSON *v = item(obj, key);
    const char *s = def;
    if (v) {
        if (!cJSON_IsString(v))
            return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a string, got %s", c->src,
                           key, json_type_name(v));
        s = v->valuestring;
    }
    if (strlen(s) >= size)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' is too long (%zu characters)", c->src,
                       key, strlen(s));
    if (s != buf) snprintf(buf, size, "%s", s); /* the default may be buf itself */
    return CV_OK;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        cv_status s_ = (expr);                                                                     \
        if (s_ != CV_OK) return s_;                                                                \
    } while (0)

/* ---------------------------------------------------------------- registry */

typedef struct {
    const char *model_type;
    cv_family family;
    const char *default_arch;
} family_type;

static const family_type k_types[] = {
    {"gpt2", CV_FAMILY_GPT2, "GPT2LMHeadModel"},
    {"llama", CV_FAMILY_LLAMA, "LlamaForCausalLM"},
    {"mistral", CV_FAMILY_LLAMA, "MistralForCausalLM"},
    {"qwen2", CV_FAMILY_LLAMA, "Qwen2ForCausalLM"},
    {"t5", CV_FAMILY_T5, "T5ForConditionalGeneration"},
    {"mt5", CV_FAMILY_T5, "MT5ForConditionalGeneration"},
};

/* Architectures we can run: a causal LM head, or the base model where the head is tied. */
typedef struct {
    const char *arch;
    const char *model_type;
} family_arch;

static const family_arch k_archs[] = {
    {"GPT2LMHeadModel", "gpt2"},
    {"GPT2Model", "gpt2"},
    {"LlamaForCausalLM", "llama"},
    {"LlamaModel", "llama"},
    {"MistralForCausalLM", "mistral"},
    {"Qwen2ForCausalLM", "qwen2"},
    {"T5ForConditionalGeneration", "t5"},
    {"T5WithLMHeadModel", "t5"}, /* the original t5-small config's class name */
    {"MT5ForConditionalGeneration", "mt5"},
};

/* The reference's seq2seq model_type set (ModelCapabilities), for clearer errors. */
static int is_seq2seq_type(const char *t) {
    static const char *const types[] = {
        "t5",      "bart", "mbart", "pegasus",         "marian", "blenderbot", "blenderbot-small",
        "m2m_100", "nllb", "led",   "bigbird_pegasus", "longt5", "plbart"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(t, types[i]) == 0) return 1;
    return 0;
}

static const family_type *find_type(const char *model_type) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (strcmp(model_type, k_types[i].model_type) == 0) return &k_types[i];
    return NULL;
}

static const family_arch *find_arch(const char *arch) {
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (strcmp(arch, k_archs[i].arch) == 0) return &k_archs[i];
    return NULL;
}

const char *cv_family_name(cv_family f) {
    switch (f) {
    case CV_FAMILY_GPT2:
        return "gpt2";
    case CV_FAMILY_LLAMA:
        return "llama";
    case CV_FAMILY_T5:
        return "t5";
    }
    return "?";
}

const char *cv_rope_type_name(cv_rope_type t) {
    switch (t) {
    case CV_ROPE_NONE:
        return "none";
    case CV_ROPE_LINEAR:
        return "linear";
    case CV_ROPE_DYNAMIC:
        return "dynamic";
    case CV_ROPE_LLAMA3:
        return "llama3";
    }
    return "?";
}

/* Detect the family: is_encoder_decoder, then model_type, then architectures[0] (the order of
 * ModelCapabilities.from_config), and check the architecture is one we can run. */
static cv_status detect_family(ctx *c, const cJSON *root, cv_model_config *cfg) {
    char model_type[64] = "", arch[128] = "";
    TRY(get_str(c, root, "model_type", "", model_type, sizeof model_type));
    for (char *p = model_type; *p; p++) *p = (char)tolower((unsigned char)*p);
    const cJSON *archs = item(root, "architectures");
    if (archs) {
        if (!cJSON_IsArray(archs))
            return cv_fail(c->err, CV_ERR_CONFIG,
                           "%s: key 'architectures' must be a list of strings, got %s", c->src,
                           json_type_name(archs));
        const cJSON *a0 = cJSON_GetArrayItem(archs, 0);
        if (a0) {
            if (!cJSON_IsString(a0))
                return cv_fail(c->err, CV_ERR_CONFIG,
                               "%s: key 'architectures' must be a list of strings, got %s inside",
                               c->src, json_type_name(a0));
            if (strlen(a0->valuestring) >= sizeof arch)
                return cv_fail(c->err, CV_ERR_CONFIG, "%s: architectures[0] is too long", c->src);
            snprintf(arch, sizeof arch, "%s", a0->valuestring);
        }
    }
    int enc_dec = 0;
    TRY(get_bool(c, root, "is_encoder_decoder", 0, &enc_dec));

    const family_type *ft = NULL;
    const family_arch *fa = arch[0] ? find_arch(arch) : NULL;
    if (model_type[0]) {
        ft = find_type(model_type);
        if (!ft)
            return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                           "%s: model_type '%s'%s is not supported (supported: gpt2, llama, "
                           "mistral, qwen2, t5, mt5)",
                           c->src, model_type,
                           enc_dec || is_seq2seq_type(model_type) ? " (encoder-decoder)" : "");
    } else if (arch[0]) {
        if (!fa)
            return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                           "%s: architecture '%s' is not supported (no model_type given)", c->src,
                           arch);
        ft = find_type(fa->model_type);
    } else {
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: neither 'model_type' nor 'architectures' is present: cannot tell "
                       "the model family",
                       c->src);
    }
    if (enc_dec && ft->family != CV_FAMILY_T5)
        return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                       "%s: is_encoder_decoder is true but model_type '%s' is a decoder-only "
                       "family; only t5 encoder-decoders are supported",
                       c->src, ft->model_type);
    if (arch[0] && (!fa || find_type(fa->model_type)->family != ft->family))
        return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                       "%s: architecture '%s' is not supported for model_type '%s' (supported: "
                       "the causal-LM / conditional-generation classes)",
                       c->src, arch, ft->model_type);
    cfg->family = ft->family;
    cfg->is_encoder_decoder = ft->family == CV_FAMILY_T5;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", ft->model_type);
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch[0] ? arch : ft->default_arch);
    return CV_OK;
}

/* ---------------------------------------------------------------- shared fields */

static cv_status check_act(ctx *c, const char *key, const char *act) {
    static const char *const acts[] = {"relu",      "gelu",       "gelu_new", "gelu_pytorch_tanh",
                                       "gelu_fast", "quick_gelu", "silu",     "swish"};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(act, acts[i]) == 0) return CV_OK;
    return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                   "%s: activation '%s' (key '%s') is not supported (supported: relu, gelu, "
                   "gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu, swish)",
                   c->src, act, key);
}

/* eos_token_id: an int, a list of ints, or null. */
static cv_status parse_eos(ctx *c, const cJSON *root, int def, cv_model_config *cfg) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    cfg->n_eos = 0;
    if (!v) {
        if (def >= 0) cfg->eos_token_ids[cfg->n_eos++] = def;
        return CV_OK;
    }
    if (cJSON_IsNull(v)) return CV_OK; /* None: no end-of-sequence token */
    if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if (n > CV_MAX_EOS_IDS)
            return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                           "%s: key 'eos_token_id' lists %d ids (at most %d supported)", c->src, n,
                           CV_MAX_EOS_IDS);
        for (const cJSON *e = v->child; e; e = e->next) {
            int id = 0;
            TRY(as_int(c, e, "eos_token_id", &id));
            if (id < 0)
                return cv_fail(c->err, CV_ERR_CONFIG,
                               "%s: key 'eos_token_id' must hold token ids, got %d", c->src, id);
            cfg->eos_token_ids[cfg->n_eos++] = id;
        }
        return CV_OK;
    }
    int id = 0;
    TRY(as_int(c, v, "eos_token_id", &id));
    if (id < -1)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key 'eos_token_id' must be a token id, got %d",
                       c->src, id);
    if (id >= 0) cfg->eos_token_ids[cfg->n_eos++] = id;
    return CV_OK;
}

static cv_status parse_common(ctx *c, const cJSON *root, cv_model_config *cfg) {
    /* transformers v5 writes "dtype"; older versions "torch_dtype" */
    const char *key = item(root, "torch_dtype") ? "torch_dtype" : "dtype";
    return get_str(c, root, key, "", cfg->torch_dtype, sizeof cfg->torch_dtype);
}

/* ---------------------------------------------------------------- GPT-2 */

static cv_status parse_gpt2(ctx *c, const cJSON *root, cv_model_config *cfg) {
    int add_cross = 0;
    TRY(get_bool(c, root, "add_cross_attention", 0, &add_cross));
    if (add_cross)
        return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                       "%s: key 'add_cross_attention' is true: GPT-2 with cross-attention is not "
                       "supported",
                       c->src);
    TRY(get_pos(c, root, "vocab_size", 50257, &cfg->vocab_size));
    /* n_ctx is the legacy name of n_positions */
    TRY(get_pos(c, root,
                item(root, "n_positions") || !item(root, "n_ctx") ? "n_positions" : "n_ctx", 1024,
                &cfg->max_positions));
    TRY(get_pos(c, root, "n_embd", 768, &cfg->hidden_size));
    TRY(get_pos(c, root, "n_layer", 12, &cfg->num_layers));
    TRY(get_pos(c, root, "n_head", 12, &cfg->num_heads));
    if (cfg->hidden_size % cfg->num_heads != 0)
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'n_embd' (%d) is not divisible by key 'n_head' (%d)", c->src,
                       cfg->hidden_size, cfg->num_heads);
    cfg->num_kv_heads = cfg->num_heads;
    cfg->head_dim = cfg->hidden_size / cfg->num_heads;
    if (cfg->hidden_size > INT_MAX / 4)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key 'n_embd' is too large", c->src);
    TRY(get_pos(c, root, "n_inner", 4 * cfg->hidden_size, &cfg->intermediate_size));
    TRY(get_str(c, root, "activation_function", "gelu_new", cfg->hidden_act,
                sizeof cfg->hidden_act));
    TRY(check_act(c, "activation_function", cfg->hidden_act));
    TRY(get_double(c, root, "layer_norm_epsilon", 1e-5, &cfg->norm_eps));
    TRY(get_bool(c, root, "scale_attn_weights", 1, &cfg->scale_attn_weights));
    TRY(get_bool(c, root, "scale_attn_by_inverse_layer_idx", 0,
                 &cfg->scale_attn_by_inverse_layer_idx));
    TRY(get_bool(c, root, "reorder_and_upcast_attn", 0, &cfg->reorder_and_upcast_attn));
    TRY(get_bool(c, root, "tie_word_embeddings", 1, &cfg->tie_word_embeddings));
    TRY(get_token(c, root, "bos_token_id", 50256, &cfg->bos_token_id));
    TRY(get_token(c, root, "pad_token_id", -1, &cfg->pad_token_id));
    TRY(parse_eos(c, root, 50256, cfg));
    cfg->attention_bias = cfg->attention_out_bias = cfg->mlp_bias = 1; /* Conv1D has biases */
    cfg->decoder_start_token_id = -1;
    return CV_OK;
}

/* ---------------------------------------------------------------- LLaMA family */

/* rope_scaling (type / rope_type keys) or transformers v5 rope_parameters. */
static cv_status parse_rope(ctx *c, const cJSON *root, cv_model_config *cfg) {
    const cJSON *params = item(root, "rope_parameters");
    const cJSON *scaling = item(root, "rope_scaling");
    const char *name = "rope_scaling";
    TRY(get_double(c, root, "rope_theta", 10000.0, &cfg->rope_theta));
    TRY(get_double(c, root, "partial_rotary_factor", 1.0, &cfg->partial_rotary_factor));
    const cJSON *src = scaling;
    if (params) {
        if (!cJSON_IsObject(params))
            return cv_fail(c->err, CV_ERR_CONFIG,
                           "%s: key 'rope_parameters' must be an object, got %s", c->src,
                           json_type_name(params));
        src = params;
        name = "rope_parameters";
        TRY(get_double(c, params, "rope_theta", cfg->rope_theta, &cfg->rope_theta));
        TRY(get_double(c, params, "partial_rotary_factor", cfg->partial_rotary_factor,
                       &cfg->partial_rotary_factor));
    }
    if (!(cfg->rope_theta > 0))
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key 'rope_theta' must be positive, got %g",
                       c->src, cfg->rope_theta);
    if (!(cfg->partial_rotary_factor > 0 && cfg->partial_rotary_factor <= 1))
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'partial_rotary_factor' must be in (0, 1], got %g", c->src,
                       cfg->partial_rotary_factor);
    cfg->rope_type = CV_ROPE_NONE;
    cfg->rope_factor = 1.0;
    cfg->rope_original_max_positions = cfg->max_positions;
    if (!src) return CV_OK;
    if (!cJSON_IsObject(src))
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'rope_scaling' must be an object or null, "
                       "got %s",
                       c->src, json_type_name(src));

    char type[32], key[64];
    const char *tkey = item(src, "rope_type") ? "rope_type" : "type";
    snprintf(key, sizeof key, "%s.%s", name, tkey);
    const cJSON *tv = item(src, tkey);
    if (!tv && src == scaling)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key 'rope_scaling' has no 'rope_type' or 'type'",
                       c->src);
    if (tv && !cJSON_IsString(tv))
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a string, got %s", c->src, key,
                       json_type_name(tv));
    snprintf(type, sizeof type, "%s", tv ? tv->valuestring : "default");

    if (strcmp(type, "default") == 0) return CV_OK;
    if (strcmp(type, "linear") == 0)
        cfg->rope_type = CV_ROPE_LINEAR;
    else if (strcmp(type, "dynamic") == 0)
        cfg->rope_type = CV_ROPE_DYNAMIC;
    else if (strcmp(type, "llama3") == 0)
        cfg->rope_type = CV_ROPE_LLAMA3;
    else
        return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                       "%s: rope type '%s' (key '%s') is not supported (supported: default, "
                       "linear, dynamic, llama3)",
                       c->src, type, key);

    /* factor is required for every scaled variant */
    snprintf(key, sizeof key, "%s.factor", name);
    const cJSON *fv = item(src, "factor");
    if (!fv)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' is required for rope type '%s'", c->src,
                       key, type);
    TRY(as_double(c, fv, key, &cfg->rope_factor));
    if (!(cfg->rope_factor > 0))
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be positive, got %g", c->src, key,
                       cfg->rope_factor);
    const cJSON *ov = item(src, "original_max_position_embeddings");
    snprintf(key, sizeof key, "%s.original_max_position_embeddings", name);
    if (ov) {
        TRY(as_int(c, ov, key, &cfg->rope_original_max_positions));
        if (cfg->rope_original_max_positions <= 0)
            return cv_fail(c->err, CV_ERR_CONFIG, "%s: key '%s' must be a positive integer", c->src,
                           key);
    }
    if (cfg->rope_type != CV_ROPE_LLAMA3) return CV_OK;

    static const char *const need[] = {"low_freq_factor", "high_freq_factor",
                                       "original_max_position_embeddings"};
    for (int i = 0; i < 3; i++) {
        if (!item(src, need[i]))
            return cv_fail(c->err, CV_ERR_CONFIG,
                           "%s: key '%s.%s' is required for rope type 'llama3'", c->src, name,
                           need[i]);
    }
    snprintf(key, sizeof key, "%s.low_freq_factor", name);
    TRY(as_double(c, item(src, "low_freq_factor"), key, &cfg->rope_low_freq_factor));
    snprintf(key, sizeof key, "%s.high_freq_factor", name);
    TRY(as_double(c, item(src, "high_freq_factor"), key, &cfg->rope_high_freq_factor));
    if (!(cfg->rope_low_freq_factor > 0 && cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: keys '%s.low_freq_factor' (%g) and '%s.high_freq_factor' (%g) must "
                       "satisfy 0 < low < high",
                       c->src, name, cfg->rope_low_freq_factor, name, cfg->rope_high_freq_factor);
    return CV_OK;
}

/* Class defaults that differ between LlamaConfig, MistralConfig and Qwen2Config. */
typedef struct {
    const char *model_type;
    int vocab, hidden, inter, layers, heads, kv_heads, max_pos, bos, eos;
} llama_defaults;

static const llama_defaults k_llama_defaults[] = {
    {"llama", 32000, 4096, 11008, 32, 32, 0, 2048, 1, 2},
    {"mistral", 32000, 4096, 14336, 32, 32, 8, 131072, 1, 2},
    {"qwen2", 151936, 4096, 22016, 32, 32, 32, 32768, -1, -1},
};

static cv_status parse_llama(ctx *c, const cJSON *root, cv_model_config *cfg) {
    const llama_defaults *d = &k_llama_defaults[0];
    for (size_t i = 0; i < sizeof k_llama_defaults / sizeof k_llama_defaults[0]; i++)
        if (strcmp(cfg->model_type, k_llama_defaults[i].model_type) == 0) d = &k_llama_defaults[i];
    TRY(get_pos(c, root, "vocab_size", d->vocab, &cfg->vocab_size));
    TRY(get_pos(c, root, "hidden_size", d->hidden, &cfg->hidden_size));
    TRY(get_pos(c, root, "intermediate_size", d->inter, &cfg->intermediate_size));
    TRY(get_pos(c, root, "num_hidden_layers", d->layers, &cfg->num_layers));
    TRY(get_pos(c, root, "num_attention_heads", d->heads, &cfg->num_heads));
    TRY(get_pos(c, root, "num_key_value_heads", d->kv_heads ? d->kv_heads : cfg->num_heads,
                &cfg->num_kv_heads));
    if (cfg->num_heads % cfg->num_kv_heads != 0)
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'num_attention_heads' (%d) is not a multiple of key "
                       "'num_key_value_heads' (%d)",
                       c->src, cfg->num_heads, cfg->num_kv_heads);
    if (item(root, "head_dim")) {
        TRY(get_pos(c, root, "head_dim", 0, &cfg->head_dim));
    } else {
        if (cfg->hidden_size % cfg->num_heads != 0)
            return cv_fail(c->err, CV_ERR_CONFIG,
                           "%s: key 'hidden_size' (%d) is not divisible by key "
                           "'num_attention_heads' (%d) and 'head_dim' is not given",
                           c->src, cfg->hidden_size, cfg->num_heads);
        cfg->head_dim = cfg->hidden_size / cfg->num_heads;
    }
    TRY(get_pos(c, root, "max_position_embeddings", d->max_pos, &cfg->max_positions));
    TRY(get_str(c, root, "hidden_act", "silu", cfg->hidden_act, sizeof cfg->hidden_act));
    TRY(check_act(c, "hidden_act", cfg->hidden_act));
    TRY(get_double(c, root, "rms_norm_eps", 1e-6, &cfg->norm_eps));
    TRY(get_bool(c, root, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    TRY(get_token(c, root, "bos_token_id", d->bos, &cfg->bos_token_id));
    TRY(get_token(c, root, "pad_token_id", -1, &cfg->pad_token_id));
    TRY(parse_eos(c, root, d->eos, cfg));
    cfg->decoder_start_token_id = -1;

    if (strcmp(cfg->model_type, "llama") == 0) {
        TRY(get_bool(c, root, "attention_bias", 0, &cfg->attention_bias));
        cfg->attention_out_bias = cfg->attention_bias;
        TRY(get_bool(c, root, "mlp_bias", 0, &cfg->mlp_bias));
    } else if (strcmp(cfg->model_type, "qwen2") == 0) {
        cfg->attention_bias = 1; /* Qwen2Attention: q/k/v have biases, o_proj does not */
        cfg->attention_out_bias = 0;
        cfg->mlp_bias = 0;
        int use_sw = 0, sw = 4096;
        TRY(get_bool(c, root, "use_sliding_window", 0, &use_sw));
        TRY(get_int(c, root, "sliding_window", 4096, &sw));
        if (use_sw && sw < cfg->max_positions)
            return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                           "%s: key 'use_sliding_window' is true with 'sliding_window' %d < "
                           "'max_position_embeddings' %d: sliding-window attention is not "
                           "supported",
                           c->src, sw, cfg->max_positions);
    } else { /* mistral: no biases; sliding window only if it can never take effect */
        cfg->attention_bias = cfg->attention_out_bias = cfg->mlp_bias = 0;
        const cJSON *swv = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        int sw = 4096; /* MistralConfig default, also when the key is missing */
        if (swv && cJSON_IsNull(swv)) {
            sw = INT_MAX;
        } else if (swv) {
            TRY(as_int(c, swv, "sliding_window", &sw));
        }
        if (sw < cfg->max_positions)
            return cv_fail(c->err, CV_ERR_UNSUPPORTED,
                           "%s: key 'sliding_window' (%d) is smaller than "
                           "'max_position_embeddings' (%d): sliding-window attention is not "
                           "supported",
                           c->src, sw, cfg->max_positions);
    }
    TRY(parse_rope(c, root, cfg));
    double rot = cfg->head_dim * cfg->partial_rotary_factor;
    if (rot != floor(rot) || ((int)rot) % 2 != 0)
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: rotary dimension head_dim (%d) x partial_rotary_factor (%g) must be an "
                       "even integer",
                       c->src, cfg->head_dim, cfg->partial_rotary_factor);
    return CV_OK;
}

/* ---------------------------------------------------------------- T5 */

static cv_status parse_t5(ctx *c, const cJSON *root, cv_model_config *cfg) {
    int is_mt5 = strcmp(cfg->model_type, "mt5") == 0;
    TRY(get_pos(c, root, "vocab_size", is_mt5 ? 250112 : 32128, &cfg->vocab_size));
    TRY(get_pos(c, root, "d_model", 512, &cfg->hidden_size));
    TRY(get_pos(c, root, "d_kv", 64, &cfg->d_kv));
    TRY(get_pos(c, root, "d_ff", is_mt5 ? 1024 : 2048, &cfg->d_ff));
    TRY(get_pos(c, root, "num_layers", is_mt5 ? 8 : 6, &cfg->num_layers));
    TRY(get_pos(c, root, "num_decoder_layers", cfg->num_layers, &cfg->num_decoder_layers));
    TRY(get_pos(c, root, "num_heads", is_mt5 ? 6 : 8, &cfg->num_heads));
    TRY(get_pos(c, root, "relative_attention_num_buckets", 32, &cfg->rel_num_buckets));
    TRY(get_pos(c, root, "relative_attention_max_distance", 128, &cfg->rel_max_distance));
    /* the bucket formula divides by log(max_distance / (num_buckets / 4)) for the encoder */
    if (cfg->rel_num_buckets < 4 || cfg->rel_max_distance <= cfg->rel_num_buckets / 2)
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: keys 'relative_attention_num_buckets' (%d) and "
                       "'relative_attention_max_distance' (%d) need num_buckets >= 4 and "
                       "max_distance > num_buckets / 2",
                       c->src, cfg->rel_num_buckets, cfg->rel_max_distance);
    TRY(get_double(c, root, "layer_norm_epsilon", 1e-6, &cfg->norm_eps));
    TRY(get_int(c, root, "n_positions", 0, &cfg->max_positions));
    if (cfg->max_positions < 0)
        return cv_fail(c->err, CV_ERR_CONFIG, "%s: key 'n_positions' must not be negative", c->src);

    /* feed_forward_proj "ACT" or "gated-ACT", parsed as T5Config does */
    char ffp[sizeof cfg->hidden_act];
    TRY(get_str(c, root, "feed_forward_proj", is_mt5 ? "gated-gelu" : "relu", ffp, sizeof ffp));
    const char *dash = strchr(ffp, '-');
    if (dash && (strncmp(ffp, "gated-", 6) != 0 || strchr(dash + 1, '-') != NULL))
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'feed_forward_proj' ('%s') must be 'ACT' or 'gated-ACT', e.g. "
                       "'relu' or 'gated-gelu'",
                       c->src, ffp);
    cfg->is_gated_act = dash != NULL;
    snprintf(cfg->hidden_act, sizeof cfg->hidden_act, "%s", dash ? dash + 1 : ffp);
    if (strcmp(ffp, "gated-gelu") == 0) /* transformers' backward-compatibility mapping */
        snprintf(cfg->hidden_act, sizeof cfg->hidden_act, "gelu_new");
    /* Explicit dense_act_fn / is_gated_act keys are set after the derivation by
     * PretrainedConfig(**kwargs), so they win, as in transformers. */
    TRY(get_str(c, root, "dense_act_fn", cfg->hidden_act, cfg->hidden_act, sizeof cfg->hidden_act));
    TRY(get_bool(c, root, "is_gated_act", cfg->is_gated_act, &cfg->is_gated_act));
    TRY(check_act(c, item(root, "dense_act_fn") ? "dense_act_fn" : "feed_forward_proj",
                  cfg->hidden_act));

    TRY(get_bool(c, root, "tie_word_embeddings", is_mt5 ? 0 : 1, &cfg->tie_word_embeddings));
    TRY(get_token(c, root, "pad_token_id", 0, &cfg->pad_token_id));
    TRY(get_token(c, root, "bos_token_id", -1, &cfg->bos_token_id));
    /* absent or null: the pad token, which is what T5 generation starts from */
    TRY(get_int(c, root, "decoder_start_token_id", cfg->pad_token_id,
                &cfg->decoder_start_token_id));
    if (cfg->decoder_start_token_id < -1)
        return cv_fail(c->err, CV_ERR_CONFIG,
                       "%s: key 'decoder_start_token_id' must be a token id, got %d", c->src,
                       cfg->decoder_start_token_id);
    TRY(parse_eos(c, root, 1, cfg));
    cfg->num_kv_heads = cfg->num_heads;
    cfg->head_dim = cfg->d_kv;
    cfg->intermediate_size = cfg->d_ff;
    cfg->attention_bias = cfg->attention_out_bias = cfg->mlp_bias = 0;
    cfg->partial_rotary_factor = 1.0;
    return CV_OK;
}

/* ---------------------------------------------------------------- entry points */

cv_status cv_model_config_parse(const char *json_text, const char *source_name,
                                cv_model_config *cfg, cv_error *err) {
    ctx c = {source_name ? source_name : "config.json", err};
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = cfg->pad_token_id = cfg->decoder_start_token_id = -1;
    cfg->partial_rotary_factor = 1.0;
    cfg->rope_factor = 1.0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root)
        return cv_fail(err, CV_ERR_CONFIG, "%s: not valid JSON (error near byte %td)", c.src,
                       end ? end - json_text : (ptrdiff_t)0);
    cv_status s;
    if (!cJSON_IsObject(root)) {
        s = cv_fail(err, CV_ERR_CONFIG, "%s: top level is not a JSON object", c.src);
    } else {
        s = detect_family(&c, root, cfg);
        if (s == CV_OK) s = parse_common(&c, root, cfg);
        if (s == CV_OK) {
            switch (cfg->family) {
            case CV_FAMILY_GPT2:
                s = parse_gpt2(&c, root, cfg);
                break;
            case CV_FAMILY_LLAMA:
                s = parse_llama(&c, root, cfg);
                break;
            case CV_FAMILY_T5:
                s = parse_t5(&c, root, cfg);
                break;
            }
        }
        if (s == CV_OK && !(cfg->norm_eps > 0))
            s = cv_fail(err, CV_ERR_CONFIG, "%s: the norm epsilon must be positive, got %g", c.src,
                        cfg->norm_eps);
    }
    cJSON_Delete(root);
    return s;
}

cv_status cv_model_config_load(const char *path_or_dir, cv_model_config *cfg, cv_error *err) {
    char path[4096];
    if (cv_is_dir(path_or_dir)) {
        cv_status s = cv_path_join(path, sizeof path, path_or_dir, "config.json", err);
        if (s != CV_OK) return s;
    } else {
        if (strlen(path_or_dir) >= sizeof path)
            return cv_fail(err, CV_ERR_IO, "path too long: %s", path_or_dir);
        snprintf(path, sizeof path, "%s", path_or_dir);
    }
    if (!cv_is_file(path)) /* also keeps a FIFO or device from blocking the read */
        return cv_fail(err, CV_ERR_IO, "%s: not found or not a regular file", path);
    char *text = NULL;
    cv_status s = cv_read_file(path, &text, NULL, err);
    if (s != CV_OK) return s;
    s = cv_model_config_parse(text, path, cfg, err);
    free(text);
    return s;
}
