/* model.c — cv_model_load: config.json -> family -> safetensors -> the family binds its weights.
 * Also the binding helpers family files use: tensor lookup with the usual name prefixes, shape
 * checks, Conv1D transposition, fp32 conversion of vectors, and ownership of every allocation. */
#include "corevital/model.h"
#include "corevital/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int push_ptr(void ***arr, size_t *n, void *p) {
    void **na = realloc(*arr, (*n + 1) * sizeof *na);
    if (!na) return -1;
    na[(*n)++] = p;
    *arr = na;
    return 0;
}

/* One element of an F32 / F16 / BF16 buffer as fp32. */
static float cv_elem_f32_any(const void *p, cv_dtype dt, size_t i) {
    if (dt == CV_DT_BF16) return cv_bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == CV_DT_F16) return cv_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static const cv_family_ops *family_ops(cv_family f) {
    switch (f) {
    case CV_FAMILY_GPT2:
        return &cv_gpt2_ops;
    case CV_FAMILY_LLAMA:
        return &cv_llama_ops;
    case CV_FAMILY_T5:
        return &cv_t5_ops;
    }
    return NULL;
}

/* Where the backend reads its weights from host memory as it runs (the CPU), the matrices get
 * their own copy in one huge-page arena: decode streams every weight each step, and from the
 * mmap's 4 KiB file pages (a TLB miss each 4 KiB, prefetchers stopped at each page's end) its
 * matvecs ran slower (bench/, docs/perf.md). The copy and the zeroing of its pages make the
 * load slower, so it is taken when the caller asks (cv_model_opts.weights_arena: a long
 * generation) or CV_HUGEPAGES=1 forces it, never under CV_HUGEPAGES=0. Sized for every tensor
 * of the checkpoint in the dtype it will be held in; only what is written is backed. Quantized
 * linears are converted from the mmap as before. No arena: weights are used in place or copied
 * as before. */
static void weights_arena(cv_model *m, int want) {
    const int env = cv_hugepages_env();
    if (!m->be->host_weights || m->quant != CV_WFMT_DENSE || env == 0 || (env < 0 && !want)) return;
    size_t cap = 0;
    for (size_t i = 0; i < cv_st_count(m->st); i++) {
        const cv_st_tensor *t = cv_st_at(m->st, i);
        cv_dtype dt = m->want_dtype == CV_DT_COUNT ? t->dtype : m->want_dtype;
        size_t es = cv_dtype_size(dt) > cv_dtype_size(t->dtype) ? cv_dtype_size(dt)
                                                                : cv_dtype_size(t->dtype);
        cap += (t->numel * es + 63) & ~(size_t)63;
    }
    if (cap && cv_host_arena_reserve(&m->arena, cap) != 0)
        CV_DEBUG("no huge-page arena for the weights (%zu bytes): they stay in the mmap", cap);
}

cv_status cv_model_load(const char *dir, cv_backend *be, cv_model **out, cv_error *err) {
    cv_model_opts o = {CV_WFMT_DENSE, CV_DT_COUNT, CV_DT_F32, CV_DT_F32, 0};
    return cv_model_load_opts(dir, be, &o, out, err);
}

cv_status cv_model_load_quant(const char *dir, cv_backend *be, cv_weight_format quant,
                              cv_model **out, cv_error *err) {
    cv_model_opts o = {quant, CV_DT_COUNT, CV_DT_F32, CV_DT_F32, 0};
    return cv_model_load_opts(dir, be, &o, out, err);
}

