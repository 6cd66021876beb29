"""Architecture facts from a checkpoint's ``config.json`` or a recipe's ``[config]``, without torch.

``plan``, the memory plan, ``build`` and ``inspect`` run where PyTorch is not installed (a Jetson,
a CI build box), so everything they need to know about a model (layer counts, heads, hidden
sizes, the patch grid, how many parameters each exported graph holds) is computed here from
the config alone. Parameter counts are exact for the families edgecompress exports (a CLIP
vision tower, LLaVA's two-layer projector, a Llama or Mistral language model); the tests
check them against the same model built by transformers on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecompress.errors import EdgeCompressError


class _Config:
    """Reads keys of one config table, naming the missing one in the error."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise EdgeCompressError(f"the model config has no {where} table", hint="Pass a llava-hf config.json or a recipe with [config].")
        self.data, self.where = data, where

    def __call__(self, key: str, default: Any = ...) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is ...:
                raise EdgeCompressError(f"the model config lacks {self.where}.{key}",
                                        hint="Pass the checkpoint's full config.json, or add the key to the recipe's [config].")
            return default
        return value


@dataclass(frozen=True)
class VisionTower:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    image_size: int
    patch_size: int
    channels: int

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def patches(self) -> int:
        return self.side * self.side

    def layer_parameters(self) -> int:
        attention = 4 * (self.hidden * self.hidden + self.hidden)  # q, k, v, out (with biases)
        mlp = self.hidden * self.intermediate + self.intermediate + self.intermediate * self.hidden + self.hidden
        return attention + mlp + 2 * 2 * self.hidden  # two layer norms

    def stem_parameters(self) -> int:
        """Class embedding, patch convolution (no bias), position embeddings, pre-layernorm."""
        return self.hidden + self.channels * self.patch_size**2 * self.hidden + (self.patches + 1) * self.hidden + 2 * self.hidden


@dataclass(frozen=True)
class LanguageModel:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    attention_bias: bool
    mlp_bias: bool

    def linear_shapes(self) -> tuple[tuple[str, int, int], ...]:
        """(name, input features, output features) of each linear weight in one decoder layer, named
        as transformers names the modules: the weights weight-only quantization stores in int8/int4."""
        attention, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return (("q_proj", self.hidden, attention), ("k_proj", self.hidden, kv), ("v_proj", self.hidden, kv),
                ("o_proj", attention, self.hidden), ("gate_proj", self.hidden, self.intermediate),
                ("up_proj", self.hidden, self.intermediate), ("down_proj", self.intermediate, self.hidden))

    def linear_parameters(self) -> int:
        """Weights of the linear layers of every decoder layer (no biases, norms, embeddings or lm_head)."""
        return self.layers * sum(inputs * outputs for _, inputs, outputs in self.linear_shapes())

    def layer_parameters(self) -> int:
        linear = sum(inputs * outputs for _, inputs, outputs in self.linear_shapes())
        attention_bias = (self.heads + 2 * self.kv_heads) * self.head_dim + self.hidden if self.attention_bias else 0
        mlp_bias = 2 * self.intermediate + self.hidden if self.mlp_bias else 0
        return linear + attention_bias + mlp_bias + 2 * self.hidden  # two RMS norms


@dataclass(frozen=True)
class Architecture:
    """What ``plan``, the memory plan, ``build`` and ``inspect`` know about a model."""

    model_type: str
    vision: VisionTower
    text: LanguageModel
    feature_layers: tuple[int, ...]  # hidden-state indices the projector reads (vision_feature_layer)
    projector_bias: bool
    grid_pinpoints: tuple[tuple[int, int], ...]  # LLaVA-NeXT's grids in pixels; empty for LLaVA-1.5

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Architecture":
        top = _Config(config, "config")
        v = _Config(top("vision_config"), "vision_config")
        t = _Config(top("text_config"), "text_config")
        heads = t("num_attention_heads")
        hidden = t("hidden_size")
        layer = top("vision_feature_layer", -2)
        layers = v("num_hidden_layers")
        indices = tuple(i if i >= 0 else layers + 1 + i for i in (layer if isinstance(layer, list) else [layer]))
        return cls(
            model_type=top("model_type", "llava"),
            vision=VisionTower(v("hidden_size"), v("intermediate_size"), layers, v("num_attention_heads"),
                               v("image_size"), v("patch_size"), v("num_channels", 3)),
            text=LanguageModel(hidden, t("intermediate_size"), t("num_hidden_layers"), heads,
                               t("num_key_value_heads", heads), t("head_dim", hidden // heads), t("vocab_size"),
                               t("max_position_embeddings"), bool(t("attention_bias", False)), bool(t("mlp_bias", False))),
            feature_layers=indices,
            projector_bias=bool(top("multimodal_projector_bias", True)),
            grid_pinpoints=tuple(tuple(p) for p in top("image_grid_pinpoints", ()) or ()),
        )

    @property
    def used_vision_layers(self) -> int:
        """Encoder layers the vision graph runs: up to the deepest one the projector reads."""
        return max(self.feature_layers)

    @property
    def grids(self) -> list[tuple[int, int]]:
        """LLaVA-NeXT's (tile rows, tile cols) of every pinpoint; empty for LLaVA-1.5."""
        tile = self.vision.image_size
        return [(h // tile, w // tile) for h, w in self.grid_pinpoints]

    @property
    def vision_images(self) -> int:
        """Images the vision graph encodes at once: 1, or for LLaVA-NeXT the base plus the most tiles."""
        return 1 + max((h * w for h, w in self.grids), default=0)

    @property
    def unpruned_image_tokens(self) -> int:
        """The most image tokens the unpruned model feeds its language model: N for LLaVA-1.5; for
        LLaVA-NeXT the base N plus the largest grid's tokens and one newline per token row."""
        side, tile = self.vision.side, self.vision.image_size
        grids = [((h // tile) * side, (w // tile) * side) for h, w in self.grid_pinpoints]
        return self.vision.patches + max((rows * cols + rows for rows, cols in grids), default=0)

    def projector_parameters(self) -> int:
        vision_in = self.vision.hidden * len(self.feature_layers)
        out = self.text.hidden
        bias = 2 * out if self.projector_bias else 0
        return vision_in * out + out * out + bias

    def parameter_counts(self) -> dict[str, int]:
        """Parameters each exported graph holds: the vision graph (tower up to the feature layer
        and the projector), the decoder (language model and lm_head, without the embedding table,
        which the runtime holds), and the embedding table."""
        vision = self.vision.stem_parameters() + self.used_vision_layers * self.vision.layer_parameters()
        embeddings = self.text.vocab * self.text.hidden
        decoder = self.text.layers * self.text.layer_parameters() + self.text.hidden + self.text.hidden * self.text.vocab
        return {"vision": vision + self.projector_parameters(), "decoder": decoder, "embeddings": embeddings}
