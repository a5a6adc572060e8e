/* tok_util.c — growable buffers, hash maps, UTF-8 and Unicode-class helpers for the tokenizer. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- buffers ------------------------------------------------------------------------------- */

static int buf_reserve(tok_buf *b, size_t extra) {
    if (b->oom) return 0;
    if (b->n + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void tok_buf_put(tok_buf *b, const void *data, size_t n) {
    if (!n || !buf_reserve(b, n)) return;
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void tok_buf_putc(tok_buf *b, char c) {
    if (!buf_reserve(b, 1)) return;
    b->p[b->n++] = c;
}

void tok_buf_put_cp(tok_buf *b, uint32_t cp) {
    unsigned char tmp[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, tmp);
    tok_buf_put(b, tmp, (size_t)k);
}

char *tok_buf_finish(tok_buf *b) {
    if (!buf_reserve(b, 0)) {
        free(b->p);
        b->p = NULL;
        return NULL;
    }
    b->p[b->n] = '\0';
    char *p = b->p;
    b->p = NULL;
    b->cap = 0;
    return p;
}

void tok_ids_push(tok_ids *v, int32_t id) {
    if (v->oom) return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) {
            v->oom = 1;
            return;
        }
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
}

/* ---- hashing ------------------------------------------------------------------------------- */

/* FNV-1a over 8-byte words then bytes, finished with a 64-bit mixer: fast and good enough for
 * token strings. Never returns 0 (0 marks an empty slot). */
uint64_t tok_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int tok_strmap_init(tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->hashes = calloc(m->cap, sizeof *m->hashes);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->key_lens = calloc(m->cap, sizeof *m->key_lens);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->hashes || !m->keys || !m->key_lens || !m->vals) {
        tok_strmap_free(m);
        return 0;
    }
    return 1;
}

void tok_strmap_free(tok_strmap *m) {
    if (m->keys)
        for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->hashes);
    free(m->keys);
    free(m->key_lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_find(const tok_strmap *m, const char *key, size_t len, uint64_t h) {
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    while (m->hashes[i]) {
        if (m->hashes[i] == h && m->key_lens[i] == len && memcmp(m->keys[i], key, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static int strmap_grow(tok_strmap *m) {
    tok_strmap n;
    memset(&n, 0, sizeof n);
    n.cap = m->cap * 2;
    n.hashes = calloc(n.cap, sizeof *n.hashes);
    n.keys = calloc(n.cap, sizeof *n.keys);
    n.key_lens = calloc(n.cap, sizeof *n.key_lens);
    n.vals = calloc(n.cap, sizeof *n.vals);
    if (!n.hashes || !n.keys || !n.key_lens || !n.vals) {
        free(n.hashes);
        free(n.keys);
        free(n.key_lens);
        free(n.vals);
        return 0;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->hashes[i]) continue;
        size_t j = (size_t)m->hashes[i] & (n.cap - 1);
        while (n.hashes[j]) j = (j + 1) & (n.cap - 1);
        n.hashes[j] = m->hashes[i];
        n.keys[j] = m->keys[i];
        n.key_lens[j] = m->key_lens[i];
        n.vals[j] = m->vals[i];
    }
    n.count = m->count;
    free(m->hashes);
    free(m->keys);
    free(m->key_lens);
    free(m->vals);
    *m = n;
    return 1;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m)) return 0;
    uint64_t h = tok_hash_bytes(key, len);
    size_t i = strmap_find(m, key, len, h);
    if (m->hashes[i]) {
        m->vals[i] = val;
        return 1;
    }
    char *k = malloc(len + 1);
    if (!k) return 0;
    memcpy(k, key, len);
    k[len] = '\0';
    m->hashes[i] = h;
    m->keys[i] = k;
    m->key_lens[i] = (uint32_t)len;
    m->vals[i] = val;
    m->count++;
    return 1;
}

int tok_strmap_get(const tok_strmap *m, const char *key, size_t len, int32_t *val) {
    if (!m->cap) return 0;
    size_t i = strmap_find(m, key, len, tok_hash_bytes(key, len));
    if (!m->hashes[i]) return 0;
    *val = m->vals[i];
    return 1;
}

/* ---- merge map ----------------------------------------------------------------------------- */

int tok_mergemap_init(tok_mergemap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->ranks = calloc(m->cap, sizeof *m->ranks);
    m->new_ids = calloc(m->cap, sizeof *m->new_ids);
    if (!m->keys || !m->ranks || !m->new_ids) {
        tok_mergemap_free(m);
        return 0;
    }
    return 1;
}

void tok_mergemap_free(tok_mergemap *m) {
    free(m->keys);
    free(m->ranks);
    free(m->new_ids);
    memset(m, 0, sizeof *m);
}

int tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->count + 1) * 2 > m->cap) {
        tok_mergemap n;
        if (!tok_mergemap_init(&n, m->cap)) return 0;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            size_t j = tok_mix64(m->keys[i]) & (n.cap - 1);
            while (n.keys[j]) j = (j + 1) & (n.cap - 1);
            n.keys[j] = m->keys[i];
            n.ranks[j] = m->ranks[i];
            n.new_ids[j] = m->new_ids[i];
        }
        n.count = m->count;
        tok_mergemap_free(m);
        *m = n;
    }
    uint64_t k = tok_merge_key(a, b);
    size_t i = tok_mix64(k) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->keys[i]) return 1; /* HF keeps the first (lowest-rank) occurrence of a pair */
    m->keys[i] = k;
    m->ranks[i] = rank;
    m->new_ids[i] = new_id;
    m->count++;
    return 1;
}

