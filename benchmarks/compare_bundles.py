"""Do two bundles behave the same? Kept token indices and greedy tokens, image by image.

    python benchmarks/compare_bundles.py OLD_BUNDLE NEW_BUNDLE [--data out/data-shapes/test.jsonl] [--limit 20]

For every question of a shapes-style JSONL (or, with no --data, a few generated pictures) both
bundles answer through the torch-free runtime; the table gives how many images kept the same
token indices and how many answers are token-for-token equal, and the script exits 1 if any
differ. Used to show that a refactor changed no behaviour: export the same recipe, method and
budget with the previous commit and with this one, and compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def questions(data: str | None, limit: int) -> list[tuple[Path, str]]:
    if data is None:
        from edgecompress.data.shapes import generate_shapes

        folder = Path(tempfile.mkdtemp(prefix="compare-")) / "data"
        data = str(generate_shapes(folder, count=limit, seed=5, test_fraction=0.5)["test"])
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()][:limit]
    return [(Path(data).parent / row["image"], row["question"]) for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--data", help="a JSONL data set (default: 10 generated shapes pictures)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    from edgecompress_runtime import Pipeline

    old, new = Pipeline.load(args.old), Pipeline.load(args.new)
    same_kept = same_tokens = total = 0
    for image, question in questions(args.data, args.limit):
        a = old.generate_full(image, question, max_new_tokens=args.max_new_tokens)
        b = new.generate_full(image, question, max_new_tokens=args.max_new_tokens)
        total += 1
        same_kept += a.kept_indices.tolist() == b.kept_indices.tolist()
        same_tokens += a.token_ids == b.token_ids
    print(f"| {Path(args.old).name} vs {Path(args.new).name} | {total} | {same_kept}/{total} | {same_tokens}/{total} |")
    return 0 if same_kept == same_tokens == total else 1


if __name__ == "__main__":
    sys.exit(main())
