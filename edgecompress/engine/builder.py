"""Build a bundle's graphs into TensorRT engines for a target profile.

One code path for ``tensorrt`` (Jetson, datacenter; builds for the GPU it runs on) and
``tensorrt_rtx`` (RTX GPUs; compiles ahead of time for a chosen compute capability, also on a
machine with no GPU): their builder, parser and config APIs agree where we use them. Both are
imported lazily, so everything else works where they are absent.

Optimization profiles come from the manifest and the device profile. The vision graph is
static. The decoder gets two: prefill (sequence 1 .. K + max_prompt_tokens, past 0) and decode
(sequence 1, past 1 .. K + max_prompt_tokens + max_output_tokens - 1). Because K is fixed, these
ranges are exact for every image. Full TensorRT keeps a timing cache in
``engines/<profile>/timing.cache`` that the next build reuses; TensorRT-RTX (1.2 and later)
ignores timing caches, so none is written for it.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.bundle import sha256_file, write_json
from edgecompress.engine.memory import bundle_plan, require_fit
from edgecompress.engine.profiles import Profile
from edgecompress.errors import EdgeCompressError
from edgecompress.staging import make_staging, publish
from edgecompress.steps import Steps
from edgecompress_runtime.bundle import inside, open_bundle
from edgecompress_runtime.manifest import Manifest
from edgecompress_runtime.tensorrt_backend import INSTALL, MODULES

def import_backend(backend: str):
    """The TensorRT module for a profile's backend, or a clear error saying what to install."""
    if backend not in MODULES:
        raise EdgeCompressError(f"profile backend {backend!r} builds no engines", hint="The bundle's ONNX graphs run in ONNX Runtime as they are.")
    try:
        return importlib.import_module(MODULES[backend])
    except ImportError:
        raise EdgeCompressError(f"the {backend} backend is not installed (no module {MODULES[backend]!r})", hint=INSTALL[backend]) from None


def local_compute_capability() -> str | None:
    """The first GPU's compute capability via nvidia-smi, or None where there is no NVIDIA GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


@dataclass
class GraphBuild:
    name: str
    onnx: Path
    shapes: list[dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]]  # one dict per optimization profile


def optimization_profiles(manifest: Manifest, profile: Profile) -> dict[str, list[dict[str, Any]]]:
    """min/opt/max shapes for every dynamic input, per graph (empty list: static graph).

    With a decoder-stage method (FastV) the ``prefill`` graph takes the whole prompt (its N image
    tokens and at least one text token after them) and the ``decoder`` graph only decodes, its
    pruned layers' caches N - K tokens shorter than the others."""
    shapes: dict[str, list[dict[str, Any]]] = {"vision": []}
    if "decoder" not in manifest.graphs:
        return shapes
    lm = manifest.language_model
    pruning = manifest.decoder_pruning
    k = manifest.k if pruning is None else pruning.image_tokens  # image tokens in the prompt
    max_positions = lm.max_position_embeddings
    prefill_max = min(k + profile.max_prompt_tokens, max_positions)
    context = min(k + profile.max_prompt_tokens + profile.max_output_tokens, max_positions)
    prefill_opt = min(k + 32, prefill_max)
    hidden, kv = lm.hidden_size, (1, lm.num_kv_heads)
    dropped = 0 if pruning is None else pruning.image_tokens - pruning.kept_image_tokens
    rows = manifest.graphs["decoder"].input("position_ids").shape[:-1]  # (1,), or (3, 1) with mRoPE

    def profile_for(seq: tuple[int, int, int], past: tuple[int, int, int]) -> dict[str, Any]:
        entry = {
            "inputs_embeds": tuple((1, s, hidden) for s in seq),
            "position_ids": tuple((*rows, s) for s in seq),
        }
        for i in range(lm.num_layers):
            pruned = pruning is not None and i >= pruning.layer
            lengths = tuple(max(p - dropped, 1) if pruned and p else p for p in past)
            for part in ("key", "value"):
                entry[f"past.{i}.{part}"] = tuple((*kv, p, lm.head_dim) for p in lengths)
        return entry

    decode = profile_for((1, 1, 1), (1, prefill_opt, context - 1))  # decode: one token, the cache so far
    if pruning is None:
        prefill = profile_for((1, prefill_opt, prefill_max), (0, 0, 0))  # prefill: the whole prompt, empty cache
        shapes["decoder"] = [prefill, decode]
        return shapes
    shortest = pruning.image_start + pruning.image_tokens + 1
    seq = (shortest, max(prefill_opt, shortest), max(prefill_max, shortest))
    shapes["prefill"] = [{"inputs_embeds": tuple((1, s, hidden) for s in seq), "position_ids": tuple((1, s) for s in seq)}]
    shapes["decoder"] = [decode]
    return shapes


