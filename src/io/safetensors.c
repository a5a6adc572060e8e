/* safetensors.c — memory-mapped safetensors reader with full header validation, sharded sets
 * through model.safetensors.index.json, and a writer (safetensors.h).
 *
 * Validation follows the reference Rust parser (read_metadata + Metadata::validate; see
 * notes/hf-formats-and-semantics.md §1). cJSON parses the header, but it is more permissive than
 * serde_json: it reads numbers as doubles (so 2.0 == 2 and 18446744073709551614 loses its low
 * bits), accepts leading zeros and raw control characters, and treats any byte <= 0x20 as
 * whitespace. So a small lexical pass (json_scan) runs first: it enforces strict JSON lexing and
 * records the exact text of every number, in document order. cJSON keeps children in document
 * order too, which lets the k-th number node of the tree be matched to the k-th number token and
 * shapes/offsets be read as exact unsigned 64-bit integers from their text. */
#define _DEFAULT_SOURCE /* madvise */
#include "corevital/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#define INDEX_NAME  "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

typedef struct {
    char *path;
    unsigned char *map; /* whole file, read-only */
    size_t size;
} st_file;

typedef struct {
    cv_st_tensor t;
    uint64_t begin, end; /* data_offsets, relative to the data section */
    size_t file;         /* index into cv_st.files */
} st_entry;

typedef struct {
    char *key, *value;
} st_meta;

struct cv_st {
    st_file *files;
    size_t nfiles;
    st_entry *entries;
    size_t nentries, cap_entries;
    size_t *slots; /* open-addressing hash: 0 = empty, else entry index + 1 */
    size_t nslots; /* power of two, > 2 * nentries */
    st_meta *meta;
    size_t nmeta;
};

/* ---------------------------------------------------------------- name index (hash) */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static size_t slot_lookup(const cv_st *st, const char *name) {
    size_t mask = st->nslots - 1;
    for (size_t i = (size_t)hash_name(name) & mask;; i = (i + 1) & mask) {
        size_t v = st->slots[i];
        if (v == 0 || strcmp(st->entries[v - 1].t.name, name) == 0) return i;
    }
}

/* Rebuild the index over all entries (entry indices change when a file's slice is sorted),
 * sized for at least `min_entries` entries at a load factor of at most one half. */
static cv_status index_rebuild(cv_st *st, size_t min_entries, cv_error *err) {
    size_t want = 16;
    while (want <= 2 * min_entries) want *= 2;
    if (want != st->nslots) {
        size_t *slots = calloc(want, sizeof *slots);
        if (!slots) return cv_fail(err, CV_ERR_NOMEM, "safetensors: out of memory (name index)");
        free(st->slots);
        st->slots = slots;
        st->nslots = want;
    } else {
        memset(st->slots, 0, st->nslots * sizeof *st->slots);
    }
    for (size_t i = 0; i < st->nentries; i++) {
        size_t s = slot_lookup(st, st->entries[i].t.name);
        st->slots[s] = i + 1; /* names are unique: checked when they were added */
    }
    return CV_OK;
}

/* Add a zeroed entry named `name`; fails on a duplicate name (in this file or another shard). */
static cv_status entry_add(cv_st *st, const char *name, size_t file, st_entry **out,
                           cv_error *err) {
    if (2 * (st->nentries + 1) >= st->nslots) {
        cv_status s = index_rebuild(st, 2 * (st->nentries + 1), err); /* grow */
        if (s != CV_OK) return s;
    }
    size_t slot = slot_lookup(st, name);
    if (st->slots[slot] != 0) {
        const st_entry *prev = &st->entries[st->slots[slot] - 1];
        if (prev->file == file)
            return cv_fail(err, CV_ERR_FORMAT, "%s: duplicate tensor name '%s' in the header",
                           st->files[file].path, name);
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s' is also in %s (ambiguous shards)",
                       st->files[file].path, name, prev->t.path);
    }
    if (st->nentries == st->cap_entries) {
        size_t cap = st->cap_entries ? 2 * st->cap_entries : 64;
        st_entry *e = realloc(st->entries, cap * sizeof *e);
        if (!e) return cv_fail(err, CV_ERR_NOMEM, "safetensors: out of memory (tensor table)");
        st->entries = e;
        st->cap_entries = cap;
    }
    st_entry *e = &st->entries[st->nentries];
    memset(e, 0, sizeof *e);
    e->t.name = strdup(name);
    if (!e->t.name) return cv_fail(err, CV_ERR_NOMEM, "safetensors: out of memory");
    e->t.path = st->files[file].path;
    e->file = file;
    st->slots[slot] = ++st->nentries;
    *out = e;
    return CV_OK;
}

