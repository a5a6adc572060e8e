/* cuda_loader.c — backend.h's CUDA entry points in the main library: they load the CUDA
 * backend module (libcorevital_cuda.so, src/backend/cuda_module.h) on first use and forward to
 * it. Nothing CUDA is linked into the binary; a run that never asks for a GPU never loads it.
 *
 * Where the module is looked for, in order:
 *   1. already in the process (a test or bench binary linked against the module);
 *   2. $CV_CUDA_MODULE, the path of the .so (nothing else is tried when it is set; the name is
 *      not COREVITAL_*, which the configuration reads as settings);
 *   3. beside the executable: dirname(/proc/self/exe)/libcorevital_cuda.so — but only when an
 *      NVIDIA driver is present (/dev/nvidiactl, or /dev/dxg under WSL2): loading the module
 *      maps cudart and cuBLAS (~220 MB of RSS, ~0.1 s), which `--device auto` on a machine
 *      without a GPU should not pay just to learn there is none.
 * A missing module, a module that cannot load (no libcudart / libcublas), or one of another
 * build makes cv_backend_cuda_create fail with a message saying which; callers fall back to the
 * CPU (src/model/generate.c: pick_backend). A successful load is kept for the process (the
 * module is never unloaded: the CUDA runtime does not support it); a failed one is retried at
 * the next call, so a test can point CV_CUDA_MODULE elsewhere and try again.
 *
 * In a build without nvcc there is no module: every entry answers "not available in this build". */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "backend/cuda_module.h"
#include "corevital/log.h"

#include <stdio.h>
#include <string.h>

#ifdef CV_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

static const cv_cuda_module *g_module; /* set once loaded; the CLI is single-threaded here */

static cv_status check_module(const cv_cuda_module *m, const char *where, cv_error *err) {
    if (!m)
        return cv_fail(err, CV_ERR_UNSUPPORTED, "the CUDA module %s returned no entry table",
                       where);
    if (m->abi != CV_CUDA_MODULE_ABI || m->backend_size != sizeof(cv_backend))
        return cv_fail(err, CV_ERR_UNSUPPORTED,
                       "the CUDA module %s is from another build (ABI %d, backend struct %zu "
                       "bytes; expected %d, %zu): rebuild it with this corevital",
                       where, m->abi, m->backend_size, CV_CUDA_MODULE_ABI, sizeof(cv_backend));
    return CV_OK;
}

static cv_status open_module(const char *path, cv_error *err) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return cv_fail(err, CV_ERR_UNSUPPORTED, "the CUDA module %s could not be loaded: %s", path,
                       why ? why : "unknown reason");
    }
    cv_cuda_module_entry_fn entry = (cv_cuda_module_entry_fn)dlsym(h, CV_CUDA_MODULE_ENTRY);
    if (!entry) {
        dlclose(h);
        return cv_fail(err, CV_ERR_UNSUPPORTED, "%s does not export %s", path,
                       CV_CUDA_MODULE_ENTRY);
    }
    const cv_cuda_module *m = entry();
    cv_status st = check_module(m, path, err);
    if (st != CV_OK) {
        dlclose(h);
        return st;
    }
    CV_DEBUG("cuda: loaded the CUDA module %s", path);
    g_module = m;
    return CV_OK;
}

/* The module, loaded if needed; NULL with err filled when it cannot be had. */
static const cv_cuda_module *cuda_module(cv_error *err) {
    if (g_module) return g_module;
    /* 1. linked into this binary (tests/cuda, bench_cuda) */
    cv_cuda_module_entry_fn linked =
        (cv_cuda_module_entry_fn)dlsym(RTLD_DEFAULT, CV_CUDA_MODULE_ENTRY);
    if (linked) {
        if (check_module(linked(), "linked into this binary", err) != CV_OK) return NULL;
        g_module = linked();
        return g_module;
    }
    /* 2. named by the environment */
    const char *env = getenv("CV_CUDA_MODULE");
    if (env && env[0]) return open_module(env, err) == CV_OK ? g_module : NULL;
    /* 3. beside the executable, when there is a driver to talk to */
    if (access("/dev/nvidiactl", F_OK) != 0 && access("/dev/dxg", F_OK) != 0) {
        cv_fail(err, CV_ERR_UNSUPPORTED,
                "no CUDA device available (no NVIDIA driver: neither /dev/nvidiactl nor /dev/dxg "
                "exists)");
        return NULL;
    }
    char exe[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        cv_fail(err, CV_ERR_UNSUPPORTED,
                "the CUDA module could not be located (/proc/self/exe is unreadable; set "
                "CV_CUDA_MODULE)");
        return NULL;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(path, sizeof path, "%s/%s", slash ? exe : ".", CV_CUDA_MODULE_FILE);
    if (access(path, R_OK) != 0) {
        cv_fail(err, CV_ERR_UNSUPPORTED,
                "the CUDA module %s is not installed (expected beside the executable, or set "
                "CV_CUDA_MODULE)",
                path);
        return NULL;
    }
    return open_module(path, err) == CV_OK ? g_module : NULL;
}

cv_backend *cv_backend_cuda_create(int device, cv_error *err) {
    const cv_cuda_module *m = cuda_module(err);
    return m ? m->create(device, err) : NULL;
}

int cv_cuda_available(void) {
    const cv_cuda_module *m = cuda_module(NULL);
    return m && m->available();
}

/* The per-backend entries need a CUDA backend, hence a module already loaded. */
int cv_cuda_set_variant(cv_backend *b, const char *op, int v) {
    return g_module ? g_module->set_variant(b, op, v) : -1;
}

void *cv_cuda_stream(cv_backend *b) {
    return g_module ? g_module->stream(b) : NULL;
}

int cv_cuda_debug(cv_backend *b, const char *what, int v) {
    return g_module ? g_module->debug(b, what, v) : -1;
}

#else /* no nvcc: no module */

cv_backend *cv_backend_cuda_create(int device, cv_error *err) {
    (void)device;
    cv_fail(err, CV_ERR_UNSUPPORTED, "CUDA is not available in this build (compiled without nvcc)");
    return NULL;
}

int cv_cuda_available(void) {
    return 0;
}

int cv_cuda_set_variant(cv_backend *b, const char *op, int v) {
    (void)b, (void)op, (void)v;
    return -1;
}

void *cv_cuda_stream(cv_backend *b) {
    (void)b;
    return NULL;
}

int cv_cuda_debug(cv_backend *b, const char *what, int v) {
    (void)b, (void)what, (void)v;
    return -1;
}

#endif
