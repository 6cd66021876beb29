"""HiRED for LLaVA-NeXT as its authors' code does it (hasanar1f/HiRED, ``HiRED_token_selection``),
for tests to compare the exported ``grid`` allocation against. Test-only: a bundle never runs it.

Two allocation modes for the tiles' shares:

- ``authors``: the top floor(N (1 - alpha)) base tokens by layer-0 score are counted in *row
  bands* (the N-token raster reshaped to (grid_h, grid_w, -1)), and each tile's share
  ``int(ratio * sub_total)`` is truncated, so the shares can sum to less than the budget;
- ``grid``: what the bundle computes (true 2D regions, largest-remainder rounding), here written
  per grid rather than with the graph's constant tables.
"""

from __future__ import annotations

import math

import torch

from edgecompress.budget import PartitionBudget
from edgecompress.lowering.primitives import top_k_in_order
from edgecompress.selection.partitions import largest_remainder, region_matrix, spatial_mask


def authors_masks(layer0: torch.Tensor, feature: torch.Tensor, grid: tuple[int, int], rate: float,
                  alpha: float) -> torch.Tensor:
    """The authors' selection, written plainly from their code (``HiRED_token_selection`` and
    ``HiRED_sub_img_budgets``): ``layer0`` [N] the base image's head-summed layer-0 CLS scores,
    ``feature`` [P, N] every partition's feature-layer scores (base first). Returns the keep
    masks [P, N]: a per-image budget over P = 1 + G partitions; the base keeps its top base_k;
    the base's top N (1 - alpha) by layer 0 are counted in row bands (the raster reshaped to
    (gh, gw, -1)); tile i keeps its top int(share_i * sub_total)."""
    parts, n = feature.shape
    mask = torch.zeros_like(feature, dtype=torch.bool)
    total = int(parts * n * rate)
    base_k = min(int(total * alpha), n)
    sub_total = min(total - base_k, (parts - 1) * n)
    mask[0, feature[0].topk(base_k).indices] = True
    spatial = torch.zeros(n, dtype=torch.bool)
    spatial[layer0.topk(int(n * (1 - alpha))).indices] = True
    per_region = spatial.reshape(grid[0], grid[1], -1).sum(dim=-1).reshape(-1)
    budgets = ((per_region / per_region.sum()) * sub_total).int().clamp(max=n)
    for i, count in enumerate(budgets):
        mask[i + 1, feature[i + 1].topk(int(count)).indices] = True
    return mask


def partition_budget(num_tiles: int, n: int, rate: float, alpha: float) -> PartitionBudget:
    """METHODS.md: total = floor(P N rate), base_k = min(floor(total alpha), N), sub_total = min(total - base_k, G N)."""
    total = math.floor((num_tiles + 1) * n * rate)
    base_k = min(math.floor(total * alpha), n)
    return PartitionBudget(total, base_k, min(total - base_k, num_tiles * n))


def region_counts(spatial: torch.Tensor, grid: tuple[int, int], side: int, mode: str) -> torch.Tensor:
    """How many of the spatial tokens fall in each tile's region of the base image, [G] (row-major tiles)."""
    grid_h, grid_w = grid
    if mode == "authors":  # contiguous row bands of the raster, as the authors reshape it
        return spatial.reshape(grid_h, grid_w, -1).sum(-1).reshape(-1)
    return torch.matmul(region_matrix(grid, side), spatial)


def tile_quotas(base_layer0: torch.Tensor, grid: tuple[int, int], n: int, alpha: float, sub_total: int,
                mode: str = "grid") -> torch.Tensor:
    """Tokens each tile keeps, [G] int64 (row-major tiles). ``grid`` mode is tensor-only (exportable)."""
    if mode not in ("grid", "authors"):
        raise ValueError(f"allocation mode must be 'grid' or 'authors', not {mode!r}")
    spatial = spatial_mask(base_layer0.float(), n, alpha)
    counts = region_counts(spatial, grid, math.isqrt(n), mode)
    if mode == "authors":
        ratio = counts / counts.sum()
        return (ratio * sub_total).int().long().clamp(max=n)
    return largest_remainder(counts, sub_total, n)


def hired_next_authors(module, pixel_values: torch.Tensor, grid: tuple[int, int],
                       unpadded: torch.Tensor, rate: float) -> list[int]:
    """The authors' code path on a bundle's module (``LlavaNextPrunedVision``): the budget is per
    image (P = 1 + the image's G tiles, so it varies with the grid), the tiles' shares are counted in row bands and floored, each tile keeps its top k_i over all of
    its tokens, kept tokens are read row-major over the tiled grid, and those in the padding are
    dropped by the unpadding. So fewer than the budget can remain, and the count varies: this
    path is not exportable, and is not what a bundle runs.

    ``pixel_values`` [1 + T, 3, S, S] (slots past the image's tiles unused); ``unpadded`` [T * N]
    bool marks tile tokens inside the image. Returns kept indices in the bundle's index space
    (base p -> p, tile t patch p -> N + t N + p), in packing order.
    """
    n = module.n
    tiles = grid[0] * grid[1]
    with torch.no_grad():
        _, scores, layer0 = module.scores(pixel_values)
    split = partition_budget(tiles, n, rate, module.alpha)
    base = top_k_in_order(scores[0], split.base_k).tolist()
    quotas = tile_quotas(layer0, grid, n, module.alpha, split.sub_total, mode="authors")
    chosen = []
    for t in range(tiles):
        if int(quotas[t]):
            chosen += (top_k_in_order(scores[1 + t], int(quotas[t])) + t * n).tolist()
    position = module.canvas[module.grids.index(tuple(grid))]  # each tile token's place on the tiled grid
    kept = sorted((f for f in chosen if bool(unpadded[f])), key=lambda f: int(position[f]))
    return base + [n + f for f in kept]