/* ---------------------------------------------------------------- strict JSON lexing */

typedef struct {
    size_t off, len; /* a number token's text inside the header */
} num_span;

typedef struct {
    num_span *v;
    size_t n, cap;
} num_spans;

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}
static int is_hex(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Lex the header as strict JSON (RFC 8259 tokens): strings without raw control characters and
 * with valid escapes, numbers in JSON grammar, only JSON whitespace. Structure is left to cJSON.
 * Records every number token in document order. */
static cv_status json_scan(const char *path, const char *s, size_t n, num_spans *nums,
                           cv_error *err) {
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            size_t start = i++;
            for (;;) {
                if (i >= n)
                    return cv_fail(err, CV_ERR_FORMAT,
                                   "%s: header is not valid JSON: unterminated string starting at "
                                   "header byte %zu",
                                   path, start);
                c = s[i];
                if (c == '"') {
                    i++;
                    break;
                }
                if ((unsigned char)c < 0x20)
                    return cv_fail(err, CV_ERR_FORMAT,
                                   "%s: header is not valid JSON: raw control character 0x%02x "
                                   "inside a string at header byte %zu",
                                   path, (unsigned)(unsigned char)c, i);
                if (c == '\\') {
                    if (i + 1 >= n) {
                        i++; /* reported as unterminated on the next turn */
                        continue;
                    }
                    char e = s[i + 1];
                    if (e != '\0' && strchr("\"\\/bfnrt", e) != NULL) {
                        i += 2;
                    } else if (e == 'u' && i + 5 < n && is_hex(s[i + 2]) && is_hex(s[i + 3]) &&
                               is_hex(s[i + 4]) && is_hex(s[i + 5])) {
                        i += 6;
                    } else {
                        return cv_fail(err, CV_ERR_FORMAT,
                                       "%s: header is not valid JSON: bad escape sequence at "
                                       "header byte %zu",
                                       path, i);
                    }
                    continue;
                }
                i++;
            }
        } else if (c == '-' || is_digit(c)) {
            size_t start = i;
            int ok = 1;
            if (s[i] == '-') i++;
            if (i < n && s[i] == '0') {
                i++;
            } else if (i < n && is_digit(s[i])) {
                while (i < n && is_digit(s[i])) i++;
            } else {
                ok = 0;
            }
            if (ok && i < n && s[i] == '.') {
                i++;
                if (i >= n || !is_digit(s[i])) ok = 0;
                while (i < n && is_digit(s[i])) i++;
            }
            if (ok && i < n && (s[i] == 'e' || s[i] == 'E')) {
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-')) i++;
                if (i >= n || !is_digit(s[i])) ok = 0;
                while (i < n && is_digit(s[i])) i++;
            }
            if (ok && i < n && (is_digit(s[i]) || (s[i] != '\0' && strchr(".eE+-", s[i]) != NULL)))
                ok = 0; /* e.g. a leading zero "01", or "1.2.3" */
            if (!ok)
                return cv_fail(err, CV_ERR_FORMAT,
                               "%s: header is not valid JSON: malformed number at header byte %zu",
                               path, start);
            if (nums->n == nums->cap) {
                size_t cap = nums->cap ? 2 * nums->cap : 256;
                num_span *v = realloc(nums->v, cap * sizeof *v);
                if (!v) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
                nums->v = v;
                nums->cap = cap;
            }
            nums->v[nums->n].off = start;
            nums->v[nums->n].len = i - start;
            nums->n++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || strchr("{}[],:", c) != NULL) {
            if (c == '\0')
                return cv_fail(err, CV_ERR_FORMAT,
                               "%s: header is not valid JSON: NUL byte at header byte %zu", path,
                               i);
            i++;
        } else if (c >= 'a' && c <= 'z') {
            i++; /* true / false / null: cJSON checks the spelling */
        } else {
            return cv_fail(
                err, CV_ERR_FORMAT,
                "%s: header is not valid JSON: unexpected byte 0x%02x at header byte %zu", path,
                (unsigned)(unsigned char)c, i);
        }
    }
    return CV_OK;
}

