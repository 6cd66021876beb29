"""What each exported graph takes and returns, declared once per architecture.

The exporter names its inputs and outputs from here, the verifier checks the ONNX file against
it, the manifest records it, and the runtimes read it back from the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints are fixed; strings name declared dynamic axes
    dtype: str  # numpy-style name: float32, float16, int64

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def declared_dynamic(self) -> set[str]:
        return {axis for axes in self.dynamic_axes.values() for axis in axes.values()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        data["dynamic_axes"] = {k: {str(i): n for i, n in v.items()} for k, v in self.dynamic_axes.items()}
        return data


PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16"}


def torch_dtype(precision: str):
    """The torch dtype of a precision (torch.float32 / torch.float16), from PRECISION_DTYPES."""
    import torch

    return getattr(torch, PRECISION_DTYPES[precision])


def llava_vision_spec(image_size: int, k: int, projected_dim: int, precision: str) -> GraphSpec:
    """LLaVA-1.5 vision graph: one 336-px image in (fp32 pixels), K projected embeddings out.

    Pixels stay fp32 at the boundary for every precision (the graph casts), so a runtime
    feeds the same preprocessing output to an fp32 and an fp16 bundle; embeddings come out in
    the language model's precision.
    """
    return GraphSpec(
        name="vision",
        inputs=(TensorSpec("pixel_values", (1, 3, image_size, image_size), "float32"),),
        outputs=(
            TensorSpec("image_embeds", (1, k, projected_dim), PRECISION_DTYPES[precision]),
            TensorSpec("kept_indices", (1, k), "int64"),
        ),
    )


def llava_next_vision_spec(
    image_size: int, slots: int, n: int, k: int, projected_dim: int, precision: str, *, keeps_all: bool
) -> GraphSpec:
    """LLaVA-NeXT vision graph: a fixed 1 + max_tiles slots of pixels (base first, unused slots
    zero), the grid's index in the pinpoints and the tile-token mask in; K embeddings out.

    With ``keeps_all`` (method none) only the pixels go in and every slot's N tokens come out,
    for the runtime to pack as LLaVA-NeXT does.
    """
    inputs = [TensorSpec("pixel_values", (slots, 3, image_size, image_size), "float32")]
    if not keeps_all:
        inputs += [TensorSpec("grid_index", (1,), "int64"), TensorSpec("tile_mask", (slots - 1, n), "float32")]
    return GraphSpec(
        name="vision",
        inputs=tuple(inputs),
        outputs=(
            TensorSpec("image_embeds", (1, k, projected_dim), PRECISION_DTYPES[precision]),
            TensorSpec("kept_indices", (1, k), "int64"),
        ),
    )


def llava_decoder_spec(
    num_layers: int, num_kv_heads: int, head_dim: int, hidden_size: int, vocab_size: int, precision: str
) -> GraphSpec:
    """The language model as one graph for prefill and decode.

    Prefill passes the whole prompt with an empty cache (past = 0); decode passes one token
    with the cache so far. Only the last position's logits come out (greedy decoding needs
    nothing else, and [S, vocab] logits would cost S x 128 KB at vocab 32k), in fp32 so that
    argmax does not depend on fp16 rounding of the final scores.
    """
    dtype = PRECISION_DTYPES[precision]
    past = [
        TensorSpec(f"past.{i}.{kind}", (1, num_kv_heads, "past", head_dim), dtype)
        for i in range(num_layers)
        for kind in ("key", "value")
    ]
    present = [
        TensorSpec(f"present.{i}.{kind}", (1, num_kv_heads, "sequence + past", head_dim), dtype)
        for i in range(num_layers)
        for kind in ("key", "value")
    ]
    dynamic = {"inputs_embeds": {1: "sequence"}, "position_ids": {1: "sequence"}}
    dynamic.update({t.name: {2: "past"} for t in past})
    return GraphSpec(
        name="decoder",
        inputs=(
            TensorSpec("inputs_embeds", (1, "sequence", hidden_size), dtype),
            TensorSpec("position_ids", (1, "sequence"), "int64"),
            *past,
        ),
        outputs=(TensorSpec("logits", (1, 1, vocab_size), "float32"), *present),
        dynamic_axes=dynamic,
    )
