/* hostmem.c — host memory for the large buffers the CPU streams every decode step.
 *
 * A decode step reads every weight matrix and, at a long context, the whole KV cache once. On
 * 4 KiB pages that is a TLB miss every 4 KiB of the stream (the second-level TLB covers a few
 * MiB), and the hardware prefetchers stop at each page's end. Linux backs an anonymous region
 * marked MADV_HUGEPAGE with 2 MiB pages where it can (transparent huge pages, "madvise" mode or
 * "always"), which removes both. Where it cannot (THP "never", fragmented memory, another OS)
 * the memory is ordinary and only slower. CV_HUGEPAGES=0 turns the hint off, for benches that
 * measure what it is worth (and vetoes the weights' arena; CV_HUGEPAGES=1 forces that arena:
 * cv_model_opts.weights_arena). */
#define _DEFAULT_SOURCE /* madvise */
#include "corevital/common.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

int cv_hugepages_env(void) {
    const char *v = getenv("CV_HUGEPAGES");
    return !v ? -1 : strcmp(v, "0") == 0 ? 0 : strcmp(v, "1") == 0 ? 1 : -1;
}

int cv_hugepages_enabled(void) {
    return cv_hugepages_env() != 0;
}

void *cv_host_alloc(size_t bytes) {
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (sz < bytes) return NULL; /* overflow */
    if (sz == 0) sz = 64;
    if (sz < HUGE_PAGE || !cv_hugepages_enabled()) return aligned_alloc(64, sz);
    /* whole huge pages, so no 4 KiB page at either end is shared with other data */
    size_t hs = (sz + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *p = NULL;
    if (hs < sz || posix_memalign(&p, HUGE_PAGE, hs) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, hs, MADV_HUGEPAGE); /* a hint: failure leaves ordinary pages */
#endif
    return p;
}

/* The weights' arena: one virtual reservation, backed on first touch, so a tensor sized to its
 * bytes wastes no part of a huge page and the small matrices (SmolLM2's 0.4 MiB k_proj) sit in
 * huge pages too. Reserving more than is used costs address space only. */
int cv_host_arena_reserve(cv_host_arena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    size_t len = (cap + 2 * HUGE_PAGE - 1) & ~(HUGE_PAGE - 1); /* room to align the base */
    if (cap == 0 || len < cap) return -1;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    a->map = p, a->map_len = len;
    a->base = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    a->cap = len - (size_t)(a->base - (char *)p);
#ifdef MADV_HUGEPAGE
    madvise(a->base, a->cap, MADV_HUGEPAGE); /* a hint: failure leaves ordinary pages */
#endif
    return 0;
}

void *cv_host_arena_take(cv_host_arena *a, size_t bytes) {
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (!a->base || sz < bytes || sz > a->cap - a->used) return NULL;
    void *p = a->base + a->used;
    a->used += sz;
    return p;
}

int cv_host_arena_owns(const cv_host_arena *a, const void *p) {
    return a->base && (const char *)p >= a->base && (const char *)p < a->base + a->cap;
}

void cv_host_arena_free(cv_host_arena *a) {
    if (a->map) munmap(a->map, a->map_len);
    memset(a, 0, sizeof *a);
}
