"""Architecture facts from a checkpoint's ``config.json`` or a recipe's ``[config]``, without torch.

``plan``, the memory plan, ``build`` and ``inspect`` run where PyTorch is not installed (a Jetson,
a CI build box), so everything they need to know about a model (layer counts, heads, hidden
sizes, the patch grid, how many parameters each exported graph holds) is computed here from
the config alone. Parameter counts are exact for the families edgecompress exports (a CLIP
vision tower, LLaVA's two-layer projector, a Llama or Mistral language model; Qwen2.5-VL's
windowed vision transformer with its patch merger and a Qwen2 language model); the tests check
them against the same model built by transformers on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
    """A CLIP vision tower (LLaVA): a class token and one token per patch, full attention."""

    gated_mlp: ClassVar[bool] = False  # fc1 -> GELU -> fc2

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
        """N: the image tokens of one image, one per patch."""
        return self.side * self.side

    @property
    def tower_tokens(self) -> int:
        """Tokens each encoder layer runs on: the patches and the class token."""
        return self.patches + 1

    @property
    def attention_span(self) -> int:
        """Keys a query attends to in the widest layer: every token."""
        return self.tower_tokens

    def layer_parameters(self) -> int:
        attention = 4 * (self.hidden * self.hidden + self.hidden)  # q, k, v, out (with biases)
        mlp = self.hidden * self.intermediate + self.intermediate + self.intermediate * self.hidden + self.hidden
        return attention + mlp + 2 * 2 * self.hidden  # two layer norms

    def stem_parameters(self) -> int:
        """Class embedding, patch convolution (no bias), position embeddings, pre-layernorm."""
        return self.hidden + self.channels * self.patch_size**2 * self.hidden + (self.patches + 1) * self.hidden + 2 * self.hidden


@dataclass(frozen=True)
class QwenVisionTower:
    """Qwen2.5-VL's vision transformer at edgecompress's fixed square grid (``image_size``, the
    contract of issue #20): P = (image_size / patch_size)^2 patches run through every block (no
    class token; window attention except in ``full_attention_layers``), and the patch merger folds
    each ``merge_size`` x ``merge_size`` group into one image token: N = P / merge_size^2."""

    gated_mlp: ClassVar[bool] = True  # gate_proj, up_proj -> SiLU(gate) * up -> down_proj

    hidden: int
    intermediate: int
    layers: int
    heads: int
    image_size: int  # the fixed square every image is resized to, in pixels
    patch_size: int
    channels: int
    temporal_patch_size: int
    merge_size: int
    window_size: int  # the attention window's side in pixels
    full_attention_layers: tuple[int, ...]
    out_hidden: int  # the merger's output: the language model's hidden size

    @property
    def patch_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tower_tokens(self) -> int:
        """P: the patches every block runs on."""
        return self.patch_side * self.patch_side

    @property
    def side(self) -> int:
        """The merged grid's side: the image tokens' rows (and columns)."""
        return self.patch_side // self.merge_size

    @property
    def patches(self) -> int:
        """N: the image tokens of one image, after the merger (what a budget keeps K of)."""
        return self.side * self.side

    @property
    def window_pixels(self) -> int:
        """An attention window's side in pixels as transformers cuts it: whole merge groups."""
        unit = self.patch_size * self.merge_size
        return self.window_size // unit * unit

    @property
    def window_patches(self) -> int:
        return (self.window_pixels // self.patch_size) ** 2

    @property
    def attention_span(self) -> int:
        """Keys a query attends to in the widest block: every patch where a block attends fully,
        else one window's."""
        full = any(0 <= i < self.layers for i in self.full_attention_layers)
        return self.tower_tokens if full else self.window_patches

    def stem_parameters(self) -> int:
        """The patch embedding: a Conv3d over ``temporal_patch_size`` frames, without bias."""
        return self.channels * self.temporal_patch_size * self.patch_size**2 * self.hidden

    def layer_parameters(self) -> int:
        attention = self.hidden * 3 * self.hidden + 3 * self.hidden + self.hidden * self.hidden + self.hidden  # qkv, proj
        mlp = 2 * (self.hidden * self.intermediate + self.intermediate) + self.intermediate * self.hidden + self.hidden
        return attention + mlp + 2 * self.hidden  # two RMS norms (weight only)


@dataclass(frozen=True)
class Projector:
    """LLaVA's projector: Linear(vision features, hidden), GELU, Linear(hidden, hidden)."""

    inputs: int  # the vision hidden size times the feature layers read
    outputs: int
    bias: bool

    def parameters(self) -> int:
        bias = 2 * self.outputs if self.bias else 0
        return self.inputs * self.outputs + self.outputs * self.outputs + bias


@dataclass(frozen=True)
class PatchMerger:
    """Qwen2.5-VL's merger: RMSNorm(hidden), then Linear(g h, g h), GELU, Linear(g h, outputs) over
    each group of g = merge_size^2 patches."""

    hidden: int
    merge_size: int
    outputs: int

    def parameters(self) -> int:
        grouped = self.hidden * self.merge_size**2
        return self.hidden + grouped * grouped + grouped + grouped * self.outputs + self.outputs


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
    biases: tuple[str, ...]  # the linear layers (as linear_shapes names them) that carry a bias

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
        shapes = self.linear_shapes()
        linear = sum(inputs * outputs for _, inputs, outputs in shapes)
        biases = sum(outputs for name, _, outputs in shapes if name in self.biases)
        return linear + biases + 2 * self.hidden  # two RMS norms


DEFAULT_QWEN_IMAGE_SIZE = 448  # Qwen2.5-VL's fixed square when a config names none: 1024 patches, 256 tokens


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's keys: ``text_config``, or the top level of a Qwen2.5-VL config.json
    saved before transformers 5 (transformers reads them from there when ``text_config`` is absent)."""
    text = config.get("text_config")
    return text if text is not None else config


@dataclass(frozen=True)
class Architecture:
    """What ``plan``, the memory plan, ``build`` and ``inspect`` know about a model."""

    model_type: str
    vision: VisionTower | QwenVisionTower
    text: LanguageModel
    feature_layers: tuple[int, ...]  # hidden-state indices the projector reads (vision_feature_layer)
    projector: Projector | PatchMerger
    grid_pinpoints: tuple[tuple[int, int], ...]  # LLaVA-NeXT's grids in pixels; empty otherwise

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Architecture":
        top = _Config(config, "config")
        reader = _READERS.get(top("model_type", "llava"), _llava)
        return reader(top)

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
        return self.projector.parameters()

    def parameter_counts(self) -> dict[str, int]:
        """Parameters each exported graph holds: the vision graph (tower up to the feature layer
        and the projector; Qwen2.5-VL: the whole tower with its patch merger), the decoder
        (language model and lm_head, without the embedding table, which the runtime holds), and
        the embedding table. With tied word embeddings (Qwen2.5-VL-3B) the lm_head is still the
        decoder graph's own weight, so the table's values count in both."""
        vision = self.vision.stem_parameters() + self.used_vision_layers * self.vision.layer_parameters()
        embeddings = self.text.vocab * self.text.hidden
        decoder = self.text.layers * self.text.layer_parameters() + self.text.hidden + self.text.hidden * self.text.vocab
        return {"vision": vision + self.projector_parameters(), "decoder": decoder, "embeddings": embeddings}


def _llava(top: _Config) -> Architecture:
    """LLaVA-1.5 and LLaVA-NeXT: a CLIP tower read at ``vision_feature_layer``, a two-layer projector."""
    v = _Config(top("vision_config"), "vision_config")
    t = _Config(top("text_config"), "text_config")
    heads = t("num_attention_heads")
    hidden = t("hidden_size")
    layer = top("vision_feature_layer", -2)
    layers = v("num_hidden_layers")
    indices = tuple(i if i >= 0 else layers + 1 + i for i in (layer if isinstance(layer, list) else [layer]))
    biases = (("q_proj", "k_proj", "v_proj", "o_proj") if t("attention_bias", False) else ()) + (
        ("gate_proj", "up_proj", "down_proj") if t("mlp_bias", False) else ())
    vision = VisionTower(v("hidden_size"), v("intermediate_size"), layers, v("num_attention_heads"),
                         v("image_size"), v("patch_size"), v("num_channels", 3))
    return Architecture(
        model_type=top("model_type", "llava"),
        vision=vision,
        text=LanguageModel(hidden, t("intermediate_size"), t("num_hidden_layers"), heads,
                           t("num_key_value_heads", heads), t("head_dim", hidden // heads), t("vocab_size"),
                           t("max_position_embeddings"), biases),
        feature_layers=indices,
        projector=Projector(vision.hidden * len(indices), hidden, bool(top("multimodal_projector_bias", True))),
        grid_pinpoints=tuple(tuple(p) for p in top("image_grid_pinpoints", ()) or ()),
    )


def _qwen2_5_vl(top: _Config) -> Architecture:
    """Qwen2.5-VL: the whole windowed tower and its merger at ``vision_config.image_size``, a Qwen2
    language model (q, k and v with biases). Absent optional keys take transformers' defaults, so the
    facts are those of the model transformers builds from the same config."""
    v = _Config(top("vision_config"), "vision_config")
    nested = top.data.get("text_config") is not None
    t = _Config(text_config(top.data), "text_config" if nested else "config")
    heads = t("num_attention_heads")
    hidden = t("hidden_size")
    vision = QwenVisionTower(
        hidden=v("hidden_size"), intermediate=v("intermediate_size"), layers=v("depth"), heads=v("num_heads"),
        image_size=v("image_size", DEFAULT_QWEN_IMAGE_SIZE), patch_size=v("patch_size", 14), channels=v("in_channels", 3),
        temporal_patch_size=v("temporal_patch_size", 2), merge_size=v("spatial_merge_size", 2),
        window_size=v("window_size", 112), full_attention_layers=tuple(v("fullatt_block_indexes", (7, 15, 23, 31))),
        out_hidden=v("out_hidden_size"),
    )
    _check_qwen_grid(vision)
    if vision.out_hidden != hidden:
        raise EdgeCompressError(f"vision_config.out_hidden_size = {vision.out_hidden} differs from the language model's "
                                f"hidden_size = {hidden}: the merger's image tokens must fit the language model",
                                hint="Use the checkpoint's config.json as published.")
    return Architecture(
        model_type=top("model_type"),
        vision=vision,
        text=LanguageModel(hidden, t("intermediate_size"), t("num_hidden_layers"), heads,
                           t("num_key_value_heads", heads), hidden // heads, t("vocab_size"),
                           t("max_position_embeddings"), ("q_proj", "k_proj", "v_proj")),
        feature_layers=(vision.layers,),  # the merger reads the last block's output
        projector=PatchMerger(vision.hidden, vision.merge_size, vision.out_hidden),
        grid_pinpoints=(),
    )


def _check_qwen_grid(vision: QwenVisionTower) -> None:
    """The fixed grid must be cut into whole attention windows: the static graph has no padding."""
    size, window = vision.image_size, vision.window_pixels
    if window < 1:
        raise EdgeCompressError(f"vision_config.window_size = {vision.window_size} is smaller than one merge group "
                                f"({vision.patch_size * vision.merge_size} px)", hint="Use the checkpoint's own value, 112.")
    if isinstance(size, bool) or not isinstance(size, int) or size < window or size % window:
        raise EdgeCompressError(
            f"vision_config.image_size = {size!r} is not a positive multiple of {window}: the image is cut into "
            f"attention windows of {window} x {window} pixels (window_size), and every window must be whole",
            hint=f"Use {DEFAULT_QWEN_IMAGE_SIZE} (the default), or another multiple of {window}: "
                 f"{', '.join(str(window * i) for i in (3, 5, 6, 8))}.")


_READERS = {"qwen2_5_vl": _qwen2_5_vl}  # by model_type; every other config is read as LLaVA's
