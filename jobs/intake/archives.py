"""Safe extraction of uploaded .zip / .tar.gz archives.

Every member is checked before anything is written: absolute paths, `..` components, over-long names, symbolic and
hard links, device files, too many members, a total expanded size over the limit and (for zips) a member that
claims to expand more than `WORKBENCH_MAX_COMPRESSION_RATIO` times its compressed size are refused with the member
named. Then members are streamed to disk in chunks with a running total, so the limits hold for the bytes actually
written (and, for a compressed tar, the bytes actually decompressed), not only for what the headers declare: a
zip or gzip bomb is stopped within a few MiB, long before its expansion is written or held in memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from storage import settings
from storage.errors import InvalidInput

MAX_MEMBERS = 10_000
MAX_NAME_BYTES = 255  # one file or folder name (the usual filesystem limit)
MAX_PATH_CHARS = 1024  # a whole member path
RATIO_FREE_BYTES = 1 << 20  # members (or tar streams) up to this size are never refused for their ratio
CHUNK = 1 << 20
# What a truncated or corrupt .tar / .tar.gz raises while it is opened or read.
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(name: str) -> None:
    if len(name) > MAX_PATH_CHARS:
        raise InvalidInput(f"archive refused: a member name is {len(name):,} characters long (at most {MAX_PATH_CHARS})")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"archive refused: member {name!r} has an absolute path")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise InvalidInput(f"archive refused: member {name!r} climbs out of the archive with '..'")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise InvalidInput(
                f"archive refused: member {name[:60]!r}... has a file or folder name of {len(part):,} characters "
                f"(at most {MAX_NAME_BYTES} bytes each)"
            )
    if "\0" in name:
        raise InvalidInput(f"archive refused: member {name!r} has a NUL character in its name")


def _too_big(limit: int) -> InvalidInput:
    return InvalidInput(
        f"archive refused: it expands to more than {limit // (1 << 20)} MiB "
        f"(WORKBENCH_MAX_EXTRACTED_MB); is it the right file?"
    )


def _check_total(total: int, limit: int) -> None:
    if total > limit:
        raise _too_big(limit)


def _bomb(what: str, ratio: int) -> InvalidInput:
    return InvalidInput(
        f"archive refused: {what} expands more than {ratio} times its compressed size "
        f"(WORKBENCH_MAX_COMPRESSION_RATIO); a compression bomb?"
    )


def _check_ratio(what: str, expanded: int, compressed: int, ratio: int) -> None:
    if expanded > RATIO_FREE_BYTES and expanded > ratio * max(compressed, 1):
        raise _bomb(what, ratio)


def _check_count(count: int) -> None:
    if count > MAX_MEMBERS:
        raise InvalidInput(f"archive refused: more than {MAX_MEMBERS} members")


def _target(dest: Path, name: str) -> Path:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "/")]
    return dest.joinpath(*parts) if parts else dest


class _Budget:
    """Bytes written so far against the extraction limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.written = 0

    def add(self, n: int) -> None:
        self.written += n
        _check_total(self.written, self.limit)


