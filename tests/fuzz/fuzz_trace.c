/* fuzz_trace.c — libFuzzer harness: the trace validator (schema 0.2.0) on arbitrary JSON. */
#include "fuzz_common.h"
#include "corevital/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fz_cstr(data, size);
    if (!text) return 0;
    cv_error err = {0};
    (void)cv_trace_validate(text, &err);
    free(text);
    return 0;
}
