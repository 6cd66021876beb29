"""``export --pixel-input uint8``: a LLaVA-1.5 vision graph that takes the centre crop as uint8
HWC and normalises inside the graph. ``export --pixel-input frame:WxH``: one that takes whole
frames of one size and resizes, crops and normalises inside (on a GPU backend, all of the
preprocessing runs on the device).

The runtime then hands the graph the crop as it comes out of the resize (no float conversion,
no CHW copy on the host; a quarter of the bytes to upload to a GPU). The normalisation is the
runtime's own [3, 256] table (``edgecompress_runtime.preprocess.normalize_table``) baked in as a
constant and read with one Gather, so the graph's pixels are bit-identical to the runtime's;
a Gather on a constant table is static, and TensorRT runs it.

(Imports torch: import this module only where it is needed.)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import GraphSpec, TensorSpec, VisionPlan
from edgecompress_runtime.preprocess import SUPPORT, normalize_table, shortest_edge_size


class Uint8Pixels(nn.Module):
    """pixels uint8 [1, S, S, 3] -> the wrapped vision module's outputs for the normalised
    float32 [1, 3, S, S]: a lookup into the flattened table at value + 256 * channel."""

    def __init__(self, vision: nn.Module, params: dict[str, Any]):
        super().__init__()
        self.vision = vision
        self.register_buffer("table", torch.from_numpy(normalize_table(params).reshape(-1).copy()), persistent=False)
        # int32 indices: TensorRT gathers with int32 natively (uint8 casts to int32, not to int64)
        self.register_buffer("offsets", torch.tensor([0, 256, 512], dtype=torch.int32), persistent=False)

    def normalised(self, values: torch.Tensor) -> torch.Tensor:
        """int32 pixel values [1, 3, S, S] -> the normalised float32 [1, 3, S, S]."""
        index = values + self.offsets[None, :, None, None]
        # index_select exports as one Gather (table[index] would be a GatherND, which wants int64)
        return torch.index_select(self.table, 0, index.reshape(-1)).reshape(index.shape)

    def forward(self, pixels: torch.Tensor):
        # cast first: TensorRT takes a uint8 network input only into a Cast
        return self.vision(self.normalised(pixels.to(torch.int32).permute(0, 3, 1, 2)))


def uint8_vision_plan(plan: VisionPlan, params: dict[str, Any]) -> VisionPlan:
    """The plan with its module wrapped to take uint8 HWC pixels (named ``pixels``)."""
    first = plan.spec.inputs[0]
    _, channels, height, width = first.shape
    spec = GraphSpec(plan.spec.name, (TensorSpec("pixels", (1, height, width, channels), "uint8"), *plan.spec.inputs[1:]),
                     plan.spec.outputs, plan.spec.dynamic_axes)
    example = (torch.randint(0, 256, (1, height, width, channels), dtype=torch.uint8), *plan.example[1:])
    return replace(plan, module=Uint8Pixels(plan.module, params).eval(), example=example, spec=spec)


# -- export --pixel-input frame:WxH: the resize inside the graph too ----------------------------

PRECISION_BITS = 32 - 8 - 2  # PIL's fixed-point coefficients (libImaging/Resample.c)


def _bicubic(x: float) -> float:
    a, x = -0.5, abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    return (((x - 5) * x + 8) * x - 4) * a if x < 2.0 else 0.0


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x *= math.pi
    return math.sin(x) / x * (float(np.float32(0.54)) + float(np.float32(0.46)) * math.cos(x))


FILTERS = {  # name: weight, as PIL defines them (their supports: preprocess.SUPPORT)
    "box": lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0,
    "bilinear": lambda x: max(0.0, 1.0 - abs(x)),
    "hamming": _hamming,
    "bicubic": _bicubic,
    "lanczos": lambda x: _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0,
}


def resample_matrix(in_size: int, out_size: int, resample: str) -> np.ndarray:
    """PIL's resampling along one axis as a dense [out_size, in_size] matrix: each output sample's
    fixed-point coefficients (as PIL computes and rounds them), divided back by 2^22, so that
    ``floor(matrix @ pixels + 0.5)`` clipped to 0..255 is PIL's 8-bit pass up to float rounding."""
    if resample not in FILTERS:
        raise EdgeCompressError(f"--pixel-input frame resizes with PIL's filters ({', '.join(FILTERS)}); this checkpoint "
                                f"resizes with {resample!r}", hint="Export without --pixel-input frame.")
    weight, support = FILTERS[resample], SUPPORT[resample]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        w = np.array([weight((i + lo - center + 0.5) / filter_scale) for i in range(hi - lo)])
        total = w.sum()
        w = w / total if total != 0.0 else w
        fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << PRECISION_BITS)), np.trunc(0.5 + w * (1 << PRECISION_BITS)))
        matrix[out, lo:hi] = fixed / (1 << PRECISION_BITS)
    return matrix.astype(np.float32)


