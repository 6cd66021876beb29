"""Which selection rule keeps a Qwen2.5-VL closest to its unpruned self: the measurement behind
the Qwen recipes' default method.

    python benchmarks/qwen_methods.py                      # tiny-qwen2.5-vl, 20%, received/dart/random
    python benchmarks/qwen_methods.py --budgets 10%,20%,40% --images 40

No trained Qwen2.5-VL can be loaded here (nothing downloads), and the tiny checkpoint's weights are
seeded, so answer accuracy means nothing; what can be measured is fidelity: for each image and
question, whether the pruned bundle gives the unpruned bundle's answer. Each method and budget is
exported (fp32), then every bundle answers the same images (synthetic scenes of varied sizes and
aspect ratios, seeded) and questions greedily in ONNX Runtime; the table gives the share of
answers whose first token, and whose whole answer (--new-tokens tokens), equal the unpruned
bundle's, and the mean length of the common prefix.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

QUESTIONS = ["What is in the picture?", "Describe the image in detail.", "How many shapes are there?",
             "What colour is the circle?"]


def scenes(count: int):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import scene

    sizes = [(448, 448), (640, 480), (480, 640), (1000, 300), (300, 1000), (800, 800), (1280, 720), (224, 224)]
    return [scene(*sizes[i % len(sizes)], seed=100 + i) for i in range(count)]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen2.5-vl")
    parser.add_argument("--methods", default="received,dart,random")
    parser.add_argument("--budgets", default="20%")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="where to keep the bundles (default: a temporary folder)")
    args = parser.parse_args(argv)

    from edgecompress import export_bundle
    from edgecompress_runtime import Pipeline

    root = args.out or Path(tempfile.mkdtemp(prefix="qwen-methods-"))
    images = scenes(args.images)
    prompts = [(image, question) for image in images for question in QUESTIONS]

    def answers(bundle: Path) -> list[list[int]]:
        pipe = Pipeline.load(bundle)
        return [pipe.generate_full(image, q, max_new_tokens=args.new_tokens).token_ids for image, q in prompts]

    print(f"exporting and running {args.model}: {len(images)} images x {len(QUESTIONS)} questions, "
          f"{args.new_tokens} tokens each", file=sys.stderr)
    unpruned = answers(export_bundle(args.model, method="none", out=root / "none", force=True))
    rows = []
    for budget in args.budgets.split(","):
        for method in args.methods.split(","):
            bundle = export_bundle(args.model, method=method, budget=budget, out=root / f"{method}-{budget.strip('%')}",
                                   force=True)
            got = answers(bundle)
            first = sum(a[:1] == b[:1] for a, b in zip(got, unpruned)) / len(got)
            whole = sum(a == b for a, b in zip(got, unpruned)) / len(got)
            prefix = sum(common_prefix(a, b) for a, b in zip(got, unpruned)) / len(got)
            rows.append((budget, method, first, whole, prefix))
            print(f"  {budget} {method}: first {first:.3f} whole {whole:.3f}", file=sys.stderr)
    print(f"\n{args.model}: agreement with the unpruned bundle ({len(prompts)} answers, {args.new_tokens} tokens)\n")
    print("| budget | method | first token = unpruned | whole answer = unpruned | mean common prefix (tokens) |")
    print("|---|---|---:|---:|---:|")
    for budget, method, first, whole, prefix in rows:
        print(f"| {budget} | {method} | {first:.1%} | {whole:.1%} | {prefix:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
