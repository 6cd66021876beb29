"""Attention received: the top-K image tokens by the attention they receive, averaged over every
query and summed over heads at one full-attention layer of the vision tower, kept in raster order.

The rule for towers with no CLS token (Qwen2.5-VL): a token many others attend to carries what
they reuse. No single reference implementation is followed. Computed from the layer's own q and k
in fp32, as HiRED's CLS row is: for Qwen2.5-VL at the last full-attention block
(``fullatt_block_indexes``), each merged token's score the mean over its 2x2 patches; for LLaVA
at the feature layer, over every query, CLS included.
"""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs


def score(inputs: VisionInputs):
    return inputs.received_attention.sum(dim=1)


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather, top_k_in_order

    indices = top_k_in_order(score(inputs), k)
    return ordered_gather(inputs.features, indices), indices


METHOD = Method(
    name="received",
    summary="Attention received: top-K tokens by the attention they receive (mean over queries, summed over heads), raster order",
    paper="edgecompress: the attention-received rule of issue #20 (no single reference implementation)",
    select=select,
    needs=("received_attention", "features"),
    score=score,
)
