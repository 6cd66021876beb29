"""The bundle: a folder written atomically, with a manifest that is the one contract between
the compiler and the runtimes.

A bundle is staged under a hidden temporary name next to its destination and renamed into
place only when every file and the manifest are written. An error or Ctrl-C leaves nothing
behind, and an existing bundle is replaced only with ``force`` (and only after the new one
is complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgecompress.errors import EdgeCompressError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in ``folder`` except the manifest, by relative path."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST:
            table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def check_destination(out: Path, force: bool) -> None:
    """Refuse early (before any work) when ``out`` cannot or must not be written."""
    if out.exists() and not out.is_dir():
        raise EdgeCompressError(f"output path {out} is a file", hint="Pass --out with a folder path that does not exist.")
    if out.is_dir():
        if not force:
            raise EdgeCompressError(f"{out} already exists", hint="Pass --force to replace it, or choose another --out.")
        if any(out.iterdir()) and not (out / MANIFEST).exists():
            raise EdgeCompressError(
                f"{out} exists and is not an edgecompress bundle (no {MANIFEST}); refusing to replace it even with --force",
                hint="Choose another --out, or remove the folder yourself.",
            )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise EdgeCompressError(f"cannot create {out}: {parent} is a file")


class BundleWriter:
    """Context manager that stages a bundle and publishes it atomically.

    with BundleWriter(out, force=False) as staging:
        ...write files into staging...
        writer.manifest = {...}
    """

    def __init__(self, out: Path, *, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.manifest: dict[str, Any] | None = None
        self.staging: Path | None = None

    def __enter__(self) -> "BundleWriter":
        check_destination(self.out, self.force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._publish()
        finally:
            if self.staging is not None and self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)

    def _publish(self) -> None:
        if self.manifest is None:
            raise RuntimeError("BundleWriter closed without a manifest")
        manifest = dict(self.manifest)
        manifest["files"] = file_table(self.staging)
        write_json(self.staging / MANIFEST, manifest)
        check_destination(self.out, self.force)  # it may have appeared while we worked
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            self.out.rename(old)
        try:
            self.staging.rename(self.out)
        except BaseException:
            if old is not None:
                old.rename(self.out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_manifest(bundle: Path) -> dict[str, Any]:
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
    except json.JSONDecodeError as err:
        raise EdgeCompressError(f"{path} is corrupt: {err}") from None
    version = manifest.get("schema_version")
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
