"""The unpruned baseline: every visual token, in order."""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs


def keep_all(num_patches: int, batch: int):
    import torch

    return torch.arange(num_patches, dtype=torch.int64).unsqueeze(0).expand(batch, -1)


def select(inputs: VisionInputs, k: int):
    batch, n = inputs.features.shape[:2]
    return inputs.features, keep_all(n, batch).to(inputs.features.device)


METHOD = Method(
    name="none",
    summary="Baseline: keep every visual token (the unpruned model)",
    paper="-",
    select=select,
    keeps_all=True,
)
