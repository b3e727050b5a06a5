"""``LocalSource``: a dataset folder on a local file system, read in place."""

from __future__ import annotations

import os

from lit_streaming.format.index import INDEX_FILENAME, ChunkEntry, DatasetIndex, read_index
from lit_streaming.storage.integrity import verify_file, whole_file_compressed
from lit_streaming.storage.local_files import check_local_file
from lit_streaming.storage.source import DatasetSource


class LocalSource(DatasetSource):
    """Chunks are mmap'd where they lie. Each is checked against its size and checksum the first time a
    process opens it (CRC-32 runs at several GB/s, far below the cost of decoding the samples), so flipped
    bytes on disk give an error naming the chunk instead of a garbage sample."""

    def __init__(self, root: str) -> None:
        self.url = root
        self.root = root
        self._whole_file = False
        self._verified: set[int] = set()

    def read_index(self) -> DatasetIndex:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"Dataset folder {self.root} does not exist")
        index = read_index(os.path.join(self.root, INDEX_FILENAME))
        self._whole_file = whole_file_compressed(index)
        return index

    def chunk_path(self, chunk_index: int, entry: ChunkEntry) -> str:
        path = os.path.join(self.root, entry.filename)
        if chunk_index not in self._verified and os.path.lexists(path):
            check_local_file(self.root, path, f"chunk {chunk_index} of {self.url}")
            verify_file(
                path, entry, self._whole_file, f"{entry.filename} (chunk {chunk_index} of {self.url})"
            )
            self._verified.add(chunk_index)
        return path
