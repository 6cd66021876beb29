"""TensorRT backend: runs a bundle's engines (built by `edgecompress build`) on an NVIDIA GPU.

Works with ``tensorrt`` (Jetson, datacenter) and ``tensorrt_rtx`` (RTX GPUs), whichever built
the engines, with cuda-python for device memory. Before running anything it checks that the
engines were built for this GPU's compute capability and this TensorRT version.

The KV cache stays on the device, as in the C++ runtime's TensorRT backend: two sets of device
buffers, allocated once at the most positions the decoder's optimization profiles allow; a
decoder (or prefill) call reads its past from one set and writes its present (past + the new
tokens, contiguous at its own shape) into the other, and the sets swap. Per token only the
embedding row and the position go to the device and the logits row comes back. The ``past`` it
hands out is a :class:`DeviceCache` (the valid length of each layer's tensors, and which set
holds them): only the latest one can be continued. Every other input and output lives in a
device buffer that grows to the largest call and is reused.

Status: written where there is no GPU (none has been lent to this project); the engine-execution
test (tests/test_engine.py) runs it where a GPU and TensorRT are present.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompress_runtime.bundle import inside, sha256_file
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import Engines, Manifest
from edgecompress_runtime.shared_cache import decode_step

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


@dataclass(frozen=True)
class DeviceCache:
    """The ``past`` the TensorRT backend hands out: each layer's valid length (key and value alike;
    after a pruning prefill the pruned layers hold fewer) and which of the two buffer sets holds it."""

    lengths: tuple[int, ...]
    slot: int


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
        self._embeds_dtype = np.dtype(decoder.input("inputs_embeds").dtype)
        self.position_shape = manifest.position_shape
        # after a pruning prefill graph (FastV) the decoder engine has one profile: decode
        self._decode_profile = 0 if manifest.decoder_pruning is not None else 1
        self._profile_set = {}
        self._allocations: list[int] = []
        engine = self._engines["decoder"]
        self._kv_names = [f"past.{i}.{part}" for i in range(self._layers) for part in ("key", "value")]
        self._inputs = {graph: {e.get_tensor_name(i) for i in range(e.num_io_tensors)
                                if e.get_tensor_mode(e.get_tensor_name(i)) == trt.TensorIOMode.INPUT}
                        for graph, e in self._engines.items()}
        kv_item = np.dtype(trt.nptype(engine.get_tensor_dtype("past.0.key"))).itemsize
        largest = engine.get_tensor_profile_shape("past.0.key", 0)[2]  # (min, opt, max) shapes per profile
        heads, head_dim = int(largest[1]), int(largest[3])
        # the longest present any profile allows: its longest past plus its longest new tokens
        self._max_length = max(int(engine.get_tensor_profile_shape("past.0.key", p)[2][2])
                               + int(engine.get_tensor_profile_shape("inputs_embeds", p)[2][1])
                               for p in range(engine.num_optimization_profiles))
        self._kv_row = (heads, head_dim)
        size = heads * self._max_length * head_dim * kv_item
        self._cache = [[self._malloc(size) for _ in self._kv_names] for _ in range(2)]
        self._staging: dict[str, tuple[int, int]] = {}  # host-fed inputs and the logits: grown to the largest call

    def _malloc(self, nbytes: int) -> int:
        pointer = _call(self.cudart.cudaMalloc(max(nbytes, 256)))
        self._allocations.append(pointer)
        return pointer

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer for ``name`` of at least ``nbytes``, kept and reused."""
        pointer, size = self._staging.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._allocations.remove(pointer)
                _call(self.cudart.cudaFree(pointer))
            pointer, size = self._malloc(nbytes), max(nbytes, 256)
            self._staging[name] = (pointer, size)
        return pointer

    def __del__(self):
        for pointer in getattr(self, "_allocations", []):
            try:
                self.cudart.cudaFree(pointer)
            except Exception:  # interpreter shutdown: the CUDA module may be gone already
                break

    def _upload(self, context, feeds: dict[str, np.ndarray]) -> None:
        """Each feed into its reused device buffer, its shape set on ``context``."""
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            context.set_input_shape(name, array.shape)
            pointer = self._buffer(name, array.nbytes)
            if array.nbytes:
                _call(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                                  self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
            context.set_tensor_address(name, pointer)

    def _execute(self, graph: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run ``graph`` (its inputs set) with ``names`` written to reused device buffers and copied back."""
        engine, context, cudart = self._engines[graph], self._contexts[graph], self.cudart
        hosts = {}
        for name in names:
            host = np.empty(tuple(context.get_tensor_shape(name)), dtype=self.trt.nptype(engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, self._buffer(name, host.nbytes))
            hosts[name] = host
        if not context.execute_async_v3(self._stream):
            raise EdgeCompressError(f"TensorRT failed to run the {graph} engine")
        for name, host in hosts.items():
            if host.nbytes:
                _call(cudart.cudaMemcpyAsync(host.ctypes.data, self._staging[name][0], host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _call(cudart.cudaStreamSynchronize(self._stream))
        return hosts

    def vision(self, feeds):
        self._upload(self._contexts["vision"], feeds)
        out = self._execute("vision", ("image_embeds", "kept_indices"))
        return out["image_embeds"], out["kept_indices"]

    def empty_past(self):
        return DeviceCache((0,) * self._layers, 0)

    def _cached_run(self, graph: str, feeds: dict[str, np.ndarray], past: DeviceCache, profile: int,
                    host_outputs: tuple[str, ...]) -> tuple[dict[str, np.ndarray], DeviceCache]:
        """Run ``graph`` with its past in one cache set and its present written into the other;
        ``feeds`` (the embeddings and positions) go to the device, ``host_outputs`` come back."""
        context = self._contexts[graph]
        if self._profile_set.get(graph) != profile:
            context.set_optimization_profile_async(profile, self._stream)
            self._profile_set[graph] = profile
        new = feeds["inputs_embeds"].shape[1]
        if max(past.lengths) + new > self._max_length:
            raise EdgeCompressError(f"{max(past.lengths) + new} positions do not fit the engines' {self._max_length}",
                                    hint="Shorten the prompt or generate fewer tokens.")
        self._upload(context, feeds)
        heads, head_dim = self._kv_row
        source, target = self._cache[past.slot], self._cache[1 - past.slot]
        reads_past = "past.0.key" in self._inputs[graph]  # a pruning prefill graph starts from nothing
        for i, name in enumerate(self._kv_names):
            if reads_past:
                context.set_input_shape(name, (1, heads, past.lengths[i // 2], head_dim))
                context.set_tensor_address(name, source[i])
            context.set_tensor_address("present" + name[len("past"):], target[i])
        hosts = self._execute(graph, host_outputs)
        lengths = tuple(int(context.get_tensor_shape(f"present.{i}.key")[2]) for i in range(self._layers))
        return hosts, DeviceCache(lengths, 1 - past.slot)

    def decoder(self, inputs_embeds, position_ids, past):
        feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
        profile = 0 if max(past.lengths) == 0 else self._decode_profile
        out, present = self._cached_run("decoder", feeds, past, profile, ("logits",))
        return out["logits"], present

    def step(self, embedding, position, past):
        return decode_step(self, embedding, position, past)

    def prefill(self, inputs_embeds, position_ids):
        if "prefill" not in self._engines:
            raise EdgeCompressError("this bundle has no prefill engine (its method prunes before the language model)",
                                    hint="Prefill with decoder() and an empty cache.")
        feeds = {"inputs_embeds": inputs_embeds.astype(self._embeds_dtype, copy=False), "position_ids": position_ids}
        out, present = self._cached_run("prefill", feeds, self.empty_past(), 0, ("logits", "kept_indices"))
        return out["logits"], out["kept_indices"], present
