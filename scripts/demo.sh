#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default model, offline:
# export tiny-llava at a 20% HiRED budget, inspect the bundle, and run it on a picture
# with the torch-free runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
edgecompress export tiny-llava --budget 20% --force
edgecompress inspect out/tiny-llava-hired-b20
python - <<'PY'
from PIL import Image, ImageDraw
image = Image.new("RGB", (480, 360), (230, 230, 215))
draw = ImageDraw.Draw(image)
draw.rectangle((30, 40, 150, 160), fill=(20, 60, 200))
draw.ellipse((260, 80, 420, 240), fill=(240, 200, 0))
image.save("out/demo.png")
PY
edgecompress run out/tiny-llava-hired-b20 --image out/demo.png --prompt "What is in the picture?" --max-new-tokens 16 --stats
echo "(tiny-llava has random weights until issue #6 ships a trained one: the answer is not meant to make sense.)"
