/* test_model_config.c — config.json parsing and family detection: real-world configs (fixtures
 * under tests/fixtures/config, written from the published files), class defaults for missing
 * keys, rope_scaling variants, and clear errors for wrong types, bad sizes and unsupported
 * architectures. */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corevital/model_config.h"

#define FIXTURES "tests/fixtures/config/"

static cv_model_config load_fixture(const char *name) {
    cv_model_config cfg;
    cv_error err = {0};
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    cv_status s = cv_model_config_load(path, &cfg, &err);
    ck_assert_msg(s == CV_OK, "%s: %s", path, err.msg);
    return cfg;
}

static cv_model_config parse_ok(const char *json) {
    cv_model_config cfg;
    cv_error err = {0};
    cv_status s = cv_model_config_parse(json, "inline.json", &cfg, &err);
    ck_assert_msg(s == CV_OK, "%s -> %s", json, err.msg);
    return cfg;
}

/* Parsing must fail with `code`, and the message must name the source and every substring. */
static void expect_err_v(const char *json, cv_status code, const char *const *subs) {
    cv_model_config cfg;
    cv_error err = {0};
    cv_status s = cv_model_config_parse(json, "inline.json", &cfg, &err);
    ck_assert_msg(s == code, "%s: expected status %d, got %d (%s)", json, code, s, err.msg);
    ck_assert_msg(strstr(err.msg, "inline.json") != NULL, "no source in: %s", err.msg);
    for (; *subs; subs++)
        ck_assert_msg(strstr(err.msg, *subs) != NULL, "'%s' not in: %s", *subs, err.msg);
}
#define expect_err(json, code, ...)                                                                \
    do {                                                                                           \
        const char *const subs_[] = {__VA_ARGS__, NULL};                                           \
        expect_err_v((json), (code), subs_);                                                       \
    } while (0)

/* ------------------------------------------------------------------ real-world configs */

START_TEST(test_gpt2) {
    cv_model_config c = load_fixture("gpt2.json");
    ck_assert_int_eq(c.family, CV_FAMILY_GPT2);
    ck_assert_str_eq(cv_family_name(c.family), "gpt2");
    ck_assert_int_eq(c.is_encoder_decoder, 0);
    ck_assert_str_eq(c.model_type, "gpt2");
    ck_assert_str_eq(c.architecture, "GPT2LMHeadModel");
    ck_assert_int_eq(c.vocab_size, 50257);
    ck_assert_int_eq(c.hidden_size, 768);
    ck_assert_int_eq(c.num_layers, 12);
    ck_assert_int_eq(c.num_heads, 12);
    ck_assert_int_eq(c.num_kv_heads, 12);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.intermediate_size, 3072); /* n_inner absent -> 4 * n_embd */
    ck_assert_int_eq(c.max_positions, 1024);
    ck_assert(c.norm_eps == 1e-5);
    ck_assert_str_eq(c.hidden_act, "gelu_new");
    ck_assert_int_eq(c.scale_attn_weights, 1);
    ck_assert_int_eq(c.scale_attn_by_inverse_layer_idx, 0);
    ck_assert_int_eq(c.reorder_and_upcast_attn, 0);
    ck_assert_int_eq(c.tie_word_embeddings, 1);
    ck_assert_int_eq(c.bos_token_id, 50256);
    ck_assert_int_eq(c.n_eos, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 50256);
    ck_assert_int_eq(c.pad_token_id, -1);
    ck_assert_int_eq(c.decoder_start_token_id, -1);
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);
    ck_assert_str_eq(c.torch_dtype, "");
}
END_TEST

