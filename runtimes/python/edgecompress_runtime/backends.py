"""Execution backends behind one interface: ONNX Runtime here; TensorRT implements the same.

A backend runs the bundle's two graphs:

- ``vision(feeds) -> (image_embeds [1,K,D], kept_indices [1,K])``, ``feeds`` the vision graph's
  inputs by name (``pixel_values``, or ``pixels`` uint8 for ``export --pixel-input uint8``; for LLaVA-NeXT
  also ``grid_index`` and ``tile_mask``)
- ``decoder(inputs_embeds [1,S,D], position_ids [1,S], past) -> (logits [1,1,V], present)``
- ``step(embedding [D], position: int, past) -> (logits [V], present)``: one decode step, the
  token's position id an int (mRoPE: the same in all three rows, as every generated token's);
  ``shared_cache.decode_step`` for backends with nothing faster. The ONNX Runtime backend's writes the
  token into inputs bound once and returns a view of its bound logits, valid until the next step
- ``prefill(inputs_embeds [1,S,D], position_ids [1,S]) -> (logits [1,1,V], kept_indices [1,K], present)``,
  only for a bundle whose method prunes inside the language model (a ``prefill`` graph; FastV):
  the caches of its pruned layers hold S - N + K tokens, the others S.

``past``/``present`` are lists of (key, value) arrays per layer, [1, kv_heads, P, head_dim]; for
a fused decoder graph with a shared-buffer cache, a :class:`SharedCache` (the valid length of
the backend's own buffers), which callers pass along the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgecompress_runtime.bundle import CONTAINMENT_HINT, external_data_problems, inside
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import Manifest
from edgecompress_runtime.shared_cache import SEQLENS_K, SHARED_BUFFER, TOTAL_LENGTH, SharedCache, decode_step, length_feeds

KV = list[tuple[np.ndarray, np.ndarray]]

def weight_only_config(weights: str | None) -> list[tuple[str, str]]:
    """ONNX Runtime session settings for a bundle's weight format, so that a quantized graph runs
    as what it says (weight-only quantization: activations in the bundle's precision), as TensorRT
    runs it. ONNX Runtime fuses each DequantizeLinear + MatMul into MatMulNBits, by default at
    accuracy level 4, which quantizes the activations to int8 per block (1.3% error measured on
    an 80x24 layer). int4: fused at level 0 (compute in the activations' type; as fast as fp32 on
    the CPU, with 4-bit weights in memory). int8: not fused (its 8-bit kernel at level 0 is ~3x
    slower than fp32 on the CPU, measured on tiny-llava); the weights are dequantized instead, at
    fp32 speed."""
    if weights == "int4":
        return [("session.qdq_matmulnbits_accuracy_level", "0")]
    if weights == "int8":
        return [("session.disable_quant_qdq", "1")]
    return []


class Backend(Protocol):
    name: str
    # decoder() takes several new tokens on a non-empty cache (a conversation's follow-up turn);
    # False: one token at a time there (TensorRT engines: their profiles are prefill or decode)
    extends_cache: bool

    def vision(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...

    def decoder(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, past: KV) -> tuple[np.ndarray, KV]: ...

    def empty_past(self) -> KV: ...

    def step(self, embedding: np.ndarray, position: int, past: KV) -> tuple[np.ndarray, KV]: ...

    def prefill(self, inputs_embeds: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, KV]: ...


def _session(ort, bundle: Path, relative: str, options, providers):
    """An ONNX Runtime session for one of the bundle's graphs, once its file and every external
    weight file it reads are known to lie inside the bundle."""
    path = inside(bundle, relative)
    escapes = external_data_problems(bundle, path)
    if escapes:
        raise EdgeCompressError(f"bundle {bundle}: " + "; ".join(escapes), hint=CONTAINMENT_HINT)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime's own exception types (Fail, InvalidProtobuf, NoSuchFile, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgeCompressError(f"ONNX Runtime cannot load {relative} from {bundle}: {reason}",
                                hint="The bundle is damaged or incomplete: re-export it.") from None


class OnnxRuntimeBackend:
    """ONNX Runtime, on the CPU or (with onnxruntime-gpu) CUDA.

    The decoder is the bundle's ONNX Runtime graph (fused operators; ``onnxruntime_graphs`` in
    the manifest) where it has one, unless ``fused`` is False; else the standard graph. Both take
    and return the same tensors."""

    def __init__(self, bundle: Path, manifest: Manifest, device: str = "cpu", threads: int = 0, fused: bool = True,
                 spinning: bool = True):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EdgeCompressError(
                    "the CUDA backend needs onnxruntime-gpu",
                    hint="pip install onnxruntime-gpu (in place of onnxruntime), or use --backend onnxruntime-cpu.",
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in weight_only_config((manifest.data.get("weights") or {}).get("format")):
            options.add_session_config_entry(key, value)
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads spin by default (ONNX Runtime's default): on an otherwise idle CPU a
        # decode step of ~60 tiny nodes is faster with them awake (C++ runtime, tiny-llava fused:
        # 0.24 vs 0.31 ms/token, prefill 4.0 vs 5.9 ms). On a CPU shared with other busy processes
        # a spinning thread takes the core the next node needs (1.7 vs 1.2 ms/token under load):
        # spinning=False there.
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.name = f"onnxruntime-{device}"
        self.extends_cache = True
        graphs = manifest.graphs
        for required in ("vision", "decoder"):
            if required not in graphs or (required == "decoder" and manifest.language_model is None):
                raise EdgeCompressError(
                    f"bundle {bundle} has no {required} graph",
                    hint="Re-export it with `edgecompress export` (vision-only bundles cannot generate text).",
                )
        self._vision = _session(ort, bundle, graphs["vision"].file, options, providers)
        decoder = manifest.onnxruntime_graphs.get("decoder") if fused else None
        self.decoder_graph = (decoder or graphs["decoder"]).file
        self._decoder = _session(ort, bundle, self.decoder_graph, options, providers)
        self._prefill = _session(ort, bundle, graphs["prefill"].file, options, providers) if "prefill" in graphs else None
        lm = manifest.language_model
        self._layers = lm.num_layers
        self._kv_shape = (1, lm.num_kv_heads, 0, lm.head_dim)
        spec = graphs["decoder"]
        self._embeds_dtype = np.dtype(spec.input("inputs_embeds").dtype)
        self._kv_dtype = np.dtype(spec.input("past.0.key").dtype)
        self._past_names = [t.name for t in spec.inputs[2:]]
        self._output_names = [t.name for t in spec.outputs]
        self._device = device
        # the standard graph's growing cache: OrtValues kept on the GPU; numpy arrays on the CPU,
        # where binding and wrapping ~10 OrtValues a step costs more than the copies it saves
        # (tiny-llava: 0.54 vs 0.45 ms/token)
        self.cache_on_device = device != "cpu"
        self._hidden = lm.hidden_size
        self.position_shape = manifest.position_shape
        self._shared = None
        if decoder is not None and decoder.kv_cache == SHARED_BUFFER:
            self._shared = self._bind_shared_cache(ort, decoder, device)

    def _bind_shared_cache(self, ort, graph, device: str):
        """An IoBinding of the shared-buffer decoder with each cache tensor allocated once at the
        graph's maximum length and bound as its past input and present output alike; the small
        per-step inputs are bound at each step."""
        lm = self._kv_shape
        shape = [lm[0], lm[1], graph.kv_cache_max_length, lm[3]]
        binding = self._decoder.io_binding()
        presents = [t.name for t in graph.outputs[1:]]
        self._cache_buffers = [ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, device, 0)
                               for _ in self._past_names]
        # the next-token logits [1, 1, V] land in one array, read after each step: get_outputs()
        # wraps every bound output, caches included (~0.08 ms a step measured on tiny-llava)
        logits = graph.outputs[0]
        self._logits = np.empty(logits.shape, dtype=np.dtype(logits.dtype))
        binding.bind_ortvalue_output(logits.name, ort.OrtValue.ortvalue_from_numpy(self._logits))
        for past, present, buffer in zip(self._past_names, presents, self._cache_buffers):
            binding.bind_ortvalue_input(past, buffer)
            binding.bind_ortvalue_output(present, buffer)
        self._max_length = graph.kv_cache_max_length
        self._ort, self._one_token_bound = ort, False
        self._one_token = {"inputs_embeds": np.zeros((1, 1, self._hidden), self._embeds_dtype),
                           "position_ids": np.zeros(self.position_shape, np.int64), **length_feeds(0, 1)}
        # what a decode step writes, and the next token's logits: views made once, not per step
        self._step_embeds = self._one_token["inputs_embeds"][0, 0]
        self._step_lengths = (self._one_token["position_ids"], self._one_token[SEQLENS_K], self._one_token[TOTAL_LENGTH])
        self._next_logits = self._logits[0, -1]
        return binding

    def vision(self, feeds):
        embeds, kept = self._vision.run(None, feeds)
        return embeds, kept

    def empty_past(self) -> KV | SharedCache:
        if self._shared is not None:
            return SharedCache(0)
        empty = np.zeros(self._kv_shape, dtype=self._kv_dtype)
        return [(empty, empty) for _ in range(self._layers)]

    def decoder(self, inputs_embeds, position_ids, past):
        if self._shared is not None:
            return self._shared_step(inputs_embeds, position_ids, past)
        if not self.cache_on_device:
            feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
            for name, value in zip(self._past_names, (tensor for pair in past for tensor in pair)):
                feeds[name] = value
            outputs = self._decoder.run(None, feeds)
            return outputs[0], [(outputs[1 + 2 * i], outputs[2 + 2 * i]) for i in range(self._layers)]
        # The standard graph grows its cache (present = past + the new tokens): on a GPU each
        # present stays an OrtValue where ONNX Runtime made it and is bound as the next step's
        # past, so the cache never crosses to the host; only the logits come back.
        binding = self._decoder.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=self._embeds_dtype))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids))
        for name, value in zip(self._past_names, (tensor for pair in past for tensor in pair)):
            if isinstance(value, np.ndarray):  # the empty cache, or a prefill graph's present
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output(self._output_names[0])  # the logits, on the host
        for name in self._output_names[1:]:
            binding.bind_output(name, self._device)
        self._decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy(), [(outputs[1 + 2 * i], outputs[2 + 2 * i]) for i in range(self._layers)]

    def _check_fits(self, past: SharedCache, new: int) -> None:
        if past.length + new > self._max_length:
            raise EdgeCompressError(f"{past.length + new} positions do not fit the {self._max_length}-position KV cache",
                                    hint="Shorten the prompt or generate fewer tokens.")

    def _shared_step(self, inputs_embeds, position_ids, past: SharedCache):
        new = inputs_embeds.shape[1]
        if new == 1:
            logits, present = self.step(inputs_embeds[0, 0], int(position_ids.reshape(-1)[0]), past)
            return logits.copy()[None, None], present
        self._check_fits(past, new)
        feeds = {"inputs_embeds": np.ascontiguousarray(inputs_embeds, dtype=self._embeds_dtype),
                 "position_ids": np.ascontiguousarray(position_ids), **length_feeds(past.length, new)}
        for name, value in feeds.items():  # the arrays stay referenced here until the run is done
            self._shared.bind_cpu_input(name, value)
        self._one_token_bound = False
        self._decoder.run_with_iobinding(self._shared)
        return self._logits.copy(), SharedCache(past.length + new)

    def step(self, embedding, position, past):
        # A decode step of a small model is ~50 tiny nodes (~0.15 ms on tiny-llava), so the Python
        # around it counts: the token is written in place into arrays bound once (no feed dict,
        # no new arrays, no binding), through views made once, and the logits are read where ONNX
        # Runtime wrote them. Each microsecond here is measured against onnxruntime-genai's C++ loop.
        if self._shared is None:
            return decode_step(self, embedding, position, past)
        length = past.length
        if length >= self._max_length:
            self._check_fits(past, 1)
        if not self._one_token_bound:
            for name, value in self._one_token.items():
                self._shared.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(value))
            self._one_token_bound = True
        self._step_embeds[...] = embedding
        positions, seqlens, total = self._step_lengths
        positions.fill(position)  # mRoPE: the same id in all three rows
        seqlens[0] = length  # GroupQueryAttention: the valid length after the step, minus one
        total.fill(length + 1)
        self._decoder.run_with_iobinding(self._shared)
        return self._next_logits, SharedCache(length + 1)

    def prefill(self, inputs_embeds, position_ids):
        if self._prefill is None:
            raise EdgeCompressError("this bundle has no prefill graph (its method prunes before the language model)",
                                    hint="Prefill with decoder() and an empty cache.")
        feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
        outputs = self._prefill.run(None, feeds)
        present = [(outputs[2 + 2 * i], outputs[3 + 2 * i]) for i in range(self._layers)]
        return outputs[0], outputs[1], present


BACKENDS = ("onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def make_backend(name: str, bundle: Path, manifest: Manifest, threads: int = 0, profile: str | None = None,
                 spinning: bool = True) -> Backend:
    if name in ("onnxruntime", "onnxruntime-cpu"):
        return OnnxRuntimeBackend(bundle, manifest, "cpu", threads, spinning=spinning)
    if name == "onnxruntime-cuda":
        return OnnxRuntimeBackend(bundle, manifest, "cuda", threads, spinning=spinning)
    if name == "tensorrt":  # tensorrt or tensorrt_rtx, whichever built the engines
        from edgecompress_runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, manifest, profile)
    raise EdgeCompressError(f"unknown backend {name!r}", hint=f"Available backends: {', '.join(BACKENDS)}.")
