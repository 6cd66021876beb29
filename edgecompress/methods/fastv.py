"""FastV (pkunlp-icler/FastV, arXiv:2403.06764): prune image tokens inside the language model.

At decoder layer L (default 2) FastV reads layer L-1's attention: the row of the last prompt
token, averaged over heads, over the image tokens. It keeps the K image tokens that token
attends to most and every text token, in their original order, and runs layers L.. on those
alone; position ids stay the original ones (not renumbered). It prunes once, at prefill: the
KV cache of layers >= L holds the kept tokens only, which is where the memory goes.

Static where the image's place in the prompt is fixed (the bundle's chat template fixes it):
the image span is a constant slice, the choice one constant-K TopK, the gather three pieces
(text before, the kept image tokens, text after) joined, so no shape depends on the data.
"""

from __future__ import annotations

from edgecompress.methods import DecoderInputs, Method

DEFAULT_LAYER = 2  # the authors' K=2 ("FastV_K"): prune after two layers have mixed the image in


def image_scores(inputs: DecoderInputs):  # Method.score: here over a DecoderInputs
    """The last prompt token's head-mean attention over the image tokens [B, N] (fp32)."""
    start, n = inputs.image_start, inputs.image_tokens
    return inputs.attention.float().mean(dim=1)[:, start : start + n]


def select(inputs: DecoderInputs, k: int):
    """(hidden states of the text tokens and the K kept image tokens, in prompt order
    [B, S - N + K, D]; the kept image tokens [B, K], 0..N-1 ascending)."""
    from edgecompress.lowering.primitives import splice_kept, top_k_in_order

    kept = top_k_in_order(image_scores(inputs), k)
    return splice_kept(inputs.hidden, inputs.image_start, inputs.image_tokens, kept), kept


def details(budget_k: int, k: int, side: int) -> dict:
    return {"variant": "FastV (inplace): the last prompt token's head-mean attention in layer L-1 over the image tokens",
            "kept_image_tokens": k}


METHOD = Method(
    name="fastv",
    summary="FastV: at decoder layer L, the K image tokens the last prompt token attends to most in layer L-1; "
            "later layers' KV cache holds only those",
    paper="pkunlp-icler/FastV (arXiv:2403.06764)",
    select=select,
    score=image_scores,
    stage="decoder",
    needs=("decoder_attention",),
    details=details,
    token_order="prompt order (kept image tokens ascending, between the text before and after the image)",
    default_layer=DEFAULT_LAYER,
)