START_TEST(test_llama2_family) {
    cv_model_config c = load_fixture("tinyllama-1.1b-chat.json");
    ck_assert_int_eq(c.family, CV_FAMILY_LLAMA);
    ck_assert_str_eq(c.model_type, "llama");
    ck_assert_str_eq(c.architecture, "LlamaForCausalLM");
    ck_assert_int_eq(c.vocab_size, 32000);
    ck_assert_int_eq(c.hidden_size, 2048);
    ck_assert_int_eq(c.intermediate_size, 5632);
    ck_assert_int_eq(c.num_layers, 22);
    ck_assert_int_eq(c.num_heads, 32);
    ck_assert_int_eq(c.num_kv_heads, 4);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.max_positions, 2048);
    ck_assert(c.norm_eps == 1e-5);
    ck_assert(c.rope_theta == 10000.0);
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);
    ck_assert(c.partial_rotary_factor == 1.0);
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    ck_assert_int_eq(c.attention_bias, 0);
    ck_assert_int_eq(c.mlp_bias, 0);
    ck_assert_int_eq(c.bos_token_id, 1);
    ck_assert_int_eq(c.n_eos, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 2);
    ck_assert_str_eq(c.torch_dtype, "bfloat16");
    ck_assert_str_eq(c.hidden_act, "silu");

    c = load_fixture("llama-2-7b.json");
    ck_assert_int_eq(c.num_kv_heads, 32);
    ck_assert_int_eq(c.head_dim, 128);
    ck_assert_int_eq(c.intermediate_size, 11008);
    ck_assert_int_eq(c.max_positions, 4096);
    ck_assert(c.rope_theta == 10000.0); /* absent: LlamaConfig default */
    ck_assert_str_eq(c.torch_dtype, "float16");
}
END_TEST

static void check_llama32(const cv_model_config *c) {
    ck_assert_int_eq(c->family, CV_FAMILY_LLAMA);
    ck_assert_int_eq(c->vocab_size, 128256);
    ck_assert_int_eq(c->hidden_size, 2048);
    ck_assert_int_eq(c->num_layers, 16);
    ck_assert_int_eq(c->num_kv_heads, 8);
    ck_assert_int_eq(c->head_dim, 64);
    ck_assert_int_eq(c->max_positions, 131072);
    ck_assert(c->rope_theta == 500000.0);
    ck_assert_int_eq(c->rope_type, CV_ROPE_LLAMA3);
    ck_assert_str_eq(cv_rope_type_name(c->rope_type), "llama3");
    ck_assert(c->rope_factor == 32.0);
    ck_assert(c->rope_low_freq_factor == 1.0);
    ck_assert(c->rope_high_freq_factor == 4.0);
    ck_assert_int_eq(c->rope_original_max_positions, 8192);
    ck_assert_int_eq(c->tie_word_embeddings, 1);
    ck_assert_int_eq(c->bos_token_id, 128000);
    ck_assert_str_eq(c->torch_dtype, "bfloat16");
}

START_TEST(test_llama32) {
    cv_model_config c = load_fixture("llama-3.2-1b-instruct.json");
    check_llama32(&c);
    ck_assert_int_eq(c.n_eos, 3);
    ck_assert_int_eq(c.eos_token_ids[0], 128001);
    ck_assert_int_eq(c.eos_token_ids[1], 128008);
    ck_assert_int_eq(c.eos_token_ids[2], 128009);
    /* transformers v5 layout: rope_parameters (with rope_theta inside) and "dtype" */
    c = load_fixture("llama-3.2-1b-v5.json");
    check_llama32(&c);
    ck_assert_int_eq(c.n_eos, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 128001);
}
END_TEST

START_TEST(test_mistral_qwen2) {
    cv_model_config c = load_fixture("mistral-7b-instruct-v0.2.json");
    ck_assert_int_eq(c.family, CV_FAMILY_LLAMA);
    ck_assert_str_eq(c.model_type, "mistral");
    ck_assert_str_eq(c.architecture, "MistralForCausalLM");
    ck_assert_int_eq(c.num_kv_heads, 8);
    ck_assert_int_eq(c.intermediate_size, 14336);
    ck_assert_int_eq(c.max_positions, 32768);
    ck_assert(c.rope_theta == 1e6);
    ck_assert_int_eq(c.attention_bias, 0);

    /* v0.1: a 4096-token sliding window below the 32768 context */
    cv_model_config cfg;
    cv_error err = {0};
    ck_assert_int_eq(cv_model_config_load(FIXTURES "mistral-7b-v0.1.json", &cfg, &err),
                     CV_ERR_UNSUPPORTED);
    ck_assert(strstr(err.msg, "sliding_window") && strstr(err.msg, "mistral-7b-v0.1.json"));

    c = load_fixture("qwen2.5-0.5b.json");
    ck_assert_int_eq(c.family, CV_FAMILY_LLAMA);
    ck_assert_str_eq(c.model_type, "qwen2");
    ck_assert_str_eq(c.architecture, "Qwen2ForCausalLM");
    ck_assert_int_eq(c.vocab_size, 151936);
    ck_assert_int_eq(c.hidden_size, 896);
    ck_assert_int_eq(c.num_heads, 14);
    ck_assert_int_eq(c.num_kv_heads, 2);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.attention_bias, 1); /* q/k/v biases */
    ck_assert_int_eq(c.attention_out_bias, 0);
    ck_assert_int_eq(c.mlp_bias, 0);
    ck_assert_int_eq(c.tie_word_embeddings, 1);
    ck_assert(c.norm_eps == 1e-6);
    ck_assert_int_eq(c.eos_token_ids[0], 151643);
}
END_TEST

