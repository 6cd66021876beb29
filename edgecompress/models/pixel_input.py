"""``export --pixel-input uint8``: a LLaVA-1.5 vision graph that takes the centre crop as uint8
HWC and normalises inside the graph.

The runtime then hands the graph the crop as it comes out of the resize (no float conversion,
no CHW copy on the host; a quarter of the bytes to upload to a GPU). The normalisation is the
runtime's own [3, 256] table (``edgecompress_runtime.preprocess.normalize_table``) baked in as a
constant and read with one Gather, so the graph's pixels are bit-identical to the runtime's;
a Gather on a constant table is static, and TensorRT runs it.

(Imports torch: import this module only where it is needed.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from edgecompress.graph.spec import GraphSpec, TensorSpec, VisionPlan
from edgecompress_runtime.preprocess import normalize_table


class Uint8Pixels(nn.Module):
    """pixels uint8 [1, S, S, 3] -> the wrapped vision module's outputs for the normalised
    float32 [1, 3, S, S]: a lookup into the flattened table at value + 256 * channel."""

    def __init__(self, vision: nn.Module, params: dict[str, Any]):
        super().__init__()
        self.vision = vision
        self.register_buffer("table", torch.from_numpy(normalize_table(params).reshape(-1).copy()), persistent=False)
        # int32 indices: TensorRT gathers with int32 natively (uint8 casts to int32, not to int64)
        self.register_buffer("offsets", torch.tensor([0, 256, 512], dtype=torch.int32), persistent=False)

    def forward(self, pixels: torch.Tensor):
        # cast first: TensorRT takes a uint8 network input only into a Cast
        index = pixels.to(torch.int32).permute(0, 3, 1, 2) + self.offsets[None, :, None, None]
        # index_select exports as one Gather (table[index] would be a GatherND, which wants int64)
        return self.vision(torch.index_select(self.table, 0, index.reshape(-1)).reshape(index.shape))


def uint8_vision_plan(plan: VisionPlan, params: dict[str, Any]) -> VisionPlan:
    """The plan with its module wrapped to take uint8 HWC pixels (named ``pixels``)."""
    first = plan.spec.inputs[0]
    _, channels, height, width = first.shape
    spec = GraphSpec(plan.spec.name, (TensorSpec("pixels", (1, height, width, channels), "uint8"), *plan.spec.inputs[1:]),
                     plan.spec.outputs, plan.spec.dynamic_axes)
    example = (torch.randint(0, 256, (1, height, width, channels), dtype=torch.uint8), *plan.example[1:])
    return replace(plan, module=Uint8Pixels(plan.module, params).eval(), example=example, spec=spec)
