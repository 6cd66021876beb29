"""`edgecompress bench` and `sweep`: real bundles through the real runtime (ONNX Runtime, CPU).

Nothing here asserts a wall-clock time: the tests check what a user reads and relies on (the
report's schema and counts, files on disk, the prediction's arithmetic against the bundle's
files, power numbers from tegrastats lines, exit codes and messages)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

import pytest

from tests.conftest import run_cli

STAGES = ("preprocess", "vision", "prefill", "ttft", "decode_per_token", "end_to_end")
QUICK = ("--runs", "2", "--warmup", "1", "--new-tokens", "4", "--prompt-tokens", "24", "--tegrastats", "off")


@pytest.fixture(scope="module")
def hired(bundles, tmp_path_factory):
    """A copy of the session's hired fp32 bundle (bench writes reports into its bundle)."""
    copy = tmp_path_factory.mktemp("bench") / "hired"
    shutil.copytree(bundles["hired-fp32"], copy)
    return copy


@pytest.fixture(scope="module")
def report(hired):
    result = run_cli("bench", str(hired), *QUICK, "--profile", "rtx-4090", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_bench_report_schema_and_counts(report, hired):
    assert report["schema"] == "edgecompress-bench/1"
    assert (report["method"], report["k"], report["image_tokens"], report["precision"]) == ("hired", 115, 115, "fp32")
    assert report["backend"] == "onnxruntime-cpu" and report["profile"] == "rtx-4090"
    for stage in STAGES:
        st = report["stages"][stage]
        assert set(st) == {"p50_ms", "p90_ms", "mean_ms", "min_ms", "runs"}
        assert st["runs"] == 2 and 0 < st["min_ms"] <= st["p50_ms"] <= st["p90_ms"]
    # TTFT holds preprocess, vision and prefill; a run holds its TTFT
    assert report["stages"]["ttft"]["min_ms"] >= report["stages"]["prefill"]["min_ms"] + report["stages"]["vision"]["min_ms"]
    assert report["stages"]["end_to_end"]["min_ms"] >= report["stages"]["ttft"]["min_ms"]
    assert report["settings"]["prompt_tokens"] <= 24 and report["settings"]["new_tokens"] == 4
    assert report["throughput"]["decode_tokens_per_s"] == pytest.approx(1e3 / report["stages"]["decode_per_token"]["mean_ms"])
    assert report["memory"]["host_peak_rss_mib"] > 50  # onnxruntime and the two sessions alone take more
    try:  # no GPU in CI: the note says why there is no GPU figure
        import pynvml  # noqa: F401

        assert report["memory"]["gpu_peak_mib"] is not None or "NVML unavailable" in report["memory"]["gpu_note"]
    except ImportError:
        assert report["memory"]["gpu_peak_mib"] is None and "nvidia-ml-py" in report["memory"]["gpu_note"]
    assert report["jetson"] is None and report["interrupted"] is False
    assert {"edgecompress", "onnxruntime", "numpy"} <= set(report["tool_versions"])
    # the files on disk: the JSON equals what was printed, the Markdown has one row per stage
    written = sorted((hired / "reports").glob("bench-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == report
    table = written[0].with_suffix(".md").read_text()
    for name in ("| preprocess |", "| vision |", "| prefill |", "| TTFT |", "| decode / token |", "| end to end |"):
        assert name in table


def test_bench_prediction_reads_the_bundles_weights_and_the_profile(report, hired):
    """Decode is predicted as one read of the decoder's weights (its files on disk) and the KV
    cache at the mean context, at the profile's bandwidth; vision and prefill at its peak."""
    manifest = json.loads((hired / "manifest.json").read_text())
    basis, predicted = report["predicted_basis"], report["predicted"]
    weights = sum(manifest["files"][f]["bytes"] for f in manifest["graphs"]["decoder"]["files"])
    assert basis["decoder_weight_mib"] == pytest.approx(weights / 2**20)
    assert (basis["peak_fp16_tflops"], basis["memory_bandwidth_gbs"]) == (165.2, 1008.0)
    lm = manifest["language_model"]
    context = report["settings"]["prompt_tokens"] + 115 + 4 / 2
    kv = 2 * lm["num_layers"] * lm["num_kv_heads"] * lm["head_dim"] * 4 * context
    assert predicted["decode_per_token"] == pytest.approx(1e3 * (weights + kv) / 1008e9)
    assert predicted["ttft"] == pytest.approx(predicted["vision"] + predicted["prefill"])
    assert predicted["end_to_end"] == pytest.approx(predicted["ttft"] + 3 * predicted["decode_per_token"])
    for stage, ratio in report["measured_over_predicted"].items():
        assert ratio == pytest.approx(report["stages"][stage]["p50_ms"] / predicted[stage])
    assert any("CPU" in w and "rtx-4090" in w for w in report["warnings"])  # measured here, predicted there


def test_bench_several_bundles_side_by_side(bundles, tmp_path):
    a, b = tmp_path / "none", tmp_path / "hired"
    shutil.copytree(bundles["none-fp32"], a)
    shutil.copytree(bundles["hired-fp32"], b)
    result = run_cli("bench", str(a), str(b), *QUICK, "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    table = next((tmp_path / "cmp").glob("bench-*.md")).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| none") or line.startswith("| hired")]
    assert [r.split(" | ")[1:4] for r in rows] == [["none", "100%", "576"], ["hired", "20%", "115"]]
    png = next((tmp_path / "cmp").glob("bench-*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    combined = json.loads(next((tmp_path / "cmp").glob("bench-*.json")).read_text())
    assert [r["k"] for r in combined["reports"]] == [576, 115]


def written(bundle):
    return sorted((bundle / "reports").iterdir()) if (bundle / "reports").exists() else []


def _fake_tool(folder, name, body):
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


ORIN_NANO = ("RAM 2803/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [31%@1510,20%@1510,0%@1510,0%@1510,0%@1510,"
             "0%@1510] GR3D_FREQ 61% cpu@47.906C soc2@46.375C soc0@47.218C gpu@47.25C tj@47.906C soc1@46.593C "
             "VDD_IN 7200mW/6100mW VDD_CPU_GPU_CV 2400mW/1900mW VDD_SOC 1500mW/1450mW")


def test_bench_reads_power_from_tegrastats_on_a_jetson(hired, tmp_path):
    """A fake tegrastats (JetPack 6 Orin Nano format, constant values) on PATH: bench runs it as a
    child for the duration and reduces the timed runs' samples; nvpmodel and jetson_clocks are
    recorded, and unlocked clocks are warned about."""
    tools = tmp_path / "bin"
    tools.mkdir()
    _fake_tool(tools, "tegrastats", f"""import sys, time
assert sys.argv[1:3] == ["--interval", "20"], sys.argv
while True:
    print(time.strftime("%m-%d-%Y %H:%M:%S") + " " + {ORIN_NANO!r}, flush=True)
    time.sleep(0.02)
""")
    _fake_tool(tools, "nvpmodel", 'print("NV Power Mode: 15W")\nprint("0")\n')
    _fake_tool(tools, "jetson_clocks", 'print("GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000")\n')
    env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    args = [a for a in QUICK if a not in ("--tegrastats", "off")]
    result = run_cli("bench", str(hired), *args, "--runs", "3", "--interval", "20", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    j = report["jetson"]
    assert j["samples"] >= 1
    assert j["power_mean_mw"] == {"VDD_IN": 7200, "VDD_CPU_GPU_CV": 2400, "VDD_SOC": 1500}
    assert j["total_power_mean_mw"] == 7200 and "VDD_IN" in j["total_rule"]
    assert j["ram_peak_mib"] == 2803 and j["gpu_util_mean_pct"] == 61
    # energy per generated token: mean total power x the timed runs' wall time / tokens generated
    # (the window also holds the few milliseconds of bookkeeping between runs: at most 25% more here)
    window_s = j["energy_per_token_mj"] * 12 / 7200  # 3 runs x 4 tokens
    runs_s = 3 * report["stages"]["end_to_end"]["mean_ms"] / 1e3
    assert runs_s <= window_s <= 1.25 * runs_s + 0.05
    assert j["nvpmodel"] == "15W" and j["jetson_clocks"] is False
    assert any("jetson_clocks" in w for w in report["warnings"])
    newest = max((hired / "reports").glob("bench-*.md"), key=lambda p: p.stat().st_mtime)
    assert "VDD_IN 7200 mW" in newest.read_text() and "15W" in newest.read_text()


def test_bench_keeps_what_was_measured_on_ctrl_c(hired):
    from edgecompress.bench.runner import BenchSettings, bench_bundle

    def interrupt(phase, done, total):
        if phase == "runs" and done == 2:
            raise KeyboardInterrupt

    before = set((hired / "reports").glob("bench-*.json"))
    report, path = bench_bundle(hired, BenchSettings(runs=10, warmup=0, new_tokens=3, tegrastats="off"),
                                on_progress=interrupt)
    assert report["interrupted"] is True and report["stages"]["end_to_end"]["runs"] == 2
    assert path not in before and json.loads(path.read_text())["interrupted"] is True


@pytest.mark.parametrize("args, message", [
    (("--runs", "0"), "--runs must be at least 1"),
    (("--image-size", "big"), "--image-size must be WIDTHxHEIGHT"),
    (("--tegrastats", "on"), "tegrastats is not on PATH"),
    (("--prompt-tokens", "3000"), "over this bundle's maximum sequence"),
    (("--profile", "no-such-board"), "unknown profile 'no-such-board'"),
    (("--backend", "onnxruntime-cuda"), "onnxruntime-gpu"),
    (("--seed", "-1"), "Invalid value for '--seed'"),
    (("--image-size", "100000x100000"), "pixel limit"),
    (("--image-size", "8x8"), "the smallest this runtime reads is 14 px"),
])
def test_bench_refuses_bad_input_with_one_message(hired, args, message):
    before = written(hired)
    result = run_cli("bench", str(hired), "--runs", "1", "--warmup", "0", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert written(hired) == before  # nothing written


def test_bench_refuses_a_missing_bundle_before_running_any(hired, tmp_path):
    before = written(hired)
    result = run_cli("bench", str(hired), str(tmp_path / "nope"), "--runs", "1")
    assert result.returncode == 2 and "nope" in result.stderr and "Traceback" not in result.stderr
    assert written(hired) == before  # the first bundle did not run either


def test_generate_ignore_eos_decodes_exactly_the_tokens_asked(hired, images):
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(hired)
    pipe.eos_token_ids = set(range(pipe.embed_table.shape[0]))  # every token ends the answer...
    assert pipe.generate_full(images["scene"], "What is this?", max_new_tokens=5).token_ids == []
    g = pipe.generate_full(images["scene"], "What is this?", max_new_tokens=5, ignore_eos=True)  # ...unless ignored
    assert len(g.token_ids) == 5 and g.timings["decode_tokens"] == 4


def test_pareto_front_and_drop():
    from edgecompress.bench.sweep import parse_drop, pareto
    from edgecompress.errors import EdgeCompressError

    points = [{"ttft_ms": 40, "accuracy": 0.90}, {"ttft_ms": 20, "accuracy": 0.90}, {"ttft_ms": 15, "accuracy": 0.80},
              {"ttft_ms": 25, "accuracy": 0.85}, {"ttft_ms": 10, "accuracy": 0.60}]
    assert pareto(points) == [1, 2, 4]  # 40 ms is beaten by 20 ms at the same accuracy; 25 ms by 20 ms
    assert parse_drop("2%") == parse_drop("2") == pytest.approx(0.02)
    assert parse_drop("0.5") == pytest.approx(0.005)  # a bare number is points too: half a point
    with pytest.raises(EdgeCompressError, match="--max-accuracy-drop"):
        parse_drop("lots")


def test_sweep_validates_benches_and_picks_a_budget(tmp_path, bundles):
    """The session's unpruned and 20% bundles placed where the sweep looks for them (their default
    names): it reuses both (exporting is tested everywhere else), validates, benches and picks."""
    from edgecompress.data.shapes import generate_shapes

    (tmp_path / "b").mkdir()
    shutil.copytree(bundles["none-fp32"], tmp_path / "b" / "tiny-llava-random-none")
    shutil.copytree(bundles["hired-fp32"], tmp_path / "b" / "tiny-llava-random-hired-b20")
    data = generate_shapes(tmp_path / "data", count=8, seed=3, test_fraction=0.5)["test"]
    args = ("sweep", "tiny-llava-random", "--budgets", "100%,20%", "--dataset", str(data), "--runs", "1",
            "--warmup", "0", "--new-tokens", "2", "--bundles", str(tmp_path / "b"), "--max-accuracy-drop", "99%",
            "--precision", "fp32")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("reusing") == 2 and "Exporting" not in result.stderr
    out = tmp_path / "b" / "sweep-tiny-llava-random-hired"
    summary = json.loads((out / "sweep.json").read_text())
    assert [(p["budget"], p["method"], p["k"]) for p in summary["points"]] == [("100%", "none", 576), ("20%", "hired", 115)]
    assert all(p["questions"] == 4 for p in summary["points"])
    assert summary["pick"]["budget"] == "20%"  # within 99 points of anything: the smallest budget
    assert "smallest budget within 99 points" in result.stdout and "**20%** (K=115" in result.stdout
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "sweep-tiny-llava-random-hired", "tiny-llava-random-hired-b20", "tiny-llava-random-none"]
    # a bundle of another precision at the same name is refused, before anything runs
    refused = run_cli(*args[:-2], "--precision", "fp16")
    assert refused.returncode == 2 and "not the none 100% fp16 this sweep needs" in refused.stderr
