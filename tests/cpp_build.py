"""The C++ runtime, built once per test session for the tests that drive its programs.

``runtimes/cpp/build.sh`` is incremental: after the first build of a checkout it only relinks
what changed. Tests that need a program take the ``cpp_build`` fixture (the build folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "runtimes" / "cpp" / "build.sh"
BUILD_DIR = ROOT / "runtimes" / "cpp" / "build"


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the C++ runtime needs {', '.join(missing)} to build")
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"runtimes/cpp/build.sh failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return BUILD_DIR
