"""The PyTorch pipelines that bundles are checked against.

- :func:`transformers_generate`: the unpruned model exactly as transformers runs it
  (processor, chat template, ``generate(do_sample=False)``).
- :func:`pruned_generate`: the same model fed the pruned PyTorch vision module's K embeddings
  in place of the image placeholder, then ``generate(do_sample=False)`` on the embeddings
  (Qwen2.5-VL: :func:`mrope_greedy`, greedy steps with the kept tokens' mRoPE positions).
- :func:`decoder_pruned_generate`: for a method that prunes inside the language model (FastV):
  every image embedding in the prompt, the PyTorch prefill module that prunes at its decoder
  layer, then greedy decode steps through the PyTorch split-cache decoder, positions original.

Both use transformers' own tokenizer, chat template and image processor, so they share no
code with the runtime they check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class ReferenceOutput:
    token_ids: list[int]
    prefill_logits: torch.Tensor  # last prompt position, fp32 [vocab]
    kept_indices: list[int] | None = None
    scores: list[float] | None = None  # the pruned module's per-token selection scores, where it ranks by any
    # for methods with no single ranking: (other kept indices, relative tie band) -> whether the
    # method could have kept those from this image (None: no such check)
    accepts: Callable[[list[int], float], bool | None] | None = None


def chat_text(processor, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def _strip_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(ids):
        if token in eos:
            return ids[:i]
    return ids


def transformers_generate(model, processor, image, prompt: str, max_new_tokens: int) -> ReferenceOutput:
    inputs = processor(images=image, text=chat_text(processor, prompt), return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        prefill = model(**inputs).logits[0, -1].float()
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    generated = out[0, inputs["input_ids"].shape[1] :].tolist()
    return ReferenceOutput(_strip_eos(generated, _eos(model)), prefill)


def pruned_generate(model, processor, vision_module, image, prompt: str, max_new_tokens: int) -> ReferenceOutput:
    """Prompt with one image placeholder; the K pruned embeddings are spliced in its place."""
    ids = processor.tokenizer(chat_text(processor, prompt), return_tensors="pt")["input_ids"][0]
    image_token = model.config.image_token_id
    (positions,) = torch.nonzero(ids == image_token, as_tuple=True)
    assert len(positions) == 1, "the chat prompt must hold exactly one image placeholder"
    at = int(positions[0])
    embed = model.get_input_embeddings()
    with torch.no_grad():
        inputs = vision_inputs(model, processor, image)
        image_embeds, kept = vision_module(*inputs)
        score_fn = getattr(vision_module, "selection_scores", None)
        scores = score_fn(*inputs) if score_fn is not None else None
        embeds = torch.cat([embed(ids[None, :at]), image_embeds.to(embed.weight.dtype), embed(ids[None, at + 1 :])], dim=1)
        if model.config.model_type == "qwen2_5_vl":
            prefill, generated = mrope_greedy(model, embeds, at, kept[0], len(ids) - at - 1, max_new_tokens)
        else:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            prefill = model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].float()
            generated = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False)[0].tolist()
    check = getattr(vision_module, "accepts_selection", None)
    accepts = None if check is None else (lambda other, band: check(*inputs, other, band))
    return ReferenceOutput(_strip_eos(generated, _eos(model)), prefill, kept[0].tolist(),
                           None if scores is None else scores[0].tolist(), accepts)


def mrope_greedy(model, embeds, before: int, kept, after: int, max_new_tokens: int):
    """Qwen2.5-VL on prompt embeddings whose image tokens are ``kept`` (merged grid indices): the
    mRoPE positions of the kept tokens (their places on the unpruned grid; text after the image
    where the unpruned layout puts it), then greedy steps at (p, p, p). (prefill logits, tokens)."""
    from edgecompress.models.qwen2_5_vl import mrope_positions

    side = model.config.vision_config.image_size // model.config.vision_config.patch_size // model.config.vision_config.spatial_merge_size
    positions = mrope_positions(before, kept, (side, side), after)
    out = model(inputs_embeds=embeds, position_ids=positions, use_cache=True)
    prefill, cache = out.logits[0, -1].float(), out.cache
    nxt = before + side + after  # where the unpruned layout continues (the runtime's rule)
    generated: list[int] = []
    eos = _eos(model)
    while len(generated) < max_new_tokens:
        token = int(torch.argmax(out.logits[0, -1]))
        generated.append(token)
        if token in eos or len(generated) == max_new_tokens:
            break
        step = torch.full((3, 1, 1), nxt + len(generated) - 1, dtype=torch.int64)
        out = model(inputs_embeds=model.get_input_embeddings()(torch.tensor([[token]])), position_ids=step,
                    cache=cache, use_cache=True)
        cache = out.cache
    return prefill, generated


def decoder_pruned_generate(model, processor, vision_module, prefill_module, decoder_module, image, prompt: str,
                            max_new_tokens: int) -> ReferenceOutput:
    """The PyTorch pipeline a FastV bundle is checked against: transformers' tokenizer and chat
    template, the unpruned vision module's N embeddings in place of the placeholder, the prefill
    module (prunes at layer L; returns the kept image tokens) and greedy decode steps."""
    ids = processor.tokenizer(chat_text(processor, prompt), return_tensors="pt")["input_ids"][0]
    (positions,) = torch.nonzero(ids == model.config.image_token_id, as_tuple=True)
    assert len(positions) == 1, "the chat prompt must hold exactly one image placeholder"
    at = int(positions[0])
    embed = model.get_input_embeddings()
    eos = _eos(model)
    with torch.no_grad():
        inputs = vision_inputs(model, processor, image)
        image_embeds, _ = vision_module(*inputs)
        embeds = torch.cat([embed(ids[None, :at]), image_embeds.to(embed.weight.dtype), embed(ids[None, at + 1 :])], dim=1)
        length = embeds.shape[1]
        logits, kept, *past = prefill_module(embeds, torch.arange(length)[None])
        scores = prefill_module.selection_scores(embeds, torch.arange(length)[None])
        prefill = logits[0, -1].float()
        generated: list[int] = []
        while len(generated) < max_new_tokens:
            token = int(torch.argmax(logits[0, -1]))
            if token in eos:
                break
            generated.append(token)
            if len(generated) == max_new_tokens:
                break
            logits, *past = decoder_module(embed(torch.tensor([[token]])), torch.tensor([[length + len(generated) - 1]]),
                                           *past)
    return ReferenceOutput(generated, prefill, kept[0].tolist(), None if scores is None else scores[0].tolist())


def vision_inputs(model, processor, image) -> tuple[torch.Tensor, ...]:
    """The pruned vision module's inputs, from transformers' own image processor.

    LLaVA-1.5: (pixel_values,). LLaVA-NeXT: the processor's base + tile crops padded with zero
    slots to 1 + max_tiles, the index of transformers' grid in the pinpoints, and the tile mask
    obtained by running transformers' ``unpad_image`` over a canvas of token positions.
    """
    if model.config.model_type == "qwen2_5_vl":  # the fixed grid's patch rows (QwenProcessor)
        return (processor.images(image)["pixel_values"],)
    out = processor.image_processor(image, return_tensors="pt")
    pixel_values = out["pixel_values"]
    if model.config.model_type != "llava_next":
        return (pixel_values,)
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    config = model.config
    size = config.vision_config.image_size
    side = size // config.vision_config.patch_size
    grids = [(h // size, w // size) for h, w in config.image_grid_pinpoints]
    tiles = max(h * w for h, w in grids)
    image_size = out["image_sizes"][0]
    grid = tuple(get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints, size))
    used = 1 + grid[0] * grid[1]
    slots = torch.zeros(1 + tiles, *pixel_values.shape[-3:], dtype=pixel_values.dtype)
    slots[:used] = pixel_values[0, :used]
    # canvas[t, y, x]: tile-token index t*N + p of each cell, viewed as pack_image_features does
    n = side * side
    flat = torch.arange(grid[0] * grid[1] * n, dtype=torch.float32).view(grid[0], grid[1], side, side, 1)
    canvas = flat.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    inside = unpad_image(canvas, image_size).flatten().long()
    tile_mask = torch.zeros(tiles * n)
    tile_mask[inside] = 1.0
    return slots, torch.tensor([grids.index(grid)]), tile_mask.view(tiles, n)


def _eos(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else ({eos} if isinstance(eos, int) else set(eos))
