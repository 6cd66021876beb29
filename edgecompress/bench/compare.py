"""`edgecompress compare`: the same inputs through several (bundle, backend) pairs, each against the first.

Every pair runs the whole pipeline on the same images and prompt (its own preprocessing, vision
graph, prefill and greedy decode), and every pair after the first is compared with the first,
the reference, on four outputs:

- ``image_embeds``, the vision graph's output, and the prefill's logits at the last prompt
  position: the largest absolute difference, and the *relative error*
  ``max|a - b| / max|reference|`` (the largest difference over the reference's largest
  magnitude). Elementwise relative error (``|a - b| / |a|``, as ``numpy.allclose`` reads
  ``rtol``) is not used: logits and embedding components cross zero, and a component of 1e-6
  that fp16 rounds to 0 would read as 100% error though nothing downstream can see it. Relative
  to the tensor's own scale, the error measures what a softmax or a matrix product of these
  values sees, for any model's scale.
- the kept token indices: overlap (how many of the K the two share), identical or not, and
  whether they *agree* under the tie-band rule of :mod:`edgecompress.parity`: every index one
  keeps and the other does not scores within the band of the cut-off, by the reference scores
  that PyTorch computes from the reference bundle's checkpoint (in fp32). Where PyTorch or the
  checkpoint is not available (a torch-free machine, a ``--random-weights`` bundle), or the
  method ranks no scores, the margin is reported as not available with the reason, and only
  identical indices agree (a method with no single ranking, such as DivPrune, is replayed
  instead: its ``accepts`` check, where PyTorch is available).
- greedy tokens (``new_tokens`` of them): whether they agree, and the first position where
  they diverge.

Tolerances, by the less precise precision of the pair (a pair is as exact as its coarser side).
Measured first: fp32 against fp16 bundles of the same model (hired, 20%), ONNX Runtime CPU, 60
generated pictures per model (seeds 0, 1, 2; 20 each), the largest relative error over them:

    model               image_embeds  logits (kept identical)  logits (near-tie swap)  kept agree  tokens agree
    tiny-llava          1.44e-3       6.4e-4  (58 pictures)    3.0e-2 (2 pictures)     60/60       60/60
    tiny-llava-random   1.88e-3       1.31e-3 (47 pictures)    7.2e-3 (13 pictures)    60/60       59/60

- fp32 against fp32: relative error 1e-4. Two correct fp32 runs differ only by the order in
  which kernels accumulate: a few hundred ulps (1 ulp = 1.2e-7) on the deepest path, a few 1e-5
  of the largest value at most; measured, a bundle against itself gives exactly 0. The bound is
  ten times below what fp16 rounding of the same graph gives (1e-3, above): an fp32 pair that
  a stray half-precision cast moved that far fails.
- any fp16: relative error 1e-2. fp16 keeps 11 significant bits (1 ulp = 9.8e-4 relative): the
  measurements above are about two ulps. The bound is five times the largest measurement
  (1.9e-3), room for deeper models whose error grows with the layers, and still below what one
  swapped image token does to the logits (up to 3e-2 measured), so a graph that changes any
  token's embedding shows.
- kept indices pass when they agree under the tie band of the pair's precision
  (``TIE_BAND``: 1e-5 fp32, 4e-3 fp16, relative to the cut-off score), or, without reference
  scores, only when identical. Measured above: 60/60 agree for both models, 15 of the 120
  pictures by a near-tie swap (the closest cut-off 0.006 tie bands from a tie). Where a near-tie swapped tokens, the pairs read different
  inputs: the image embeddings are compared on the rows of the tokens both kept, and the
  logits and tokens of that image are reported but not held to the bound.
- greedy tokens fail only an fp32-fp32 pair. In fp16 two candidate tokens whose logits lie
  within fp16 rounding of each other (a near-tie, common in an untrained or barely trained
  model) can legitimately swap, and from there the continuation differs: for pairs with fp16
  the tokens are reported, never failed.

The report goes to ``FIRST_BUNDLE/reports/compare-<UTC timestamp>.json``, written through a
temporary file and never over an existing report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecompress.errors import EdgeCompressError
from edgecompress.parity import TIE_BAND, compare_selections
from edgecompress.steps import Steps
from edgecompress_runtime.bundle import open_bundle
from edgecompress_runtime.manifest import Manifest

DEFAULT_PROMPT = "How many shapes are there?"  # the default images are shapes pictures
PRECISIONS = ("fp32", "fp16")  # most precise first
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # reasoning and measurements: module docstring
# Quantized language-model weights (the vision graph is not quantized: embeddings and kept
# tokens keep the precision's bounds): the logits' bound. Measured against the fp32 bundle on
# tiny-llava (3 shapes pictures, group 32): int8 GPTQ 1.1e-3, int4 GPTQ 9.9e-3, int4 RTN 2.3e-2.
WEIGHTS_LOGIT_TOLERANCE = {"int8": 5e-3, "int4": 5e-2}
PICTURE_SIZE = (336, 336)


@dataclass(frozen=True)
class Tolerance:
    """What a pair is held to, set by its less precise side."""

    precision: str
    relative: float  # image_embeds and logits: max|a - b| / max|reference|
    tie_band: float  # relative to the cut-off score (edgecompress.parity)
    tokens_must_match: bool
    logits_relative: float | None = None  # the logits' own bound (quantized weights); None: ``relative``

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EdgeCompressError(f"compare has no tolerance for precision {precision!r}",
                                hint=f"It compares bundles of {', '.join(PRECISIONS)}.")


def coarser(a: str, b: str) -> str:
    """The less precise of two precisions."""
    check_precision(a)
    check_precision(b)
    return max(a, b, key=PRECISIONS.index)


def tolerance_for(a: str, b: str, relative: float | None = None, weights: str | None = None) -> Tolerance:
    """The tolerance of a pair of precisions (``relative`` overrides the embeddings/logits bound);
    ``weights`` int8/int4 when either side has quantized weights: the logits get that format's
    bound and the greedy tokens are reported, not held (quantization may flip a near-tie)."""
    precision = coarser(a, b)
    tolerance = Tolerance(precision, RELATIVE_TOLERANCE[precision] if relative is None else relative,
                          TIE_BAND[precision], tokens_must_match=precision == "fp32" and weights is None)
    if weights is not None and relative is None:
        tolerance = dataclasses.replace(tolerance, logits_relative=WEIGHTS_LOGIT_TOLERANCE[weights])
    return tolerance


def errors(reference, other) -> dict[str, float]:
    """Largest absolute difference, and relative error: max|a - b| over max|reference| (0 when
    equal; infinite where the reference is all zeros or either side is not finite)."""
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise EdgeCompressError(f"outputs of shapes {reference.shape} and {other.shape} cannot be compared")
    if reference.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    if not (np.isfinite(reference).all() and np.isfinite(other).all()):
        return {"max_abs": float("inf"), "max_rel": float("inf")}
    max_abs = float(np.abs(reference - other).max())
    scale = float(np.abs(reference).max())
    return {"max_abs": max_abs, "max_rel": 0.0 if max_abs == 0 else (max_abs / scale if scale > 0 else float("inf"))}


def shared_rows(reference, reference_kept, other, other_kept) -> tuple[np.ndarray, np.ndarray]:
    """The rows of two [1, K, D] image-embedding arrays that hold the same token: all of them when
    the kept indices are identical, those of the tokens both kept when a near-tie swapped some."""
    a, b = np.asarray(reference)[0], np.asarray(other)[0]
    ka, kb = np.asarray(reference_kept).reshape(-1), np.asarray(other_kept).reshape(-1)
    if ka.shape == kb.shape and (ka == kb).all():
        return a, b
    where = {int(token): row for row, token in enumerate(kb)}
    rows = [(i, where[int(token)]) for i, token in enumerate(ka) if int(token) in where]
    return a[[i for i, _ in rows]], b[[j for _, j in rows]]


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two token sequences differ (one ending early counts), or None."""
    for position, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