/* Number nodes in a subtree (depth is bounded by cJSON's nesting limit). */
static size_t count_numbers(const cJSON *node) {
    if (cJSON_IsNumber(node)) return 1;
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next) n += count_numbers(c);
    return n;
}

enum { U64_OK, U64_NEGATIVE, U64_NOT_INTEGER, U64_TOO_LARGE };

/* Exact value of an integer number token (already JSON-valid). */
static int token_u64(const char *text, size_t len, uint64_t *out) {
    if (len > 0 && text[0] == '-') {
        for (size_t i = 1; i < len; i++)
            if (!is_digit(text[i])) return U64_NOT_INTEGER;
        return U64_NEGATIVE; /* "-0" too: the reference's u64/usize rejects any '-' */
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(text[i])) return U64_NOT_INTEGER;
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return U64_TOO_LARGE;
        v = v * 10 + d;
    }
    *out = v;
    return U64_OK;
}

/* ---------------------------------------------------------------- one file */

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Parse a JSON array of non-negative integers (shape or data_offsets) with exact values.
 * `what` is "shape" or "data_offsets"; values are checked against `max`. */
static cv_status read_u64_array(const char *path, const char *tname, const char *what,
                                const cJSON *arr, const char *header, const num_spans *nums,
                                size_t first_num, uint64_t max, uint64_t *vals, int maxn,
                                int *count, cv_error *err) {
    if (!cJSON_IsArray(arr))
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': %s is not a JSON array", path, tname,
                       what);
    int n = cJSON_GetArraySize(arr);
    if (n > maxn)
        return cv_fail(err, maxn == 2 ? CV_ERR_FORMAT : CV_ERR_UNSUPPORTED,
                       "%s: tensor '%s': %s has %d entries (at most %d %s)", path, tname, what, n,
                       maxn, maxn == 2 ? "allowed" : "supported");
    int k = 0;
    size_t numi = first_num;
    for (const cJSON *c = arr->child; c; c = c->next, k++) {
        if (!cJSON_IsNumber(c))
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': %s[%d] is not an integer", path,
                           tname, what, k);
        const num_span *sp = &nums->v[numi++];
        const char *txt = header + sp->off;
        int len = (int)(sp->len > 64 ? 64 : sp->len);
        int r = token_u64(txt, sp->len, &vals[k]);
        if (r == U64_NEGATIVE)
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': %s[%d] is negative (%.*s)", path,
                           tname, what, k, len, txt);
        if (r == U64_NOT_INTEGER)
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': %s[%d] is not an integer (%.*s)",
                           path, tname, what, k, len, txt);
        if (r == U64_TOO_LARGE || vals[k] > max)
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': %s[%d] = %.*s is too large", path,
                           tname, what, k, len, txt);
    }
    *count = n;
    return CV_OK;
}

