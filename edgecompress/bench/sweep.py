"""``edgecompress sweep``: accuracy against latency over visual-token budgets, and the budget to pick.

For each budget: export the bundle (or reuse the one already at its default path with the same
method, budget and precision), ``validate`` it on the data set (the unpruned PyTorch model's
answers computed once and shared), and ``bench`` it. 100% is the unpruned bundle (method
``none``). The result is a table of accuracy against K and TTFT, the Pareto front (budgets no
other budget beats on both accuracy and TTFT), a PNG of accuracy against TTFT, and with
``max_drop`` the smallest budget whose accuracy is within that many points of the unpruned
model's (the PyTorch model, so the reference does not depend on the export's precision).
"""

from __future__ import annotations


from pathlib import Path
from typing import Any, Callable

from edgecompress.bench.runner import BenchSettings
from edgecompress.budget import parse_budget
from edgecompress.bundle import write_json
from edgecompress.errors import EdgeCompressError
from edgecompress.steps import Steps


def parse_drop(text: str) -> float:
    """'2%' or '2' -> 0.02: accuracy points, absolute (a drop from 90% to 88% is 2 points); a
    bare number is points too ('0.5' is half a point)."""
    value = text.strip()
    try:
        number = float(value[:-1] if value.endswith("%") else value) / 100
    except ValueError:
        raise EdgeCompressError(f"--max-accuracy-drop must be a percentage such as 2%, got {text!r}") from None
    if not 0 <= number < 1:
        raise EdgeCompressError(f"--max-accuracy-drop must lie in [0%, 100%), got {text!r}")
    return number


def _bundle_for(model: str, method: str, budget: str, precision: str | None, folder: Path, steps: Steps) -> Path:
    from edgecompress.compiler import default_bundle_name, export_bundle, resolve_options
    from edgecompress.recipes import resolve_model
    from edgecompress_runtime.bundle import read_manifest

    spec = resolve_model(model)
    method, budget, precision = resolve_options(spec, method, budget, precision)
    path = folder / default_bundle_name(spec.name, method, budget)
    if path.exists():
        manifest = read_manifest(path)
        if (manifest.method, manifest.budget_spec, manifest.precision) == (method, budget, precision):
            steps.note(f"reusing {path} ({method}, {budget}, {precision})")
            return path
        raise EdgeCompressError(
            f"{path} holds a {manifest.method} {manifest.budget_spec} {manifest.precision} bundle, not the "
            f"{method} {budget} {precision} this sweep needs",
            hint="Sweep into another folder (--bundles), or remove that bundle.")
    return export_bundle(model, method=method, budget=budget, precision=precision, out=path, steps=steps)


def pareto(points: list[dict[str, Any]]) -> list[int]:
    """Indices of the points no other point beats: at most its TTFT and at least its accuracy,
    better in one."""
    front = []
    for i, p in enumerate(points):
        if not any(q["ttft_ms"] <= p["ttft_ms"] and q["accuracy"] >= p["accuracy"]
                   and (q["ttft_ms"] < p["ttft_ms"] or q["accuracy"] > p["accuracy"]) for q in points):
            front.append(i)
    return front


