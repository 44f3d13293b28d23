"""Tiny files with big expansions, generated in a second or less: a zip of zeros, a gzip'd tar of zeros, a Parquet
file whose one dictionary value repeats for every row, and a zip whose members overlap."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

GIB = 1 << 30
CONFIG = json.dumps({"model_type": "bert"}).encode()


def _zeros_deflate(size: int) -> tuple[bytes, int]:
    """Raw deflate data that inflates to `size` zero bytes (a multiple of 16 MiB), and its CRC-32: one block of
    16 MiB compressed once and repeated (each ends on a full flush, so it stands alone)."""
    step = 16 << 20
    assert size % step == 0
    zeros = bytes(step)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // step):
        crc = zlib.crc32(zeros, crc)
    return block * (size // step) + b"\x03\x00", crc  # an empty final block ends the stream


def _zip(members: list[tuple[str, bytes, int, int, int]], overlap: bool = False) -> bytes:
    """A zip from (name, compressed data, crc, uncompressed size, method) members, written by hand."""
    out, central = io.BytesIO(), []
    for name, data, crc, size, method in members:
        offset = out.tell()
        encoded = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0))
        out.write(encoded + data)
        central.append((encoded, crc, len(data), size, method, offset))
    if overlap:  # a second entry for the last member's bytes, under another name
        encoded, crc, csize, size, method, offset = central[-1]
        central.append((b"m/again.safetensors", crc, csize, size, method, offset))
    start = out.tell()
    for encoded, crc, csize, size, method, offset in central:
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, size,
                              len(encoded), 0, 0, 0, 0, 0o100644 << 16, offset))
        out.write(encoded)
    end = out.tell()
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), end - start, start, 0))
    return out.getvalue()


def zip_of_zeros(path: Path, size: int = GIB, declared: int | None = None) -> Path:
    """A model zip (config.json + model.safetensors of `size` zeros: ~1 MiB for 1 GiB). `declared` lies about
    the size in the headers."""
    data, crc = _zeros_deflate(size)
    config = (CONFIG, zlib.crc32(CONFIG), len(CONFIG), 0)
    path.write_bytes(_zip([("m/config.json", *config), ("m/model.safetensors", data, crc, declared or size, 8)]))
    return path


def overlapping_zip(path: Path) -> Path:
    """Two central entries share one member's bytes (the overlapping kind of zip bomb), each under 1 MiB."""
    data = bytes(range(256)) * 2048  # 512 KiB, stored
    path.write_bytes(_zip([("m/config.json", CONFIG, zlib.crc32(CONFIG), len(CONFIG), 0),
                           ("m/model.safetensors", data, zlib.crc32(data), len(data), 0)], overlap=True))
    return path


class _Zeros:
    """A file of `size` zero bytes that is never held in memory."""

    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def tar_gz_of_zeros(path: Path, size: int = 64 << 20, compression: str = "gz") -> Path:
    """A compressed tar (`gz`, `bz2` or `xz`) with config.json and `size` zeros (~1000:1 or more), streamed."""
    with tarfile.open(path, f"w:{compression}") as tf:
        for name, data in (("m/config.json", CONFIG), ("m/model.safetensors", None)):
            info = tarfile.TarInfo(name)
            info.size = len(data) if data is not None else size
            tf.addfile(info, io.BytesIO(data) if data is not None else _Zeros(size))
    return path


def parquet_bomb(path: Path, rows: int = 1000, value_chars: int = 1_250_000) -> Path:
    """A Parquet file of a few hundred bytes whose `text` column expands to rows x value_chars bytes: one dictionary
    value, repeated by run-length-encoded indices (its footer declares only the dictionary's size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["a" * value_chars]))
    label = pa.array(["pos", "neg"] * (rows // 2))
    pq.write_table(pa.table({"text": text, "label": label}), path, compression="zstd", compression_level=19,
                   store_schema=False)
    return path
