"""Train the embedded default ``tiny-llava``: a small LLaVA-architecture model that answers the
shapes questions of ``edgecompress dataset shapes``, on a CPU, reproducibly from a seed.

    python benchmarks/train_tiny_llava.py --out out/tiny-llava-trained    # ~28 min on 2 cores
    edgecompress export out/tiny-llava-trained --budget 20%
    edgecompress validate out/tiny-llava-trained-hired-b20 --dataset data/test.jsonl

The shipped weights (export/weights/tiny-llava) are this script's output with its defaults. The
architecture is ``export/tiny-llava.toml``'s ``[config]``: a CLIP ViT at 112 px with 16-px
patches (49 patches + CLS; the processor resizes the data set's 336-px images, so one patch is
one 48-px cell of the data set's grid), a projector and a 4-layer Llama. Two stages, on images
generated on the fly (never the data set's own images: a different seed):

1. the vision tower alone, with a linear head on the **CLS** token trained to say which of the
   24 colour-shape pairs are in the image and how many shapes there are (multi-label, as CLIP's
   CLS is trained to summarise its image), and a linear head on every **patch** trained to say
   the colour and shape of the object that covers it (or background) and in which half of the
   image it lies;
2. the projector and language model on every question type, the loss on the answer tokens and
   EOS, with the tower fine-tuned at a quarter of its learning rate and the stage-1 loss kept
   as an auxiliary (so CLS stays a summary of the image and HiRED's CLS attention stays
   meaningful), and an alignment loss (``alignment_loss``) on the projected image tokens.

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

import numpy as np

from edgecompress.data.shapes import COLOURS, SHAPES, TYPES, _background, _draw, _place, _question

PAIRS = [(s, c) for s in SHAPES for c in COLOURS]  # 24 colour-shape pairs
TRAIN_SEED_OFFSET = 1_000_003  # training images never come from the data set's own seeds


def _corpus() -> list[str]:
    """Every question and answer form the data set uses, for the tokenizer."""
    lines = ["How many shapes are there?"] + [str(n) for n in range(10)] + ["yes", "no", "left", "right"]
    for shape in SHAPES:
        lines.append(f"What colour is the {shape}?")
        for side in ("left", "right"):
            lines.append(f"What colour is the {shape} on the {side}?")
        for colour in COLOURS:
            lines += [f"Is there a {colour} {shape}?", f"Is the {colour} {shape} on the left or the right?",
                      f"What shape is the {colour} object?", colour, shape]
    return lines


IMAGE_SIZE = 336  # the data set's images; the processor resizes them to the tower's input


def make_image(rng: np.random.Generator, size: int = IMAGE_SIZE):
    """One data-set-style image (PIL), its items, and its questions (one per type)."""
    from PIL import ImageDraw

    image = _background(rng, size, size)
    items = _place(rng, size, size, int(rng.integers(1, 5)))
    draw = ImageDraw.Draw(image)
    for item in items:
        _draw(draw, item)
    questions = [_question(rng, kind, items, size) for kind in TYPES]
    return image, items, questions


COLOUR_NAMES, BACKGROUND_COLOUR, BACKGROUND_SHAPE = list(COLOURS), len(COLOURS), len(SHAPES)


def targets(items, side: int, patch: int, size: int):
    """CLS targets (pair presence [24], count class [4]) and per-patch targets (colour or
    background, the object's shape or background, left/right half; each [side*side]), with
    ``patch`` the patch's size in the data set's pixels.

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
    centres = (np.arange(side) + 0.5) * patch
    half = np.broadcast_to((centres >= size / 2)[None, :], (side, side)).astype(np.int64).reshape(-1)
    return presence, len(items) - 1, colour, shape, half


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
        rates["labels"] = (colour, shape)
        return loss, rates


VISION_LR, LANGUAGE_LR = 1e-3, 2e-3  # peaks of the cosine schedules (50 warm-up steps)


def alignment_loss(image_embeds, colour, shape, embeddings, words):
    """LLaVA's feature alignment, made explicit: an object patch's projected embedding points
    where the language model's input embeddings of its colour and shape words point (cosine), so
    "the red triangle" in a question and the red triangle's image tokens share directions from
    the start and attention can bind them."""
    import torch.nn.functional as F

    on_object = colour < BACKGROUND_COLOUR
    if not on_object.any():
        return image_embeds.sum() * 0
    colour_words, shape_words = words
    target = (F.normalize(embeddings[colour_words[colour[on_object]]], dim=-1)
              + F.normalize(embeddings[shape_words[shape[on_object]]], dim=-1)).detach()
    return (1 - F.cosine_similarity(image_embeds[on_object], target, dim=-1)).mean()


RECIPE = Path(__file__).resolve().parents[1] / "export" / "tiny-llava.toml"


def train(out: Path, *, seed: int = 0, vision_steps: int = 1500, lm_steps: int = 1500, batch: int = 32,
          questions: int = 3, recipe_path: Path = RECIPE, log=print) -> Path:
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
    start = time.time()

    def batch_of_images():
        samples = [make_image(rng, size) for _ in range(batch)]
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
        hidden = tower(pixels, output_hidden_states=True).hidden_states[feature_index]
        loss, rates = heads.loss(hidden, samples, side, patch, size)
        step_with(optimiser, params, loss, step, vision_steps, [VISION_LR])
        if step % 100 == 0 or step == vision_steps - 1:
            log(f"vision {step:4d}/{vision_steps}  loss {loss.item():.3f}  object patches right {rates['both']:.3f}  "
                f"(colour {rates['colour']:.3f}, shape {rates['shape']:.3f})  "
                f"({time.time() - start:.0f}s)")

    # -- stage 2: projector and language model on the questions (tower fine-tuned slowly, the
    # stage-1 loss kept as an auxiliary so CLS stays a summary of the image) -------------------
    tokenizer = build_tokenizer(config.text_config.vocab_size, config.text_config.max_position_embeddings,
                                corpus=_corpus())
    processor = build_processor(recipe, tokenizer)
    embed = model.get_input_embeddings()
    before = torch.tensor(tokenizer("USER: ", add_special_tokens=True)["input_ids"])  # <s> USER:
    eos = tokenizer.eos_token_id
    words = [torch.tensor([tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in names])
             for names in (COLOUR_NAMES, SHAPES)]
    language = [p for n, p in model.named_parameters() if not n.startswith("model.vision_tower")]
    vision = list(tower.parameters()) + heads.parameters()
    optimiser = torch.optim.AdamW([{"params": language}, {"params": vision}], weight_decay=0.01)
    for step in range(lm_steps):
        samples, pixels = batch_of_images()
        hidden = tower(pixels, output_hidden_states=True).hidden_states[feature_index]
        aux, rates = heads.loss(hidden, samples, side, patch, size)
        image_embeds = model.model.multi_modal_projector(hidden[:, 1:])  # [B, N, D]
        align = alignment_loss(image_embeds, *rates["labels"], embed.weight, words)
        rows, labels = [], []
        for b, (_, _, qa) in enumerate(samples):
            for q in rng.choice(len(qa), size=questions, replace=False):
                question, answer = qa[q]
                after = tokenizer(f"\n{question} ASSISTANT:", add_special_tokens=False)["input_ids"]
                answer_ids = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [eos]
                rows.append(torch.cat([embed(before), image_embeds[b], embed(torch.tensor(after + answer_ids))]))
                label = torch.full((rows[-1].shape[0],), -100)
                label[-len(answer_ids):] = torch.tensor(answer_ids)
                labels.append(label)
        length = max(r.shape[0] for r in rows)
        inputs = torch.zeros(len(rows), length, rows[0].shape[1])
        target = torch.full((len(rows), length), -100)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, (row, label) in enumerate(zip(rows, labels)):
            inputs[i, : row.shape[0]], target[i, : row.shape[0]], mask[i, : row.shape[0]] = row, label, 1
        out_hidden = model.model.language_model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
        logits = model.lm_head(out_hidden[:, :-1])
        answer_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=-100)
        step_with(optimiser, language + vision, answer_loss + 0.3 * aux + align, step, lm_steps, [LANGUAGE_LR, VISION_LR / 4])
        if step % 50 == 0 or step == lm_steps - 1:
            with torch.no_grad():
                first = (target[:, 1:] != -100).int().argmax(-1)  # the answer's first token
                guess = logits.argmax(-1).gather(1, first[:, None])[:, 0]
                right = (guess == target[:, 1:].gather(1, first[:, None])[:, 0]).float().mean().item()
            log(f"language {step:4d}/{lm_steps}  loss {answer_loss.item():.3f}  aux {aux.item():.3f}  align {align.item():.3f}  "
                f"first answer token right {right:.3f}  ({time.time() - start:.0f}s)")

    # -- save: a llava-hf folder, fp16 weights ---------------------------------------------------
    model.eval()
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
    parser.add_argument("--lm-steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--questions", type=int, default=3, help="questions per image in stage 2 (of 5 types)")
    args = parser.parse_args(argv)
    train(args.out, seed=args.seed, vision_steps=args.vision_steps, lm_steps=args.lm_steps, batch=args.batch,
          questions=args.questions, recipe_path=args.recipe, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
