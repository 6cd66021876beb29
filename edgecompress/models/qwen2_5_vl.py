"""The Qwen2.5-VL family: its adapter and the pruned vision module, on a fixed patch grid.

(Imports torch and transformers: import this module only where they are needed.)

What differs from LLaVA, and how each difference becomes a static graph:

- No CLS token. A method ranks the image tokens by what it can compute without one: the
  attention each token *receives* (``received``: the mean over queries, summed over heads, at a
  full-attention block, from that block's q and k, in fp32), or duplication among the tokens
  (``dart``), or a fixed draw (``random``). Methods that need a CLS row (HiRED, VisionZip, ...)
  are refused with the alternatives.
- Dynamic resolution. Qwen's processor picks a patch grid per image; a bundle fixes one square
  grid instead (``image_size``, 448 px by default: 32x32 patches of 14 px, merged 2x2 into 16x16 =
  256 tokens) and the runtime resizes every image to it. N and K are then one number each, the
  window-attention layout (windows of 112 px, whole when the size is a multiple of 112), the
  rotary table of the patch positions and the window order are constants of the graph.
- Window attention: with whole windows every window holds the same number of patches, so a
  windowed block is a batched attention over [windows, patches per window], exactly what
  transformers computes window by window; the blocks in ``fullatt_block_indexes`` attend over
  all patches.
- The patch merger (2x2 patches -> one token) is the projector; selection acts on its output, in
  raster order of the merged grid (kept_indices: row * grid + col).
- mRoPE: the language model takes 3 x S position ids (temporal, height, width). The runtime
  computes them from the kept indices: kept tokens keep their original (t, h, w) and the text
  after the image continues where the unpruned layout would (see ``positions`` in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecompress.budget import resolve_for
from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import PRECISION_DTYPES, DecoderPlan, GraphSpec, TensorSpec, VisionPlan, decoder_spec
from edgecompress.methods import Method, VisionInputs
from edgecompress.models.base import FamilyAdapter

DEFAULT_IMAGE_SIZE = 448  # pixels, square: 32x32 patches, 256 image tokens (the example grid)
# What a method may read on this family (no CLS token, no per-layer CLS rows, no keys).
QWEN_NEEDS = {"features", "received_attention"}
POSITIONS_RULE = (
    "mrope: text before the image at (p, p, p); image token (row r, col c) of the merged grid at "
    "(s, s + r, s + c) with s the image's first position; kept tokens keep theirs; text after the "
    "image continues from s + max(rows, cols), as in the unpruned layout; decode steps (p, p, p)"
)
TOKEN_ORDER = "raster order of the merged token grid (kept_indices: row * cols + col), after the patch merger"


@dataclass
class QwenVLAdapter(FamilyAdapter):
    """A Qwen2.5-VL model on a fixed square patch grid (``vision_config.image_size``)."""

    family = "qwen2.5-vl"

    @classmethod
    def parts(cls, model):
        """The vision tower; its patch merger is the projector."""
        return model.model.visual, model.model.visual.merger

    @classmethod
    def build_vision(cls, config):
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config)
        return tower, tower.merger

    @classmethod
    def prepare(cls, config, preprocess: dict[str, Any], recipe_preprocess: dict[str, Any]) -> dict[str, Any]:
        """The fixed grid: the recipe's ``image_size`` (default 448), recorded in the config (so the
        architecture facts know N) and in the preprocessing record with the patch layout."""
        vc = config.vision_config
        size = int(recipe_preprocess.get("image_size") or getattr(vc, "image_size", None) or DEFAULT_IMAGE_SIZE)
        vc.image_size = size
        return {**preprocess, "image_size": size, "patch_size": vc.patch_size,
                "temporal_patch_size": vc.temporal_patch_size, "merge_size": vc.spatial_merge_size,
                "layout": "qwen2-vl-patches"}

    @property
    def vision_config(self):
        return self.config.vision_config

    @property
    def image_size(self) -> int:
        return int(getattr(self.vision_config, "image_size", None) or DEFAULT_IMAGE_SIZE)

    @property
    def patch_grid(self) -> int:
        return self.image_size // self.vision_config.patch_size

    @property
    def merge(self) -> int:
        return int(self.vision_config.spatial_merge_size)

    @property
    def grid(self) -> int:
        """The side of the merged token grid (what the language model sees)."""
        return self.patch_grid // self.merge

    @property
    def num_patches(self) -> int:
        return self.patch_grid**2

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        vc = self.vision_config
        return vc.in_channels * vc.temporal_patch_size * vc.patch_size**2

    def architecture(self):
        from edgecompress.architecture import Architecture

        return Architecture.from_config(self.config.to_dict())

    def check_grid(self) -> None:
        vc = self.vision_config
        size, window = self.image_size, vc.window_size
        if size % window or window % (vc.patch_size * self.merge):
            raise EdgeCompressError(
                f"image size {size} px does not cut into whole {window}-px attention windows",
                hint=f"Use a multiple of {window} px (e.g. 448 or 672): every window then holds the same patches.")

    def check_method(self, method: Method) -> None:
        if method.stage == "vision" and set(method.needs) <= QWEN_NEEDS:
            if "received_attention" in method.needs and not self.vision_config.fullatt_block_indexes:
                raise EdgeCompressError(f"method {method.name!r} reads a full-attention block, and this checkpoint's "
                                        "vision tower has none (fullatt_block_indexes is empty)",
                                        hint="Use dart, divprune or random.")
            return
        from edgecompress.methods import methods

        usable = [m.name for m in methods().values() if m.stage == "vision" and set(m.needs) <= QWEN_NEEDS]
        reason = ("it reads the CLS token's attention or keys, and Qwen2.5-VL's vision tower has no CLS token"
                  if {"cls_attention", "layer_attention", "keys"} & set(method.needs)
                  else f"it acts at the {method.stage} stage, which this family does not lower yet")
        raise EdgeCompressError(f"method {method.name!r} is not available for Qwen2.5-VL: {reason}",
                                hint=f"Use one of: {', '.join(usable)}.")

    # -- the vision graph -------------------------------------------------------------------
    def vision_spec(self, k: int, precision: str) -> GraphSpec:
        """Patch rows in (fp32, as Qwen's processor lays them out: merge blocks of 2x2 patches in
        raster order, each row channels x temporal x patch x patch), K tokens and their indices out."""
        return GraphSpec(
            name="vision",
            inputs=(TensorSpec("pixel_values", (self.num_patches, self.patch_dim), "float32"),),
            outputs=(
                TensorSpec("image_embeds", (1, k, self.projected_dim), PRECISION_DTYPES[precision]),
                TensorSpec("kept_indices", (1, k), "int64"),
            ),
        )

    def plan_vision(self, method: Method, budget: str, precision: str) -> VisionPlan:
        self.check_grid()
        self.check_method(method)
        resolution = resolve_for(budget, method, self.architecture())
        k = resolution.k
        module = QwenPrunedVision(self, method, k).eval()
        details = {"summary": method.summary, **method.details(resolution.budget.k, k, self.grid)}
        if "received_attention" in method.needs:
            details["attention_block"] = module.attention_block
        return VisionPlan(module, (torch.rand(self.num_patches, self.patch_dim),), self.vision_spec(k, precision),
                          resolution.budget, k, method, details,
                          TOKEN_ORDER if not method.keeps_all else "raster order of the merged token grid (every token)",
                          {"positions": self.positions_record(), "resolution": self.resolution_record()})

    def resolution_record(self) -> dict[str, Any]:
        """How the bundle fixes Qwen's per-image resolution (the manifest's ``resolution``)."""
        return {"kind": "fixed", "image_size": [self.image_size, self.image_size],
                "patch_grid": [self.patch_grid, self.patch_grid], "token_grid": [self.grid, self.grid],
                "rule": f"every image is resized to {self.image_size}x{self.image_size} (aspect ratio not kept), so N = "
                        f"{self.num_tokens} for every image and the budget resolves against it"}

    def positions_record(self) -> dict[str, Any]:
        """What the runtime needs to place the kept tokens (the manifest's ``positions``)."""
        return {"kind": "mrope", "grid": [self.grid, self.grid], "rule": POSITIONS_RULE}

    def describe(self) -> dict[str, Any]:
        vc = self.vision_config
        return {
            "family": self.family,
            "vision": {
                "image_size": self.image_size,
                "patch_size": vc.patch_size,
                "temporal_patch_size": vc.temporal_patch_size,
                "merge_size": self.merge,
                "patch_grid": [self.patch_grid, self.patch_grid],
                "token_grid": [self.grid, self.grid],
                "num_patches": self.num_patches,  # patch rows the vision graph takes
                "num_tokens": self.num_tokens,  # image tokens after the 2x2 merger (N)
                "hidden_size": vc.hidden_size,
                "num_layers": vc.depth,
                "num_heads": vc.num_heads,
                "window_size": vc.window_size,
                "fullatt_block_indexes": list(vc.fullatt_block_indexes),
            },
            "projected_dim": self.projected_dim,
            "image_token_id": self.image_token_id,
        }

    # -- the language model: mRoPE positions ------------------------------------------------------
    def plan_decoder(self, precision: str) -> DecoderPlan:
        """The shared decoder graph with 3 x S position ids (temporal, height, width)."""
        from torch.export import Dim

        plan = super().plan_decoder(precision)
        embeds, positions, *past = plan.example
        positions = positions[None].expand(3, 1, -1).contiguous()
        limit = plan.facts["max_position_embeddings"]
        sequence = Dim("sequence", min=1, max=limit)
        shapes = {**plan.dynamic_shapes, "inputs_embeds": {1: sequence}, "position_ids": {2: sequence}}
        shapes["past"] = tuple({2: Dim("past", min=0, max=limit)} for _ in past)
        lm = plan.facts
        spec = decoder_spec(lm["num_layers"], lm["num_kv_heads"], lm["head_dim"], lm["hidden_size"], lm["vocab_size"],
                            precision, position_rows=3)
        return DecoderPlan(plan.module, (embeds, positions, *past), spec, shapes, lm)

    def plan_pruned_decoder(self, *args, **kwargs):
        raise EdgeCompressError("methods that prune inside the language model are not available for Qwen2.5-VL yet",
                                hint="Use a vision-stage method: received or dart.")

    # -- text assets: the tokenizer's chat template (Qwen's processor class needs torchvision) --------
    def chat_renderer(self):
        """The tokenizer, which carries Qwen's chat template (Qwen2_5_VLProcessor cannot be built
        without torchvision's video processor)."""
        if self.text_source is None:
            return None
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.text_source)
        except (OSError, ValueError):
            return None

    def load_processor(self) -> "QwenProcessor":
        return QwenProcessor(self.text_source, self.image_size, self.preprocess.get("resample", "bicubic"))


