"""Safe extraction of uploaded .zip / .tar.gz archives.

Every member is checked before anything is written: absolute paths, `..` components, symbolic and hard links,
device files, too many members, and a total expanded size over the limit are refused with the member named.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from storage import settings
from storage.errors import InvalidInput

MAX_MEMBERS = 10_000
# What a truncated or corrupt .tar / .tar.gz raises while it is opened or read.
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(name: str) -> None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"archive refused: member {name!r} has an absolute path")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise InvalidInput(f"archive refused: member {name!r} climbs out of the archive with '..'")


def _check_total(total: int, limit: int) -> None:
    if total > limit:
        raise InvalidInput(
            f"archive refused: it expands to more than {limit // (1 << 20)} MiB "
            f"(WORKBENCH_MAX_EXTRACTED_MB); is it the right file?"
        )


def _check_count(count: int) -> None:
    if count > MAX_MEMBERS:
        raise InvalidInput(f"archive refused: more than {MAX_MEMBERS} members")


def extract_archive(archive: Path, dest: Path) -> None:
    """Check every member of `archive`, then extract it into the empty directory `dest`."""
    limit = settings.get("WORKBENCH_MAX_EXTRACTED_MB") << 20
    name = archive.name.lower()
    if name.endswith(".zip"):
        _extract_zip(archive, dest, limit)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        _extract_tar(archive, dest, limit)
    else:
        raise InvalidInput(f"{archive.name}: not a supported archive; use .zip or .tar.gz")


def _extract_zip(archive: Path, dest: Path, limit: int) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InvalidInput(f"{archive.name}: not a valid zip file") from None
    with zf:
        infos = zf.infolist()
        _check_count(len(infos))
        total = 0
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidInput(f"archive refused: member {info.filename!r} is a symbolic link")
            file_type = stat.S_IFMT(mode)  # zips written without Unix attributes carry no type bits
            if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"archive refused: member {info.filename!r} is not a regular file")
            total += info.file_size
            _check_total(total, limit)
        try:
            for info in infos:
                zf.extract(info, dest)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as exc:
            raise InvalidInput(f"{archive.name}: damaged or unsupported zip ({exc})") from None
    _check_total(sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()), limit)


def _extract_tar(archive: Path, dest: Path, limit: int) -> None:
    try:
        tf = tarfile.open(archive, "r:*")
    except TAR_ERRORS as exc:
        raise InvalidInput(f"{archive.name}: not a valid tar archive ({exc})") from None
    try:
        with tf:
            _check_and_extract_tar(tf, dest, limit)
    except TAR_ERRORS as exc:
        raise InvalidInput(f"{archive.name}: damaged tar archive ({exc})") from None


def _check_and_extract_tar(tf: tarfile.TarFile, dest: Path, limit: int) -> None:
    members = tf.getmembers()
    _check_count(len(members))
    total = 0
    for m in members:
        _check_name(m.name)
        if m.issym() or m.islnk():
            raise InvalidInput(f"archive refused: member {m.name!r} is a link (to {m.linkname!r})")
        if not (m.isfile() or m.isdir()):
            raise InvalidInput(f"archive refused: member {m.name!r} is not a regular file")
        total += m.size
        _check_total(total, limit)
    # The 'data' filter is a second line of defence behind the checks above.
    tf.extractall(dest, members=members, filter="data")


def single_root(directory: Path) -> Path:
    """Archives often wrap the model in one top-level folder; step into it."""
    entries = [p for p in directory.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return single_root(entries[0])
    return directory
