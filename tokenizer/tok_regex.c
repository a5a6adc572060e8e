/* tok_regex.c — hand-written matchers for the two pre-tokenizer regexes HF tokenizers use.
 *
 * GPT-2 (ByteLevel use_regex):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Llama 3 (Split, Isolated):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * Each function returns the end of the leftmost match starting at byte offset i, following the
 * ordered-alternation and backtracking semantics of Oniguruma (what HF uses). Every character is a
 * letter, number, whitespace or "other", so some alternative always matches and the matches tile
 * the text (the Isolated split then has no gaps). */
#include "tok_internal.h"

static inline uint32_t cp_at(const char *s, size_t n, size_t i, int *len) {
    uint32_t cp;
    *len = tok_utf8_next(s + i, n - i, &cp);
    return cp;
}

static inline int cls_at(const char *s, size_t n, size_t i, int *len) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
        *len = 1;
        return tok_char_class(c);
    }
    return tok_char_class(cp_at(s, n, i, len));
}

/* Advance over a run of characters of class `cls` starting at i. */
static size_t run_of(const char *s, size_t n, size_t i, int cls) {
    while (i < n) {
        int l;
        if (cls_at(s, n, i, &l) != cls) break;
        i += (size_t)l;
    }
    return i;
}

/* `\s+(?!\S)|\s+` at i (s[i] is whitespace): the whole run if it ends the text or is a single
 * character; otherwise the run minus its last character (left for the next word). */
static size_t space_run(const char *s, size_t n, size_t i) {
    size_t j = i, last = i;
    while (j < n) {
        int l;
        if (cls_at(s, n, j, &l) != TOK_CLS_SPACE) break;
        last = j;
        j += (size_t)l;
    }
    if (j == n || last == i) return j;
    return last;
}

/* 's 't 're 've 'm 'll 'd (case-sensitive) at i, where s[i] == '\''; 0 if none. */
static size_t contraction(const char *s, size_t n, size_t i, int fold) {
    if (i + 1 >= n) return 0;
    int l1;
    uint32_t c1 = cp_at(s, n, i + 1, &l1);
    if (fold) {
        if (c1 == 0x17F) c1 = 's'; /* LATIN SMALL LETTER LONG S folds to s */
        if (c1 < 0x80 && c1 >= 'A' && c1 <= 'Z') c1 += 32;
    }
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 1 + (size_t)l1;
    if (c1 != 'r' && c1 != 'v' && c1 != 'l') return 0;
    if (i + 1 + (size_t)l1 >= n) return 0;
    int l2;
    uint32_t c2 = cp_at(s, n, i + 1 + (size_t)l1, &l2);
    if (fold) {
        if (c2 == 0x17F) c2 = 's';
        if (c2 < 0x80 && c2 >= 'A' && c2 <= 'Z') c2 += 32;
    }
    if (((c1 == 'r' || c1 == 'v') && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 1 + (size_t)l1 + (size_t)l2;
    return 0;
}

size_t tok_match_gpt2(const char *s, size_t n, size_t i) {
    if (s[i] == '\'') {
        size_t e = contraction(s, n, i, 0);
        if (e) return e;
    }
    int l0;
    int c0 = cls_at(s, n, i, &l0);
    if (s[i] == ' ' && i + 1 < n) {
        int l1;
        int c1 = cls_at(s, n, i + 1, &l1);
        if (c1 != TOK_CLS_SPACE) return run_of(s, n, i + 1, c1); /* ` ?\p{L}+` etc. */
    }
    if (c0 != TOK_CLS_SPACE) return run_of(s, n, i, c0);
    return space_run(s, n, i);
}

static int is_crlf(char c) {
    return c == '\r' || c == '\n';
}

size_t tok_match_llama3(const char *s, size_t n, size_t i) {
    if (s[i] == '\'') {
        size_t e = contraction(s, n, i, 1);
        if (e) return e;
    }
    int l0;
    int c0 = cls_at(s, n, i, &l0);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c0 == TOK_CLS_LETTER) return run_of(s, n, i, TOK_CLS_LETTER);
    if (c0 != TOK_CLS_NUMBER && !is_crlf(s[i]) && i + (size_t)l0 < n) {
        int l1;
        if (cls_at(s, n, i + (size_t)l0, &l1) == TOK_CLS_LETTER)
            return run_of(s, n, i + (size_t)l0, TOK_CLS_LETTER);
    }
    /* \p{N}{1,3} */
    if (c0 == TOK_CLS_NUMBER) {
        size_t j = i;
        for (int k = 0; k < 3 && j < n; k++) {
            int l;
            if (cls_at(s, n, j, &l) != TOK_CLS_NUMBER) break;
            j += (size_t)l;
        }
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t start = 0;
    int other = 0;
    if (c0 == TOK_CLS_OTHER) {
        start = i;
        other = 1;
    } else if (s[i] == ' ' && i + 1 < n) {
        int l1;
        if (cls_at(s, n, i + 1, &l1) == TOK_CLS_OTHER) {
            start = i + 1;
            other = 1;
        }
    }
    if (other) {
        size_t j = run_of(s, n, start, TOK_CLS_OTHER);
        while (j < n && is_crlf(s[j])) j++;
        return j;
    }
    /* c0 is whitespace here. \s*[\r\n]+ : up to and including the last CR/LF of the run. */
    size_t j = i, last_nl = (size_t)-1;
    while (j < n) {
        int l;
        if (cls_at(s, n, j, &l) != TOK_CLS_SPACE) break;
        if (is_crlf(s[j])) last_nl = j;
        j += (size_t)l;
    }
    if (last_nl != (size_t)-1) return last_nl + 1;
    return space_run(s, n, i);
}
