"""The shapes data set and `validate` on a real bundle."""

import json

import pytest

from edgecompress.bundle import sha256_file
from edgecompress.data.shapes import COLOURS, SHAPES, TYPES, generate_shapes
from edgecompress.errors import EdgeCompressError
from edgecompress.validate import load_dataset, normalise, validate_bundle
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root / "a", count=20, seed=7)
    return root / "a"


def test_generator_is_deterministic_for_a_seed(shapes, tmp_path):
    generate_shapes(tmp_path / "b", count=20, seed=7)
    generate_shapes(tmp_path / "c", count=20, seed=8)
    for name in ("train.jsonl", "test.jsonl", "images/00000.png", "images/00019.png"):
        assert sha256_file(shapes / name) == sha256_file(tmp_path / "b" / name), name
    assert sha256_file(shapes / "images/00003.png") != sha256_file(tmp_path / "c" / "images/00003.png")


def test_objects_sit_in_their_own_grid_cells():
    """Every object lies inside its own block of 48-px cells (never two in one cell); a large one
    fills a 1x1, 2x2 or 3x3 block less a 3-8 px margin, a small one is 18-30 px."""
    import numpy as np

    from edgecompress.data.shapes import CELL, _place

    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(300):
        items = _place(rng, 336, 336, int(rng.integers(1, 5)))
        cells = [{(y // CELL, x // CELL) for y in range(i.box[1], i.box[3]) for x in range(i.box[0], i.box[2])} for i in items]
        for a in range(len(cells)):
            for b in range(a + 1, len(cells)):
                assert not cells[a] & cells[b], items
        for item in items:
            x0, y0, x1, y1 = item.box
            size = x1 - x0
            assert y1 - y0 == size and 0 <= x0 and x1 <= 336 and 0 <= y0 and y1 <= 336
            if size <= 30:
                assert size >= 18 and x0 // CELL == (x1 - 1) // CELL and y0 // CELL == (y1 - 1) // CELL
            else:
                span = round(size / CELL)
                assert span in (1, 2, 3) and x0 % CELL == y0 % CELL == (span * CELL - size) // 2 and 3 <= x0 % CELL <= 8
            sizes.append(size)
    assert min(sizes) < 24 and max(sizes) > 120  # both ends of the size range occur


def test_dataset_rows_are_well_formed(shapes):
    rows = [json.loads(line) for split in ("train", "test") for line in (shapes / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and len((shapes / "test.jsonl").read_text().splitlines()) == 4  # 20% test split
    assert {r["type"] for r in rows} == set(TYPES)
    for r in rows:
        assert (shapes / r["image"]).is_file()
        allowed = {
            "colour": set(COLOURS), "shape": set(SHAPES), "count": {"1", "2", "3", "4"},
            "position": {"left", "right"}, "presence": {"yes", "no"},
        }[r["type"]]
        if r["type"] == "shape" and r["answer"] in COLOURS:  # ambiguous shape question fell back to a colour one
            allowed = set(COLOURS)
        assert r["answer"] in allowed, r


def test_existing_dataset_needs_force(shapes):
    with pytest.raises(EdgeCompressError, match="already exists"):
        generate_shapes(shapes, count=3)


@pytest.mark.parametrize("content, message", [
    ('{"image": "images/00000.png", "question": "q"}\n', r":1 must be an object with string fields"),
    ('{"image": "images/00000.png", "question": "q", "answer": "a"}\nnot json\n', r":2 is not valid JSON"),
    ('{"image": "images/missing.png", "question": "q", "answer": "a"}\n', r":1: image images/missing.png does not exist"),
    ("\n\n", "has no questions"),
])
def test_bad_datasets_are_refused_with_the_line(shapes, tmp_path, content, message):
    path = shapes / f"bad-{abs(hash(content))}.jsonl"
    path.write_text(content)
    try:
        with pytest.raises(EdgeCompressError, match=message):
            load_dataset(path)
    finally:
        path.unlink()


def test_normalise():
    assert normalise("  Red.\n") == "red" and normalise("Two  Words!") == "two words"


def test_validate_reports_three_pipelines(bundles, shapes):
    summary, report = validate_bundle(bundles["hired-fp32"], shapes / "train.jsonl", limit=5, max_new_tokens=4)
    assert summary["questions"] == 5
    # The bundle reproduces the PyTorch pruned pipeline exactly (tests/test_runtime.py), so
    # their answers agree on every question, whatever this random model answers.
    assert summary["agreement"]["bundle_vs_pytorch_pruned"] == 1.0
    assert summary["accuracy"] == summary["accuracies"]["bundle"]
    assert set(summary["by_type"]) <= set(TYPES)
    rows = (report.parent / summary["rows"]).read_text().splitlines()
    assert len(rows) == 5 and json.loads(rows[0])["line"] == 1
    assert json.loads(report.read_text())["accuracy"] == summary["accuracy"]
    assert "| **all** | 5 |" in report.with_suffix(".md").read_text()
    # Kept tokens, image by image, under the fp32 tie band: each row says how the bundle's
    # selection compares with PyTorch's, with the margin at the cut-off.
    kept = summary["kept_tokens_vs_pytorch_pruned"]
    assert kept["compared"] == 5 and kept["agree_within_tie_band"] == 1.0 and kept["min_margin"] > 0
    row = json.loads(rows[0])["selection"]
    assert row["agree"] and row["band"] > 0 and row["margin"] >= kept["min_margin"]
    assert "agree within the fp32 tie band on 100.0% of 5 images" in report.with_suffix(".md").read_text()


def test_interrupted_validate_keeps_the_rows_written(bundles, shapes):
    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    reports = bundles["hired-fp32"] / "reports"
    before = set(reports.iterdir()) if reports.exists() else set()
    with pytest.raises(KeyboardInterrupt):
        validate_bundle(bundles["hired-fp32"], shapes / "train.jsonl", limit=5, max_new_tokens=2, on_progress=stop_after_two)
    new = set(reports.iterdir()) - before
    assert [p.suffix for p in new] == [".jsonl"]
    assert len(next(iter(new)).read_text().splitlines()) == 2


def test_cli_dataset_and_validate(tmp_path, bundles):
    result = run_cli("dataset", "shapes", "--out", str(tmp_path / "d"), "--count", "5", "--seed", "3")
    assert result.returncode == 0, result.stderr
    result = run_cli("validate", str(bundles["none-fp32"]), "--dataset", str(tmp_path / "d" / "train.jsonl"), "--max-new-tokens", "2")
    assert result.returncode == 0, result.stderr
    assert "PyTorch unpruned" in result.stdout and "| **all** | 4 |" in result.stdout
    result = run_cli("validate", str(bundles["none-fp32"]), "--dataset", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_report_names_are_never_reused(tmp_path):
    from edgecompress.validate import _new_report_name

    stamp, first = _new_report_name(tmp_path)
    first.write_text("")
    _, second = _new_report_name(tmp_path)
    assert second != first and second.name.startswith(f"validate-{stamp}")