# -- inputs ------------------------------------------------------------------------------------


def input_images(paths: Sequence[str | Path] = (), count: int = 0, seed: int = 0) -> list[tuple[str, Any]]:
    """(name, PIL image) of every input: the given files, then ``count`` shapes pictures drawn
    from ``seed`` (the same seed, the same pictures)."""
    from edgecompress.data.shapes import draw_picture
    from edgecompress_runtime.preprocess import load_image

    images = [(str(path), load_image(path)) for path in paths]
    rng = np.random.default_rng(seed)
    images += [(f"shapes-seed{seed}-{i}", draw_picture(rng, *PICTURE_SIZE)) for i in range(count)]
    if not images:
        raise EdgeCompressError("compare has no input images", hint="Pass --images N (generated pictures) or --image PATH.")
    return images


# -- the pairs -----------------------------------------------------------------------------------


def check_comparable(manifests: Sequence[tuple[Path, Manifest]]) -> list[str]:
    """Refuse bundles whose outputs cannot be set side by side (another method, K, image-token
    count, embedding shape, vocabulary or tokenizer); returns notes on what may differ."""
    (first_path, first), notes = manifests[0], []

    def facts(m: Manifest) -> dict[str, Any]:
        vision = {t.name: t.shape for t in m.graphs["vision"].outputs} if "vision" in m.graphs else {}
        tokenizer = m.files.get(m.tokenizer_file) if m.tokenizer_file else None
        return {
            "method": m.method, "K": m.k, "image tokens N": m.n, "image_embeds shape": vision.get("image_embeds"),
            "vocabulary": m.architecture.get("text_config", {}).get("vocab_size"),
            "tokenizer": tokenizer.sha256[:12] if tokenizer else None, "prompt template": m.prompt_template,
        }

    reference = facts(first)
    for path, manifest in manifests[1:]:
        other = facts(manifest)
        different = [f"{key} {reference[key]!r} vs {other[key]!r}" for key in reference if reference[key] != other[key]]
        if different:
            raise EdgeCompressError(
                f"{first_path} and {path} cannot be compared: " + "; ".join(different),
                hint="compare sets side by side bundles of the same model, method and K (fp32 against fp16, "
                     "one backend against another); to compare methods or budgets, use edgecompress validate on each.",
            )
        if manifest.source != first.source:
            notes.append(f"{path.name} was exported from another checkpoint ({manifest.source.get('location', '?')}): "
                         "its differences measure the weights, not only the export")
    return notes


