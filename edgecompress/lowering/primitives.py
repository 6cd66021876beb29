"""Shape-stable primitives every selection method is written with.

Each one exports to ONNX with shapes fixed at export time: TopK with a constant K (an
initializer, never a computed tensor), and gathers by index rather than boolean masks, so no
NonZero and no data-dependent output shape reaches the graph.
"""

from __future__ import annotations

import torch


def constant_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores along the last axis (``k`` a Python int)."""
    if not isinstance(k, int):
        raise TypeError("k must be a Python int so that it exports as a constant")
    return torch.topk(scores, k, dim=-1, largest=True, sorted=True).indices


def raster_order(indices: torch.Tensor) -> torch.Tensor:
    """Sort kept indices ascending, so kept tokens keep their original spatial order."""
    return torch.sort(indices, dim=-1).values


def top_k_in_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best positions by score, returned in original (raster) order."""
    return raster_order(constant_topk(scores, k))


def ordered_gather(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` [B, N, D] at ``indices`` [B, K] -> [B, K, D], in index order."""
    index = indices.unsqueeze(-1).expand(-1, -1, features.shape[-1])
    return torch.gather(features, 1, index)


def descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """rank[..., j] = place of element j when the last axis is sorted best first (0 = best).

    Two constant-size TopKs: the first orders the elements, the second inverts that permutation.
    """
    n = scores.shape[-1]
    order = torch.topk(scores, n, dim=-1, largest=True, sorted=True).indices
    return torch.topk(order, n, dim=-1, largest=False, sorted=True).indices


def splice_kept(tokens: torch.Tensor, start: int, n: int, kept: torch.Tensor) -> torch.Tensor:
    """A prompt [B, S, ...] with its span ``start .. start + n`` cut to the rows ``kept`` [B, K]
    (0..n-1, ascending): text before, kept span rows, text after -> [B, S - n + K, ...].

    Three static pieces joined (two slices and a constant-K gather), so only the prompt length
    is dynamic; what a decoder-stage method applies to hidden states and position ids alike.
    """
    span = tokens[:, start : start + n]
    index = kept.reshape(*kept.shape, *([1] * (tokens.dim() - 2))).expand(-1, -1, *tokens.shape[2:])
    return torch.cat([tokens[:, :start], torch.gather(span, 1, index), tokens[:, start + n :]], dim=1)
