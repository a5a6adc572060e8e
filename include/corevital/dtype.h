/* dtype.h — element types of checkpoint tensors (the safetensors dtype set we accept), their
 * sizes and names, and exact conversions between fp32 and the 16-bit float formats.
 *
 * The 16-bit conversions are bit-exact: f16/bf16 -> f32 is lossless (subnormals, infinities and
 * NaN payloads included) and f32 -> f16/bf16 rounds to nearest, ties to even, like PyTorch's
 * `tensor.to(torch.float16 / torch.bfloat16)`. They are inline because weight converters and
 * kernels call them per element. */
#ifndef COREVITAL_DTYPE_H
#define COREVITAL_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    CV_DT_F32,
    CV_DT_F16,
    CV_DT_BF16,
    CV_DT_F64,
    CV_DT_I8,
    CV_DT_U8,
    CV_DT_I16,
    CV_DT_U16,
    CV_DT_I32,
    CV_DT_U32,
    CV_DT_I64,
    CV_DT_U64,
    CV_DT_BOOL,
    CV_DT_COUNT
} cv_dtype;

/* Bytes per element (0 for an out-of-range value). */
size_t cv_dtype_size(cv_dtype t);
/* The safetensors spelling: "F32", "F16", "BF16", "F64", "I8", ..., "BOOL" ("?" if out of range).
 */
const char *cv_dtype_name(cv_dtype t);
/* The torch spelling used by config.json and traces: "float32", "float16", "bfloat16", "float64",
 * "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool". */
const char *cv_dtype_torch_name(cv_dtype t);
/* Parse a safetensors dtype string (case-sensitive, as the format defines it). Returns 0 and sets
 * *out on success; -1 for a string that is not one of our dtypes. */
int cv_dtype_parse(const char *s, cv_dtype *out);
/* 1 if s is a dtype the safetensors format defines but this runtime does not load (F8_E4M3,
 * F8_E5M2, F8_E8M0, the FNUZ variants, C64, F4, F6_*), so callers can say "unsupported" rather
 * than "malformed". */
int cv_dtype_is_known_unsupported(const char *s);
/* Parse a torch dtype name ("float32", "float16", "half", "bfloat16", "float", ...; also accepts
 * a "torch." prefix). Returns 0 on success, -1 otherwise. */
int cv_dtype_parse_torch(const char *s, cv_dtype *out);

static inline uint32_t cv_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float cv_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 is the top half of an fp32, so widening is a shift. */
static inline float cv_bf16_to_f32(uint16_t h) {
    return cv_bits_f32((uint32_t)h << 16);
}

/* fp32 -> bf16, round to nearest even. NaN stays NaN (forced quiet, so that rounding can never
 * carry a NaN payload into an infinity); overflow rounds to infinity as IEEE requires. */
static inline uint16_t cv_f32_to_bf16(float f) {
    uint32_t x = cv_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

/* IEEE binary16 -> fp32, exact for every one of the 65536 encodings. Branch-light so that bulk
 * loops vectorize: move exponent and mantissa into place and rebias; infinities/NaN get the
 * rest of the exponent; subnormals are renormalised by one exact float subtraction (no fp32
 * denormals are involved, so flush-to-zero modes cannot affect it). */
static inline float cv_f16_to_f32(uint16_t h) {
    const uint32_t shifted_exp = 0x7c00u << 13;
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t exp = o & shifted_exp;
    o += (127u - 15u) << 23;
    if (exp == shifted_exp) {
        o += (128u - 16u) << 23; /* inf / NaN (payload kept) */
    } else if (exp == 0) {
        o += 1u << 23; /* subnormal: value = (1.m - 1) * 2^-14 */
        o = cv_f32_bits(cv_bits_f32(o) - cv_bits_f32(113u << 23));
    }
    return cv_bits_f32(o | ((uint32_t)(h & 0x8000u) << 16));
}

/* fp32 -> IEEE binary16, round to nearest even, with f16 subnormals, overflow to infinity
 * (from 65520 up, the halfway point above the largest finite 65504) and quiet NaN. */
static inline uint16_t cv_f32_to_f16(float f) {
    uint32_t x = cv_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (and inf) */
    if (ax < 0x38800000u) {                                   /* below 2^-14: f16 subnormal */
        if (ax <= 0x33000000u) return sign; /* <= 2^-25: rounds to zero (2^-25 ties to even 0) */
        uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - (ax >> 23); /* result = round(mant * 2^(e-126)) */
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r); /* r == 0x400 is the smallest normal, encoded correctly */
    }
    uint32_t r = ax - 0x38000000u; /* rebias the exponent from 127 to 15 */
    uint32_t h = r >> 13;
    uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry bumps the exponent */
    return (uint16_t)(sign | h);
}

/* Convert n elements of type t at src (any alignment) to fp32. Integers and bool convert by value
 * (large 32/64-bit integers round to the nearest float). */
void cv_convert_to_f32(float *dst, const void *src, cv_dtype t, size_t n);

#endif
