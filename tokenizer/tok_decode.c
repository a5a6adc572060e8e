/* tok_decode.c — decode like HF tokenizers' Tokenizer::decode (ids -> token strings, special
 * tokens dropped when asked, then the decoder chain, then concatenation), followed by
 * transformers' optional clean_up_tokenization_spaces. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* A list of token strings that each decoder step rewrites. */
typedef struct {
    char **s;
    size_t *len;
    size_t n, cap;
    int oom;
} strlist;

static void sl_push_owned(strlist *l, char *s, size_t len) {
    if (!s) {
        l->oom = 1;
        return;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **a = realloc(l->s, cap * sizeof *a);
        size_t *b = a ? realloc(l->len, cap * sizeof *b) : NULL;
        if (a) l->s = a;
        if (!a || !b) {
            free(s);
            l->oom = 1;
            return;
        }
        l->len = b;
        l->cap = cap;
    }
    l->s[l->n] = s;
    l->len[l->n++] = len;
}

static void sl_push_buf(strlist *l, tok_buf *b) {
    size_t n = b->n;
    sl_push_owned(l, tok_buf_finish(b), n);
}

static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    free(l->len);
    memset(l, 0, sizeof *l);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> byte (Rust u8::from_str_radix also accepts "+N"), else -1 */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int lo = hexval(s[4]);
    if (lo < 0) return -1;
    if (s[3] == '+') return lo;
    int hi = hexval(s[3]);
    return hi < 0 ? -1 : hi * 16 + lo;
}

static void put_lossy(tok_buf *o, const char *s, size_t n) {
    int changed;
    size_t cl;
    char *c = tok_utf8_sanitize(s, n, &cl, &changed);
    if (!c) {
        o->oom = 1;
        return;
    }
    tok_buf_put(o, c, cl);
    free(c);
}

static void dec_step(const cv_tokenizer *tok, const tok_dec *d, strlist *in, strlist *out) {
    switch (d->kind) {
    case DEC_BYTELEVEL: { /* all tokens -> bytes -> one lossy UTF-8 string */
        tok_buf bytes = {0}, res = {0};
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->s[i];
            size_t n = in->len[i], mark = bytes.n;
            int ok = 1;
            for (size_t k = 0; k < n && ok;) {
                uint32_t cp;
                k += (size_t)tok_utf8_next(s + k, n - k, &cp);
                int b = cp < sizeof tok->cp_byte / sizeof tok->cp_byte[0] ? tok->cp_byte[cp] : -1;
                if (b < 0)
                    ok = 0;
                else
                    tok_buf_putc(&bytes, (char)b);
            }
            if (!ok) { /* a char outside the table: the token's own UTF-8 bytes */
                bytes.n = mark;
                tok_buf_put(&bytes, s, n);
            }
        }
        put_lossy(&res, bytes.p ? bytes.p : "", bytes.n);
        if (bytes.oom) res.oom = 1;
        free(bytes.p);
        sl_push_buf(out, &res);
        return;
    }
    case DEC_BYTEFALLBACK: {
        tok_buf pend = {0};
        for (size_t i = 0; i <= in->n; i++) {
            int b = i < in->n ? byte_token(in->s[i], in->len[i]) : -1;
            if (b >= 0) {
                tok_buf_putc(&pend, (char)b);
                continue;
            }
            if (pend.n) {
                int changed;
                size_t cl;
                char *c = tok_utf8_sanitize(pend.p, pend.n, &cl, &changed);
                if (c && !changed) {
                    sl_push_owned(out, c, cl);
                } else { /* invalid run: one U+FFFD per byte */
                    free(c);
                    for (size_t k = 0; k < pend.n; k++) {
                        tok_buf r = {0};
                        tok_buf_put(&r, "\xEF\xBF\xBD", 3);
                        sl_push_buf(out, &r);
                    }
                }
                pend.n = 0;
            }
            if (i < in->n) {
                tok_buf r = {0};
                tok_buf_put(&r, in->s[i], in->len[i]);
                sl_push_buf(out, &r);
            }
        }
        if (pend.oom) out->oom = 1;
        free(pend.p);
        return;
    }
    case DEC_FUSE: {
        tok_buf r = {0};
        for (size_t i = 0; i < in->n; i++) tok_buf_put(&r, in->s[i], in->len[i]);
        sl_push_buf(out, &r);
        return;
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            tok_buf r = {0};
            const char *s = in->s[i];
            size_t n = in->len[i], k = 0, run = 0;
            while (k + d->alen <= n) {
                if (memcmp(s + k, d->a, d->alen) == 0) {
                    tok_buf_put(&r, s + run, k - run);
                    tok_buf_put(&r, d->b, d->blen);
                    k += d->alen;
                    run = k;
                } else {
                    k++;
                }
            }
            tok_buf_put(&r, s + run, n - run);
            sl_push_buf(out, &r);
        }
        return;
    case DEC_STRIP:
        /* strip.rs: cut up to `start` leading and `stop` trailing content chars, then keep
         * (byte length - cuts) chars after the start cut (HF mixes bytes and chars here). */
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->s[i];
            size_t n = in->len[i], nchars = 0, start_cut = 0, stop_cut = 0;
            uint32_t cp;
            for (size_t k = 0; k < n; nchars++) k += (size_t)tok_utf8_next(s + k, n - k, &cp);
            size_t k = 0;
            while (start_cut < (size_t)d->start && k < n) {
                int l = tok_utf8_next(s + k, n - k, &cp);
                if (cp != d->replacement) break;
                k += (size_t)l;
                start_cut++;
            }
            size_t e = n;
            while (stop_cut < (size_t)d->stop && e > 0) {
                size_t b;
                for (b = e - 1; b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80;) b--;
                tok_utf8_next(s + b, e - b, &cp);
                if (cp != d->replacement) break;
                e = b;
                stop_cut++;
            }
            size_t take = n >= start_cut + stop_cut ? n - start_cut - stop_cut : 0;
            size_t avail = nchars - start_cut, end = k;
            for (size_t c = 0; c < take && c < avail; c++)
                end += (size_t)tok_utf8_next(s + end, n - end, &cp);
            tok_buf r = {0};
            tok_buf_put(&r, s + k, end - k);
            sl_push_buf(out, &r);
        }
        return;
    case DEC_METASPACE:
        /* every replacement char becomes ' ', except in the first token where it is dropped */
        for (size_t i = 0; i < in->n; i++) {
            tok_buf r = {0};
            const char *s = in->s[i];
            size_t n = in->len[i];
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                int l = tok_utf8_next(s + k, n - k, &cp);
                if (cp == d->replacement) {
                    if (!(i == 0 && d->scheme != PREPEND_NEVER)) tok_buf_putc(&r, ' ');
                } else {
                    tok_buf_put(&r, s + k, (size_t)l);
                }
                k += (size_t)l;
            }
            sl_push_buf(out, &r);
        }
        return;
    }
}

