"""Attention scores the selection methods read, recomputed from a layer's q/k projections.

Recomputing the CLS row ourselves (instead of asking transformers for ``output_attentions``)
works with every attention implementation (sdpa returns no weights), costs one query row
instead of N, exports cleanly, and runs in fp32 even inside an fp16 graph so that near-ties
at the cut-off do not flip kept tokens between PyTorch, ONNX Runtime and TensorRT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """A q or k projection of ``x`` [B, T, D] split into heads, in fp32: [B, H, T, d]."""
    x = x.float()
    batch, tokens, dim = x.shape
    y = F.linear(x, weight.float(), None if bias is None else bias.float())
    return y.view(batch, tokens, num_heads, dim // num_heads).transpose(1, 2)


def layer_keys(normed: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """A layer's attention keys per head, in fp32: [B, 1 + N, D] -> [B, H, 1 + N, d]."""
    return per_head(normed, k_weight, k_bias, num_heads)


def cls_attention(
    normed: torch.Tensor,
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    num_heads: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head CLS attention over patches, in fp32.

    ``normed`` is the layer's attention input (after its pre-attention layer norm),
    [B, 1 + N, D] with the CLS token first. Returns softmax(q_cls k^T / sqrt(d_head)) over
    all 1 + N keys, columns 1..N (the patches): [B, H, N]. ``bias`` [B, 1 + N] is added to the
    logits (ToMe's proportional attention: the log of each merged token's size).
    """
    x = normed.float()
    head_dim = x.shape[-1] // num_heads
    q = per_head(x[:, :1], q_weight, q_bias, num_heads)  # [B, H, 1, d]
    k = layer_keys(x, k_weight, k_bias, num_heads)  # [B, H, S, d]
    logits = torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5)  # [B, H, 1, S]
    if bias is not None:
        logits = logits + bias.float()[:, None, None, :]
    probs = torch.softmax(logits, dim=-1)
    return probs[:, :, 0, 1:]


def received_attention(
    normed: torch.Tensor,
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    num_heads: int,
) -> torch.Tensor:
    """Per-head attention each patch receives, averaged over every query (CLS included), in fp32:
    softmax(q k^T / sqrt(d_head)) [B, H, 1 + N, 1 + N] -> mean over queries -> columns 1..N, [B, H, N].
    The score a tower with no CLS token ranks by (method ``received``), here for a CLIP layer."""
    x = normed.float()
    q, k = per_head(x, q_weight, q_bias, num_heads), layer_keys(x, k_weight, k_bias, num_heads)
    head_dim = q.shape[-1]
    probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5), dim=-1)
    return probs.mean(dim=2)[:, :, 1:]
