"""The graph verifier: an exported graph passes only if TensorRT can take it with static shapes.

Each check is a small named function with one job, returning findings a user can act on.
A graph passes when no check finds anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import re

import onnx

from edgecompress.graph.spec import GraphSpec
from edgecompress.lowering.trt_ops import TENSORRT_ONNX_OPS

# Ops whose output shape depends on the data: never allowed in a fixed-budget graph.
DATA_DEPENDENT_OPS = {"NonZero", "Unique", "Compress", "NonMaxSuppression"}


@dataclass(frozen=True)
class Finding:
    check: str
    message: str


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    op_census: Counter = field(default_factory=Counter)
    checks_run: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checks": self.checks_run,
            "findings": [{"check": f.check, "message": f.message} for f in self.findings],
            "op_census": dict(sorted(self.op_census.items())),
        }


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies and local functions' callers."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_nodes(sub)


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (output {node.output[0]!r})"


def check_no_data_dependent_shapes(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    return [
        Finding(
            "no-data-dependent-ops",
            f"{_node_label(n)} has a data-dependent output shape; express the selection as a "
            "constant-K TopK + Gather (edgecompress.lowering.primitives) instead of a mask",
        )
        for n in iter_nodes(model.graph)
        if n.op_type in DATA_DEPENDENT_OPS
    ]


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def check_topk_constant_k(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    constants = _constant_names(model.graph)
    producers = {out: n for n in model.graph.node for out in n.output}
    findings = []
    for node in iter_nodes(model.graph):
        if node.op_type != "TopK" or len(node.input) < 2:
            continue
        k_name = node.input[1]
        if k_name not in constants:
            producer = producers.get(k_name)
            source = f"computed by {_node_label(producer)}" if producer else "a graph input"
            findings.append(
                Finding(
                    "topk-constant-k",
                    f"{_node_label(node)} takes K from {k_name!r}, {source}; K must be a constant "
                    "fixed at export time (resolve the budget to an int before tracing)",
                )
            )
    return findings


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension] | None:
    t = value.type.tensor_type
    return list(t.shape.dim) if t.HasField("shape") else None


_UNNAMED = re.compile(r"^unk__\d+$")  # what onnx shape inference calls a dimension it cannot name


def normalize_dim(dim: int | str) -> int | str:
    """'sequence + past' and 'past + sequence' are the same axis."""
    if isinstance(dim, str) and "+" in dim and not re.search(r"[-*/()]", dim):
        return " + ".join(sorted(part.strip() for part in dim.split("+")))
    return dim


def _is_declared(dim_param: str, declared: set[str]) -> bool:
    """A symbolic dim is declared if it is a declared axis or an expression of them ('sequence + past')."""
    names = re.findall(r"[A-Za-z_][A-Za-z_0-9]*", dim_param)
    return bool(names) and all(name in declared for name in names)


def check_static_shapes(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    """Every dimension is fixed, or a declared dynamic axis (or an expression of them).

    In a graph with no dynamic axis every dimension of every tensor must be fixed: an unknown
    one can only come from the data. In a graph with declared dynamic axes, shape inference
    cannot name every derived intermediate dimension, so there the graph's inputs and outputs
    are checked, and intermediates only where they carry a name that is not declared.
    """
    declared = spec.declared_dynamic if spec else set()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    findings = []
    values = [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]
    boundary = {v.name for v in [*inferred.graph.input, *inferred.graph.output]}
    for value in values:
        if not value.type.HasField("tensor_type"):
            continue
        dims = _dims(value)
        if dims is None:
            if value.name in boundary:
                findings.append(Finding("static-shapes", f"tensor {value.name!r} has no shape (rank unknown)"))
            continue
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if dim.HasField("dim_param") and _is_declared(dim.dim_param, declared):
                continue
            unnamed = not dim.HasField("dim_param") or _UNNAMED.match(dim.dim_param)
            if declared and value.name not in boundary and unnamed:
                continue
            label = dim.dim_param or "unknown"
            findings.append(
                Finding(
                    "static-shapes",
                    f"tensor {value.name!r} axis {axis} is {label!r}, which is not a fixed size "
                    f"and not a declared dynamic axis ({', '.join(sorted(declared)) or 'none declared'})",
                )
            )
    return findings


def check_boundary_matches_spec(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    if spec is None:
        return []
    findings = []
    for kind, actual, expected in (
        ("input", model.graph.input, spec.inputs),
        ("output", model.graph.output, spec.outputs),
    ):
        names = [v.name for v in actual]
        if names != [t.name for t in expected]:
            findings.append(
                Finding("declared-io", f"graph {kind}s are {names}, the declaration says {[t.name for t in expected]}")
            )
            continue
        for value, tensor in zip(actual, expected):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
            if dtype != tensor.dtype or [normalize_dim(d) for d in dims] != [normalize_dim(d) for d in tensor.shape]:
                findings.append(
                    Finding(
                        "declared-io",
                        f"{kind} {value.name!r} is {dtype}{dims}, the declaration says {tensor.dtype}{list(tensor.shape)}",
                    )
                )
    return findings


def check_tensorrt_ops(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    unsupported: dict[str, list[str]] = {}
    for node in iter_nodes(model.graph):
        domain = node.domain or "ai.onnx"
        if domain != "ai.onnx" or node.op_type not in TENSORRT_ONNX_OPS:
            unsupported.setdefault(f"{domain}::{node.op_type}", []).append(node.name or node.output[0])
    return [
        Finding(
            "tensorrt-ops",
            f"op {op} ({len(nodes)} node(s), first {nodes[0]!r}) is not in TensorRT's ONNX parser support list",
        )
        for op, nodes in sorted(unsupported.items())
    ]


def check_weight_quantization(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    """Quantized weights only in the one pattern both runtimes take as weight-only quantization:
    ``DequantizeLinear`` of constant codes and scales (INT8/INT4, along the input axis), read only
    as the weight input of ``MatMul``. No ``QuantizeLinear``: activations are never quantized."""
    constants = _constant_names(model.graph)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in iter_nodes(model.graph):
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
    findings = []
    for node in iter_nodes(model.graph):
        if node.op_type == "QuantizeLinear":
            findings.append(Finding("weight-quantization", f"{_node_label(node)} quantizes an activation; only weights may be quantized"))
        if node.op_type != "DequantizeLinear":
            continue
        if not all(name in constants for name in node.input if name):
            findings.append(Finding("weight-quantization", f"{_node_label(node)} dequantizes a tensor computed at run time"))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if axis != 0:
            findings.append(Finding("weight-quantization", f"{_node_label(node)} has axis {axis}; weight blocks run along axis 0"))
        uses = consumers.get(node.output[0], [])
        if not uses or any(user.op_type != "MatMul" or slot != 1 for user, slot in uses):
            findings.append(Finding("weight-quantization", f"{_node_label(node)} feeds something other than a MatMul's weight input"))
    return findings


def check_uint8_inputs(model: onnx.ModelProto, spec: GraphSpec | None) -> list[Finding]:
    """A uint8 graph input (``export --pixel-input uint8``) feeds only Cast nodes: TensorRT takes
    UINT8 as a network input and casts it, and rejects any other op on it."""
    uint8 = {v.name for v in model.graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    return [
        Finding("uint8-inputs", f"uint8 input {name!r} feeds {_node_label(node)}; TensorRT takes uint8 only into a Cast "
                "(cast it to int32 or float first)")
        for node in iter_nodes(model.graph) if node.op_type != "Cast"
        for name in node.input if name in uint8
    ]


CHECKS: dict[str, Callable[[onnx.ModelProto, GraphSpec | None], list[Finding]]] = {
    "no-data-dependent-ops": check_no_data_dependent_shapes,
    "topk-constant-k": check_topk_constant_k,
    "static-shapes": check_static_shapes,
    "declared-io": check_boundary_matches_spec,
    "tensorrt-ops": check_tensorrt_ops,
    "weight-quantization": check_weight_quantization,
    "uint8-inputs": check_uint8_inputs,
}


def verify_graph(model: onnx.ModelProto, spec: GraphSpec | None = None) -> VerifyReport:
    """Run every check on ``model`` (loaded with or without external data)."""
    report = VerifyReport(op_census=Counter(n.op_type for n in iter_nodes(model.graph)))
    for name, check in CHECKS.items():
        report.checks_run.append(name)
        report.findings.extend(check(model, spec))
    return report
