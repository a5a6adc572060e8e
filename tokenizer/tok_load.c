/* tok_load.c — building a cv_tokenizer from tokenizer.json (or vocab.json + merges.txt) and
 * tokenizer_config.json; vocab size / special-id accessors; freeing.
 *
 * Every unsupported component (a normalizer, pre-tokenizer, decoder or model type we do not
 * implement) is rejected at load with CV_ERR_UNSUPPORTED naming it, rather than silently
 * tokenizing differently from HF. Malformed JSON gives CV_ERR_FORMAT naming the key. */
#define _POSIX_C_SOURCE 200809L
#include "tok_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPT2_PATTERN                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_PATTERN                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct {
    cv_tokenizer *tok;
    const char *name; /* file name for messages */
    cv_error *err;
} loader;

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static cv_status oom(loader *L) {
    return cv_fail(L->err, CV_ERR_NOMEM, "%s: out of memory", L->name);
}

/* Optional boolean member: absent/null -> def; wrong type -> error. */
static cv_status get_bool(loader *L, const cJSON *obj, const char *key, const char *ctx, int def,
                          int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = def;
    if (!v || cJSON_IsNull(v)) return CV_OK;
    if (!cJSON_IsBool(v))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.%s must be a boolean", L->name, ctx, key);
    *out = cJSON_IsTrue(v);
    return CV_OK;
}

/* Optional string member: absent/null -> NULL. */
static cv_status get_str(loader *L, const cJSON *obj, const char *key, const char *ctx,
                         const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return CV_OK;
    if (!cJSON_IsString(v))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.%s must be a string", L->name, ctx, key);
    *out = v->valuestring;
    return CV_OK;
}

static cv_status need_str(loader *L, const cJSON *obj, const char *key, const char *ctx,
                          const char **out) {
    cv_status st = get_str(L, obj, key, ctx, out);
    if (st == CV_OK && !*out)
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s is missing string '%s'", L->name, ctx, key);
    return st;
}

static int json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (d != floor(d) || d < (double)lo || d > (double)hi) return 0;
    *out = (int64_t)d;
    return 1;
}

static uint32_t first_cp(const char *s) {
    uint32_t cp;
    tok_utf8_next(s, strlen(s), &cp);
    return cp;
}

static cv_status parse_scheme(loader *L, const cJSON *o, const char *ctx, tok_prepend_scheme *out) {
    const char *sch;
    cv_status st = get_str(L, o, "prepend_scheme", ctx, &sch);
    if (st) return st;
    if (sch) {
        if (!strcmp(sch, "always"))
            *out = PREPEND_ALWAYS;
        else if (!strcmp(sch, "first"))
            *out = PREPEND_FIRST;
        else if (!strcmp(sch, "never"))
            *out = PREPEND_NEVER;
        else
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.prepend_scheme '%s' is not known",
                           L->name, ctx, sch);
        return CV_OK;
    }
    int aps;
    st = get_bool(L, o, "add_prefix_space", ctx, 1, &aps); /* older files */
    *out = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    return st;
}

/* ---- normalizer ---------------------------------------------------------------------------- */

static cv_status push_norm(loader *L, tok_norm n) {
    cv_tokenizer *t = L->tok;
    tok_norm *p = realloc(t->norms, (t->n_norms + 1) * sizeof *p);
    if (!p) {
        free(n.a);
        free(n.b);
        free(n.units);
        return oom(L);
    }
    t->norms = p;
    t->norms[t->n_norms++] = n;
    return CV_OK;
}

static cv_status parse_pattern(loader *L, const cJSON *o, const char *ctx, const char **str,
                               const char **regex) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    *str = *regex = NULL;
    if (!cJSON_IsObject(pat))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.pattern must be an object", L->name, ctx);
    cv_status st = get_str(L, pat, "String", ctx, str);
    if (st) return st;
    st = get_str(L, pat, "Regex", ctx, regex);
    if (st) return st;
    if (!*str && !*regex)
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.pattern needs 'String' or 'Regex'", L->name,
                       ctx);
    return CV_OK;
}

