"""LLaVA adapters: load a llava-hf checkpoint and expose the parts the compiler needs.

Both families load here: LLaVA-1.5 (``llava``) and LLaVA-NeXT (``llava-next``, whose anyres
parts live in :mod:`edgecompress.models.llava_next`).

(Imports torch and transformers: import this module only where they are needed, as the
compiler, `validate` and the benchmarks do.)

Every family adapter exposes the same parts: the vision tower, the encoder layer whose CLS
attention a selector reads, the projector, preprocessing parameters, the prompt template and
the image-token id. Loading goes through transformers' ``from_pretrained`` (hub id or local
folder), safetensors only, no remote code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from safetensors import SafetensorError

from edgecompress.errors import EdgeCompressError
from edgecompress.lowering.primitives import ordered_gather
from edgecompress.recipes import ModelSpec, Recipe
from edgecompress.selection.attention import cls_attention
from edgecompress.selection.methods import SelectionMethod, keep_all, pool_grid, pool_matrix, random_positions

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


def _preprocess_from_processor_file(folder: Path) -> dict[str, Any] | None:
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        data = data.get("image_processor", data)
        if "image_mean" not in data:
            continue
        size = data.get("size", {})
        crop = data.get("crop_size", {})
        return {
            "resize_shortest_edge": size.get("shortest_edge", size.get("height")),
            "crop_size": crop.get("height", crop) if isinstance(crop, dict) else crop,
            "resample": PIL_RESAMPLE.get(data.get("resample", 3), "bicubic"),
            "rescale_factor": data.get("rescale_factor", 1 / 255),
            "image_mean": data["image_mean"],
            "image_std": data["image_std"],
        }
    return None


def family_of_model_type(model_type: str | None, where: str, expected: str | None = None) -> str:
    """The family a config's model_type belongs to; an error if unsupported or not ``expected``."""
    families = {t: f for f, t in MODEL_TYPES.items()}
    if expected is not None and model_type != MODEL_TYPES[expected]:
        raise EdgeCompressError(
            f"{where} is not a {FAMILY_NAMES[expected]} checkpoint (model_type is {model_type!r}, expected {MODEL_TYPES[expected]!r})",
            hint="See `edgecompress list models` for what is supported.",
        )
    if model_type not in families:
        raise EdgeCompressError(
            f"{where} is not a LLaVA-1.5 or LLaVA-NeXT checkpoint (model_type is {model_type!r})",
            hint="See `edgecompress list models` for what is supported.",
        )
    return families[model_type]


def _check_model_type(folder: Path, expected: str | None = None) -> str:
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise EdgeCompressError(f"{folder}/config.json is not a valid config ({err})") from None
    return family_of_model_type(model_type, str(folder), expected)


