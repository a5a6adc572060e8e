"""longctx_pytorch.py — the PyTorch side of bench_longctx: prefill tok/s and decode ms/step at
long contexts for a Hugging Face checkpoint on the CPU, fp32, attn_implementation="sdpa", the
same token ids as bench_longctx (100 + (i * 37) % 5000) and greedy decoding with the KV cache.

usage: python bench/longctx_pytorch.py [model_dir] [lens] [reps] [decode_steps]
       (defaults .cache/smollm2/model 512,2048,4096 1 8; threads: torch's default unless
       OMP_NUM_THREADS is set)
"""
import json
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else ".cache/smollm2/model"
    lens = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "512,2048,4096").split(",")]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sdpa, fp32, {model_dir}")
    print(f"{'ctx':>6} {'prefill tok/s':>14} {'decode ms/step':>15}")
    os.makedirs("runs", exist_ok=True)
    for P in lens:
        ids = torch.tensor([[100 + (i * 37) % 5000 for i in range(P)]])
        pre, dec = [], []
        for _ in range(reps):
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = model(ids, use_cache=True)
                pre.append(P / (time.perf_counter() - t0))
                past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    out = model(tok, past_key_values=past, use_cache=True)
                    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    times.append((time.perf_counter() - t0) * 1e3)
                dec.append(statistics.median(times))
        p, d = statistics.median(pre), statistics.median(dec)
        print(f"{P:>6} {p:>14.1f} {d:>15.2f}")
        with open("runs/bench_longctx.jsonl", "a") as f:
            f.write(json.dumps({"bench": "longctx_pytorch", "ctx": P, "threads": torch.get_num_threads(),
                                "prefill_tok_s": round(p, 2), "decode_ms_step": round(d, 3),
                                "reps": reps, "model": model_dir}) + "\n")


if __name__ == "__main__":
    main()
