"""LitData's layout (``index.json`` with ``chunks`` + ``chunk-*.bin``) as one format behind the seam.

The encoding itself stays in ``lit_streaming.format`` (shared with the writer) and the samples come from
``lit_streaming.item_loaders`` unchanged; this adapter only maps the index onto the neutral shard table and
opens a chunk's local file as a ``ChunkView``, exactly as the reader did before the seam existed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lit_streaming.format import compression as zstd
from lit_streaming.format.chunk import ChunkView, CorruptChunkError
from lit_streaming.format.index import INDEX_FILENAME, DatasetIndex, InvalidIndexError
from lit_streaming.formats import hashing
from lit_streaming.formats.base import (
    FileAccess,
    FormatSpec,
    Listing,
    OpenedDataset,
    ShardEntry,
    ShardTable,
    missing_index,
    register,
    register_table_adapter,
)

NAME = "litdata"
_PARQUET_LOADER = "ParquetLoader"


def shard_table(index: DatasetIndex, index_bytes: bytes | None = None) -> ShardTable:
    """The neutral table of a LitData index. Stored sizes: ``file_bytes`` when we wrote it, else
    ``chunk_bytes``, except for whole-file compressed chunks written by LitData (it records only their
    decompressed size, which then bounds the cache's estimate)."""
    whole_file = index.compression is not None and index.compression_level == "chunk"
    shards = []
    for c in index.chunks:
        algo = digest = None
        if c.checksum:  # "<algorithm>:<hex digest>" (ours: xxh3_64, or crc32 before)
            name, _, value = c.checksum.partition(":")
            if value and hashing.known(name):
                algo, digest = name, value
        stored = c.file_bytes if c.file_bytes is not None else (None if whole_file else c.chunk_bytes)
        shards.append(
            ShardEntry(
                filename=c.filename,
                items=c.chunk_size,
                stored_bytes=stored,
                checksum=digest,
                checksum_algo=algo,
                codec=index.compression if whole_file else None,
                raw_bytes=c.chunk_bytes,
            )
        )
    key = index_bytes if index_bytes is not None else index.to_json().encode()
    return ShardTable(NAME, tuple(shards), key)


class LitDataDataset(OpenedDataset):
    format_name = NAME

    def __init__(self, index: DatasetIndex, index_bytes: bytes, reader: Any, url: str) -> None:
        super().__init__(shard_table(index, index_bytes), reader, index)
        self.url = url
        self._lengths = np.array([reader.chunk_length(c) for c in index.chunks], np.int64)

    @property
    def chunk_lengths(self) -> np.ndarray:
        return self._lengths

    def open_shard(self, k: int, path: str) -> ChunkView:
        index: DatasetIndex = self.index
        entry = index.chunks[k]
        name = f"{entry.filename} (chunk {k} of {self.url})"
        compressed = index.compression
        level = index.compression_level
        left_by_litdata = False
        if compressed and level == "chunk" and not os.path.exists(path):
            # LitData decompresses local whole-file chunks in place ("chunk-0-0.zstd.bin" -> "chunk-0-0.bin")
            # and deletes the original: read what it left, as LitData's own reader does.
            plain_name = os.path.basename(path).replace(f".{compressed}", "", 1)
            plain = os.path.join(os.path.dirname(path), plain_name)
            if plain != path and os.path.exists(plain):
                path, compressed, left_by_litdata = plain, None, True
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"Chunk file {path} is missing ({name})") from None
        if compressed and level == "chunk":
            expected = entry.file_bytes  # chunk_bytes is the size after decompression
        elif left_by_litdata:
            expected = entry.chunk_bytes
        else:
            # As listed: file_bytes when we wrote it, else chunk_bytes (LitData's in-file zstd included).
            expected = entry.file_bytes if entry.file_bytes is not None else entry.chunk_bytes
        if expected is not None and size != expected:
            raise CorruptChunkError(
                f"Chunk {name} has {size} bytes, index.json says {expected}: truncated or stale"
            )
        if not compressed:
            if size == 0:
                return ChunkView(b"", name, expected_items=entry.chunk_size)
            return ChunkView.open_file(path, name, size, expected_items=entry.chunk_size)
        with open(path, "rb") as f:
            if level == "chunk":
                buffer = bytearray(zstd.decompress(f.read(), compressed, entry.chunk_bytes, f"Chunk {name}"))
            else:
                buffer = bytearray(zstd.inflate_in_file(f.read(), level, f"Chunk {name}"))
        return ChunkView(memoryview(buffer), name, expected_items=entry.chunk_size)

    def describe(self) -> dict[str, Any]:
        index: DatasetIndex = self.index
        out = super().describe()
        out.update(
            data_format=index.data_format,
            item_loader=index.item_loader_name,
            compression=index.compression,
        )
        return out


def _detect(listing: Listing) -> bool:
    index = listing.index
    if not isinstance(index, dict) or not isinstance(index.get("chunks"), list):
        return False
    config = index.get("config")
    return not (isinstance(config, dict) and config.get("item_loader") == _PARQUET_LOADER)


def read_bound_index(source: FileAccess) -> DatasetIndex:
    """Read the LitData index at ``source`` and bind its shard table there."""
    index_url = source.location_of(INDEX_FILENAME)
    try:
        raw = source.read_bytes(INDEX_FILENAME)
    except FileNotFoundError:
        source.list_files()  # a missing dataset folder gets its own error
        raise missing_index(index_url) from None
    except IsADirectoryError as err:
        raise InvalidIndexError(f"Cannot read {index_url}: {err}") from err
    index = DatasetIndex.from_json(raw, index_url)
    source.bind(shard_table(index, raw))
    return index


def _open(source: FileAccess, listing: Listing, item_loader: Any, allow_pickle: bool) -> LitDataDataset:
    from lit_streaming.item_loaders import loader_for  # the reader side; the writer never imports it

    raw = listing.index_bytes
    if raw is None:
        raise missing_index(listing.index_url)
    index = DatasetIndex.from_json(raw, listing.index_url)
    loader = loader_for(index, item_loader, source.url)
    loader.setup(index, source.url, allow_pickle)
    return LitDataDataset(index, raw, loader, source.url)


register(FormatSpec(NAME, _detect, _open, "LitData / lit-streaming: index.json with 'chunks', chunk-*.bin"))
register_table_adapter(DatasetIndex, shard_table)
