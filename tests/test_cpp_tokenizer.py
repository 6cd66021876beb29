"""The C++ tokenizer (runtimes/cpp, through its tokenize_driver) gives the ids and text the Python
`tokenizers` library gives, on every tokenizer type real VLMs ship.

Each type is built offline (tiny tokenizers trained deterministically) and fuzzed with the same
seeded strings: many scripts, emoji sequences, combining marks, whitespace runs, digits,
punctuation, contractions and special-token text mid-string. Encodes must be equal with and
without special tokens; decodes must be equal for the encodes, for random id sequences and for
prefixes that cut a multi-byte character. Random characters are drawn from those assigned in
Python's unicodedata, whose Unicode version the C++ tables are generated from (the library's
regex engine knows a newer one; see runtimes/cpp/tools/gen_unicode.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import unicodedata
from pathlib import Path

import pytest
from tokenizers import normalizers, pre_tokenizers

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TOKENIZER = ROOT / "export" / "weights" / "tiny-llava" / "tokenizer.json"
N_STRINGS = 3000

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TEXT = ["<s>", "</s>", "<image>", "<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
                "[CLS]", "[SEP]", "<s", "</", "<ima", "<|im_", "<tool>", "Hello world"]

# -- the fuzz strings ---------------------------------------------------------------------------

SCRIPTS = {  # code point ranges to draw letters from
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x17F)],
    "greek": [(0x391, 0x3C9)],
    "cyrillic": [(0x410, 0x44F)],
    "hebrew": [(0x5D0, 0x5EA)],
    "arabic": [(0x621, 0x64A), (0x64B, 0x652), (0x660, 0x669)],
    "devanagari": [(0x905, 0x939), (0x93E, 0x94D), (0x966, 0x96F)],
    "thai": [(0xE01, 0xE3A), (0xE40, 0xE4E)],
    "cjk": [(0x4E00, 0x9FFF)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    "hangul": [(0xAC00, 0xD7A3)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F900, 0x1F9FF)],
    "symbols": [(0x2000, 0x2BFF)],
    "math": [(0x1D400, 0x1D7FF)],
}
EMOJI_SEQUENCES = ["👨\u200d👩\u200d👧", "👍🏽", "❤️", "🇫🇷", "🏳️\u200d🌈", "1️⃣"]
COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "क्ष", "\u0301", "ก\u0e31\u0e49"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85", "\x1c", "\u200b"]
PUNCTUATION = list("!?.,;:-—…“”‘’«»()[]{}<>@#$%^&*_+=/\\|~`'\"") + ["...", "?!", "--", "://", "'''"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'ſ", "'D", "n't", "'x"]
WORDS = ["the", "picture", "What", "is", "in", "ASSISTANT:", "USER:", "circle", "Don", "it", "hello", "world",
         "naïve", "café", "Straße", "ΣΊΣΥΦΟΣ", "東京", "こんにちは", "안녕하세요", "مرحبا", "שלום", "привет", "x"]


def assigned(cp: int) -> bool:
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")


def random_char(rng: random.Random, spans) -> str:
    while True:
        lo, hi = rng.choice(spans)
        cp = rng.randint(lo, hi)
        if assigned(cp):
            return chr(cp)


def fragment(rng: random.Random) -> str:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice(WORDS).upper() if rng.random() < 0.2 else rng.choice(WORDS)
    if kind == 1:
        return "".join(random_char(rng, SCRIPTS[rng.choice(list(SCRIPTS))]) for _ in range(rng.randint(1, 6)))
    if kind == 2:
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 8)))
    if kind == 3:
        return str(rng.randint(0, 10 ** rng.randint(1, 9))) + rng.choice(["", ".5", ",000", "１２", "²", "½"])
    if kind == 4:
        return "".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 4)))
    if kind == 5:
        return rng.choice(WORDS) + rng.choice(CONTRACTIONS)
    if kind == 6:
        return rng.choice(SPECIAL_TEXT)
    if kind == 7:
        return rng.choice(EMOJI_SEQUENCES + COMBINING)
    if kind == 8:  # any assigned code point, BMP or beyond
        return random_char(rng, [(0x20, 0xFFFF), (0x10000, 0x3134F), (0xE0001, 0xE01EF)])
    if kind == 9:
        return chr(rng.randint(0, 0x1F))
    if kind == 10:
        return " " + rng.choice(WORDS)
    return rng.choice(["", " ", "  "])


def fuzz_strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    strings = ["", " ", "  hello", "\n\n\n", "<s></s><image>", " " * 300 + "x", "\t \n" * 100, "a" * 500]
    strings.append("".join(fragment(rng) for _ in range(800)))  # a long text
    while len(strings) < n:
        strings.append("".join(fragment(rng) for _ in range(rng.randint(1, 25))))
    return strings


# -- the tokenizers -----------------------------------------------------------------------------

def training_corpus() -> list[str]:
    english = [
        "USER: What is in the picture? ASSISTANT: A red circle and a blue square on a grey background.",
        "The quick brown fox jumps over the lazy dog. It's what they'll say, we're sure you've heard.",
        "Please answer with a single word. 0 1 2 3 4 5 6 7 8 9 10 11 12 2024 3.14",
    ] * 20
    return english + fuzz_strings(seed=99, n=400)


def trained_bpe(pre_tokenizer, special_tokens, vocab_size=700, **model_args):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(**model_args))
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer


def bytelevel_bpe():
    """GPT-2 style, as edgecompress/models/tiny.py builds the tiny-llava tokenizer, plus added tokens
    with each matching rule."""
    from tokenizers import AddedToken, decoders, pre_tokenizers, processors

    tokenizer = trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<pad>", "<s>", "</s>", "<image>"])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True), AddedToken("Hello world", single_word=True),
                          AddedToken("[CLS]", normalized=False)])
    return tokenizer


def bytelevel_bpe_prefix_space():
    """ByteLevel with add_prefix_space, ignore_merges (as Llama-3), a Sequence post-processor."""
    from tokenizers import decoders, pre_tokenizers, processors

    tokenizer = trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=True), ["<|endoftext|>", "<s>"],
                            ignore_merges=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A <|endoftext|>", special_tokens=[("<s>", 1), ("<|endoftext|>", 0)]),
    ])
    return tokenizer


def qwen2_bpe():
    """Qwen2: Split(the Qwen2 regex, isolated) then ByteLevel without its own regex."""
    from tokenizers import Regex, decoders, pre_tokenizers, processors

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer = trained_bpe(pre, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def with_byte_tokens(tokenizer, last_byte: int):
    """The trained model's vocab laid out as Llama's: <unk> <s> </s>, <0x00>..<0xFF> (up to
    `last_byte`), then the rest."""
    from tokenizers import Tokenizer

    config = json.loads(tokenizer.to_str())
    trained = sorted(config["model"]["vocab"].items(), key=lambda item: item[1])
    head = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(last_byte + 1)]
    order = head + [token for token, _ in trained if token not in head]
    config["model"]["vocab"] = {token: i for i, token in enumerate(order)}
    for added in config["added_tokens"]:
        added["id"] = config["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(config))


def llama_bpe(metaspace: dict | None, last_byte: int = 0xFF):
    """SentencePiece-style BPE with byte fallback: the older Llama tokenizer.json (Prepend + Replace
    normalizer, Replace/ByteFallback/Fuse/Strip decoder) or, with `metaspace`, the newer Metaspace
    pre-tokenizer and decoder. The trainer keeps the alphabet small so that rarer characters fall
    back to bytes, or to <unk> (fused) where the vocab lacks a byte token (`last_byte`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace is None:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                               decoders.Strip(" ", 1, 0)])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
        tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(**metaspace)])
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = with_byte_tokens(tokenizer, last_byte)
    tokenizer.add_special_tokens(["<image>"])
    return tokenizer


