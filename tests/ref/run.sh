#!/bin/sh
# Regenerate the parity fixtures under tests/fixtures/ (see tests/ref/README.md): the tiny models
# and their reference outputs (gen_models.py), then, when no arguments are given, the other
# generators in this directory (tokenizer ids, NF4 references).
# Needs torch, transformers, tokenizers, safetensors and numpy in the interpreter named by
# $PYTHON (default: python3). CI never runs this; it only reads the committed fixtures.
# Arguments go to gen_models.py only, e.g. `sh tests/ref/run.sh --only gpt2-tiny`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import torch, transformers, tokenizers, safetensors, numpy' 2>/dev/null; then
    echo "tests/ref/run.sh: $PYTHON lacks torch/transformers/tokenizers/safetensors/numpy;" >&2
    echo "  python3 -m venv tests/ref/.venv" >&2
    echo "  tests/ref/.venv/bin/pip install torch transformers tokenizers safetensors numpy" >&2
    echo "  PYTHON=tests/ref/.venv/bin/python make ref   (versions used: tests/ref/README.md)" >&2
    exit 1
fi
# One thread everywhere: identical floats and identical tokenizer training on every rerun.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1
export PYTHONHASHSEED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
"$PYTHON" "$here/gen_models.py" --out "$here/../fixtures" "$@"
if [ $# -eq 0 ]; then
    for gen in gen_tokenizer_refs.py gen_nf4_ref.py; do
        if [ -f "$here/$gen" ]; then
            echo "== $gen"
            "$PYTHON" "$here/$gen"
        fi
    done
fi
