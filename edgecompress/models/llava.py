"""The LLaVA-1.5 adapter: the parts of a loaded llava-hf model the compiler needs, the pruned
vision module a method is wired into, and the decoder with its KV cache. LLaVA-NeXT builds on
it (:mod:`edgecompress.models.llava_next`); :mod:`edgecompress.models.loading` loads both.

(Imports torch and transformers: import this module only where they are needed, as the
compiler, `validate` and the benchmarks do.)

Every family adapter exposes the same parts: the vision tower, the encoder layer whose CLS
attention a selector reads, the projector, preprocessing parameters, the prompt template and
the image-token id. Loading goes through transformers' ``from_pretrained`` (hub id or local
folder), safetensors only, no remote code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from edgecompress.errors import EdgeCompressError
from edgecompress.selection.attention import cls_attention
from edgecompress.methods import Method, VisionInputs

# family -> the model_type its config.json carries
MODEL_TYPES = {"llava": "llava", "llava-next": "llava_next"}
FAMILY_NAMES = {"llava": "LLaVA-1.5", "llava-next": "LLaVA-NeXT"}

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass
class LlavaAdapter:
    """The parts of a LLaVA-1.5 model, loaded or built with seeded random weights."""

    config: Any  # transformers LlavaConfig
    vision_tower: Any  # CLIPVisionModel
    projector: Any  # LlavaMultiModalProjector
    preprocess: dict[str, Any]
    prompt_template: str
    source: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the full LlavaForConditionalGeneration (None when built vision-only)
    checkpoint_dir: Path | None = None
    text_source: str | None = None  # folder or hub id holding the tokenizer and processor

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

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def projected_dim(self) -> int:
        return int(self.config.text_config.hidden_size)

    def language_model_facts(self) -> dict[str, Any]:
        tc = self.config.text_config
        heads = tc.num_attention_heads
        return {
            "num_layers": tc.num_hidden_layers,
            "num_heads": heads,
            "num_kv_heads": getattr(tc, "num_key_value_heads", None) or heads,
            "head_dim": getattr(tc, "head_dim", None) or tc.hidden_size // heads,
            "hidden_size": tc.hidden_size,
            "vocab_size": tc.vocab_size,
            "max_position_embeddings": tc.max_position_embeddings,
        }

    def eos_token_ids(self) -> list[int]:
        eos = None
        if self.model is not None and getattr(self.model, "generation_config", None) is not None:
            eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = getattr(self.config.text_config, "eos_token_id", None)
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def save_tokenizer(self, folder: Path) -> str | None:
        """Write the fast tokenizer as tokenizer.json (what the torch-free runtime reads)."""
        if self.text_source is None:
            return None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.text_source)
        if not getattr(tokenizer, "is_fast", False):
            raise EdgeCompressError(f"{self.text_source} has no fast tokenizer (tokenizer.json) for the runtime")
        tokenizer.backend_tokenizer.save(str(Path(folder) / "tokenizer.json"))
        return "tokenizer.json"

    def chat_prompt_template(self) -> str:
        """The checkpoint's chat template rendered for one user turn, with {prompt} for the text.

        Rendering it here (with transformers) means the runtime needs no Jinja: it substitutes
        the user's text into this string. Falls back to the recipe's template.
        """
        sentinel = "EDGECOMPRESS_PROMPT_SENTINEL"
        if self.text_source is not None:
            from transformers import AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(self.text_source)
                messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sentinel}]}]
                text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except (OSError, ValueError, TypeError):
                text = None
            if text and text.count(sentinel) == 1:
                return text.replace(sentinel, "{prompt}")
        return self.prompt_template

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


# -- loading ---------------------------------------------------------------------------------


class LlavaPrunedVision(nn.Module):
    """pixel values [B,3,S,S] -> (K projected image embeddings [B,K,D], kept patch indices [B,K]).

    Runs the vision tower only up to the feature layer (the layers after it do not
    change LLaVA's output), scores patches with that layer's CLS attention in fp32,
    keeps K of them in raster order before the projector (the projector is per token,
    so pruning first is equivalent and cheaper), then projects.
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

    def encode(self, pixel_values: torch.Tensor, attention_layers: tuple[int, ...] | None = None):
        """Patch features of the feature layer [B,N,D] and the per-head CLS attention [B,H,N]
        (fp32) of each layer in ``attention_layers`` (by default the feature layer, when the
        method reads it), as {layer: attention}."""
        last = len(self.layers) - 1
        if attention_layers is None:
            attention_layers = (last,) if self.method.needs_cls_attention else ()
        hidden = self.pre_layrnorm(self.embeddings(pixel_values.to(self.dtype)))
        attns = {}
        for i, layer in enumerate(self.layers):
            if i in attention_layers:
                norm, a = layer.layer_norm1, layer.self_attn
                normed = nn.functional.layer_norm(
                    hidden.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps
                )
                attns[i] = cls_attention(
                    normed, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias, self.num_heads
                )
            hidden = layer(hidden, None)
        return hidden[:, 1:], attns

    def selection_scores(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """The per-patch scores the method ranks by [B,N] (fp32), or None for a method that ranks
        nothing; parity checks use them to tell a near-tie at the cut-off from a real difference."""
        if self.method.score is None:
            return None
        _, attns = self.encode(pixel_values)
        return self.method.score(attns[len(self.layers) - 1])

    def forward(self, pixel_values: torch.Tensor):
        features, attns = self.encode(pixel_values)
        constants = {name: getattr(self, f"method_{name}") for name, _ in self._constants}
        inputs = VisionInputs(features, attns.get(len(self.layers) - 1), self.side, constants)
        kept, indices = self.method.select(inputs, self.k)
        return self.projector(kept), indices


def pruned_vision(adapter: LlavaAdapter, method, k: int) -> LlavaPrunedVision:
    """The PyTorch module that the vision graph is exported from (and the reference it is tested against)."""
    return LlavaPrunedVision(adapter, method, k).eval()


class LlavaDecoder(nn.Module):
    """(inputs_embeds, position_ids, *past) -> (last-token logits fp32, *present).

    The cache travels as flat tensors (past.{i}.key/value) so the graph has plain inputs
    and outputs; inside, a transformers DynamicCache is rebuilt from them.
    """

    def __init__(self, adapter: LlavaAdapter):
        super().__init__()
        self.language_model = adapter.model.model.language_model
        self.lm_head = adapter.model.lm_head
        self.config = adapter.config.text_config
        self.num_layers = adapter.config.text_config.num_hidden_layers

    def forward(self, inputs_embeds, position_ids, *past):
        cache = DynamicCache(config=self.config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.language_model(
            inputs_embeds=inputs_embeds, position_ids=position_ids, past_key_values=cache, use_cache=True
        )
        # select (a Gather), not a [:, -1:] slice: the output is then [1, 1, vocab] for any
        # sequence length, a static binding TensorRT can see as such.
        logits = self.lm_head(out.last_hidden_state.select(1, -1)).float().unsqueeze(1)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (logits, *present)


def llava_decoder(adapter: LlavaAdapter):
    """The PyTorch module the decoder graph is exported from.

    It traces the eager attention path, not sdpa: torch exports sdpa as masked MatMul-Softmax
    plus IsNaN/Where guards over every [heads, S, S] score tensor, which slowed ONNX Runtime's
    prefill by a quarter to a third on tiny-llava; the eager path computes the same values (to
    fp32 round-off) without the guards.
    """
    if adapter.model is None:
        raise EdgeCompressError("this model was built without its language model (vision only)")
    adapter.model.model.language_model.config._attn_implementation = "eager"
    return LlavaDecoder(adapter).eval()
