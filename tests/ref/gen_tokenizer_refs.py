#!/usr/bin/env python3
"""gen_tokenizer_refs.py — reference ids for the C tokenizer parity tests (tests/test_tokenizer.c).

Usage (from the repository root, in a venv with `pip install tokenizers`):
    make tokenizers   # unpacks tests/data/tokenizers into build/tokenizers
    python tests/ref/gen_tokenizer_refs.py [--data build/tokenizers]

Writes tests/fixtures/tokenizers/{gpt2,llama2,llama3,unigram,unigram-precompiled}.jsonl and trains
the small T5-style Unigram tokenizer tests/fixtures/tokenizers/unigram/tokenizer.json plus its
variant with a SentencePiece Precompiled normalizer, unigram-precompiled/tokenizer.json (only if
they do not exist yet, so re-running keeps the committed models; --retrain rebuilds them; that
needs `pip install sentencepiece protobuf`).

Reference semantics: the Hugging Face `tokenizers` library (what transformers' fast tokenizers
call). The text is Python str; corpus entries given as raw bytes are first decoded with
errors="replace" (invalid UTF-8 -> U+FFFD), which is what the C encoder does too.

One JSON object per line:
  "t": text (str)  or  "b": base64 of the raw bytes (invalid UTF-8 or a NUL byte)
  "i": ids, encode(text, add_special_tokens=True)
  "n": ids, add_special_tokens=False            (omitted when equal to "i")
  "d": decode(n, skip_special_tokens=False)     (omitted when equal to the text after U+FFFD
                                                 replacement; "db" = base64 form when it has NUL)
  "s": clean_up(decode(i, skip_special_tokens=True))  (omitted when equal to "d"; "sb" likewise)
  "ti"/"tn": (llama2 only) transformers >= 5 AutoTokenizer ids with / without special tokens,
        where they differ from "i"/"n" (transformers 5 rebuilds the Llama pipeline)
A final line {"single": [[id, text], ...]} holds decode([id], skip_special_tokens=False) for a
deterministic sample of ids (trace token_text)."""
import argparse
import base64
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")


def clean_up(s):
    """transformers' clean_up_tokenization (PreTrainedTokenizerBase.clean_up_tokenization)."""
    return (s.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
            .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m")
            .replace(" 's", "'s").replace(" 've", "'ve").replace(" 're", "'re"))


WORDS = ("the quick brown fox jumps over lazy dog Hello world tokenizer model transformer "
         "attention layer weights entropy sampling language English prose It was the best of "
         "times worst age wisdom foolishness we had everything before us nothing going direct "
         "Heaven other way naïve café résumé coöperate façade Zürich São Paulo Ærøskøbing "
         "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis "
         "GPU CPU HTTP JSON YAML C11 x86_64 aarch64 ResNet-50 GPT-2 Llama-3 T5 don't I'm "
         "we'll they've she'd you're it's DON'T I'M WE'LL THEY'VE SHE'D YOU'RE IT'S O'Neil "
         "rock'n'roll 'quoted' \"double\" ſtraße Straße İstanbul ΑΒΓ αβγ Ωmega Привет мир "
         "Ελληνικά עברית العربية हिन्दी नमस्ते ภาษาไทย 中文 漢字 日本語 ひらがな カタカナ 한국어 "
         "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ ﬁ ﬂ ﬃ ² ³ ½ ¾ Ⅻ ⅷ ① ٣ ४ ๕ € £ ¥ © ® ™ … — – • · ‰").split()
PUNCT = list(".,;:!?()[]{}<>/\\|@#$%^&*-_=+~`'\"") + ["...", "?!", "--", "->", "=>", "::", "//",
                                                     "/*", "*/", "#!", "&&", "||", "!=", "=="]
NUMS = ["0", "7", "42", "123", "1234", "12345", "123456789", "3.14159", "2024-11-26", "1,000,000",
        "$1,000,000.00", "-273.15", "1e-10", "0x7FFF", "0b1010", "10%", "v1.2.3", "192.168.0.1",
        "٣٤٥", "१२३", "१", "²³", "Ⅻ"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0", "\u3000",
          "\u2009", "\u200b", "\u0085", "\u2028", "\x0b", "\x0c", "\x1c", "\x1f", "    ", "\n\n\n"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖", "🚀🚀", "⭐", "☕", "🏳️‍🌈", "\U0001F9D1\u200d\U0001F4BB"]
MARKS = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "\u0301", "x\u20dd", "\u093f",
         "क्षि", "ก่", "ǅ", "Ⅰ"]
