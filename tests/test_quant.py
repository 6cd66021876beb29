"""Weight-only INT8/INT4 quantization: the arithmetic, the graph both runtimes take, the export.

Tolerances: RTN's per-weight error is at most half a step (scale / 2, exact arithmetic, 1e-9
slack for float64 round-off); GPTQ is checked by what it is for (a smaller layer-output error
than RTN on correlated inputs, where RTN's independent rounding is worst), not against numbers
copied from elsewhere. The exported bundle's logits are held to the export's own cosine bounds
(edgecompress.compiler.LOGIT_COSINE), measured through the runtime a user runs."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest

from edgecompress.quantize import dequantize, quantize_gptq, quantize_rtn
from tests.conftest import run_cli


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [16, 32])
def test_rtn_is_within_half_a_step_and_in_range(bits, group):
    w = np.random.default_rng(bits + group).normal(size=(80, 24)) * 0.1  # 80 rows: a ragged last block at 32
    codes, scales = quantize_rtn(w, bits, group)
    assert codes.dtype == np.int8 and scales.shape == (-(-80 // group), 24)
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    step = np.repeat(scales, group, axis=0)[:80]
    assert np.all(np.abs(w - dequantize(codes, scales, group)) <= step / 2 + 1e-9)
    # symmetric: the block's largest |w| lands exactly on the largest code
    assert np.abs(codes).max() == 2 ** (bits - 1) - 1


def test_gptq_beats_rtn_on_correlated_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 64)) @ rng.normal(size=(64, 64)) * 0.3 + rng.normal(size=(1, 64))
    w = rng.normal(size=(64, 96)) * 0.05
    for bits in (4, 8):
        rtn = dequantize(*quantize_rtn(w, bits, 32), 32)
        gptq = dequantize(*quantize_gptq(w, x.T @ x, bits, 32), 32)
        error = lambda d: np.linalg.norm(x @ (w - d)) / np.linalg.norm(x @ w)  # noqa: E731
        assert error(gptq) < 0.85 * error(rtn), (bits, error(gptq), error(rtn))


def test_int4_tensor_packs_as_onnx_reads_it():
    from onnx import numpy_helper

    from edgecompress.quantize import _int4_tensor

    codes = np.random.default_rng(1).integers(-8, 8, size=(7, 5)).astype(np.int8)  # odd count: a half-filled last byte
    back = numpy_helper.to_array(_int4_tensor("w", codes))
    assert back.shape == (7, 5) and np.array_equal(back.astype(np.int8), codes)


@pytest.mark.parametrize("bits", [4, 8])
def test_onnx_runtime_dequantizes_the_graph_as_the_arithmetic_says(bits, tmp_path):
    """The layout of codes and block scales in the rewritten graph (axis 0, blocks of G input
    rows, a ragged last block) read back by ONNX Runtime: x @ W_dequantized, to fp32 round-off."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgecompress.quantize import Quantization, rewrite, save
    from edgecompress_runtime.backends import weight_only_config

    rng = np.random.default_rng(bits)
    w = (rng.normal(size=(80, 24)) * 0.1).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 80])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 24])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    codes, scales = quantize_rtn(w, bits, 32)
    rewrite(model, {"w": (codes, scales)}, Quantization(f"int{bits}", 32, "rtn"), np.float32)
    save(model, tmp_path / "g.onnx")
    x = rng.normal(size=(3, 80)).astype(np.float32)
    for fused, config in ((True, [("session.qdq_matmulnbits_accuracy_level", "0")]), (False, weight_only_config(f"int{bits}"))):
        options = ort.SessionOptions()  # fused (level 0) and as the runtime runs it; its default quantizes x
        for key, value in config:
            options.add_session_config_entry(key, value)
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        y = ort.InferenceSession(str(tmp_path / "g.onnx"), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
        assert (ops == ["MatMulNBits"]) == (fused or bits == 4), ops
        np.testing.assert_allclose(y, x @ dequantize(codes, scales, 32), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_checkpoint):
    """tiny-llava-random at 20% (HiRED), fp32, with int4 (RTN) and int8 (GPTQ) weights, group 32."""
    from edgecompress import export_bundle

    root = tmp_path_factory.mktemp("quant")
    return {
        "int4": export_bundle("tiny-llava-random", budget="20%", precision="fp32", weights="int4", group_size=32,
                              quantization="rtn", out=root / "int4"),
        "int8": export_bundle("tiny-llava-random", budget="20%", precision="fp32", weights="int8", group_size=32,
                              out=root / "int8"),
    }


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_quantized_bundle_graph_manifest_and_fusion(quantized, fmt):
    import onnxruntime as ort

    bundle = quantized[fmt]
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = manifest["weights"]
    layers = manifest["language_model"]["num_layers"]
    assert (record["format"], record["group_size"], record["symmetric"]) == (fmt, 32, True)
    assert record["layers"] == 7 * layers  # q, k, v, o, gate, up, down in every layer
    assert record["algorithm"] == ("rtn" if fmt == "int4" else "gptq")
    assert (record["calibration"] is None) == (fmt == "int4")
    assert record["logit_check"]["cosine_min"] >= record["logit_check"]["threshold"]
    model = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["DequantizeLinear"] == 7 * layers and ops["Gemm"] == 1  # the LM head stays in fp32
    assert manifest["graphs"]["decoder"]["verify"]["findings"] == []
    # ONNX Runtime fuses every DequantizeLinear + MatMul pair into its 4/8-bit MatMulNBits kernel
    options = ort.SessionOptions()  # ONNX Runtime can fuse both formats (the runtime fuses int4 only; see backends)
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    options.optimized_model_filepath = str(bundle.parent / f"{fmt}-optimized.onnx")
    ort.InferenceSession(str(bundle / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node)
    assert fused["MatMulNBits"] == 7 * layers and fused["DequantizeLinear"] == 0
    # the weights on disk: codes at bits/8 bytes a weight and the scales, instead of 4 bytes a weight
    files = manifest["files"]
    size = files["decoder.onnx.data"]["bytes"]
    quant_bytes = record["parameters"] * record["bits"] // 8 + record["scales"] * 4
    float_bytes = record["parameters"] * 4
    assert size < float_bytes and size >= quant_bytes


def test_quantized_bundle_runs_close_to_the_float_one(quantized, bundles, images):
    from edgecompress.compiler import LOGIT_COSINE
    from edgecompress_runtime import Pipeline

    reference = Pipeline.load(bundles["hired-fp32"])
    for fmt, bundle in quantized.items():
        pipe = Pipeline.load(bundle)
        for image in images.values():
            a = reference.generate_full(image, "What is in the picture?", max_new_tokens=2)
            b = pipe.generate_full(image, "What is in the picture?", max_new_tokens=2)
            assert a.kept_indices.tolist() == b.kept_indices.tolist()  # the vision graph is not quantized
            cos = float(a.prefill_logits @ b.prefill_logits / np.linalg.norm(a.prefill_logits) / np.linalg.norm(b.prefill_logits))
            assert cos >= LOGIT_COSINE[fmt], (fmt, cos)


def test_verifier_allows_only_weight_dequantization_into_matmul():
    from onnx import TensorProto, helper, numpy_helper

    from edgecompress.lowering.verifier import verify_graph

    codes = numpy_helper.from_array(np.zeros((4, 4), np.int8), "w.q")
    scale = numpy_helper.from_array(np.ones((1, 4), np.float32), "w.scale")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def graph(*nodes):
        return helper.make_model(helper.make_graph(list(nodes), "g", [x], [y], [codes, scale]),
                                 opset_imports=[helper.make_opsetid("", 21)])

    dq = helper.make_node("DequantizeLinear", ["w.q", "w.scale"], ["w"], axis=0, block_size=4)
    good = verify_graph(graph(dq, helper.make_node("MatMul", ["x", "w"], ["y"])))
    assert [f for f in good.findings if f.check == "weight-quantization"] == []
    into_add = verify_graph(graph(dq, helper.make_node("Add", ["x", "w"], ["y"])))
    assert any("other than a MatMul's weight input" in f.message for f in into_add.findings)
    activation = verify_graph(graph(
        helper.make_node("QuantizeLinear", ["x", "w.scale"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "w.scale"], ["xd"]),
        helper.make_node("MatMul", ["xd", "x"], ["y"])))
    messages = " ".join(f.message for f in activation.findings)
    assert "quantizes an activation" in messages and "computed at run time" in messages


def test_tensorrt_rtx_builds_an_int4_bundle(quantized, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
    import shutil

    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    bundle = tmp_path / "int4"
    shutil.copytree(quantized["int4"], bundle)
    record = build_engines(bundle, load_profile("rtx-4090"), force=True)
    assert set(record["graphs"]) == {"vision", "decoder"}
    assert all((bundle / g["file"]).stat().st_size > 0 for g in record["graphs"].values())


@pytest.mark.parametrize("args, message", [
    (("--weights", "int3"), "unknown weight format --weights 'int3'"),
    (("--weights", "int4", "--group-size", "48"), "--group-size 48 is not a power of two of at least 16"),
    (("--weights", "int4", "--method", "fastv"), "not supported yet"),
    (("--weights", "int4", "--quantization", "awq"), "unknown quantization algorithm 'awq'"),
    (("--group-size", "32",), "apply to --weights int8 or int4"),
    (("--weights", "fp16", "--precision", "fp32"), "float weights are the precision"),
    (("--weights", "int4", "--vision-only"), "--vision-only exports none"),
])
def test_export_refuses_bad_weight_options(args, message, tmp_path):
    result = run_cli("export", "tiny-llava-random", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_inspect_and_plan_of_a_quantized_bundle(quantized):
    result = run_cli("inspect", str(quantized["int4"]), "--profile", "rtx-4090")
    assert result.returncode == 0, result.stderr
    assert "weights    int4 (group 32, symmetric, rtn) in 28 linear layers" in result.stdout
    assert "weights: int4, group 32" in result.stdout  # the memory plan counts the quantized weights


def test_compare_holds_a_quantized_bundle_to_its_weight_format_bound(quantized, bundles, tmp_path):
    """int8 against the float bundle: the vision graph is the same (embeddings identical, kept
    tokens identical), the logits within int8's bound, greedy tokens reported, not held."""
    import shutil

    reference = shutil.copytree(bundles["hired-fp32"], tmp_path / "fp32")  # compare writes its report there
    result = run_cli("compare", str(reference), str(quantized["int8"]), "--no-margins", "--images", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rel 0.005" in result.stdout and "reported (quantized weights)" in result.stdout


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_the_cpp_runtime_answers_as_python(quantized, fmt, tmp_path):
    """The C++ runtime runs a quantized graph as the Python runtime does (int4 fused at accuracy
    level 0, int8 unfused): the same tokens (exact: same graphs, same session settings)."""
    from tests.cpp_build import build_cpp
    from tests.cpp_parity import assert_same_answers, write_photos

    assert_same_answers(build_cpp(), quantized[fmt], write_photos(tmp_path / "images"), tmp_path)
