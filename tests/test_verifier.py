"""The verifier rejects what TensorRT or a static budget cannot take. Graphs are built by hand."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgecompress.graph.spec import GraphSpec, TensorSpec
from edgecompress.lowering.verifier import verify_graph


def scores_input(dims=(1, 576)):
    return helper.make_tensor_value_info("scores", TensorProto.FLOAT, list(dims))


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def constant_topk_model(dims=(1, 576)):
    k = numpy_helper.from_array(np.array([115], dtype=np.int64), "k")
    node = helper.make_node("TopK", ["scores", "k"], ["values", "indices"], name="select")
    return make_model(
        [node],
        [scores_input(dims)],
        [
            helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 115]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 115]),
        ],
        [k],
    )


def checks_failed(report):
    return {f.check for f in report.findings}


def test_constant_k_topk_passes():
    report = verify_graph(constant_topk_model())
    assert report.ok, report.findings
    assert report.op_census["TopK"] == 1


def test_nonzero_is_rejected_with_the_node_named():
    mask = helper.make_node("Greater", ["scores", "threshold"], ["mask"], name="above_mean")
    nonzero = helper.make_node("NonZero", ["mask"], ["kept"], name="mask_to_indices")
    threshold = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "threshold")
    model = make_model(
        [mask, nonzero],
        [scores_input()],
        [helper.make_tensor_value_info("kept", TensorProto.INT64, [2, None])],
        [threshold],
    )
    report = verify_graph(model)
    assert not report.ok
    messages = [f.message for f in report.findings if f.check == "no-data-dependent-ops"]
    assert len(messages) == 1 and "mask_to_indices" in messages[0] and "constant-K TopK" in messages[0]


def test_topk_with_a_computed_k_is_rejected():
    # K = round(0.2 * number of tokens), computed in the graph: what a naive export produces.
    nodes = [
        helper.make_node("Shape", ["scores"], ["shape"], start=1, end=2, name="token_count"),
        helper.make_node("Cast", ["shape"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["count_f", "rate"], ["k_f"]),
        helper.make_node("Cast", ["k_f"], ["k"], to=TensorProto.INT64, name="k_from_rate"),
        helper.make_node("TopK", ["scores", "k"], ["values", "indices"], name="select"),
    ]
    rate = numpy_helper.from_array(np.array([0.2], dtype=np.float32), "rate")
    model = make_model(
        nodes,
        [scores_input()],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, None])],
        [rate],
    )
    report = verify_graph(model)
    findings = [f.message for f in report.findings if f.check == "topk-constant-k"]
    assert len(findings) == 1
    assert "'select'" in findings[0] and "k_from_rate" in findings[0]


def test_undeclared_dynamic_axis_is_rejected_and_a_declared_one_accepted():
    model = constant_topk_model(dims=("batch", 576))
    report = verify_graph(model)
    assert "static-shapes" in checks_failed(report)
    assert any("'scores' axis 0 is 'batch'" in f.message for f in report.findings)

    spec = GraphSpec(
        name="select",
        inputs=(TensorSpec("scores", ("batch", 576), "float32"),),
        outputs=(TensorSpec("values", (1, 115), "float32"), TensorSpec("indices", (1, 115), "int64")),
        dynamic_axes={"scores": {0: "batch"}},
    )
    assert "static-shapes" not in checks_failed(verify_graph(model, spec))


def test_op_outside_tensorrt_support_is_rejected():
    node = helper.make_node("FancyPrune", ["scores"], ["out"], domain="com.example", name="custom")
    model = make_model([node], [scores_input()], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 576])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    report = verify_graph(model)
    assert any(f.check == "tensorrt-ops" and "com.example::FancyPrune" in f.message for f in report.findings)


def test_outputs_that_differ_from_the_declaration_are_rejected():
    spec = GraphSpec(
        name="select",
        inputs=(TensorSpec("scores", (1, 576), "float32"),),
        outputs=(TensorSpec("values", (1, 115), "float32"), TensorSpec("indices", (1, 100), "int64")),
    )
    report = verify_graph(constant_topk_model(), spec)
    assert any(f.check == "declared-io" and "indices" in f.message for f in report.findings)
