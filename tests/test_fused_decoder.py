"""The ONNX Runtime decoder graph (export --decoder-ops onnxruntime): fused operators that ONNX
Runtime runs in place of the standard graph, the same tokens and logits, and TensorRT still given
only the standard graph.

Logit tolerance: both graphs hold the same fp32 weights; the fused kernels only sum in another
order (measured: ~1e-6 of the largest logit on tiny-llava). 1e-4 of the largest logit leaves room
for that and still catches a wrong rotary position or a missing mask (each moves logits by
percents)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

LOGIT_TOLERANCE = 1e-4  # of the largest logit; see the module docstring


@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    from edgecompress import export_bundle

    out = tmp_path_factory.mktemp("fused") / "hired-fp32"
    return export_bundle("tiny-llava-random", budget="20%", precision="fp32", decoder_ops="onnxruntime", out=out)


def pipeline(bundle: Path, fused: bool):
    from edgecompress_runtime import Pipeline
    from edgecompress_runtime.backends import OnnxRuntimeBackend
    from edgecompress_runtime.bundle import open_bundle

    manifest = open_bundle(bundle)
    return Pipeline(bundle, manifest, OnnxRuntimeBackend(bundle, manifest, fused=fused))


def ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def test_onnx_runtime_runs_the_fused_graph_and_tensorrt_gets_only_the_standard_one(fused_bundle):
    from edgecompress.inspection import inspect_bundle
    from edgecompress_runtime.bundle import open_bundle

    manifest = open_bundle(fused_bundle)
    entry = manifest.onnxruntime_graphs["decoder"]
    assert entry.file == "decoder-onnxruntime.onnx"
    # the standard graph's weights are shared, not copied; only the tensors the fusion made are new
    assert entry.files == ("decoder-onnxruntime.onnx", "decoder-onnxruntime.onnx.data", "decoder.onnx.data")
    standard_inputs = [t.name for t in manifest.graphs["decoder"].inputs]
    assert [t.name for t in entry.inputs] == [*standard_inputs, "seqlens_k", "total_sequence_length"]
    assert (entry.kv_cache, entry.kv_cache_max_length) == ("shared-buffer", manifest.max_sequence)
    assert manifest.data["onnxruntime_graphs"]["decoder"]["fused"] == {
        "rms_norm": 9, "skip_rms_norm": 8, "attention": 4, "packed_qkv": 4}
    # what TensorRT builds from (build and inspect iterate `graphs`) is the standard graph, verified
    assert manifest.graphs["decoder"].file == "decoder.onnx"
    assert "decoder-onnxruntime.onnx" not in {g.file for g in manifest.graphs.values()}
    assert inspect_bundle(fused_bundle)["ok"]

    fused, standard = ops(fused_bundle / entry.file), ops(fused_bundle / "decoder.onnx")
    assert fused["GroupQueryAttention"] == 4 and fused["SkipSimplifiedLayerNormalization"] == 8
    # per layer: Q K^T and probabilities @ V run inside GroupQueryAttention, and one packed Q/K/V
    # projection stands for three
    assert fused["MatMul"] == standard["MatMul"] - 4 * (2 + 2)
    assert not {"Softmax", "Pow", "Expand", "Concat"} & set(fused)
    assert sum(fused.values()) < sum(standard.values()) / 4
    assert not {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"} & set(standard)
    assert pipeline(fused_bundle, True).backend.decoder_graph == "decoder-onnxruntime.onnx"
    assert pipeline(fused_bundle, False).backend.decoder_graph == "decoder.onnx"


def test_fused_graph_generates_the_standard_graphs_tokens(fused_bundle, images):
    standard, fused = pipeline(fused_bundle, False), pipeline(fused_bundle, True)
    for name, image in images.items():
        for prompt in ("What is in the picture?", "Describe the image in detail."):
            a = standard.generate_full(image, prompt, max_new_tokens=64, ignore_eos=True)
            b = fused.generate_full(image, prompt, max_new_tokens=64, ignore_eos=True)
            assert b.token_ids == a.token_ids, (name, prompt)
            scale = np.abs(a.prefill_logits).max()
            assert np.abs(b.prefill_logits - a.prefill_logits).max() <= LOGIT_TOLERANCE * scale, (name, prompt)


def test_the_standard_graphs_ortvalue_cache_generates_the_numpy_caches_tokens(fused_bundle, images):
    """The path a GPU takes for the standard graph (its growing cache kept as OrtValues where ONNX
    Runtime made them, bound as the next past; ``cache_on_device``), run here on CPU OrtValues:
    exactly the tokens, logits and follow-up turn of the numpy path (the same graph, the same
    kernels: no tolerance)."""
    numpy_cache, ortvalues = pipeline(fused_bundle, False), pipeline(fused_bundle, False)
    assert not numpy_cache.backend.cache_on_device
    ortvalues.backend.cache_on_device = True
    for name, image in list(images.items())[:2]:
        a = numpy_cache.chat(image, "What is in the picture?", max_new_tokens=24)
        b = ortvalues.chat(image, "What is in the picture?", max_new_tokens=24)
        assert b.last.token_ids == a.last.token_ids and np.array_equal(b.last.prefill_logits, a.last.prefill_logits), name
        assert not isinstance(b.past[0][0], np.ndarray)  # the cache never came back to numpy
        assert b.follow_up("What colour is it?", max_new_tokens=8).token_ids == \
            a.follow_up("What colour is it?", max_new_tokens=8).token_ids, name


def test_fused_graph_reads_position_ids_apart_from_the_cache_length(fused_bundle):
    """After a pruning prefill the next positions run ahead of the cache length; the fused
    attention must rotate by position_ids, not by where it writes in the cache. Rotary
    embeddings are relative, so the gap (positions 10.. after 10 cached tokens at 0..9 would
    not show it) is what makes a wrong position visible."""
    import onnxruntime as ort

    from edgecompress_runtime.shared_cache import length_feeds

    sessions = [ort.InferenceSession(str(fused_bundle / name), providers=["CPUExecutionProvider"])
                for name in ("decoder.onnx", "decoder-onnxruntime.onnx")]
    inputs = sessions[0].get_inputs()
    past_names, hidden = [i.name for i in inputs[2:]], inputs[0].shape[-1]
    rng = np.random.default_rng(0)
    empty = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in inputs[2:]}
    pasts, steps = [empty, dict(empty)], [(np.arange(10), 10), (np.array([23]), 1), (np.array([24]), 1), (np.array([40]), 1)]
    cached = 0
    for positions, new in steps:
        feeds = {"inputs_embeds": rng.standard_normal((1, new, hidden)).astype(np.float32), "position_ids": positions[None]}
        lengths = [{}, length_feeds(cached, new)]  # the fused graph concatenates given caches of the valid length
        outputs = [session.run(None, {**feeds, **past, **extra}) for session, past, extra in zip(sessions, pasts, lengths)]
        cached += new
        standard, fused = outputs[0][0], outputs[1][0]
        assert np.abs(fused - standard).max() <= LOGIT_TOLERANCE * np.abs(standard).max(), positions
        for past, values in zip(pasts, outputs):
            past.update(zip(past_names, values[1:]))


def test_decoder_ops_onnxruntime_is_refused_where_it_does_not_apply(tmp_path):
    from edgecompress import EdgeCompressError, export_bundle

    with pytest.raises(EdgeCompressError, match="--method fastv"):
        export_bundle("tiny-llava-random", method="fastv", decoder_ops="onnxruntime", out=tmp_path / "fastv")
    with pytest.raises(EdgeCompressError, match="--vision-only"):
        export_bundle("tiny-llava-random", vision_only=True, decoder_ops="onnxruntime", out=tmp_path / "vision")
    with pytest.raises(EdgeCompressError, match="unknown --decoder-ops"):
        export_bundle("tiny-llava-random", decoder_ops="tensorrt", out=tmp_path / "other")


def test_cpp_runtime_answers_the_fused_bundle_token_for_token_as_python(fused_bundle, images, tmp_path):
    """The C++ runtime reads onnxruntime_graphs too (it runs the fused graph, as Python does)."""
    from tests.cpp_build import build_cpp
    from tests.test_cpp_runtime import assert_same_answers

    build = build_cpp()
    paths = []
    for name, image in images.items():
        image.save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    assert_same_answers(build, fused_bundle, paths, tmp_path)


def test_the_fused_graphs_own_tensors_are_a_hashed_data_file_of_the_bundle(fused_bundle, tmp_path):
    """The packed Q/K/V weights and rotary tables are the only tensors the fused graph adds: they
    lie in decoder-onnxruntime.onnx.data (a full-size model's would not fit a 2 GB protobuf), the
    standard graph's weights stay in decoder.onnx.data, and open_bundle checks the new file's
    sha256 like every other file's."""
    import shutil

    from edgecompress import EdgeCompressError
    from edgecompress_runtime.bundle import open_bundle, sha256_file

    model = onnx.load(str(fused_bundle / "decoder-onnxruntime.onnx"), load_external_data=False)
    location = {init.name: {e.key: e.value for e in init.external_data}.get("location") for init in model.graph.initializer}
    assert {name for name, where in location.items() if where == "decoder-onnxruntime.onnx.data"} == {
        *(f"layer{i}_qkv_weight" for i in range(4)), "gqa_cos_cache", "gqa_sin_cache"}
    assert set(location.values()) <= {"decoder-onnxruntime.onnx.data", "decoder.onnx.data", None}
    manifest = open_bundle(fused_bundle)
    assert manifest.files["decoder-onnxruntime.onnx.data"].sha256 == sha256_file(fused_bundle / "decoder-onnxruntime.onnx.data")

    copy = tmp_path / "bundle"
    shutil.copytree(fused_bundle, copy)
    data = copy / "decoder-onnxruntime.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(EdgeCompressError, match="decoder-onnxruntime.onnx.data does not match its sha256"):
        open_bundle(copy)
