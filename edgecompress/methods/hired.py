"""HiRED (hasanar1f/HiRED, arXiv:2408.10945): the top-K patches by the feature layer's CLS
attention summed over heads, kept in raster order. For LLaVA-NeXT the budget is split over the
base image and its tiles (``ALPHA``: the base image's share; see models/llava_next.py)."""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs

ALPHA = 0.5  # METHODS.md: the share of the total budget the base image keeps


def hired_scores(cls_attn):
    """HiRED's token score: the feature layer's CLS attention summed over heads. [B,H,N] -> [B,N]."""
    return cls_attn.sum(dim=1)


def hired_select(cls_attn, k: int):
    """Top-K patch indices by HiRED's score, in raster order. [B,H,N] -> [B,K]."""
    from edgecompress.lowering.primitives import top_k_in_order

    return top_k_in_order(hired_scores(cls_attn), k)


def score(inputs: VisionInputs):
    return hired_scores(inputs.cls_attention)


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather

    indices = hired_select(inputs.cls_attention, k)
    return ordered_gather(inputs.features, indices), indices


METHOD = Method(
    name="hired",
    summary="HiRED: top-K patches by the feature layer's CLS attention (summed over heads), raster order",
    paper="hasanar1f/HiRED (arXiv:2408.10945)",
    select=select,
    needs=("cls_attention", "features"),
    score=score,
    partition_alpha=ALPHA,
)
