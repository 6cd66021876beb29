"""Qwen2.5-VL's facts without torch (issue #20): parameter counts against transformers' own model,
the fixed grid's P patches and N image tokens, the memory plan and FLOPs built on them, and the
recipes in `plan` and `list`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecompress.architecture import Architecture
from edgecompress.engine.memory import GIB, plan_memory
from edgecompress.engine.profiles import load_profile
from edgecompress.errors import EdgeCompressError
from edgecompress.recipes import load_recipe_file, resolve_model
from tests.conftest import run_cli
from tests.test_architecture import run_without_torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = [path for path in sorted(REPO.glob("export/*.toml")) if load_recipe_file(path).family == "qwen2.5-vl"]

# A small Qwen2.5-VL in the layout of a config.json saved before transformers 5: the language
# model's keys at the top level. Tied embeddings, one full-attention block, a 224 px grid.
SMALL = {
    "model_type": "qwen2_5_vl", "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 512,
    "rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 2]}, "tie_word_embeddings": True,
    "vision_config": {"depth": 3, "hidden_size": 32, "intermediate_size": 40, "num_heads": 2, "out_hidden_size": 48,
                      "fullatt_block_indexes": [1], "window_size": 112, "image_size": 224},
}


def meta_device_counts(config: dict) -> dict[str, int]:
    """The reference: Qwen2.5-VL built by transformers on the meta device, counted module by module.
    The vision graph holds the whole tower (patch embedding, blocks, merger); the decoder graph the
    language model without its embedding table, and the lm_head (the tied one too: the graph holds
    it as its own weight)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config))
    lm = model.model.language_model

    def count(*modules) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    return {
        "vision": count(model.model.visual),
        "decoder": count(lm) - count(lm.embed_tokens) + count(model.lm_head),
        "embeddings": count(lm.embed_tokens),
    }


def flat(config: dict) -> dict:
    """The same config with the language model's keys at the top level, as Qwen's published
    config.json holds them."""
    return {**{k: v for k, v in config.items() if k != "text_config"}, **config["text_config"],
            "model_type": config["model_type"]}


def test_both_full_size_recipes_are_found():
    assert {load_recipe_file(path).name for path in RECIPES} >= {"qwen2.5-vl-3b", "qwen2.5-vl-7b"}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_parameter_counts_equal_transformers(recipe):
    config = load_recipe_file(recipe).config
    counts = Architecture.from_config(config).parameter_counts()
    assert counts == meta_device_counts(config)
    # A config.json with the text keys at the top level reads the same.
    assert Architecture.from_config(flat(config)) == Architecture.from_config(config)


def test_parameter_counts_of_a_small_flat_config():
    assert Architecture.from_config(SMALL).parameter_counts() == meta_device_counts(SMALL)


def test_the_published_sizes():
    """Qwen's model cards: 3B and 7B are 3.75 B and 8.29 B parameters, the 3B's embeddings tied
    (counted once here) and the 7B's not."""
    for name, tied, total in (("qwen2.5-vl-3b", True, 3.75e9), ("qwen2.5-vl-7b", False, 8.29e9)):
        config = resolve_model(name).recipe.config
        counts = Architecture.from_config(config).parameter_counts()
        assert config["tie_word_embeddings"] is tied
        unique = sum(counts.values()) - (counts["embeddings"] if tied else 0)
        assert unique == pytest.approx(total, rel=0.005)


@pytest.mark.parametrize("size, p, n", [(448, 1024, 256), (672, 2304, 576)])
def test_the_fixed_grid_gives_p_patches_and_n_tokens(size, p, n):
    config = resolve_model("qwen2.5-vl-3b").recipe.config
    config = {**config, "vision_config": {**config["vision_config"], "image_size": size}}
    facts = Architecture.from_config(config)
    assert (facts.vision.tower_tokens, facts.vision.patches, facts.vision.side) == (p, n, size // 28)
    assert (facts.vision_images, facts.unpruned_image_tokens, facts.used_vision_layers) == (1, n, 32)


def test_the_image_size_defaults_to_448():
    config = resolve_model("qwen2.5-vl-7b").recipe.config
    without = {**config, "vision_config": {k: v for k, v in config["vision_config"].items() if k != "image_size"}}
    assert Architecture.from_config(without).vision.image_size == 448


@pytest.mark.parametrize("size", [450, 0, 56, "448"])
def test_an_image_size_that_cuts_a_window_is_refused(size):
    config = resolve_model("qwen2.5-vl-3b").recipe.config
    config = {**config, "vision_config": {**config["vision_config"], "image_size": size}}
    with pytest.raises(EdgeCompressError, match=r"vision_config.image_size = .* is not a positive multiple of 112: .*"
                                                r"attention windows of 112 x 112 pixels .* every window must be whole") as err:
        Architecture.from_config(config)
    assert "448" in err.value.hint


def test_the_language_model_of_the_3b():
    text = Architecture.from_config(resolve_model("qwen2.5-vl-3b").recipe.config).text
    assert (text.layers, text.heads, text.kv_heads, text.head_dim, text.max_positions) == (36, 16, 2, 128, 128000)
    assert {name: (i, o) for name, i, o in text.linear_shapes()} == {
        "q_proj": (2048, 2048), "k_proj": (2048, 256), "v_proj": (2048, 256), "o_proj": (2048, 2048),
        "gate_proj": (2048, 11008), "up_proj": (2048, 11008), "down_proj": (11008, 2048)}
    assert text.biases == ("q_proj", "k_proj", "v_proj")  # Qwen2: o_proj and the MLP have none


def test_vision_flops_of_the_small_config():
    """Written out for SMALL (P = 256 patches, 4 windows of 64, one full-attention block of 3, N = 64)."""
    from edgecompress.flops import vision_graph_flops

    d, ff, p, k = 32, 40, 256, 10
    patch_embed = 2 * p * (3 * 2 * 14 * 14) * d
    dense = 3 * 2 * p * (4 * d * d + 3 * d * ff)
    attention = 4 * p * d * (p + 2 * 64)
    merger = 2 * 64 * (4 * d * 4 * d + 4 * d * 48)  # on all N = 64 tokens: the graph merges, then selects
    assert vision_graph_flops(SMALL, k) == patch_embed + dense + attention + merger
    assert vision_graph_flops(SMALL, 2 * k) == vision_graph_flops(SMALL, k)


# The 3B's language model, written out so that the plan is checked against numbers that do not
# come from edgecompress.architecture.
HIDDEN, INTERMEDIATE, LAYERS, KV, VOCAB = 2048, 11008, 36, 2 * 128, 151936
SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN),
          (HIDDEN, INTERMEDIATE), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]  # (inputs, outputs)