static int b64_digit(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 (padding optional); NULL on a bad character or out-of-memory. */
static unsigned char *b64_decode(const char *s, size_t *out_len, int *bad) {
    size_t n = strlen(s);
    unsigned char *out = malloc(n / 4 * 3 + 4);
    *bad = 0;
    if (!out) return NULL;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64_digit(s[i]);
        if (v < 0) {
            free(out);
            *bad = 1;
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    *out_len = k;
    return out;
}

/* precompiled_charsmap: u32 LE trie size in bytes, the Darts-clone units, then the pool of
 * NUL-terminated replacement strings. */
static cv_status parse_precompiled(loader *L, const cJSON *o) {
    const char *b64;
    cv_status st = get_str(L, o, "precompiled_charsmap", "normalizer Precompiled", &b64);
    if (st) return st;
    if (!b64 || !*b64) return CV_OK; /* empty map: identity */
    size_t n;
    int bad;
    unsigned char *raw = b64_decode(b64, &n, &bad);
    if (!raw)
        return bad ? cv_fail(L->err, CV_ERR_FORMAT,
                             "%s: normalizer Precompiled: precompiled_charsmap is not base64",
                             L->name)
                   : oom(L);
    uint32_t trie_bytes = n >= 4 ? (uint32_t)raw[0] | (uint32_t)raw[1] << 8 |
                                       (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24
                                 : 0;
    if (n < 4 || trie_bytes % 4 || trie_bytes == 0 || trie_bytes > n - 4) {
        free(raw);
        return cv_fail(L->err, CV_ERR_FORMAT,
                       "%s: normalizer Precompiled: charsmap of %zu bytes has a bad trie size",
                       L->name, n);
    }
    tok_norm nm;
    memset(&nm, 0, sizeof nm);
    nm.kind = NORM_PRECOMPILED;
    nm.n_units = trie_bytes / 4;
    nm.units = malloc(trie_bytes);
    nm.alen = n - 4 - trie_bytes;
    nm.a = malloc(nm.alen + 1);
    if (!nm.units || !nm.a) {
        free(nm.units);
        free(nm.a);
        free(raw);
        return oom(L);
    }
    for (size_t i = 0; i < nm.n_units; i++) {
        const unsigned char *u = raw + 4 + 4 * i;
        nm.units[i] =
            (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(nm.a, raw + 4 + trie_bytes, nm.alen);
    nm.a[nm.alen] = '\0';
    free(raw);
    return push_norm(L, nm);
}

static cv_status parse_normalizer(loader *L, const cJSON *o, int depth) {
    if (!o || cJSON_IsNull(o)) return CV_OK;
    if (depth > 8 || !cJSON_IsObject(o))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: normalizer must be an object or null", L->name);
    const char *type;
    cv_status st = need_str(L, o, "type", "normalizer", &type);
    if (st) return st;
    tok_norm n;
    memset(&n, 0, sizeof n);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(arr))
            return cv_fail(L->err, CV_ERR_FORMAT,
                           "%s: normalizer Sequence needs 'normalizers' array", L->name);
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            st = parse_normalizer(L, it, depth + 1);
            if (st) return st;
        }
        return CV_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *s;
        if ((st = need_str(L, o, "prepend", "normalizer Prepend", &s))) return st;
        n.kind = NORM_PREPEND;
        n.alen = strlen(s);
        if (!(n.a = dup_n(s, n.alen))) return oom(L);
        return push_norm(L, n);
    }
    if (!strcmp(type, "Replace")) {
        const char *s, *re, *c;
        if ((st = parse_pattern(L, o, "normalizer Replace", &s, &re))) return st;
        if ((st = need_str(L, o, "content", "normalizer Replace", &c))) return st;
        if (re) {
            /* the only regex SentencePiece converters emit: collapse runs of spaces */
            if (strcmp(re, " {2,}") != 0)
                return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                               "%s: normalizer Replace with regex '%s' is not supported", L->name,
                               re);
            n.kind = NORM_COLLAPSE_SPACES;
            s = " ";
        } else {
            n.kind = NORM_REPLACE;
        }
        n.alen = strlen(s);
        n.blen = strlen(c);
        n.a = dup_n(s, n.alen);
        n.b = dup_n(c, n.blen);
        if (!n.a || !n.b || n.alen == 0) {
            free(n.a);
            free(n.b);
            return n.alen ? oom(L)
                          : cv_fail(L->err, CV_ERR_FORMAT, "%s: normalizer Replace: empty pattern",
                                    L->name);
        }
        return push_norm(L, n);
    }
    if (!strcmp(type, "Precompiled")) return parse_precompiled(L, o);
    if (!strcmp(type, "NFC"))
        n.kind = NORM_NFC;
    else if (!strcmp(type, "NFD"))
        n.kind = NORM_NFD;
    else if (!strcmp(type, "NFKC"))
        n.kind = NORM_NFKC;
    else if (!strcmp(type, "NFKD"))
        n.kind = NORM_NFKD;
    else if (!strcmp(type, "Lowercase"))
        n.kind = NORM_LOWERCASE;
    else if (!strcmp(type, "StripAccents"))
        n.kind = NORM_STRIP_ACCENTS;
    else if (!strcmp(type, "Strip")) {
        n.kind = NORM_STRIP;
        if ((st = get_bool(L, o, "strip_left", "normalizer Strip", 1, &n.left))) return st;
        if ((st = get_bool(L, o, "strip_right", "normalizer Strip", 1, &n.right))) return st;
    } else
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported",
                       L->name, type);
    return push_norm(L, n);
}

/* ---- pre-tokenizer ------------------------------------------------------------------------- */

static cv_status push_pre(loader *L, tok_pre p) {
    cv_tokenizer *t = L->tok;
    tok_pre *q = realloc(t->pres, (t->n_pres + 1) * sizeof *q);
    if (!q) return oom(L);
    t->pres = q;
    t->pres[t->n_pres++] = p;
    return CV_OK;
}

static cv_status parse_pre(loader *L, const cJSON *o, int depth) {
    if (!o || cJSON_IsNull(o)) return CV_OK;
    if (depth > 8 || !cJSON_IsObject(o))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: pre_tokenizer must be an object or null",
                       L->name);
    const char *type;
    cv_status st = need_str(L, o, "type", "pre_tokenizer", &type);
    if (st) return st;
    tok_pre p;
    memset(&p, 0, sizeof p);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return cv_fail(L->err, CV_ERR_FORMAT,
                           "%s: pre_tokenizer Sequence needs 'pretokenizers' array", L->name);
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            if ((st = parse_pre(L, it, depth + 1))) return st;
        }
        return CV_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        p.kind = PRE_BYTELEVEL;
        if ((st = get_bool(L, o, "add_prefix_space", "pre_tokenizer ByteLevel", 1,
                           &p.add_prefix_space)))
            return st;
        if ((st = get_bool(L, o, "use_regex", "pre_tokenizer ByteLevel", 1, &p.use_regex)))
            return st;
        return push_pre(L, p);
    }
    if (!strcmp(type, "Split")) {
        const char *s, *re, *beh;
        if ((st = parse_pattern(L, o, "pre_tokenizer Split", &s, &re))) return st;
        if ((st = get_str(L, o, "behavior", "pre_tokenizer Split", &beh))) return st;
        int invert;
        if ((st = get_bool(L, o, "invert", "pre_tokenizer Split", 0, &invert))) return st;
        if (re && !strcmp(re, GPT2_PATTERN))
            p.kind = PRE_SPLIT_GPT2;
        else if (re && !strcmp(re, LLAMA3_PATTERN))
            p.kind = PRE_SPLIT_LLAMA3;
        else
            return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                           "%s: pre_tokenizer Split pattern '%s' is not supported (only the GPT-2 "
                           "and Llama-3 regexes are)",
                           L->name, re ? re : s);
        if (invert || !beh || strcmp(beh, "Isolated") != 0)
            return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                           "%s: pre_tokenizer Split supports only behavior Isolated, invert false",
                           L->name);
        return push_pre(L, p);
    }
    if (!strcmp(type, "WhitespaceSplit")) {
        p.kind = PRE_WHITESPACESPLIT;
        return push_pre(L, p);
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep;
        p.kind = PRE_METASPACE;
        if ((st = need_str(L, o, "replacement", "pre_tokenizer Metaspace", &rep))) return st;
        p.replacement = first_cp(rep);
        if ((st = parse_scheme(L, o, "pre_tokenizer Metaspace", &p.scheme))) return st;
        if ((st = get_bool(L, o, "split", "pre_tokenizer Metaspace", 1, &p.split))) return st;
        return push_pre(L, p);
    }
    return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported",
                   L->name, type);
}