START_TEST(test_t5) {
    cv_model_config c = load_fixture("t5-small.json");
    ck_assert_int_eq(c.family, CV_FAMILY_T5);
    ck_assert_str_eq(cv_family_name(c.family), "t5");
    ck_assert_int_eq(c.is_encoder_decoder, 1);
    ck_assert_str_eq(c.architecture, "T5ForConditionalGeneration");
    ck_assert_int_eq(c.vocab_size, 32128);
    ck_assert_int_eq(c.hidden_size, 512);
    ck_assert_int_eq(c.d_kv, 64);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.d_ff, 2048);
    ck_assert_int_eq(c.intermediate_size, 2048);
    ck_assert_int_eq(c.num_layers, 6);
    ck_assert_int_eq(c.num_decoder_layers, 6); /* absent -> num_layers */
    ck_assert_int_eq(c.num_heads, 8);
    ck_assert_int_eq(c.num_kv_heads, 8);
    ck_assert_int_eq(c.rel_num_buckets, 32);
    ck_assert_int_eq(c.rel_max_distance, 128); /* absent -> default */
    ck_assert(c.norm_eps == 1e-6);
    ck_assert_str_eq(c.hidden_act, "relu"); /* feed_forward_proj absent -> relu */
    ck_assert_int_eq(c.is_gated_act, 0);
    ck_assert_int_eq(c.tie_word_embeddings, 1);
    ck_assert_int_eq(c.decoder_start_token_id, 0);
    ck_assert_int_eq(c.pad_token_id, 0);
    ck_assert_int_eq(c.bos_token_id, -1);
    ck_assert_int_eq(c.n_eos, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 1);
    ck_assert_int_eq(c.max_positions, 512);
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);

    c = load_fixture("flan-t5-small.json");
    ck_assert_int_eq(c.family, CV_FAMILY_T5);
    ck_assert_int_eq(c.is_gated_act, 1);
    ck_assert_str_eq(c.hidden_act, "gelu_new");
    ck_assert_int_eq(c.d_ff, 1024);
    ck_assert_int_eq(c.num_layers, 8);
    ck_assert_int_eq(c.num_decoder_layers, 8);
    ck_assert_int_eq(c.num_heads, 6);
    ck_assert_int_eq(c.num_heads * c.d_kv, 384); /* inner dim differs from d_model */
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    ck_assert_str_eq(c.torch_dtype, "float32");
}
END_TEST

START_TEST(test_unsupported_models) {
    cv_model_config cfg;
    cv_error err = {0};
    ck_assert_int_eq(cv_model_config_load(FIXTURES "bert-base-uncased.json", &cfg, &err),
                     CV_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "'bert'") && strstr(err.msg, "bert-base-uncased.json"), "%s",
                  err.msg);
    ck_assert_int_eq(cv_model_config_load(FIXTURES "bart-large-cnn.json", &cfg, &err),
                     CV_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "'bart'") && strstr(err.msg, "encoder-decoder"), "%s", err.msg);
    expect_err("{\"architectures\":[\"BertModel\"]}", CV_ERR_UNSUPPORTED, "'BertModel'");
    expect_err("{\"model_type\":\"llama\",\"architectures\":[\"LlamaForSequenceClassification\"]}",
               CV_ERR_UNSUPPORTED, "'LlamaForSequenceClassification'");
    expect_err("{\"model_type\":\"gpt2\",\"architectures\":[\"LlamaForCausalLM\"]}",
               CV_ERR_UNSUPPORTED, "'LlamaForCausalLM'", "'gpt2'");
    expect_err("{\"model_type\":\"gpt2\",\"is_encoder_decoder\":true}", CV_ERR_UNSUPPORTED,
               "is_encoder_decoder");
    expect_err("{\"model_type\":\"gpt2\",\"add_cross_attention\":true}", CV_ERR_UNSUPPORTED,
               "add_cross_attention");
    expect_err("{}", CV_ERR_CONFIG, "model_type", "architectures");
}
END_TEST

