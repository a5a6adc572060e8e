/* synth.h — random-weight checkpoints written at run time (benchmarks, end-to-end tests with
 * real tokenizers), so no large model is ever committed. Each writer produces a Hugging Face
 * style directory: config.json + model.safetensors (weights ~ N(0, std), norm weights 1, biases
 * 0), which transformers' from_pretrained also loads (the PyTorch comparison uses the same file).
 * Tokenizer files are not written: copy or link them in. */
#ifndef COREVITAL_SYNTH_H
#define COREVITAL_SYNTH_H

#include "corevital/common.h"
#include "corevital/dtype.h"

typedef struct {
    int vocab, hidden, layers, heads, kv_heads, intermediate, max_positions;
    int tie_embeddings;
    cv_dtype dtype; /* F32, F16 or BF16 */
    float std;      /* weight scale, e.g. 0.02 */
    uint32_t seed;
    int bos_id, eos_id;
    int d_kv, decoder_layers; /* T5 only: per-head width and decoder depth (0 = layers) */
} cv_synth_shape;

cv_status cv_synth_gpt2(const char *dir, const cv_synth_shape *s, cv_error *err);
cv_status cv_synth_llama(const char *dir, const cv_synth_shape *s, cv_error *err);
/* T5 v1.1 / flan-t5 style: gated-gelu MLP, untied lm_head, 32 relative-position buckets. */
cv_status cv_synth_t5(const char *dir, const cv_synth_shape *s, cv_error *err);

#endif
