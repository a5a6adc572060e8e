/* model_config.h — config.json of a Hugging Face checkpoint, normalised into one struct, and the
 * model-family registry (GPT-2, LLaMA family incl. Mistral and Qwen2, T5 / flan-t5).
 *
 * Family detection follows the reference's ModelCapabilities.from_config order:
 * is_encoder_decoder first, then model_type, then architectures[0]. Missing keys take the
 * transformers class defaults (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, T5Config);
 * see notes/hf-formats-and-semantics.md §2. Every error names the source file and the key. */
#ifndef COREVITAL_MODEL_CONFIG_H
#define COREVITAL_MODEL_CONFIG_H

#include "corevital/common.h"

typedef enum { CV_FAMILY_GPT2, CV_FAMILY_LLAMA, CV_FAMILY_T5 } cv_family;
typedef enum { CV_ROPE_NONE, CV_ROPE_LINEAR, CV_ROPE_DYNAMIC, CV_ROPE_LLAMA3 } cv_rope_type;

#define CV_MAX_EOS_IDS 8

typedef struct {
    cv_family family;
    int is_encoder_decoder;
    char model_type[64];    /* "gpt2", "llama", "mistral", "qwen2", "t5", "mt5" */
    char architecture[128]; /* architectures[0], else the family's default class */
    int vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim, intermediate_size;
    int max_positions;   /* gpt2 n_positions; llama max_position_embeddings; t5: n_positions if
                          * given, else 0 = no learned position table (relative positions) */
    double norm_eps;     /* layer_norm_epsilon (gpt2, t5) / rms_norm_eps (llama) */
    char hidden_act[32]; /* gpt2 activation_function / llama hidden_act / t5 dense act (after the
                          * gated-gelu -> gelu_new mapping) */
    int scale_attn_weights, scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn; /* gpt2 */
    double rope_theta;
    cv_rope_type rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_positions; /* llama3 original_max_position_embeddings */
    double partial_rotary_factor;    /* 1.0 unless the config says otherwise */
    /* attention_bias: q, k and v projections have biases (llama attention_bias, qwen2 always);
     * attention_out_bias: the output projection (o_proj) has one too (llama attention_bias only,
     * never qwen2). */
    int attention_bias, attention_out_bias, mlp_bias, tie_word_embeddings;
    int d_kv, d_ff, num_decoder_layers, rel_num_buckets, rel_max_distance, is_gated_act; /* t5 */
    int decoder_start_token_id, bos_token_id, pad_token_id; /* -1 when absent / null */
    int eos_token_ids[CV_MAX_EOS_IDS];
    int n_eos;
    char torch_dtype[16]; /* torch_dtype or (transformers v5) dtype field, "" if absent */
} cv_model_config;

/* path_or_dir: a config.json file, or a directory containing config.json. */
cv_status cv_model_config_load(const char *path_or_dir, cv_model_config *cfg, cv_error *err);
/* Parse config.json text; source_name is used in error messages (e.g. the file path). */
cv_status cv_model_config_parse(const char *json_text, const char *source_name,
                                cv_model_config *cfg, cv_error *err);
/* "gpt2", "llama", "t5". */
const char *cv_family_name(cv_family f);
/* "none", "linear", "dynamic", "llama3". */
const char *cv_rope_type_name(cv_rope_type t);

#endif