cv_status cv_model_load_opts(const char *dir, cv_backend *be, const cv_model_opts *opts,
                             cv_model **out, cv_error *err) {
    *out = NULL;
    cv_model *m = calloc(1, sizeof *m);
    if (!m) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    m->quant = opts->quant;
    m->want_dtype = opts->dtype;
    m->kv_dtype = opts->kv_dtype;
    if (m->kv_dtype != CV_DT_F32 && m->kv_dtype != CV_DT_BF16) {
        free(m);
        return cv_fail(err, CV_ERR_CONFIG, "model.kv_dtype must be float32 or bfloat16");
    }
    if (m->kv_dtype == CV_DT_BF16 && !(be->kv_store && be->kv_bf16)) {
        free(m);
        return cv_fail(err, CV_ERR_CONFIG,
                       "model.kv_dtype bfloat16: the %s backend has no bf16 KV cache in this "
                       "build (use float32, or --device cpu)",
                       be->name);
    }
    m->prefill_dtype = opts->prefill_dtype;
    if (m->prefill_dtype != CV_DT_F32 && m->prefill_dtype != CV_DT_BF16) {
        free(m);
        return cv_fail(err, CV_ERR_CONFIG, "model.prefill_dtype must be float32 or bfloat16");
    }
    if (m->prefill_dtype == CV_DT_BF16 && !be->prefill_bf16) {
        free(m);
        return cv_fail(err, CV_ERR_CONFIG,
                       "model.prefill_dtype bfloat16: the %s backend has no bf16 prefill in this "
                       "build (it needs the CPU backend built for AVX512-BF16; use float32)",
                       be->name);
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    m->be = be;
    cv_status s = cv_model_config_load(dir, &m->cfg, err);
    if (s == CV_OK) {
        m->ops = family_ops(m->cfg.family);
        if (!m->ops)
            s = cv_fail(err, CV_ERR_UNSUPPORTED, "%s: no implementation for this family", dir);
    }
    if (s == CV_OK) s = cv_st_open(dir, &m->st, err);
    if (s == CV_OK) weights_arena(m, opts->weights_arena);
    if (s == CV_OK) s = m->ops->load(m, err);
    if (s != CV_OK) {
        cv_model_free(m);
        return s;
    }
    CV_DEBUG("loaded %s (%s, %d layers, hidden %d) on %s", dir, m->cfg.architecture,
             m->cfg.num_layers, m->cfg.hidden_size, be->name);
    *out = m;
    return CV_OK;
}

void cv_model_free(cv_model *m) {
    if (!m) return;
    if (m->ops && m->ops->free) m->ops->free(m);
    for (size_t i = 0; i < m->n_weights; i++) {
        m->be->weight_free(m->be, m->weights[i]);
        free(m->weights[i]);
    }
    for (size_t i = 0; i < m->n_be_bufs; i++) m->be->free(m->be, m->be_bufs[i]);
    for (size_t i = 0; i < m->n_host_bufs; i++) free(m->host_bufs[i]);
    cv_host_arena_free(&m->arena);
    free(m->weights);
    free(m->be_bufs);
    free(m->host_bufs);
    cv_st_close(m->st);
    free(m);
}

int cv_model_num_layers(const cv_model *m) {
    return m->cfg.family == CV_FAMILY_T5 ? m->cfg.num_decoder_layers : m->cfg.num_layers;
}

int cv_model_vocab(const cv_model *m) {
    return m->cfg.vocab_size;
}

const cv_st_tensor *cv_model_tensor(const cv_model *m, const char *name) {
    static const char *prefixes[] = {"transformer.", "model."};
    const cv_st_tensor *t = cv_st_find(m->st, name);
    if (t) return t;
    char buf[512];
    for (size_t i = 0; i < 2; i++) {
        size_t pl = strlen(prefixes[i]);
        if (strncmp(name, prefixes[i], pl) == 0) {
            t = cv_st_find(m->st, name + pl);
        } else {
            snprintf(buf, sizeof buf, "%s%s", prefixes[i], name);
            t = cv_st_find(m->st, buf);
        }
        if (t) return t;
    }
    return NULL;
}

static cv_status find_checked(const cv_model *m, const char *name, int64_t d0, int64_t d1,
                              const cv_st_tensor **out, cv_error *err) {
    const cv_st_tensor *t = cv_model_tensor(m, name);
    if (!t)
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' not found in the checkpoint", m->dir,
                       name);
    int ok = d1 < 0 ? (t->ndim == 1 && t->shape[0] == d0)
                    : (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1);
    if (!ok) {
        char shape[128] = "";
        size_t off = 0;
        for (int i = 0; i < t->ndim && off < sizeof shape - 24; i++)
            off += (size_t)snprintf(shape + off, sizeof shape - off, "%s%lld", i ? ", " : "",
                                    (long long)t->shape[i]);
        if (d1 < 0)
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%lld]",
                           m->dir, name, shape, (long long)d0);
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%lld, %lld]",
                       m->dir, name, shape, (long long)d0, (long long)d1);
    }
    if (t->dtype != CV_DT_F32 && t->dtype != CV_DT_F16 && t->dtype != CV_DT_BF16)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", m->dir, name,
                       cv_dtype_name(t->dtype));
    *out = t;
    return CV_OK;
}