def quiet_logger(trt, *, ahead_of_time: bool):
    """A TensorRT logger that prints errors, except the CUDA-driver errors TensorRT-RTX reports
    (and then ignores) when it compiles ahead of time on a machine with no GPU."""

    class Logger(trt.ILogger):
        def log(self, severity, message):
            if severity > trt.ILogger.Severity.ERROR:
                return
            if ahead_of_time and ("cudaError 35" in message or "CUDA driver version is insufficient" in message):
                return
            print(f"[TensorRT] {message}")

    logger = Logger()
    return logger


def _parse(trt, builder, logger, path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = f"node {err.node_name()!r} (op {err.node_operator()})" if err.node_name() else f"node #{err.node()}"
            errors.append(f"{where}: {err.desc()}")
        raise EdgeCompressError(
            f"TensorRT's ONNX parser rejected {path.name}: " + "; ".join(errors or ["no detail given"]),
            hint="`edgecompress inspect` on the bundle lists the graph's ops; please report this with the bundle's manifest.",
        )
    return network, parser


TRT_DTYPES = {"float": "float32", "half": "float16", "bf16": "bfloat16", "int64": "int64", "int32": "int32",
              "int8": "int8", "uint8": "uint8", "bool": "bool"}


def network_bindings(trt, network) -> list[dict[str, Any]]:
    """Inputs and outputs of a parsed network: the engine's bindings (-1 marks a dynamic axis)."""
    def entry(tensor, mode):
        name = str(tensor.dtype).split(".")[-1].lower()
        return {"name": tensor.name, "mode": mode, "dtype": TRT_DTYPES.get(name, name), "shape": list(tensor.shape)}

    return [entry(network.get_input(i), "input") for i in range(network.num_inputs)] + [
        entry(network.get_output(i), "output") for i in range(network.num_outputs)
    ]


def build_engines(
    bundle: Path,
    profile: Profile,
    *,
    force: bool = False,
    ignore_memory_plan: bool = False,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Build every graph of ``bundle`` for ``profile`` into ``engines/<profile>/``; returns the manifest entry."""
    steps = steps or Steps()
    bundle = Path(bundle)
    manifest = open_bundle(bundle)
    if not profile.builds_engines:
        raise EdgeCompressError(
            f"profile {profile.name} uses {profile.backend}: there are no engines to build",
            hint=f"Run the bundle as it is: edgecompress run {bundle} --image ... --prompt ...",
        )
    plan = bundle_plan(manifest, profile)
    if not ignore_memory_plan:
        require_fit(plan)
    trt = import_backend(profile.backend)
    rtx = profile.backend == "tensorrt-rtx"
    if rtx:
        targets = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
        if profile.sm not in targets:
            raise EdgeCompressError(
                f"TensorRT for RTX {trt.__version__} cannot target compute capability {profile.compute_capability} ({profile.sm})",
                hint=f"Its targets are {', '.join(sorted(targets))}; use a profile with backend 'tensorrt' for this GPU.",
            )
    else:
        local = local_compute_capability()
        if local is None:
            raise EdgeCompressError(
                f"TensorRT builds engines for the GPU it runs on, and this machine has none (profile {profile.name} wants {profile.compute_capability})",
                hint="Run `edgecompress build` on the target device (for Jetson: on the board, with JetPack's TensorRT).",
            )
        if local != profile.compute_capability:
            raise EdgeCompressError(
                f"this GPU has compute capability {local}; profile {profile.name} targets {profile.compute_capability}",
                hint="Build on the target device, or pick the profile that matches this GPU.",
            )

    existing = manifest.engines.get(profile.name)
    target = bundle / "engines" / profile.name
    if (existing or target.exists()) and not force:
        raise EdgeCompressError(f"{bundle} already has engines for {profile.name}", hint="Pass --force to rebuild them.")

    notes = []
    if manifest.precision != profile.precision:
        notes.append(
            f"engines follow the bundle's precision ({manifest.precision}); profile {profile.name} asks for "
            f"{profile.precision}: re-export with --precision {profile.precision} for that"
        )

    logger = quiet_logger(trt, ahead_of_time=rtx)
    builder = trt.Builder(logger)
    shapes = optimization_profiles(manifest, profile)
    staging = make_staging(target)
    engines: dict[str, Any] = {}
    try:
        previous_cache = target / "timing.cache"
        cache_blob = previous_cache.read_bytes() if previous_cache.exists() and not rtx else b""
        for name, graph in manifest.graphs.items():
            with steps.step(f"build-{name}", f"Building {name} engine for {profile.name} ({profile.backend}, {profile.compute_capability})"):
                network, _parser = _parse(trt, builder, logger, inside(bundle, graph.file), strongly_typed=True)
                config = builder.create_builder_config()
                if rtx:
                    config.num_compute_capabilities = 1
                    config.set_compute_capability(getattr(trt.ComputeCapability, profile.sm), 0)
                if profile.workspace_gib:
                    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(profile.workspace_gib * 1024**3))
                if not rtx:  # TensorRT-RTX >= 1.2 ignores timing caches (it tunes at run time)
                    config.set_timing_cache(config.create_timing_cache(cache_blob), ignore_mismatch=False)
                for entry in shapes.get(name, []):
                    opt = builder.create_optimization_profile()
                    for tensor, (lo, mid, hi) in entry.items():
                        opt.set_shape(tensor, lo, mid, hi)
                    config.add_optimization_profile(opt)
                serialized = builder.build_serialized_network(network, config)
                if serialized is None:
                    raise EdgeCompressError(f"TensorRT could not build the {name} engine for {profile.name}",
                                            hint="Run with a larger workspace (your own profile .toml) or report the bundle's manifest.")
                engine_file = staging / f"{name}.engine"
                engine_file.write_bytes(bytes(serialized))
                if not rtx:
                    cache_blob = bytes(config.get_timing_cache().serialize())
                engines[name] = {
                    "file": f"engines/{profile.name}/{name}.engine",
                    "sha256": sha256_file(engine_file),
                    "bindings": network_bindings(trt, network),
                    "optimization_profiles": [
                        {t: [list(s) for s in ranges] for t, ranges in entry.items()} for entry in shapes.get(name, [])
                    ],
                }
        if not rtx:  # reused by the next build of this bundle for this profile
            (staging / "timing.cache").write_bytes(cache_blob)
        publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # engines/ made for this build only: gone again if empty
            target.parent.rmdir()

    record = {
        "backend": profile.backend,
        "builder_version": trt.__version__,
        "compute_capability": profile.compute_capability,
        "precision": manifest.precision,
        "profile": profile.to_dict(),
        "graphs": engines,
        "memory_plan": plan.to_dict(),
        "notes": notes,
    }
    # Engines have their own table (file, sha256, target, TensorRT version), checked when they are
    # used; the manifest's file table stays what the export wrote, so a bundle copied without
    # engines/ (or without reports/) still opens and runs in ONNX Runtime.
    write_json(bundle / "manifest.json", manifest.with_engines(profile.name, record))
    return record