SPECIAL = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>", "<|begin_of_text|>", "<|eot_id|>",
           "<|end_of_text|>", "<|start_header_id|>", "<mask>", "[SEP]", "ok", "ﬁx", "▁", "<0x41>",
           "<|endoftext", "<s", "< s>", "<|reserved_special_token_5|>"]
CODE = ["def f(x):\n    return x * 2\n", "int main(void) { return 0; }", "for i in range(10):",
        "    if (a && b) {\n        c++;\n    }", "#include <stdio.h>", "x = [1, 2, 3]",
        "print(\"hello\\n\")", "SELECT * FROM t WHERE id = 1;", "<div class=\"a\">b</div>",
        "\tindented\ttabs", "// comment", "a=b+c*d/e-f", "foo_bar_baz", "camelCaseName",
        "snake_case_name", "__init__", "'s'", "'t'", "it's'", "''", "'''", "`code`"]

HAND = [
    "", "a", " ", "  ", "   ", "\n", "\n\n\nfoo", "Hello world", " Hello world", "Hello  world",
    "Hello   world  ", "Hello there       dear", "Hello there\nHello there", "line1\r\nline2",
    "\ttab\tsep", "I'm don't we'll they've she'd", "I'M DON'T", "'s", "'S", "'sup", "'ſ", "'ſt",
    "12345678", "3.14159", "$1,000,000.00", "x² ½ Ⅻ", "naïve café", "cafe\u0301 (NFD)",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "ﬁ ligature", "a  ", "a   b", "a \n b", "a\n\n b", "a \t\n c", " \n ",
    "(foo", "$x", "_foo", "!!!\n\n", "...\r\n", "2024", "٣٤٥٦٧", "<|endoftext|>",
    "Hello<|endoftext|>world", "Hello <|endoftext|> world", "<s>hi", "Hello <s>hi", "</s></s>",
    "<s> </s>", "<|begin_of_text|>Hi<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi",
    "<mask>", "a <mask> b", "a   <mask>   b", "[SEP] a", "x [SEP]   y", "ok", "ok ok", "okay",
    "book", "ok.", "(ok)", "ﬁx", "a ﬁx b", "fix", "▁", "▁▁", "a▁b", "▁ hello", "<0x41>",
    "\x00", "a\x00b", "\x7f", "\u0085", "\u00a0a", "\u200ba", "\u3000a", "\u2028", "\x1c\x1d\x1e\x1f",
    "\x0b\x0c", "😀", "😀😀😀", "a😀b", " 😀", "👨‍👩‍👧‍👦", "中文测试", "日本語のテキスト", "한국어 텍스트",
    "नमस्ते दुनिया", "ภาษาไทย", "مرحبا بالعالم", "שלום עולם", "Ελληνικά", "Привет, мир!",
    "e\u0301\u0301\u0301", "\u0301", "İstanbul", "ſtraße", "KELVIN \u212a", "ǅemal",
    "The quick brown fox jumps over the lazy dog.", "Hello , world ! Is it ? Yes . I 'm sure .",
    "They 're here and we 've gone , n't we ?", "a ' b", "don 't", "It 's",
    "  leading and trailing  ", "\n\nparagraph\n\n", "   \n\n   ", "a\r\rb", "\r",
    "x" * 300, "ab" * 200, "9" * 100, "😀" * 60, "中" * 100, "a\u0301" * 50, " " * 100,
    "\n" * 50, "Ab1." * 80, "pneumonoultramicroscopicsilicovolcanoconiosis" * 5,
    "the " * 100, "<s>" * 10, "<|endoftext|>" * 5,
]
# raw byte strings, including invalid UTF-8 (decoded with errors="replace")
RAW = [b"\xff", b"abc\x80def", b"\xe2\x82", b"\xe2\x82 x", b"\xed\xa0\x80", b"\xf0\x9f\x98",
       b"\xf0\x9f\x98 ok", b"\xc0\xaf", b"\xe0\x80\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
       b"a\xfe\xfeb", b"\xc3", b"\xc3(", b"hello \xe4\xb8 world", b"\x80\x80\x80",
       b"\xef\xbf\xbd", b"<s>\xff</s>", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc", b"x\xc2"]


def corpus():
    rnd = random.Random(20261126)
    items = [s.encode("utf-8") for s in HAND] + RAW
    pools = [WORDS, WORDS, WORDS, PUNCT, NUMS, SPACES, EMOJI, MARKS, SPECIAL, CODE]
    while len(items) < 560:
        k = rnd.randint(1, 9)
        parts = []
        for _ in range(k):
            pool = rnd.choice(pools)
            parts.append(rnd.choice(pool))
            parts.append(rnd.choice(["", " ", " ", " ", "  ", "\n", "\t", ", ", ". "]))
        s = "".join(parts)
        if rnd.random() < 0.15:
            s = s.upper()
        if rnd.random() < 0.2:
            s = " " + s
        items.append(s.encode("utf-8"))
    # a few long mixed strings
    for _ in range(6):
        items.append(" ".join(rnd.choice(WORDS) for _ in range(150)).encode("utf-8"))
    return items


def train_unigram(path, texts):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", shrinking_factor=0.75, max_piece_length=12)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True),
                            AddedToken("[SEP]", rstrip=True, special=True)])
    tok.add_tokens([AddedToken("ok", single_word=True, normalized=True),
                    AddedToken("ﬁx", normalized=True)])
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1
    assert tok.token_to_id("<unk>") == 2
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path, pretty=False)


