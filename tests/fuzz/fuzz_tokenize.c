/* fuzz_tokenize.c — libFuzzer harness: encode and decode arbitrary bytes with real tokenizers of
 * each kind (byte-level BPE, SentencePiece BPE with byte fallback, Unigram with a precompiled
 * charsmap). The first byte picks the tokenizer and the flags; the rest is the text to encode,
 * and, read as little-endian int32 ids (any value, unknown ones included), the ids to decode.
 * Run from the repository root (the fixtures are found by relative path). */
#include "fuzz_common.h"
#include "corevital/tokenizer.h"

static const char *const k_dirs[] = {"tests/fixtures/gpt2-tiny", "tests/fixtures/llama-tiny",
                                     "tests/fixtures/t5-tiny",
                                     "tests/fixtures/tokenizers/unigram-precompiled"};
#define N_TOK (sizeof k_dirs / sizeof k_dirs[0])
static cv_tokenizer *g_tok[N_TOK];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    for (size_t i = 0; i < N_TOK; i++) {
        cv_error err = {0};
        if (cv_tokenizer_load_dir(k_dirs[i], &g_tok[i], &err) != CV_OK) {
            fprintf(stderr, "fuzz_tokenize: %s (run from the repository root)\n", err.msg);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const cv_tokenizer *tok = g_tok[data[0] % N_TOK];
    int add_special = (data[0] >> 2) & 1, skip = (data[0] >> 3) & 1, clean = (data[0] >> 4) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    cv_error err = {0};
    if (cv_tokenizer_encode(tok, text, len, add_special, &ids, &n, &err) == CV_OK) {
        int32_t V = cv_tokenizer_vocab_size(tok);
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) abort(); /* encode must stay inside the vocabulary */
        size_t out_len;
        free(cv_tokenizer_decode_len(tok, ids, n, skip, clean, &out_len));
        free(ids);
    }
    size_t n_raw = len / 4;
    int32_t *raw = malloc(sizeof(int32_t) * (n_raw ? n_raw : 1));
    if (!raw) return 0;
    memcpy(raw, text, n_raw * 4);
    size_t out_len;
    free(cv_tokenizer_decode_len(tok, raw, n_raw, skip, clean, &out_len));
    free(raw);
    return 0;
}
