"""The artifact store: directories on disk under the data directory, addressed by the hash of their contents.

Intake builds a directory in `staging/`, then `commit_dir` moves it into `<artifact root>/<kind>/<hash>` in one rename
(`artifacts/` in the data directory unless WORKBENCH_ARTIFACT_ROOT names a shared one; see storage/shared_artifacts.py).
A refused input therefore leaves nothing behind: its staging directory is removed whole.
"""

from __future__ import annotations

import errno
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


def commit_dir(source: Path, kind: str, sha256: str,
               entries: list[dict[str, Any]] | None = None) -> tuple[Path, bool]:
    """Move `source` to <artifact root>/<kind>/<sha256>. Returns (path on this node, created); identical content
    is stored once. A row records the artifact by `shared_artifacts.key(kind, sha256)`, never by this path.

    With a URL root the folder goes into this node's cache and is then uploaded (`shared_artifacts.publish`,
    `entries` being its manifest when the caller has it); `created` then says whether this call uploaded it.
    """
    from storage import shared_artifacts

    target = settings.artifacts_dir() / kind / sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    created = _move_into_place(source, target)
    if settings.artifact_root_is_url():
        created = shared_artifacts.publish(target, kind, sha256, entries)
    return target, created


def _move_into_place(source: Path, target: Path) -> bool:
    if target.exists():
        return False
    try:
        os.rename(source, target)
        return True
    except OSError as exc:
        if target.exists():  # another process committed the same content first
            return False
        if exc.errno != errno.EXDEV:
            raise
    # the root is on another filesystem than the data directory (a shared mount): copy into a private folder
    # beside the target, then rename that, so a reader never sees a half-copied artifact under its key
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        shutil.copytree(source, partial, dirs_exist_ok=True)
        os.rename(partial, target)
    except OSError:
        if target.exists():
            return False
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)  # as a rename would have left it
    return True


def remove_artifact(path: Path) -> None:
    """Remove an artifact directory just committed (its row was refused), refusing anything outside the artifact
    store; with a URL root also its upload."""
    root = settings.artifacts_dir().resolve()
    path = path.resolve()
    if root in path.parents:
        shutil.rmtree(path, ignore_errors=True)
        if settings.artifact_root_is_url():
            from storage import shared_artifacts

            shared_artifacts.withdraw(path.parent.name, path.name)
