"""The C++ runtime on Qwen2.5-VL bundles, against the Python runtime: the same answers (tokens,
text, kept indices, prompt length, stop reason) on tiny-qwen2.5-vl exported unpruned and with the
received-attention method; the vision graph's patch rows equal to qwen.py's patch_rows (every
value, no tolerance: the resize is PIL's arithmetic, its pass order included); the mRoPE positions
equal to qwen.py's mrope_positions; the C API; the manifest's positions record checked in
manifest.py's words, and a manifest that pairs mRoPE with the fused decoder refused.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompress_runtime.bundle import open_bundle
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.pipeline import Pipeline
from edgecompress_runtime.qwen import mrope_positions, patch_rows
from tests.cpp_parity import C_CALLBACK, MAX_NEW, PROMPTS, assert_same_answers, c_api, run_app
from tests.helpers import scene


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Wide, tall, very wide and already square (no resize), as PNG and JPEG."""
    root = tmp_path_factory.mktemp("qwen-images")
    paths = []
    for i, (size, suffix) in enumerate([((641, 479), "png"), ((333, 777), "jpg"), ((1001, 299), "png"), ((448, 448), "jpg")]):
        path = root / f"scene-{size[0]}x{size[1]}.{suffix}"
        scene(*size, seed=i).save(path, quality=90) if suffix == "jpg" else scene(*size, seed=i).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", ["none", "received"])
def test_qwen_bundles_answer_token_for_token_as_python(cpp_build, qwen_bundles, photos, name, tmp_path):
    """4 images x 2 prompts: the decode steps follow mRoPE's delta (a wrong delta changes the tokens)."""
    assert_same_answers(cpp_build, qwen_bundles[name], photos, tmp_path, every_prompt=True)


def test_patch_rows_equal_python(cpp_build, qwen_bundles, photos, tmp_path):
    """Every value of pixel_values [1024, 1176] equal to patch_rows: the 4 photos, and resizes that
    shrink both ways (a tall one whose pass order Pillow 13 flips), grow, or mix, PNG and JPEG."""
    params = json.loads((qwen_bundles["none"] / "manifest.json").read_text())["preprocess"]
    images = list(photos)
    for i, (size, suffix) in enumerate([((600, 700), "png"), ((700, 600), "jpg"), ((1921, 1081), "jpg"),
                                        ((200, 150), "png"), ((300, 1000), "jpg"), ((460, 900), "png")]):
        path = tmp_path / f"extra-{size[0]}x{size[1]}.{suffix}"
        scene(*size, seed=10 + i).save(path, quality=90) if suffix == "jpg" else scene(*size, seed=10 + i).save(path)
        images.append(path)
    rgba = tmp_path / "rgba-500x375.png"  # transparency onto white, as the Python runtime composites it
    pixels = np.asarray(scene(500, 375, seed=20))
    alpha = np.clip(np.linspace(-60, 300, 500)[None, :] + np.zeros((375, 1)), 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(rgba)
    images.append(rgba)
    for path in images:
        out = tmp_path / f"{path.name}.f32"
        done = subprocess.run([str(cpp_build / "preprocess_driver"), "qwen", json.dumps(params), str(path), str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        want = patch_rows(path, params)
        assert want.shape == (1024, 1176)
        got = np.fromfile(out, dtype=np.float32)
        assert got.size == want.size, path.name
        diff = float(np.abs(got.reshape(want.shape) - want).max())
        print(f"patch rows {path.name}: max diff {diff}")
        assert diff == 0.0, path.name


def test_mrope_positions_equal_python(cpp_build, qwen_bundles, photos):
    """The prompt's [3, 1, S] positions and delta, on a bundle's real kept indices and on made-up
    grids (no text before or after, no image tokens, a non-square grid)."""
    pipe = Pipeline.load(qwen_bundles["received"])
    kept = pipe.generate_full(str(photos[0]), PROMPTS[0], max_new_tokens=1).kept_indices
    cases = [(14, kept, (16, 16), 6), (0, np.arange(256), (16, 16), 0), (3, np.array([], dtype=np.int64), (16, 16), 4),
             (5, np.array([1, 9, 30, 31]), (4, 8), 3)]
    for prefix, indices, grid, suffix in cases:
        done = subprocess.run([str(cpp_build / "preprocess_driver"), "mrope", str(prefix), ",".join(map(str, indices)) or "-",
                               str(grid[0]), str(grid[1]), str(suffix)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        positions, delta = mrope_positions(prefix, indices, grid, suffix)
        assert got["positions"] == positions[:, 0].tolist()
        assert got["delta"] == delta


def test_c_api_on_a_qwen_bundle(cpp_build, qwen_bundles, photos):
    """ec_pipeline_load / ec_generate through ctypes: the Python text, streamed in pieces."""
    lib = c_api(cpp_build)
    callback_type = C_CALLBACK
    bundle = qwen_bundles["received"]
    pipe = lib.ec_pipeline_load(str(bundle).encode(), b"onnxruntime", 1)
    assert pipe, lib.ec_last_error()
    pieces: list[bytes] = []
    pointer = lib.ec_generate(pipe, str(photos[1]).encode(), PROMPTS[1].encode(), MAX_NEW,
                              callback_type(lambda piece, _: pieces.append(piece)), None)
    assert pointer, lib.ec_last_error()
    text = ctypes.string_at(pointer).decode()
    lib.ec_free(pointer)
    lib.ec_pipeline_free(pipe)
    assert text == Pipeline.load(bundle).generate(str(photos[1]), PROMPTS[1], max_new_tokens=MAX_NEW)
    assert b"".join(pieces).decode() == text


def edited(bundle: Path, folder: Path, edit) -> Path:
    """A copy of ``bundle`` whose manifest ``edit`` changed (the manifest is not in its own sha256 table)."""
    copy = folder / f"edited-{len(list(folder.iterdir()))}"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_positions_record_errors_say_what_python_says(cpp_build, qwen_bundles, photos, tmp_path):
    bundle = qwen_bundles["received"]
    edits = {
        "kind": lambda m: m["positions"].update(kind="rope"),
        "grid": lambda m: m["positions"].update(grid=[16, 0]),
        "table": lambda m: m.update(positions="mrope"),
    }
    for name, edit in edits.items():
        copy = edited(bundle, tmp_path, edit)
        with pytest.raises(EdgeCompressError) as python:
            open_bundle(copy)
        done = run_app(cpp_build, "--bundle", copy, "--image", photos[0], "--prompt", "hi")
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr == f"error: {python.value}\n", name  # message and hint, word for word


def test_mrope_with_the_fused_decoder_is_refused(cpp_build, qwen_bundles, photos, tmp_path):
    """A manifest pairing mRoPE with a fused (GroupQueryAttention) decoder: refused at load."""
    def fuse(manifest):
        manifest["onnxruntime_graphs"] = {"decoder": {**manifest["graphs"]["decoder"],
                                                      "kv_cache": {"kind": "shared-buffer", "max_length": 4096}}}

    done = run_app(cpp_build, "--bundle", edited(qwen_bundles["received"], tmp_path, fuse), "--image", photos[0], "--prompt", "hi")
    assert done.returncode == 2, done.stderr
    assert "pairs mRoPE positions (Qwen2.5-VL) with the fused decoder graph" in done.stderr
    assert done.stdout == ""
