"""``edgecompress bench``: a bundle's latency per stage, its memory and (on a Jetson) its power.

One run is one ``Pipeline.generate_full`` on a seeded image and a prompt of a chosen text length,
generating exactly ``new_tokens`` tokens (end-of-sequence ignored, so every run decodes the
same length). Each stage is timed apart, as TensorRT Edge-LLM's ``llm_bench`` reports them:

- ``preprocess``: the decoded image to the vision graph's input (resize, crop, normalise);
- ``vision``: the vision graph (pixels -> K image embeddings);
- ``prefill``: the language model over the whole prompt (text + K image tokens) to the first logits;
- ``ttft``: image in to first token out (preprocess + vision + embedding + prefill);
- ``decode_per_token``: one decode step (the tokens after the first);
- ``end_to_end``: the whole call.

Warm-up runs first (sessions allocate, kernels are chosen), then the timed runs; p50, p90,
mean, min and the count per stage. Power on a Jetson comes from ``tegrastats`` running as a
child for the duration, reduced over the timed runs' window only (``edgecompress.bench.jetson``).
Ctrl-C during the runs keeps what was measured: the report is written from the runs completed.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecompress import __version__
from edgecompress.bench.memory import GpuMemorySampler, host_peak_rss_mib, reset_host_peak
from edgecompress.errors import EdgeCompressError

SCHEMA = "edgecompress-bench/1"
STAGES = ("preprocess", "vision", "prefill", "ttft", "decode_per_token", "end_to_end")
WORDS = ("what", "colour", "is", "the", "shape", "near", "left", "corner", "of", "this", "picture", "and", "how",
         "many", "objects", "are", "there", "in", "it", "describe", "each", "one", "briefly")


@dataclass(frozen=True)
class BenchSettings:
    backend: str = "onnxruntime"
    profile: str | None = None
    warmup: int = 2
    runs: int = 10
    prompt_tokens: int = 32  # text tokens of the whole prompt (chat template included), besides the image's
    new_tokens: int = 32
    width: int = 640
    height: int = 480
    seed: int = 0
    threads: int = 0
    tegrastats: str = "auto"  # auto (when it is on PATH), on, off
    interval_ms: int = 100
    fast_preprocess: bool = False

    def check(self) -> None:
        for name, low in (("warmup", 0), ("runs", 1), ("prompt_tokens", 1), ("new_tokens", 1), ("width", 1),
                          ("height", 1), ("threads", 0), ("interval_ms", 10), ("seed", 0)):
            if getattr(self, name) < low:
                raise EdgeCompressError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        from edgecompress_runtime.preprocess import check_size

        check_size(self.width, self.height, "--image-size")  # one patch at least, no decompression bomb
        if self.tegrastats not in ("auto", "on", "off"):
            raise EdgeCompressError(f"--tegrastats must be auto, on or off, got {self.tegrastats!r}")


def seeded_image(width: int, height: int, seed: int):
    """A deterministic picture with structure at several scales (smooth colour fields from seeded
    noise), so that no token-selection method sees a flat image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(height // 32, 2), max(width // 32, 2), 3), dtype=np.uint8))
    fine = rng.integers(-24, 24, (height, width, 3))
    base = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int64)
    return Image.fromarray(np.clip(base + fine, 0, 255).astype(np.uint8))


def prompt_of_length(pipe, tokens: int) -> tuple[str, int]:
    """A prompt whose chat-formatted text is as close to ``tokens`` tokens as the tokenizer allows
    from below (at least one word), and its real length."""
    def length(text: str) -> int:
        return len(pipe.prompt_ids(text)) - 1  # the image placeholder is not text

    rng = np.random.default_rng(tokens)
    words = " ".join(rng.choice(WORDS, size=max(tokens, 4)))
    low, high = 1, len(words)  # the longest character prefix within the target (binary search)
    while low < high:
        mid = (low + high + 1) // 2
        if length(words[:mid].strip() or "a") <= tokens:
            low = mid
        else:
            high = mid - 1
    text = words[:low].strip() or "a"
    return text, length(text)


def stage_stats(samples_ms: list[float]) -> dict[str, float | int]:
    if not samples_ms:
        return {"p50_ms": None, "p90_ms": None, "mean_ms": None, "min_ms": None, "runs": 0}
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "runs": int(a.size)}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    board = None
    try:
        board = Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None  # e.g. a Jetson's name
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"system": platform.system(), "arch": platform.machine(), "cpu": cpu, "cores": cores, "board": board,
            "hostname": platform.node()}


