"""LLaVA-NeXT (anyres) end to end: tiling equal to transformers, HiRED's per-partition budget as
one fixed-K static graph (ONNX Runtime equal to PyTorch for every pinpoint grid), the authors'
allocation, and bundles that generate what transformers and the PyTorch pipeline do."""

import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress.errors import EdgeCompressError
from edgecompress.methods.hired import ALPHA as HIRED_ALPHA
from edgecompress.models.llava_next import pruned_vision_next
from edgecompress.reference import pruned_generate, transformers_generate, vision_inputs
from edgecompress.methods import get_method
from edgecompress_runtime.anyres import layout_for, preprocess_anyres
from edgecompress_runtime.pipeline import Pipeline
from tests.authors_hired import authors_masks, hired_next_authors
from tests.helpers import assert_engines_match_manifest, scene

N = 576
# (width, height) -> the grid transformers picks: every llava-v1.6 pinpoint, plus heavy padding.
SIZES = {
    (672, 336): (1, 2), (336, 672): (2, 1), (800, 800): (2, 2), (1000, 300): (1, 3), (300, 1000): (3, 1),
    (640, 480): (2, 2), (2000, 100): (1, 3), (17, 400): (2, 1), (336, 336): (1, 2),
}
PROMPTS = ["What is in the picture?", "How many shapes are there?"]
MAX_NEW = 8


@pytest.fixture(scope="module")
def next_images():
    return {size: scene(*size, seed=i) for i, size in enumerate(SIZES)}


@pytest.fixture(scope="module")
def next_spec():
    from edgecompress.recipes import resolve_model

    return resolve_model("tiny-llava-next")


@pytest.fixture(scope="module")
def tiny_next(next_spec):
    from edgecompress.models.loading import load_model

    return load_model(next_spec, dtype=torch.float32)


@pytest.fixture(scope="module")
def next_processor(tiny_next):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_next.text_source)


def partition_budget(adapter, budget: str):
    """(resolved budget, split) for HiRED on this model: the one resolution export uses."""
    from edgecompress.architecture import Architecture
    from edgecompress.budget import resolve_for

    resolution = resolve_for(budget, get_method("hired"), Architecture.from_config(adapter.config.to_dict()))
    return resolution.budget, resolution.split


@pytest.fixture(scope="module")
def hired_module(tiny_next):
    _, split = partition_budget(tiny_next, "20%")
    return pruned_vision_next(tiny_next, get_method("hired"), split)


# -- tiling ----------------------------------------------------------------------------------


def test_every_pinpoint_grid_is_exercised(tiny_next):
    assert set(SIZES.values()) == set(tiny_next.grids)


@pytest.mark.parametrize("size", list(SIZES))
def test_runtime_tiling_equals_transformers(tiny_next, next_processor, next_images, size):
    """Torch-free tiling equals LlavaNextImageProcessorPil exactly (tolerance 0: same PIL resize,
    same uint8 padding, same float32 normalisation), picks the same grid, and the unpruned
    token count equals the number of placeholders transformers' processor expands."""
    image = next_images[size]
    expected = next_processor.image_processor(image, return_tensors="np")["pixel_values"][0]
    ours, layout = preprocess_anyres(image, tiny_next.preprocess, tiny_next.anyres_record())
    used = 1 + layout.tiles
    assert layout.grid == SIZES[size] and expected.shape[0] == used
    np.testing.assert_array_equal(ours[:used], expected)
    assert not ours[used:].any()  # unused slots are zero
    ids = next_processor(images=image, text="<image>", return_tensors="np")["input_ids"][0]
    assert len(layout.packed_order()) == int((ids == tiny_next.image_token_id).sum())


def test_runtime_tile_mask_equals_transformers_unpadding(tiny_next, next_processor, next_images):
    for image in next_images.values():
        _, grid_index, mask = vision_inputs(tiny_next.model, next_processor, image)
        layout = layout_for((image.height, image.width), tiny_next.anyres_record())
        assert layout.grid_index == int(grid_index)
        np.testing.assert_array_equal(layout.tile_mask(), mask.numpy())


# -- the fixed-K selection ------------------------------------------------------------------


def test_budget_is_defined_against_the_largest_grid(tiny_next):
    resolved, split = partition_budget(tiny_next, "20%")
    assert (resolved.n, split) == (5 * N, (576, 288, 288))  # base + 4 tiles: the 2x2 grid
    _, split = partition_budget(tiny_next, "60%")  # the most a 2-tile image can fill: 576 + 2 * 576
    assert split == (1728, 576, 1152)
    with pytest.raises(EdgeCompressError, match="an image tiled 2 tiles has only 1152") as err:
        partition_budget(tiny_next, "70%")
    assert "at most 60%" in err.value.hint
    with pytest.raises(EdgeCompressError, match="too few"):
        partition_budget(tiny_next, "1")


