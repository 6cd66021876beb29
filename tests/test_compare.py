"""`edgecompress compare`: bundles and backends side by side, each against the first."""

import json
import os
import re

import pytest

from edgecompress.bench.compare import errors, first_divergence, write_report
from edgecompress.errors import EdgeCompressError
from tests.conftest import run_cli


def report_of(result) -> dict:
    """The JSON report whose path the command printed."""
    match = re.search(r"report written to\s+(\S+compare-\d{8}T\d{6}Z(?:-\d+)?\.json)", " ".join(result.stdout.split()))
    assert match, result.stdout
    return json.loads(open(match.group(1), encoding="utf-8").read())


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundles(bundles, tmp_path_factory):
    """Copies of the session's bundles: compare writes its reports into the first bundle, and the
    session's bundles must stay as exported for the tests that check their files."""
    import shutil

    root = tmp_path_factory.mktemp("compare")
    return {name: shutil.copytree(path, root / name) for name, path in bundles.items()}


def test_fp16_against_fp32_is_within_tolerance(bundles):
    """The fp16 bundle against the fp32 one on ONNX Runtime CPU, three generated pictures: every
    output within the fp16 bound, the kept tokens agree under the fp16 tie band (PyTorch's scores
    of the checkpoint give the margin), and the report holds it all."""
    result = run_cli("compare", str(bundles["hired-fp32"]), str(bundles["hired-fp16"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept indices" in result.stdout and "all pairs within tolerance" in flat(result.stdout)
    report = report_of(result)
    assert report["passed"] and report["reference"]["precision"] == "fp32"
    assert report["inputs"]["new_tokens"] == 16 and len(report["inputs"]["images"]) == 3
    assert report["margins"] == {"available": True, "reason": None}
    (pair,) = report["comparisons"]
    assert pair["precision"] == "fp16" and pair["tolerance"]["precision"] == "fp16"
    assert pair["tolerance"]["tokens_must_match"] is False  # fp16 may flip a near-tie argmax: reported only
    # fp16 rounds (a difference shows), within the bound measured for it (compare.py's docstring)
    for output in ("image_embeds", "logits"):
        assert 0 < pair[output]["max_rel"] <= pair["tolerance"]["relative"] == 1e-2, output
    kept = pair["kept"]
    assert kept["agree"] == 3 and kept["k"] == 115 and kept["min_margin"] > 0
    for row in pair["per_image"]:
        assert row["kept"]["agree"] and row["kept"]["check"] == "tie band" and row["kept"]["band"] > 0
        assert row["kept"]["identical"] == (row["kept"]["overlap"] == 115) and row["tokens"]["reference"]


def test_a_bundle_against_itself_is_exact_without_pytorch(bundles, tmp_path):
    """On a machine without torch the margin is not available, and compare says why instead of
    failing; the same bundle twice gives zero error and identical tokens."""
    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("no torch on this machine (test shim)")\n')
    path = os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])
    bundle = str(bundles["hired-fp32"])
    result = run_cli("compare", bundle, bundle, "--images", "1", "--new-tokens", "4", env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "margin: not available (PyTorch is not installed here" in flat(result.stdout)
    report = report_of(result)
    (pair,) = report["comparisons"]
    assert report["margins"]["available"] is False and pair["tolerance"]["precision"] == "fp32"
    for output in ("image_embeds", "logits"):
        assert pair[output]["max_abs"] == pair[output]["max_rel"] == 0.0, output
    assert pair["kept"]["identical"] == 1 and pair["kept"]["min_margin"] is None
    assert pair["tokens"]["agree"] == 1 and pair["per_image"][0]["tokens"]["first_divergence"] is None


def test_outside_tolerance_exits_1(bundles):
    """With a bound no fp16 run can meet, the same pair fails: exit 1, the report says so."""
    result = run_cli("compare", str(bundles["hired-fp32"]), str(bundles["hired-fp16"]), "--images", "1",
                     "--new-tokens", "2", "--rtol", "0", "--no-margins")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout and "image_embeds relative error" in flat(result.stdout)
    report = report_of(result)
    assert report["passed"] is False and report["comparisons"][0]["tolerance"]["relative"] == 0


@pytest.mark.parametrize("pair, args, message", [
    (("hired-fp32", "none-fp32"), (), "cannot be compared: method 'hired' vs 'none'; K 115 vs 576"),
    (("hired-fp32",), (), "compare needs at least two (bundle, backend) pairs"),
])
def test_bundles_that_cannot_be_compared_exit_2(bundles, pair, args, message):
    result = run_cli("compare", *(str(bundles[name]) for name in pair), *args)
    assert result.returncode == 2 and message in flat(result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_a_backend_not_installed_exits_2_naming_what_to_install(bundles):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    result = run_cli("compare", str(bundles["hired-fp32"]), "--backends", "onnxruntime,onnxruntime-cuda")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install onnxruntime-gpu" in flat(result.stderr) and "Traceback" not in result.stderr


def test_relative_error_is_to_the_largest_magnitude():
    """A component near zero that rounding zeroes is no error at the tensor's scale (elementwise it
    would read as 100%); shapes that differ are refused."""
    assert errors([1000.0, 1e-6], [1000.0, 0.0]) == {"max_abs": 1e-6, "max_rel": pytest.approx(1e-9)}
    assert errors([2.0, -4.0], [2.0, -3.0])["max_rel"] == 0.25
    assert errors([0.0], [1.0])["max_rel"] == float("inf")
    with pytest.raises(EdgeCompressError, match="cannot be compared"):
        errors([1.0], [1.0, 2.0])
    assert first_divergence([5, 6, 7], [5, 6, 7]) is None
    assert first_divergence([5, 6, 7], [5, 9, 7]) == 1 and first_divergence([5, 6], [5, 6, 2]) == 2


def test_reports_are_never_overwritten(tmp_path):
    first = write_report(tmp_path, {"run": 1})
    second = write_report(tmp_path, {"run": 2})
    assert first != second and re.fullmatch(r"compare-\d{8}T\d{6}Z(-\d+)?\.json", second.name)
    assert json.loads(first.read_text()) == {"run": 1} and json.loads(second.read_text()) == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])  # no temporary left
