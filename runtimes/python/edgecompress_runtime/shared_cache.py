"""The fused decoder graph's KV cache contract (manifest: ``kv_cache: {kind: "shared-buffer"}``),
and the decode step of a backend whose cache is anything else.

Each cache tensor is one buffer [1, kv_heads, max_length, head_dim], allocated once and bound as
both the graph's ``past`` input and its ``present`` output: GroupQueryAttention writes the new
positions in place (ONNX Runtime shares the buffer when the two are the same memory), so no step
copies or grows the cache. The buffer's shape no longer says how much of it is valid, so the
graph takes that from two inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SHARED_BUFFER = "shared-buffer"
SEQLENS_K, TOTAL_LENGTH = "seqlens_k", "total_sequence_length"


def length_feeds(past_length: int, new_tokens: int) -> dict[str, np.ndarray]:
    """The length inputs of a step of ``new_tokens`` after ``past_length`` cached positions:
    seqlens_k [1] is the valid length after the step minus one, total_sequence_length the length."""
    total = past_length + new_tokens
    return {SEQLENS_K: np.array([total - 1], dtype=np.int32), TOTAL_LENGTH: np.array(total, dtype=np.int32)}


class SharedCache(NamedTuple):
    """The ``past`` a shared-buffer backend hands out: how many positions of its buffers are
    valid. The buffers are the backend's own, so each step overwrites what an older handle saw:
    only the latest one can be continued. (A named tuple: made at every decode step, 3x cheaper
    than a frozen dataclass.)"""

    length: int


def decode_step(backend, embedding: np.ndarray, position: int, past):
    """One decode step through ``backend.decoder``: the newest token's embedding row [D] at
    ``position`` -> its logits [V] and the cache (backends with nothing faster: a growing cache)."""
    positions = np.full(backend.position_shape, position, dtype=np.int64)
    logits, present = backend.decoder(embedding[None, None], positions, past)
    return logits[0, -1], present
