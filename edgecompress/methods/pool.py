"""The pooling baseline: 2D average pooling of the patch grid to the largest near-square
h x w <= K, as one constant averaging matrix (a single MatMul in the graph)."""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs


def pool_grid(k: int, side: int) -> tuple[int, int]:
    """The pooled grid for a budget of K: the largest h x w <= K with |h - w| <= 1 (h, w <= side)."""
    best = (1, 1)
    for h in range(1, side + 1):
        for w in (h, h + 1):
            if w <= side and h * w <= k and h * w > best[0] * best[1]:
                best = (h, w)
    return best


def pool_matrix(side: int, grid: tuple[int, int]):
    """2D average pooling of a side x side token grid to ``grid`` as a constant [h*w, N] matrix
    (regions as adaptive_avg_pool2d forms them), and each region's centre patch index [h*w]."""
    import torch

    h, w = grid
    matrix = torch.zeros(h * w, side * side)
    centres = torch.zeros(h * w, dtype=torch.int64)
    for r in range(h):
        r0, r1 = (r * side) // h, -((-(r + 1) * side) // h)
        for c in range(w):
            c0, c1 = (c * side) // w, -((-(c + 1) * side) // w)
            cells = [y * side + x for y in range(r0, r1) for x in range(c0, c1)]
            matrix[r * w + c, cells] = 1.0 / len(cells)
            centres[r * w + c] = ((r0 + r1 - 1) // 2) * side + (c0 + c1 - 1) // 2
    return matrix, centres


def output_k(k: int, side: int) -> int:
    h, w = pool_grid(k, side)
    return h * w


def constants(n: int, side: int, k: int) -> dict:
    matrix, centres = pool_matrix(side, pool_grid(k, side))
    if matrix.shape[0] != k:
        raise ValueError(f"pool emits {matrix.shape[0]} tokens for K={k}: pass METHOD.output_k(K)")
    return {"weights": matrix, "centres": centres[None]}


def select(inputs: VisionInputs, k: int):  # a constant averaging matrix: one MatMul, static
    import torch

    features = inputs.features
    pooled = torch.matmul(inputs.constants["weights"].to(features.dtype), features)
    return pooled, inputs.constants["centres"].expand(features.shape[0], -1)


def details(budget_k: int, k: int, side: int) -> dict:
    return {"grid": list(pool_grid(budget_k, side)), "rule": f"largest h x w <= K with |h - w| <= 1: {budget_k} -> {k} tokens"}


METHOD = Method(
    name="pool",
    summary="Baseline: 2D average pooling of the patch grid to the largest near-square h x w <= K",
    paper="METHODS.md baselines",
    select=select,
    output_k=output_k,
    details=details,
    constants=constants,
)