/* ---- decoder ------------------------------------------------------------------------------- */

static cv_status push_dec(loader *L, tok_dec d) {
    cv_tokenizer *t = L->tok;
    tok_dec *q = realloc(t->decs, (t->n_decs + 1) * sizeof *q);
    if (!q) {
        free(d.a);
        free(d.b);
        return oom(L);
    }
    t->decs = q;
    t->decs[t->n_decs++] = d;
    return CV_OK;
}

static cv_status parse_decoder(loader *L, const cJSON *o, int depth) {
    if (!o || cJSON_IsNull(o)) return CV_OK;
    if (depth > 8 || !cJSON_IsObject(o))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: decoder must be an object or null", L->name);
    L->tok->has_decoder = 1;
    const char *type;
    cv_status st = need_str(L, o, "type", "decoder", &type);
    if (st) return st;
    tok_dec d;
    memset(&d, 0, sizeof d);
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(arr))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: decoder Sequence needs 'decoders' array",
                           L->name);
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            if ((st = parse_decoder(L, it, depth + 1))) return st;
        }
        return CV_OK;
    }
    if (!strcmp(type, "ByteLevel"))
        d.kind = DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        d.kind = DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        d.kind = DEC_FUSE;
    else if (!strcmp(type, "Replace")) {
        const char *s, *re, *c;
        if ((st = parse_pattern(L, o, "decoder Replace", &s, &re))) return st;
        if (re)
            return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                           "%s: decoder Replace with a regex pattern is not supported", L->name);
        if ((st = need_str(L, o, "content", "decoder Replace", &c))) return st;
        if (!*s)
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: decoder Replace: empty pattern", L->name);
        d.kind = DEC_REPLACE;
        d.alen = strlen(s);
        d.blen = strlen(c);
        d.a = dup_n(s, d.alen);
        d.b = dup_n(c, d.blen);
        if (!d.a || !d.b) {
            free(d.a);
            free(d.b);
            return oom(L);
        }
    } else if (!strcmp(type, "Strip")) {
        const char *c;
        int64_t v;
        if ((st = need_str(L, o, "content", "decoder Strip", &c))) return st;
        d.kind = DEC_STRIP;
        d.replacement = first_cp(c);
        if (!json_int(cJSON_GetObjectItemCaseSensitive(o, "start"), 0, 1 << 20, &v))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: decoder Strip.start must be an integer",
                           L->name);
        d.start = (int)v;
        if (!json_int(cJSON_GetObjectItemCaseSensitive(o, "stop"), 0, 1 << 20, &v))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: decoder Strip.stop must be an integer",
                           L->name);
        d.stop = (int)v;
    } else if (!strcmp(type, "Metaspace")) {
        const char *rep;
        d.kind = DEC_METASPACE;
        if ((st = need_str(L, o, "replacement", "decoder Metaspace", &rep))) return st;
        d.replacement = first_cp(rep);
        if ((st = parse_scheme(L, o, "decoder Metaspace", &d.scheme))) return st;
    } else
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported",
                       L->name, type);
    return push_dec(L, d);
}

/* ---- post-processor ------------------------------------------------------------------------ */

static cv_status tmpl_push(loader *L, int32_t id) {
    cv_tokenizer *t = L->tok;
    int32_t *p = realloc(t->tmpl, (t->n_tmpl + 1) * sizeof *p);
    if (!p) return oom(L);
    t->tmpl = p;
    t->tmpl[t->n_tmpl++] = id;
    return CV_OK;
}

static cv_status parse_post(loader *L, const cJSON *o, int depth) {
    if (!o || cJSON_IsNull(o)) return CV_OK;
    if (depth > 8 || !cJSON_IsObject(o))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: post_processor must be an object or null",
                       L->name);
    const char *type;
    cv_status st = need_str(L, o, "type", "post_processor", &type);
    if (st) return st;
    if (!strcmp(type, "ByteLevel")) return CV_OK; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(arr))
            return cv_fail(L->err, CV_ERR_FORMAT,
                           "%s: post_processor Sequence needs 'processors' array", L->name);
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            if ((st = parse_post(L, it, depth + 1))) return st;
        }
        return CV_OK;
    }
    if (L->tok->n_tmpl)
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: more than one adding post_processor",
                       L->name);
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(o, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(o, "sep");
        int64_t c, s;
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) ||
            !json_int(cJSON_GetArrayItem(cls, 1), 0, TOK_MAX_ID - 1, &c) ||
            !json_int(cJSON_GetArrayItem(sep, 1), 0, TOK_MAX_ID - 1, &s))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: post_processor %s needs cls/sep [str, id]",
                           L->name, type);
        if ((st = tmpl_push(L, (int32_t)c)) || (st = tmpl_push(L, -1))) return st;
        return tmpl_push(L, (int32_t)s);
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported",
                       L->name, type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return cv_fail(L->err, CV_ERR_FORMAT,
                       "%s: post_processor TemplateProcessing needs a 'single' array", L->name);
    const cJSON *piece;
    cJSON_ArrayForEach(piece, single) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(piece, "Sequence");
        if (cJSON_IsObject(sq)) {
            if ((st = tmpl_push(L, -1))) return st;
            continue;
        }
        const char *name;
        if (!cJSON_IsObject(sp) || (st = need_str(L, sp, "id", "TemplateProcessing piece", &name)))
            return cv_fail(L->err, CV_ERR_FORMAT,
                           "%s: TemplateProcessing 'single' item must be SpecialToken or Sequence",
                           L->name);
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, name);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids))
            return cv_fail(
                L->err, CV_ERR_FORMAT,
                "%s: TemplateProcessing special token '%s' has no 'ids' in special_tokens", L->name,
                name);
        const cJSON *idv;
        cJSON_ArrayForEach(idv, ids) {
            int64_t v;
            if (!json_int(idv, 0, TOK_MAX_ID - 1, &v))
                return cv_fail(L->err, CV_ERR_FORMAT, "%s: special token '%s' has a bad id",
                               L->name, name);
            if ((st = tmpl_push(L, (int32_t)v))) return st;
        }
    }
    return CV_OK;
}

