/* test_safetensors.c — dtype conversions (exact f16/bf16 rounding against independent oracles)
 * and the safetensors loader: hostile headers and layouts, the writer round trip, sharded sets.
 * Every test file is written at run time into a fresh temporary directory. */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corevital/dtype.h"
#include "corevital/safetensors.h"

/* Assertion for hot loops: Check's ck_assert logs every passing check (a write per call in
 * no-fork mode), which makes million-sample loops slow; this only reports failures. */
#define require(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                                    \
    } while (0)

/* ------------------------------------------------------------------ temp files */

static char g_dir[512];

static const char *tmp_path(const char *name) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

/* Write an 8-byte little-endian length n, then hdr (hlen bytes), then data. */
static void write_raw(const char *path, uint64_t n, const void *hdr, size_t hlen, const void *data,
                      size_t dlen) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    ck_assert_uint_eq(fwrite(len, 1, 8, f), 8);
    if (hlen) ck_assert_uint_eq(fwrite(hdr, 1, hlen, f), hlen);
    if (dlen) ck_assert_uint_eq(fwrite(data, 1, dlen, f), dlen);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char g_data[4096]; /* byte pattern used as tensor data */

/* A file whose header is the string hdr (length prefix = strlen) followed by dlen data bytes. */
static const char *mkfile(const char *name, const char *hdr, size_t dlen) {
    const char *p = tmp_path(name);
    ck_assert_uint_le(dlen, sizeof g_data);
    write_raw(p, strlen(hdr), hdr, strlen(hdr), g_data, dlen);
    return p;
}

/* Open must fail with `code`, leave *out NULL, and the message must name the file and contain
 * every one of the given substrings (NULL-terminated list). */
static void expect_fail_v(const char *path, cv_status code, const char *const *subs) {
    cv_st *st = (cv_st *)1;
    cv_error err = {0};
    cv_status s = cv_st_open(path, &st, &err);
    ck_assert_msg(s == code, "%s: expected status %d, got %d (%s)", path, code, s, err.msg);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    for (; *subs; subs++)
        ck_assert_msg(strstr(err.msg, *subs) != NULL, "message lacks '%s': %s", *subs, err.msg);
}
#define expect_fail(path, code, ...)                                                               \
    do {                                                                                           \
        const char *const subs_[] = {__VA_ARGS__, NULL};                                           \
        expect_fail_v((path), (code), subs_);                                                      \
    } while (0)

static cv_st *open_ok(const char *path) {
    cv_st *st = NULL;
    cv_error err = {0};
    cv_status s = cv_st_open(path, &st, &err);
    ck_assert_msg(s == CV_OK, "open %s failed: %s", path, err.msg);
    ck_assert_ptr_nonnull(st);
    return st;
}

/* ------------------------------------------------------------------ dtype: oracles */

/* Value of an f16 encoding computed independently of the implementation (ldexp on the fields). */
static double f16_value_oracle(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return sign ? -v : v;
}

/* Nearest f16 to x (finite or inf, not NaN), ties to even, by search over the encodings. */
static uint16_t f16_round_oracle(float x) {
    double a = fabs((double)x);
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (a >= 65520.0) return sign | 0x7c00; /* halfway above 65504 ties to even = inf */
    unsigned lo = 0, hi = 0x7bff;           /* largest h with value(h) <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (f16_value_oracle((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == 0x7bff) return sign | 0x7bff;
    double dlo = a - f16_value_oracle((uint16_t)lo), dhi = f16_value_oracle((uint16_t)(lo + 1)) - a;
    unsigned r = dlo < dhi ? lo : dhi < dlo ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return (uint16_t)(sign | r);
}

/* Nearest bf16 to x (not NaN), ties to even, computed in double from the two candidates. */
static uint16_t bf16_round_oracle(float x) {
    uint32_t b = cv_f32_bits(x);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    uint32_t ab = b & 0x7fffffff;
    if (ab == 0x7f800000) return sign | 0x7f80;
    uint32_t t = ab >> 16;
    double a = fabs((double)x);
    double lo = (double)cv_bits_f32(t << 16);
    /* the candidate above the largest finite bf16 is 2^128 (it rounds to infinity) */
    double hi = (t + 1) == 0x7f80 ? ldexp(1.0, 128) : (double)cv_bits_f32((t + 1) << 16);
    double dlo = a - lo, dhi = hi - a;
    uint32_t r = dlo < dhi ? t : dhi < dlo ? t + 1 : ((t & 1) ? t + 1 : t);
    return (uint16_t)(sign | r);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rng32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

START_TEST(test_f16_to_f32_exhaustive) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cv_f16_to_f32((uint16_t)h);
        double want = f16_value_oracle((uint16_t)h);
        if (isnan(want)) {
            /* payload and sign preserved */
            require(isnan(f) && ((cv_f32_bits(f) >> 13) & 0x3ff) == (h & 0x3ff) &&
                        (uint32_t) !!signbit(f) == (h >> 15),
                    "NaN h=0x%04x -> %08x", h, cv_f32_bits(f));
        } else {
            require((double)f == want && (uint32_t) !!signbit(f) == (h >> 15), "h=0x%04x: %a vs %a",
                    h, (double)f, want);
        }
        /* every encoding survives the round trip; NaN stays NaN */
        uint16_t back = cv_f32_to_f16(f);
        if (isnan(want))
            require((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "NaN h=0x%04x", h);
        else
            require(back == h, "round trip 0x%04x -> 0x%04x", h, back);
    }
}
END_TEST

START_TEST(test_f32_to_f16_rne) {
    /* known values */
    ck_assert_uint_eq(cv_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(cv_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(cv_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(cv_f32_to_f16(65519.996f), 0x7bff);
    ck_assert_uint_eq(cv_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(cv_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(cv_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(cv_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00); /* tie -> even */
    ck_assert_uint_eq(cv_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(1, -24)), 0x0001); /* smallest subnormal */
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(1, -25)), 0x0000); /* tie -> even zero */
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(3, -25)), 0x0002);    /* 1.5 ulp ties to even 2 */
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(1, -14)), 0x0400);    /* smallest normal */
    ck_assert_uint_eq(cv_f32_to_f16(ldexpf(2047, -25)), 0x0400); /* subnormal rounds up */
    ck_assert_uint_eq(cv_f32_to_f16(-0.0f), 0x8000);
    ck_assert(isnan(cv_f16_to_f32(cv_f32_to_f16(NAN))));

    /* every midpoint between adjacent f16 values (exact in f32), and its neighbours */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double mid = (f16_value_oracle((uint16_t)h) + f16_value_oracle((uint16_t)(h + 1))) / 2;
        float m = (float)mid;
        float below = nextafterf(m, 0), above = nextafterf(m, INFINITY);
        require((double)m == mid && cv_f32_to_f16(m) == f16_round_oracle(m) &&
                    cv_f32_to_f16(m) == ((h & 1) ? h + 1 : h) && cv_f32_to_f16(below) == h &&
                    cv_f32_to_f16(above) == h + 1 &&
                    cv_f32_to_f16(-m) == (0x8000 | ((h & 1) ? h + 1 : h)),
                "midpoint above h=0x%04x", h);
    }
    /* random floats in and around the f16 range */
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = rng32();
        /* bias the exponent toward [2^-30, 2^17] so most samples are interesting */
        if (i & 1) bits = (bits & 0x807fffff) | ((97u + rng32() % 48u) << 23);
        float x = cv_bits_f32(bits);
        if (isnan(x)) continue;
        require(cv_f32_to_f16(x) == f16_round_oracle(x), "x=%a: got 0x%04x want 0x%04x", (double)x,
                cv_f32_to_f16(x), f16_round_oracle(x));
    }
}
END_TEST

