#!/usr/bin/env python3
"""tokenize_hf.py — the Hugging Face side of bench_tokenize.c: the same ~1 MiB text through the
`tokenizers` library, single-threaded (one encode call, RAYON_NUM_THREADS=1) and with its default
parallelism (encode_batch over the text's lines). Figures are medians of REPEATS runs after a
warm-up, like bench_tokenize.c; the token counts must equal the C bench's for the same mode.

usage: python bench/tokenize_hf.py [TOKENIZERS_DIR] [REPEATS]   (pip install tokenizers)"""
import os
import statistics
import sys
import time

# Keep identical to PARAGRAPH in bench/bench_tokenize.c.
PARAGRAPH = ("The quick brown fox jumps over the lazy dog; it's 3.14159 times faster than you'd think. "
             "In 2024, researchers measured 1,234,567 tokens/s on a GPU (NVIDIA H100) using C11 code:\n"
             "    for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }\n"
             "Naïve café owners in Zürich don't SHOUT, they whisper: \"¿Dónde está?\" — 東京は晴れです。 "
             "Emoji 😀👍🏽 and math ∑ x² ≤ ½ appear too.\n\n")


def make_text(target=1 << 20):
    parts, n, i = [], 0, 0
    while n < target:
        s = f"{i}: {PARAGRAPH}".encode("utf-8")
        parts.append(s)
        n += len(s)
        i += 1
    return b"".join(parts).decode("utf-8")


def load(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok = Tokenizer(models.BPE.from_file(os.path.join(path, "vocab.json"),
                                         os.path.join(path, "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def main():
    single = "--single" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else os.path.join("build", "tokenizers")
    repeats = int(args[1]) if len(args) > 1 else 3
    if not single:  # the single-threaded figure runs in a child with RAYON_NUM_THREADS=1
        import subprocess
        env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        subprocess.run([sys.executable, __file__, "--single"] + args, env=env, check=True)
    text = make_text()
    nbytes = len(text.encode("utf-8"))
    lines = text.splitlines(keepends=True)
    for name in ("gpt2", "llama3"):
        tok = load(os.path.join(root, name))
        modes = [("whole", "single-thread encode whole text"),
                 ("batch", "single-thread encode_batch(lines)")] if single else \
                [("batch", "default-threads encode_batch(lines)")]
        for mode, label in modes:
            times, n = [], 0
            for r in range(repeats + 1):  # run 0 is the warm-up
                t0 = time.perf_counter()
                if mode == "whole":
                    n = len(tok.encode(text, add_special_tokens=False).ids)
                else:
                    n = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
                if r:
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"{name:7s} HF {label:36s} {nbytes / 1e6 / med:8.2f} MB/s  "
                  f"({nbytes} bytes -> {n} tokens)")

if __name__ == "__main__":
    main()
