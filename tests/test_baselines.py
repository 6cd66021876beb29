"""The `random` and `pool` baselines: exported through the same lowering and verifier, and
matching PyTorch in ONNX Runtime and end to end."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from edgecompress import export_bundle
from edgecompress.models.llava import pruned_vision
from edgecompress.reference import pruned_generate
from edgecompress.methods import get_method
from edgecompress.methods.pool import pool_grid
from edgecompress.methods.random import random_positions
from edgecompress_runtime import Pipeline


@pytest.fixture(scope="module")
def baseline_bundles(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("baselines")
    return {m: export_bundle("tiny-llava-random", method=m, budget="20%", precision="fp32", out=root / m) for m in ("random", "pool")}


def vision(bundle, pixel_values):
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixel_values": pixel_values.numpy()})


def test_pool_grid_is_the_largest_near_square_within_the_budget():
    assert [pool_grid(k, 24) for k in (28, 57, 115, 288, 576)] == [(5, 5), (7, 8), (10, 11), (16, 17), (24, 24)]


def test_random_positions_are_seeded_and_in_raster_order():
    first, again, other = random_positions(576, 115), random_positions(576, 115), random_positions(576, 115, seed=1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len(set(first.tolist())) == 115 and torch.equal(first, torch.sort(first).values)


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_random_keeps_the_same_seeded_positions_for_every_image(baseline_bundles, tiny_fp32, pixels, image):
    embeds, kept = vision(baseline_bundles["random"], pixels[image])
    np.testing.assert_array_equal(kept[0], random_positions(576, 115).numpy())
    with torch.no_grad():
        features = tiny_fp32.model.model.get_image_features(
            pixels[image], vision_feature_layer=-2, vision_feature_select_strategy="default"
        ).pooler_output[0]
    np.testing.assert_allclose(embeds[0], features[kept[0]].numpy(), atol=1e-4, rtol=0)  # fp32 round-off


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_pool_averages_the_patch_grid(baseline_bundles, tiny_fp32, pixels, image):
    manifest = json.loads((baseline_bundles["pool"] / "manifest.json").read_text())
    assert manifest["k"] == 110 and manifest["budget"]["k"] == 115 and manifest["method_details"]["grid"] == [10, 11]
    embeds, kept = vision(baseline_bundles["pool"], pixels[image])
    assert embeds.shape == (1, 110, 64) and kept.shape == (1, 110)
    with torch.no_grad():
        hidden = tiny_fp32.vision_tower(pixels[image], output_hidden_states=True).hidden_states[-2][:, 1:]
        grid = hidden.reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(grid, (10, 11)).flatten(2).transpose(1, 2)
        expected = tiny_fp32.projector(pooled)
    np.testing.assert_allclose(embeds, expected.numpy(), atol=1e-4, rtol=0)
    assert kept[0, 0] == 1 * 24 + 1 and kept[0, -1] == 22 * 24 + 22  # centres of the first and last 3x3 windows


@pytest.mark.parametrize("method", ["random", "pool"])
def test_baseline_bundles_generate_what_pytorch_generates(baseline_bundles, tiny_fp32, processor, images, method):
    module = pruned_vision(tiny_fp32, get_method(method), json.loads((baseline_bundles[method] / "manifest.json").read_text())["k"])
    reference = pruned_generate(tiny_fp32.model, processor, module, images["scene"], "What is in the picture?", 12)
    result = Pipeline.load(baseline_bundles[method]).generate_full(images["scene"], "What is in the picture?", max_new_tokens=12)
    assert result.token_ids == reference.token_ids
    np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)
