"""How often the C++ runtime's resize equals Pillow's bit for bit, on random sizes.

    bash runtimes/cpp/build.sh && python benchmarks/resize_order.py [--samples 60]

Pillow 13 picks which pass (horizontal or vertical) runs first when both sides change (vertical
first where the height loses more than twice as many pixels as the width: Pillow PR #9549, the
rule runtimes/cpp/src/resample.cpp copies); the first pass rounds to 8 bits, so the order shows in
the pixels. Four kinds of resize: aspect-kept shrinks (the CLIP shortest-edge resize to 224 or
336, LLaVA-NeXT's fit), any two-way shrink (LLaVA-NeXT's base-image squash), the square resize
to 448 x 448 from photo sizes (Qwen2.5-VL's fixed grid: shrinks, grows or both), and any resize
that changes both sides. Noise images, so any difference shows.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DRIVER = Path(__file__).resolve().parents[1] / "runtimes" / "cpp" / "build" / "preprocess_driver"


def matches(rng, folder: Path, size: tuple[int, int], target: tuple[int, int]) -> bool:
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "in.png")
    want = np.asarray(Image.fromarray(pixels).resize(target, Image.Resampling.BICUBIC))
    subprocess.run([str(DRIVER), "resize", str(folder / "in.png"), str(target[0]), str(target[1]), "bicubic",
                    str(folder / "out.u8")], check=True)
    got = np.fromfile(folder / "out.u8", dtype=np.uint8).reshape(target[1], target[0], 3)
    return bool((got == want).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    counts = {"aspect-kept shrink": [0, 0], "any two-way shrink": [0, 0], "square 448 (Qwen2.5-VL)": [0, 0],
              "any two-way resize": [0, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.samples):
            width, height, side = int(rng.integers(340, 1400)), int(rng.integers(340, 1400)), (224, 336)[i % 2]
            kept = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
            counts["aspect-kept shrink"][0] += matches(rng, folder, (width, height), kept)
            counts["aspect-kept shrink"][1] += 1
            width, height = int(rng.integers(20, 400)), int(rng.integers(20, 400))
            any_shrink = (int(rng.integers(5, width)), int(rng.integers(5, height)))
            counts["any two-way shrink"][0] += matches(rng, folder, (width, height), any_shrink)
            counts["any two-way shrink"][1] += 1
            width, height = int(rng.integers(200, 1400)), int(rng.integers(200, 1400))
            counts["square 448 (Qwen2.5-VL)"][0] += matches(rng, folder, (width, height), (448, 448))
            counts["square 448 (Qwen2.5-VL)"][1] += 1
            width, height = int(rng.integers(20, 400)), int(rng.integers(20, 400))
            target = (int(rng.integers(5, 2 * width)), int(rng.integers(5, 2 * height)))
            if target[0] != width and target[1] != height:
                counts["any two-way resize"][0] += matches(rng, folder, (width, height), target)
                counts["any two-way resize"][1] += 1
    print(f"Pillow {Image.__version__}, bicubic, random noise images")
    print("| resize | bit-exact |")
    print("|---|---|")
    for kind, (same, total) in counts.items():
        print(f"| {kind} | {same} of {total} |")


if __name__ == "__main__":
    main()
