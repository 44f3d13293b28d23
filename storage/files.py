"""The artifact store: directories on disk under the data directory, addressed by the hash of their contents.

Intake builds a directory in `staging/`, then `commit_dir` moves it into `artifacts/<kind>/<hash>` in one rename.
A refused input therefore leaves nothing behind: its staging directory is removed whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from storage import settings

CHUNK = 1 << 20


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(directory: Path) -> list[dict[str, Any]]:
    """Every regular file under `directory` with its size and sha256, sorted by relative path."""
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        entries.append(
            {"path": path.relative_to(directory).as_posix(), "size": path.stat().st_size, "sha256": hash_file(path)}
        )
    return entries


def manifest_sha256(entries: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


@contextmanager
def staging(prefix: str) -> Iterator[Path]:
    """A fresh staging directory that is always removed when the block ends (committed or not)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=settings.staging_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit_dir(source: Path, kind: str, sha256: str) -> tuple[Path, bool]:
    """Move `source` to artifacts/<kind>/<sha256>. Returns (path, created); identical content is stored once."""
    target = settings.artifacts_dir() / kind / sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return target, False
    try:
        os.rename(source, target)
    except OSError:
        if target.exists():  # another process committed the same content first
            return target, False
        raise
    return target, True


def remove_artifact(path: Path) -> None:
    """Remove an artifact directory, refusing anything outside the artifact store."""
    root = settings.artifacts_dir().resolve()
    path = path.resolve()
    if root in path.parents:
        shutil.rmtree(path, ignore_errors=True)
