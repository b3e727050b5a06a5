"""Checks that a chunk file holds exactly the bytes index.json describes, before anyone reads it."""

from __future__ import annotations

import os
import zlib

from lit_streaming.format.index import ChunkEntry, DatasetIndex
from lit_streaming.storage.errors import ChunkIntegrityError

_BLOCK = 4 << 20


def whole_file_compressed(index: DatasetIndex) -> bool:
    """Chunks compressed as whole files: their ``chunk_bytes`` is the size after decompression."""
    return index.compression is not None and index.compression_level == "chunk"


def stored_size(entry: ChunkEntry, whole_file: bool) -> int | None:
    """The chunk file's size on disk: ``file_bytes`` when recorded, else ``chunk_bytes``, except for whole-file
    compressed chunks written by LitData (it records only their decompressed size), as the reader checks."""
    if entry.file_bytes is not None:
        return entry.file_bytes
    return None if whole_file else entry.chunk_bytes


def file_crc32(path: str) -> str:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc & 0xFFFFFFFF:08x}"


def verify_file(path: str, entry: ChunkEntry, whole_file: bool, name: str) -> None:
    """Raise ``ChunkIntegrityError`` naming ``name`` when the file's size or CRC-32 differ from the index.

    Checksums in another format than ``crc32:`` (a future writer's) are not checked here; the size still is.
    """
    size = os.path.getsize(path)
    expected = stored_size(entry, whole_file)
    if expected is not None and size != expected:
        raise ChunkIntegrityError(
            f"Chunk {name} has {size} bytes, index.json says {expected}: truncated or stale"
        )
    if entry.checksum and entry.checksum.startswith("crc32:"):
        actual = file_crc32(path)
        if actual != entry.checksum:
            raise ChunkIntegrityError(
                f"Chunk {name} is corrupt: its checksum is {actual}, index.json says {entry.checksum}"
            )
