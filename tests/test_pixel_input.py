"""`export --pixel-input uint8`: the vision graph takes the uint8 centre crop and normalises
inside, with the runtime's own table, so nothing a user sees changes: the same image embeddings
bit for bit, the same tokens; the verifier passes it and TensorRT-RTX builds it.

`export --pixel-input frame:WxH`: the vision graph takes whole frames of one size and resizes
(PIL's two passes as constant matrices), crops and normalises inside. Its pixels are the exact
path's within one level (float sums where PIL sums fixed-point integers: a pass result that
lands within ~1e-4 of a rounding boundary rounds the other way, measured on ~1e-5 of the values,
1e-3 at most), so the kept tokens and the answer are the float bundle's."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgecompress.errors import EdgeCompressError
from edgecompress.lowering.verifier import verify_graph

try:
    import tensorrt_rtx  # noqa: F401

    HAVE_RTX = True
except ImportError:
    HAVE_RTX = False


@pytest.fixture(scope="module")
def uint8_bundle(bundles, tmp_path_factory):
    """HiRED 20% fp16 with uint8 pixels: the twin of bundles["hired-fp16"] (its decoder graph comes
    from the session's graph cache)."""
    from edgecompress import export_bundle

    return export_bundle("tiny-llava-random", budget="20%", precision="fp16", pixel_input="uint8",
                         out=tmp_path_factory.mktemp("pixels") / "uint8")


def test_manifest_declares_uint8_pixels_and_the_verifier_passes(uint8_bundle):
    from edgecompress_runtime import read_manifest

    manifest = read_manifest(uint8_bundle)
    assert manifest.preprocess["pixel_input"] == "uint8"
    (pixels,) = manifest.graphs["vision"].inputs
    assert (pixels.name, pixels.dtype, list(pixels.shape)) == ("pixels", "uint8", [1, 336, 336, 3])
    assert verify_graph(onnx.load(str(uint8_bundle / "vision.onnx"), load_external_data=False)).ok


def test_uint8_bundle_answers_exactly_as_the_float_bundle(uint8_bundle, bundles, images):
    """Exact equality, no tolerance: the graph's lookup table is the runtime's normalize_table, so
    the float32 pixels entering the patch convolution are the same bits, and everything after
    them is the same graph."""
    from edgecompress_runtime import Pipeline

    uint8, float_ = Pipeline.load(uint8_bundle), Pipeline.load(bundles["hired-fp16"])
    for name, image in images.items():
        feeds, _ = uint8.prepare_image(image)
        assert feeds["pixels"].dtype == np.uint8 and feeds["pixels"].shape == (1, 336, 336, 3)
        (embeds, kept), (reference, reference_kept) = uint8.backend.vision(feeds), float_.backend.vision(float_.prepare_image(image)[0])
        assert np.array_equal(embeds, reference) and np.array_equal(kept, reference_kept), name
        ours = uint8.generate_full(image, "What is in the picture?", max_new_tokens=8)
        theirs = float_.generate_full(image, "What is in the picture?", max_new_tokens=8)
        assert ours.token_ids == theirs.token_ids, name


def test_verifier_rejects_a_uint8_input_that_feeds_anything_but_a_cast():
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["pixels"], ["t"], name="early_transpose", perm=[0, 3, 1, 2]),
         helper.make_node("Cast", ["t"], ["out"], to=TensorProto.FLOAT)],
        "g", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [1, 4, 4, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])])
    findings = verify_graph(helper.make_model(graph)).findings
    assert [f.check for f in findings] == ["uint8-inputs"]
    assert "'pixels' feeds Transpose node 'early_transpose'" in findings[0].message


