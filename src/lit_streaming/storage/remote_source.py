"""``RemoteSource``: a dataset at an fsspec URL (or ``local:/path``), read through the local chunk cache."""

from __future__ import annotations

import os
from typing import Any

from lit_streaming.engine.per_process import PerProcess
from lit_streaming.formats.base import ShardTable
from lit_streaming.storage.cache_entry import META, CacheEntry
from lit_streaming.storage.cache_paths import dataset_dirname, dataset_version
from lit_streaming.storage.fetcher import ChunkFetcher
from lit_streaming.storage.remote_files import RemoteFiles
from lit_streaming.storage.settings import StorageSettings
from lit_streaming.storage.source import DatasetSource


class RemoteSource(DatasetSource):
    """Chunks are downloaded into ``<cache_root>/<dataset>/<index hash>/`` and read from there.

    Pickles without live state: each process (DataLoader workers included) makes its own client, thread pool
    and pins on first use, keyed by its pid, and shares the cache entry with the others through the file system.
    """

    def __init__(
        self,
        url: str,
        cache_root: str,
        storage_options: dict[str, Any] | None,
        max_cache_size: int | None,
        settings: StorageSettings,
    ) -> None:
        self.url = url.rstrip("/")
        self.cache_root = cache_root
        self.max_cache_size = max_cache_size
        self.settings = settings
        self._files = RemoteFiles(self.url, storage_options, settings)
        self._table: ShardTable | None = None
        self._entry: CacheEntry | None = None
        self._fetcher: PerProcess[ChunkFetcher] = PerProcess()

    @property
    def cache_path(self) -> str | None:
        """This dataset version's folder in the cache (known once the index is read)."""
        return None if self._entry is None else self._entry.path

    def location_of(self, name: str) -> str:
        return self._files.url_of(name)

    def read_bytes(self, name: str) -> bytes:
        return self._files.read_bytes(name)

    def list_files(self) -> dict[str, int]:
        return self._files.list_files()

    def bind(self, table: ShardTable) -> None:
        """Open this dataset version's cache entry (named by the table's version key) for ``table``. Binding
        again with the same files (a format completing its item counts) keeps the entry."""
        dirname = dataset_dirname(self.url, self._files.storage_options)
        path = os.path.join(self.cache_root, dirname, dataset_version(table.version_key))
        if self._entry is None or self._entry.path != path:
            self._entry = CacheEntry.open(path, table, table.version_key, self.max_cache_size, self.settings)
            self._fetcher.clear()
        self._table = table

    def scratch_dir(self) -> str | None:
        return None if self._entry is None else os.path.join(self._entry.path, META, "formats")

    def chunk_path(self, chunk_index: int, entry: Any = None) -> str:
        return self._process_fetcher().get(chunk_index)

    def prefetch(self, chunk_indices: list[int]) -> None:
        self._process_fetcher().plan(chunk_indices)

    def release(self, chunk_index: int) -> None:
        fetcher = self._fetcher.get()
        if fetcher is not None:
            fetcher.release(chunk_index)

    def chunks_per_reader(self, num_readers: int, chunk_bytes: int | None = None) -> int | None:
        """How many chunks each of ``num_readers`` readers of this dataset on this machine (DataLoader workers
        times local ranks) may hold open at once within ``max_cache_size``; None when unbounded. The cache
        enforces the bound: a dataset whose readers hold more must shrink its shuffle window to this. See
        ``CacheEntry.chunks_per_reader`` (``chunk_bytes`` defaults to the dataset's largest chunk)."""
        if self._entry is None:
            raise RuntimeError(
                f"{type(self).__name__}.bind() (by opening the dataset) must run before chunks_per_reader ({self.url})"
            )
        return self._entry.chunks_per_reader(num_readers, chunk_bytes)

    def close(self) -> None:
        """Drop this process's pins and prefetches for the dataset now (they are also dropped when the source
        is collected or its process ends)."""
        fetcher = self._fetcher.get()
        if fetcher is not None:
            fetcher.close()
            self._fetcher.clear()

    def _process_fetcher(self) -> ChunkFetcher:
        fetcher = self._fetcher.get()
        if fetcher is None:
            if self._entry is None or self._table is None:
                raise RuntimeError(
                    f"{type(self).__name__}.bind() (by opening the dataset) must run before chunks of {self.url} are read"
                )
            fetcher = self._fetcher.set(ChunkFetcher(self._entry, self._files, self._table, self.settings))
        return fetcher

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, cache={self.cache_path!r})"
