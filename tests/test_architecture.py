"""Architecture facts without torch: parameter counts against transformers' own models, and the
deploy-side commands (plan, build, inspect, list) with torch and transformers unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.architecture import Architecture
from edgecompress.recipes import load_recipe_file

REPO = Path(__file__).resolve().parents[1]
RECIPES = [path for path in sorted(REPO.glob("export/*.toml")) + sorted(REPO.glob("benchmarks/recipes/*.toml"))
           if load_recipe_file(path).family in ("llava", "llava-next")]  # Qwen2.5-VL's: test_qwen_architecture.py


def meta_device_counts(config: dict) -> dict[str, int]:
    """The reference: the model built by transformers on the meta device, its parameters counted
    module by module (what the vision graph, the decoder graph and the embedding table hold)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    tower, lm = model.model.vision_tower, model.model.language_model
    layer = config.vision_feature_layer
    used = layer if layer >= 0 else config.vision_config.num_hidden_layers + 1 + layer

    def count(*modules) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    return {
        "vision": count(tower.embeddings, tower.pre_layrnorm, *tower.encoder.layers[:used], model.model.multi_modal_projector),
        "decoder": count(lm) - count(lm.embed_tokens) + count(model.lm_head),
        "embeddings": count(lm.embed_tokens),
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_parameter_counts_equal_transformers(recipe):
    config = load_recipe_file(recipe).config
    assert Architecture.from_config(config).parameter_counts() == meta_device_counts(config)


def test_parameter_counts_of_a_shipped_config_json():
    config = json.loads((REPO / "export/weights/tiny-llava/config.json").read_text())
    assert Architecture.from_config(config).parameter_counts() == meta_device_counts(config)


def test_facts_of_llava_next():
    facts = Architecture.from_config(load_recipe_file(REPO / "export/llava-next.toml").config)
    assert (facts.vision.patches, facts.vision_images, facts.unpruned_image_tokens) == (576, 5, 2928)
    assert (facts.text.kv_heads, facts.text.head_dim, facts.used_vision_layers) == (8, 128, 23)


def test_a_missing_key_is_named():
    from edgecompress.errors import EdgeCompressError

    config = load_recipe_file(REPO / "export/tiny-llava.toml").config
    broken = {**config, "text_config": {k: v for k, v in config["text_config"].items() if k != "vocab_size"}}
    with pytest.raises(EdgeCompressError, match="lacks text_config.vocab_size"):
        Architecture.from_config(broken)


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from edgecompress.cli import main
sys.argv = ["edgecompress", *sys.argv[1:]]
main()
"""


def run_without_torch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


def test_the_blocker_blocks():
    result = run_without_torch("export", "tiny-llava", "--out", "nowhere")
    assert result.returncode != 0 and "torch is blocked in this test" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["list", "methods"], "hired"),
    (["list", "models"], "tiny-llava"),
    (["list", "profiles"], "jetson-orin-nano-8gb"),
    (["plan", "llava", "--profile", "jetson-agx-orin-64gb"], "K = 115"),
    (["plan", "llava", "--profile", "jetson-agx-orin-64gb", "--method", "pool"], "K = 110"),  # what the export keeps
    (["plan", "llava-next", "--profile", "jetson-agx-orin-64gb", "--budget", "100%"], "K = 2928"),
])
def test_deploy_commands_run_without_torch(args, expected):
    result = run_without_torch(*args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_inspect_and_build_run_without_torch(bundles, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundles["hired-fp32"], bundle)
    inspected = run_without_torch("inspect", str(bundle))
    assert inspected.returncode == 0, inspected.stderr
    assert "verifier PASS" in inspected.stdout
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt_rtx is not installed (pip install tensorrt-rtx): the build half needs it")
    built = run_without_torch("build", str(bundle), "--profile", "rtx-4090")
    assert built.returncode == 0, built.stderr
    assert (bundle / "engines" / "rtx-4090" / "decoder.engine").is_file()
