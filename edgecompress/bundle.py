"""The bundle: a folder written atomically, with a manifest that is the one contract between
the compiler and the runtimes.

A bundle is staged under a hidden temporary name next to its destination and renamed into
place only when every file and the manifest are written. An error or Ctrl-C leaves nothing
behind, and an existing bundle is replaced only with ``force`` (and only after the new one
is complete).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgecompress.errors import EdgeCompressError
from edgecompress.staging import check_parent, make_staging, publish

from edgecompress_runtime.bundle import MANIFEST, SCHEMA_VERSION, read_manifest, sha256_file, verify_files

__all__ = ["BundleWriter", "check_destination", "file_table", "write_json", "MANIFEST", "SCHEMA_VERSION",
           "read_manifest", "sha256_file", "verify_files"]


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
    check_parent(out)


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
        self.staging = make_staging(self.out)
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
        publish(self.staging, self.out)


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
