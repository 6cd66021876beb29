"""Which selection rule keeps a Qwen2.5-VL closest to its unpruned self: the measurement behind
the Qwen recipes' default method.

    python benchmarks/qwen_methods.py                      # tiny-qwen2.5-vl, 20%, received/dart/random
    python benchmarks/qwen_methods.py --budgets 10%,20%,40% --images 40

No trained Qwen2.5-VL can be loaded here (nothing downloads), and the tiny checkpoint's weights are
seeded, so answer accuracy means nothing; what can be measured is fidelity: for each image and
question, how close the pruned bundle's next-token distribution after the prompt is to the
unpruned bundle's (KL divergence, unpruned || pruned, in nats: continuous, so it ranks rules even
where a seeded model's greedy answers are too chaotic to agree often), and whether its answer
agrees. Each method and budget is exported (fp32), then every bundle answers the same images
(synthetic scenes of varied sizes and aspect ratios, seeded) and questions greedily in ONNX
Runtime; the table gives the mean and median KL, the share of answers whose first token, and
whose whole answer (--new-tokens tokens), equal the unpruned bundle's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

QUESTIONS = ["What is in the picture?", "Describe the image in detail.", "How many shapes are there?",
             "What colour is the circle?"]


def scenes(count: int):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import scene

    sizes = [(448, 448), (640, 480), (480, 640), (1000, 300), (300, 1000), (800, 800), (1280, 720), (224, 224)]
    return [scene(*sizes[i % len(sizes)], seed=100 + i) for i in range(count)]


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

    def answers(bundle: Path):
        pipe = Pipeline.load(bundle)
        return [pipe.generate_full(image, q, max_new_tokens=args.new_tokens) for image, q in prompts]

    def kl(p_logits, q_logits) -> float:
        p = np.exp(p_logits - p_logits.max())
        p /= p.sum()
        log_p = np.log(p)
        log_q = q_logits - q_logits.max()
        log_q = log_q - np.log(np.exp(log_q).sum())
        return float((p * (log_p - log_q)).sum())

    print(f"exporting and running {args.model}: {len(images)} images x {len(QUESTIONS)} questions, "
          f"{args.new_tokens} tokens each", file=sys.stderr)
    unpruned = answers(export_bundle(args.model, method="none", out=root / "none", force=True))
    rows = []
    for budget in args.budgets.split(","):
        for method in args.methods.split(","):
            bundle = export_bundle(args.model, method=method, budget=budget, out=root / f"{method}-{budget.strip('%')}",
                                   force=True)
            got = answers(bundle)
            divergences = [kl(b.prefill_logits, a.prefill_logits) for a, b in zip(got, unpruned)]
            first = sum(a.token_ids[:1] == b.token_ids[:1] for a, b in zip(got, unpruned)) / len(got)
            whole = sum(a.token_ids == b.token_ids for a, b in zip(got, unpruned)) / len(got)
            rows.append((budget, method, float(np.mean(divergences)), float(np.median(divergences)), first, whole))
            print(f"  {budget} {method}: KL {np.mean(divergences):.4f} first {first:.3f} whole {whole:.3f}", file=sys.stderr)
    print(f"\n{args.model}: closeness to the unpruned bundle ({len(prompts)} prompts, {args.new_tokens} tokens)\n")
    print("| budget | method | next-token KL, mean (nats) | KL, median | first token = unpruned | whole answer = unpruned |")
    print("|---|---|---:|---:|---:|---:|")
    for budget, method, mean, median, first, whole in rows:
        print(f"| {budget} | {method} | {mean:.4f} | {median:.4f} | {first:.1%} | {whole:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
