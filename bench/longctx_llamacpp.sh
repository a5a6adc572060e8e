#!/bin/sh
# longctx_llamacpp.sh — our long-context prefill and decode against llama.cpp's llama-bench on
# the same weights, interleaved: for each weight dtype, ours (bench_longctx, statistics on and
# off) then llama-bench (-p N for prefill, -n D -d N for decode at depth N), length by length.
#
# usage: sh bench/longctx_llamacpp.sh [model_dir] [lens] [dtypes]
#        defaults: .cache/smollm2/model 512,4096 f32,bf16. Needs $PYTHON (default python3) with
#        numpy, sentencepiece, transformers (the converter's imports) and, to build llama.cpp the
#        first time, pip access to the registry, cmake and a C++ compiler.
#        THREADS (default 2), REPS (default 3), DECODE (llama-bench -n, default 32),
#        PREFILL_DTYPES (ours' model.prefill_dtype, each in turn; default float32, e.g.
#        float32,bfloat16 for the exact and the BF16 dot-product prefill).
#
# llama.cpp is built from the registry's llama-cpp-python source package (its vendor/llama.cpp)
# into .cache/llamacpp (ignored by git); the checkpoint is converted with llama.cpp's own
# convert_hf_to_gguf.py. Nothing of llama.cpp is committed.
set -eu
MODEL=${1:-.cache/smollm2/model}
LENS=${2:-512,4096}
DTYPES=${3:-f32,bf16}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
DECODE=${DECODE:-32}
PREFILL_DTYPES=${PREFILL_DTYPES:-float32}
PYTHON=${PYTHON:-python3}
CACHE=.cache/llamacpp
BUILD=${BUILD:-build}

[ -f "$MODEL/config.json" ] || { echo "longctx_llamacpp: no checkpoint at $MODEL (scripts/get-smollm2.sh)" >&2; exit 2; }
mkdir -p "$CACHE"
LB=$(ls "$CACHE"/llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-bench 2>/dev/null | head -1 || true)
if [ -z "$LB" ]; then
    echo "== building llama-bench from the registry's llama-cpp-python source package"
    ls "$CACHE"/llama_cpp_python-*.tar.gz >/dev/null 2>&1 ||
        "$PYTHON" -m pip download llama-cpp-python --no-binary :all: --no-deps -d "$CACHE"
    tar -xzf "$(ls "$CACHE"/llama_cpp_python-*.tar.gz | head -1)" -C "$CACHE"
    SRC=$(ls -d "$CACHE"/llama_cpp_python-*/vendor/llama.cpp | head -1)
    cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DGGML_OPENMP=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$SRC/build" --target llama-bench -j "$THREADS" >/dev/null
    LB=$(ls "$CACHE"/llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-bench | head -1)
fi
SRC=$(dirname "$(dirname "$(dirname "$LB")")")
VER=$(basename "$(dirname "$(dirname "$SRC")")")

make "$BUILD/bench/bench_longctx" >/dev/null # always: a stale binary measures old code
echo "== $(date -u +%FT%TZ) ours vs llama.cpp ($VER), $THREADS threads, model $MODEL"
for dt in $(echo "$DTYPES" | tr , ' '); do
    GGUF="$CACHE/$(basename "$MODEL")-$dt.gguf"
    [ -f "$GGUF" ] || "$PYTHON" "$SRC/convert_hf_to_gguf.py" "$MODEL" --outtype "$dt" \
        --outfile "$GGUF" >/dev/null 2>&1 || { echo "convert to $dt failed" >&2; exit 1; }
    case $dt in f32) ours=float32 ;; bf16) ours=bfloat16 ;; *) ours=$dt ;; esac
    for n in $(echo "$LENS" | tr , ' '); do
        for pd in $(echo "$PREFILL_DTYPES" | tr , ' '); do
            echo "-- weights $dt, $n tokens: ours, prefill products $pd (all = statistics + health, stats, off)"
            OMP_NUM_THREADS=$THREADS BENCH_KERNELS=0 BENCH_DTYPE=$ours BENCH_DECODE=16 \
                BENCH_PREFILL_DTYPE=$pd "$BUILD/bench/bench_longctx" "$MODEL" "$n" "$REPS" |
                grep -E '^ +[0-9]+ (all|stats|off)|memory|^note'
        done
        echo "-- weights $dt, $n tokens: llama.cpp (pp$n; tg$DECODE at depth $n)"
        "$LB" -m "$GGUF" -t "$THREADS" -r "$REPS" -p "$n" -n 0 -o md 2>/dev/null | grep -E "pp$n"
        "$LB" -m "$GGUF" -t "$THREADS" -r "$REPS" -p 0 -n "$DECODE" -d "$n" -o md 2>/dev/null |
            grep -E "tg$DECODE"
    done
done
