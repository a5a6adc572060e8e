/* safetensors.h — read-only, memory-mapped access to safetensors checkpoints (one file or a
 * sharded set described by model.safetensors.index.json), and a small writer.
 *
 * File format: 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor names
 * to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional "__metadata__" object of
 * string values), then the data section; offsets are relative to the data section.
 *
 * The loader treats the file as hostile and enforces the reference parser's rules (notes §1):
 * header length <= 100,000,000 and 8+N within the file; UTF-8, strict JSON, an object at the top;
 * shape entries and offsets non-negative integers (no floats, no negatives, no exponents); checked
 * numel * dtype-size; end - begin == byte length; the entries, sorted by offset, tile the data
 * section from 0 with no gap or overlap and end exactly at end of file; unique names;
 * __metadata__ string -> string. Alignment of the data is NOT required: data pointers may be
 * unaligned (read them with memcpy or cv_convert_to_f32). Every error names the file, and the
 * tensor when there is one. */
#ifndef COREVITAL_SAFETENSORS_H
#define COREVITAL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "corevital/common.h"
#include "corevital/dtype.h"

#define CV_ST_MAX_DIMS        8
#define CV_ST_MAX_HEADER_SIZE 100000000ull /* the reference parser's MAX_HEADER_SIZE */

typedef struct {
    const char *name;
    cv_dtype dtype;
    int ndim;                      /* 0 for a scalar (shape []) */
    int64_t shape[CV_ST_MAX_DIMS]; /* entries past ndim are 0 */
    size_t numel, nbytes;          /* numel is 1 for a scalar; 0 when a dimension is 0 */
    const void *data;              /* points into the mmap; possibly unaligned */
    const char *path;              /* the file this tensor lives in */
} cv_st_tensor;

typedef struct cv_st cv_st; /* one file or a sharded set */

/* path may be a .safetensors file, a model.safetensors.index.json file, or a directory holding
 * model.safetensors (preferred, as transformers does) or model.safetensors.index.json + shards.
 * For a sharded set every distinct shard is opened once, a missing shard is an error naming it,
 * and every tensor of the weight_map must be present in the shard it is mapped to. Tensors a
 * shard holds beyond its weight_map entries are loaded too; a name in two shards is an error. */
cv_status cv_st_open(const char *path, cv_st **out, cv_error *err);
void cv_st_close(cv_st *st); /* NULL is fine */

/* Tensors in a stable order: file by file (shards in weight_map order of first appearance),
 * within a file by data offset. */
size_t cv_st_count(const cv_st *st);
const cv_st_tensor *cv_st_at(const cv_st *st, size_t i);           /* NULL if i out of range */
const cv_st_tensor *cv_st_find(const cv_st *st, const char *name); /* NULL if absent (hash) */
/* A "__metadata__" value (first file that has the key), or NULL. */
const char *cv_st_metadata(const cv_st *st, const char *key);
/* Number of files mapped (1 for a single file). */
size_t cv_st_file_count(const cv_st *st);

/* Tell the kernel the whole pages inside a tensor's data will not be read again (after it was
 * copied: transposed, converted or quantized), so they leave the resident set. Re-reading them
 * stays valid (they come back from the file). */
void cv_st_drop_pages(const cv_st_tensor *t);

/* Writer (tests and bench generate checkpoints with it). The header is padded with spaces so that
 * the data section starts at a multiple of 8; tensors are laid out contiguously, larger element
 * sizes first (stable), so every tensor is naturally aligned in an mmap. Names must be unique and
 * not "__metadata__"; data may be NULL only for a zero-byte tensor. metadata_kv is
 * key, value, key, value, ..., NULL (or NULL for none). */
typedef struct {
    const char *name;
    cv_dtype dtype;
    int ndim;
    int64_t shape[CV_ST_MAX_DIMS];
    const void *data;
} cv_st_write_entry;

cv_status cv_st_write(const char *path, const cv_st_write_entry *entries, size_t n,
                      const char *const *metadata_kv, cv_error *err);

#endif
