"""The attention-received rule on LLaVA (the same method the Qwen2.5-VL recipes default to; its
Qwen side is in test_qwen.py): the score written plainly from transformers' own eager attention
weights, then exported, verified and run in ONNX Runtime against the PyTorch module and the
PyTorch pruned pipeline.

Tolerances: scores within 1e-6 absolute (fp32 softmax over 577 keys, probabilities under 1);
kept indices under the fp32 tie band by those scores (flat images give near-equal scores);
embeddings within 1e-4 and prefill logits within 1e-4, as the other fp32 parity tests.
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress import export_bundle
from edgecompress.methods import get_method
from edgecompress.models.llava import pruned_vision
from edgecompress.parity import compare_selections
from edgecompress.reference import pruned_generate
from edgecompress_runtime import Pipeline

K = 115  # 20% of tiny-llava-random's 576 patches


@pytest.fixture(scope="module")
def received_bundle(tmp_path_factory, tiny_checkpoint):
    return export_bundle("tiny-llava-random", method="received", budget="20%", precision="fp32",
                         out=tmp_path_factory.mktemp("received") / "bundle")


def plain_received(eager, pixel_values):
    """transformers' eager attention weights at the feature layer [H, 1+N, 1+N]: mean over the
    queries (CLS included), the patch columns, summed over heads -> [N]."""
    feature = eager.config.vision_config.num_hidden_layers + eager.config.vision_feature_layer
    with torch.no_grad():
        out = eager.model.vision_tower(pixel_values, output_attentions=True)
    return out.attentions[feature][0].mean(dim=1)[:, 1:].sum(dim=0)


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_received_is_the_plain_rule_over_transformers_attention(tiny_fp32, eager, pixels, image):
    expected = plain_received(eager, pixels[image])
    module = pruned_vision(tiny_fp32, get_method("received"), K)
    with torch.no_grad():
        score = get_method("received").score(module.method_inputs(pixels[image]))[0]
        _, kept = module(pixels[image])
    torch.testing.assert_close(score, expected, atol=1e-6, rtol=0)
    top = sorted(torch.topk(expected, K).indices.tolist())
    assert compare_selections(kept[0].tolist(), top, expected.numpy()).agree


@pytest.mark.parametrize("image", ["noise", "scene"])
def test_onnxruntime_keeps_what_pytorch_keeps(received_bundle, tiny_fp32, pixels, image):
    session = ort.InferenceSession(str(received_bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    embeds, kept = session.run(None, {"pixel_values": pixels[image].numpy()})
    module = pruned_vision(tiny_fp32, get_method("received"), K)
    with torch.no_grad():
        ref_embeds, ref_kept = module(pixels[image])
        score = module.selection_scores(pixels[image])[0].numpy()
    agreement = compare_selections(kept[0], ref_kept[0].tolist(), score)
    assert agreement.agree, agreement
    if agreement.identical:
        np.testing.assert_allclose(embeds[0], ref_embeds[0].numpy(), atol=1e-4, rtol=0)


def test_bundle_generates_what_the_pytorch_pipeline_generates(received_bundle, tiny_fp32, processor, images):
    module = pruned_vision(tiny_fp32, get_method("received"), K)
    reference = pruned_generate(tiny_fp32.model, processor, module, images["scene"], "What is in the picture?", 12)
    result = Pipeline.load(received_bundle).generate_full(images["scene"], "What is in the picture?", max_new_tokens=12)
    assert compare_selections(result.kept_indices, reference.kept_indices, reference.scores).identical
    assert result.token_ids == reference.token_ids
    np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)