static void format_shape(char *buf, size_t sz, const cv_st_tensor *t) {
    size_t used = (size_t)snprintf(buf, sz, "[");
    for (int d = 0; d < t->ndim && used < sz; d++)
        used += (size_t)snprintf(buf + used, sz - used, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (used < sz) snprintf(buf + used, sz - used, "]");
}

static cv_status parse_metadata(cv_st *st, const char *path, const cJSON *m, cv_error *err) {
    if (!cJSON_IsObject(m))
        return cv_fail(err, CV_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
    size_t n = (size_t)cJSON_GetArraySize(m);
    st_meta *meta = realloc(st->meta, (st->nmeta + n + 1) * sizeof *meta);
    if (!meta) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    st->meta = meta;
    size_t first = st->nmeta;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: __metadata__ value for key '%s' is not a string (metadata must "
                           "map strings to strings)",
                           path, c->string);
        for (size_t j = first; j < st->nmeta; j++)
            if (strcmp(st->meta[j].key, c->string) == 0)
                return cv_fail(err, CV_ERR_FORMAT, "%s: duplicate __metadata__ key '%s'", path,
                               c->string);
        st_meta *e = &st->meta[st->nmeta];
        e->key = strdup(c->string);
        e->value = strdup(c->valuestring);
        if (!e->key || !e->value) {
            free(e->key);
            free(e->value);
            return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
        }
        st->nmeta++;
    }
    return CV_OK;
}

/* One tensor entry of the header: fields, dtype, exact shape and offsets, byte length. */
static cv_status parse_entry(cv_st *st, size_t file, const cJSON *item, const char *header,
                             const num_spans *nums, size_t first_num, cv_error *err) {
    const char *path = st->files[file].path;
    const char *name = item->string;
    st_entry *e = NULL;
    cv_status s = entry_add(st, name, file, &e, err);
    if (s != CV_OK) return s;
    if (!cJSON_IsObject(item))
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path,
                       name);
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    size_t shape_num = 0, offsets_num = 0, numi = first_num;
    for (const cJSON *c = item->child; c; c = c->next) {
        const cJSON **slot = NULL;
        if (strcmp(c->string, "dtype") == 0) slot = &dtype;
        if (strcmp(c->string, "shape") == 0) {
            slot = &shape;
            shape_num = numi;
        }
        if (strcmp(c->string, "data_offsets") == 0) {
            slot = &offsets;
            offsets_num = numi;
        }
        if (slot && *slot)
            return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': field '%s' appears twice", path,
                           name, c->string);
        if (slot) *slot = c;
        numi += count_numbers(c); /* unknown fields are ignored, as the reference does */
    }
    if (!dtype || !shape || !offsets)
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", path, name,
                       !dtype   ? "dtype"
                       : !shape ? "shape"
                                : "data_offsets");
    if (!cJSON_IsString(dtype))
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, name);
    if (cv_dtype_parse(dtype->valuestring, &e->t.dtype) != 0) {
        if (cv_dtype_is_known_unsupported(dtype->valuestring))
            return cv_fail(err, CV_ERR_UNSUPPORTED,
                           "%s: tensor '%s': dtype %s is not supported by this runtime", path, name,
                           dtype->valuestring);
        return cv_fail(err, CV_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%.40s\"", path, name,
                       dtype->valuestring);
    }

    uint64_t dims[CV_ST_MAX_DIMS];
    s = read_u64_array(path, name, "shape", shape, header, nums, shape_num, (uint64_t)INT64_MAX,
                       dims, CV_ST_MAX_DIMS, &e->t.ndim, err);
    if (s != CV_OK) return s;
    uint64_t numel = 1;
    int overflow = 0;
    for (int d = 0; d < e->t.ndim; d++) {
        e->t.shape[d] = (int64_t)dims[d];
        if (__builtin_mul_overflow(numel, dims[d], &numel)) overflow = 1;
    }
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)cv_dtype_size(e->t.dtype), &nbytes) ||
        numel > SIZE_MAX || nbytes > SIZE_MAX) {
        char sh[256];
        format_shape(sh, sizeof sh, &e->t);
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: tensor '%s': shape %s x %s overflows 64 bits (element or byte count)",
                       path, name, sh, cv_dtype_name(e->t.dtype));
    }
    e->t.numel = (size_t)numel;
    e->t.nbytes = (size_t)nbytes;

    uint64_t off[2] = {0, 0};
    int noff = 0;
    s = read_u64_array(path, name, "data_offsets", offsets, header, nums, offsets_num, UINT64_MAX,
                       off, 2, &noff, err);
    if (s != CV_OK) return s;
    if (noff != 2)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets must be [begin, end] (got %d entries)", path,
                       name, noff);
    if (off[1] < off[0])
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin",
                       path, name, off[0], off[1]);
    if (off[1] - off[0] != nbytes) {
        char sh[256];
        format_shape(sh, sizeof sh, &e->t);
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: tensor '%s': dtype %s x shape %s = %" PRIu64
                       " bytes, but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64 " bytes",
                       path, name, cv_dtype_name(e->t.dtype), sh, nbytes, off[0], off[1],
                       off[1] - off[0]);
    }
    e->begin = off[0];
    e->end = off[1];
    return CV_OK;
}

