#!/usr/bin/env python3
"""PyTorch + transformers on the same random checkpoints as bench_e2e (runs/bench-models/*),
the same prompt ids, thread count and token counts; prints tokens/s and the ratio to ours.

Two PyTorch modes, as issue 7 asks:
  reference: eager attention with output_attentions, output_hidden_states and output_scores on
             (how the Python CoreVital runs generate)
  plain:     generate() with nothing extra
Skipped (exit 0 with a note) when torch or transformers are not installed."""
import json
import os
import statistics
import sys
import time

PROMPT_TOKENS, DECODE_TOKENS, REPS = 128, 64, 3


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "runs/bench-models"
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    try:
        import torch
        import transformers
    except ImportError:
        print("compare_pytorch: torch/transformers not installed; PyTorch comparison skipped")
        return 0
    torch.set_num_threads(threads)
    ours = {}
    if os.path.exists("runs/bench_e2e.jsonl"):
        for line in open("runs/bench_e2e.jsonl"):
            r = json.loads(line)
            ours[(r["model"], r["stats"])] = r  # the latest line per key wins
    prompt = torch.tensor([[100 + (i * 37) % 5000 for i in range(PROMPT_TOKENS)]])
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, {threads} threads, fp32 compute")
    print(f"{'model':16} {'mode':10} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'ours (stats on)':>15} {'ratio':>7}")
    for name in sorted(os.listdir(work)):
        d = os.path.join(work, name)
        if not os.path.exists(os.path.join(d, "config.json")):
            continue
        model = transformers.AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.float32, attn_implementation="eager").eval()
        for mode in ("reference", "plain"):
            extra = dict(output_attentions=True, output_hidden_states=True, output_scores=True,
                         return_dict_in_generate=True) if mode == "reference" else {}

            def run(n):
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                   pad_token_id=0, **extra)
                return time.perf_counter() - t0

            run(2)  # warm-up
            pre, dec = [], []
            for _ in range(REPS):
                tp = run(1)
                tt = run(DECODE_TOKENS + 1)
                pre.append(PROMPT_TOKENS / tp)
                dec.append(DECODE_TOKENS / max(tt - tp, 1e-9))
            p, dt = statistics.median(pre), statistics.median(dec)
            o = ours.get((name, True))
            ratio = o["decode_tok_s"] / dt if o else float("nan")
            print(f"{name:16} {mode:10} {p:13.1f} {dt:12.2f} "
                  f"{(o['decode_tok_s'] if o else float('nan')):15.2f} {ratio:7.2f}")
            os.makedirs("runs", exist_ok=True)
            with open("runs/bench_pytorch.jsonl", "a") as f:
                f.write(json.dumps({"bench": "pytorch", "model": name, "mode": mode, "threads": threads,
                                    "prefill_tok_s": p, "decode_tok_s": dt,
                                    "ours_decode_tok_s_stats_on": o["decode_tok_s"] if o else None,
                                    "decode_ratio_ours_over_torch": ratio,
                                    "torch": torch.__version__,
                                    "transformers": transformers.__version__}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
