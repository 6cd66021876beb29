"""Comparing two selections of kept tokens: the tie-band rule every parity check uses.

Two runtimes (PyTorch and ONNX Runtime, ONNX Runtime on the CPU and on CUDA) or two precisions
compute the selection scores with different kernels, so scores that lie within round-off of
each other at the cut-off may be ordered differently. Exact equality of kept indices is then
the wrong test: it fails on near-ties that no user could see. The rule here:

- the *margin* is the reference score of the K-th kept token minus that of the best dropped
  token (how far the cut-off is from a tie);
- the two selections *agree* when they are identical, or when every index that one keeps and
  the other does not scores within the tie band of the cut-off;
- the tie band is relative to the cut-off score, so it holds for any model's score scale:
  ``TIE_BAND[precision] * |cut-off score|``.

Methods whose choice is not one ranking (DivPrune's greedy picks, VisionZip's dominant set and
its merge targets) have no single cut-off; they supply ``accepts``, which replays the method
on the reference's inputs, following the other selection wherever it chose among candidates
within the same relative band of the best, and says whether it arrives at that selection.

Why these bands. fp32: a CLS-attention score is a softmax of dot products over the head size,
summed over heads; two correct fp32 kernels that accumulate in different orders differ by a
few hundred ulps at most (1 ulp = 1.2e-7 relative), so 1e-5 relative covers them with room
and is still far below the gap between distinct patches of a real image (typically 1e-3 to
1e-1 relative). fp16: the hidden states feeding the score are fp16 (1 ulp = 9.8e-4 relative);
measured ONNX Runtime vs PyTorch differences reach 1.4e-3 of the cut-off score on the
test-bed model, so the band is 4e-3 (four fp16 ulps). A selection bug (wrong layer, wrong head
reduction, wrong order) changes indices far from the cut-off and fails either band.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

TIE_BAND = {"fp32": 1e-5, "fp16": 4e-3}


@dataclass(frozen=True)
class SelectionAgreement:
    identical: bool  # the same indices, in the same order
    agree: bool  # identical, or every difference lies within the tie band of the cut-off
    margin: float | None  # K-th kept score minus best dropped score (reference scores); None without scores
    band: float | None  # the absolute tie band applied
    differing: list[int] = field(default_factory=list)  # indices one side keeps and the other does not

    def to_dict(self) -> dict:
        return asdict(self)


def near_best(value: float, best: float, band: float) -> bool:
    """Whether ``value`` is within the relative tie ``band`` of ``best`` (relative to |best|, at
    least 1: for scores such as cosines that cross zero, the band is then absolute)."""
    return value >= best - band * max(abs(best), 1.0)


def selection_margin(scores, k: int) -> float:
    """Score of the K-th best token minus the score of the (K+1)-th: how far the cut-off is from a tie."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))[::-1]
    return float(ordered[k - 1] - ordered[k]) if k < len(ordered) else float("inf")


def compare_selections(kept, expected, scores=None, *, precision: str = "fp32", accepts=None) -> SelectionAgreement:
    """Whether ``kept`` (e.g. a bundle's) agrees with ``expected`` (the reference's), given the
    reference's per-token ``scores``, or for a method with no single ranking its ``accepts``
    check ((kept, relative band) -> bool); with neither, only identity agrees."""
    kept = [int(i) for i in np.asarray(kept).reshape(-1)]
    expected = [int(i) for i in np.asarray(expected).reshape(-1)]
    differing = sorted(set(kept) ^ set(expected))
    identical = kept == expected
    if scores is None:
        agree = identical or (accepts is not None and len(kept) == len(expected) and bool(accepts(kept, TIE_BAND[precision])))
        return SelectionAgreement(identical, agree, None, None, differing)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = len(expected)
    cutoff = float(np.sort(scores)[::-1][k - 1])
    band = TIE_BAND[precision] * abs(cutoff)
    same_length = len(kept) == len(expected)
    in_band = all(abs(scores[i] - cutoff) <= band for i in differing if 0 <= i < len(scores))
    in_range = all(0 <= i < len(scores) for i in differing)
    agree = identical or (same_length and in_range and in_band)
    return SelectionAgreement(identical, agree, selection_margin(scores, k), band, differing)
