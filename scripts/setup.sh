#!/usr/bin/env bash
# Create .venv with the CPU build of torch pinned first (an unpinned torch pulls several GB of
# CUDA wheels), then edgecompress and its runtime in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e runtimes/python
python -m pip install --quiet -e ".[test]"
