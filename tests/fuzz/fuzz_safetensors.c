/* fuzz_safetensors.c — libFuzzer harness: the safetensors header and data checks on arbitrary
 * files (cv_st_open validates the header length, JSON, dtypes, shapes, offsets and overlaps).
 * Every accepted file's tensors are read whole, so a wrong bounds check shows up under ASan. */
#include "fuzz_common.h"
#include "corevital/safetensors.h"

volatile unsigned g_sink; /* keeps the reads of every tensor byte */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (fz_write_tmp(path, sizeof path, data, size, ".safetensors") != 0) return 0;
    cv_st *st = NULL;
    cv_error err = {0};
    if (cv_st_open(path, &st, &err) == CV_OK) {
        for (size_t i = 0;; i++) {
            const cv_st_tensor *t = cv_st_at(st, i);
            if (!t) break;
            const unsigned char *p = t->data;
            for (size_t b = 0; b < t->nbytes; b++) g_sink += p[b];
        }
        (void)cv_st_metadata(st, "format");
        cv_st_close(st);
    }
    unlink(path);
    return 0;
}
