"""DivPrune (vbdi/divprune, arXiv:2503.02175): greedy max-min diversity among the projected image
tokens, cosine distance, kept in raster order.

Distance d(i, j) = 1 - cos(x_i, x_j) over the projected tokens. The first pick is the token
whose nearest other token is farthest (the second-smallest distance in its column, the
smallest being its own); each next pick is the token whose distance to the nearest picked token
is largest. The authors loop K times in Python; here the K steps are unrolled (no Loop op): each
is a Min, a masked constant TopK of 1 and a row Gather, on the [N, N] distance matrix computed
once. Picked tokens are masked out (the authors rely on their self-distance being the
smallest, which differs only for exact duplicates).
"""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs


def divprune_picks(features, k: int):
    """The K picks in pick order, [B, K] int64, for features [B, N, D]."""
    import torch

    from edgecompress.lowering.primitives import constant_topk

    x = features.float()
    x = x / x.norm(dim=-1, keepdim=True)
    distance = 1.0 - torch.matmul(x, x.transpose(1, 2))  # [B, N, N]
    two_smallest = constant_topk(-distance, 2)  # [B, N, 2]: each token's own place and its nearest other
    nearest_distance = torch.gather(distance, 2, two_smallest)[..., 1]  # [B, N] (distance is symmetric)
    pick = constant_topk(nearest_distance, 1)  # [B, 1]
    picks = [pick]
    taken = torch.zeros_like(nearest_distance).scatter(1, pick, 1.0)
    closest = torch.gather(distance, 1, pick.unsqueeze(-1).expand(-1, 1, distance.shape[-1]))[:, 0]  # [B, N]
    for _ in range(k - 1):
        pick = constant_topk(torch.where(taken > 0, torch.full_like(closest, -1.0), closest), 1)
        picks.append(pick)
        taken = taken.scatter(1, pick, 1.0)
        row = torch.gather(distance, 1, pick.unsqueeze(-1).expand(-1, 1, distance.shape[-1]))[:, 0]
        closest = torch.minimum(closest, row)
    return torch.cat(picks, dim=1)


def accepts(inputs: VisionInputs, kept: list[int], band: float) -> bool:
    """Whether the greedy could have picked ``kept`` (one image) from these features: replay it
    in float64, and wherever a token of ``kept`` scores within ``band`` (relative) of the step's
    best, take it. Background patches of a flat image are exact duplicates, so exact ties are
    common and two kernels may break them differently."""
    import numpy as np

    from edgecompress.parity import near_best

    x = inputs.features[0].double().numpy()
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    distance = 1.0 - x @ x.T
    wanted = set(kept)
    scores = np.sort(distance, axis=0)[1]  # the nearest other token (the smallest is its own)
    taken: set[int] = set()
    for _ in range(len(kept)):
        masked = np.where([i in taken for i in range(len(scores))], -np.inf, scores)
        best = masked.max()
        candidates = [i for i in wanted - taken if near_best(masked[i], best, band)]
        if not candidates:
            return False
        pick = max(candidates, key=lambda i: masked[i])
        taken.add(pick)
        scores = distance[pick] if len(taken) == 1 else np.minimum(scores, distance[pick])
    return taken == wanted


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather, raster_order

    indices = raster_order(divprune_picks(inputs.features, k))
    return ordered_gather(inputs.features, indices), indices


METHOD = Method(
    name="divprune",
    summary="DivPrune: greedy max-min cosine diversity among the projected tokens (K unrolled steps), raster order",
    paper="vbdi/divprune (arXiv:2503.02175)",
    select=select,
    needs=("features",),
    after_projector=True,
    accepts=accepts,
)
