"""Train the embedded tiny-llava models: small LLaVA-architecture models that answer the shapes
questions of ``edgecompress dataset shapes``, on a CPU, reproducibly from a seed.

    python benchmarks/train_tiny_llava.py --out out/tiny-llava-49              # ~37 min on 2 cores
    python benchmarks/train_tiny_llava.py --recipe export/tiny-llava.toml --init out/tiny-llava-49 \
        --token-dropout --vision-steps 400 --lm-steps 500 --out out/tiny-llava  # ~45 min more
    edgecompress export out/tiny-llava --budget 20%
    edgecompress validate out/tiny-llava-hired-b20 --dataset data/test.jsonl

With its defaults it trains ``tiny-llava-49`` (export/weights/tiny-llava-49): the architecture of
``export/tiny-llava-49.toml``'s ``[config]``, a CLIP ViT at 112 px with 16-px patches (49 patches +
CLS; the processor resizes the data set's 336-px images, so one patch is one 48-px cell of the
data set's grid), a projector and a 4-layer Llama. The default ``tiny-llava`` (export/weights/
tiny-llava) is the second command's output: 224 px, 196 patches (2 x 2 to a cell), warm-started
from the first (``--init``: see ``Teacher``) and trained with visual-token dropout. Training a
196-patch tower from scratch did not converge in an hour on 2 cores (a 144-patch attempt:
README, "The test-bed model"). Two stages, on images generated on the fly (never the data set's
own images: a different seed):

1. the vision tower alone, with a linear head on the **CLS** token trained to say which of the
   24 colour-shape pairs are in the image and how many shapes there are (multi-label, as CLIP's
   CLS is trained to summarise its image), and a linear head on every **patch** trained to say
   the colour and shape of the object that covers it (or background) and on which side of the
   image that object is;
2. the projector and language model on every question type (eight questions an image: one of
   each type, and colour, shape and presence twice; ``Packer`` computes them all on one copy of
   the image tokens, each exactly as its own single-question prompt), the loss on the answer
   tokens and EOS, with the tower fine-tuned at a quarter of its learning rate and the stage-1
   loss kept as an auxiliary (so CLS stays a summary of the image and HiRED's CLS attention
   stays meaningful), an alignment loss (``alignment_loss``) on the projected image tokens
   (towards the attribute words' embeddings, fixed orthonormal: ``fix_attribute_words``), and
   a pointer loss (``pointer_loss``) that teaches one attention head to look, from the token
   that predicts the answer, at the object the question names (or at ``<s>`` when it is absent).
   Without the pointer loss the language model learned to count but plateaued near chance on
   presence and position (63% of questions right after 1,000 steps, and flat).

With ``--token-dropout`` (off by default; tiny-llava-49 was trained without it, tiny-llava with it), stage 2
keeps only K of the N image tokens on most steps (random, CLS-attention and raster-grid subsets:
``dropout_indices``), so that the language model learns to answer from whatever subset a
pruning method hands it.

At the end it measures the model on fresh images (``--held-out``, one question of each type),
teacher-forced: a question is right when greedy decoding would produce its answer and EOS, with
every image token and with HiRED's top 20%.

The result is saved with ``save_pretrained`` (fp16 safetensors), with the tokenizer, the CLIP
image processor and the chat template: a llava-hf folder that ``from_pretrained`` loads.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgecompress.data.shapes import COLOURS, SHAPES, TYPES, _background, _draw, _place, _question

PAIRS = [(s, c) for s in SHAPES for c in COLOURS]  # 24 colour-shape pairs
TRAIN_SEED_OFFSET = 1_000_003  # training images never come from the data set's own seeds


def _corpus() -> list[str]:
    """Every question and answer form the data set uses, for the tokenizer."""
    lines = ["How many shapes are there?"] + [f"ASSISTANT: {w}" for w in ["yes", "no", "left", "right"]]
    lines += [f"ASSISTANT: {n}" for n in range(10)]  # answers as the prompt ends: one token each
    for shape in SHAPES:
        lines.append(f"What colour is the {shape}?")
        for side in ("left", "right"):
            lines.append(f"What colour is the {shape} on the {side}?")
        for colour in COLOURS:
            lines += [f"Is there a {colour} {shape}?", f"Is the {colour} {shape} on the left or the right?",
                      f"What shape is the {colour} object?", f"ASSISTANT: {colour}", f"ASSISTANT: {shape}"]
    return lines


IMAGE_SIZE = 336  # the data set's images; the processor resizes them to the tower's input


# Stage 2 asks every image one question of each type, and the three that need the language model
# to bind a word to an object (colour, shape, presence) twice.
KINDS = TYPES + ("colour", "shape", "presence")


def make_image(rng: np.random.Generator, size: int = IMAGE_SIZE, kinds=KINDS):
    """One data-set-style image (PIL), its items, and its questions: (kind, question, answer)."""
    from PIL import ImageDraw

    image = _background(rng, size, size)
    items = _place(rng, size, size, int(rng.integers(1, 5)))
    draw = ImageDraw.Draw(image)
    for item in items:
        _draw(draw, item)
    questions = [(kind, *_question(rng, kind, items, size)) for kind in kinds]
    return image, items, questions


COLOUR_NAMES, BACKGROUND_COLOUR, BACKGROUND_SHAPE = list(COLOURS), len(COLOURS), len(SHAPES)


def targets(items, side: int, patch: int, size: int):
    """CLS targets (pair presence [24], count class [4]), per-patch targets (colour or
    background, the object's shape or background, left/right half; each [side*side]) and each
    patch's owner (the index of the object it belongs to, or -1), with ``patch`` the patch's
    size in the data set's pixels.

    A patch belongs to the object with the most pixels in it (drawn as the image draws it)
    when those cover at least a tenth of the patch; an object too small for that in every
    patch still claims the patch where it has the most pixels. Every patch an object owns is
    labelled with that object's shape, also where it shows only the object's colour: the tower
    learns to spread an object's shape over all its patches, so whichever of them a selection
    method keeps says what the object is.
    """
    from PIL import Image, ImageDraw

    presence = np.zeros(len(PAIRS), dtype=np.float32)
    label = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(label)
    for index, item in enumerate(items):
        presence[PAIRS.index((item.shape, item.colour))] = 1
        _draw(draw, item, fill=index + 1)
    cells = np.asarray(label).reshape(side, patch, side, patch).transpose(0, 2, 1, 3).reshape(side * side, -1)
    pixels = np.stack([(cells == index + 1).sum(-1) for index in range(len(items))])  # [items, patches]
    owner = np.where(pixels.max(0) * 10 >= patch * patch, pixels.argmax(0), -1)
    for index in range(len(items)):
        if not (owner == index).any():
            owner[pixels[index].argmax()] = index
    colour = np.full(side * side, BACKGROUND_COLOUR, dtype=np.int64)
    shape = np.full(side * side, BACKGROUND_SHAPE, dtype=np.int64)
    for index, item in enumerate(items):
        colour[owner == index] = COLOUR_NAMES.index(item.colour)
        shape[owner == index] = SHAPES.index(item.shape)
    # The side a question would give the object (the data set's rule: its centre against the
    # image's middle) on every patch it owns; elsewhere the patch's own half (not trained).
    centres = (np.arange(side) + 0.5) * patch
    half = np.broadcast_to((centres >= size / 2)[None, :], (side, side)).astype(np.int64).reshape(-1)
    sides = np.array([item.centre_x >= size / 2 for item in items] + [False], dtype=np.int64)
    half = np.where(owner >= 0, sides[owner], half)
    return presence, len(items) - 1, colour, shape, half, owner


def pixel_values(images, preprocess_params):
    """The batch as the checkpoint's processor (the runtime's, equal to transformers') sees it."""
    import torch
    from edgecompress_runtime.preprocess import preprocess

    return torch.from_numpy(np.concatenate([preprocess(image, preprocess_params) for image in images]))


def cosine(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class VisionHeads:
    """Linear heads on the feature layer: CLS -> pair presence + count; patch -> colour, shape, half."""

    def __init__(self, hidden: int):
        import torch

        self.cls = torch.nn.Linear(hidden, len(PAIRS) + 4)
        self.patch = torch.nn.Linear(hidden, len(COLOURS) + 1 + len(SHAPES) + 1 + 2)

    def parameters(self):
        return list(self.cls.parameters()) + list(self.patch.parameters())

    def loss(self, hidden, samples, side: int, patch: int, size: int):
        """The stage-1 loss on a batch, and the object patches' colour and shape accuracy."""
        import torch
        import torch.nn.functional as F

        t = [targets(s[1], side, patch, size) for s in samples]
        presence, count, colour, shape, half = (torch.from_numpy(np.stack([x[i] for x in t])) for i in range(5))
        count = count.long()
        cls_out, patch_out = self.cls(hidden[:, 0]), self.patch(hidden[:, 1:])
        c, k = len(COLOURS) + 1, len(SHAPES) + 1
        colour_out, shape_out, half_out = patch_out[..., :c], patch_out[..., c : c + k], patch_out[..., c + k :]
        on_object = colour < BACKGROUND_COLOUR
        loss = (
            F.binary_cross_entropy_with_logits(cls_out[:, : len(PAIRS)], presence)
            + F.cross_entropy(cls_out[:, len(PAIRS):], count)
            + F.cross_entropy(colour_out.reshape(-1, c), colour.reshape(-1))
            + F.cross_entropy(shape_out.reshape(-1, k), shape.reshape(-1))
            + F.cross_entropy(half_out[on_object], half[on_object])
        )
        with torch.no_grad():
            colour_right = colour_out.argmax(-1) == colour
            shape_right = shape_out.argmax(-1) == shape
            rates = {
                "both": (colour_right & shape_right)[on_object].float().mean().item(),
                "colour": colour_right[on_object].float().mean().item(),
                "shape": shape_right[on_object].float().mean().item(),
            }
        rates["labels"] = (colour, shape, half)
        rates["owner"] = np.stack([x[5] for x in t])
        return loss, rates


VISION_LR, LANGUAGE_LR = 1e-3, 2e-3  # peaks of the cosine schedules (50 warm-up steps)


def alignment_loss(image_embeds, colour, shape, half, embeddings, words):
    """LLaVA's feature alignment, made explicit: an object patch's projected embedding points
    where the language model's input embeddings of its colour, shape and side words ("left",
    "right") point (cosine), so "the red triangle on the left" in a question and that triangle's
    image tokens share directions from the start and attention can bind them."""
    import torch.nn.functional as F

    on_object = colour < BACKGROUND_COLOUR
    if not on_object.any():
        return image_embeds.sum() * 0
    target = sum(F.normalize(embeddings[names[label[on_object]]], dim=-1)
                 for names, label in zip(words, (colour, shape, half))).detach()
    return (1 - F.cosine_similarity(image_embeds[on_object], target, dim=-1)).mean()


def referent(question: str, items) -> int | None:
    """The index of the object a question names (by colour, shape and side, as the data set
    words it), or None: a count question, or a presence question whose answer is no."""
    words = question.rstrip("?").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    side = words[-1] if question.endswith((" on the left?", " on the right?")) else None
    if colour is None and shape is None:
        return None
    found = [i for i, item in enumerate(items)
             if colour in (None, item.colour) and shape in (None, item.shape)
             and (side is None or (item.centre_x < IMAGE_SIZE / 2) == (side == "left"))]
    return found[0] if len(found) == 1 else None


# The pointer loss: one attention head of the language model is taught where to look. At the
# last token of a question's prompt (the one that predicts the answer), head 0 of layer 2 attends
# to the patches of the object the question names, or to <s> (the first token) when there is no
# such object; the answer is then one lookup away. Layers 0 and 1 gather the question's words.
POINTER_LAYER, POINTER_HEAD, POINTER_WEIGHT = 2, 0, 0.5


def pointer_loss(weights, packed, samples, owners, image_at: int):
    """-log of the attention mass head ``POINTER_HEAD`` puts on the named object's patches (or
    on <s>), averaged over the questions that name one or ask about an absent object."""
    import torch

    losses = []
    for number, (row, at) in enumerate(packed.prompt_end.tolist()):
        kind, question, answer = packed.questions[number]
        if kind == "count":
            continue
        index = referent(question, samples[row][1])
        if index is None and not (kind == "presence" and answer == "no"):
            continue
        keys = [0] if index is None else (np.flatnonzero(owners[row] == index) + image_at).tolist()
        if not keys:  # token dropout removed every token of the object: nothing to point at
            continue
        losses.append(-torch.log(weights[row, POINTER_HEAD, at, keys].sum() + 1e-6))
    return torch.stack(losses).mean() if losses else weights.sum() * 0


def fix_attribute_words(embeddings, ids, reset: bool = True) -> None:
    """Give the words that name an attribute (colours, shapes, sides) orthonormal input
    embeddings, scaled to the table's mean norm, and keep them fixed (their gradient is zero; only
    weight decay shrinks them, all alike, by about 2% over stage 2). The alignment loss points
    image tokens at sums of these words, so every attribute is an equally strong component of an
    object's tokens, orthogonal to the others: a question finds an object by its shape as easily
    as by its colour. (Left to learn, the shape words drifted together, cosine 0.4-0.6, and the
    pointer head could not tell objects apart by shape.)"""
    import torch

    if reset:  # (a model warm-started from a trained one keeps its words, already orthonormal)
        with torch.no_grad():
            basis = torch.linalg.qr(torch.randn(embeddings.shape[1], len(ids)))[0].T  # orthonormal rows
            embeddings[ids] = basis * embeddings.norm(dim=-1).mean()
    embeddings.register_hook(lambda grad: grad.index_fill(0, ids, 0))


DISTIL_WEIGHT = 10.0  # against the stage-1 label loss: the teacher's features are what its language model reads


class Teacher:
    """A trained tiny-llava at a coarser patch grid (``--init``), which warm-starts a model with
    more patches: the new tower learns, layer by layer, to reproduce the teacher's hidden states
    (CLS on CLS; each new patch on the teacher patch that covers it, ``ratio`` x ``ratio`` new
    patches to one), on top of the stage-1 labels at its own grid; stage 2 then starts from the
    teacher's projector and language model, which already read such features."""

    def __init__(self, folder: Path, student_side: int):
        import torch
        from transformers import LlavaForConditionalGeneration

        from edgecompress.models.loading import _preprocess_from_processor_file

        self.model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        self.preprocess = _preprocess_from_processor_file(Path(folder))
        vc = self.model.config.vision_config
        self.side = vc.image_size // vc.patch_size
        if student_side % self.side:
            raise ValueError(f"a {student_side}x{student_side} grid does not refine the teacher's {self.side}x{self.side}")
        self.ratio = student_side // self.side

    def start(self, model, feature_index: int) -> None:
        """Copy the teacher's weights into ``model``: all but the tower's patch grid as they are,
        the position embeddings resized to the new grid (bicubic, as ViTs change resolution),
        the patch embedding as it is (the new patch sees a quarter of the old one's area)."""
        import torch
        import torch.nn.functional as F

        own = model.state_dict()
        position = "model.vision_tower.embeddings.position_embedding.weight"
        with torch.no_grad():
            for name, value in self.model.state_dict().items():
                if name == position:
                    cls, grid = value[:1], value[1:].T.reshape(1, -1, self.side, self.side)
                    side = self.side * self.ratio
                    grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
                    value = torch.cat([cls, grid.reshape(-1, side * side).T])
                elif name.endswith("position_ids"):
                    continue
                own[name].copy_(value)
        self.feature_index = feature_index

    def loss(self, images, student_states):
        """Mean over layers 1..feature layer of the student's squared error against the teacher's
        hidden states, each divided by the teacher's mean square (so every layer counts alike)."""
        import torch

        with torch.no_grad():
            pixels = pixel_values(images, self.preprocess)
            states = self.model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        total = 0
        for index in range(1, self.feature_index + 1):
            target = states[index]
            grid = target[:, 1:].reshape(target.shape[0], self.side, self.side, -1)
            grid = grid.repeat_interleave(self.ratio, 1).repeat_interleave(self.ratio, 2).flatten(1, 2)
            target = torch.cat([target[:, :1], grid], 1)
            total = total + ((student_states[index] - target) ** 2).mean() / (target**2).mean()
        return total / self.feature_index


class Packed(NamedTuple):
    inputs: Any  # [rows, L, D] input embeddings
    positions: Any  # [rows, L] position ids (each question's restart where the prefix ends)
    mask: Any  # [rows, 1, L, L] additive attention mask
    target: Any  # [rows, L] the answer tokens (and EOS) at their positions, -100 elsewhere
    question: Any  # [rows, L] the question number of each answer token, -1 elsewhere
    questions: list  # (kind, question, answer) in question-number order
    prompt_end: Any  # [questions, 2] (row, position) of each question prompt's last token


class Packer:
    """Rows of the language model's batch: one per image, the image's questions sharing it.

    A row is the prompt's prefix (``<s> USER: `` and the image tokens) followed by every
    question's ``\n{question} ASSISTANT: {answer}</s>``. Each question attends to the prefix and
    to itself only, and its positions restart where the prefix ends, so every question is
    computed exactly as the single-question prompt of inference is, while the image tokens are
    computed once per image instead of once per question."""

    def __init__(self, tokenizer, embed):
        import torch

        self.tokenizer, self.embed = tokenizer, embed
        self.before = torch.tensor(tokenizer("USER: ", add_special_tokens=True)["input_ids"])  # <s> USER:
        self.image_at = self.before.shape[0]  # where the image tokens start in a row
        self.cache: dict[tuple[str, str], tuple[list[int], int]] = {}

    def _ids(self, question: str, answer: str) -> tuple[list[int], int]:
        """A question's token ids (its prompt, then its answer and EOS) and how many are answer."""
        if (question, answer) not in self.cache:
            prompt = self.tokenizer(f"\n{question} ASSISTANT:", add_special_tokens=False)["input_ids"]
            reply = self.tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            self.cache[question, answer] = prompt + reply, len(reply)
        return self.cache[question, answer]

    def __call__(self, image_embeds, questions) -> Packed:
        """``image_embeds`` [B, N, D] and each image's [(kind, question, answer)] -> a Packed batch."""
        import torch

        prefix = self.image_at + image_embeds.shape[1]
        rows, numbered, prompt_end = [], [], []
        for b, qa in enumerate(questions):
            ids, segments, labels, offsets = [], [], [], []
            for kind, question, answer in qa:
                tokens, reply = self._ids(question, answer)
                prompt_end.append((b, prefix + len(ids) + len(tokens) - reply - 1))
                ids += tokens
                segments += [len(numbered)] * len(tokens)
                offsets += range(len(tokens))  # each question's positions restart after the prefix
                labels += [-100] * (len(tokens) - reply) + tokens[-reply:]
                numbered.append((kind, question, answer))
            rows.append((b, ids, segments, labels, offsets))
        length = prefix + max(len(r[1]) for r in rows)
        batch, dim = len(rows), image_embeds.shape[-1]
        inputs = torch.zeros(batch, length, dim)
        positions = torch.zeros(batch, length, dtype=torch.long)
        segment = torch.full((batch, length), -2)  # -1: the prefix; -2: padding; else the question
        target = torch.full((batch, length), -100)
        for i, (b, ids, segments, labels, offsets) in enumerate(rows):
            end = prefix + len(ids)
            inputs[i, :prefix] = torch.cat([self.embed(self.before), image_embeds[b]])
            inputs[i, prefix:end] = self.embed(torch.tensor(ids))
            segment[i, :prefix] = -1
            segment[i, prefix:end] = torch.tensor(segments)
            target[i, prefix:end] = torch.tensor(labels)
            positions[i, :prefix] = torch.arange(prefix)
            positions[i, prefix:end] = prefix + torch.tensor(offsets)
        query, key = segment[:, :, None], segment[:, None, :]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = causal & ((key == -1) | (key == query)) & (query != -2) | torch.eye(length, dtype=torch.bool)
        mask = torch.zeros(batch, 1, length, length).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
        labelled = torch.where(target != -100, segment, -1)
        return Packed(inputs, positions, mask, target, labelled, numbered, torch.tensor(prompt_end))


def answers_right(logits, packed: Packed):
    """Per question: whether every answer token (and EOS) is the argmax (greedy decoding's answer)."""
    import torch

    target, labelled = packed.target[:, 1:], packed.target[:, 1:] != -100
    wrong = (logits.argmax(-1) != target)[labelled].long()
    errors = torch.zeros(len(packed.questions), dtype=torch.long).index_add_(0, packed.question[:, 1:][labelled], wrong)
    return errors == 0


def by_kind(right, kinds) -> str:
    rates = {kind: [] for kind in TYPES}
    for ok, kind in zip(right.tolist(), kinds):
        rates[kind].append(ok)
    return "  ".join(f"{kind} {np.mean(v):.2f}" for kind, v in rates.items() if v)


RECIPE = Path(__file__).resolve().parents[1] / "export" / "tiny-llava-49.toml"

# Visual-token dropout in stage 2: on most steps every image keeps only K of its N tokens (the
# same K across the batch, a fraction drawn from the sweep's budgets), chosen per image in one of
# three ways: at random; the top K by the tower's own CLS attention (what attention-based
# methods keep); or a regular raster subsample (what spatially uniform methods keep). The kept
# tokens stay in raster order and take consecutive positions, exactly as a pruned bundle feeds
# them, so the language model learns to answer from whatever subset a method hands it.
DROPOUT_FULL = 0.3  # the share of steps that keep every token
DROPOUT_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
DROPOUT_MODES = ("random", "attention", "grid")


def dropout_indices(rng: np.random.Generator, scores: np.ndarray, k: int) -> np.ndarray:
    """Kept token indices [B, K] (ascending) for per-image CLS scores [B, N], each image's subset
    drawn in a mode chosen at random."""
    batch, n = scores.shape
    kept = []
    for b in range(batch):
        mode = DROPOUT_MODES[int(rng.integers(len(DROPOUT_MODES)))]
        if mode == "random":
            chosen = rng.choice(n, k, replace=False)
        elif mode == "attention":
            chosen = np.argsort(-scores[b], kind="stable")[:k]
        else:  # k positions spread evenly over the raster, from a random start
            chosen = (np.floor(np.arange(k) * n / k + rng.random() * n / k).astype(np.int64)) % n
        kept.append(np.sort(chosen))
    return np.stack(kept)


def train(out: Path, *, seed: int = 0, vision_steps: int = 1500, lm_steps: int = 2000, batch: int = 32,
          held_out: int = 320, recipe_path: Path = RECIPE, token_dropout: bool = False, init: Path | None = None,
          log=print) -> Path:
    """Train from the recipe's config and ``seed``; save a llava-hf folder at ``out``."""
    import torch
    import torch.nn.functional as F
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from edgecompress.models.tiny import build_processor, build_tokenizer
    from edgecompress.recipes import load_recipe_file

    recipe = load_recipe_file(recipe_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + TRAIN_SEED_OFFSET)
    config = LlavaConfig(**recipe.config)
    model = LlavaForConditionalGeneration(config)
    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    if IMAGE_SIZE % side:
        raise ValueError(f"a {side}x{side} patch grid does not divide the {IMAGE_SIZE}-px images")
    size, patch = IMAGE_SIZE, IMAGE_SIZE // side  # the patch grid, in the data set's pixels
    tower = model.model.vision_tower
    layer = config.vision_feature_layer
    feature_index = layer if layer >= 0 else vc.num_hidden_layers + 1 + layer
    heads = VisionHeads(vc.hidden_size)
    teacher = None
    if init is not None:
        teacher = Teacher(init, side)
        teacher.start(model, feature_index)
        log(f"warm start from {init}: a {teacher.side}x{teacher.side} teacher, {teacher.ratio}x{teacher.ratio} "
            f"new patches to each of its patches")
    start = time.time()

    def batch_of_images(kinds=KINDS):
        samples = [make_image(rng, size, kinds) for _ in range(batch)]
        return samples, pixel_values([s[0] for s in samples], recipe.preprocess)

    def step_with(optimiser, params, loss, step, total, peaks):
        for group, peak in zip(optimiser.param_groups, peaks):
            group["lr"] = cosine(step, total, peak, 50)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()

    # -- stage 1: the vision tower, CLS and patch heads ---------------------------------------
    params = list(tower.parameters()) + heads.parameters()
    optimiser = torch.optim.AdamW(params, weight_decay=0.01)
    tower.train()
    for step in range(vision_steps):
        samples, pixels = batch_of_images()
        states = tower(pixels, output_hidden_states=True).hidden_states
        loss, rates = heads.loss(states[feature_index], samples, side, patch, size)
        distil = teacher.loss([s[0] for s in samples], states) if teacher else None
        total = loss if distil is None else loss + DISTIL_WEIGHT * distil
        step_with(optimiser, params, total, step, vision_steps, [VISION_LR])
        if step % 100 == 0 or step == vision_steps - 1:
            log(f"vision {step:4d}/{vision_steps}  loss {loss.item():.3f}  "
                + (f"distil {distil.item():.3f}  " if distil is not None else "")
                + f"object patches right {rates['both']:.3f}  "
                f"(colour {rates['colour']:.3f}, shape {rates['shape']:.3f})  "
                f"({time.time() - start:.0f}s)")

    # -- stage 2: projector and language model on the questions (tower fine-tuned slowly, the
    # stage-1 loss kept as an auxiliary so CLS stays a summary of the image) -------------------
    tokenizer = build_tokenizer(config.text_config.vocab_size, config.text_config.max_position_embeddings,
                                corpus=_corpus())
    processor = build_processor(recipe, tokenizer)
    embed = model.get_input_embeddings()
    pack = Packer(tokenizer, embed)
    words = [torch.tensor([tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in names])
             for names in (COLOUR_NAMES, SHAPES, ("left", "right"))]
    fix_attribute_words(embed.weight, torch.cat(words), reset=teacher is None)
    language = [p for n, p in model.named_parameters() if not n.startswith("model.vision_tower")]
    vision = list(tower.parameters()) + heads.parameters()
    optimiser = torch.optim.AdamW([{"params": language}, {"params": vision}], weight_decay=0.01)

    # The pointer head's attention weights: eager attention returns them (sdpa does not).
    implementation = model.model.language_model.config._attn_implementation
    model.model.language_model.config._attn_implementation = "eager"
    attention = {}
    model.model.language_model.layers[POINTER_LAYER].self_attn.register_forward_hook(
        lambda module, args, output: attention.__setitem__("weights", output[1]))

    feature_layer = tower.encoder.layers[feature_index - 1]  # the layer whose CLS attention HiRED reads

    def cls_scores(hidden_states):
        """The feature layer's CLS attention summed over heads [B, N] (as HiRED scores patches)."""
        from edgecompress.selection.attention import cls_attention

        with torch.no_grad():
            a = feature_layer.self_attn
            normed = feature_layer.layer_norm1(hidden_states[feature_index - 1])
            return cls_attention(normed, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias,
                                 vc.num_attention_heads).sum(1).numpy()

    def answer(image_embeds, questions):
        packed = pack(image_embeds, questions)
        out_hidden = model.model.language_model(inputs_embeds=packed.inputs, position_ids=packed.positions,
                                                attention_mask=packed.mask).last_hidden_state
        return model.lm_head(out_hidden[:, :-1]), packed

    kept_tokens = []
    for step in range(lm_steps):
        samples, pixels = batch_of_images()
        states = tower(pixels, output_hidden_states=True).hidden_states
        hidden = states[feature_index]
        aux, rates = heads.loss(hidden, samples, side, patch, size)
        image_embeds = model.model.multi_modal_projector(hidden[:, 1:])  # [B, N, D]
        align = alignment_loss(image_embeds, *rates["labels"], embed.weight, words)
        owners = rates["owner"]
        if token_dropout and rng.random() >= DROPOUT_FULL:
            k = max(1, round(float(rng.choice(DROPOUT_FRACTIONS)) * side * side))
            kept = dropout_indices(rng, cls_scores(states), k)
            image_embeds = torch.gather(image_embeds, 1, torch.from_numpy(kept)[..., None].expand(-1, -1, image_embeds.shape[-1]))
            owners = np.take_along_axis(owners, kept, axis=1)
        kept_tokens.append(image_embeds.shape[1])
        logits, packed = answer(image_embeds, [s[2] for s in samples])
        answer_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), packed.target[:, 1:].reshape(-1),
                                      ignore_index=-100)
        pointer = pointer_loss(attention["weights"], packed, samples, owners, pack.image_at)
        loss = answer_loss + 0.3 * aux + align + POINTER_WEIGHT * pointer
        step_with(optimiser, language + vision, loss, step, lm_steps, [LANGUAGE_LR, VISION_LR / 4])
        if step % 50 == 0 or step == lm_steps - 1:
            right, kinds = answers_right(logits.detach(), packed), [q[0] for q in packed.questions]
            log(f"language {step:4d}/{lm_steps}  tokens {image_embeds.shape[1]:3d}  loss {answer_loss.item():.3f}  "
                f"aux {aux.item():.3f}  align {align.item():.3f}  pointer {pointer.item():.3f}  "
                f"answers right {right.float().mean().item():.3f} ({by_kind(right, kinds)})  ({time.time() - start:.0f}s)")
    if token_dropout:
        log(f"token dropout: {np.mean([t < side * side for t in kept_tokens]):.0%} of steps pruned, "
            f"mean {np.mean(kept_tokens):.1f} of {side * side} image tokens")

    # -- held out: fresh images, one question of each type, every token and HiRED's top 20% ----
    model.eval()
    k20 = max(1, side * side // 5)
    with torch.no_grad():
        rights, rights20, kinds = [], [], []
        for _ in range(held_out // batch):
            samples, pixels = batch_of_images(TYPES)
            states = tower(pixels, output_hidden_states=True).hidden_states
            embeds = model.model.multi_modal_projector(states[feature_index][:, 1:])
            logits, packed = answer(embeds, [s[2] for s in samples])
            rights.append(answers_right(logits, packed))
            top = torch.from_numpy(np.sort(np.argsort(-cls_scores(states), axis=1, kind="stable")[:, :k20], axis=1))
            logits, packed = answer(torch.gather(embeds, 1, top[..., None].expand(-1, -1, embeds.shape[-1])),
                                    [s[2] for s in samples])
            rights20.append(answers_right(logits, packed))
            kinds += [q[0] for q in packed.questions]
        if kinds:
            for label, r in (("every token", rights), (f"HiRED top {k20} of {side * side}", rights20)):
                right = torch.cat(r)
                log(f"held out ({label}): {len(kinds)} questions on {len(kinds) // len(TYPES)} fresh images, answers right "
                    f"{right.float().mean().item():.3f} ({by_kind(right, kinds)})")

    model.model.language_model.config._attn_implementation = implementation  # as it was built

    # -- save: a llava-hf folder, fp16 weights ---------------------------------------------------
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.to(torch.float16).save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"saved {out} ({time.time() - start:.0f}s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the architecture (a recipe .toml)")
    parser.add_argument("--vision-steps", type=int, default=1500)
    parser.add_argument("--lm-steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--held-out", type=int, default=320, help="fresh images to measure the result on")
    parser.add_argument("--token-dropout", action="store_true",
                        help="visual-token dropout in stage 2 (random, CLS-attention and raster-grid subsets; "
                             "see DROPOUT_*); tiny-llava-49 was trained without it, tiny-llava with it")
    parser.add_argument("--init", type=Path, default=None,
                        help="warm-start from this trained tiny-llava (a coarser patch grid that the recipe's "
                             "refines): its weights, and its tower as a teacher in stage 1 (see Teacher)")
    args = parser.parse_args(argv)
    train(args.out, seed=args.seed, vision_steps=args.vision_steps, lm_steps=args.lm_steps, batch=args.batch,
          held_out=args.held_out, recipe_path=args.recipe, token_dropout=args.token_dropout, init=args.init,
          log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
