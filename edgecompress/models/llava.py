"""The LLaVA-1.5 family: its adapter (the vision facts and the vision graph's plan: module,
example input, declared inputs and outputs, K) and the pruned vision module a method is wired
into. LLaVA-NeXT builds on it (:mod:`edgecompress.models.llava_next`); the language model and
the decoder graph are shared by every family (:mod:`edgecompress.models.base`).

(Imports torch and transformers: import this module only where they are needed.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecompress.budget import resolve_for
from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import PRECISION_DTYPES, GraphSpec, TensorSpec, VisionPlan
from edgecompress.methods import Method, VisionInputs
from edgecompress.models.base import FamilyAdapter
from edgecompress.selection.attention import cls_attention, layer_keys, received_attention

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass
class LlavaAdapter(FamilyAdapter):
    """The parts of a LLaVA-1.5 model, loaded or built with seeded random weights."""

    family = "llava"

    # -- facts the selection and export steps read ---------------------------------------
    @property
    def vision_config(self):
        return self.config.vision_config

    @property
    def grid(self) -> int:
        vc = self.vision_config
        return vc.image_size // vc.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def feature_hidden_state(self) -> int:
        """Index into ``hidden_states`` of the feature LLaVA uses (vision_feature_layer)."""
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise EdgeCompressError(
                f"vision_feature_layer={layer!r} (several layers) is not supported yet",
                hint="edgecompress supports checkpoints that read one vision layer, as LLaVA-1.5 does.",
            )
        num_layers = self.vision_config.num_hidden_layers
        index = layer if layer >= 0 else num_layers + 1 + layer
        if not 1 <= index <= num_layers:
            raise EdgeCompressError(f"vision_feature_layer={layer} does not name an encoder layer")
        return index

    @property
    def feature_layer(self) -> int:
        """The encoder layer whose output is the feature (and whose CLS attention HiRED reads)."""
        return self.feature_hidden_state - 1

    def architecture(self):
        from edgecompress.architecture import Architecture

        return Architecture.from_config(self.config.to_dict())

    def vision_spec(self, k: int, precision: str) -> GraphSpec:
        """The vision graph: one image in (fp32 pixels), K projected embeddings and their patch
        indices out.

        Pixels stay fp32 at the boundary for every precision (the graph casts), so a runtime
        feeds the same preprocessing output to an fp32 and an fp16 bundle; embeddings come out
        in the language model's precision.
        """
        size = self.vision_config.image_size
        return GraphSpec(
            name="vision",
            inputs=(TensorSpec("pixel_values", (1, 3, size, size), "float32"),),
            outputs=(
                TensorSpec("image_embeds", (1, k, self.projected_dim), PRECISION_DTYPES[precision]),
                TensorSpec("kept_indices", (1, k), "int64"),
            ),
        )

    def plan_vision(self, method: Method, budget: str, precision: str) -> VisionPlan:
        resolution = resolve_for(budget, method, self.architecture())
        k = resolution.k  # what the graph emits (pool rounds to its grid)
        size = self.vision_config.image_size
        return VisionPlan(
            pruned_vision(self, method, k),
            (torch.rand(1, 3, size, size),),
            self.vision_spec(k, precision),
            resolution.budget, k, method,
            {"summary": method.summary, **method.details(resolution.budget.k, k, self.grid)},
            f"{method.token_order}, selected {'after' if method.after_projector else 'before'} the projector",
        )

    def describe(self) -> dict[str, Any]:
        vc = self.vision_config
        return {
            "family": self.family,
            "vision": {
                "image_size": vc.image_size,
                "patch_size": vc.patch_size,
                "hidden_size": vc.hidden_size,
                "num_layers": vc.num_hidden_layers,
                "num_heads": vc.num_attention_heads,
                "num_patches": self.num_patches,
                "feature_layer": self.feature_layer,
                "vision_feature_layer": self.config.vision_feature_layer,
                "select_strategy": self.config.vision_feature_select_strategy,
            },
            "projected_dim": self.projected_dim,
            "image_token_id": self.image_token_id,
        }


class LlavaPrunedVision(nn.Module):
    """pixel values [B,3,S,S] -> (K projected image embeddings [B,K,D], kept patch indices [B,K]).

    Runs the vision tower only up to the feature layer (the layers after it do not change
    LLaVA's output), with a tower method's merges inside the layers; computes what the method
    declares it needs (CLS attention of the layers it names and the feature layer's keys, in
    fp32; the features, projected first for a method that selects after the projector); lets
    the method keep K tokens; projects them (selecting before the projector is equivalent, the
    projector being per token, and cheaper).
    """

    def __init__(self, adapter: LlavaAdapter, method: Method, k: int):
        super().__init__()
        if adapter.config.vision_feature_select_strategy != "default":
            raise EdgeCompressError(
                "vision_feature_select_strategy='full' (CLS kept as a feature) is not supported yet"
            )
        tower = adapter.vision_tower
        self.embeddings = tower.embeddings
        self.pre_layrnorm = tower.pre_layrnorm
        self.layers = nn.ModuleList(tower.encoder.layers[: adapter.feature_layer + 1])
        self.projector = adapter.projector
        self.method = method
        self.k = k
        self.side = adapter.grid
        # What the method fixes at export (random positions, a pooling matrix) lives here as
        # buffers, so the graph holds it as constants.
        self._constants = sorted(method.constants(adapter.num_patches, adapter.grid, k).items())
        for name, tensor in self._constants:
            self.register_buffer(f"method_{name}", tensor, persistent=False)
        self.num_patches = adapter.num_patches
        self.num_heads = adapter.vision_config.num_attention_heads
        self.dtype = next(tower.parameters()).dtype
        # A tower-stage method (ToMe) merges tokens inside these layers: how many in each.
        self.merges = (method.merge_schedule(adapter.num_patches, k, len(self.layers)) if method.stage == "tower"
                       else [0] * len(self.layers))

    def encode(self, pixel_values: torch.Tensor, attention_layers: tuple[int, ...] | None = None, keys: bool = False,
               received: bool = False):
        """Patch features of the feature layer [B,N,D], the per-head CLS attention [B,H,N] (fp32)
        of each layer in ``attention_layers`` (by default the layers the method reads) as
        {layer: attention}, with ``keys`` the feature layer's keys [B,H,1+N,d] (fp32) (with
        ``received`` instead the attention each patch receives there [B,H,N], fp32), and the
        patch each feature stands for [B,N] (0..N-1 in order, unless a tower method merged)."""
        last = len(self.layers) - 1
        if attention_layers is None:
            attention_layers = self.method.layers_read(last)
        hidden = self.pre_layrnorm(self.embeddings(pixel_values.to(self.dtype)))
        batch, tokens = hidden.shape[:2]
        sources = torch.arange(tokens, dtype=torch.int64)[None].expand(batch, -1)  # 0: CLS, p + 1: patch p
        size = None
        attns, layer_keys_ = {}, None
        for i, layer in enumerate(self.layers):
            if i in attention_layers or ((keys or received) and i == last):
                norm, a = layer.layer_norm1, layer.self_attn
                normed = nn.functional.layer_norm(
                    hidden.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps
                )
                if i in attention_layers:
                    attns[i] = cls_attention(
                        normed, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias, self.num_heads,
                        None if size is None else size.log()[..., 0],  # proportional attention after a merge
                    )
                if keys and i == last:
                    layer_keys_ = layer_keys(normed, a.k_proj.weight, a.k_proj.bias, self.num_heads)
                if received and i == last:
                    layer_keys_ = received_attention(normed, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight,
                                                     a.k_proj.bias, self.num_heads)
            if self.method.stage == "tower":
                hidden, size, sources = self.merging_layer(layer, hidden, size, sources, self.merges[i])
            else:
                hidden = layer(hidden, None)
        return hidden[:, 1:], attns, layer_keys_, sources[:, 1:] - 1

    def merging_layer(self, layer, hidden, size, sources, r: int):
        """One encoder layer with a tower method's merge between attention and MLP, and
        proportional attention (log of each token's size added to the attention logits)."""
        mask = None
        if size is not None:
            bias = size.log().transpose(1, 2).unsqueeze(1)  # [B, 1, 1, T]
            mask = bias.expand(-1, -1, hidden.shape[1], -1)
        normed = layer.layer_norm1(hidden)
        hidden = hidden + layer.self_attn(normed, attention_mask=mask)[0]
        if r:
            a = layer.self_attn
            metric = layer_keys(normed, a.k_proj.weight, a.k_proj.bias, self.num_heads).mean(dim=1)  # [B, T, d] fp32
            if size is None:
                size = torch.ones(*hidden.shape[:2], 1, dtype=hidden.dtype)
            hidden, size, sources = self.method.merge(hidden, size, sources, metric, r)
        return hidden + layer.mlp(layer.layer_norm2(hidden)), size, sources

    def method_inputs(self, pixel_values: torch.Tensor) -> VisionInputs:
        """Everything the method declares it needs, for these pixels."""
        needs = self.method.needs
        received = "received_attention" in needs  # (encode returns it in the keys' place; no method reads both)
        if received and "keys" in needs:
            raise EdgeCompressError(f"method {self.method.name!r} needs both keys and received_attention, which "
                                    "LLaVA does not provide together")
        features, attns, keys, sources = self.encode(pixel_values, keys="keys" in needs, received=received)
        if self.method.after_projector:
            features = self.projector(features)
        last = len(self.layers) - 1
        constants = {name: getattr(self, f"method_{name}") for name, _ in self._constants}
        layers = {i: attns[i] for i in self.method.attention_layers(last)} if "layer_attention" in needs else None
        return VisionInputs(features, attns.get(last) if self.method.needs_cls_attention else None, self.side,
                            constants, layers, None if received else keys, sources, keys if received else None)

    def selection_scores(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """The per-patch scores the method ranks by [B,N] (fp32), or None for a method that ranks
        nothing; parity checks use them to tell a near-tie at the cut-off from a real difference."""
        if self.method.score is None:
            return None
        return self.method.score(self.method_inputs(pixel_values))

    def accepts_selection(self, pixel_values: torch.Tensor, kept: list[int], band: float) -> bool | None:
        """Whether ``kept`` is an outcome the method could produce for these pixels within the
        relative tie ``band`` (None for a method that ranks by ``score`` or has no such check)."""
        if self.method.accepts is None:
            return None
        with torch.no_grad():
            return bool(self.method.accepts(self.method_inputs(pixel_values), [int(i) for i in kept], band))

    def forward(self, pixel_values: torch.Tensor):
        kept, indices = self.method.select(self.method_inputs(pixel_values), self.k)
        return (kept if self.method.after_projector else self.projector(kept)), indices


def pruned_vision(adapter: LlavaAdapter, method, k: int) -> LlavaPrunedVision:
    """The PyTorch module that the vision graph is exported from (and the reference it is tested against)."""
    return LlavaPrunedVision(adapter, method, k).eval()