def _check_llava_folder(folder: Path, expected: str | None) -> str:
    if not (folder / "config.json").exists():
        raise EdgeCompressError(
            f"{folder} is not a LLaVA checkpoint: it has no config.json",
            hint="Pass a folder in the llava-hf layout (config.json, *.safetensors, tokenizer and processor files).",
        )
    family = _check_model_type(folder, expected)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise EdgeCompressError(
            f"{folder} has no .safetensors weights",
            hint="edgecompress loads safetensors only (never pickled .bin files); convert the checkpoint first.",
        )
    for path in weights:
        check_safetensors(path)
    return family


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file from its header alone (8-byte length, JSON
    table of tensors and byte ranges), before transformers reads gigabytes of it."""
    size = path.stat().st_size
    hint = "Re-download the checkpoint, or save it again with save_pretrained."
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= length <= size - 8:
                raise ValueError(f"its header length field ({length}) does not fit a {size}-byte file")
            table = json.loads(f.read(length))
        ends = [entry["data_offsets"][1] for name, entry in table.items() if name != "__metadata__"]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, UnicodeDecodeError) as err:
        raise EdgeCompressError(f"{path} is not a valid safetensors file: {err}", hint=hint) from None
    needed = 8 + length + max(ends, default=0)
    if needed != size:
        raise EdgeCompressError(f"{path} is truncated or corrupt: its tensors need {needed} bytes, the file has {size}",
                                hint=hint)


def _hub_error(hub_id: str, err: Exception, *, random_weights: bool = False) -> EdgeCompressError:
    if random_weights:
        return EdgeCompressError(
            f"--random-weights needs the architecture of {hub_id!r}, and its config.json is not in the local hub cache ({err})",
            hint="Use a built-in recipe, which carries the architecture (edgecompress list models), or a local folder with a config.json.",
        )
    return EdgeCompressError(
        f"could not load {hub_id!r} from the Hugging Face hub or its local cache ({err})",
        hint=(
            "With no network, download the checkpoint elsewhere (huggingface-cli download "
            f"{hub_id} --local-dir ./{hub_id.split('/')[-1]}), copy the folder here and pass its path: "
            f"edgecompress export ./{hub_id.split('/')[-1]}. Or use --random-weights to export the "
            "architecture without weights."
        ),
    )


def adapter_class(family: str):
    if family == "llava-next":
        from edgecompress.models.llava_next import LlavaNextAdapter

        return LlavaNextAdapter
    return LlavaAdapter


def model_classes(family: str):
    """(config class, model class) of a family."""
    import transformers

    if family == "llava-next":
        return transformers.LlavaNextConfig, transformers.LlavaNextForConditionalGeneration
    return transformers.LlavaConfig, transformers.LlavaForConditionalGeneration


def _from_full_model(model, preprocess, recipe: Recipe | None, source, folder) -> LlavaAdapter:
    model.eval()
    template = recipe.prompt_template if recipe else Recipe.prompt_template
    family = family_of_model_type(model.config.model_type, source.get("location", "the checkpoint"))
    return adapter_class(family)(
        config=model.config,
        vision_tower=model.model.vision_tower,
        projector=model.model.multi_modal_projector,
        preprocess=preprocess,
        prompt_template=template,
        source=source,
        model=model,
        checkpoint_dir=folder,
        text_source=str(folder) if folder is not None else source.get("location"),
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (fail in seconds, not after minutes of retries)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_pretrained(location: str, dtype, *, local: bool, family: str = "llava"):
    _, model_class = model_classes(family)
    kwargs = dict(dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if not local:
        try:  # the local hub cache first: fast, and works offline
            return model_class.from_pretrained(location, local_files_only=True, **kwargs)
        except OSError as err:
            if not hub_reachable():
                raise OSError("not in the local hub cache, and the hub cannot be reached") from err
    return model_class.from_pretrained(location, **kwargs)


def build_random(config_dict: dict[str, Any], seed: int, dtype, *, vision_only: bool = True, family: str = "llava"):
    """Seeded random weights for an architecture (no download): (config, tower, projector, model).

    With ``vision_only`` only the vision tower and projector are built (all the vision graph
    needs). Otherwise the whole model is built directly in ``dtype`` (a 7B model initialised in
    fp32 first would need 28 GB of host memory).
    """
    from transformers import CLIPVisionModel
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config_class, model_class = model_classes(family)
    config = config_class(**config_dict)
    torch.manual_seed(seed)
    if vision_only:  # the LLaVA-NeXT projector has the same two Linear layers
        vision_tower = CLIPVisionModel(config.vision_config).to(dtype).eval()
        projector = LlavaMultiModalProjector(config).to(dtype).eval()
        return config, vision_tower, projector, None
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = model_class(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return config, model.model.vision_tower, model.model.multi_modal_projector, model


def load_llava(spec: ModelSpec, *, dtype, random_weights: bool = False, vision_only: bool = False) -> LlavaAdapter:
    """Load (or build with ``random_weights``) the LLaVA model a MODEL argument names."""
    recipe = spec.recipe
    source = {"kind": spec.kind, "location": spec.location, "random_weights": random_weights}

    if random_weights:
        if recipe is not None:
            config_dict, preprocess = recipe.config, recipe.preprocess
        else:
            config_dict, preprocess = _config_without_weights(spec)
        if not config_dict:
            raise EdgeCompressError(f"recipe {spec.name} carries no architecture config for --random-weights")
        family = family_of_model_type(config_dict.get("model_type"), spec.name)
        config, tower, projector, model = build_random(
            config_dict, recipe.seed if recipe else 0, dtype, vision_only=vision_only, family=family
        )
        text_source = None  # tokenizer files: only where they exist offline
        if spec.location.startswith("builtin:") and not vision_only:
            from edgecompress.models.tiny import ensure_text_assets

            text_source = str(ensure_text_assets(recipe))
        elif spec.location.startswith("bundled:"):
            text_source = str(bundled_checkpoint(spec.location))
        elif spec.kind == "folder":
            text_source = spec.location
        return adapter_class(family)(
            config=config,
            vision_tower=tower,
            projector=projector,
            preprocess=dict(preprocess),
            prompt_template=recipe.prompt_template if recipe else Recipe.prompt_template,
            source=source,
            model=model,
            text_source=text_source,
        )

    if spec.location.startswith("builtin:"):
        from edgecompress.models.tiny import ensure_tiny_checkpoint

        folder = ensure_tiny_checkpoint(recipe)
        source["checkpoint"] = str(folder)
        return _load_folder(folder, dtype, recipe, source)
    if spec.location.startswith("bundled:"):
        folder = bundled_checkpoint(spec.location)
        source["checkpoint"] = str(folder)
        return _load_folder(folder, dtype, recipe, source)
    if spec.kind == "folder":
        return _load_folder(Path(spec.location), dtype, recipe, source)

    hub_id = spec.location
    family = recipe.family if recipe else _hub_family(hub_id)
    try:
        model = _load_pretrained(hub_id, dtype, local=False, family=family)
    except (OSError, ValueError) as err:
        raise _hub_error(hub_id, err) from None
    family_of_model_type(model.config.model_type, hub_id, family)
    preprocess = recipe.preprocess if recipe else {}
    return _from_full_model(model, dict(preprocess), recipe, source, None)


def bundled_checkpoint(location: str) -> Path:
    """The checkpoint folder a ``bundled:<path>`` recipe source names, shipped under export/."""
    from edgecompress.recipes import data_dir

    relative = location.removeprefix("bundled:")
    folder = Path(str(data_dir("export", "edgecompress.recipes_data") / relative))
    if not (folder / "config.json").is_file():
        raise EdgeCompressError(
            f"the shipped checkpoint {relative} is missing (looked in {folder})",
            hint="Reinstall edgecompress, or retrain it: python benchmarks/train_tiny_llava.py --out export/weights/tiny-llava",
        )
    return folder


def _hub_family(hub_id: str) -> str:
    """The family of a hub id with no recipe, from its config (local cache first); llava if unknown."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(hub_id, trust_remote_code=False, local_files_only=not hub_reachable())
    except (OSError, ValueError):
        return "llava"  # the load that follows reports what is wrong
    return family_of_model_type(config.model_type, hub_id)