@pytest.mark.parametrize("model,value,message", [
    ("tiny-llava-random", "int8", "unknown --pixel-input 'int8'"),
    ("tiny-llava-next", "uint8", "--pixel-input uint8 is for LLaVA-1.5 bundles"),
    ("tiny-llava-random", "frame:10x10", "each side of a frame must be 14 to 8192"),
    ("tiny-llava-random", "frame:1920", "unknown --pixel-input 'frame:1920'"),
    ("tiny-llava-random", "frames:64x64", "unknown --pixel-input 'frames:64x64'"),
    ("tiny-qwen2.5-vl", "frame:64x64", "--pixel-input frame:64x64 is for LLaVA-1.5 bundles"),
])
def test_bad_values_and_other_families_are_refused_before_loading(model, value, message, tmp_path):
    from edgecompress import export_bundle

    with pytest.raises(EdgeCompressError, match=message):
        export_bundle(model, pixel_input=value, out=tmp_path / "a")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
@pytest.mark.parametrize("name", ["uint8_bundle", "frame_bundle"])
def test_tensorrt_rtx_builds_the_graph(name, request):
    """TensorRT's parser takes both: the Cast + Gather of the uint8 crop, and the frame graph's
    resize (MatMuls on a Cast of the uint8 frame, Floor, Clip) before it."""
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile
    from tests.helpers import assert_engines_match_manifest

    bundle = request.getfixturevalue(name)
    record = build_engines(bundle, load_profile("rtx-4090"), force=True)
    assert_engines_match_manifest(bundle, "rtx-4090", record)


def test_the_cpp_runtime_feeds_uint8_pixels(uint8_bundle, tmp_path):
    """The C++ runtime feeds the 8-bit crop to a uint8 bundle's vision graph: the same tokens,
    text and kept indices as the Python runtime (exact: same graphs, bit-identical crops)."""
    from tests.cpp_build import build_cpp
    from tests.cpp_parity import assert_same_answers, write_photos

    assert_same_answers(build_cpp(), uint8_bundle, write_photos(tmp_path / "images"), tmp_path)


FRAME = (641, 479)  # odd on purpose: the resize and the centre crop both have remainders


@pytest.fixture(scope="module")
def frame_bundle(bundles, tmp_path_factory):
    """The twin of bundles["hired-fp16"] taking 641x479 frames."""
    from edgecompress import export_bundle

    return export_bundle("tiny-llava-random", budget="20%", precision="fp16", pixel_input="frame:641x479",
                         out=tmp_path_factory.mktemp("pixels") / "frame")


def frames(count: int, size=FRAME):
    from tests.helpers import scene

    return [scene(*size, seed=seed) for seed in range(count)]


@pytest.mark.parametrize("size,shape", [(224, (1920, 1080)), (224, (1080, 1920)), (336, (641, 479)), (336, (300, 1000)),
                                        (224, (336, 336)), (336, (200, 150))])
def test_the_frame_graphs_resize_is_the_exact_paths_within_one_level(size, shape):
    """Both pass orders (300x1000 resizes vertically first), an enlargement (200x150), noise (the
    worst case for rounding) and a photo-like scene; a crop one pixel off or a pass in the wrong
    order moves thousands of values by several levels, far outside these bounds."""
    import torch
    from PIL import Image

    from edgecompress.models.pixel_input import FramePixels
    from edgecompress_runtime.preprocess import crop_pixels
    from tests.helpers import scene

    params = {**recipe_preprocess(), "resize_shortest_edge": size, "crop_size": size}
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (shape[1], shape[0], 3), dtype=np.uint8))
    module = FramePixels(torch.nn.Identity(), params, *shape)
    for image in (scene(*shape, seed=1), noise):
        frame = torch.from_numpy(np.array(image))[None]
        got = module.pixels(frame).permute(1, 2, 0).numpy()
        want = crop_pixels(image, params).astype(np.float32)
        assert got.shape == want.shape == (size, size, 3)
        d = np.abs(got - want)
        assert d.max() <= 1 and (d > 0).mean() <= 2e-3, (d.max(), (d > 0).mean())


def recipe_preprocess():
    from tests.test_cpp_preprocess import CLIP_224

    return dict(CLIP_224)


