"""Comparing the C++ runtime's answers with the Python runtime's (used by test_cpp_runtime.py
and by the FastV and quantized-weights tests, on their own bundles)."""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path

from edgecompress_runtime.pipeline import Pipeline
from tests.helpers import scene

MAX_NEW = 12
PROMPTS = ["What is in the picture?", "Describe the shapes and their colours, please."]


def write_photos(root: Path) -> list[Path]:
    """Odd sizes and aspect ratios (different LLaVA-NeXT grids), as PNG and JPEG files."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (size, suffix) in enumerate([((641, 479), "png"), ((333, 777), "jpg"), ((1001, 299), "png"), ((500, 500), "jpg")]):
        path = root / f"scene-{size[0]}x{size[1]}.{suffix}"
        scene(*size, seed=i).save(path, quality=90) if suffix == "jpg" else scene(*size, seed=i).save(path)
        paths.append(path)
    return paths


def c_api(build: Path):
    """The C API of the built library through ctypes, its functions' types declared."""
    lib = ctypes.CDLL(str(build / "libedgecompress_runtime.so"))
    lib.ec_pipeline_load.restype = ctypes.c_void_p
    lib.ec_pipeline_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.ec_generate.restype = ctypes.c_void_p
    lib.ec_generate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, C_CALLBACK,
                                ctypes.c_void_p]
    lib.ec_last_error.restype = ctypes.c_char_p
    lib.ec_free.argtypes = [ctypes.c_void_p]
    lib.ec_pipeline_free.argtypes = [ctypes.c_void_p]
    return lib


C_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)  # ec_generate's streaming callback


def run_app(build: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(build / "edgecompress-run"), *map(str, args)], capture_output=True, text=True, timeout=600)


def cpp_results(build: Path, bundle: Path, requests: list[dict], tmp_path: Path) -> list[dict]:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    done = run_app(build, "--bundle", bundle, "--requests", path, "--json", "--max-new-tokens", MAX_NEW)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_same_answers(build: Path, bundle: Path, photos: list[Path], tmp_path: Path, every_prompt: bool = False) -> int:
    """The C++ app's answers equal the Python runtime's: one prompt an image (alternating), or
    with ``every_prompt`` each image with each of PROMPTS. Returns the tokens compared."""
    if every_prompt:
        requests = [{"image": str(p), "prompt": prompt} for p in photos for prompt in PROMPTS]
    else:
        requests = [{"image": str(p), "prompt": PROMPTS[i % 2]} for i, p in enumerate(photos)]
    cpp = cpp_results(build, bundle, requests, tmp_path)
    pipe = Pipeline.load(bundle)
    tokens = 0
    for request, got in zip(requests, cpp, strict=True):
        want = pipe.generate_full(request["image"], request["prompt"], max_new_tokens=MAX_NEW)
        where = f"{Path(request['image']).name} / {request['prompt']!r}"
        assert got["token_ids"] == want.token_ids, where
        assert got["text"] == want.text, where
        assert got["kept_indices"] == want.kept_indices.tolist(), where
        assert got["prompt_tokens"] == want.prompt_tokens, where
        assert got["stopped_by"] == want.stopped_by, where
        tokens += len(want.token_ids)
    assert tokens > 0  # something was generated and compared
    return tokens
