"""The C++ runtime, built once per test session for the tests that drive its programs.

``runtimes/cpp/build.sh`` is incremental: after the first build of a checkout it only relinks
what changed. Tests take the ``cpp_build`` fixture (conftest.py: the build folder) or call ``build_cpp()``.
Without cmake or a C++ compiler they skip with that reason; a failed build fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "runtimes" / "cpp" / "build.sh"
BUILD_DIR = ROOT / "runtimes" / "cpp" / "build"


@lru_cache(maxsize=None)
def _build() -> str:
    """'' after a successful build, else why not (the build's output)."""
    env = {**os.environ, "PYTHON": sys.executable}  # the library of this interpreter's onnxruntime
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return f"runtimes/cpp/build.sh failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return ""


def build_cpp() -> Path:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the C++ runtime needs {', '.join(missing)} to build")
    problem = _build()
    if problem:
        pytest.fail(problem)
    return BUILD_DIR
