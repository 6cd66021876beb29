"""What a device can do at best: the roofline prediction next to each measured stage.

``bench`` prints measured over predicted per stage; that ratio, not an absolute time, tells a
user how far a deployment is from the device's limit. The model is the simplest one that is
right in kind for these stages:

- vision and prefill are bound by compute: their FLOPs (``edgecompress.flops``: the tower to the
  feature layer, the projector on K tokens (Qwen2.5-VL: the whole tower, the merger on all N); the
  language model over the whole prompt, FastV's layers after the pruning layer on the pruned
  length) at the profile's peak dense fp16 Tensor-Core rate;
- a decode step is bound by memory: it reads the decoder's weights once (their bytes on disk in
  the bundle, fp16 or fp32 as exported) and the KV cache at the mean context length of the
  decode, at the profile's peak DRAM bandwidth;
- ttft = vision + prefill (preprocessing runs on the CPU and has no device limit);
  end_to_end = ttft + (new tokens - 1) decode steps.

A prediction is a lower bound no real kernel reaches (small GEMMs, launch overheads, attention
kernels, the host): ratios of 2-10x are usual on small models, and a ratio that grows with K
or prompt length points at the stage to work on. Profiles without the two peaks (``cpu``: any
CPU) get no prediction.
"""

from __future__ import annotations

from typing import Any

from edgecompress.architecture import text_config
from edgecompress.flops import prefill_flops, vision_graph_flops

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _prefill(text: dict[str, Any], length: int, pruning) -> float:
    """Language-model FLOPs over ``length`` tokens; with decoder pruning (FastV), the layers from
    the pruning layer on run on the length after pruning."""
    if pruning is None:
        return prefill_flops(text, length)
    head = 2 * text["hidden_size"] * text["vocab_size"]  # the lm_head, on the last position, counted once
    before = prefill_flops({**text, "num_hidden_layers": pruning.layer}, length) - head
    pruned = length - pruning.image_tokens + pruning.kept_image_tokens
    after = prefill_flops({**text, "num_hidden_layers": text["num_hidden_layers"] - pruning.layer}, pruned) - head
    return before + after + head


def predict(manifest, profile, prompt_tokens: int, new_tokens: int) -> dict[str, Any] | None:
    """Predicted ms per stage (``vision``, ``prefill``, ``ttft``, ``decode_per_token``,
    ``end_to_end``) and the numbers they came from, or None when the profile has no peaks.

    ``prompt_tokens``: text tokens of the prompt, besides the image's."""
    tflops = getattr(profile, "peak_fp16_tflops", None) if profile is not None else None
    bandwidth = getattr(profile, "memory_bandwidth_gbs", None) if profile is not None else None
    if not tflops or not bandwidth or manifest.language_model is None:
        return None
    arch = manifest.architecture
    text = text_config(arch)
    feature_layer = manifest.data["model"]["vision"].get("feature_layer")  # LLaVA's; Qwen2.5-VL runs every block
    pruning = manifest.decoder_pruning
    k = pruning.image_tokens if pruning is not None else manifest.k  # image tokens the language model reads
    length = prompt_tokens + k
    flops = {
        "vision": vision_graph_flops(arch, manifest.k, feature_layer),
        "prefill": _prefill(text, length, pruning),
    }
    decoder = manifest.graphs["decoder"]
    weight_bytes = sum(manifest.files[f].bytes for f in decoder.files if f in manifest.files)
    lm = manifest.language_model
    kv_dtype = decoder.input("past.0.key").dtype
    kept = length if pruning is None else length - pruning.image_tokens + pruning.kept_image_tokens
    mean_context = (kept + new_tokens / 2)
    kv_bytes = 2 * lm.num_layers * lm.num_kv_heads * lm.head_dim * DTYPE_BYTES.get(kv_dtype, 4) * mean_context
    ms = {stage: 1e3 * f / (tflops * 1e12) for stage, f in flops.items()}
    ms["ttft"] = ms["vision"] + ms["prefill"]
    ms["decode_per_token"] = 1e3 * (weight_bytes + kv_bytes) / (bandwidth * 1e9)
    ms["end_to_end"] = ms["ttft"] + max(new_tokens - 1, 0) * ms["decode_per_token"]
    return {
        "ms": ms,
        "basis": {
            "profile": profile.name, "peak_fp16_tflops": tflops, "memory_bandwidth_gbs": bandwidth,
            "vision_gflop": flops["vision"] / 1e9, "prefill_gflop": flops["prefill"] / 1e9,
            "decoder_weight_mib": weight_bytes / 2**20, "kv_mib_at_mean_context": kv_bytes / 2**20,
            "prefill_tokens": length, "precision": manifest.precision,
            **({"note": "fp32 bundle against the fp16 peak: its real limit is lower (TF32 or FP32 rates)"}
               if manifest.precision == "fp32" else {}),
        },
    }