def run_sweep(model: str, budgets: list[str], dataset: str | Path, *, method: str | None = None,
              precision: str | None = None, limit: int | None = None, bundles: Path = Path("out"),
              out: Path | None = None, settings: BenchSettings = BenchSettings(runs=5, warmup=1),
              max_drop: float | None = None, steps: Steps | None = None,
              on_progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    from edgecompress.bench.runner import bench_bundle
    from edgecompress.recipes import resolve_model
    from edgecompress.validate import load_dataset, validate_bundle

    steps = steps or Steps()
    settings.check()
    load_dataset(dataset, limit)  # a bad data set is refused before the first export
    spec = resolve_model(model)
    method = method or (spec.recipe.defaults.get("method", "hired") if spec.recipe else "hired")
    if method == "none":
        raise EdgeCompressError("--method none is the 100% row of every sweep", hint="Sweep a pruning method, e.g. --method hired.")
    out = out or bundles / f"sweep-{spec.name}-{method}"
    unpruned_cache: dict = {}
    points = []
    for budget in budgets:
        kind, value = parse_budget(budget)
        m = "none" if kind != "count" and value == 1 else method  # 100% (or 1.0) is the unpruned bundle
        bundle = _bundle_for(model, m, budget, precision, bundles, steps)
        with steps.step(f"validate-{budget}", f"Validating {bundle.name} on {Path(dataset).name}"):
            summary, _ = validate_bundle(bundle, dataset, backend=settings.backend, profile=settings.profile, limit=limit,
                                         unpruned_cache=unpruned_cache,
                                         on_progress=(lambda d, t: on_progress("validate", d, t)) if on_progress else None)
        with steps.step(f"bench-{budget}", f"Benchmarking {bundle.name}"):
            report, _ = bench_bundle(bundle, settings,
                                     on_progress=(lambda phase, d, t: on_progress(phase, d, t)) if on_progress else None)
        if report["interrupted"]:  # Ctrl-C in the bench: stop the sweep (nothing more is exported)
            raise KeyboardInterrupt
        st = report["stages"]
        points.append({
            "budget": "100%" if m == "none" else budget, "method": m, "k": report["image_tokens"], "bundle": str(bundle),
            "accuracy": summary["accuracy"], "unpruned_accuracy": summary["accuracies"]["pytorch_unpruned"],
            "ttft_ms": st["ttft"]["p50_ms"], "vision_ms": st["vision"]["p50_ms"], "prefill_ms": st["prefill"]["p50_ms"],
            "decode_per_token_ms": st["decode_per_token"]["p50_ms"], "questions": summary["questions"],
        })
    points.sort(key=lambda p: p["k"], reverse=True)
    unpruned = points[0]["unpruned_accuracy"]
    front = pareto(points)
    for i, p in enumerate(points):
        p["drop_points"] = 100 * (unpruned - p["accuracy"])
        p["pareto"] = i in front
    pick = None
    if max_drop is not None:
        within = [p for p in points if p["accuracy"] >= unpruned - max_drop - 1e-12]
        pick = min(within, key=lambda p: p["k"]) if within else None
    result = {"model": spec.name, "method": method, "dataset": str(dataset), "backend": report["backend"],
              "machine": report["machine"], "settings": report["settings"], "unpruned_accuracy": unpruned,
              "max_accuracy_drop": max_drop, "pick": pick, "points": points}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", result)
    (out / "sweep.md").write_text(markdown(result) + "\n", encoding="utf-8")
    plot(result, out / "sweep.png")
    result["files"] = [str(out / name) for name in ("sweep.json", "sweep.md", "sweep.png")]
    return result


def markdown(result: dict[str, Any]) -> str:
    from edgecompress.bench.report import where

    m = result["machine"]
    points = result["points"]
    lines = [f"{result['model']}, {result['method']}: accuracy on `{result['dataset']}` ({points[0]['questions']} questions) "
             f"and p50 latency on {result['backend']} ({where(m)}, {m['cores']} cores); "
             f"unpruned model (PyTorch) {result['unpruned_accuracy']:.1%}", "",
             "| budget | K | accuracy | drop (points) | TTFT ms | vision ms | prefill ms | decode ms/token | Pareto |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['budget']} | {p['k']} | {p['accuracy']:.1%} | {p['drop_points']:+.1f} | {p['ttft_ms']:.2f} | "
                     f"{p['vision_ms']:.2f} | {p['prefill_ms']:.2f} | {p['decode_per_token_ms'] or 0:.2f} | "
                     f"{'yes' if p['pareto'] else ''} |")
    if result["max_accuracy_drop"] is not None:
        drop = 100 * result["max_accuracy_drop"]
        pick = result["pick"]
        lines += ["", f"smallest budget within {drop:g} points of the unpruned accuracy: "
                      + (f"**{pick['budget']}** (K={pick['k']}, {pick['accuracy']:.1%}, TTFT {pick['ttft_ms']:.2f} ms)"
                         if pick else "none of the budgets swept")]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against TTFT, one point per budget, the Pareto front joined, the pick ringed."""
    from PIL import Image, ImageDraw

    points = result["points"]
    width, height, left, right, top, bottom = 720, 480, 80, 40, 40, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    tmax = max(p["ttft_ms"] for p in points) * 1.1
    amin = max(0.0, min(p["accuracy"] for p in points) - 0.1)

    def at(p):
        return x0 + (x1 - x0) * p["ttft_ms"] / tmax, y0 - (y0 - y1) * (p["accuracy"] - amin) / (1 - amin)

    draw.text((left, 12), f"{result['model']} ({result['method']}): accuracy against TTFT, {result['backend']}", fill="black")
    for i in range(6):
        value = amin + (1 - amin) * i / 5
        y = y0 - (y0 - y1) * i / 5
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"{value:.0%}", fill="black")
        x = x0 + (x1 - x0) * i / 5
        draw.text((x - 12, y0 + 8), f"{tmax * i / 5:.0f}", fill="black")
    draw.rectangle((x0, y1, x1, y0), outline="black")
    draw.text(((x0 + x1) // 2 - 50, height - 26), "TTFT p50 (ms)", fill="black")
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["ttft_ms"])
    if len(front) > 1:
        draw.line([at(p) for p in front], fill=(214, 39, 40), width=2)
    for p in points:
        x, y = at(p)
        colour = (214, 39, 40) if p["pareto"] else (120, 120, 120)
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
        draw.text((x + 8, y - 14), f"{p['budget']} K={p['k']}", fill="black")
    if result.get("pick"):
        x, y = at(result["pick"])
        draw.ellipse((x - 10, y - 10, x + 10, y + 10), outline=(31, 119, 180), width=2)
    image.save(path)
