"""A procedural visual-QA data set: coloured shapes on textured backgrounds, one-word answers.

Every image holds 1 to 4 shapes (circle, square, triangle) of distinct colour-shape pairs,
of varying size (40 to 138 px, and a quarter small: 18 to 30 px), on a noisy or striped
background. Objects sit on a grid of 48-px cells (a large one fills a 1x1, 2x2 or 3x3 block
less a margin, a small one lies anywhere inside one cell), so an object's pixels fall into a
known set of cells: a token-selection method keeps or drops whole objects' evidence, which is
what the benchmark is for, and a small vision tower trained from scratch on a CPU can learn
shapes whose outline does not fall at arbitrary offsets inside its patches. Each image gets
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgecompress.errors import EdgeCompressError
from edgecompress.staging import make_staging, publish

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


CELL = 48  # objects sit in cells of this many pixels (about 12 of LLaVA-1.5's 14-px patches at 336 px)
MAX_SIDE = 4096  # pixels a side: larger pictures only slow every model down
MAX_COUNT = 1_000_000


def _place(rng, width, height, count) -> list[Item]:
    """Up to ``count`` objects of distinct colour-shape pairs, each in its own block of grid cells.

    An object covers 1x1, 2x2 or 3x3 cells less a margin of 3 to 8 px (40 to 138 px across), or,
    for a quarter of them, is small: 18 to 30 px anywhere inside one cell. Blocks never share a
    cell, so objects never touch.
    """
    cols, rows = width // CELL, height // CELL
    free = np.ones((rows, cols), dtype=bool)
    items: list[Item] = []
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    for index in chosen:
        shape, colour = pairs[index]
        for _ in range(100):
            small = rng.random() < 0.25
            span = 1 if small else int(rng.integers(1, 4))
            row, col = int(rng.integers(0, rows - span + 1)), int(rng.integers(0, cols - span + 1))
            if not free[row : row + span, col : col + span].all():
                continue
            if small:
                size = int(rng.integers(18, 31))
                x0 = col * CELL + int(rng.integers(2, CELL - size - 1))
                y0 = row * CELL + int(rng.integers(2, CELL - size - 1))
            else:
                margin = int(rng.integers(3, 9))
                size = span * CELL - 2 * margin
                x0, y0 = col * CELL + margin, row * CELL + margin
            free[row : row + span, col : col + span] = False
            items.append(Item(shape, colour, (x0, y0, x0 + size, y0 + size)))
            break
    return items


def draw_picture(rng: np.random.Generator, width: int = 336, height: int = 336) -> Image.Image:
    """One picture as the data set draws them (background, 1 to 4 objects), no question: inputs
    for tools that need realistic test images and no answers (``edgecompress compare``)."""
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for item in _place(rng, width, height, int(rng.integers(1, 5))):
        _draw(draw, item)
    return image


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
    if not 1 <= count <= MAX_COUNT:
        raise EdgeCompressError(f"--count {count} is out of range: it must be 1 to {MAX_COUNT:,}")
    if not 0 <= test_fraction < 1:
        raise EdgeCompressError(f"--test-fraction {test_fraction} is out of range: it must be at least 0 and below 1")
    for option, value in (("--width", size[0]), ("--height", size[1])):
        if not CELL <= value <= MAX_SIDE:
            raise EdgeCompressError(
                f"{option} {value} is out of range: it must be {CELL} to {MAX_SIDE} pixels",
                hint=f"Objects sit on a grid of {CELL}-px cells, so an image needs at least one cell; 336 is LLaVA's size.",
            )
    if out.exists() and not out.is_dir():
        raise EdgeCompressError(f"{out} is a file")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EdgeCompressError(f"{out} already exists and is not empty", hint="Pass --force to replace it.")
        if not (out / "test.jsonl").exists():
            raise EdgeCompressError(f"{out} is not a data set written by edgecompress; refusing to replace it")
    width, height = size
    rng = np.random.default_rng(seed)
    staging = make_staging(out)
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
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {split: out / f"{split}.jsonl" for split in ("train", "test")}
