"""The registry of token-selection methods: one module per method, pure tensor math.

A method is a :class:`Method`: its name, what it keeps and where it comes from, where it acts
(``vision``: between the vision tower and the projector), what it needs from the model
(``cls_attention``: the feature layer's per-head CLS attention over the patches, computed in
fp32; ``features``: the patch features), and ``select(inputs, k)``, which returns the K kept
tokens' features and their patch indices in original spatial order. A model adapter hands a
method what it declares it needs and never branches on its name (ToMe's split between the
math and the patch that fits it into a host model).

Built-in methods are the modules of this package, each defining ``METHOD``. A third-party
method registers through the entry point group ``edgecompress.methods``::

    [project.entry-points."edgecompress.methods"]
    mine = "my_package.my_method:METHOD"

or, in-process, with :func:`register`. Method modules import torch inside their math, so the
registry (``list methods``, the memory plan) reads on machines without PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from edgecompress.errors import EdgeCompressError

if TYPE_CHECKING:
    import torch

STAGES = ("vision",)  # "decoder" (FastV, DART inside the language model) is not lowered yet
NEEDS = ("cls_attention", "features")
ENTRY_POINT_GROUP = "edgecompress.methods"


class VisionInputs(NamedTuple):
    """What a vision-stage method may read: features [B,N,D]; the feature layer's CLS attention
    [B,H,N] in fp32 (None unless the method needs ``cls_attention``); the patch grid's side; and
    the constants the method made for this N, side and K (held by the host module as buffers,
    so they enter the graph as constants)."""

    features: "torch.Tensor"
    cls_attention: "torch.Tensor | None"
    side: int
    constants: dict[str, "torch.Tensor"]


def _same_k(k: int, side: int) -> int:
    return k


def _no_details(budget_k: int, k: int, side: int) -> dict[str, Any]:
    return {}


def _no_constants(n: int, side: int, k: int) -> dict[str, "torch.Tensor"]:
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    reference: str
    select: Callable[[VisionInputs, int], tuple["torch.Tensor", "torch.Tensor"]]
    stage: str = "vision"
    needs: tuple[str, ...] = ("features",)
    score: Callable[["torch.Tensor"], "torch.Tensor"] | None = None  # per-patch scores select ranks by, [B,H,N] -> [B,N]
    output_k: Callable[[int, int], int] = _same_k  # tokens emitted for a budget of K on a side x side grid
    details: Callable[[int, int, int], dict[str, Any]] = _no_details  # manifest method_details beyond the summary
    constants: Callable[[int, int, int], dict[str, "torch.Tensor"]] = _no_constants  # (N, side, K) -> tensors fixed at export
    keeps_all: bool = False  # the unpruned baseline: families pack its tokens as the model itself does
    partition_alpha: float | None = None  # splits a budget over LLaVA-NeXT's partitions (base share); None: no anyres lowering
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise EdgeCompressError(f"method {self.name!r}: stage {self.stage!r} is not one of {', '.join(STAGES)}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise EdgeCompressError(f"method {self.name!r} needs {', '.join(sorted(unknown))}, which no model adapter provides",
                                    hint=f"A method may need: {', '.join(NEEDS)}.")

    @property
    def needs_cls_attention(self) -> bool:
        return "cls_attention" in self.needs


_REGISTRY: dict[str, Method] = {}
_LOADED = False


def register(method: Method) -> Method:
    """Add a method to the registry (a built-in name cannot be taken over)."""
    if not isinstance(method, Method):
        raise EdgeCompressError(f"register() takes an edgecompress.methods.Method, not {type(method).__name__}")
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method:
        raise EdgeCompressError(f"a method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method registered with :func:`register` (tests, interactive sessions)."""
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        register(importlib.import_module(f"{__name__}.{module}").METHOD)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            method = entry.load()
        except Exception as err:  # a broken plugin must not take the tool down with it
            raise EdgeCompressError(f"the method plugin {entry.name!r} ({entry.value}) failed to load: {err}",
                                    hint="Fix or uninstall the package that provides it.") from None
        register(method)


def methods() -> dict[str, Method]:
    """Every registered method by name: the built-ins, then plugins."""
    _load()
    return dict(_REGISTRY)


def get_method(name: str) -> Method:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgeCompressError(f"unknown selection method {name!r}", hint=f"Available methods: {', '.join(_REGISTRY)}.") from None
