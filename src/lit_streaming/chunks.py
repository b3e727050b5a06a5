"""A process-local set of open chunks: mmap'd (or decompressed) once, kept in a small LRU."""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

from lit_streaming.format import compression as zstd
from lit_streaming.format.chunk import ChunkView, CorruptChunkError
from lit_streaming.format.index import DatasetIndex
from lit_streaming.storage.source import DatasetSource


class OpenChunks:
    """Opens chunk files lazily and keeps the last ``capacity`` of them.

    Files are mapped copy-on-write, so samples can be zero-copy views that a transform may even modify in place
    without touching the file; dropping a chunk from the LRU never invalidates a view still held by the user.
    """

    def __init__(self, source: DatasetSource, index: DatasetIndex, capacity: int = 8) -> None:
        self.source = source
        self.index = index
        self.capacity = max(1, capacity)
        self._open: OrderedDict[int, ChunkView] = OrderedDict()

    def get(self, k: int) -> ChunkView:
        view = self._open.get(k)
        if view is not None:
            self._open.move_to_end(k)
            return view
        while len(self._open) >= self.capacity:  # release first, so a reader never holds capacity + 1 chunks
            old, _ = self._open.popitem(last=False)
            self.source.release(old)
        view = self._load(k)
        self._open[k] = view
        return view

    def clear(self) -> None:
        for k in list(self._open):
            self.source.release(k)
        self._open.clear()

    def _load(self, k: int) -> ChunkView:
        entry = self.index.chunks[k]
        path = self.source.chunk_path(k, entry)
        name = f"{entry.filename} (chunk {k} of {self.source.url})"
        compressed = self.index.compression
        level = self.index.compression_level
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
        with open(path, "rb") as f:
            if compressed and level == "chunk":
                buffer: bytes | bytearray | mmap.mmap = bytearray(
                    zstd.decompress(f.read(), compressed, entry.chunk_bytes, f"Chunk {name}")
                )
            elif compressed:
                buffer = bytearray(zstd.inflate_in_file(f.read(), level, f"Chunk {name}"))
            elif size == 0:
                buffer = b""
            else:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        view = ChunkView(memoryview(buffer), name, expected_items=entry.chunk_size)
        if isinstance(buffer, mmap.mmap):
            view.mapping = buffer
        return view

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state
