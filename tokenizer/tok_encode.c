/* tok_encode.c — the encode pipeline of HF tokenizers (tokenizer.rs encode_single_sequence):
 *   1. invalid UTF-8 -> U+FFFD (what Python's str conversion would have done);
 *   2. split out added tokens with normalized=false on the raw text (added_vocabulary.rs);
 *   3. normalize each remaining segment on its own, then split out normalized added tokens;
 *   4. pre-tokenize each remaining piece, run the model on every pre-token;
 *   5. post-processor template (BOS / EOS) when add_special is set. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- normalizers --------------------------------------------------------------------------- */

static void replace_all(tok_buf *o, const char *s, size_t n, const char *a, size_t al,
                        const char *b, size_t bl) {
    size_t i = 0, run = 0;
    while (i + al <= n) {
        if (s[i] == a[0] && memcmp(s + i, a, al) == 0) {
            tok_buf_put(o, s + run, i - run);
            tok_buf_put(o, b, bl);
            i += al;
            run = i;
        } else {
            i++;
        }
    }
    tok_buf_put(o, s + run, n - run);
}

static int is_mark(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

/* Darts-clone unit fields (spm_precompiled) */
static inline uint32_t unit_offset(uint32_t u) {
    return (u >> 10) << ((u & (1u << 9)) >> 6);
}
static inline uint32_t unit_label(uint32_t u) {
    return u & ((1u << 31) | 0xFF);
}
static inline int unit_has_leaf(uint32_t u) {
    return (u >> 8) & 1;
}

/* The replacement of the shortest charsmap key that is a prefix of chunk (HF uses the first
 * common-prefix result, replacing the whole chunk), or NULL. Bounds-checked: a malformed map
 * just matches nothing. */
static const char *pc_transform(const tok_norm *st, const char *s, size_t n, size_t *out_len) {
    const uint32_t *u = st->units;
    size_t nu = st->n_units, pos = unit_offset(u[0]);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) break;
        pos ^= c;
        if (pos >= nu) return NULL;
        uint32_t unit = u[pos];
        if (unit_label(unit) != c) return NULL;
        pos ^= unit_offset(unit);
        if (pos >= nu) return NULL;
        if (unit_has_leaf(unit)) {
            size_t v = u[pos] & 0x7FFFFFFFu;
            if (v >= st->alen) return NULL;
            *out_len = strlen(st->a + v);
            return st->a + v;
        }
    }
    return NULL;
}

/* precompiled.rs: per extended grapheme cluster, the whole cluster's rule if it is shorter than
 * 6 bytes and has one, else each char's rule or the char itself. */
static void precompiled(const tok_norm *st, const char *s, size_t n, tok_buf *o) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp, next;
        size_t g = i + (size_t)tok_utf8_next(s + i, n - i, &cp);
        utf8proc_int32_t state = 0;
        while (g < n) {
            int l = tok_utf8_next(s + g, n - g, &next);
            if (utf8proc_grapheme_break_stateful((utf8proc_int32_t)cp, (utf8proc_int32_t)next,
                                                 &state))
                break;
            cp = next;
            g += (size_t)l;
        }
        size_t rl;
        const char *r = g - i < 6 ? pc_transform(st, s + i, g - i, &rl) : NULL;
        if (r) {
            tok_buf_put(o, r, rl);
        } else {
            for (size_t k = i; k < g;) {
                size_t cl = (size_t)tok_utf8_next(s + k, g - k, &cp);
                r = pc_transform(st, s + k, cl, &rl);
                if (r)
                    tok_buf_put(o, r, rl);
                else
                    tok_buf_put(o, s + k, cl);
                k += cl;
            }
        }
        i = g;
    }
}

