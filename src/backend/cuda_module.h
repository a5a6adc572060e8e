/* cuda_module.h — the interface between the main library and the CUDA backend module.
 *
 * The CUDA backend (kernels/ *.cu) is built as a shared object, libcorevital_cuda.so, installed
 * beside the corevital binary, so that the binary itself does not link cudart and cuBLAS (which
 * cost every run ~220 MB of RSS and tens of milliseconds to load, GPU or not). The module is
 * loaded with dlopen only when a run looks for a GPU (src/backend/cuda_loader.c, which
 * implements backend.h's cv_backend_cuda_create / cv_cuda_available / ... on top of it).
 *
 * The module exports a single symbol, CV_CUDA_MODULE_ENTRY, a function returning this table.
 * The module's few references to the library (cv_fail, cv_log, cv_dtype_name, cv_t5_bucket, ...)
 * resolve against the executable, which exports its cv_* symbols (Makefile). */
#ifndef COREVITAL_CUDA_MODULE_H
#define COREVITAL_CUDA_MODULE_H

#include "corevital/backend.h"

#include <stddef.h>

/* Bumped whenever this table, cv_backend or cv_weight changes shape; a module of another build is
 * refused (3: cv_weight.prefill_bf16, cv_backend.prefill_bf16; 4: cv_backend.head_logprob;
 * 5: cv_backend.matmul3). */
#define CV_CUDA_MODULE_ABI   5
#define CV_CUDA_MODULE_ENTRY "cv_cuda_module_entry"
#define CV_CUDA_MODULE_FILE  "libcorevital_cuda.so"

typedef struct {
    int abi;             /* CV_CUDA_MODULE_ABI of the module's build */
    size_t backend_size; /* sizeof(cv_backend) of the module's build */
    int (*available)(void);
    cv_backend *(*create)(int device, cv_error *err);
    int (*set_variant)(cv_backend *b, const char *op, int v);
    void *(*stream)(cv_backend *b);
    int (*debug)(cv_backend *b, const char *what, int v);
} cv_cuda_module;

typedef const cv_cuda_module *(*cv_cuda_module_entry_fn)(void);

#ifdef __cplusplus
extern "C" {
#endif
/* Defined by the module (kernels/backend_cuda.cu). */
const cv_cuda_module *cv_cuda_module_entry(void);
#ifdef __cplusplus
}
#endif

#endif
