"""The C++ runtime (runtimes/cpp: edgecompress-run) against the Python runtime on the same
bundle, side by side in one run: preprocess, vision, prefill, TTFT and decode per token.

    bash runtimes/cpp/build.sh
    python benchmarks/cpp_runtime.py                                   # out/tiny-llava-hired-b20
    python benchmarks/cpp_runtime.py --bundle out/tiny-llava-none --runs 20 --new-tokens 64

Both generate exactly --new-tokens greedy tokens (end-of-sequence ignored) for the same seeded
640x480 JPEG and prompt, after one warm-up, with the same ONNX Runtime build and thread count;
medians over --runs. The C++ side is timed inside the app (--repeat, --json), the Python side
inside Pipeline.generate_full, so neither includes process start or bundle loading. Both also
report the generated tokens, which must agree.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "runtimes" / "cpp" / "build" / "edgecompress-run"
STAGES = ("preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_ms_per_token")


def python_runs(bundle: Path, image: Path, prompt: str, new_tokens: int, runs: int, threads: int):
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundle, threads=threads)
    pipe.generate_full(str(image), prompt, max_new_tokens=new_tokens, ignore_eos=True)  # warm-up
    samples, tokens = {stage: [] for stage in STAGES}, None
    for _ in range(runs):
        result = pipe.generate_full(str(image), prompt, max_new_tokens=new_tokens, ignore_eos=True)
        t = result.timings
        for stage, seconds in (("preprocess_ms", t["preprocess_s"]), ("vision_ms", t["vision_s"]),
                               ("prefill_ms", t["prefill_s"]), ("ttft_ms", t["ttft_s"])):
            samples[stage].append(seconds * 1000)
        samples["decode_ms_per_token"].append(t["decode_s"] * 1000 / max(t["decode_tokens"], 1))
        tokens = result.token_ids
    return {stage: statistics.median(values) for stage, values in samples.items()}, tokens


def cpp_runs(bundle: Path, image: Path, prompt: str, new_tokens: int, runs: int, threads: int):
    done = subprocess.run([str(APP), "--bundle", str(bundle), "--image", str(image), "--prompt", prompt, "--json",
                           "--ignore-eos", "--max-new-tokens", str(new_tokens), "--repeat", str(runs),
                           "--threads", str(threads)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"edgecompress-run failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    return {stage: result["timings"][stage] for stage in STAGES}, result["token_ids"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "out" / "tiny-llava-hired-b20")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--prompt", default="What is in the picture?")
    args = parser.parse_args()
    if not APP.exists():
        sys.exit(f"{APP} is missing: run `bash runtimes/cpp/build.sh` first")
    if not (args.bundle / "manifest.json").exists():
        sys.exit(f"{args.bundle} is not a bundle: export one first (`edgecompress export tiny-llava`)")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "frame.jpg"
        pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image, quality=90)
        cpp, cpp_tokens = cpp_runs(args.bundle, image, args.prompt, args.new_tokens, args.runs, args.threads)
        python, python_tokens = python_runs(args.bundle, image, args.prompt, args.new_tokens, args.runs, args.threads)
    print(f"bundle {args.bundle}, {args.new_tokens} new tokens, medians of {args.runs} runs, "
          f"{platform.machine()} {platform.processor() or ''}".rstrip())
    print("| stage | Python runtime | C++ runtime | C++ / Python |")
    print("|---|---:|---:|---:|")
    for stage in STAGES:
        print(f"| {stage.replace('_ms', '').replace('_', ' ')} (ms) | {python[stage]:.3f} | {cpp[stage]:.3f} | "
              f"{cpp[stage] / python[stage]:.2f} |")
    print(f"same tokens: {cpp_tokens == python_tokens} ({len(cpp_tokens)} tokens)")


if __name__ == "__main__":
    main()
