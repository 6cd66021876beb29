"""The memory plan: what a bundle needs on a device, computed before anything is built.

    total = weights + embedding table (when memory is shared with the CPU) + KV cache
            + activations + builder workspace + reserved

- weights: the parameters the two graphs hold (vision tower up to the feature layer, projector,
  language model and lm_head), x 2 bytes (fp16) or 4 (fp32). Exact.
- embedding table: vocab x hidden; the runtime looks text tokens up on the host, so it counts
  only where host and GPU share memory (Jetson, CPU). Exact.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x bytes, with context =
  K + max_prompt_tokens + max_output_tokens (capped at max_position_embeddings). Exact,
  because K is fixed by the budget: no image can make the prompt longer.
- activations: the largest prefill step at the longest prompt S = K + max_prompt_tokens:
  hidden states and MLP intermediates (S x (4 hidden + 2 intermediate)), one layer's attention
  scores (heads x S x S, as an unfused attention materialises them) and the logits row, or the
  vision tower's equivalent if larger. An estimate: TensorRT fuses and reuses buffers, so the
  real figure is lower.
- workspace: the profile's builder workspace limit (TensorRT scratch memory).
- reserved: the profile's allowance for the OS, CUDA context and TensorRT runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecompress.engine.profiles import Profile
from edgecompress.errors import EdgeCompressError

GIB = 1024**3
BYTES = {"fp16": 2, "fp32": 4}


def parameter_counts(architecture: dict[str, Any]) -> dict[str, int]:
    """Parameters each exported graph holds, counted on the meta device (no memory used)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(**{k: v for k, v in architecture.items() if k not in ("architectures", "transformers_version")})
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    tower = model.model.vision_tower
    layer = config.vision_feature_layer
    num_layers = config.vision_config.num_hidden_layers
    used = (layer if layer >= 0 else num_layers + 1 + layer)  # layers up to and including the feature layer

    def count(*modules) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    lm = model.model.language_model
    embed = lm.embed_tokens
    return {
        "vision": count(tower.embeddings, tower.pre_layrnorm, *tower.encoder.layers[:used], model.model.multi_modal_projector),
        "decoder": count(lm) - count(embed) + count(model.lm_head),
        "embeddings": count(embed),
    }


@dataclass
class MemoryPlan:
    profile: str
    precision: str
    k: int
    context: int
    rows: dict[str, float] = field(default_factory=dict)  # bytes by item
    capacity: float = 0.0  # bytes
    suggestions: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "precision": self.precision,
            "k": self.k,
            "context": self.context,
            "gib": {name: round(value / GIB, 3) for name, value in self.rows.items()},
            "total_gib": round(self.total / GIB, 3),
            "capacity_gib": round(self.capacity / GIB, 3),
            "fits": self.fits,
            "suggestions": self.suggestions,
        }

    def table(self) -> str:
        lines = [f"memory plan on {self.profile} ({self.precision}, K = {self.k}, context {self.context} tokens)"]
        for name, value in self.rows.items():
            lines.append(f"  {name:<22} {value / GIB:8.2f} GiB")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"  {'total':<22} {self.total / GIB:8.2f} GiB of {self.capacity / GIB:.2f} GiB: {verdict}")
        lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


def _activations(architecture: dict[str, Any], prefill: int, nbytes: int) -> float:
    text, vision = architecture["text_config"], architecture["vision_config"]
    decoder = prefill * (4 * text["hidden_size"] + 2 * text["intermediate_size"]) * nbytes
    decoder += text["num_attention_heads"] * prefill * prefill * nbytes + text["vocab_size"] * 4
    tokens = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    vision_act = tokens * (4 * vision["hidden_size"] + vision["intermediate_size"]) * nbytes
    vision_act += vision["num_attention_heads"] * tokens * tokens * 4  # selection scores stay fp32
    return max(decoder, vision_act * vision_images(architecture))