/* ---- model --------------------------------------------------------------------------------- */

/* id -> token table sized to cover every id; model tokens are filled first, added tokens later
 * override. */
static cv_status ensure_ids(loader *L, int32_t n) {
    cv_tokenizer *t = L->tok;
    if (n <= t->n_ids_total) return CV_OK;
    if (n > t->ids_cap) { /* grow geometrically: ids usually arrive in increasing order */
        int32_t cap = t->ids_cap ? t->ids_cap : 256;
        while (cap < n) cap *= 2;
        char **a = realloc(t->id_to_tok, (size_t)cap * sizeof *a);
        if (!a) return oom(L);
        t->id_to_tok = a;
        uint32_t *b = realloc(t->id_to_len, (size_t)cap * sizeof *b);
        if (!b) return oom(L);
        t->id_to_len = b;
        unsigned char *c = realloc(t->is_special, (size_t)cap);
        if (!c) return oom(L);
        t->is_special = c;
        t->ids_cap = cap;
    }
    for (int32_t i = t->n_ids_total; i < n; i++) {
        t->id_to_tok[i] = NULL;
        t->id_to_len[i] = 0;
        t->is_special[i] = 0;
    }
    t->n_ids_total = n;
    return CV_OK;
}

static cv_status set_token(loader *L, int32_t id, const char *s, size_t n) {
    cv_status st = ensure_ids(L, id + 1);
    if (st) return st;
    cv_tokenizer *t = L->tok;
    char *p = dup_n(s, n);
    if (!p) return oom(L);
    free(t->id_to_tok[id]);
    t->id_to_tok[id] = p;
    t->id_to_len[id] = (uint32_t)n;
    return CV_OK;
}

static cv_status add_vocab(loader *L, const char *s, size_t n, int64_t id) {
    if (!tok_strmap_put(&L->tok->vocab, s, n, (int32_t)id)) return oom(L);
    return set_token(L, (int32_t)id, s, n);
}

static cv_status add_merge(loader *L, const char *a, size_t al, const char *b, size_t bl,
                           int32_t rank) {
    cv_tokenizer *t = L->tok;
    int32_t ia, ib, inew;
    char small[256];
    char *cat = al + bl <= sizeof small ? small : malloc(al + bl);
    if (!cat) return oom(L);
    memcpy(cat, a, al);
    memcpy(cat + al, b, bl);
    int ok_a = tok_strmap_get(&t->vocab, a, al, &ia), ok_b = tok_strmap_get(&t->vocab, b, bl, &ib);
    int ok_n = tok_strmap_get(&t->vocab, cat, al + bl, &inew);
    if (cat != small) free(cat);
    if (!ok_a || !ok_b)
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: merge %d '%.*s %.*s' uses a token not in vocab",
                       L->name, rank, (int)al, a, (int)bl, b);
    if (!ok_n)
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: merge %d '%.*s %.*s': result not in vocab",
                       L->name, rank, (int)al, a, (int)bl, b);
    if (!tok_mergemap_put(&t->merges, ia, ib, rank, inew)) return oom(L);
    return CV_OK;
}

static cv_status parse_merge_line(loader *L, const char *line, size_t n, int32_t rank) {
    const char *sp = memchr(line, ' ', n);
    if (!sp || sp == line || sp + 1 == line + n)
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: merge %d '%.*s' is not 'a b'", L->name, rank,
                       (int)n, line);
    return add_merge(L, line, (size_t)(sp - line), sp + 1, (size_t)(line + n - sp - 1), rank);
}

static cv_status finish_model_tables(loader *L) {
    cv_tokenizer *t = L->tok;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id;
        t->byte_fallback_ids[b] = tok_strmap_get(&t->vocab, name, 6, &id) ? id : -1;
        tok_buf tb = {0};
        tok_buf_put_cp(&tb, t->byte_cp[b]);
        t->byte_ids[b] = (!tb.oom && tok_strmap_get(&t->vocab, tb.p, tb.n, &id)) ? id : -1;
        free(tb.p);
    }
    t->model_vocab_size = (int32_t)t->vocab.count;
    return CV_OK;
}

