/* test_tokenizer.c — parity of the C tokenizers with Hugging Face `tokenizers`, plus error
 * handling for malformed tokenizer files.
 *
 * Reference ids come from tests/ref/gen_tokenizer_refs.py (tests/fixtures/tokenizers/NAME.jsonl):
 * for every corpus string, encode with and without special tokens, decode, and decode with
 * skip_special_tokens + clean-up must match byte for byte; a sample of single-id decodes too.
 * The real GPT-2 / Llama-2 / Llama-3 files come from tests/data/tokenizers (see tu_tok). */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corevital/common.h"
#include "corevital/tokenizer.h"

#include "testutil.h"
#ifndef FIXTURE /* overridable to check refs generated elsewhere */
#define FIXTURE "tests/fixtures/tokenizers/"
#endif

/* ---- helpers ------------------------------------------------------------------------------- */

static int b64val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static char *b64decode(const char *s, size_t *out_len) {
    size_t n = strlen(s);
    char *out = malloc(n * 3 / 4 + 4);
    ck_assert_ptr_nonnull(out);
    size_t k = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64val(s[i]);
        ck_assert_int_ge(v, 0);
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (char)((acc >> bits) & 0xFF);
        }
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

/* The string stored under key, or key+"b" in base64; NULL when neither is present. */
static char *get_text(const cJSON *rec, const char *key, size_t *len) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (cJSON_IsString(v)) {
        *len = strlen(v->valuestring);
        char *s = malloc(*len + 1);
        ck_assert_ptr_nonnull(s);
        memcpy(s, v->valuestring, *len + 1);
        return s;
    }
    char bkey[16];
    snprintf(bkey, sizeof bkey, "%sb", key);
    v = cJSON_GetObjectItemCaseSensitive(rec, bkey);
    if (cJSON_IsString(v)) return b64decode(v->valuestring, len);
    return NULL;
}

static int32_t *get_ids(const cJSON *arr, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) ids[k++] = (int32_t)it->valueint;
    return ids;
}

/* Python's bytes.decode("utf-8", errors="replace"), written independently of the library:
 * a maximal prefix of a well-formed sequence becomes one U+FFFD. */