def test_frame_bundle_declares_its_frame_and_answers_as_the_float_bundle(frame_bundle, bundles):
    """The manifest records the frame size, the verifier passes the graph (its uint8 input feeds
    only a Cast); on 641x479 frames, given as arrays (as a camera hands them over) and as PIL
    images, the answer is the float bundle's. Tie band: this random-weight fp16 tower's CLS scores
    are nearly flat, so a pixel one level off can swap one near-tie token at the cut-off
    (measured: at most 1 of 115 on 8 frames, next-token logits within 1.2e-3 of the largest);
    allowed: 2 swaps, logits within 1e-2."""
    from edgecompress_runtime import Pipeline, read_manifest

    manifest = read_manifest(frame_bundle)
    assert manifest.preprocess["pixel_input"] == "frame" and manifest.preprocess["frame_size"] == [641, 479]
    (frame,) = manifest.graphs["vision"].inputs
    assert (frame.name, frame.dtype, list(frame.shape)) == ("frame", "uint8", [1, 479, 641, 3])
    assert verify_graph(onnx.load(str(frame_bundle / "vision.onnx"), load_external_data=False)).ok
    ours, theirs = Pipeline.load(frame_bundle), Pipeline.load(bundles["hired-fp16"])
    answers = set()
    for i, image in enumerate(frames(4)):
        given = np.asarray(image) if i % 2 else image
        a = ours.generate_full(given, "What is in the picture?", max_new_tokens=8)
        b = theirs.generate_full(image, "What is in the picture?", max_new_tokens=8)
        assert len(set(a.kept_indices.tolist()) & set(b.kept_indices.tolist())) >= len(b.kept_indices) - 2, i
        scale = np.abs(b.prefill_logits).max()
        assert np.abs(a.prefill_logits - b.prefill_logits).max() <= 1e-2 * scale and a.token_ids == b.token_ids, i
        answers.add(tuple(a.token_ids))
    assert len(answers) > 1  # the frames lead to different answers: the graph reads them


def test_frame_bundle_refuses_other_sizes_and_bad_arrays(frame_bundle, tmp_path):
    import json
    import shutil

    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(frame_bundle)
    with pytest.raises(EdgeCompressError, match=r"is 640x480; this bundle's vision graph takes 641x479 frames"):
        pipe.generate(frames(1, (640, 480))[0], "What is it?")
    with pytest.raises(EdgeCompressError, match=r"uint8 \[height, width, 3\]"):
        pipe.generate(np.zeros((479, 641, 3), np.float32), "What is it?")
    with pytest.raises(EdgeCompressError, match="--fast-preprocess has nothing to do"):
        Pipeline.load(frame_bundle, fast_preprocess=True)
    damaged = shutil.copytree(frame_bundle, tmp_path / "damaged")
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["preprocess"]["frame_size"] = [641]
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeCompressError, match=r"preprocess.frame_size should be \[width, height\]"):
        Pipeline.load(damaged, check_hashes=False)


def test_the_cpp_runtime_feeds_whole_frames(frame_bundle, tmp_path):
    """The C++ runtime hands a frame bundle the decoded frame: the same answers as the Python
    runtime (exact: same graphs, same decoded pixels), and another size is refused (exit 2)."""
    from tests.cpp_build import build_cpp
    from tests.cpp_parity import assert_same_answers, run_app

    build = build_cpp()
    photos = []
    for i, image in enumerate(frames(3)):
        photos.append(tmp_path / f"frame-{i}.{'jpg' if i % 2 else 'png'}")
        image.save(photos[-1], quality=90) if i % 2 else image.save(photos[-1])
    assert_same_answers(build, frame_bundle, photos, tmp_path)
    frames(1, (640, 480))[0].save(tmp_path / "small.png")
    done = run_app(build, "--bundle", str(frame_bundle), "--image", str(tmp_path / "small.png"), "--prompt", "What is it?")
    assert done.returncode == 2 and "the image is 640x480; this bundle's vision graph takes 641x479 frames" in done.stderr