static cv_status parse_bpe(loader *L, const cJSON *m) {
    cv_tokenizer *t = L->tok;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsObject(vocab))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.vocab must be an object (BPE)", L->name);
    if (merges && !cJSON_IsArray(merges))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.merges must be an array", L->name);
    const char *s;
    cv_status st;
    double dropout = 0;
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dv)) dropout = dv->valuedouble;
    if (dropout > 0)
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", L->name);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        if ((st = get_str(L, m, keys[k], "model", &s))) return st;
        if (s && *s)
            return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: BPE %s is not supported", L->name,
                           keys[k]);
    }
    if ((st = get_bool(L, m, "fuse_unk", "model", 0, &t->fuse_unk))) return st;
    if ((st = get_bool(L, m, "byte_fallback", "model", 0, &t->byte_fallback))) return st;
    if ((st = get_bool(L, m, "ignore_merges", "model", 0, &t->ignore_merges))) return st;
    if (!tok_strmap_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab))) return oom(L);
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int64_t id;
        if (!json_int(it, 0, TOK_MAX_ID - 1, &id))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.vocab['%s'] must be a non-negative id",
                           L->name, it->string);
        if ((st = add_vocab(L, it->string, strlen(it->string), id))) return st;
    }
    const char *unk;
    if ((st = get_str(L, m, "unk_token", "model", &unk))) return st;
    t->unk_id = -1;
    if (unk && !tok_strmap_get(&t->vocab, unk, strlen(unk), &t->unk_id))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.unk_token '%s' is not in vocab", L->name,
                       unk);
    int32_t rank = 0;
    if (!tok_mergemap_init(&t->merges, merges ? (size_t)cJSON_GetArraySize(merges) : 16))
        return oom(L);
    cJSON_ArrayForEach(it, merges) {
        if (cJSON_IsString(it)) {
            st = parse_merge_line(L, it->valuestring, strlen(it->valuestring), rank);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            const char *a = cJSON_GetArrayItem(it, 0)->valuestring;
            const char *b = cJSON_GetArrayItem(it, 1)->valuestring;
            st = add_merge(L, a, strlen(a), b, strlen(b), rank);
        } else {
            st = cv_fail(L->err, CV_ERR_FORMAT,
                         "%s: model.merges[%d] must be \"a b\" or [\"a\", \"b\"]", L->name, rank);
        }
        if (st) return st;
        rank++;
    }
    t->model = MODEL_BPE;
    return finish_model_tables(L);
}

static cv_status parse_unigram(loader *L, const cJSON *m) {
    cv_tokenizer *t = L->tok;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsArray(vocab))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.vocab must be an array (Unigram)",
                       L->name);
    int bf;
    cv_status st = get_bool(L, m, "byte_fallback", "model", 0, &bf);
    if (st) return st;
    if (bf)
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: Unigram byte_fallback is not supported",
                       L->name);
    int n = cJSON_GetArraySize(vocab);
    if (n == 0) return cv_fail(L->err, CV_ERR_FORMAT, "%s: Unigram vocab is empty", L->name);
    if (!tok_strmap_init(&t->vocab, (size_t)n)) return oom(L);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    if (!t->scores) return oom(L);
    double min_score = INFINITY;
    int32_t id = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        const cJSON *p = cJSON_GetArrayItem(it, 0), *sc = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || !cJSON_IsString(p) || !cJSON_IsNumber(sc))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.vocab[%d] must be [piece, score]",
                           L->name, id);
        size_t len = strlen(p->valuestring);
        /* HF's token -> id map keeps the last id of a duplicated piece */
        if (!tok_strmap_put(&t->vocab, p->valuestring, len, id)) return oom(L);
        if ((st = set_token(L, id, p->valuestring, len))) return st;
        t->scores[id] = sc->valuedouble;
        if (sc->valuedouble < min_score) min_score = sc->valuedouble;
        if (len > t->max_piece_len) t->max_piece_len = len;
        id++;
    }
    int64_t unk = -1;
    const cJSON *uv = cJSON_GetObjectItemCaseSensitive(m, "unk_id");
    if (uv && !cJSON_IsNull(uv) && !json_int(uv, 0, n - 1, &unk))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: model.unk_id must be an id below %d", L->name,
                       n);
    if (unk < 0)
        return cv_fail(L->err, CV_ERR_UNSUPPORTED, "%s: Unigram without unk_id is not supported",
                       L->name);
    t->unk_id = (int32_t)unk;
    t->unk_score = min_score - 10.0;
    t->fuse_unk = 1;
    t->model = MODEL_UNIGRAM;
    t->model_vocab_size = n;
    return CV_OK;
}

/* ---- added tokens -------------------------------------------------------------------------- */

static cv_status add_added(loader *L, const char *content, int32_t id, int special, int lstrip,
                           int rstrip, int single_word, int normalized) {
    cv_tokenizer *t = L->tok;
    /* a token re-declared with the same content replaces the earlier declaration */
    tok_added *a = NULL;
    for (size_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, content)) a = &t->added[i];
    if (!a) {
        tok_added *p = realloc(t->added, (t->n_added + 1) * sizeof *p);
        if (!p) return oom(L);
        t->added = p;
        a = &t->added[t->n_added++];
        memset(a, 0, sizeof *a);
        a->len = strlen(content);
        if (!(a->content = dup_n(content, a->len))) return oom(L);
    }
    a->id = id;
    a->special = special;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->single_word = single_word;
    a->normalized = normalized;
    cv_status st = set_token(L, id, content, a->len);
    if (st) return st;
    t->is_special[id] = (unsigned char)special;
    return CV_OK;
}

static cv_status parse_added(loader *L, const cJSON *arr) {
    if (!arr || cJSON_IsNull(arr)) return CV_OK;
    if (!cJSON_IsArray(arr))
        return cv_fail(L->err, CV_ERR_FORMAT, "%s: added_tokens must be an array", L->name);
    int idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "added_tokens[%d]", idx++);
        int64_t id;
        const char *content;
        cv_status st;
        if (!cJSON_IsObject(it))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s must be an object", L->name, ctx);
        if (!json_int(cJSON_GetObjectItemCaseSensitive(it, "id"), 0, TOK_MAX_ID - 1, &id))
            return cv_fail(L->err, CV_ERR_FORMAT, "%s: %s.id must be a non-negative integer",
                           L->name, ctx);
        if ((st = need_str(L, it, "content", ctx, &content))) return st;
        int special, lstrip, rstrip, single_word, normalized;
        if ((st = get_bool(L, it, "special", ctx, 0, &special)) ||
            (st = get_bool(L, it, "lstrip", ctx, 0, &lstrip)) ||
            (st = get_bool(L, it, "rstrip", ctx, 0, &rstrip)) ||
            (st = get_bool(L, it, "single_word", ctx, 0, &single_word)) ||
            (st = get_bool(L, it, "normalized", ctx, !special, &normalized)))
            return st;
        if ((st = add_added(L, content, (int32_t)id, special, lstrip, rstrip, single_word,
                            normalized)))
            return st;
    }
    return CV_OK;
}

