"""LLaVA-NeXT (anyres) adapter and its pruned vision module.

(Imports torch: import this module only where it is needed.)

LLaVA-NeXT encodes a base image plus a grid of G tiles chosen per image from the checkpoint's
``image_grid_pinpoints`` (1x2, 2x1, 2x2, 3x1, 1x3 for llava-v1.6: G = 2 to 4). The bundle's
vision graph is static: it always takes ``1 + max_tiles`` slots (base first; slots past the
image's G tiles are zero), the index of the grid used, and a mask of the tile tokens that hold
image rather than padding. How the varying tile count enters the graph, and why, is in the
docstring of :class:`LlavaNextPrunedVision`.

Budget (HiRED, METHODS.md), against the largest grid P = 1 + max_tiles so that K is one number
for every image: total = floor(P N rate), base_k = min(floor(total alpha), N), sub_total =
total - base_k. K = total for every image and grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecompress.budget import PartitionBudget
from edgecompress.errors import EdgeCompressError
from edgecompress.lowering.primitives import top_k_in_order
from edgecompress.models.llava import LlavaAdapter, LlavaPrunedVision
from edgecompress.methods import Method
from edgecompress.selection.partitions import (
    largest_remainder,
    partition_budget,
    quota_select,
    region_matrix,
    spatial_mask,
    tile_quotas,
)


TOKEN_ORDER = (
    "base image's kept tokens in raster order, then the tiles' kept tokens row-major over the whole "
    "tiled token grid (as LLaVA-NeXT packs tiles); no image-newline tokens. kept_indices: base patch p "
    "-> p; tile t (row-major), patch p -> N + t*N + p"
)
TOKEN_ORDER_NONE = (
    "LLaVA-NeXT's own packing: the base image's N tokens, then the tiled token grid with its padding "
    "removed, row by row, each row followed by the image-newline embedding (done by the runtime)"
)


@dataclass
class LlavaNextAdapter(LlavaAdapter):
    """A LLaVA-NeXT model: the LLaVA-1.5 parts plus anyres tiling and the image-newline vector."""

    family = "llava-next"

    @property
    def tile_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def pinpoints(self) -> list[list[int]]:
        return [list(p) for p in self.config.image_grid_pinpoints]

    @property
    def grids(self) -> list[tuple[int, int]]:
        """(tile rows, tile cols) of every pinpoint, in pinpoint order."""
        tile = self.tile_size
        grids = []
        for height, width in self.pinpoints:
            if height % tile or width % tile:
                raise EdgeCompressError(
                    f"grid pinpoint {height}x{width} is not a multiple of the {tile}-px tile",
                    hint="edgecompress supports pinpoints that cut into whole tiles, as llava-v1.6's do.",
                )
            grids.append((height // tile, width // tile))
        return grids

    @property
    def max_tiles(self) -> int:
        return max(h * w for h, w in self.grids)

    @property
    def min_tiles(self) -> int:
        return min(h * w for h, w in self.grids)

    @property
    def slots(self) -> int:
        return 1 + self.max_tiles

    @property
    def image_newline(self) -> torch.Tensor | None:
        return None if self.model is None else self.model.model.image_newline

    def anyres_record(self) -> dict[str, Any]:
        """What the runtime needs to tile an image as this model does."""
        return {
            "pinpoints": self.pinpoints,
            "grids": [list(g) for g in self.grids],
            "tile_size": self.tile_size,
            "side": self.grid,
            "max_tiles": self.max_tiles,
        }

    def unpruned_max_tokens(self) -> int:
        """The most image tokens LLaVA-NeXT's own packing emits (a grid with no padding, plus a
        newline per token row)."""
        from edgecompress.architecture import Architecture

        return Architecture.from_config(self.config.to_dict()).unpruned_image_tokens

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data["anyres"] = self.anyres_record()
        return data

    def grid_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per grid, constants the selection reads (indexed by the graph's ``grid_index``):

        - regions [num_grids, T, N] float: base-image patches in the 2D region each tile covers
          (rows of unused tiles are zero);
        - canvas [num_grids, T * N] int64: each tile token's raster position on the grid's
          whole token canvas (unused tiles after every used one).
        """
        side, n, t = self.grid, self.num_patches, self.max_tiles
        regions = torch.zeros(len(self.grids), t, n)
        canvas = torch.full((len(self.grids), t * n), 2 * t * n, dtype=torch.int64)
        for g, (grid_h, grid_w) in enumerate(self.grids):
            regions[g, : grid_h * grid_w] = region_matrix((grid_h, grid_w), side)
            for tile in range(grid_h * grid_w):
                row, col = divmod(tile, grid_w)
                for p in range(n):
                    y, x = row * side + p // side, col * side + p % side
                    canvas[g, tile * n + p] = y * grid_w * side + x
        return regions, canvas