def _load_folder(folder: Path, dtype, recipe: Recipe | None, source) -> LlavaAdapter:
    family = _check_llava_folder(folder, recipe.family if recipe else None)
    try:
        model = _load_pretrained(str(folder), dtype, local=True, family=family)
    except (OSError, ValueError, SafetensorError) as err:
        raise EdgeCompressError(f"could not load the checkpoint in {folder}: {err}") from None
    preprocess = _preprocess_from_processor_file(folder) or (recipe.preprocess if recipe else None)
    if not preprocess:
        raise EdgeCompressError(
            f"{folder} has no image processor config (preprocessor_config.json or processor_config.json)",
            hint="Save the checkpoint's processor with processor.save_pretrained(folder).",
        )
    return _from_full_model(model, preprocess, recipe, source, folder)


def _config_without_weights(spec: ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Architecture and preprocessing of a folder or hub id, for --random-weights."""
    from transformers import AutoConfig

    if spec.kind == "folder" and (Path(spec.location) / "config.json").exists():
        _check_model_type(Path(spec.location))
    try:
        try:
            config = AutoConfig.from_pretrained(spec.location, trust_remote_code=False, local_files_only=True)
        except OSError:
            if spec.kind != "hub" or not hub_reachable():
                raise
            config = AutoConfig.from_pretrained(spec.location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        if spec.kind == "hub":
            raise _hub_error(spec.location, err, random_weights=True) from None
        raise EdgeCompressError(f"{spec.location} is not a LLaVA checkpoint: {err}") from None
    family_of_model_type(config.model_type, spec.location)
    preprocess = _preprocess_from_processor_file(Path(spec.location)) if spec.kind == "folder" else None
    return config.to_dict(), preprocess or {}


# -- the pruned vision path and the decoder: where a selection method is wired into LLaVA ------


class LlavaPrunedVision(nn.Module):
    """pixel values [B,3,S,S] -> (K projected image embeddings [B,K,D], kept patch indices [B,K]).

    Runs the vision tower only up to the feature layer (the layers after it do not
    change LLaVA's output), scores patches with that layer's CLS attention in fp32,
    keeps K of them in raster order before the projector (the projector is per token,
    so pruning first is equivalent and cheaper), then projects.
    """

    def __init__(self, adapter: LlavaAdapter, method: SelectionMethod, k: int):
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
        side = adapter.grid
        if method.kind == "fixed":
            self.register_buffer("fixed_indices", random_positions(adapter.num_patches, k)[None], persistent=False)
        if method.kind == "pool":
            matrix, centres = pool_matrix(side, pool_grid(k, side))
            if matrix.shape[0] != k:
                raise ValueError(f"pool emits {matrix.shape[0]} tokens for K={k}: pass method.output_k(K)")
            self.register_buffer("pool_weights", matrix, persistent=False)
            self.register_buffer("pool_centres", centres[None], persistent=False)
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
        attn = attns.get(len(self.layers) - 1)
        batch = features.shape[0]
        if self.method.kind == "all":
            return self.projector(features), keep_all(self.num_patches, batch).to(features.device)
        if self.method.kind == "pool":  # a constant averaging matrix: one MatMul, static
            pooled = torch.matmul(self.pool_weights.to(features.dtype), features)
            return self.projector(pooled), self.pool_centres.expand(batch, -1)
        if self.method.kind == "fixed":
            indices = self.fixed_indices.expand(batch, -1)
        else:
            indices = self.method.select(attn, self.k)
        return self.projector(ordered_gather(features, indices)), indices


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
