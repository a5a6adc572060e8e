/* model.h — a loaded model: config, weights bound by name, the backend it runs on, and the
 * family's forward pass. One family file per architecture (src/model/gpt2.c, llama.c, t5.c)
 * implements cv_family_ops using only the op table (backend.h).
 *
 * The forward pass processes T tokens at positions pos0..pos0+T-1 against the KV cache and, on
 * request, fills one step's statistic records (stats.h) and copies full tensors out for parity
 * tests (cv_capture). Seq2seq models run encode() once, then forward() on decoder tokens. */
#ifndef COREVITAL_MODEL_H
#define COREVITAL_MODEL_H

#include "corevital/backend.h"
#include "corevital/common.h"
#include "corevital/model_config.h"
#include "corevital/safetensors.h"
#include "corevital/stats.h"

/* Full tensors copied to host buffers for tests (every pointer may be NULL). Layer indices follow
 * Hugging Face: hidden[0] is the embedding output, hidden[j] (1 <= j <= L) the output of block
 * j-1, with the final norm applied to hidden[L]. */
typedef struct {
    float **hidden; /* [L + 1] each (T, C) */
    float **attn;   /* [L] each (H, T, n_keys) self-attention probabilities */
    float **cross;  /* [L] each (H, T, P) cross-attention probabilities (seq2seq decoder) */
} cv_capture;

typedef struct cv_model cv_model;

typedef struct {
    const char *name;
    cv_status (*load)(cv_model *m, cv_error *err);
    void (*free)(cv_model *m);
    /* Allocate activations for up to max_T tokens per call, a KV cache of n_ctx positions and
     * logits for `logit_rows` rows (1 for generation; max_T to get every position). */
    cv_status (*reserve)(cv_model *m, int max_T, int n_ctx, int logit_rows, cv_error *err);
    /* Seq2seq only: run the encoder over P tokens; records for encoder layers (layout with
     * has_cross 0) when `stats` is not NULL. */
    cv_status (*encode)(cv_model *m, const int32_t *tokens, int P, double *stats,
                        const cv_stats_layout *lay, cv_capture *cap, cv_error *err);
    /* Decoder tokens at pos0..; *logits receives a backend pointer to (rows, V): the last row, or
     * all T rows when all_logits (requires logit_rows >= T). tokens NULL (families with
     * step_on_device only; T = 1): the token is read from backend memory, m->step[CV_SP_TOKEN]
     * (backend.h), where the previous step's pick_greedy left it. */
    cv_status (*forward)(cv_model *m, const int32_t *tokens, int T, int pos0, double *stats,
                         const cv_stats_layout *lay, cv_capture *cap, int all_logits,
                         float **logits, cv_error *err);
    int step_on_device; /* forward accepts tokens NULL with m->step (decoder-only families) */
} cv_family_ops;

struct cv_model {
    cv_model_config cfg;
    cv_backend *be;
    cv_st *st;
    const cv_family_ops *ops;
    void *impl;             /* the family's weights and state */
    int n_ctx;              /* KV cache capacity, positions */
    int max_T;              /* activation capacity, tokens per call */
    int logit_rows;         /* logits capacity, rows */
    int enc_len;            /* seq2seq: encoder positions held */
    cv_dtype weight_dtype;  /* dtype the matrix weights are held in (reported as model.dtype) */
    cv_weight_format quant; /* CV_WFMT_DENSE (none), CV_WFMT_INT8 or CV_WFMT_NF4: set before load */
    cv_dtype want_dtype;    /* CV_DT_COUNT: keep the checkpoint's dtype; else convert matrices */
    int n_quantized;        /* linear layers actually quantized */
    cv_dtype kv_dtype;      /* self-attention KV cache: CV_DT_F32 (default) or CV_DT_BF16 */
    cv_dtype prefill_dtype; /* products over several rows: CV_DT_F32 (default, exact) or
                               CV_DT_BF16 (x and W rounded, BF16 dot products) */
    void **host_bufs;       /* host allocations weights point into (transposed / converted) */
    size_t n_host_bufs;
    cv_host_arena arena; /* the matrices' own copy where the backend reads host weights (the
                            CPU): huge pages, not the mmap's file pages (cv_model_host_matrix) */
    void **be_bufs;      /* backend allocations (vectors, activations, caches) */
    size_t n_be_bufs;
    cv_weight **weights; /* uploaded matrices */
    size_t n_weights;
    /* set by every forward (backend memory): the final norm's output rows of the last call (what
     * the LM head reads, before T5's d_model^-0.5 rescale), its row count, and the LM head weight
     * (NULL for T5, whose prompt has no LM head pass) */
    const float *head_in;
    int head_rows;
    const cv_weight *head_w;
    /* set by the generation loop around a prompt chunk before the last (cv_prefill_chunks):
     * that forward stops after the final norm, with no LM head row and no logits record */
    int head_skip;
    /* decode-step parameters in backend memory (CV_SP_WORDS int32, backend.h), owned and set by
     * the generation loop for a greedy decode; NULL otherwise */
    int32_t *step;
    float
        *xin; /* (xin_rows, C) scratch: the block input kept for the layer-transformation cosine */
    int xin_rows; /* its capacity in rows */
    char dir[4096];
};

