"""Reading a bundle: the manifest (the one contract with the compiler), its file hashes, and
the rule that every path a runtime opens resolves inside the bundle.

The manifest's ``files`` table (sha256 and size) covers what the export wrote: the compiled
graphs and their weights, the token embeddings, the tokenizer. Engines that ``build`` adds have
their own table (``engines.<profile>.graphs.<graph>.sha256``), checked when they are loaded;
``reports/`` is never part of the contract. A bundle copied without ``engines/`` or ``reports/``
still opens.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import MANIFEST, SCHEMA_VERSION, Manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest, typed, after checking it exists, parses, has our schema version and
    well-formed fields."""
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgeCompressError(f"{path} is corrupt: {err}") from None
    return Manifest.from_dict(data, str(path))


NOT_CONTRACT = ("reports/", "engines/")  # older manifests listed these in `files`; never checked there


def _escape(bundle: Path, relative: Any) -> str | None:
    """Why ``relative`` is not a file of the bundle, or None when it resolves inside it."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or "\0" in relative:
        return f"the manifest names a file as {relative!r}, which is not a relative path"
    root = Path(bundle).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        return f"{relative} resolves to {path}, outside the bundle"
    return None


def inside(bundle: Path, relative: Any) -> Path:
    """``bundle / relative`` resolved (symlinks followed), refused unless it stays inside the bundle."""
    problem = _escape(bundle, relative)
    if problem:
        raise EdgeCompressError(f"bundle {bundle}: {problem}", hint=CONTAINMENT_HINT)
    return (Path(bundle).resolve() / relative).resolve()


CONTAINMENT_HINT = "A bundle may only refer to its own files: re-export it, or copy it without links."


def containment_problems(bundle: Path, manifest: Manifest) -> list[str]:
    """Paths in the manifest, and links in the folder, that lead outside the bundle."""
    problems = [p for p in (_escape(bundle, relative) for relative in manifest.paths()) if p]
    root = Path(bundle).resolve()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                problems.append(f"{path.relative_to(root).as_posix()} is a link to {path.resolve()}, outside the bundle")
    return problems


def external_data_problems(bundle: Path, graph_file: Path) -> list[str]:
    """External-data locations of an ONNX graph that leave the bundle. Needs the ``onnx``
    package; without it, ONNX Runtime's own check (1.32 refuses paths outside the model's
    folder) is what stands."""
    try:
        import onnx
        from onnx import external_data_helper
    except ImportError:
        return []
    try:
        model = onnx.load(str(graph_file), load_external_data=False)
    except Exception as err:  # a truncated or foreign file: protobuf's own error
        return [f"{Path(graph_file).name} is not a readable ONNX graph ({type(err).__name__})"]
    root = Path(bundle).resolve()
    problems = []
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = external_data_helper.ExternalDataInfo(tensor).location
        target = (Path(graph_file).resolve().parent / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            problems.append(f"{Path(graph_file).name} reads tensor {tensor.name!r} from {location!r}, outside the bundle")
    return problems


def verify_files(bundle: Path, manifest: Manifest) -> list[str]:
    """Problems with the bundle's files against the manifest's hashes (empty when intact)."""
    problems = []
    for rel, entry in manifest.files.items():
        if rel.startswith(NOT_CONTRACT):
            continue
        try:
            path = inside(bundle, rel)
        except EdgeCompressError:
            problems.append(f"{rel} is outside the bundle")
            continue
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            problems.append(f"{rel} does not match its sha256 in the manifest (modified or corrupt)")
    return problems


def open_bundle(bundle: Path, *, check_hashes: bool = True) -> Manifest:
    """Read and check a bundle before anything runs; refuse with the offending file named."""
    manifest = read_manifest(bundle)
    escapes = containment_problems(bundle, manifest)
    if escapes:
        raise EdgeCompressError(f"bundle {bundle} refers to files outside itself: " + "; ".join(escapes), hint=CONTAINMENT_HINT)
    if check_hashes:
        problems = verify_files(bundle, manifest)
        if problems:
            raise EdgeCompressError(
                f"bundle {bundle} failed its integrity check: " + "; ".join(problems),
                hint="Re-export the bundle, or copy it again completely.",
            )
    return manifest
