"""A cache of exported language-model graphs, so that exporting the same model again (another
budget, another method: ``sweep`` does exactly that) skips the decoder's torch.onnx export, the
slowest step of an export (about 25 s of a 70 s tiny-llava export; minutes for a 7B).

The decoder graph depends on the language model's weights, the precision, the declared IO and
dynamic shapes, and the code that exports it; never on the image-token budget or the method
(decoder-stage methods' graphs are not cached). The key is a sha256 over all of that: every
parameter's bytes, the plan's facts, torch / transformers / onnx / onnxscript versions and the
source of the edgecompress package. An entry is the graph's files, copied (never linked: a later
step such as weight quantization rewrites the bundle's copy in place).

Where: ``$EDGECOMPRESS_CACHE/graphs`` (default ``~/.cache/edgecompress/graphs``); graphs larger
than ``EDGECOMPRESS_GRAPH_CACHE_MAX_GB`` (default 4) are not kept, and the oldest entries go
beyond ``MAX_ENTRIES``. ``EDGECOMPRESS_GRAPH_CACHE=off`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import edgecompress

MAX_ENTRIES = 8


def enabled() -> bool:
    return os.environ.get("EDGECOMPRESS_GRAPH_CACHE", "on").lower() not in ("off", "0", "no", "false")


def cache_folder() -> Path:
    from edgecompress.models.tiny import cache_root

    return cache_root() / "graphs"


def _source_digest() -> str:
    """The edgecompress package's own code: a changed exporter never reuses an old graph."""
    digest = hashlib.sha256()
    root = Path(edgecompress.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def graph_key(module, facts: dict, precision: str, spec) -> str:
    """sha256 of everything the exported graph depends on."""
    import torch

    digest = hashlib.sha256()
    for package in ("torch", "transformers", "onnx", "onnxscript"):
        try:
            digest.update(f"{package}={importlib.metadata.version(package)};".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{package}=none;".encode())
    digest.update(_source_digest().encode())
    digest.update(repr((precision, sorted(facts.items()), spec)).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reuse_graph(key: str, staging: Path) -> list[str] | None:
    """The cached graph's files copied into ``staging`` (their names), or None on a miss."""
    if not enabled():
        return None
    entry = cache_folder() / key
    listing = entry / "files.txt"
    if not listing.is_file():
        return None
    files = listing.read_text().split()
    if not files or not all((entry / name).is_file() for name in files):
        return None
    for name in files:
        shutil.copyfile(entry / name, staging / name)
    os.utime(entry)  # recently used: kept by the pruning
    return files


def keep_graph(key: str, staging: Path, files: list[str]) -> None:
    """Keep a copy of a new export, written atomically; a cache that cannot be written is skipped."""
    if not enabled():
        return
    limit = float(os.environ.get("EDGECOMPRESS_GRAPH_CACHE_MAX_GB", "4")) * 1024**3
    if sum((staging / name).stat().st_size for name in files) > limit:
        return
    entry = cache_folder() / key
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=entry.parent))
        for name in files:
            shutil.copyfile(staging / name, temporary / name)
        (temporary / "files.txt").write_text("\n".join(files) + "\n")
        try:
            temporary.rename(entry)
        except OSError:  # another export stored the same graph first
            shutil.rmtree(temporary, ignore_errors=True)
        _prune(entry.parent)
    except OSError:
        return


def _prune(folder: Path) -> None:
    entries = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)