/* ------------------------------------------------------------------ detection and defaults */

START_TEST(test_detection_order) {
    /* no model_type: is_encoder_decoder + architectures -> T5 with T5Config defaults */
    cv_model_config c = parse_ok(
        "{\"is_encoder_decoder\":true,\"architectures\":[\"T5ForConditionalGeneration\"]}");
    ck_assert_int_eq(c.family, CV_FAMILY_T5);
    ck_assert_str_eq(c.model_type, "t5");
    ck_assert_int_eq(c.hidden_size, 512);
    ck_assert_int_eq(c.num_layers, 6);
    ck_assert_int_eq(c.num_heads, 8);
    ck_assert_int_eq(c.d_ff, 2048);
    ck_assert_str_eq(c.hidden_act, "relu");
    /* architectures only */
    c = parse_ok("{\"architectures\":[\"GPT2LMHeadModel\"]}");
    ck_assert_int_eq(c.family, CV_FAMILY_GPT2);
    ck_assert_int_eq(c.hidden_size, 768);
    ck_assert_int_eq(c.num_layers, 12);
    ck_assert_int_eq(c.vocab_size, 50257);
    ck_assert_int_eq(c.max_positions, 1024);
    c = parse_ok("{\"architectures\":[\"T5WithLMHeadModel\"]}");
    ck_assert_int_eq(c.family, CV_FAMILY_T5);
    ck_assert_int_eq(c.is_encoder_decoder, 1);
    ck_assert_str_eq(c.architecture, "T5WithLMHeadModel");
    /* model_type only: default class, case-insensitive model_type */
    c = parse_ok("{\"model_type\":\"LLaMA\"}");
    ck_assert_int_eq(c.family, CV_FAMILY_LLAMA);
    ck_assert_str_eq(c.model_type, "llama");
    ck_assert_str_eq(c.architecture, "LlamaForCausalLM");
    ck_assert_int_eq(c.vocab_size, 32000);
    ck_assert_int_eq(c.hidden_size, 4096);
    ck_assert_int_eq(c.intermediate_size, 11008);
    ck_assert_int_eq(c.num_heads, 32);
    ck_assert_int_eq(c.num_kv_heads, 32); /* null/absent -> num_attention_heads */
    ck_assert_int_eq(c.max_positions, 2048);
    ck_assert(c.norm_eps == 1e-6);
    ck_assert_int_eq(c.bos_token_id, 1);
    ck_assert_int_eq(c.eos_token_ids[0], 2);
    c = parse_ok("{\"model_type\":\"gpt2\"}");
    ck_assert_str_eq(c.architecture, "GPT2LMHeadModel");
    c = parse_ok("{\"model_type\":\"t5\"}");
    ck_assert_int_eq(c.is_encoder_decoder, 1); /* T5Config default */
    ck_assert_str_eq(c.architecture, "T5ForConditionalGeneration");
    c = parse_ok("{\"model_type\":\"mt5\"}");
    ck_assert_int_eq(c.family, CV_FAMILY_T5);
    ck_assert_int_eq(c.is_gated_act, 1);
    ck_assert_str_eq(c.hidden_act, "gelu_new");
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    /* Qwen2Config defaults */
    c = parse_ok("{\"model_type\":\"qwen2\"}");
    ck_assert_int_eq(c.vocab_size, 151936);
    ck_assert_int_eq(c.intermediate_size, 22016);
    ck_assert_int_eq(c.max_positions, 32768);
    ck_assert_int_eq(c.n_eos, 0);
    ck_assert_int_eq(c.bos_token_id, -1);
}
END_TEST

