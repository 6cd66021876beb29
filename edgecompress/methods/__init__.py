"""The registry of token-selection methods: one module per method, pure tensor math.

A method is a :class:`Method`: its name, what it keeps and where it comes from, where it acts
(``vision``: on the vision tower's patch features, before the projector, or after it with
``after_projector``; ``tower``: merging inside the vision encoder; ``decoder``: on the language
model's hidden states at a decoder layer, as FastV does), what it needs from the model
(``NEEDS``: the feature layer's per-head CLS attention, other layers' CLS attention, the feature
layer's keys, the patch features; for a decoder method the last prompt token's attention row;
all attention math in fp32), and ``select(inputs, k)``, which returns the K kept tokens'
features and their indices. A model adapter hands a method what it declares it needs and never
branches on its name (ToMe's split between the math and the patch that fits it into a host
model).

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

STAGES = ("vision", "tower", "decoder")
# decoder_attention: the last prompt token's attention row in the decoder layer before the one a
# decoder-stage method prunes at (fp32, per head)
# received_attention: the attention each image token receives, averaged over queries (for towers
# with no CLS token: Qwen2.5-VL)
NEEDS = ("cls_attention", "layer_attention", "keys", "features", "decoder_attention", "received_attention")
ENTRY_POINT_GROUP = "edgecompress.methods"


class VisionInputs(NamedTuple):
    """What a vision-stage method may read (each None unless the method needs it):

    - ``features`` [B,N,D]: the feature layer's patch features (projected, [B,N,D_lm], for a
      method with ``after_projector``);
    - ``cls_attention`` [B,H,N] fp32: the feature layer's CLS attention over the patches;
    - ``side``: the patch grid's side;
    - ``constants``: what the method fixed for this N, side and K (held by the host module as
      buffers, so they enter the graph as constants);
    - ``layer_attention`` {layer: [B,H,N]} fp32: the CLS attention of each encoder layer the
      method's ``attention_layers`` names (layer indices counted from 0; the feature layer is
      the last one run);
    - ``keys`` [B,H,1+N,d] fp32: the feature layer's attention keys, CLS first;
    - ``received_attention`` [B,H,N] fp32: the attention each token receives at a full-attention
      block, averaged over every query (a tower with no CLS token; the family says which block).
    """

    features: "torch.Tensor | None"
    cls_attention: "torch.Tensor | None"
    side: int
    constants: dict[str, "torch.Tensor"]
    layer_attention: "dict[int, torch.Tensor] | None" = None
    keys: "torch.Tensor | None" = None
    sources: "torch.Tensor | None" = None  # [B,N'] the patch each token stands for, after a tower-stage merge
    received_attention: "torch.Tensor | None" = None


class DecoderInputs(NamedTuple):
    """What a decoder-stage method reads at the decoder layer it prunes at:

    - ``hidden`` [B,S,D]: the hidden states entering that layer, the whole prompt;
    - ``attention`` [B,H,S] fp32: the previous layer's attention row of the last prompt token;
    - ``image_start``, ``image_tokens``: where the image tokens lie in the prompt (fixed by the
      bundle's chat template, so they are constants of the graph).
    """

    hidden: "torch.Tensor"
    attention: "torch.Tensor"
    image_start: int
    image_tokens: int


def _same_k(k: int, side: int) -> int:
    return k


def _no_details(budget_k: int, k: int, side: int) -> dict[str, Any]:
    return {}


def _no_constants(n: int, side: int, k: int) -> dict[str, "torch.Tensor"]:
    return {}


def _no_layers(feature_layer: int) -> tuple[int, ...]:
    return ()


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    paper: str  # where the method comes from (repository, arXiv id)
    select: Callable[[VisionInputs, int], tuple["torch.Tensor", "torch.Tensor"]]
    stage: str = "vision"
    needs: tuple[str, ...] = ("features",)
    score: Callable[[Any], "torch.Tensor"] | None = None  # per-token scores select ranks by, [B,N] (from VisionInputs; DecoderInputs for a decoder method)
    output_k: Callable[[int, int], int] = _same_k  # tokens emitted for a budget of K on a side x side grid
    details: Callable[[int, int, int], dict[str, Any]] = _no_details  # manifest method_details beyond the summary
    constants: Callable[[int, int, int], dict[str, "torch.Tensor"]] = _no_constants  # (N, side, K) -> tensors fixed at export
    keeps_all: bool = False  # the unpruned baseline: families pack its tokens as the model itself does
    partition_alpha: float | None = None  # splits a budget over LLaVA-NeXT's partitions (base share); None: no anyres lowering
    attention_layers: Callable[[int], tuple[int, ...]] = _no_layers  # feature layer -> layers whose CLS attention it reads
    after_projector: bool = False  # selects among projected tokens (the host projects every token first)
    token_order: str = "raster (ascending patch index)"  # the order of the kept tokens it emits
    # Whether another runtime's kept indices are an outcome this method could have produced from
    # these inputs, resolving near-ties (within ``band``, relative) either way: for methods whose
    # choice is not one ranking by ``score`` (greedy, merging). (inputs of one image, kept, band) -> bool
    accepts: Callable[[VisionInputs, list[int], float], bool] | None = None
    # A ``tower`` method changes the encoder itself: ``merge_schedule(N, K, layers)`` -> tokens to
    # merge in each layer up to the feature layer, ``merge(x, size, sources, metric, r)`` one step.
    merge_schedule: Callable[[int, int, int], list[int]] | None = None
    merge: Callable[..., Any] | None = None
    # A ``decoder`` method prunes inside the language model: ``select(DecoderInputs, k)`` returns
    # the pruned hidden states [B, S - N + K, D] and the kept image tokens [B, K] (0..N-1), at
    # decoder layer ``default_layer`` unless the user names another (--layer).
    default_layer: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise EdgeCompressError(f"method {self.name!r}: stage {self.stage!r} is not one of {', '.join(STAGES)}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise EdgeCompressError(f"method {self.name!r} needs {', '.join(sorted(unknown))}, which no model adapter provides",
                                    hint=f"A method may need: {', '.join(NEEDS)}.")

        if (self.stage == "tower") != (self.merge is not None and self.merge_schedule is not None):
            raise EdgeCompressError(f"method {self.name!r}: a tower-stage method gives merge_schedule and merge")
        if (self.stage == "decoder") != (self.default_layer is not None):
            raise EdgeCompressError(f"method {self.name!r}: a decoder-stage method, and only one, gives default_layer")
        decoder_needs = {"decoder_attention"}
        if (self.stage == "decoder" and not set(self.needs) <= decoder_needs) or (
                self.stage != "decoder" and decoder_needs & set(self.needs)):
            raise EdgeCompressError(f"method {self.name!r}: a {self.stage}-stage method cannot need "
                                    f"{', '.join(self.needs)}",
                                    hint="Inside the language model a method reads decoder_attention; "
                                         "on the vision side: cls_attention, layer_attention, keys, features, received_attention.")
        if ("layer_attention" in self.needs) != (self.attention_layers is not _no_layers):
            raise EdgeCompressError(f"method {self.name!r}: `layer_attention` in needs and `attention_layers` go together")

    @property
    def needs_cls_attention(self) -> bool:
        return "cls_attention" in self.needs

    def resolve_layer(self, layer: int | None, num_layers: int | None) -> int | None:
        """The decoder layer a decoder-stage method prunes at: ``layer`` (--layer) or its default,
        checked against the language model's ``num_layers`` where known. L is in 1 .. layers - 1:
        the method reads layer L-1's attention, and pruning after the last layer changes nothing.
        None for the other stages, which refuse a layer."""
        if self.stage != "decoder":
            if layer is not None:
                raise EdgeCompressError(f"--layer is for methods that prune inside the language model; {self.name!r} "
                                        f"acts at the {self.stage} stage",
                                        hint="Drop --layer, or use --method fastv.")
            return None
        layer = self.default_layer if layer is None else layer
        if num_layers is not None and not 1 <= layer < num_layers:
            raise EdgeCompressError(f"--layer {layer} is outside the range {self.name} can prune at: the language model "
                                    f"has {num_layers} layers (0..{num_layers - 1}) and layer L reads layer L-1's attention",
                                    hint=f"Use a layer from 1 to {num_layers - 1} ({self.name}'s default is {self.default_layer}).")
        return layer

    def layers_read(self, feature_layer: int) -> tuple[int, ...]:
        """The encoder layers whose CLS attention the host computes for this method."""
        layers = set(self.attention_layers(feature_layer))
        if self.needs_cls_attention:
            layers.add(feature_layer)
        bad = [layer for layer in layers if not 0 <= layer <= feature_layer]
        if bad:
            raise EdgeCompressError(f"method {self.name!r} reads layer(s) {bad}, outside 0..{feature_layer}")
        return tuple(sorted(layers))


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
    """A registered method, or ``TOWER+METHOD`` (e.g. ``tome+hired``): a tower-stage method that
    merges inside the encoder, then a vision-stage method that selects among the merged tokens."""
    _load()
    if "+" in name:
        first, _, second = name.partition("+")
        return combine(get_method(first), get_method(second))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgeCompressError(f"unknown selection method {name!r}", hint=f"Available methods: {', '.join(_REGISTRY)}.") from None


def combine(tower: Method, selector: Method) -> Method:
    """``tower`` (a merging method) down to M = max(K, ceil((N + K) / 2)) tokens inside the
    encoder (in the layers before the feature layer, whose attention the selector may read), then
    ``selector`` keeps K of the M; kept indices name each token's surviving patch."""
    if tower.stage != "tower" or selector.stage != "vision":
        raise EdgeCompressError(f"cannot combine {tower.name!r} and {selector.name!r}",
                                hint="Combine a tower method with a vision method, in that order: e.g. tome+hired.")
    if selector.keeps_all or selector.output_k is not _same_k or "layer_attention" in selector.needs:
        raise EdgeCompressError(f"{selector.name!r} cannot follow {tower.name!r}",
                                hint="It needs the patch grid or several layers' attention, which merging changes; "
                                     "use hired, visionzip, divprune, dart or random.")

    def merged(n: int, k: int) -> int:
        return max(k, -(-(n + k) // 2))

    def schedule(n: int, k: int, layers: int) -> list[int]:
        # not in the feature layer: the selector reads that layer's attention over the merged tokens
        return tower.merge_schedule(n, merged(n, k), layers - 1) + [0]

    def select(inputs: VisionInputs, k: int):
        import torch

        kept, positions = selector.select(inputs, k)
        return kept, torch.gather(inputs.sources, 1, positions)

    return Method(
        name=f"{tower.name}+{selector.name}",
        summary=f"{tower.name} merges to halfway between N and K inside the tower, then {selector.name} keeps K",
        paper=f"{tower.paper}; {selector.paper}",
        select=select,
        stage="tower",
        needs=selector.needs,
        constants=lambda n, side, k: selector.constants(merged(n, k), side, k),
        details=selector.details,
        after_projector=selector.after_projector,
        token_order=f"{selector.name}'s order over the merged tokens (kept_indices: each token's surviving patch)",
        merge_schedule=schedule,
        merge=tower.merge,
    )
