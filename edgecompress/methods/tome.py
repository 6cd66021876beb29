"""ToMe (facebookresearch/ToMe, arXiv:2210.09461): token merging inside the vision tower, so the
tower's later layers run on fewer tokens (it cuts vision latency as well as the tokens the
language model reads).

In each encoder layer, between attention and MLP: the metric is the layer's keys averaged over
heads, L2-normalised; tokens alternate into sets A (even positions) and B (odd); each A token's
best match in B is found, and the r A tokens with the best matches merge into their B partners
by size-weighted mean; CLS (position 0, in A) is protected. Attention is proportional: log(size)
is added to the attention logits. The output order is [unmerged A in order, B], as the authors'.

Static: r is fixed per layer. The budget's K is reached exactly by merging N - K tokens over the
layers up to the feature layer with the smallest constant r that gets there (each layer merges
at most half of its tokens, so the last layers may merge fewer). Every step is fixed-shape: the matching is a TopK of 1, the ordering
a constant-size TopK, the merge a MatMul with the one-hot assignment. ``kept_indices`` names,
for each output token, the patch whose identity it kept (the B partner for a merged token).
"""

from __future__ import annotations

from edgecompress.errors import EdgeCompressError
from edgecompress.methods import Method, VisionInputs


def schedule(n: int, k: int, layers: int) -> list[int]:
    """Tokens merged in each of ``layers`` layers so that N patches become K (CLS not counted):
    the smallest constant r (ToMe's own schedule is a constant r per layer) that reaches K when
    each layer merges min(r, half its tokens, what is left)."""
    total = n - k
    for r in range(-(-total // max(layers, 1)), n + 1):
        merges, tokens = [], n
        for _ in range(layers):
            step = min(r, tokens // 2, total - sum(merges))
            merges.append(step)
            tokens -= step
        if sum(merges) == total:
            return merges
    smallest = n
    for _ in range(layers):
        smallest -= smallest // 2
    raise EdgeCompressError(
        f"ToMe can merge {n} patches down to {smallest} at the least in {layers} layers (each layer merges at "
        f"most half of its tokens); K={k} is below that",
        hint=f"Use a budget of at least {smallest} tokens ({-(-100 * smallest // n)}%), or a pruning method.",
    )


def merge(x, size, sources, metric, r: int):
    """One ToMe step: x [B,T,D] (CLS first), size [B,T,1], sources [B,T] (patch index + 1, CLS 0),
    metric [B,T,d] -> the same with T - r tokens."""
    import torch

    from edgecompress.lowering.primitives import constant_topk, ordered_gather, raster_order

    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = torch.matmul(a, b.transpose(1, 2))  # [B, tA, tB]
    protect = torch.zeros(scores.shape[1], 1, dtype=scores.dtype)
    protect[0] = float("-inf")  # CLS never merges
    scores = scores + protect
    best = constant_topk(scores, 1)  # [B, tA, 1]: each A token's partner in B
    node_max = torch.gather(scores, 2, best)[..., 0]  # [B, tA]
    order = constant_topk(node_max, node_max.shape[1])  # A tokens by match quality
    src, unm = order[:, :r], raster_order(order[:, r:])  # merged; unmerged in original order (CLS first)
    dst = torch.gather(best[..., 0], 1, src)  # [B, r]
    onehot = (dst.unsqueeze(-1) == torch.arange(b.shape[1], dtype=torch.int64)).to(x.dtype)  # [B, r, tB]

    def combine(values):  # sums of size-weighted values: [unmerged A, B + merged A]
        va, vb = values[:, ::2], values[:, 1::2]
        return torch.cat([ordered_gather(va, unm), vb + torch.matmul(onehot.transpose(1, 2), ordered_gather(va, src))], 1)

    new_size = combine(size)
    x = combine(x * size) / new_size
    sources = torch.cat([torch.gather(sources[:, ::2], 1, unm), sources[:, 1::2]], 1)
    return x, new_size, sources


def select(inputs: VisionInputs, k: int):
    return inputs.features, inputs.sources


METHOD = Method(
    name="tome",
    summary="ToMe: merge the most similar tokens (bipartite, by key) in every tower layer down to K, proportional attention",
    paper="facebookresearch/ToMe (arXiv:2210.09461)",
    select=select,
    stage="tower",
    needs=("features",),
    merge_schedule=schedule,
    merge=merge,
    token_order="ToMe's: unmerged tokens of the even set in order, then the odd set (kept_indices: each token's surviving patch)",
)
