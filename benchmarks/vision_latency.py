"""Export time and vision-graph latency across budgets: ONNX Runtime vs PyTorch eager.

    python benchmarks/vision_latency.py                         # tiny-llava-random, fp32
    python benchmarks/vision_latency.py --model llava --random-weights --precision fp32 --runs 5

For each budget it exports a bundle (timed), then times one image through
  - the bundle's vision.onnx in ONNX Runtime (CPU),
  - the PyTorch module it was exported from (eager),
and, once, the unpruned transformers vision path (vision tower + projector via
``get_image_features``) as the baseline. Prints a Markdown table; times are medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llava-random")
    parser.add_argument("--budgets", default="100%,50%,20%,10%")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for both runtimes (0: library default)")
    args = parser.parse_args()

    import onnxruntime as ort
    from transformers.utils import logging as hf_logging

    from edgecompress import export_bundle
    from edgecompress.budget import resolve_budget
    from edgecompress.graph.spec import torch_dtype
    from edgecompress.models.llava import pruned_vision
    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model
    from edgecompress.methods import get_method

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.precision)
    spec = resolve_model(args.model)
    adapter = load_model(spec, dtype=dtype, random_weights=args.random_weights, vision_only=True)
    size = adapter.vision_config.image_size
    pixels = torch.from_numpy(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))

    rows = []
    with torch.no_grad():
        if adapter.model is not None:
            baseline = median_ms(
                lambda: adapter.model.model.get_image_features(
                    pixels.to(dtype), vision_feature_layer=adapter.config.vision_feature_layer,
                    vision_feature_select_strategy="default",
                ),
                args.runs,
            )
        else:  # random weights build the vision parts only
            def unpruned():
                hidden = adapter.vision_tower(pixels.to(dtype), output_hidden_states=True).hidden_states
                return adapter.projector(hidden[adapter.feature_hidden_state][:, 1:])

            baseline = median_ms(unpruned, args.runs)

    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            method = "none" if budget in ("100%", "1.0") else "hired"
            k = resolve_budget(budget, adapter.num_patches).k
            start = time.perf_counter()
            bundle = export_bundle(
                args.model, budget=None if method == "none" else budget, method=method,
                precision=args.precision, out=Path(tmp) / budget.strip("%"), random_weights=args.random_weights,
                vision_only=True,
            )
            export_s = time.perf_counter() - start
            session = ort.InferenceSession(str(bundle / "vision.onnx"), options, providers=["CPUExecutionProvider"])
            feed = {"pixel_values": pixels.numpy()}
            onnx_ms = median_ms(lambda: session.run(None, feed), args.runs)
            module = pruned_vision(adapter, get_method(method), k)
            with torch.no_grad():
                torch_ms = median_ms(lambda: module(pixels), args.runs)
            rows.append((budget, method, k, export_s, onnx_ms, torch_ms))

    print(f"\nmodel {spec.name}{' (random weights)' if args.random_weights else ''}, {args.precision}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"onnxruntime {ort.__version__}, torch {torch.__version__}; medians of {args.runs} runs\n")
    print("| budget | method | K | export (s) | vision ONNX Runtime (ms) | vision PyTorch eager (ms) | ORT speed-up vs unpruned transformers |")
    print("|---|---|---|---|---|---|---|")
    for budget, method, k, export_s, onnx_ms, torch_ms in rows:
        print(f"| {budget} | {method} | {k} | {export_s:.1f} | {onnx_ms:.2f} | {torch_ms:.2f} | {baseline / onnx_ms:.2f}x |")
    print(f"| (baseline) | transformers get_image_features, unpruned | {adapter.num_patches} | - | - | {baseline:.2f} | 1.00x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