@dataclass
class Target:
    """One (bundle, backend) pair, loaded."""

    label: str
    bundle: Path
    manifest: Manifest
    pipe: Any  # edgecompress_runtime.Pipeline
    tap: "_VisionTap"

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def weights(self) -> str | None:
        """int8 / int4 for a bundle with quantized language-model weights."""
        return (self.manifest.data.get("weights") or {}).get("format")

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "bundle": str(self.bundle), "backend": self.pipe.backend.name,
                "precision": self.precision, "method": self.manifest.method, "k": self.manifest.k}


class _VisionTap:
    """Wraps a backend and keeps what its vision graph last returned: the pipeline hands on only
    the kept indices, compare needs the image embeddings too."""

    def __init__(self, backend):
        self._backend = backend
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def vision(self, feeds):
        self.last = self._backend.vision(feeds)
        return self.last

    def __getattr__(self, name):
        return getattr(self._backend, name)


def load_targets(bundles: Sequence[str | Path], backends: Sequence[str], profile: str | None = None
                 ) -> tuple[list[Target], list[str]]:
    """Every (bundle, backend) pair, bundles checked (schema, hashes, comparability) before any
    backend starts; and the notes of the comparability check."""
    from edgecompress_runtime import Pipeline
    from edgecompress_runtime.backends import make_backend

    if not bundles:
        raise EdgeCompressError("compare needs at least one bundle")
    if not backends:
        raise EdgeCompressError("--backends names no backend", hint="For example: --backends onnxruntime,onnxruntime-cuda")
    if len(bundles) * len(backends) < 2:
        raise EdgeCompressError(
            "compare needs at least two (bundle, backend) pairs; got one",
            hint="Pass a second bundle (edgecompress compare A B), or two backends (--backends onnxruntime,onnxruntime-cuda).",
        )
    manifests = [(Path(b), open_bundle(Path(b))) for b in bundles]
    for _, manifest in manifests:
        check_precision(manifest.precision)
    notes = check_comparable(manifests)
    targets, seen = [], {}
    for path, manifest in manifests:
        for name in backends:
            try:
                backend = make_backend(name, path, manifest, profile=profile)
            except EdgeCompressError as err:  # say which pair: compare starts several
                raise EdgeCompressError(f"{path} on {name}: {err.args[0]}", hint=err.hint) from None
            tap = _VisionTap(backend)
            label = f"{path.name} on {backend.name}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            targets.append(Target(label, path, manifest, Pipeline(path, manifest, tap), tap))
    return targets, notes


