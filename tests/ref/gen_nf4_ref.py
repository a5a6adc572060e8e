#!/usr/bin/env python3
"""Reference NF4 / int8 quantization values for tests/test_quant.c.

bitsandbytes quantizes NF4 on CUDA only (kQuantizeBlockwise in csrc/kernels.cu); its newer CPU
fallback picks codes with an argmin instead of the CUDA decision tree. So this script re-implements
the CUDA algorithm in numpy, step by step, from the kernel source:
  * the weight is flattened row-major and cut into blocks of `blocksize` (64) values, the last block
    padded with 0.0 (cub BlockLoad's default for invalid items);
  * absmax = max |x| over the block (fp32); the kernel then multiplies every value by
    `1.0f / absmax` (a reciprocal, not a division);
  * dQuantizeNF4: a binary tree of strict `x > threshold` tests (thresholds = the literals of the
    kernel), so a value exactly on a threshold takes the lower code and NaN (absmax 0) gives 0;
  * two codes per byte: element 2j << 4 | element 2j+1 (first value in the high nibble);
  * dequant: NF4[code] * absmax[i // blocksize] in fp32 (kDequantizeBlockwise).
int8 (LLM.int8 weights): per row absmax, round(w * (127 / absmax)) half to even (torch.round).

The script cross-checks the tree against "nearest code, lower index on ties" and prints how many
values differ (0 expected except in the edge case "c", whose values sit exactly on the kernel's
float thresholds, which are not exact midpoints), then writes tests/fixtures/quant/nf4_ref.safetensors (a few KB).
Usage: python tests/ref/gen_nf4_ref.py [--out tests/fixtures/quant/nf4_ref.safetensors]
Needs numpy and safetensors only.
"""

import argparse
import os

import numpy as np
from safetensors.numpy import save_file

F32 = np.float32

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=F32)


def f32_literal(text):
    """A C float literal ("0.86...f") the way a C/CUDA compiler reads it: the decimal correctly
    rounded to float32 directly. Going through a double first (np.float32(float(text))) rounds
    twice, and 4 of the 15 thresholds are midpoints of floats that double-rounding resolves to
    even, 1 ulp away from what the compiled kernel compares against."""
    from fractions import Fraction
    exact = Fraction(text)
    f = F32(float(text))
    cands = [np.nextafter(f, F32(-np.inf)), f, np.nextafter(f, F32(np.inf))]
    return min(cands, key=lambda c: abs(Fraction(float(c)) - exact))


# dQuantizeNF4's literals (as strings: see f32_literal), in the order the tree tests them.
T = {k: f32_literal(v) for k, v in {
    "root": "0.03979014977812767", "1": "0.3893125355243683", "11": "0.6427869200706482",
    "111": "0.8614784181118011", "110": "0.5016634166240692", "10": "0.2035212516784668",
    "101": "0.2920137718319893", "100": "0.1202552504837513", "0": "-0.33967943489551544",
    "01": "-0.13791173323988914", "011": "-0.045525018125772476", "010": "-0.23460740596055984",
    "00": "-0.6106329262256622", "001": "-0.4599952697753906", "000": "-0.8480964004993439"}.items()}
THRESHOLDS = np.array(sorted(T.values()), dtype=F32)


def dquantize_nf4(x):
    """The CUDA decision tree, literally (x is a numpy float32 scalar)."""
    if x > T["root"]:
        if x > T["1"]:
            if x > T["11"]:
                return 15 if x > T["111"] else 14
            return 13 if x > T["110"] else 12
        if x > T["10"]:
            return 11 if x > T["101"] else 10
        return 9 if x > T["100"] else 8
    if x > T["0"]:
        if x > T["01"]:
            return 7 if x > T["011"] else 6
        return 5 if x > T["010"] else 4
    if x > T["00"]:
        return 3 if x > T["001"] else 2
    return 1 if x > T["000"] else 0