static int cmp_entry_offsets(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors of one file, sorted by offset, must tile its data section exactly. */
static cv_status check_layout(cv_st *st, size_t file, size_t first, uint64_t data_len,
                              cv_error *err) {
    const char *path = st->files[file].path;
    size_t n = st->nentries - first;
    st_entry *v = n ? st->entries + first : NULL; /* entries is NULL while empty */
    if (n) qsort(v, n, sizeof *v, cmp_entry_offsets);
    uint64_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].begin < expect)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] overlap tensor '%s' [%" PRIu64 ", %" PRIu64 "]",
                           path, v[i].t.name, v[i].begin, v[i].end, v[i - 1].t.name, v[i - 1].begin,
                           v[i - 1].end);
        if (v[i].begin > expect && i == 0)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] leave a gap: the first tensor must start at data offset 0",
                           path, v[i].t.name, v[i].begin, v[i].end);
        if (v[i].begin > expect)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] leave a gap after tensor '%s', which ends at %" PRIu64,
                           path, v[i].t.name, v[i].begin, v[i].end, v[i - 1].t.name, expect);
        expect = v[i].end;
    }
    if (expect > data_len)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: truncated data: tensor '%s' ends at data offset %" PRIu64
                       " but the data section has only %" PRIu64 " bytes",
                       path, v[n - 1].t.name, expect, data_len);
    if (expect < data_len) {
        if (n == 0)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: %" PRIu64 " bytes of trailing data after a header with no tensors",
                           path, data_len);
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: %" PRIu64 " bytes of trailing data after the last tensor '%s' (ends at "
                       "data offset %" PRIu64 ")",
                       path, data_len - expect, v[n - 1].t.name, expect);
    }
    return CV_OK;
}

static cv_status validate_utf8(const char *path, const unsigned char *s, size_t n, cv_error *err) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0)
            return cv_fail(err, CV_ERR_FORMAT, "%s: header is not valid UTF-8 (header byte %zu)",
                           path, i);
        i += (size_t)k;
    }
    return CV_OK;
}

/* Map and validate one safetensors file, appending its tensors. */
static cv_status load_file(cv_st *st, const char *path, cv_error *err) {
    st_file *files = realloc(st->files, (st->nfiles + 1) * sizeof *files);
    if (!files) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    st->files = files;
    size_t file = st->nfiles;
    st_file *f = &st->files[file];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    st->nfiles++;

    /* O_NONBLOCK: opening a FIFO must not hang (fstat rejects it next) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return cv_fail(err, CV_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size < 8) {
        close(fd);
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: file is %lld bytes, too small for a safetensors header (8-byte length "
                       "prefix)",
                       path, (long long)sb.st_size);
    }
    f->size = (size_t)sb.st_size;
    void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        f->size = 0;
        return cv_fail(err, CV_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    }
    f->map = map;

    uint64_t hlen = read_le64(f->map);
    if (hlen > CV_ST_MAX_HEADER_SIZE)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: header length %" PRIu64 " exceeds the limit of %llu bytes", path, hlen,
                       CV_ST_MAX_HEADER_SIZE);
    if (hlen > f->size - 8)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                       path, hlen, f->size);
    const char *header = (const char *)f->map + 8;
    cv_status s = validate_utf8(path, f->map + 8, (size_t)hlen, err);
    if (s != CV_OK) return s;
    num_spans nums = {0};
    s = json_scan(path, header, (size_t)hlen, &nums, err);
    if (s != CV_OK) {
        free(nums.v);
        return s;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &end, 0);
    if (!root) {
        free(nums.v);
        return cv_fail(err, CV_ERR_FORMAT, "%s: header is not valid JSON (error near byte %td)",
                       path, end ? end - header : (ptrdiff_t)0);
    }
    for (const char *p = end; p < header + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = cv_fail(err, CV_ERR_FORMAT,
                        "%s: header is not valid JSON: extra data after the object (header byte "
                        "%td)",
                        path, p - header);
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        s = cv_fail(err, CV_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    if (count_numbers(root) != nums.n) { /* cannot happen for JSON both parsers accept */
        s = cv_fail(err, CV_ERR_FORMAT, "%s: header is not valid JSON (number tokens)", path);
        goto done;
    }

    size_t first = st->nentries, numi = 0;
    int have_meta = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        size_t here = numi;
        numi += count_numbers(c);
        if (strcmp(c->string, "__metadata__") == 0) {
            if (have_meta) {
                s = cv_fail(err, CV_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto done;
            }
            have_meta = 1;
            s = parse_metadata(st, path, c, err);
        } else {
            s = parse_entry(st, file, c, header, &nums, here, err);
        }
        if (s != CV_OK) goto done;
    }
    uint64_t data_len = (uint64_t)f->size - 8 - hlen;
    s = check_layout(st, file, first, data_len, err);
    if (s != CV_OK) goto done;
    /* Everything is in bounds now: form the data pointers. */
    for (size_t i = first; i < st->nentries; i++)
        st->entries[i].t.data = f->map + 8 + hlen + st->entries[i].begin;
    s = index_rebuild(st, st->nentries, err); /* the slice was reordered by offset */
