/* dtype.c — dtype names and sizes, and bulk conversion of checkpoint tensors to fp32 (dtype.h). */
#include "corevital/dtype.h"

#include <string.h>

typedef struct {
    const char *st_name;    /* safetensors spelling */
    const char *torch_name; /* torch spelling */
    size_t size;
} dtype_info;

/* Indexed by cv_dtype. */
static const dtype_info k_dtypes[CV_DT_COUNT] = {
    [CV_DT_F32] = {"F32", "float32", 4},    [CV_DT_F16] = {"F16", "float16", 2},
    [CV_DT_BF16] = {"BF16", "bfloat16", 2}, [CV_DT_F64] = {"F64", "float64", 8},
    [CV_DT_I8] = {"I8", "int8", 1},         [CV_DT_U8] = {"U8", "uint8", 1},
    [CV_DT_I16] = {"I16", "int16", 2},      [CV_DT_U16] = {"U16", "uint16", 2},
    [CV_DT_I32] = {"I32", "int32", 4},      [CV_DT_U32] = {"U32", "uint32", 4},
    [CV_DT_I64] = {"I64", "int64", 8},      [CV_DT_U64] = {"U64", "uint64", 8},
    [CV_DT_BOOL] = {"BOOL", "bool", 1},
};

static int dtype_valid(cv_dtype t) {
    return (int)t >= 0 && t < CV_DT_COUNT;
}

size_t cv_dtype_size(cv_dtype t) {
    return dtype_valid(t) ? k_dtypes[t].size : 0;
}

const char *cv_dtype_name(cv_dtype t) {
    return dtype_valid(t) ? k_dtypes[t].st_name : "?";
}

const char *cv_dtype_torch_name(cv_dtype t) {
    return dtype_valid(t) ? k_dtypes[t].torch_name : "?";
}

int cv_dtype_parse(const char *s, cv_dtype *out) {
    if (!s) return -1;
    for (int i = 0; i < CV_DT_COUNT; i++) {
        if (strcmp(s, k_dtypes[i].st_name) == 0) {
            *out = (cv_dtype)i;
            return 0;
        }
    }
    return -1;
}

int cv_dtype_is_known_unsupported(const char *s) {
    static const char *const names[] = {"F8_E4M3",     "F8_E5M2",     "F8_E8M0",
                                        "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64",
                                        "F4",          "F6_E2M3",     "F6_E3M2"};
    if (!s) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

int cv_dtype_parse_torch(const char *s, cv_dtype *out) {
    static const struct {
        const char *alias;
        cv_dtype t;
    } aliases[] = {{"float", CV_DT_F32}, {"half", CV_DT_F16}, {"double", CV_DT_F64}};
    if (!s) return -1;
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    for (int i = 0; i < CV_DT_COUNT; i++) {
        if (strcmp(s, k_dtypes[i].torch_name) == 0) {
            *out = (cv_dtype)i;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        if (strcmp(s, aliases[i].alias) == 0) {
            *out = aliases[i].t;
            return 0;
        }
    }
    return -1;
}

/* Each element is read with memcpy because safetensors data need not be aligned (third-party
 * writers do not always pad); compilers turn these into plain loads. */
#define CONVERT_LOOP(TYPE, EXPR)                                                                   \
    do {                                                                                           \
        for (size_t i = 0; i < n; i++) {                                                           \
            TYPE v;                                                                                \
            memcpy(&v, p + i * sizeof(TYPE), sizeof(TYPE));                                        \
            dst[i] = (EXPR);                                                                       \
        }                                                                                          \
    } while (0)

static void convert_serial(float *dst, const unsigned char *p, cv_dtype t, size_t n) {
    switch (t) {
    case CV_DT_F32:
        memmove(dst, p, n * sizeof(float));
        break;
    case CV_DT_F16:
        CONVERT_LOOP(uint16_t, cv_f16_to_f32(v));
        break;
    case CV_DT_BF16:
        CONVERT_LOOP(uint16_t, cv_bf16_to_f32(v));
        break;
    case CV_DT_F64:
        CONVERT_LOOP(double, (float)v);
        break;
    case CV_DT_I8:
        CONVERT_LOOP(int8_t, (float)v);
        break;
    case CV_DT_U8:
        CONVERT_LOOP(uint8_t, (float)v);
        break;
    case CV_DT_I16:
        CONVERT_LOOP(int16_t, (float)v);
        break;
    case CV_DT_U16:
        CONVERT_LOOP(uint16_t, (float)v);
        break;
    case CV_DT_I32:
        CONVERT_LOOP(int32_t, (float)v);
        break;
    case CV_DT_U32:
        CONVERT_LOOP(uint32_t, (float)v);
        break;
    case CV_DT_I64:
        CONVERT_LOOP(int64_t, (float)v);
        break;
    case CV_DT_U64:
        CONVERT_LOOP(uint64_t, (float)v);
        break;
    case CV_DT_BOOL:
        CONVERT_LOOP(uint8_t, v ? 1.0f : 0.0f);
        break;
    case CV_DT_COUNT:
        break;
    }
}

/* Weights are converted once at load time; big tensors are split into chunks converted in
 * parallel. (F32 -> F32 is a memmove, so src and dst may even overlap for that case.) */
void cv_convert_to_f32(float *dst, const void *src, cv_dtype t, size_t n) {
    const size_t chunk = (size_t)1 << 16;
    size_t esz = cv_dtype_size(t);
    if (esz == 0) return;
    if (n <= 4 * chunk || t == CV_DT_F32) {
        convert_serial(dst, (const unsigned char *)src, t, n);
        return;
    }
    size_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nchunks; c++) {
        size_t off = c * chunk;
        size_t len = n - off < chunk ? n - off : chunk;
        convert_serial(dst + off, (const unsigned char *)src + off * esz, t, len);
    }
}