# -- reference scores ------------------------------------------------------------------------------


class ReferenceScores:
    """The selection scores of the reference bundle's checkpoint in PyTorch (fp32), image by
    image, where they can be had; ``reason`` says why not where they cannot."""

    def __init__(self, manifest: Manifest, enabled: bool = True):
        self.method = manifest.method
        self.reason: str | None = None
        self._torch = None
        self._replays = False  # a method with no single ranking: another selection is checked by replaying it
        if not enabled:
            self.reason = "--no-margins was given"
        elif manifest.k >= manifest.n and manifest.decoder_pruning is None:
            self.reason = f"{manifest.method} keeps every image token: there is no cut-off"
        elif manifest.random_weights:
            self.reason = "the bundle was exported with --random-weights: there is no checkpoint to score with"
        else:
            self._load(manifest)

    def _load(self, manifest: Manifest) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            self.reason = "PyTorch is not installed here (the edgecompress compiler's environment has it)"
            return
        from edgecompress.methods import get_method
        from edgecompress.validate import TorchPipelines

        method = get_method(manifest.method)
        if method.score is None and method.accepts is None:
            self.reason = f"{manifest.method} ranks no scores: its selection does not come from a ranking"
            return
        self._replays = method.accepts is not None
        try:  # fp32 whatever the bundle's precision: the scores are the truth the tie band is measured from
            pipes = TorchPipelines(dataclasses.replace(manifest, precision="fp32"))
        except (EdgeCompressError, OSError) as err:
            self.reason = f"the checkpoint cannot be loaded in PyTorch: {str(err).strip().splitlines()[0]}"
            return
        if pipes.vision is None and pipes.pruned_decoder is None:
            self.reason = f"{manifest.method} keeps every image token: there is no cut-off"
            return
        self._torch = pipes

    @property
    def available(self) -> bool:
        """Whether margins were computed (read after the images ran: a method may rank nothing)."""
        return self._torch is not None and self.reason is None

    def for_image(self, image, prompt: str):
        """(scores or None, accepts or None) for one image: what compare_selections takes."""
        if self._torch is None:
            return None, None
        import torch

        from edgecompress.reference import decoder_pruned_generate, vision_inputs

        pipes = self._torch
        model, processor = pipes.adapter.model, pipes.processor
        with torch.no_grad():
            if pipes.pruned_decoder is not None:  # the scores the prefill ranks by, at its decoder layer
                reference = decoder_pruned_generate(model, processor, pipes.vision, *pipes.pruned_decoder, image, prompt, 1)
                return reference.scores, None
            inputs = vision_inputs(model, processor, image)
            score = getattr(pipes.vision, "selection_scores", None)
            scores = None if score is None else score(*inputs)
        check = getattr(pipes.vision, "accepts_selection", None) if self._replays else None
        accepts = None if check is None else (lambda kept, band: check(*inputs, kept, band))
        if scores is None and self.reason is None:
            self.reason = (f"{self.method} has no single ranking; its selection is checked by replaying it on the reference's inputs"
                           if accepts is not None else f"this {model.config.model_type} model's {self.method} module gives no scores")
        return (None if scores is None else scores[0].tolist()), accepts