START_TEST(test_bf16_rne) {
    ck_assert_uint_eq(cv_f32_to_bf16(1.0f), 0x3f80);
    ck_assert(cv_bf16_to_f32(0x3f80) == 1.0f);
    ck_assert(cv_bf16_to_f32(0xc040) == -3.0f);
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x3f808000)), 0x3f80); /* tie -> even */
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x3f818000)), 0x3f82); /* tie -> even (up) */
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x3f808001)), 0x3f81);
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX -> inf */
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x00000001)), 0x0000); /* tiny subnormal */
    ck_assert_uint_eq(cv_f32_to_bf16(cv_bits_f32(0x00018000)), 0x0002); /* subnormal tie */
    ck_assert_uint_eq(cv_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(cv_f32_to_bf16(-INFINITY), 0xff80);
    /* NaNs, including one whose payload lives only in the low bits, stay NaN */
    ck_assert(isnan(cv_bf16_to_f32(cv_f32_to_bf16(cv_bits_f32(0x7f800001)))));
    ck_assert(isnan(cv_bf16_to_f32(cv_f32_to_bf16(cv_bits_f32(0xffffffff)))));
    /* every bf16 round-trips */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cv_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        require(cv_f32_to_bf16(f) == h, "bf16 round trip 0x%04x", h);
    }
    for (int i = 0; i < 1000000; i++) {
        float x = cv_bits_f32(rng32() ^ (rng32() << 16));
        if (isnan(x)) continue;
        require(cv_f32_to_bf16(x) == bf16_round_oracle(x), "x=%a", (double)x);
    }
}
END_TEST

START_TEST(test_dtype_names) {
    for (int t = 0; t < CV_DT_COUNT; t++) {
        cv_dtype back;
        ck_assert_int_eq(cv_dtype_parse(cv_dtype_name((cv_dtype)t), &back), 0);
        ck_assert_int_eq(back, t);
        ck_assert_int_eq(cv_dtype_parse_torch(cv_dtype_torch_name((cv_dtype)t), &back), 0);
        ck_assert_int_eq(back, t);
        ck_assert_uint_gt(cv_dtype_size((cv_dtype)t), 0);
    }
    cv_dtype t;
    ck_assert_int_eq(cv_dtype_parse("f32", &t), -1); /* case-sensitive */
    ck_assert_int_eq(cv_dtype_parse("F8_E4M3", &t), -1);
    ck_assert_int_eq(cv_dtype_is_known_unsupported("F8_E4M3"), 1);
    ck_assert_int_eq(cv_dtype_is_known_unsupported("F33"), 0);
    ck_assert_int_eq(cv_dtype_parse_torch("torch.bfloat16", &t), 0);
    ck_assert_int_eq(t, CV_DT_BF16);
    ck_assert_int_eq(cv_dtype_parse_torch("half", &t), 0);
    ck_assert_int_eq(t, CV_DT_F16);
    ck_assert_int_eq(cv_dtype_parse_torch("float8", &t), -1);
    ck_assert_uint_eq(cv_dtype_size(CV_DT_BF16), 2);
    ck_assert_uint_eq(cv_dtype_size(CV_DT_I64), 8);
    ck_assert_str_eq(cv_dtype_name(CV_DT_BF16), "BF16");
    ck_assert_str_eq(cv_dtype_torch_name(CV_DT_U8), "uint8");
}
END_TEST

