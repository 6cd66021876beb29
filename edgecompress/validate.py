"""`edgecompress validate`: accuracy of a bundle on a visual-QA data set, next to PyTorch.

For every question it asks three pipelines and compares their normalised answers with the
reference answer (exact match after lower-casing, collapsing whitespace and dropping trailing
punctuation):

- ``bundle``: the bundle through edgecompress_runtime (ONNX Runtime, or TensorRT engines);
- ``pytorch_pruned``: the same checkpoint in PyTorch with the same selection method and K;
- ``pytorch_unpruned``: the checkpoint as transformers runs it, all visual tokens.

It also reports agreement (bundle vs PyTorch pruned: does the export change answers;
pruned vs unpruned: does pruning). Rows are appended to
``BUNDLE/reports/validate-<timestamp>.jsonl`` as they are computed, so an interrupted run loses
nothing already written; the summary goes to ``validate-<timestamp>.json`` (top-level
``"accuracy"`` is the bundle's) and ``.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgecompress.bundle import write_json
from edgecompress.errors import EdgeCompressError
from edgecompress_runtime.bundle import open_bundle
from edgecompress_runtime.manifest import Manifest

PIPELINES = ("bundle", "pytorch_pruned", "pytorch_unpruned")


@dataclass(frozen=True)
class Sample:
    image: Path
    question: str
    answer: str
    type: str
    line: int


def normalise(text: str) -> str:
    return re.sub(r"[.!?,;:]+$", "", " ".join(text.lower().split()))


def load_dataset(path: str | Path, limit: int | None = None) -> list[Sample]:
    """Samples of a JSONL data set, each line checked; image paths are relative to the file."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.jsonl"))
        hint = (f"Pass one of its files: {', '.join(str(path / name) for name in found)}." if found
                else "It holds no .jsonl file. Create a data set with: edgecompress dataset shapes --out data/")
        raise EdgeCompressError(f"data set {path} is a folder; --dataset wants a .jsonl file, one question a line", hint=hint)
    if not path.is_file():
        raise EdgeCompressError(f"data set {path} does not exist", hint="Create one with: edgecompress dataset shapes --out data/")
    samples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise EdgeCompressError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("image", "question", "answer")):
                raise EdgeCompressError(
                    f"{path}:{number} must be an object with string fields image, question and answer",
                    hint='Example: {"image": "images/00001.png", "question": "What colour is the circle?", "answer": "red", "type": "colour"}',
                )
            image = (path.parent / row["image"]).resolve()
            if not image.is_file():
                raise EdgeCompressError(f"{path}:{number}: image {row['image']} does not exist (looked in {image.parent})")
            samples.append(Sample(image, row["question"], row["answer"], str(row.get("type", "other")), number))
            if limit is not None and len(samples) >= limit:
                break
    if not samples:
        raise EdgeCompressError(f"data set {path} has no questions")
    return samples


