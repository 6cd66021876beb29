"""`export --pixel-input uint8`: the vision graph takes the uint8 centre crop and normalises
inside, with the runtime's own table, so nothing a user sees changes: the same image embeddings
bit for bit, the same tokens; the verifier passes it and TensorRT-RTX builds it."""

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


def test_unknown_value_and_llava_next_are_refused_before_loading(tmp_path):
    from edgecompress import export_bundle

    with pytest.raises(EdgeCompressError, match="unknown --pixel-input 'int8'"):
        export_bundle("tiny-llava-random", pixel_input="int8", out=tmp_path / "a")
    with pytest.raises(EdgeCompressError, match="--pixel-input uint8 is for LLaVA-1.5 bundles"):
        export_bundle("tiny-llava-next", pixel_input="uint8", out=tmp_path / "b")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
def test_tensorrt_rtx_builds_the_uint8_graph(uint8_bundle):
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile
    from tests.helpers import assert_engines_match_manifest

    record = build_engines(uint8_bundle, load_profile("rtx-4090"), force=True)
    assert_engines_match_manifest(uint8_bundle, "rtx-4090", record)


def test_the_cpp_runtime_feeds_uint8_pixels(uint8_bundle, tmp_path):
    """The C++ runtime feeds the 8-bit crop to a uint8 bundle's vision graph: the same tokens,
    text and kept indices as the Python runtime (exact: same graphs, bit-identical crops)."""
    from tests.cpp_build import build_cpp
    from tests.cpp_parity import assert_same_answers, write_photos

    assert_same_answers(build_cpp(), uint8_bundle, write_photos(tmp_path / "images"), tmp_path)
