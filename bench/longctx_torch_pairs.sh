#!/bin/sh
# longctx_torch_pairs.sh — our long-prompt prefill and decode against PyTorch sdpa's on the same
# checkpoint and prompt ids, in K interleaved pairs (ours, then torch, K times). This project's
# hosts drift by +-20% within minutes, so a ratio is only read from two runs next to each other:
# each pair prints its own ratios, and the end their medians and ranges.
#
# usage: sh bench/longctx_torch_pairs.sh [model_dir] [len] [pairs]
#        defaults: .cache/smollm2/model 4096 5. Needs $PYTHON (default python3) with torch and
#        transformers. THREADS (default 2), REPS (runs per side and pair, median; default 3),
#        DECODE (decode steps timed per run, default 8), TORCH_DTYPE (default float32) and the
#        bench_longctx variables (BENCH_DTYPE, BENCH_PREFILL_DTYPE...) for ours.
# Ours: "all" = statistics + health layer (corevital run's default), "stats" = statistics only.
set -eu
MODEL=${1:-.cache/smollm2/model}
N=${2:-4096}
K=${3:-5}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
DECODE=${DECODE:-8}
PYTHON=${PYTHON:-python3}
BUILD=${BUILD:-build}

[ -f "$MODEL/config.json" ] || { echo "longctx_torch_pairs: no checkpoint at $MODEL" >&2; exit 2; }
[ -x "$BUILD/bench/bench_longctx" ] || make -s "$BUILD/bench/bench_longctx"
"$PYTHON" -c "import torch, transformers" 2>/dev/null ||
    { echo "longctx_torch_pairs: $PYTHON has no torch + transformers" >&2; exit 2; }

TMP=$(mktemp)
ERR=$(mktemp)
trap 'rm -f "$TMP" "$ERR"' EXIT
echo "model $MODEL, prompt $N tokens, $THREADS threads, $K pairs of $REPS runs per side"
printf '%4s %9s %9s %9s %9s %9s %9s %8s %8s\n' pair ours_all ours_stat torch all/t stats/t \
    ours_ms torch_ms dec_x
i=1
while [ "$i" -le "$K" ]; do
    ours=$(OMP_NUM_THREADS=$THREADS BENCH_KERNELS=0 BENCH_MODES=all,stats BENCH_DECODE=$DECODE \
        "$BUILD/bench/bench_longctx" "$MODEL" "$N" "$REPS")
    torch=$(OMP_NUM_THREADS=$THREADS "$PYTHON" bench/longctx_pytorch.py "$MODEL" "$N" "$REPS" \
        "$DECODE" 2>"$ERR") || { cat "$ERR" >&2; exit 1; } # stderr: progress bars, warnings
    # ours: "  ctx mode prefill decode" rows; torch: "ctx prefill decode"
    all=$(echo "$ours" | awk '$2 == "all" && $1 ~ /^[0-9]+$/ {print $3, $4; exit}')
    stats=$(echo "$ours" | awk '$2 == "stats" && $1 ~ /^[0-9]+$/ {print $3; exit}')
    tline=$(echo "$torch" | awk -v n="$N" '$1 == n {print $2, $3; exit}')
    [ -n "$all" ] && [ -n "$stats" ] && [ -n "$tline" ] ||
        { echo "longctx_torch_pairs: pair $i: no numbers" >&2; echo "$ours$torch" >&2; cat "$ERR" >&2; exit 1; }
    echo "$i $all $stats $tline" | awk '{
        printf "%4d %9.1f %9.1f %9.1f %8.2fx %8.2fx %9.2f %8.2f %7.2fx\n",
            $1, $2, $4, $5, $2 / $5, $4 / $5, $3, $6, $6 / $3 }' | tee -a "$TMP"
    i=$((i + 1))
done
# medians and ranges of the pairs' ratios (columns 5, 6 and 9 of the table)
for col in 5 6 9; do
    name=$(echo "$col" | sed 's/^5$/all \/ torch prefill/; s/^6$/stats \/ torch prefill/;
        s/^9$/decode speed ours \/ torch/')
    sed 's/x//g' "$TMP" | awk -v c="$col" '{print $c}' | sort -n | awk -v name="$name" '
        {v[NR] = $1} END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%-28s median %.2fx, range %.2f-%.2fx over %d pairs\n", name, m, v[1], v[NR], NR }'
done
