"""The PyTorch pipelines that bundles are checked against.

- :func:`transformers_generate`: the unpruned model exactly as transformers runs it
  (processor, chat template, ``generate(do_sample=False)``).
- :func:`pruned_generate`: the same model fed the pruned PyTorch vision module's K embeddings
  in place of the image placeholder, then ``generate(do_sample=False)`` on the embeddings.

Both use transformers' own tokenizer, chat template and image processor, so they share no
code with the runtime they check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ReferenceOutput:
    token_ids: list[int]
    prefill_logits: torch.Tensor  # last prompt position, fp32 [vocab]
    kept_indices: list[int] | None = None


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
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    embed = model.get_input_embeddings()
    with torch.no_grad():
        image_embeds, kept = vision_module(pixel_values)
        embeds = torch.cat([embed(ids[None, :at]), image_embeds.to(embed.weight.dtype), embed(ids[None, at + 1 :])], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        prefill = model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].float()
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False)
    return ReferenceOutput(_strip_eos(out[0].tolist(), _eos(model)), prefill, kept[0].tolist())


def _eos(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else ({eos} if isinstance(eos, int) else set(eos))
