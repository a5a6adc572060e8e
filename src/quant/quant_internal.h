/* quant_internal.h — shared by src/quant: the layout of the CPU backend's owned buffer for a
 * quantized weight. One 64-byte aligned allocation holds the data (padded to 64 bytes), the fp32
 * scales (padded to 64 bytes) and, for INT8, the int32 sum of each row's codes, which the VNNI
 * path needs to undo the +128 offset of its unsigned activations. */
#ifndef COREVITAL_QUANT_INTERNAL_H
#define COREVITAL_QUANT_INTERNAL_H

#include "corevital/quant.h"

static inline size_t cv_quant_pad64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

/* Row sums of an INT8 weight uploaded by cv_cpu_weight_upload_quant, or NULL for a weight built
 * another way (tests may point a cv_weight at their own arrays). */
static inline const int32_t *cv_int8_rowsums(const cv_weight *w) {
    if (w->format != CV_WFMT_INT8 || !w->owned || w->owned != w->data) return NULL;
    size_t off = cv_quant_pad64((size_t)w->rows * (size_t)w->cols) +
                 cv_quant_pad64((size_t)w->rows * sizeof(float));
    const void *p = (const char *)w->owned + off;
    return p;
}

#endif
