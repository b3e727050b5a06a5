"""Where chunk bytes come from. Every source hands the reader a local file path it can mmap: local folders
are read in place, remote URLs through a bounded, shared, machine-wide cache (see ``cache_entry``)."""

from lit_streaming.storage.cache_paths import CACHE_DIR_ENV
from lit_streaming.storage.errors import (
    CacheFullError,
    CacheTimeoutError,
    ChunkIntegrityError,
    DownloadError,
    RemoteFileNotFoundError,
    StorageError,
    UnsafeFileError,
)
from lit_streaming.storage.local_source import LocalSource
from lit_streaming.storage.locations import open_source
from lit_streaming.storage.remote_source import RemoteSource
from lit_streaming.storage.settings import StorageSettings
from lit_streaming.storage.source import DatasetSource

__all__ = [
    "CACHE_DIR_ENV",
    "CacheFullError",
    "CacheTimeoutError",
    "ChunkIntegrityError",
    "DatasetSource",
    "DownloadError",
    "LocalSource",
    "RemoteFileNotFoundError",
    "RemoteSource",
    "StorageError",
    "StorageSettings",
    "UnsafeFileError",
    "open_source",
]
