"""The registry of token-selection methods.

A method is math on tensors: given the feature layer's per-head CLS attention over patches
(when it needs it) and K, it returns exactly K kept patch positions in original spatial order.
How a method is wired into a model lives in the model adapter (``edgecompress/models``).

torch is imported inside the math, not here: ``list methods`` and the memory plan read the
registry on machines without PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from edgecompress.errors import EdgeCompressError

if TYPE_CHECKING:
    import torch


def hired_scores(cls_attn: torch.Tensor) -> torch.Tensor:
    """HiRED's token score: the feature layer's CLS attention summed over heads. [B,H,N] -> [B,N]."""
    return cls_attn.sum(dim=1)


def hired_select(cls_attn: torch.Tensor, k: int) -> torch.Tensor:
    """HiRED for one partition (LLaVA-1.5): top-K by summed CLS attention, in raster order."""
    from edgecompress.lowering.primitives import top_k_in_order

    return top_k_in_order(hired_scores(cls_attn), k)


def keep_all(num_patches: int, batch: int) -> torch.Tensor:
    import torch

    return torch.arange(num_patches, dtype=torch.int64).unsqueeze(0).expand(batch, -1)


RANDOM_SEED = 0  # the `random` baseline's positions: drawn once, at export, from this seed


def random_positions(n: int, k: int, seed: int = RANDOM_SEED) -> torch.Tensor:
    """K of N positions drawn without replacement from a seeded generator, ascending (raster order)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=generator)[:k]).values


def pool_grid(k: int, side: int) -> tuple[int, int]:
    """The pooled grid for a budget of K: the largest h x w <= K with |h - w| <= 1 (h, w <= side)."""
    best = (1, 1)
    for h in range(1, side + 1):
        for w in (h, h + 1):
            if w <= side and h * w <= k and h * w > best[0] * best[1]:
                best = (h, w)
    return best


def pool_matrix(side: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """2D average pooling of a side x side token grid to ``grid`` as a constant [h*w, N] matrix
    (regions as adaptive_avg_pool2d forms them), and each region's centre patch index [h*w]."""
    import torch

    h, w = grid
    matrix = torch.zeros(h * w, side * side)
    centres = torch.zeros(h * w, dtype=torch.int64)
    for r in range(h):
        r0, r1 = (r * side) // h, -((-(r + 1) * side) // h)
        for c in range(w):
            c0, c1 = (c * side) // w, -((-(c + 1) * side) // w)
            cells = [y * side + x for y in range(r0, r1) for x in range(c0, c1)]
            matrix[r * w + c, cells] = 1.0 / len(cells)
            centres[r * w + c] = ((r0 + r1 - 1) // 2) * side + (c0 + c1 - 1) // 2
    return matrix, centres


@dataclass(frozen=True)
class SelectionMethod:
    name: str
    summary: str
    reference: str
    kind: str  # "scores": select(cls_attn, k); "all"; "fixed": positions chosen at export; "pool"
    select: Callable[..., torch.Tensor] | None = None
    score: Callable[[torch.Tensor], torch.Tensor] | None = None  # per-patch scores select ranks by, [B,H,N] -> [B,N]

    @property
    def needs_cls_attention(self) -> bool:
        return self.kind == "scores"

    @property
    def keeps_all(self) -> bool:
        return self.kind == "all"

    def output_k(self, k: int, side: int) -> int:
        """Tokens the graph emits for a budget of K: K, except `pool`, which emits its h x w grid."""
        if self.kind == "pool":
            h, w = pool_grid(k, side)
            return h * w
        return k


METHODS: dict[str, SelectionMethod] = {
    "hired": SelectionMethod(
        name="hired",
        summary="HiRED: top-K patches by the feature layer's CLS attention (summed over heads), raster order",
        reference="hasanar1f/HiRED (arXiv:2408.10945)",
        kind="scores",
        select=lambda cls_attn, k: hired_select(cls_attn, k),
        score=hired_scores,
    ),
    "none": SelectionMethod(
        name="none",
        summary="Baseline: keep every visual token (the unpruned model)",
        reference="-",
        kind="all",
    ),
    "random": SelectionMethod(
        name="random",
        summary=f"Baseline: K positions drawn once at export (seed {RANDOM_SEED}), the same for every image, raster order",
        reference="METHODS.md baselines",
        kind="fixed",
    ),
    "pool": SelectionMethod(
        name="pool",
        summary="Baseline: 2D average pooling of the patch grid to the largest near-square h x w <= K",
        reference="METHODS.md baselines",
        kind="pool",
    ),
}


def get_method(name: str) -> SelectionMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise EdgeCompressError(
            f"unknown selection method {name!r}", hint=f"Available methods: {', '.join(METHODS)}."
        ) from None
