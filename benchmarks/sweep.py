"""Accuracy against budget: every method at budgets 5-100% on the shapes VQA test split.

    python benchmarks/sweep.py                       # tiny-llava, out/data-shapes (made if missing)
    python benchmarks/sweep.py --budgets 10%,20% --methods hired,random --out out/sweep-small
    python benchmarks/sweep.py --methods fastv --add   # one more method's rows in out/sweep's table

For each method and budget it exports a bundle (fp32), runs `edgecompress validate` on the test
split (the bundle in ONNX Runtime, the pruned and unpruned model in PyTorch; the unpruned
answers are computed once and shared by every bundle), times the bundle's vision graph and its
prefill (the language model over the prompt, up to the first token) in ONNX Runtime on the CPU
(medians of --runs on the first test question, in the same run as every other row, so the
columns compare methods on one machine; --retime re-measures the vision column only), and prints a Markdown table; it writes the table,
a JSON of every summary and a PNG plot of accuracy against budget (drawn with PIL) into --out.
`none` is the unpruned model (100%).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

COLOURS = {"none": (90, 90, 90), "hired": (214, 39, 40), "random": (31, 119, 180), "pool": (44, 160, 44),
           "vtc-cls": (255, 127, 14), "visionzip": (148, 103, 189), "divprune": (140, 86, 75), "dart": (227, 119, 194),
           "tome": (23, 190, 207), "tome+hired": (188, 189, 34), "fastv": (0, 0, 0)}


def vision_ms(bundle: Path, image: Path, runs: int) -> float:
    """Median time of the bundle's vision graph (ONNX Runtime, CPU) on one preprocessed image."""
    import statistics
    import time as clock

    import numpy as np
    import onnxruntime as ort

    from edgecompress_runtime import read_manifest
    from edgecompress_runtime.preprocess import preprocess

    manifest = read_manifest(bundle)
    pixels = preprocess(image, manifest.preprocess).astype(np.float32)
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: pixels})  # warm-up
    times = []
    for _ in range(runs):
        start = clock.perf_counter()
        session.run(None, {name: pixels})
        times.append(1000 * (clock.perf_counter() - start))
    return statistics.median(times)


def prefill_ms(bundle: Path, image: Path, question: str, runs: int) -> float:
    """Median time of the bundle's prefill (ONNX Runtime, CPU): the language model over the whole
    prompt, image tokens included, up to the first token's logits (FastV prunes inside it)."""
    import statistics

    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundle)
    pipe.generate_full(image, question, max_new_tokens=1)  # warm-up
    return statistics.median(1000 * pipe.generate_full(image, question, max_new_tokens=1).timings["prefill_s"]
                             for _ in range(runs))


