/* quantize.c — int8 row and NF4 block quantization of weights at load time (quant.h), the CPU
 * backend's upload of quantized weights, and cv_quantize_upload, which model.c calls for every
 * block linear layer of a model opened with a quantization mode.
 *
 * The arithmetic mirrors bitsandbytes so that our codes equal theirs bit for bit:
 * NF4 multiplies by the reciprocal of the block absmax (kQuantizeBlockwise computes
 * `local_abs_max = 1.0f / local_abs_max` then `vals[j] * local_abs_max`), and picks the code with
 * dQuantizeNF4's decision tree of float thresholds; int8 multiplies by 127 / absmax and rounds
 * half to even (torch.round / __float2int_rn). tests/ref/gen_nf4_ref.py re-implements the same
 * algorithm in numpy and tests/test_quant.c checks our codes against it. */
#include "corevital/quant.h"
#include "corevital/model.h"

#include "../backend/cpu_internal.h"
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const float cv_nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* The literals of bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), ascending. */
const float cv_nf4_threshold[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

uint8_t cv_nf4_index(float x) {
    /* The same binary tree as dQuantizeNF4: four strict comparisons; NaN fails all -> 0. */
    const float *t = cv_nf4_threshold;
    if (x > t[7]) {
        if (x > t[11]) {
            if (x > t[13]) return x > t[14] ? 15 : 14;
            return x > t[12] ? 13 : 12;
        }
        if (x > t[9]) return x > t[10] ? 11 : 10;
        return x > t[8] ? 9 : 8;
    }
    if (x > t[3]) {
        if (x > t[5]) return x > t[6] ? 7 : 6;
        return x > t[4] ? 5 : 4;
    }
    if (x > t[1]) return x > t[2] ? 3 : 2;
    return x > t[0] ? 1 : 0;
}

void cv_quantize_int8(int8_t *q, float *scales, const float *w, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * (size_t)cols;
        int8_t *qr = q + (size_t)r * (size_t)cols;
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(wr[c]));
        scales[r] = amax / 127.0f;
        if (amax == 0.0f) { /* bitsandbytes' NaN (0 * inf) converts to 0 */
            memset(qr, 0, (size_t)cols);
            continue;
        }
        float mul = 127.0f / amax;
        for (int64_t c = 0; c < cols; c++) {
            float v = nearbyintf(wr[c] * mul); /* default rounding mode: half to even */
            if (v > 127.0f) v = 127.0f;        /* |w| * 127 / amax can round just above 127 */
            if (v < -127.0f) v = -127.0f;
            qr[c] = (int8_t)v;
        }
    }
}

void cv_dequantize_int8(float *w, const int8_t *q, const float *scales, int64_t rows,
                        int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            w[(size_t)r * (size_t)cols + (size_t)c] =
                (float)q[(size_t)r * (size_t)cols + (size_t)c] * scales[r];
}

void cv_quantize_nf4(uint8_t *packed, float *absmax, const float *w, int64_t n, int block) {
    int64_t nb = (int64_t)cv_nf4_blocks(n, block);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * block, i1 = i0 + block < n ? i0 + block : n;
        float amax = 0.0f;
        for (int64_t i = i0; i < i1; i++) amax = fmaxf(amax, fabsf(w[i]));
        absmax[b] = amax;
        /* bitsandbytes multiplies by the reciprocal; for amax == 0 it gets NaN -> index 0 */
        int zero = amax == 0.0f;
        float inv = zero ? 0.0f : 1.0f / amax;
        /* block is even, so every block starts on a byte; the pad value of an odd n is 0.0 */
        for (int64_t i = i0; i < i1; i += 2) {
            float a = w[i], c = i + 1 < n ? w[i + 1] : 0.0f;
            uint8_t hi = zero ? 0 : cv_nf4_index(a * inv);
            uint8_t lo = zero ? 0 : cv_nf4_index(c * inv);
            packed[i >> 1] = (uint8_t)(hi << 4 | lo);
        }
    }
}

void cv_dequantize_nf4(float *w, const uint8_t *packed, const float *absmax, int64_t n, int block) {
    for (int64_t i = 0; i < n; i++) w[i] = cv_nf4_elem(packed, absmax, block, i);
}

size_t cv_quant_weight_bytes(cv_weight_format format, int64_t rows, int64_t cols, int block) {
    int64_t n = rows * cols;
    switch (format) {
    case CV_WFMT_INT8:
        return (size_t)n + sizeof(float) * (size_t)rows;
    case CV_WFMT_NF4:
        return cv_nf4_bytes(n) + sizeof(float) * cv_nf4_blocks(n, block);
    default:
        return 0;
    }
}

/* ---- the CPU backend's weight_upload_quant -------------------------------------------------- */