# -- comparing -------------------------------------------------------------------------------------


@dataclass
class Outputs:
    image_embeds: np.ndarray
    vision_kept: np.ndarray  # the vision graph's kept indices: which token each embedding row is
    kept: np.ndarray  # the kept image tokens (a decoder-pruning method: the prefill's)
    logits: np.ndarray
    tokens: list[int]


def run_target(target: Target, image, prompt: str, new_tokens: int) -> Outputs:
    generation = target.pipe.generate_full(image, prompt, max_new_tokens=new_tokens)
    embeds, vision_kept = target.tap.last
    return Outputs(np.asarray(embeds), np.asarray(vision_kept), np.asarray(generation.kept_indices).reshape(-1),
                   generation.prefill_logits, list(generation.token_ids))


def compare_image(reference: Outputs, other: Outputs, tolerance: Tolerance, scores, accepts) -> dict[str, Any]:
    """One image, one pair: errors, kept-index agreement, tokens; with what failed."""
    selection = compare_selections(other.kept, reference.kept, scores, precision=tolerance.precision, accepts=accepts)
    k = len(reference.kept)
    overlap = len(set(map(int, reference.kept)) & set(map(int, other.kept)))
    rows = shared_rows(reference.image_embeds, reference.vision_kept, other.image_embeds, other.vision_kept)
    embeds = {**errors(*rows), "rows_compared": len(rows[0])}
    logits = errors(reference.logits, other.logits)
    divergence = first_divergence(reference.tokens, other.tokens)
    check = "tie band" if scores is not None else "replay" if accepts is not None else "identical only"
    judged = selection.identical  # after a near-tie swap the pairs read different inputs: reported, not judged
    within = {  # None: reported, not judged
        "image_embeds": embeds["max_rel"] <= tolerance.relative,
        "logits": logits["max_rel"] <= (tolerance.logits_relative or tolerance.relative) if judged else None,
        "kept": selection.agree,
        "tokens": divergence is None if judged and tolerance.tokens_must_match else None,
    }
    failures = {
        "image_embeds": f"image_embeds relative error {embeds['max_rel']:.3g} > {tolerance.relative:g}",
        "logits": f"logits relative error {logits['max_rel']:.3g} > {tolerance.logits_relative or tolerance.relative:g}",
        "kept": f"kept indices differ ({len(selection.differing)} indices), " + {
            "tie band": f"outside the {tolerance.precision} tie band of the cut-off",
            "replay": "and replaying the method does not arrive at the other selection",
            "identical only": "and without reference scores only identical selections agree"}[check],
        "tokens": f"greedy tokens diverge at position {divergence}",
    }
    return {
        "image_embeds": embeds,
        "logits": logits,
        "kept": {"k": k, "overlap": overlap, "identical": selection.identical, "agree": selection.agree, "check": check,
                 "margin": selection.margin, "band": selection.band,
                 "margin_bands": selection.margin / selection.band if selection.margin is not None and selection.band else None,
                 "differing": selection.differing},
        "tokens": {"agree": divergence is None, "first_divergence": divergence,
                   "reference": reference.tokens, "other": other.tokens},
        "within": within,
        "failures": [failures[output] for output, ok in within.items() if ok is False],
    }