/* Normalized patterns and the first-byte index, once the normalizer is known. Can run again
 * after the pipeline changes (transformers' Llama class, apply_config). */
static cv_status index_added(loader *L) {
    cv_tokenizer *t = L->tok;
    size_t counts[256] = {0};
    for (int b = 0; b < 256; b++) {
        free(t->added_by_byte[b]);
        t->added_by_byte[b] = NULL;
        t->added_by_byte_n[b] = 0;
    }
    t->have_norm_added = t->have_raw_added = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].norm_content);
        t->added[i].norm_content = NULL;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (a->normalized) {
            a->norm_content = tok_normalize(t, a->content, a->len, &a->norm_len);
            if (!a->norm_content) return oom(L);
            t->have_norm_added = 1;
            /* HF's id -> token (and so decode) gives the normalized form of such a token */
            cv_status st = set_token(L, a->id, a->norm_content, a->norm_len);
            if (st) return st;
        } else {
            t->have_raw_added = 1;
        }
        const char *pat = a->normalized ? a->norm_content : a->content;
        size_t plen = a->normalized ? a->norm_len : a->len;
        if (plen) counts[(unsigned char)pat[0]]++;
    }
    for (int b = 0; b < 256; b++) {
        if (!counts[b]) continue;
        t->added_by_byte[b] = malloc(counts[b] * sizeof(int32_t));
        if (!t->added_by_byte[b]) return oom(L);
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        const char *pat = a->normalized ? a->norm_content : a->content;
        size_t plen = a->normalized ? a->norm_len : a->len;
        if (!plen) continue;
        unsigned char b = (unsigned char)pat[0];
        t->added_by_byte[b][t->added_by_byte_n[b]++] = (int32_t)i;
    }
    return CV_OK;
}

/* ---- specials ------------------------------------------------------------------------------ */

static int32_t lookup_token(const cv_tokenizer *t, const char *s) {
    for (size_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return t->added[i].id;
    int32_t id;
    if (t->vocab.cap && tok_strmap_get(&t->vocab, s, strlen(s), &id)) return id;
    return -1;
}

static int32_t first_known(const cv_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int32_t id = lookup_token(t, *names);
        if (id >= 0) return id;
    }
    return -1;
}

/* Defaults when tokenizer_config.json does not name them: the post-processor's tokens around
 * $A, else the usual spellings. */
static void default_specials(cv_tokenizer *t) {
    static const char *const bos[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>", NULL};
    static const char *const eos[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", NULL};
    static const char *const pad[] = {"<pad>", "[PAD]", NULL};
    t->bos_id = t->eos_id = -1;
    size_t a = 0;
    while (a < t->n_tmpl && t->tmpl[a] != -1) a++;
    if (a > 0 && a < t->n_tmpl) t->bos_id = t->tmpl[0];
    if (a + 1 < t->n_tmpl) t->eos_id = t->tmpl[t->n_tmpl - 1];
    if (t->bos_id < 0) t->bos_id = first_known(t, bos);
    if (t->eos_id < 0) t->eos_id = first_known(t, eos);
    t->pad_id = first_known(t, pad);
}

/* ---- top level ----------------------------------------------------------------------------- */

static cv_tokenizer *tok_new(void) {
    cv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    for (int b = 0; b < 256; b++) t->byte_cp[b] = tok_byte_to_cp((unsigned char)b);
    for (size_t c = 0; c < sizeof t->cp_byte / sizeof t->cp_byte[0]; c++)
        t->cp_byte[c] = (int16_t)tok_cp_to_byte((uint32_t)c);
    return t;
}

/* Byte-level mapping must be the last pre-tokenizer step (it changes the alphabet). */
static cv_status check_pipeline(loader *L) {
    cv_tokenizer *t = L->tok;
    for (size_t i = 0; i < t->n_pres; i++) {
        if (t->pres[i].kind != PRE_BYTELEVEL) continue;
        if (i + 1 != t->n_pres)
            return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                           "%s: ByteLevel must be the last pre-tokenizer step", L->name);
        if (t->model != MODEL_BPE)
            return cv_fail(L->err, CV_ERR_UNSUPPORTED,
                           "%s: ByteLevel pre-tokenizer needs a BPE model", L->name);
        t->byte_level = 1;
    }
    return CV_OK;
}

cv_status cv_tokenizer_load_json_text(const char *json, size_t len, const char *name,
                                      cv_tokenizer **out, cv_error *err) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= json && at <= json + len) ? (size_t)(at - json) : len;
        return cv_fail(err, CV_ERR_FORMAT, "%s: invalid JSON near byte %zu", name, off);
    }
    cv_tokenizer *t = tok_new();
    if (!t) {
        cJSON_Delete(root);
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", name);
    }
    loader L = {t, name, err};
    cv_status st = CV_OK;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(root)) {
        st = cv_fail(err, CV_ERR_FORMAT, "%s: top level must be a JSON object", name);
    } else if (!cJSON_IsObject(model)) {
        st = cv_fail(err, CV_ERR_FORMAT, "%s: missing 'model' object", name);
    } else {
        const char *type;
        st = get_str(&L, model, "type", "model", &type);
        if (!st && !type) /* old files omit the type: infer it from the vocab's shape */
            type =
                cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(model, "vocab")) ? "Unigram" : "BPE";
        if (st) {
        } else if (!strcmp(type, "BPE")) {
            st = parse_bpe(&L, model);
        } else if (!strcmp(type, "Unigram")) {
            st = parse_unigram(&L, model);
        } else {
            st = cv_fail(err, CV_ERR_UNSUPPORTED, "%s: model type '%s' is not supported", name,
                         type);
        }
    }
    if (!st) st = parse_normalizer(&L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), 0);
    if (!st) st = parse_pre(&L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), 0);
    if (!st) st = parse_decoder(&L, cJSON_GetObjectItemCaseSensitive(root, "decoder"), 0);
    if (!st) st = parse_post(&L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), 0);
    if (!st) st = parse_added(&L, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    if (!st) st = check_pipeline(&L);
    if (!st) st = index_added(&L);
    cJSON_Delete(root);
    if (st) {
        cv_tokenizer_free(t);
        return st;
    }
    default_specials(t);
    *out = t;
    return CV_OK;
}