START_TEST(test_convert_to_f32) {
    float out[8];
    const int8_t i8[3] = {-128, 0, 127};
    cv_convert_to_f32(out, i8, CV_DT_I8, 3);
    ck_assert(out[0] == -128.f && out[1] == 0.f && out[2] == 127.f);
    const uint8_t u8[2] = {0, 255};
    cv_convert_to_f32(out, u8, CV_DT_U8, 2);
    ck_assert(out[0] == 0.f && out[1] == 255.f);
    const double f64[2] = {0.1, -1e300};
    cv_convert_to_f32(out, f64, CV_DT_F64, 2);
    ck_assert(out[0] == 0.1f && isinf(out[1]) && out[1] < 0);
    const int64_t i64[2] = {-5, 1ll << 40};
    cv_convert_to_f32(out, i64, CV_DT_I64, 2);
    ck_assert(out[0] == -5.f && out[1] == ldexpf(1, 40));
    const uint8_t b[2] = {0, 1};
    cv_convert_to_f32(out, b, CV_DT_BOOL, 2);
    ck_assert(out[0] == 0.f && out[1] == 1.f);
    /* unaligned source */
    unsigned char buf[1 + 3 * sizeof(float)];
    const float src[3] = {1.5f, -2.25f, 3e-8f};
    memcpy(buf + 1, src, sizeof src);
    cv_convert_to_f32(out, buf + 1, CV_DT_F32, 3);
    ck_assert(memcmp(out, src, sizeof src) == 0);
    /* the chunked parallel path matches element-wise conversion, for f16 and bf16 */
    size_t n = (1u << 18) + 12345;
    uint16_t *h = malloc(n * sizeof *h);
    float *f = malloc(n * sizeof *f);
    ck_assert(h && f);
    for (size_t i = 0; i < n; i++) h[i] = (uint16_t)(rng32() & 0xffff);
    for (int pass = 0; pass < 2; pass++) {
        cv_dtype t = pass ? CV_DT_BF16 : CV_DT_F16;
        cv_convert_to_f32(f, h, t, n);
        for (size_t i = 0; i < n; i++) {
            float want = pass ? cv_bf16_to_f32(h[i]) : cv_f16_to_f32(h[i]);
            require(cv_f32_bits(f[i]) == cv_f32_bits(want), "element %zu", i);
        }
    }
    free(h);
    free(f);
}
END_TEST

/* ------------------------------------------------------------------ malformed files */

START_TEST(test_empty_and_tiny) {
    const char *p = tmp_path("empty.safetensors");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    expect_fail(p, CV_ERR_FORMAT, "too small");

    p = tmp_path("seven.safetensors");
    f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite("\x02\0\0\0\0\0\0", 1, 7, f);
    fclose(f);
    expect_fail(p, CV_ERR_FORMAT, "too small");

    /* 8-byte file whose length prefix says 60 */
    p = tmp_path("n60.safetensors");
    write_raw(p, 60, NULL, 0, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "header length 60", "past the end");

    /* N = 0: an empty header is not JSON */
    p = tmp_path("n0.safetensors");
    write_raw(p, 0, NULL, 0, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "not valid JSON");

    expect_fail(tmp_path("does-not-exist.safetensors"), CV_ERR_IO, "cannot open");
    /* a FIFO is rejected without blocking on open */
    p = tmp_path("fifo.safetensors");
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    expect_fail(p, CV_ERR_IO, "not a regular file");
}
END_TEST

START_TEST(test_huge_header_length) {
    const char *p = tmp_path("huge.safetensors");
    write_raw(p, UINT64_MAX, "{}", 2, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "exceeds the limit");
    write_raw(p, 0xff00000000000002ull, "{}", 2, NULL, 0); /* high bytes 0xff */
    expect_fail(p, CV_ERR_FORMAT, "exceeds the limit");
    write_raw(p, CV_ST_MAX_HEADER_SIZE + 1, "{}", 2, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "exceeds the limit");
    /* at the limit it is a length-past-EOF error instead */
    write_raw(p, CV_ST_MAX_HEADER_SIZE, "{}", 2, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "past the end");
}
END_TEST

