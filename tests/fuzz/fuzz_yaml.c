/* fuzz_yaml.c — libFuzzer harness: the YAML configuration (libyaml documents walked into the
 * config, every value type-checked), then validation of what was accepted. */
#include "fuzz_common.h"
#include "corevital/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_config c;
    cv_error err = {0};
    if (cv_config_init(&c, &err) != CV_OK) return 0;
    if (cv_config_load_yaml_string(&c, (const char *)data, size, "fuzz.yaml", &err) == CV_OK)
        (void)cv_config_validate(&c, &err);
    cv_config_free(&c);
    return 0;
}
