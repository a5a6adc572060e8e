/* prompt_hash.c — fingerprint.py compute_prompt_hash: sha256 hex of
 * UTF-8(prompt.strip().lower() + "\n" + hf_id) with Python's Unicode semantics: strip removes
 * str.isspace code points at both ends; lower is utf8proc's per-code-point lowercase plus the
 * two rules of CPython's full lowercasing, U+0130 -> "i" U+0307 and the Final_Sigma context of
 * U+03A3 (cased, case-ignorable* SIGMA, not followed by case-ignorable* cased). */
#include "health_internal.h"
#include "py_casing.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int in_ranges(const uint32_t (*t)[2], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < t[mid][0])
            hi = mid;
        else if (c > t[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int is_space(uint32_t c) {
    for (size_t i = 0; i < sizeof PY_SPACE / sizeof PY_SPACE[0]; i++)
        if (PY_SPACE[i] == c) return 1;
    return 0;
}
static int is_ignorable(uint32_t c) {
    return in_ranges(PY_CASE_IGNORABLE, sizeof PY_CASE_IGNORABLE / sizeof PY_CASE_IGNORABLE[0], c);
}
static int is_cased(uint32_t c) {
    return in_ranges(PY_CASED, sizeof PY_CASED / sizeof PY_CASED[0], c);
}

/* CPython handle_capital_sigma over cp[0..n) at i */
static uint32_t sigma(const uint32_t *cp, long n, long i) {
    long j = i - 1;
    while (j >= 0 && is_ignorable(cp[j])) j--;
    int fin = j >= 0 && is_cased(cp[j]);
    if (fin && i + 1 < n) {
        j = i + 1;
        while (j < n && is_ignorable(cp[j])) j++;
        fin = j == n || !is_cased(cp[j]);
    }
    return fin ? 0x3C2 : 0x3C3;
}

int cv_health_prompt_hash(const char *prompt, const char *hf_id, char out[65]) {
    out[0] = '\0';
    size_t len = strlen(prompt);
    uint32_t *cp = malloc(sizeof(uint32_t) * (len + 1));
    /* every code point lowers to at most 2 (U+0130), each at most 4 bytes */
    size_t hlen = strlen(hf_id);
    unsigned char *buf = malloc(len * 8 + hlen + 2);
    if (!cp || !buf) {
        free(cp);
        free(buf);
        return -1;
    }
    long n = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)prompt;
    utf8proc_ssize_t rest = (utf8proc_ssize_t)len;
    while (rest > 0) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, rest, &c);
        if (k <= 0 || c < 0 || (c >= 0xD800 && c < 0xE000)) {
            free(cp);
            free(buf);
            return -1;
        }
        cp[n++] = (uint32_t)c;
        p += k;
        rest -= k;
    }
    long b = 0, e = n;
    while (b < e && is_space(cp[b])) b++;
    while (e > b && is_space(cp[e - 1])) e--;
    size_t o = 0;
    for (long i = b; i < e; i++) {
        uint32_t c = cp[i];
        if (c == 0x130) {
            o += (size_t)utf8proc_encode_char(0x69, buf + o);
            o += (size_t)utf8proc_encode_char(0x307, buf + o);
            continue;
        }
        uint32_t l = c == 0x3A3 ? sigma(cp + b, e - b, i - b)
                                : (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        o += (size_t)utf8proc_encode_char((utf8proc_int32_t)l, buf + o);
    }
    buf[o++] = '\n';
    memcpy(buf + o, hf_id, hlen);
    o += hlen;
    free(cp);

    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, buf, o) == 1 && EVP_DigestFinal_ex(md, digest, &dlen) == 1 &&
             dlen == 32;
    EVP_MD_CTX_free(md);
    free(buf);
    if (!ok) return -1;
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", digest[i]);
    return 0;
}
