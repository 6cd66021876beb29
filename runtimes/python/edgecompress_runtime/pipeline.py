"""Pipeline: image + prompt -> generated text, from a bundle, with no torch and no transformers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecompress_runtime.backends import Backend, make_backend
from edgecompress_runtime.bundle import inside, open_bundle
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import Manifest
from edgecompress_runtime.anyres import preprocess_anyres
from edgecompress_runtime.preprocess import crop_pixels, frame_pixels, preprocess
from edgecompress_runtime.qwen import mrope_positions, patch_rows, step_positions


@dataclass
class Generation:
    """What one ``generate`` call produced, with timings for benchmarks."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    kept_indices: np.ndarray
    stopped_by: str  # "eos" | "max_new_tokens"
    timings: dict[str, float] = field(default_factory=dict)
    prefill_logits: np.ndarray | None = None
    image_tokens: int = 0  # image embeddings the language model read (K, or the packed count)


class TextStream:
    """Streams generated text piece by piece with constant work per token.

    Each step decodes only the tokens since the last emitted piece (``prefix``), with and without
    the newest ones, and emits the difference: both decodes start at the same token, so a
    tokenizer that drops a word's leading space at the start of a decode (SentencePiece) drops it
    in both. A piece that ends in an incomplete UTF-8 sequence (U+FFFD: a byte-fallback character
    split across tokens) is held back until the rest arrives."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.prefix = self.read = 0  # token offsets: decoded context starts at prefix; emitted up to read
        self.emitted = 0  # characters emitted

    def push(self, ids: list[int]) -> None:
        before = self.tokenizer.decode(ids[self.prefix:self.read], skip_special_tokens=True)
        now = self.tokenizer.decode(ids[self.prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            piece = now[len(before):]
            self.on_text(piece)
            self.emitted += len(piece)
            self.prefix, self.read = self.read, len(ids)

    def finish(self, text: str) -> None:
        """Emit whatever the full text holds beyond what was streamed (a held-back tail)."""
        if len(text) > self.emitted:
            self.on_text(text[self.emitted:])


def frame_size(preprocess: dict, bundle: Path) -> tuple[int, int]:
    """A frame bundle's [width, height] (manifest ``preprocess.frame_size``)."""
    size = preprocess.get("frame_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise EdgeCompressError(f"bundle {bundle}: manifest.json preprocess.frame_size should be [width, height] of "
                                f"positive integers, got {size!r}", hint="The bundle is damaged or incomplete: re-export it.")
    return size[0], size[1]


