"""Qwen2.5-VL in the runtime: an image as the vision graph's patch rows, and mRoPE positions.

A Qwen2.5-VL bundle fixes one square grid (``preprocess.image_size``): every image is resized to
it (PIL, the bundle's filter, aspect ratio not kept: Qwen's own processor would pick a grid per
image, which a static graph cannot take), normalised as the processor does, and cut into the
rows the vision tower reads: merge blocks of ``merge_size`` x ``merge_size`` patches in raster
order, each row the patch's channels x ``temporal_patch_size`` copies (a still image is repeated
in time) x ``patch_size`` x ``patch_size`` pixels.

Positions (``positions.kind == "mrope"``): the language model takes 3 rows (temporal, height,
width). Text before the image counts 0, 1, ...; the image token at (row r, col c) of the merged
grid sits at (s, s + r, s + c), s the image's first position; kept tokens keep theirs (pruning
drops positions, it does not renumber); the text after the image continues from
s + max(rows, cols), where the unpruned layout continues. Every later token (decode steps,
follow-up turns) is at (p, p, p), p = its index in the cache + ``delta``, delta = (the next
position after the prompt) - (the prompt's length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgecompress_runtime.preprocess import RESAMPLE, load_image, normalize, to_rgb

MROPE = "mrope"


def patch_rows(image: str | Path | Image.Image, params: dict[str, Any]) -> np.ndarray:
    """float32 [patches, channels * temporal * patch * patch]: the vision graph's ``pixel_values``."""
    size, patch = int(params["image_size"]), int(params["patch_size"])
    merge, temporal = int(params["merge_size"]), int(params["temporal_patch_size"])
    rgb = to_rgb(load_image(image))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample=RESAMPLE[params.get("resample", "bicubic")])
    pixels = normalize(np.asarray(rgb), params)  # [3, size, size]
    blocks = size // (patch * merge)
    grid = pixels.reshape(3, blocks, merge, patch, blocks, merge, patch)
    # -> [block row, block col, row in block, col in block, channel, patch y, patch x]
    grid = grid.transpose(1, 4, 2, 5, 0, 3, 6)
    rows = np.broadcast_to(grid[:, :, :, :, :, None], (*grid.shape[:5], temporal, patch, patch))
    return np.ascontiguousarray(rows).reshape(blocks * blocks * merge * merge, 3 * temporal * patch * patch)


def mrope_positions(prefix: int, kept: np.ndarray, grid: tuple[int, int], suffix: int) -> tuple[np.ndarray, int]:
    """([3, 1, S] int64 positions of a prompt: ``prefix`` text tokens, the kept image tokens
    (merged raster indices on ``grid``), ``suffix`` text tokens; delta = next position - S)."""
    rows, cols = grid
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    text = np.arange(prefix, dtype=np.int64)
    image = np.stack([np.full_like(kept, prefix), prefix + kept // cols, prefix + kept % cols])
    start = prefix + max(rows, cols)
    after = np.arange(start, start + suffix, dtype=np.int64)
    positions = np.concatenate([np.broadcast_to(text, (3, prefix)), image, np.broadcast_to(after, (3, suffix))], axis=1)
    length = prefix + len(kept) + suffix
    return positions[:, None], start + suffix - length


def step_positions(start: int, count: int, delta: int) -> np.ndarray:
    """[3, 1, count] positions of cache slots start .. start + count - 1 after the prompt."""
    row = np.arange(start + delta, start + delta + count, dtype=np.int64)
    return np.broadcast_to(row, (3, 1, count)).copy()
