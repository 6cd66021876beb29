"""HiRED's per-partition budget (LLaVA-NeXT anyres), as math on tensors.

LLaVA-NeXT encodes a base image plus a grid of G = grid_h x grid_w tiles, N tokens each. HiRED
(hasanar1f/HiRED, ``HiRED_token_selection``) splits a total budget between the base image
(``alpha``) and the tiles, and between tiles in proportion to where the base image's layer-0 CLS
attention concentrates. The per-tile counts depend on the image, so as published the selection
is not shape-static; :func:`quota_select` lowers it to one constant-K selection.

The allocation exported here (``grid``) counts the base image's top floor(N (1 - alpha))
layer-0 tokens in the true 2D region each tile covers, and shares the tiles' budget by
largest-remainder rounding (with a cap per tile, the excess passed on), so the shares sum
exactly to ``sub_total``: the kept-token count is the same for every image.

The authors' own allocation (row bands of the raster, shares truncated, a per-image budget; so
the kept count varies and it is not exportable) is reproduced, for comparison only, in
``tests/authors_hired.py``.
"""

from __future__ import annotations

import torch

from edgecompress.lowering.primitives import constant_topk, descending_rank, raster_order


def spatial_mask(base_layer0: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """The base image's top floor(N (1 - alpha)) tokens by layer-0 CLS score, as 0/1 floats [N]."""
    return (descending_rank(base_layer0) < int(n * (1 - alpha))).float()


def region_matrix(grid: tuple[int, int], side: int) -> torch.Tensor:
    """[G, N] 0/1: base-image patches in the true 2D region each tile covers (row-major tiles)."""
    grid_h, grid_w = grid
    rows = [side * r // grid_h for r in range(grid_h + 1)]
    cols = [side * c // grid_w for c in range(grid_w + 1)]
    matrix = torch.zeros(grid_h * grid_w, side, side)
    for r in range(grid_h):
        for c in range(grid_w):
            matrix[r * grid_w + c, rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 1.0
    return matrix.reshape(grid_h * grid_w, side * side)


_FRACTION_STEPS = 1 << 20  # remainders compared at 2^-20 resolution, then by index: no ties


def largest_remainder(weights: torch.Tensor, total: int, cap: int | torch.Tensor) -> torch.Tensor:
    """Integers proportional to ``weights`` [G] summing exactly to ``total``, each at most ``cap``.

    Largest-remainder (Hamilton) rounding: floor every exact share, then give the units left
    over to the largest remainders (ties to the lower index). A share over its cap is clamped
    and its excess shared among the others in proportion; at most G rounds, unrolled, so the
    whole computation is tensor ops of fixed shape and exports as a static graph. Equal shares
    when every weight is zero.

    ``cap`` is one int for every part, or a tensor [G] of caps (computed in the graph: the
    tokens each tile actually has). A part with cap 0 takes nothing. With tensor caps summing
    to less than ``total``, every part ends at its cap and the sum falls short.
    """
    count = weights.numel()
    if isinstance(cap, int):
        if total > count * cap:
            raise ValueError(f"{total} does not fit {count} parts of at most {cap}")
        cap = torch.full((count,), cap, dtype=torch.int64)
    cap = cap.to(torch.int64)
    weights = weights.float().clamp(min=0)
    weights = torch.where(weights.sum() > 0, weights, torch.ones_like(weights))
    index = torch.arange(count, dtype=torch.int64)
    quotas = torch.zeros(count, dtype=torch.int64)
    open_ = cap > 0
    for _ in range(count):
        remaining = (total - quotas.sum()).float()
        share = torch.where(open_, weights, torch.zeros_like(weights))
        share = torch.where(share.sum() > 0, share, open_.float())
        exact = share / share.sum().clamp(min=1e-30) * remaining
        floor = exact.floor()
        left = (remaining - floor.sum()).round().long()
        fraction = ((exact - floor) * _FRACTION_STEPS).floor().long()
        key = torch.where(open_, fraction, torch.full_like(fraction, -1)) * count + (count - 1 - index)
        proposal = quotas + floor.long() + (descending_rank(key) < left).long() * open_.long()
        over = proposal > cap
        any_over = over.any()
        quotas = torch.where(over, cap, torch.where(any_over, quotas, proposal))
        open_ = open_ & ~over
    return quotas


def quota_select(scores: torch.Tensor, quotas: torch.Tensor, k: int) -> torch.Tensor:
    """Per-partition top-k as one constant-K selection: flat kept positions [k], ascending.

    ``scores`` [G, N]: each partition's token scores; ``quotas`` [G]: how many each keeps (a
    tensor, possibly computed in the graph, summing to ``k``). Shape-stable lowering:

    1. rank within partition: a constant-N TopK gives each partition's order, and a second
       constant-N TopK over that order inverts it (rank[g, j] = place of token j in partition g);
    2. keep[g, j] = rank[g, j] < quotas[g];
    3. one constant-K TopK over an order-preserving priority (kept tokens first, earlier flat
       positions higher), sorted back to ascending order.

    No NonZero, no boolean indexing: every shape is fixed by G, N and k.
    """
    groups, n = scores.shape
    keep = descending_rank(scores) < quotas.to(torch.int64).unsqueeze(-1)  # [G, N]
    flat = keep.reshape(-1)
    position = torch.arange(groups * n, dtype=torch.int64)
    priority = flat.to(torch.int64) * (groups * n) + (groups * n - 1 - position)
    return raster_order(constant_topk(priority, k))
