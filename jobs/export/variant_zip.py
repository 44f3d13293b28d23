"""A variant's files as one plain zip (weights, ONNX graphs, tokenizer, config), checked against their stored hashes.

Every file is read once: hashed while it is written into the zip, so what goes out is what the variant's `files`
manifest recorded when the variant was made. A missing, resized or changed file refuses the whole download and
leaves no zip behind. Files in the directory that the manifest does not list are not included.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from storage import catalog
from storage.entities import Variant
from storage.errors import InvalidInput
from storage.files import CHUNK
from storage.shared_artifacts import ensure_variant

CHECKSUMS = "SHA256SUMS"  # added to the zip: `sha256sum -c SHA256SUMS` checks an unzipped copy


@dataclass(frozen=True)
class VariantZip:
    path: Path
    variant_id: int
    files: list[str]  # the variant's files, as stored in the zip (relative paths)
    bytes: int  # their total size, uncompressed


def _source(variant: Variant, entry: dict) -> Path:
    root = Path(variant.artifact_dir).resolve()
    path = (root / entry["path"]).resolve()
    if root not in path.parents:
        raise InvalidInput(f"variant {variant.id}: its manifest names {entry['path']!r}, outside its directory")
    return path


def _add(archive: zipfile.ZipFile, variant: Variant, entry: dict) -> None:
    """Copy one file into the zip, hashing it on the way; refuse it when it is not what the manifest says."""
    path = _source(variant, entry)
    changed = f"variant {variant.id}: {entry['path']} changed since the variant was made"
    if not path.is_file():
        raise InvalidInput(f"variant {variant.id}: {entry['path']} is missing from {variant.artifact_dir}")
    if path.stat().st_size != entry["size"]:
        raise InvalidInput(f"{changed} (size {path.stat().st_size:,} bytes, recorded {entry['size']:,})")
    digest = hashlib.sha256()
    with open(path, "rb") as src, archive.open(entry["path"], "w", force_zip64=entry["size"] >= 1 << 31) as dst:
        for block in iter(lambda: src.read(CHUNK), b""):
            digest.update(block)
            dst.write(block)
    if digest.hexdigest() != entry["sha256"]:
        raise InvalidInput(f"{changed} (sha256 {digest.hexdigest()[:12]}…, recorded {entry['sha256'][:12]}…)")


def zip_variant(variant_ref: int | str, out: str | Path | None = None) -> VariantZip:
    """The variant's files in a zip at `out` (a new file; default: a fresh temporary directory).

    The zip is written next to its target under a temporary name and renamed only once every file has matched its
    recorded sha256, so a refused download leaves nothing.
    """
    variant = catalog.get_variant(variant_ref)
    ensure_variant(variant, check_files=False)  # here (fetched from a URL root) or why not; files: checked below
    if not variant.files:
        raise InvalidInput(f"variant {variant.id} has no recorded files to download")
    scratch = None
    if out is None:
        scratch = Path(tempfile.mkdtemp(prefix="workbench-variant-"))
        target = scratch / f"variant-{variant.id}.zip"
    else:
        target = Path(out).expanduser().resolve()
        if target.suffix.lower() != ".zip":
            raise InvalidInput(f"{target}: the file to write must end in .zip")
        if target.exists():
            raise InvalidInput(f"{target} already exists: pick a new file name")
        if not target.parent.is_dir():
            raise InvalidInput(f"{target.parent} is not a directory")
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        # weights barely compress: the fastest level keeps a large variant's download quick
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for entry in variant.files:
                _add(archive, variant, entry)
            if CHECKSUMS not in {e["path"] for e in variant.files}:
                archive.writestr(CHECKSUMS, "".join(f"{e['sha256']}  {e['path']}\n" for e in variant.files))
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        if scratch is not None:
            scratch.rmdir()
        raise
    return VariantZip(target, variant.id, [e["path"] for e in variant.files], sum(e["size"] for e in variant.files))
