"""The fast image path (`preprocess(fast=True)`, `run --fast-preprocess`): how far its pixels
may be from the exact CLIP preprocessing, on the sizes and modes users feed.

The bounds: the fast path box-reduces by an integer factor before the bicubic resize (when the
image is at least 4x the input size) and resizes only the crop's region; the exact path resizes
the whole image with bicubic. On photo-like frames they differ by at most 2/255 per pixel, on
noise (the worst case for a box filter) by up to 3/255 with a mean under 1/255; a JPEG decoded in
draft mode adds about one more level. So: every pixel within 4/255, mean within 1/255. An
image that needs no reduction differs only by the crop-region resize's coefficient rounding
(at most 1/255). A wrong crop box, a swapped axis or a missed normalisation fails both bounds
by tens of levels.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from PIL import Image

from edgecompress_runtime.preprocess import preprocess
from tests.test_runtime import make_mode_images

CLIP = {"resample": "bicubic", "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}
STD = np.asarray(CLIP["image_std"], np.float32)[:, None, None] * 255  # normalised units -> 1/255 levels


def levels(a, b):
    return np.abs(a - b)[0] * STD


def frame(width, height, seed=1):
    """A photo-like frame: smooth colour fields and edges, upscaled from a quarter size."""
    from edgecompress.bench.runner import seeded_image

    return seeded_image(width // 4, height // 4, seed).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [224, 336])
@pytest.mark.parametrize("shape", [(1920, 1080), (1080, 1920), (1280, 720), (641, 479)])
def test_fast_path_is_within_four_levels_of_the_exact_one(size, shape):
    params = {**CLIP, "resize_shortest_edge": size, "crop_size": size}
    image = frame(*shape)
    fast, exact = preprocess(image, params, fast=True), preprocess(image, params)
    assert fast.shape == exact.shape == (1, 3, size, size) and fast.dtype == np.float32
    d = levels(fast, exact)
    assert d.max() <= 4 + 1e-3 and d.mean() <= 1.0, (d.max(), d.mean())


@pytest.mark.parametrize("name", list(make_mode_images()))
def test_fast_path_on_every_image_mode(name):
    params = {**CLIP, "resize_shortest_edge": 336, "crop_size": 336}
    image = make_mode_images()[name]
    d = levels(preprocess(image, params, fast=True), preprocess(image, params))
    assert d.max() <= 4 + 1e-3 and d.mean() <= 1.0, (d.max(), d.mean())
    if max(image.size) < 4 * 336:  # no reduction: only the crop-region resize's rounding
        assert d.max() <= 1 + 1e-3


def test_fast_path_decodes_a_jpeg_in_draft_mode_within_the_bound(tmp_path):
    params = {**CLIP, "resize_shortest_edge": 224, "crop_size": 224}
    path = tmp_path / "frame.jpg"
    frame(1920, 1080).save(path, quality=90)
    d = levels(preprocess(path, params, fast=True), preprocess(path, params))
    assert d.max() <= 4 + 1e-3 and d.mean() <= 1.0, (d.max(), d.mean())


def test_a_wrong_crop_would_fail_the_bound():
    """The bound has teeth: the same frame cropped one tenth off centre is far outside it."""
    params = {**CLIP, "resize_shortest_edge": 224, "crop_size": 224}
    image = frame(1920, 1080)
    shifted = image.crop((96, 0, 1920, 1080)).resize((1920, 1080), Image.Resampling.BICUBIC)
    d = levels(preprocess(shifted, params, fast=True), preprocess(image, params))
    assert d.mean() > 5


def test_pipeline_fast_preprocess_keeps_the_selection_and_the_answer(bundles):
    """2560x1440 frames (the fast path reduces them 2x before the resize to 336): the kept tokens
    overlap by at least 95% (measured 113-115 of 115: pixels a few levels apart move the CLS
    scores near the cut-off), the next-token logits keep a cosine of 0.999 (measured 0.99994),
    and the greedy answer is the same."""
    from edgecompress_runtime import Pipeline

    exact = Pipeline.load(bundles["hired-fp32"])
    fast = Pipeline.load(bundles["hired-fp32"], fast_preprocess=True)
    for seed in range(3):
        image = frame(2560, 1440, seed)
        a = exact.generate_full(image, "What is in the picture?", max_new_tokens=4)
        b = fast.generate_full(image, "What is in the picture?", max_new_tokens=4)
        assert len(set(a.kept_indices.tolist()) & set(b.kept_indices.tolist())) >= 0.95 * 115
        cos = a.prefill_logits @ b.prefill_logits / np.linalg.norm(a.prefill_logits) / np.linalg.norm(b.prefill_logits)
        assert cos >= 0.999 and a.token_ids == b.token_ids


@pytest.mark.parametrize("shape", [(1920, 1080), (1080, 1920), (2560, 1440), (999, 777)])
def test_the_two_thread_resize_is_one_resize_call_within_one_level(shape):
    """``resize_region`` splits PIL's reduction and filter across two threads; the reduction's
    halves meet at a whole block (bit-identical), the filter's halves can round a box edge
    differently in float, which moves a handful of pixels by one level (measured: 67 of 72 frames
    bit-identical, the others under 2e-5 of the values, by 1). A seam in the wrong row would
    shift a whole row by tens of levels, so the bound is per pixel, and few may differ at all."""
    pre = importlib.import_module("edgecompress_runtime.preprocess")  # the package exports a function of that name

    if pre._workers() is None:
        pytest.skip("one core: resize_region makes the single call itself")
    width, height = shape
    image = frame(width, height)
    for size in (224, 336):
        new_w, new_h = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        split = pre.resize_region(image, (size, size), "bicubic", box, pre.REDUCING_GAP).astype(np.int16)
        one = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=pre.REDUCING_GAP))
        assert split.shape == one.shape == (size, size, 3)
        assert np.abs(split - one).max() <= 1 and (split != one).mean() < 1e-3


def test_one_core_takes_the_single_call(monkeypatch):
    pre = importlib.import_module("edgecompress_runtime.preprocess")  # the package exports a function of that name

    monkeypatch.setattr(pre, "_workers", lambda: None)
    image = frame(1920, 1080)
    box = (420.0, 0.0, 1500.0, 1080.0)
    assert np.array_equal(pre.resize_region(image, (224, 224), "bicubic", box, pre.REDUCING_GAP),
                          np.asarray(image.resize((224, 224), Image.Resampling.BICUBIC, box=box, reducing_gap=pre.REDUCING_GAP)))
