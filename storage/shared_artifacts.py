"""Artifacts every node of a cluster can use, addressed by kind and sha256 under WORKBENCH_ARTIFACT_ROOT.

A row stores an artifact's key, `<kind>/<sha256>` (`variants/ab12...`), not a path: each node resolves the key under
its own view of the root (`storage.entities.from_row` calls `local_dir`, so every reader of `artifact_dir` gets a path
on this node). Rows written before keys hold absolute paths: where the path exists they are used as they are, and
elsewhere they resolve by their `<kind>/<sha256>` tail like a key.

The root is a directory (default $WORKBENCH_HOME/artifacts; on a cluster a shared filesystem mounted on every node)
or an fsspec URL (file://, s3://, gcs://, ...).
- Directory: an artifact is committed there by one rename (`files.commit_dir`), so a folder named by its sha256 is
  complete. `ensure` checks that it is there with every file of its manifest at its size, and otherwise fails
  with a reason that names the artifact, its sha256, the root and this node's hostname, and what to do.
- URL: `publish` uploads a new artifact's files first and its commit marker (`.complete`, holding the manifest)
  last, the marker itself written under a temporary name and moved into place; a reader takes nothing without
  the marker. `ensure` downloads into a staging folder beside this node's cache
  ($WORKBENCH_HOME/artifact-cache/<kind>/<sha256>), checks every file against the stored manifest's sha256 and
  renames the folder into place, so the cache only ever holds complete, verified artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

from storage import settings
from storage.errors import InvalidInput, WorkbenchError

KEY = re.compile(r"(?P<kind>[a-z][a-z0-9_-]*)/(?P<sha>[0-9a-f]{64})")
MARKER = ".complete"


class ArtifactUnavailable(WorkbenchError):
    """An artifact a job or a server needs is not usable on this node (missing, incomplete, or corrupt)."""


def key(kind: str, sha256: str) -> str:
    """What a row stores for the artifact of `kind` with that sha256."""
    return f"{kind}/{sha256}"


def key_of(stored: str) -> tuple[str, str] | None:
    """(kind, sha256) of a key or of a path ending in `<kind>/<sha256>`; None for any other path."""
    match = KEY.fullmatch("/".join(Path(stored).parts[-2:]))
    return (match["kind"], match["sha"]) if match else None


def local_dir(stored: str) -> str:
    """Where the artifact a row names is on this node: a key under this node's artifact root (or its cache of a
    URL root); an absolute path from before keys as it is where it exists, else by its key."""
    found = key_of(stored)
    if found is None or (Path(stored).is_absolute() and Path(stored).exists()):
        return stored
    return str(settings.artifacts_dir() / found[0] / found[1])


def ensure_variant(variant: Any, *, check_files: bool = True) -> Path:
    """The variant's folder on this node, fetched first from a URL root; ArtifactUnavailable saying why not.

    `check_files=False`: under a directory root only the folder's presence is checked, for callers that check
    every file themselves with their own messages (a download, an export, a server's readiness)."""
    return ensure(variant.artifact_dir, what=f"variant {variant.id} {variant.name!r} (model {variant.model_id})",
                  files=variant.files if check_files else None)


def ensure_dataset(dataset: Any) -> Path:
    return ensure(dataset.artifact_dir, what=f"dataset {dataset.id} {dataset.name!r}")


def ensure(artifact_dir: str, *, what: str, files: list[dict[str, Any]] | None = None) -> Path:
    """The artifact at `artifact_dir` (as `local_dir` resolved it), complete on this node, or ArtifactUnavailable.

    Under a directory root, each file of `files` (a manifest) must be there at its size; a fetch from a URL root
    always checks every file's sha256. A folder that is not named by a key (a test's made-up row, an exported
    bundle's own copy) is returned as it is: there is nothing to look it up by."""
    path = Path(artifact_dir)
    found = key_of(artifact_dir)
    if found is None:
        return path
    kind, sha = found
    if settings.artifact_root_is_url() and path == settings.artifacts_dir() / kind / sha:
        return _fetch(kind, sha, files, what)  # `files` None: the marker's manifest, checked against the sha256
    _check_present(path, sha, files, what)
    return path


def _node() -> str:
    return socket.gethostname()


def _check_present(path: Path, sha: str, files: list[dict[str, Any]] | None, what: str) -> None:
    root = path.parent.parent
    if not path.is_dir():
        raise ArtifactUnavailable(
            f"{what} (sha256 {sha}) is not on node {_node()}: {path.parent.name}/{sha} is missing under the "
            f"artifact root {root}; mount the shared artifact root at that path on this node (or set "
            "WORKBENCH_ARTIFACT_ROOT to where it is mounted, or to a URL every node can fetch from), or copy "
            "the artifact there, then try again")
    for entry in files or ():
        file = path / entry["path"]
        size = file.stat().st_size if file.is_file() else None
        if size != entry["size"]:
            state = "missing" if size is None else f"{size:,} bytes, not {entry['size']:,}"
            raise ArtifactUnavailable(
                f"{what} (sha256 {sha}) is incomplete under the artifact root {root} on node {_node()}: "
                f"{entry['path']} is {state}; it is still being copied there or the copy broke: copy "
                f"{path.parent.name}/{sha} again, then try again")


def _remote(kind: str, sha: str):
    """The fsspec filesystem of the URL root and the artifact's folder on it."""
    import fsspec

    root = settings.artifact_root()
    try:
        fs, base = fsspec.core.url_to_fs(root)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs, gcsfs) not installed
        raise InvalidInput(f"WORKBENCH_ARTIFACT_ROOT={root!r} cannot be used here: {exc}") from None
    return fs, f"{base.rstrip('/')}/{kind}/{sha}"


