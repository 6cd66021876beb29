"""What a user relies on when things go wrong: interrupted writes leave nothing, leftovers of a
killed run are cleaned up (and only those), folders get the usual modes, parity uses the tie
band, and the small messages say the right thing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgecompress.bundle import BundleWriter
from edgecompress.parity import TIE_BAND, compare_selections, selection_margin
from edgecompress.staging import remove_stale
from tests.conftest import run_cli


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_killed_writers_leftovers_are_removed_and_a_running_ones_kept(tmp_path, umask_022):
    dead, alive = dead_pid(), os.getppid()
    stale = [tmp_path / f".b.partial-{dead}-abc123", tmp_path / f".b.old-{dead}-0f0f"]
    kept = [tmp_path / f".b.partial-{alive}-xyz789",  # another run, still writing
            tmp_path / f".other.partial-{dead}-abc123",  # another destination
            tmp_path / ".b.partial-notapid"]  # not a name we write
    for folder in stale + kept:
        folder.mkdir()
        (folder / "vision.onnx").write_bytes(b"half")
    with BundleWriter(tmp_path / "b") as writer:
        (writer.staging / "vision.onnx").write_bytes(b"whole")
        writer.manifest = {"schema_version": 1}
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert (tmp_path / "b" / "vision.onnx").read_bytes() == b"whole"
    assert remove_stale(tmp_path / "b") == []  # idempotent


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)])
def test_bundles_and_data_sets_get_the_umask_mode(tmp_path, umask, mode):
    from edgecompress.data.shapes import generate_shapes

    previous = os.umask(umask)
    try:
        with BundleWriter(tmp_path / "bundle") as writer:
            writer.manifest = {"schema_version": 1}
        generate_shapes(tmp_path / "data", count=2, seed=1)
    finally:
        os.umask(previous)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == mode
    assert (tmp_path / "data").stat().st_mode & 0o777 == mode
    assert (tmp_path / "data" / "images").stat().st_mode & 0o777 == mode


# Ctrl-C exits 130, or, where Python's own KeyboardInterrupt handling gets the last word, by
# SIGINT itself (-2 here); a shell reports 130 for both.
@pytest.mark.parametrize("signum, codes, word", [(signal.SIGTERM, {143}, "terminated"), (signal.SIGINT, {130, -2}, "interrupted")])
def test_a_signal_during_export_leaves_nothing(tmp_path, tiny_checkpoint, signum, codes, word):
    env = {**os.environ, "COLUMNS": "200"}
    # A user's terminal delivers SIGINT to a process that handles it; reset the disposition in the
    # child, since a suite started in the background (`cmd &` in a script) inherits SIGINT ignored.
    process = subprocess.Popen([sys.executable, "-m", "edgecompress.cli", "export", "tiny-llava-random", "--out", "out/b"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = tmp_path / "out"
    deadline = time.monotonic() + 300
    while not (out.is_dir() and any(p.name.startswith(".b.partial-") for p in out.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in codes, stderr
    assert f"{word}: nothing half-written is left behind" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []  # no bundle, no staging folder


# -- the tie-band rule --------------------------------------------------------------------------


def test_selection_agreement_within_and_outside_the_tie_band():
    scores = np.array([0.9, 0.5, 0.30000001, 0.3, 0.1, 0.05])  # K=3: a near-tie between 2 and 3 at the cut-off
    reference = [0, 1, 2]
    assert selection_margin(scores, 3) == pytest.approx(1e-8)
    same = compare_selections([0, 1, 2], reference, scores)
    assert same.identical and same.agree and same.differing == []
    swapped = compare_selections([0, 1, 3], reference, scores)  # the near-tie flipped: 1e-8 apart, band 3e-6
    assert not swapped.identical and swapped.agree and swapped.differing == [2, 3]
    assert swapped.band == pytest.approx(TIE_BAND["fp32"] * 0.30000001)
    wrong = compare_selections([0, 2, 3], reference, scores)  # token 1 scores 0.5, far above the cut-off
    assert not wrong.agree
    far = compare_selections([0, 1, 4], reference, scores)  # token 4 scores 0.1, far below it
    assert not far.agree
    assert not compare_selections([0, 1, 3], reference, None).agree  # no scores: only identity agrees
    assert not compare_selections([0, 1], reference, scores).agree


def test_fp16_band_is_wider_than_fp32():
    scores = np.array([1.0, 0.5, 0.2, 0.2 - 5e-4, 0.1])  # a gap of 2.5e-3 relative at the cut-off
    assert not compare_selections([0, 1, 3], [0, 1, 2], scores, precision="fp32").agree
    assert compare_selections([0, 1, 3], [0, 1, 2], scores, precision="fp16").agree


# -- small messages -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_bundle(bundles, tmp_path_factory, images):
    root = tmp_path_factory.mktemp("hardening")
    images["scene"].save(root / "scene.png")
    return bundles["hired-fp32"], root / "scene.png"


def test_stats_with_one_token_says_there_was_no_decode_step(cli_bundle):
    bundle, image = cli_bundle
    one = run_cli("run", str(bundle), "--image", str(image), "--prompt", "What is it?", "--max-new-tokens", "1", "--stats")
    assert one.returncode == 0, one.stderr
    assert "1 generated" in one.stderr and "no decode steps to time" in one.stderr and "0.0 tokens/s" not in one.stderr
    four = run_cli("run", str(bundle), "--image", str(image), "--prompt", "What is it?", "--max-new-tokens", "4", "--stats")
    assert four.returncode == 0, four.stderr
    rate = float(four.stderr.split("decode ")[1].split(" tokens/s")[0])
    assert rate > 0


def test_export_force_says_it_drops_reports_and_engines(bundles, tmp_path, tiny_checkpoint):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["hired-fp32"], bundle)
    (bundle / "reports").mkdir()
    (bundle / "reports" / "validate-1.json").write_text("{}")
    result = run_cli("export", "tiny-llava-random", "--out", str(bundle), "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "its reports/ belong to the old graphs and will not be kept" in " ".join(result.stderr.split())
    assert not (bundle / "reports").exists()


def test_reports_are_not_part_of_the_contract(bundles, tmp_path, images):
    """Reports written into a bundle, then deleted or edited: the bundle still opens and runs."""
    from edgecompress_runtime import Pipeline

    bundle = tmp_path / "b"
    shutil.copytree(bundles["hired-fp32"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert not any(name.startswith(("reports/", "engines/")) for name in manifest["files"])
    (bundle / "reports").mkdir()
    (bundle / "reports" / "validate-1.md").write_text("old")
    Pipeline.load(bundle).generate(images["scene"], "What is it?", max_new_tokens=2)
    shutil.rmtree(bundle / "reports")
    Pipeline.load(bundle).generate(images["scene"], "What is it?", max_new_tokens=2)


def test_inspect_fails_a_bundle_that_reads_outside_itself(bundles, tmp_path):
    """A crafted bundle whose vision graph stores a weight in ../secret.data (manifest re-hashed
    so every sha256 matches): inspect reports the violation as a failure and reads nothing there."""
    from tests.test_bad_inputs import outside_external_data

    bundle = tmp_path / "crafted"
    shutil.copytree(bundles["hired-fp32"], bundle)
    outside_external_data(bundle)
    result = run_cli("inspect", str(bundle))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "from '../secret.data', outside the bundle" in " ".join(result.stdout.split())
    assert "verifier FAIL" in result.stdout


def test_the_typed_manifest_names_a_malformed_field(bundles, tmp_path):
    """Every field a reader uses is checked on load; a wrong one is named, not a KeyError later."""
    from edgecompress.errors import EdgeCompressError
    from edgecompress_runtime import Manifest, read_manifest

    manifest = read_manifest(bundles["hired-fp32"])
    assert (manifest.k, manifest.method, manifest.language_model.num_layers) == (115, "hired", 4)
    assert manifest.graphs["decoder"].input("past.0.key").shape == (1, 2, "past", 16)
    assert Manifest.from_dict(manifest.data).paths() == manifest.paths()
    for change, field in [(lambda d: d.update(k="115"), "k"),
                          (lambda d: d["graphs"]["vision"].pop("file"), "graphs.vision.file"),
                          (lambda d: d["language_model"].update(num_layers=None), "language_model.num_layers"),
                          (lambda d: d["files"]["vision.onnx"].update(bytes="big"), "files.vision.onnx.bytes")]:
        data = json.loads((bundles["hired-fp32"] / "manifest.json").read_text())
        change(data)
        with pytest.raises(EdgeCompressError, match=f"manifest field {field} is missing or malformed"):
            Manifest.from_dict(data)