def plot(results: dict[str, dict[float, float]], path: Path, title: str) -> None:
    """Accuracy (%) against budget (%), one line per method, as a PNG."""
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 760, 480, 70, 150, 40, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x0, x1, y0, y1 = left, width - right, height - bottom, top

    def at(budget: float, accuracy: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * budget / 100, y0 - (y0 - y1) * accuracy / 100

    draw.text((left, 12), title, fill="black")
    for value in range(0, 101, 20):  # grid and tick labels
        _, y = at(0, value)
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((x0 - 34, y - 6), f"{value}%", fill="black")
        x, _ = at(value, 0)
        draw.line((x, y0, x, y1), fill=(235, 235, 235))
        draw.text((x - 12, y0 + 8), f"{value}%", fill="black")
    draw.rectangle((x0, y1, x1, y0), outline="black")
    draw.text(((x0 + x1) // 2 - 60, height - 28), "visual-token budget", fill="black")
    draw.text((8, top - 24), "accuracy", fill="black")
    for row, (method, points) in enumerate(results.items()):
        colour = COLOURS.get(method, (0, 0, 0))
        xy = [at(b, a) for b, a in sorted(points.items())]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3)
        for x, y in xy:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        ly = top + 20 + row * 22
        draw.line((x1 + 16, ly, x1 + 46, ly), fill=colour, width=3)
        draw.text((x1 + 54, ly - 6), method, fill="black")
    image.save(path)


def answer_prior(test: Path) -> float | None:
    """Accuracy of answering without the image: the most frequent train-split answer for the
    question's text (or, for a text never seen, its type). None without a train split."""
    from collections import Counter, defaultdict

    train = test.with_name("train.jsonl")
    if not train.exists():
        return None
    by_text, by_type = defaultdict(Counter), defaultdict(Counter)
    for line in train.read_text().splitlines():
        row = json.loads(line)
        by_text[row["question"]][row["answer"]] += 1
        by_type[row.get("type")][row["answer"]] += 1
    rows = [json.loads(line) for line in test.read_text().splitlines() if line.strip()]
    right = sum((by_text[r["question"]] or by_type[r.get("type")] or Counter({"": 1})).most_common(1)[0][0] == r["answer"]
                for r in rows)
    return right / len(rows)


def report(summaries: list[dict], out: Path, model: str, test: Path) -> None:
    """The Markdown table (printed and written) and the PNG plot of a sweep's summaries."""
    unpruned = summaries[0]["accuracies"]["pytorch_unpruned"]
    prior = answer_prior(test)
    lines = [f"{model}, `{test}` ({summaries[0]['questions']} questions), bundles in ONNX Runtime (fp32); "
             f"unpruned accuracy {unpruned:.1%}"
             + (f"; without the image (the train split's most frequent answer to each question) {prior:.1%}"
                if prior is not None else ""), "",
             "| method | budget | K | accuracy | retained (of unpruned) | " + " | ".join(summaries[0]["by_type"]) +
             " | bundle = PyTorch pruned | vision ms (ORT CPU) | prefill ms (ORT CPU) |",
             "|---|---|---|---|---|" + "---|" * len(summaries[0]["by_type"]) + "---|---|---|"]
    for s in summaries:
        by_type = " | ".join(f"{entry['bundle']:.0%}" for entry in s["by_type"].values())
        retained = f"{s['accuracy'] / unpruned:.1%}" if unpruned else "-"
        lines.append(f"| {s['method']} | {s['budget']} | {s['k']} | {s['accuracy']:.1%} | "
                     f"{retained} | {by_type} | {s['agreement']['bundle_vs_pytorch_pruned']:.0%} | {s['vision_ms']:.2f} | "
                     + (f"{s['prefill_ms']:.2f} |" if "prefill_ms" in s else "- |"))
    table = "\n".join(lines)
    (out / "sweep.md").write_text(table + "\n")
    print("\n" + table)

    series: dict[str, dict[float, float]] = {"none": {100.0: 100 * summaries[0]["accuracy"]}}
    for s in summaries[1:]:
        series.setdefault(s["method"], {})[float(s["budget"].rstrip("%"))] = 100 * s["accuracy"]
    plot(series, out / "sweep.png", f"{model}: accuracy on {summaries[0]['questions']} shapes questions")
    print(f"\nwrote {out / 'sweep.md'}, {out / 'sweep.json'}, {out / 'sweep.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--data", type=Path, default=Path("out/data-shapes"), help="a shapes data set folder (made if missing)")
    parser.add_argument("--count", type=int, default=1000, help="images when the data set is made (20%% are the test split)")
    parser.add_argument("--seed", type=int, default=1, help="data set seed when it is made")
    parser.add_argument("--budgets", default="5%,10%,20%,30%,50%",
                        help="100%% is the unpruned row (`none`), measured once")
    parser.add_argument("--methods", default="hired,vtc-cls,visionzip,divprune,dart,tome,tome+hired,fastv,random,pool")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each vision graph")
    parser.add_argument("--out", type=Path, default=Path("out/sweep"))
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the vision column of --out's sweep.json, every graph one after the "
                             "other with nothing else running (vision-only exports), and rewrite the table")
    parser.add_argument("--add", action="store_true",
                        help="add --methods' rows to --out's sweep.json (rows of the same method and budget "
                             "replaced, the others kept) and rewrite the table")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from edgecompress import export_bundle
    from edgecompress.data.shapes import generate_shapes
    from edgecompress.errors import EdgeCompressError
    from edgecompress.validate import validate_bundle

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    test = args.data / "test.jsonl"
    if not test.exists():
        generate_shapes(args.data, count=args.count, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    first = json.loads(test.read_text().splitlines()[0])
    first_image, first_question = test.parent / first["image"], first["question"]
    if args.retime:
        summaries = json.loads((args.out / "sweep.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            for s in summaries:
                bundle = export_bundle(args.model, method=s["method"], budget=None if s["method"] == "none" else s["budget"],
                                       precision="fp32", vision_only=True, out=Path(tmp) / f"{s['method']}-{s['budget']}")
                s["vision_ms"] = vision_ms(bundle, first_image, args.runs)
                print(f"{s['method']:9} {s['budget']:>5}  vision {s['vision_ms']:.2f} ms", flush=True)
        (args.out / "sweep.json").write_text(json.dumps(summaries, indent=1))
        report(summaries, args.out, args.model, test)
        return 0
    budgets = args.budgets.split(",")
    runs = [("none", "100%")] + [(m, b) for m in args.methods.split(",") for b in budgets]
    summaries = []
    if args.add:  # the unpruned row comes from the earlier sweep
        summaries = json.loads((args.out / "sweep.json").read_text())
        runs = runs[1:]
        replaced = set(runs)
        summaries = [s for s in summaries if (s["method"], s["budget"]) not in replaced]
    unpruned: dict = {}  # the unpruned model's answers, shared by every bundle (same checkpoint, fp32)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for method, budget in runs:
            try:
                bundle = export_bundle(args.model, method=method, budget=None if method == "none" else budget,
                                       precision="fp32", out=Path(tmp) / f"{method}-{budget.rstrip('%')}")
            except EdgeCompressError as err:  # e.g. ToMe cannot merge down to a very small K
                print(f"{method:9} {budget:>5}  not exported: {err}", flush=True)
                continue
            summary, _ = validate_bundle(bundle, test, unpruned_cache=unpruned)
            summary.update(method=method, budget=budget, vision_ms=vision_ms(bundle, first_image, args.runs),
                           prefill_ms=prefill_ms(bundle, first_image, first_question, args.runs))
            summaries.append(summary)
            print(f"{method:9} {budget:>5}  K={summary['k']:4d}  bundle {summary['accuracy']:.1%}  "
                  f"vision {summary['vision_ms']:.2f} ms  ({time.time() - start:.0f}s)", flush=True)
    summaries.sort(key=lambda s: s["method"] != "none")  # the unpruned row first (an --add may bring it)
    (args.out / "sweep.json").write_text(json.dumps(summaries, indent=1))
    report(summaries, args.out, args.model, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