def quantize_nf4(w, blocksize=64):
    flat = np.ascontiguousarray(w, dtype=F32).reshape(-1)
    n = flat.size
    nb = -(-n // blocksize)
    padded = np.zeros(nb * blocksize, dtype=F32)
    padded[:n] = flat
    blocks = padded.reshape(nb, blocksize)
    absmax = np.abs(blocks).max(axis=1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (F32(1.0) / absmax).astype(F32)
        scaled = (blocks * inv[:, None]).astype(F32).reshape(-1)
    m = n + (n % 2)  # codes stored: n rounded up to a whole byte (the pad value is 0.0)
    idx = np.array([dquantize_nf4(scaled[i]) for i in range(m)], dtype=np.uint8)
    packed = ((idx[0::2] << 4) | idx[1::2]).astype(np.uint8)
    dq = (NF4[idx[:n]] * absmax[np.arange(n) // blocksize]).astype(F32)
    # cross-check: the tree is "nearest code, lower index on exact ties" except where the
    # kernel's float thresholds differ from exact midpoints (none expected here)
    with np.errstate(invalid="ignore"):
        nearest = np.argmin(np.abs(scaled[:m, None].astype(np.float64) - NF4[None, :]), axis=1)
    finite = np.isfinite(scaled[:m])
    diff = int(np.sum(nearest[finite] != idx[finite]))
    return packed, absmax, dq, idx[:n], diff


def quantize_int8(w):
    w = np.ascontiguousarray(w, dtype=F32)
    absmax = np.abs(w).max(axis=1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        mul = (F32(127.0) / absmax).astype(F32)
        q = np.round((w * mul[:, None]).astype(F32))
    q = np.nan_to_num(q, nan=0.0)
    return np.clip(q, -127, 127).astype(np.int8), absmax


def edge_matrix():
    """One row of 3 blocks: absmax exactly 1 (scaled == value) holding every threshold and its
    float neighbours and every code value; an all-zero block; a block of tiny values."""
    vals = [F32(1.0), F32(-1.0)]
    for t in THRESHOLDS:
        vals += [t, np.nextafter(t, F32(2)), np.nextafter(t, F32(-2))]
    vals += list(NF4[1:-1])
    vals = vals[:64] + [F32(0.0)] * (64 - len(vals[:64]))
    b0 = np.array(vals, dtype=F32)
    b1 = np.zeros(64, dtype=F32)
    b2 = (np.linspace(-1, 1, 64, dtype=F32) * F32(1e-30)).astype(F32)
    return np.concatenate([b0, b1, b2]).reshape(1, -1)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "quant", "nf4_ref.safetensors"))
    args = ap.parse_args()
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((5, 64)) * 0.05).astype(F32)
    a[2, 7] = 0.9  # an outlier makes one block's other codes coarse
    a[4, 63] = -1.3
    cases = {
        "a": a,                                                    # rows aligned with blocks
        "b": (rng.standard_normal((3, 45)) * 0.1).astype(F32),     # n = 135: blocks span rows, odd n
        "c": edge_matrix(),                                        # thresholds, zero block, tiny values
        "d": (rng.standard_normal((1, 10)) * 2.0).astype(F32),     # rows = 1, one partial block
    }
    tensors = {"nf4.code": NF4, "nf4.threshold": THRESHOLDS}
    for name, w in cases.items():
        packed, absmax, dq, idx, diff = quantize_nf4(w)
        q8, scb = quantize_int8(w)
        print(f"{name}: shape {w.shape}, {len(absmax)} blocks, tree vs nearest-code differences: {diff}"
              + (" (values placed on the float thresholds)" if name == "c" else ""))
        tensors.update({
            f"{name}.w": w, f"{name}.codes": packed, f"{name}.absmax": absmax, f"{name}.dq": dq,
            f"{name}.idx": idx, f"{name}.q8": q8, f"{name}.scb": scb})
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata={"blocksize": "64", "cases": ",".join(cases)})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