done:
    cJSON_Delete(root);
    free(nums.v);
    return s;
}

/* ---------------------------------------------------------------- sharded sets */

static int shard_name_ok(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL &&
           strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static cv_status load_index(cv_st *st, const char *index_path, cv_error *err) {
    char *text = NULL;
    size_t len = 0;
    cv_status s = cv_read_file(index_path, &text, &len, err);
    if (s != CV_OK) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const char **shards = NULL;
    size_t *shard_file = NULL;
    char dir[4096];
    if (!root) {
        s = cv_fail(err, CV_ERR_FORMAT, "%s: not valid JSON", index_path);
        goto done;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm) || !wm->child) {
        s = cv_fail(err, CV_ERR_FORMAT, "%s: missing or empty \"weight_map\" object", index_path);
        goto done;
    }
    /* The shards live next to the index. */
    const char *slash = strrchr(index_path, '/');
    size_t dlen = slash ? (size_t)(slash - index_path) : 1;
    if (dlen + 1 > sizeof dir) {
        s = cv_fail(err, CV_ERR_IO, "%s: path too long", index_path);
        goto done;
    }
    if (slash) {
        memcpy(dir, index_path, dlen);
        dir[dlen] = '\0';
        if (dlen == 0) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }

    size_t nentries = (size_t)cJSON_GetArraySize(wm), nshards = 0;
    shards = calloc(nentries, sizeof *shards);
    shard_file = calloc(nentries, sizeof *shard_file);
    if (!shards || !shard_file) {
        s = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (const cJSON *c = wm->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !shard_name_ok(c->valuestring)) {
            s = cv_fail(err, CV_ERR_FORMAT,
                        "%s: weight_map entry for tensor '%s' is not a plain shard file name",
                        index_path, c->string);
            goto done;
        }
        size_t k = 0;
        while (k < nshards && strcmp(shards[k], c->valuestring) != 0) k++;
        if (k == nshards) shards[nshards++] = c->valuestring;
    }
    for (size_t k = 0; k < nshards; k++) {
        char shard_path[4096];
        s = cv_path_join(shard_path, sizeof shard_path, dir, shards[k], err);
        if (s != CV_OK) goto done;
        if (!cv_is_file(shard_path)) {
            const char *tensor = "";
            for (const cJSON *c = wm->child; c; c = c->next)
                if (strcmp(c->valuestring, shards[k]) == 0) {
                    tensor = c->string;
                    break;
                }
            s = cv_fail(err, CV_ERR_IO, "%s: shard '%s' (holding tensor '%s') is missing: %s",
                        index_path, shards[k], tensor, shard_path);
            goto done;
        }
        shard_file[k] = st->nfiles;
        s = load_file(st, shard_path, err);
        if (s != CV_OK) goto done;
    }
    for (const cJSON *c = wm->child; c; c = c->next) {
        size_t k = 0;
        while (strcmp(shards[k], c->valuestring) != 0) k++;
        const cv_st_tensor *t = cv_st_find(st, c->string);
        if (!t) {
            s = cv_fail(err, CV_ERR_FORMAT,
                        "%s: tensor '%s' is mapped to shard '%s' but that file does not contain it",
                        index_path, c->string, shards[k]);
            goto done;
        }
        if (t->path != st->files[shard_file[k]].path) {
            s = cv_fail(err, CV_ERR_FORMAT,
                        "%s: tensor '%s' is mapped to shard '%s' but is stored in %s", index_path,
                        c->string, shards[k], t->path);
            goto done;
        }
    }
    s = CV_OK;
done:
    free(shards);
    free(shard_file);
    cJSON_Delete(root);
    return s;
}