START_TEST(test_bad_header_text) {
    expect_fail(mkfile("ff.safetensors", "\xff", 0), CV_ERR_FORMAT, "UTF-8");
    expect_fail(mkfile("overlong.safetensors", "{\"\xc0\xaf\":1}", 0), CV_ERR_FORMAT, "UTF-8");
    expect_fail(mkfile("surrogate.safetensors", "{\"\xed\xa0\x80\":{}}", 0), CV_ERR_FORMAT,
                "UTF-8");
    expect_fail(mkfile("brace.safetensors", "{", 0), CV_ERR_FORMAT, "not valid JSON");
    expect_fail(mkfile("bs.safetensors", "{\"a\\", 0), CV_ERR_FORMAT, "unterminated string");
    expect_fail(mkfile("bsu.safetensors", "{\"a\\u12", 0), CV_ERR_FORMAT, "escape");
    expect_fail(mkfile("junk.safetensors", "hello world", 0), CV_ERR_FORMAT, "not valid JSON");
    expect_fail(mkfile("array.safetensors", "[]", 0), CV_ERR_FORMAT, "not a JSON object");
    expect_fail(mkfile("string.safetensors", "\"abc\"", 0), CV_ERR_FORMAT, "not a JSON object");
    expect_fail(mkfile("number.safetensors", "42", 0), CV_ERR_FORMAT, "not a JSON object");
    expect_fail(mkfile("two.safetensors", "{}{}", 0), CV_ERR_FORMAT, "extra data");
    expect_fail(mkfile("trail.safetensors", "{} x", 0), CV_ERR_FORMAT, "not valid JSON");
    expect_fail(mkfile("ctl.safetensors", "{\"a\tb\":{}}", 0), CV_ERR_FORMAT, "control character");
    expect_fail(mkfile("ws.safetensors", "{}\x01", 0), CV_ERR_FORMAT, "unexpected byte 0x01");
    expect_fail(mkfile("bom.safetensors", "\xef\xbb\xbf{}", 0), CV_ERR_FORMAT, "unexpected byte");
    expect_fail(mkfile("esc.safetensors", "{\"a\\x\":{}}", 0), CV_ERR_FORMAT, "escape");
    expect_fail(mkfile("lead0.safetensors",
                       "{\"t\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1),
                CV_ERR_FORMAT, "malformed number");
    /* a NUL inside the header */
    const char *p = tmp_path("nul.safetensors");
    write_raw(p, 3, "{}\0", 3, NULL, 0);
    expect_fail(p, CV_ERR_FORMAT, "NUL");
}
END_TEST

START_TEST(test_whitespace_and_unpadded_headers_are_valid) {
    /* {} followed by JSON whitespace: valid, zero tensors (reference test_whitespace_padded) */
    cv_st *st = open_ok(mkfile("wspad.safetensors", "{}\r \t\n", 0));
    ck_assert_uint_eq(cv_st_count(st), 0);
    ck_assert_ptr_null(cv_st_find(st, "x"));
    ck_assert_ptr_null(cv_st_at(st, 0));
    cv_st_close(st);

    /* an unpadded header length puts the F32 data at an odd file offset: unaligned is
     * allowed and must read correctly */
    const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}     ";
    ck_assert_uint_ne((8 + strlen(hdr)) % 4, 0);
    const float vals[2] = {3.25f, -7.5f};
    const char *p = tmp_path("unaligned.safetensors");
    write_raw(p, strlen(hdr), hdr, strlen(hdr), vals, sizeof vals);
    st = open_ok(p);
    const cv_st_tensor *t = cv_st_find(st, "w");
    ck_assert_ptr_nonnull(t);
    float got[2];
    cv_convert_to_f32(got, t->data, t->dtype, t->numel);
    ck_assert(got[0] == 3.25f && got[1] == -7.5f);
    cv_st_close(st);

    /* unknown extra fields in an entry are ignored, as the reference does */
    st = open_ok(mkfile("extra.safetensors",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[1.5,"
                        "{\"y\":-2}]},\"b\":{\"note\":3,\"dtype\":\"U8\",\"shape\":[2],"
                        "\"data_offsets\":[1,3]}}",
                        3));
    ck_assert_uint_eq(cv_st_count(st), 2);
    ck_assert_int_eq(cv_st_find(st, "b")->shape[0], 2);
    cv_st_close(st);
}
END_TEST

#define ENTRY(name, dt, shape, b, e)                                                               \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

START_TEST(test_truncated_and_trailing) {
    const char *hdr = "{" ENTRY("a", "F32", "[2,2]", 0, 16) "," ENTRY("b", "U8", "[3]", 16, 19) "}";
    cv_st *st = open_ok(mkfile("exact.safetensors", hdr, 19));
    cv_st_close(st);
    expect_fail(mkfile("short2.safetensors", hdr, 17), CV_ERR_FORMAT, "truncated", "'b'");
    expect_fail(mkfile("short.safetensors", hdr, 0), CV_ERR_FORMAT, "truncated", "'b'");
    expect_fail(mkfile("long.safetensors", hdr, 21), CV_ERR_FORMAT, "2 bytes of trailing data",
                "'b'");
    expect_fail(mkfile("emptytrail.safetensors", "{}", 5), CV_ERR_FORMAT, "trailing data");
    /* every proper prefix of a valid file is rejected cleanly */
    const char *full = tmp_path("exact.safetensors");
    FILE *f = fopen(full, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char buf[512];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t len = 0; len < n; len++) {
        const char *p = tmp_path("prefix.safetensors");
        FILE *g = fopen(p, "wb");
        ck_assert_ptr_nonnull(g);
        if (len) fwrite(buf, 1, len, g);
        fclose(g);
        cv_st *s2 = NULL;
        cv_error err = {0};
        require(cv_st_open(p, &s2, &err) != CV_OK && s2 == NULL, "prefix of %zu bytes opened", len);
    }
}
END_TEST

START_TEST(test_offsets) {
    /* overlap: b starts inside a */
    expect_fail(mkfile("overlap.safetensors",
                       "{" ENTRY("a", "F32", "[4]", 0, 16) "," ENTRY("b", "F32", "[4]", 8, 24) "}",
                       24),
                CV_ERR_FORMAT, "overlap", "'b'", "'a'");
    /* the reference's "JSON attack": many tensors all claiming [0,16] */
    expect_fail(
        mkfile("attack.safetensors",
               "{" ENTRY("t0", "F32", "[4]", 0, 16) "," ENTRY("t1", "F32", "[4]", 0, 16) "," ENTRY(
                   "t2", "F32", "[4]", 0, 16) "," ENTRY("t3", "F32", "[4]", 0, 16) "}",
               16),
        CV_ERR_FORMAT, "overlap");
    /* gap between tensors, and a first tensor not at 0 */
    expect_fail(mkfile("gap.safetensors",
                       "{" ENTRY("a", "F32", "[4]", 0, 16) "," ENTRY("b", "F32", "[4]", 24, 40) "}",
                       40),
                CV_ERR_FORMAT, "gap", "'b'", "'a'");
    expect_fail(mkfile("gap0.safetensors", "{" ENTRY("a", "F32", "[4]", 4, 20) "}", 20),
                CV_ERR_FORMAT, "gap", "'a'", "offset 0");
    /* out of range: offsets past the data section */
    expect_fail(mkfile("oob.safetensors", "{" ENTRY("a", "F32", "[4]", 0, 16) "}", 8),
                CV_ERR_FORMAT, "truncated", "'a'");
    expect_fail(mkfile("oob2.safetensors",
                       "{" ENTRY("a", "U8", "[1]", 18446744073709551614, 18446744073709551615) "}",
                       1),
                CV_ERR_FORMAT, "gap", "'a'");
    expect_fail(
        mkfile("oobhuge.safetensors", "{" ENTRY("a", "U8", "[1]", 0, 18446744073709551616) "}", 1),
        CV_ERR_FORMAT, "data_offsets[1]", "too large", "'a'");
    /* end before begin */
    expect_fail(mkfile("rev.safetensors", "{" ENTRY("a", "U8", "[0]", 4, 0) "}", 4), CV_ERR_FORMAT,
                "end before begin", "'a'");
    /* malformed data_offsets */
    expect_fail(mkfile("off1.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1),
                CV_ERR_FORMAT, "'a'", "[begin, end]");
    expect_fail(mkfile("off3.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
                CV_ERR_FORMAT, "'a'", "data_offsets has 3 entries");
    expect_fail(mkfile("offneg.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1),
                CV_ERR_FORMAT, "'a'", "negative");
    expect_fail(mkfile("offflt.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1),
                CV_ERR_FORMAT, "'a'", "not an integer");
    expect_fail(mkfile("offstr.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\"0-1\"}}", 1),
                CV_ERR_FORMAT, "'a'", "not a JSON array");
}
END_TEST

START_TEST(test_sizes_and_shapes) {
    /* dtype size x shape != byte length (reference: I32 [2,2] with [0,4]) */
    expect_fail(mkfile("info.safetensors", "{" ENTRY("a", "I32", "[2,2]", 0, 4) "}", 4),
                CV_ERR_FORMAT, "'a'", "16 bytes", "span 4 bytes");
    /* overflow: the dimension itself is out of range, or the products overflow 64 bits */
    expect_fail(
        mkfile("ovf1.safetensors", "{" ENTRY("a", "F32", "[2,18446744073709551614]", 0, 4) "}", 4),
        CV_ERR_FORMAT, "'a'", "too large");
    expect_fail(
        mkfile("ovf2.safetensors", "{" ENTRY("a", "F32", "[2,9223372036854775807]", 0, 4) "}", 4),
        CV_ERR_FORMAT, "'a'", "overflows");
    expect_fail(
        mkfile("ovf3.safetensors", "{" ENTRY("a", "U8", "[4294967296,4294967296]", 0, 4) "}", 4),
        CV_ERR_FORMAT, "'a'", "overflows");
    expect_fail(
        mkfile("ovf4.safetensors", "{" ENTRY("a", "U8", "[99999999999999999999]", 0, 4) "}", 4),
        CV_ERR_FORMAT, "'a'", "shape[0]", "too large");
    /* negative / float / non-number shapes */
    expect_fail(mkfile("neg.safetensors", "{" ENTRY("a", "U8", "[-1,2]", 0, 4) "}", 4),
                CV_ERR_FORMAT, "'a'", "shape[0] is negative");
    expect_fail(mkfile("negz.safetensors", "{" ENTRY("a", "U8", "[-0]", 0, 0) "}", 0),
                CV_ERR_FORMAT, "'a'", "negative");
    expect_fail(mkfile("flt.safetensors", "{" ENTRY("a", "U8", "[2,2.5]", 0, 5) "}", 5),
                CV_ERR_FORMAT, "'a'", "shape[1] is not an integer (2.5)");
    expect_fail(mkfile("flt2.safetensors", "{" ENTRY("a", "U8", "[2.0]", 0, 2) "}", 2),
                CV_ERR_FORMAT, "'a'", "not an integer");
    expect_fail(mkfile("exp.safetensors", "{" ENTRY("a", "U8", "[1e1]", 0, 10) "}", 10),
                CV_ERR_FORMAT, "'a'", "not an integer");
    expect_fail(mkfile("strshape.safetensors", "{" ENTRY("a", "U8", "[\"2\"]", 0, 2) "}", 2),
                CV_ERR_FORMAT, "'a'", "not an integer");
    expect_fail(mkfile("nullshape.safetensors", "{" ENTRY("a", "U8", "null", 0, 2) "}", 2),
                CV_ERR_FORMAT, "'a'", "shape is not a JSON array");
    expect_fail(
        mkfile("ndim9.safetensors", "{" ENTRY("a", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1),
        CV_ERR_UNSUPPORTED, "'a'", "9 entries");
    /* a 0 dimension with a huge other dimension: 0 bytes, valid */
    cv_st *st = open_ok(
        mkfile("zero.safetensors", "{" ENTRY("z", "F32", "[0,9223372036854775807]", 0, 0) "}", 0));
    const cv_st_tensor *t = cv_st_find(st, "z");
    ck_assert_uint_eq(t->numel, 0);
    ck_assert_uint_eq(t->nbytes, 0);
    ck_assert_int_eq(t->shape[1], INT64_MAX);
    cv_st_close(st);
}
END_TEST

START_TEST(test_entries_and_metadata) {
    expect_fail(mkfile("dup.safetensors",
                       "{" ENTRY("a", "U8", "[1]", 0, 1) "," ENTRY("a", "U8", "[1]", 1, 2) "}", 2),
                CV_ERR_FORMAT, "duplicate tensor name 'a'");
    expect_fail(mkfile("dtype.safetensors", "{" ENTRY("a", "F33", "[1]", 0, 4) "}", 4),
                CV_ERR_FORMAT, "'a'", "unknown dtype \"F33\"");
    expect_fail(mkfile("dtype8.safetensors", "{" ENTRY("a", "F8_E4M3", "[1]", 0, 1) "}", 1),
                CV_ERR_UNSUPPORTED, "'a'", "F8_E4M3");
    expect_fail(mkfile("dtypenum.safetensors",
                       "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                CV_ERR_FORMAT, "'a'", "dtype is not a string");
    expect_fail(mkfile("missing.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
                CV_ERR_FORMAT, "'a'", "missing field 'data_offsets'");
    expect_fail(mkfile("twice.safetensors",
                       "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":"
                       "[0,1]}}",
                       1),
                CV_ERR_FORMAT, "'a'", "'dtype' appears twice");
    expect_fail(mkfile("notobj.safetensors", "{\"a\":[1,2]}", 0), CV_ERR_FORMAT, "'a'",
                "not a JSON object");
    /* __metadata__ must map strings to strings */
    expect_fail(mkfile("meta1.safetensors", "{\"__metadata__\":{\"format\":1}}", 0), CV_ERR_FORMAT,
                "__metadata__", "'format'", "not a string");
    expect_fail(mkfile("meta2.safetensors", "{\"__metadata__\":{\"x\":{\"y\":\"z\"}}}", 0),
                CV_ERR_FORMAT, "__metadata__", "'x'");
    expect_fail(mkfile("meta3.safetensors", "{\"__metadata__\":[\"pt\"]}", 0), CV_ERR_FORMAT,
                "__metadata__ is not a JSON object");
    expect_fail(mkfile("meta4.safetensors", "{\"__metadata__\":{\"a\":null}}", 0), CV_ERR_FORMAT,
                "__metadata__");
    expect_fail(mkfile("meta5.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0),
                CV_ERR_FORMAT, "__metadata__ appears twice");
    cv_st *st = open_ok(mkfile("meta_ok.safetensors",
                               "{\"__metadata__\":{\"format\":\"pt\",\"total_size\":\"1\"},"
                               "\"t\\u00e9\\n\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,"
                               "1]}}",
                               1));
    ck_assert_str_eq(cv_st_metadata(st, "format"), "pt");
    ck_assert_str_eq(cv_st_metadata(st, "total_size"), "1");
    ck_assert_ptr_null(cv_st_metadata(st, "missing"));
    const cv_st_tensor *t = cv_st_find(st, "t\xc3\xa9\n"); /* escapes decoded */
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->numel, 1);
    cv_st_close(st);
}
END_TEST

/* Random byte mutations of a valid file: open either succeeds with consistent tensors or fails
 * with a message; never crashes (the sanitizer build checks memory safety). */
START_TEST(test_mutations_never_crash) {
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"}," ENTRY("a", "F32", "[2,2]", 0, 16) "," ENTRY(
            "b", "BF16", "[3]", 16, 22) "," ENTRY("c", "U8", "[]", 22, 23) "}";
    const char *base = mkfile("base.safetensors", hdr, 23);
    FILE *f = fopen(base, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char orig[1024], buf[1024];
    size_t n = fread(orig, 1, sizeof orig, f);
    fclose(f);
    const char *p = tmp_path("mut.safetensors");
    int opened = 0;
    g_rng = 0x243f6a8885a308d3ull; /* fixed seed: the same mutations whichever tests ran before */
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)(rng32() % 3);
        for (int k = 0; k < flips; k++) {
            size_t pos = rng32() % (8 + strlen(hdr)); /* the length prefix and the header */
            static const char pool[] = "{}[],:\"-0123456789.e\\ x";
            buf[pos] = (rng32() & 1) ? (unsigned char)pool[rng32() % (sizeof pool - 1)]
                                     : (unsigned char)rng32();
        }
        FILE *g = fopen(p, "wb");
        require(g != NULL, "cannot write %s", p);
        fwrite(buf, 1, n, g);
        fclose(g);
        cv_st *st = NULL;
        cv_error err = {0};
        if (cv_st_open(p, &st, &err) == CV_OK) {
            opened++;
            for (size_t i = 0; i < cv_st_count(st); i++) {
                const cv_st_tensor *t = cv_st_at(st, i);
                require(cv_st_find(st, t->name) == t, "lookup of '%s'", t->name);
                require(t->nbytes == t->numel * cv_dtype_size(t->dtype), "size of '%s'", t->name);
                volatile unsigned char sink = 0;
                for (size_t j = 0; j < t->nbytes; j++) sink ^= ((const unsigned char *)t->data)[j];
                (void)sink;
            }
            cv_st_close(st);
        } else {
            require(st == NULL && err.msg[0] != '\0', "failure without a message");
        }
    }
    ck_assert_int_gt(opened, 0); /* some mutations (inside names) keep the file valid */
}
END_TEST

/* ------------------------------------------------------------------ writer round trip */

START_TEST(test_write_roundtrip) {
    const float f32[6] = {1.f, -2.5f, 3e-7f, INFINITY, -0.f, 65504.f};
    uint16_t f16[5], bf16[5];
    const float src16[5] = {1.f, -0.5f, 0.1f, 65504.f, ldexpf(1, -24)};
    for (int i = 0; i < 5; i++) {
        f16[i] = cv_f32_to_f16(src16[i]);
        bf16[i] = cv_f32_to_bf16(src16[i]);
    }
    const int8_t i8[4] = {-128, -1, 0, 127};
    const uint8_t u8[3] = {0, 128, 255};
    const float scalar = 42.f;
    cv_st_write_entry e[] = {
        {"u8", CV_DT_U8, 1, {3}, u8},
        {"f16", CV_DT_F16, 1, {5}, f16},
        {"weights.f32", CV_DT_F32, 2, {2, 3}, f32},
        {"bf16", CV_DT_BF16, 3, {1, 5, 1}, bf16},
        {"i8", CV_DT_I8, 2, {2, 2}, i8},
        {"scalar", CV_DT_F32, 0, {0}, &scalar},
        {"empty", CV_DT_F16, 2, {0, 3}, NULL},
    };
    const size_t n = sizeof e / sizeof e[0];
    const char *meta[] = {"format", "pt", "note", "a \"quoted\" value", NULL};
    const char *p = tmp_path("rt.safetensors");
    cv_error err = {0};
    ck_assert_msg(cv_st_write(p, e, n, meta, &err) == CV_OK, "%s", err.msg);

    /* the header is padded to a multiple of 8 */
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char len[8];
    ck_assert_uint_eq(fread(len, 1, 8, f), 8);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len[i];
    ck_assert_uint_eq((8 + hlen) % 8, 0);

    cv_st *st = open_ok(p);
    ck_assert_uint_eq(cv_st_count(st), n);
    ck_assert_uint_eq(cv_st_file_count(st), 1);
    ck_assert_str_eq(cv_st_metadata(st, "format"), "pt");
    ck_assert_str_eq(cv_st_metadata(st, "note"), "a \"quoted\" value");
    for (size_t i = 0; i < n; i++) {
        const cv_st_tensor *t = cv_st_find(st, e[i].name);
        ck_assert_msg(t != NULL, "%s missing", e[i].name);
        ck_assert_str_eq(t->name, e[i].name);
        ck_assert_str_eq(t->path, p);
        ck_assert_int_eq(t->dtype, e[i].dtype);
        ck_assert_int_eq(t->ndim, e[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            ck_assert_int_eq(t->shape[d], e[i].shape[d]);
            numel *= (size_t)e[i].shape[d];
        }
        ck_assert_uint_eq(t->numel, numel);
        ck_assert_uint_eq(t->nbytes, numel * cv_dtype_size(e[i].dtype));
        if (t->nbytes) ck_assert(memcmp(t->data, e[i].data, t->nbytes) == 0);
        /* larger elements are written first, so everything is naturally aligned */
        ck_assert_uint_eq((uintptr_t)t->data % cv_dtype_size(t->dtype), 0);
    }
    /* cv_st_at enumerates every tensor once, in data-offset order */
    const unsigned char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const cv_st_tensor *t = cv_st_at(st, i);
        ck_assert_ptr_eq(cv_st_find(st, t->name), t);
        ck_assert((const unsigned char *)t->data >= prev);
        prev = (const unsigned char *)t->data + t->nbytes;
    }
    ck_assert_ptr_null(cv_st_at(st, n));
    ck_assert_ptr_null(cv_st_find(st, "absent"));
    float out[5];
    cv_convert_to_f32(out, cv_st_find(st, "f16")->data, CV_DT_F16, 5);
    for (int i = 0; i < 5; i++)
        ck_assert(out[i] == src16[i] || (i == 2 && fabsf(out[i] - 0.1f) < 1e-4f));
    cv_convert_to_f32(out, cv_st_find(st, "bf16")->data, CV_DT_BF16, 5);
    ck_assert(out[0] == 1.f && out[1] == -0.5f && fabsf(out[2] - 0.1f) < 1e-3f);
    cv_st_close(st);

    /* writer rejects bad input */
    cv_st_write_entry dup[2] = {{"x", CV_DT_U8, 1, {1}, u8}, {"x", CV_DT_U8, 1, {1}, u8}};
    ck_assert_int_eq(cv_st_write(tmp_path("dup_w.safetensors"), dup, 2, NULL, &err), CV_ERR_USAGE);
    ck_assert(strstr(err.msg, "duplicate") != NULL);
    cv_st_write_entry neg = {"n", CV_DT_U8, 1, {-1}, u8};
    ck_assert_int_eq(cv_st_write(tmp_path("neg_w.safetensors"), &neg, 1, NULL, &err), CV_ERR_USAGE);
    cv_st_write_entry nodata = {"n", CV_DT_U8, 1, {2}, NULL};
    ck_assert_int_eq(cv_st_write(tmp_path("nod_w.safetensors"), &nodata, 1, NULL, &err),
                     CV_ERR_USAGE);

    /* an empty checkpoint is valid */
    ck_assert_int_eq(cv_st_write(tmp_path("none.safetensors"), NULL, 0, NULL, &err), CV_OK);
    st = open_ok(tmp_path("none.safetensors"));
    ck_assert_uint_eq(cv_st_count(st), 0);
    cv_st_close(st);
}
END_TEST

START_TEST(test_many_tensors) {
    enum { N = 3000 };
    static cv_st_write_entry e[N];
    static char names[N][48];
    static uint16_t vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.weight", i);
        vals[i] = (uint16_t)(i * 7);
        e[i] = (cv_st_write_entry){names[i], CV_DT_BF16, 1, {1}, &vals[i]};
    }
    const char *p = tmp_path("many.safetensors");
    cv_error err = {0};
    ck_assert_msg(cv_st_write(p, e, N, NULL, &err) == CV_OK, "%s", err.msg);
    cv_st *st = open_ok(p);
    ck_assert_uint_eq(cv_st_count(st), N);
    for (int i = 0; i < N; i++) {
        const cv_st_tensor *t = cv_st_find(st, names[i]);
        uint16_t v = 0;
        if (t) memcpy(&v, t->data, 2);
        require(t != NULL && v == vals[i], "%s missing or wrong", names[i]);
    }
    ck_assert_ptr_null(cv_st_find(st, "model.layers.3000.mlp.weight"));
    cv_st_close(st);
}
END_TEST

/* ------------------------------------------------------------------ sharded sets */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static const char *make_shard_dir(const char *sub) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, sub);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    return dir;
}

START_TEST(test_sharded) {
    const char *dir = make_shard_dir("sharded");
    char p1[1200], p2[1200], idx[1200];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    const float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[3] = {7, 8, 9};
    cv_st_write_entry s1[] = {{"embed.weight", CV_DT_F32, 2, {2, 2}, a},
                              {"layer.0.w", CV_DT_F32, 1, {2}, b}};
    /* "extra.bias" is in shard 2 but not in the weight_map: still loaded (transformers reads
     * whole shard files too) */
    cv_st_write_entry s2[] = {{"lm_head.weight", CV_DT_F32, 1, {3}, c},
                              {"extra.bias", CV_DT_F32, 1, {1}, c}};
    const char *m1[] = {"format", "pt", NULL};
    cv_error err = {0};
    ck_assert_int_eq(cv_st_write(p1, s1, 2, m1, &err), CV_OK);
    ck_assert_int_eq(cv_st_write(p2, s2, 2, NULL, &err), CV_OK);
    write_text(idx, "{\"metadata\":{\"total_size\":36},\"weight_map\":{"
                    "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
                    "\"embed.weight\":\"model-00001-of-00002.safetensors\","
                    "\"layer.0.w\":\"model-00001-of-00002.safetensors\"}}");
    for (int via = 0; via < 2; via++) { /* the directory, or the index file itself */
        cv_st *st = open_ok(via ? idx : dir);
        ck_assert_uint_eq(cv_st_count(st), 4);
        ck_assert_uint_eq(cv_st_file_count(st), 2);
        ck_assert_str_eq(cv_st_find(st, "extra.bias")->path, p2);
        const cv_st_tensor *t = cv_st_find(st, "lm_head.weight");
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->path, p2);
        ck_assert(memcmp(t->data, c, sizeof c) == 0);
        t = cv_st_find(st, "embed.weight");
        ck_assert_str_eq(t->path, p1);
        ck_assert(memcmp(t->data, a, sizeof a) == 0);
        ck_assert(memcmp(cv_st_find(st, "layer.0.w")->data, b, sizeof b) == 0);
        ck_assert_str_eq(cv_st_metadata(st, "format"), "pt");
        cv_st_close(st);
    }

    /* a tensor of the weight_map absent from its shard */
    write_text(idx, "{\"weight_map\":{\"embed.weight\":\"model-00001-of-00002.safetensors\","
                    "\"ghost\":\"model-00002-of-00002.safetensors\"}}");
    expect_fail(dir, CV_ERR_FORMAT, "ghost", "model-00002-of-00002.safetensors",
                "does not contain");
    /* mapped to the wrong shard */
    write_text(idx, "{\"weight_map\":{\"embed.weight\":\"model-00002-of-00002.safetensors\","
                    "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
                    "\"x\":\"model-00001-of-00002.safetensors\"}}");
    expect_fail(dir, CV_ERR_FORMAT, "embed.weight", "is stored in");
    /* path traversal and non-string shard names */
    write_text(idx, "{\"weight_map\":{\"embed.weight\":\"../model-00001-of-00002.safetensors\"}}");
    expect_fail(dir, CV_ERR_FORMAT, "embed.weight", "plain shard file name");
    write_text(idx, "{\"weight_map\":{\"embed.weight\":1}}");
    expect_fail(dir, CV_ERR_FORMAT, "embed.weight");
    write_text(idx, "{\"weight_map\":{}}");
    expect_fail(dir, CV_ERR_FORMAT, "weight_map");
    write_text(idx, "{\"weight_map\":");
    expect_fail(dir, CV_ERR_FORMAT, "not valid JSON");
    /* a malformed shard reports the shard's own path */
    write_text(idx, "{\"weight_map\":{\"embed.weight\":\"model-00001-of-00002.safetensors\","
                    "\"bad\":\"bad.safetensors\"}}");
    mkfile("sharded/bad.safetensors", "{" ENTRY("bad", "F32", "[4]", 0, 16) "}", 3);
    expect_fail(dir, CV_ERR_FORMAT, "bad.safetensors", "truncated", "'bad'");
}
END_TEST

START_TEST(test_missing_shard) {
    const char *dir = make_shard_dir("missing");
    char p1[1200], idx[1200];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    const float a[2] = {1, 2};
    cv_st_write_entry s1[] = {{"a", CV_DT_F32, 1, {2}, a}};
    cv_error err = {0};
    ck_assert_int_eq(cv_st_write(p1, s1, 1, NULL, &err), CV_OK);
    write_text(idx, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                    "\"b\":\"model-00002-of-00002.safetensors\"}}");
    expect_fail(dir, CV_ERR_IO, "model.safetensors.index.json",
                "shard 'model-00002-of-00002.safetensors'", "'b'", "missing");

    /* the same tensor in two shards is ambiguous */
    char p2[1200];
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    cv_st_write_entry s2[] = {{"a", CV_DT_F32, 1, {2}, a}, {"b", CV_DT_F32, 1, {2}, a}};
    ck_assert_int_eq(cv_st_write(p2, s2, 2, NULL, &err), CV_OK);
    expect_fail(dir, CV_ERR_FORMAT, "'a'", "ambiguous");

    /* a directory with neither file */
    expect_fail(make_shard_dir("nothing"), CV_ERR_IO, "no model.safetensors");
}
END_TEST

/* ------------------------------------------------------------------ main */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/cv-st-test-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (size_t i = 0; i < sizeof g_data; i++) g_data[i] = (unsigned char)(i * 31 + 7);

    Suite *s = suite_create("safetensors");
    TCase *dt = tcase_create("dtype");
    tcase_add_test(dt, test_f16_to_f32_exhaustive);
    tcase_add_test(dt, test_f32_to_f16_rne);
    tcase_add_test(dt, test_bf16_rne);
    tcase_add_test(dt, test_dtype_names);
    tcase_add_test(dt, test_convert_to_f32);
    tcase_set_timeout(dt, 60);
    suite_add_tcase(s, dt);
    TCase *bad = tcase_create("malformed");
    tcase_add_test(bad, test_empty_and_tiny);
    tcase_add_test(bad, test_huge_header_length);
    tcase_add_test(bad, test_bad_header_text);
    tcase_add_test(bad, test_whitespace_and_unpadded_headers_are_valid);
    tcase_add_test(bad, test_truncated_and_trailing);
    tcase_add_test(bad, test_offsets);
    tcase_add_test(bad, test_sizes_and_shapes);
    tcase_add_test(bad, test_entries_and_metadata);
    tcase_add_test(bad, test_mutations_never_crash);
    tcase_set_timeout(bad, 60);
    suite_add_tcase(s, bad);
    TCase *good = tcase_create("valid");
    tcase_add_test(good, test_write_roundtrip);
    tcase_add_test(good, test_many_tensors);
    tcase_add_test(good, test_sharded);
    tcase_add_test(good, test_missing_shard);
    tcase_set_timeout(good, 60);
    suite_add_tcase(s, good);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
}
