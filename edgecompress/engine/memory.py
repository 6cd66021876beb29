"""The memory plan: what a bundle needs on a device, computed before anything is built.

    total = weights + embedding table (when memory is shared with the CPU) + KV cache
            + activations + builder workspace + reserved

- weights: the parameters the two graphs hold (vision tower up to the feature layer, projector,
  language model and lm_head; Qwen2.5-VL: the whole vision tower with its patch merger, and the
  lm_head even where the checkpoint ties it to the embeddings), x 2 bytes (fp16) or 4 (fp32). Exact.
  With int8 or int4 weights (weight-only quantization, block-wise), the language model's linear
  weights (q, k, v, o, gate, up, down of every decoder layer) take 1 or 1/2 byte a parameter, plus
  one scale per group of ``group_size`` input features per output feature, in the precision
  (2 bytes fp16, 4 fp32); a ragged last group (inputs not a multiple of the group size) has a
  scale of its own, as ONNX's blocked DequantizeLinear stores it. Quantization is symmetric: no
  zero points. The lm_head, the token embeddings, the vision tower and the projector, norms and
  biases stay in the precision. Exact. The KV cache and activations do not change: only weights
  are quantized.
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
  vision tower's equivalent if larger (its tokens: CLIP's patches and class token, Qwen2.5-VL's
  P patches before the merger; the scores of its widest attention, a full-attention block's).
  An estimate: TensorRT fuses and reuses buffers, so the real figure is lower.
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
QUANTIZED_BITS = {"int8": 8, "int4": 4}
WEIGHT_FORMATS = (*BYTES, *QUANTIZED_BITS)
DEFAULT_GROUP_SIZE = 128


@dataclass(frozen=True)
class WeightFormat:
    """How the language model's linear weights are stored: in the precision, or int8/int4 with a
    symmetric scale (in the precision) per ``group_size`` input features of each output feature."""

    name: str  # one of WEIGHT_FORMATS
    precision: str  # the bundle's: everything else, and the scales
    group_size: int = DEFAULT_GROUP_SIZE

    @property
    def quantized(self) -> bool:
        return self.name in QUANTIZED_BITS

    @property
    def label(self) -> str:
        return f"{self.name}, group {self.group_size}" if self.quantized else self.name

    def linear_bytes(self, inputs: int, outputs: int) -> int:
        """Bytes of one linear weight of ``inputs`` x ``outputs``, its scales included."""
        if not self.quantized:
            return inputs * outputs * BYTES[self.name]
        packed = -(-inputs * outputs * QUANTIZED_BITS[self.name] // 8)  # int4: two to a byte
        groups = -(-inputs // self.group_size)
        return packed + outputs * groups * BYTES[self.precision]


def weight_format(weights: str | None, precision: str, group_size: int = DEFAULT_GROUP_SIZE) -> WeightFormat:
    """The checked weight format; ``weights`` None means the precision's."""
    weights = weights or precision
    if weights not in WEIGHT_FORMATS:
        raise EdgeCompressError(f"unknown weight format --weights {weights!r}", hint="Use fp16, fp32, int8 or int4.")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 16 or group_size & (group_size - 1):
        raise EdgeCompressError(f"--group-size {group_size!r} is not a power of two of at least 16",
                                hint=f"Use {DEFAULT_GROUP_SIZE} (the default), 32, 64 or 256.")
    if weights in BYTES and weights != precision:
        # Float weights are the bundle's precision; a second float format would mean casts in every layer.
        raise EdgeCompressError(f"--weights {weights} with precision {precision}: float weights are stored in the precision",
                                hint=f"Pass --precision {weights}, or --weights int8 or int4.")
    return WeightFormat(weights, precision, group_size)


