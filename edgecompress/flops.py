"""Analytic FLOP counts for the exported pipelines (multiply-adds x 2), for predictions that
benchmarks compare with measurements. Counts what the exported graphs compute: the vision
tower up to the feature layer (Qwen2.5-VL: the whole windowed tower), the projector on K tokens
(Qwen2.5-VL: the patch merger, on all N tokens), the language model's prefill with full (masked) attention scores,
and the lm_head on the last position only."""

from __future__ import annotations

from typing import Any

from edgecompress.architecture import Architecture, QwenVisionTower, text_config


def vision_flops(vision: dict[str, Any], layers: int, k: int, projected_dim: int, images: int = 1) -> float:
    """A CLIP tower (LLaVA) on ``images`` images (LLaVA-NeXT: every slot of the graph), the projector on K tokens."""
    d, ff = vision["hidden_size"], vision["intermediate_size"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    tokens = patches + 1
    patch_embed = 2 * patches * 3 * vision["patch_size"] ** 2 * d
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + 4 * tokens * tokens * d
    projector = 2 * k * (d * projected_dim + projected_dim * projected_dim)
    return images * (patch_embed + layers * per_layer) + projector


def qwen_vision_flops(tower: QwenVisionTower, k: int) -> float:
    """Qwen2.5-VL's tower on one image: the patch embedding (a Conv3d over two frames), every block
    on the P patches (attention over one window's patches, or over all P in the full-attention
    blocks; a gated MLP), and the merger on all N merged tokens (the graph merges, then selects: a
    method may compare the merged tokens; ``k`` does not change the tower's count)."""
    d, ff, p = tower.hidden, tower.intermediate, tower.tower_tokens
    patch_embed = 2 * p * tower.channels * tower.temporal_patch_size * tower.patch_size**2 * d
    dense = 2 * p * (4 * d * d + 3 * d * ff)  # qkv, proj; gate, up, down
    full = sum(1 for i in tower.full_attention_layers if 0 <= i < tower.layers)
    attention = 4 * p * d * (full * p + (tower.layers - full) * tower.window_patches)
    grouped = d * tower.merge_size**2
    merger = 2 * (p // tower.merge_size**2) * (grouped * grouped + grouped * tower.out_hidden)
    return patch_embed + tower.layers * dense + attention + merger


def vision_graph_flops(architecture: dict[str, Any], k: int, feature_layer: int | None = None) -> float:
    """The vision graph of a bundle keeping K tokens. ``feature_layer``: the last CLIP encoder layer
    it runs (default: the one the config's projector reads); Qwen2.5-VL runs every block."""
    facts = Architecture.from_config(architecture)
    if isinstance(facts.vision, QwenVisionTower):
        return qwen_vision_flops(facts.vision, k)
    layers = facts.used_vision_layers if feature_layer is None else feature_layer + 1
    return vision_flops(architecture["vision_config"], layers, k, facts.text.hidden, facts.vision_images)


def prefill_flops(text: dict[str, Any], length: int) -> float:
    d, ff, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or d // heads
    projections = 2 * length * (2 * d * d + 2 * d * kv_heads * head_dim)
    mlp = 2 * length * 3 * d * ff
    attention = 4 * length * length * d
    return layers * (projections + mlp + attention) + 2 * d * text["vocab_size"]


def ttft_flops(architecture: dict[str, Any], feature_layer: int | None, k: int, text_tokens: int) -> float:
    return vision_graph_flops(architecture, k, feature_layer) + prefill_flops(text_config(architecture), text_tokens + k)