/* ---- UTF-8 --------------------------------------------------------------------------------- */

int tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80 || n < 2) {
        *cp = u[0];
        return 1;
    }
    if (u[0] < 0xE0) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (u[0] < 0xF0 || n < 4) {
        if (n < 3) {
            *cp = u[0];
            return 1;
        }
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}

/* Returns the length of a complete valid sequence at s, else 0 and *subpart = the length of the
 * maximal prefix of a valid sequence (at least 1), which is replaced by one U+FFFD. */
int tok_utf8_valid_len(const unsigned char *s, size_t n, size_t *subpart) {
    unsigned char c = s[0];
    *subpart = 1;
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF)
        need = 2;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else
        return 0;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return 0;
        unsigned char d = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) return 0;
        *subpart = (size_t)k + 1;
    }
    return need + 1;
}

char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len, int *changed) {
    tok_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    *changed = 0;
    while (i < n) {
        size_t sub;
        int k = tok_utf8_valid_len(u + i, n - i, &sub);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        tok_buf_put(&b, s + run, i - run);
        tok_buf_put(&b, "\xEF\xBF\xBD", 3);
        *changed = 1;
        i += sub;
        run = i;
    }
    tok_buf_put(&b, s + run, n - run);
    *out_len = b.n;
    return tok_buf_finish(&b);
}

/* ---- Unicode classes ----------------------------------------------------------------------- */

int tok_is_space(uint32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

int tok_char_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return TOK_CLS_LETTER;
        if (cp >= '0' && cp <= '9') return TOK_CLS_NUMBER;
        if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20) return TOK_CLS_SPACE;
        return TOK_CLS_OTHER;
    }
    if (tok_is_space(cp)) return TOK_CLS_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return TOK_CLS_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return TOK_CLS_NUMBER;
    default:
        return TOK_CLS_OTHER;
    }
}

int tok_is_word(uint32_t cp) {
    if (cp == '_') return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return cp == 0x200C || cp == 0x200D;
    }
}

/* ---- byte-level alphabet (GPT-2 bytes_to_unicode) ------------------------------------------ */

static int printable_byte(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(unsigned char b) {
    if (printable_byte(b)) return b;
    /* the n-th non-printable byte (in increasing order) maps to U+0100 + n */
    uint32_t n = 0;
    for (unsigned k = 0; k < b; k++)
        if (!printable_byte(k)) n++;
    return 0x100 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return printable_byte(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t n = cp - 0x100;
    for (unsigned k = 0; k < 256; k++)
        if (!printable_byte(k) && n-- == 0) return (int)k;
    return -1;
}
