/* fuzz_model_config.c — libFuzzer harness: config.json parsing and family detection. */
#include "fuzz_common.h"
#include "corevital/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fz_cstr(data, size);
    if (!text) return 0;
    cv_model_config cfg;
    cv_error err = {0};
    if (cv_model_config_parse(text, "config.json", &cfg, &err) == CV_OK) {
        (void)cv_family_name(cfg.family);
        (void)cv_rope_type_name(cfg.rope_type);
    }
    free(text);
    return 0;
}