cv_status cv_tokenizer_load_json(const char *path, cv_tokenizer **out, cv_error *err) {
    char *text;
    size_t len;
    *out = NULL;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st) return st;
    st = cv_tokenizer_load_json_text(text, len, path, out, err);
    free(text);
    return st;
}

cv_status cv_tokenizer_load_vocab_merges(const char *vocab_path, const char *merges_path,
                                         cv_tokenizer **out, cv_error *err) {
    *out = NULL;
    char *vtext = NULL, *mtext = NULL;
    size_t vlen, mlen;
    cv_status st = cv_read_file(vocab_path, &vtext, &vlen, err);
    if (st) return st;
    if ((st = cv_read_file(merges_path, &mtext, &mlen, err))) {
        free(vtext);
        return st;
    }
    cJSON *vocab = cJSON_ParseWithLength(vtext, vlen);
    cv_tokenizer *t = tok_new();
    loader L = {t, vocab_path, err};
    if (!t) {
        st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", vocab_path);
    } else if (!cJSON_IsObject(vocab)) {
        st = cv_fail(err, CV_ERR_FORMAT, "%s: not a JSON object of token -> id", vocab_path);
    } else {
        /* What transformers' GPT-2 converter builds: ByteLevel BPE, <|endoftext|> special. */
        cJSON *model = cJSON_CreateObject();
        if (!model) {
            st = oom(&L);
        } else {
            cJSON_AddItemReferenceToObject(model, "vocab", vocab);
            st = parse_bpe(&L, model);
            cJSON_Delete(model);
        }
        L.name = merges_path;
        int32_t rank = 0;
        size_t i = 0;
        while (!st && i < mlen) {
            size_t e = i;
            while (e < mlen && mtext[e] != '\n') e++;
            size_t le = e;
            if (le > i && mtext[le - 1] == '\r') le--;
            if (le > i && !(rank == 0 && i == 0 && !strncmp(mtext, "#version", 8))) {
                st = parse_merge_line(&L, mtext + i, le - i, rank);
                rank++;
            }
            i = e + 1;
        }
        tok_pre p = {.kind = PRE_BYTELEVEL, .use_regex = 1};
        tok_dec d = {.kind = DEC_BYTELEVEL};
        if (!st) st = push_pre(&L, p);
        if (!st) st = push_dec(&L, d);
        if (!st) t->has_decoder = 1;
        if (!st && lookup_token(t, "<|endoftext|>") >= 0)
            st = add_added(&L, "<|endoftext|>", lookup_token(t, "<|endoftext|>"), 1, 0, 0, 0, 0);
        if (!st) st = check_pipeline(&L);
        if (!st) st = index_added(&L);
    }
    cJSON_Delete(vocab);
    free(vtext);
    free(mtext);
    if (st) {
        cv_tokenizer_free(t);
        return st;
    }
    default_specials(t);
    *out = t;
    return CV_OK;
}

/* A special-token entry of tokenizer_config.json: "str" or {"content": "str", ...}. */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* Read an optional JSON object file; *out stays NULL when the file does not exist. */
static cv_status read_json_object(const char *path, cJSON **out, cv_error *err) {
    *out = NULL;
    if (!cv_is_file(path)) return CV_OK;
    char *text;
    size_t len;
    cv_status st = cv_read_file(path, &text, &len, err);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return CV_OK;
}

/* transformers 5 (the version the Python reference was validated with) does not run a Llama
 * tokenizer.json's normalizer: LlamaTokenizer rebuilds the pipeline from its class definition,
 * keeping only the file's vocab, merges and post-processor:
 *   no normalizer; pre_tokenizer Metaspace("▁", prepend_scheme, split=false) where
 *   prepend_scheme = add_prefix_space (default true) ? (legacy (default false) ? always : first)
 *   : never; decoder Replace("▁", " "), ByteFallback, Fuse, [Strip(" ", 1, 0) if add_prefix_space].
 * This differs from the file's Prepend+Replace normalizer only where a text segment starts with a
 * space (" Hello": file "▁▁Hello", transformers 5 "▁Hello") or, with legacy false, after a
 * special token. transformers 4.x used the file as is (cv_tokenizer_load_json). */
static cv_status llama_class_pipeline(cv_tokenizer *t, const cJSON *cfg, const char *path,
                                      cv_error *err) {
    if (t->model != MODEL_BPE) return CV_OK;
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(cfg, "legacy");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(cfg, "add_prefix_space");
    int legacy = cJSON_IsBool(lg) && cJSON_IsTrue(lg);
    int add_prefix = !cJSON_IsBool(ap) || cJSON_IsTrue(ap);
    tok_pre *pre = malloc(sizeof *pre);
    tok_dec *decs = calloc(4, sizeof *decs);
    char *rep_a = malloc(4), *rep_b = malloc(2);
    if (!pre || !decs || !rep_a || !rep_b) {
        free(pre);
        free(decs);
        free(rep_a);
        free(rep_b);
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
        free(t->norms[i].units);
    }
    free(t->norms);
    t->norms = NULL;
    t->n_norms = 0;
    memset(pre, 0, sizeof *pre);
    pre->kind = PRE_METASPACE;
    pre->replacement = 0x2581;
    pre->scheme = add_prefix ? (legacy ? PREPEND_ALWAYS : PREPEND_FIRST) : PREPEND_NEVER;
    pre->split = 0;
    free(t->pres);
    t->pres = pre;
    t->n_pres = 1;
    t->byte_level = 0;
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].a);
        free(t->decs[i].b);
    }
    free(t->decs);
    memcpy(rep_a, "\xE2\x96\x81", 4);
    memcpy(rep_b, " ", 2);
    decs[0] = (tok_dec){.kind = DEC_REPLACE, .a = rep_a, .alen = 3, .b = rep_b, .blen = 1};
    decs[1].kind = DEC_BYTEFALLBACK;
    decs[2].kind = DEC_FUSE;
    decs[3] = (tok_dec){.kind = DEC_STRIP, .replacement = ' ', .start = 1, .stop = 0};
    t->decs = decs;
    t->n_decs = add_prefix ? 4 : 3;
    t->has_decoder = 1;
    /* the class builds BPE(vocab, merges, fuse_unk, byte_fallback) without an unk token */
    t->unk_id = -1;
    t->fuse_unk = 1;
    t->byte_fallback = 1;
    t->ignore_merges = 0;
    loader L = {t, path, err};
    return index_added(&L);
}

