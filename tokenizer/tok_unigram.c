/* tok_unigram.c — the Unigram model (HF models/unigram/model.rs encode_optimized): Viterbi over
 * character boundaries, candidates in increasing length order, a later candidate replaces the
 * best path only when strictly better; a character no piece covers by itself gets an unknown
 * candidate scored min_score - 10; consecutive unknowns are fused into one unk id. */
#include "tok_internal.h"

#include <stdlib.h>

typedef struct {
    double score;
    int32_t start; /* -1: not reached */
    int32_t id;
} viterbi_node;

void tok_unigram_word(const cv_tokenizer *tok, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return;
    viterbi_node *best = malloc((n + 1) * sizeof *best);
    if (!best) {
        out->oom = 1;
        return;
    }
    for (size_t i = 0; i <= n; i++) best[i].start = -1;
    best[0].start = 0;
    best[0].score = 0.0;
    size_t s = 0;
    while (s < n) {
        uint32_t cp;
        int mblen = tok_utf8_next(w + s, n - s, &cp);
        double base = best[s].score;
        int has_single = 0;
        size_t e = s;
        while (e < n && e - s < tok->max_piece_len) {
            uint32_t c2;
            e += (size_t)tok_utf8_next(w + e, n - e, &c2);
            if (e - s > tok->max_piece_len) break;
            int32_t id;
            if (!tok_strmap_get(&tok->vocab, w + s, e - s, &id)) continue;
            double cand = base + tok->scores[id];
            if (best[e].start < 0 || cand > best[e].score) {
                best[e].score = cand;
                best[e].start = (int32_t)s;
                best[e].id = id;
            }
            if (e - s == (size_t)mblen) has_single = 1;
        }
        if (!has_single) {
            size_t t = s + (size_t)mblen;
            double cand = base + tok->unk_score;
            if (best[t].start < 0 || cand > best[t].score) {
                best[t].score = cand;
                best[t].start = (int32_t)s;
                best[t].id = tok->unk_id;
            }
        }
        s += (size_t)mblen;
    }
    /* backtrack into a reversed id list, fusing runs of unknowns */
    tok_ids rev = {0};
    size_t end = n;
    int in_unk = 0;
    while (end > 0) {
        const viterbi_node *nd = &best[end];
        if (tok->unk_id >= 0 && nd->id == tok->unk_id) {
            if (!in_unk) tok_ids_push(&rev, tok->unk_id);
            in_unk = 1;
        } else {
            tok_ids_push(&rev, nd->id);
            in_unk = 0;
        }
        end = (size_t)nd->start;
    }
    for (size_t i = rev.n; i-- > 0;) tok_ids_push(out, rev.p[i]);
    if (rev.oom) out->oom = 1;
    free(rev.p);
    free(best);
}