cv_status cv_model_host_matrix(cv_model *m, const char *name, int64_t rows, int64_t cols,
                               int transpose, const void **host, cv_dtype *dtype, cv_error *err) {
    const cv_st_tensor *t;
    cv_status s = find_checked(m, name, transpose ? cols : rows, transpose ? rows : cols, &t, err);
    if (s != CV_OK) return s;
    cv_dtype want = m->want_dtype == CV_DT_COUNT ? t->dtype : m->want_dtype;
    *dtype = want;
    size_t es = cv_dtype_size(t->dtype), n = (size_t)rows * (size_t)cols;
    int aligned = ((uintptr_t)t->data % es) == 0;
    /* with an arena (weights_arena) every matrix is copied into it, off the mmap */
    const int copy = m->arena.base != NULL;
    if (!transpose && aligned && want == t->dtype && !copy) {
        *host = t->data; /* used in place, straight from the mmap */
        return CV_OK;
    }
    char *buf = cv_host_arena_take(&m->arena, n * cv_dtype_size(want));
    if (!buf) {
        buf = cv_host_alloc(n * cv_dtype_size(want));
        if (!buf || push_ptr(&m->host_bufs, &m->n_host_bufs, buf)) {
            free(buf);
            return cv_fail(err, CV_ERR_NOMEM, "out of memory for tensor '%s'", name);
        }
    }
    /* stage 1: the stored layout (transposed when stored (cols, rows)), in the stored dtype;
     * an aligned, untransposed tensor is converted straight from the mmap (no second copy of
     * the checkpoint's largest tensor at the load's peak) */
    const int direct = !transpose && aligned;
    char *stage = want == t->dtype ? buf : direct ? NULL : malloc(n * es);
    if (!stage && !direct) return cv_fail(err, CV_ERR_NOMEM, "out of memory for tensor '%s'", name);
    if (transpose) {
        const char *src = t->data;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = 0; r < rows; r++)
                memcpy(stage + ((size_t)r * cols + c) * es, src + ((size_t)c * rows + r) * es, es);
    } else if (!direct || want == t->dtype) { /* the second: a copy off the mmap (copy) */
        memcpy(stage, t->data, n * es);
    }
    /* stage 2: the requested dtype (round to nearest even when narrowing) */
    if (want != t->dtype) {
        const void *src = direct ? t->data : stage;
        void *dst = buf;
        float *d32 = dst;
        uint16_t *d16 = dst;
        for (size_t i = 0; i < n; i++) {
            float v = cv_elem_f32_any(src, t->dtype, i);
            if (want == CV_DT_F32)
                d32[i] = v;
            else if (want == CV_DT_BF16)
                d16[i] = cv_f32_to_bf16(v);
            else
                d16[i] = cv_f32_to_f16(v);
        }
        free(stage); /* NULL when direct */
    }
    cv_st_drop_pages(t); /* the checkpoint's copy is not read again */
    *host = buf;
    return CV_OK;
}

