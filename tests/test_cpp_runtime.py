"""The C++ runtime (runtimes/cpp) against the Python runtime on the same bundles: the same
generated tokens, the same text, the same kept indices; its unit tests (ctest); its C API through
ctypes; bad input as one message and exit status 2.

Both runtimes run the same graphs with the same ONNX Runtime build and feed them the same
preprocessed pixels (the C++ resize is PIL's arithmetic, tested in test_cpp_preprocess.py), so
the comparison is exact equality: tokens, text and kept indices, no tolerance.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecompress_runtime.pipeline import Pipeline
from tests.cpp_build import build_cpp
from tests.cpp_parity import C_CALLBACK, MAX_NEW, PROMPTS, assert_same_answers, c_api, run_app, write_photos


@pytest.fixture(scope="module")
def build() -> Path:
    return build_cpp()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("cpp-images"))



@pytest.mark.parametrize("name", ["hired-fp32", "none-fp32", "hired-fp16"])
def test_llava_bundles_answer_token_for_token_as_python(build, bundles, photos, name, tmp_path):
    assert_same_answers(build, bundles[name], photos, tmp_path)


@pytest.mark.parametrize("name", ["hired", "none"])
def test_llava_next_bundles_answer_token_for_token_as_python(build, next_bundles, photos, name, tmp_path):
    assert_same_answers(build, next_bundles[name], photos, tmp_path)


def test_streamed_text_is_the_answer(build, bundles, photos):
    """Without --json the app streams pieces to stdout: together they are the Python text."""
    bundle = bundles["hired-fp32"]
    done = run_app(build, "--bundle", bundle, "--image", photos[0], "--prompt", PROMPTS[0], "--max-new-tokens", MAX_NEW, "--stats")
    assert done.returncode == 0, done.stderr
    want = Pipeline.load(bundle).generate(str(photos[0]), PROMPTS[0], max_new_tokens=MAX_NEW)
    assert done.stdout == want + "\n"
    assert "TTFT" in done.stderr and "tokens/s" in done.stderr


def test_unit_tests_pass(build):
    done = subprocess.run(["ctest", "--output-on-failure"], cwd=build, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "tests passed" in done.stdout


def test_c_api_from_another_language(build, bundles, photos):
    """The C API through Python's ctypes: the answer, streamed pieces, and errors as strings."""
    lib = c_api(build)
    callback_type = C_CALLBACK

    assert lib.ec_pipeline_load(b"/no/such/bundle", None, 0) is None
    assert lib.ec_last_error() == b"bundle /no/such/bundle does not exist"

    bundle = bundles["hired-fp32"]
    pipe = lib.ec_pipeline_load(str(bundle).encode(), b"onnxruntime", 1)
    assert pipe, lib.ec_last_error()
    pieces: list[bytes] = []
    text_pointer = lib.ec_generate(pipe, str(photos[1]).encode(), PROMPTS[1].encode(), MAX_NEW,
                                   callback_type(lambda piece, _: pieces.append(piece)), None)
    assert text_pointer, lib.ec_last_error()
    text = ctypes.string_at(text_pointer).decode()
    lib.ec_free(text_pointer)
    assert text == Pipeline.load(bundle).generate(str(photos[1]), PROMPTS[1], max_new_tokens=MAX_NEW)
    assert b"".join(pieces).decode() == text
    assert lib.ec_generate(pipe, b"/no/such.png", b"hi", 4, callback_type(lambda *_: None), None) is None
    assert lib.ec_last_error() == b"image /no/such.png does not exist"
    lib.ec_pipeline_free(pipe)


def test_tokenize_file_gives_the_python_tokenizers_ids(build, bundles, tmp_path):
    from tokenizers import Tokenizer

    bundle = bundles["hired-fp32"]
    texts = ["What is in the picture?", "  two  spaces\tand a tab\n", "café ünïcödé 日本語 🙂", "<image> is special", ""]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in texts))
    done = run_app(build, "--bundle", bundle, "--tokenize-file", path)
    assert done.returncode == 0, done.stderr
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    want = [" ".join(map(str, tokenizer.encode(t, add_special_tokens=False).ids)) for t in texts]
    assert done.stdout.splitlines() == want


def test_bad_input_is_one_message_and_exit_2(build, bundles, photos, tmp_path):
    bundle = bundles["hired-fp32"]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(bundle, corrupt)
    with open(corrupt / "embed_tokens.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    cases = {
        ("--bundle", tmp_path / "missing", "--image", photos[0], "--prompt", "hi"): f"bundle {tmp_path / 'missing'} does not exist",
        ("--bundle", bundle, "--image", tmp_path / "none.png", "--prompt", "hi"): f"image {tmp_path / 'none.png'} does not exist",
        ("--bundle", bundle, "--image", not_image, "--prompt", "hi"): f"{not_image} is not an image",
        ("--bundle", bundle, "--image", photos[0], "--prompt", "  "): "the prompt is empty",
        ("--bundle", bundle, "--image", photos[0], "--prompt", "hi", "--max-new-tokens", "0"): "--max-new-tokens must be an integer of at least 1",
        ("--bundle", bundle, "--image", photos[0], "--prompt", "hi", "--max-new-tokens", "5000"): "over this bundle's maximum sequence",
        ("--bundle", bundle, "--image", photos[0], "--prompt", "hi", "--backend", "cuda"): "unknown backend 'cuda'",
        ("--bundle", corrupt, "--image", photos[0], "--prompt", "hi"): "embed_tokens.npy does not match its sha256",
        ("--bundle", bundle, "--image", photos[0]): "give --image and --prompt",
        ("--frobnicate",): "unknown option --frobnicate",
    }
    for args, message in cases.items():
        done = run_app(build, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
        assert done.stdout == ""


def test_an_application_finds_the_installed_runtime_with_cmake(build, bundles, photos, tmp_path):
    """`cmake --install`, then examples/embed configured with find_package(edgecompress_runtime):
    it builds, and its streamed answer is the Python runtime's."""
    prefix, example = tmp_path / "prefix", build.parent / "examples" / "embed"
    steps = [["cmake", "--install", str(build), "--prefix", str(prefix)],
             ["cmake", "-S", str(example), "-B", str(tmp_path / "embed"), f"-DCMAKE_PREFIX_PATH={prefix}"],
             ["cmake", "--build", str(tmp_path / "embed")]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    bundle = bundles["hired-fp32"]
    done = subprocess.run([str(tmp_path / "embed" / "describe"), str(bundle), str(photos[2])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    want = Pipeline.load(bundle).generate(str(photos[2]), "What is in the picture?", max_new_tokens=32)
    assert done.stdout == want + "\n"
    assert "tokens/s" in done.stderr
