"""Image loading and preprocessing, numpy + PIL only, matching the checkpoint's image processor.

For LLaVA-1.5 that is transformers' CLIP image processor: RGB conversion (transparency
composited onto white), resize of the shortest edge (PIL, bicubic), center crop, rescale by
1/255 and normalise by the CLIP mean and std. EXIF orientation is applied on load, as
transformers' ``load_image`` does.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgecompress_runtime.errors import EdgeCompressError

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


MIN_SIDE = 14  # one CLIP patch: a narrower image carries nothing for the vision tower to select from
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's decompression-bomb warning threshold


def check_size(width: int, height: int, where: str) -> None:
    """Refuse images too small to hold one vision patch, and decompression bombs (a small file
    that decodes to gigabytes), before any pixel is decoded."""
    if min(width, height) < MIN_SIDE:
        raise EdgeCompressError(f"image {where} is {width}x{height} pixels; the smallest this runtime reads is "
                                f"{MIN_SIDE} px on each side (one vision patch)")
    if width * height > MAX_PIXELS:
        raise EdgeCompressError(f"image {where} is {width}x{height} pixels, over the {MAX_PIXELS:,}-pixel limit "
                                "(a decompression bomb, or a picture far larger than any model reads)",
                                hint="Downscale it first; the model sees it at a few hundred pixels a side.")


ORIENTATION = 0x0112  # the EXIF tag


def upright(image: Image.Image) -> Image.Image:
    """EXIF orientation applied; the image itself when it has none (PIL's exif_transpose copies
    every pixel even then: 3 ms for a 1920x1080 frame)."""
    if image.getexif().get(ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def load_image(image: str | Path | Image.Image, draft: int | None = None) -> Image.Image:
    """Open an image file (or take a PIL image) with EXIF orientation applied. ``draft``: let a
    JPEG decode at a reduced scale (1/2, 1/4, 1/8: PIL's draft mode, decoding fewer DCT
    coefficients) as long as both sides stay at least ``draft`` pixels."""
    if isinstance(image, Image.Image):
        check_size(*image.size, "given")
        return upright(image)
    path = Path(image)
    if not path.exists():
        raise EdgeCompressError(f"image {path} does not exist")
    if not path.is_file():
        raise EdgeCompressError(f"image {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                check_size(*opened.size, str(path))  # from the header, before decoding
                if draft is not None and opened.format == "JPEG":
                    opened.draft("RGB", (draft, draft))
                opened.load()
                return ImageOps.exif_transpose(opened)  # a copy: the file closes here
    except UnidentifiedImageError:
        raise EdgeCompressError(f"{path} is not an image PIL can read", hint="Use a PNG, JPEG, WebP, BMP, GIF or TIFF file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # PIL checks the header first
        raise EdgeCompressError(f"image {path} is too large to decode safely: {err}", hint="Downscale it first.") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or malformed data (PIL raises all three)
        raise EdgeCompressError(f"cannot read image {path}: {err}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def shortest_edge_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the shortest edge to ``size`` (transformers' rounding)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_shortest_edge(image: Image.Image, size: int, resample: str) -> Image.Image:
    return image.resize(shortest_edge_size(*image.size, size), resample=RESAMPLE[resample])


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Crop an HWC array to size x size around its center (floor offsets, as transformers)."""
    height, width = array.shape[:2]
    if height < size or width < size:
        padded = np.zeros((max(height, size), max(width, size), array.shape[2]), dtype=array.dtype)
        top, left = -(-(padded.shape[0] - height) // 2), -(-(padded.shape[1] - width) // 2)
        padded[top : top + height, left : left + width] = array
        array, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def normalize_table(params: dict[str, Any]) -> np.ndarray:
    """float32 [3, 256]: what each uint8 value of each channel normalises to. Rescale in float64
    (as transformers), then (x - mean) / std in float32. The exporter bakes this same table into
    a vision graph that takes uint8 pixels (``export --pixel-input uint8``), so the two agree bit
    for bit."""
    values = np.arange(256, dtype=np.float64)[None, :].repeat(3, axis=0)  # [channel, value]
    scaled = values * float(params["rescale_factor"])
    mean = np.asarray(params["image_mean"], dtype=np.float64)[:, None]
    std = np.asarray(params["image_std"], dtype=np.float64)[:, None]
    return ((scaled.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)


def normalize(array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """uint8 HWC -> float32 CHW: rescale (float64, as transformers) then normalise in float32.

    A uint8 pixel has 256 values per channel, so the arithmetic runs once per value into a
    [3, 256] table and each pixel is a lookup: bit-identical to computing it per pixel, 4x faster."""
    table = normalize_table(params)
    pixels = np.asarray(array, dtype=np.uint8)
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[..., channel], out=out[channel])
    return out


DRAFT_GAP = 2  # a JPEG decodes at 1/2, 1/4 or 1/8 scale only where >= 2x the target remains (1.5: up to 8/255 off)
REDUCING_GAP = 1.5  # the fast path: PIL first box-reduces by an integer factor, keeping >= 1.5x the target size (1.0: up to 70/255 off)


SUPPORT = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}  # PIL's filters


@lru_cache(maxsize=1)
def _workers() -> ThreadPoolExecutor | None:
    """Two threads for the fast path's resize, where the process may use two cores: PIL releases
    the GIL while it reduces and resamples, and each half of the rows is its own call."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ThreadPoolExecutor(2, thread_name_prefix="edgecompress-resize") if cores >= 2 else None


def resize_region(image: Image.Image, size: tuple[int, int], resample: str,
                  box: tuple[float, float, float, float], reducing_gap: float) -> np.ndarray:
    """``image.resize(size, resample, box=box, reducing_gap=reducing_gap)`` as uint8 HWC, its two
    steps (the integer box reduction, then the filter) each split into a top and a bottom half run
    on two threads. The reduction's halves meet at a whole block, so they are bit-identical to one
    call; the filter's halves compute every coefficient over the whole image (PIL clamps the
    filter window to the image, not the box), so they differ from one call only where a half's
    box edge rounds differently in float: at most 1/255 (tests/test_preprocess_fast.py)."""
    workers = _workers()
    if workers is None or resample == "nearest":  # PIL's nearest neither reduces nor filters: one call
        return np.asarray(image.resize(size, RESAMPLE[resample], box=box, reducing_gap=reducing_gap))
    out_w, out_h = size
    factor_x = int((box[2] - box[0]) / out_w / reducing_gap) or 1
    factor_y = int((box[3] - box[1]) / out_h / reducing_gap) or 1
    if factor_x > 1 or factor_y > 1:  # PIL's own reduction step (Image.resize with reducing_gap), its box included
        support = SUPPORT[resample] - 0.5
        sx, sy = (box[2] - box[0]) / out_w * support, (box[3] - box[1]) / out_h * support
        x0, y0 = max(0, int(box[0] - sx)), max(0, int(box[1] - sy))
        x1, y1 = min(image.size[0], math.ceil(box[2] + sx)), min(image.size[1], math.ceil(box[3] + sy))
        middle = y0 + (y1 - y0) // factor_y // 2 * factor_y
        halves = [workers.submit(image.reduce, (factor_x, factor_y), (x0, top, x1, bottom))
                  for top, bottom in ((y0, middle), (middle, y1)) if bottom > top]
        parts = [half.result() for half in halves]
        reduced = Image.new(image.mode, (parts[0].size[0], sum(part.size[1] for part in parts)))
        for part, top in zip(parts, (0, parts[0].size[1])):
            reduced.paste(part, (0, top))
        image = reduced
        box = ((box[0] - x0) / factor_x, (box[1] - y0) / factor_y, (box[2] - x0) / factor_x, (box[3] - y0) / factor_y)
    rows = out_h // 2
    split = box[1] + (box[3] - box[1]) * rows / out_h
    halves = [workers.submit(image.resize, (out_w, height), RESAMPLE[resample], (box[0], top, box[2], bottom))
              for height, top, bottom in ((rows, box[1], split), (out_h - rows, split, box[3]))]
    return np.concatenate([np.asarray(half.result()) for half in halves])


def resize_and_crop_fast(image: Image.Image, size: int, crop: int, resample: str) -> np.ndarray | None:
    """The fast path: resize only the centre crop's region (``resize(box=...)``: nothing is
    computed for the parts the crop throws away) after PIL's integer box reduction
    (``reducing_gap``), on two threads (``resize_region``). None, for the exact path, where the
    image is enlarged along either side (small images are cheap, and PIL's region resize rounds
    differently when enlarging: up to 20/255 measured on noise) or the crop needs padding."""
    width, height = image.size
    new_w, new_h = shortest_edge_size(width, height, size)
    if new_w < crop or new_h < crop or new_w > width or new_h > height:
        return None
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return resize_region(image, (crop, crop), resample, box, REDUCING_GAP)


def crop_pixels(image: str | Path | Image.Image, params: dict[str, Any], *, fast: bool = False) -> np.ndarray:
    """The centre crop uint8 [S, S, 3] (HWC) that ``preprocess`` normalises: what a vision graph
    exported with ``--pixel-input uint8`` takes."""
    size, crop = int(params["resize_shortest_edge"]), int(params["crop_size"])
    resample = params.get("resample", "bicubic")
    rgb = to_rgb(load_image(image, draft=size * DRAFT_GAP if fast else None))
    pixels = resize_and_crop_fast(rgb, size, crop, resample) if fast else None
    if pixels is None:
        pixels = center_crop(np.asarray(resize_shortest_edge(rgb, size, resample)), crop)
    return pixels


def preprocess(image: str | Path | Image.Image, params: dict[str, Any], *, fast: bool = False) -> np.ndarray:
    """pixel_values float32 [1, 3, S, S] for one image.

    Default: exactly the checkpoint's CLIP image processor (tested to 1e-5). ``fast``: a JPEG
    file decodes at a reduced scale (draft mode) and only the crop's region is resized, after an
    integer box reduction; pixels differ from the exact path by at most 4/255 (mean < 1/255; the
    tests hold both bounds), for several times less work on a camera frame."""
    return normalize(crop_pixels(image, params, fast=fast), params)[None]


def frame_pixels(image, frame_size: tuple[int, int]) -> np.ndarray:
    """uint8 [1, H, W, 3] for a bundle exported with ``--pixel-input frame:WxH``, whose vision
    graph resizes, crops and normalises: a uint8 RGB array [H, W, 3] as a camera hands it over
    (no copy when contiguous), or an image file or PIL image (EXIF orientation, RGB). Its size
    must be the bundle's frame size."""
    width, height = frame_size
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise EdgeCompressError(f"a frame array must be uint8 [height, width, 3] (RGB), got {image.dtype} {list(image.shape)}",
                                    hint="Convert it first, e.g. cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for an OpenCV frame.")
        pixels, where = image, "given"
    else:
        pixels, where = np.asarray(to_rgb(load_image(image))), "given" if isinstance(image, Image.Image) else str(image)
    if pixels.shape[:2] != (height, width):
        raise EdgeCompressError(
            f"image {where} is {pixels.shape[1]}x{pixels.shape[0]}; this bundle's vision graph takes {width}x{height} "
            f"frames (exported with --pixel-input frame:{width}x{height})",
            hint=f"Feed frames of {width}x{height}, or export a bundle for this size (--pixel-input "
                 f"frame:{pixels.shape[1]}x{pixels.shape[0]}) or for any size (without --pixel-input).")
    return np.ascontiguousarray(pixels)[None]