static void norm_step(const tok_norm *st, const char *s, size_t n, tok_buf *o) {
    switch (st->kind) {
    case NORM_PRECOMPILED:
        precompiled(st, s, n, o);
        return;
    case NORM_PREPEND:
        if (n) tok_buf_put(o, st->a, st->alen);
        tok_buf_put(o, s, n);
        return;
    case NORM_REPLACE:
        replace_all(o, s, n, st->a, st->alen, st->b, st->blen);
        return;
    case NORM_COLLAPSE_SPACES: {
        size_t i = 0;
        while (i < n) {
            size_t j = i;
            while (j < n && s[j] == ' ') j++;
            if (j - i >= 2)
                tok_buf_put(o, st->b, st->blen), i = j;
            else if (j > i)
                tok_buf_putc(o, ' '), i = j;
            else
                tok_buf_putc(o, s[i++]);
        }
        return;
    }
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD: {
        int opt = UTF8PROC_STABLE;
        if (st->kind == NORM_NFC || st->kind == NORM_NFKC)
            opt |= UTF8PROC_COMPOSE;
        else
            opt |= UTF8PROC_DECOMPOSE;
        if (st->kind == NORM_NFKC || st->kind == NORM_NFKD) opt |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                          (utf8proc_option_t)opt);
        if (k < 0)
            tok_buf_put(o, s, n); /* cannot happen on sanitized text */
        else
            tok_buf_put(o, dst, (size_t)k);
        free(dst);
        return;
    }
    case NORM_LOWERCASE:
    case NORM_STRIP_ACCENTS:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            i += (size_t)tok_utf8_next(s + i, n - i, &cp);
            if (st->kind == NORM_STRIP_ACCENTS) {
                if (!is_mark(cp)) tok_buf_put_cp(o, cp);
            } else if (cp == 0x130) { /* Rust to_lowercase: İ -> i + COMBINING DOT ABOVE */
                tok_buf_put(o, "i\xCC\x87", 3);
            } else {
                tok_buf_put_cp(o, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
            }
        }
        return;
    case NORM_STRIP: {
        size_t a = 0, b = n;
        while (st->left && a < b) {
            uint32_t cp;
            int l = tok_utf8_next(s + a, b - a, &cp);
            if (!tok_is_space(cp)) break;
            a += (size_t)l;
        }
        while (st->right && b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            uint32_t cp;
            tok_utf8_next(s + k, b - k, &cp);
            if (!tok_is_space(cp)) break;
            b = k;
        }
        tok_buf_put(o, s + a, b - a);
        return;
    }
    }
}

char *tok_normalize(const cv_tokenizer *tok, const char *s, size_t n, size_t *out_len) {
    tok_buf cur = {0};
    tok_buf_put(&cur, s, n);
    for (size_t i = 0; i < tok->n_norms && !cur.oom; i++) {
        tok_buf next = {0};
        norm_step(&tok->norms[i], cur.p ? cur.p : "", cur.n, &next);
        free(cur.p);
        cur = next;
    }
    *out_len = cur.n;
    return tok_buf_finish(&cur);
}

/* ---- pre-tokenizers ------------------------------------------------------------------------ */

static void run_model(const cv_tokenizer *tok, const char *w, size_t n, tok_ids *out) {
    if (tok->model == MODEL_BPE)
        tok_bpe_word(tok, w, n, out);
    else
        tok_unigram_word(tok, w, n, out);
}

