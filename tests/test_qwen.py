"""Qwen2.5-VL: the tiny checkpoint (seeded, transformers' own classes) exported on a fixed grid.

What is asserted, and the tolerances:

- The vision graph's module is transformers' tower: merged tokens within 1e-5 of the tower's
  scale (fp32, the same operations summed in another order: measured 1.1e-6).
- The attention-received scores equal the same rule written plainly over transformers' own
  pieces (its window index, rotary table and rotation function), within 1e-6 relative.
- The runtime's patch rows equal transformers' image processor's on the same (resized) image
  within 1e-6 (both normalise in float32; measured 0).
- mRoPE positions at 100% are transformers' ``get_rope_index``, exactly (integers).
- Exported at 100%, the bundle answers as transformers' ``generate`` does, token for token, on
  images of several sizes and aspect ratios (fp32: ONNX Runtime and PyTorch differ by ~1e-5 in
  the logits; the seeded model's top two logits are further apart on these prompts, so the
  greedy tokens are equal); exported at 20%, as the PyTorch pruned pipeline does (kept tokens
  under the tie-band rule; where identical, tokens equal and prefill logits within 1e-4).
"""

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch

from edgecompress import export_bundle
from edgecompress.methods import get_method
from edgecompress.parity import compare_selections
from edgecompress.reference import chat_text, pruned_generate, transformers_generate
from edgecompress_runtime import Pipeline
from edgecompress_runtime.qwen import mrope_positions, patch_rows

from tests.conftest import run_cli
from tests.helpers import scene

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
SIZES = [(448, 448), (641, 479), (333, 777), (1001, 299)]  # square, landscape, portrait, a strip
PROMPTS = ["What is in the picture?", "Describe the image in detail."]
N, K = 256, 51  # 448 px: 16x16 merged tokens; 20% -> floor(51.2)


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    return tiny_qwen


# -- the PyTorch side ----------------------------------------------------------------------------


def hf_pixels(adapter, image):
    out = adapter.load_processor().images(image)
    return out["pixel_values"], out["image_grid_thw"]


def test_vision_module_is_transformers_tower(qwen):
    pixel_values, grid = hf_pixels(qwen, scene(641, 479, 0))
    module = qwen.plan_vision(get_method("none"), "100%", "fp32").module
    with torch.no_grad():
        reference = qwen.model.model.visual(pixel_values, grid_thw=grid).pooler_output
        embeds, kept = module(pixel_values)
    assert embeds.shape == (1, N, 64) and kept[0].tolist() == list(range(N))
    scale = float(reference.abs().max())
    assert float((embeds[0] - reference).abs().max()) <= 1e-5 * scale