@pytest.mark.parametrize("budget", ["5%", "10%", "20%", "50%"])
def test_exactly_k_tokens_and_per_tile_counts_equal_the_quotas(tiny_next, next_processor, next_images, budget):
    _, split = partition_budget(tiny_next, budget)
    module = pruned_vision_next(tiny_next, get_method("hired"), split)
    for size, image in next_images.items():
        pixel_values, grid_index, mask = vision_inputs(tiny_next.model, next_processor, image)
        with torch.no_grad():
            embeds, kept = module(pixel_values, grid_index, mask)
            _, _, layer0 = module.scores(pixel_values)
            quotas = module.quotas(layer0, grid_index, mask)
        kept = kept[0].numpy()
        assert embeds.shape == (1, split.total, tiny_next.projected_dim) and len(kept) == split.total
        assert len(set(kept.tolist())) == split.total
        base, tiles = kept[kept < N], kept[kept >= N] - N
        assert len(base) == split.base_k and (np.diff(base) > 0).all()
        counts = np.bincount(tiles // N, minlength=4)
        used = SIZES[size][0] * SIZES[size][1]
        assert counts[used:].sum() == 0  # nothing from unused slots
        inside = mask.reshape(-1)[torch.from_numpy(tiles)] > 0
        if mask.sum() >= split.sub_total:
            assert counts.tolist() == quotas.tolist() and quotas.sum() == split.sub_total
            assert inside.all()  # nothing from the padding
        else:  # a very thin image (17x400 at 10% and up): fewer image tokens than the tile budget
            assert quotas.tolist() == mask.sum(-1).long().tolist()  # every image token kept ...
            assert int(inside.sum()) == int(mask.sum())  # ... and the rest filled from the padding
        layout = layout_for((image.height, image.width), tiny_next.anyres_record())
        canvas = {int(f): i for i, f in enumerate(layout.canvas_slots().ravel())}
        positions = [canvas[int(f)] for f in tiles]
        assert positions == sorted(positions)  # row-major over the whole tiled grid


def test_onnxruntime_equals_pytorch_for_every_grid(tiny_next, next_processor, next_images, next_bundles, hired_module):
    """fp32: kept indices identical; embeddings within 1e-4 (observed ~1e-6: the same fp32 ops in
    another order)."""
    manifest = json.loads((next_bundles["hired"] / "manifest.json").read_text())
    assert [t["name"] for t in manifest["graphs"]["vision"]["inputs"]] == ["pixel_values", "grid_index", "tile_mask"]
    assert manifest["graphs"]["vision"]["verify"]["ok"] and manifest["k"] == 576
    session = ort.InferenceSession(str(next_bundles["hired"] / "vision.onnx"))
    for image in next_images.values():
        inputs = vision_inputs(tiny_next.model, next_processor, image)
        with torch.no_grad():
            ref_embeds, ref_kept = hired_module(*inputs)
        feeds = dict(zip(("pixel_values", "grid_index", "tile_mask"), (t.numpy() for t in inputs)))
        embeds, kept = session.run(None, feeds)
        np.testing.assert_array_equal(kept, ref_kept.numpy())
        np.testing.assert_allclose(embeds, ref_embeds.numpy(), atol=1e-4)


def authors_hired_next(model, pixel_values, image_size, rate, alpha, feature_layer):
    """The authors' HiRED for LLaVA-NeXT (hasanar1f/HiRED) from transformers' eager attentions
    (CLS attention summed over heads; the selection is ``authors_masks``), then the keep masks
    packed as pack_image_features packs features (view, permute, unpad), newline tokens dropped."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    config = model.config
    gh, gw = get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints, config.vision_config.image_size)
    parts = 1 + gh * gw
    with torch.no_grad():
        out = model.model.vision_tower(pixel_values[:parts], output_attentions=True)
    feature = out.attentions[feature_layer][:, :, 0, 1:].sum(1)  # [P, N]
    layer0 = out.attentions[0][0, :, 0, 1:].sum(0)  # [N], base image
    masks = authors_masks(layer0, feature, (gh, gw), rate, alpha)
    base_mask, tile_mask = masks[0], masks[1:].float()
    index = torch.arange((parts - 1) * N, dtype=torch.float32).view(parts - 1, N)
    keep = torch.stack([tile_mask, index], -1).view(gh, gw, 24, 24, 2).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    keep = unpad_image(keep, image_size).flatten(1, 2)  # [2, tokens] row-major over the unpadded grid
    tiles = [int(i) for m, i in zip(keep[0], keep[1]) if m > 0]
    return torch.nonzero(base_mask).flatten().tolist() + [N + i for i in tiles]


@pytest.fixture(scope="module")
def eager_next(tiny_next):
    from transformers import LlavaNextForConditionalGeneration

    model = LlavaNextForConditionalGeneration.from_pretrained(
        tiny_next.checkpoint_dir, attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_authors_allocation_equals_the_authors_code(tiny_next, next_processor, next_images, eager_next, hired_module, rate):
    """Equal except where our q/k recomputation and eager attention disagree by float32 ulps on
    a tie: none on these images (asserted exactly)."""
    for image in next_images.values():
        pixel_values, grid_index, mask = vision_inputs(tiny_next.model, next_processor, image)
        grid = tiny_next.grids[int(grid_index)]
        ours = hired_next_authors(hired_module, pixel_values, grid, mask.reshape(-1) > 0, rate)
        image_size = next_processor.image_processor(image, return_tensors="pt")["image_sizes"][0]
        theirs = authors_hired_next(eager_next, pixel_values, image_size, rate, HIRED_ALPHA, tiny_next.feature_layer)
        assert ours == theirs


# -- end to end ------------------------------------------------------------------------------

E2E_SIZES = [(1000, 300), (640, 480), (17, 400)]


@pytest.mark.parametrize("size", E2E_SIZES)
def test_none_bundle_generates_what_transformers_generates(tiny_next, next_processor, next_images, next_bundles, size):
    """Unpruned: the runtime's tiling, unpadding and newline packing against transformers'
    LlavaNextForConditionalGeneration.generate. Tokens identical; prefill logits within 1e-4
    (observed < 1e-6)."""
    manifest = json.loads((next_bundles["none"] / "manifest.json").read_text())
    assert manifest["packing"] == {"kind": "anyres-newline", "newline": "image_newline.npy"}
    assert manifest["k"] == tiny_next.unpruned_max_tokens() == 576 + 2304 + 48
    pipe = Pipeline.load(next_bundles["none"])
    for prompt in PROMPTS:
        ref = transformers_generate(tiny_next.model, next_processor, next_images[size], prompt, MAX_NEW)
        got = pipe.generate_full(next_images[size], prompt, max_new_tokens=MAX_NEW)
        layout = layout_for((next_images[size].height, next_images[size].width), tiny_next.anyres_record())
        assert got.image_tokens == len(layout.packed_order()) < manifest["k"]
        assert got.token_ids == ref.token_ids
        np.testing.assert_allclose(got.prefill_logits, ref.prefill_logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("size", E2E_SIZES)
def test_pruned_bundle_matches_the_pytorch_pipeline(tiny_next, next_processor, next_images, next_bundles, hired_module, size):
    pipe = Pipeline.load(next_bundles["hired"])
    for prompt in PROMPTS:
        ref = pruned_generate(tiny_next.model, next_processor, hired_module, next_images[size], prompt, MAX_NEW)
        got = pipe.generate_full(next_images[size], prompt, max_new_tokens=MAX_NEW)
        assert got.kept_indices.tolist() == ref.kept_indices and len(ref.kept_indices) == got.image_tokens == 576
        assert got.token_ids == ref.token_ids
        np.testing.assert_allclose(got.prefill_logits, ref.prefill_logits.numpy(), atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
def test_tensorrt_rtx_builds_the_next_graphs(tmp_path, tiny_next):
    """The anyres vision graph (three inputs, gathers by grid index) and the decoder build for SM89."""
    from edgecompress import export_bundle
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    bundle = export_bundle("tiny-llava-next", budget="20%", precision="fp16", out=tmp_path / "fp16")
    record = build_engines(bundle, load_profile("rtx-4090"))
    assert_engines_match_manifest(bundle, "rtx-4090", record)


def test_cli_runs_a_next_bundle(next_bundles, next_images, tmp_path):
    from tests.conftest import run_cli

    path = tmp_path / "wide.png"
    next_images[(1000, 300)].save(path)
    result = run_cli("run", str(next_bundles["hired"]), "--image", str(path), "--prompt", "What is here?",
                     "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    result = run_cli("inspect", str(next_bundles["hired"]))
    assert result.returncode == 0 and "anyres" in result.stdout


def test_a_llava_next_folder_is_recognised_by_its_config(tiny_next, tmp_path):
    """A local llava-hf folder with model_type llava_next exports as LLaVA-NeXT, no recipe needed."""
    from tests.conftest import run_cli

    result = run_cli("export", str(tiny_next.checkpoint_dir), "--vision-only", "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["family"] == "llava-next" and manifest["k"] == 576 and manifest["source"]["kind"] == "folder"


def test_plan_resolves_the_budget_as_export_does():
    """`plan` (no download, no export) takes K against the largest grid, and at 100% the packed count."""
    from tests.conftest import run_cli

    result = run_cli("plan", "llava-next", "--profile", "rtx-4090")
    assert result.returncode == 0 and "K = 576," in result.stdout
    result = run_cli("plan", "llava-next", "--profile", "rtx-4090", "--budget", "100%")
    assert result.returncode == 0 and "K = 2928," in result.stdout


def test_methods_without_a_next_lowering_are_refused(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("export", "tiny-llava-next", "--method", "random", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "not available for LLaVA-NeXT" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()
