/* fuzz_tokenizer_json.c — libFuzzer harness: tokenizer.json loading (models, normalizers,
 * pre-tokenizers, decoders, post-processors, added tokens). An accepted file is also used once
 * to encode and decode a short text, so half-validated state cannot hide. */
#include "fuzz_common.h"
#include "corevital/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    if (cv_tokenizer_load_json_text((const char *)data, size, "tokenizer.json", &tok, &err) !=
        CV_OK)
        return 0;
    static const char text[] = "Hello world, it's 2026! \xC3\xA9t\xC3\xA9 <s> \xF0\x9F\x98\x80";
    int32_t *ids = NULL;
    size_t n = 0;
    if (cv_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n, &err) == CV_OK) {
        free(cv_tokenizer_decode(tok, ids, n, 0, 1));
        free(cv_tokenizer_decode(tok, ids, n, 1, 0));
        free(ids);
    }
    (void)cv_tokenizer_vocab_size(tok);
    cv_tokenizer_free(tok);
    return 0;
}
