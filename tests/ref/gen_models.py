#!/usr/bin/env python3
"""Generate the tiny random Hugging Face models and reference outputs used by the C parity tests.

Every fixture directory under tests/fixtures/ is a `save_pretrained` directory (config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json) plus
`ref.safetensors`, which holds what transformers computes for three prompts (fp32, eager
attention). tests/ref/README.md documents the tensor naming scheme.

The run is deterministic: every random draw comes from a seeded torch generator, torch runs on
one thread, the Unigram trainer's hash-order effects are canonicalised and ref.safetensors gets a
sorted header, so rerunning produces byte-identical files for the same library versions. Usage:  python tests/ref/gen_models.py [--out tests/fixtures] [--only NAME ...]
"""

import os

# Keep the tokenizers library on one thread (its parallel trainers add in varying order).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

torch.set_num_threads(1)  # single-threaded kernels: identical float results on every rerun
torch.set_grad_enabled(False)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
transformers.logging.set_verbosity_error()

# ---------------------------------------------------------------------------------------------
# Training text for the tokenizers: a few KB of varied English (prose, dialogue, numbers, lists,
# code-ish text, a little non-ASCII) so merges look like real subwords.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog did not care; it was asleep in the sun.
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he walked down to the harbour, checked his nets, and talked with the other men.
"Will the weather hold?" they asked each other. "It always does, until it doesn't," he said.
In 1969, astronauts walked on the moon for the first time. Millions of people watched on TV.
The mission lasted 8 days, 3 hours and 18 minutes, and the crew returned safely to Earth.
Scientists study the stars, the planets, and the small rocks that travel between them.
A computer program is a list of instructions. The machine reads them one by one and acts.
For example: if the value is greater than 10, print the result; otherwise, try again.
She opened the window and the cold air of the winter morning filled the room at once.
We're going to the market today. I'll buy apples, bread, cheese, and a bottle of milk.
They've been working on this project for three years, and it's finally ready to ship.
You can't always get what you want, but if you try sometimes, you might find what you need.
The cafe on the corner serves the best coffee in town; the owner, Rene, roasts it himself.
A naive question is still a question. Teachers say there are no stupid questions at all.
Water boils at 100 degrees Celsius at sea level, and it freezes at 0 degrees Celsius.
The train leaves at 7:45 in the morning and arrives in the city two hours later.
Reading books is one of the best ways to learn new words and to understand other people.
He said, "Let me think about it." Then he left the room without another word.
The river runs through the valley, past the farms and the old stone bridge, to the sea.
Music has the power to change how we feel; a song can make us happy or make us cry.
My favourite colours are blue, green and yellow. What are yours? Tell me, please!
The meeting was moved from Monday to Thursday because half of the team was away.
Prices rose by 5 percent last year, while wages grew by only 2 percent on average.
The garden was full of flowers: roses, tulips, daisies, and a few tall sunflowers.
Learning a language takes time, patience, and a lot of practice with real people.
Children played in the park until the sun went down and their parents called them home.
The little robot rolled across the floor, beeped twice, and then stopped near the door.
Please remember to turn off the lights and lock the door when you leave the office.
History teaches us that great changes often begin with small, quiet decisions.
The storm knocked down trees and power lines, but nobody in the town was hurt.
Good software is tested, documented, and easy to change when the needs change.
The old library had thousands of books, maps, letters, and photographs from the past.
Time flies when you are having fun, and it crawls when you are waiting for news.
The cat sat on the mat and watched the birds outside the window all afternoon.
Our team won the game by two points in the last minute, and the crowd went wild.
It is a truth universally acknowledged that a good story needs a strong beginning.
The recipe needs two eggs, a cup of flour, half a cup of sugar, and some butter.
At night the city lights look like stars that have fallen down onto the streets.
Why do we dream? Nobody knows for sure, but there are many interesting theories.
"""

CORPUS_LINES = [line for line in CORPUS.splitlines() if line.strip()]

# Strings used to check that the saved tokenizer, reloaded by transformers, encodes and decodes
# exactly like the tokenizers object it was built from.
TOKENIZER_PROBES = [
    "",
    "a",
    "Hello world",
    " Hello world",
    "Hello   world  ",
    "\n\nfoo\tbar",
    "I'm don't we'll they've",
    "12345 and 3.14159",
    "naïve café ☕ Ω",
    "The quick brown fox jumps over the lazy dog.",
]

# Prompts shared by every fixture; each encodes to 5..12 tokens with each tokenizer (checked
# below). p0 has a contraction, p1 digits, p2 non-ASCII (GPT-2: multi-byte byte-level tokens,
# Llama: <0xNN> byte fallback, T5: <unk>).
PROMPTS = [
    "We're going to the sea!",
    "In 1969, the moon",
    "Café ☕ for you",
]

GREEDY_DECODER_ONLY = 32  # new tokens generated for GPT-2 / Llama fixtures
GREEDY_SEQ2SEQ = 16  # decoder tokens generated for T5 fixtures


# ---------------------------------------------------------------------------------------------
# Tokenizers


def train_gpt2_tokenizer(vocab_size):
    """GPT-2 style byte-level BPE: ByteLevel pre-tokenizer/decoder, <|endoftext|> as id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS_LINES, trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def train_llama_tokenizer(vocab_size):
    """Llama-2 style SentencePiece BPE as transformers converts it ("legacy" tokenizer.json).

    Ids: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258 (byte fallback), then characters and
    merges. The merges are learnt on Metaspace-split words so pieces never span a word boundary,
    as in SentencePiece; the final pipeline is the Llama-2 one: normalizer Prepend("▁") +
    Replace(" ", "▁"), no pre-tokenizer, BPE(byte_fallback, fuse_unk), TemplateProcessing "<s> $A".
    """
    specials = ["<unk>", "<s>", "</s>"]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always", split=True
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256, min_frequency=2, special_tokens=specials, show_progress=False
    )
    trainer_tok.train_from_iterator(CORPUS_LINES, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    learnt = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in learnt:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def train_t5_tokenizer(vocab_size):
    """T5 style Unigram: <pad>=0 </s>=1 <unk>=2, NFKC normalizer (stand-in for SentencePiece's
    precompiled nmt_nfkc map), WhitespaceSplit + Metaspace pre-tokenizer, "$A </s>" template."""
    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token="<unk>",
        max_piece_length=8,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS_LINES, trainer)
    # The Unigram trainer is not reproducible as is: its EM sums in hash-map order, so scores
    # differ in the last bits between runs, and the characters it appends at the end (scores
    # min - 1e-4, min - 2e-4, ...) come in hash-set order. Round the scores, sort by descending
    # score (ties by piece), and hand that appended tail its scores in code-point order.
    trained = json.loads(tok.to_str())["model"]["vocab"]
    pieces = sorted(
        ((p, round(sc, 6)) for p, sc in trained if p not in specials), key=lambda ps: (-ps[1], ps[0])
    )
    chars = [i for i, (p, _) in enumerate(pieces) if len(p) == 1]
    run = len(chars) - 1  # bottom run of single characters spaced by exactly 1e-4
    while run > 0 and abs(pieces[chars[run - 1]][1] - pieces[chars[run]][1] - 1e-4) < 1e-6:
        run -= 1
    tail = chars[run:]
    tail_pieces = sorted(pieces[i][0] for i in tail)
    for i, piece in zip(tail, tail_pieces):
        pieces[i] = (piece, pieces[i][1])
    pieces.sort(key=lambda ps: (-ps[1], ps[0]))
    vocab = [(p, 0.0) for p in specials] + pieces
    tok.model = models.Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", 1)]
    )
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def wrap_tokenizer(family, tok):
    """Wrap a tokenizers object in the transformers class whose save/load keeps tokenizer.json.

    transformers 5 rebuilds the pipeline for LlamaTokenizer and T5Tokenizer from vocab/merges
    (a non-legacy Metaspace pre-tokenizer for Llama), so those families are saved as the generic
    TokenizersBackend (PreTrainedTokenizerFast) class, which loads tokenizer.json verbatim.
    GPT2Tokenizer keeps the file's pipeline and is used for GPT-2.
    """
    if family == "gpt2":
        eot = "<|endoftext|>"
        return transformers.GPT2TokenizerFast(
            tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot
        )
    if family == "llama":
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            clean_up_tokenization_spaces=False,
        )
    if family == "t5":
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            clean_up_tokenization_spaces=False,
        )
    raise ValueError(family)


