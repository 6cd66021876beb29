"""The random baseline: K positions drawn once at export from a fixed seed, the same for every
image, in raster order."""

from __future__ import annotations

from edgecompress.methods import Method, VisionInputs

RANDOM_SEED = 0  # the positions are drawn once, at export, from this seed


def random_positions(n: int, k: int, seed: int = RANDOM_SEED):
    """K of N positions drawn without replacement from a seeded generator, ascending (raster order)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=generator)[:k]).values


def select(inputs: VisionInputs, k: int):
    from edgecompress.lowering.primitives import ordered_gather

    indices = inputs.constants["positions"].expand(inputs.features.shape[0], -1)
    return ordered_gather(inputs.features, indices), indices


METHOD = Method(
    name="random",
    summary=f"Baseline: K positions drawn once at export (seed {RANDOM_SEED}), the same for every image, raster order",
    paper="METHODS.md baselines",
    select=select,
    details=lambda budget_k, k, side: {"seed": RANDOM_SEED},
    constants=lambda n, side, k: {"positions": random_positions(n, k)[None]},
)
