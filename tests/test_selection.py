"""HiRED and `none` in PyTorch, against transformers' own eager attention and features."""

import pytest
import torch

from edgecompress.lowering.primitives import ordered_gather, top_k_in_order
from edgecompress.models.llava import pruned_vision
from edgecompress.methods import get_method
from tests.helpers import assert_same_selection

IMAGES = ["noise", "flat", "scene"]


def reference_hired(eager, pixel_values, k, feature_layer):
    """HiRED for LLaVA-1.5 written plainly from the paper's recipe and transformers' attentions:
    layer L's CLS row over the patch columns, summed over heads, top-K, raster order."""
    with torch.no_grad():
        out = eager.model.vision_tower(pixel_values, output_attentions=True)
    cls_row = out.attentions[feature_layer][0, :, 0, 1:]  # [heads, N]
    score = cls_row.sum(dim=0)
    keep = torch.topk(score, k).indices
    return sorted(keep.tolist()), score


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("k", [115, 57, 288])
def test_hired_indices_equal_a_plain_reimplementation(tiny_fp32, eager, pixels, image, k):
    module = pruned_vision(tiny_fp32, get_method("hired"), k)
    with torch.no_grad():
        embeds, kept = module(pixels[image])
    expected, score = reference_hired(eager, pixels[image], k, tiny_fp32.feature_layer)
    # Our q/k recomputation and transformers' eager attention differ by a few float32 ulps, so
    # the selections must agree under the fp32 tie band (edgecompress.parity: 1e-5 of the
    # cut-off score): identical for noise and scene (cut-off gaps of 300 to 97,000 ulps); the
    # flat image at K=57 and K=288 has its cut-off inside 8 ulps, a true tie.
    assert_same_selection(kept, expected, score, k, precision="fp32")
    assert embeds.shape == (1, k, tiny_fp32.projected_dim)


def test_hired_reads_the_layer_that_vision_feature_layer_points_at(tiny_fp32):
    # vision_feature_layer = -2 on a 4-layer tower: the feature is hidden_states[3], produced by layer 2.
    assert tiny_fp32.config.vision_feature_layer == -2
    assert tiny_fp32.feature_hidden_state == 3
    assert tiny_fp32.feature_layer == 2


@pytest.mark.parametrize("image", IMAGES)
def test_none_equals_the_projector_on_transformers_features(tiny_fp32, pixels, image):
    module = pruned_vision(tiny_fp32, get_method("none"), tiny_fp32.num_patches)
    model = tiny_fp32.model
    with torch.no_grad():
        embeds, kept = module(pixels[image])
        features = model.model.get_image_features(
            pixels[image], vision_feature_layer=-2, vision_feature_select_strategy="default"
        ).pooler_output[0]
    assert kept[0].tolist() == list(range(576))
    # Same weights, same ops, same order: equal to float32 round-off (observed 0.0).
    torch.testing.assert_close(embeds[0], features, atol=1e-6, rtol=0)


def test_pruned_embeddings_are_the_projected_kept_features(tiny_fp32, pixels):
    """Pruning before the projector equals pruning after it (the projector is per token)."""
    full = pruned_vision(tiny_fp32, get_method("none"), 576)
    hired = pruned_vision(tiny_fp32, get_method("hired"), 115)
    with torch.no_grad():
        all_embeds, _ = full(pixels["scene"])
        embeds, kept = hired(pixels["scene"])
    torch.testing.assert_close(embeds, ordered_gather(all_embeds, kept), atol=1e-6, rtol=0)


def test_top_k_in_order_returns_raster_order():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7]])
    assert top_k_in_order(scores, 3).tolist() == [[1, 3, 5]]


def test_unknown_method_is_refused():
    from edgecompress.errors import EdgeCompressError

    with pytest.raises(EdgeCompressError, match="(?s)unknown selection method 'sparsevlm'.*hired, none"):
        get_method("sparsevlm")
