"""Image to model input: the exact CLIP preprocessing against the fast path, on camera-sized frames.

    python benchmarks/preprocess.py                 # 224 (tiny-llava) and 336 (LLaVA-1.5) inputs
    python benchmarks/preprocess.py --runs 50
    python benchmarks/preprocess.py --frame-graph   # also: the resize inside the vision graph

For each frame size, an in-memory PIL image (decoded once, as a camera pipeline hands frames
over) and a JPEG file (decode included: the fast path decodes in draft mode), the median time
of `preprocess(...)` and `preprocess(..., fast=True)`, and how far apart their pixels are (in
units of 1/255 of the input range).

``--frame-graph``: exports tiny-llava (20%) three ways into a temporary folder (float pixels;
``--pixel-input frame:WxH`` for 640x480 and 1920x1080) and times frame -> image embeddings through
ONNX Runtime on this machine: the exact host path + vision graph, the fast host path + vision
graph, and the frame graph (resize, crop and normalisation inside). On a CPU backend the frame
graph does on the same cores what the host did; on a GPU backend that work moves to the device.
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
    parser.add_argument("--frame-graph", action="store_true", help="also time the vision graph that resizes frames itself")
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
    if args.frame_graph:
        frame_graph(args.runs)
    return 0


def frame_graph(runs: int) -> None:
    from edgecompress import export_bundle
    from edgecompress.bench.runner import seeded_image
    from edgecompress_runtime import Pipeline

    print("\n| frame | exact host path + vision ms | fast host path + vision ms | frame graph ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        plain = export_bundle("tiny-llava", budget="20%", out=Path(tmp) / "float")
        exact, fast = Pipeline.load(plain), Pipeline.load(plain, fast_preprocess=True)
        for width, height in ((640, 480), (1920, 1080)):
            bundle = export_bundle("tiny-llava", budget="20%", pixel_input=f"frame:{width}x{height}",
                                   out=Path(tmp) / f"frame-{width}")
            graph = Pipeline.load(bundle)
            image = seeded_image(width // 4, height // 4, 1).resize((width, height))
            array = np.asarray(image)
            times = [median_ms(lambda pipe=pipe, given=given: pipe.backend.vision(pipe.prepare_image(given)[0]), runs)
                     for pipe, given in ((exact, image), (fast, image), (graph, array))]
            print(f"| {width}x{height} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