START_TEST(test_gpt2_keys) {
    cv_model_config c = parse_ok("{\"model_type\":\"gpt2\",\"n_inner\":null,\"n_embd\":64,"
                                 "\"n_head\":4,\"n_layer\":2,\"n_ctx\":128,\"vocab_size\":300,"
                                 "\"eos_token_id\":null,\"pad_token_id\":0,\"bos_token_id\":null}");
    ck_assert_int_eq(c.intermediate_size, 256);
    ck_assert_int_eq(c.head_dim, 16);
    ck_assert_int_eq(c.max_positions, 128); /* n_ctx alias when n_positions is absent */
    ck_assert_int_eq(c.n_eos, 0);           /* explicit null: no token, not the class default */
    ck_assert_int_eq(c.bos_token_id, -1);
    ck_assert_int_eq(c.pad_token_id, 0);
    c = parse_ok("{\"model_type\":\"gpt2\",\"n_inner\":1000,\"n_positions\":64,\"n_ctx\":32,"
                 "\"scale_attn_weights\":false,\"scale_attn_by_inverse_layer_idx\":true,"
                 "\"reorder_and_upcast_attn\":true,\"activation_function\":\"gelu\","
                 "\"tie_word_embeddings\":false,\"layer_norm_epsilon\":1e-6}");
    ck_assert_int_eq(c.intermediate_size, 1000);
    ck_assert_int_eq(c.max_positions, 64);
    ck_assert_int_eq(c.scale_attn_weights, 0);
    ck_assert_int_eq(c.scale_attn_by_inverse_layer_idx, 1);
    ck_assert_int_eq(c.reorder_and_upcast_attn, 1);
    ck_assert_str_eq(c.hidden_act, "gelu");
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    ck_assert(c.norm_eps == 1e-6);
}
END_TEST

START_TEST(test_bad_values) {
    expect_err("{\"model_type\":\"gpt2\",\"n_embd\":\"768\"}", CV_ERR_CONFIG, "'n_embd'",
               "must be an integer", "string");
    expect_err("{\"model_type\":\"gpt2\",\"n_embd\":768.5}", CV_ERR_CONFIG, "'n_embd'", "integer");
    expect_err("{\"model_type\":\"gpt2\",\"n_embd\":1e12}", CV_ERR_CONFIG, "'n_embd'", "integer");
    expect_err("{\"model_type\":\"gpt2\",\"n_layer\":-2}", CV_ERR_CONFIG, "'n_layer'", "positive");
    expect_err("{\"model_type\":\"gpt2\",\"n_head\":0}", CV_ERR_CONFIG, "'n_head'", "positive");
    expect_err("{\"model_type\":\"gpt2\",\"vocab_size\":[1]}", CV_ERR_CONFIG, "'vocab_size'",
               "array");
    expect_err("{\"model_type\":\"gpt2\",\"n_embd\":100,\"n_head\":3}", CV_ERR_CONFIG, "'n_embd'",
               "'n_head'", "divisible");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":100,\"num_attention_heads\":3}",
               CV_ERR_CONFIG, "'hidden_size'", "'num_attention_heads'", "head_dim");
    cv_model_config c =
        parse_ok("{\"model_type\":\"llama\",\"hidden_size\":100,\"num_attention_heads\":3,"
                 "\"num_key_value_heads\":1,\"head_dim\":32}");
    ck_assert_int_eq(c.head_dim, 32);
    ck_assert_int_eq(c.num_kv_heads, 1);
    expect_err("{\"model_type\":\"llama\",\"head_dim\":-4}", CV_ERR_CONFIG, "'head_dim'");
    expect_err("{\"model_type\":\"llama\",\"num_attention_heads\":32,\"num_key_value_heads\":5}",
               CV_ERR_CONFIG, "'num_key_value_heads'", "multiple");
    expect_err("{\"model_type\":\"gpt2\",\"scale_attn_weights\":\"yes\"}", CV_ERR_CONFIG,
               "'scale_attn_weights'", "true or false");
    expect_err("{\"model_type\":\"gpt2\",\"layer_norm_epsilon\":\"1e-5\"}", CV_ERR_CONFIG,
               "'layer_norm_epsilon'", "number");
    expect_err("{\"model_type\":\"llama\",\"rms_norm_eps\":-1e-5}", CV_ERR_CONFIG, "epsilon");
    expect_err("{\"model_type\":\"gpt2\",\"activation_function\":\"mish\"}", CV_ERR_UNSUPPORTED,
               "'mish'", "'activation_function'");
    expect_err("{\"model_type\":\"llama\",\"hidden_act\":7}", CV_ERR_CONFIG, "'hidden_act'",
               "string");
    expect_err("{\"model_type\":\"gpt2\",\"architectures\":\"GPT2LMHeadModel\"}", CV_ERR_CONFIG,
               "'architectures'", "list");
    expect_err("{\"model_type\":\"gpt2\",\"architectures\":[5]}", CV_ERR_CONFIG, "'architectures'");
    expect_err("{\"model_type\":5}", CV_ERR_CONFIG, "'model_type'", "string");
    expect_err("{\"model_type\":\"gpt2\",\"eos_token_id\":[1,2,\"x\"]}", CV_ERR_CONFIG,
               "'eos_token_id'");
    expect_err("{\"model_type\":\"gpt2\",\"eos_token_id\":[1,2,3,4,5,6,7,8,9]}", CV_ERR_UNSUPPORTED,
               "'eos_token_id'");
    expect_err("{\"model_type\":\"gpt2\",\"bos_token_id\":-7}", CV_ERR_CONFIG, "'bos_token_id'");
    expect_err("{\"model_type\":\"gpt2\",\"torch_dtype\":\"float32-with-a-long-suffix\"}",
               CV_ERR_CONFIG, "'torch_dtype'");
    expect_err("{", CV_ERR_CONFIG, "not valid JSON");
    expect_err("{} x", CV_ERR_CONFIG, "not valid JSON");
    expect_err("[1]", CV_ERR_CONFIG, "not a JSON object");
    expect_err("", CV_ERR_CONFIG, "not valid JSON");
}
END_TEST

