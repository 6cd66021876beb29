"""A procedural visual-QA data set: coloured shapes on textured backgrounds, one-word answers.

Every image holds 1 to 4 shapes (circle, square, triangle) of distinct colour-shape pairs,
of varying size (some small: 14 to 28 px), on a noisy or striped background. Each image gets
one question, the types in turn:

- colour:   "What colour is the triangle?"                    -> "red"
- shape:    "What shape is the blue object?"                  -> "circle"
- count:    "How many shapes are there?"                      -> "3"
- position: "Is the green square on the left or the right?"   -> "left"
- presence: "Is there a yellow circle?"                       -> "yes" / "no"

Deterministic for a seed. Written as PNGs plus JSONL, one object a line:
``{"image": "images/00001.png", "question": "...", "answer": "...", "type": "count"}`` --
the format ``edgecompress validate`` reads for any data set.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgecompress.errors import EdgeCompressError

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (240, 210, 20),
    "purple": (140, 50, 180), "orange": (250, 130, 10), "white": (250, 250, 250), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
TYPES = ("colour", "shape", "count", "position", "presence")


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1

    @property
    def centre_x(self) -> float:
        return (self.box[0] + self.box[2]) / 2


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(90, 170, size=3)
    if rng.random() < 0.5:
        pixels = base + rng.normal(0, 18, size=(height, width, 3))
    else:
        period = int(rng.integers(8, 24))
        stripes = ((np.arange(width) // period) % 2)[None, :, None] * rng.integers(-25, 25, size=3)
        pixels = base + stripes + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw(draw: ImageDraw.ImageDraw, item: Item, fill=None) -> None:
    x0, y0, x1, y1 = item.box
    fill = COLOURS[item.colour] if fill is None else fill
    if item.shape == "circle":
        draw.ellipse(item.box, fill=fill)
    elif item.shape == "square":
        draw.rectangle(item.box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _place(rng, width, height, count) -> list[Item]:
    items: list[Item] = []
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    for index in chosen:
        shape, colour = pairs[index]
        for _ in range(100):
            small = rng.random() < 0.25
            size = int(rng.integers(14, 29) if small else rng.integers(40, min(width, height) // 3))
            x0, y0 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
            box = (x0, y0, x0 + size, y0 + size)
            if all(box[2] + 6 < b.box[0] or b.box[2] + 6 < box[0] or box[3] + 6 < b.box[1] or b.box[3] + 6 < box[1]
                   for b in items):
                items.append(Item(shape, colour, box))
                break
    return items


def _question(rng, kind: str, items: list[Item], width: int) -> tuple[str, str]:
    if kind == "count":
        return "How many shapes are there?", str(len(items))
    if kind == "presence":
        if rng.random() < 0.5:
            item = items[int(rng.integers(len(items)))]
            return f"Is there a {item.colour} {item.shape}?", "yes"
        present = {(i.shape, i.colour) for i in items}
        absent = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in present]
        shape, colour = absent[int(rng.integers(len(absent)))]
        return f"Is there a {colour} {shape}?", "no"
    item = items[int(rng.integers(len(items)))]
    if kind == "colour" and sum(i.shape == item.shape for i in items) == 1:
        return f"What colour is the {item.shape}?", item.colour
    if kind == "shape" and sum(i.colour == item.colour for i in items) == 1:
        return f"What shape is the {item.colour} object?", item.shape
    if kind == "position":
        return f"Is the {item.colour} {item.shape} on the left or the right?", "left" if item.centre_x < width / 2 else "right"
    # colour/shape would be ambiguous here: ask about the object's full description instead
    return f"What colour is the {item.shape} on the {'left' if item.centre_x < width / 2 else 'right'}?", item.colour


def generate_shapes(out: Path, *, count: int = 500, seed: int = 1, size: tuple[int, int] = (336, 336),
                    test_fraction: float = 0.2, force: bool = False) -> dict[str, Path]:
    """Write ``count`` images and ``train.jsonl`` / ``test.jsonl`` into ``out`` (atomically)."""
    out = Path(out)
    if count < 1:
        raise EdgeCompressError("--count must be at least 1")
    if not 0 <= test_fraction < 1:
        raise EdgeCompressError("--test-fraction must be in [0, 1)")
    if out.exists() and not out.is_dir():
        raise EdgeCompressError(f"{out} is a file")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EdgeCompressError(f"{out} already exists and is not empty", hint="Pass --force to replace it.")
        if not (out / "test.jsonl").exists():
            raise EdgeCompressError(f"{out} is not a data set written by edgecompress; refusing to replace it")
    width, height = size
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (staging / "images").mkdir()
        rows = []
        for index in range(count):
            image = _background(rng, width, height)
            items = _place(rng, width, height, int(rng.integers(1, 5)))
            draw = ImageDraw.Draw(image)
            for item in items:
                _draw(draw, item)
            kind = TYPES[index % len(TYPES)]
            question, answer = _question(rng, kind, items, width)
            name = f"images/{index:05d}.png"
            image.save(staging / name)
            rows.append({"image": name, "question": question, "answer": answer, "type": kind})
        test_count = int(round(count * test_fraction))
        splits = {"train": rows[: count - test_count], "test": rows[count - test_count :]}
        for split, split_rows in splits.items():
            with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in split_rows:
                    f.write(json.dumps(row) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {split: out / f"{split}.jsonl" for split in ("train", "test")}