static void pretok(const cv_tokenizer *tok, size_t step, const char *s, size_t n, int at_origin,
                   tok_ids *out) {
    if (n == 0 || out->oom) return;
    if (step == tok->n_pres) {
        run_model(tok, s, n, out);
        return;
    }
    const tok_pre *p = &tok->pres[step];
    switch (p->kind) {
    case PRE_BYTELEVEL: {
        char *tmp = NULL;
        if (p->add_prefix_space && s[0] != ' ') {
            tmp = malloc(n + 1);
            if (!tmp) {
                out->oom = 1;
                return;
            }
            tmp[0] = ' ';
            memcpy(tmp + 1, s, n);
            s = tmp;
            n++;
        }
        if (!p->use_regex) {
            pretok(tok, step + 1, s, n, at_origin, out);
        } else {
            for (size_t i = 0; i < n;) {
                size_t e = tok_match_gpt2(s, n, i);
                pretok(tok, step + 1, s + i, e - i, at_origin && i == 0, out);
                i = e;
            }
        }
        free(tmp);
        return;
    }
    case PRE_SPLIT_GPT2:
    case PRE_SPLIT_LLAMA3:
        for (size_t i = 0; i < n;) {
            size_t e =
                p->kind == PRE_SPLIT_GPT2 ? tok_match_gpt2(s, n, i) : tok_match_llama3(s, n, i);
            pretok(tok, step + 1, s + i, e - i, at_origin && i == 0, out);
            i = e;
        }
        return;
    case PRE_WHITESPACESPLIT:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t j = i;
            while (j < n) {
                int l = tok_utf8_next(s + j, n - j, &cp);
                if (tok_is_space(cp)) break;
                j += (size_t)l;
            }
            if (j > i) pretok(tok, step + 1, s + i, j - i, at_origin && i == 0, out);
            while (j < n) {
                int l = tok_utf8_next(s + j, n - j, &cp);
                if (!tok_is_space(cp)) break;
                j += (size_t)l;
            }
            i = j;
        }
        return;
    case PRE_METASPACE: {
        tok_buf b = {0};
        char rep[4];
        int rl =
            (int)utf8proc_encode_char((utf8proc_int32_t)p->replacement, (utf8proc_uint8_t *)rep);
        tok_buf r = {0};
        replace_all(&r, s, n, " ", 1, rep, (size_t)rl);
        int starts = r.n >= (size_t)rl && memcmp(r.p, rep, (size_t)rl) == 0;
        if (!starts && (p->scheme == PREPEND_ALWAYS || (p->scheme == PREPEND_FIRST && at_origin)))
            tok_buf_put(&b, rep, (size_t)rl);
        tok_buf_put(&b, r.p, r.n);
        free(r.p);
        if (b.oom) {
            out->oom = 1;
            free(b.p);
            return;
        }
        if (!p->split) {
            pretok(tok, step + 1, b.p, b.n, at_origin, out);
        } else { /* split before every replacement char (MergedWithNext) */
            size_t start = 0;
            for (size_t i = (size_t)rl; i + (size_t)rl <= b.n; i++) {
                if (memcmp(b.p + i, rep, (size_t)rl) != 0) continue;
                pretok(tok, step + 1, b.p + start, i - start, at_origin && start == 0, out);
                start = i;
            }
            pretok(tok, step + 1, b.p + start, b.n - start, at_origin && start == 0, out);
        }
        free(b.p);
        return;
    }
    }
}

/* ---- added tokens -------------------------------------------------------------------------- */

typedef struct {
    size_t start, end;
    int32_t id; /* -1: plain text */
} piece;

typedef struct {
    piece *p;
    size_t n, cap;
    int oom;
} piece_list;

static void piece_push(piece_list *l, size_t start, size_t end, int32_t id) {
    if (l->oom) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        piece *q = realloc(l->p, cap * sizeof *q);
        if (!q) {
            l->oom = 1;
            return;
        }
        l->p = q;
        l->cap = cap;
    }
    l->p[l->n++] = (piece){start, end, id};
}

static uint32_t last_cp(const char *s, size_t n, size_t *start) {
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tok_utf8_next(s + k, n - k, &cp);
    *start = k;
    return cp;
}

/* added_vocabulary.rs find_matches: leftmost-longest matches of the tokens whose `normalized`
 * flag equals `norm`, filtered by single_word, widened by lstrip / rstrip. */
