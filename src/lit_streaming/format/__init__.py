"""The on-disk format shared by the reader and the writer. Pure encoding: no I/O policy lives here."""

from lit_streaming.format.chunk import ChunkView, CorruptChunkError, checksum, encode_chunk
from lit_streaming.format.index import (
    FORMAT_VERSION,
    INDEX_FILENAME,
    ChunkEntry,
    DatasetIndex,
    InvalidIndexError,
    read_index,
)
from lit_streaming.format.units import parse_size

__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILENAME",
    "ChunkEntry",
    "ChunkView",
    "CorruptChunkError",
    "DatasetIndex",
    "InvalidIndexError",
    "checksum",
    "encode_chunk",
    "parse_size",
    "read_index",
]