/* tokenizer_config.json, then special_tokens_map.json (which wins, as in transformers'
 * from_pretrained): special-token names, clean-up default, Llama add_bos/add_eos template. */
static cv_status apply_config(cv_tokenizer *t, const char *dir, cv_error *err) {
    char cfg_path[4096], map_path[4096];
    cJSON *cfg = NULL, *map = NULL;
    cv_status st = cv_path_join(cfg_path, sizeof cfg_path, dir, "tokenizer_config.json", err);
    if (!st) st = cv_path_join(map_path, sizeof map_path, dir, "special_tokens_map.json", err);
    if (!st) st = read_json_object(cfg_path, &cfg, err);
    if (!st) st = read_json_object(map_path, &map, err);
    if (st) {
        cJSON_Delete(cfg);
        return st;
    }
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(cfg, "clean_up_tokenization_spaces");
    if (cJSON_IsBool(cu)) t->clean_up_default = cJSON_IsTrue(cu);
    static const char *const keys[3] = {"bos_token", "eos_token", "pad_token"};
    int32_t *ids[3] = {&t->bos_id, &t->eos_id, &t->pad_id};
    for (int k = 0; k < 3; k++) {
        const char *name = config_token(map, keys[k]);
        if (!name) name = config_token(cfg, keys[k]);
        if (name && lookup_token(t, name) >= 0) *ids[k] = lookup_token(t, name);
    }
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
    if (!st && cJSON_IsString(cls) &&
        (!strcmp(cls->valuestring, "LlamaTokenizer") ||
         !strcmp(cls->valuestring, "LlamaTokenizerFast")))
        st = llama_class_pipeline(t, cfg, cfg_path, err);
    /* transformers' Llama tokenizers rebuild the post-processor from add_bos/add_eos_token */
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if (cJSON_IsString(cls) && strstr(cls->valuestring, "LlamaTokenizer") &&
        (cJSON_IsBool(ab) || cJSON_IsBool(ae))) {
        int add_bos = cJSON_IsBool(ab) ? cJSON_IsTrue(ab) : 1;
        int add_eos = cJSON_IsBool(ae) ? cJSON_IsTrue(ae) : 0;
        int32_t *tm = malloc(3 * sizeof *tm);
        if (!tm) {
            st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", cfg_path);
        } else {
            size_t n = 0;
            if (add_bos && t->bos_id >= 0) tm[n++] = t->bos_id;
            tm[n++] = -1;
            if (add_eos && t->eos_id >= 0) tm[n++] = t->eos_id;
            free(t->tmpl);
            t->tmpl = tm;
            t->n_tmpl = n;
        }
    }
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return st;
}

cv_status cv_tokenizer_load_dir(const char *dir, cv_tokenizer **out, cv_error *err) {
    char p1[4096], p2[4096];
    cv_status st;
    *out = NULL;
    if ((st = cv_path_join(p1, sizeof p1, dir, "tokenizer.json", err))) return st;
    if (cv_is_file(p1)) {
        st = cv_tokenizer_load_json(p1, out, err);
    } else {
        if ((st = cv_path_join(p1, sizeof p1, dir, "vocab.json", err))) return st;
        if ((st = cv_path_join(p2, sizeof p2, dir, "merges.txt", err))) return st;
        if (!cv_is_file(p1) || !cv_is_file(p2))
            return cv_fail(err, CV_ERR_IO,
                           "%s: no tokenizer.json (or vocab.json + merges.txt) in this directory",
                           dir);
        st = cv_tokenizer_load_vocab_merges(p1, p2, out, err);
    }
    if (st) return st;
    st = apply_config(*out, dir, err);
    if (st) {
        cv_tokenizer_free(*out);
        *out = NULL;
    }
    return st;
}

void cv_tokenizer_free(cv_tokenizer *t) {
    if (!t) return;
    tok_strmap_free(&t->vocab);
    tok_mergemap_free(&t->merges);
    for (int32_t i = 0; i < t->n_ids_total; i++) free(t->id_to_tok[i]);
    free(t->id_to_tok);
    free(t->id_to_len);
    free(t->is_special);
    free(t->scores);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
        free(t->norms[i].units);
    }
    free(t->norms);
    free(t->pres);
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].a);
        free(t->decs[i].b);
    }
    free(t->decs);
    free(t->tmpl);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm_content);
    }
    free(t->added);
    for (int b = 0; b < 256; b++) free(t->added_by_byte[b]);
    free(t);
}

int32_t cv_tokenizer_vocab_size(const cv_tokenizer *t) {
    return t->n_ids_total;
}
int32_t cv_tokenizer_bos_id(const cv_tokenizer *t) {
    return t->bos_id;
}
int32_t cv_tokenizer_eos_id(const cv_tokenizer *t) {
    return t->eos_id;
}
int32_t cv_tokenizer_pad_id(const cv_tokenizer *t) {
    return t->pad_id;
}
int cv_tokenizer_clean_up_default(const cv_tokenizer *t) {
    return t->clean_up_default;
}

int cv_tokenizer_is_special(const cv_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids_total && t->is_special[id];
}

const char *cv_tokenizer_id_to_token(const cv_tokenizer *t, int32_t id) {
    return (id >= 0 && id < t->n_ids_total) ? t->id_to_tok[id] : NULL;
}

int32_t cv_tokenizer_token_to_id(const cv_tokenizer *t, const char *token) {
    return lookup_token(t, token);
}