static char *py_replace(const char *s, size_t n, size_t *out_len) {
    char *o = malloc(n * 3 + 1);
    ck_assert_ptr_nonnull(o);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned c = u[i];
        int need = c < 0x80                   ? 0
                   : (c >= 0xC2 && c <= 0xDF) ? 1
                   : (c >= 0xE0 && c <= 0xEF) ? 2
                   : (c >= 0xF0 && c <= 0xF4) ? 3
                                              : -1;
        size_t j = i + 1;
        int ok = need >= 0;
        for (int t = 0; ok && t < need; t++, j++) {
            unsigned lo = 0x80, hi = 0xBF;
            if (t == 0 && c == 0xE0) lo = 0xA0;
            if (t == 0 && c == 0xED) hi = 0x9F;
            if (t == 0 && c == 0xF0) lo = 0x90;
            if (t == 0 && c == 0xF4) hi = 0x8F;
            if (j >= n || u[j] < lo || u[j] > hi) ok = 0;
        }
        if (ok) {
            memcpy(o + k, s + i, j - i);
            k += j - i;
            i = j;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i = (need < 0 || j - 1 <= i) ? i + 1 : j - 1;
        }
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

static void show(const char *what, const char *s, size_t n) {
    fprintf(stderr, "  %s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s\"\n", n > 200 ? "..." : "");
}

static int ids_equal(const char *tag, int line, const char *text, size_t tlen, const int32_t *want,
                     size_t nw, const int32_t *got, size_t ng) {
    size_t i = 0;
    while (i < nw && i < ng && want[i] == got[i]) i++;
    if (i == nw && i == ng) return 1;
    fprintf(stderr, "%s line %d: ids differ at position %zu (want %zu ids, got %zu)\n", tag, line,
            i, nw, ng);
    show("text", text, tlen);
    fprintf(stderr, "  want:");
    for (size_t k = i > 3 ? i - 3 : 0; k < nw && k < i + 6; k++) fprintf(stderr, " %d", want[k]);
    fprintf(stderr, "\n  got: ");
    for (size_t k = i > 3 ? i - 3 : 0; k < ng && k < i + 6; k++) fprintf(stderr, " %d", got[k]);
    fprintf(stderr, "\n");
    return 0;
}

static int str_equal(const char *tag, int line, const char *what, const char *text, size_t tlen,
                     const char *want, size_t wl, const char *got, size_t gl) {
    if (wl == gl && memcmp(want, got, wl) == 0) return 1;
    size_t i = 0;
    while (i < wl && i < gl && want[i] == got[i]) i++;
    fprintf(stderr, "%s line %d: %s differs at byte %zu\n", tag, line, what, i);
    show("text", text, tlen);
    show("want", want, wl);
    show("got ", got, gl);
    return 0;
}

/* Runs every record of a reference file against tok; returns the number of failures. */
/* tf: compare encode against the transformers-5 ids ("ti"/"tn", falling back to "i"/"n"). */
static int check_refs(const cv_tokenizer *tok, const char *ref_path, int tf, int *n_records) {
    char *all;
    size_t len;
    cv_error err = {0};
    ck_assert_msg(cv_read_file(ref_path, &all, &len, &err) == CV_OK, "%s", err.msg);
    int fails = 0, line = 0, singles = 0;
    *n_records = 0;
    char *save = NULL;
    for (char *ln = strtok_r(all, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line++;
        cJSON *rec = cJSON_Parse(ln);
        ck_assert_msg(rec != NULL, "%s line %d: bad JSON", ref_path, line);
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(rec, "single");
        if (single) {
            const cJSON *it;
            cJSON_ArrayForEach(it, single) {
                int32_t id = (int32_t)cJSON_GetArrayItem(it, 0)->valueint;
                const cJSON *want = cJSON_GetArrayItem(it, 1);
                if (!cJSON_IsString(want)) continue; /* contains NUL: covered by "db" records */
                size_t gl;
                char *got = cv_tokenizer_decode_len(tok, &id, 1, 0, 0, &gl);
                ck_assert_ptr_nonnull(got);
                char tag[64];
                snprintf(tag, sizeof tag, "decode([%d])", id);
                if (!str_equal(ref_path, line, tag, "", 0, want->valuestring,
                               strlen(want->valuestring), got, gl))
                    fails++;
                free(got);
                singles++;
            }
            cJSON_Delete(rec);
            continue;
        }
        (*n_records)++;
        size_t tlen;
        char *text = get_text(rec, "t", &tlen); /* "t": literal, "tb": never written */
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(rec, "b");
        if (!text && cJSON_IsString(raw)) text = b64decode(raw->valuestring, &tlen);
        ck_assert_ptr_nonnull(text);
        size_t nw, nn, ntw, ntn;
        const cJSON *ia = cJSON_GetObjectItemCaseSensitive(rec, "i");
        const cJSON *na = cJSON_GetObjectItemCaseSensitive(rec, "n");
        if (!na) na = ia;
        int32_t *want = get_ids(ia, &nw);
        int32_t *want_ns = get_ids(na, &nn);
        const cJSON *tia = tf ? cJSON_GetObjectItemCaseSensitive(rec, "ti") : NULL;
        const cJSON *tna = tf ? cJSON_GetObjectItemCaseSensitive(rec, "tn") : NULL;
        int32_t *want_enc = get_ids(tia ? tia : ia, &ntw);
        int32_t *want_enc_ns = get_ids(tna ? tna : na, &ntn);
        int32_t *got = NULL, *got_ns = NULL;
        size_t ng = 0, ngs = 0;
        ck_assert_msg(cv_tokenizer_encode(tok, text, tlen, 1, &got, &ng, &err) == CV_OK, "%s",
                      err.msg);
        ck_assert_msg(cv_tokenizer_encode(tok, text, tlen, 0, &got_ns, &ngs, &err) == CV_OK, "%s",
                      err.msg);
        int ok = ids_equal(ref_path, line, text, tlen, want_enc, ntw, got, ng);
        ok &= ids_equal(ref_path, line, text, tlen, want_enc_ns, ntn, got_ns, ngs);
        /* decode(n) vs "d" (default: the text after U+FFFD replacement) */
        size_t dl, sl, gdl, gsl;
        char *d = get_text(rec, "d", &dl);
        if (!d) d = py_replace(text, tlen, &dl);
        char *s = get_text(rec, "s", &sl);
        if (!s) {
            s = malloc(dl + 1);
            ck_assert_ptr_nonnull(s);
            memcpy(s, d, dl + 1);
            sl = dl;
        }
        char *gd = cv_tokenizer_decode_len(tok, want_ns, nn, 0, 0, &gdl);
        char *gs = cv_tokenizer_decode_len(tok, want, nw, 1, 1, &gsl);
        ck_assert_ptr_nonnull(gd);
        ck_assert_ptr_nonnull(gs);
        ok &= str_equal(ref_path, line, "decode(ids)", text, tlen, d, dl, gd, gdl);
        ok &= str_equal(ref_path, line, "decode(ids, skip_special, clean_up)", text, tlen, s, sl,
                        gs, gsl);
        if (!ok) fails++;
        free(text);
        free(want);
        free(want_ns);
        free(want_enc);
        free(want_enc_ns);
        free(got);
        free(got_ns);
        free(d);
        free(s);
        free(gd);
        free(gs);
        cJSON_Delete(rec);
    }
    ck_assert_int_gt(singles, 100);
    free(all);
    return fails;
}

static cv_tokenizer *load_dir_ok(const char *dir) {
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    cv_status st = cv_tokenizer_load_dir(dir, &tok, &err);
    ck_assert_msg(st == CV_OK, "load %s: %s (did make unpack tests/data/tokenizers?)", dir,
                  err.msg);
    return tok;
}

static void run_parity(cv_tokenizer *tok, const char *ref, int tf, int min_records) {
    int n = 0;
    int fails = check_refs(tok, ref, tf, &n);
    ck_assert_int_ge(n, min_records);
    ck_assert_msg(fails == 0, "%s: %d of %d records differ from Hugging Face (first shown above)",
                  ref, fails, n);
}

/* ---- parity -------------------------------------------------------------------------------- */

START_TEST(parity_gpt2) {
    cv_tokenizer *tok = load_dir_ok(tu_tok("gpt2"));
    run_parity(tok, FIXTURE "gpt2.jsonl", 0, 500);
    cv_tokenizer_free(tok);
}
END_TEST

/* tokenizer.json semantics (HF tokenizers, transformers 4.x): Prepend + Replace normalizer */
START_TEST(parity_llama2) {
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    ck_assert_msg(cv_tokenizer_load_json(tu_tok("llama2/tokenizer.json"), &tok, &err) == CV_OK,
                  "%s", err.msg);
    run_parity(tok, FIXTURE "llama2.jsonl", 0, 500);
    cv_tokenizer_free(tok);
}
END_TEST

/* model directory semantics: transformers 5's LlamaTokenizer pipeline (Metaspace, legacy) */
START_TEST(parity_llama2_transformers) {
    cv_tokenizer *tok = load_dir_ok(tu_tok("llama2"));
    run_parity(tok, FIXTURE "llama2.jsonl", 1, 500);
    cv_tokenizer_free(tok);
}
END_TEST

START_TEST(parity_llama3) {
    cv_tokenizer *tok = load_dir_ok(tu_tok("llama3"));
    run_parity(tok, FIXTURE "llama3.jsonl", 0, 500);
    cv_tokenizer_free(tok);
}
END_TEST

START_TEST(parity_unigram) {
    cv_tokenizer *tok = load_dir_ok(FIXTURE "unigram");
    run_parity(tok, FIXTURE "unigram.jsonl", 0, 500);
    cv_tokenizer_free(tok);
}
END_TEST

/* T5-style SentencePiece normalizer (Precompiled charsmap compiled from custom rules) */
START_TEST(parity_unigram_precompiled) {
    cv_tokenizer *tok = load_dir_ok(FIXTURE "unigram-precompiled");
    run_parity(tok, FIXTURE "unigram-precompiled.jsonl", 0, 250);
    cv_tokenizer_free(tok);
}
END_TEST

/* ---- special ids, sizes, single-token decode ----------------------------------------------- */

START_TEST(special_ids) {
    cv_tokenizer *g = load_dir_ok(tu_tok("gpt2"));
    ck_assert_int_eq(cv_tokenizer_vocab_size(g), 50257);
    ck_assert_int_eq(cv_tokenizer_eos_id(g), 50256);
    ck_assert_int_eq(cv_tokenizer_bos_id(g), 50256);
    ck_assert(cv_tokenizer_is_special(g, 50256));
    ck_assert(!cv_tokenizer_is_special(g, 11));
    ck_assert_int_eq(cv_tokenizer_token_to_id(g, "<|endoftext|>"), 50256);
    ck_assert_str_eq(cv_tokenizer_id_to_token(g, 50256), "<|endoftext|>");
    ck_assert_int_eq(cv_tokenizer_clean_up_default(g), 0);
    /* token_text of a special token shows it; skip_special drops it */
    int32_t eot = 50256;
    char *s = cv_tokenizer_decode(g, &eot, 1, 0, 0);
    ck_assert_str_eq(s, "<|endoftext|>");
    free(s);
    s = cv_tokenizer_decode(g, &eot, 1, 1, 1);
    ck_assert_str_eq(s, "");
    free(s);
    cv_tokenizer_free(g);

    cv_tokenizer *l2 = load_dir_ok(tu_tok("llama2"));
    ck_assert_int_eq(cv_tokenizer_vocab_size(l2), 32000);
    ck_assert_int_eq(cv_tokenizer_bos_id(l2), 1);
    ck_assert_int_eq(cv_tokenizer_eos_id(l2), 2);
    ck_assert_int_eq(cv_tokenizer_pad_id(l2), -1);
    int32_t *ids;
    size_t n;
    cv_error err;
    ck_assert_int_eq(cv_tokenizer_encode(l2, "", 0, 1, &ids, &n, &err), CV_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    cv_tokenizer_free(l2);

    cv_tokenizer *l3 = load_dir_ok(tu_tok("llama3"));
    ck_assert_int_eq(cv_tokenizer_vocab_size(l3), 128256);
    ck_assert_int_eq(cv_tokenizer_bos_id(l3), 128000);
    ck_assert_int_eq(cv_tokenizer_eos_id(l3), 128001);
    ck_assert_int_eq(cv_tokenizer_clean_up_default(l3), 1);
    cv_tokenizer_free(l3);

    cv_tokenizer *u = load_dir_ok(FIXTURE "unigram");
    ck_assert_int_eq(cv_tokenizer_eos_id(u), 1);
    ck_assert_int_eq(cv_tokenizer_pad_id(u), 0);
    ck_assert_int_eq(cv_tokenizer_bos_id(u), -1);
    ck_assert_int_eq(cv_tokenizer_encode(u, "", 0, 1, &ids, &n, &err), CV_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    cv_tokenizer_free(u);
}
END_TEST

/* A tiny byte-level BPE (vocab: the 256 byte chars + "ab"), as the hub's Llama-3 file: the BOS
 * template sits inside a post_processor Sequence after ByteLevel. */
static char *tiny_bpe_json(const char *post) {
    static char buf[16384];
    int k = snprintf(buf, sizeof buf, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        /* GPT-2 bytes_to_unicode, written out independently of the library */
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = b, n = 0;
        if (!printable) {
            for (int c = 0; c < b; c++)
                if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) n++;
            cp = 0x100 + n;
        }
        if (cp == '"' || cp == '\\')
            k += snprintf(buf + k, sizeof buf - k, "\"\\%c\": %d, ", cp, b);
        else
            k += snprintf(buf + k, sizeof buf - k, "\"\\u%04x\": %d, ", cp, b);
    }
    snprintf(buf + k, sizeof buf - k,
             "\"ab\": 256, \"<s>\": 257, \"</s>\": 258}, \"merges\": [\"a b\"]}, "
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, "
             "\"decoder\": {\"type\": \"ByteLevel\"}, \"post_processor\": %s, "
             "\"added_tokens\": [{\"id\": 257, \"content\": \"<s>\", \"special\": true}, "
             "{\"id\": 258, \"content\": \"</s>\", \"special\": true}]}",
             post);
    return buf;
}

static void encode_expect(const cv_tokenizer *tok, const char *text, int add_special,
                          const int32_t *want, size_t nw) {
    int32_t *ids;
    size_t n;
    cv_error err = {0};
    ck_assert_int_eq(cv_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n, &err),
                     CV_OK);
    ck_assert_msg(ids_equal("synthetic", 0, text, strlen(text), want, nw, ids, n), "ids differ");
    free(ids);
}

START_TEST(post_processor_and_config) {
    const char *seq = "{\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, "
                      "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                      "{\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                      "\"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
                      "\"ids\": [257], \"tokens\": [\"<s>\"]}}}]}";
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    const char *json = tiny_bpe_json(seq);
    ck_assert_msg(cv_tokenizer_load_json_text(json, strlen(json), "tiny", &tok, &err) == CV_OK,
                  "%s", err.msg);
    const int32_t w1[] = {257, 256, 99}, w2[] = {256, 99}, w3[] = {257, 258, 32, 256};
    encode_expect(tok, "abc", 1, w1, 3);
    encode_expect(tok, "abc", 0, w2, 2);
    encode_expect(tok, "</s> ab", 1, w3, 4);
    ck_assert_int_eq(cv_tokenizer_bos_id(tok), 257);
    ck_assert_int_eq(cv_tokenizer_eos_id(tok), 258);
    cv_tokenizer_free(tok);

    /* tokenizer_config.json of a Llama tokenizer class rebuilds the template (add_eos_token) */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cv_tok_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(tiny_bpe_json("null"), f);
    fclose(f);
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"tokenizer_class\": \"LlamaTokenizer\", \"add_bos_token\": true, "
          "\"add_eos_token\": true, \"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": "
          "\"</s>\", \"clean_up_tokenization_spaces\": true}",
          f);
    fclose(f);
    char map[600];
    snprintf(map, sizeof map, "%s/special_tokens_map.json", dir);
    f = fopen(map, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"pad_token\": {\"content\": \"</s>\", \"lstrip\": false}}", f);
    fclose(f);
    ck_assert_msg(cv_tokenizer_load_dir(dir, &tok, &err) == CV_OK, "%s", err.msg);
    const int32_t w4[] = {257, 256, 99, 258};
    encode_expect(tok, "abc", 1, w4, 4);
    encode_expect(tok, "abc", 0, w2, 2);
    ck_assert_int_eq(cv_tokenizer_clean_up_default(tok), 1);
    ck_assert_int_eq(cv_tokenizer_pad_id(tok), 258);
    cv_tokenizer_free(tok);
    /* a broken config file is an error naming it, not a crash or a silent default */
    f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"add_bos_token\": tru", f);
    fclose(f);
    ck_assert_int_eq(cv_tokenizer_load_dir(dir, &tok, &err), CV_ERR_FORMAT);
    ck_assert_ptr_null(tok);
    ck_assert_ptr_nonnull(strstr(err.msg, "tokenizer_config.json"));
    remove(map);
    remove(cfg);
    remove(path);
    rmdir(dir);
}
END_TEST

START_TEST(clean_up_spaces) {
    char s[] = "Hello , world ! Is it ? Yes . I 'm sure they 're here , n't we 've a ' b";
    cv_tokenizer_clean_up_spaces(s);
    ck_assert_str_eq(s, "Hello, world! Is it? Yes. I'm sure they're here,n't we've a'b");
    char t[] = " . . .";
    cv_tokenizer_clean_up_spaces(t);
    ck_assert_str_eq(t, "...");
}
END_TEST

/* A prefix of a multi-byte character decodes to U+FFFD (trace token_text). */
START_TEST(partial_utf8) {
    cv_tokenizer *g = load_dir_ok(tu_tok("gpt2"));
    int32_t *ids;
    size_t n;
    cv_error err;
    ck_assert_int_eq(cv_tokenizer_encode(g, "\xF0\x9F\xA4\x96", 4, 0, &ids, &n, &err), CV_OK);
    ck_assert_int_gt(n, 1); /* the robot emoji is several byte-level tokens */
    char *s = cv_tokenizer_decode(g, ids, 1, 0, 0);
    ck_assert_str_eq(s, "\xEF\xBF\xBD");
    free(s);
    s = cv_tokenizer_decode(g, ids, n, 0, 0);
    ck_assert_str_eq(s, "\xF0\x9F\xA4\x96");
    free(s);
    free(ids);
    cv_tokenizer_free(g);
}
END_TEST

/* ---- malformed files ----------------------------------------------------------------------- */

static cv_status load_text(const char *json, cv_error *err) {
    cv_tokenizer *tok = NULL;
    cv_status st = cv_tokenizer_load_json_text(json, strlen(json), "t.json", &tok, err);
    if (st == CV_OK)
        ck_assert_ptr_nonnull(tok);
    else
        ck_assert_ptr_null(tok);
    cv_tokenizer_free(tok);
    return st;
}

static void expect_error(const char *json, cv_status code, const char *needle) {
    cv_error err = {0};
    cv_status st = load_text(json, &err);
    ck_assert_msg(st == code, "expected status %d, got %d (%s) for %s", code, st, err.msg, json);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    ck_assert_msg(strncmp(err.msg, "t.json", 6) == 0, "message '%s' does not name the file",
                  err.msg);
}

START_TEST(malformed_json) {
    expect_error("", CV_ERR_FORMAT, "invalid JSON");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", CV_ERR_FORMAT,
                 "invalid JSON");
    expect_error("[1, 2]", CV_ERR_FORMAT, "top level");
    expect_error("{\"normalizer\": null}", CV_ERR_FORMAT, "missing 'model'");
    expect_error("{\"model\": 3}", CV_ERR_FORMAT, "missing 'model'");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2], \"merges\": []}}",
                 CV_ERR_FORMAT, "model.vocab");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
                 CV_ERR_FORMAT, "model.vocab['a']");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}",
                 CV_ERR_FORMAT, "model.vocab['a']");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}",
                 CV_ERR_FORMAT, "model.merges");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}",
                 CV_ERR_FORMAT, "not in vocab");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}",
                 CV_ERR_FORMAT, "model.merges[0]");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}}",
                 CV_ERR_FORMAT, "is not 'a b'");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"unk_token\": 5}}", CV_ERR_FORMAT,
                 "unk_token");
    expect_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", CV_ERR_UNSUPPORTED,
                 "WordPiece");
    expect_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\"]], \"unk_id\": 0}}",
                 CV_ERR_FORMAT, "model.vocab[0]");
    expect_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]], \"unk_id\": 9}}",
                 CV_ERR_FORMAT, "unk_id");
    expect_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", CV_ERR_FORMAT, "empty");
    const char *ok_model = "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}";
    char buf[512];
    snprintf(buf, sizeof buf, "{%s, \"added_tokens\": {}}", ok_model);
    expect_error(buf, CV_ERR_FORMAT, "added_tokens");
    snprintf(buf, sizeof buf, "{%s, \"added_tokens\": [{\"id\": \"1\", \"content\": \"x\"}]}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "added_tokens[0].id");
    snprintf(buf, sizeof buf,
             "{%s, \"added_tokens\": [{\"id\": 1, \"content\": \"x\", "
             "\"special\": 1}]}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "added_tokens[0].special");
    snprintf(buf, sizeof buf, "{%s, \"normalizer\": {\"type\": \"BertNormalizer\"}}", ok_model);
    expect_error(buf, CV_ERR_UNSUPPORTED, "BertNormalizer");
    snprintf(buf, sizeof buf,
             "{%s, \"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"!!\"}}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "not base64");
    snprintf(buf, sizeof buf,
             "{%s, \"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": "
             "\"/////wAAAAA=\"}}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "bad trie size");
    snprintf(buf, sizeof buf, "{%s, \"normalizer\": [1]}", ok_model);
    expect_error(buf, CV_ERR_FORMAT, "normalizer");
    snprintf(buf, sizeof buf,
             "{%s, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, "
             "\"behavior\": \"Isolated\"}}",
             ok_model);
    expect_error(buf, CV_ERR_UNSUPPORTED, "Split pattern");
    snprintf(buf, sizeof buf, "{%s, \"decoder\": {\"type\": \"Strip\", \"content\": \" \"}}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "Strip.start");
    snprintf(buf, sizeof buf,
             "{%s, \"post_processor\": {\"type\": \"TemplateProcessing\", "
             "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}]}}",
             ok_model);
    expect_error(buf, CV_ERR_FORMAT, "'<s>'");
    cv_error err;
    snprintf(buf, sizeof buf, "{%s}", ok_model);
    ck_assert_int_eq(load_text(buf, &err), CV_OK);
}
END_TEST

/* Every prefix of a real (small) tokenizer.json must give an error or a tokenizer, not a crash. */
START_TEST(truncated_files) {
    char *all;
    size_t len;
    cv_error err = {0};
    ck_assert_int_eq(cv_read_file(FIXTURE "unigram/tokenizer.json", &all, &len, &err), CV_OK);
    int errors = 0;
    for (size_t cut = 0; cut < len; cut += (cut < 2000 ? 1 : 97)) {
        cv_tokenizer *tok = NULL;
        cv_status st = cv_tokenizer_load_json_text(all, cut, "cut.json", &tok, &err);
        if (st != CV_OK) {
            ck_assert_ptr_null(tok);
            ck_assert(strlen(err.msg) > 0);
            errors++;
        }
        cv_tokenizer_free(tok);
    }
    ck_assert_int_gt(errors, 100);
    cv_tokenizer *tok = NULL;
    ck_assert_int_eq(cv_tokenizer_load_json_text(all, len, "full.json", &tok, &err), CV_OK);
    cv_tokenizer_free(tok);
    free(all);
}
END_TEST

START_TEST(missing_files) {
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    ck_assert_int_eq(cv_tokenizer_load_dir("tests/fixtures/no-such-dir", &tok, &err), CV_ERR_IO);
    ck_assert_ptr_null(tok);
    ck_assert_ptr_nonnull(strstr(err.msg, "no-such-dir"));
    ck_assert_int_eq(cv_tokenizer_load_json("tests/fixtures/no-such.json", &tok, &err), CV_ERR_IO);
    ck_assert_ptr_null(tok);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("parity");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parity_gpt2);
    tcase_add_test(tc, parity_llama2);
    tcase_add_test(tc, parity_llama2_transformers);
    tcase_add_test(tc, parity_llama3);
    tcase_add_test(tc, parity_unigram);
    tcase_add_test(tc, parity_unigram_precompiled);
    tcase_add_test(tc, special_ids);
    tcase_add_test(tc, partial_utf8);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("errors");
    tcase_set_timeout(tm, 60);
    tcase_add_test(tm, clean_up_spaces);
    tcase_add_test(tm, post_processor_and_config);
    tcase_add_test(tm, malformed_json);
    tcase_add_test(tm, truncated_files);
    tcase_add_test(tm, missing_files);
    suite_add_tcase(s, tm);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