def training_text():
    rnd = random.Random(7)
    lines = []
    for _ in range(3000):
        lines.append(" ".join(rnd.choice(WORDS[:120]) for _ in range(rnd.randint(3, 14))))
    for _ in range(300):
        lines.append(" ".join(rnd.choice(PUNCT + NUMS + CODE) for _ in range(rnd.randint(2, 6))))
    return lines


# SentencePiece normalization rules (source code points -> target) for the Precompiled-normalizer
# fixture: full-width ASCII, plus rules that exercise HF's grapheme quirks ("a" has a rule, so the
# grapheme "a\u0308" is replaced by the "a" rule as a whole; "\r\n" is one grapheme).
def spm_rules():
    rules = []
    for i in range(26):
        rules += [("%X" % (0xFF21 + i), "%X" % (0x41 + i)), ("%X" % (0xFF41 + i), "%X" % (0x61 + i))]
    rules += [("%X" % (0xFF10 + i), "%X" % (0x30 + i)) for i in range(10)]
    rules += [("65 301", "E9"), ("9", "20"), ("A", "20"), ("D", "20"), ("2026", "2E 2E 2E"),
              ("FB01", "66 69"), ("3000", "20"), ("41 42 43", "61 62 63"), ("61", "61 61"),
              ("61 308", "E4"), ("200B", ""), ("1F600", "3A 29"), ("2160", "49"),
              ("2161", "49 49"), ("B2", "32"), ("BD", "31 2044 32")]
    return "".join(f"{a}\t{b}\n" for a, b in rules)


def build_precompiled(uni_path, path):
    """The Unigram fixture with a T5-style Sequence[Precompiled, Replace] normalizer whose
    charsmap SentencePiece compiles from spm_rules() (needs `pip install sentencepiece`)."""
    import tempfile
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "rules.tsv"), "w") as f:
            f.write(spm_rules())
        with open(os.path.join(d, "train.txt"), "w") as f:
            f.write("\n".join(training_text()))
        spm.SentencePieceTrainer.train(input=os.path.join(d, "train.txt"),
                                       model_prefix=os.path.join(d, "m"), vocab_size=300,
                                       model_type="unigram", minloglevel=2,
                                       normalization_rule_tsv=os.path.join(d, "rules.tsv"))
        m = pb.ModelProto()
        with open(os.path.join(d, "m.model"), "rb") as f:
            m.ParseFromString(f.read())
    tok = Tokenizer.from_file(uni_path)
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(m.normalizer_spec.precompiled_charsmap),
        normalizers.Replace(Regex(" {2,}"), " ")])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path, pretty=False)


