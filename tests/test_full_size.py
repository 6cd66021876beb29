"""The full-size llava-1.5-7b and llava-next vision graphs (CLIP ViT-L/14-336 + projector to
4096) with seeded random weights: no download, under a minute and a few GB of memory each on a
2-core machine."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_llava_7b_random_weights_vision_graph_exports_verified(tmp_path):
    result = run_cli("export", "llava", "--budget", "20%", "--random-weights", "--vision-only", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "out" / "llava-1.5-7b-hired-b20"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["random_weights"] is True and manifest["precision"] == "fp16"
    assert (manifest["n"], manifest["k"]) == (576, 115)
    assert manifest["model"]["vision"]["num_layers"] == 24 and manifest["model"]["vision"]["feature_layer"] == 22
    vision = manifest["graphs"]["vision"]
    assert vision["verify"]["ok"] is True
    assert vision["outputs"][0] == {"name": "image_embeds", "shape": [1, 115, 4096], "dtype": "float16"}

    inspected = run_cli("inspect", str(bundle))
    assert inspected.returncode == 0 and "verifier PASS" in inspected.stdout

    session = ort.InferenceSession(str(bundle / vision["file"]), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((1, 3, 336, 336)).astype(np.float32)
    embeds, kept = session.run(None, {"pixel_values": pixels})
    assert embeds.shape == (1, 115, 4096) and np.isfinite(embeds).all()
    assert kept.shape == (1, 115) and np.all(np.diff(kept[0]) > 0) and 0 <= kept.min() and kept.max() < 576


@pytest.mark.slow
def test_llava_next_random_weights_vision_graph_exports_verified(tmp_path):
    """The full-size llava-v1.6 vision graph: 5 slots of CLIP ViT-L/14-336, HiRED's per-partition
    budget against the largest grid (K = 576 at 20%), the grid tables for all five pinpoints."""
    result = run_cli("export", "llava-next", "--budget", "20%", "--random-weights", "--vision-only", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "out" / "llava-next-hired-b20"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["n"], manifest["k"]) == (2880, 576)
    assert manifest["method_details"]["base_k"] == 288 and manifest["method_details"]["sub_total"] == 288
    assert manifest["anyres"]["grids"] == [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]]
    vision = manifest["graphs"]["vision"]
    assert vision["verify"]["ok"] is True
    assert [t["shape"] for t in vision["inputs"]] == [[5, 3, 336, 336], [1], [4, 576]]
    assert vision["outputs"][0] == {"name": "image_embeds", "shape": [1, 576, 4096], "dtype": "float16"}
