#!/usr/bin/env python3
"""Reference values for the health layer (docs/health-spec.md, "HEALTH.md" below).

Loads each tiny fixture model exactly as gen_models.py does (fp32, eager attention, one thread,
grad off), runs greedy generation on the first two prompts with Hugging Face transformers, and
computes every HEALTH.md metric in numpy float64 on Hugging Face's own tensors: the per-step
logit values (§2), per-layer attention (§3) and hidden-state (§4) values, prompt analysis (§5),
health flags (§6) and the run-level outputs (§7: risk v2, layer blame, compound signals, early
warning, fingerprint v2, prompt hash, narrative). "Our decisions" at the top of HEALTH.md
override upstream CoreVital (Joe-b-20/CoreVital @ 6794201), whose logic is ported here, not
imported.

Writes tests/fixtures/health/<model>.p<i>.json (one per model and prompt) and
tests/fixtures/health/edge.json (synthetic tensors for the corners real models rarely reach).
Deterministic: rerunning writes byte-identical files for the same library versions.

Usage:  python tests/ref/gen_health.py [--out tests/fixtures/health] [--only NAME ...]
"""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

torch.set_num_threads(1)
torch.set_grad_enabled(False)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

MODELS = ["gpt2-tiny", "llama-tiny", "llama-tiny-tied-bf16", "t5-tiny"]
# The first two of gen_models.PROMPTS.
PROMPTS = ["We're going to the sea!", "In 1969, the moon"]
G_DECODER_ONLY = 12
G_SEQ2SEQ = 8

LN2 = math.log(2.0)
CLIP_BOUND = 1e6
COLLAPSED_NORM_THRESHOLD = 0.03
TIMELINE_FOCUS_THRESHOLD = 0.9
RENORM_ATOL = 1e-3 + 1e-5

# ---------------------------------------------------------------------------------------------
# §0 Profiles


