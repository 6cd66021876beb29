"""Assertions shared by the tests."""

from __future__ import annotations

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
