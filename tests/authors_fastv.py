"""FastV as its authors compute it (pkunlp-icler/FastV, the "inplace" variant), written plainly
from transformers' own language model, sharing no code with edgecompress's FastV modules.

- Selection: run the language model eagerly on the whole prompt with ``output_attentions=True``;
  take layer L-1's attention, the last prompt token's row, averaged over heads, over the image
  tokens; the top K, shifted by the image's start, with every text token, sorted.
- What layers L.. compute on the kept tokens: the authors drop the other image tokens from the
  hidden states and run the later layers on the rest at their original positions. Dropped
  tokens then never reach a kept token in those layers, which is the same as running the whole
  prompt through transformers' own model with the dropped tokens masked out as keys in layers
  L.. (their own rows are computed and ignored). The check below does the latter: transformers'
  forward, rotary embeddings and cache handling throughout, only the mask of layers L.. changed
  (through a forward pre-hook), and greedy decoding by recomputing the whole sequence each step.
"""

from __future__ import annotations

import torch


def authors_kept(language_model, embeds: torch.Tensor, layer: int, image_start: int, image_tokens: int, k: int):
    """(kept image tokens 0..N-1 ascending, the head-mean scores over the image [N]) from layer
    L-1's eager attention of the last prompt token."""
    with torch.no_grad():
        out = language_model(inputs_embeds=embeds, output_attentions=True)
    row = out.attentions[layer - 1][0].float().mean(dim=0)[-1]  # [S]: heads averaged, last query
    scores = row[image_start : image_start + image_tokens]
    top = torch.topk(scores, k).indices
    return sorted(top.tolist()), scores


def masked_logits(model, embeds: torch.Tensor, layer: int, dropped: list[int]) -> torch.Tensor:
    """Last-position logits [vocab] of the whole model on ``embeds`` (positions 0..S-1), the
    ``dropped`` prompt positions invisible as keys in layers >= ``layer``."""
    lm = model.model.language_model
    length = embeds.shape[1]
    low = torch.finfo(embeds.dtype).min
    causal = torch.triu(torch.full((length, length), low, dtype=embeds.dtype), diagonal=1)[None, None]
    pruned = causal.clone()
    pruned[..., dropped] = low

    def hook_for(mask):
        def hook(module, args, kwargs):
            kwargs["attention_mask"] = mask
            return args, kwargs
        return hook

    handles = [block.register_forward_pre_hook(hook_for(pruned if i >= layer else causal), with_kwargs=True)
               for i, block in enumerate(lm.layers)]
    try:
        with torch.no_grad():
            hidden = lm(inputs_embeds=embeds, position_ids=torch.arange(length)[None]).last_hidden_state
            return model.lm_head(hidden[:, -1]).float()[0]
    finally:
        for handle in handles:
            handle.remove()


def authors_fastv_generate(model, embeds: torch.Tensor, layer: int, image_start: int, image_tokens: int, k: int,
                           max_new_tokens: int, eos: set[int]):
    """(kept image tokens, their scores, prefill logits, greedy token ids) as FastV computes them."""
    lm = model.model.language_model
    kept, scores = authors_kept(lm, embeds, layer, image_start, image_tokens, k)
    dropped = [image_start + i for i in range(image_tokens) if i not in set(kept)]
    table = model.get_input_embeddings()
    logits = masked_logits(model, embeds, layer, dropped)
    prefill, tokens = logits, []
    while len(tokens) < max_new_tokens:
        token = int(torch.argmax(logits))
        if token in eos:
            break
        tokens.append(token)
        if len(tokens) == max_new_tokens:
            break
        with torch.no_grad():
            embeds = torch.cat([embeds, table(torch.tensor([[token]]))], dim=1)
        logits = masked_logits(model, embeds, layer, dropped)
    return kept, scores, prefill, tokens
