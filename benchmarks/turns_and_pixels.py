"""Two runtime measurements, medians in ms:

- uint8 pixels (``export --pixel-input uint8``) against float pixels: host preprocessing per
  frame (resize + crop, then the normalisation the uint8 graph does inside) and the vision graph;
- a follow-up turn (``Conversation.follow_up``: only the new turn prefilled on the kept cache)
  against re-prefilling the whole conversation (vision graph included), time to first token.

    python benchmarks/turns_and_pixels.py FLOAT_BUNDLE UINT8_BUNDLE [--runs 20]

(the two bundles of the same model and method, so that the vision graphs differ only by the lookup)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image


def medians_ms(fns, runs: int) -> list[float]:
    """Median time of each callable, the runs interleaved (a shared machine's load hits all alike)."""
    for fn in fns:
        fn()
    samples = [[] for _ in fns]
    for _ in range(runs):
        for fn, kept in zip(fns, samples):
            start = time.perf_counter()
            fn()
            kept.append(1e3 * (time.perf_counter() - start))
    return [statistics.median(s) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("float_bundle")
    parser.add_argument("uint8_bundle")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from edgecompress_runtime import Pipeline

    floats, uint8 = Pipeline.load(args.float_bundle), Pipeline.load(args.uint8_bundle)
    rng = np.random.default_rng(0)
    from edgecompress_runtime.preprocess import crop_pixels, normalize

    params = floats.manifest.preprocess
    print("| frame | resize + crop (both) | normalise on the host (float only) | float: vision graph | uint8: vision graph |")
    print("|---|---|---|---|---|")
    for width, height in ((640, 480), (1920, 1080)):
        frame = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        crop = crop_pixels(frame, params)
        f_feeds, u_feeds = floats.prepare_image(frame)[0], uint8.prepare_image(frame)[0]
        row = medians_ms([lambda: crop_pixels(frame, params), lambda: normalize(crop, params)[None],
                          lambda: floats.backend.vision(f_feeds), lambda: uint8.backend.vision(u_feeds)], args.runs)
        print(f"| {width}x{height} | " + " | ".join(f"{v:.2f}" for v in row) + " |")

    print("\n| turns before | conversation tokens | follow-up TTFT | whole conversation re-prefilled TTFT |")
    print("|---|---|---|---|")
    frame = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    question = "And what colour is the thing on the left of it?"
    for turns in (1, 4):
        follow, full = [], []
        for _ in range(args.runs):
            conversation = floats.chat(frame, "What is in the picture?", max_new_tokens=16)
            for _ in range(turns - 1):
                conversation.follow_up(question, max_new_tokens=16)
            history = conversation.ids + floats.turn_ids(question)
            follow.append(conversation.follow_up(question, max_new_tokens=1).timings["ttft_s"])
            full.append(floats.generate_ids(frame, history, max_new_tokens=1).timings["ttft_s"])
        tokens = conversation.length
        print(f"| {turns} | {tokens} | {1e3 * statistics.median(follow):.2f} | {1e3 * statistics.median(full):.2f} |")


if __name__ == "__main__":
    main()
