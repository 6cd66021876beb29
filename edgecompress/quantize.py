"""Weight-only quantization of the language model's linear layers: INT8 or INT4 weights in one
ONNX graph that ONNX Runtime and TensorRT both run.

The graph form. Each quantized ``MatMul(x, W)`` (W an initializer [in, out]) becomes
``MatMul(x, DequantizeLinear(Wq, scale, axis=0, block_size=G))``: Wq the signed integer codes
(INT8, or INT4 packed two to a byte), ``scale`` one value per block of G input features per
output feature, in the graph's precision (opset 21 blocked quantization). Symmetric: no zero
points (TensorRT's weight-only INT4 takes none; the range is [-2^(b-1), 2^(b-1) - 1] and the
scale is the block's max |w| over 2^(b-1) - 1). ONNX Runtime fuses the pair into its
``MatMulNBits`` kernel on the CPU (checked in the tests: the optimized graph holds no
DequantizeLinear), TensorRT and TensorRT-RTX parse it as weight-only quantization. Activations
stay in the bundle's precision.

What is quantized: every linear layer of the language model (attention q/k/v/o, MLP
gate/up/down). Not the LM head (a Gemm here; its error goes straight into the logits, and it is
~2% of a 7B model's weights), the token embeddings (looked up on the host) or the vision tower
(a small share of a VLM's weights, and its errors move the selection scores).

Algorithms:
- ``rtn``: round to nearest, each block on its own.
- ``gptq`` (Frantar et al., 2022): columns quantized one input feature at a time, the error of
  each pushed onto the features not yet quantized through the inverse Hessian of the layer's
  inputs (H = X^T X over calibration prompts, 1% dampening), block scales taken when a block is
  reached. The calibration inputs come from the PyTorch model on the bundle's own pruned prompts
  (image tokens as the bundle keeps them, the question and its answer), captured at every
  linear layer by forward hooks. onnxruntime's GPTQ needs Intel Neural Compressor, which is not
  installed here, hence this numpy version (~40 lines).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import EdgeCompressError

from edgecompress.engine.memory import QUANTIZED_BITS as BITS  # one table of formats (engine.memory)

ALGORITHMS = ("rtn", "gptq")
OPSET = 21  # blocked DequantizeLinear and INT4


@dataclass(frozen=True)
class Quantization:
    """How to quantize: the format (int8 | int4), the block size and the algorithm. (How the
    weights are stored, for the memory plan, is engine.memory.WeightFormat.)"""

    format: str  # int8 | int4
    group_size: int = 128
    algorithm: str = "gptq"

    @property
    def bits(self) -> int:
        return BITS[self.format]

    def check(self) -> None:
        from edgecompress.engine.memory import weight_format  # the one check of a format and group size

        if self.format not in BITS:
            raise EdgeCompressError(f"--weights {self.format!r} is not a quantized format", hint="Use int8 or int4.")
        weight_format(self.format, "fp32", self.group_size)
        if self.algorithm not in ALGORITHMS:
            raise EdgeCompressError(f"unknown quantization algorithm {self.algorithm!r}", hint="Use rtn or gptq.")

    def label(self) -> str:
        return f"{self.format}, group {self.group_size}, symmetric, {self.algorithm}"


# -- the arithmetic -------------------------------------------------------------------------------

def _blocks(rows: int, group: int) -> int:
    return -(-rows // group)


def block_scales(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Per-block scales of ``w`` [in, out]: max |w| of each block of ``group`` rows / qmax."""
    qmax = 2 ** (bits - 1) - 1
    rows = w.shape[0]
    padded = np.zeros((_blocks(rows, group) * group, w.shape[1]), np.float64)
    padded[:rows] = w
    scale = np.abs(padded.reshape(-1, group, w.shape[1])).max(axis=1) / qmax
    return np.where(scale > 0, scale, 1.0)


