"""The torch-free runtime against transformers: generated tokens, logits, preprocessing, errors."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from edgecompress.models.llava import pruned_vision
from edgecompress.reference import pruned_generate, transformers_generate
from edgecompress.methods import get_method
from edgecompress_runtime import EdgeCompressError, Pipeline, preprocess
from tests.helpers import assert_generation_matches
from tests.conftest import run_cli

PROMPTS = ["What is in the picture?", "Describe the image in detail.", "How many shapes are there?"]
MAX_NEW = 16


@pytest.fixture(scope="module")
def pipelines(bundles):
    return {name: Pipeline.load(path) for name, path in bundles.items() if name != "hired-fp16"}


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_unpruned_bundle_generates_exactly_what_transformers_generates(pipelines, tiny_fp32, processor, images, image, prompt):
    reference = transformers_generate(tiny_fp32.model, processor, images[image], prompt, MAX_NEW)
    result = pipelines["none-fp32"].generate_full(images[image], prompt, max_new_tokens=MAX_NEW)
    assert result.token_ids == reference.token_ids
    assert len(result.token_ids) == MAX_NEW or result.stopped_by == "eos"
    assert result.prompt_tokens == len(processor(images=images[image], text=f"USER: <image>\n{prompt} ASSISTANT:")["input_ids"][0])
    # fp32 ONNX Runtime vs fp32 PyTorch over 4 layers: round-off only (observed < 1e-6).
    np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("prompt", PROMPTS[:2])
@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_pruned_bundle_matches_the_pytorch_pruned_pipeline(pipelines, tiny_fp32, processor, images, image, prompt):
    module = pruned_vision(tiny_fp32, get_method("hired"), 115)
    reference = pruned_generate(tiny_fp32.model, processor, module, images[image], prompt, MAX_NEW)
    result = pipelines["hired-fp32"].generate_full(images[image], prompt, max_new_tokens=MAX_NEW)
    assert_generation_matches(result, reference, "fp32", logits_atol=1e-4)


def test_pruning_changes_the_answer_of_this_random_model(pipelines, images):
    """Guards the two tests above against passing vacuously: the 20% bundle really sees fewer tokens."""
    full = pipelines["none-fp32"].generate_full(images["scene"], PROMPTS[0], max_new_tokens=MAX_NEW)
    pruned = pipelines["hired-fp32"].generate_full(images["scene"], PROMPTS[0], max_new_tokens=MAX_NEW)
    assert full.prompt_tokens - pruned.prompt_tokens == 576 - 115
    assert full.token_ids != pruned.token_ids


def test_streaming_callback_receives_the_whole_answer(pipelines, images):
    pieces = []
    text = pipelines["hired-fp32"].generate(images["scene"], PROMPTS[0], max_new_tokens=MAX_NEW, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == text


def make_mode_images():
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (480, 640), dtype=np.uint8)))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 3
    return {
        "rgb-640x480": rgb,
        "rgb-336": rgb.crop((0, 0, 336, 336)),
        "tall-200x900": Image.fromarray(rng.integers(0, 256, (900, 200, 3), dtype=np.uint8)),
        "wide-901x203": Image.fromarray(rng.integers(0, 256, (203, 901, 3), dtype=np.uint8)),
        "tiny-50x30-upscaled": Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)),
        "L": rgb.convert("L"),
        "LA": rgba.convert("LA"),
        "RGBA": rgba,
        "P-transparency": palette,
        "CMYK": rgb.convert("CMYK"),
    }


@pytest.mark.parametrize("name", list(make_mode_images()))
def test_preprocessing_matches_transformers_image_processor(processor, bundles, name):
    image = make_mode_images()[name]
    params = json.loads((bundles["hired-fp32"] / "manifest.json").read_text())["preprocess"]
    ours = preprocess(image, params)
    theirs = processor.image_processor(image, return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 336, 336) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_exif_orientation_is_applied_like_transformers_load_image(tmp_path, processor, bundles):
    from transformers.image_utils import load_image

    path = tmp_path / "rotated.jpg"
    array = np.zeros((200, 400, 3), dtype=np.uint8)
    array[:, :100] = (255, 0, 0)  # a red band on the left, before rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    params = json.loads((bundles["hired-fp32"] / "manifest.json").read_text())["preprocess"]
    ours = preprocess(path, params)
    theirs = processor.image_processor(load_image(str(path)), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    unrotated = processor.image_processor(Image.open(path), return_tensors="np")["pixel_values"]
    assert np.abs(ours - unrotated).max() > 1.0  # orientation really mattered


BLOCKER = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "edgecompress"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_runs_where_torch_and_transformers_cannot_be_imported(tmp_path, bundles, images, pipelines):
    images["scene"].save(tmp_path / "scene.png")
    script = BLOCKER + textwrap.dedent(
        f"""
        import json
        for blocked in ("torch", "transformers"):
            try:
                __import__(blocked)
                raise SystemExit(f"{{blocked}} imported")
            except ImportError:
                pass
        from edgecompress_runtime import Pipeline
        pipe = Pipeline.load({str(bundles["hired-fp32"])!r})
        result = pipe.generate_full({str(tmp_path / "scene.png")!r}, "What is in the picture?", max_new_tokens={MAX_NEW})
        print(json.dumps(result.token_ids))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    in_process = pipelines["hired-fp32"].generate_full(tmp_path / "scene.png", "What is in the picture?", max_new_tokens=MAX_NEW)
    assert json.loads(done.stdout) == in_process.token_ids