class TorchPipelines:
    """The bundle's checkpoint in PyTorch, pruned as the bundle is and unpruned."""

    def __init__(self, manifest: Manifest):
        from edgecompress.graph.spec import torch_dtype

        from edgecompress.models.loading import load_model
        from edgecompress.recipes import resolve_model
        from edgecompress.methods import get_method

        source = manifest.source
        model = manifest.recipe_name if source.get("kind") == "recipe" else source.get("location", "")
        dtype = torch_dtype(manifest.precision)
        grid = manifest.preprocess.get("image_size") if manifest.positions else None  # Qwen2.5-VL: the bundle's grid
        self.adapter = load_model(resolve_model(model), dtype=dtype, random_weights=manifest.random_weights,
                                  image_size=grid)
        if self.adapter.text_source is None:
            raise EdgeCompressError("the bundle's checkpoint has no tokenizer available offline; PyTorch cannot be compared")
        self.processor = self.adapter.load_processor()
        method = get_method(manifest.method)
        # The pruned PyTorch module the bundle was exported from (same method and budget). An
        # unpruned LLaVA-NeXT bundle packs tokens as transformers does: its pruned pipeline is
        # transformers itself.
        self.pruned_decoder = None  # a method that prunes inside the language model: its prefill and decode modules
        pruning = manifest.decoder_pruning
        if pruning is None:
            self.vision = None if manifest.packs_newlines else self.adapter.plan_vision(method, manifest.budget_spec, manifest.precision).module
        else:
            self.vision = self.adapter.plan_vision(get_method("none"), "100%", manifest.precision).module
            prefill, decode = self.adapter.plan_pruned_decoder(method, pruning.layer, pruning.image_start,
                                                               pruning.image_tokens, pruning.kept_image_tokens,
                                                               manifest.precision)
            self.pruned_decoder = (prefill.module, decode.module)

    def answer(self, image, question: str, max_new_tokens: int, unpruned_cache: dict | None = None):
        """(pruned answer, unpruned answer, the pruned pipeline's ReferenceOutput or None when the
        bundle is unpruned and packed as transformers packs it). ``unpruned_cache`` keeps the
        unpruned model's outputs across bundles of the same checkpoint (a sweep)."""
        from edgecompress.reference import decoder_pruned_generate, pruned_generate, transformers_generate
        from edgecompress_runtime.preprocess import load_image

        original, image = image, load_image(image)  # as the runtime opens it: EXIF orientation applied
        decode = self.processor.tokenizer.decode
        key = (str(original), question, max_new_tokens) if isinstance(original, (str, Path)) else None
        full = None if unpruned_cache is None or key is None else unpruned_cache.get(key)
        if full is None:
            full = transformers_generate(self.adapter.model, self.processor, image, question, max_new_tokens)
            if unpruned_cache is not None and key is not None:
                unpruned_cache[key] = full
        if self.pruned_decoder is not None:
            pruned = decoder_pruned_generate(self.adapter.model, self.processor, self.vision, *self.pruned_decoder,
                                             image, question, max_new_tokens)
        else:
            pruned = None if self.vision is None else pruned_generate(
                self.adapter.model, self.processor, self.vision, image, question, max_new_tokens
            )
        pruned_ids = full.token_ids if pruned is None else pruned.token_ids
        return decode(pruned_ids, skip_special_tokens=True), decode(full.token_ids, skip_special_tokens=True), pruned


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def accuracy(subset, pipeline):
        return sum(r["correct"][pipeline] for r in subset) / len(subset)

    by_type: dict[str, list] = defaultdict(list)
    for row in rows:
        by_type[row["type"]].append(row)
    compared = [r["selection"] for r in rows if r.get("selection")]
    margins = [c["margin"] for c in compared if c["margin"] is not None]
    selection = None if not compared else {
        "compared": len(compared),
        "identical": sum(c["identical"] for c in compared) / len(compared),
        "agree_within_tie_band": sum(c["agree"] for c in compared) / len(compared),
        "min_margin": min(margins) if margins else None,
    }
    return {
        "questions": len(rows),
        "kept_tokens_vs_pytorch_pruned": selection,
        "accuracy": accuracy(rows, "bundle"),
        "accuracies": {p: accuracy(rows, p) for p in PIPELINES},
        "agreement": {
            "bundle_vs_pytorch_pruned": sum(r["answers"]["bundle"] == r["answers"]["pytorch_pruned"] for r in rows) / len(rows),
            "pytorch_pruned_vs_unpruned": sum(r["answers"]["pytorch_pruned"] == r["answers"]["pytorch_unpruned"] for r in rows) / len(rows),
        },
        "by_type": {t: {"questions": len(s), **{p: accuracy(s, p) for p in PIPELINES}} for t, s in sorted(by_type.items())},
    }


def markdown(summary: dict[str, Any], manifest: Manifest, dataset: str, backend: str) -> str:
    weights = manifest.data.get("weights")
    stored = f"{weights['format']} weights, {manifest.precision} activations" if weights else manifest.precision
    column = f"bundle ({weights['format']})" if weights else "bundle"
    lines = [
        f"# validate: {manifest.recipe_name} {manifest.method} K={manifest.k} ({stored})",
        "",
        f"data set `{dataset}`, {summary['questions']} questions, bundle backend `{backend}`"
        + (f"; the PyTorch pipelines run the {manifest.precision} weights the bundle was quantized from, so "
           "bundle vs PyTorch pruned is the quantization's cost" if weights else ""),
        "",
        f"| type | questions | {column} | PyTorch pruned | PyTorch unpruned |",
        "|---|---|---|---|---|",
    ]
    for kind, entry in summary["by_type"].items():
        lines.append(f"| {kind} | {entry['questions']} | " + " | ".join(f"{entry[p]:.1%}" for p in PIPELINES) + " |")
    lines.append(f"| **all** | {summary['questions']} | " + " | ".join(f"{summary['accuracies'][p]:.1%}" for p in PIPELINES) + " |")
    a = summary["agreement"]
    lines += ["", f"answer agreement: bundle vs PyTorch pruned {a['bundle_vs_pytorch_pruned']:.1%}, "
              f"PyTorch pruned vs unpruned {a['pytorch_pruned_vs_unpruned']:.1%}", ""]
    kept = summary.get("kept_tokens_vs_pytorch_pruned")
    if kept:
        margin = "" if kept["min_margin"] is None else f"; smallest selection margin {kept['min_margin']:.3g}"
        lines += [f"kept tokens, bundle vs PyTorch pruned: identical on {kept['identical']:.1%}, agree within the "
                  f"{manifest.precision} tie band on {kept['agree_within_tie_band']:.1%} of {kept['compared']} images{margin}", ""]
    return "\n".join(lines)


