"""Staging folders: everything edgecompress writes (bundles, engines, data sets) is built under a
hidden name next to its destination and renamed into place only when complete.

A staging folder is named ``.<destination>.partial-<pid>-<random>``, so a later run can tell a
folder left behind by a process that was killed outright (SIGKILL, a power cut) from one that
another run is still writing: :func:`remove_stale` removes only those whose process is gone.
Ctrl-C and SIGTERM never leave one (the CLI turns SIGTERM into an interrupt and the writers
clean up on the way out).

``tempfile.mkdtemp`` creates folders with mode 0700; a published folder gets the mode any
``mkdir`` would give it under the user's umask (0755 with umask 022).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from edgecompress.errors import EdgeCompressError


def folder_mode() -> int:
    """The mode a new folder gets under the current umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _leftover_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(?:partial|old)-(\d+)-[A-Za-z0-9_-]+$")


def remove_stale(destination: Path) -> list[Path]:
    """Remove the staging (and replaced-bundle) folders of ``destination`` whose writer is no
    longer running; returns what was removed."""
    destination = Path(destination)
    parent = destination.parent
    if not parent.is_dir():
        return []
    pattern = _leftover_pattern(destination.name)
    removed = []
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def check_parent(destination: Path) -> None:
    """Refuse a destination whose parent cannot be a folder (a file on the way) or cannot be written."""
    destination = Path(destination)
    for ancestor in reversed(destination.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise EdgeCompressError(f"cannot create {destination}: {ancestor} is a file, not a folder",
                                    hint="Choose an output path whose parent folders are folders.")
    existing = destination.parent
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgeCompressError(f"cannot create {destination}: {existing} is not writable",
                                hint="Choose an output folder you can write to.")


def make_staging(destination: Path) -> Path:
    """A new, empty staging folder next to ``destination`` (after removing stale ones)."""
    destination = Path(destination)
    check_parent(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-{os.getpid()}-", dir=destination.parent))
    return staging


def publish(staging: Path, destination: Path) -> None:
    """Rename a complete staging folder to ``destination``, replacing what was there only once
    the new one is in place; the published folder gets the umask's usual mode."""
    staging, destination = Path(staging), Path(destination)
    os.chmod(staging, folder_mode())
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        destination.rename(old)
    try:
        staging.rename(destination)
    except BaseException:
        if old is not None:
            old.rename(destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
