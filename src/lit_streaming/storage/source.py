"""Dataset sources: the seam between the reader and storage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lit_streaming.formats.base import ShardTable


class DatasetSource(ABC):
    """Resolves a dataset location to its files and to local, mmap-able copies of its shards (any format)."""

    url: str
    # True where shards are read where they lie (a local folder): opening one costs no cache space
    reads_in_place: bool = False

    def location_of(self, name: str) -> str:
        """How errors name the dataset's file ``name`` (a path or a URL)."""
        return f"{self.url.rstrip('/')}/{name}"

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The dataset's file ``name`` (a format's index); ``FileNotFoundError`` when it is not there."""

    @abstractmethod
    def list_files(self) -> dict[str, int]:
        """Files directly in the dataset folder and their sizes (formats without an index are found by them)."""

    @abstractmethod
    def bind(self, table: ShardTable) -> None:
        """Fetch, verify and cache shards as the format's neutral ``table`` describes them (storage knows no
        format: names, stored sizes, checksums and the dataset version all come from the table)."""

    @abstractmethod
    def chunk_path(self, chunk_index: int, entry: Any = None) -> str:
        """A local path holding shard ``chunk_index``'s stored bytes (of the bound table), verified, fetching it
        first when needed. ``entry`` is accepted for older callers and not needed."""

    def scratch_dir(self) -> str | None:
        """A node-local folder kept with this dataset version's cache entry, for what a format derives from the
        shards (a tar member index); None where there is none (local folders are read in place)."""
        return None

    def prefetch(self, chunk_indices: list[int]) -> None:
        """Hint: these chunks are needed soon, in this order (no-op for local folders)."""

    def release(self, chunk_index: int) -> None:
        """Hint: this reader no longer needs the chunk (no-op for local folders)."""

    def chunks_per_reader(self, num_readers: int, chunk_bytes: int | None = None) -> int | None:
        """How many chunks each of ``num_readers`` readers on this machine may hold open at once; None when
        there is no limit (local folders are read in place, and an unbounded cache never fills)."""
        return None
