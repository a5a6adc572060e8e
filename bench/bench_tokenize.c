/* bench_tokenize.c — tokenizer throughput: encodes a ~1 MB text with GPT-2 and Llama 3 and prints
 * MB/s (bench/tokenize_hf.py runs the same text through Hugging Face tokenizers).
 *
 * usage: bench_tokenize [TOKENIZERS_DIR] [REPEATS]
 *   TOKENIZERS_DIR defaults to build/tokenizers (unpacked from tests/data/tokenizers by make)
 * (gpt2/ and llama3/ inside it). The text is built deterministically: the paragraph below,
 * numbered, repeated to 1 MiB. Figures are medians over REPEATS runs after a warm-up
 * (bench_common.h) and are appended to runs/bench_tokenize.jsonl. */
#include "bench_common.h" /* first: it sets the feature macros */

#include "corevital/common.h"
#include "corevital/tokenizer.h"

/* Keep identical to PARAGRAPH in bench/tokenize_hf.py. */
static const char PARAGRAPH[] =
    "The quick brown fox jumps over the lazy dog; it's 3.14159 times faster than you'd think. "
    "In 2024, researchers measured 1,234,567 tokens/s on a GPU (NVIDIA H100) using C11 code:\n"
    "    for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }\n"
    "Naïve café owners in Zürich don't SHOUT, they whisper: \"¿Dónde está?\" — 東京は晴れです。 "
    "Emoji 😀👍🏽 and math ∑ x² ≤ ½ appear too.\n\n";

static char *make_text(size_t target, size_t *len) {
    size_t plen = strlen(PARAGRAPH), cap = target + plen + 32, n = 0;
    char *t = malloc(cap + 1);
    if (!t) return NULL;
    for (int i = 0; n < target; i++) {
        int k = snprintf(t + n, cap - n, "%d: ", i);
        n += (size_t)k;
        memcpy(t + n, PARAGRAPH, plen);
        n += plen;
    }
    t[n] = '\0';
    *len = n;
    return t;
}

static int bench(const char *dir, const char *name, const char *text, size_t len, int repeats) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cv_tokenizer *tok;
    cv_error err = {0};
    double t0 = cv_now_ms();
    if (cv_tokenizer_load_dir(path, &tok, &err) != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    double load_ms = cv_now_ms() - t0;
    /* mode 0: the whole text in one call; mode 1: line by line (keeping each '\n'), which is
     * how tokenize_hf.py feeds encode_batch */
    for (int mode = 0; mode < 2; mode++) {
        double times[64] = {0};
        size_t n_ids = 0;
        if (repeats > 63) repeats = 63;
        for (int r = 0; r <= repeats; r++) { /* run 0 is the warm-up */
            double t1 = cv_now_ms();
            n_ids = 0;
            size_t start = 0;
            while (start < len) {
                size_t end = len;
                if (mode == 1) {
                    const char *nl = memchr(text + start, '\n', len - start);
                    if (nl) end = (size_t)(nl - text) + 1;
                }
                int32_t *ids;
                size_t n;
                if (cv_tokenizer_encode(tok, text + start, end - start, 0, &ids, &n, &err) !=
                    CV_OK) {
                    fprintf(stderr, "error: %s\n", err.msg);
                    cv_tokenizer_free(tok);
                    return 1;
                }
                free(ids);
                n_ids += n;
                start = end;
            }
            if (r > 0) times[r - 1] = cv_now_ms() - t1;
        }
        double med = bench_median(times, repeats), mbs = (double)len / 1e6 / (med / 1e3);
        const char *mode_name = mode ? "encode per line" : "encode whole text";
        printf("%-7s corevital %-20s %8.2f MB/s  (%zu bytes -> %zu tokens, median of %d: %.1f ms; "
               "load %.0f ms)\n",
               name, mode_name, mbs, len, n_ids, repeats, med, load_ms);
        char json[512];
        snprintf(json, sizeof json,
                 "{\"tokenizer\": \"%s\", \"mode\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, "
                 "\"median_ms\": %.3f, \"mb_per_s\": %.3f, \"load_ms\": %.1f}",
                 name, mode_name, len, n_ids, med, mbs, load_ms);
        bench_json("tokenize", json);
    }
    cv_tokenizer_free(tok);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "build/tokenizers";
    int repeats = argc > 2 ? atoi(argv[2]) : 3;
    if (repeats < 1) repeats = 1;
    size_t len;
    char *text = make_text(1 << 20, &len);
    if (!text) return 1;
    int rc = bench(dir, "gpt2", text, len, repeats);
    rc |= bench(dir, "llama3", text, len, repeats);
    free(text);
    return rc;
}
