"""The registry of token-selection methods.

A method is math on tensors: given the feature layer's per-head CLS attention over patches
(when it needs it) and K, it returns exactly K kept patch positions in original spatial order.
How a method is wired into a model lives in the model adapter (``edgecompress/models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from edgecompress.errors import EdgeCompressError
from edgecompress.lowering.primitives import top_k_in_order


def hired_scores(cls_attn: torch.Tensor) -> torch.Tensor:
    """HiRED's token score: the feature layer's CLS attention summed over heads. [B,H,N] -> [B,N]."""
    return cls_attn.sum(dim=1)


def hired_select(cls_attn: torch.Tensor, k: int) -> torch.Tensor:
    """HiRED for one partition (LLaVA-1.5): top-K by summed CLS attention, in raster order."""
    return top_k_in_order(hired_scores(cls_attn), k)


def keep_all(num_patches: int, batch: int) -> torch.Tensor:
    return torch.arange(num_patches, dtype=torch.int64).unsqueeze(0).expand(batch, -1)


@dataclass(frozen=True)
class SelectionMethod:
    name: str
    summary: str
    reference: str
    needs_cls_attention: bool
    keeps_all: bool
    select: Callable[..., torch.Tensor]


METHODS: dict[str, SelectionMethod] = {
    "hired": SelectionMethod(
        name="hired",
        summary="HiRED: top-K patches by the feature layer's CLS attention (summed over heads), raster order",
        reference="hasanar1f/HiRED (arXiv:2408.10945)",
        needs_cls_attention=True,
        keeps_all=False,
        select=lambda cls_attn, k: hired_select(cls_attn, k),
    ),
    "none": SelectionMethod(
        name="none",
        summary="Baseline: keep every visual token (the unpruned model)",
        reference="-",
        needs_cls_attention=False,
        keeps_all=True,
        select=None,  # type: ignore[arg-type]
    ),
}


def get_method(name: str) -> SelectionMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise EdgeCompressError(
            f"unknown selection method {name!r}", hint=f"Available methods: {', '.join(METHODS)}."
        ) from None