def _new_report_name(reports: Path) -> tuple[str, Path]:
    """validate-<timestamp>[-n]: unique even for runs started within the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = stamp, 1
    while any((reports / f"validate-{candidate}{ext}").exists() for ext in (".jsonl", ".json", ".md")):
        n += 1
        candidate = f"{stamp}-{n}"
    return candidate, reports / f"validate-{candidate}.jsonl"


def _validate_one(sample: Sample, pipe, torch_pipes: TorchPipelines, max_new_tokens: int, precision: str,
                  unpruned_cache: dict | None = None) -> dict[str, Any]:
    """One question through the three pipelines: answers, correctness, and whether the bundle
    kept the tokens the pruned PyTorch pipeline kept (under the tie-band rule)."""
    from edgecompress.parity import compare_selections

    generation = pipe.generate_full(sample.image, sample.question, max_new_tokens=max_new_tokens)
    pruned, unpruned, reference = torch_pipes.answer(sample.image, sample.question, max_new_tokens, unpruned_cache)
    answers = {"bundle": normalise(generation.text), "pytorch_pruned": normalise(pruned), "pytorch_unpruned": normalise(unpruned)}
    expected = normalise(sample.answer)
    selection = None
    if reference is not None and reference.kept_indices is not None:
        selection = compare_selections(generation.kept_indices, reference.kept_indices, reference.scores,
                                       precision=precision, accepts=reference.accepts).to_dict()
    return {
        "line": sample.line, "image": str(sample.image), "question": sample.question, "type": sample.type,
        "expected": expected, "answers": answers, "correct": {p: answers[p] == expected for p in PIPELINES},
        "selection": selection,
    }


def validate_bundle(
    bundle: str | Path,
    dataset: str | Path,
    *,
    backend: str = "onnxruntime",
    profile: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    unpruned_cache: dict | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run the three pipelines on the data set; returns the summary and the report's path.

    ``unpruned_cache``: a dict shared across calls on bundles of the same checkpoint (as
    ``benchmarks/sweep.py`` does), so the unpruned model answers each question once."""
    from edgecompress_runtime import Pipeline

    bundle = Path(bundle)
    manifest = open_bundle(bundle)
    samples = load_dataset(dataset, limit)
    pipe = Pipeline.load(bundle, backend=backend, profile=profile, check_hashes=False)  # checked just above
    torch_pipes = TorchPipelines(manifest)
    reports = bundle / "reports"
    made_reports = not reports.exists()
    try:
        reports.mkdir(exist_ok=True)
    except OSError as err:
        raise EdgeCompressError(f"cannot write reports into {bundle}: {err.strerror}",
                                hint="Validate a copy of the bundle in a folder you can write to.") from None
    stamp, rows_path = _new_report_name(reports)
    rows: list[dict[str, Any]] = []
    try:
        rows_file = open(rows_path, "x", encoding="utf-8")  # "x": never append to another run's rows
    except OSError as err:
        raise EdgeCompressError(f"cannot write the report {rows_path}: {err.strerror}") from None
    try:
        with rows_file as out:
            for index, sample in enumerate(samples):
                row = _validate_one(sample, pipe, torch_pipes, max_new_tokens, manifest.precision, unpruned_cache)
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                if on_progress:
                    on_progress(index + 1, len(samples))
    except BaseException:
        if not rows:  # nothing answered: no empty report left behind (answered rows are kept)
            rows_path.unlink(missing_ok=True)
            if made_reports:
                reports.rmdir()
        raise
    summary = {
        "bundle": str(bundle), "dataset": str(dataset), "backend": pipe.backend.name, "method": manifest.method,
        "k": manifest.k, "precision": manifest.precision, "max_new_tokens": max_new_tokens,
        **summarise(rows), "rows": rows_path.name,
    }
    report = reports / f"validate-{stamp}.json"
    write_json(report, summary)
    (reports / f"validate-{stamp}.md").write_text(markdown(summary, manifest, str(dataset), pipe.backend.name), encoding="utf-8")
    return summary, report
