"""Build the C++ runtime (runtimes/cpp/build.sh: incremental) for the tests that drive it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_cpp() -> Path:
    """The build folder, after `bash runtimes/cpp/build.sh` (quick when nothing changed)."""
    subprocess.run(["bash", str(ROOT / "runtimes/cpp/build.sh")], cwd=ROOT, check=True, capture_output=True)
    return ROOT / "runtimes/cpp/build"