def int4_bytes(inputs: int, outputs: int) -> int:
    return inputs * outputs // 2 + outputs * -(-inputs // 128) * 2  # two weights a byte, an fp16 scale a group


def table_rows(text: str) -> dict[str, str]:
    return dict(re.findall(r"^  (\S.*?)\s+(\d+\.\d\d) GiB$", text, flags=re.M))


@pytest.fixture(scope="module")
def plan_3b():
    return run_cli("plan", "qwen2.5-vl-3b", "--budget", "20%", "--profile", "jetson-orin-nano-8gb", "--weights", "int4",
                   "--method", "random")  # K = floor(N x rate), as for every vision-stage method here


def test_the_3b_plan_on_orin_nano_comes_from_the_parameter_counts(plan_3b):
    result = plan_3b
    config = resolve_model("qwen2.5-vl-3b").recipe.config
    counts = meta_device_counts(config)
    k = 51  # floor(256 x 20%)
    linear = LAYERS * sum(i * o for i, o in SHAPES)
    decoder = (counts["decoder"] - linear) * 2 + LAYERS * sum(int4_bytes(i, o) for i, o in SHAPES)
    kv = 2 * KV * LAYERS * (k + 512 + 256) * 2
    # The vision tower's activations at P = 1024 patches (no class token) outweigh the prefill's.
    p, h, ff = 1024, 1280, 3420
    activations = p * (4 * h + 2 * ff) * 2 + 16 * p * p * 4
    expected = {"weights (vision)": counts["vision"] * 2, "weights (decoder)": decoder,
                "embedding table": counts["embeddings"] * 2, "KV cache": kv, "activations (est.)": activations,
                "builder workspace": 1 * GIB, "reserved": 1.5 * GIB}
    rows = table_rows(result.stdout)
    assert rows == {name: f"{value / GIB:.2f}" for name, value in expected.items()}
    total = sum(expected.values())
    fits = total <= 8 * GIB
    assert f"K = {k}, context {k + 512 + 256} tokens" in result.stdout
    assert re.search(r"^  total +(\d+\.\d\d) GiB of 8\.00 GiB: (.*)$", result.stdout, flags=re.M).groups() == (
        f"{total / GIB:.2f}", "fits" if fits else "DOES NOT FIT")
    assert result.returncode == (0 if fits else 1), result.stderr
    # The library's plan, to the byte.
    plan = plan_memory(config, k, load_profile("jetson-orin-nano-8gb"), "fp16", weights="int4")
    assert plan.rows == expected


def test_the_3b_plan_names_the_weight_formats(plan_3b):
    assert "weight formats on jetson-orin-nano-8gb (K = 51" in plan_3b.stdout
    assert re.search(r"int4, group 128 +\d+\.\d\d GiB +\d+\.\d\d GiB", plan_3b.stdout)


def test_the_7b_plan_runs_without_torch():
    result = run_without_torch("plan", "qwen2.5-vl-7b", "--budget", "20%", "--profile", "jetson-orin-nano-8gb",
                               "--weights", "int4", "--method", "random")
    assert result.returncode in (0, 1), result.stderr  # 1: it does not fit, which the table says
    assert "memory plan on jetson-orin-nano-8gb (fp16, K = 51" in result.stdout
    counts = Architecture.from_config(resolve_model("qwen2.5-vl-7b").recipe.config).parameter_counts()
    assert table_rows(result.stdout)["weights (vision)"] == f"{counts['vision'] * 2 / GIB:.2f}"


def test_the_plan_with_the_recipes_default_method():
    """The 3B at 20% (the recipe's default method, dart) fits an Orin Nano with int4 weights."""
    result = run_cli("plan", "qwen2.5-vl-3b", "--budget", "20%", "--profile", "jetson-orin-nano-8gb", "--weights", "int4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory plan on jetson-orin-nano-8gb" in result.stdout and "K = 51" in result.stdout


def test_list_models_shows_the_qwen_recipes():
    result = run_without_torch("list", "models")
    assert result.returncode == 0, result.stderr
    for name, source in (("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct"), ("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct")):
        line = next(line for line in result.stdout.splitlines() if line.split() and line.split()[0] == name)
        assert source in line and "dart 20% fp16" in line


def test_a_recipe_whose_two_image_sizes_differ_is_refused(tmp_path):
    from edgecompress.errors import EdgeCompressError
    from edgecompress.recipes import load_recipe_file

    text = (Path(__file__).resolve().parents[1] / "export" / "tiny-qwen2.5-vl.toml").read_text()
    recipe = tmp_path / "mismatch.toml"
    recipe.write_text(text.replace("image_size = 448\nresample", "image_size = 560\nresample"))
    with pytest.raises(EdgeCompressError, match=r"preprocess.image_size \(560\) and config.vision_config.image_size \(448\)"):
        load_recipe_file(recipe)
