"""The model families edgecompress exports, keyed by the ``model_type`` in a checkpoint's config.

Torch-free: recipes, `plan` and `list` read a family's facts from here, and only the export
imports its adapter (``adapter`` names it as ``module:Class``). A family's adapter plans its
vision graph (module, example inputs, the graph's declared inputs and outputs, K) and its
decoder; the compiler asks the adapter and never branches on the family.

Adding a family: one adapter module under ``edgecompress/models/``, one entry here, one recipe
under ``export/``, plus its tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgecompress.errors import EdgeCompressError


@dataclass(frozen=True)
class Family:
    name: str  # what recipes and manifests call it
    display: str  # what messages call it
    model_type: str  # the model_type its config.json carries
    adapter: str  # "module:Class" of its adapter (imports torch; loaded on demand)
    transformers_classes: tuple[str, str]  # (config class, model class) in transformers
    image_placeholder: str = "<image>"  # the token a prompt template marks the image with

    def adapter_class(self):
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)

    def model_classes(self):
        """(config class, model class) from transformers."""
        import transformers

        return tuple(getattr(transformers, name) for name in self.transformers_classes)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llava", "LLaVA-1.5", "llava", "edgecompress.models.llava:LlavaAdapter",
               ("LlavaConfig", "LlavaForConditionalGeneration")),
        Family("llava-next", "LLaVA-NeXT", "llava_next", "edgecompress.models.llava_next:LlavaNextAdapter",
               ("LlavaNextConfig", "LlavaNextForConditionalGeneration")),
        Family("qwen2.5-vl", "Qwen2.5-VL", "qwen2_5_vl", "edgecompress.models.qwen2_5_vl:QwenVLAdapter",
               ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"), image_placeholder="<|image_pad|>"),
    )
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise EdgeCompressError(f"model family {name!r} is not supported",
                                hint=f"Supported families: {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def family_of_model_type(model_type: str | None, where: str, expected: str | None = None) -> Family:
    """The family a config's ``model_type`` belongs to; an error if unsupported or not ``expected``."""
    if expected is not None and model_type != FAMILIES[expected].model_type:
        want = FAMILIES[expected]
        raise EdgeCompressError(
            f"{where} is not a {want.display} checkpoint (model_type is {model_type!r}, expected {want.model_type!r})",
            hint="See `edgecompress list models` for what is supported.",
        )
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    *others, last = [f.display for f in FAMILIES.values()]
    names = f"{', '.join(others)} or {last}" if others else last
    raise EdgeCompressError(
        f"{where} is not a {names} checkpoint (model_type is {model_type!r})",
        hint="See `edgecompress list models` for what is supported.",
    )