def test_cli_run_streams_the_pipelines_answer(tmp_path, bundles, images, pipelines):
    images["flat"].save(tmp_path / "flat.png")
    result = run_cli("run", str(bundles["hired-fp32"]), "--image", str(tmp_path / "flat.png"), "--prompt", PROMPTS[0], "--max-new-tokens", str(MAX_NEW))
    assert result.returncode == 0, result.stderr
    expected = pipelines["hired-fp32"].generate(tmp_path / "flat.png", PROMPTS[0], max_new_tokens=MAX_NEW)
    assert result.stdout == expected + "\n"


@pytest.fixture()
def bundle_copy(tmp_path, bundles):
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["hired-fp32"], copy)
    return copy


def test_tampered_file_is_named(bundle_copy):
    with open(bundle_copy / "decoder.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(EdgeCompressError, match="decoder.onnx does not match its sha256"):
        Pipeline.load(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "embed_tokens.npy").unlink()
    with pytest.raises(EdgeCompressError, match="embed_tokens.npy is missing"):
        Pipeline.load(bundle_copy)


def test_other_schema_version_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeCompressError, match="schema version 99; this edgecompress reads version 1"):
        Pipeline.load(bundle_copy)


def test_image_errors(tmp_path, pipelines):
    pipe = pipelines["hired-fp32"]
    with pytest.raises(EdgeCompressError, match="does not exist"):
        pipe.generate(tmp_path / "missing.png", "hi")
    (tmp_path / "notes.png").write_text("not really a png")
    with pytest.raises(EdgeCompressError, match="not an image"):
        pipe.generate(tmp_path / "notes.png", "hi")


def test_prompt_longer_than_the_bundle_supports(pipelines, images):
    pipe = pipelines["hired-fp32"]
    limit = pipe.max_sequence - pipe.k  # text tokens that fit with the image and 1 new token
    with pytest.raises(EdgeCompressError, match="over this bundle's maximum sequence of 2048"):
        pipe.generate(images["flat"], "word " * 2500, max_new_tokens=1)
    with pytest.raises(EdgeCompressError, match="exactly one image placeholder"):
        pipe.generate(images["flat"], "two images <image>", max_new_tokens=1)
    assert limit == json.loads((pipe.bundle / "manifest.json").read_text())["limits"]["max_text_tokens"]


def test_cli_run_errors_have_no_traceback(tmp_path, bundles):
    (tmp_path / "notes.txt").write_text("hello")
    for args, message in [
        (["--image", str(tmp_path / "nope.jpg")], "does not exist"),
        (["--image", str(tmp_path / "notes.txt")], "is not an image"),
    ]:
        result = run_cli("run", str(bundles["hired-fp32"]), "--prompt", "hi", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_vision_only_bundle_cannot_run(tmp_path, tiny_checkpoint, images):
    from edgecompress import export_bundle

    bundle = export_bundle("tiny-llava-random", out=tmp_path / "v", vision_only=True)
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "vision.onnx", "vision.onnx.data"]
    with pytest.raises(EdgeCompressError, match="has no decoder graph"):
        Pipeline.load(bundle)


@pytest.mark.parametrize("image", ["noise", "scene"])
def test_fp16_bundle_matches_the_fp16_pytorch_pruned_pipeline(bundles, tiny_fp16, processor, images, image):
    # The flat image is left out: its kept indices swap inside the cut-off's tie band in fp16
    # (see tests/test_export.py), which changes the prompt; tie handling is tested there.
    module = pruned_vision(tiny_fp16, get_method("hired"), 115)
    reference = pruned_generate(tiny_fp16.model, processor, module, images[image], PROMPTS[0], MAX_NEW)
    result = Pipeline.load(bundles["hired-fp16"]).generate_full(images[image], PROMPTS[0], max_new_tokens=MAX_NEW)
    # fp16 kernels of two runtimes: ~1e-3 relative round-off on logits of magnitude ~0.5
    # (observed 5e-4); 5e-3 leaves room without hiding a wrong splice or position (those move logits by >0.1).
    assert_generation_matches(result, reference, "fp16", logits_atol=5e-3)


def test_random_weights_bundle_runs_and_reproduces_the_seeded_checkpoint(tmp_path, pipelines, images):
    """--random-weights builds the recipe's architecture from its seed: for tiny-llava-random that is the
    very checkpoint the recipe builds, so the bundle answers identically; its tokenizer comes
    without building any weights."""
    from edgecompress import export_bundle

    bundle = export_bundle("tiny-llava-random", out=tmp_path / "rw", random_weights=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["random_weights"] is True and manifest["tokenizer"] == {"file": "tokenizer.json"}
    result = Pipeline.load(bundle).generate_full(images["scene"], PROMPTS[0], max_new_tokens=MAX_NEW)
    expected = pipelines["hired-fp32"].generate_full(images["scene"], PROMPTS[0], max_new_tokens=MAX_NEW)
    assert result.token_ids == expected.token_ids