PRECOMPILED_EXTRA = ["ＡＢＣ abc", "a\u0308", "banana", "x\r\ny", "…", "ﬁ ﬁx", "a\u200bb", "😀 ok",
                     "Ⅱ Ⅰ", "½", "e\u0301", "ABC", "ÄBC", "\u00e9", "a\u0308\u0301", "👍🏽a",
                     "🇫🇷🇫🇷", "\r\n\r\n", "x²"]


def b64(b):
    return base64.b64encode(b).decode("ascii")


def put_str(rec, key, s):
    if "\x00" in s:
        rec[key + "b"] = b64(s.encode("utf-8"))
    else:
        rec[key] = s


def write_refs(name, tok, items, tf_tok=None):
    """tf_tok: a transformers tokenizer whose ids are also stored ("ti"/"tn") where they differ."""
    lines = []
    for raw in items:
        text = raw.decode("utf-8", errors="replace")
        rec = {}
        if text.encode("utf-8") == raw and "\x00" not in text:
            rec["t"] = text
        else:
            rec["b"] = b64(raw)
        ids = tok.encode(text, add_special_tokens=True).ids
        ns = tok.encode(text, add_special_tokens=False).ids
        rec["i"] = ids
        if ns != ids:
            rec["n"] = ns
        if tf_tok is not None:
            ti = tf_tok(text, add_special_tokens=True)["input_ids"]
            tn = tf_tok(text, add_special_tokens=False)["input_ids"]
            if ti != ids:
                rec["ti"] = ti
            if tn != ns:
                rec["tn"] = tn
        d = tok.decode(ns, skip_special_tokens=False)
        if d != text:
            put_str(rec, "d", d)
        s = clean_up(tok.decode(ids, skip_special_tokens=True))
        if s != d:
            put_str(rec, "s", s)
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    vs = tok.get_vocab_size(with_added_tokens=True)
    rnd = random.Random(5)
    sample = sorted(set(list(range(0, min(vs, 300))) + rnd.sample(range(vs), min(vs, 700))
                        + [i for i in range(vs - 260, vs) if i >= 0]))
    single = []
    for i in sample:
        d = tok.decode([i], skip_special_tokens=False)
        single.append([i, d if "\x00" not in d else None])
    lines.append(json.dumps({"single": single}, ensure_ascii=False, separators=(",", ":")))
    path = os.path.join(OUT, name + ".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(items)} strings, {os.path.getsize(path)} bytes")


def gpt2_from_vocab_merges(d):
    """What transformers' GPT2TokenizerFast builds from vocab.json + merges.txt."""
    bpe = models.BPE.from_file(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    return tok


def transformers_llama(d):
    """transformers >= 5 rebuilds a Llama tokenizer's pipeline (see tok_load.c
    llama_class_pipeline); its ids are what AutoTokenizer.from_pretrained(dir) gives."""
    try:
        import transformers
        from transformers import AutoTokenizer
    except ImportError:
        print("transformers not installed: no transformers-5 ids (ti/tn) for llama2", file=sys.stderr)
        return None
    if int(transformers.__version__.split(".")[0]) < 5:
        return None  # 4.x LlamaTokenizerFast runs tokenizer.json as is: same as "i"/"n"
    return AutoTokenizer.from_pretrained(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "build", "tokenizers"))
    ap.add_argument("--retrain", action="store_true")
    a = ap.parse_args()
    items = corpus()
    uni = os.path.join(OUT, "unigram", "tokenizer.json")
    if a.retrain or not os.path.exists(uni):
        train_unigram(uni, training_text())
    write_refs("gpt2", gpt2_from_vocab_merges(os.path.join(a.data, "gpt2")), items)
    write_refs("llama2", Tokenizer.from_file(os.path.join(a.data, "llama2", "tokenizer.json")),
               items, transformers_llama(os.path.join(a.data, "llama2")))
    write_refs("llama3", Tokenizer.from_file(os.path.join(a.data, "llama3", "tokenizer.json")),
               items)
    write_refs("unigram", Tokenizer.from_file(uni), items)
    pc = os.path.join(OUT, "unigram-precompiled", "tokenizer.json")
    if a.retrain or not os.path.exists(pc):
        build_precompiled(uni, pc)
    write_refs("unigram-precompiled", Tokenizer.from_file(pc),
               [s.encode("utf-8") for s in PRECOMPILED_EXTRA] + items[:260])


if __name__ == "__main__":
    sys.exit(main())
