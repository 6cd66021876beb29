"""The language model with a decoder-stage method (FastV) inside: a prefill graph that prunes
the image tokens at decoder layer L, and a decode graph whose layers hold caches of two lengths.

Both loop over the language model's layers themselves instead of calling the model: transformers
builds one attention mask for every layer, sized from layer 0's cache, which cannot describe
layers whose caches are shorter. Here each layer gets the mask of its own cache length (none is
needed to decode one token: it sees its whole cache), rotary embeddings come from the model's
own ``rotary_emb`` at the tokens' original positions, and the cache is a flat list of tensors.

The attention row the method reads (layer L-1, last prompt token) is recomputed from that
layer's own projections in fp32 (its input norm, q of the last token, k of every token, rotary,
grouped heads repeated, softmax): the same values the layer's eager attention computes, without
materialising the [H, S, S] weights as a graph output, and without fp16 rounding deciding which
tokens are kept.

(Imports torch and transformers: import this module only where they are needed.)
"""

from __future__ import annotations

import torch
from torch import nn

from edgecompress.lowering.primitives import splice_kept
from edgecompress.methods import DecoderInputs, Method


class FlatCache:
    """What a transformers attention layer calls ``cache.update`` on: each layer's past keys and
    values (or none), extended by the new tokens; the result is that layer's present."""

    def __init__(self, past: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.past = past or {}
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        if layer_idx in self.past:
            past_key, past_value = self.past[layer_idx]
            key, value = torch.cat([past_key, key], dim=2), torch.cat([past_value, value], dim=2)
        self.present[layer_idx] = (key, value)
        return key, value

    def flat(self, num_layers: int) -> list[torch.Tensor]:
        return [t for i in range(num_layers) for t in self.present[i]]


def causal_mask(tokens: int, past: int | torch.SymInt, dtype) -> torch.Tensor:
    """Additive mask [1, 1, tokens, past + tokens]: new token i sees the cache and new tokens 0..i."""
    keys = torch.arange(past + tokens)
    visible = keys[None, :] <= (torch.arange(tokens) + past)[:, None]
    return torch.where(visible, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]


def last_token_attention(layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[B, H, S] fp32: the softmax attention row of the last token in ``layer`` (a Llama-style
    decoder layer), heads as the layer has them, over every token of ``hidden`` (its input)."""
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    attn, norm = layer.self_attn, layer.input_layernorm
    x = hidden.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight.float()
    batch, tokens = x.shape[:2]
    d = attn.head_dim

    def project(linear, rows):
        bias = None if linear.bias is None else linear.bias.float()
        return nn.functional.linear(rows, linear.weight.float(), bias).view(batch, rows.shape[1], -1, d).transpose(1, 2)

    q = project(attn.q_proj, x[:, -1:])  # [B, H, 1, d]
    k = project(attn.k_proj, x)  # [B, Hkv, S, d]
    cos, sin = cos.float().unsqueeze(1), sin.float().unsqueeze(1)
    q = q * cos[:, :, -1:] + rotate_half(q) * sin[:, :, -1:]
    k = repeat_kv(k * cos + rotate_half(k) * sin, attn.num_key_value_groups)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    return torch.softmax(scores, dim=-1)[:, :, 0]


class _LayerLoop(nn.Module):
    def __init__(self, adapter):
        super().__init__()
        lm = adapter.model.model.language_model
        lm.config._attn_implementation = "eager"  # the mask is additive, built here per cache length
        self.layers, self.rotary, self.norm = lm.layers, lm.rotary_emb, lm.norm
        self.lm_head = adapter.model.lm_head
        self.num_layers = len(self.layers)

    def run(self, hidden, position_ids, cache: FlatCache, layers: range, mask):
        embeddings = self.rotary(hidden, position_ids=position_ids)
        for i in layers:
            hidden = self.layers[i](hidden, attention_mask=mask(i), position_ids=position_ids, cache=cache,
                                    use_cache=True, position_embeddings=embeddings)
        return hidden

    def logits(self, hidden):
        # select (a Gather), not a [:, -1:] slice: [1, 1, vocab] for any length (as Decoder does)
        return self.lm_head(self.norm(hidden).select(1, -1)).float().unsqueeze(1)


class PrunedPrefill(_LayerLoop):
    """(inputs_embeds [1,S,D], position_ids [1,S]) -> (logits [1,1,V] fp32, kept image tokens
    [1,K], present.{i}.key/value: S tokens for i < L, S - N + K for i >= L).

    Layers 0..L-1 run on the whole prompt; the method reads layer L-1's attention row of the last
    prompt token and keeps K of the N image tokens at ``image_start``; layers L.. run on the text
    and kept tokens at their original positions.
    """

    def __init__(self, adapter, method: Method, layer: int, image_start: int, image_tokens: int, k: int):
        super().__init__(adapter)
        self.method, self.layer, self.k = method, layer, k
        self.image_start, self.image_tokens = image_start, image_tokens

    def method_inputs(self, inputs_embeds, position_ids) -> tuple[DecoderInputs, FlatCache]:
        """What the method reads at layer L (the hidden states entering it, layer L-1's attention
        row of the last prompt token) and the cache of layers 0..L-1."""
        cache = FlatCache()
        hidden = inputs_embeds
        mask = causal_mask(hidden.shape[1], 0, hidden.dtype)
        hidden = self.run(hidden, position_ids, cache, range(self.layer - 1), lambda i: mask)
        cos, sin = self.rotary(hidden, position_ids=position_ids)
        attention = last_token_attention(self.layers[self.layer - 1], hidden, cos, sin)
        hidden = self.run(hidden, position_ids, cache, range(self.layer - 1, self.layer), lambda i: mask)
        return DecoderInputs(hidden, attention, self.image_start, self.image_tokens), cache

    def selection_scores(self, inputs_embeds, position_ids) -> torch.Tensor | None:
        """The per-image-token scores the method ranks by [B, N] (fp32), for tie-band parity checks."""
        if self.method.score is None:
            return None
        return self.method.score(self.method_inputs(inputs_embeds, position_ids)[0])

    def forward(self, inputs_embeds, position_ids):
        inputs, cache = self.method_inputs(inputs_embeds, position_ids)
        hidden, kept = self.method.select(inputs, self.k)
        positions = splice_kept(position_ids, self.image_start, self.image_tokens, kept)
        mask = causal_mask(hidden.shape[1], 0, hidden.dtype)
        hidden = self.run(hidden, positions, cache, range(self.layer, self.num_layers), lambda i: mask)
        return (self.logits(hidden), kept, *cache.flat(self.num_layers))


class SplitCacheDecoder(_LayerLoop):
    """(inputs_embeds [1,T,D], position_ids [1,T], past.{i}.key/value) -> (logits, present): the
    decode step after a pruning prefill, layers < L and >= L holding caches of their own length."""

    def __init__(self, adapter, layer: int):
        super().__init__(adapter)
        self.layer = layer

    def forward(self, inputs_embeds, position_ids, *past):
        cache = FlatCache({i: (past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)})
        tokens, dtype = inputs_embeds.shape[1], inputs_embeds.dtype
        masks = {group: causal_mask(tokens, past[2 * first].shape[2], dtype)
                 for group, first in (("full", 0), ("pruned", self.layer))}
        hidden = self.run(inputs_embeds, position_ids, cache, range(self.num_layers),
                          lambda i: masks["pruned" if i >= self.layer else "full"])
        return (self.logits(hidden), *cache.flat(self.num_layers))
