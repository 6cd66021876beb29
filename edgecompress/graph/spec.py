"""What each exported graph takes and returns, declared once.

A family adapter declares its vision graph's inputs and outputs (a :class:`GraphSpec` in its
:class:`VisionPlan`); the decoder graph's declaration, shared by every family, is
:func:`decoder_spec`. The exporter names the graph's inputs and outputs from the declaration,
the verifier checks the ONNX file against it, the manifest records it, and the runtimes read it
back from the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints are fixed; strings name declared dynamic axes
    dtype: str  # numpy-style name: float32, float16, int64

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def declared_dynamic(self) -> set[str]:
        return {axis for axes in self.dynamic_axes.values() for axis in axes.values()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        data["dynamic_axes"] = {k: {str(i): n for i, n in v.items()} for k, v in self.dynamic_axes.items()}
        return data


PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16"}


def torch_dtype(precision: str):
    """The torch dtype of a precision (torch.float32 / torch.float16), from PRECISION_DTYPES."""
    import torch

    return getattr(torch, PRECISION_DTYPES[precision])


PRUNED_PAST = "past_pruned"  # the cache length of the layers a decoder-stage method pruned


def past_axis(layer: int, pruned_from: int | None) -> str:
    """The dynamic axis of a layer's cache length: ``past``, or ``past_pruned`` from the layer a
    decoder-stage method prunes at (those layers hold fewer tokens)."""
    return PRUNED_PAST if pruned_from is not None and layer >= pruned_from else "past"


def decoder_spec(
    num_layers: int, num_kv_heads: int, head_dim: int, hidden_size: int, vocab_size: int, precision: str,
    pruned_from: int | None = None, position_rows: int = 0,
) -> GraphSpec:
    """The language model as one graph for prefill and decode.

    Prefill passes the whole prompt with an empty cache (past = 0); decode passes one token
    with the cache so far. Only the last position's logits come out (greedy decoding needs
    nothing else, and [S, vocab] logits would cost S x 128 KB at vocab 32k), in fp32 so that
    argmax does not depend on fp16 rounding of the final scores.

    With ``pruned_from`` = L (a decoder-stage method such as FastV), the caches of layers >= L
    have their own length axis, ``past_pruned``: the prefill graph (:func:`prefill_spec`) left
    fewer tokens there. This graph then serves the decode steps only.

    ``position_rows`` 3: position ids are [3, 1, S] (mRoPE's temporal, height and width rows,
    Qwen2.5-VL) instead of [1, S].
    """
    dtype = PRECISION_DTYPES[precision]
    past = [
        TensorSpec(f"past.{i}.{kind}", (1, num_kv_heads, past_axis(i, pruned_from), head_dim), dtype)
        for i in range(num_layers)
        for kind in ("key", "value")
    ]
    present = [
        TensorSpec(f"present.{i}.{kind}", (1, num_kv_heads, f"sequence + {past_axis(i, pruned_from)}", head_dim), dtype)
        for i in range(num_layers)
        for kind in ("key", "value")
    ]
    positions = (position_rows, 1, "sequence") if position_rows else (1, "sequence")
    dynamic = {"inputs_embeds": {1: "sequence"}, "position_ids": {len(positions) - 1: "sequence"}}
    dynamic.update({t.name: {2: t.shape[2]} for t in past})
    return GraphSpec(
        name="decoder",
        inputs=(
            TensorSpec("inputs_embeds", (1, "sequence", hidden_size), dtype),
            TensorSpec("position_ids", positions, "int64"),
            *past,
        ),
        outputs=(TensorSpec("logits", (1, 1, vocab_size), "float32"), *present),
        dynamic_axes=dynamic,
    )


def prefill_spec(
    num_layers: int, num_kv_heads: int, head_dim: int, hidden_size: int, vocab_size: int, precision: str,
    layer: int, image_tokens: int, kept: int,
) -> GraphSpec:
    """The prefill of a decoder-stage method (FastV): the whole prompt in, no cache; out the
    last position's logits (fp32), the kept image tokens (0..N-1) and each layer's cache: S
    tokens below ``layer``, S - N + K from it on (the pruned layers)."""
    dtype = PRECISION_DTYPES[precision]
    pruned = f"sequence - {image_tokens - kept}" if image_tokens > kept else "sequence"
    present = [
        TensorSpec(f"present.{i}.{kind}", (1, num_kv_heads, pruned if i >= layer else "sequence", head_dim), dtype)
        for i in range(num_layers)
        for kind in ("key", "value")
    ]
    return GraphSpec(
        name="prefill",
        inputs=(
            TensorSpec("inputs_embeds", (1, "sequence", hidden_size), dtype),
            TensorSpec("position_ids", (1, "sequence"), "int64"),
        ),
        outputs=(TensorSpec("logits", (1, 1, vocab_size), "float32"), TensorSpec("kept_indices", (1, kept), "int64"),
                 *present),
        dynamic_axes={"inputs_embeds": {1: "sequence"}, "position_ids": {1: "sequence"}},
    )


@dataclass
class VisionPlan:
    """What a family's vision graph is exported from, and what it promises."""

    module: Any  # the PyTorch module
    example: tuple  # example inputs, in the spec's input order
    spec: GraphSpec
    budget: Any  # the resolved Budget
    k: int  # image tokens the language model reads (for unpruned LLaVA-NeXT: the most it can)
    method: Any  # the Method
    details: dict[str, Any]  # method_details in the manifest
    token_order: str
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific manifest entries


@dataclass
class DecoderPlan:
    """What the decoder graph is exported from: module, example inputs, declaration, torch.export
    dynamic shapes, and the language model's facts (recorded in the manifest)."""

    module: Any
    example: tuple
    spec: GraphSpec
    dynamic_shapes: dict[str, Any]
    facts: dict[str, Any]
