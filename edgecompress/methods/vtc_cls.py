"""VTC-CLS (THU-MIG/VTC-CLS, arXiv:2412.05819): the top-K patches by CLS attention summed over
several encoder layers (each layer's attention averaged over heads), kept in raster order.

The authors sum ``attentions[start:-1]`` of CLIP ViT-L/14-336: layers 16..22 of 0..23, ending
at the layer LLaVA reads its feature from. Here the range ends at the checkpoint's feature layer
f and starts at the same relative depth, round(f * 16 / 22) (16 for LLaVA-1.5's f = 22).
"""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs

START, FEATURE = 16, 22  # the authors' start layer, for their feature layer


def attention_layers(feature_layer: int) -> tuple[int, ...]:
    start = min(feature_layer, (feature_layer * START + FEATURE // 2) // FEATURE)
    return tuple(range(start, feature_layer + 1))


def score(inputs: VisionInputs):
    """sum over the layers of the head-mean CLS attention: [B,N]."""
    layers = inputs.layer_attention
    total = None
    for layer in sorted(layers):
        mean = layers[layer].mean(dim=1)
        total = mean if total is None else total + mean
    return total


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather, top_k_in_order

    indices = top_k_in_order(score(inputs), k)
    return ordered_gather(inputs.features, indices), indices


def details(budget_k: int, k: int, side: int) -> dict:
    return {"layers": "round(f * 16 / 22) .. f, f the feature layer (16..22 for LLaVA-1.5)", "head_reduction": "mean"}


METHOD = Method(
    name="vtc-cls",
    summary="VTC-CLS: top-K patches by CLS attention summed over the last layers up to the feature layer, raster order",
    paper="THU-MIG/VTC-CLS (arXiv:2412.05819)",
    select=select,
    needs=("layer_attention", "features"),
    attention_layers=attention_layers,
    score=score,
    details=details,
)
