"""Shared fixtures: the real tiny-llava-random checkpoint, real test images, real exported bundles.

Everything is built once per session: the checkpoint into a private cache (so tests never
depend on, or write to, the user's ~/.cache), bundles into a session temp folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_CACHE = None


def pytest_configure(config):
    global _CACHE
    import tempfile

    _CACHE = tempfile.mkdtemp(prefix="edgecompress-test-cache-")
    os.environ["EDGECOMPRESS_CACHE"] = _CACHE
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the suite may touch the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pytest_unconfigure(config):
    import shutil

    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


# -- images: noise, a flat colour, a synthetic scene with objects ----------------------------


def make_images() -> dict:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8))
    flat = Image.new("RGB", (400, 300), (200, 40, 40))
    scene = Image.new("RGB", (480, 360), (230, 230, 215))
    draw = ImageDraw.Draw(scene)
    draw.rectangle((30, 40, 150, 160), fill=(20, 60, 200))
    draw.ellipse((260, 80, 420, 240), fill=(240, 200, 0))
    draw.polygon([(100, 330), (200, 200), (300, 330)], fill=(0, 150, 60))
    draw.ellipse((400, 20, 420, 40), fill=(0, 0, 0))  # a small object
    return {"noise": noise, "flat": flat, "scene": scene}


@pytest.fixture(scope="session")
def images():
    return make_images()


@pytest.fixture(scope="session")
def tiny_spec():
    from edgecompress.recipes import resolve_model

    return resolve_model("tiny-llava-random")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_spec) -> Path:
    from edgecompress.models.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tiny_spec.recipe)


@pytest.fixture(scope="session")
def eager(tiny_checkpoint):
    """The tiny checkpoint loaded by transformers with eager attention (attentions returned, keys
    hookable): what the authors' algorithms in the tests are written against."""
    import torch
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint, attn_implementation="eager",
                                                         dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def pixels(images, processor) -> dict:
    """Pixel values from the checkpoint's own (transformers) image processor."""
    return {name: processor.image_processor(img, return_tensors="pt")["pixel_values"] for name, img in images.items()}


@pytest.fixture(scope="session")
def tiny_fp32(tiny_spec):
    import torch

    from edgecompress.models.loading import load_model

    return load_model(tiny_spec, dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_fp16(tiny_spec):
    import torch

    from edgecompress.models.loading import load_model

    return load_model(tiny_spec, dtype=torch.float16)


@pytest.fixture(scope="session")
def tiny_qwen():
    """The tiny Qwen2.5-VL checkpoint (built on first use), loaded fp32 through its adapter."""
    import torch

    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model

    return load_model(resolve_model("tiny-qwen2.5-vl"), dtype=torch.float32)


@pytest.fixture(scope="session")
def qwen_bundles(tmp_path_factory, tiny_qwen) -> dict:
    """tiny-qwen2.5-vl fp32 bundles (test_qwen.py, test_cpp_qwen.py): unpruned (256 image tokens),
    received-attention 20% and dart 20% (the recipe's default method; 51 tokens each)."""
    from edgecompress import export_bundle

    root = tmp_path_factory.mktemp("qwen")
    return {
        "none": export_bundle("tiny-qwen2.5-vl", method="none", out=root / "none"),
        "received": export_bundle("tiny-qwen2.5-vl", method="received", budget="20%", out=root / "received"),
        "dart": export_bundle("tiny-qwen2.5-vl", budget="20%", out=root / "dart"),
    }


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, tiny_checkpoint) -> dict:
    """Bundles exported through the library API, shared by the tests that read them."""
    from edgecompress import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {
        "hired-fp32": export_bundle("tiny-llava-random", budget="20%", precision="fp32", out=root / "hired-fp32"),
        "hired-fp16": export_bundle("tiny-llava-random", budget="20%", precision="fp16", out=root / "hired-fp16"),
        "none-fp32": export_bundle("tiny-llava-random", method="none", precision="fp32", out=root / "none-fp32"),
    }


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    """runtimes/cpp/build after runtimes/cpp/build.sh (tests/cpp_build.py)."""
    from tests.cpp_build import build_cpp

    return build_cpp()


@pytest.fixture(scope="session")
def next_bundles(tmp_path_factory) -> dict:
    """tiny-llava-next bundles (HiRED 20% and unpruned), shared by the LLaVA-NeXT and C++ tests."""
    from edgecompress import export_bundle

    root = tmp_path_factory.mktemp("next")
    return {
        "hired": export_bundle("tiny-llava-next", budget="20%", out=root / "hired"),
        "none": export_bundle("tiny-llava-next", method="none", out=root / "none"),
    }


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `edgecompress` console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=900,
    )
