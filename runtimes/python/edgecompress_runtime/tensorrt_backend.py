"""TensorRT backend: runs a bundle's engines (built by `edgecompress build`) on an NVIDIA GPU.

Works with ``tensorrt`` (Jetson, datacenter) and ``tensorrt_rtx`` (RTX GPUs), whichever built
the engines, with cuda-python for device memory. Before running anything it checks that the
engines were built for this GPU's compute capability and this TensorRT version.

Buffers are copied between host and device on every call (the KV cache included). That keeps
the backend simple and the interface identical to ONNX Runtime's; keeping the cache resident on
the device is the next optimisation.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from edgecompress_runtime.backends import decode_step, position_shape
from edgecompress_runtime.bundle import inside, sha256_file
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import Engines, Manifest

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
INSTALL = {
    "tensorrt-rtx": "pip install tensorrt-rtx  (TensorRT for RTX: builds for RTX GPUs, also on a machine with no GPU)",
    "tensorrt": (
        "On Jetson, TensorRT comes with JetPack (sudo apt install nvidia-jetpack; use the system Python or a venv "
        "with --system-site-packages). On x86_64: pip install tensorrt --extra-index-url https://pypi.nvidia.com"
    ),
}


def select_engines(manifest: Manifest, profile: str | None) -> tuple[str, Engines]:
    engines = manifest.engines
    if not engines:
        raise EdgeCompressError("this bundle has no TensorRT engines", hint="Build them first: edgecompress build BUNDLE --profile PROFILE.")
    if profile is None:
        if len(engines) > 1:
            raise EdgeCompressError(f"this bundle has engines for several profiles ({', '.join(engines)})", hint="Pass --profile.")
        profile = next(iter(engines))
    if profile not in engines:
        raise EdgeCompressError(
            f"this bundle has no engines for profile {profile!r} (it has: {', '.join(engines)})",
            hint=f"Build them: edgecompress build BUNDLE --profile {profile}.",
        )
    return profile, engines[profile]


def check_compatible(record: Engines, trt_version: str, device_cc: str | None) -> None:
    """Refuse engines built for another TensorRT version or another GPU."""
    if record.builder_version != trt_version:
        raise EdgeCompressError(
            f"the engines were built with {record.backend} {record.builder_version}, and this is {trt_version}",
            hint="TensorRT engines only load in the version that built them: rebuild with edgecompress build --force.",
        )
    if device_cc is None:
        raise EdgeCompressError("no CUDA GPU is available to run TensorRT engines", hint="Use --backend onnxruntime on this machine.")
    if device_cc != record.compute_capability:
        raise EdgeCompressError(
            f"the engines were built for compute capability {record.compute_capability}, and this GPU is {device_cc}",
            hint="Rebuild for this GPU's profile: edgecompress build BUNDLE --profile <profile of this GPU>.",
        )


def _cudart():
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise EdgeCompressError("the TensorRT backend needs cuda-python for device memory", hint="pip install cuda-python")


def _call(result):
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EdgeCompressError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


def device_compute_capability(cudart) -> str | None:
    try:
        count = _call(cudart.cudaGetDeviceCount())
    except EdgeCompressError:
        return None
    if not count:
        return None
    props = _call(cudart.cudaGetDeviceProperties(0))
    return f"{props.major}.{props.minor}"


class TensorRTBackend:
    def __init__(self, bundle: Path, manifest: Manifest, profile: str | None = None):
        self.profile, record = select_engines(manifest, profile)
        try:
            trt = importlib.import_module(MODULES[record.backend])
        except (ImportError, KeyError):
            raise EdgeCompressError(
                f"the engines need {record.backend}, which is not installed", hint=INSTALL.get(record.backend, "")
            ) from None
        if record.builder_version != trt.__version__:
            check_compatible(record, trt.__version__, None)
        cudart = _cudart()
        check_compatible(record, trt.__version__, device_compute_capability(cudart))
        self.trt, self.cudart = trt, cudart
        self.name = f"{record.backend}:{self.profile}"
        self.extends_cache = False  # the decoder's profiles: a prompt on an empty cache, or one token on a cache
        self._logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(self._logger)
        self._engines, self._contexts = {}, {}
        for graph, entry in record.graphs.items():
            path = inside(bundle, entry.file)
            if not path.is_file():
                raise EdgeCompressError(f"{entry.file} is missing (the bundle was copied without its engines?)",
                                        hint=f"Rebuild them: edgecompress build {bundle} --profile {self.profile} --force, or use --backend onnxruntime.")
            if sha256_file(path) != entry.sha256:
                raise EdgeCompressError(f"{entry.file} does not match its sha256 in the manifest",
                                        hint=f"Rebuild it: edgecompress build {bundle} --profile {self.profile} --force.")
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EdgeCompressError(f"TensorRT could not load {entry.file}", hint="Rebuild it with edgecompress build --force.")
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        self._stream = _call(cudart.cudaStreamCreate())
        lm, decoder = manifest.language_model, manifest.graphs["decoder"]
        self._layers = lm.num_layers
        self._empty = np.zeros((1, lm.num_kv_heads, 0, lm.head_dim), dtype=np.dtype(decoder.input("past.0.key").dtype))
        self._embeds_dtype = np.dtype(decoder.input("inputs_embeds").dtype)
        self.position_shape = position_shape(manifest)
        # after a pruning prefill graph (FastV) the decoder engine has one profile: decode
        self._decode_profile = 0 if manifest.decoder_pruning is not None else 1

    def _run(self, graph: str, feeds: dict[str, np.ndarray], optimization_profile: int | None = None) -> dict[str, np.ndarray]:
        trt, cudart = self.trt, self.cudart
        engine, context = self._engines[graph], self._contexts[graph]
        if optimization_profile is not None:
            context.set_optimization_profile_async(optimization_profile, self._stream)
        buffers = []
        try:
            for name, array in feeds.items():
                array = np.ascontiguousarray(array)
                context.set_input_shape(name, array.shape)
                pointer = _call(cudart.cudaMalloc(max(array.nbytes, 1)))
                buffers.append(pointer)
                if array.nbytes:
                    _call(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
                context.set_tensor_address(name, pointer)
            outputs = {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                    continue
                shape = tuple(context.get_tensor_shape(name))
                host = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
                pointer = _call(cudart.cudaMalloc(max(host.nbytes, 1)))
                buffers.append(pointer)
                context.set_tensor_address(name, pointer)
                outputs[name] = (host, pointer)
            if not context.execute_async_v3(self._stream):
                raise EdgeCompressError(f"TensorRT failed to run the {graph} engine")
            for host, pointer in outputs.values():
                if host.nbytes:
                    _call(cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
            _call(cudart.cudaStreamSynchronize(self._stream))
            return {name: host for name, (host, _) in outputs.items()}
        finally:
            for pointer in buffers:
                cudart.cudaFree(pointer)

    def vision(self, feeds):
        out = self._run("vision", feeds)
        return out["image_embeds"], out["kept_indices"]

    def empty_past(self):
        return [(self._empty, self._empty) for _ in range(self._layers)]

    def decoder(self, inputs_embeds, position_ids, past):
        feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
        for i, (key, value) in enumerate(past):
            feeds[f"past.{i}.key"], feeds[f"past.{i}.value"] = key, value
        prefill = past[0][0].shape[2] == 0
        out = self._run("decoder", feeds, optimization_profile=0 if prefill else self._decode_profile)
        present = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self._layers)]
        return out["logits"], present

    def step(self, embedding, position, past):
        return decode_step(self, embedding, position, past)

    def prefill(self, inputs_embeds, position_ids):
        if "prefill" not in self._engines:
            raise EdgeCompressError("this bundle has no prefill engine (its method prunes before the language model)",
                                    hint="Prefill with decoder() and an empty cache.")
        feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
        out = self._run("prefill", feeds, optimization_profile=0)
        present = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self._layers)]
        return out["logits"], out["kept_indices"], present
