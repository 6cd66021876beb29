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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecompress.budget import PartitionBudget, resolve_for
from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import PRECISION_DTYPES, GraphSpec, TensorSpec, VisionPlan, torch_dtype
from edgecompress.lowering.primitives import top_k_in_order
from edgecompress.methods import Method, VisionInputs
from edgecompress.models.llava import LlavaAdapter, LlavaPrunedVision
from edgecompress.selection.partitions import largest_remainder, quota_select, region_matrix, spatial_mask


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
        return self.architecture().unpruned_image_tokens

    def vision_spec(self, k: int, precision: str, *, keeps_all: bool = False) -> GraphSpec:
        """The vision graph: a fixed 1 + max_tiles slots of pixels (base first, unused slots
        zero), the grid's index in the pinpoints and the tile-token mask in; K embeddings out.

        With ``keeps_all`` (method none) only the pixels go in and every slot's N tokens come
        out, for the runtime to pack as LLaVA-NeXT does.
        """
        size, slots, n = self.vision_config.image_size, self.slots, self.num_patches
        inputs = [TensorSpec("pixel_values", (slots, 3, size, size), "float32")]
        if not keeps_all:
            inputs += [TensorSpec("grid_index", (1,), "int64"), TensorSpec("tile_mask", (slots - 1, n), "float32")]
        return GraphSpec(
            name="vision",
            inputs=tuple(inputs),
            outputs=(
                TensorSpec("image_embeds", (1, k, self.projected_dim), PRECISION_DTYPES[precision]),
                TensorSpec("kept_indices", (1, k), "int64"),
            ),
        )

    def plan_vision(self, method: Method, budget: str, precision: str) -> VisionPlan:
        check_anyres(method)
        resolution = resolve_for(budget, method, self.architecture())
        split = resolution.split
        module = pruned_vision_next(self, method, split)
        size, slots, n = self.vision_config.image_size, self.slots, self.num_patches
        example = (torch.rand(slots, 3, size, size),)
        if not method.keeps_all:
            example += (torch.tensor([len(self.grids) - 1]), torch.ones(slots - 1, n))
        details: dict[str, Any] = {"summary": method.summary}
        if split is not None:
            details.update({
                "alpha": method.partition_alpha, "allocation": "grid", "total": split.total, "base_k": split.base_k,
                "sub_total": split.sub_total,
                "rule": "against the largest grid: total = floor((1 + max_tiles) N rate), base_k = min(floor(total alpha), N), "
                        "sub_total = total - base_k; tiles share sub_total by largest remainder",
            })
        packing = {"kind": "anyres-newline", "newline": "image_newline.npy"} if method.keeps_all else {"kind": "selected"}
        return VisionPlan(module, example, self.vision_spec(module.k, precision, keeps_all=method.keeps_all),
                          resolution.budget, resolution.k, method, details,
                          TOKEN_ORDER_NONE if method.keeps_all else TOKEN_ORDER,
                          {"anyres": self.anyres_record(), "packing": packing})

    def write_assets(self, plan: VisionPlan, staging: Path, precision: str) -> None:
        """Unpruned bundles: the image-newline embedding the runtime packs in (none in a
        vision-only bundle built with random weights, which has no language model)."""
        import numpy as np

        packing = plan.extra["packing"]
        if packing["kind"] != "anyres-newline":
            return
        if self.image_newline is None:
            packing["newline"] = None
            return
        np.save(staging / packing["newline"], self.image_newline.detach().to(torch_dtype(precision)).numpy())

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
        features, attns, _, _ = self.encoder.encode(pixel_values, (0, self.feature_layer))
        return features, self.rank(attns[self.feature_layer]), self.rank(attns[0][:1])[0]

    def rank(self, attention: torch.Tensor) -> torch.Tensor:
        """The method's per-patch score from one layer's CLS attention [P,H,N] -> [P,N]."""
        return self.score(VisionInputs(None, attention, self.encoder.side, {}))

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
            features, _, _, _ = self.encoder.encode(pixel_values, ())
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