def tool_versions() -> dict[str, str]:
    versions = {"edgecompress": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for module in ("onnxruntime", "tensorrt", "tensorrt_rtx"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    return versions


def _check_reports(bundle: Path) -> Path:
    """BUNDLE/reports, known to be writable before anything runs (made only when a report is written)."""
    reports = bundle / "reports"
    where = reports if reports.exists() else bundle
    if not os.access(where, os.W_OK):
        raise EdgeCompressError(f"cannot write reports into {where}: permission denied",
                                hint="Benchmark a copy of the bundle in a folder you can write to.")
    return reports


def _power_sampler(settings: BenchSettings):
    """The tegrastats sampler to run, or None; ``on`` without tegrastats is refused before any run."""
    if settings.tegrastats == "off":
        return None
    from edgecompress.bench import jetson

    if jetson.tegrastats_available() is None:
        if settings.tegrastats == "on":
            raise EdgeCompressError("--tegrastats on: tegrastats is not on PATH (it ships with JetPack on a Jetson)",
                                    hint="Run on a Jetson, or drop --tegrastats (auto uses it where it exists).")
        return None
    return jetson.TegrastatsSampler(interval_ms=settings.interval_ms)


Progress = Callable[[str, int, int], None]  # (phase: "warmup" | "runs", done, total)


def bench_bundle(bundle: str | Path, settings: BenchSettings = BenchSettings(), *,
                 on_progress: Progress | None = None) -> tuple[dict[str, Any], Path | None]:
    """Benchmark one bundle; returns the report and the path of its JSON (None when interrupted
    before any timed run: nothing is written then, and the KeyboardInterrupt propagates)."""
    from edgecompress_runtime import Pipeline

    from edgecompress.bench.predict import predict
    from edgecompress.engine.profiles import load_profile

    settings.check()
    bundle = Path(bundle)
    profile = load_profile(settings.profile) if settings.profile else None
    reports = _check_reports(bundle) if bundle.is_dir() else None
    sampler = _power_sampler(settings)
    state = None
    if sampler is not None:
        from edgecompress.bench import jetson

        state = jetson.jetson_state()
    gc.collect()
    peak_reset = reset_host_peak()
    with GpuMemorySampler() as gpu:
        start = time.perf_counter()
        pipe = Pipeline.load(bundle, backend=settings.backend, profile=settings.profile, threads=settings.threads,
                             fast_preprocess=settings.fast_preprocess)
        load_s = time.perf_counter() - start
        prompt, prompt_tokens = prompt_of_length(pipe, settings.prompt_tokens)
        pipe.check_length(prompt_tokens + 1, settings.new_tokens)
        image = seeded_image(settings.width, settings.height, settings.seed)
        samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        interrupted = False
        window = (0.0, 0.0)
        generated = 0

        def once():
            t = time.perf_counter()
            g = pipe.generate_full(image, prompt, max_new_tokens=settings.new_tokens, ignore_eos=True)
            return g, 1e3 * (time.perf_counter() - t)

        power = sampler.__enter__() if sampler is not None else None
        try:
            for i in range(settings.warmup):
                once()
                if on_progress:
                    on_progress("warmup", i + 1, settings.warmup)
            window = (time.perf_counter(), time.perf_counter())
            for i in range(settings.runs):
                g, total_ms = once()
                window = (window[0], time.perf_counter())
                t = g.timings
                for stage in ("preprocess", "vision", "prefill", "ttft"):
                    samples[stage].append(1e3 * t[f"{stage}_s"])
                if t["decode_tokens"]:
                    samples["decode_per_token"].append(1e3 * t["decode_s"] / t["decode_tokens"])
                samples["end_to_end"].append(total_ms)
                generated += len(g.token_ids)
                if on_progress:
                    on_progress("runs", i + 1, settings.runs)
        except KeyboardInterrupt:
            interrupted = True
            if not samples["end_to_end"]:
                raise
        finally:
            if power is not None:
                power.__exit__(None, None, None)
    manifest = pipe.manifest
    stages = {stage: stage_stats(samples[stage]) for stage in STAGES}
    seconds = window[1] - window[0]
    decode = stages["decode_per_token"]["mean_ms"]
    warnings: list[str] = [] if state is None else list(state.get("warnings", []))
    if not peak_reset:
        warnings.append("host peak RSS is the process's lifetime peak (the per-bundle reset needs Linux)")
    prediction = predict(manifest, profile, prompt_tokens, settings.new_tokens)
    if prediction and profile.builds_engines and pipe.backend.name == "onnxruntime-cpu":
        warnings.append(f"measured on the CPU (ONNX Runtime), predicted for the {profile.name}'s GPU: the ratio says "
                        "how far this machine is from that device, not how the bundle will run there")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(bundle),
        "model": manifest.data.get("recipe", {}).get("name") or manifest.data.get("source", {}).get("location"),
        "method": manifest.method, "precision": manifest.precision, "budget": manifest.budget_spec,
        "n": manifest.n, "k": manifest.k, "image_tokens": pipe.k,
        "backend": pipe.backend.name, "profile": profile.name if profile else None,
        "settings": {**asdict(settings), "prompt_tokens": prompt_tokens, "prompt": prompt},
        "machine": {**machine(), "gpu": gpu.name},
        "tool_versions": tool_versions(),
        "load_s": load_s,
        "stages": stages,
        "throughput": {
            "decode_tokens_per_s": 1e3 / decode if decode else None,
            "end_to_end_tokens_per_s": generated / (sum(samples["end_to_end"]) / 1e3) if generated else None,
        },
        "memory": {"host_peak_rss_mib": host_peak_rss_mib(), "gpu_peak_mib": gpu.peak_mib,
                   **({"gpu_note": gpu.reason} if gpu.reason else {})},
        "jetson": None,
        "predicted": prediction["ms"] if prediction else None,
        "predicted_basis": prediction["basis"] if prediction else None,
        "measured_over_predicted": ({s: stages[s]["p50_ms"] / ms for s, ms in prediction["ms"].items()
                                     if stages[s]["p50_ms"]} if prediction else None),
        "interrupted": interrupted,
        "warnings": warnings,
    }
    if power is not None:
        report["jetson"] = {**jetson.summarise(power.samples(*window), generated, seconds),
                            "nvpmodel": state.get("nvpmodel"), "jetson_clocks": state.get("jetson_clocks")}
        if getattr(power, "error", None):
            warnings.append(f"tegrastats: {power.error}")
    pipe = None  # the sessions go before the next bundle loads
    gc.collect()
    path = None
    if reports is not None:
        from edgecompress.bench.report import write_report

        path = write_report(reports, report)
    return report, path
