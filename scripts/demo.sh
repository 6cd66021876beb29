#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default model, offline:
# export tiny-llava (trained on the shapes questions) at a 20% HiRED budget, inspect the
# bundle, make a few shapes pictures, and answer their questions with the torch-free runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
edgecompress export tiny-llava --budget 20% --force
edgecompress inspect out/tiny-llava-hired-b20
edgecompress dataset shapes --out out/demo-data --count 20 --seed 3 --force
python - <<'PY'
import json, subprocess
for line in open("out/demo-data/test.jsonl"):
    row = json.loads(line)
    print(f"\n{row['image']}: {row['question']}  (expected: {row['answer']})", flush=True)
    subprocess.run(["edgecompress", "run", "out/tiny-llava-hired-b20", "--image", f"out/demo-data/{row['image']}",
                    "--prompt", row["question"], "--max-new-tokens", "4"], check=True)
PY
edgecompress validate out/tiny-llava-hired-b20 --dataset out/demo-data/test.jsonl
