"""Dataset sources: the seam between the reader and storage."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

from lit_streaming.format.index import INDEX_FILENAME, ChunkEntry, DatasetIndex, read_index


class DatasetSource(ABC):
    """Resolves a dataset location to its index and to local, mmap-able chunk files."""

    url: str

    @abstractmethod
    def read_index(self) -> DatasetIndex: ...

    @abstractmethod
    def chunk_path(self, chunk_index: int, entry: ChunkEntry) -> str:
        """A local path holding the chunk's stored bytes, fetching it first when needed."""

    def prefetch(self, chunk_indices: list[int]) -> None:
        """Hint: these chunks are needed soon, in this order (no-op for local folders)."""

    def release(self, chunk_index: int) -> None:
        """Hint: this reader no longer needs the chunk (no-op for local folders)."""


class LocalSource(DatasetSource):
    def __init__(self, root: str) -> None:
        self.url = root
        self.root = root

    def read_index(self) -> DatasetIndex:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"Dataset folder {self.root} does not exist")
        return read_index(os.path.join(self.root, INDEX_FILENAME))

    def chunk_path(self, chunk_index: int, entry: ChunkEntry) -> str:
        return os.path.join(self.root, entry.filename)


def open_source(
    input_dir: str | os.PathLike,
    cache_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_cache_size: int | None = None,
) -> DatasetSource:
    path = os.fspath(input_dir)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if "://" in path or path.startswith("local:"):
        raise NotImplementedError(f"Remote dataset URLs are not supported yet: {path}")
    return LocalSource(os.path.abspath(os.path.expanduser(path)))