def unpruned_image_tokens(architecture: dict[str, Any]) -> int:
    """The most image tokens the unpruned model feeds its language model: N for LLaVA-1.5; for
    LLaVA-NeXT the base N plus the largest grid's tokens and one newline per token row."""
    vision = architecture["vision_config"]
    side = vision["image_size"] // vision["patch_size"]
    tile = vision["image_size"]
    pinpoints = architecture.get("image_grid_pinpoints") or []
    tiles = [((h // tile) * side, (w // tile) * side) for h, w in pinpoints]
    return side * side + max((rows * cols + rows for rows, cols in tiles), default=0)


def image_tokens_at(architecture: dict[str, Any], budget: str) -> int:
    """K, the image tokens the language model reads at ``budget``: resolved against every vision
    slot (LLaVA-NeXT: the largest grid, as export does); at 100%, the model's own unpruned count."""
    from edgecompress.budget import resolve_budget

    vision = architecture["vision_config"]
    n = (vision["image_size"] // vision["patch_size"]) ** 2 * vision_images(architecture)
    k = resolve_budget(budget, n).k
    return unpruned_image_tokens(architecture) if k == n else k


def vision_images(architecture: dict[str, Any]) -> int:
    """Images the vision graph encodes at once: 1, or for LLaVA-NeXT the base plus the most tiles."""
    pinpoints = architecture.get("image_grid_pinpoints")
    if not pinpoints:
        return 1
    tile = architecture["vision_config"]["image_size"]
    return 1 + max((h // tile) * (w // tile) for h, w in pinpoints)


def plan_memory(architecture: dict[str, Any], k: int, profile: Profile, precision: str | None = None,
                counts: dict[str, int] | None = None) -> MemoryPlan:
    precision = precision or profile.precision
    if precision not in BYTES:
        raise EdgeCompressError(f"unknown precision {precision!r}", hint="Use fp16 or fp32.")
    nbytes = BYTES[precision]
    counts = counts or parameter_counts(architecture)
    text = architecture["text_config"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    max_positions = text["max_position_embeddings"]

    def rows_for(k_: int, prompt: int, output: int) -> tuple[int, dict[str, float]]:
        context = min(k_ + prompt + output, max_positions)
        rows = {
            "weights (vision)": counts["vision"] * nbytes,
            "weights (decoder)": counts["decoder"] * nbytes,
        }
        if profile.shared_memory:
            rows["embedding table"] = counts["embeddings"] * nbytes
        rows["KV cache"] = 2 * text["num_hidden_layers"] * kv_heads * head_dim * context * nbytes
        rows["activations (est.)"] = _activations(architecture, min(k_ + prompt, max_positions), nbytes)
        rows["builder workspace"] = profile.workspace_gib * GIB
        rows["reserved"] = profile.reserved_gib * GIB
        return context, rows

    context, rows = rows_for(k, profile.max_prompt_tokens, profile.max_output_tokens)
    plan = MemoryPlan(profile.name, precision, k, context, rows, profile.memory_gib * GIB)
    if not plan.fits:
        plan.suggestions = _suggestions(plan, rows_for, k, profile)
    return plan


def _suggestions(plan: MemoryPlan, rows_for, k: int, profile: Profile) -> list[str]:
    capacity = plan.capacity
    fixed = sum(v for name, v in plan.rows.items() if name.startswith("weights") or name in ("embedding table", "reserved", "builder workspace"))
    if fixed > capacity:
        weights = sum(v for name, v in plan.rows.items() if name.startswith("weights")) / GIB
        return [
            f"the weights alone ({weights:.2f} GiB) with the reserved memory and workspace exceed "
            f"{profile.memory_gib:g} GiB: use a smaller model (or a device with more memory)"
        ]
    hints = []
    for smaller_k in range(k - 1, 0, -1):
        _, rows = rows_for(smaller_k, profile.max_prompt_tokens, profile.max_output_tokens)
        if sum(rows.values()) <= capacity:
            hints.append(f"a lower budget: K = {smaller_k} tokens or fewer fits with this profile's token limits")
            break
    for scale in (0.75, 0.5, 0.25, 0.125):
        prompt, output = int(profile.max_prompt_tokens * scale), int(profile.max_output_tokens * scale)
        _, rows = rows_for(k, prompt, output)
        if sum(rows.values()) <= capacity:
            hints.append(f"a shorter context: max_prompt_tokens = {prompt}, max_output_tokens = {output} fits at K = {k} (your own profile .toml)")
            break
    hints.append("a smaller model")
    return hints


def require_fit(plan: MemoryPlan) -> None:
    if not plan.fits:
        raise EdgeCompressError(
            f"the bundle does not fit {plan.profile}: it needs {plan.total / GIB:.2f} GiB of {plan.capacity / GIB:.2f} GiB\n"
            + plan.table(),
            hint="Pass --ignore-memory-plan to build anyway.",
        )