def check_tokenizer_dir(path, tok):
    """The saved tokenizer.json must be the fast-tokenizer file, and transformers' reload must
    encode/decode the probe strings exactly like the tokenizers object."""
    with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    for key in ("model", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert key in on_disk, f"{path}/tokenizer.json lacks {key}"
    from_file = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(path)
    for s in TOKENIZER_PROBES:
        want = tok.encode(s).ids
        assert from_file.encode(s).ids == want, (path, s)
        got = hf(s)["input_ids"]
        assert got == want, f"{path}: transformers encodes {s!r} as {got}, tokenizers as {want}"
        assert hf.decode(got) == tok.decode(want, skip_special_tokens=False), (path, s)
    return hf


# ---------------------------------------------------------------------------------------------
# Random weights with O(1) activations


def reinit_(model, seed, linear_std, embed_std, norm_jitter=0.1, bias_std=0.05, overrides=()):
    """Overwrite every parameter with seeded random values.

    HF's default init (std 0.02) gives nearly uniform attention and flat logits, which would make
    parity tests weak. `overrides` is a list of (substring, std) applied before the defaults.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        shape = p.shape
        rnd = torch.randn(shape, generator=gen, dtype=torch.float32)
        std = None
        for sub, s in overrides:
            if sub in name:
                std = s
                break
        if std is not None:
            val = rnd * std
        elif "norm" in name or ".ln_" in name or name.endswith("ln_f.weight"):
            val = 1.0 + norm_jitter * rnd if name.endswith("weight") else bias_std * rnd
        elif name.endswith("bias"):
            val = bias_std * rnd
        elif "wte" in name or "embed_tokens" in name or "shared" in name or "wpe" in name:
            val = embed_std * rnd
        else:
            val = linear_std * rnd
        p.copy_(val.to(p.dtype))


# ---------------------------------------------------------------------------------------------
# Statistics printed for reviewers


def attn_entropy_range(attn, causal):
    """attn: [H, Tq, Tk] probabilities. Returns (min, max, mean) row entropy in nats and the mean
    top probability; for causal maps the first row (always one key) is skipped."""
    rows = attn[:, 1:, :] if causal and attn.shape[1] > 1 else attn
    p = rows.clamp_min(1e-30)
    ent = -(rows * p.log()).sum(-1)
    return ent.min().item(), ent.max().item(), ent.mean().item(), rows.max(-1).values.mean().item()


def min_margin(logits):
    """Smallest top1 - top2 logit gap over the rows of [N, V] logits."""
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).min().item()


# Greedy parity must not hinge on a near tie: every step's top1 - top2 logit gap has to exceed
# this (C fp32 logits differ from torch by ~1e-5). Change the fixture's seed if it fails.
MIN_GREEDY_MARGIN = 1e-3


def check_margin(step_logits, prompt_index):
    m = min_margin(step_logits)
    assert m >= MIN_GREEDY_MARGIN, f"prompt {prompt_index}: greedy top1-top2 gap {m} is a near tie"


class LastBlockHook:
    """Captures the output of one block (before the final norm, which output_hidden_states applies
    to its last entry)."""

    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        self.value = output[0] if isinstance(output, tuple) else output

    def remove(self):
        self.handle.remove()


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def i64(t):
    return t.detach().to(torch.int64).contiguous().clone()


# ---------------------------------------------------------------------------------------------
# Reference outputs


def decoder_only_refs(model, hf_tok, prompts, greedy, full_logits):
    """Reference tensors for a GPT-2 / Llama model; see README.md for the names."""
    tensors, report = {}, []
    layers = model.config.num_hidden_layers
    eos = model.config.eos_token_id
    last_block = model.transformer.h[-1] if hasattr(model, "transformer") else model.model.layers[-1]
    hook = LastBlockHook(last_block)
    for pi, text in enumerate(prompts):
        ids = torch.tensor([hf_tok(text)["input_ids"]], dtype=torch.long)
        T = ids.shape[1]
        assert 5 <= T <= 12, f"prompt {pi} has {T} tokens: {text!r}"
        out = model(ids, output_hidden_states=True, output_attentions=True)
        assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
        tensors[f"p{pi}.input_ids"] = i64(ids[0])
        tensors[f"p{pi}.logits"] = f32(out.logits[0])
        for j, h in enumerate(out.hidden_states):
            tensors[f"p{pi}.hidden.{j}"] = f32(h[0])
        tensors[f"p{pi}.last_block_out"] = f32(hook.value[0])
        for li, a in enumerate(out.attentions):
            tensors[f"p{pi}.attn.{li}"] = f32(a[0])

        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=greedy,
            min_new_tokens=greedy,  # EOS is masked until `greedy` tokens exist
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=eos,
        )
        seq = gen.sequences[0]
        new = seq[T:]
        step_logits = torch.stack([lg[0] for lg in gen.logits])
        assert new.shape[0] == greedy and step_logits.shape[0] == greedy
        # min_new_tokens only ever changes the choice when EOS is the raw argmax; the fixtures
        # are chosen so that never happens, so plain argmax of the stored logits reproduces them.
        assert torch.equal(step_logits.argmax(-1), new), f"prompt {pi}: EOS suppression mattered"
        check_margin(step_logits, pi)
        tensors[f"p{pi}.greedy_ids"] = i64(new)
        tensors[f"p{pi}.greedy_logits"] = f32(step_logits)

        # One full forward over prompt + continuation: KV-cache decode must equal recompute.
        full = model(seq[None], output_hidden_states=True, output_attentions=True)
        kv_vs_full = (full.logits[0, T - 1 : T + greedy - 1] - step_logits).abs().max().item()
        tensors[f"p{pi}.full_ids"] = i64(seq)
        if full_logits:
            tensors[f"p{pi}.full_logits"] = f32(full.logits[0])
        tensors[f"p{pi}.full_hidden.{layers}"] = f32(full.hidden_states[layers][0])
        for li, a in enumerate(full.attentions):
            tensors[f"p{pi}.full_attn.{li}"] = f32(a[0])

        ents = [attn_entropy_range(a[0], causal=True) for a in full.attentions]
        report.append(
            {
                "prompt": pi,
                "tokens": T,
                "max_abs_logit": out.logits.abs().max().item(),
                "logit_std": out.logits.std().item(),
                "attn_entropy": (min(e[0] for e in ents), max(e[1] for e in ents)),
                "attn_top_prob_mean": sum(e[3] for e in ents) / len(ents),
                "greedy_min_margin": min_margin(step_logits),
                "greedy_distinct": len(set(new.tolist())),
                "kv_vs_full_max_abs": kv_vs_full,
                "greedy_ids": new.tolist(),
                "greedy_text": hf_tok.decode(new),
            }
        )
    hook.remove()
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is not None:
        # Final (scaled) rotary frequencies, so rope-scaling code can be unit-tested directly.
        assert rotary.attention_scaling == 1.0
        tensors["rope.inv_freq"] = f32(rotary.inv_freq)
    return tensors, report


def t5_buckets(model, q_len, k_len, bidirectional):
    """[q_len, k_len] I64 bucket ids for relative_position = key_pos - query_pos."""
    cfg = model.config
    fn = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket
    rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    return i64(
        fn(
            rel,
            bidirectional=bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
    )


def t5_bucket_report(model, enc_len, dec_len):
    """Which relative-position branches the fixture lengths reach, using transformers' own
    bucket function: exact (|rel| < max_exact), logarithmic, and clipped to num_buckets - 1."""
    cfg = model.config
    fn = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket
    lines = []
    for label, bidir, n in (("encoder", True, enc_len), ("decoder", False, dec_len)):
        rel = torch.arange(-(n - 1), n)
        buckets = fn(
            rel,
            bidirectional=bidir,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        nb = cfg.relative_attention_num_buckets // (2 if bidir else 1)
        max_exact = nb // 2
        dist = rel.abs() if bidir else (-rel).clamp_min(0)
        log_hit = bool(((dist >= max_exact) & (buckets % nb < nb - 1)).any())
        clip_hit = bool((buckets % nb == nb - 1).any() & (dist >= max_exact).any())
        lines.append(
            f"{label}: |rel| <= {n - 1}, {nb} buckets per direction, exact below {max_exact}, "
            f"log branch used: {log_hit}, top bucket used: {clip_hit}, "
            f"buckets {sorted(set(buckets.tolist()))}"
        )
    return lines


def seq2seq_refs(model, hf_tok, prompts, greedy):
    """Reference tensors for a T5 model; see README.md for the names."""
    tensors, report = {}, []
    cfg = model.config
    start = cfg.decoder_start_token_id
    enc_hook = LastBlockHook(model.encoder.block[-1])
    dec_hook = LastBlockHook(model.decoder.block[-1])
    for pi, text in enumerate(prompts):
        ids = torch.tensor([hf_tok(text)["input_ids"]], dtype=torch.long)
        P = ids.shape[1]
        assert 5 <= P <= 12, f"prompt {pi} has {P} tokens: {text!r}"
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=greedy,
            min_new_tokens=greedy,
            output_logits=True,
            return_dict_in_generate=True,
            # transformers 5.24 sizes the default cache from num_layers (the encoder depth), which
            # breaks when num_decoder_layers is larger; lazily grown caches avoid that.
            cache=transformers.EncoderDecoderCache(
                transformers.DynamicCache(), transformers.DynamicCache()
            ),
        )
        seq = gen.sequences[0]
        assert seq[0].item() == start
        new = seq[1:]
        step_logits = torch.stack([lg[0] for lg in gen.logits])
        assert new.shape[0] == greedy
        assert torch.equal(step_logits.argmax(-1), new), f"prompt {pi}: EOS suppression mattered"
        check_margin(step_logits, pi)

        dec_in = torch.cat([torch.tensor([start]), new[:-1]])[None]
        out = model(
            input_ids=ids,
            decoder_input_ids=dec_in,
            output_hidden_states=True,
            output_attentions=True,
        )
        tensors[f"p{pi}.input_ids"] = i64(ids[0])
        for j, h in enumerate(out.encoder_hidden_states):
            tensors[f"p{pi}.enc_hidden.{j}"] = f32(h[0])
        tensors[f"p{pi}.enc_last_block_out"] = f32(enc_hook.value[0])
        for li, a in enumerate(out.encoder_attentions):
            tensors[f"p{pi}.enc_attn.{li}"] = f32(a[0])
        tensors[f"p{pi}.greedy_ids"] = i64(new)
        tensors[f"p{pi}.greedy_logits"] = f32(step_logits)
        tensors[f"p{pi}.dec_input_ids"] = i64(dec_in[0])
        for j, h in enumerate(out.decoder_hidden_states):
            tensors[f"p{pi}.dec_hidden.{j}"] = f32(h[0])
        tensors[f"p{pi}.dec_last_block_out"] = f32(dec_hook.value[0])
        for li, a in enumerate(out.decoder_attentions):
            tensors[f"p{pi}.dec_attn.{li}"] = f32(a[0])
        for li, a in enumerate(out.cross_attentions):
            tensors[f"p{pi}.cross_attn.{li}"] = f32(a[0])
        tensors[f"p{pi}.dec_logits"] = f32(out.logits[0])
        # Relative-position bucket of every (query, key) pair, from transformers' own function.
        tensors[f"p{pi}.enc_buckets"] = t5_buckets(model, P, P, bidirectional=True)
        tensors[f"p{pi}.dec_buckets"] = t5_buckets(model, greedy, greedy, bidirectional=False)
        assert len(out.encoder_hidden_states) == cfg.num_layers + 1
        assert len(out.decoder_hidden_states) == cfg.num_decoder_layers + 1

        enc_e = [attn_entropy_range(a[0], causal=False) for a in out.encoder_attentions]
        dec_e = [attn_entropy_range(a[0], causal=True) for a in out.decoder_attentions]
        crs_e = [attn_entropy_range(a[0], causal=False) for a in out.cross_attentions]
        report.append(
            {
                "prompt": pi,
                "tokens": P,
                "max_abs_logit": out.logits.abs().max().item(),
                "logit_std": out.logits.std().item(),
                "enc_attn_entropy": (min(e[0] for e in enc_e), max(e[1] for e in enc_e)),
                "dec_attn_entropy": (min(e[0] for e in dec_e), max(e[1] for e in dec_e)),
                "cross_attn_entropy": (min(e[0] for e in crs_e), max(e[1] for e in crs_e)),
                "greedy_min_margin": min_margin(step_logits),
                "greedy_distinct": len(set(new.tolist())),
                "kv_vs_full_max_abs": (out.logits[0] - step_logits).abs().max().item(),
                "greedy_ids": new.tolist(),
                "greedy_text": hf_tok.decode(new),
            }
        )
    enc_hook.remove()
    dec_hook.remove()
    longest = max(tensors[f"p{pi}.input_ids"].shape[0] for pi in range(len(prompts)))
    for line in t5_bucket_report(model, longest, greedy):
        print("  relative positions, " + line)
    return tensors, report


# ---------------------------------------------------------------------------------------------
# Model specifications


def llama3_branches(cfg):
    """Print which rotary inv_freq entries fall in each branch of the llama3 rope scaling."""
    rp = cfg.rope_parameters
    dim = cfg.head_dim
    base = rp["rope_theta"]
    orig = rp["original_max_position_embeddings"]
    low_wl = orig / rp["low_freq_factor"]
    high_wl = orig / rp["high_freq_factor"]
    out = []
    for j in range(dim // 2):
        inv = 1.0 / base ** (2 * j / dim)
        wl = 2 * math.pi / inv
        if wl < high_wl:
            branch = "high (unchanged)"
        elif wl > low_wl:
            branch = "low (/factor)"
        else:
            branch = "medium (interpolated)"
        out.append((j, wl, branch))
    return out, (high_wl, low_wl)


def llama_config(vocab, **kw):
    base = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    base.update(kw)
    return transformers.LlamaConfig(**base)


SPECS = {
    # full_logits ([T+G, V] per prompt, ~270 KB) only where the size budget allows.
    "gpt2-tiny": dict(family="gpt2", vocab=512, seed=1001, full_logits=True),
    "llama-tiny": dict(family="llama", vocab=512, seed=2101),
    "llama-tiny-tied-bf16": dict(family="llama", vocab=512, seed=2201),
    "llama-tiny-rope3": dict(family="llama", vocab=512, seed=2302),
    "llama-tiny-linear": dict(family="llama", vocab=512, seed=2401),
    "t5-tiny": dict(family="t5", vocab=384, seed=3001),
    "t5v11-tiny": dict(family="t5", vocab=384, seed=3003),
}


# With a tied head, logit_j = norm(h) . e_j favours the token just fed in (h contains e_j), and
# tiny random models then repeat one token forever. A final-norm weight of random sign (mean 0)
# removes that self-similarity without changing the logit scale.
TIED_FINAL_NORM = [("model.norm.weight", 1.0), ("decoder.final_layer_norm.weight", 1.0)]

# An untied lm_head with std 0.5 gives logits with a spread of ~4 (0.15 would give ~1).
LM_HEAD = [("lm_head", 0.5)]


def build_model(name, vocab, special_ids):
    """Returns (model, save_dtype, notes) for one fixture name."""
    notes = {}
    if name == "gpt2-tiny":
        cfg = transformers.GPT2Config(
            vocab_size=vocab,
            n_positions=128,
            n_embd=64,
            n_layer=2,
            n_head=4,
            activation_function="gelu_new",
            bos_token_id=special_ids["eos"],
            eos_token_id=special_ids["eos"],
        )
        model = transformers.GPT2LMHeadModel(cfg)
        reinit_(model, SPECS[name]["seed"], linear_std=0.15, embed_std=0.5)
        return model, torch.float32, notes
    if name == "llama-tiny":
        model = transformers.LlamaForCausalLM(llama_config(vocab))
        reinit_(model, SPECS[name]["seed"], linear_std=0.15, embed_std=1.0, overrides=LM_HEAD)
        notes["legacy_rope_keys"] = True
        return model, torch.float32, notes
    if name == "llama-tiny-tied-bf16":
        cfg = llama_config(
            vocab, num_key_value_heads=4, head_dim=32, tie_word_embeddings=True
        )
        model = transformers.LlamaForCausalLM(cfg)
        reinit_(model, SPECS[name]["seed"], linear_std=0.12, embed_std=0.5, overrides=TIED_FINAL_NORM)
        return model, torch.bfloat16, notes
    if name == "llama-tiny-rope3":
        cfg = llama_config(
            vocab,
            num_key_value_heads=1,
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        model = transformers.LlamaForCausalLM(cfg)
        reinit_(model, SPECS[name]["seed"], linear_std=0.15, embed_std=1.0, overrides=LM_HEAD)
        branches, (hw, lw) = llama3_branches(cfg)
        print(f"  llama3 rope: high_freq_wavelen={hw} low_freq_wavelen={lw}")
        for j, wl, br in branches:
            print(f"    inv_freq[{j}] wavelen {wl:10.2f}  {br}")
        notes["llama3_branches"] = [br.split()[0] for _, _, br in branches]
        return model, torch.float32, notes
    if name == "llama-tiny-linear":
        cfg = llama_config(
            vocab,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        )
        model = transformers.LlamaForCausalLM(cfg)
        reinit_(model, SPECS[name]["seed"], linear_std=0.15, embed_std=1.0, overrides=LM_HEAD)
        notes["legacy_rope_keys"] = True
        return model, torch.float32, notes
    if name == "t5-tiny":
        cfg = transformers.T5Config(
            vocab_size=vocab,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=8,
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        model = transformers.T5ForConditionalGeneration(cfg)
        # No 1/sqrt(d_kv) in T5 attention: keep q/k smaller so scores stay O(1..5). The tied
        # head multiplies by d_model**-0.5, hence the larger embeddings.
        reinit_(
            model,
            SPECS[name]["seed"],
            linear_std=0.15,
            embed_std=2.0,
            overrides=TIED_FINAL_NORM
            + [
                (".q.", 0.08),
                (".k.", 0.08),
                (".o.", 0.3),
                (".wo.", 0.3),
                ("relative_attention_bias", 1.0),
            ],
        )
        return model, torch.float32, notes
    if name == "t5v11-tiny":
        cfg = transformers.T5Config(
            vocab_size=vocab,
            d_model=64,
            d_kv=16,
            d_ff=96,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=6,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        model = transformers.T5ForConditionalGeneration(cfg)
        # transformers 5 always ties lm_head to shared at construction (tie_word_embeddings=False
        # only turns off the d_model**-0.5 rescale, as config.scale_decoder_outputs); give the
        # head its own tensor, as flan-t5 checkpoints have. It is saved, and reloading keeps it
        # untied because both tensors are in the file with different values.
        model.lm_head.weight = torch.nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        assert not cfg.scale_decoder_outputs
        reinit_(
            model,
            SPECS[name]["seed"],
            linear_std=0.15,
            embed_std=1.0,
            overrides=[
                (".q.", 0.08),
                (".k.", 0.08),
                ("relative_attention_bias", 1.0),
                ("lm_head", 0.15),
            ],
        )
        notes["hub_t5_untied_config"] = True
        return model, torch.float32, notes
    raise ValueError(name)


def rewrite_rope_legacy(path):
    """Rewrite config.json's rope_parameters into the pre-v5 keys (top-level rope_theta +
    rope_scaling with "type"), the form most hub checkpoints still carry."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rope_type = rp.pop("rope_type")
    cfg["rope_scaling"] = dict(type=rope_type, **rp) if rope_type != "default" else None
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def rewrite_t5_untied(path):
    """Write config.json as hub flan-t5 checkpoints have it: tie_word_embeddings false and no
    transformers-5-only scale_decoder_outputs key (which transformers derives from it on load)."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg.pop("scale_decoder_outputs") is False
    cfg["tie_word_embeddings"] = False
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def save_safetensors_sorted(tensors, path, metadata):
    """safetensors.torch.save with the header rewritten in a fixed order: the library emits
    __metadata__ in hash-map order, which would make every regeneration differ."""
    blob = safetensors.torch.save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data must start 8-byte aligned; the format pads with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n :])
    reread = safetensors.torch.load_file(path)
    assert all(torch.equal(reread[k], v) for k, v in tensors.items())


def dir_size(path):
    return {fn: os.path.getsize(os.path.join(path, fn)) for fn in sorted(os.listdir(path))}


def generate(name, out_root, tokenizers_cache):
    spec = SPECS[name]
    family = spec["family"]
    key = (family, spec["vocab"])
    if key not in tokenizers_cache:
        trainer = {"gpt2": train_gpt2_tokenizer, "llama": train_llama_tokenizer}.get(
            family, train_t5_tokenizer
        )
        tokenizers_cache[key] = trainer(spec["vocab"])
    tok = tokenizers_cache[key]
    vocab = tok.get_vocab_size()
    special_ids = {"eos": tok.token_to_id("<|endoftext|>") if family == "gpt2" else 2}
    print(f"== {name}: vocab {vocab}")

    torch.manual_seed(spec["seed"])
    model, save_dtype, notes = build_model(name, vocab, special_ids)
    model.eval()

    path = os.path.join(out_root, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    # fp32 twin with the weights rounded through the save dtype; its non-persistent buffers
    # (rotary inv_freq) stay fp32, as they are on reload.
    mem = copy.deepcopy(model).eval()
    for p in mem.parameters():
        p.copy_(p.to(save_dtype).float())
    model.to(save_dtype).save_pretrained(path)
    if notes.get("legacy_rope_keys"):
        rewrite_rope_legacy(path)
    if notes.get("hub_t5_untied_config"):
        rewrite_t5_untied(path)
    wrap_tokenizer(family, tok).save_pretrained(path)
    hf_tok = check_tokenizer_dir(path, tok)

    # References come from the saved directory, reloaded as the runtime will see it, in fp32
    # (a bf16 checkpoint is widened to fp32, exactly as the C runtime does).
    auto = (
        transformers.AutoModelForSeq2SeqLM if family == "t5" else transformers.AutoModelForCausalLM
    )
    ref_model = auto.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    ref_model = ref_model.float().eval()
    # The reload must be the same network as the in-memory one (bf16-rounded where saved so):
    # identical weights, and logits equal up to the sdpa-vs-eager difference of the original.
    mem_sd, ref_sd = mem.state_dict(), ref_model.state_dict()
    assert sorted(mem_sd) == sorted(ref_sd), f"{name}: reloaded parameter names differ"
    for k, v in mem_sd.items():
        assert torch.equal(v, ref_sd[k]), f"{name}: reloaded {k} differs"
    probe = torch.tensor([[5, 17, 99, 3, 42, 7]])
    if family == "t5":
        a = ref_model(input_ids=probe, decoder_input_ids=probe).logits
        b = mem(input_ids=probe, decoder_input_ids=probe).logits
    else:
        a, b = ref_model(probe).logits, mem(probe).logits
    assert torch.allclose(a, b, rtol=0, atol=1e-4), f"{name}: reload gives other logits"

    prompts = PROMPTS
    if family == "t5":
        tensors, report = seq2seq_refs(ref_model, hf_tok, prompts, GREEDY_SEQ2SEQ)
        greedy = GREEDY_SEQ2SEQ
    else:
        tensors, report = decoder_only_refs(
            ref_model, hf_tok, prompts, GREEDY_DECODER_ONLY, full_logits=spec.get("full_logits", False)
        )
        greedy = GREEDY_DECODER_ONLY
    meta = {
        "model": name,
        "num_prompts": str(len(prompts)),
        "greedy_tokens": str(greedy),
        "greedy_stop": "min_new_tokens=max_new_tokens (EOS never stops generation)",
        "compute_dtype": "float32",
        "checkpoint_dtype": str(save_dtype).replace("torch.", ""),
        "attn_implementation": "eager",
        "hidden_last": "after the final norm (HF output_hidden_states)",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "tokenizers_version": tokenizers.__version__,
    }
    if "llama3_branches" in notes:
        meta["llama3_inv_freq_branches"] = ",".join(notes["llama3_branches"])
    meta["full_logits"] = "yes" if spec.get("full_logits") else "no"
    for pi, text in enumerate(prompts):
        meta[f"p{pi}.text"] = text
    save_safetensors_sorted(tensors, os.path.join(path, "ref.safetensors"), meta)

    for r in report:
        print("  " + json.dumps(r, ensure_ascii=False))
    sizes = dir_size(path)
    print(f"  files: {sizes}  total {sum(sizes.values())} bytes")
    with safetensors.safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        names = list(f.keys())
        print(f"  model.safetensors: {len(names)} tensors, dtype {f.get_tensor(names[0]).dtype}")
    return sum(sizes.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    ap.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    args = ap.parse_args()
    print(
        f"python {sys.version.split()[0]} torch {torch.__version__} transformers "
        f"{transformers.__version__} tokenizers {tokenizers.__version__} "
        f"safetensors {safetensors.__version__} numpy {np.__version__}"
    )
    total = 0
    cache = {}
    for name in args.only or list(SPECS):
        total += generate(name, os.path.normpath(args.out), cache)
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    main()
