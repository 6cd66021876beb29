"""VisionZip (dvlab-research/VisionZip, arXiv:2412.04467): D dominant patches by the feature
layer's CLS attention (summed over heads), plus C contextual tokens that merge the rest.

Contextual tokens: the patches not kept as dominant, in raster order; C targets among them at a
fixed stride (every ``(N - D) // C``-th, the first C); every other remaining patch joins the
target its key (the feature layer's keys averaged over heads, L2-normalised) is most
cosine-similar to; a contextual token is its target's feature plus the mean of the features
that joined it. Output: the dominant tokens in raster order, then the contextual tokens in
target order; ``kept_indices`` gives each contextual token its target's patch.

K = D + C is the budget, split as the authors' 54 + 10 (D = round(K * 54 / 64), at least 1).
The authors also keep the CLS token among the dominant ones; LLaVA-1.5's image features exclude
CLS (``vision_feature_select_strategy="default"``), so here all D are patches. Everything is
fixed-shape: the remaining patches come from one constant-K TopK, the stride positions are
constants, the assignment is an ArgMax and the merge a MatMul with its one-hot matrix.
"""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs

DOMINANT, CONTEXTUAL = 54, 10  # the authors' default split of 64 tokens


def split(k: int) -> tuple[int, int]:
    """(dominant, contextual) for a budget of K."""
    if k <= 1:
        return k, 0
    dominant = min(k - 1, max(1, (k * DOMINANT + (DOMINANT + CONTEXTUAL) // 2) // (DOMINANT + CONTEXTUAL)))
    return dominant, k - dominant


def strides(n: int, k: int) -> tuple[list[int], list[int]]:
    """Positions, among the N - D remaining patches, of the C targets and of the others."""
    dominant, contextual = split(k)
    remaining = n - dominant
    if contextual == 0:
        return [], list(range(remaining))
    step = max(1, remaining // contextual)
    targets = list(range(0, remaining, step))[:contextual]
    chosen = set(targets)
    return targets, [i for i in range(remaining) if i not in chosen]


def constants(n: int, side: int, k: int) -> dict:
    import torch

    targets, others = strides(n, k)
    return {"targets": torch.tensor(targets, dtype=torch.int64), "others": torch.tensor(others, dtype=torch.int64)}


def score(inputs: VisionInputs):
    return inputs.cls_attention.sum(dim=1)


def contextual_assignment(inputs: VisionInputs, dominant, k: int):
    """For the dominant patches [B, D]: the targets [B, C], the other remaining patches [B, M]
    and each one's most key-similar target [B, M] (an index into the targets)."""
    import torch

    from edgecompress.lowering.primitives import constant_topk, ordered_gather, top_k_in_order

    batch, n = inputs.keys.shape[0], inputs.keys.shape[2] - 1
    # the remaining patches in raster order: one constant-size TopK over "not dominant, earlier first"
    position = torch.arange(n, dtype=torch.int64)
    is_dominant = torch.zeros(batch, n, dtype=torch.int64).scatter(1, dominant, 1)
    remaining = top_k_in_order((1 - is_dominant) * (2 * n) + (n - 1 - position), n - dominant.shape[1])  # [B, R]
    targets = torch.index_select(remaining, 1, inputs.constants["targets"])  # [B, C]
    others = torch.index_select(remaining, 1, inputs.constants["others"])  # [B, M]
    metric = inputs.keys[:, :, 1:].mean(dim=1)  # [B, N, d] head-mean patch keys
    metric = metric / metric.norm(dim=-1, keepdim=True)
    similarity = torch.matmul(ordered_gather(metric, others), ordered_gather(metric, targets).transpose(1, 2))  # [B, M, C]
    return targets, others, constant_topk(similarity, 1)[..., 0]


def select(inputs: VisionInputs, k: int):
    import torch

    from edgecompress.lowering.primitives import ordered_gather, top_k_in_order

    features = inputs.features
    dominant_k, contextual_k = split(k)
    dominant = top_k_in_order(score(inputs), dominant_k)  # [B, D]
    kept = ordered_gather(features, dominant)
    if contextual_k == 0:
        return kept, dominant
    targets, others, assign = contextual_assignment(inputs, dominant, k)
    onehot = (assign.unsqueeze(-1) == torch.arange(contextual_k, dtype=torch.int64)).to(features.dtype)  # [B, M, C]
    sums = torch.matmul(onehot.transpose(1, 2), ordered_gather(features, others))  # [B, C, D]
    counts = onehot.sum(dim=1).unsqueeze(-1).clamp(min=1)
    contextual = ordered_gather(features, targets) + sums / counts
    return torch.cat([kept, contextual], dim=1), torch.cat([dominant, targets], dim=1)


def accepts(inputs: VisionInputs, kept: list[int], band: float) -> bool:
    """Whether ``kept`` (one image) is a VisionZip outcome: its dominant part differs from the
    top D by CLS score only within ``band`` (relative) of the cut-off, and its targets are the
    ones that dominant set gives."""
    import numpy as np

    scores = score(inputs)[0].double().numpy()
    k = len(kept)
    dominant_k, _ = split(k)
    dominant = kept[:dominant_k]
    cutoff = np.sort(scores)[::-1][dominant_k - 1]
    top = set(np.argsort(-scores, kind="stable")[:dominant_k].tolist())
    if dominant != sorted(dominant) or len(set(dominant)) != dominant_k:
        return False
    if any(abs(scores[i] - cutoff) > band * abs(cutoff) for i in top ^ set(dominant)):
        return False
    remaining = [i for i in range(len(scores)) if i not in set(dominant)]
    targets, _ = strides(len(scores), k)
    return kept[dominant_k:] == [remaining[t] for t in targets]


def details(budget_k: int, k: int, side: int) -> dict:
    dominant, contextual = split(k)
    return {"dominant": dominant, "contextual": contextual,
            "rule": "D = round(K 54/64) patches by CLS attention; C = K - D targets at stride (N - D) // C merge the rest by key cosine"}


METHOD = Method(
    name="visionzip",
    summary="VisionZip: dominant patches by CLS attention plus contextual tokens merging the rest by key similarity",
    paper="dvlab-research/VisionZip (arXiv:2412.04467)",
    select=select,
    needs=("cls_attention", "keys", "features"),
    constants=constants,
    details=details,
    accepts=accepts,
    token_order="dominant patches in raster order, then contextual tokens in target order (kept_indices: their targets)",
)
