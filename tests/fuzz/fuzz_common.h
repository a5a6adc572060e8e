/* fuzz_common.h — helpers shared by the libFuzzer harnesses of tests/fuzz/ (see README.md). */
#ifndef COREVITAL_FUZZ_COMMON_H
#define COREVITAL_FUZZ_COMMON_H
#define _DEFAULT_SOURCE
#include "corevital/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Write data to a fresh file in /tmp whose name ends in suffix; 0 on success. */
static inline int fz_write_tmp(char *path, size_t n, const uint8_t *data, size_t size,
                               const char *suffix) {
    snprintf(path, n, "/tmp/cv-fuzz-%d-XXXXXX%s", (int)getpid(), suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    close(fd);
    return off == size ? 0 : -1;
}

/* A NUL-terminated copy (parsers that take C strings); free() it. */
static inline char *fz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return NULL;
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}
#endif
