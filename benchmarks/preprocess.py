"""Image to model input: the exact CLIP preprocessing against the fast path, on camera-sized frames.

    python benchmarks/preprocess.py                 # 224 (tiny-llava) and 336 (LLaVA-1.5) inputs
    python benchmarks/preprocess.py --runs 50

For each frame size, an in-memory PIL image (decoded once, as a camera pipeline hands frames
over) and a JPEG file (decode included: the fast path decodes in draft mode), the median time
of `preprocess(...)` and `preprocess(..., fast=True)`, and how far apart their pixels are (in
units of 1/255 of the input range).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(fn, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(1e3 * (time.perf_counter() - start))
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from PIL import Image

    from edgecompress.bench.runner import seeded_image
    from edgecompress_runtime.preprocess import preprocess

    clip = {"resample": "bicubic", "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711]}
    std = np.asarray(clip["image_std"], np.float32)[:, None, None] * 255
    print("| input | frame | source | exact ms | fast ms | speed-up | max diff (/255) | mean diff (/255) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (224, 336):
            params = {**clip, "resize_shortest_edge": size, "crop_size": size}
            for width, height in ((1920, 1080), (1280, 720), (640, 480)):
                frame = seeded_image(width // 4, height // 4, 1).resize((width, height), Image.Resampling.BICUBIC)
                path = Path(tmp) / f"{width}x{height}.jpg"
                frame.save(path, quality=90)
                for source, image in (("PIL image", frame), ("JPEG file", path)):
                    exact = median_ms(lambda: preprocess(image, params), args.runs)
                    fast = median_ms(lambda: preprocess(image, params, fast=True), args.runs)
                    diff = np.abs(preprocess(image, params, fast=True) - preprocess(image, params))[0] * std
                    print(f"| {size} | {width}x{height} | {source} | {exact:.2f} | {fast:.2f} | {exact / fast:.1f}x | "
                          f"{diff.max():.2f} | {diff.mean():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