cv_status cv_model_upload(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype, int64_t rows,
                          int64_t cols, cv_error *err) {
    cv_weight *owned = calloc(1, sizeof *owned);
    if (!owned || push_ptr((void ***)&m->weights, &m->n_weights, owned)) {
        free(owned);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    cv_status s = m->be->weight_upload(m->be, owned, host, dtype, rows, cols, err);
    if (s != CV_OK) return s;
    if (m->n_weights == 1) m->weight_dtype = owned->dtype;
    owned->prefill_bf16 = m->prefill_dtype == CV_DT_BF16 && owned->format == CV_WFMT_DENSE;
    *w = *owned; /* the family keeps a copy by value; the model frees the original */
    return CV_OK;
}

/* Bind a matrix by name: host data (transposed / converted when needed), then an upload; block
 * linears go through quantization when the model was opened with a quantization mode. */
static cv_status bind_matrix(cv_model *m, cv_weight *w, const char *name, int64_t rows,
                             int64_t cols, int transpose, int linear, cv_error *err) {
    const void *host;
    cv_dtype dt;
    cv_status s = cv_model_host_matrix(m, name, rows, cols, transpose, &host, &dt, err);
    if (s != CV_OK) return s;
    s = linear ? cv_model_upload_linear(m, w, host, dt, rows, cols, err)
               : cv_model_upload(m, w, host, dt, rows, cols, err);
    if (s != CV_OK) cv_error_prefix(err, "tensor '%s'", name);
    if (linear && m->quant != CV_WFMT_DENSE) { /* only the quantized copy is kept */
        cv_model_release_host(m, host);
        cv_st_drop_pages(cv_model_tensor(m, name));
    }
    return s;
}

cv_status cv_model_matrix(cv_model *m, cv_weight *w, const char *name, int64_t rows, int64_t cols,
                          int transpose, cv_error *err) {
    return bind_matrix(m, w, name, rows, cols, transpose, 0, err);
}

/* Quantize a host matrix (src/quant) and upload it; defined in src/quant/quantize.c. */
cv_status cv_quantize_upload(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype,
                             int64_t rows, int64_t cols, cv_error *err);

cv_status cv_model_upload_linear(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype,
                                 int64_t rows, int64_t cols, cv_error *err) {
    if (m->quant == CV_WFMT_DENSE) return cv_model_upload(m, w, host, dtype, rows, cols, err);
    cv_status s = cv_quantize_upload(m, w, host, dtype, rows, cols, err);
    if (s == CV_OK) m->n_quantized++;
    return s;
}

cv_status cv_model_linear(cv_model *m, cv_weight *w, const char *name, int64_t rows, int64_t cols,
                          int transpose, cv_error *err) {
    return bind_matrix(m, w, name, rows, cols, transpose, 1, err);
}

void cv_model_release_host(cv_model *m, const void *host) {
    for (size_t i = 0; i < m->n_host_bufs; i++)
        if (m->host_bufs[i] == host) {
            free(m->host_bufs[i]);
            m->host_bufs[i] = m->host_bufs[--m->n_host_bufs];
            return;
        }
}

void *cv_model_alloc(cv_model *m, size_t bytes, cv_error *err) {
    void *p = m->be->alloc(m->be, bytes);
    if (!p || push_ptr(&m->be_bufs, &m->n_be_bufs, p)) {
        if (p) m->be->free(m->be, p);
        cv_fail(err, CV_ERR_NOMEM, "out of %s memory allocating %zu bytes", m->be->name, bytes);
        return NULL;
    }
    return p;
}

cv_status cv_model_vector(cv_model *m, float **dst, const char *name, int64_t n, cv_error *err) {
    const cv_st_tensor *t;
    cv_status s = find_checked(m, name, n, -1, &t, err);
    if (s != CV_OK) return s;
    float *host = malloc(sizeof(float) * (size_t)n);
    if (!host) return cv_fail(err, CV_ERR_NOMEM, "out of memory for tensor '%s'", name);
    cv_convert_to_f32(host, t->data, t->dtype, (size_t)n);
    *dst = cv_model_alloc(m, sizeof(float) * (size_t)n, err);
    if (*dst) m->be->upload(m->be, *dst, host, sizeof(float) * (size_t)n);
    free(host);
    return *dst ? CV_OK : CV_ERR_NOMEM;
}

void cv_model_release(cv_model *m, void *p) {
    if (!p) return;
    for (size_t i = 0; i < m->n_be_bufs; i++)
        if (m->be_bufs[i] == p) {
            m->be->free(m->be, p);
            m->be_bufs[i] = m->be_bufs[--m->n_be_bufs];
            return;
        }
}

/* A row count from the environment (tests and benches compare chunked with whole): a decimal
 * integer in [lo, 2^30], else the default. */
static int env_rows(const char *name, int dflt, int lo) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long r = strtol(v, &end, 10);
    return *end == '\0' && r >= lo && r <= 1 << 30 ? (int)r : dflt;
}

