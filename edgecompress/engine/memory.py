"""The memory plan: what a bundle needs on a device, computed before anything is built.

    total = weights + embedding table (when memory is shared with the CPU) + KV cache
            + activations + builder workspace + reserved

- weights: the parameters the two graphs hold (vision tower up to the feature layer, projector,
  language model and lm_head), x 2 bytes (fp16) or 4 (fp32). Exact.
- embedding table: vocab x hidden; the runtime looks text tokens up on the host, so it counts
  only where host and GPU share memory (Jetson, CPU). Exact.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x bytes, with context =
  K + max_prompt_tokens + max_output_tokens (capped at max_position_embeddings). Exact,
  because K is fixed by the budget: no image can make the prompt longer. With a method that
  prunes inside the language model at layer L (FastV), layers below L hold all N image
  tokens and layers from L on the K kept ones: each layer's cache is counted at its length.
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

from edgecompress.architecture import Architecture
from edgecompress.engine.profiles import Profile
from edgecompress.errors import EdgeCompressError

GIB = 1024**3
BYTES = {"fp16": 2, "fp32": 4}


def parameter_counts(architecture: dict[str, Any]) -> dict[str, int]:
    """Parameters each exported graph holds, from the config alone (no torch)."""
    return Architecture.from_config(architecture).parameter_counts()


@dataclass
class MemoryPlan:
    profile: str
    precision: str
    k: int
    context: int
    rows: dict[str, float] = field(default_factory=dict)  # bytes by item
    capacity: float = 0.0  # bytes
    suggestions: list[str] = field(default_factory=list)
    kv_lengths: list[int] = field(default_factory=list)  # each decoder layer's cache length, in tokens

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
            "kv_lengths": self.kv_lengths,
        }

    def table(self) -> str:
        lines = [f"memory plan on {self.profile} ({self.precision}, K = {self.k}, context {self.context} tokens)"]
        if len(set(self.kv_lengths)) > 1:
            lines.append("  KV cache per layer: " + ", ".join(
                f"layers {first}-{last}: {length} tokens" for first, last, length in _runs(self.kv_lengths)))
        for name, value in self.rows.items():
            lines.append(f"  {name:<22} {value / GIB:8.2f} GiB")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"  {'total':<22} {self.total / GIB:8.2f} GiB of {self.capacity / GIB:.2f} GiB: {verdict}")
        lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


def _runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(first layer, last layer, length) for each run of equal cache lengths."""
    runs: list[tuple[int, int, int]] = []
    for i, length in enumerate(lengths):
        if runs and runs[-1][2] == length:
            runs[-1] = (runs[-1][0], i, length)
        else:
            runs.append((i, i, length))
    return runs


def _activations(facts: Architecture, prefill: int, nbytes: int) -> float:
    text, vision = facts.text, facts.vision
    decoder = prefill * (4 * text.hidden + 2 * text.intermediate) * nbytes
    decoder += text.heads * prefill * prefill * nbytes + text.vocab * 4
    tokens = vision.patches + 1
    vision_act = tokens * (4 * vision.hidden + vision.intermediate) * nbytes
    vision_act += vision.heads * tokens * tokens * 4  # selection scores stay fp32
    return max(decoder, vision_act * facts.vision_images)


def image_tokens_at(architecture: dict[str, Any], budget: str, method: str = "hired") -> int:
    """K, the image tokens the language model reads at ``budget`` with ``method``: the K export
    keeps (``edgecompress.budget.resolve_for``, the one place a budget becomes K); a budget of
    every token plans the unpruned model (for LLaVA-NeXT its packed maximum)."""
    from edgecompress.budget import resolve_budget, resolve_for
    from edgecompress.methods import get_method

    facts = Architecture.from_config(architecture)
    every = facts.vision.patches * facts.vision_images
    if resolve_budget(budget, every).k == every:
        return facts.unpruned_image_tokens
    return resolve_for(budget, get_method(method), facts).k


def plan_memory(architecture: dict[str, Any], k: int, profile: Profile, precision: str | None = None,
                counts: dict[str, int] | None = None, pruned_at: tuple[int, int] | None = None) -> MemoryPlan:
    """The memory plan for K image tokens. ``pruned_at`` = (layer L, N) for a method that prunes
    inside the language model: the prompt holds N image tokens up to layer L, K from it on."""
    precision = precision or profile.precision
    if precision not in BYTES:
        raise EdgeCompressError(f"unknown precision {precision!r}", hint="Use fp16 or fp32.")
    nbytes = BYTES[precision]
    facts = Architecture.from_config(architecture)
    counts = counts or facts.parameter_counts()
    text = facts.text
    max_positions = text.max_positions

    def lengths_for(k_: int, prompt: int, output: int) -> list[int]:
        if pruned_at is None:
            return [min(k_ + prompt + output, max_positions)] * text.layers
        layer, n = pruned_at
        full = min(n + prompt + output, max_positions)
        return [full if i < layer else full - n + min(k_, n) for i in range(text.layers)]

    def rows_for(k_: int, prompt: int, output: int) -> tuple[int, dict[str, float]]:
        lengths = lengths_for(k_, prompt, output)
        context = lengths[0]  # positions run over the whole prompt (layer 0 holds it all)
        rows = {
            "weights (vision)": counts["vision"] * nbytes,
            "weights (decoder)": counts["decoder"] * nbytes,
        }
        if profile.shared_memory:
            rows["embedding table"] = counts["embeddings"] * nbytes
        rows["KV cache"] = 2 * text.kv_heads * text.head_dim * sum(lengths) * nbytes
        prompt_images = k_ if pruned_at is None else pruned_at[1]  # the prefill reads every image token
        rows["activations (est.)"] = _activations(facts, min(prompt_images + prompt, max_positions), nbytes)
        rows["builder workspace"] = profile.workspace_gib * GIB
        rows["reserved"] = profile.reserved_gib * GIB
        return context, rows

    context, rows = rows_for(k, profile.max_prompt_tokens, profile.max_output_tokens)
    plan = MemoryPlan(profile.name, precision, k, context, rows, profile.memory_gib * GIB,
                      kv_lengths=lengths_for(k, profile.max_prompt_tokens, profile.max_output_tokens))
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
