"""Streaming generated text: constant work per token, pieces that add up to the answer, no
half characters. Real `tokenizers` tokenizers of the kinds VLMs ship (byte-level BPE, as the
test models' GPT-2-style tokenizer; SentencePiece-style metaspace, as Llama/Vicuna's)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from edgecompress_runtime.pipeline import TextStream


def stream(tokenizer, ids):
    pieces = []
    s = TextStream(tokenizer, pieces.append)
    for n in range(1, len(ids) + 1):
        s.push(ids[:n])
    s.finish(tokenizer.decode(ids, skip_special_tokens=True))
    return pieces


def byte_level() -> Tokenizer:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def test_byte_level_holds_back_split_characters():
    tokenizer = byte_level()
    text = "héllo wörld ✓ 日本"
    ids = tokenizer.encode(text).ids
    assert len(ids) == len(text.encode())  # one token a byte: every non-ASCII character is split
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "✓" in pieces  # the three bytes of the check mark came out as one piece, once complete


def test_metaspace_keeps_the_spaces_between_pieces():
    vocab = {"▁what": 0, "▁is": 1, "▁the": 2, "▁colour": 3, "?": 4, "▁red": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    ids = [0, 1, 2, 3, 4, 5]
    assert stream(tokenizer, ids) == ["what", " is", " the", " colour", "?", " red"]


def test_pipeline_streams_with_bounded_decodes(bundles, images):
    """A 48-token answer: the pieces add up to the returned text, and no decode during the stream
    reads more than a few tokens (the old path re-decoded the whole answer every token)."""
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundles["hired-fp32"])
    lengths = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def decode(self, ids, **kw):
            lengths.append(len(ids))
            return self.inner.decode(ids, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    pipe.tokenizer = Counting(pipe.tokenizer)
    pieces = []
    result = pipe.generate_full(images["scene"], "Describe the picture.", max_new_tokens=48, on_text=pieces.append,
                                ignore_eos=True)
    assert len(result.token_ids) == 48 and "".join(pieces) == result.text
    streaming = lengths[:-1]  # the last decode is the whole answer, once
    assert lengths[-1] == 48 and max(streaming) <= 8, sorted(streaming)[-5:]


@pytest.mark.parametrize("text", ["a plain answer", "naïve café ☕"])
def test_stream_equals_decode_for_any_cut(text):
    tokenizer = byte_level()
    ids = tokenizer.encode(text).ids
    assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids)