class Pipeline:
    """A loaded bundle, ready to answer questions about images.

    >>> pipe = Pipeline.load("out/tiny-llava-hired-b20")
    >>> pipe.generate("photo.jpg", "What is in the picture?", max_new_tokens=64)
    """

    def __init__(self, bundle: Path, manifest: Manifest, backend: Backend, fast_preprocess: bool = False):
        from tokenizers import Tokenizer

        self.bundle = Path(bundle)
        self.manifest = manifest
        self.fast_preprocess = fast_preprocess  # preprocess(fast=True): within 4/255 of the exact path
        self.backend = backend
        if manifest.tokenizer_file is None or manifest.embeddings_file is None:
            raise EdgeCompressError(
                f"bundle {bundle} has no tokenizer (it was exported with --random-weights from a checkpoint whose tokenizer is not available offline)",
                hint="Export from a local checkpoint folder, or a built-in recipe such as tiny-llava.",
            )
        try:
            self.tokenizer = Tokenizer.from_file(str(inside(self.bundle, manifest.tokenizer_file)))
        except EdgeCompressError:
            raise
        except Exception as err:  # tokenizers raises a bare Exception for a missing or malformed file
            raise EdgeCompressError(f"cannot read the tokenizer {manifest.tokenizer_file} of {bundle}: {err}",
                                    hint="The bundle is damaged or incomplete: re-export it.") from None
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # mapped, not read: a 7B's table is 0.5 GB and a prompt reads a few hundred rows of it. Viewed
        # as a plain ndarray: numpy's memmap subclass costs ~20 us per lookup, a decode step's worth
        self.embed_table = np.load(inside(self.bundle, manifest.embeddings_file), mmap_mode="r",
                                   allow_pickle=False).view(np.ndarray)
        self.k = manifest.k
        self.image_token_id = manifest.image_token_id
        self.eos_token_ids = set(manifest.eos_token_ids)
        self.max_sequence = manifest.max_sequence
        self.prompt_template = manifest.prompt_template
        self.pruning = manifest.decoder_pruning  # FastV: the prefill graph prunes inside the language model
        if self.pruning is not None:  # the language model reads every image token; the prefill keeps K
            self.k = self.pruning.image_tokens
        self.anyres = manifest.anyres  # LLaVA-NeXT: tiling, and how image tokens are packed
        self.vision_inputs = [t.name for t in manifest.graphs["vision"].inputs]
        # export --pixel-input uint8: the vision graph takes the uint8 crop and normalises inside;
        # frame:WxH: it takes whole frames of one size and resizes, crops and normalises inside
        pixel_input = manifest.preprocess.get("pixel_input", "float")
        if pixel_input not in ("float", "uint8", "frame"):
            raise EdgeCompressError(f"bundle {bundle} takes pixel input {pixel_input!r}, which this runtime does not know",
                                    hint="Update edgecompress_runtime to the version that exported the bundle.")
        self.uint8_pixels = pixel_input == "uint8"
        self.frame_size = frame_size(manifest.preprocess, bundle) if pixel_input == "frame" else None
        if self.frame_size is not None and fast_preprocess:
            raise EdgeCompressError("--fast-preprocess has nothing to do for this bundle: its vision graph resizes the "
                                    "frame itself", hint="Drop --fast-preprocess.")
        self.newline = (np.load(inside(self.bundle, manifest.newline_file), allow_pickle=False)
                        if manifest.packs_newlines else None)
        self.mrope = manifest.positions  # Qwen2.5-VL: 3 x S positions from the kept tokens' grid places
        rows = len(manifest.graphs["decoder"].input("position_ids").shape) if "decoder" in manifest.graphs else 2
        if (rows == 3) != (self.mrope is not None):
            raise EdgeCompressError(f"bundle {bundle}: its decoder takes position ids of rank {rows}, which does not match "
                                    f"its manifest's positions record ({'mrope' if self.mrope else 'none'})",
                                    hint="The bundle is damaged or was edited: re-export it.")
        if self.mrope is not None and "decoder" in manifest.onnxruntime_graphs:
            raise EdgeCompressError(f"bundle {bundle} pairs mRoPE positions with the fused decoder graph, whose attention "
                                    "rotates by one position per token", hint="Re-export it without --decoder-ops onnxruntime.")
        if self.mrope is not None and fast_preprocess:
            raise EdgeCompressError("--fast-preprocess is for LLaVA-1.5 bundles; a Qwen2.5-VL bundle resizes to its "
                                    "fixed grid directly", hint="Drop --fast-preprocess.")

    @classmethod
    def load(cls, bundle: str | Path, *, backend: str = "onnxruntime", profile: str | None = None, threads: int = 0,
             check_hashes: bool = True, fast_preprocess: bool = False, spinning: bool = True) -> "Pipeline":
        """Open a bundle (schema and sha256 checked first) on a backend: onnxruntime (CPU),
        onnxruntime-cuda, or tensorrt (the engines built for ``profile``). ``fast_preprocess``:
        the reduced-work image path (``preprocess(fast=True)``; LLaVA-1.5 bundles). ``spinning``:
        ONNX Runtime's idle threads spin (faster on a dedicated CPU); False on one shared with
        other busy processes."""
        bundle = Path(bundle)
        manifest = open_bundle(bundle, check_hashes=check_hashes)
        return cls(bundle, manifest, make_backend(backend, bundle, manifest, threads, profile, spinning), fast_preprocess)

    # -- prompt ---------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the chat-formatted prompt, with exactly one image placeholder."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise EdgeCompressError("the prompt is empty", hint="Ask a question about the image, e.g. --prompt \"What is in the picture?\"")
        text = self.prompt_template.replace("{prompt}", prompt)
        return self.check_ids(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def check_ids(self, ids: list[int]) -> list[int]:
        count = ids.count(self.image_token_id)
        if count != 1:
            raise EdgeCompressError(
                f"the prompt must hold exactly one image placeholder, found {count}",
                hint="Do not write the image token (<image>) in the prompt text; the template adds it.",
            )
        if self.pruning is not None and ids.index(self.image_token_id) != self.pruning.image_start:
            raise EdgeCompressError(
                f"the image is at token {ids.index(self.image_token_id)} of this prompt; this {self.pruning.method} bundle's "
                f"prefill graph prunes the image tokens from token {self.pruning.image_start} (the place its chat "
                "template gives them)",
                hint="Keep the bundle's prompt template as exported (the prompt text goes after the image), or re-export.",
            )
        return ids

    def check_length(self, text_tokens: int, max_new_tokens: int, image_tokens: int | None = None) -> None:
        image_tokens = self.k if image_tokens is None else image_tokens
        total = text_tokens - 1 + image_tokens
        if total + max_new_tokens > self.max_sequence:
            limit = self.max_sequence - image_tokens - max_new_tokens + 1
            raise EdgeCompressError(
                f"the prompt is {text_tokens - 1} text tokens + {image_tokens} image tokens; with {max_new_tokens} new tokens "
                f"that is {total + max_new_tokens}, over this bundle's maximum sequence of {self.max_sequence}",
                hint=f"Shorten the prompt to at most {max(limit, 0)} text tokens, or lower --max-new-tokens.",
            )

    def prepare_image(self, image):
        """(the vision graph's feeds, the packing order or None) for one image.

        LLaVA-1.5: one 336-px crop. LLaVA-NeXT: the anyres slots, the grid index and the tile
        mask; for an unpruned bundle also the order in which the graph's tokens (and image
        newlines, -1) enter the language model.
        """
        if self.mrope is not None:  # Qwen2.5-VL: the fixed grid's patch rows
            return {"pixel_values": patch_rows(image, self.manifest.preprocess)}, None
        if self.frame_size is not None:  # the graph resizes, crops and normalises: hand it the frame
            return {"frame": frame_pixels(image, self.frame_size)}, None
        if self.anyres is None and self.uint8_pixels:  # the graph normalises: hand it the crop as it is
            return {"pixels": crop_pixels(image, self.manifest.preprocess, fast=self.fast_preprocess)[None]}, None
        if self.anyres is None:
            return {"pixel_values": preprocess(image, self.manifest.preprocess, fast=self.fast_preprocess)}, None
        pixel_values, layout = preprocess_anyres(image, self.manifest.preprocess, self.anyres)
        feeds = {
            "pixel_values": pixel_values,
            "grid_index": np.array([layout.grid_index], dtype=np.int64),
            "tile_mask": layout.tile_mask(),
        }
        order = layout.packed_order() if self.newline is not None else None
        return {name: feeds[name] for name in self.vision_inputs}, order

    def pack(self, image_embeds: np.ndarray, order: np.ndarray | None) -> np.ndarray:
        """The image tokens in the order the language model reads them, [1, tokens, D]."""
        if order is None:
            return image_embeds
        rows = np.concatenate([image_embeds[0], self.newline[None].astype(image_embeds.dtype)])
        return rows[np.where(order >= 0, order, len(rows) - 1)][None]

    def embed(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.embed_table[np.asarray(ids, dtype=np.int64)])[None]

    def prompt_positions(self, before: int, kept: np.ndarray, image_tokens: int, after: int) -> tuple[np.ndarray, int]:
        """The prompt's position ids and the offset of every later token's position from its
        cache index (0, except with mRoPE, where the image's positions follow its grid)."""
        if self.mrope is None:
            return np.arange(before + image_tokens + after, dtype=np.int64)[None], 0
        return mrope_positions(before, kept, tuple(self.mrope["grid"]), after)

    def positions(self, start: int, count: int, delta: int) -> np.ndarray:
        """Position ids of the cache slots start .. start + count - 1 after the prompt."""
        if self.mrope is None:
            return np.arange(start, start + count, dtype=np.int64)[None]
        return step_positions(start, count, delta)

    # -- generation -----------------------------------------------------------------------
    def generate(
        self,
        image,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        return self.generate_full(image, prompt, max_new_tokens=max_new_tokens, on_text=on_text).text

    def generate_full(
        self,
        image,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        on_text: Callable[[str], None] | None = None,
        ignore_eos: bool = False,
    ) -> Generation:
        """Greedy generation with timings. ``ignore_eos``: generate exactly ``max_new_tokens``
        (an end-of-sequence token is kept as any other), as benchmarks need a fixed decode length."""
        return self.first_turn(image, None, prompt, max_new_tokens, on_text, ignore_eos).last

    def generate_ids(self, image, ids: list[int], *, max_new_tokens: int = 64) -> Generation:
        """Greedy generation from token ids already rendered (the image placeholder once among
        them): a whole conversation's text in one prefill, say, to check a follow-up against."""
        return self.first_turn(image, list(ids), None, max_new_tokens, None, False).last

    def chat(self, image, prompt: str, *, max_new_tokens: int = 64,
             on_text: Callable[[str], None] | None = None) -> "Conversation":
        """Start a conversation about ``image``: the first answer is ``.last``; ``follow_up`` asks
        the next question on top of the kept KV cache (no vision graph, no re-read prompt)."""
        if self.manifest.follow_up_template is None:
            raise EdgeCompressError(f"bundle {self.bundle} records no follow-up template (its chat template was not "
                                    "available at export, or it was exported before conversations were supported)",
                                    hint="Re-export the bundle with this edgecompress, from a checkpoint with a chat template.")
        return self.first_turn(image, None, prompt, max_new_tokens, on_text, False)

    def first_turn(self, image, ids: list[int] | None, prompt: str | None, max_new_tokens: int,
                   on_text, ignore_eos: bool) -> "Conversation":
        if max_new_tokens < 1:
            raise EdgeCompressError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        ids = self.prompt_ids(prompt) if ids is None else self.check_ids(ids)
        feeds, order = self.prepare_image(image)
        self.check_length(len(ids), max_new_tokens, None if order is None else len(order))
        timings["preprocess_s"] = time.perf_counter() - start

        t = time.perf_counter()
        image_embeds, kept = self.backend.vision(feeds)
        image_embeds = self.pack(image_embeds, order)
        timings["vision_s"] = time.perf_counter() - t

        at = ids.index(self.image_token_id)
        embeds = np.concatenate(
            [self.embed(ids[:at]), image_embeds.astype(self.embed_table.dtype), self.embed(ids[at + 1 :])], axis=1
        )
        length = embeds.shape[1]
        t = time.perf_counter()
        positions, delta = self.prompt_positions(at, kept[0], image_embeds.shape[1], len(ids) - at - 1)
        if self.pruning is not None:  # pruned at a decoder layer: the kept tokens are the prefill's
            logits, kept, past = self.backend.prefill(embeds, positions)
        else:
            logits, past = self.backend.decoder(embeds, positions, self.backend.empty_past())
        timings["prefill_s"] = time.perf_counter() - t
        timings["ttft_s"] = time.perf_counter() - start
        conversation = Conversation(self, list(ids), past, length, [], [], image_embeds.shape[1], kept[0], delta)
        conversation.answer(logits, length, max_new_tokens, on_text, ignore_eos, timings)
        return conversation

    def decode(self, next_logits: np.ndarray, past, position: int, max_new_tokens: int, on_text, ignore_eos: bool,
               delta: int = 0):
        """Greedy decoding from the logits after a prefill whose next token sits at ``position``
        (the prompt's length as the language model numbered it; its position id ``position +
        delta``; after a FastV prefill the cache is shorter than that):
        (tokens, the cache, why it stopped, decoder calls). The last token is not fed back (nothing
        reads its logits), so the cache ends before it; an end-of-sequence token is not kept."""
        generated: list[int] = []
        stream = TextStream(self.tokenizer, on_text) if on_text is not None else None
        stopped_by = "max_new_tokens"
        steps = 0  # decoder calls after the prefill: each one yields a token (an end-of-sequence included)
        while True:
            token = int(next_logits.argmax())
            if token in self.eos_token_ids and not ignore_eos:
                stopped_by = "eos"
                break
            generated.append(token)
            if stream is not None:
                stream.push(generated)
            if len(generated) >= max_new_tokens:
                break
            # original positions: after a pruning prefill too, the next token sits after the whole prompt
            next_logits, past = self.backend.step(self.embed_table[token], position + steps + delta, past)
            steps += 1
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        if stream is not None:
            stream.finish(text)
        return generated, text, past, stopped_by, steps

    # -- conversations ----------------------------------------------------------------------
    def turn_ids(self, prompt: str) -> list[int]:
        """Token ids of a later user turn: the follow-up template around ``prompt``, no image."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise EdgeCompressError("the prompt is empty", hint="Ask the next question, e.g. \"What colour is it?\"")
        ids = self.tokenizer.encode(self.manifest.follow_up_template.replace("{prompt}", prompt), add_special_tokens=False).ids
        if self.image_token_id in ids:
            raise EdgeCompressError("a follow-up turn takes no image placeholder (the conversation's image is already read)",
                                    hint="Do not write the image token (<image>) in the prompt; start a new chat() for another image.")
        return ids

    def check_turn_length(self, cached: int, new_tokens: int, max_new_tokens: int) -> None:
        total = cached + new_tokens + max_new_tokens
        if total > self.max_sequence:
            raise EdgeCompressError(
                f"the conversation so far is {cached} tokens; this turn adds {new_tokens} and with {max_new_tokens} new "
                f"tokens that is {total}, over this bundle's maximum sequence of {self.max_sequence}",
                hint=f"{max(self.max_sequence - cached, 0)} tokens are left for the turn and its answer: shorten the "
                     "question, lower --max-new-tokens, or start a new conversation.",
            )


@dataclass
class Conversation:
    """A chat about one image: the KV cache and the token history, so that a follow-up turn
    prefills only its own tokens on top of everything read before.

    >>> chat = pipe.chat("photo.jpg", "What is in the picture?")
    >>> chat.last.text
    >>> chat.follow_up("What colour is it?").text
    """

    pipeline: Pipeline
    ids: list[int]  # the conversation's tokens so far: prompts and answers, the image placeholder once
    past: list  # the KV cache: every token of ``ids`` except ``pending``
    length: int  # positions read so far (image tokens as the language model read them, before any pruning)
    pending: list[int]  # answer tokens the cache has not read (the last one, when a turn stopped at max_new_tokens)
    turns: list[Generation]
    image_tokens: int
    kept_indices: np.ndarray
    delta: int = 0  # a token's position id minus its cache index (mRoPE: the image's grid shifts the text)

    @property
    def last(self) -> Generation:
        return self.turns[-1]

    def answer(self, logits, prompt_length: int, max_new_tokens: int, on_text, ignore_eos: bool,
               timings: dict[str, float]) -> Generation:
        pipe = self.pipeline
        t = time.perf_counter()
        generated, text, self.past, stopped_by, steps = pipe.decode(
            logits[0, -1].astype(np.float32), self.past, self.length, max_new_tokens, on_text, ignore_eos, self.delta)
        timings["decode_s"] = time.perf_counter() - t
        timings["decode_tokens"] = steps
        self.ids += generated
        self.length += steps
        self.pending = generated[steps:]
        turn = Generation(text, generated, prompt_length, self.kept_indices, stopped_by, timings,
                          logits[0, -1].astype(np.float32), self.image_tokens)
        self.turns.append(turn)
        return turn

    def follow_up(self, prompt: str, *, max_new_tokens: int = 64, on_text: Callable[[str], None] | None = None) -> Generation:
        """The next user turn: reads the last answer's unread token and the turn's text on top of
        the cache (positions continue), then answers. ``prompt_tokens`` of the result counts only
        this turn's new tokens."""
        pipe = self.pipeline
        if max_new_tokens < 1:
            raise EdgeCompressError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        timings: dict[str, float] = {"preprocess_s": 0.0, "vision_s": 0.0}
        start = time.perf_counter()
        new = self.pending + pipe.turn_ids(prompt)
        pipe.check_turn_length(self.length, len(new), max_new_tokens)
        positions = pipe.positions(self.length, len(new), self.delta)
        if pipe.backend.extends_cache:
            logits, self.past = pipe.backend.decoder(pipe.embed(new), positions, self.past)
        else:  # engines built with a decode profile of one token on a cache: read the turn token by token
            for i, token in enumerate(new):
                logits, self.past = pipe.backend.decoder(pipe.embed([token]), positions[..., i : i + 1], self.past)
        timings["prefill_s"] = timings["ttft_s"] = time.perf_counter() - start
        self.ids += new[len(self.pending):]
        self.length += len(new)
        return self.answer(logits, len(new), max_new_tokens, on_text, False, timings)