def _inside(folder: Path, relative: str) -> Path:
    """`folder/relative`, refusing a manifest path that would leave the folder (`..`, an absolute path)."""
    target = (folder / relative).resolve()
    if folder.resolve() not in target.parents:
        raise ArtifactUnavailable(f"the manifest names {relative!r}, outside the artifact's folder: refusing it")
    return target


def _fetch(kind: str, sha: str, files: list[dict[str, Any]] | None, what: str) -> Path:
    from storage.files import hash_file, manifest_sha256

    cache = settings.artifacts_dir() / kind / sha
    if cache.is_dir():  # only ever renamed into place complete and verified
        return cache
    root = settings.artifact_root()
    fs, remote = _remote(kind, sha)
    try:
        marker = json.loads(fs.cat_file(f"{remote}/{MARKER}"))
        expected = files or marker["files"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        raise ArtifactUnavailable(
            f"{what} (sha256 {sha}) is not complete at the artifact root {root} (no {MARKER} marker: its upload "
            f"has not finished, or it was never uploaded there), so node {_node()} cannot fetch it; check that "
            "every node's WORKBENCH_ARTIFACT_ROOT names the same place, or copy the artifact there from the "
            f"artifact-cache/{kind}/{sha} folder of the node that made it, then try again") from None
    if manifest_sha256(expected) != sha:
        raise ArtifactUnavailable(f"{what}: the manifest at {root}/{kind}/{sha} does not hash to {sha}; refusing it")
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".fetch-{sha[:16]}-", dir=cache.parent))
    try:
        for entry in expected:
            target = _inside(staging, entry["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(f"{remote}/{entry['path']}", str(target))
            except FileNotFoundError:
                raise ArtifactUnavailable(f"{what} (sha256 {sha}): {entry['path']} is missing at the artifact root "
                                          f"{root} though its upload was committed; upload it again") from None
        corrupt = [e["path"] for e in expected if hash_file(staging / e["path"]) != e["sha256"]]
        if corrupt:
            raise ArtifactUnavailable(
                f"{what} (sha256 {sha}) fetched from {root} by node {_node()} is corrupt: {corrupt[0]} "
                f"({len(corrupt)} of {len(expected)} files) differs from its sha256 in the stored manifest; "
                f"refused, nothing kept; upload {kind}/{sha} again from a node that has a good copy")
        try:
            os.rename(staging, cache)
        except OSError:
            if not cache.is_dir():  # else another process of this node fetched it first: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def publish(local: Path, kind: str, sha: str, entries: list[dict[str, Any]] | None = None) -> bool:
    """Upload a committed artifact to the URL root unless it is there complete already. Returns whether it
    uploaded. The files go first, the `.complete` marker (the manifest) last, so no reader takes a partial one."""
    from storage.files import manifest

    fs, remote = _remote(kind, sha)
    if fs.exists(f"{remote}/{MARKER}"):
        return False
    entries = entries if entries is not None else manifest(local)
    for entry in entries:
        target = f"{remote}/{entry['path']}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)  # a no-op on object stores; needed on file://
        fs.put_file(str(local / entry["path"]), target)
    # the marker under a temporary name, then moved: one rename on a filesystem, one object copy on a store, so a
    # reader never parses half a manifest
    partial = f"{remote}/{MARKER}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(partial, json.dumps({"kind": kind, "sha256": sha, "files": entries}, sort_keys=True).encode())
    fs.mv(partial, f"{remote}/{MARKER}")
    return True


def withdraw(kind: str, sha: str) -> None:
    """Remove an artifact this process just uploaded (intake refused what it made): the marker first, so no reader
    takes what remains while the files go."""
    fs, remote = _remote(kind, sha)
    if fs.exists(f"{remote}/{MARKER}"):
        fs.rm(f"{remote}/{MARKER}")
    if fs.exists(remote):
        fs.rm(remote, recursive=True)
