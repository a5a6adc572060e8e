"""longctx_pytorch.py — the PyTorch side of bench_longctx: prefill tok/s and decode ms/step at
long contexts for a Hugging Face checkpoint on the CPU, fp32 (TORCH_DTYPE=bfloat16: the model
held and computed in bf16, torch's own bf16 CPU kernels), attn_implementation="sdpa", the same
token ids as bench_longctx (100 + (i * 37) % 5000) and greedy decoding with the KV cache.

usage: python bench/longctx_pytorch.py [model_dir] [lens] [reps] [decode_steps]
       (defaults .cache/smollm2/model 512,2048,4096 1 8; threads: torch's default unless
       OMP_NUM_THREADS is set)
       python bench/longctx_pytorch.py --reference [model_dir] [lens]
       the Python tool's own mode (attn_implementation="eager", output_attentions and
       output_hidden_states on, as its hooks need): one prefill per length, each in a fresh
       process, its time and the process's peak RSS; a length whose attention maps alone would
       not fit in 60% of the available memory is reported with what it would need, not run.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def reference_one(model_dir, P):
    """One prefill in the reference's mode; prints a JSON line (time, peak RSS)."""
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.tensor([[100 + (i * 37) % 5000 for i in range(P)]])
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True, output_attentions=True, output_hidden_states=True)
        dt = time.perf_counter() - t0
    att = sum(a.numel() * a.element_size() for a in out.attentions)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ctx": P, "prefill_s": round(dt, 3), "peak_rss_mib": round(rss),
                      "attention_maps_mib": round(att / 2**20)}))


def reference(model_dir, lens):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    print(f"reference mode (eager, output_attentions + output_hidden_states), fp32, "
          f"{torch.get_num_threads()} threads; available memory {avail / 2**30:.1f} GiB")
    print(f"{'ctx':>6} {'prefill s':>10} {'tok/s':>8} {'peak RSS MiB':>13} {'attn maps MiB':>14}")
    os.makedirs("runs", exist_ok=True)
    for P in lens:
        need = L * H * P * P * 4  # the attention maps it returns, fp32
        rec = {"bench": "longctx_reference", "ctx": P, "model": model_dir,
               "attention_maps_mib": round(need / 2**20)}
        if need > 0.6 * avail:
            rec["status"] = "not run: needs more memory than available"
            print(f"{P:>6} {'-':>10} {'-':>8} {'-':>13} {need / 2**20:>14.0f}  not run: the "
                  f"attention maps alone need {need / 2**30:.1f} GiB of {avail / 2**30:.1f} GiB")
        else:
            r = subprocess.run([sys.executable, __file__, "--reference-one", model_dir, str(P)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                rec["status"] = f"failed (exit {r.returncode})"
                print(f"{P:>6} failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
            else:
                one = json.loads(r.stdout.strip().splitlines()[-1])
                rec.update(one, status="ok")
                print(f"{P:>6} {one['prefill_s']:>10.2f} {P / one['prefill_s']:>8.1f} "
                      f"{one['peak_rss_mib']:>13} {one['attention_maps_mib']:>14}")
        with open("runs/bench_longctx.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--reference-one":
        return reference_one(sys.argv[2], int(sys.argv[3]))
    if len(sys.argv) > 1 and sys.argv[1] == "--reference":
        d = sys.argv[2] if len(sys.argv) > 2 else ".cache/smollm2/model"
        lens = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "512,2048,4096,8192").split(",")]
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        return reference(d, lens)
    model_dir = sys.argv[1] if len(sys.argv) > 1 else ".cache/smollm2/model"
    lens = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "512,2048,4096").split(",")]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    dname = os.environ.get("TORCH_DTYPE", "float32")
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dname), attn_implementation="sdpa"
    ).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sdpa, {dname}, {model_dir}")
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
                                "dtype": dname,
                                "prefill_tok_s": round(p, 2), "decode_ms_step": round(d, 3),
                                "reps": reps, "model": model_dir}) + "\n")


if __name__ == "__main__":
    main()
