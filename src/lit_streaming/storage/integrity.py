"""Checks that a shard file holds exactly the bytes its format's index describes, before anyone reads it.

Sizes and checksums come from the format-neutral shard table (``lit_streaming.formats.base.ShardEntry``), so
every format (LitData chunks, MDS shards, WebDataset tars, Parquet files) is verified the same way.
"""

from __future__ import annotations

import os

from lit_streaming.formats import hashing
from lit_streaming.formats.base import ShardEntry
from lit_streaming.storage.errors import ChunkIntegrityError


def stored_size(entry: ShardEntry) -> int | None:
    """The shard file's size as stored, when the index records it."""
    return entry.stored_bytes


def verify_file(path: str, entry: ShardEntry, name: str) -> None:
    """Raise ``ChunkIntegrityError`` naming ``name`` when the file's size or checksum differ from the index.

    A checksum whose algorithm cannot be computed here (xxhash missing) is not checked; the size still is.
    """
    size = os.path.getsize(path)
    expected = entry.stored_bytes
    if expected is not None and size != expected:
        raise ChunkIntegrityError(
            f"Chunk {name} has {size} bytes, index.json says {expected}: truncated or stale"
        )
    algo = entry.checksum_algo
    if entry.checksum and algo and hashing.available(algo):
        actual = hashing.file_digest(path, algo)
        if actual != entry.checksum.lower():
            raise ChunkIntegrityError(
                f"Chunk {name} is corrupt: its checksum is {algo}:{actual}, index.json says {algo}:{entry.checksum}"
            )