/* transformers' clean_up_tokenization: Python's chained str.replace, each pattern over the whole
 * string, left to right; every replacement is shorter than its pattern, so it runs in place. */
static void clean_up(char *s, size_t *len) {
    static const char *const from[] = {" .",   " ?",  " !",  " ,",   " ' ",
                                       " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    size_t n = *len;
    for (size_t p = 0; p < sizeof from / sizeof from[0]; p++) {
        size_t fl = strlen(from[p]), tl = strlen(to[p]), r = 0, w = 0;
        while (r < n) {
            if (r + fl <= n && memcmp(s + r, from[p], fl) == 0) {
                memcpy(s + w, to[p], tl);
                w += tl;
                r += fl;
            } else {
                s[w++] = s[r++];
            }
        }
        n = w;
    }
    s[n] = '\0';
    *len = n;
}

void cv_tokenizer_clean_up_spaces(char *s) {
    size_t n = strlen(s);
    clean_up(s, &n);
}

char *cv_tokenizer_decode_len(const cv_tokenizer *tok, const int32_t *ids, size_t n,
                              int skip_special, int clean_up_spaces, size_t *out_len) {
    strlist cur = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids_total || !tok->id_to_tok[id]) continue;
        if (skip_special && tok->is_special[id]) continue;
        tok_buf b = {0};
        tok_buf_put(&b, tok->id_to_tok[id], tok->id_to_len[id]);
        sl_push_buf(&cur, &b);
    }
    for (size_t k = 0; k < tok->n_decs && !cur.oom; k++) {
        strlist next = {0};
        dec_step(tok, &tok->decs[k], &cur, &next);
        sl_free(&cur);
        cur = next;
    }
    tok_buf res = {0};
    for (size_t i = 0; i < cur.n; i++) {
        if (!tok->has_decoder && i > 0) tok_buf_putc(&res, ' ');
        tok_buf_put(&res, cur.s[i], cur.len[i]);
    }
    int oom = cur.oom;
    sl_free(&cur);
    size_t len = res.n;
    char *out = tok_buf_finish(&res);
    if (oom) {
        free(out);
        return NULL;
    }
    if (out && clean_up_spaces) clean_up(out, &len);
    if (out_len) *out_len = len;
    return out;
}

char *cv_tokenizer_decode(const cv_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          int clean_up_spaces) {
    return cv_tokenizer_decode_len(tok, ids, n, skip_special, clean_up_spaces, NULL);
}
