"""The C++ runtime, built once per test session with its own script (incremental: seconds when
nothing changed), for the tests that compare it with the Python runtime."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "runtimes" / "cpp" / "build"


@lru_cache(maxsize=None)
def build_cpp() -> Path:
    """runtimes/cpp/build after `bash runtimes/cpp/build.sh`; the build's output on failure."""
    done = subprocess.run(["bash", str(ROOT / "runtimes" / "cpp" / "build.sh")], capture_output=True, text=True)
    assert done.returncode == 0, f"runtimes/cpp/build.sh failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return BUILD