int cv_model_mlp_rows(int max_T) {
    int rows = env_rows("CV_MLP_ROWS", 1024, 1);
    return max_T < rows ? (max_T > 0 ? max_T : 1) : rows;
}

int cv_model_prefill_rows(void) {
    int rows = env_rows("CV_PREFILL_ROWS", 1024, 0);
    return (rows + 31) / 32 * 32; /* 0 stays 0: one call */
}

/* ---- the self-attention KV cache ---------------------------------------------------------- */

cv_status cv_kv_reserve(cv_model *m, cv_kv_cache *kv, int layers, int n_ctx, int max_T, int heads,
                        int hd, cv_error *err) {
    void **bufs[] = {&kv->k, &kv->v, (void **)&kv->kst, (void **)&kv->vst};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        cv_model_release(m, *bufs[i]);
        *bufs[i] = NULL;
    }
    kv->layers = layers, kv->n_ctx = n_ctx, kv->heads = heads, kv->hd = hd, kv->dim = heads * hd;
    kv->dtype = m->kv_dtype;
    kv->head_major = m->be->kv_head_major && m->be->kv_store;
    /* staged wherever kv_store exists: a device-position step (dpos) stores through it, and a
     * head-major or bf16 cache exists only with it (the load refuses bf16 without) */
    kv->staged = m->be->kv_store != NULL;
    size_t elt = kv->dtype == CV_DT_BF16 ? sizeof(uint16_t) : sizeof(float);
    size_t cache = (size_t)layers * (size_t)n_ctx * (size_t)kv->dim * elt;
    if (!(kv->k = cv_model_alloc(m, cache, err)) || !(kv->v = cv_model_alloc(m, cache, err)))
        return CV_ERR_NOMEM;
    if (kv->staged) {
        size_t st = (size_t)max_T * (size_t)kv->dim * sizeof(float);
        if (!(kv->kst = cv_model_alloc(m, st, err)) || !(kv->vst = cv_model_alloc(m, st, err)))
            return CV_ERR_NOMEM;
    }
    return CV_OK;
}

static size_t kv_layer0(const cv_kv_cache *kv, int l) { /* elements to layer l */
    return (size_t)l * (size_t)kv->n_ctx * (size_t)kv->dim;
}

float *cv_kv_new_k(const cv_kv_cache *kv, int l, int pos0) {
    return kv->staged ? kv->kst : (float *)kv->k + kv_layer0(kv, l) + (size_t)pos0 * kv->dim;
}

float *cv_kv_new_v(const cv_kv_cache *kv, int l, int pos0) {
    return kv->staged ? kv->vst : (float *)kv->v + kv_layer0(kv, l) + (size_t)pos0 * kv->dim;
}

void cv_kv_commit(cv_model *m, const cv_kv_cache *kv, int l, int pos0, int T) {
    if (!kv->staged) return;
    size_t elt = kv->dtype == CV_DT_BF16 ? sizeof(uint16_t) : sizeof(float);
    char *k = (char *)kv->k + kv_layer0(kv, l) * elt, *v = (char *)kv->v + kv_layer0(kv, l) * elt;
    m->be->kv_store(m->be, k, kv->dtype, kv->kst, T, kv->heads, kv->hd, kv->n_ctx, pos0, kv->dpos);
    m->be->kv_store(m->be, v, kv->dtype, kv->vst, T, kv->heads, kv->hd, kv->n_ctx, pos0, kv->dpos);
}

void cv_kv_bind(const cv_kv_cache *kv, int l, cv_attn_args *a) {
    a->kv_stride = kv->head_major ? kv->hd : kv->dim;
    a->kv_head_stride = kv->head_major ? kv->n_ctx * kv->hd : 0;
    if (kv->dtype == CV_DT_BF16) {
        a->k = a->v = NULL;
        a->k16 = (const uint16_t *)kv->k + kv_layer0(kv, l);
        a->v16 = (const uint16_t *)kv->v + kv_layer0(kv, l);
    } else {
        a->k16 = a->v16 = NULL;
        a->k = (const float *)kv->k + kv_layer0(kv, l);
        a->v = (const float *)kv->v + kv_layer0(kv, l);
    }
}
