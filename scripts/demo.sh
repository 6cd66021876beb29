#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default model, offline:
# export tiny-llava at a 20% HiRED budget, then inspect the bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
edgecompress export tiny-llava --budget 20% --force
edgecompress inspect out/tiny-llava-hired-b20
