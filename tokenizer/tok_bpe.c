/* tok_bpe.c — the BPE model: initial symbols (vocab chars, byte fallback, fused unk), then the
 * merge loop of HF's word.rs: a min-heap of candidate pairs keyed by (rank, position); stale
 * entries are skipped on pop; symbols form a doubly linked list. ignore_merges (Llama 3) looks
 * the whole pre-token up first. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t rank, pos, left, right, new_id; /* pair (left id, right id) at symbol pos */
} merge_cand;

typedef struct {
    int32_t *id, *prev, *next;
    int n;
} symbols;

static void add_sym(symbols *sy, int32_t id) {
    int k = sy->n++;
    sy->id[k] = id;
    sy->prev[k] = k - 1;
    sy->next[k] = -1;
    if (k > 0) sy->next[k - 1] = k;
}

static inline int cand_less(const merge_cand *a, const merge_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(merge_cand *h, int *n, merge_cand c) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static merge_cand heap_pop(merge_cand *h, int *n) {
    merge_cand top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const merge_cand *best = &last;
        if (l < *n && cand_less(&h[l], best)) m = l, best = &h[l];
        if (r < *n && cand_less(&h[r], best)) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void try_push(const cv_tokenizer *tok, const symbols *sy, merge_cand *heap, int *hn,
                     int pos) {
    int nx = sy->next[pos];
    if (nx < 0) return;
    int32_t rank, new_id;
    if (tok_mergemap_get(&tok->merges, sy->id[pos], sy->id[nx], &rank, &new_id)) {
        merge_cand c = {rank, pos, sy->id[pos], sy->id[nx], new_id};
        heap_push(heap, hn, c);
    }
}

/* Run the merges over sy (in place) and append the surviving ids to out. */
static void merge_and_emit(const cv_tokenizer *tok, symbols *sy, tok_ids *out, merge_cand *heap) {
    int hn = 0;
    for (int i = 0; i + 1 < sy->n; i++) try_push(tok, sy, heap, &hn, i);
    while (hn > 0) {
        merge_cand c = heap_pop(heap, &hn);
        int nx = sy->next[c.pos];
        /* stale: the left symbol was absorbed, or either side changed since the push */
        if (sy->id[c.pos] != c.left || nx < 0 || sy->id[nx] != c.right) continue;
        sy->id[c.pos] = c.new_id;
        sy->next[c.pos] = sy->next[nx];
        if (sy->next[nx] >= 0) sy->prev[sy->next[nx]] = c.pos;
        sy->id[nx] = -2; /* removed */
        sy->next[nx] = -1;
        if (sy->prev[c.pos] >= 0) try_push(tok, sy, heap, &hn, sy->prev[c.pos]);
        try_push(tok, sy, heap, &hn, c.pos);
    }
    for (int i = 0; i >= 0 && i < sy->n; i = sy->next[i]) tok_ids_push(out, sy->id[i]);
}

void tok_bpe_word(const cv_tokenizer *tok, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return;
    /* Byte-level input: map to the byte alphabet (for the whole-word lookup) and build symbols
     * straight from the per-byte id table. */
    char small_map[512];
    char *mapped = NULL;
    const char *word = w;
    size_t wlen = n;
    if (tok->byte_level) {
        size_t cap = n * 2;
        mapped = cap <= sizeof small_map ? small_map : malloc(cap);
        if (!mapped) {
            out->oom = 1;
            return;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t cp = tok->byte_cp[(unsigned char)w[i]];
            if (cp < 0x80) {
                mapped[k++] = (char)cp;
            } else {
                mapped[k++] = (char)(0xC0 | (cp >> 6));
                mapped[k++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        word = mapped;
        wlen = k;
    }
    if (tok->ignore_merges) {
        int32_t id;
        if (tok_strmap_get(&tok->vocab, word, wlen, &id)) {
            tok_ids_push(out, id);
            if (mapped != small_map) free(mapped);
            return;
        }
    }
    /* at most one symbol per byte of the (mapped) word, plus byte-fallback expansion (4/char) */
    size_t max_sym = wlen + 1;
    int32_t small_arr[3 * 128];
    /* heap size never exceeds (n - 1) initial pairs + one net push per merge < 2n */
    merge_cand small_heap[2 * 128];
    int32_t *arr = max_sym <= 128 ? small_arr : malloc(3 * max_sym * sizeof *arr);
    merge_cand *heap = max_sym <= 128 ? small_heap : malloc(2 * max_sym * sizeof *heap);
    if (!arr || !heap) {
        out->oom = 1;
        goto done;
    }
    symbols sy = {arr, arr + max_sym, arr + 2 * max_sym, 0};
    int32_t unk = -1;
#define ADD_SYM(x) add_sym(&sy, (x))
    if (tok->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = tok->byte_ids[(unsigned char)w[i]];
            if (id >= 0) {
                if (unk >= 0) {
                    ADD_SYM(unk);
                    unk = -1;
                }
                ADD_SYM(id);
            } else if (tok->unk_id >= 0) {
                if (unk >= 0 && !tok->fuse_unk) ADD_SYM(unk);
                unk = tok->unk_id;
            }
        }
    } else {
        size_t i = 0;
        while (i < wlen) {
            uint32_t cp;
            int l = tok_utf8_next(word + i, wlen - i, &cp);
            int32_t id;
            if (tok_strmap_get(&tok->vocab, word + i, (size_t)l, &id)) {
                if (unk >= 0) {
                    ADD_SYM(unk);
                    unk = -1;
                }
                ADD_SYM(id);
            } else {
                int fell_back = 0;
                if (tok->byte_fallback) {
                    int32_t bids[4];
                    fell_back = 1;
                    for (int k = 0; k < l && k < 4; k++) {
                        bids[k] = tok->byte_fallback_ids[(unsigned char)word[i + (size_t)k]];
                        if (bids[k] < 0) fell_back = 0;
                    }
                    /* HF adds the byte tokens without flushing a pending unk first */
                    if (fell_back)
                        for (int k = 0; k < l && k < 4; k++) add_sym(&sy, bids[k]);
                }
                if (!fell_back && tok->unk_id >= 0) {
                    if (unk >= 0 && !tok->fuse_unk) ADD_SYM(unk);
                    unk = tok->unk_id;
                }
            }
            i += (size_t)l;
        }
    }
    if (unk >= 0) ADD_SYM(unk);
#undef ADD_SYM
    merge_and_emit(tok, &sy, out, heap);
done:
    if (arr != small_arr) free(arr);
    if (heap != small_heap) free(heap);
    if (mapped != small_map) free(mapped);
}