/* ---------------------------------------------------------------- public reader API */

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

cv_status cv_st_open(const char *path, cv_st **out, cv_error *err) {
    *out = NULL;
    cv_st *st = calloc(1, sizeof *st);
    if (!st) return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
    cv_status s;
    if (cv_is_dir(path)) {
        char p[4096];
        s = cv_path_join(p, sizeof p, path, SINGLE_NAME, err);
        if (s == CV_OK && cv_is_file(p)) {
            s = load_file(st, p, err);
        } else if (s == CV_OK) {
            s = cv_path_join(p, sizeof p, path, INDEX_NAME, err);
            if (s == CV_OK && cv_is_file(p))
                s = load_index(st, p, err);
            else if (s == CV_OK)
                s = cv_fail(err, CV_ERR_IO, "%s: no %s or %s in this directory", path, SINGLE_NAME,
                            INDEX_NAME);
        }
    } else if (ends_with(path, ".json")) {
        s = load_index(st, path, err);
    } else {
        s = load_file(st, path, err);
    }
    if (s == CV_OK) s = index_rebuild(st, st->nentries, err);
    if (s != CV_OK) {
        cv_st_close(st);
        return s;
    }
    *out = st;
    return CV_OK;
}

void cv_st_close(cv_st *st) {
    if (!st) return;
    for (size_t i = 0; i < st->nentries; i++) free((char *)st->entries[i].t.name);
    for (size_t i = 0; i < st->nfiles; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    for (size_t i = 0; i < st->nmeta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->meta);
    free(st->files);
    free(st->entries);
    free(st->slots);
    free(st);
}

size_t cv_st_count(const cv_st *st) {
    return st ? st->nentries : 0;
}

size_t cv_st_file_count(const cv_st *st) {
    return st ? st->nfiles : 0;
}

const cv_st_tensor *cv_st_at(const cv_st *st, size_t i) {
    return st && i < st->nentries ? &st->entries[i].t : NULL;
}

const cv_st_tensor *cv_st_find(const cv_st *st, const char *name) {
    if (!st || !name || st->nslots == 0) return NULL;
    size_t v = st->slots[slot_lookup(st, name)];
    return v ? &st->entries[v - 1].t : NULL;
}

const char *cv_st_metadata(const cv_st *st, const char *key) {
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    const cv_st_write_entry *e;
    size_t pos;    /* caller's index, for a stable order */
    size_t nbytes; /* checked */
} write_item;

static int cmp_write_order(const void *a, const void *b) {
    const write_item *x = a, *y = b;
    size_t sx = cv_dtype_size(x->e->dtype), sy = cv_dtype_size(y->e->dtype);
    if (sx != sy) return sx > sy ? -1 : 1; /* larger elements first: keeps them aligned */
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static cJSON *raw_u64(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf); /* exact integers, never "1e+15" */
}

/* Attach item to an object (key) or array (key NULL); frees it if that fails. */
static int add_item(cJSON *parent, const char *key, cJSON *item) {
    if (!item) return 0;
    int ok = key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item);
    if (!ok) cJSON_Delete(item);
    return ok;
}

