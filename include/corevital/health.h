/* health.h — the run-level health layer (HEALTH.md §6-§7): flags, risk, layer blame, compound
 * signals, early warning, fingerprint, prompt hash and narrative.
 *
 * It is fed one finalized step at a time (scalars only: the per-step logit values and, per
 * layer, a handful of attention / hidden-state numbers that src/model/generate.c derives from the
 * statistic records) and keeps streaming accumulators plus the per-step scalar series the trends
 * need (a few doubles per step, never a tensor). Per-step values are final when the step ends;
 * the online rules (repetition, NaN/Inf, risk) can be asked after every step, which is what
 * --stop-on and --stream use. cv_health_finish produces the trace's `extensions` objects.
 *
 * Nothing here touches a backend or a model: the module is pure C over doubles, unit-tested on
 * constructed series (tests/test_health.c) and checked against a numpy re-implementation on
 * Hugging Face tensors (tests/ref/gen_health.py). */
#ifndef COREVITAL_HEALTH_H
#define COREVITAL_HEALTH_H

#include <cjson/cJSON.h>
#include <stdint.h>

/* HEALTH.md §0 profiles, picked by a substring of the architecture name (lower-cased), else the
 * default. focus_threshold is the encoder layers' focused-head threshold (decision 11). */
typedef struct {
    const char *key; /* "default", "gpt2", "llama", "mistral", "mixtral", "phi3", "qwen2" */
    double high_entropy_bits;
    double tau_rep;
    double l2_multiplier;
    double focus_threshold;
} cv_health_profile;

/* The profile for an architecture name such as "GPT2LMHeadModel" or "LlamaForCausalLM". */
const cv_health_profile *cv_health_profile_for(const char *architecture);

/* One layer at one step (decoder layers; for T5, the decoder's self-attention). NAN marks a
 * value that is absent. */
typedef struct {
    double l2;            /* the flags' l2_norm_mean: on clamp(X, +-1e6) (HEALTH.md §4) */
    int has_nan, has_inf; /* in X, in the attention slice or in the cross-attention slice */
    int attn_valid;       /* 0 when every row of the step had K <= 1 (decision 3): no counts */
    int collapsed_heads;  /* heads with head_entropy_norm < 0.03 */
    int focused_heads;    /* heads with head_concentration > 0.9 */
    double entropy_mean;  /* attention entropy_mean (nats), NAN if none */
} cv_health_layer_step;

/* One generated step (step_index = P + i). */
typedef struct {
    int64_t step_index;
    const char *token_text; /* borrowed for the call; the narrative copies what it needs */
    double entropy_bits, perplexity, surprisal_bits, top_k_margin, topk_mass;
    double cos_prev;            /* NAN at the first step */
    int logits_nan, logits_inf; /* non-finite raw logits at this step (decision 4) */
} cv_health_step;

typedef struct cv_health_run cv_health_run;

/* n_layers = L of the decoder stack (mid-layer rule), n_heads = H (query heads), prompt_tokens P.
 * Returns NULL on out of memory. */
cv_health_run *cv_health_run_new(const cv_health_profile *prof, int n_layers, int n_heads,
                                 int prompt_tokens);
void cv_health_run_free(cv_health_run *r);

/* Basin scores of the prompt (HEALTH.md §5), layer-major [n_layers][n_heads]; copied. Optional:
 * without them context_loss reads a mean basin of 1. */
int cv_health_run_set_basins(cv_health_run *r, const double *basins, int n_layers, int n_heads);

/* Add one finished step; `layers` has n_layers entries. Returns 0, -1 on out of memory. */
int cv_health_run_add_step(cv_health_run *r, const cv_health_step *s,
                           const cv_health_layer_step *layers);

/* Online state after the steps added so far. */
int cv_health_steps(const cv_health_run *r);
int cv_health_repetition(const cv_health_run *r);                /* flag so far (decision 2) */
int64_t cv_health_repetition_first_step(const cv_health_run *r); /* step_index, -1 if never */
int cv_health_nan(const cv_health_run *r);                       /* NaN anywhere so far */
int cv_health_inf(const cv_health_run *r);
double cv_health_risk_now(const cv_health_run *r); /* risk v2 over the steps so far */

/* Flags so far as the `health_flags` object (HEALTH.md §1, upstream HealthFlags field names plus
 * repetition_first_step). Caller owns the cJSON. */
cJSON *cv_health_flags_json(const cv_health_run *r);

/* The run-level extensions, added to `ext` (the trace's `extensions` object): health_profile,
 * health_flags, risk, compound_signals, early_warning, fingerprint, narrative. `prompt` and
 * `hf_id` feed the prompt hash. Returns 0, -1 on out of memory. */
int cv_health_finish(const cv_health_run *r, const char *prompt, const char *hf_id, cJSON *ext);

/* Pieces the console and the tests use. */
typedef struct {
    double risk;
    const char *main_factor; /* the factor with the largest contribution, or NULL */
    int blamed_layer;        /* most severe blamed layer (lowest index on ties), -1 if none */
} cv_health_headline;
void cv_health_headline_of(const cv_health_run *r, cv_health_headline *out);
/* The narrative sentence(s) for the run so far; caller frees. */
char *cv_health_narrative(const cv_health_run *r);

/* prompt_hash: sha256 hex of UTF-8(prompt.strip().lower() + "\n" + hf_id) with Python's Unicode
 * str.strip / str.lower (utf8proc). out gets 65 bytes. Returns 0, -1 on bad UTF-8 / memory. */
int cv_health_prompt_hash(const char *prompt, const char *hf_id, char out[65]);

#endif
