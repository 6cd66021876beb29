"""Loading a model family from a MODEL argument: a built-in recipe (built or shipped offline), a
local llava-hf folder, a hub id, or a recipe's architecture with seeded random weights.

Loading goes through transformers' ``from_pretrained`` (hub id or local folder), safetensors
only, no remote code; a folder's safetensors files are checked from their headers first. The
family (LLaVA-1.5 or LLaVA-NeXT) comes from the config's ``model_type``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from edgecompress.errors import EdgeCompressError
from edgecompress.families import family_of_model_type, get_family
from edgecompress.models.base import FamilyAdapter
from edgecompress.models.llava import PIL_RESAMPLE
from edgecompress.recipes import ModelSpec, Recipe


def _preprocess_from_processor_file(folder: Path) -> dict[str, Any] | None:
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        data = data.get("image_processor", data)
        if "image_mean" not in data:
            continue
        common = {
            "resample": PIL_RESAMPLE.get(data.get("resample", 3), "bicubic"),
            "rescale_factor": data.get("rescale_factor", 1 / 255),
            "image_mean": data["image_mean"],
            "image_std": data["image_std"],
        }
        if "merge_size" in data:  # Qwen2-VL's processor: patch rows, the grid fixed by the bundle
            return {**common, **{key: data[key] for key in ("patch_size", "temporal_patch_size", "merge_size")}}
        size = data.get("size", {})
        crop = data.get("crop_size", {})
        return {
            "resize_shortest_edge": size.get("shortest_edge", size.get("height")),
            "crop_size": crop.get("height", crop) if isinstance(crop, dict) else crop,
            **common,
        }
    return None


def _check_model_type(folder: Path, expected: str | None = None) -> str:
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise EdgeCompressError(f"{folder}/config.json is not a valid config ({err})") from None
    return family_of_model_type(model_type, str(folder), expected).name


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
    return get_family(family).adapter_class()


def model_classes(family: str):
    """(config class, model class) of a family, from transformers."""
    return get_family(family).model_classes()


def _from_full_model(model, preprocess, recipe: Recipe | None, source, folder, wanted: dict[str, Any]) -> FamilyAdapter:
    model.eval()
    template = recipe.prompt_template if recipe else Recipe.prompt_template
    family = family_of_model_type(model.config.model_type, source.get("location", "the checkpoint")).name
    cls = adapter_class(family)
    preprocess = cls.prepare(model.config, preprocess, wanted)
    vision_tower, projector = cls.parts(model)
    return cls(
        config=model.config,
        vision_tower=vision_tower,
        projector=projector,
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
    config_class, model_class = model_classes(family)
    config = config_class(**config_dict)
    torch.manual_seed(seed)
    if vision_only:
        vision_tower, projector = adapter_class(family).build_vision(config)
        return config, vision_tower.to(dtype).eval(), projector.to(dtype).eval(), None
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = model_class(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return (config, *adapter_class(family).parts(model), model)


def load_model(spec: ModelSpec, *, dtype, random_weights: bool = False, vision_only: bool = False,
               image_size: int | None = None) -> FamilyAdapter:
    """Load (or build with ``random_weights``) the model a MODEL argument names, as its family's
    adapter. ``image_size``: Qwen2.5-VL's fixed grid, in place of the recipe's."""
    recipe = spec.recipe
    # what the family's prepare() reads: the recipe's preprocessing, and --image-size over it
    wanted = {**(recipe.preprocess if recipe else {}), **({"image_size": image_size} if image_size else {})}
    source = {"kind": spec.kind, "location": spec.location, "random_weights": random_weights}

    if random_weights:
        if recipe is not None:
            config_dict, preprocess = recipe.config, recipe.preprocess
        else:
            config_dict, preprocess = _config_without_weights(spec)
        if not config_dict:
            raise EdgeCompressError(f"recipe {spec.name} carries no architecture config for --random-weights")
        family = family_of_model_type(config_dict.get("model_type"), spec.name).name
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
            preprocess=adapter_class(family).prepare(config, dict(preprocess), wanted),
            prompt_template=recipe.prompt_template if recipe else Recipe.prompt_template,
            source=source,
            model=model,
            text_source=text_source,
        )

    if spec.location.startswith("builtin:"):
        from edgecompress.models.tiny import ensure_tiny_checkpoint

        folder = ensure_tiny_checkpoint(recipe)
        source["checkpoint"] = str(folder)
        return _load_folder(folder, dtype, recipe, source, wanted)
    if spec.location.startswith("bundled:"):
        folder = bundled_checkpoint(spec.location)
        source["checkpoint"] = str(folder)
        return _load_folder(folder, dtype, recipe, source, wanted)
    if spec.kind == "folder":
        return _load_folder(Path(spec.location), dtype, recipe, source, wanted)

    hub_id = spec.location
    family = recipe.family if recipe else _hub_family(hub_id)
    try:
        model = _load_pretrained(hub_id, dtype, local=False, family=family)
    except (OSError, ValueError) as err:
        raise _hub_error(hub_id, err) from None
    family_of_model_type(model.config.model_type, hub_id, family)
    preprocess = recipe.preprocess if recipe else {}
    return _from_full_model(model, dict(preprocess), recipe, source, None, wanted)


def bundled_checkpoint(location: str) -> Path:
    """The checkpoint folder a ``bundled:<path>`` recipe source names, shipped under export/."""
    from edgecompress.recipes import data_dir

    relative = location.removeprefix("bundled:")
    folder = Path(str(data_dir("export", "edgecompress.recipes_data") / relative))
    if not (folder / "config.json").is_file():
        raise EdgeCompressError(
            f"the shipped checkpoint {relative} is missing (looked in {folder})",
            hint="Reinstall edgecompress, or retrain it (its recipe's header, under export/, gives the command).",
        )
    return folder


def _hub_family(hub_id: str) -> str:
    """The family of a hub id with no recipe, from its config (local cache first); llava if unknown."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(hub_id, trust_remote_code=False, local_files_only=not hub_reachable())
    except (OSError, ValueError):
        return "llava"  # the load that follows reports what is wrong
    return family_of_model_type(config.model_type, hub_id).name


def _load_folder(folder: Path, dtype, recipe: Recipe | None, source, wanted: dict[str, Any]) -> FamilyAdapter:
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
    return _from_full_model(model, preprocess, recipe, source, folder, wanted)


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
