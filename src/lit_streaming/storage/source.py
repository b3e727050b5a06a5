"""Dataset sources: the seam between the reader and storage."""

from __future__ import annotations

from abc import ABC, abstractmethod

from lit_streaming.format.index import ChunkEntry, DatasetIndex


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

    def chunks_per_reader(self, num_readers: int, chunk_bytes: int | None = None) -> int | None:
        """How many chunks each of ``num_readers`` readers on this machine may hold open at once; None when
        there is no limit (local folders are read in place, and an unbounded cache never fills)."""
        return None
