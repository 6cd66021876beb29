"""Peak host memory of a full export (vision + decoder graphs, embeddings, tokenizer) against
the model's fp16 weight size. Goal: below 2.5x.

    python benchmarks/export_memory.py                                   # ~1B LLaVA architecture
    python benchmarks/export_memory.py --model tiny-llava --precision fp32

Runs `edgecompress export MODEL --random-weights` in a child process and reads the child's
peak resident set size (getrusage RUSAGE_CHILDREN, Linux: kilobytes).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def count_parameters(model: str) -> int:
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from edgecompress.recipes import resolve_model

    config = LlavaConfig(**resolve_model(model).recipe.config)
    with torch.device("meta"):
        return sum(p.numel() for p in LlavaForConditionalGeneration(config).parameters())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(HERE / "recipes" / "llava-1b.toml"))
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--budget", default="20%")
    args = parser.parse_args()

    params = count_parameters(args.model)
    fp16_bytes = params * 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        command = [sys.executable, "-m", "edgecompress.cli", "export", args.model, "--random-weights",
                   "--precision", args.precision, "--budget", args.budget, "--out", str(out)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr)
            return done.returncode
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        bundle_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    gib = 1024**3
    print(f"\n{platform.machine()} CPU, {os.cpu_count()} cores; export of {Path(args.model).stem} "
          f"({params / 1e9:.2f}B parameters), {args.precision}, random weights\n")
    print("| parameters | fp16 weights (GiB) | bundle on disk (GiB) | export peak RSS (GiB) | peak / fp16 weights | export time (s) |")
    print("|---|---|---|---|---|---|")
    print(f"| {params / 1e9:.2f}B | {fp16_bytes / gib:.2f} | {bundle_bytes / gib:.2f} | {peak / gib:.2f} | "
          f"{peak / fp16_bytes:.2f}x | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
