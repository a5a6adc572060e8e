/* fuzz_hub.c — libFuzzer harness: what the Hub client parses from a server's answer — response
 * header lines (ETag, X-Linked-Etag, X-Repo-Commit, Location, sizes, Content-Range, error codes;
 * several responses when redirected), the redirect target it would follow, and a JSON body
 * (model.safetensors.index.json). The input is HEADERS, a NUL byte, then the BODY. */
#include "fuzz_common.h"
#include "corevital/hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t n_headers = nul ? (size_t)(nul - data) : size;
    char *body = nul ? fz_cstr(nul + 1, size - n_headers - 1) : NULL;
    cv_error err = {0};
    (void)cv_hub_parse_untrusted((const char *)data, n_headers, body,
                                 "https://huggingface.co/org/name/resolve/main/config.json", &err);
    free(body);
    return 0;
}
