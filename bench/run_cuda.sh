#!/bin/sh
# make bench-cuda: the CUDA kernel ladder and end-to-end decode (bench/bench_cuda.c; docs/cuda.md),
# then PyTorch / transformers eager on the same GPU and the same random checkpoints when torch
# with CUDA is installed (skipped with a note otherwise). Prints "CUDA not available" and exits 0
# on a machine without a GPU or a build without nvcc. BUILD dir is $1; extra arguments go to
# bench_cuda (e.g. --small). Checkpoints: runs/bench-cuda-models (kept for the PyTorch run).
set -e
B=${1:-build}
[ $# -gt 0 ] && shift
mkdir -p runs
if [ ! -x "$B/bench/bench_cuda" ]; then
    echo "run_cuda.sh: $B/bench/bench_cuda is missing (run make first)" >&2
    exit 1
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader || true
fi
"$B/bench/bench_cuda" "$@" runs/bench-cuda-models
[ -d runs/bench-cuda-models ] || exit 0
${PYTHON:-python3} - runs/bench-cuda-models <<'PY' || true
# PyTorch eager on the GPU: same checkpoints, same prompt ids as bench_cuda (128 tokens,
# id i = (i * 7919 + 13) % V), 128 greedy tokens; "reference" = output_attentions,
# output_hidden_states and output_scores on (how the Python CoreVital runs), "plain" = off.
import os, sys, time
try:
    import torch, transformers
except ImportError:
    print("pytorch-cuda: torch/transformers not installed; comparison skipped"); sys.exit(0)
if not torch.cuda.is_available():
    print("pytorch-cuda: torch has no CUDA device; comparison skipped"); sys.exit(0)
P, G = 128, 128
work = sys.argv[1]
for name in sorted(os.listdir(work)):
    d = os.path.join(work, name)
    if not os.path.exists(os.path.join(d, "config.json")):
        continue
    m = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").cuda().eval()
    V = m.config.vocab_size
    ids = torch.tensor([[(i * 7919 + 13) % V for i in range(P)]], device="cuda")
    for mode in ("reference", "plain"):
        extra = dict(output_attentions=True, output_hidden_states=True, output_scores=True,
                     return_dict_in_generate=True) if mode == "reference" else {}
        def run(n):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            with torch.no_grad():
                m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
            torch.cuda.synchronize(); return time.perf_counter() - t0
        run(4)
        t1, tg = run(1), run(G)
        print(f"pytorch-cuda {name:16} {mode:9} prefill {t1 * 1e3:8.1f} ms  "
              f"decode {(G - 1) / max(tg - t1, 1e-9):8.1f} tok/s  ({torch.__version__}, {transformers.__version__})")
    del m
    torch.cuda.empty_cache()
PY