def _round(w: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    return np.clip(np.rint(w / scale), -qmax - 1, qmax)


def quantize_rtn(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Round to nearest. ``w`` [in, out] -> (codes int8 [in, out], scales [blocks, out])."""
    w = np.asarray(w, np.float64)
    scale = block_scales(w, bits, group)
    rows = np.repeat(scale, group, axis=0)[: w.shape[0]]
    return _round(w, rows, bits).astype(np.int8), scale


def quantize_gptq(w: np.ndarray, hessian: np.ndarray, bits: int, group: int, damp: float = 0.01,
                  block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ. ``w`` [in, out], ``hessian`` [in, in] = X^T X of the layer's inputs."""
    W = np.array(w, np.float64).T  # [out, in]: one column per input feature, as the paper writes it
    H = np.array(hessian, np.float64)
    n = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[np.diag_indices(n)] += damp * np.mean(np.diag(H))
    try:
        upper = np.linalg.cholesky(np.linalg.inv(H)).T  # the upper Cholesky factor of H^-1
    except np.linalg.LinAlgError:  # a degenerate Hessian (too few calibration tokens): RTN is the honest answer
        return quantize_rtn(w, bits, group)
    Q = np.zeros_like(W)
    scales = np.zeros((_blocks(n, group), W.shape[0]))
    for start in range(0, n, block):
        end = min(start + block, n)
        W1 = W[:, start:end].copy()
        E1 = np.zeros_like(W1)
        Hinv = upper[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if column % group == 0:  # the block's scale, from the weights as the updates left them
                blockw = np.concatenate([W1[:, i:i + group], W[:, end:end + group]], axis=1)[:, :group]
                scales[column // group] = block_scales(blockw.T, bits, group)[0]
            s = scales[column // group]
            q = _round(W1[:, i], s, bits)
            Q[:, column] = q
            error = (W1[:, i] - q * s) / Hinv[i, i]
            W1[:, i:] -= np.outer(error, Hinv[i, i:])
            E1[:, i] = error
        W[:, end:] -= E1 @ upper[start:end, end:]
    return Q.T.astype(np.int8), scales


def dequantize(codes: np.ndarray, scales: np.ndarray, group: int) -> np.ndarray:
    return codes.astype(np.float64) * np.repeat(scales, group, axis=0)[: codes.shape[0]]


# -- the graph ------------------------------------------------------------------------------------

def _int4_tensor(name: str, codes: np.ndarray):
    """An INT4 TensorProto, two values a byte (the first in the low nibble), as ONNX packs it."""
    import onnx

    flat = codes.reshape(-1).astype(np.int8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nibbles = (flat & 0x0F).astype(np.uint8)
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.INT4, dims=list(codes.shape))
    tensor.raw_data = packed.tobytes()
    return tensor


def linear_weights(model) -> dict[str, Any]:
    """The MatMul nodes whose second input is a 2-D initializer: the linear layers (by weight name)."""
    inits = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            found[node.input[1]] = node
    return found


def weight_key(array: np.ndarray) -> str:
    """Identifies a weight by its values: the ONNX initializer holds W.T of the PyTorch Linear."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def rewrite(model, quantized: dict[str, tuple[np.ndarray, np.ndarray]], fmt: Quantization, dtype) -> None:
    """Replace each named initializer by its codes and scales behind a DequantizeLinear."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    position = {id(n): i for i, n in enumerate(nodes)}
    inserts = []
    for name, (codes, scales) in quantized.items():
        model.graph.initializer.remove(inits[name])
        qname, sname = f"{name}.q{fmt.bits}", f"{name}.scale"
        tensor = _int4_tensor(qname, codes) if fmt.bits == 4 else numpy_helper.from_array(codes.astype(np.int8), qname)
        model.graph.initializer.extend([tensor, numpy_helper.from_array(scales.astype(dtype), sname)])
        consumer = next(n for n in nodes if n.op_type == "MatMul" and n.input[1] == name)
        dq = onnx.helper.make_node("DequantizeLinear", [qname, sname], [name], name=f"{name}.dequantize",
                                   axis=0, block_size=fmt.group_size)
        inserts.append((position[id(consumer)], dq))
    for index, dq in sorted(inserts, key=lambda item: -item[0]):
        model.graph.node.insert(index, dq)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, OPSET)


def save(model, path: Path) -> list[str]:
    """Write the graph and its weights (one external data file), replacing what was there."""
    import onnx

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024)
    from edgecompress.staging import folder_mode

    for written in (path, data):  # onnx writes its data file 0600; a bundle's files get the umask's mode
        if written.exists():
            written.chmod(folder_mode() & 0o666)
    onnx.checker.check_model(str(path), full_check=True)
    return [path.name] + ([data.name] if data.exists() else [])


# -- calibration ----------------------------------------------------------------------------------

def calibrate(adapter, vision_module, samples: list[tuple[Any, str, str]], hessians: bool = True):
    """Run the PyTorch language model on the calibration prompts (the image tokens as the bundle
    keeps them, the question and its answer). Returns (X^T X of the inputs of every linear layer,
    keyed by its weight as the ONNX graph holds it (W.T in the export's dtype), or None; the
    tokens seen; each prompt's input embeddings, for the logit check). ``samples``: (image,
    question, answer)."""
    import torch
    from transformers import AutoProcessor

    from edgecompress.reference import chat_text, vision_inputs

    model = adapter.model
    processor = AutoProcessor.from_pretrained(adapter.text_source)
    language_model = model.model.language_model
    linears = {name: m for name, m in language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    # Layers that read the same tensor (q/k/v, gate/up) share one X^T X, float32 (in x in each):
    # a 7B's statistics are then ~22 GB (32 layers x 3 x 4096^2 + 11008^2, 4 bytes), not 57.
    groups: dict[str, str] = {}  # layer -> the first layer seen reading its input
    first_seen: dict[int, tuple[str, Any]] = {}  # during the first prompt: id(input) -> (layer, input kept alive)
    sums: dict[str, np.ndarray] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            if name not in groups:
                groups[name] = first_seen.setdefault(id(x), (name, x))[0]
            if groups[name] != name:
                return
            flat = x.detach().reshape(-1, x.shape[-1]).float().numpy()
            if name not in sums:
                sums[name] = np.zeros((flat.shape[1], flat.shape[1]), np.float32)
            sums[name] += flat.T @ flat
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()] if hessians else []
    tokens, prompts = 0, []
    embed = model.get_input_embeddings()
    try:
        with torch.no_grad():
            for image, question, answer in samples:
                ids = processor.tokenizer(chat_text(processor, question), return_tensors="pt")["input_ids"][0]
                answer_ids = processor.tokenizer(" " + answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                at = int((ids == adapter.image_token_id).nonzero()[0, 0])
                image_embeds, _ = vision_module(*vision_inputs(model, processor, image))
                prompt = torch.cat([embed(ids[None, :at]), image_embeds.to(embed.weight.dtype), embed(ids[None, at + 1:])], 1)
                prompts.append(prompt.numpy())
                if hessians:
                    language_model(inputs_embeds=torch.cat([prompt, embed(answer_ids[None])], 1))
                    tokens += prompt.shape[1] + len(answer_ids)
                    first_seen.clear()
    finally:
        for handle in handles:
            handle.remove()
    if not hessians:
        return None, 0, prompts
    dtype = embed.weight.dtype
    keyed = {weight_key(m.weight.detach().to(dtype).numpy().T): sums[groups[name]] for name, m in linears.items()
             if name in groups}
    return keyed, tokens, prompts


def prefill_logits(path: Path, prompts: list[np.ndarray], weights: str | None = None) -> list[np.ndarray]:
    """The last position's logits of a decoder graph (ONNX Runtime, CPU, set up as the runtime sets
    it up for ``weights``) over each prompt, from an empty cache."""
    import onnxruntime as ort

    from edgecompress_runtime.backends import weight_only_config

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in weight_only_config(weights):
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = []
    for embeds in prompts:
        feeds = {"inputs_embeds": embeds, "position_ids": np.arange(embeds.shape[1], dtype=np.int64)[None]}
        for value in session.get_inputs()[2:]:
            shape = [0 if isinstance(d, str) or d is None else d for d in value.shape]
            feeds[value.name] = np.zeros(shape, embeds.dtype)
        out.append(session.run(["logits"], feeds)[0][0, -1].astype(np.float64))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def quantize_graph(path: Path, fmt: Quantization, hessians: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Quantize the linear layers of the graph at ``path`` in place; returns what was done."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))  # with its weights
    inits = {t.name: t for t in model.graph.initializer}
    quantized, params, scale_count = {}, 0, 0
    dtype = None
    for name in linear_weights(model):
        w = numpy_helper.to_array(inits[name])
        dtype = w.dtype
        h = None if hessians is None else hessians.get(weight_key(w))
        if fmt.algorithm == "gptq" and hessians is not None and h is None:
            raise EdgeCompressError(f"no calibration statistics for the graph's weight {name} "
                                    "(its values match no linear layer of the PyTorch model)")
        codes, scales = (quantize_gptq(w, h, fmt.bits, fmt.group_size) if h is not None
                         else quantize_rtn(w, fmt.bits, fmt.group_size))
        quantized[name] = (codes, scales)
        params += w.size
        scale_count += scales.size
    if not quantized:
        raise EdgeCompressError(f"{path.name} has no linear layers to quantize")
    rewrite(model, quantized, fmt, dtype)
    files = save(model, path)
    return {"format": fmt.format, "bits": fmt.bits, "group_size": fmt.group_size, "symmetric": True,
            "algorithm": fmt.algorithm, "layers": len(quantized), "parameters": int(params), "scales": int(scale_count),
            "scale_dtype": str(np.dtype(dtype)), "files": files,
            "not_quantized": "lm_head, token embeddings, vision tower"}