def word_level(pre_tokenizer, normalizer=None):
    from tokenizers import Tokenizer, models, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.normalizer = normalizer
    trainer = trainers.WordLevelTrainer(vocab_size=800, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    return tokenizer


def shipped_tiny_llava():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(SHIPPED_TOKENIZER))


TOKENIZERS = {
    "bytelevel-bpe": bytelevel_bpe,
    "bytelevel-bpe-prefix-space": bytelevel_bpe_prefix_space,
    "tiny-llava (shipped)": shipped_tiny_llava,
    "qwen2-split-bytelevel": qwen2_bpe,
    "llama-metaspace-byte-fallback": lambda: llama_bpe(None),
    "metaspace-first": lambda: llama_bpe({"replacement": "▁", "prepend_scheme": "first", "split": False}),
    "metaspace-always-split-unk": lambda: llama_bpe({"replacement": "▁", "prepend_scheme": "always", "split": True},
                                                    last_byte=0x7F),
    "wordlevel-whitespace": lambda: word_level(pre_tokenizers.Whitespace()),
    "wordlevel-whitespacesplit": lambda: word_level(pre_tokenizers.WhitespaceSplit()),
    "wordlevel-digits-strip": lambda: word_level(
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.WhitespaceSplit()]),
        normalizers.Strip(left=True, right=True)),
}


# -- running the driver -------------------------------------------------------------------------