def bundle_plan(manifest, profile: Profile) -> "MemoryPlan":
    """The memory plan of an exported bundle: its K, precision, weight format and decoder pruning."""
    pruning = manifest.decoder_pruning
    weights = manifest.data.get("weights") or {}
    return plan_memory(manifest.architecture, manifest.k, profile, manifest.precision,
                       pruned_at=None if pruning is None else (pruning.layer, pruning.image_tokens),
                       weights=weights.get("format"), group_size=weights.get("group_size", DEFAULT_GROUP_SIZE))


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
    weights: WeightFormat | None = None  # None: the precision's
    linear_parameters: int = 0  # the language model's linear weights, the ones int8/int4 quantize
    linear_bytes: int = 0  # what they take in ``weights``, scales included

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
            "weights": self.weight_format.name,
            "group_size": self.weight_format.group_size if self.weight_format.quantized else None,
            "linear_parameters": self.linear_parameters,
            "linear_gib": round(self.linear_bytes / GIB, 3),
        }

    @property
    def weight_format(self) -> WeightFormat:
        return self.weights or WeightFormat(self.precision, self.precision)

    def weights_lines(self) -> list[str]:
        """The weight format, and what the quantized linear layers take against the precision's bytes."""
        fmt = self.weight_format
        float_bytes = self.linear_parameters * BYTES[self.precision]
        return [f"weights: {fmt.label}, symmetric, in the language model's linear layers; "
                f"lm_head, embeddings and vision tower {self.precision}",
                f"linear layers: {self.linear_parameters / 1e9:.2f} B params -> {self.linear_bytes / GIB:.2f} GiB "
                f"({self.precision} would be {float_bytes / GIB:.2f} GiB)"]

    def table(self) -> str:
        lines = [f"memory plan on {self.profile} ({self.precision}, K = {self.k}, context {self.context} tokens)"]
        if self.weight_format.quantized:
            lines += ["  " + line for line in self.weights_lines()]
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
    tokens = vision.tower_tokens  # CLIP: the patches and the class token; Qwen2.5-VL: P patches, before the merger
    mlp = (2 if vision.gated_mlp else 1) * vision.intermediate  # a gated MLP holds gate and up at once
    vision_act = tokens * (4 * vision.hidden + mlp) * nbytes
    vision_act += vision.heads * tokens * vision.attention_span * 4  # selection scores stay fp32
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
                counts: dict[str, int] | None = None, pruned_at: tuple[int, int] | None = None,
                weights: str | None = None, group_size: int = DEFAULT_GROUP_SIZE) -> MemoryPlan:
    """The memory plan for K image tokens. ``pruned_at`` = (layer L, N) for a method that prunes
    inside the language model: the prompt holds N image tokens up to layer L, K from it on.
    ``weights`` = fp16, fp32, int8 or int4: how the language model's linear weights are stored
    (None: the precision), int8/int4 with a scale per ``group_size`` input features."""
    precision = precision or profile.precision
    if precision not in BYTES:
        raise EdgeCompressError(f"unknown precision {precision!r}", hint="Use fp16 or fp32.")
    fmt = weight_format(weights, precision, group_size)
    nbytes = BYTES[precision]
    facts = Architecture.from_config(architecture)
    counts = counts or facts.parameter_counts()
    text = facts.text
    linear_parameters = text.linear_parameters()
    linear_bytes = text.layers * sum(fmt.linear_bytes(inputs, outputs) for _, inputs, outputs in text.linear_shapes())
    decoder_bytes = (counts["decoder"] - linear_parameters) * nbytes + linear_bytes
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
            "weights (decoder)": decoder_bytes,
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
                      kv_lengths=lengths_for(k, profile.max_prompt_tokens, profile.max_output_tokens),
                      weights=fmt, linear_parameters=linear_parameters, linear_bytes=linear_bytes)
    if not plan.fits:
        plan.suggestions = _suggestions(plan, rows_for, k, profile)
        smaller_formats = list(QUANTIZED_BITS)  # by size: int8 first, the more accurate one
        for name in smaller_formats[smaller_formats.index(fmt.name) + 1:] if fmt.quantized else smaller_formats:
            smaller = plan_memory(architecture, k, profile, precision, counts, pruned_at, name, group_size)
            if smaller.fits:
                plan.suggestions.append(f"{name} weights (--weights {name}, group {group_size}): "
                                        f"{smaller.total / GIB:.2f} GiB of {smaller.capacity / GIB:.2f} GiB fits")
                break
    return plan


def compare_weight_formats(architecture: dict[str, Any], k: int, profile: Profile, precision: str | None = None,
                           counts: dict[str, int] | None = None, pruned_at: tuple[int, int] | None = None,
                           group_size: int = DEFAULT_GROUP_SIZE) -> list[MemoryPlan]:
    """The same plan with the precision's weights, int8 and int4."""
    precision = precision or profile.precision
    return [plan_memory(architecture, k, profile, precision, counts, pruned_at, name, group_size)
            for name in (precision, *QUANTIZED_BITS)]


def comparison_table(plans: list[MemoryPlan]) -> str:
    first = plans[0]
    lines = [f"weight formats on {first.profile} (K = {first.k}, {first.capacity / GIB:.2f} GiB)",
             f"  {'weights':<22} {'linear layers':>13} {'total':>12}"]
    for plan in plans:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        lines.append(f"  {plan.weight_format.label:<22} {plan.linear_bytes / GIB:9.2f} GiB {plan.total / GIB:8.2f} GiB  {verdict}")
    return "\n".join(lines)


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