/* Health fields of an attention call (stats.h layout; no-ops when health is off): per-head
 * records of layer l (self or cross), the rows they take, and the basin sums of a prompt pass. */
static inline void cv_model_attn_health(cv_attn_args *a, double *stats, const cv_stats_layout *lay,
                                        int l, int cross) {
    a->heads = cross ? cv_stats_cross_heads(stats, lay, l) : cv_stats_heads(stats, lay, l);
    /* the last query row: of this call, or of the prompt (prompt_P) when a prompt pass runs in
     * chunks (at or past T: none in this chunk) */
    a->heads_from = !lay || !lay->heads_last_row ? 0
                    : lay->prompt_P > 0          ? lay->prompt_P - 1 - a->q_pos0
                                                 : a->T - 1;
    a->basin = cross ? NULL : cv_stats_basin(stats, lay, l);
    a->sparse = cross ? NULL : cv_stats_sparse(stats, lay, l);
    a->basin_lo = lay ? lay->prompt_P / 3 : 0;
    a->basin_hi = lay ? 2 * lay->prompt_P / 3 : 0;
}
/* A decode step at the position in backend memory (dpos, NULL: the host's pos0 as set): the
 * attention reads its position there, the launch is sized for the whole cache (backend.h). */
static inline void cv_model_attn_step(cv_attn_args *a, const int32_t *dpos, int n_ctx) {
    if (!dpos) return;
    a->dpos = dpos;
    a->n_keys = n_ctx;
    a->q_pos0 = n_ctx - a->T;
}
/* A long prompt's MLP runs in row chunks, so that its (rows, d_ff) activations (Llama's gate and
 * up, T5's ff1 and ff2) stop growing with the prompt: at most cv_model_mlp_rows(max_T) rows a
 * call (1,024, or the environment's CV_MLP_ROWS), in cv_mlp_chunks(T, rows) chunks of nearly
 * equal size, chunk i starting at row cv_mlp_chunk_start(T, n, i). A chunk is then at least half
 * the cap, so its products keep the packed path; rows are independent, and on the CPU every row
 * comes out bit for bit as from one call over all T (test_parity_decoder). */
int cv_model_mlp_rows(int max_T);
static inline int cv_mlp_chunks(int T, int rows) {
    return (T + rows - 1) / rows;
}
static inline int cv_mlp_chunk_start(int T, int n, int i) {
    return (int)((long long)T * i / n);
}
/* A decoder-only prompt on the CPU runs through the forward in row chunks of `cap` rows at
 * positions 0, cap, 2 cap, ... (the way a decode step extends the cache, several rows at once),
 * so the activations the forward holds are (cap, hidden) and (cap, d_ff) whatever the prompt's
 * length; only the KV cache grows with it. cap is cv_model_prefill_rows(): 1,024 rows, or the
 * environment's CV_PREFILL_ROWS rounded up to a multiple of 32 (0: the whole prompt in one
 * call). A remainder under 32 rows joins the last chunk, so every chunk starts at a multiple of
 * 32 (the CPU's statistics blocks) and keeps at least 32 rows (the packed products): every row,
 * and every record merged from them, comes out bit for bit as from one call over the prompt
 * (test_step). Chunk i of cv_prefill_chunks(T, cap) starts at cv_prefill_chunk_start. */
