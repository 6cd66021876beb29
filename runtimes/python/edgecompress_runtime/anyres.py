"""LLaVA-NeXT "anyres" tiling, numpy + PIL only, matching transformers' LlavaNextImageProcessorPil.

An image is encoded as a base image (the whole image squashed to the tile size) plus a grid of
tiles cut from the image fitted into the best of the checkpoint's ``image_grid_pinpoints``:

1. the pinpoint resolution (h, w) that keeps the most of the image's pixels, then wastes least;
2. the image resized to fit it with its aspect ratio kept, zero-padded (centred) to (h, w);
3. cut into (h / S) x (w / S) tiles of S x S, row-major;
4. the base image and every tile rescaled and normalised like LLaVA-1.5's single image.

The bundle's vision graph takes a fixed number of slots, ``1 + max_tiles`` (base first, unused
slots zero, as transformers pads a batch), and :class:`AnyresLayout` says which grid was used
and which of the tiles' patch tokens lie inside the image rather than its padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgecompress_runtime.preprocess import RESAMPLE, load_image, normalize, to_rgb


def select_best_resolution(size: tuple[int, int], pinpoints: list[list[int]]) -> tuple[int, int]:
    """The pinpoint (h, w) an image of ``size`` (h, w) is tiled at: the most effective pixels,
    then the fewest wasted ones, the first listed on a tie (transformers' rule)."""
    height, width = size
    best, best_effective, best_wasted = None, 0, math.inf
    for target_h, target_w in pinpoints:
        scale = min(target_w / width, target_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = target_w * target_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (target_h, target_w), effective, wasted
    return best


def fitted_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the image resized to fit ``target`` with its aspect ratio kept."""
    height, width = size
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def unpadded_span(size: tuple[int, int], canvas: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns of a (rows, cols) feature canvas that hold the image, not its padding
    (transformers' ``unpad_image``, on token coordinates)."""
    height, width = size
    rows, cols = canvas
    if width / height > cols / rows:
        new_rows = int(round(height * (cols / width), 7))
        pad = (rows - new_rows) // 2
        return (pad, rows - pad), (0, cols)
    new_cols = int(round(width * (rows / height), 7))
    pad = (cols - new_cols) // 2
    return (0, rows), (pad, cols - pad)


@dataclass(frozen=True)
class AnyresLayout:
    """How one image was tiled: the grid, and which tile tokens hold image rather than padding."""

    image_size: tuple[int, int]  # original (h, w)
    grid: tuple[int, int]  # (tile rows, tile cols)
    grid_index: int  # index of the grid in the bundle's pinpoints
    side: int  # patch tokens per tile side (24 for CLIP 336/14)
    max_tiles: int
    rows: tuple[int, int]  # unpadded rows of the (grid_h * side, grid_w * side) token canvas
    cols: tuple[int, int]

    @property
    def tiles(self) -> int:
        return self.grid[0] * self.grid[1]

    def canvas_slots(self) -> np.ndarray:
        """For every cell of the token canvas, its index in the graph's flat tile-token space
        (tile t row-major, patch p raster: t * N + p), [grid_h * side, grid_w * side]."""
        side, (grid_h, grid_w) = self.side, self.grid
        y, x = np.meshgrid(np.arange(grid_h * side), np.arange(grid_w * side), indexing="ij")
        return ((y // side) * grid_w + x // side) * side * side + (y % side) * side + x % side

    def tile_mask(self) -> np.ndarray:
        """[max_tiles, N] float32: 1 for tokens of a used tile inside the image, 0 for padding
        and for unused slots."""
        n = self.side * self.side
        mask = np.zeros(self.max_tiles * n, dtype=np.float32)
        (top, bottom), (left, right) = self.rows, self.cols
        mask[self.canvas_slots()[top:bottom, left:right].ravel()] = 1.0
        return mask.reshape(self.max_tiles, n)

    def packed_order(self) -> np.ndarray:
        """LLaVA-NeXT's unpruned token order over the graph's outputs [(1 + max_tiles) N]: the
        base image's N tokens, then the unpadded canvas row by row, each row followed by the
        image-newline embedding (written -1)."""
        n = self.side * self.side
        (top, bottom), (left, right) = self.rows, self.cols
        canvas = self.canvas_slots()[top:bottom, left:right] + n
        rows = np.concatenate([canvas, np.full((canvas.shape[0], 1), -1)], axis=1)
        return np.concatenate([np.arange(n), rows.ravel()]).astype(np.int64)


def layout_for(size: tuple[int, int], anyres: dict[str, Any]) -> AnyresLayout:
    """The tiling of an image of ``size`` (h, w) under a bundle's ``anyres`` record."""
    pinpoints = [list(p) for p in anyres["pinpoints"]]
    tile, side = int(anyres["tile_size"]), int(anyres["side"])
    best = select_best_resolution(size, pinpoints)
    grid = (best[0] // tile, best[1] // tile)
    grids = [tuple(g) for g in anyres["grids"]]
    rows, cols = unpadded_span(size, (grid[0] * side, grid[1] * side))
    return AnyresLayout(tuple(size), grid, grids.index(grid), side, int(anyres["max_tiles"]), rows, cols)


def preprocess_anyres(image: str | Path | Image.Image, params: dict[str, Any], anyres: dict[str, Any]):
    """(pixel_values float32 [1 + max_tiles, 3, S, S], AnyresLayout) for one image."""
    rgb = to_rgb(load_image(image))
    size = (rgb.height, rgb.width)
    layout = layout_for(size, anyres)
    tile = int(anyres["tile_size"])
    resample = RESAMPLE[params.get("resample", "bicubic")]
    target = (layout.grid[0] * tile, layout.grid[1] * tile)
    fit_h, fit_w = fitted_size(size, target)
    fitted = np.asarray(rgb.resize((fit_w, fit_h), resample=resample))
    top, left = (target[0] - fit_h) // 2, (target[1] - fit_w) // 2
    canvas = np.zeros((*target, 3), dtype=np.uint8)
    canvas[top : top + fit_h, left : left + fit_w] = fitted
    base = np.asarray(rgb.resize((tile, tile), resample=resample))
    slots = np.zeros((1 + layout.max_tiles, 3, tile, tile), dtype=np.float32)
    slots[0] = normalize(base, params)
    for r in range(layout.grid[0]):
        for c in range(layout.grid[1]):
            piece = canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
            slots[1 + r * layout.grid[1] + c] = normalize(piece, params)
    return slots, layout