def drive(build: Path, tokenizer_json: Path, mode: str, inputs: list, tmp_path: Path) -> list:
    feed = tmp_path / f"{mode}.jsonl"
    feed.write_text("".join(json.dumps(value) + "\n" for value in inputs), encoding="utf-8")
    result = subprocess.run([str(build / "tokenize_driver"), str(tokenizer_json), mode, str(feed)],
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode("utf-8").split("\n")[:-1]
    assert len(lines) == len(inputs)
    if mode.startswith("encode"):
        return [[int(i) for i in line.split()] for line in lines]
    return [json.loads(line) for line in lines]


def decode_inputs(tokenizer, encodings: list[list[int]], seed: int) -> list[list[int]]:
    """The encodes, random id sequences (some beyond the vocab), and prefixes of encodes."""
    rng = random.Random(seed)
    size = tokenizer.get_vocab_size()
    random_ids = [[rng.randrange(size + 5) for _ in range(rng.randint(0, 40))] for _ in range(N_STRINGS // 3)]
    prefixes = [ids[: rng.randint(0, len(ids))] for ids in encodings[: N_STRINGS // 3] if ids]
    return encodings[: N_STRINGS // 3] + random_ids + prefixes


@pytest.fixture(scope="module")
def strings() -> list[str]:
    return fuzz_strings(seed=1234, n=N_STRINGS)


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_cpp_tokenizer_matches_python(kind, strings, cpp_build, tmp_path):
    tokenizer = TOKENIZERS[kind]()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))

    plain = [e.ids for e in tokenizer.encode_batch(strings, add_special_tokens=False)]
    special = [e.ids for e in tokenizer.encode_batch(strings, add_special_tokens=True)]
    cpp_plain = drive(cpp_build, path, "encode", strings, tmp_path)
    cpp_special = drive(cpp_build, path, "encode-special", strings, tmp_path)
    encode_equal = [p == c and s == cs for p, c, s, cs in zip(plain, cpp_plain, special, cpp_special)]

    ids = decode_inputs(tokenizer, special, seed=5678)
    decoded = tokenizer.decode_batch(ids, skip_special_tokens=False)
    skipped = tokenizer.decode_batch(ids, skip_special_tokens=True)
    cpp_decoded = drive(cpp_build, path, "decode", ids, tmp_path)
    cpp_skipped = drive(cpp_build, path, "decode-special", ids, tmp_path)
    decode_equal = [a == b and c == d for a, b, c, d in zip(decoded, cpp_decoded, skipped, cpp_skipped)]

    # The pre-tokenizer's pieces on their own: its splits can differ without changing the ids of
    # a tiny vocab (when no merge crosses the boundary).
    pieces, cpp_pieces, pieces_equal = [], [], []
    if tokenizer.pre_tokenizer is not None:
        pieces = [[piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(s)] for s in strings]
        cpp_pieces = drive(cpp_build, path, "pre-tokenize", strings, tmp_path)
        pieces_equal = [a == b for a, b in zip(pieces, cpp_pieces)]

    print(f"\n{kind}: {sum(encode_equal)}/{len(strings)} encode, {sum(decode_equal)}/{len(ids)} decode"
          + (f", {sum(pieces_equal)}/{len(strings)} pre-tokenize" if pieces_equal else ""))
    piece_diffs = [(s, a, b) for s, a, b, ok in zip(strings, pieces, cpp_pieces, pieces_equal) if not ok]
    assert not piece_diffs, f"{len(piece_diffs)} pre-tokenizations differ, first: {piece_diffs[:3]!r}"
    encode_diffs = [(s, p, c) for s, p, c, ok in zip(strings, plain, cpp_plain, encode_equal) if not ok]
    decode_diffs = [(i, a, b) for i, a, b, ok in zip(ids, decoded, cpp_decoded, decode_equal) if not ok]
    assert not encode_diffs, f"{len(encode_diffs)} encodes differ, first: {encode_diffs[:3]!r}"
    assert not decode_diffs, f"{len(decode_diffs)} decodes differ, first: {decode_diffs[:3]!r}"


def test_shipped_tokenizer_is_committed():
    listed = subprocess.run(["git", "ls-files", "--error-unmatch", str(SHIPPED_TOKENIZER.relative_to(ROOT))],
                            cwd=ROOT, capture_output=True)
    assert listed.returncode == 0, "export/weights/tiny-llava/tokenizer.json is not in git"


def test_driver_refuses_an_unsupported_model(cpp_build, tmp_path):
    from tokenizers import Tokenizer, models

    path = tmp_path / "unigram.json"
    Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], unk_id=0)).save(str(path))
    feed = tmp_path / "in.jsonl"
    feed.write_text('"a"\n')
    result = subprocess.run([str(cpp_build / "tokenize_driver"), str(path), "encode", str(feed)], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "model type Unigram is not supported by the C++ runtime" in result.stderr
    assert "supported model types: BPE" in result.stderr


def test_driver_rejects_bad_input(cpp_build, tmp_path):
    feed = tmp_path / "in.jsonl"
    feed.write_text('"fine"\n[1, 2]\n')
    result = subprocess.run([str(cpp_build / "tokenize_driver"), str(SHIPPED_TOKENIZER), "encode", str(feed)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "tokenize_driver: line 2: expected a JSON string to encode"
