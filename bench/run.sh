#!/bin/sh
# make bench: the CPU benchmark suite (bench/README.md). Each bench checks its versions against
# the naive twin before timing and appends JSON lines under runs/. BUILD dir is $1.
set -e
B=${1:-build}
mkdir -p runs
for b in matmul mlp attention logits tokenize quant t5_decode e2e; do
    if [ -x "$B/bench/bench_$b" ]; then
        echo "== bench_$b"
        "$B/bench/bench_$b"
    fi
done
PY=${PYTHON:-python3}
if [ -f bench/tokenize_hf.py ]; then echo "== tokenize_hf.py"; $PY bench/tokenize_hf.py || true; fi
echo "== compare_pytorch.py"
$PY bench/compare_pytorch.py runs/bench-models || true
