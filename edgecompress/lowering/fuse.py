"""The decoder graph rewritten with ONNX Runtime's fused operators: an ONNX-Runtime-only variant.

The exported decoder spells every operation out (RMSNorm as Pow/ReduceMean/Add/Sqrt/Reciprocal/
Mul, rotary embedding as slices and concats, attention as MatMul/Softmax with a KV concat and
an Expand for grouped KV heads): about 280 nodes for a 4-layer Llama, which ONNX Runtime's own
optimizer fuses little of. At one token per step the work per node is tiny and the time goes
to launching nodes, so fewer, fused nodes decode several times faster on the CPU.

Each pass has one job and leaves the graph's inputs and outputs as they were:

- :func:`fuse_rms_norms`: RMSNorm -> ``SimplifiedLayerNormalization``
- :func:`fuse_skip_rms_norms`: residual Add + RMSNorm -> ``com.microsoft.SkipSimplifiedLayerNormalization``
- :func:`fuse_attention`: rotary embedding, KV concat, grouped-head attention ->
  ``com.microsoft.GroupQueryAttention`` (rotary inside, from the graph's own cos/sin tables),
  fed by one packed Q/K/V MatMul per layer where the three projections are plain MatMuls

The fused graph's KV cache is a shared buffer (``edgecompress_runtime.shared_cache``): the cache
inputs and outputs are [1, kv_heads, cache_length, head_dim] buffers that a runtime allocates once at the maximum length
and binds as both ``past`` and ``present``; GroupQueryAttention appends in place (ONNX Runtime
shares the buffer when the past and present tensors are the same memory) and reads the valid
length from two more inputs, ``seqlens_k`` ([1] int32, valid length after this step - 1) and
``total_sequence_length`` (scalar int32). Given separate past tensors of the valid length it
concatenates instead, as the standard graph does.

Those operators are ONNX Runtime's contrib ops: TensorRT's parser does not take them, so the
rewritten graph is a separate file that only the ONNX Runtime backends read; TensorRT builds from
the standard graph. Weights are not copied: the rewritten graph points at the standard graph's
external data file, and only the tensors it makes (packed Q/K/V weights, rotary tables) go to a
data file of its own (:func:`externalize_new_tensors`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from edgecompress.errors import EdgeCompressError
from edgecompress_runtime.shared_cache import SEQLENS_K, TOTAL_LENGTH

MS_DOMAIN = "com.microsoft"

UNFUSABLE_HINT = "Export without --decoder-ops onnxruntime: the standard decoder graph runs everywhere."


class GraphIndex:
    """Producers, consumers and constant values of one graph, for pattern matching."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None):
        self.model, self.graph, self.base_dir = model, model.graph, base_dir
        self.producer = {out: node for node in self.graph.node for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {init.name: init for init in self.graph.initializer}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output; None for a computed tensor."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name], base_dir=str(self.base_dir or ""))
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def scalar(self, name: str) -> float | None:
        value = self.constant(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _other(node: onnx.NodeProto, name: str) -> str:
    """The input of a two-input node that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]


def _replace(graph: onnx.GraphProto, old: onnx.NodeProto, new: onnx.NodeProto) -> None:
    """Put ``new`` where ``old`` was (the old node's place keeps the graph in topological order)."""
    for i, node in enumerate(graph.node):
        if list(node.output) == list(old.output):  # outputs are unique in a graph
            graph.node.insert(i, new)
            graph.node.remove(old)
            return
    raise ValueError(f"node {old.name} is not in the graph")


# -- RMSNorm -----------------------------------------------------------------------------------

def _rms_norm(index: GraphIndex, pow_node: onnx.NodeProto) -> tuple[str, str, float, onnx.NodeProto] | None:
    """(x, gamma, epsilon, last node) when ``pow_node`` starts x * rsqrt(mean(x^2) + eps) * gamma
    over the last axis (rsqrt as Sqrt + Reciprocal, or Sqrt + Div), else None."""
    x = pow_node.input[0]
    if index.scalar(pow_node.input[1]) != 2.0 or len(index.consumers[pow_node.output[0]]) != 1:
        return None
    mean = index.consumers[pow_node.output[0]][0]
    if mean.op_type != "ReduceMean" or not _last_axis(index, mean):
        return None
    add = _single_consumer(index, mean.output[0], "Add")
    epsilon = index.scalar(_other(add, mean.output[0])) if add is not None else None
    sqrt = _single_consumer(index, add.output[0], "Sqrt") if epsilon is not None else None
    if sqrt is None:
        return None
    step = _single_consumer(index, sqrt.output[0], "Reciprocal")
    if step is not None:
        scaled = _single_consumer(index, step.output[0], "Mul")
        if scaled is None or _other(scaled, step.output[0]) != x:
            return None
    else:  # x / sqrt(...)
        scaled = _single_consumer(index, sqrt.output[0], "Div")
        if scaled is None or list(scaled.input) != [x, sqrt.output[0]]:
            return None
    last = _single_consumer(index, scaled.output[0], "Mul")
    if last is None:
        return None
    gamma = _other(last, scaled.output[0])
    if gamma not in index.initializers:
        return None
    return x, gamma, epsilon, last


def _last_axis(index: GraphIndex, mean: onnx.NodeProto) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in mean.attribute}
    axes = attrs.get("axes")
    if axes is None and len(mean.input) > 1:
        value = index.constant(mean.input[1])
        axes = None if value is None else value.tolist()
    return axes == [-1] and attrs.get("keepdims", 1) == 1


def _single_consumer(index: GraphIndex, name: str, op_type: str) -> onnx.NodeProto | None:
    users = index.consumers[name]
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def fuse_rms_norms(model: onnx.ModelProto, base_dir: Path | None = None) -> int:
    """Replace each RMSNorm subgraph by one SimplifiedLayerNormalization; returns how many."""
    index = GraphIndex(model, base_dir)
    count = 0
    for node in list(model.graph.node):
        if node.op_type != "Pow":
            continue
        match = _rms_norm(index, node)
        if match is None:
            continue
        x, gamma, epsilon, last = match
        fused = helper.make_node("SimplifiedLayerNormalization", [x, gamma], [last.output[0]],
                                 name=f"{last.name}_rms_norm", axis=-1, epsilon=epsilon, stash_type=1)
        _replace(model.graph, last, fused)
        count += 1
    remove_dead_nodes(model)
    return count


def fuse_skip_rms_norms(model: onnx.ModelProto) -> int:
    """Fold the residual Add before a SimplifiedLayerNormalization into a
    SkipSimplifiedLayerNormalization, which returns the sum too (the next residual needs it)."""
    index = GraphIndex(model, None)
    shapes = _shapes(model)
    count = 0
    for norm in list(model.graph.node):
        if norm.op_type != "SimplifiedLayerNormalization" or norm.domain not in ("", "ai.onnx"):
            continue
        add = index.made_by(norm.input[0], "Add")
        # a residual: two computed tensors of the output's shape (not a broadcast bias)
        if add is None or any(name in index.initializers or shapes.get(name) != shapes.get(add.output[0])
                              or shapes.get(name) is None for name in add.input):
            continue
        epsilon = next(helper.get_attribute_value(a) for a in norm.attribute if a.name == "epsilon")
        fused = helper.make_node("SkipSimplifiedLayerNormalization", [add.input[0], add.input[1], norm.input[1]],
                                 [norm.output[0], "", "", add.output[0]], name=f"{norm.name}_skip",
                                 domain=MS_DOMAIN, epsilon=epsilon)
        _replace(model.graph, norm, fused)
        model.graph.node.remove(add)  # the fused node computes the sum now
        count += 1
    _assign(model.graph.node, _topological(model.graph))
    return count


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each tensor's shape as a tuple of sizes and axis names, where shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = tuple(d.dim_param or d.dim_value or None for d in dims)
    return shapes


# -- attention ---------------------------------------------------------------------------------

def _heads_input(index: GraphIndex, name: str) -> tuple[str, int] | None:
    """(x, heads) when ``name`` is x [B, S, heads * D] reshaped to [B, S, heads, D] and
    transposed to [B, heads, S, D]."""
    transpose = index.made_by(name, "Transpose")
    if transpose is None or [a.ints for a in transpose.attribute if a.name == "perm"] != [[0, 2, 1, 3]]:
        return None
    reshape = index.made_by(transpose.input[0], "Reshape")
    shape = index.constant(reshape.input[1]) if reshape is not None else None
    if shape is None or shape.size != 4:
        return None
    return reshape.input[0], int(shape[2])


def _rotary(index: GraphIndex, name: str) -> tuple[str, str, str] | None:
    """(x, cos, sin) when ``name`` is x * cos + rotate_half(x) * sin, x [B, heads, S, D]."""
    add = index.made_by(name, "Add")
    if add is None:
        return None
    muls = [index.made_by(term, "Mul") for term in add.input]
    if None in muls:
        return None
    for cos_mul, sin_mul in (muls, muls[::-1]):
        for x in cos_mul.input:
            if _heads_input(index, x) is not None and _rotates(index, x, sin_mul):
                return x, _other(cos_mul, x), next(t for t in sin_mul.input if index.made_by(t, "Concat") is None)
    return None


def _rotates(index: GraphIndex, x: str, sin_mul: onnx.NodeProto) -> bool:
    """Whether ``sin_mul`` multiplies concat(-second half, first half) of ``x`` (rotate_half)."""
    concat = next((index.made_by(t, "Concat") for t in sin_mul.input if index.made_by(t, "Concat")), None)
    if concat is None or len(concat.input) != 2:
        return False
    neg = index.made_by(concat.input[0], "Neg")
    first = index.made_by(concat.input[1], "Slice")
    second = index.made_by(neg.input[0], "Slice") if neg is not None else None
    return first is not None and second is not None and first.input[0] == x == second.input[0]


def _attention_output(index: GraphIndex, present_value: str) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(the scores MatMul Q K^T, the Softmax, the attention output [B, S, heads * D]) of the
    attention that reads ``present_value``, found through its probabilities @ V MatMul."""
    frontier, seen = [present_value], set()
    while frontier:  # V may pass through repeat-KV (Unsqueeze/Expand/Reshape) first
        name = frontier.pop()
        for user in index.consumers[name]:
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.op_type in ("Unsqueeze", "Expand", "Reshape"):
                frontier.append(user.output[0])
            elif user.op_type == "MatMul" and user.input[1] == name:
                softmax = index.made_by(user.input[0], "Softmax")
                transpose = _single_consumer(index, user.output[0], "Transpose")
                reshape = _single_consumer(index, transpose.output[0], "Reshape") if transpose else None
                scores = _scores(index, softmax) if softmax is not None else None
                if scores is not None and reshape is not None:
                    return scores, softmax, reshape.output[0]
    return None


def _scores(index: GraphIndex, softmax: onnx.NodeProto) -> onnx.NodeProto | None:
    """The Q K^T MatMul before the scale and the additive mask that feed ``softmax``."""
    name = softmax.input[0]
    for _ in range(3):  # the mask Add, the scale Mul or Div, then the MatMul
        node = index.producer.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul":
            return node
        name = node.input[0] if index.constant(node.input[1]) is not None or node.op_type == "Add" else node.input[1]
    return None


def _scale(index: GraphIndex, scores: onnx.NodeProto, head_dim: int) -> float:
    """The softmax scale applied to Q K^T: a Mul or Div by a constant after the MatMul."""
    user = index.consumers[scores.output[0]][0]
    value = index.scalar(_other(user, scores.output[0])) if user.op_type in ("Mul", "Div") else None
    if value is None:
        return 1.0
    return value if user.op_type == "Mul" else 1.0 / value


def _rotary_tables(index: GraphIndex, cos: str, sin: str, positions: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The graph's own cos/sin for positions 0..positions-1, as GroupQueryAttention's caches
    [positions, head_dim / 2]: the subgraph that makes them from position_ids runs once here, so
    any rope scaling the model uses comes along."""
    import onnxruntime as ort

    wanted, nodes, names = [cos, sin], [], set()
    while wanted:
        name = wanted.pop()
        node = index.producer.get(name)
        if node is None or name in names:
            continue
        names.add(name)
        nodes.append(node)
        wanted += [i for i in node.input if i]
    inputs = {i.name for i in index.graph.input}
    needed = {i for node in nodes for i in node.input if i}
    if needed & inputs != {"position_ids"}:
        raise EdgeCompressError("the decoder's rotary tables depend on more than position_ids", hint=UNFUSABLE_HINT)
    chosen = {node.output[0] for node in nodes}
    order = [node for node in index.graph.node if node.output[0] in chosen]
    initializers = [numpy_helper.from_array(index.constant(n), n) for n in sorted(needed & set(index.initializers))]
    graph = helper.make_graph(order, "rotary", [helper.make_tensor_value_info("position_ids", onnx.TensorProto.INT64, [1, None])],
                              [onnx.ValueInfoProto(name=n) for n in (cos, sin)],  # ONNX Runtime infers their type
                              initializers)
    model = helper.make_model(graph, opset_imports=index.model.opset_import, ir_version=index.model.ir_version)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cos_full, sin_full = (np.asarray(t, dtype=np.float32).reshape(positions, -1)
                          for t in session.run(None, {"position_ids": np.arange(positions, dtype=np.int64)[None]}))
    half = head_dim // 2
    if cos_full.shape[1] != head_dim or not (np.array_equal(cos_full[:, :half], cos_full[:, half:])
                                             and np.array_equal(sin_full[:, :half], sin_full[:, half:])):
        raise EdgeCompressError("the decoder's rotary embedding is not the half-split kind GroupQueryAttention runs",
                                hint=UNFUSABLE_HINT)
    return cos_full[:, :half], sin_full[:, :half]


def fuse_attention(model: onnx.ModelProto, num_layers: int, max_positions: int, base_dir: Path | None = None) -> int:
    """Replace each layer's attention (rotary on Q and K, the KV concat, repeat-KV, softmax
    attention) with one GroupQueryAttention that applies the rotary embedding and appends to the
    cache itself. Inputs and outputs keep their names: past.{i}.key/value, present.{i}.key/value."""
    index = GraphIndex(model, base_dir)
    past = {i.name: i for i in model.graph.input}
    dtype = past["past.0.key"].type.tensor_type.elem_type
    kv_heads, head_dim = (d.dim_value for d in past["past.0.key"].type.tensor_type.shape.dim[1::2])
    _add_length_inputs(model, num_layers)
    tables: tuple[str, str] | None = None
    for layer in range(num_layers):
        key_concat = index.made_by(f"present.{layer}.key", "Concat")
        value_concat = index.made_by(f"present.{layer}.value", "Concat")
        if key_concat is None or value_concat is None or key_concat.input[0] != f"past.{layer}.key" \
                or value_concat.input[0] != f"past.{layer}.value":
            raise EdgeCompressError(f"layer {layer}'s KV cache is not a concat of past and new", hint=UNFUSABLE_HINT)
        rotary_k = _rotary(index, key_concat.input[1])
        value = _heads_input(index, value_concat.input[1])
        found = _attention_output(index, f"present.{layer}.value")
        rotary_q = _rotary(index, found[0].input[0]) if found is not None else None
        if rotary_k is None or value is None or rotary_q is None:
            raise EdgeCompressError(f"layer {layer}'s attention is not the rotary, grouped-KV, softmax attention "
                                    "that GroupQueryAttention runs", hint=UNFUSABLE_HINT)
        scores, _softmax, output = found
        (query, heads), (key, _), (value, _) = (_heads_input(index, rotary_q[0]), _heads_input(index, rotary_k[0]), value)
        if tables is None:
            cos, sin = _rotary_tables(index, rotary_k[1], rotary_k[2], max_positions, head_dim)
            tables = ("gqa_cos_cache", "gqa_sin_cache")
            np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
            model.graph.initializer.extend([numpy_helper.from_array(cos.astype(np_dtype), tables[0]),
                                            numpy_helper.from_array(sin.astype(np_dtype), tables[1])])
        packed = _pack_qkv(model, index, layer, query, key, value)
        qkv = [packed, "", ""] if packed else [query, key, value]  # the packed form: key and value omitted
        attention = helper.make_node(
            "GroupQueryAttention",
            [*qkv, f"past.{layer}.key", f"past.{layer}.value", SEQLENS_K, TOTAL_LENGTH, *tables, "position_ids"],
            [output, f"present.{layer}.key", f"present.{layer}.value"], name=f"layer{layer}_attention",
            domain=MS_DOMAIN, num_heads=heads, kv_num_heads=kv_heads, scale=_scale(index, scores, head_dim),
            do_rotary=1, rotary_interleaved=0)
        _replace(model.graph, index.producer[output], attention)
        model.graph.node.remove(key_concat)
        model.graph.node.remove(value_concat)
    remove_dead_nodes(model)
    _assign(model.graph.node, _topological(model.graph))
    return num_layers


def _pack_qkv(model: onnx.ModelProto, index: GraphIndex, layer: int, query: str, key: str, value: str) -> str | None:
    """One MatMul by [Wq | Wk | Wv] in place of the three projections of one input, its output
    [B, S, (heads + 2 kv_heads) * D] being GroupQueryAttention's packed query (one weight read and
    one node per step instead of three); None where the projections are not plain MatMuls by
    stored weights (a bias, a quantized weight), which then stay as they are."""
    matmuls = [index.made_by(name, "MatMul") for name in (query, key, value)]
    if None in matmuls or len({m.input[0] for m in matmuls}) != 1:
        return None
    weights = [index.constant(m.input[1]) if m.input[1] in index.initializers else None for m in matmuls]
    if any(w is None or w.ndim != 2 for w in weights):
        return None
    name = f"layer{layer}_qkv"
    model.graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}_weight"))
    model.graph.node.append(helper.make_node("MatMul", [matmuls[0].input[0], f"{name}_weight"], [name], name=f"{name}_proj"))
    return name


def _add_length_inputs(model: onnx.ModelProto, num_layers: int) -> None:
    """Give the graph ``seqlens_k`` and ``total_sequence_length`` inputs and name the cache axis
    ``cache_length`` on past and present alike: with a shared buffer the valid length is not the
    cache's shape, so the runtime says it (all layers share it: there is no per-layer pruning in a
    graph this pass takes)."""
    int32 = onnx.TensorProto.INT32
    model.graph.input.extend([helper.make_tensor_value_info(SEQLENS_K, int32, [1]),
                              helper.make_tensor_value_info(TOTAL_LENGTH, int32, [])])
    cache = {f"{kind}.{layer}.{part}" for kind in ("past", "present") for layer in range(num_layers)
             for part in ("key", "value")}
    for info in [*model.graph.input, *model.graph.output]:
        if info.name in cache:
            info.type.tensor_type.shape.dim[2].dim_param = "cache_length"


# -- graph housekeeping ------------------------------------------------------------------------

def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop the nodes and initializers no graph output depends on."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output if out}
    needed, wanted, kept = set(), [o.name for o in graph.output], []
    while wanted:
        name = wanted.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None:
            wanted += [i for i in node.input if i]
            for attr in node.attribute:  # names a subgraph reads from the outer scope
                if attr.type == onnx.AttributeProto.GRAPH:
                    wanted += [i for n in attr.g.node for i in n.input if i]
    kept = [node for node in graph.node if any(o in needed for o in node.output)]
    _assign(graph.node, kept)
    _assign(graph.initializer, [init for init in graph.initializer if init.name in needed])


def _assign(field, items: list) -> None:
    """Set a repeated protobuf field to ``items`` (it takes no slice assignment)."""
    copies = [type(item).FromString(item.SerializeToString()) for item in items]  # del drops the originals
    del field[:]
    field.extend(copies)


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order where each comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or reads an undefined tensor")
        ordered += ready
        for node in ready:
            available.update(node.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    return ordered


def externalize_new_tensors(model: onnx.ModelProto, folder: Path, data_file: str, threshold: int = 1024) -> list[str]:
    """Move each initializer held inside the graph and larger than ``threshold`` bytes (the ones
    the passes made: packed weights, rotary tables) to ``folder / data_file``; the standard
    graph's weights keep pointing at its own data file. Returns the moved tensors' names."""
    moved = []
    with open(folder / data_file, "wb") as out:
        for init in model.graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL or len(init.raw_data) <= threshold:
                continue
            offset = out.tell()
            out.write(init.raw_data)
            out.write(b"\0" * (-out.tell() % 64))  # aligned, so ONNX Runtime may map it in place
            external_data_helper.set_external_data(init, data_file, offset, len(init.raw_data))
            init.ClearField("raw_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            moved.append(init.name)
    return moved


# -- the whole rewrite -------------------------------------------------------------------------

def onnxruntime_decoder(model: onnx.ModelProto, num_layers: int, max_positions: int,
                        base_dir: Path | None = None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The decoder graph with ONNX Runtime's fused operators (the model is changed in place),
    and how many of each fusion applied. ``base_dir``: where the graph's external data lies."""
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    fused = {"rms_norm": fuse_rms_norms(model, base_dir)}
    fused["skip_rms_norm"] = fuse_skip_rms_norms(model)
    fused["attention"] = fuse_attention(model, num_layers, max_positions, base_dir)
    fused["packed_qkv"] = sum(node.name.endswith("_qkv_proj") for node in model.graph.node)
    return model, fused