int cv_model_prefill_rows(void);
static inline int cv_prefill_chunks(int T, int cap) {
    if (cap <= 0 || T <= cap) return 1;
    return T % cap >= 32 ? T / cap + 1 : T / cap;
}
static inline int cv_prefill_chunk_start(int T, int cap, int n, int i) {
    return i >= n ? T : i * cap;
}
/* the largest chunk: what the forward's buffers must hold */
static inline int cv_prefill_chunk_max(int T, int cap) {
    const int n = cv_prefill_chunks(T, cap), last = T - (n - 1) * cap;
    return n <= 1 || last > cap ? last : cap;
}
/* Layer transformations of a prompt pass: before block l (l >= 1) keep its input; after it, add
 * sum_t cos(input, output) to entry l. */
static inline void cv_model_ltrans_keep(cv_model *m, double *stats, const cv_stats_layout *lay,
                                        int l, const float *x, int T) {
    if (l >= 1 && cv_stats_ltrans(stats, lay))
        m->be->copy(m->be, m->xin, x, sizeof(float) * (size_t)T * m->cfg.hidden_size);
}
static inline void cv_model_ltrans_add(cv_model *m, double *stats, const cv_stats_layout *lay,
                                       int l, const float *out, int T) {
    double *lt = cv_stats_ltrans(stats, lay);
    if (l >= 1 && lt) m->be->row_cos(m->be, lt + l, m->xin, out, T, m->cfg.hidden_size);
}

/* Load config.json + safetensors from `dir` onto backend `be` (not owned). quant selects
 * quantization at load of the blocks' linear layers (CV_WFMT_DENSE = none). */
cv_status cv_model_load(const char *dir, cv_backend *be, cv_model **out, cv_error *err);
cv_status cv_model_load_quant(const char *dir, cv_backend *be, cv_weight_format quant,
                              cv_model **out, cv_error *err);
/* Full control: quantization mode and the dtype matrices are held in (CV_DT_COUNT = as stored in
 * the checkpoint; CV_DT_F32 / CV_DT_F16 / CV_DT_BF16 convert at load: config model.dtype). */
typedef struct {
    cv_weight_format quant;
    cv_dtype dtype;
    cv_dtype kv_dtype; /* CV_DT_F32 (0, the default) or CV_DT_BF16 (config model.kv_dtype) */
    /* CV_DT_F32 (0, the default) or CV_DT_BF16 (config model.prefill_dtype): dense matrices'
     * products over more than one row in bf16 (cv_weight.prefill_bf16) */
    cv_dtype prefill_dtype;
    /* 1: where the backend reads host memory (the CPU), copy the dense matrices off the mmap into
     * one huge-page arena: each decode step streamed them up to 7% faster, the load costs the
     * copy and the zeroing of its pages (0.1-2 s for 513 MiB on a VM: docs/perf.md), so it pays
     * only in long generations. CV_HUGEPAGES=0 in the environment vetoes it, CV_HUGEPAGES=1
     * forces it on every load. */
    int weights_arena;
} cv_model_opts;
cv_status cv_model_load_opts(const char *dir, cv_backend *be, const cv_model_opts *opts,
                             cv_model **out, cv_error *err);
void cv_model_free(cv_model *m);
/* Number of layers summarized per decoder step, and the decoder hidden size. */
int cv_model_num_layers(const cv_model *m);
int cv_model_vocab(const cv_model *m);

