"""Assertions shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def assert_same_selection(kept, expected, score, k: int, tie_band: float) -> None:
    """Kept indices equal the expected ones, except across a tie at the cut-off.

    ``score`` is the reference score per patch. Where the K-th and (K+1)-th scores are further
    apart than ``tie_band`` the two selections must be identical. Where they are not (a flat
    image: identical patches that differ only by position embeddings), the choice inside the
    band is round-off, so any index on which the two disagree must score within ``tie_band``
    of the cut-off; a disagreement anywhere else is a real bug.
    """
    kept = [int(i) for i in np.asarray(kept).reshape(-1)]
    expected = [int(i) for i in np.asarray(expected).reshape(-1)]
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    assert len(kept) == k and kept == sorted(kept), "kept indices must be K positions in raster order"
    cutoff = np.sort(score)[::-1][k - 1]
    gap = cutoff - np.sort(score)[::-1][k]
    if gap > tie_band:
        assert kept == expected
        return
    for index in set(kept) ^ set(expected):
        assert abs(score[index] - cutoff) <= tie_band, (
            f"index {index} (score {score[index]:.9g}) differs but lies outside the tie band at the cut-off {cutoff:.9g}"
        )


def assert_engines_match_manifest(bundle: Path, profile: str, record: dict) -> None:
    """A TensorRT-RTX build recorded in the manifest: every graph built, for the profile's compute
    capability, each engine's bindings exactly the graph's declared inputs and outputs (dynamic
    axes as -1), and the file table (sha256) covering the engines."""
    import tensorrt_rtx

    from edgecompress.engine.profiles import load_profile
    from edgecompress_runtime import verify_files

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["engines"][profile] == record
    assert record["compute_capability"] == load_profile(profile).compute_capability
    assert record["builder_version"] == tensorrt_rtx.__version__
    assert set(record["graphs"]) == set(manifest["graphs"]) == {"vision", "decoder"}
    for graph, entry in record["graphs"].items():
        assert (bundle / entry["file"]).stat().st_size > 100_000
        assert manifest["files"][entry["file"]]["sha256"] == entry["sha256"]
        spec = manifest["graphs"][graph]
        declared = [(t["name"], t["dtype"], [d if isinstance(d, int) else -1 for d in t["shape"]])
                    for t in spec["inputs"] + spec["outputs"]]
        assert [(b["name"], b["dtype"], b["shape"]) for b in entry["bindings"]] == declared
    assert verify_files(bundle, manifest) == []