def _stream(src: BinaryIO, target: Path, budget: _Budget, check=None) -> int:
    """Copy `src` to `target` in chunks, counting every byte against `budget` (and `check(written)`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(target, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            budget.add(len(chunk))
            if check is not None:
                check(written)
            out.write(chunk)
    return written


def copy_file_limited(src: Path, target: Path, budget: _Budget) -> int:
    """Copy one regular file with its bytes counted against `budget` (model directories use this too)."""
    with open(src, "rb") as f:
        return _stream(f, target, budget)


def budget(limit_bytes: int) -> _Budget:
    return _Budget(limit_bytes)


def _os_error(archive: Path, exc: OSError) -> InvalidInput:
    # The message names the archive, never a path on this server.
    reason = exc.strerror or type(exc).__name__
    return InvalidInput(f"{archive.name}: a member could not be written ({reason}); is the archive well formed?")


def extract_archive(archive: Path, dest: Path) -> None:
    """Check every member of `archive`, then extract it into the empty directory `dest`."""
    limit = settings.get("WORKBENCH_MAX_EXTRACTED_MB") << 20
    ratio = settings.get("WORKBENCH_MAX_COMPRESSION_RATIO")
    name = archive.name.lower()
    if name.endswith(".zip"):
        _extract_zip(archive, dest, limit, ratio)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        _extract_tar(archive, dest, limit, ratio)
    else:
        raise InvalidInput(f"{archive.name}: not a supported archive; use .zip or .tar.gz")


def _extract_zip(archive: Path, dest: Path, limit: int, ratio: int) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise InvalidInput(f"{archive.name}: not a valid zip file") from None
    with zf:
        infos = zf.infolist()
        _check_count(len(infos))
        total = compressed = 0
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidInput(f"archive refused: member {info.filename!r} is a symbolic link")
            file_type = stat.S_IFMT(mode)  # zips written without Unix attributes carry no type bits
            if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"archive refused: member {info.filename!r} is not a regular file")
            _check_ratio(f"member {info.filename!r}", info.file_size, info.compress_size, ratio)
            total += info.file_size
            compressed += info.compress_size
            _check_total(total, limit)
        if compressed > archive.stat().st_size:
            # Members that share their compressed bytes: the overlapping-file kind of zip bomb.
            raise InvalidInput("archive refused: its members overlap one another (a zip bomb?)")
        written = _Budget(limit)
        try:
            for info in infos:
                target = _target(dest, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue

                def check(n: int, info=info) -> None:  # zipfile also stops at the declared size (CRC error)
                    _check_ratio(f"member {info.filename!r}", n, info.compress_size, ratio)

                with zf.open(info) as src:
                    _stream(src, target, written, check)
        except InvalidInput:
            raise
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, ValueError, zlib.error) as exc:
            raise InvalidInput(f"{archive.name}: damaged or unsupported zip ({exc})") from None
        except OSError as exc:
            raise _os_error(archive, exc) from None


class _CountingReader(io.RawIOBase):
    """A decompressing reader over an archive file that refuses to expand more than `ratio` times the compressed
    bytes it has consumed so far (measured as it goes: a gzip bomb is stopped early, and never fully inflated)."""

    def __init__(self, raw: BinaryIO, stream, ratio: int, what: str):
        self.raw, self.stream, self.ratio, self.what = raw, stream, ratio, what

    def _check(self) -> None:
        _check_ratio(self.what, self.stream.tell(), self.raw.tell(), self.ratio)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        data = self.stream.read(size)
        self._check()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # Forward seeks inflate what they skip, in steps, so the ratio is checked on the way.
        if whence == io.SEEK_CUR:
            offset, whence = self.stream.tell() + offset, io.SEEK_SET
        if whence == io.SEEK_SET and offset > self.stream.tell():
            while self.stream.tell() < offset:
                if not self.stream.read(min(CHUNK, offset - self.stream.tell())):
                    break
                self._check()
            return self.stream.tell()
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


def _open_tar(archive: Path, raw: BinaryIO, ratio: int) -> tarfile.TarFile:
    magic = raw.read(6)
    raw.seek(0)
    openers = {b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), b"BZ": lambda f: bz2.BZ2File(f, "rb"),
               b"\xfd7": lambda f: lzma.LZMAFile(f, "rb")}
    opener = openers.get(magic[:2])
    if opener is None:
        return tarfile.open(fileobj=raw, mode="r:")  # not compressed: what is written is what is stored
    stream = _CountingReader(raw, opener(raw), ratio, "it")
    return tarfile.open(fileobj=stream, mode="r:")


def _extract_tar(archive: Path, dest: Path, limit: int, ratio: int) -> None:
    with open(archive, "rb") as raw:
        try:
            tf = _open_tar(archive, raw, ratio)
        except InvalidInput:
            raise
        except TAR_ERRORS as exc:
            raise InvalidInput(f"{archive.name}: not a valid tar archive ({_reason(exc)})") from None
        try:
            with tf:
                _check_and_extract_tar(tf, dest, limit)
        except InvalidInput:
            raise
        except TAR_ERRORS as exc:
            if isinstance(exc, OSError) and exc.filename:
                raise _os_error(archive, exc) from None
            raise InvalidInput(f"{archive.name}: damaged tar archive ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # never the path of a file on this server
    return str(exc) or type(exc).__name__


def _check_and_extract_tar(tf: tarfile.TarFile, dest: Path, limit: int) -> None:
    members = []
    total = 0
    for m in tf:  # one header at a time: a stream of millions of members is stopped at the count limit
        members.append(m)
        _check_count(len(members))
        _check_name(m.name)
        if m.issym() or m.islnk():
            raise InvalidInput(f"archive refused: member {m.name!r} is a link (to {m.linkname!r})")
        if not (m.isfile() or m.isdir()):
            raise InvalidInput(f"archive refused: member {m.name!r} is not a regular file")
        if m.issparse():  # a sparse member's size is not what the archive stores
            raise InvalidInput(f"archive refused: member {m.name!r} is a sparse file")
        total += m.size
        _check_total(total, limit)
    written = _Budget(limit)
    for m in members:
        target = _target(dest, m.name)
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        src = tf.extractfile(m)
        if src is None:
            raise InvalidInput(f"archive refused: member {m.name!r} is not a regular file")
        with src:
            _stream(src, target, written)


def single_root(directory: Path) -> Path:
    """Archives often wrap the model in one top-level folder; step into it."""
    entries = [p for p in directory.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return single_root(entries[0])
    return directory
