"""The memory plan with int8/int4 weights (issue #18): the bytes of the quantized linear layers,
what fits where, and `edgecompress plan --weights/--group-size`."""

import pytest

from edgecompress.architecture import Architecture
from edgecompress.engine.memory import GIB, compare_weight_formats, image_tokens_at, plan_memory
from edgecompress.engine.profiles import load_profile
from edgecompress.errors import EdgeCompressError
from edgecompress.recipes import resolve_model
from tests.conftest import run_cli

# LLaVA-1.5-7B's language model (Vicuna-7B), written out here so that the plan is checked
# against numbers that do not come from edgecompress.architecture.
HIDDEN, INTERMEDIATE, LAYERS, VOCAB = 4096, 11008, 32, 32064
LINEAR_PER_LAYER = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE  # q, k, v, o (32 kv heads) + gate, up, down
REST = VOCAB * HIDDEN + LAYERS * 2 * HIDDEN + HIDDEN  # lm_head, two RMS norms a layer, the final norm


def scales_per_layer(group: int) -> int:
    """One scale per group of input features per output feature; a ragged last group has its own."""
    groups = lambda inputs: -(-inputs // group)  # noqa: E731
    return 4 * HIDDEN * groups(HIDDEN) + 2 * INTERMEDIATE * groups(HIDDEN) + HIDDEN * groups(INTERMEDIATE)


@pytest.fixture(scope="module")
def config():
    return resolve_model("llava-1.5-7b").recipe.config


@pytest.fixture(scope="module")
def nano():
    return load_profile("jetson-orin-nano-8gb")


def test_the_language_model_splits_into_linear_weights_and_the_rest(config):
    text = Architecture.from_config(config).text
    assert text.linear_parameters() == LAYERS * LINEAR_PER_LAYER == 6_476_005_376
    assert Architecture.from_config(config).parameter_counts()["decoder"] - text.linear_parameters() == REST
    assert [name for name, _, _ in text.linear_shapes()] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_grouped_query_attention_shrinks_k_and_v_only():
    config = resolve_model("llava-1.5-7b").recipe.config
    gqa = {**config, "text_config": {**config["text_config"], "num_key_value_heads": 8}}
    shapes = {name: (i, o) for name, i, o in Architecture.from_config(gqa).text.linear_shapes()}
    assert shapes["q_proj"] == shapes["o_proj"][::-1] == (HIDDEN, HIDDEN)
    assert shapes["k_proj"] == shapes["v_proj"] == (HIDDEN, 8 * 128)


@pytest.mark.parametrize("weights, bits", [("int4", 4), ("int8", 8)])
def test_quantized_linear_bytes_are_exact(config, nano, weights, bits):
    plan = plan_memory(config, 115, nano, "fp16", weights=weights)
    expected = LAYERS * (LINEAR_PER_LAYER * bits // 8 + scales_per_layer(128) * 2)  # fp16 scales, no zero points
    assert plan.linear_bytes == expected
    assert plan.rows["weights (decoder)"] == expected + REST * 2  # lm_head and norms stay fp16
    fp16 = plan_memory(config, 115, nano, "fp16")
    # Weight-only: everything but the decoder's weights is the same bytes.
    assert {k: v for k, v in plan.rows.items() if k != "weights (decoder)"} == \
        {k: v for k, v in fp16.rows.items() if k != "weights (decoder)"}


def test_scales_follow_the_precision_and_a_ragged_last_group(config, nano):
    # fp32: 4-byte scales. Group 512: down_proj's 11008 inputs are 21.5 groups, stored as 22.
    plan = plan_memory(config, 115, nano, "fp32", weights="int4", group_size=512)
    assert HIDDEN % 512 == 0 and INTERMEDIATE % 512 != 0
    assert plan.linear_bytes == LAYERS * (LINEAR_PER_LAYER // 2 + scales_per_layer(512) * 4)
    assert plan.rows["weights (decoder)"] == plan.linear_bytes + REST * 4


def test_float_weights_are_the_plan_of_today(config, nano):
    default = plan_memory(config, 115, nano, "fp16")
    explicit = plan_memory(config, 115, nano, "fp16", weights="fp16")
    assert default.rows == explicit.rows and default.rows["weights (decoder)"] == (LAYERS * LINEAR_PER_LAYER + REST) * 2
    assert "symmetric" not in default.table()
    assert default.to_dict()["weights"] == "fp16" and default.to_dict()["group_size"] is None


def test_llava_7b_on_orin_nano_at_20_percent_fits_with_int4_only(config, nano):
    k = image_tokens_at(config, "20%")
    assert k == 115
    fp16, int8, int4 = compare_weight_formats(config, k, nano)
    assert [p.weight_format.name for p in (fp16, int8, int4)] == ["fp16", "int8", "int4"]
    assert (fp16.fits, int8.fits, int4.fits) == (False, False, True)
    assert fp16.total > int8.total > int4.total
    # The fp16 plan points at the weight format that fits (int8 does not: int4 is named).
    assert any(s.startswith("int4 weights (--weights int4, group 128)") for s in fp16.suggestions)
    assert int4.to_dict()["weights"] == "int4" and int4.to_dict()["group_size"] == 128


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": "int3"}, "unknown weight format --weights 'int3'"),
    ({"weights": "int4", "group_size": 100}, "--group-size 100 is not a power of two of at least 16"),
    ({"weights": "int4", "group_size": 8}, "--group-size 8 is not a power of two of at least 16"),
    ({"weights": "int4", "group_size": 0}, "--group-size 0 is not a power of two of at least 16"),
    ({"weights": "int4", "group_size": -128}, "--group-size -128 is not a power of two of at least 16"),
    ({"weights": "fp32"}, "--weights fp32 with precision fp16"),
])
def test_bad_weight_formats_are_refused(config, nano, kwargs, message):
    with pytest.raises(EdgeCompressError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_memory(config, 115, nano, "fp16", **kwargs)


@pytest.mark.parametrize("group", [16, 32, 64, 256, 16384])  # larger than every input: one group a row
def test_any_power_of_two_from_16_is_a_group_size(config, nano, group):
    plan = plan_memory(config, 115, nano, "fp16", weights="int8", group_size=group)
    assert plan.linear_bytes == LAYERS * (LINEAR_PER_LAYER + scales_per_layer(group) * 2)


def _comparison_rows(stdout: str) -> dict[str, str]:
    section = stdout.split("weight formats on jetson-orin-nano-8gb (K = 115, 8.00 GiB)\n")[1]
    return {line.split("  ")[1].strip(): line for line in section.splitlines()[1:4]}


def test_cli_plan_with_int4_fits_and_compares_the_formats(config, nano):
    result = run_cli("plan", "llava", "--budget", "20%", "--weights", "int4", "--profile", "jetson-orin-nano-8gb")
    assert result.returncode == 0, result.stdout + result.stderr
    plans = dict(zip(("fp16", "int8, group 128", "int4, group 128"), compare_weight_formats(config, 115, nano)))
    int4 = plans["int4, group 128"]
    assert "weights: int4, group 128, symmetric, in the language model's linear layers" in result.stdout
    assert f"linear layers: 6.48 B params -> {int4.linear_bytes / GIB:.2f} GiB (fp16 would be 12.06 GiB)" in result.stdout
    assert f"{int4.total / GIB:.2f} GiB of 8.00 GiB: fits" in result.stdout
    rows = _comparison_rows(result.stdout)
    assert list(rows) == list(plans)
    for label, plan in plans.items():
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        assert f"{plan.linear_bytes / GIB:.2f} GiB" in rows[label] and f"{plan.total / GIB:.2f} GiB  {verdict}" in rows[label]
    assert rows["int4, group 128"].endswith("fits") and rows["fp16"].endswith("DOES NOT FIT")


def test_cli_plan_exits_1_when_the_weights_do_not_fit():
    result = run_cli("plan", "llava", "--budget", "20%", "--weights", "int8", "--profile", "jetson-orin-nano-8gb")
    assert result.returncode == 1 and "DOES NOT FIT" in result.stdout
    assert "- int4 weights (--weights int4, group 128)" in result.stdout  # the format that does fit
    assert "weight formats on jetson-orin-nano-8gb" in result.stdout
    plain = run_cli("plan", "llava", "--budget", "20%", "--profile", "jetson-orin-nano-8gb")
    assert plain.returncode == 1 and "weight formats" not in plain.stdout and "symmetric" not in plain.stdout
    assert "- int4 weights (--weights int4, group 128)" in plain.stdout


@pytest.mark.parametrize("args, message", [
    (["--weights", "int3"], "error: unknown weight format --weights 'int3'"),
    (["--weights", "int4", "--group-size", "100"], "error: --group-size 100 is not a power of two of at least 16"),
    (["--group-size", "64"], "error: --group-size applies to int8 or int4 weights"),
])
def test_cli_plan_refuses_bad_weight_options(args, message):
    result = run_cli("plan", "llava", "--profile", "jetson-orin-nano-8gb", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("error:") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