cv_status cv_st_write(const char *path, const cv_st_write_entry *entries, size_t n,
                      const char *const *metadata_kv, cv_error *err) {
    write_item *items = calloc(n ? n : 1, sizeof *items);
    const char **names = calloc(n ? n : 1, sizeof *names);
    cJSON *root = cJSON_CreateObject();
    char *json = NULL;
    FILE *f = NULL;
    cv_status s = CV_OK;
    if (!items || !names || !root) {
        s = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const cv_st_write_entry *e = &entries[i];
        const char *nm = e->name ? e->name : "(null)";
        if (!e->name || strcmp(e->name, "__metadata__") == 0 || cv_dtype_size(e->dtype) == 0 ||
            e->ndim < 0 || e->ndim > CV_ST_MAX_DIMS) {
            s = cv_fail(err, CV_ERR_USAGE, "%s: tensor '%s': bad name, dtype or ndim", path, nm);
            goto done;
        }
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0 || !cv_mul_size(numel, (size_t)e->shape[d], &numel)) {
                s = cv_fail(err, CV_ERR_USAGE, "%s: tensor '%s': bad shape", path, nm);
                goto done;
            }
        }
        if (!cv_mul_size(numel, cv_dtype_size(e->dtype), &items[i].nbytes) ||
            (items[i].nbytes > 0 && !e->data)) {
            s = cv_fail(err, CV_ERR_USAGE, "%s: tensor '%s': bad size or no data", path, nm);
            goto done;
        }
        items[i].e = e;
        items[i].pos = i;
        names[i] = e->name;
    }
    qsort(names, n, sizeof *names, cmp_name_ptr);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            s = cv_fail(err, CV_ERR_USAGE, "%s: duplicate tensor name '%s'", path, names[i]);
            goto done;
        }
    }
    qsort(items, n, sizeof *items, cmp_write_order);

    if (metadata_kv && metadata_kv[0]) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && metadata_kv[i]; i += 2) {
            if (!metadata_kv[i + 1]) {
                s = cv_fail(err, CV_ERR_USAGE, "%s: metadata key '%s' has no value", path,
                            metadata_kv[i]);
                goto done;
            }
            if (!cJSON_AddStringToObject(m, metadata_kv[i], metadata_kv[i + 1])) m = NULL;
        }
        if (!m) {
            s = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const cv_st_write_entry *e = items[i].e;
        cJSON *t = cJSON_CreateObject(), *shape = NULL, *offs = NULL;
        int ok = add_item(root, e->name, t) &&
                 add_item(t, "dtype", cJSON_CreateString(cv_dtype_name(e->dtype))) &&
                 add_item(t, "shape", shape = cJSON_CreateArray()) &&
                 add_item(t, "data_offsets", offs = cJSON_CreateArray());
        for (int d = 0; ok && d < e->ndim; d++)
            ok = add_item(shape, NULL, raw_u64((uint64_t)e->shape[d]));
        ok = ok && add_item(offs, NULL, raw_u64(offset)) &&
             add_item(offs, NULL, raw_u64(offset + items[i].nbytes));
        if (!ok) {
            s = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        offset += items[i].nbytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        s = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t jlen = strlen(json), pad = (8 - (8 + jlen) % 8) % 8;
    uint64_t hlen = jlen + pad;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(hlen >> (8 * i));
    f = fopen(path, "wb");
    if (!f) {
        s = cv_fail(err, CV_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(json, 1, jlen, f) == jlen;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++)
        if (items[i].nbytes)
            ok = fwrite(items[i].e->data, 1, items[i].nbytes, f) == items[i].nbytes;
    if (fclose(f) != 0) ok = 0;
    f = NULL;
    if (!ok) {
        remove(path);
        s = cv_fail(err, CV_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
done:
    free(json);
    cJSON_Delete(root);
    free(items);
    free(names);
    return s;
}

void cv_st_drop_pages(const cv_st_tensor *t) {
    long pg = sysconf(_SC_PAGESIZE);
    if (!t || pg <= 0 || t->nbytes == 0) return;
    uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~((uintptr_t)pg - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* a hint: failure is harmless */
}