def vertical_first(in_width: int, in_height: int, width: int, height: int) -> bool:
    """Pillow 13's pass order (the first pass rounds to 8 bits, so the order shows in the pixels):
    vertical first where the height loses more than twice the pixels the width loses."""
    return height < in_height and in_height - height > 2 * (in_width - width)


def frame_layout(width: int, height: int, params: dict[str, Any]) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop left, crop top) of the exact CLIP path for a frame."""
    crop = int(params["crop_size"])
    new_w, new_h = shortest_edge_size(width, height, int(params["resize_shortest_edge"]))
    return new_w, new_h, (new_w - crop) // 2, (new_h - crop) // 2


def reads(matrix: np.ndarray) -> tuple[int, int]:
    """The range of input samples a resampling matrix's rows read (nonzero columns)."""
    used = np.flatnonzero(np.abs(matrix).sum(axis=0))
    return int(used[0]), int(used[-1]) + 1


class FramePixels(Uint8Pixels):
    """frame uint8 [1, H, W, 3] (a camera frame as it comes, RGB) -> the wrapped vision module's
    outputs for the normalised crop: PIL's two resampling passes as constant matrices restricted
    to the crop's rows and columns (two MatMuls, each rounded to 8 bits as PIL rounds its passes),
    in Pillow's pass order, then the normalisation table (``Uint8Pixels``'s). Static: one frame
    size per bundle, recorded in the manifest."""

    def __init__(self, vision: nn.Module, params: dict[str, Any], width: int, height: int):
        super().__init__(vision, params)  # the normalisation table
        crop, resample = int(params["crop_size"]), params.get("resample", "bicubic")
        new_w, new_h, left, top = frame_layout(width, height, params)
        self.vertical_first = vertical_first(width, height, new_w, new_h)
        rows = resample_matrix(height, new_h, resample)[top : top + crop]  # [S, H]
        columns = resample_matrix(width, new_w, resample)[left : left + crop]  # [S, W]
        # only the frame's rows and columns that the crop reads (a 16:9 frame's centre crop reads
        # ~56% of the columns): sliced off first, so the MatMuls do that much less work
        (self.y0, self.y1), (self.x0, self.x1) = reads(rows), reads(columns)
        self.register_buffer("rows", torch.from_numpy(rows[:, self.y0 : self.y1].copy()), persistent=False)
        self.register_buffer("columns", torch.from_numpy(columns[:, self.x0 : self.x1].T.copy()), persistent=False)

    @staticmethod
    def to_8_bits(x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)  # PIL: (sum + 2^21) >> 22, clipped

    def pixels(self, frame: torch.Tensor) -> torch.Tensor:
        """The uint8 crop's values (as float32 [3, S, S]) the graph computes from the frame."""
        x = frame.to(torch.float32)[0, self.y0 : self.y1, self.x0 : self.x1].permute(2, 0, 1)  # cast first: TensorRT takes uint8 only into a Cast
        if self.vertical_first:
            return self.to_8_bits(torch.matmul(self.to_8_bits(torch.matmul(self.rows, x)), self.columns))
        return self.to_8_bits(torch.matmul(self.rows, self.to_8_bits(torch.matmul(x, self.columns))))

    def forward(self, frame: torch.Tensor):
        return self.vision(self.normalised(self.pixels(frame).to(torch.int32)[None]))


def frame_vision_plan(plan: VisionPlan, params: dict[str, Any], width: int, height: int) -> VisionPlan:
    """The plan with its module wrapped to take whole uint8 frames of one size (named ``frame``)."""
    spec = GraphSpec(plan.spec.name, (TensorSpec("frame", (1, height, width, 3), "uint8"), *plan.spec.inputs[1:]),
                     plan.spec.outputs, plan.spec.dynamic_axes)
    example = (torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8), *plan.example[1:])
    return replace(plan, module=FramePixels(plan.module, params, width, height).eval(), example=example, spec=spec)
