"""Assertions shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def assert_same_selection(kept, expected, score, k: int, precision: str = "fp32") -> None:
    """Kept indices are K positions in raster order and agree with the expected ones under the
    tie-band rule of :mod:`edgecompress.parity` (identical wherever the cut-off is wider than the
    band; inside it, only tokens scoring within the band of the cut-off may swap)."""
    from edgecompress.parity import compare_selections

    kept_list = [int(i) for i in np.asarray(kept).reshape(-1)]
    assert len(kept_list) == k and kept_list == sorted(kept_list), "kept indices must be K positions in raster order"
    result = compare_selections(kept, expected, score, precision=precision)
    assert result.agree, (
        f"selections differ outside the {precision} tie band (band {result.band:.3g}, margin {result.margin:.3g}): "
        f"indices {result.differing}"
    )


def assert_generation_matches(result, reference, precision: str, logits_atol: float) -> None:
    """A bundle's generation against the PyTorch pruned pipeline's: kept tokens agree under the
    tie band; where they are identical (the cut-off is not a near-tie) the generated tokens are
    equal and the prefill logits within ``logits_atol``. Where a near-tie flipped a token at the
    cut-off the two prompts differ by that token, so only the selection rule is asserted."""
    from edgecompress.parity import compare_selections

    agreement = compare_selections(result.kept_indices, reference.kept_indices, reference.scores, precision=precision)
    assert agreement.agree, f"kept tokens differ outside the {precision} tie band: {agreement}"
    if agreement.identical:
        assert result.token_ids == reference.token_ids
        np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=logits_atol, rtol=0)


def assert_engines_match_manifest(bundle: Path, profile: str, record: dict) -> None:
    """A TensorRT-RTX build recorded in the manifest: every graph built, for the profile's compute
    capability, each engine's bindings exactly the graph's declared inputs and outputs (dynamic
    axes as -1), each engine's sha256 in the engine table, and the export's file table left as
    it was (engines are not part of it: a copy without them still runs in ONNX Runtime)."""
    import tensorrt_rtx

    from edgecompress.engine.profiles import load_profile
    from edgecompress_runtime import read_manifest, verify_files
    from edgecompress_runtime.bundle import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["engines"][profile] == record
    assert record["compute_capability"] == load_profile(profile).compute_capability
    assert record["builder_version"] == tensorrt_rtx.__version__
    assert set(record["graphs"]) == set(manifest["graphs"]) == {"vision", "decoder"}
    for graph, entry in record["graphs"].items():
        assert (bundle / entry["file"]).stat().st_size > 100_000
        assert sha256_file(bundle / entry["file"]) == entry["sha256"]
        assert entry["file"] not in manifest["files"]
        spec = manifest["graphs"][graph]
        declared = [(t["name"], t["dtype"], [d if isinstance(d, int) else -1 for d in t["shape"]])
                    for t in spec["inputs"] + spec["outputs"]]
        assert [(b["name"], b["dtype"], b["shape"]) for b in entry["bindings"]] == declared
    assert verify_files(bundle, read_manifest(bundle)) == []


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Noise over a flat background with a few shapes: content that differs across LLaVA-NeXT tiles."""
    rng = np.random.default_rng(seed)
    base = np.full((height, width, 3), (225, 225, 210), dtype=np.int16) + rng.integers(-20, 20, (height, width, 3))
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, max(5, min(width, height) // 3)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image