def window_layout(adapter: QwenVLAdapter) -> tuple[torch.Tensor, int]:
    """(the merge-block order of transformers' window attention [N], patches per window), from
    transformers' own helper for this grid; every window whole (checked)."""
    from transformers.vision_utils import get_vision_window_index

    vc = adapter.vision_config
    grid_thw = torch.tensor([[1, adapter.patch_grid, adapter.patch_grid]])
    window_index, cu = get_vision_window_index(grid_thw, adapter.merge, vc.window_size, vc.patch_size)
    lengths = set((cu[1:] - cu[:-1]).tolist())
    if len(lengths) != 1:
        raise EdgeCompressError(f"the {adapter.image_size}-px grid gives attention windows of {sorted(lengths)} patches")
    return window_index, lengths.pop()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QwenPrunedVision(nn.Module):
    """patch rows [P, C*T*p*p] -> (K merged image embeddings [1,K,D], kept token indices [1,K]).

    The tower as transformers runs it for one image on this grid, with the data-dependent parts
    fixed at export: the patch embedding (a Conv3d whose kernel is the whole patch) as one MatMul,
    the window order and its inverse as constant Gathers, the 2D rotary table as constants,
    windowed blocks as a batched attention over equal windows. The method then keeps K of the N
    merged tokens.
    """

    def __init__(self, adapter: QwenVLAdapter, method: Method, k: int):
        super().__init__()
        visual = adapter.vision_tower
        vc = adapter.vision_config
        self.method, self.k, self.side = method, k, adapter.grid
        self.num_heads, self.unit = vc.num_heads, adapter.merge**2
        self.hidden = vc.hidden_size
        self.dtype = next(visual.parameters()).dtype
        self.blocks = visual.blocks
        self.merger = visual.merger
        self.full = set(int(i) for i in vc.fullatt_block_indexes)
        # the block whose attention a method reads: the last full-attention block (check_method
        # refuses ``received`` on a tower without one)
        self.attention_block = max(self.full) if self.full else len(self.blocks) - 1
        # fp16: Qwen2.5-VL's tower is known to overflow fp16 in its later blocks (vLLM clamps the
        # residual stream for it); the graph clamps to fp16's finite range after every residual add
        self.clamp = torch.finfo(torch.float16).max - 1000 if self.dtype == torch.float16 else None
        self.register_buffer("patch_weight", visual.patch_embed.proj.weight.detach().reshape(vc.hidden_size, -1),
                             persistent=False)
        window_index, self.window = window_layout(adapter)
        patch_order = (window_index[:, None] * self.unit + torch.arange(self.unit)).reshape(-1)
        self.register_buffer("patch_order", patch_order, persistent=False)
        self.register_buffer("token_order", torch.argsort(window_index), persistent=False)  # window -> raster
        from transformers.vision_utils import get_vision_position_ids

        positions = get_vision_position_ids(torch.tensor([[1, adapter.patch_grid, adapter.patch_grid]]), adapter.merge)
        with torch.no_grad():
            cos, sin = visual.rotary_pos_emb(torch.zeros(1), positions)
        self.register_buffer("cos", cos.float()[patch_order][:, None], persistent=False)  # [P, 1, d], window order
        self.register_buffer("sin", sin.float()[patch_order][:, None], persistent=False)
        self._constants = sorted(method.constants(adapter.num_tokens, adapter.grid, k).items())
        for name, tensor in self._constants:
            self.register_buffer(f"method_{name}", tensor, persistent=False)

    def qkv(self, block, hidden: torch.Tensor):
        """A block's rotated q, k and its v, [H, P, d] each (q, k rotated in fp32 as transformers does)."""
        patches = hidden.shape[0]
        q, k, v = block.attn.qkv(block.norm1(hidden)).reshape(patches, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q = (q.float() * self.cos + rotate_half(q.float()) * self.sin).to(hidden.dtype)
        k = (k.float() * self.cos + rotate_half(k.float()) * self.sin).to(hidden.dtype)
        return q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)

    def block(self, i: int, block, hidden: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(block, hidden)
        heads, patches, d = q.shape
        if i not in self.full:  # equal windows, contiguous in window order: a batch of attentions
            q, k, v = (t.reshape(heads, patches // self.window, self.window, d) for t in (q, k, v))
        # q scaled before q k^T (transformers scales after): the same in fp32, no fp16 overflow of the product
        weights = torch.softmax(torch.matmul(q * d**-0.5, k.transpose(-1, -2)), dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v).reshape(heads, patches, d).transpose(0, 1).reshape(patches, -1)
        hidden = self.finite(hidden + block.attn.proj(out))
        return self.finite(hidden + block.mlp(block.norm2(hidden)))

    def finite(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.clamp is None else hidden.clamp(-self.clamp, self.clamp)

    def received(self, block, hidden: torch.Tensor) -> torch.Tensor:
        """Attention received by each merged token at a full-attention block [1, H, N] (fp32, raster
        order): softmax(q k^T / sqrt(d)) averaged over every query, summed over the token's patches
        then divided by their count."""
        q, k, _ = self.qkv(block, hidden)
        q, k = q.float(), k.float()
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
        per_patch = weights.mean(dim=1)  # [H, P] over queries
        per_token = per_patch.reshape(self.num_heads, -1, self.unit).mean(dim=-1)  # window order
        return per_token[:, self.token_order][None]

    def encode(self, pixel_values: torch.Tensor, attention: bool):
        """(merged tokens [1, N, D] in raster order, received attention [1, H, N] or None)."""
        hidden = torch.matmul(pixel_values.to(self.dtype), self.patch_weight.t())
        hidden = hidden[self.patch_order]
        received = None
        for i, block in enumerate(self.blocks):
            if attention and i == self.attention_block:
                received = self.received(block, hidden)
            hidden = self.block(i, block, hidden)
        merged = self.merger(hidden)[self.token_order]
        return merged[None], received

    def method_inputs(self, pixel_values: torch.Tensor) -> VisionInputs:
        features, received = self.encode(pixel_values, "received_attention" in self.method.needs)
        constants = {name: getattr(self, f"method_{name}") for name, _ in self._constants}
        return VisionInputs(features, None, self.side, constants, received_attention=received)

    def selection_scores(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        if self.method.score is None:
            return None
        return self.method.score(self.method_inputs(pixel_values))

    def accepts_selection(self, pixel_values: torch.Tensor, kept: list[int], band: float) -> bool | None:
        if self.method.accepts is None:
            return None
        with torch.no_grad():
            return bool(self.method.accepts(self.method_inputs(pixel_values), [int(i) for i in kept], band))

    def forward(self, pixel_values: torch.Tensor):
        if self.method.keeps_all:
            features, _ = self.encode(pixel_values, False)
            return features, torch.arange(features.shape[1], dtype=torch.int64)[None]
        return self.method.select(self.method_inputs(pixel_values), self.k)


def mrope_positions(prefix: int, kept: list[int] | Any, grid: tuple[int, int], suffix: int) -> torch.Tensor:
    """[3, 1, S] positions of a prompt: ``prefix`` text tokens, the kept image tokens (merged
    raster indices on ``grid``), ``suffix`` text tokens (the PyTorch twin of the runtime's)."""
    rows, cols = grid
    kept = torch.as_tensor(kept, dtype=torch.int64)
    text = torch.arange(prefix)
    image = torch.stack([torch.full_like(kept, prefix), prefix + kept // cols, prefix + kept % cols])
    after = prefix + max(rows, cols) + torch.arange(suffix)
    return torch.cat([text.expand(3, -1), image, after.expand(3, -1)], dim=1)[:, None]



class QwenProcessor:
    """transformers' processing of one image and prompt for a bundle's fixed grid: the image
    resized to the grid's square (PIL, the bundle's filter, as the runtime does), then Qwen's own
    image processor (which leaves a size on its 28-px lattice as it is) and the tokenizer's chat
    template, the image placeholder expanded to the grid's N tokens. Qwen2_5_VLProcessor itself
    cannot be built here: it insists on a video processor, which needs torchvision."""

    def __init__(self, folder: str, image_size: int, resample: str = "bicubic"):
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.image_processor = AutoImageProcessor.from_pretrained(folder)
        self.image_size, self.resample = image_size, resample
        self.merge = int(self.image_processor.merge_size)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False, **kwargs):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=tokenize, **kwargs)

    def fixed_image(self, image):
        from PIL import Image

        from edgecompress_runtime.preprocess import RESAMPLE

        rgb = image.convert("RGB") if isinstance(image, Image.Image) else Image.open(image).convert("RGB")
        size = (self.image_size, self.image_size)
        return rgb if rgb.size == size else rgb.resize(size, resample=RESAMPLE[self.resample])

    def images(self, image) -> dict[str, torch.Tensor]:
        out = self.image_processor(images=[self.fixed_image(image)], return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def __call__(self, images=None, text: str = "", return_tensors: str = "pt"):
        pixels = self.images(images)
        tokens = int(pixels["image_grid_thw"].prod()) // self.merge**2
        pad = "<|image_pad|>"
        encoded = dict(self.tokenizer(text.replace(pad, pad * tokens), return_tensors=return_tensors))
        # which tokens are image tokens (Qwen2_5_VLProcessor returns these; transformers needs them
        # to number the image's positions by its grid rather than as text)
        encoded["mm_token_type_ids"] = (encoded["input_ids"] == self.tokenizer.convert_tokens_to_ids(pad)).int()
        return {**encoded, **pixels}
