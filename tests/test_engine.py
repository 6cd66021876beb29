"""Profiles, memory plans, real TensorRT-RTX engine builds, and the TensorRT runner's checks."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgecompress.bundle import file_table, write_json
from edgecompress.engine.builder import build_engines, optimization_profiles
from edgecompress.engine.memory import GIB, parameter_counts, plan_memory
from edgecompress.engine.profiles import builtin_profiles, load_profile
from edgecompress.errors import EdgeCompressError
from edgecompress.parity import compare_selections
from edgecompress.recipes import resolve_model
from tests.conftest import run_cli
from tests.helpers import assert_engines_match_manifest

REPO = Path(__file__).resolve().parents[1]

try:
    import tensorrt_rtx  # noqa: F401

    HAVE_RTX = True
except ImportError:
    HAVE_RTX = False
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")

try:
    import tensorrt  # noqa: F401

    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False

EXPECTED_PROFILES = {
    "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-agx-thor",
    "rtx-3060-12gb", "rtx-4090", "rtx-5090", "a100-80gb", "h100-80gb", "cpu",
}


def test_builtin_profiles_are_complete():
    profiles = builtin_profiles()
    assert set(profiles) == EXPECTED_PROFILES
    for p in profiles.values():
        assert p.backend in ("tensorrt", "tensorrt-rtx", "onnxruntime")
        assert p.memory_gib > 0 and p.max_prompt_tokens > 0 and p.max_output_tokens > 0
        if p.name.startswith("jetson"):
            assert p.shared_memory and p.backend == "tensorrt"
    assert profiles["rtx-4090"].sm == "SM89" and profiles["jetson-orin-nano-8gb"].compute_capability == "8.7"


def test_unknown_and_malformed_profiles(tmp_path):
    with pytest.raises(EdgeCompressError, match="unknown profile 'rtx-9999'"):
        load_profile("rtx-9999")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "tensorrt"\n')
    with pytest.raises(EdgeCompressError, match="lacks compute_capability"):
        load_profile(str(bad))


def test_builtin_profiles_carry_bench_peaks():
    """Every GPU profile has the two numbers `bench` predicts from; cpu ("any CPU") has neither."""
    for p in builtin_profiles().values():
        if p.name == "cpu":
            assert p.peak_fp16_tflops is None and p.memory_bandwidth_gbs is None
        else:
            assert p.peak_fp16_tflops > 0 and p.memory_bandwidth_gbs > 0, p.name
        assert {"peak_fp16_tflops", "memory_bandwidth_gbs"} <= set(p.to_dict())
    # GeForce figures are the FP32-accumulate ones, half the FP16-accumulate headline
    assert builtin_profiles()["rtx-4090"].peak_fp16_tflops == 165.2


@pytest.mark.parametrize("field", ["peak_fp16_tflops", "memory_bandwidth_gbs"])
@pytest.mark.parametrize("value, shown", [("-1.0", "-1.0"), ("0", "0"), ('"fast"', "'fast'"), ("nan", "nan")])
def test_user_profile_bench_peaks_are_checked(tmp_path, field, value, shown):
    rtx_4090 = (REPO / "profiles" / "rtx-4090.toml").read_text()
    assert f"\n{field} = " in rtx_4090
    lines = [f"{field} = {value}" if line.startswith(f"{field} = ") else line for line in rtx_4090.splitlines()]
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgeCompressError, match=f"{field} = {shown} is not allowed; it must be a finite number above 0"):
        load_profile(str(bad))
    # left out, the field is None: bench shows no prediction
    absent = tmp_path / "absent.toml"
    absent.write_text("\n".join(line for line in lines if not line.startswith(f"{field} = ")) + "\n")
    assert getattr(load_profile(str(absent)), field) is None


def test_cli_list_profiles_shows_bench_peaks():
    listed = run_cli("list", "profiles", env={"COLUMNS": "320"})
    assert listed.returncode == 0, listed.stderr
    assert "fp16 TFLOP/s" in listed.stdout and "GB/s" in listed.stdout
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines() if line.split()}
    assert "989.4" in rows["h100-80gb"] and "3350" in rows["h100-80gb"]
    assert rows["cpu"].count("-") >= 3  # SM, fp16 TFLOP/s and GB/s all absent


def test_parameter_counts_of_llava_7b():
    counts = parameter_counts(resolve_model("llava-1.5-7b").recipe.config)
    # Known sizes: CLIP ViT-L/14-336 has 303.5M parameters; layers 0..22 of 24 plus the projector
    # (1024*4096 + 4096*4096 + biases) is 311.9M; Vicuna-7B is 6.74B with its 32064 x 4096 table.
    assert counts["vision"] == 311_888_896
    assert counts["embeddings"] == 32064 * 4096
    assert 6.60e9 < counts["decoder"] < 6.61e9


@pytest.mark.parametrize("profile, budget_k, fits", [
    ("jetson-orin-nano-8gb", 576, False), ("jetson-orin-nano-8gb", 115, False),
    ("jetson-agx-orin-64gb", 576, True), ("jetson-agx-orin-64gb", 115, True),
    ("rtx-4090", 576, True), ("rtx-4090", 115, True),
])
def test_memory_plan_of_llava_7b_fp16(profile, budget_k, fits):
    config = resolve_model("llava-1.5-7b").recipe.config
    target = load_profile(profile)
    plan = plan_memory(config, budget_k, target, "fp16")
    context = budget_k + target.max_prompt_tokens + target.max_output_tokens
    assert plan.context == context
    # The KV cache is exact: 2 x 32 layers x 32 kv heads x 128 x context x 2 bytes.
    assert plan.rows["KV cache"] == 2 * 32 * 32 * 128 * context * 2
    assert ("embedding table" in plan.rows) == target.shared_memory
    assert plan.fits is fits
    if not fits:
        assert "use a smaller model" in plan.suggestions[0]


def test_a_plan_that_does_not_fit_suggests_a_budget_that_does():
    config = resolve_model("llava-1.5-7b").recipe.config
    target = load_profile("rtx-4090")
    roomy = plan_memory(config, 576, target, "fp16")
    # A device just short of what K = 576 needs: fewer image tokens must fit.
    tight = type(target)(**{**target.to_dict(), "name": "tight", "memory_gib": (roomy.total - 0.05 * GIB) / GIB})
    plan = plan_memory(config, 576, tight, "fp16")
    assert not plan.fits
    suggestion = next(s for s in plan.suggestions if s.startswith("a lower budget"))
    k = int(suggestion.split("K = ")[1].split()[0])
    assert plan_memory(config, k, tight, "fp16").fits and not plan_memory(config, k + 1, tight, "fp16").fits


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory, tiny_checkpoint):
    from edgecompress import export_bundle

    return export_bundle("tiny-llava-random", budget="20%", precision="fp16", out=tmp_path_factory.mktemp("trt") / "b")


def test_decoder_optimization_profiles_follow_k_and_the_token_limits(fp16_bundle):
    from edgecompress_runtime import read_manifest

    manifest = read_manifest(fp16_bundle)
    shapes = optimization_profiles(manifest, load_profile("jetson-orin-nano-8gb"))  # 512 prompt, 256 output tokens
    assert shapes["vision"] == []  # static graph
    prefill, decode = shapes["decoder"]
    assert prefill["inputs_embeds"] == ((1, 1, 64), (1, 115 + 32, 64), (1, 115 + 512, 64))  # up to K + max_prompt_tokens
    assert prefill["past.0.key"] == ((1, 2, 0, 16),) * 3
    assert decode["inputs_embeds"] == ((1, 1, 64),) * 3
    assert decode["past.3.value"][2] == (1, 2, 115 + 512 + 256 - 1, 16)  # the cache before the last token
    # rtx-4090 allows 2048 + 1024 tokens: capped at the model's max_position_embeddings (2048).
    capped = optimization_profiles(manifest, load_profile("rtx-4090"))["decoder"]
    assert capped[0]["inputs_embeds"][2] == (1, 2048, 64) and capped[1]["past.0.key"][2] == (1, 2, 2047, 16)


@needs_rtx
@pytest.mark.parametrize("profile", ["rtx-3060-12gb", "rtx-4090"])  # SM86 and SM89
def test_tensorrt_rtx_builds_every_graph_and_bindings_match_the_manifest(fp16_bundle, profile):
    record = build_engines(fp16_bundle, load_profile(profile), force=True)
    assert_engines_match_manifest(fp16_bundle, profile, record)
    assert not (fp16_bundle / "engines" / profile / "timing.cache").exists()  # TensorRT-RTX ignores timing caches


@needs_rtx
def test_build_refusals(fp16_bundle, tmp_path):
    build_engines(fp16_bundle, load_profile("rtx-4090"), force=True)
    with pytest.raises(EdgeCompressError, match="already has engines for rtx-4090"):
        build_engines(fp16_bundle, load_profile("rtx-4090"))
    with pytest.raises(EdgeCompressError, match="there are no engines to build"):
        build_engines(fp16_bundle, load_profile("cpu"))
    sm90 = tmp_path / "sm90.toml"
    rtx_4090 = (REPO / "profiles" / "rtx-4090.toml").read_text()
    sm90.write_text(rtx_4090.replace('name = "rtx-4090"', 'name = "sm90-rtx"').replace('"8.9"', '"9.0"'))
    with pytest.raises(EdgeCompressError, match=r"cannot target compute capability 9.0 \(SM90\)"):
        build_engines(fp16_bundle, load_profile(str(sm90)), force=True)
    small = tmp_path / "small.toml"
    small.write_text(rtx_4090.replace('name = "rtx-4090"', 'name = "small"')
                     .replace("memory_gib = 24.0", "memory_gib = 2.0").replace("workspace_gib = 4.0", "workspace_gib = 1.0"))
    with pytest.raises(EdgeCompressError, match=r"does not fit small: it needs \d+\.\d\d GiB of 2.00 GiB"):
        build_engines(fp16_bundle, load_profile(str(small)))
    assert not (fp16_bundle / "engines" / "small").exists()
    assert build_engines(fp16_bundle, load_profile(str(small)), ignore_memory_plan=True)["memory_plan"]["fits"] is False


@needs_rtx
def test_engines_have_their_own_table_and_a_copy_without_them_still_runs(fp16_bundle, tmp_path, images):
    """`build` records engines (file, sha256, target, version) in their own table and leaves the
    export's file table alone: a bundle copied without engines/ or reports/ opens and runs in ONNX
    Runtime; inspect says the engines are missing (not a failure) and fails a modified engine."""
    from edgecompress.inspection import inspect_bundle
    from edgecompress_runtime import Pipeline

    before = json.loads((fp16_bundle / "manifest.json").read_text())["files"]
    record = build_engines(fp16_bundle, load_profile("rtx-4090"), force=True)
    manifest = json.loads((fp16_bundle / "manifest.json").read_text())
    assert manifest["files"] == before and not any(name.startswith("engines/") for name in manifest["files"])
    assert manifest["engines"]["rtx-4090"]["graphs"]["decoder"]["sha256"] == record["graphs"]["decoder"]["sha256"]

    copy = tmp_path / "copied"
    shutil.copytree(fp16_bundle, copy, ignore=shutil.ignore_patterns("engines", "reports"))
    assert Pipeline.load(copy).generate(images["scene"], "What is it?", max_new_tokens=2) is not None
    inspected = inspect_bundle(copy)
    assert inspected["ok"] and inspected["engines"]["rtx-4090"] == {"vision": "missing", "decoder": "missing"}

    tampered = tmp_path / "tampered"
    shutil.copytree(fp16_bundle, tampered)
    with open(tampered / "engines" / "rtx-4090" / "vision.engine", "r+b") as f:
        f.write(b"\x00" * 16)
    inspected = inspect_bundle(tampered)
    assert not inspected["ok"] and inspected["engines"]["rtx-4090"]["vision"] == "modified"
    assert inspected["engines"]["rtx-4090"]["decoder"] == "intact"


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here; this checks the message where it is not")
def test_missing_tensorrt_says_what_to_install(fp16_bundle):
    with pytest.raises(EdgeCompressError, match="(?s)tensorrt backend is not installed.*JetPack"):
        build_engines(fp16_bundle, load_profile("jetson-agx-orin-64gb"), force=True)


@needs_rtx
def test_parser_rejection_names_the_node(fp16_bundle, tmp_path):
    bundle = tmp_path / "rejected"
    shutil.copytree(fp16_bundle, bundle)
    node = helper.make_node("MysteryPrune", ["pixel_values"], ["image_embeds"], domain="com.example", name="mystery_prune")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 336, 336])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT16, [1, 115, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    onnx.save(model, bundle / "vision.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.pop("engines", None)
    shutil.rmtree(bundle / "engines", ignore_errors=True)
    manifest["files"] = file_table(bundle)
    write_json(bundle / "manifest.json", manifest)
    with pytest.raises(EdgeCompressError, match="(?s)parser rejected vision.onnx: node 'mystery_prune' \\(op MysteryPrune\\)"):
        build_engines(bundle, load_profile("rtx-4090"))
    assert not (bundle / "engines").exists()


@needs_rtx
def test_tensorrt_runner_checks_before_running(fp16_bundle, tmp_path):
    from edgecompress_runtime import Pipeline
    from edgecompress_runtime.tensorrt_backend import check_compatible

    build_engines(fp16_bundle, load_profile("rtx-4090"), force=True)
    with pytest.raises(EdgeCompressError, match="no engines for profile 'jetson-orin-nano-8gb'"):
        Pipeline.load(fp16_bundle, backend="tensorrt", profile="jetson-orin-nano-8gb")
    import dataclasses

    from edgecompress_runtime import read_manifest

    record = read_manifest(fp16_bundle).engines["rtx-4090"]
    with pytest.raises(EdgeCompressError, match="built for compute capability 8.9, and this GPU is 8.6"):
        check_compatible(record, record.builder_version, "8.6")
    with pytest.raises(EdgeCompressError, match="built with tensorrt-rtx 1.0.0, and this is"):
        check_compatible(dataclasses.replace(record, builder_version="1.0.0"), tensorrt_rtx.__version__, "8.9")
    # On this machine: refused before anything runs, for the reason that applies here.
    import importlib.util

    gpu = shutil.which("nvidia-smi") is not None
    if not gpu:
        reason = "no CUDA GPU" if importlib.util.find_spec("cuda") else "needs cuda-python"
        with pytest.raises(EdgeCompressError, match=reason):
            Pipeline.load(fp16_bundle, backend="tensorrt", profile="rtx-4090")


@pytest.mark.skipif(shutil.which("nvidia-smi") is None or not (HAVE_TRT or HAVE_RTX),
                    reason="needs an NVIDIA GPU with tensorrt or tensorrt_rtx to run engines")
def test_engines_generate_what_onnxruntime_generates(tmp_path, tiny_checkpoint, images):
    """Runs where a GPU is present: build for this GPU and compare with ONNX Runtime."""
    from edgecompress import export_bundle
    from edgecompress.engine.builder import local_compute_capability
    from edgecompress_runtime import Pipeline

    bundle = export_bundle("tiny-llava-random", precision="fp16", out=tmp_path / "gpu")
    cc = local_compute_capability()
    backend = "tensorrt" if HAVE_TRT else "tensorrt-rtx"
    text = (REPO / "profiles" / "rtx-4090.toml").read_text().replace('"8.9"', f'"{cc}"').replace('"tensorrt-rtx"', f'"{backend}"')
    (tmp_path / "here.toml").write_text(text.replace('name = "rtx-4090"', 'name = "here"'))
    build_engines(bundle, load_profile(str(tmp_path / "here.toml")))
    trt_result = Pipeline.load(bundle, backend="tensorrt").generate_full(images["scene"], "What is this?", max_new_tokens=8)
    ort_result = Pipeline.load(bundle).generate_full(images["scene"], "What is this?", max_new_tokens=8)
    # Kept tokens under the fp16 tie band (edgecompress.parity), with PyTorch's scores as the referee.
    import torch
    from edgecompress.models.loading import load_model
    from edgecompress.methods import get_method
    from edgecompress_runtime.preprocess import preprocess

    adapter = load_model(resolve_model("tiny-llava-random"), dtype=torch.float16)
    module = adapter.plan_vision(get_method("hired"), "20%", "fp16").module
    manifest = json.loads((bundle / "manifest.json").read_text())
    with torch.no_grad():
        scores = module.selection_scores(torch.from_numpy(preprocess(images["scene"], manifest["preprocess"])))[0].numpy()
    assert compare_selections(trt_result.kept_indices, ort_result.kept_indices, scores, precision="fp16").agree
    np.testing.assert_allclose(trt_result.prefill_logits, ort_result.prefill_logits, atol=5e-2, rtol=0)


@needs_rtx
def test_cli_build_and_export_with_profile(tmp_path, tiny_checkpoint):
    result = run_cli("export", "tiny-llava-random", "--profile", "rtx-4090", cwd=tmp_path)  # fp16: the profile's precision
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "out" / "tiny-llava-random-hired-b20"
    assert json.loads((bundle / "manifest.json").read_text())["precision"] == "fp16"
    assert "note:" not in result.stderr
    assert (bundle / "engines" / "rtx-4090" / "decoder.engine").exists()
    assert "Engines written to" in result.stdout
    result = run_cli("build", str(bundle), "--profile", "rtx-3060-12gb")
    assert result.returncode == 0, result.stderr
    inspected = run_cli("inspect", str(bundle), "--profile", "jetson-orin-nano-8gb")
    assert "engines rtx-3060-12gb" in inspected.stdout and "memory plan on jetson-orin-nano-8gb" in inspected.stdout
    listed = run_cli("list", "profiles")
    assert all(name in listed.stdout for name in EXPECTED_PROFILES)


def test_cli_plan_exits_1_when_it_does_not_fit():
    result = run_cli("plan", "llava", "--budget", "20%", "--profile", "jetson-orin-nano-8gb")
    assert result.returncode == 1 and "DOES NOT FIT" in result.stdout and "use a smaller model" in result.stdout
    result = run_cli("plan", "llava", "--budget", "20%", "--profile", "rtx-4090")
    assert result.returncode == 0 and "fits" in result.stdout
    result = run_cli("plan", "llava", "--profile", "rtx-4090", "--precision", "int8")
    assert result.returncode == 2 and "unknown precision 'int8'" in result.stderr and "Traceback" not in result.stderr
