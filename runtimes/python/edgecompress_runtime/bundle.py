"""Reading a bundle: the manifest (the one contract with the compiler) and its file hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgecompress_runtime.errors import EdgeCompressError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking it exists, parses and has our schema version."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise EdgeCompressError(f"bundle {bundle} does not exist")
    path = bundle / MANIFEST
    if not path.is_file():
        raise EdgeCompressError(
            f"{bundle} is not an edgecompress bundle: it has no {MANIFEST}",
            hint="Create one with `edgecompress export MODEL`.",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgeCompressError(f"{path} is corrupt: {err}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise EdgeCompressError(
            f"{bundle} has manifest schema version {version!r}; this edgecompress reads version {SCHEMA_VERSION}",
            hint="Re-export the bundle with this version of edgecompress.",
        )
    return manifest


def verify_files(bundle: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the bundle's files against the manifest's hashes (empty when intact)."""
    problems = []
    for rel, entry in manifest.get("files", {}).items():
        path = Path(bundle) / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel} does not match its sha256 in the manifest (modified or corrupt)")
    return problems


def open_bundle(bundle: Path, *, check_hashes: bool = True) -> dict[str, Any]:
    """Read and check a bundle before anything runs; refuse with the offending file named."""
    manifest = read_manifest(bundle)
    if check_hashes:
        problems = verify_files(bundle, manifest)
        if problems:
            raise EdgeCompressError(
                f"bundle {bundle} failed its integrity check: " + "; ".join(problems),
                hint="Re-export the bundle, or copy it again completely.",
            )
    return manifest