/* ------------------------------------------------------------------ llama family specifics */

START_TEST(test_rope_scaling) {
    cv_model_config c = parse_ok(
        "{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"factor\":4.0}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_LINEAR);
    ck_assert(c.rope_factor == 4.0);
    c = parse_ok("{\"model_type\":\"llama\",\"max_position_embeddings\":4096,"
                 "\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":2}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_DYNAMIC);
    ck_assert_str_eq(cv_rope_type_name(c.rope_type), "dynamic");
    ck_assert(c.rope_factor == 2.0);
    ck_assert_int_eq(c.rope_original_max_positions, 4096); /* = max_position_embeddings */
    c = parse_ok("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"default\"}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);
    ck_assert(c.rope_factor == 1.0);
    /* both keys: rope_type wins, as transformers' standardisation does */
    c = parse_ok("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"dynamic\","
                 "\"rope_type\":\"linear\",\"factor\":3}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_LINEAR);
    /* transformers v5 rope_parameters */
    c = parse_ok("{\"model_type\":\"llama\",\"rope_theta\":1.0,"
                 "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000.0}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);
    ck_assert(c.rope_theta == 1000.0);
    c = parse_ok("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_theta\":50000}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_NONE);
    ck_assert(c.rope_theta == 50000.0);
    c = parse_ok("{\"model_type\":\"mistral\",\"sliding_window\":null,"
                 "\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":8,\"rope_theta\":1e6}}");
    ck_assert_int_eq(c.rope_type, CV_ROPE_LINEAR);
    ck_assert(c.rope_factor == 8.0 && c.rope_theta == 1e6);
    c = parse_ok("{\"model_type\":\"llama\",\"partial_rotary_factor\":0.5}");
    ck_assert(c.partial_rotary_factor == 0.5);

    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
               CV_ERR_UNSUPPORTED, "'yarn'", "rope_scaling.rope_type");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\"}}", CV_ERR_CONFIG,
               "'rope_scaling.factor'", "required");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"factor\":\"2\"}}",
               CV_ERR_CONFIG, "'rope_scaling.factor'", "number");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"factor\":-2}}",
               CV_ERR_CONFIG, "'rope_scaling.factor'", "positive");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,"
               "\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}",
               CV_ERR_CONFIG, "'rope_scaling.low_freq_factor'");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,"
               "\"low_freq_factor\":4,\"high_freq_factor\":1,\"original_max_position_embeddings\":"
               "8192}}",
               CV_ERR_CONFIG, "low_freq_factor", "high_freq_factor");
    expect_err("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"llama3\","
               "\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4}}",
               CV_ERR_CONFIG, "'rope_parameters.original_max_position_embeddings'");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":\"linear\"}", CV_ERR_CONFIG,
               "'rope_scaling'", "object");
    expect_err("{\"model_type\":\"llama\",\"rope_scaling\":{\"factor\":2}}", CV_ERR_CONFIG,
               "'rope_scaling'", "rope_type");
    expect_err("{\"model_type\":\"llama\",\"rope_parameters\":[]}", CV_ERR_CONFIG,
               "'rope_parameters'");
    expect_err("{\"model_type\":\"llama\",\"rope_theta\":0}", CV_ERR_CONFIG, "'rope_theta'");
    expect_err("{\"model_type\":\"llama\",\"partial_rotary_factor\":0.3}", CV_ERR_CONFIG,
               "partial_rotary_factor", "even");
    expect_err("{\"model_type\":\"llama\",\"partial_rotary_factor\":1.5}", CV_ERR_CONFIG,
               "'partial_rotary_factor'");
}
END_TEST

