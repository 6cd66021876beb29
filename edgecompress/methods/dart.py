"""DART (ZichenWen1/DART, arXiv:2502.11494), pre-LLM variant: duplication-aware selection on the
projected image tokens, before the language model, as TensorRT Edge-LLM ships it.

The published DART acts inside the language model (pivots by the L1 norm of layer-2 keys,
similarity on hidden states); this variant applies the same duplication rule to the projected
image embeddings the language model would read: P pivots are the tokens with the largest
embedding L2 norm; then, pivot by pivot, the T tokens *least* cosine-similar to the pivot among
those not yet taken join the kept set. P = min(8, max(1, K // 8)) (the authors use 8 pivots);
the K - P tokens left are shared as T = (K - P) // P per pivot, the first (K - P) mod P pivots
taking one more, so exactly K tokens are kept for every image. Static: a mask of taken tokens
instead of a set, one constant TopK per pivot, unrolled. Kept tokens are in raster order.
"""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs

PIVOTS = 8


def plan(k: int) -> list[int]:
    """Tokens each pivot adds (the pivots themselves not counted): len = P, sum = K - P."""
    pivots = min(PIVOTS, max(1, k // 8), k)
    share, extra = divmod(k - pivots, pivots)
    return [share + (1 if i < extra else 0) for i in range(pivots)]


def dart_picks(features, k: int):
    """The pivots then each pivot's picks, [B, K] int64, for features [B, N, D]."""
    import torch

    from edgecompress.lowering.primitives import constant_topk

    x = features.float()
    shares = plan(k)
    pivots = constant_topk(x.norm(dim=-1), len(shares))  # [B, P] by embedding norm
    unit = x / x.norm(dim=-1, keepdim=True)
    similarity = torch.matmul(unit, unit.transpose(1, 2))  # [B, N, N]
    taken = torch.zeros(x.shape[:2], dtype=x.dtype).scatter(1, pivots, 1.0)
    picks = [pivots]
    for i, share in enumerate(shares):
        if share == 0:
            continue
        row = torch.gather(similarity, 1, pivots[:, i : i + 1].unsqueeze(-1).expand(-1, 1, similarity.shape[-1]))[:, 0]
        chosen = constant_topk(torch.where(taken > 0, torch.full_like(row, -3.0), -row), share)  # least similar
        picks.append(chosen)
        taken = taken.scatter(1, chosen, 1.0)
    return torch.cat(picks, dim=1)


def accepts(inputs: VisionInputs, kept: list[int], band: float) -> bool:
    """Whether DART could have kept ``kept`` (one image): replay it in float64, and at every
    choice (a pivot by norm, a token least similar to a pivot) take a token of ``kept`` that is
    within ``band`` of the best choice. Flat image regions give near-equal norms and cosines."""
    import numpy as np

    from edgecompress.parity import near_best

    x = inputs.features[0].double().numpy()
    norms = np.linalg.norm(x, axis=-1)
    unit = x / norms[:, None]
    wanted, taken = set(kept), set()

    def take(values) -> int | None:  # the best not-taken token of `kept` within the band, by value
        free = [i for i in range(len(values)) if i not in taken]
        best = max(values[i] for i in free)
        candidates = [i for i in free if i in wanted and near_best(values[i], best, band)]
        if not candidates:
            return None
        pick = max(candidates, key=lambda i: values[i])
        taken.add(pick)
        return pick

    shares = plan(len(kept))
    pivots = [take(norms) for _ in shares]
    if None in pivots:
        return False
    for pivot, share in zip(pivots, shares):
        dissimilarity = -(unit @ unit[pivot])
        if any(take(dissimilarity) is None for _ in range(share)):
            return False
    return taken == wanted


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather, raster_order

    indices = raster_order(dart_picks(inputs.features, k))
    return ordered_gather(inputs.features, indices), indices


def details(budget_k: int, k: int, side: int) -> dict:
    shares = plan(k)
    return {"variant": "pre-LLM (TensorRT Edge-LLM's): pivots by projected-embedding L2 norm, cosine on the embeddings",
            "pivots": len(shares), "per_pivot": shares}


METHOD = Method(
    name="dart",
    summary="DART (pre-LLM): pivots by embedding norm, each adds the tokens least similar to it; raster order",
    paper="ZichenWen1/DART (arXiv:2502.11494)",
    select=select,
    needs=("features",),
    after_projector=True,
    details=details,
    accepts=accepts,
)
