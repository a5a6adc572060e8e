#!/bin/sh
# Run each libFuzzer harness of tests/fuzz/ for FUZZ_SECONDS (default 20) from the repository
# root: seed corpora built from the fixtures, then the saved findings of regressions/<harness>/
# replayed first (each one a bug that was fixed: it must not crash again).
#   sh tests/fuzz/run.sh BUILD_DIR [HARNESS...]      (make fuzz calls it)
# A crash, leak, timeout or sanitizer report fails the run; the input is left as
# BUILD_DIR/fuzz/findings/<harness>/crash-* for a regression file.
set -eu
build=${1:-build-fuzz}
shift || true
secs=${FUZZ_SECONDS:-20}
harnesses=${*:-"safetensors model_config tokenizer_json tokenize yaml trace hub"}
root=$build/fuzz
status=0
seed() { # seed NAME: fill $root/corpus/NAME from the fixtures
    c=$root/corpus/$1
    mkdir -p "$c"
    case $1 in
    safetensors)
        python3 - "$c" <<'PY'
import json, struct, sys
out = sys.argv[1]
def st(tensors, meta=None, name="s"):
    hdr, data = {}, b""
    for n, (dt, shape, raw) in tensors.items():
        hdr[n] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta: hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    open(f"{out}/{name}.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
st({"a": ("F32", [2], struct.pack("<2f", 1, 2)), "b": ("BF16", [1, 2], b"\x80\x3f\x00\x40")},
   {"format": "pt"}, "two")
st({"s": ("I64", [], struct.pack("<q", 7)), "z": ("F16", [0, 3], b"")}, None, "scalar_empty")
PY
        ;;
    model_config) cp tests/fixtures/config/*.json "$c/"; for d in tests/fixtures/*/config.json; do cp "$d" "$c/$(basename "$(dirname "$d")").json"; done ;;
    tokenizer_json) for d in tests/fixtures/gpt2-tiny tests/fixtures/llama-tiny tests/fixtures/t5-tiny tests/fixtures/tokenizers/unigram tests/fixtures/tokenizers/unigram-precompiled; do cp "$d/tokenizer.json" "$c/$(basename "$d").json"; done ;;
    tokenize) i=0; for t in "Hello world" " it's  2026!\n\tok" "$(printf '\303\251t\303\251 \360\237\230\200 <s></s>')" "$(printf '\377\376 bad utf8 \300\200')"; do
            for sel in A B C D; do printf '%s%s' "$sel" "$t" > "$c/seed$i"; i=$((i + 1)); done; done ;;
    yaml) cp configs/default.yaml "$c/"; printf 'generation:\n  top_k: 5\n  do_sample: false\nsummaries:\n  hidden:\n    stats: [mean, std]\n' > "$c/small.yaml" ;;
    trace) cp tests/fixtures/traces/*.json tests/fixtures/golden/trace_small*.json "$c/" ;;
    hub) printf 'HTTP/1.1 302 Found\r\nLocation: /org/name/resolve/main/config.json\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\n\r\nHTTP/1.1 200 OK\r\nETag: W/"abc"\r\nX-Linked-Etag: "sha"\r\nX-Linked-Size: 12\r\nContent-Range: bytes 0-11/12\r\n\0{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}' > "$c/redirect"
         printf 'HTTP/1.1 404 Not Found\r\nX-Error-Code: RevisionNotFound\r\nX-Error-Message: nope\r\n' > "$c/error"
         printf 'HTTP/1.1 301 Moved\r\nLocation: https://cdn.example.invalid/blob\r\n\0{}' > "$c/cdn" ;;
    esac
}
for h in $harnesses; do
    bin=$root/fuzz_$h
    [ -x "$bin" ] || { echo "fuzz: $bin not built (make fuzz)" >&2; exit 2; }
    seed "$h"
    mkdir -p "$root/findings/$h"
    if [ -d "tests/fuzz/regressions/$h" ] && [ -n "$(ls "tests/fuzz/regressions/$h")" ]; then
        echo "== fuzz_$h: replaying tests/fuzz/regressions/$h"
        "$bin" -rss_limit_mb=2048 tests/fuzz/regressions/$h/* || status=1
    fi
    echo "== fuzz_$h: ${secs}s"
    if ! "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$root/findings/$h/" "$root/corpus/$h" 2>"$root/$h.log"; then
        tail -40 "$root/$h.log" >&2
        status=1
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$root/$h.log" | tr '\n' ' '
    echo
done
exit $status