class LlavaNextPrunedVision(nn.Module):
    """(pixel_values [1+T,3,S,S], grid_index [1], tile_mask [T,N]) -> (image_embeds [1,K,D], kept [1,K]).

    HiRED with a per-partition budget, lowered to one constant-K selection (``grid`` allocation):

    1. base image: its top base_k patches by the feature layer's CLS attention, raster order;
    2. allocation: the base image's top floor(N (1 - alpha)) patches by *layer-0* CLS attention
       are counted in the 2D region of the base image each tile covers; the counts split
       sub_total by largest-remainder rounding, each tile capped at the tokens it has inside
       the image (``tile_mask``), so the quotas sum exactly to sub_total (an extremely thin
       image can have fewer tokens inside it: every one is kept, the rest is filled from its
       padding, earliest first, so K stays fixed);
    3. tiles: rank within tile (padding tokens last) < quota, then one constant-K TopK, then
       the kept tokens re-ordered row-major over the whole tiled token grid.

    Why a fixed maximum of slots with a mask, not a dynamic tile axis: K must be one number
    per bundle, and the allocation indexes tiles by their place in the grid, so the tile axis
    is fixed at max_tiles and the grid enters as an index into constant tables. The graph is
    then fully static (one TensorRT profile, memory known at build); the cost is encoding the
    unused slots of 2- and 3-tile images (zero pixels, as transformers pads a batch).

    With ``method`` none the module returns every slot's projected tokens [1, (1+T) N, D]; the
    runtime packs them as LLaVA-NeXT does (unpadding, newline tokens).
    """

    def __init__(self, adapter: LlavaNextAdapter, method: Method, split: PartitionBudget | None):
        super().__init__()
        check_anyres(method)
        self.keeps_all = method.keeps_all
        self.alpha = method.partition_alpha
        self.score = method.score
        self.encoder = LlavaPrunedVision(adapter, method, split.total if split else adapter.num_patches)
        self.feature_layer = len(self.encoder.layers) - 1
        self.n, self.tiles = adapter.num_patches, adapter.max_tiles
        self.grids = adapter.grids
        self.split = split
        regions, canvas = adapter.grid_tables()
        self.register_buffer("regions", regions, persistent=False)
        self.register_buffer("canvas", canvas, persistent=False)

    @property
    def k(self) -> int:
        return self.slots_tokens if self.keeps_all else self.split.total

    @property
    def slots_tokens(self) -> int:
        return (1 + self.tiles) * self.n

    def scores(self, pixel_values: torch.Tensor):
        """Patch features [1+T, N, D], feature-layer scores [1+T, N], base layer-0 scores [N]."""
        features, attns = self.encoder.encode(pixel_values, (0, self.feature_layer))
        return features, self.score(attns[self.feature_layer]), self.score(attns[0][:1])[0]

    def quotas(self, layer0: torch.Tensor, grid_index: torch.Tensor, tile_mask: torch.Tensor) -> torch.Tensor:
        """Tokens each tile slot keeps [T] (grid allocation, capped by the tokens inside the image)."""
        regions = torch.index_select(self.regions, 0, grid_index.reshape(1))[0]  # [T, N]
        counts = torch.matmul(regions, spatial_mask(layer0, self.n, self.alpha))
        caps = tile_mask.sum(-1).round().to(torch.int64)
        return largest_remainder(counts, self.split.sub_total, caps)

    def forward(self, pixel_values: torch.Tensor, grid_index: torch.Tensor | None = None,
                tile_mask: torch.Tensor | None = None):
        projector = self.encoder.projector
        if self.keeps_all:
            features, _ = self.encoder.encode(pixel_values, ())
            flat = features.reshape(1, self.slots_tokens, -1)
            return projector(flat), torch.arange(self.slots_tokens, dtype=torch.int64)[None]
        features, scores, layer0 = self.scores(pixel_values)
        base = top_k_in_order(scores[0], self.split.base_k)
        quotas = self.quotas(layer0, grid_index, tile_mask)
        tile_scores = torch.where(tile_mask > 0, scores[1:], torch.full_like(scores[1:], -1.0))  # scores are >= 0
        kept = quota_select(tile_scores, quotas, self.split.sub_total)
        position = torch.index_select(self.canvas, 0, grid_index.reshape(1))[0]
        order = torch.sort(torch.gather(position, 0, kept)).indices
        kept = torch.gather(kept, 0, order)
        tile_features = features[1:].reshape(self.tiles * self.n, -1)
        selected = torch.cat([features[0].index_select(0, base), tile_features.index_select(0, kept)])
        indices = torch.cat([base, kept + self.n])
        return projector(selected[None]), indices[None]


def hired_next_reference(module: LlavaNextPrunedVision, pixel_values: torch.Tensor, grid: tuple[int, int],
                         unpadded: torch.Tensor, rate: float) -> list[int]:
    """``reference`` allocation (PyTorch only, to reproduce published numbers): the authors' code
    path. The budget is per image (P = 1 + the image's G tiles, so it varies with the grid), the
    tiles' shares are counted in row bands and floored, each tile keeps its top k_i over all of
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
    quotas = tile_quotas(layer0, grid, n, module.alpha, split.sub_total, mode="reference")
    chosen = []
    for t in range(tiles):
        if int(quotas[t]):
            chosen += (top_k_in_order(scores[1 + t], int(quotas[t])) + t * n).tolist()
    position = module.canvas[module.grids.index(tuple(grid))]  # each tile token's place on the tiled grid
    kept = sorted((f for f in chosen if bool(unpadded[f])), key=lambda f: int(position[f]))
    return base + [n + f for f in kept]


def check_anyres(method: Method) -> None:
    """LLaVA-NeXT takes the unpruned baseline and methods that split a budget over partitions."""
    if not (method.keeps_all or method.partition_alpha is not None):
        from edgecompress.methods import methods

        usable = [m.name for m in methods().values() if m.keeps_all or m.partition_alpha is not None]
        raise EdgeCompressError(
            f"method {method.name!r} is not available for LLaVA-NeXT yet (it has no per-partition budget split)",
            hint=f"Use one of: {', '.join(usable)}.",
        )


def pruned_vision_next(adapter: LlavaNextAdapter, method: Method, split: PartitionBudget | None):
    return LlavaNextPrunedVision(adapter, method, split).eval()