def summarise_pair(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def worst(output: str, key: str) -> float:
        return max(r[output][key] for r in rows)

    def within(output: str) -> bool | None:
        judged = [r["within"][output] for r in rows if r["within"][output] is not None]
        return all(judged) if judged else None

    judged = [r["logits"]["max_rel"] for r in rows if r["within"]["logits"] is not None]
    margins = [r["kept"]["margin"] for r in rows if r["kept"]["margin"] is not None]
    in_bands = [r["kept"]["margin_bands"] for r in rows if r["kept"]["margin_bands"] is not None]
    divergences = [(i, r["tokens"]["first_divergence"]) for i, r in enumerate(rows) if not r["tokens"]["agree"]]
    return {
        "image_embeds": {"max_abs": worst("image_embeds", "max_abs"), "max_rel": worst("image_embeds", "max_rel")},
        "logits": {"max_abs": worst("logits", "max_abs"), "max_rel": worst("logits", "max_rel"),
                   "judged_images": len(judged), "max_rel_judged": max(judged) if judged else None},
        "kept": {
            "k": rows[0]["kept"]["k"],
            "min_overlap": min(r["kept"]["overlap"] for r in rows),
            "identical": sum(r["kept"]["identical"] for r in rows),
            "agree": sum(r["kept"]["agree"] for r in rows),
            "check": rows[0]["kept"]["check"],
            "min_margin": min(margins) if margins else None,
            "min_margin_bands": min(in_bands) if in_bands else None,  # the smallest margin over its image's tie band
        },
        "tokens": {"agree": sum(r["tokens"]["agree"] for r in rows),
                   "divergences": [{"image": i, "position": p} for i, p in divergences]},
        "images": len(rows),
        "within": {output: within(output) for output in rows[0]["within"]},  # None: reported on every image, never judged
        "passed": not any(r["failures"] for r in rows),
    }


def _finite(value):
    """JSON has no infinity or NaN: a non-finite number is written as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compare_bundles(
    bundles: Sequence[str | Path],
    backends: Sequence[str] = ("onnxruntime",),
    *,
    image_paths: Sequence[str | Path] = (),
    generated: int = 3,
    seed: int = 0,
    prompt: str = DEFAULT_PROMPT,
    new_tokens: int = 16,
    relative: float | None = None,
    profile: str | None = None,
    margins: bool = True,
    steps: Steps | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run the inputs through every (bundle, backend) pair and compare each with the first;
    returns the report and the path it was written to (``report["passed"]``: every pair within
    its tolerance)."""
    steps = steps or Steps()
    if new_tokens < 1:
        raise EdgeCompressError(f"--new-tokens must be at least 1, got {new_tokens}")
    if relative is not None and not relative >= 0:
        raise EdgeCompressError(f"--rtol must be a number at least 0, got {relative}")
    images = input_images(image_paths, generated, seed)
    with steps.step("load", "Loading the bundles"):
        targets, notes = load_targets(bundles, backends, profile)
    reference, others = targets[0], targets[1:]
    for target in targets:
        target.pipe.prompt_ids(prompt)  # an empty prompt, or one the bundle refuses: now, not after PyTorch loads
    if margins:
        with steps.step("scores", "Loading the reference scores (PyTorch)"):
            scores = ReferenceScores(reference.manifest)
    else:
        scores = ReferenceScores(reference.manifest, enabled=False)
    tolerances = [tolerance_for(reference.precision, t.precision, relative, weights=reference.weights or t.weights)
                  for t in others]
    rows: list[list[dict[str, Any]]] = [[] for _ in others]
    names = [name for name, _ in images]
    with steps.step("run", f"Running {len(images)} image(s) through {len(targets)} pairs"):
        for name, image in images:
            expected = run_target(reference, image, prompt, new_tokens)
            image_scores, accepts = scores.for_image(image, prompt)
            for index, (target, tolerance) in enumerate(zip(others, tolerances)):
                row = compare_image(expected, run_target(target, image, prompt, new_tokens), tolerance, image_scores, accepts)
                rows[index].append({"image": name, **row})
    comparisons = []
    for target, tolerance, pair_rows in zip(others, tolerances, rows):
        comparisons.append({**target.describe(), "tolerance": tolerance.to_dict(),
                            **summarise_pair(pair_rows), "per_image": pair_rows})
    report = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": reference.describe(),
        "inputs": {"images": names, "prompt": prompt, "new_tokens": new_tokens, "seed": seed},
        "margins": {"available": scores.available, "reason": scores.reason},
        "notes": notes,
        "comparisons": comparisons,
        "passed": all(c["passed"] for c in comparisons),
    }
    return report, write_report(reference.bundle / "reports", report)


