"""Every CLI command with each kind of bad argument and bad file: exit 2, one message that says
what is wrong, no traceback, and nothing written or deleted.

Each case is a row of CASES: the arguments (``{bundle}``, ``{tmp}`` and the like are filled in
from files the row's ``setup`` crafts in a fresh folder), and a fragment the message must hold.
The folder is snapshotted (every path, size, sha256 and mode) before and after the command; the
two must be equal. The README's reliability section states how many rows there are.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from edgecompress.bundle import file_table, sha256_file, write_json
from tests.conftest import run_cli

RECIPE = """name = "mine"
family = "llava"
source = "bundled:weights/tiny-llava-49"
[prompt]
template = "USER: <image>\\n{prompt} ASSISTANT:"
[preprocess]
resize_shortest_edge = 112
crop_size = 112
resample = "bicubic"
rescale_factor = 0.00392156862745098
image_mean = [0.48145466, 0.4578275, 0.40821073]
image_std = [0.26862954, 0.26130258, 0.27577711]
"""

PROFILE = """name = "board"
description = "my board"
backend = "tensorrt-rtx"
compute_capability = "8.9"
memory_gib = 8.0
shared_memory = false
reserved_gib = 1.0
precision = "fp16"
workspace_gib = 1.0
max_prompt_tokens = 128
max_output_tokens = 64
"""


# -- crafting bad files -------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size, sha256 and mode (links not followed)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", info.st_mode)
            else:
                state[rel] = ("file", info.st_size, sha256_file(path), info.st_mode)
    return state


def copy_bundle(source: Path, tmp: Path) -> Path:
    bundle = tmp / "bundle"
    shutil.copytree(source, bundle)
    return bundle


def edit_manifest(bundle: Path, change: Callable[[dict], None], *, rehash: bool = False) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    if rehash:  # a bundle crafted whole: its hashes match the tampered files
        manifest["files"] = file_table(bundle)
    write_json(bundle / "manifest.json", manifest)


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels in its header (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def outside_external_data(bundle: Path) -> None:
    """vision.onnx rewritten so one weight is read from ../secret.data, manifest re-hashed."""
    import onnx

    (bundle.parent / "secret.data").write_bytes(b"\x00" * 4096)
    model = onnx.load(str(bundle / "vision.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
                break
        else:
            continue
        break
    onnx.save(model, str(bundle / "vision.onnx"))
    edit_manifest(bundle, lambda m: None, rehash=True)


@dataclass
class Case:
    id: str
    args: list[str]
    message: str  # a fragment the one-line message must hold
    setup: Callable[[Path, dict], None] = lambda tmp, paths: None
    needs_bundle: bool = False
    in_stdout: bool = False  # bare `edgecompress` prints its help on stdout
    files: dict[str, str] = field(default_factory=dict)  # name -> text written before the run


def with_bundle(change: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, paths: dict) -> None:
        change(paths["bundle"])
    return setup


def image_file(kind: str) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, paths: dict) -> None:
        from PIL import Image

        if kind == "text":
            (tmp / "img.png").write_text("this is not a picture")
        elif kind == "1x1":
            Image.new("RGB", (1, 1)).save(tmp / "img.png")
        elif kind == "bomb":
            png_header(tmp / "img.png", 20000, 20000)
        elif kind == "truncated":
            Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp / "full.png")
            data = (tmp / "full.png").read_bytes()
            (tmp / "img.png").write_bytes(data[: len(data) // 2])
            (tmp / "full.png").unlink()
    return setup


def good_image(tmp: Path, paths: dict) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp / "img.png")


def dataset(lines: list[str], image: str = "good") -> Callable[[Path, dict], None]:
    def setup(tmp: Path, paths: dict) -> None:
        (image_file(image) if image != "good" else good_image)(tmp, paths)
        (tmp / "data.jsonl").write_text("\n".join(lines) + "\n")
    return setup


ROW = '{"image": "img.png", "question": "How many shapes are there?", "answer": "1", "type": "count"}'
RUN = ["run", "{bundle}", "--image", "{tmp}/img.png", "--prompt", "What is it?"]

CASES = [
    # usage errors (click's own message, no traceback)
    Case("bare", [], "Usage: edgecompress", in_stdout=True),
    Case("unknown-option", ["--bogus"], "No such option: --bogus"),
    Case("unknown-list", ["list", "foo"], "'foo' is not one of"),
    Case("export-no-model", ["export"], "Missing argument 'model'"),
    Case("run-no-image", ["run", "{tmp}"], "Missing option '--image'"),
    Case("run-tokens-zero", RUN + ["--max-new-tokens", "0"], "--max-new-tokens", needs_bundle=True, setup=good_image),
    # export: options
    Case("budget-empty", ["export", "tiny-llava", "--budget", "", "--out", "{tmp}/b"], "--budget is empty"),
    Case("budget-range", ["export", "tiny-llava", "--budget", "150%", "--out", "{tmp}/b"], "out of range"),
    Case("budget-garbage", ["export", "tiny-llava", "--budget", "lots", "--out", "{tmp}/b"], "invalid budget 'lots'"),
    Case("method-unknown", ["export", "tiny-llava", "--method", "magic", "--out", "{tmp}/b"], "unknown selection method 'magic'"),
    Case("method-combination", ["export", "tiny-llava", "--method", "hired+tome", "--out", "{tmp}/b"],
         "cannot combine 'hired' and 'tome'"),
    Case("tome-budget-unreachable", ["plan", "tiny-llava-49", "--method", "tome", "--budget", "10%", "--profile", "cpu"],
         "ToMe can merge 49 patches down to 7 at the least in 3 layers"),
    Case("precision-unknown", ["export", "tiny-llava", "--precision", "fp8", "--out", "{tmp}/b"], "unknown precision 'fp8'"),
    Case("model-unknown", ["export", "no-such-model", "--out", "{tmp}/b"], "unknown model 'no-such-model'"),
    Case("out-under-a-file", ["export", "tiny-llava", "--out", "{tmp}/afile/x/y"], "afile is a file, not a folder",
         files={"afile": "keep me"}),
    # export: bad recipes and checkpoints
    Case("recipe-template", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "prompt.template must hold exactly one <image>",
         files={"r.toml": RECIPE.replace("<image>\\n", "")}),
    Case("recipe-two-prompts", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "exactly one {prompt}",
         files={"r.toml": RECIPE.replace("{prompt}", "{prompt} {prompt}")}),
    Case("recipe-unknown-key", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "unknown keys: colour",
         files={"r.toml": RECIPE.replace("[prompt]", 'colour = "blue"\n[prompt]')}),
    Case("recipe-preprocess", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "preprocess.crop_size = -3 is not allowed",
         files={"r.toml": RECIPE.replace("crop_size = 112", "crop_size = -3")}),
    Case("recipe-std-zero", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "preprocess.image_std",
         files={"r.toml": RECIPE.replace("0.26862954", "0.0")}),
    Case("recipe-resample", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "preprocess.resample = 'smooth'",
         files={"r.toml": RECIPE.replace('"bicubic"', '"smooth"')}),
    Case("recipe-not-toml", ["export", "{tmp}/r.toml", "--out", "{tmp}/b"], "is not valid TOML", files={"r.toml": "name = "}),
    Case("checkpoint-truncated", ["export", "{tmp}/ck", "--out", "{tmp}/b"], "model.safetensors is truncated or corrupt",
         setup=lambda tmp, paths: (shutil.copytree(paths["checkpoint"], tmp / "ck"),
                                   truncate(tmp / "ck" / "model.safetensors", (tmp / "ck" / "model.safetensors").stat().st_size - 100))),
    Case("checkpoint-garbage", ["export", "{tmp}/ck", "--out", "{tmp}/b"], "not a valid safetensors file",
         setup=lambda tmp, paths: (shutil.copytree(paths["checkpoint"], tmp / "ck"),
                                   (tmp / "ck" / "model.safetensors").write_bytes(b"garbage"))),
    # profiles
    Case("profile-lots", ["plan", "tiny-llava", "--profile", "{tmp}/p.toml"], "memory_gib = 'lots' is not allowed",
         files={"p.toml": PROFILE.replace("8.0", '"lots"')}),
    Case("profile-nan", ["plan", "tiny-llava", "--profile", "{tmp}/p.toml"], "memory_gib = nan is not allowed",
         files={"p.toml": PROFILE.replace("8.0", "nan")}),
    Case("profile-inf", ["plan", "tiny-llava", "--profile", "{tmp}/p.toml"], "memory_gib = inf is not allowed",
         files={"p.toml": PROFILE.replace("8.0", "inf")}),
    Case("profile-negative", ["plan", "tiny-llava", "--profile", "{tmp}/p.toml"], "reserved_gib = -1.0 is not allowed",
         files={"p.toml": PROFILE.replace("reserved_gib = 1.0", "reserved_gib = -1.0")}),
    Case("profile-tokens", ["plan", "tiny-llava", "--profile", "{tmp}/p.toml"], "max_prompt_tokens = 1.5 is not allowed",
         files={"p.toml": PROFILE.replace("= 128", "= 1.5")}),
    Case("profile-name-path", ["build", "{bundle}", "--profile", "{tmp}/p.toml"], "name = '../../escape' is not allowed",
         files={"p.toml": PROFILE.replace('"board"', '"../../escape"')}, needs_bundle=True),
    Case("profile-unknown", ["plan", "tiny-llava", "--profile", "no-such-board"], "unknown profile 'no-such-board'"),
    # dataset
    Case("width-small", ["dataset", "shapes", "--out", "{tmp}/d", "--width", "20"], "--width 20 is out of range"),
    Case("width-zero", ["dataset", "shapes", "--out", "{tmp}/d", "--width", "0"], "--width 0 is out of range"),
    Case("width-huge", ["dataset", "shapes", "--out", "{tmp}/d", "--width", "100000"], "--width 100000 is out of range"),
    Case("count-zero", ["dataset", "shapes", "--out", "{tmp}/d", "--count", "0"], "--count 0 is out of range"),
    Case("dataset-under-a-file", ["dataset", "shapes", "--out", "{tmp}/afile/d", "--count", "2"], "afile is a file",
         files={"afile": "keep me"}),
    # bundles
    Case("bundle-missing", ["run", "{tmp}/nothing", "--image", "x.png", "--prompt", "hi"], "does not exist"),
    Case("bundle-not-a-bundle", ["inspect", "{tmp}"], "is not an edgecompress bundle"),
    Case("manifest-not-json", RUN, "manifest.json is corrupt", needs_bundle=True,
         setup=lambda tmp, paths: (good_image(tmp, paths), (paths["bundle"] / "manifest.json").write_text("{"))),
    Case("schema-version", RUN, "manifest schema version 99", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), edit_manifest(p["bundle"], lambda m: m.update(schema_version=99)))),
    Case("onnx-truncated", RUN, "vision.onnx does not match its sha256", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), truncate(p["bundle"] / "vision.onnx", 100))),
    Case("onnx-truncated-rehashed", RUN, "vision.onnx is not a readable ONNX graph", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), truncate(p["bundle"] / "vision.onnx", 100),
                               edit_manifest(p["bundle"], lambda m: None, rehash=True))),
    Case("wrong-sha256", RUN, "embed_tokens.npy does not match its sha256", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), edit_manifest(
             p["bundle"], lambda m: m["files"]["embed_tokens.npy"].update(sha256="0" * 64)))),
    Case("tokenizer-missing", RUN, "tokenizer.json is missing", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), (p["bundle"] / "tokenizer.json").unlink())),
    Case("path-traversal", RUN, "outside the bundle", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), edit_manifest(
             p["bundle"], lambda m: m["tokenizer"].update(file="../../../../etc/passwd")))),
    Case("absolute-path", RUN, "not a relative path", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), edit_manifest(p["bundle"], lambda m: m["embeddings"].update(file="/etc/passwd")))),
    Case("symlink-out", RUN, "is a link to", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), (tmp / "elsewhere.json").write_text("{}"),
                               (p["bundle"] / "tokenizer.json").unlink(),
                               (p["bundle"] / "tokenizer.json").symlink_to(tmp / "elsewhere.json"))),
    Case("external-data-out", RUN, "from '../secret.data', outside the bundle", needs_bundle=True,
         setup=lambda tmp, p: (good_image(tmp, p), outside_external_data(p["bundle"]))),
    Case("backend-unknown", RUN + ["--backend", "quantum"], "unknown backend 'quantum'", needs_bundle=True, setup=good_image),
    # images and prompts
    Case("image-missing", RUN, "img.png does not exist", needs_bundle=True),
    Case("image-not-an-image", RUN, "is not an image PIL can read", needs_bundle=True, setup=image_file("text")),
    Case("image-1x1", RUN, "is 1x1 pixels", needs_bundle=True, setup=image_file("1x1")),
    Case("image-bomb", RUN, "(400000000 pixels) exceeds limit", needs_bundle=True, setup=image_file("bomb")),
    Case("image-truncated", RUN, "cannot read image", needs_bundle=True, setup=image_file("truncated")),
    Case("prompt-blank", ["run", "{bundle}", "--image", "{tmp}/img.png", "--prompt", "   "], "the prompt is empty",
         needs_bundle=True, setup=good_image),
    Case("prompt-image-token", ["run", "{bundle}", "--image", "{tmp}/img.png", "--prompt", "<image> twice"],
         "exactly one image placeholder", needs_bundle=True, setup=good_image),
    # validate
    Case("jsonl-broken-line", ["validate", "{bundle}", "--dataset", "{tmp}/data.jsonl"], "data.jsonl:2 is not valid JSON",
         needs_bundle=True, setup=dataset([ROW, '{"image": "img.png", "question": '])),
    Case("jsonl-missing-field", ["validate", "{bundle}", "--dataset", "{tmp}/data.jsonl"], "must be an object with string fields",
         needs_bundle=True, setup=dataset(['{"image": "img.png"}'])),
    Case("jsonl-empty", ["validate", "{bundle}", "--dataset", "{tmp}/data.jsonl"], "has no questions",
         needs_bundle=True, setup=dataset([""])),
    Case("dataset-folder", ["validate", "{bundle}", "--dataset", "{tmp}"], "is a folder; --dataset wants a .jsonl file",
         needs_bundle=True, setup=dataset([ROW])),
    Case("dataset-bad-image", ["validate", "{bundle}", "--dataset", "{tmp}/data.jsonl"], "is not an image PIL can read",
         needs_bundle=True, setup=dataset([ROW], image="text")),
]


@pytest.fixture(scope="module")
def sources(bundles, tiny_checkpoint) -> dict:
    from edgecompress.models.loading import bundled_checkpoint

    return {"bundle": bundles["hired-fp32"], "checkpoint": bundled_checkpoint("bundled:weights/tiny-llava-49")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, sources, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    paths = {"checkpoint": sources["checkpoint"]}
    if case.needs_bundle:
        paths["bundle"] = copy_bundle(sources["bundle"], work)
    for name, text in case.files.items():
        (work / name).write_text(text)
    case.setup(work, paths)
    args = [a.format(tmp=work, bundle=paths.get("bundle", "")) for a in case.args]
    before = snapshot(work)

    result = run_cli(*args, cwd=work)

    output = result.stdout if case.in_stdout else result.stderr
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert case.message in " ".join(output.split()), output  # rich wraps long lines
    if not case.in_stdout:
        assert output.count("error:") + output.count("Error:") == 1, output  # one message
    assert snapshot(work) == before  # nothing written, nothing deleted


def test_the_table_covers_every_command():
    commands = {c.args[0] for c in CASES if c.args} | {"(bare)"}
    assert commands >= {"(bare)", "export", "run", "inspect", "validate", "build", "plan", "list", "dataset"}