# key -> (high_entropy_bits, tau_rep, l2_multiplier, focus_threshold); focus: decision 11.
PROFILES = {
    "default": (4.0, 0.9995, 8.0, 0.9),
    "gpt2": (5.0, 0.9995, 5.0, 0.9),
    "llama": (3.5, 0.9998, 10.0, 0.85),
    "mistral": (4.0, 0.9997, 8.0, 0.85),
    "mixtral": (4.5, 0.9997, 8.0, 0.85),
    "phi3": (3.8, 0.9996, 7.0, 0.88),
    "qwen2": (4.5, 0.9997, 8.0, 0.88),
}
# Substrings of the lower-cased architecture name, in upstream's test order (config.py:204-223).
PROFILE_SUBSTRINGS = [
    ("gpt2", "gpt2"),
    ("llama", "llama"),
    ("mixtral", "mixtral"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
    ("phi3", "phi3"),
    ("phi-3", "phi3"),
]


def profile_for(architecture):
    """HEALTH.md §0 / decision 11: the profile picked by a substring of the architecture name."""
    a = (architecture or "").lower()
    key = "default"
    for sub, k in PROFILE_SUBSTRINGS:
        if sub in a:
            key = k
            break
    h, tau, l2m, focus = PROFILES[key]
    return {"key": key, "high_entropy_bits": h, "tau_rep": tau, "l2_multiplier": l2m,
            "focus_threshold": focus}


# ---------------------------------------------------------------------------------------------
# JSON helpers


def fin(x):
    """A float for JSON: non-finite -> None."""
    if x is None:
        return None
    x = float(x)
    return x + 0.0 if math.isfinite(x) else None  # + 0.0: no "-0.0" in the JSON


def r(x, n):
    """Upstream's round(x, n), None for non-finite."""
    x = fin(x)
    return None if x is None else round(x, n)


def isfinite(x):
    return x is not None and math.isfinite(x)


# ---------------------------------------------------------------------------------------------
# §2 Logits per step


def logits_metrics(z, y):
    """HEALTH.md §2 on raw logits (decision 1), float64. z: [V], y: emitted token id.

    entropy_bits = -sum_{p>0} p ln p / ln 2, perplexity = 2^H, surprisal_bits = -ln p[y] / ln 2,
    top_k_margin = p(1) - p(2) (0 when V < 2), topk_mass = sum of the top min(10, V) p.
    Decision 4: non-finite logits are counted (logits_nan / logits_inf, -inf included). A NaN or
    +inf logit (or no finite one) leaves no distribution: every value is NaN.
    -inf entries are masked tokens with p = 0 (their terms count as 0)."""
    z = np.asarray(z, dtype=np.float64)
    V = z.shape[0]
    out = {"logits_nan": bool(np.isnan(z).any()), "logits_inf": bool(np.isinf(z).any())}
    m = np.max(z) if V else np.nan
    if V == 0 or np.isnan(z).any() or np.isposinf(z).any() or not np.isfinite(m):
        nan = float("nan")
        out.update(entropy_bits=nan, perplexity=nan, surprisal_bits=nan, top_k_margin=nan,
                   topk_mass=nan)
        return out
    s = z - m
    lse = math.log(float(np.sum(np.exp(s))))
    logp = s - lse
    p = np.exp(logp)
    pos = p > 0
    H = float(-np.sum(p[pos] * logp[pos]) / LN2)
    ps = np.sort(p)[::-1]
    out["entropy_bits"] = H
    out["perplexity"] = 2.0 ** H
    out["surprisal_bits"] = float(-logp[y] / LN2) if 0 <= y < V else float("nan")
    out["top_k_margin"] = float(ps[0] - ps[1]) if V >= 2 else 0.0
    out["topk_mass"] = float(np.sum(ps[: min(10, V)]))
    return out


# ---------------------------------------------------------------------------------------------
# §3 Attention per layer per step


def attention_renormalize(A):
    """HEALTH.md §3: if any row has |sum - 1| > 1e-3 + 1e-5 (or is NaN), divide every row by
    max(sum, 1e-10), as upstream's torch.allclose test does."""
    s = A.sum(axis=-1, keepdims=True)
    if np.all(np.abs(s - 1.0) <= RENORM_ATOL):
        return A
    return A / np.maximum(s, 1e-10)


def attention_heads(A):
    """HEALTH.md §3 per-head values of A [H, Q, K]: row entropy e = -sum a ln max(a, 1e-10),
    n = e / ln K (e when K <= 1), row concentration c = max_k a; per-head means over q."""
    A = attention_renormalize(np.asarray(A, dtype=np.float64))
    K = A.shape[-1]
    with np.errstate(invalid="ignore"):
        e = -np.sum(A * np.log(np.maximum(A, 1e-10)), axis=-1)  # [H, Q]
    n = e / math.log(K) if K > 1 else e
    c = np.max(A, axis=-1)  # [H, Q]
    return {"head_entropy_nats": e.mean(axis=-1), "head_entropy_norm": n.mean(axis=-1),
            "head_concentration": c.mean(axis=-1), "row_concentration": c, "K": K}


def attention_layer(A, focus_threshold=TIMELINE_FOCUS_THRESHOLD):
    """HEALTH.md §3 per-layer values of A [H, Q, K] (the query rows used at this step).

    Decision 3: when every row has K <= 1 the layer carries no attention information: valid is
    false and no head is counted collapsed or focused. NaN stats fail every test (not counted)."""
    h = attention_heads(A)
    H = A.shape[0]
    valid = h["K"] > 1 and A.shape[1] > 0
    with np.errstate(invalid="ignore"):
        collapsed = int(np.sum(h["head_entropy_norm"] < COLLAPSED_NORM_THRESHOLD)) if valid else 0
        focused = int(np.sum(h["head_concentration"] > focus_threshold)) if valid else 0
    rate = collapsed / max(1, H)
    return {
        "entropy_mean": fin(np.mean(h["head_entropy_nats"])),
        "entropy_mean_normalized": fin(np.mean(h["head_entropy_norm"])),
        "entropy_min": fin(np.min(h["head_entropy_nats"])),
        "entropy_max": fin(np.max(h["head_entropy_nats"])),
        "concentration_max": fin(np.max(h["row_concentration"])),
        "concentration_min": fin(np.min(h["row_concentration"])),
        "collapsed_head_count": collapsed,
        "collapsed_head_rate": round(rate, 4),
        "collapsed_head_rate_raw": rate,
        "focused_head_count": focused,
        "valid": bool(valid),
    }


# ---------------------------------------------------------------------------------------------
# §4 Hidden state


def hidden_stats(X):
    """HEALTH.md §4 for X [S, D] (block output, raw dtype widened to double).

    clipped = some x outside [-1e6, 1e6] (NaN included); when clipped, clip_fraction =
    #{|x| > 1e6} / (S*D) and clip_max_before = max |x| (NaN if any NaN), otherwise both null
    (upstream writes them only when clipped). l2 = mean over rows of ||clamp(X, +-1e6)||_2 (the
    flags' l2_norm_mean)."""
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        inside = np.abs(X) <= CLIP_BOUND
        clipped = not bool(np.all(inside))
        out = {"clipped": clipped, "clip_fraction": None, "clip_max_before": None}
        if clipped:
            out["clip_fraction"] = float(np.sum(np.abs(X) > CLIP_BOUND)) / X.size
            out["clip_max_before"] = fin(np.max(np.abs(X)))
        Xc = np.clip(X, -CLIP_BOUND, CLIP_BOUND)
        l2 = float(np.mean(np.sqrt(np.sum(Xc * Xc, axis=-1))))
    return out, l2


def nonfinite(*tensors):
    """HEALTH.md §4 has_nan / has_inf over X and the attention / cross-attention slices used."""
    has_nan = any(t is not None and bool(np.isnan(t).any()) for t in tensors)
    has_inf = any(t is not None and bool(np.isinf(t).any()) for t in tensors)
    return has_nan, has_inf


def cosine(a, b):
    """HEALTH.md §4 cos_prev: a.b / (max(||a||, 1e-8) max(||b||, 1e-8))."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.dot(a, b) / (max(np.linalg.norm(a), 1e-8) * max(np.linalg.norm(b), 1e-8)))


def layer_record(X, A, C=None, focus_threshold=TIMELINE_FOCUS_THRESHOLD):
    """One layer at one step: attention (§3), cross_attention (§3, T5), hidden (§4), l2, flags."""
    hid, l2 = hidden_stats(X)
    has_nan, has_inf = nonfinite(X, A, C)
    return {
        "attention": attention_layer(A, focus_threshold),
        "cross_attention": attention_layer(C) if C is not None else None,
        "hidden": hid,
        "l2": fin(l2),
        "has_nan": has_nan,
        "has_inf": has_inf,
    }


# ---------------------------------------------------------------------------------------------
# §5 Prompt analysis


def prompt_surprisals(logits, ids):
    """HEALTH.md §5: -log2 softmax(raw logits_t)[token_{t+1}], t < P-1 (bits; r4)."""
    out = []
    for t in range(len(ids) - 1):
        z = np.asarray(logits[t], dtype=np.float64)
        m = np.max(z)
        lse = m + math.log(float(np.sum(np.exp(z - m))))
        out.append(float(-(z[ids[t + 1]] - lse) / LN2))
    return out


def layer_transformations(hs):
    """HEALTH.md §5: 1 - mean_t cos(h_{l-1}[t], h_l[t]) for l = 1..L-1 over block outputs (r6)."""
    out = []
    for l in range(1, len(hs)):
        a = np.asarray(hs[l - 1], dtype=np.float64)
        b = np.asarray(hs[l], dtype=np.float64)
        cs = [cosine(a[t], b[t]) for t in range(a.shape[0])]
        out.append(1.0 - float(np.mean(cs)))
    return out


def basin_scores(A):
    """HEALTH.md §5 per head of the full P x P prompt attention A [H, P, P]: with
    M = keys [P//3, 2P//3), mean_q sum_{k in M} a / (mean_q sum_{k not in M} a + 1e-10); 1.0 when
    P < 3 (r4)."""
    A = np.asarray(A, dtype=np.float64)
    H, P, _ = A.shape
    if P < 3:
        return [1.0] * H
    lo, hi = P // 3, 2 * P // 3
    mask = np.zeros(P, dtype=bool)
    mask[lo:hi] = True
    mid = A[:, :, mask].sum(axis=-1).mean(axis=-1)
    bnd = A[:, :, ~mask].sum(axis=-1).mean(axis=-1)
    return [float(x) for x in mid / (bnd + 1e-10)]


def sparse_heads(A, threshold=0.01, cap=50):
    """HEALTH.md §5 layers[l].heads (full capture): per head the (q, k) with a > threshold (on the
    float32 weights), the top `cap` by weight with ties at the cut to the lower (q, k), written in
    row-major order; weights r4 (and raw)."""
    A = np.asarray(A, dtype=np.float32)
    heads = []
    for h in range(A.shape[0]):
        q, k = np.nonzero(A[h] > threshold)  # row-major order
        w = A[h][q, k]
        if len(w) > cap:
            order = sorted(range(len(w)), key=lambda i: (-float(w[i]), int(q[i]), int(k[i])))[:cap]
            order.sort()  # back to row-major
            q, k, w = q[order], k[order], w[order]
        heads.append({
            "query_indices": [int(x) for x in q],
            "key_indices": [int(x) for x in k],
            "weights": [r(float(x), 4) for x in w],
            "weights_raw": [float(x) for x in w],
        })
    return heads


def prompt_analysis(logits, ids, hs, attns):
    """HEALTH.md §5 / decisions 7-8: the prompt_analysis object (rN values also unrounded)."""
    ps = prompt_surprisals(logits, ids) if logits is not None else []
    lt = layer_transformations(hs)
    layers = []
    for A in attns:
        b = basin_scores(A)
        layers.append({"heads": sparse_heads(A), "basin_scores": [r(x, 4) for x in b],
                       "basin_scores_raw": [fin(x) for x in b]})
    return {
        "prompt_surprisals": [r(x, 4) for x in ps],
        "prompt_surprisals_raw": [fin(x) for x in ps],
        "layer_transformations": [r(x, 6) for x in lt],
        "layer_transformations_raw": [fin(x) for x in lt],
        "layers": layers,
    }


# ---------------------------------------------------------------------------------------------
# Series helpers (upstream's own formulas)


def mean(vals):
    return sum(vals) / len(vals) if vals else 0.0


def ols_slope(vals):
    """Least-squares slope over list index (compound_signals._slope, fingerprint._safe_stats)."""
    n = len(vals)
    if n < 2:
        return 0.0
    mv = sum(vals) / n
    xm = (n - 1) / 2.0
    num = sum((i - xm) * (v - mv) for i, v in enumerate(vals))
    den = sum((i - xm) ** 2 for i in range(n))
    return num / den if den > 0 else 0.0


def finite(vals):
    return [v for v in vals if isfinite(v)]


def stdev(vals):
    """Sample standard deviation; NaN-safe (decision 9): NaN in -> NaN out, no exception."""
    if any(not math.isfinite(v) for v in vals):
        return float("nan")
    return statistics.stdev(vals)


# ---------------------------------------------------------------------------------------------
# §6 Health flags


def repetition_online(cos_series, tau_rep, step_indices):
    """HEALTH.md §6 repetition_loop with decision 2: walk cos_prev of consecutive steps as each
    step finishes; cos > tau_rep adds 1 to a run counter, anything else (NaN included) resets it.
    The flag is set when the counter first reaches 3; returns (flag, first step_index or None).
    cos_series[i] is cos_prev of step i (None at i = 0)."""
    run = 0
    for i, c in enumerate(cos_series):
        if i == 0:
            continue
        if c is not None and c > tau_rep:
            run += 1
            if run >= 3:
                return True, step_indices[i]
        else:
            run = 0
    return False, None


def median(vals):
    s = sorted(vals)
    n = len(s)
    return s[n // 2] if n % 2 == 1 else (s[n // 2 - 1] + s[n // 2]) / 2


def mid_layer_anomaly(layers_by_step, L, l2_multiplier):
    """HEALTH.md §6 mid_layer_anomaly (needs L >= 3): a mid layer [L//3, 2L//3) with NaN/Inf, or
    with l2 > median(l2 of layers [0, L//3)) * multiplier (1000 without early layers)."""
    if not layers_by_step or L < 3:
        return False
    lo, hi = L // 3, 2 * L // 3
    for layers in layers_by_step:
        for j in range(lo, min(hi, len(layers))):
            if layers[j]["has_nan"] or layers[j]["has_inf"]:
                return True
        early = [layers[j]["l2"] for j in range(min(lo, len(layers))) if layers[j]["l2"] is not None]
        limit = median(early) * l2_multiplier if early else 1000.0
        for j in range(lo, min(hi, len(layers))):
            v = layers[j]["l2"]
            if v is not None and v > limit:
                return True
    return False


def attention_collapse(layers_by_step, H):
    """HEALTH.md §6 attention_collapse with decision 10 (attention.py:319-462). r_i =
    sum_j collapsed_j / (L H) over the steps whose attention is valid (decision 3: a step whose
    rows all have K <= 1 is left out). Trend (n >= 4): w = max(1, min(5, n//3)),
    dev = max r - mean(r[:w]) > 0.15; catastrophic: mean r > 0.70. dev is rounded to 4 decimals
    before the 0.2/0.4 choice. Returns (detected, severity or None, detail)."""
    rates, per_layer = [], {}
    for layers in layers_by_step:
        used = [(j, ly["attention"]) for j, ly in enumerate(layers) if ly["attention"]["valid"]]
        if not used:
            continue
        cc = 0
        for j, a in used:
            cc += a["collapsed_head_count"]
            per_layer.setdefault(j, []).append(a["collapsed_head_count"])
        rates.append(cc / max(1, H * len(used)))
    if not rates or H < 1:
        return False, None, {"reason": "no_attention_data" if H >= 1 else "insufficient_data"}
    n = len(rates)
    mean_rate = sum(rates) / n
    trend, dev_r, trend_layers = False, 0.0, []
    if n >= 4:
        w = max(1, min(5, n // 3))
        dev = max(rates) - sum(rates[:w]) / w
        if dev > 0.15:
            trend = True
            dev_r = round(dev, 4)
            for j, counts in per_layer.items():
                if len(counts) >= 4:
                    if max(counts) / H - sum(counts[:w]) / (w * H) > 0.15:
                        trend_layers.append(j)
            trend_layers.sort()
    catastrophic = mean_rate > 0.70
    detected = trend or catastrophic
    sev = 0.0
    if catastrophic:
        sev = max(sev, 0.8)
    if trend:
        sev = max(sev, 0.4 if dev_r > 0.25 else 0.2)
    per_layer_mean = {j: sum(c) / (max(1, len(c)) * H) for j, c in sorted(per_layer.items())}
    detail = {
        "mean_collapse_rate": round(mean_rate, 4),
        "trend_detected": trend,
        "trend_peak_deviation": dev_r,
        "trend_layers": trend_layers,
        "catastrophic": catastrophic,
        "calibration_anomaly": False,
        "calibration_anomaly_layers": [],
        "per_layer_mean_collapse_rate": [round(per_layer_mean[j], 4) for j in sorted(per_layer_mean)],
    }
    return detected, (round(sev, 2) if detected else None), detail


def health_flags(steps, layers_by_step, prof, L, H):
    """HEALTH.md §6: the health_flags object (upstream HealthFlags names + repetition_first_step)
    and the collapse detail that goes to risk.attention_collapse_detail."""
    nan = any(s["logits_nan"] for s in steps) or any(ly["has_nan"] for ls in layers_by_step for ly in ls)
    inf = any(s["logits_inf"] for s in steps) or any(ly["has_inf"] for ls in layers_by_step for ly in ls)
    high = sum(1 for s in steps if isfinite(s["entropy_bits"]) and s["entropy_bits"] > prof["high_entropy_bits"])
    rep, rep_step = repetition_online([s["cos_prev"] for s in steps], prof["tau_rep"],
                                      [s["step_index"] for s in steps])
    collapse, sev, detail = attention_collapse(layers_by_step, H)
    flags = {
        "nan_detected": nan,
        "inf_detected": inf,
        "attention_collapse_detected": collapse,
        "attention_collapse_severity": sev,
        "high_entropy_steps": high,
        "repetition_loop_detected": rep,
        "repetition_first_step": rep_step,
        "mid_layer_anomaly_detected": mid_layer_anomaly(layers_by_step, L, prof["l2_multiplier"]),
    }
    return flags, detail


# ---------------------------------------------------------------------------------------------
# §7 Compound signals


def compound_signals(H_, M_, S_, T_, layers_by_step, basins):
    """HEALTH.md §7 compound signals (compound_signals.py:26-197), on unfiltered series, with
    upstream's names, descriptions, severities and evidence strings. basins: per layer the r4
    basin scores (upstream reads the stored, rounded values); invalid layers (decision 3) are
    not observed heads for attention_bottleneck."""
    out = []
    if H_ and basins:
        me = mean(H_[-5:])
        flat = [b for layer in basins for b in layer]
        mb = mean(flat) if flat else 1.0
        if me > 4.0 and mb < 0.3:
            out.append({
                "name": "context_loss",
                "description": "Model is losing track of context: high entropy combined with "
                "low basin scores suggests middle-context tokens are being ignored.",
                "severity": 0.75,
                "evidence": [f"Mean entropy (last 5 steps): {me:.2f}", f"Mean basin score: {mb:.2f}"],
            })
    if H_ and M_:
        re, rm = mean(H_[-5:]), mean(M_[-5:])
        if re > 4.0 and rm > 0.3:
            out.append({
                "name": "confident_confusion",
                "description": "Model shows high overall uncertainty but still has a dominant "
                "token choice — may produce plausible-looking but unreliable output.",
                "severity": 0.5,
                "evidence": [f"Mean entropy (last 5): {re:.2f}", f"Mean margin (last 5): {rm:.2f}"],
            })
    if len(H_) >= 10 and len(M_) >= 10 and len(S_) >= 10:
        es, ms, ss = ols_slope(H_), ols_slope(M_), ols_slope(S_)
        if es > 0.05 and ms < -0.01 and ss > 0.05:
            out.append({
                "name": "degenerating_generation",
                "description": "Output quality is degrading over time: entropy and surprisal "
                "are rising while confidence margin is falling.",
                "severity": 0.7,
                "evidence": [f"Entropy slope: +{es:.3f}/step", f"Margin slope: {ms:.3f}/step",
                             f"Surprisal slope: +{ss:.3f}/step"],
            })
    if layers_by_step and H_:
        tc, th = 0, 0
        for layers in layers_by_step:
            for ly in layers:
                a = ly["attention"]
                if not a["valid"]:
                    continue
                cc, fc = a["collapsed_head_count"], a["focused_head_count"]
                tc += cc
                th += max(cc, fc, 1)
        if th > 0:
            rate = min(1.0, tc / th)
            me = mean(H_)
            if rate > 0.2 and me > 3.5:
                out.append({
                    "name": "attention_bottleneck",
                    "description": "Widespread attention collapse combined with high output "
                    "entropy suggests information flow is restricted.",
                    "severity": 0.65,
                    "evidence": [f"Collapse rate: {rate:.1%} of observed heads", f"Mean entropy: {me:.2f}"],
                })
    if H_ and S_:
        me, msu = mean(H_[-5:]), mean(S_[-5:])
        if me < 2.0 and msu < 1.0 and T_:
            ma = mean(T_[-5:])
            if ma > 0.95:
                out.append({
                    "name": "confident_repetition_risk",
                    "description": "Model is extremely confident with near-unanimous token "
                    "selection — may be locked into a repetitive pattern.",
                    "severity": 0.4,
                    "evidence": [f"Mean entropy: {me:.2f}", f"Mean surprisal: {msu:.2f}",
                                 f"Mean voter agreement: {ma:.2f}"],
                })
    return out


# ---------------------------------------------------------------------------------------------
# §7 Risk v2 and layer blame


def risk_v2(flags, H_, M_, S_, T_, compounds):
    """HEALTH.md §7 risk v2 (risk.py:58-187) over finite values; NaN/Inf -> 1.0 (decision 9).
    Returns (risk, factors)."""
    if flags["nan_detected"] or flags["inf_detected"]:
        return 1.0, ["nan_or_inf"]
    if not H_:
        return 0.0, []
    factors, terms, ceil = [], [], []
    if flags["repetition_loop_detected"]:
        ceil.append(0.9)
        factors.append("repetition_loop")
    if flags["mid_layer_anomaly_detected"]:
        ceil.append(0.7)
        factors.append("mid_layer_anomaly")
    if flags["attention_collapse_detected"]:
        sev = flags["attention_collapse_severity"]
        ceil.append(sev if sev is not None else 0.15)
        factors.append("attention_collapse")
    ent = finite(H_)
    if ent:
        t = min(1.0, mean(ent) / 8.0) * 0.3
        if t > 0.05:
            terms.append(t)
            factors.append("elevated_entropy")
        if len(ent) >= 6:
            k = len(ent) // 3
            f, l = sum(ent[:k]) / k, sum(ent[-k:]) / k
            if f > 1e-9 and l > f * 1.3:
                terms.append(min(0.2, (l - f) / f * 0.1))
                factors.append("entropy_rising")
    mar = finite(M_)
    if mar:
        t = max(0.0, 1.0 - mean(mar) * 5.0) * 0.2
        if t > 0.05:
            terms.append(t)
            factors.append("low_confidence_margin")
    mass = finite(T_)
    if mass:
        t = max(0.0, 1.0 - mean(mass)) * 0.15
        if t > 0.03:
            terms.append(t)
            factors.append("low_topk_mass")
    sur = finite(S_)
    if sur:
        t = min(0.1, mean(sur) / 10.0)
        if t > 0.02:
            terms.append(t)
            factors.append("elevated_surprisal")
    for cs in compounds:
        terms.append(cs["severity"])
        factors.append("compound:" + cs["name"])
    bmax = max(ceil) if ceil else 0.0
    score = min(1.0, bmax + sum(terms)) if (ceil or terms) else 0.0
    return score, factors


def layer_blame(layers_by_step):
    """HEALTH.md §7 layer blame (risk.py:190-297) with NaN-safe statistics (decision 9: only
    finite l2 values enter the means and deviations). The collapse rate counts steps with a
    collapsed head over the steps where the layer's attention is valid (decision 3)."""
    stats = {}
    for layers in layers_by_step:
        for j, ly in enumerate(layers):
            s = stats.setdefault(j, {"nan_inf": False, "collapsed": 0, "valid": 0, "l2": []})
            if ly["has_nan"] or ly["has_inf"]:
                s["nan_inf"] = True
            a = ly["attention"]
            if a["valid"]:
                s["valid"] += 1
                if a["collapsed_head_count"] > 0:
                    s["collapsed"] += 1
            if isfinite(ly["l2"]):
                s["l2"].append(ly["l2"])
    means = [(j, sum(s["l2"]) / len(s["l2"])) for j, s in stats.items() if s["l2"]]
    gmean = sum(m for _, m in means) / len(means) if means else 0.0
    gstd = statistics.stdev([m for _, m in means]) if len(means) >= 2 else 0.0
    blamed = []
    for j, s in sorted(stats.items()):
        reasons, sev = [], 0.0
        if s["nan_inf"]:
            reasons.append("NaN/Inf detected")
            sev = max(sev, 1.0)
        rate = s["collapsed"] / max(1, s["valid"])
        if rate > 0.5:
            reasons.append(f"Attention collapse in {rate:.0%} of steps")
            sev = max(sev, 0.4)
        if s["l2"] and gstd > 0:
            z = (sum(s["l2"]) / len(s["l2"]) - gmean) / gstd
            if z > 2.5:
                reasons.append(f"L2 norm outlier (z={z:.1f})")
                sev = max(sev, 0.5)
        if len(s["l2"]) >= 3:
            cv = statistics.stdev(s["l2"]) / max(1e-10, statistics.mean(s["l2"]))
            if cv > 0.5:
                reasons.append(f"Unstable L2 norms (CV={cv:.2f})")
                sev = max(sev, 0.3)
        if reasons:
            blamed.append({"layer": j, "reasons": reasons, "severity": round(sev, 2)})
    return blamed


# ---------------------------------------------------------------------------------------------
# §7 Early warning


def early_warning(H_, M_, S_, flags, high_entropy_bits, window=5):
    """HEALTH.md §7 early warning (early_warning.py:57-188), window 5, finite values.
    Returns (failure_risk, warning_signals)."""
    ent, mar, sur = finite(H_), finite(M_), finite(S_)
    sig, risk = [], 0.0
    if len(ent) >= 2 * window:
        wm = [sum(ent[i:i + window]) / window for i in range(len(ent) - window + 1)]
        if len(wm) >= 3:
            d = [wm[i + 1] - wm[i] for i in range(len(wm) - 1)][-3:]
            if all(x > 0 for x in d) and d[-1] > d[0]:
                sig.append("entropy_accelerating")
                risk = max(risk, 0.7)
    if len(mar) >= window:
        if all(m < 0.1 for m in mar[-window:]):
            sig.append("margin_collapsed")
            risk = max(risk, 0.6)
        elif len(mar) >= 2 * window:
            early, late = sum(mar[:window]) / window, sum(mar[-window:]) / window
            if early > 0 and late / early < 0.3:
                sig.append("margin_declining")
                risk = max(risk, 0.5)
    if len(sur) >= window:
        rec = sur[-window:]
        ms = sum(rec) / len(rec)
        if ms > 0 and statistics.stdev(rec) / ms > 1.5:
            sig.append("surprisal_volatile")
            risk = max(risk, 0.5)
    if len(ent) >= window and len(mar) >= window:
        if sum(ent[-window:]) / window > high_entropy_bits and sum(mar[-window:]) / window > 0.3:
            sig.append("entropy_margin_divergence")
            risk = max(risk, 0.55)
    for flag, name, v in (("repetition_loop_detected", "repetition_loop", 0.9),
                          ("mid_layer_anomaly_detected", "mid_layer_anomaly", 0.6),
                          ("attention_collapse_detected", "attention_collapse", 0.4)):
        if flags[flag]:
            risk = max(risk, v)
            if name not in sig:
                sig.append(name)
    return risk, sig


# ---------------------------------------------------------------------------------------------
# §7 Fingerprint v2 and prompt hash


def series_stats(vals):
    """fingerprint._safe_stats: (mean, sample std (0 if n < 2), min, max, OLS slope); 0s if empty."""
    if not vals:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    m = sum(vals) / len(vals)
    sd = stdev(vals) if len(vals) >= 2 else 0.0
    return (m, sd, min(vals), max(vals), ols_slope(vals))


def pearson(xs, ys):
    """fingerprint._correlation over the first min(n) pairs; 0 if n < 2 or zero variance."""
    n = min(len(xs), len(ys))
    if n < 2:
        return 0.0
    xm, ym = sum(xs[:n]) / n, sum(ys[:n]) / n
    cov = sum((xs[i] - xm) * (ys[i] - ym) for i in range(n))
    vx = sum((xs[i] - xm) ** 2 for i in range(n))
    vy = sum((ys[i] - ym) ** 2 for i in range(n))
    den = (vx * vy) ** 0.5
    return 0.0 if den == 0.0 else cov / den


def fingerprint_vector(H_, M_, S_, T_, flags, risk, total_steps):
    """HEALTH.md §7 fingerprint v2 (fingerprint.py:57-155): 25 values from unfiltered series."""
    e, m, s, a = series_stats(H_), series_stats(M_), series_stats(S_), series_stats(T_)
    if len(H_) >= 4:
        q = len(H_) // 4
        fq, lq = sum(H_[:q]) / q, sum(H_[-q:]) / q
    else:
        fq = lq = 0.0
    return [
        e[0], e[1], e[2], e[3], e[4],
        m[0], m[1], m[4],
        s[0], s[1], s[4],
        a[0], a[1],
        risk,
        flags["high_entropy_steps"] / max(1, total_steps),
        1.0 if flags["nan_detected"] else 0.0,
        1.0 if flags["inf_detected"] else 0.0,
        1.0 if flags["attention_collapse_detected"] else 0.0,
        1.0 if flags["repetition_loop_detected"] else 0.0,
        1.0 if flags["mid_layer_anomaly_detected"] else 0.0,
        pearson(H_, M_) if H_ and M_ else 0.0,
        (e[1] / e[0]) if e[0] > 0 else 0.0,
        fq, lq,
        0.0,
    ]


def prompt_hash(prompt, hf_id):
    """HEALTH.md §7: sha256 hex of UTF-8(prompt.strip().lower() + "\\n" + hf_id)."""
    return hashlib.sha256((prompt.strip().lower() + "\n" + hf_id).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# §7 Narrative

FACTOR_PRIORITY = ["nan_or_inf", "repetition_loop", "mid_layer_anomaly", "attention_collapse",
                   "elevated_entropy", "entropy_rising", "low_confidence_margin", "low_topk_mass",
                   "elevated_surprisal"]
FACTOR_TEXT = {
    "repetition_loop": "a repetition loop in the last generated tokens",
    "mid_layer_anomaly": "anomalous behavior in middle transformer layers",
    "attention_collapse": "attention head collapse",
    "elevated_entropy": "elevated output uncertainty",
    "nan_or_inf": "numerical instability (NaN/Inf)",
    "entropy_rising": "rising entropy over generation",
    "entropy_accelerating": "accelerating entropy over generation",
    "low_confidence_margin": "low confidence between top token choices",
    "low_topk_mass": "low top-K probability mass (dispersed predictions)",
    "elevated_surprisal": "elevated surprisal (unexpected token choices)",
}


def dominant_factor(factors):
    """narrative._dominant_factor."""
    for p in FACTOR_PRIORITY:
        if p in factors:
            return p
    for f in factors:
        if f.startswith("compound:"):
            return f
    return factors[0] if factors else "multiple signals"


def humanize_factor(f):
    """narrative._humanize_factor."""
    if f.startswith("compound:"):
        return f.split(":", 1)[1].replace("_", " ")
    return FACTOR_TEXT.get(f, f.replace("_", " "))


def narrative(risk, factors, blamed, warnings, steps, compounds):
    """HEALTH.md §7 narrative (narrative.py:16-167), sentences in upstream's order."""
    parts = []
    any_sig = bool(factors or warnings or compounds or blamed)
    if risk > 0.7:
        parts.append(f"High risk (score: {risk:.2f}), driven by {humanize_factor(dominant_factor(factors))}.")
    elif risk > 0.3:
        parts.append(f"Moderate risk (score: {risk:.2f}).")
    elif any_sig:
        parts.append(f"Low risk (score: {risk:.2f}), though some mild signals were observed.")
    else:
        parts.append(f"Low risk (score: {risk:.2f}). No significant anomalies detected.")
    ent = finite([s["entropy_bits"] for s in steps])
    if ent:
        me, mx = sum(ent) / len(ent), max(ent)
        st = next((s for s in steps if s["entropy_bits"] == mx), None)
        if mx > 4.0:
            text = (st["token_text"] if st else "") or "?"
            parts.append(f"Peak entropy of {mx:.1f} bits at step {st['step_index'] if st else 0} "
                         f"(mean: {me:.1f}); the model was most uncertain "
                         f'when generating "{text}".')
        if ("entropy_accelerating" in warnings or "entropy_rising" in warnings) and len(ent) >= 6:
            early, late = sum(ent[:3]) / 3, sum(ent[-3:]) / 3
            parts.append(f"Entropy rose from ~{early:.1f} to ~{late:.1f} bits over the "
                         f"course of generation, suggesting progressive degradation.")
    for cs in compounds[:2]:
        parts.append(cs["description"])
    if blamed:
        for b in sorted(blamed, key=lambda b: b["severity"], reverse=True)[:3]:
            if b["reasons"]:
                parts.append(f"Layer {b['layer']}: {'; '.join(b['reasons'])}.")
    if risk > 0.7:
        if "repetition_loop" in factors:
            parts.append("Consider: lower temperature, add repetition penalty, or shorten max_new_tokens.")
        elif "mid_layer_anomaly" in factors:
            parts.append("Consider: check input encoding, try different precision (fp32 vs fp16), "
                         "or use a different model.")
        elif "elevated_entropy" in factors:
            parts.append("Consider: refine the prompt for clarity, provide more "
                         "context, or try a model better suited to this domain.")
    return " ".join(parts) if parts else "No notable issues detected."


# ---------------------------------------------------------------------------------------------
# Run-level assembly


def run_level(steps, layers_by_step, prof, L, H, P, G, basins_r4, prompt, hf_id):
    """§6-§7: flags, risk, compound signals, early warning, fingerprint, narrative."""
    flags, detail = health_flags(steps, layers_by_step, prof, L, H)
    # Unfiltered series (non-finite values kept): compound signals and the fingerprint use them
    # as they are; risk, early warning and the narrative keep only the finite ones (§7).
    H_ = [s["_raw"]["entropy_bits"] for s in steps]
    M_ = [s["_raw"]["top_k_margin"] for s in steps]
    S_ = [s["_raw"]["surprisal_bits"] for s in steps]
    T_ = [s["_raw"]["topk_mass"] for s in steps]
    comp = compound_signals(H_, M_, S_, T_, layers_by_step, basins_r4)
    risk, factors = risk_v2(flags, H_, M_, S_, T_, comp)
    blamed = layer_blame(layers_by_step)
    fr, warn = early_warning(H_, M_, S_, flags, prof["high_entropy_bits"])
    vec = fingerprint_vector(H_, M_, S_, T_, flags, risk, P + G)
    return {
        "health_flags": flags,
        "risk": {"risk_score": risk, "risk_factors": factors, "blamed_layers": blamed,
                 "blamed_layers_flat": [b["layer"] for b in blamed],
                 "attention_collapse_detail": detail},
        "compound_signals": comp,
        "early_warning": {"failure_risk": fr, "warning_signals": warn},
        "fingerprint": {"vector": [fin(v) for v in vec], "prompt_hash": prompt_hash(prompt, hf_id),
                        "version": 2},
        "narrative": {"summary": narrative(risk, factors, blamed, warn, steps, comp)},
    }


def health_profile(prof):
    return {
        "key": prof["key"],
        "thresholds": {
            "high_entropy_threshold_bits": prof["high_entropy_bits"],
            "repetition_cosine_threshold": prof["tau_rep"],
            "l2_explosion_multiplier": prof["l2_multiplier"],
            "focused_head_concentration_threshold": prof["focus_threshold"],
        },
        "logits_basis": "raw",
    }


# ---------------------------------------------------------------------------------------------
# Hugging Face side


def np64(t):
    return t.detach().to(torch.float64).numpy()


def step_record(P, i, y, z, v_prev, v, token_text, layers):
    lm = logits_metrics(z, y)
    return {
        "step_index": P + i,
        "token_id": int(y),
        "token_text": token_text,
        "entropy_bits": fin(lm["entropy_bits"]),
        "perplexity": fin(lm["perplexity"]),
        "surprisal_bits": fin(lm["surprisal_bits"]),
        "top_k_margin": fin(lm["top_k_margin"]),
        "topk_mass": fin(lm["topk_mass"]),
        "cos_prev": fin(cosine(v_prev, v)) if v_prev is not None else None,
        "logits_nan": lm["logits_nan"],
        "logits_inf": lm["logits_inf"],
        "layers": layers,
        "_raw": lm,  # unrounded, non-finite kept; dropped before writing
    }


def run_decoder_only(model, tok, prompt, G):
    ids = torch.tensor([tok(prompt)["input_ids"]], dtype=torch.long)
    P = ids.shape[1]
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=G, min_new_tokens=G, output_logits=True,
                         output_hidden_states=True, output_attentions=True,
                         return_dict_in_generate=True, pad_token_id=model.config.eos_token_id)
    new = gen.sequences[0, P:].tolist()
    assert len(new) == G and len(gen.logits) == G
    L = len(gen.attentions[0])
    steps, v_prev = [], None
    for i in range(G):
        hs, at = gen.hidden_states[i], gen.attentions[i]
        assert len(hs) == L + 1
        layers = []
        for j in range(L):
            X = np64(hs[j + 1][0])  # our layer j = block j's output (P rows at i = 0, else 1)
            A = np64(at[j][0][:, -1:, :])  # H x 1 x (P+i): the last query row only
            assert A.shape[-1] == P + i
            layers.append(layer_record(X, A))
        v = np64(hs[-1][0, -1])
        steps.append(step_record(P, i, new[i], np64(gen.logits[i][0]), v_prev, v,
                                 tok.decode([new[i]]), layers))
        v_prev = v
    # Prompt analysis (§5) from one plain forward of the prompt.
    out = model(ids, output_attentions=True, output_hidden_states=True)
    pa = prompt_analysis(np64(out.logits[0]), ids[0].tolist(),
                         [np64(h[0]) for h in out.hidden_states[1:]],
                         [np64(a[0]) for a in out.attentions])
    H = gen.attentions[0][0].shape[1]
    return ids[0].tolist(), new, steps, None, pa, L, H


def run_seq2seq(model, tok, prompt, G, focus_threshold):
    ids = torch.tensor([tok(prompt)["input_ids"]], dtype=torch.long)
    P = ids.shape[1]
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=G, min_new_tokens=G, output_logits=True,
                         output_hidden_states=True, output_attentions=True,
                         return_dict_in_generate=True,
                         cache=transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                                                transformers.DynamicCache()))
    assert gen.sequences[0, 0].item() == model.config.decoder_start_token_id
    new = gen.sequences[0, 1:].tolist()
    assert len(new) == G and len(gen.logits) == G
    L = len(gen.decoder_attentions[0])
    steps, v_prev = [], None
    for i in range(G):
        hs = gen.decoder_hidden_states[i]
        layers = []
        for j in range(L):
            X = np64(hs[j + 1][0])
            A = np64(gen.decoder_attentions[i][j][0][:, -1:, :])  # K = i + 1
            C = np64(gen.cross_attentions[i][j][0][:, -1:, :])  # K = P
            assert A.shape[-1] == i + 1 and C.shape[-1] == P
            layers.append(layer_record(X, A, C))
        v = np64(hs[-1][0, -1])
        steps.append(step_record(P, i, new[i], np64(gen.logits[i][0]), v_prev, v,
                                 tok.decode([new[i]]), layers))
        v_prev = v
    enc_h = [np64(h[0]) for h in gen.encoder_hidden_states[1:]]
    enc_a = [np64(a[0]) for a in gen.encoder_attentions]
    enc_layers = [layer_record(enc_h[j], enc_a[j], None, focus_threshold) for j in range(len(enc_a))]
    pa = prompt_analysis(None, ids[0].tolist(), enc_h, enc_a)
    H = gen.decoder_attentions[0][0].shape[1]
    return ids[0].tolist(), new, steps, enc_layers, pa, L, H


def build_case(name, pi):
    d = os.path.join(ROOT, "tests", "fixtures", name)
    hf_id = f"tests/fixtures/{name}"
    with open(os.path.join(d, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    prof = profile_for(arch)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    seq2seq = "t5" in name
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").float().eval()
    prompt = PROMPTS[pi]
    if seq2seq:
        G = G_SEQ2SEQ
        ids, new, steps, enc, pa, L, H = run_seq2seq(model, tok, prompt, G, prof["focus_threshold"])
    else:
        G = G_DECODER_ONLY
        ids, new, steps, enc, pa, L, H = run_decoder_only(model, tok, prompt, G)
    P = len(ids)
    layers_by_step = [s["layers"] for s in steps]
    basins_r4 = [ly["basin_scores"] for ly in pa["layers"]]
    rl = run_level(steps, layers_by_step, prof, L, H, P, G, basins_r4, prompt, hf_id)
    for s in steps:
        del s["_raw"]
    doc = {
        "model": name,
        "hf_id": hf_id,
        "architecture": arch,
        "prompt": prompt,
        "prompt_ids": ids,
        "generated_ids": new,
        "num_layers": L,
        "num_heads": H,
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "profile": prof,
        "health_profile": health_profile(prof),
        "steps": steps,
    }
    if enc is not None:
        doc["encoder_layers"] = enc
    doc["prompt_analysis"] = pa
    doc.update(rl)
    return doc


# ---------------------------------------------------------------------------------------------
# Edge cases (synthetic inputs)


def edge_cases():
    """Tiny synthetic inputs for the corners real models rarely reach."""
    cases = []

    def att(name, A, focus=TIMELINE_FOCUS_THRESHOLD):
        A = np.asarray(A, dtype=np.float64)
        has_nan, has_inf = nonfinite(A)
        exp = attention_layer(A, focus)
        exp.update(has_nan=has_nan, has_inf=has_inf)
        cases.append({"name": name, "kind": "attention",
                      "input": {"A": [[[fin(x) for x in row] for row in h] for h in A.tolist()],
                                "shape": list(A.shape), "focus_threshold": focus},
                      "expect": exp})

    att("attention_k1", [[[1.0]], [[1.0]]])
    att("attention_nan_row", [[[0.5, 0.25, 0.25]], [[float("nan"), 0.5, 0.5]]])
    att("attention_unnormalized", [[[0.2, 0.2, 0.2]], [[0.99, 0.005, 0.005]]])
    att("attention_collapsed_and_focused", [[[0.9995, 0.0005, 0.0]], [[0.4, 0.3, 0.3]]])

    def lg(name, z, y):
        m = logits_metrics(z, y)
        cases.append({"name": name, "kind": "logits",
                      "input": {"logits": [None if math.isnan(x) else
                                           ("-inf" if x == -math.inf else ("inf" if x == math.inf else x))
                                           for x in z], "token_id": y},
                      "expect": {k: (fin(v) if isinstance(v, float) else v) for k, v in m.items()}})

    lg("logits_tied_top2", [2.0, 2.0, 0.0, -1.0], 0)
    lg("logits_neg_inf", [1.0, -math.inf, 0.5, -math.inf, 0.0], 2)
    lg("logits_nan", [1.0, float("nan"), 0.5, 0.0], 0)
    lg("logits_pos_inf", [1.0, math.inf, 0.5], 1)
    lg("logits_v1", [3.0], 0)

    def hid(name, X):
        X = np.asarray(X, dtype=np.float64)
        h, l2 = hidden_stats(X)
        has_nan, has_inf = nonfinite(X)
        h.update(l2=fin(l2), has_nan=has_nan, has_inf=has_inf)
        enc = [[("inf" if x == math.inf else "-inf" if x == -math.inf else None if math.isnan(x) else x)
                for x in row] for row in X.tolist()]
        cases.append({"name": name, "kind": "hidden", "input": {"X": enc}, "expect": h})

    hid("hidden_clip_inf", [[3.0, -2e6, 4.0], [math.inf, 0.5, -1.0]])
    hid("hidden_clip_nan", [[1.0, float("nan")], [2e6, 0.0]])
    hid("hidden_plain", [[3.0, 4.0], [0.0, 1.0]])

    # cos_prev: cosine of consecutive vectors, with a zero vector (norm floor 1e-8).
    cases.append({"name": "cos_prev_zero_vector", "kind": "cosine",
                  "input": {"a": [0.0, 0.0], "b": [1.0, 2.0]},
                  "expect": {"cos": cosine([0.0, 0.0], [1.0, 2.0])}})

    # Repetition: steps i = 1..9 have cos_prev; pairs above tau at i = 2, 4, 5, 6 -> fires at i = 6.
    tau = PROFILES["default"][1]
    cos = [None, 0.9999, 0.99996, 0.5, 0.9999, 0.99999, 0.99997, 0.2, 0.9999, 1.0]
    P = 7
    flag, first = repetition_online(cos, tau, [P + i for i in range(len(cos))])
    cases.append({"name": "repetition_series", "kind": "repetition",
                  "input": {"cos_prev": cos, "tau_rep": tau, "prompt_tokens": P},
                  "expect": {"repetition_loop_detected": flag, "repetition_first_step": first}})
    cos2 = [None, 0.9999, 0.9999, float("nan"), 0.9999, 0.9999, 0.2]
    flag, first = repetition_online([fin(c) for c in cos2], tau, [P + i for i in range(len(cos2))])
    cases.append({"name": "repetition_nan_resets", "kind": "repetition",
                  "input": {"cos_prev": [fin(c) for c in cos2], "tau_rep": tau, "prompt_tokens": P},
                  "expect": {"repetition_loop_detected": flag, "repetition_first_step": first}})

    # Collapse: L = 2, H = 4. Per step collapsed counts per layer; the first step is invalid
    # (K <= 1, left out). Valid rates: 0, 0, .125, .25, .5, .25 -> n = 6, w = 2, dev = .5 > .25
    # -> 0.4; mean .1875 (not catastrophic).
    def coll(name, counts, valid, H=4):
        lbs = [[{"attention": {"collapsed_head_count": c, "focused_head_count": 0, "valid": v}}
                for c in row] for row, v in zip(counts, valid)]
        det, sev, detail = attention_collapse(lbs, H)
        cases.append({"name": name, "kind": "collapse",
                      "input": {"num_heads": H, "collapsed_counts": counts, "valid": valid},
                      "expect": {"attention_collapse_detected": det, "attention_collapse_severity": sev,
                                 "detail": detail}})

    coll("collapse_trend_not_catastrophic",
         [[4, 4], [0, 0], [0, 0], [1, 0], [1, 1], [2, 2], [1, 1]],
         [False, True, True, True, True, True, True])
    # H = 8: rates 0, 0, 0, 1/16, 3/16, 0; dev = .1875 -> trend fires with 0.2.
    coll("collapse_trend_low", [[0, 0], [0, 0], [0, 0], [1, 0], [2, 1], [0, 0]],
         [True] * 6, H=8)
    # Every valid step fully collapsed: catastrophic, no trend -> 0.8.
    coll("collapse_catastrophic", [[4, 4], [4, 4], [4, 3], [4, 4]], [True] * 4)
    # dev exactly .25 after rounding: 0.2, not 0.4 (decision 10). Rates 0,0,0,.25 (H = 8, L = 1).
    coll("collapse_dev_boundary", [[0], [0], [0], [2]], [True] * 4, H=8)

    # Risk v2 on constructed series (no flags): factors and score.
    flags0 = {"nan_detected": False, "inf_detected": False, "repetition_loop_detected": False,
              "mid_layer_anomaly_detected": False, "attention_collapse_detected": False,
              "attention_collapse_severity": None, "high_entropy_steps": 0}
    Hs = [1.0, 1.2, 1.1, 2.0, 2.5, 3.0]
    Ms = [0.3, 0.2, 0.1, 0.05, 0.04, 0.02]
    Ss = [0.5, 1.0, 0.7, 2.0, 2.5, 3.0]
    Ts = [0.99, 0.97, 0.95, 0.9, 0.85, 0.8]
    score, factors = risk_v2(flags0, Hs, Ms, Ss, Ts, [])
    fr, warn = early_warning(Hs, Ms, Ss, flags0, 4.0)
    cases.append({"name": "risk_v2_series", "kind": "risk",
                  "input": {"entropy_bits": Hs, "top_k_margin": Ms, "surprisal_bits": Ss,
                            "topk_mass": Ts, "flags": flags0},
                  "expect": {"risk_score": score, "risk_factors": factors,
                             "failure_risk": fr, "warning_signals": warn}})
    # Compound signals on constructed series (n = 10): entropy and surprisal rising, margin
    # falling but high at the end, low basins, half of the heads collapsed.
    Hc = [3.0 + 0.2 * i for i in range(10)]
    Mc = [0.9 - 0.05 * i for i in range(10)]
    Sc = [1.0 + 0.3 * i for i in range(10)]
    Tc = [0.9] * 10
    lbs = [[{"attention": {"collapsed_head_count": 2, "focused_head_count": 3, "valid": True}}] * 2] * 10
    basins = [[0.1, 0.2], [0.25, 0.3]]
    cases.append({"name": "compound_series", "kind": "compound",
                  "input": {"entropy_bits": Hc, "top_k_margin": Mc, "surprisal_bits": Sc,
                            "topk_mass": Tc, "collapsed_head_count": 2, "focused_head_count": 3,
                            "num_layers": 2, "basin_scores": basins},
                  "expect": {"compound_signals": compound_signals(Hc, Mc, Sc, Tc, lbs, basins)}})
    Hq, Sq, Tq = [1.0, 0.5, 0.4, 0.3, 0.2, 0.1], [0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [0.99] * 6
    cases.append({"name": "compound_confident_repetition", "kind": "compound",
                  "input": {"entropy_bits": Hq, "top_k_margin": [0.9] * 6, "surprisal_bits": Sq,
                            "topk_mass": Tq, "collapsed_head_count": 0, "focused_head_count": 0,
                            "num_layers": 2, "basin_scores": []},
                  "expect": {"compound_signals": compound_signals(Hq, [0.9] * 6, Sq, Tq, [], [])}})

    # Layer blame and mid-layer anomaly: L = 3, four steps; per step (l2, collapsed heads, nan).
    def ly(l2, cc, nan=False, valid=True):
        return {"l2": l2, "has_nan": nan, "has_inf": False,
                "attention": {"collapsed_head_count": cc, "focused_head_count": 0, "valid": valid}}

    rows = [[(10.0, 0, False, False), (11.0, 0, False, False), (12.0, 0, False, False)],
            [(10.0, 1, False, True), (2.0, 0, False, True), (12.5, 0, False, True)],
            [(10.5, 1, False, True), (30.0, 0, False, True), (12.0, 0, False, True)],
            [(10.0, 0, False, True), (95.0, 0, False, True), (13.0, 0, True, True)]]
    lbs = [[ly(*c) for c in row] for row in rows]
    cases.append({"name": "blame_and_mid_layer", "kind": "layers",
                  "input": {"num_layers": 3, "l2_multiplier": 8.0,
                            "steps": [[{"l2": c[0], "collapsed_head_count": c[1], "has_nan": c[2],
                                        "has_inf": False, "valid": c[3]} for c in row] for row in rows]},
                  "expect": {"blamed_layers": layer_blame(lbs),
                             "mid_layer_anomaly_detected": mid_layer_anomaly(lbs, 3, 8.0),
                             # the same with layer 1's 95.0 at the last step lowered to 70.0
                             # (limit 10.0 * 8 = 80): no anomaly
                             "mid_layer_anomaly_detected_if_70": mid_layer_anomaly(
                                 [[ly(70.0 if c[0] == 95.0 else c[0], *c[1:]) for c in row]
                                  for row in rows], 3, 8.0)}})

    # Fingerprint v2 on constructed series and flags.
    flags1 = dict(flags0, repetition_loop_detected=True, high_entropy_steps=2)
    cases.append({"name": "fingerprint_series", "kind": "fingerprint",
                  "input": {"entropy_bits": Hs, "top_k_margin": Ms, "surprisal_bits": Ss,
                            "topk_mass": Ts, "flags": flags1, "risk": 0.95, "total_steps": 13},
                  "expect": {"vector": fingerprint_vector(Hs, Ms, Ss, Ts, flags1, 0.95, 13)}})
    # Narrative with every sentence: high risk, peak entropy, entropy rise, two compounds,
    # three blamed layers (sorted by severity, stable), advice.
    nsteps = [{"step_index": 7 + i, "token_text": t, "entropy_bits": h}
              for i, (t, h) in enumerate(zip(["a", "", "b", "c", "d", "e"], [1.0, 4.5, 2.0, 3.0, 4.5, 4.0]))]
    nblame = [{"layer": 0, "reasons": ["Unstable L2 norms (CV=0.61)"], "severity": 0.3},
              {"layer": 1, "reasons": ["NaN/Inf detected", "Attention collapse in 75% of steps"], "severity": 1.0},
              {"layer": 2, "reasons": ["Attention collapse in 60% of steps"], "severity": 0.4},
              {"layer": 3, "reasons": ["Unstable L2 norms (CV=0.52)"], "severity": 0.3}]
    ncomp = compound_signals(Hc, Mc, Sc, Tc, lbs, basins)
    nfactors = ["elevated_entropy", "repetition_loop", "compound:context_loss"]
    nwarn = ["entropy_accelerating", "repetition_loop"]
    cases.append({"name": "narrative_all_sentences", "kind": "narrative",
                  "input": {"risk_score": 0.95, "risk_factors": nfactors, "blamed_layers": nblame,
                            "warning_signals": nwarn, "steps": nsteps,
                            "compound_descriptions": [c["description"] for c in ncomp]},
                  "expect": {"summary": narrative(0.95, nfactors, nblame, nwarn, nsteps, ncomp)}})
    cases.append({"name": "narrative_low_clean", "kind": "narrative",
                  "input": {"risk_score": 0.1, "risk_factors": [], "blamed_layers": [],
                            "warning_signals": [], "steps": nsteps[:1], "compound_descriptions": []},
                  "expect": {"summary": narrative(0.1, [], [], [], nsteps[:1], [])}})
    cases.append({"name": "prompt_hash_unicode", "kind": "prompt_hash",
                  "input": {"prompt": "  Café ☕ ÀÉ\n", "hf_id": "tests/fixtures/gpt2-tiny"},
                  "expect": {"prompt_hash": prompt_hash("  Café ☕ ÀÉ\n", "tests/fixtures/gpt2-tiny")}})
    return cases


# ---------------------------------------------------------------------------------------------


def write_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def sanity(doc):
    """Checks that the numbers look sane (entropy <= log2 V, masses in [0, 1], ...)."""
    V = doc["vocab_size"]
    for s in doc["steps"]:
        assert s["entropy_bits"] is not None and 0 <= s["entropy_bits"] <= math.log2(V) + 1e-12
        assert abs(s["perplexity"] - 2 ** s["entropy_bits"]) <= 1e-9 * s["perplexity"]
        assert 0 <= s["topk_mass"] <= 1 + 1e-12 and 0 <= s["top_k_margin"] <= 1
        assert s["surprisal_bits"] >= 0
        for ly in s["layers"] + doc.get("encoder_layers", []):
            a = ly["attention"]
            if a["valid"]:
                assert 0 <= a["entropy_mean_normalized"] <= 1 + 1e-9
                assert 0 < a["concentration_min"] <= a["concentration_max"] <= 1 + 1e-9
            assert not ly["has_nan"] and not ly["has_inf"] and not ly["hidden"]["clipped"]
    return V


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "health"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.only or MODELS:
        for pi in range(len(PROMPTS)):
            doc = build_case(name, pi)
            sanity(doc)
            path = os.path.join(args.out, f"{name}.p{pi}.json")
            write_json(doc, path)
            s0 = doc["steps"][0]
            print(f"{name} p{pi}: P={len(doc['prompt_ids'])} H0={s0['entropy_bits']:.4f} "
                  f"risk={doc['risk']['risk_score']:.4f} factors={doc['risk']['risk_factors']} "
                  f"flags rep={doc['health_flags']['repetition_loop_detected']} "
                  f"collapse={doc['health_flags']['attention_collapse_detected']} "
                  f"{os.path.getsize(path)} bytes")
    write_json(edge_cases(), os.path.join(args.out, "edge.json"))
    print("edge.json written")


if __name__ == "__main__":
    main()