def test_received_attention_is_the_rule_over_transformers_pieces(qwen):
    """Mean over queries of softmax(q k^T / sqrt(d)) at the last full-attention block, computed
    from the block's input as transformers' forward hands it over (window order), with its own
    rotary function; each merged token the mean of its 4 patches, back in raster order."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
    from transformers.vision_utils import get_vision_window_index

    visual = qwen.model.model.visual
    block = max(qwen.config.vision_config.fullatt_block_indexes)
    pixel_values, grid = hf_pixels(qwen, scene(448, 448, 3))
    captured = {}
    hook = visual.blocks[block].register_forward_pre_hook(lambda m, args, kwargs: captured.update(
        hidden=args[0] if args else kwargs["hidden_states"], rope=kwargs["position_embeddings"]), with_kwargs=True)
    try:
        with torch.no_grad():
            visual(pixel_values, grid_thw=grid)
    finally:
        hook.remove()
    blk = visual.blocks[block]
    hidden = captured["hidden"]
    heads = blk.attn.num_heads
    with torch.no_grad():
        q, k, _ = blk.attn.qkv(blk.norm1(hidden)).reshape(hidden.shape[0], 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, *captured["rope"])
        weights = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) * q.shape[-1] ** -0.5, dim=-1)
    per_token = weights.mean(dim=1).reshape(heads, -1, 4).mean(dim=-1)  # [H, N] in window order
    window_index, _ = get_vision_window_index(grid, 2, qwen.config.vision_config.window_size, 14)
    expected = torch.empty_like(per_token)
    expected[:, window_index] = per_token
    module = qwen.plan_vision(get_method("received"), "20%", "fp32").module
    with torch.no_grad():
        received = module.method_inputs(pixel_values).received_attention[0]
    torch.testing.assert_close(received, expected.float(), rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def test_cls_methods_are_refused_with_the_alternatives(qwen):
    from edgecompress.errors import EdgeCompressError

    for name in ("hired", "visionzip", "vtc-cls"):
        with pytest.raises(EdgeCompressError, match="no CLS token") as err:
            qwen.plan_vision(get_method(name), "20%", "fp32")
        assert "received" in err.value.hint and "dart" in err.value.hint


# -- the runtime's own preprocessing and positions --------------------------------------------------


@pytest.mark.parametrize("size", SIZES + [(15, 15), (3000, 200)])
def test_patch_rows_equal_transformers_processor(qwen, size):
    image = scene(*size, seed=sum(size))
    rows = patch_rows(image, qwen.preprocess)
    reference, grid = hf_pixels(qwen, image)
    assert grid.tolist() == [[1, 32, 32]] and rows.shape == (1024, 1176) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, reference.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("prompt", PROMPTS + ["x"])
def test_mrope_positions_at_full_budget_are_get_rope_index(qwen, prompt):
    processor = qwen.load_processor()
    inputs = processor(images=scene(300, 200, 1), text=chat_text(processor, prompt))
    expected, deltas = qwen.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                       inputs["image_grid_thw"])
    ids = processor.tokenizer(chat_text(processor, prompt))["input_ids"]
    at = ids.index(qwen.image_token_id)
    positions, delta = mrope_positions(at, np.arange(N), (16, 16), len(ids) - at - 1)
    np.testing.assert_array_equal(positions, expected.numpy())
    assert delta == int(deltas[0, 0])


def test_pruned_positions_keep_each_token_s_place():
    kept = np.array([0, 17, 255])
    positions, delta = mrope_positions(3, kept, (16, 16), 4)
    full, _ = mrope_positions(3, np.arange(256), (16, 16), 4)
    np.testing.assert_array_equal(positions[:, 0, 3:6], full[:, 0, 3 + kept])  # the grid places of the kept
    np.testing.assert_array_equal(positions[:, 0, 6:], full[:, 0, -4:])  # text after: where unpruned continues
    assert delta == 3 + 16 + 4 - (3 + 3 + 4)


# -- exported bundles ----------------------------------------------------------------------------


def test_full_budget_bundle_answers_as_transformers_generate(qwen_bundles, qwen):
    pipe = Pipeline.load(qwen_bundles["none"])
    processor = qwen.load_processor()
    varied = set()
    for seed, size in enumerate(SIZES):
        image = scene(*size, seed)
        for prompt in PROMPTS:
            result = pipe.generate_full(image, prompt, max_new_tokens=12)
            reference = transformers_generate(qwen.model, processor, image, prompt, 12)
            assert result.token_ids == reference.token_ids, (size, prompt)
            assert result.image_tokens == N
            np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)
            varied.add(tuple(result.token_ids))
    assert len(varied) >= 6  # answers depend on the image and prompt: the comparison can fail


@pytest.mark.parametrize("method", ["received", "dart"])
def test_twenty_percent_bundle_answers_as_the_pruned_pytorch_pipeline(qwen_bundles, qwen, method):
    pipe = Pipeline.load(qwen_bundles[method])
    processor = qwen.load_processor()
    module = qwen.plan_vision(get_method(method), "20%", "fp32").module
    identical = 0
    for seed, size in enumerate(SIZES):
        image = scene(*size, seed)
        result = pipe.generate_full(image, PROMPTS[0], max_new_tokens=12)
        reference = pruned_generate(qwen.model, processor, module, image, PROMPTS[0], 12)
        assert result.image_tokens == K and len(result.kept_indices) == K
        agreement = compare_selections(result.kept_indices, reference.kept_indices, reference.scores,
                                       accepts=reference.accepts)
        assert agreement.agree, agreement
        if agreement.identical:
            identical += 1
            assert result.token_ids == reference.token_ids, size
            np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)
    assert identical >= 3


def test_twenty_percent_bundle_is_static(qwen_bundles):
    bundle = qwen_bundles["received"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["k"] == K and manifest["n"] == N and manifest["method"] == "received"
    assert json.loads((qwen_bundles["dart"] / "manifest.json").read_text())["method"] == "dart"  # the default
    assert manifest["positions"]["kind"] == "mrope" and manifest["positions"]["grid"] == [16, 16]
    assert manifest["resolution"]["kind"] == "fixed" and manifest["resolution"]["patch_grid"] == [32, 32]
    assert manifest["method_details"]["attention_block"] == 3
    vision = manifest["graphs"]["vision"]
    assert vision["verify"]["ok"] and vision["dynamic_axes"] == {}
    assert [t["shape"] for t in vision["inputs"]] == [[1024, 1176]]
    assert [t["shape"] for t in vision["outputs"]] == [[1, K, 64], [1, K]]
    ops = {node.op_type for node in onnx.load(str(bundle / "vision.onnx"), load_external_data=False).graph.node}
    assert not ops & {"NonZero", "Loop", "If", "Scan", "Unique", "NonMaxSuppression"}
    assert "TopK" in ops
    decoder = manifest["graphs"]["decoder"]
    assert decoder["inputs"][1] == {"name": "position_ids", "shape": [3, 1, "sequence"], "dtype": "int64"}
    # every image, whatever its size, gives K tokens
    pipe = Pipeline.load(bundle)
    for size in [(15, 15), (3000, 200), (200, 3000)]:
        result = pipe.generate_full(scene(*size, 1), "What is in the picture?", max_new_tokens=2)
        assert result.image_tokens == K and len(result.kept_indices) == K


def test_follow_up_turn_equals_one_prefill_of_the_whole_conversation(qwen_bundles):
    pipe = Pipeline.load(qwen_bundles["received"])
    image = scene(641, 479, 5)
    chat = pipe.chat(image, PROMPTS[0], max_new_tokens=6)
    first = chat.last.token_ids
    second = chat.follow_up("What colour is it?", max_new_tokens=6)
    # the whole conversation read at once: first prompt, first answer, the follow-up turn
    ids = pipe.prompt_ids(PROMPTS[0]) + first + pipe.turn_ids("What colour is it?")
    whole = pipe.generate_ids(image, ids, max_new_tokens=6)
    assert second.token_ids == whole.token_ids
    assert chat.delta == 16 - K  # text after the image continues at its start + 16, not + K


def test_cli_export_inspect_run_and_validate(qwen_bundles, tmp_path):
    from edgecompress.data.shapes import generate_shapes

    bundle = qwen_bundles["received"]
    shown = run_cli("inspect", str(bundle))
    assert shown.returncode == 0, shown.stderr
    assert "received" in shown.stdout and "51" in shown.stdout
    image = tmp_path / "scene.png"
    scene(641, 479, 2).save(image)
    ran = run_cli("run", str(bundle), "--image", str(image), "--prompt", "What is in the picture?", "-n", "4")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()
    generate_shapes(tmp_path / "shapes", count=10, seed=3)
    checked = run_cli("validate", str(bundle), "--dataset", str(tmp_path / "shapes" / "test.jsonl"), "--limit", "2")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "answer agreement: bundle vs PyTorch pruned 100.0%" in checked.stdout  # fp32: the export changes no answer


@pytest.mark.parametrize("args, message", [
    (["--method", "hired"], "no CLS token"),
    (["--pixel-input", "uint8"], "Qwen2.5-VL vision graph takes patch rows"),
    (["--decoder-ops", "onnxruntime"], "mRoPE"),
    (["--weights", "int4"], "Qwen2.5-VL is not supported yet"),
    (["--method", "fastv"], "acts at the decoder stage"),
])
def test_export_refusals(tiny_qwen, tmp_path, args, message):
    out = tmp_path / "refused"
    result = run_cli("export", "tiny-qwen2.5-vl", *args, "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.fixture(scope="module")
def qwen_fp16(tmp_path_factory, tiny_qwen):
    return export_bundle("tiny-qwen2.5-vl", method="received", budget="20%", precision="fp16",
                         out=tmp_path_factory.mktemp("qwen-fp16") / "bundle")


def test_fp16_bundle_answers_as_the_fp16_pytorch_pipeline(qwen_fp16):
    """fp16 (the full-size recipes' precision): finite logits; kept tokens under the fp16 tie band;
    where identical, the tokens of the fp16 PyTorch pruned pipeline, and logits within 1% of the
    largest: fp16 steps are 1e-3 relative, the reference's logits are rounded to fp16 and a dozen
    fp16 roundings accumulate through the tower and the language model, in another order in ONNX
    Runtime than in PyTorch (measured 1.4e-2 at a largest logit of ~3; a wrong position or an
    overflow moves logits by O(1))."""
    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model

    half = load_model(resolve_model("tiny-qwen2.5-vl"), dtype=torch.float16)
    module = half.plan_vision(get_method("received"), "20%", "fp16").module
    pipe = Pipeline.load(qwen_fp16)
    identical = 0
    for seed, size in enumerate(SIZES[:3]):
        image = scene(*size, seed)
        result = pipe.generate_full(image, PROMPTS[0], max_new_tokens=8)
        reference = pruned_generate(half.model, half.load_processor(), module, image, PROMPTS[0], 8)
        assert np.isfinite(result.prefill_logits).all()
        agreement = compare_selections(result.kept_indices, reference.kept_indices, reference.scores, precision="fp16")
        assert agreement.agree, agreement
        if agreement.identical:
            identical += 1
            assert result.token_ids == reference.token_ids
            expected = reference.prefill_logits.numpy()
            np.testing.assert_allclose(result.prefill_logits, expected, atol=1e-2 * np.abs(expected).max(), rtol=0)
    assert identical >= 2


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
def test_tensorrt_rtx_builds_the_twenty_percent_bundle(qwen_fp16):
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    bundle = qwen_fp16
    record = build_engines(bundle, load_profile("rtx-4090"))
    assert set(record["graphs"]) == {"vision", "decoder"}
    vision = {b["name"]: b["shape"] for b in record["graphs"]["vision"]["bindings"]}
    assert vision == {"pixel_values": [1024, 1176], "image_embeds": [1, K, 64], "kept_indices": [1, K]}
    decoder = {b["name"]: b["shape"] for b in record["graphs"]["decoder"]["bindings"]}
    assert decoder["position_ids"] == [3, 1, -1]


def test_image_size_sets_the_grid(tmp_path, tiny_qwen):
    """--image-size 672: 48x48 patches, N = 576, 20% -> K = 115; the graph's kept tokens are the
    PyTorch module's at that grid (tie band by its scores)."""
    import onnxruntime as ort

    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model

    result = run_cli("export", "tiny-qwen2.5-vl", "--method", "received", "--budget", "20%", "--image-size", "672", "--vision-only",
                     "--out", str(tmp_path / "b672"))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "b672" / "manifest.json").read_text())
    assert (manifest["n"], manifest["k"], manifest["preprocess"]["image_size"]) == (576, 115, 672)
    assert manifest["graphs"]["vision"]["inputs"][0]["shape"] == [2304, 1176]
    adapter = load_model(resolve_model("tiny-qwen2.5-vl"), dtype=torch.float32, image_size=672)
    pixel_values = torch.from_numpy(patch_rows(scene(500, 700, 4), adapter.preprocess))
    session = ort.InferenceSession(str(tmp_path / "b672" / "vision.onnx"), providers=["CPUExecutionProvider"])
    _, kept = session.run(None, {"pixel_values": pixel_values.numpy()})
    module = adapter.plan_vision(get_method("received"), "20%", "fp32").module
    with torch.no_grad():
        _, expected = module(pixel_values)
        scores = module.selection_scores(pixel_values)[0].numpy()
    assert compare_selections(kept[0], expected[0].tolist(), scores).agree


@pytest.mark.parametrize("args, message", [
    (["tiny-qwen2.5-vl", "--image-size", "450"], "not a positive multiple of 112"),
    (["tiny-llava-random", "--image-size", "448"], "--image-size is for Qwen2.5-VL"),
])
def test_image_size_refusals(tmp_path, args, message):
    result = run_cli("export", *args, "--out", str(tmp_path / "refused"))
    assert result.returncode == 2 and message in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "refused").exists()
