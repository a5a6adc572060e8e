/* tok_internal.h — private structures shared by the tokenizer/ sources.
 *
 * A cv_tokenizer is a flattened version of tokenizer.json: each pipeline stage (normalizer,
 * pre-tokenizer, decoder, post-processor) is a small array of steps, with Sequence nodes
 * flattened away. The model is either BPE (vocab hash + merge-rank hash) or Unigram (piece hash
 * + scores). All strings live in heap copies owned by the tokenizer. */
#ifndef COREVITAL_TOK_INTERNAL_H
#define COREVITAL_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "corevital/tokenizer.h"

/* Largest token id accepted from a file (guards the id -> token table against absurd ids). */
#define TOK_MAX_ID (1 << 24)

/* ---- growable buffers ---------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
    int oom; /* set once an allocation failed; later appends are dropped */
} tok_buf;

void tok_buf_put(tok_buf *b, const void *data, size_t n);
void tok_buf_putc(tok_buf *b, char c);
void tok_buf_put_cp(tok_buf *b, uint32_t cp); /* UTF-8 encode one code point */
/* NUL-terminate and hand over the bytes (NULL on out-of-memory). */
char *tok_buf_finish(tok_buf *b);

typedef struct {
    int32_t *p;
    size_t n, cap;
    int oom;
} tok_ids;

void tok_ids_push(tok_ids *v, int32_t id);

/* ---- string -> int32 hash map (open addressing, keys are copied into the map) -------------- */

typedef struct {
    uint64_t *hashes; /* 0 = empty slot */
    char **keys;
    uint32_t *key_lens;
    int32_t *vals;
    size_t cap, count;
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Insert or overwrite. Returns 0 on out-of-memory. */
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val);
/* Returns 1 and sets *val when found. */
int tok_strmap_get(const tok_strmap *m, const char *key, size_t len, int32_t *val);
uint64_t tok_hash_bytes(const void *p, size_t n);

/* ---- (id, id) -> (rank, new id) merge map -------------------------------------------------- */

typedef struct {
    uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
    int32_t *ranks;
    int32_t *new_ids;
    size_t cap, count;
} tok_mergemap;

int tok_mergemap_init(tok_mergemap *m, size_t expected);
void tok_mergemap_free(tok_mergemap *m);
int tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
static inline uint64_t tok_merge_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}
static inline size_t tok_mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}
/* Inline: it is the hot lookup of the BPE merge loop. */
static inline int tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b, int32_t *rank,
                                   int32_t *new_id) {
    if (!m->cap) return 0;
    uint64_t k = tok_merge_key(a, b);
    size_t i = tok_mix64(k) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == k) {
            *rank = m->ranks[i];
            *new_id = m->new_ids[i];
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

/* ---- Unicode helpers ----------------------------------------------------------------------- */

/* Decode one code point from valid UTF-8 at s[0..n); returns its byte length (>= 1). */
int tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Length of the valid UTF-8 sequence at s, or 0 if it is not one (maximal subpart rule). */
int tok_utf8_valid_len(const unsigned char *s, size_t n, size_t *subpart);
/* Copy text replacing invalid UTF-8 by U+FFFD per maximal subpart (Python errors="replace").
 * Returns NULL on out-of-memory. *changed says whether anything was replaced. */
char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len, int *changed);

enum { TOK_CLS_OTHER = 0, TOK_CLS_LETTER = 1, TOK_CLS_NUMBER = 2, TOK_CLS_SPACE = 3 };
int tok_char_class(uint32_t cp); /* \p{L}, \p{N}, \s (White_Space) or other */
int tok_is_space(uint32_t cp);   /* Unicode White_Space (Rust char::is_whitespace, Onig \s) */
int tok_is_word(uint32_t cp);    /* approximation of regex \w */

/* ---- pipeline descriptions ----------------------------------------------------------------- */

typedef enum {
    NORM_PREPEND,
    NORM_REPLACE,         /* literal pattern */
    NORM_COLLAPSE_SPACES, /* Replace with regex " {2,}" */
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_LOWERCASE,
    NORM_STRIP,
    NORM_STRIP_ACCENTS,
    NORM_PRECOMPILED /* SentencePiece charsmap: Darts-clone trie + replacement pool */
} tok_norm_kind;