/* A decoder's self-attention KV cache: keys and values of `heads` kv heads of hd per layer, in
 * m->kv_dtype, laid out (layers, heads, n_ctx, hd) on a kv_head_major backend (the CPU: each
 * head's keys contiguous, so decode streams them) and (layers, n_ctx, heads * hd) elsewhere. A
 * forward writes the new rows of a call in fp32 where cv_kv_new_k / cv_kv_new_v say (the cache
 * itself when it is fp32 and interleaved; staging rows (max_T, heads * hd) otherwise), applies
 * RoPE there, then calls cv_kv_commit, which stores staged rows into the cache (kv_store: the
 * bf16 cache rounds to nearest even). So the values a bf16 cache holds are exactly the fp32 ones
 * rounded, and attention reads them widened, with fp32 scores and double sums as before. */
typedef struct {
    void *k, *v;
    float *kst, *vst; /* staged: fp32 (max_T, dim) */
    int layers, n_ctx, heads, hd, dim;
    int staged, head_major;
    cv_dtype dtype;
    /* the decode step's position in backend memory (CV_SP_POS) when the family's forward runs a
     * device-position step (set per forward), else NULL: cv_kv_commit stores at dpos[0] */
    const int32_t *dpos;
} cv_kv_cache;
cv_status cv_kv_reserve(cv_model *m, cv_kv_cache *kv, int layers, int n_ctx, int max_T, int heads,
                        int hd, cv_error *err);
float *cv_kv_new_k(const cv_kv_cache *kv, int l, int pos0);
float *cv_kv_new_v(const cv_kv_cache *kv, int l, int pos0);
void cv_kv_commit(cv_model *m, const cv_kv_cache *kv, int l, int pos0, int T);
/* Point a->k / a->v (or a->k16 / a->v16) at layer l's cache and set a->kv_stride. */
void cv_kv_bind(const cv_kv_cache *kv, int l, cv_attn_args *a);

/* Helpers for family files: bind tensors by name (trying the family's name prefixes). */
const cv_st_tensor *cv_model_tensor(const cv_model *m, const char *name);
/* A matrix (rows, cols) in nn.Linear layout; `transpose` for checkpoints stored (cols, rows)
 * (GPT-2 Conv1D). Keeps F32/F16/BF16 as stored. */
cv_status cv_model_matrix(cv_model *m, cv_weight *w, const char *name, int64_t rows, int64_t cols,
                          int transpose, cv_error *err);
/* A linear layer inside a block: like cv_model_matrix, but quantized at load when the model was
 * opened with a quantization mode (transformers quantizes these and keeps embeddings, norms and
 * lm_head in full precision). */
cv_status cv_model_linear(cv_model *m, cv_weight *w, const char *name, int64_t rows, int64_t cols,
                          int transpose, cv_error *err);
/* Upload a host matrix as a block linear layer (quantized when the mode asks). */
cv_status cv_model_upload_linear(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype,
                                 int64_t rows, int64_t cols, cv_error *err);

/* The host data of a matrix in nn.Linear layout (transposed into a model-owned buffer when
 * needed), for callers that upload parts of it (GPT-2 c_attn -> q, k, v). */
cv_status cv_model_host_matrix(cv_model *m, const char *name, int64_t rows, int64_t cols,
                               int transpose, const void **host, cv_dtype *dtype, cv_error *err);
/* Free a host buffer returned by cv_model_host_matrix once nothing points into it any more
 * (quantized uploads copy; mmap-backed data is left alone). */
void cv_model_release_host(cv_model *m, const void *host);
/* Upload host rows as a weight the model owns (freed with the model). */
cv_status cv_model_upload(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype, int64_t rows,
                          int64_t cols, cv_error *err);
/* A vector of n values converted to fp32 in backend memory. */
cv_status cv_model_vector(cv_model *m, float **dst, const char *name, int64_t n, cv_error *err);
void *cv_model_alloc(cv_model *m, size_t bytes, cv_error *err); /* backend memory, zeroed, owned */
void cv_model_release(cv_model *m, void *p);                    /* free one cv_model_alloc block */

extern const cv_family_ops cv_gpt2_ops;
extern const cv_family_ops cv_llama_ops;
extern const cv_family_ops cv_t5_ops;

#endif
