"""The export pipeline: MODEL + budget + method -> a verified bundle on disk.

Each step is a small named function; :func:`export_bundle` composes them and reports
progress through a :class:`~edgecompress.steps.Steps` object.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
from pathlib import Path
from typing import Any

from edgecompress import __version__
from edgecompress.budget import parse_budget, resolve_budget
from edgecompress.bundle import SCHEMA_VERSION, BundleWriter, check_destination
from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import PRECISION_DTYPES, llava_vision_spec
from edgecompress.recipes import ModelSpec, resolve_model
from edgecompress.selection.methods import get_method
from edgecompress.steps import Steps

DEFAULT_OUT_ROOT = Path("out")


def tool_versions() -> dict[str, str]:
    versions = {"edgecompress": __version__}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def default_bundle_name(model_name: str, method: str, budget_spec: str) -> str:
    if method == "none":
        return f"{model_name}-none"
    kind, value = parse_budget(budget_spec)
    if kind == "count":
        return f"{model_name}-{method}-k{value}"
    percent = value * 100
    label = f"{float(percent):g}".replace(".", "p")
    return f"{model_name}-{method}-b{label}"


def resolve_options(spec: ModelSpec, method: str | None, budget: str | None, precision: str | None):
    defaults = spec.recipe.defaults if spec.recipe else {}
    method = method or defaults.get("method", "hired")
    get_method(method)  # fail fast on an unknown method, before loading anything
    if method == "none":
        if budget not in (None, "100%", "1.0", "1"):
            raise EdgeCompressError(
                f"--method none keeps every token; it takes no --budget (got {budget!r})",
                hint="Drop --budget, or choose a pruning method such as --method hired.",
            )
        budget = "100%"
    budget = str(budget or defaults.get("budget", "20%"))
    parse_budget(budget)  # syntax errors before loading; range errors need N
    precision = precision or defaults.get("precision", "fp16")
    if precision not in PRECISION_DTYPES:
        raise EdgeCompressError(f"unknown precision {precision!r}", hint="Use fp32 or fp16.")
    return method, budget, precision


def export_bundle(
    model: str,
    *,
    budget: str | None = None,
    method: str | None = None,
    precision: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    random_weights: bool = False,
    steps: Steps | None = None,
) -> Path:
    """Export MODEL's vision graph with a fixed token budget into a verified bundle folder."""
    import torch

    from edgecompress.graph.export import export_onnx, load_graph
    from edgecompress.lowering.verifier import verify_graph
    from edgecompress.models.llava import load_llava, pruned_vision

    steps = steps or Steps()
    spec = resolve_model(model)
    method, budget, precision = resolve_options(spec, method, budget, precision)
    out = Path(out) if out else DEFAULT_OUT_ROOT / default_bundle_name(spec.name, method, budget)
    check_destination(out, force)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]

    with steps.step("load", f"Loading {spec.name}" + (" (random weights)" if random_weights else "")):
        adapter = load_llava(spec, dtype=dtype, random_weights=random_weights)
    selection = get_method(method)
    resolved = resolve_budget(budget, adapter.num_patches)
    graph_spec = llava_vision_spec(adapter.vision_config.image_size, resolved.k, adapter.projected_dim, precision)
    module = pruned_vision(adapter, selection, resolved.k)

    with BundleWriter(out, force=force) as writer:
        with steps.step("export", f"Exporting vision graph (K={resolved.k} of {resolved.n}, {precision})"):
            size = adapter.vision_config.image_size
            example = (torch.rand(1, 3, size, size),)
            files = export_onnx(module, example, graph_spec, writer.staging / "vision.onnx")
        with steps.step("verify", "Verifying graph (static shapes, constant-K TopK, TensorRT ops)"):
            report = verify_graph(load_graph(writer.staging / "vision.onnx"), graph_spec)
            if not report.ok:
                lines = "\n".join(f"  - [{f.check}] {f.message}" for f in report.findings)
                raise EdgeCompressError(f"the exported vision graph failed verification:\n{lines}")
        with steps.step("write", f"Writing bundle {out}"):
            writer.manifest = build_manifest(
                spec, adapter, selection.name, resolved, precision, graph_spec, files, report, random_weights
            )
    return out


def build_manifest(spec, adapter, method, resolved, precision, graph_spec, files, report, random_weights) -> dict[str, Any]:
    recipe = spec.recipe.to_dict() if spec.recipe else {"name": spec.name, "family": adapter.family, "source": spec.location}
    recipe.pop("config", None)  # the architecture is recorded below, from the loaded model
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": tool_versions(),
        "recipe": recipe,
        "source": adapter.source,
        "random_weights": random_weights,
        "model": adapter.describe(),
        "architecture": adapter.config.to_dict(),
        "method": method,
        "precision": precision,
        "budget": resolved.to_dict(),
        "n": resolved.n,
        "k": resolved.k,
        "token_order": "raster (ascending patch index), selected before the projector",
        "preprocess": {**adapter.preprocess, "image_size": adapter.vision_config.image_size},
        "prompt_template": adapter.prompt_template,
        "image_token_id": adapter.image_token_id,
        "graphs": {
            "vision": {**graph_spec.to_dict(), "file": files[0], "files": files, "verify": report.to_dict()},
        },
    }
