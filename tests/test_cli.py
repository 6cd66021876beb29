"""The real `edgecompress` command: outputs, exit codes, and messages without tracebacks."""

import json

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoint):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def default_export(workdir):
    result = run_cli("export", "tiny-llava-random", "--budget", "20%", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "out" / "tiny-llava-random-hired-b20", result


def test_export_writes_the_default_bundle_and_reports_steps(default_export):
    bundle, result = default_export
    assert sorted(p.name for p in bundle.iterdir()) == [
        "decoder.onnx", "decoder.onnx.data", "embed_tokens.npy", "manifest.json", "tokenizer.json",
        "vision.onnx", "vision.onnx.data",
    ]
    assert "Bundle written to out/tiny-llava-random-hired-b20" in result.stdout
    for step in ("Loading tiny-llava-random", "Exporting vision graph (K=115 of 576, fp32)", "Verifying vision graph",
                 "Exporting decoder graph (4 layers, KV cache, fp32)", "Verifying decoder graph"):
        assert step in result.stderr


def test_inspect_shows_budget_verdict_and_census(default_export):
    bundle, _ = default_export
    result = run_cli("inspect", str(bundle))
    assert result.returncode == 0, result.stderr
    assert "K = 115 of N = 576" in result.stdout
    assert "verifier PASS" in result.stdout
    assert "TopK" in result.stdout and "intact (sha256 match)" in result.stdout
    as_json = json.loads(run_cli("inspect", str(bundle), "--json").stdout)
    assert as_json["ok"] is True and as_json["graphs"]["vision"]["verify"]["op_census"]["TopK"] == 2


def test_inspect_names_a_tampered_file(tmp_path, default_export):
    import shutil

    bundle, _ = default_export
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    with open(copy / "vision.onnx.data", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    result = run_cli("inspect", str(copy))
    assert result.returncode == 1
    assert "vision.onnx.data does not match its sha256" in result.stdout


def test_export_refuses_to_overwrite_without_force(default_export, workdir):
    bundle, _ = default_export
    before = (bundle / "manifest.json").read_bytes()
    result = run_cli("export", "tiny-llava-random", "--budget", "20%", cwd=workdir)
    assert result.returncode == 2 and "already exists" in result.stderr and "--force" in result.stderr
    assert (bundle / "manifest.json").read_bytes() == before


def test_list_models_and_methods():
    models = run_cli("list", "models")
    assert models.returncode == 0
    for name in ("llava-1.5-7b", "llava-1.5-13b", "tiny-llava-random", "llava-hf/llava-1.5-7b-hf"):
        assert name in models.stdout
    methods = run_cli("list", "methods", env={"COLUMNS": "250"})
    lines = {line.split()[0]: line for line in methods.stdout.splitlines() if line.strip() and line.split()[0].isascii()}
    for name, paper in (("hired", "hasanar1f/HiRED"), ("vtc-cls", "THU-MIG/VTC-CLS"), ("visionzip", "dvlab-research/VisionZip"),
                        ("divprune", "vbdi/divprune"), ("dart", "ZichenWen1/DART"), ("none", "-"), ("random", "baselines")):
        assert paper in lines[name], lines.get(name)  # one row per method: its stage, needs and paper
    assert "after the projector" in lines["divprune"] and "layer_attention" in lines["vtc-cls"]
    assert "keys" in lines["visionzip"]


@pytest.mark.parametrize("command", ["export", "inspect", "list"])
def test_every_command_has_help_with_examples(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Examples" in result.stdout and f"edgecompress {command}" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "no-such-model"], "unknown model 'no-such-model'"),
        (["export", "tiny-llava-random", "--budget", "0%"], "out of range"),
        (["export", "tiny-llava-random", "--budget", "-3"], "negative"),
        (["export", "tiny-llava-random", "--budget", "twenty"], "invalid budget 'twenty'"),
        (["export", "tiny-llava-random", "--budget", "577"], "more than the 576 visual tokens"),
        (["export", "tiny-llava-random", "--method", "sparsevlm"], "unknown selection method 'sparsevlm'"),
        (["export", "tiny-llava-random", "--precision", "int4"], "unknown precision 'int4'"),
        (["export", "llava-hf/llava-1.5-7b-hf"], "pass its path: edgecompress export ./llava-1.5-7b-hf"),
        (["inspect", "does-not-exist"], "does-not-exist does not exist"),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_a_llava_checkpoint(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    result = run_cli("export", str(tmp_path / "bert"), cwd=tmp_path)
    assert result.returncode == 2 and "not a LLaVA-1.5, LLaVA-NeXT or Qwen2.5-VL checkpoint (model_type is 'bert')" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_cli("export", str(tmp_path / "empty"), cwd=tmp_path)
    assert result.returncode == 2 and "has no config.json" in result.stderr
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text('{"model_type": "llava"}')
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    result = run_cli("export", str(tmp_path / "pickled"), cwd=tmp_path)
    assert result.returncode == 2 and "has no .safetensors weights" in result.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    result = run_cli("export", str(tmp_path / "broken"), cwd=tmp_path)
    assert result.returncode == 2 and "config.json is not a valid config" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("keep me")
    result = run_cli("export", "tiny-llava-random", "--out", "taken", cwd=tmp_path)
    assert result.returncode == 2 and "output path taken is a file" in result.stderr
    assert (tmp_path / "taken").read_text() == "keep me"


def test_a_local_checkpoint_folder_exports_like_the_recipe(tmp_path, tiny_checkpoint):
    result = run_cli("export", str(tiny_checkpoint), "--budget", "115", "--precision", "fp32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = next((tmp_path / "out").iterdir())
    assert bundle.name.endswith("-hired-k115")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["k"] == 115 and manifest["source"]["kind"] == "folder"