def write_report(reports: Path, report: dict[str, Any]) -> Path:
    """``reports/compare-<UTC timestamp>.json`` (``-2``, ``-3``... for runs within the same second),
    through a temporary file: a reader never sees half a report, and no report is overwritten."""
    try:
        reports.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        temporary = reports / f".compare-{stamp}-{os.getpid()}.tmp"
        temporary.write_text(json.dumps(_finite(report), indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise EdgeCompressError(f"cannot write the report into {reports}: {err.strerror}",
                                hint="Compare a copy of the first bundle in a folder you can write to.") from None
    try:
        n = 1
        while True:
            path = reports / (f"compare-{stamp}.json" if n == 1 else f"compare-{stamp}-{n}.json")
            if not path.exists():
                try:
                    os.link(temporary, path)  # fails if the name was taken meanwhile: never clobbers
                    return path
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links: the check above, then a rename
                    os.replace(temporary, path)
                    return path
            n += 1
    finally:
        temporary.unlink(missing_ok=True)


# -- display ---------------------------------------------------------------------------------------


def render(report: dict[str, Any]):
    """(a rich table, lines to print under it): a section of rows per pair compared with the reference."""
    from rich.table import Table

    ref, inputs = report["reference"], report["inputs"]
    table = Table(title=f"against {ref['label']} ({ref['precision']}, {ref['method']} K={ref['k']}), "
                        f"{len(inputs['images'])} images, {inputs['new_tokens']} new tokens",
                  show_edge=False, pad_edge=False)
    for column in ("pair", "output", "measured", "bound", ""):
        table.add_column(column)
    verdicts = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "-"}
    for c in report["comparisons"]:
        t, kept, tokens, n, within = c["tolerance"], c["kept"], c["tokens"], c["images"], c["within"]
        for output in ("image_embeds", "logits"):
            measured = f"max abs {c[output]['max_abs']:.2g}, rel {c[output]['max_rel']:.2g}"
            if output == "logits" and c["logits"]["judged_images"] < n:
                judged = c["logits"]["max_rel_judged"]
                measured += f"; judged {c['logits']['judged_images']}/{n}" + ("" if judged is None else f": rel {judged:.2g}")
            bound = t["logits_relative"] if output == "logits" and t.get("logits_relative") else t["relative"]
            table.add_row(f"{c['label']} ({c['precision']})" if output == "image_embeds" else "", output, measured,
                          f"rel {bound:g}", verdicts[within[output]])
        table.add_row("", "kept indices", f"overlap {kept['min_overlap']}/{kept['k']}, identical {kept['identical']}/{n}, "
                      f"agree {kept['agree']}/{n}",
                      {"tie band": f"{t['precision']} tie band {t['tie_band']:g}", "replay": f"replayed, {t['precision']} band",
                       "identical only": "identical"}[kept["check"]],
                      verdicts[within["kept"]])
        bands = "" if kept["min_margin_bands"] is None else f" ({kept['min_margin_bands']:.2g} tie bands)"
        table.add_row("", "cut-off margin", "not available" if kept["min_margin"] is None else
                      f"smallest {kept['min_margin']:.2g}{bands}", "", "")
        diverged = "; ".join(f"image {d['image']} at token {d['position']}" for d in tokens["divergences"])
        table.add_row("", "greedy tokens", f"agree {tokens['agree']}/{n}" + (f" (diverge: {diverged})" if diverged else ""),
                      "identical" if t["tokens_must_match"] else
                      f"reported ({'quantized weights' if t.get('logits_relative') else t['precision']})", verdicts[within["tokens"]],
                      end_section=True)
    lines = []
    if report["margins"]["reason"]:
        lines.append(f"margin: not available ({report['margins']['reason']})")
    for c in report["comparisons"]:
        for row in c["per_image"]:
            if not row["kept"]["identical"]:
                why = (f"a near-tie swapped {len(row['kept']['differing']) // 2} kept token(s)" if row["kept"]["agree"]
                       else "the kept tokens differ")
                lines.append(f"{c['label']}, {row['image']}: {why}; logits and tokens reported, not judged")
            lines += [f"{c['label']}, {row['image']}: {failure}" for failure in row["failures"]]
    lines += [f"note: {note}" for note in report["notes"]]
    return table, lines