static void split_added(const cv_tokenizer *tok, const char *s, size_t n, int norm,
                        piece_list *out) {
    size_t start_offset = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        size_t best_len = 0;
        const tok_added *best = NULL;
        for (size_t k = 0; k < tok->added_by_byte_n[b]; k++) {
            const tok_added *a = &tok->added[tok->added_by_byte[b][k]];
            if (a->normalized != norm) continue;
            const char *pat = norm ? a->norm_content : a->content;
            size_t pl = norm ? a->norm_len : a->len;
            if (pl > best_len && pl <= n - i && memcmp(s + i, pat, pl) == 0) {
                best_len = pl;
                best = a;
            }
        }
        if (!best) {
            i++;
            continue;
        }
        size_t start = i, stop = i + best_len;
        i = stop;
        if (best->single_word) {
            size_t k;
            int start_space = start == 0 || !tok_is_word(last_cp(s, start, &k));
            uint32_t cp = 0;
            if (stop < n) tok_utf8_next(s + stop, n - stop, &cp);
            int stop_space = stop == n || !tok_is_word(cp);
            if (!start_space || !stop_space) continue;
        }
        if (best->lstrip) {
            size_t ns = start, k;
            while (ns > 0 && tok_is_space(last_cp(s, ns, &k))) ns = k;
            start = ns > start_offset ? ns : start_offset;
        }
        if (best->rstrip) {
            while (stop < n) {
                uint32_t cp;
                int l = tok_utf8_next(s + stop, n - stop, &cp);
                if (!tok_is_space(cp)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start) piece_push(out, start_offset, start, -1);
        piece_push(out, start, stop, best->id);
        start_offset = stop;
    }
    if (start_offset < n) piece_push(out, start_offset, n, -1);
}

/* One segment of raw text between non-normalized added tokens. */
static void encode_segment(const cv_tokenizer *tok, const char *s, size_t n, int at_origin,
                           tok_ids *out) {
    char *norm = NULL;
    if (tok->n_norms) {
        size_t nl;
        norm = tok_normalize(tok, s, n, &nl);
        if (!norm) {
            out->oom = 1;
            return;
        }
        s = norm;
        n = nl;
    }
    if (!tok->have_norm_added) {
        pretok(tok, 0, s, n, at_origin, out);
    } else {
        piece_list pl = {0};
        split_added(tok, s, n, 1, &pl);
        if (pl.oom) out->oom = 1;
        for (size_t k = 0; k < pl.n; k++) {
            if (pl.p[k].id >= 0)
                tok_ids_push(out, pl.p[k].id);
            else
                pretok(tok, 0, s + pl.p[k].start, pl.p[k].end - pl.p[k].start,
                       at_origin && pl.p[k].start == 0, out);
        }
        free(pl.p);
    }
    free(norm);
}

static int all_valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t sub;
        int k = tok_utf8_valid_len(u + i, n - i, &sub);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

cv_status cv_tokenizer_encode(const cv_tokenizer *tok, const char *text, size_t len,
                              int add_special, int32_t **ids, size_t *n_ids, cv_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return cv_fail(err, CV_ERR_USAGE, "tokenizer encode: NULL text");
    char *clean = NULL;
    if (len && !all_valid_utf8(text, len)) {
        int changed;
        clean = tok_utf8_sanitize(text, len, &len, &changed);
        if (!clean) return cv_fail(err, CV_ERR_NOMEM, "tokenizer encode: out of memory");
        text = clean;
    }
    tok_ids body = {0};
    if (!tok->have_raw_added) {
        encode_segment(tok, text ? text : "", len, 1, &body);
    } else {
        piece_list pl = {0};
        split_added(tok, text, len, 0, &pl);
        if (pl.oom) body.oom = 1;
        for (size_t k = 0; k < pl.n; k++) {
            if (pl.p[k].id >= 0)
                tok_ids_push(&body, pl.p[k].id);
            else
                encode_segment(tok, text + pl.p[k].start, pl.p[k].end - pl.p[k].start,
                               pl.p[k].start == 0, &body);
        }
        free(pl.p);
    }
    free(clean);
    tok_ids res = {0};
    if (body.oom) {
        free(body.p);
        return cv_fail(err, CV_ERR_NOMEM, "tokenizer encode: out of memory (%zu bytes of text)",
                       len);
    }
    if (add_special && tok->n_tmpl) {
        for (size_t k = 0; k < tok->n_tmpl; k++) {
            if (tok->tmpl[k] >= 0)
                tok_ids_push(&res, tok->tmpl[k]);
            else
                for (size_t j = 0; j < body.n; j++) tok_ids_push(&res, body.p[j]);
        }
        free(body.p);
    } else {
        res = body;
    }
    if (res.oom) {
        free(res.p);
        return cv_fail(err, CV_ERR_NOMEM, "tokenizer encode: out of memory (%zu bytes of text)",
                       len);
    }
    *ids = res.p;
    *n_ids = res.n;
    return CV_OK;
}