cv_status cv_cpu_weight_upload_quant(cv_backend *b, cv_weight *w, const void *data,
                                     const float *scales, cv_weight_format format, int64_t rows,
                                     int64_t cols, int block, cv_error *err) {
    (void)b;
    if (rows <= 0 || cols <= 0)
        return cv_fail(err, CV_ERR_RUNTIME, "cpu: quantized weight has shape (%lld, %lld)",
                       (long long)rows, (long long)cols);
    size_t n = (size_t)rows * (size_t)cols, data_bytes, n_scales;
    if (format == CV_WFMT_INT8) {
        data_bytes = n;
        n_scales = (size_t)rows;
    } else if (format == CV_WFMT_NF4) {
        if (block <= 0 || block % 2)
            return cv_fail(err, CV_ERR_RUNTIME, "cpu: NF4 block size %d must be even and > 0",
                           block);
        data_bytes = cv_nf4_bytes((int64_t)n);
        n_scales = cv_nf4_blocks((int64_t)n, block);
    } else {
        return cv_fail(err, CV_ERR_RUNTIME, "cpu: weight_upload_quant got a dense format");
    }
    /* One owned buffer (quant_internal.h): data, scales, and for INT8 the row sums of the codes. */
    size_t data_pad = cv_quant_pad64(data_bytes),
           scales_pad = cv_quant_pad64(n_scales * sizeof(float));
    size_t sums = format == CV_WFMT_INT8 ? cv_quant_pad64((size_t)rows * sizeof(int32_t)) : 0;
    size_t total = data_pad + scales_pad + sums;
    char *buf = aligned_alloc(64, total);
    if (!buf)
        return cv_fail(err, CV_ERR_NOMEM, "cpu: out of memory for a %zu-byte quantized weight",
                       total);
    memset(buf, 0, total);
    memcpy(buf, data, data_bytes);
    memcpy(buf + data_pad, scales, n_scales * sizeof(float));
    if (format == CV_WFMT_INT8) {
        void *at = buf + data_pad + scales_pad;
        int32_t *rs = at;
        const int8_t *q = data;
        for (int64_t r = 0; r < rows; r++) {
            int32_t acc = 0;
            for (int64_t c = 0; c < cols; c++) acc += q[(size_t)r * (size_t)cols + (size_t)c];
            rs[r] = acc;
        }
    }
    memset(w, 0, sizeof *w);
    w->data = buf;
    const void *scales_at = buf + data_pad; /* 64-byte aligned */
    w->scales = scales_at;
    w->dtype = format == CV_WFMT_INT8 ? CV_DT_I8 : CV_DT_U8; /* what transformers reports */
    w->format = format;
    w->rows = rows;
    w->cols = cols;
    w->block = format == CV_WFMT_NF4 ? block : 0;
    w->owned = buf;
    return CV_OK;
}

/* ---- quantize a host matrix onto a backend -------------------------------------------------- */

cv_status cv_weight_quantize(cv_backend *b, cv_weight *w, const void *host, cv_dtype dtype,
                             int64_t rows, int64_t cols, cv_weight_format format, cv_error *err) {
    if (dtype != CV_DT_F32 && dtype != CV_DT_F16 && dtype != CV_DT_BF16)
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "quantize: weights must be F32, F16 or BF16, got %s", cv_dtype_name(dtype));
    if (format != CV_WFMT_INT8 && format != CV_WFMT_NF4)
        return cv_fail(err, CV_ERR_RUNTIME, "quantize: format %d is not INT8 or NF4", (int)format);
    if (!b->weight_upload_quant)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "backend %s cannot hold quantized weights",
                       b->name);
    size_t n = (size_t)rows * (size_t)cols;
    float *f = NULL;
    const float *src = host;
    if (dtype != CV_DT_F32 || ((uintptr_t)host % sizeof(float)) != 0) {
        f = malloc(n * sizeof(float));
        if (!f) return cv_fail(err, CV_ERR_NOMEM, "quantize: out of memory for %zu values", n);
        cv_convert_to_f32(f, host, dtype, n);
        src = f;
    }
    size_t data_bytes = format == CV_WFMT_INT8 ? n : cv_nf4_bytes((int64_t)n);
    size_t n_scales =
        format == CV_WFMT_INT8 ? (size_t)rows : cv_nf4_blocks((int64_t)n, CV_NF4_BLOCK);
    void *q = malloc(data_bytes ? data_bytes : 1);
    float *sc = malloc(n_scales * sizeof(float));
    cv_status s;
    if (!q || !sc) {
        s = cv_fail(err, CV_ERR_NOMEM, "quantize: out of memory for a (%lld, %lld) matrix",
                    (long long)rows, (long long)cols);
    } else {
        if (format == CV_WFMT_INT8)
            cv_quantize_int8(q, sc, src, rows, cols);
        else
            cv_quantize_nf4(q, sc, src, (int64_t)n, CV_NF4_BLOCK);
        s = b->weight_upload_quant(b, w, q, sc, format, rows, cols, CV_NF4_BLOCK, err);
    }
    free(q);
    free(sc);
    free(f);
    return s;
}

/* Called by cv_model_upload_linear (model.c) when the model was opened with a quantization mode:
 * the weight is owned by the model (freed by cv_model_free) and copied by value into *w, as
 * cv_model_upload does for dense weights. */
cv_status cv_quantize_upload(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype,
                             int64_t rows, int64_t cols, cv_error *err);
cv_status cv_quantize_upload(cv_model *m, cv_weight *w, const void *host, cv_dtype dtype,
                             int64_t rows, int64_t cols, cv_error *err) {
    cv_weight *owned = calloc(1, sizeof *owned);
    cv_weight **arr = owned ? realloc(m->weights, (m->n_weights + 1) * sizeof *arr) : NULL;
    if (!arr) {
        free(owned);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    m->weights = arr;
    m->weights[m->n_weights++] = owned;
    cv_status s = cv_weight_quantize(m->be, owned, host, dtype, rows, cols, m->quant, err);
    if (s != CV_OK) return s;
    *w = *owned;
    return CV_OK;
}