START_TEST(test_biases_and_windows) {
    cv_model_config c = parse_ok("{\"model_type\":\"llama\",\"attention_bias\":true,"
                                 "\"mlp_bias\":true}");
    ck_assert_int_eq(c.attention_bias, 1);
    ck_assert_int_eq(c.attention_out_bias, 1);
    ck_assert_int_eq(c.mlp_bias, 1);
    /* Mistral: the window is accepted when it is null or covers the whole context */
    c = parse_ok("{\"model_type\":\"mistral\",\"max_position_embeddings\":32768,"
                 "\"sliding_window\":32768}");
    ck_assert_int_eq(c.num_kv_heads, 8); /* MistralConfig default */
    ck_assert_int_eq(c.intermediate_size, 14336);
    expect_err("{\"model_type\":\"mistral\"}", CV_ERR_UNSUPPORTED, "'sliding_window'");
    expect_err("{\"model_type\":\"mistral\",\"sliding_window\":\"x\"}", CV_ERR_CONFIG,
               "'sliding_window'");
    /* Qwen2: sliding window only matters when use_sliding_window is true */
    c = parse_ok("{\"model_type\":\"qwen2\",\"use_sliding_window\":false,\"sliding_window\":4096}");
    ck_assert_int_eq(c.attention_bias, 1);
    expect_err("{\"model_type\":\"qwen2\",\"use_sliding_window\":true,\"sliding_window\":4096}",
               CV_ERR_UNSUPPORTED, "'use_sliding_window'", "sliding-window");
    c = parse_ok("{\"model_type\":\"qwen2\",\"use_sliding_window\":true,\"sliding_window\":32768}");
    ck_assert_int_eq(c.max_positions, 32768);
}
END_TEST

/* ------------------------------------------------------------------ t5 specifics */

START_TEST(test_t5_feed_forward_proj) {
    cv_model_config c = parse_ok("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-gelu\"}");
    ck_assert_int_eq(c.is_gated_act, 1);
    ck_assert_str_eq(c.hidden_act, "gelu_new"); /* backward-compatibility mapping */
    c = parse_ok("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-silu\"}");
    ck_assert_int_eq(c.is_gated_act, 1);
    ck_assert_str_eq(c.hidden_act, "silu");
    c = parse_ok("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gelu\"}");
    ck_assert_int_eq(c.is_gated_act, 0);
    ck_assert_str_eq(c.hidden_act, "gelu");
    /* explicit dense_act_fn is applied after the derivation, as PretrainedConfig(**kwargs) does */
    c = parse_ok("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-gelu\","
                 "\"dense_act_fn\":\"gelu\"}");
    ck_assert_str_eq(c.hidden_act, "gelu");
    ck_assert_int_eq(c.is_gated_act, 1);
    expect_err("{\"model_type\":\"t5\",\"feed_forward_proj\":\"foo-gelu\"}", CV_ERR_CONFIG,
               "'feed_forward_proj'", "gated-ACT");
    expect_err("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-gelu-new\"}", CV_ERR_CONFIG,
               "'feed_forward_proj'");
    expect_err("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-mish\"}", CV_ERR_UNSUPPORTED,
               "'mish'", "'feed_forward_proj'");
    expect_err("{\"model_type\":\"t5\",\"feed_forward_proj\":3}", CV_ERR_CONFIG,
               "'feed_forward_proj'");
}
END_TEST