typedef struct {
    tok_norm_kind kind;
    char *a; /* prepend text / replace pattern */
    char *b; /* replace content */
    size_t alen, blen;
    int left, right; /* Strip */
    uint32_t *units; /* Precompiled: trie units; the pool of replacements is a / alen */
    size_t n_units;
} tok_norm;

typedef enum {
    PRE_BYTELEVEL,    /* maps bytes; with use_regex also splits by the GPT-2 regex */
    PRE_SPLIT_GPT2,   /* Split with the GPT-2 regex, Isolated */
    PRE_SPLIT_LLAMA3, /* Split with the Llama-3 regex, Isolated */
    PRE_WHITESPACESPLIT,
    PRE_METASPACE
} tok_pre_kind;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend_scheme;

typedef struct {
    tok_pre_kind kind;
    int use_regex, add_prefix_space; /* ByteLevel */
    uint32_t replacement;            /* Metaspace */
    tok_prepend_scheme scheme;
    int split;
} tok_pre;

typedef enum {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE
} tok_dec_kind;

typedef struct {
    tok_dec_kind kind;
    char *a, *b; /* Replace pattern / content, Strip content */
    size_t alen, blen;
    int start, stop;
    uint32_t replacement;
    tok_prepend_scheme scheme;
} tok_dec;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
    char *norm_content; /* content passed through the normalizer (normalized tokens) */
    size_t norm_len;
} tok_added;

typedef enum { MODEL_BPE, MODEL_UNIGRAM } tok_model_kind;

struct cv_tokenizer {
    tok_model_kind model;
    /* vocab: token string -> id, and id -> token string (model vocab only) */
    tok_strmap vocab;
    char **id_to_tok; /* indexed by id, size n_ids_total; added tokens override */
    uint32_t *id_to_len;
    int32_t n_ids_total; /* max id + 1 over vocab and added tokens */
    int32_t ids_cap;     /* allocated entries of id_to_tok / id_to_len / is_special */
    int32_t model_vocab_size;
    unsigned char *is_special; /* per id */

    /* BPE */
    tok_mergemap merges;
    int32_t unk_id; /* -1 when none */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_fallback_ids[256]; /* <0xNN> ids, -1 if missing */
    int byte_level;                 /* pre-tokenizer includes ByteLevel: model input is mapped */
    int32_t byte_ids[256];          /* id of the byte-level char of each byte, -1 if missing */
    uint32_t byte_cp[256];          /* byte -> byte-level code point */
    int16_t cp_byte[0x100 + 68];    /* byte-level code point -> byte, -1 if none */

    /* Unigram */
    double *scores; /* per model id */
    double unk_score;
    size_t max_piece_len;

    /* pipeline */
    tok_norm *norms;
    size_t n_norms;
    tok_pre *pres;
    size_t n_pres;
    tok_dec *decs;
    size_t n_decs;
    int has_decoder;

    /* post-processor: TemplateProcessing single template as a list of ids, with -1 marking $A */
    int32_t *tmpl;
    size_t n_tmpl;

    tok_added *added;
    size_t n_added;
    /* first-byte index over added tokens: lists of indices into `added`, longest first */
    int32_t *added_by_byte[256];
    size_t added_by_byte_n[256];
    int have_raw_added, have_norm_added;

    int32_t bos_id, eos_id, pad_id;
    int clean_up_default;
};

/* tok_load.c helpers used by tok_encode.c */
char *tok_normalize(const cv_tokenizer *tok, const char *s, size_t n, size_t *out_len);

/* Models: append the ids of one pre-token (word). */
void tok_bpe_word(const cv_tokenizer *tok, const char *w, size_t n, tok_ids *out);
void tok_unigram_word(const cv_tokenizer *tok, const char *w, size_t n, tok_ids *out);

/* Pre-tokenizer regexes: end offset of the match starting at i (always > i when i < n). */
size_t tok_match_gpt2(const char *s, size_t n, size_t i);
size_t tok_match_llama3(const char *s, size_t n, size_t i);

/* Byte-level alphabet: byte -> code point, and code point -> byte (-1 if none). */
uint32_t tok_byte_to_cp(unsigned char b);
int tok_cp_to_byte(uint32_t cp);

#endif
