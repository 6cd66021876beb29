"""Analytic FLOP counts for the LLaVA pipelines (multiply-adds x 2), for predictions that
benchmarks compare with measurements. Counts what the exported graphs compute: the vision
tower up to the feature layer, the projector on K tokens, the language model's prefill with
full (masked) attention scores, and the lm_head on the last position only."""

from __future__ import annotations

from typing import Any

from edgecompress.architecture import Architecture


def vision_flops(vision: dict[str, Any], layers: int, k: int, projected_dim: int, images: int = 1) -> float:
    """The tower on ``images`` images (LLaVA-NeXT: every slot of the graph), the projector on K tokens."""
    d, ff = vision["hidden_size"], vision["intermediate_size"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    tokens = patches + 1
    patch_embed = 2 * patches * 3 * vision["patch_size"] ** 2 * d
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + 4 * tokens * tokens * d
    projector = 2 * k * (d * projected_dim + projected_dim * projected_dim)
    return images * (patch_embed + layers * per_layer) + projector


def prefill_flops(text: dict[str, Any], length: int) -> float:
    d, ff, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or d // heads
    projections = 2 * length * (2 * d * d + 2 * d * kv_heads * head_dim)
    mlp = 2 * length * 3 * d * ff
    attention = 4 * length * length * d
    return layers * (projections + mlp + attention) + 2 * d * text["vocab_size"]


def ttft_flops(architecture: dict[str, Any], feature_layer: int, k: int, text_tokens: int) -> float:
    vision = architecture["vision_config"]
    text = architecture["text_config"]
    images = Architecture.from_config(architecture).vision_images
    return vision_flops(vision, feature_layer + 1, k, text["hidden_size"], images) + prefill_flops(text, text_tokens + k)