START_TEST(test_t5_fields) {
    cv_model_config c = parse_ok("{\"model_type\":\"t5\",\"num_layers\":3,"
                                 "\"num_decoder_layers\":null,\"pad_token_id\":5,"
                                 "\"eos_token_id\":[1,7]}");
    ck_assert_int_eq(c.num_decoder_layers, 3);
    ck_assert_int_eq(c.decoder_start_token_id, 5); /* defaults to pad_token_id */
    ck_assert_int_eq(c.n_eos, 2);
    ck_assert_int_eq(c.eos_token_ids[1], 7);
    ck_assert_int_eq(c.max_positions, 0); /* no n_positions: no learned position table */
    c = parse_ok("{\"model_type\":\"t5\",\"num_layers\":3,\"num_decoder_layers\":2}");
    ck_assert_int_eq(c.num_decoder_layers, 2);
    expect_err("{\"model_type\":\"t5\",\"d_kv\":0}", CV_ERR_CONFIG, "'d_kv'");
    expect_err("{\"model_type\":\"t5\",\"num_decoder_layers\":-1}", CV_ERR_CONFIG,
               "'num_decoder_layers'");
    expect_err("{\"model_type\":\"t5\",\"relative_attention_max_distance\":8}", CV_ERR_CONFIG,
               "'relative_attention_max_distance'");
}
END_TEST

/* ------------------------------------------------------------------ loading from disk */

START_TEST(test_load_paths) {
    char dir[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cv-cfg-test-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);

    cv_model_config cfg;
    cv_error err = {0};
    /* a directory without config.json */
    ck_assert_int_eq(cv_model_config_load(dir, &cfg, &err), CV_ERR_IO);
    ck_assert(strstr(err.msg, "config.json") != NULL);

    /* a directory with one: same result as the file */
    char *text = NULL;
    ck_assert_int_eq(cv_read_file(FIXTURES "flan-t5-small.json", &text, NULL, &err), CV_OK);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    free(text);
    ck_assert_int_eq(cv_model_config_load(dir, &cfg, &err), CV_OK);
    cv_model_config direct = load_fixture("flan-t5-small.json");
    ck_assert(memcmp(&cfg, &direct, sizeof cfg) == 0);

    /* a parse error names the file */
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("{\"model_type\":\"gpt2\",\"n_head\":\"12\"}", f);
    fclose(f);
    ck_assert_int_eq(cv_model_config_load(dir, &cfg, &err), CV_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "'n_head'"), "%s", err.msg);
    unlink(path);
    rmdir(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model_config");
    TCase *real = tcase_create("real-world");
    tcase_add_test(real, test_gpt2);
    tcase_add_test(real, test_llama2_family);
    tcase_add_test(real, test_llama32);
    tcase_add_test(real, test_mistral_qwen2);
    tcase_add_test(real, test_t5);
    tcase_add_test(real, test_unsupported_models);
    suite_add_tcase(s, real);
    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, test_detection_order);
    tcase_add_test(rules, test_gpt2_keys);
    tcase_add_test(rules, test_bad_values);
    tcase_add_test(rules, test_rope_scaling);
    tcase_add_test(rules, test_biases_and_windows);
    tcase_add_test(rules, test_t5_feed_forward_proj);
    tcase_add_test(rules, test_t5_fields);
    tcase_add_test(rules, test_load_paths);
    suite_add_tcase(s, rules);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
