"""Export recipes: one TOML file per supported checkpoint (the top-level ``export/`` folder).

A recipe says *what* to export: the source checkpoint, the model family, the default method,
budget and precision, the prompt template, preprocessing, and the architecture config used to
build the model with ``--random-weights``. Recipes ship inside the wheel
(``edgecompress.recipes_data``); a user may pass a path to their own ``.toml``.

A MODEL argument resolves, in this order, to: a path to a recipe file, a built-in recipe name
or alias, a local folder in the llava-hf layout, or a Hugging Face hub id.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgecompress.errors import EdgeCompressError
from edgecompress.families import FAMILIES
from edgecompress.fields import Fields



@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    source: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    seed: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)
    prompt_template: str = "USER: <image>\n{prompt} ASSISTANT:"
    preprocess: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # where the recipe was read from

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "source": self.source,
            "description": self.description,
            "aliases": list(self.aliases),
            "seed": self.seed,
            "defaults": dict(self.defaults),
            "prompt_template": self.prompt_template,
            "preprocess": dict(self.preprocess),
            "config": self.config,
        }


RECIPE_KEYS = {"name", "aliases", "family", "description", "source", "seed", "defaults", "prompt", "preprocess", "config"}
PREPROCESS_KEYS = {"resize_shortest_edge", "crop_size", "resample", "rescale_factor", "image_mean", "image_std",
                   # Qwen2.5-VL: the fixed square every image is resized to, and its patch rows
                   "image_size", "patch_size", "temporal_patch_size", "merge_size"}
RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")  # the runtime's PIL filters


def check_prompt_template(template: str, where: str, image: str = "<image>") -> None:
    """A prompt template holds exactly one image placeholder (where the K image tokens go: the
    family's, ``<image>`` for LLaVA) and one ``{prompt}``."""
    for marker in (image, "{prompt}"):
        if template.count(marker) != 1:
            raise EdgeCompressError(
                f"{where}: prompt.template must hold exactly one {marker}, it holds {template.count(marker)}",
                hint='Example: template = "USER: <image>\\n{prompt} ASSISTANT:"',
            )


def _recipe_from_toml(data: dict[str, Any], path: str) -> Recipe:
    """A recipe from its TOML table; every field it defines is checked (type, range, unknown keys)."""
    where = f"recipe {path}"
    fields = Fields(data, where)
    fields.require(("name", "family", "source"))
    fields.only(RECIPE_KEYS)
    if data["family"] not in FAMILIES:
        raise EdgeCompressError(
            f"recipe {path}: model family {data['family']!r} is not supported",
            hint=f"Supported families: {', '.join(FAMILIES)}.",
        )
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise fields.fail("aliases", "it must be a list of names")
    defaults = fields.table("defaults")
    defaults.only({"method", "budget", "precision", "group_size"})
    defaults.text("method")
    defaults.choice("precision", ("fp16", "fp32"))
    if "group_size" in defaults.data:  # the block size of --weights int8/int4 for this model
        size = defaults.number("group_size", integer=True, minimum=16)
        if size & (size - 1):
            raise defaults.fail("group_size", "it must be a power of two, at least 16")
    if "budget" in defaults.data:
        from edgecompress.budget import parse_budget

        try:
            parse_budget(defaults.data["budget"])
        except EdgeCompressError as err:
            raise defaults.fail("budget", f"{err.hint or err}") from None
    prompt = fields.table("prompt")
    prompt.only({"template"})
    template = prompt.text("template", Recipe.prompt_template)
    check_prompt_template(template, where, FAMILIES[data["family"]].image_placeholder)
    preprocess = fields.table("preprocess")
    preprocess.only(PREPROCESS_KEYS)
    preprocess.number("resize_shortest_edge", minimum=1, integer=True)
    preprocess.number("crop_size", minimum=1, integer=True)
    for key in ("image_size", "patch_size", "temporal_patch_size", "merge_size"):
        preprocess.number(key, minimum=1, integer=True)
    preprocess.choice("resample", RESAMPLING)
    preprocess.number("rescale_factor", minimum=0, exclusive=True)
    preprocess.numbers("image_mean", 3)
    preprocess.numbers("image_std", 3, minimum=0, exclusive=True)
    if not isinstance(data.get("config", {}), dict):
        raise fields.fail("config", "it must be a table ([config]) of the checkpoint's config.json")
    vision = data.get("config", {}).get("vision_config")
    if "image_size" in preprocess.data and isinstance(vision, dict) and "image_size" in vision \
            and vision["image_size"] != preprocess.data["image_size"]:
        raise EdgeCompressError(
            f"{where}: preprocess.image_size ({preprocess.data['image_size']}) and config.vision_config.image_size "
            f"({vision['image_size']}) differ", hint="The grid the runtime resizes to is the grid the graph is built for: give one size.")
    return Recipe(
        name=fields.name("name"),
        family=data["family"],
        source=fields.text("source"),
        description=fields.text("description", ""),
        aliases=tuple(aliases),
        seed=fields.number("seed", 0, minimum=0, integer=True),
        defaults=dict(defaults.data),
        prompt_template=template,
        preprocess=dict(preprocess.data),
        config=dict(data.get("config", {})),
        path=path,
    )


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A user's TOML file (a recipe or a profile), with a clear error when it is absent or invalid."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise EdgeCompressError(f"{what} file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise EdgeCompressError(f"{what} file {path} is not valid TOML: {err}") from None


def load_recipe_file(path: str | Path) -> Recipe:
    return _recipe_from_toml(read_toml(path, "recipe"), str(path))


def data_dir(folder: str, package: str):
    """A shipped data folder: the repository's own in a source checkout, else the wheel's copy."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / folder).is_dir():  # a source checkout
        return root / folder
    return resources.files(package)


def builtin_recipes() -> dict[str, Recipe]:
    """All recipes shipped with edgecompress, by canonical name."""
    recipes = {}
    for entry in sorted(data_dir("export", "edgecompress.recipes_data").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            recipe = _recipe_from_toml(data, f"edgecompress/recipes/{entry.name}")
            recipes[recipe.name] = recipe
    return recipes


def find_builtin_recipe(name: str) -> Recipe | None:
    for recipe in builtin_recipes().values():
        if name == recipe.name or name in recipe.aliases:
            return recipe
    return None


@dataclass(frozen=True)
class ModelSpec:
    """What a MODEL argument resolved to."""

    kind: str  # "recipe" | "folder" | "hub"
    location: str  # recipe source, folder path or hub id
    recipe: Recipe | None
    name: str  # short name used for default bundle names


def resolve_model(model: str) -> ModelSpec:
    if model.endswith(".toml"):
        recipe = load_recipe_file(model)
        return ModelSpec("recipe", recipe.source, recipe, recipe.name)
    recipe = find_builtin_recipe(model)
    if recipe is not None:
        return ModelSpec("recipe", recipe.source, recipe, recipe.name)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EdgeCompressError(
                f"{model} is a file, not a checkpoint folder or a recipe (.toml)",
                hint="Pass a recipe name (edgecompress list models), a folder in the llava-hf layout, or a hub id.",
            )
        return ModelSpec("folder", str(path.resolve()), None, path.resolve().name)
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local or "/" not in model:
        known = ", ".join(sorted(n for r in builtin_recipes().values() for n in (r.name, *r.aliases)))
        raise EdgeCompressError(
            f"unknown model {model!r}: not a recipe, and no such folder",
            hint=f"Known recipes: {known}. Or pass a local folder in the llava-hf layout, or a hub id (owner/name).",
        )
    return ModelSpec("hub", model, None, model.split("/")[-1])
